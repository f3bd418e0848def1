/* Name lookups (evmux_getaddrinfo, evmux_getnameinfo):
 *  - the C library's call runs on a pool thread, the callback on the
 *    loop's thread, exactly once, never inside the call that started the
 *    lookup or the one that cancelled it;
 *  - "localhost" finds loopback addresses only; a name that does not exist
 *    is a resolver error (EVMUX_EAI_*), never success and never a raw EAI
 *    code (EAI_NONAME is -2, which is -ENOENT); bad flags, family and
 *    service give their own constants;
 *  - an IP literal with a numeric service, and a numeric getnameinfo,
 *    take no pool thread, and still report from the loop;
 *  - cancel: a lookup no thread has started never runs; one running on a
 *    thread reports -ECANCELED at once, before its thread is done, and
 *    the answer that thread makes is freed by the library; cancelling
 *    twice is -EALREADY, an idle request -EINVAL;
 *  - the loop cannot be freed while a thread still resolves; the request
 *    may be freed or started again in its callback;
 *  - many lookups at once, some cancelled, each reported once, nothing
 *    left behind.
 * The resolver is wrapped (support/resolve_wrap.h) to count calls and
 * answers and to hold a call on its thread. */
#include "resolve_wrap.h"
#include "unit_util.h"

#include <stdlib.h>

static pthread_t loop_thread;
static int in_call; /* inside an evmux call that must not report */

struct lookup {
    evmux_getaddrinfo_req req;
    evmux_loop *loop;
    int calls;
    int status;
    int first_status;
    int loopback_only;
    int count; /* addresses in the answer */
    int restart; /* start a numeric lookup again from the callback */
};

static void on_addrinfo(evmux_getaddrinfo_req *req, int status, struct addrinfo *res)
{
    struct lookup *l = req->data;
    CHECK(!in_call);
    CHECK(pthread_equal(pthread_self(), loop_thread));
    if (++l->calls == 1)
        l->first_status = status;
    l->status = status;
    CHECK(status == 0 ? res != NULL : res == NULL);
    l->loopback_only = 1;
    l->count = 0;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        l->count++;
        if (ai->ai_family == AF_INET) {
            const struct sockaddr_in *v4 = (const struct sockaddr_in *)ai->ai_addr;
            l->loopback_only &= ntohl(v4->sin_addr.s_addr) == INADDR_LOOPBACK;
        } else if (ai->ai_family == AF_INET6) {
            const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ai->ai_addr;
            l->loopback_only &= IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
        } else {
            l->loopback_only = 0;
        }
    }
    evmux_freeaddrinfo(res);
    if (l->restart) {
        l->restart = 0;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
        CHECK_OK(evmux_getaddrinfo(l->loop, req, on_addrinfo, "127.0.0.1", "80", &hints));
    }
}

static void start_lookup(evmux_loop *loop, struct lookup *l, const char *node, const char *service,
                         const struct addrinfo *hints)
{
    memset(l, 0, sizeof *l);
    l->req.data = l;
    l->loop = loop;
    in_call = 1;
    CHECK_OK(evmux_getaddrinfo(loop, &l->req, on_addrinfo, node, service, hints));
    in_call = 0;
}

static evmux_loop *new_loop(unsigned threads)
{
    evmux_loop *loop = NULL;
    evmux_loop_options opts = {.pool_threads = threads};
    CHECK_OK(evmux_loop_new(&loop, &opts));
    loop_thread = pthread_self();
    return loop;
}

static void finish(evmux_loop *loop)
{
    unit_loop_finish(loop);
    CHECK_EQ(atomic_load(&resolve_answers_live), 0); /* every answer freed */
}

/* ---- answers ---- */

