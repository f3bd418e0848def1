/* NULL arguments (evmux.h: nothing aborts on bad input). Every EVMUX_API
 * function is called with each pointer argument NULL in turn, the others
 * valid, so that a missing check cannot hide behind an earlier one:
 *  - a function returning int returns -EINVAL;
 *  - an accessor returns its neutral value (0, -1 for a descriptor, ""
 *    for a name) and a void function does nothing;
 *  - arguments documented as optional (opts, close_cb, drain_cb, a
 *    shutdown cb, a write's req without cb) are accepted.
 * Nothing is left open by a refused call: the loop frees cleanly. */
#include "unit_util.h"

#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>

static void io_cb(evmux_io *io, unsigned events)
{
    (void)io;
    (void)events;
}
static void timer_cb(evmux_timer *t)
{
    (void)t;
}
static void async_cb(evmux_async *a)
{
    (void)a;
}
static void signal_cb(evmux_signal *s, int signum)
{
    (void)s;
    (void)signum;
}
static void work_cb(evmux_work *req)
{
    (void)req;
}
static void after_cb(evmux_work *req, int status)
{
    (void)req;
    (void)status;
}
static void read_cb(evmux_stream *s, ssize_t nread, char *buf)
{
    (void)s;
    (void)nread;
    (void)buf;
}
static void write_cb(evmux_write_req *req, int status)
{
    (void)req;
    (void)status;
}
static void shutdown_cb(evmux_stream *s, int status)
{
    (void)s;
    (void)status;
}
static void connect_cb(evmux_connect_req *req, int status)
{
    (void)req;
    (void)status;
}
static void accept_cb(evmux_listener *l, int status)
{
    (void)l;
    (void)status;
}
static void gai_cb(evmux_getaddrinfo_req *req, int status, struct addrinfo *res)
{
    (void)req;
    (void)status;
    evmux_freeaddrinfo(res);
}
static void gni_cb(evmux_getnameinfo_req *req, int status, const char *host, const char *serv)
{
    (void)req;
    (void)status;
    (void)host;
    (void)serv;
}
static void host_cb(evmux_connect_host_req *req, int status)
{
    (void)req;
    (void)status;
}

static void test_loop(void)
{
    evmux_loop *loop = NULL;
    evmux_loop_options opts = {.backend = NULL, .pool_threads = 0};
    CHECK_EQ(evmux_loop_new(NULL, NULL), -EINVAL);
    CHECK_EQ(evmux_loop_new(NULL, &opts), -EINVAL);
    CHECK_OK(evmux_loop_new(&loop, &opts)); /* backend NULL: "auto" */
    CHECK_OK(evmux_loop_free(loop));
    CHECK_EQ(evmux_loop_free(NULL), -EINVAL);
    CHECK_EQ(evmux_run(NULL, EVMUX_RUN_NOWAIT), -EINVAL);
    CHECK_EQ(evmux_loop_fork(NULL), -EINVAL);
    evmux_stop(NULL);
    evmux_update_time(NULL);
    CHECK_EQ(evmux_loop_alive(NULL), 0);
    CHECK_EQ(evmux_now(NULL), 0);
    const char *name = evmux_loop_backend(NULL);
    CHECK(name != NULL);
    CHECK_EQ(name[0], '\0');
    CHECK(evmux_strerror(-EINVAL) != NULL); /* no pointer argument */
    CHECK(evmux_backends_available() != NULL);
}

