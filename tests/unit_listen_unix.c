/* Unix-domain listeners: the socket file is created on listen and removed
 * on close, a stale file (its socket closed) is replaced, a live socket or
 * a regular file is not, connecting to a busy or missing socket fails
 * through the callback, and listening never blocks the loop. */
#include "stream_util.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

struct uacc {
    evmux_listener l;
    evmux_loop *loop;
    int calls;
    int take;
    int closed;
    evmux_stream streams[8];
    int nstreams;
};

static void uacc_closed(evmux_handle *h)
{
    ((struct uacc *)h->data)->closed++;
}

static void uacc_cb(evmux_listener *l, int status)
{
    struct uacc *a = (struct uacc *)l->handle.data;
    CHECK_EQ(status, 0);
    a->calls++;
    if (a->take) {
        CHECK(a->nstreams < 8);
        evmux_stream *s = &a->streams[a->nstreams++];
        CHECK_OK(evmux_stream_init(a->loop, s));
        CHECK_OK(evmux_accept(l, s));
    }
}

static void uacc_listen(evmux_loop *loop, struct uacc *a, const struct sockaddr_storage *ss,
                        socklen_t len, int take)
{
    memset(a, 0, sizeof *a);
    a->loop = loop;
    a->take = take;
    a->l.handle.data = a;
    CHECK_OK(evmux_listen(loop, &a->l, (const struct sockaddr *)ss, len, NULL, uacc_cb));
}

static void uacc_close(struct uacc *a)
{
    for (int i = 0; i < a->nstreams; i++)
        CHECK_OK(evmux_close(&a->streams[i].handle, NULL));
    CHECK_OK(evmux_close(&a->l.handle, uacc_closed));
}

static void check_closed_by_peer(int fd)
{
    CHECK(su_wait_readable(fd, 2000));
    int st = su_peek_state(fd);
    CHECK(st == 0 || st == -ECONNRESET);
}

static void test_unix_socket_files(void)
{
    evmux_loop *loop = unit_loop_new();
    char dir[128], path[200], reg[200];
    su_tmpdir(dir, sizeof dir);
    su_path(path, sizeof path, dir, "l.sock");
    su_path(reg, sizeof reg, dir, "regular");
    struct sockaddr_storage ss, bound;
    socklen_t len = su_unix(path, &ss);
    struct stat st;

    /* Listening creates the file; its address prints as the path. */
    struct uacc a;
    uacc_listen(loop, &a, &ss, len, 1);
    CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
    socklen_t blen = su_listener_addr(&a.l, &bound);
    char text[256];
    CHECK_OK(evmux_addr_format((struct sockaddr *)&bound, blen, text, sizeof text));
    CHECK(strcmp(text, path) == 0);

    int c = su_raw_connect(&ss, len);
    su_run_until(loop, &a.calls, 1, 3000);
    CHECK_EQ(a.nstreams, 1);
    /* TCP options make no sense here. */
    CHECK_EQ(evmux_stream_set_nodelay(&a.streams[0], 1), -ENOTSUP);
    CHECK_EQ(evmux_stream_set_keepalive(&a.streams[0], 1, 5), -ENOTSUP);
    close(c);

    /* A live socket is not replaced, and still accepts afterwards. */
    evmux_listener l2;
    CHECK_EQ(evmux_listen(loop, &l2, (struct sockaddr *)&ss, len, NULL, uacc_cb), -EADDRINUSE);
    CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
    int calls = a.calls;
    c = su_raw_connect(&ss, len);
    su_run_until(loop, &a.calls, calls + 1, 3000);
    close(c);
    su_run_for(loop, 10);
    if (a.calls != calls + 1)
        fprintf(stderr, "   note: the failed listen's probe reached the live listener as "
                        "%d extra connection(s)\n", a.calls - calls - 1);

    /* Closing the listener removes its file, at once. */
    uacc_close(&a);
    CHECK_EQ(su_path_exists(path), 0);
    su_run_for(loop, 1);
    CHECK_EQ(a.closed, 1);

    /* A stale socket file (its socket closed, nobody listening) is
     * replaced. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&ss, len) == 0);
    close(fd);
    CHECK(su_path_exists(path));
    uacc_listen(loop, &a, &ss, len, 0);
    c = su_raw_connect(&ss, len);
    su_run_until(loop, &a.calls, 1, 3000);
    check_closed_by_peer(c); /* not taken */
    close(c);
    uacc_close(&a);
    CHECK_EQ(su_path_exists(path), 0);

    /* A file that is not a socket is left alone. */
    fd = open(reg, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, "keep", 4) == 4);
    close(fd);
    struct sockaddr_storage rs;
    socklen_t rlen = su_unix(reg, &rs);
    evmux_listener l3;
    CHECK_EQ(evmux_listen(loop, &l3, (struct sockaddr *)&rs, rlen, NULL, uacc_cb), -EADDRINUSE);
    CHECK(stat(reg, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 4);

    unit_loop_finish(loop);
    CHECK_EQ(a.closed, 1);
    CHECK(unlink(reg) == 0);
    CHECK(rmdir(dir) == 0);
}

/* A listener closed from its accept callback still removes its file. */
static void close_in_cb(evmux_listener *l, int status)
{
    struct uacc *a = (struct uacc *)l->handle.data;
    CHECK_EQ(status, 0);
    a->calls++;
    CHECK_OK(evmux_close(&l->handle, uacc_closed));
}