static void test_localhost(void)
{
    evmux_loop *loop = new_loop(0);
    struct lookup l;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    int before = atomic_load(&resolve_gai_calls);
    /* The caller's strings may go as soon as the call returns. */
    char *node = strdup("localhost"), *service = strdup("80");
    start_lookup(loop, &l, node, service, &hints);
    memset(node, 'x', strlen(node));
    memset(service, 'x', strlen(service));
    free(node);
    free(service);
    CHECK_EQ(l.calls, 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(l.calls, 1);
    CHECK_EQ(l.status, 0);
    CHECK(l.count >= 1); /* 127.0.0.1 and/or ::1 */
    CHECK(l.loopback_only);
    CHECK_EQ(atomic_load(&resolve_gai_calls), before + 1);
    CHECK(!pthread_equal(atomic_load(&resolve_last_thread), loop_thread)); /* on the pool */
    finish(loop);
}

static void test_nonexistent(void)
{
    evmux_loop *loop = new_loop(0);
    struct lookup l;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    start_lookup(loop, &l, "nonexistent.invalid", NULL, &hints);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(l.calls, 1);
    /* No DNS here, or an answer that the name does not exist: either way
     * a resolver error of evmux's range, never 0 nor EAI_NONAME's -2. */
    if (!EVMUX_IS_EAI(l.status))
        fprintf(stderr, "status %d (%s)\n", l.status, evmux_strerror(l.status));
    CHECK(EVMUX_IS_EAI(l.status));
    finish(loop);
}

static void expect_error(const char *node, const char *service, const struct addrinfo *hints,
                         int want)
{
    evmux_loop *loop = new_loop(0);
    struct lookup l;
    start_lookup(loop, &l, node, service, hints);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(l.calls, 1);
    if (l.status != want)
        fprintf(stderr, "%s %s: %d (%s), expected %d (%s)\n", node ? node : "NULL",
                service ? service : "NULL", l.status, evmux_strerror(l.status), want,
                evmux_strerror(want));
    CHECK_EQ(l.status, want);
    finish(loop);
}

/* Each code through the real path, pool thread and all. */
static void test_error_codes(void)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    expect_error("localhost", "no-such-service-here", &hints, EVMUX_EAI_SERVICE);
    struct addrinfo bad_family = {.ai_family = 12345};
    expect_error("localhost", "80", &bad_family, EVMUX_EAI_FAMILY);
    struct addrinfo bad_flags = {.ai_flags = 0x7fff0000};
    expect_error("localhost", "80", &bad_flags, EVMUX_EAI_BADFLAGS);
    struct addrinfo numeric = {.ai_flags = AI_NUMERICHOST};
    expect_error("localhost", "80", &numeric, EVMUX_EAI_NONAME);
}

/* An IP literal with a numeric service: converted on the loop's thread,
 * reported from the loop; without hints (the C library's defaults) it
 * goes to the pool like a name. */
static void test_numeric_on_loop_thread(void)
{
    evmux_loop *loop = new_loop(0);
    struct lookup l;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    int before = atomic_load(&resolve_gai_calls);
    start_lookup(loop, &l, "127.0.0.1", "8080", &hints);
    CHECK_EQ(atomic_load(&resolve_gai_calls), before + 1);
    CHECK(pthread_equal(atomic_load(&resolve_last_thread), loop_thread));
    CHECK_EQ(l.calls, 0); /* not inside the call */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(l.calls, 1);
    CHECK_EQ(l.status, 0);
    CHECK_EQ(l.count, 1);

    start_lookup(loop, &l, "::1", NULL, &hints);
    CHECK(pthread_equal(atomic_load(&resolve_last_thread), loop_thread));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(l.calls, 1);
    CHECK_EQ(l.status, 0);

    start_lookup(loop, &l, "127.0.0.1", "8080", NULL);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(l.calls, 1);
    CHECK_EQ(l.status, 0);
    CHECK(!pthread_equal(atomic_load(&resolve_last_thread), loop_thread));
    finish(loop);
}

/* ---- cancelling ---- */

static atomic_int blocker_running;

static void block_work(evmux_work *w)
{
    (void)w;
    atomic_store(&blocker_running, 1);
    resolve_gate_pass();
}

static void block_after(evmux_work *w, int status)
{
    (void)w;
    CHECK_EQ(status, 0);
}

/* The only pool thread is busy: the lookup waits in the queue, and the
 * cancel withdraws it. It never reaches the C library. */
static void test_cancel_before_start(void)
{
    evmux_loop *loop = new_loop(1);
    evmux_work blocker;
    CHECK_OK(evmux_work_init(&blocker));
    resolve_gate_close();
    atomic_store(&blocker_running, 0);
    CHECK_OK(evmux_queue_work(loop, &blocker, block_work, block_after));
    resolve_wait_held(1);
    int before = atomic_load(&resolve_gai_calls);

    struct lookup l;
    start_lookup(loop, &l, "localhost", "80", NULL);
    in_call = 1;
    CHECK_OK(evmux_getaddrinfo_cancel(&l.req));
    CHECK_EQ(evmux_getaddrinfo_cancel(&l.req), -EALREADY);
    in_call = 0;
    CHECK_EQ(l.calls, 0);
    /* Reported while the thread is still busy with the blocker. */
    struct unit_guard g;
    unit_guard_start(loop, &g, 5000);
    while (l.calls == 0 && !g.fired)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK(!g.fired);
    CHECK_EQ(l.calls, 1);
    CHECK_EQ(l.status, -ECANCELED);
    CHECK_EQ(evmux_getaddrinfo_cancel(&l.req), -EINVAL); /* idle again */
    CHECK_EQ(atomic_load(&resolve_held), 1);

    resolve_gate_release();
    unit_guard_close(&g);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(l.calls, 1);
    CHECK_EQ(atomic_load(&resolve_gai_calls), before); /* never ran */
    finish(loop);
}