static void test_handles(void)
{
    evmux_loop *loop = unit_loop_new();
    CHECK_EQ(evmux_close(NULL, NULL), -EINVAL);
    CHECK_EQ(evmux_is_closing(NULL), 0);
    CHECK(evmux_handle_loop(NULL) == NULL);
    CHECK_EQ(evmux_is_active(NULL), 0);
    evmux_ref(NULL);
    evmux_unref(NULL);

    int sv[2];
    unit_socketpair(sv);
    evmux_io io;
    CHECK_EQ(evmux_io_init(NULL, &io, sv[0], io_cb), -EINVAL);
    CHECK_EQ(evmux_io_init(loop, NULL, sv[0], io_cb), -EINVAL);
    CHECK_EQ(evmux_io_init(loop, &io, sv[0], NULL), -EINVAL);
    CHECK_EQ(evmux_io_start(NULL, EVMUX_READABLE), -EINVAL);
    CHECK_EQ(evmux_io_stop(NULL), -EINVAL);
    CHECK_EQ(evmux_io_fd(NULL), -1);

    evmux_timer t;
    CHECK_EQ(evmux_timer_init(NULL, &t, timer_cb), -EINVAL);
    CHECK_EQ(evmux_timer_init(loop, NULL, timer_cb), -EINVAL);
    CHECK_EQ(evmux_timer_init(loop, &t, NULL), -EINVAL);
    CHECK_EQ(evmux_timer_start(NULL, 1, 0), -EINVAL);
    CHECK_EQ(evmux_timer_stop(NULL), -EINVAL);
    CHECK_EQ(evmux_timer_again(NULL), -EINVAL);
    evmux_timer_set_repeat(NULL, 5);
    CHECK_EQ(evmux_timer_get_repeat(NULL), 0);
    CHECK_EQ(evmux_timer_get_due_in(NULL), 0);

    evmux_async a;
    CHECK_EQ(evmux_async_init(NULL, &a, async_cb), -EINVAL);
    CHECK_EQ(evmux_async_init(loop, NULL, async_cb), -EINVAL);
    CHECK_EQ(evmux_async_init(loop, &a, NULL), -EINVAL);
    CHECK_EQ(evmux_async_send(NULL), -EINVAL);

    evmux_signal sig;
    CHECK_EQ(evmux_signal_init(NULL, &sig), -EINVAL);
    CHECK_EQ(evmux_signal_init(loop, NULL), -EINVAL);
    CHECK_EQ(evmux_signal_start(NULL, signal_cb, SIGUSR1), -EINVAL);
    CHECK_OK(evmux_signal_init(loop, &sig));
    CHECK_EQ(evmux_signal_start(&sig, NULL, SIGUSR1), -EINVAL);
    CHECK_EQ(evmux_signal_stop(NULL), -EINVAL);
    CHECK_OK(evmux_close(&sig.handle, NULL)); /* close_cb NULL: accepted */

    unit_loop_finish(loop); /* nothing refused above was left open */
    close(sv[0]);
    close(sv[1]);
}

static void test_work(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_work req;
    CHECK_EQ(evmux_work_init(NULL), -EINVAL);
    CHECK_OK(evmux_work_init(&req));
    CHECK_EQ(evmux_queue_work(NULL, &req, work_cb, after_cb), -EINVAL);
    CHECK_EQ(evmux_queue_work(loop, NULL, work_cb, after_cb), -EINVAL);
    CHECK_EQ(evmux_queue_work(loop, &req, NULL, after_cb), -EINVAL);
    CHECK_EQ(evmux_queue_work(loop, &req, work_cb, NULL), -EINVAL);
    CHECK_EQ(evmux_cancel_work(NULL), -EINVAL);
    unit_loop_finish(loop);
}

static void test_addresses(void)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char buf[64];
    CHECK_EQ(evmux_addr_ip(NULL, 80, &ss, &len), -EINVAL);
    CHECK_EQ(evmux_addr_ip("127.0.0.1", 80, NULL, &len), -EINVAL);
    CHECK_EQ(evmux_addr_ip("127.0.0.1", 80, &ss, NULL), -EINVAL);
    CHECK_EQ(evmux_addr_unix(NULL, &ss, &len), -EINVAL);
    CHECK_EQ(evmux_addr_unix("x.sock", NULL, &len), -EINVAL);
    CHECK_EQ(evmux_addr_unix("x.sock", &ss, NULL), -EINVAL);
    CHECK_OK(evmux_addr_ip("127.0.0.1", 80, &ss, &len));
    CHECK_EQ(evmux_addr_format(NULL, len, buf, sizeof buf), -EINVAL);
    CHECK_EQ(evmux_addr_format((struct sockaddr *)&ss, len, NULL, sizeof buf), -EINVAL);
}