static void test_unix_close_in_accept_cb(void)
{
    evmux_loop *loop = unit_loop_new();
    char dir[128], path[200];
    su_tmpdir(dir, sizeof dir);
    su_path(path, sizeof path, dir, "c.sock");
    struct sockaddr_storage ss;
    socklen_t len = su_unix(path, &ss);
    struct uacc a;
    memset(&a, 0, sizeof a);
    a.loop = loop;
    a.l.handle.data = &a;
    CHECK_OK(evmux_listen(loop, &a.l, (struct sockaddr *)&ss, len, NULL, close_in_cb));
    int c1 = su_raw_connect(&ss, len);
    int c2 = su_raw_connect(&ss, len);
    su_run_until(loop, &a.closed, 1, 3000);
    CHECK_EQ(a.calls, 1);
    CHECK_EQ(su_path_exists(path), 0);
    check_closed_by_peer(c1);
    check_closed_by_peer(c2);
    unit_loop_finish(loop);
    close(c1);
    close(c2);
    CHECK(rmdir(dir) == 0);
}

/* ---- connecting to a busy Unix socket ---- */

struct cres {
    int calls;
    int status;
    int in_call;
};

static void cres_cb(evmux_connect_req *req, int status)
{
    struct cres *r = (struct cres *)req->data;
    CHECK_EQ(r->in_call, 0);
    r->calls++;
    r->status = status;
}

/* A raw Unix listener with backlog 0 and one connection waiting: its
 * queue is full. */
static int busy_unix_listener(const struct sockaddr_storage *ss, socklen_t len, int *filler)
{
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(l >= 0);
    CHECK(bind(l, (const struct sockaddr *)ss, len) == 0);
    CHECK(listen(l, 0) == 0);
    *filler = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(connect(*filler, (const struct sockaddr *)ss, len) == 0);
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(connect(probe, (const struct sockaddr *)ss, len) < 0 && errno == EAGAIN);
    close(probe);
    return l;
}

static void test_unix_connect_busy(void)
{
    evmux_loop *loop = unit_loop_new();
    char dir[128], path[200];
    su_tmpdir(dir, sizeof dir);
    su_path(path, sizeof path, dir, "busy.sock");
    struct sockaddr_storage ss;
    socklen_t len = su_unix(path, &ss);
    int filler;
    int l = busy_unix_listener(&ss, len, &filler);

    /* The connect fails or waits; either way the callback runs exactly
     * once, from the loop (here: at the latest at the 300 ms timeout). */
    evmux_stream s;
    CHECK_OK(evmux_stream_init(loop, &s));
    struct cres r = {0};
    evmux_connect_req req;
    req.data = &r;
    r.in_call = 1;
    CHECK_OK(evmux_connect(&req, &s, (struct sockaddr *)&ss, len, 300, cres_cb));
    r.in_call = 0;
    su_run_until(loop, &r.calls, 1, 3000);
    su_run_for(loop, 20);
    CHECK_EQ(r.calls, 1);
    CHECK(r.status < 0);
    fprintf(stderr, "   connect to a busy Unix socket: %d (%s)\n", r.status,
            evmux_strerror(r.status));
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    close(filler);
    close(l);
    unlink(path);
    CHECK(rmdir(dir) == 0);
}

/* ---- listening never blocks ---- */

static volatile sig_atomic_t alarm_fired;

static void alarm_noop(int sig)
{
    (void)sig;
    alarm_fired = 1;
}

/* evmux_listen on a path where a live server listens must fail with
 * -EADDRINUSE at once, even if that server is busy (its accept queue
 * full): the stale-file check must not wait for it. A SIGALRM without
 * SA_RESTART bounds the wait if it does block. */
static void test_unix_listen_never_blocks(void)
{
    evmux_loop *loop = unit_loop_new();
    char dir[128], path[200];
    su_tmpdir(dir, sizeof dir);
    su_path(path, sizeof path, dir, "live.sock");
    struct sockaddr_storage ss;
    socklen_t len = su_unix(path, &ss);
    int filler;
    int l = busy_unix_listener(&ss, len, &filler);

    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = alarm_noop; /* no SA_RESTART: a blocked connect() returns EINTR */
    CHECK(sigaction(SIGALRM, &sa, &old) == 0);
    unsigned watchdog_left = alarm(1);
    alarm_fired = 0;

    evmux_listener lis;
    uint64_t t0 = unit_mono_ns();
    int rc = evmux_listen(loop, &lis, (struct sockaddr *)&ss, len, NULL, uacc_cb);
    uint64_t ms = (unit_mono_ns() - t0) / 1000000u;

    alarm(0);
    CHECK(sigaction(SIGALRM, &old, NULL) == 0);
    alarm(watchdog_left > 1 ? watchdog_left - 1 : 1);

    if (rc == 0)
        CHECK_OK(evmux_close(&lis.handle, NULL));
    unit_loop_finish(loop);
    close(filler);
    close(l);
    unlink(path);
    CHECK(rmdir(dir) == 0);

    fprintf(stderr, "   evmux_listen returned %d (%s) after %llu ms%s\n", rc, evmux_strerror(rc),
            (unsigned long long)ms, alarm_fired ? ", interrupted by SIGALRM" : "");
    CHECK_EQ(rc, -EADDRINUSE);
    CHECK_EQ(alarm_fired, 0);
    CHECK(ms < 500);
}

int main(void)
{
    unit_watchdog(30);
    RUN_TEST(test_unix_socket_files);
    RUN_TEST(test_unix_close_in_accept_cb);
    RUN_TEST(test_unix_connect_busy);
    RUN_TEST(test_unix_listen_never_blocks); /* fails: see the comment above it */
    return 0;
}