/* getaddrinfo cannot be interrupted: the cancel reports at once, the call
 * runs to its end on its thread, and the library frees its answer. */
static void test_cancel_while_running(void)
{
    evmux_loop *loop = new_loop(0);
    resolve_gate_close();
    struct lookup l;
    start_lookup(loop, &l, "held.test", "80", NULL);
    resolve_wait_held(1);
    in_call = 1;
    CHECK_OK(evmux_getaddrinfo_cancel(&l.req));
    CHECK_EQ(evmux_getaddrinfo_cancel(&l.req), -EALREADY);
    in_call = 0;
    CHECK_EQ(l.calls, 0);
    struct unit_guard g;
    unit_guard_start(loop, &g, 5000);
    l.restart = 1; /* the request is idle in its callback: start it again */
    while (l.calls == 0 && !g.fired)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK(!g.fired);
    CHECK(l.calls >= 1);
    CHECK_EQ(l.first_status, -ECANCELED);
    CHECK_EQ(atomic_load(&resolve_held), 1); /* its thread still resolves */
    CHECK_EQ(evmux_loop_free(loop), -EBUSY);  /* and the loop waits for it */

    resolve_gate_release();
    unit_guard_close(&g);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(l.calls, 2); /* the restarted one */
    CHECK_EQ(l.status, 0);
    finish(loop); /* the held call's answer was freed */
}

/* A numeric lookup's answer waits for the loop: cancelled there, it is
 * freed and the callback gets -ECANCELED. */
static void test_cancel_numeric(void)
{
    evmux_loop *loop = new_loop(0);
    struct lookup l;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    start_lookup(loop, &l, "127.0.0.1", "80", &hints);
    CHECK_EQ(atomic_load(&resolve_answers_live), 1);
    CHECK_OK(evmux_getaddrinfo_cancel(&l.req));
    CHECK_EQ(atomic_load(&resolve_answers_live), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(l.calls, 1);
    CHECK_EQ(l.status, -ECANCELED);
    finish(loop);
}

static void free_in_callback(evmux_getaddrinfo_req *req, int status, struct addrinfo *res)
{
    CHECK_EQ(status, 0);
    evmux_freeaddrinfo(res);
    (*(int *)req->data)++;
    free(req);
}

static void test_free_in_callback(void)
{
    evmux_loop *loop = new_loop(0);
    int calls = 0;
    for (int i = 0; i < 2; i++) {
        evmux_getaddrinfo_req *req = malloc(sizeof *req);
        CHECK(req != NULL);
        req->data = &calls;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
        CHECK_OK(evmux_getaddrinfo(loop, req, free_in_callback, i ? "localhost" : "127.0.0.1",
                                   "80", &hints));
    }
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(calls, 2);
    finish(loop);
}

/* Many at once on two threads; every third cancelled, queued or running. */
#define MANY 60

static void test_many(void)
{
    evmux_loop *loop = new_loop(2);
    static struct lookup l[MANY];
    for (int i = 0; i < MANY; i++)
        start_lookup(loop, &l[i], i % 2 ? "localhost" : "127.0.0.1", "80", NULL);
    for (int i = 0; i < MANY; i += 3)
        CHECK_OK(evmux_getaddrinfo_cancel(&l[i].req));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ(l[i].calls, 1);
        CHECK_EQ(l[i].status, i % 3 == 0 ? -ECANCELED : 0);
    }
    finish(loop);
}

/* ---- getnameinfo ---- */

struct name {
    evmux_getnameinfo_req req;
    int calls, status;
    char host[NI_MAXHOST], service[NI_MAXSERV];
};