static void test_streams(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    evmux_stream s, idle;
    CHECK_EQ(evmux_stream_init(NULL, &s), -EINVAL);
    CHECK_EQ(evmux_stream_init(loop, NULL), -EINVAL);
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_OK(evmux_stream_init(loop, &idle));
    CHECK_EQ(evmux_stream_open(NULL, sv[0]), -EINVAL);
    CHECK_OK(evmux_stream_open(&s, sv[0]));
    CHECK_EQ(evmux_stream_fd(NULL), -1);
    CHECK_EQ(evmux_stream_read_start(NULL, read_cb), -EINVAL);
    CHECK_EQ(evmux_stream_read_start(&s, NULL), -EINVAL);
    CHECK_EQ(evmux_stream_read_stop(NULL), -EINVAL);

    evmux_write_req wreq;
    evmux_buf b = {"x", 1};
    CHECK_EQ(evmux_stream_write(&wreq, NULL, &b, 1, write_cb), -EINVAL);
    CHECK_EQ(evmux_stream_write(&wreq, &s, NULL, 1, write_cb), -EINVAL);
    CHECK_EQ(evmux_stream_write(NULL, &s, &b, 1, write_cb), -EINVAL);
    /* No req without cb, no bufs for no buffers: accepted. */
    CHECK_EQ(evmux_stream_write(NULL, &idle, &b, 1, NULL), -ENOTCONN);
    CHECK_EQ(evmux_stream_write(NULL, &idle, NULL, 0, NULL), -ENOTCONN);
    CHECK_EQ(evmux_stream_queued(NULL), 0);
    CHECK_EQ(evmux_stream_set_watermarks(NULL, 10, 5, NULL), -EINVAL);
    CHECK_OK(evmux_stream_set_watermarks(&s, 10, 5, NULL)); /* drain_cb optional */
    CHECK_EQ(evmux_stream_over_high(NULL), 0);
    CHECK_EQ(evmux_stream_shutdown(NULL, shutdown_cb), -EINVAL);
    CHECK_EQ(evmux_stream_shutdown(&idle, NULL), -ENOTCONN); /* cb optional */
    CHECK_EQ(evmux_stream_set_nodelay(NULL, 1), -EINVAL);
    CHECK_EQ(evmux_stream_set_keepalive(NULL, 1, 0), -EINVAL);

    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    CHECK_EQ(evmux_stream_peer(NULL, &ss, &len), -EINVAL);
    CHECK_EQ(evmux_stream_peer(&s, NULL, &len), -EINVAL);
    CHECK_EQ(evmux_stream_peer(&s, &ss, NULL), -EINVAL);

    evmux_connect_req creq;
    CHECK_OK(evmux_addr_ip("127.0.0.1", 9, &ss, &len));
    const struct sockaddr *sa = (const struct sockaddr *)&ss;
    CHECK_EQ(evmux_connect(NULL, &idle, sa, len, 0, connect_cb), -EINVAL);
    CHECK_EQ(evmux_connect(&creq, NULL, sa, len, 0, connect_cb), -EINVAL);
    CHECK_EQ(evmux_connect(&creq, &idle, NULL, len, 0, connect_cb), -EINVAL);
    CHECK_EQ(evmux_connect(&creq, &idle, sa, len, 0, NULL), -EINVAL);
    CHECK_EQ(evmux_stream_fd(&idle), -1); /* the refused connects left no socket */

    CHECK_OK(evmux_close(&s.handle, NULL));
    CHECK_OK(evmux_close(&idle.handle, NULL));
    unit_loop_finish(loop);
    close(sv[1]);
}