static void on_nameinfo(evmux_getnameinfo_req *req, int status, const char *host,
                        const char *service)
{
    struct name *n = req->data;
    CHECK(!in_call);
    CHECK(pthread_equal(pthread_self(), loop_thread));
    n->calls++;
    n->status = status;
    CHECK(status == 0 ? host != NULL && service != NULL : host == NULL && service == NULL);
    if (status == 0) {
        snprintf(n->host, sizeof n->host, "%s", host);
        snprintf(n->service, sizeof n->service, "%s", service);
    }
}

static void start_name(evmux_loop *loop, struct name *n, const char *ip, unsigned port, int flags)
{
    struct sockaddr_storage ss;
    socklen_t len;
    CHECK_OK(evmux_addr_ip(ip, port, &ss, &len));
    memset(n, 0, sizeof *n);
    n->req.data = n;
    in_call = 1;
    CHECK_OK(evmux_getnameinfo(loop, &n->req, on_nameinfo, (struct sockaddr *)&ss, len, flags));
    memset(&ss, 0, sizeof ss); /* copied */
    in_call = 0;
}

static void test_getnameinfo(void)
{
    evmux_loop *loop = new_loop(0);
    struct name n;
    start_name(loop, &n, "127.0.0.1", 80, NI_NUMERICHOST | NI_NUMERICSERV);
    CHECK(pthread_equal(atomic_load(&resolve_last_thread), loop_thread)); /* nothing to look up */
    CHECK_EQ(n.calls, 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(n.calls, 1);
    CHECK_EQ(n.status, 0);
    CHECK(strcmp(n.host, "127.0.0.1") == 0);
    CHECK(strcmp(n.service, "80") == 0);

    start_name(loop, &n, "127.0.0.1", 80, NI_NUMERICHOST);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK(!pthread_equal(atomic_load(&resolve_last_thread), loop_thread));
    CHECK_EQ(n.calls, 1);
    CHECK_EQ(n.status, 0);
    CHECK(strcmp(n.host, "127.0.0.1") == 0);
    CHECK(strcmp(n.service, "http") == 0 || strcmp(n.service, "80") == 0);

    start_name(loop, &n, "127.0.0.1", 80, 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(n.calls, 1);
    CHECK_EQ(n.status, 0);
    CHECK(n.host[0] != '\0'); /* "localhost", or the number without a name */

    /* Errors: the library's values. */
    struct sockaddr_storage ss;
    socklen_t len;
    CHECK_OK(evmux_addr_ip("127.0.0.1", 80, &ss, &len));
    CHECK_EQ(evmux_getnameinfo(loop, &n.req, on_nameinfo, (struct sockaddr *)&ss, sizeof ss + 1,
                               0), -EINVAL);
    CHECK_EQ(evmux_getnameinfo(loop, &n.req, on_nameinfo, (struct sockaddr *)&ss, 0, 0), -EINVAL);
    ss.ss_family = 12345;
    memset(&n, 0, sizeof n);
    n.req.data = &n;
    CHECK_OK(evmux_getnameinfo(loop, &n.req, on_nameinfo, (struct sockaddr *)&ss, len, 0));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(n.calls, 1);
    CHECK_EQ(n.status, EVMUX_EAI_FAMILY);
    finish(loop);
}

static void test_getnameinfo_cancel(void)
{
    evmux_loop *loop = new_loop(0);
    resolve_gate_close();
    struct name n;
    start_name(loop, &n, "127.0.0.1", RESOLVE_HELD_PORT, 0);
    resolve_wait_held(1);
    CHECK_OK(evmux_getnameinfo_cancel(&n.req));
    CHECK_EQ(evmux_getnameinfo_cancel(&n.req), -EALREADY);
    struct unit_guard g;
    unit_guard_start(loop, &g, 5000);
    while (n.calls == 0 && !g.fired)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK(!g.fired);
    CHECK_EQ(n.calls, 1);
    CHECK_EQ(n.status, -ECANCELED);
    CHECK_EQ(atomic_load(&resolve_held), 1);
    resolve_gate_release();
    unit_guard_close(&g);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(n.calls, 1);
    finish(loop);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(60);
    RUN_TEST(test_localhost);
    RUN_TEST(test_nonexistent);
    RUN_TEST(test_error_codes);
    RUN_TEST(test_numeric_on_loop_thread);
    RUN_TEST(test_cancel_before_start);
    RUN_TEST(test_cancel_while_running);
    RUN_TEST(test_cancel_numeric);
    RUN_TEST(test_free_in_callback);
    RUN_TEST(test_many);
    RUN_TEST(test_getnameinfo);
    RUN_TEST(test_getnameinfo_cancel);
    return unit_end();
}