/* node and service are each optional, not both; hints is optional. */
static void test_resolve(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_getaddrinfo_req greq;
    evmux_getnameinfo_req nreq;
    memset(&greq, 0, sizeof greq);
    memset(&nreq, 0, sizeof nreq);
    CHECK_EQ(evmux_getaddrinfo(NULL, &greq, gai_cb, "127.0.0.1", "80", NULL), -EINVAL);
    CHECK_EQ(evmux_getaddrinfo(loop, NULL, gai_cb, "127.0.0.1", "80", NULL), -EINVAL);
    CHECK_EQ(evmux_getaddrinfo(loop, &greq, NULL, "127.0.0.1", "80", NULL), -EINVAL);
    CHECK_EQ(evmux_getaddrinfo(loop, &greq, gai_cb, NULL, NULL, NULL), -EINVAL);
    CHECK_EQ(evmux_getaddrinfo_cancel(NULL), -EINVAL);
    CHECK_EQ(evmux_getaddrinfo_cancel(&greq), -EINVAL); /* zeroed: idle */
    evmux_freeaddrinfo(NULL);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    CHECK_OK(evmux_getaddrinfo(loop, &greq, gai_cb, NULL, "80", &hints)); /* node optional */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_OK(evmux_getaddrinfo(loop, &greq, gai_cb, "127.0.0.1", NULL, &hints)); /* service */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));

    struct sockaddr_storage ss;
    socklen_t len;
    CHECK_OK(evmux_addr_ip("127.0.0.1", 80, &ss, &len));
    const struct sockaddr *sa = (const struct sockaddr *)&ss;
    CHECK_EQ(evmux_getnameinfo(NULL, &nreq, gni_cb, sa, len, 0), -EINVAL);
    CHECK_EQ(evmux_getnameinfo(loop, NULL, gni_cb, sa, len, 0), -EINVAL);
    CHECK_EQ(evmux_getnameinfo(loop, &nreq, NULL, sa, len, 0), -EINVAL);
    CHECK_EQ(evmux_getnameinfo(loop, &nreq, gni_cb, NULL, len, 0), -EINVAL);
    CHECK_EQ(evmux_getnameinfo_cancel(NULL), -EINVAL);
    CHECK_EQ(evmux_getnameinfo_cancel(&nreq), -EINVAL);

    evmux_stream s;
    evmux_connect_host_req hreq;
    memset(&hreq, 0, sizeof hreq);
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_EQ(evmux_connect_host(NULL, &s, "localhost", 9, 0, host_cb), -EINVAL);
    CHECK_EQ(evmux_connect_host(&hreq, NULL, "localhost", 9, 0, host_cb), -EINVAL);
    CHECK_EQ(evmux_connect_host(&hreq, &s, NULL, 9, 0, host_cb), -EINVAL);
    CHECK_EQ(evmux_connect_host(&hreq, &s, "localhost", 9, 0, NULL), -EINVAL);
    CHECK_EQ(evmux_connect_host_cancel(NULL), -EINVAL);
    CHECK_EQ(evmux_connect_host_cancel(&hreq), -EINVAL);
    CHECK_EQ(evmux_stream_fd(&s), -1);
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop); /* nothing refused above was left in flight */
}

static void test_listeners(void)
{
    evmux_loop *loop = unit_loop_new();
    struct sockaddr_storage ss;
    socklen_t len;
    CHECK_OK(evmux_addr_ip("127.0.0.1", 0, &ss, &len));
    const struct sockaddr *sa = (const struct sockaddr *)&ss;
    evmux_listener l;
    CHECK_EQ(evmux_listen(NULL, &l, sa, len, NULL, accept_cb), -EINVAL);
    CHECK_EQ(evmux_listen(loop, NULL, sa, len, NULL, accept_cb), -EINVAL);
    CHECK_EQ(evmux_listen(loop, &l, NULL, len, NULL, accept_cb), -EINVAL);
    CHECK_EQ(evmux_listen(loop, &l, sa, len, NULL, NULL), -EINVAL);
    CHECK_OK(evmux_listen(loop, &l, sa, len, NULL, accept_cb)); /* opts optional */

    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    CHECK_EQ(evmux_listener_address(NULL, &bound, &blen), -EINVAL);
    CHECK_EQ(evmux_listener_address(&l, NULL, &blen), -EINVAL);
    CHECK_EQ(evmux_listener_address(&l, &bound, NULL), -EINVAL);

    evmux_stream client;
    CHECK_OK(evmux_stream_init(loop, &client));
    CHECK_EQ(evmux_accept(NULL, &client), -EINVAL);
    CHECK_EQ(evmux_accept(&l, NULL), -EINVAL);

    CHECK_OK(evmux_close(&client.handle, NULL));
    CHECK_OK(evmux_close(&l.handle, NULL));
    unit_loop_finish(loop);
}

int main(void)
{
    unit_watchdog(30);
    RUN_TEST(test_loop);
    RUN_TEST(test_handles);
    RUN_TEST(test_work);
    RUN_TEST(test_addresses);
    RUN_TEST(test_streams);
    RUN_TEST(test_listeners);
    RUN_TEST(test_resolve);
    return 0;
}
