/* evmux_connect_host:
 *  - "localhost", "127.0.0.1", "::1" and "[::1]" connect to a listener;
 *    a literal takes no lookup; cb runs once, never inside the call;
 *  - writes and a shutdown made while the name resolves go out once
 *    connected, also when the first address refused and the second took
 *    them (the shutdown followed the retry);
 *  - a closed port: -ECONNREFUSED, for a name and a literal, and the
 *    writes made meanwhile fail with it; the next address is tried after
 *    a refusal; an address this host cannot use at all (a multicast one:
 *    ENETUNREACH) does not hide the refusal of an earlier one;
 *  - a name that does not exist: a resolver error (EVMUX_EAI_*), and the
 *    stream can connect again;
 *  - one overall timeout: during the lookup (still running on its
 *    thread), during a connect that nobody answers (a listener whose
 *    backlog is full), and split between the two (not each its own);
 *  - closing the stream while resolving or connecting: cb runs once with
 *    -ECANCELED, before the close callback, and the answer of a lookup
 *    still running is freed when it ends;
 *  - cancel while resolving and while connecting: -ECANCELED from the
 *    loop, -EALREADY twice, and the stream connects again afterwards;
 *  - while it resolves the stream refuses another connect, open or
 *    connect_host;
 *  - in a network namespace of its own, with nothing but loopback:
 *    "localhost" connects; and with 127.0.0.2 added (an IPv4 address
 *    AI_ADDRCONFIG counts, where it ignores 127.0.0.1 and ::1) a name
 *    whose only address is ::1 still connects (AI_ADDRCONFIG would have
 *    dropped it).
 * The resolver is wrapped (support/resolve_wrap.h): it counts lookups
 * and answers, holds held.test on its thread, answers slow.test late, and
 * two.test and mixed.test with two addresses. */
#include "resolve_wrap.h"
#include "ipv6_loopback.h"
#include "unit_util.h"

#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

static int in_call;  /* inside an evmux call that must not report */
static int sequence; /* orders callbacks */

/* ---- a server: accepts one connection and collects what it reads ---- */

struct server {
    evmux_listener listener;
    evmux_stream conn;
    int port;
    int accepted;
    char got[64];
    size_t got_len;
    int eof;
};

static void on_server_read(evmux_stream *s, ssize_t nread, char *buf)
{
    struct server *srv = s->handle.data;
    if (nread > 0) {
        CHECK(srv->got_len + (size_t)nread < sizeof srv->got);
        memcpy(srv->got + srv->got_len, buf, (size_t)nread);
        srv->got_len += (size_t)nread;
    } else {
        srv->eof = 1;
    }
}

static void on_server_accept(evmux_listener *l, int status)
{
    struct server *srv = l->handle.data;
    if (status < 0 || srv->accepted)
        return; /* more than one: closed when we return */
    CHECK_OK(evmux_stream_init(evmux_handle_loop(&l->handle), &srv->conn));
    srv->conn.handle.data = srv;
    CHECK_OK(evmux_accept(l, &srv->conn));
    CHECK_OK(evmux_stream_read_start(&srv->conn, on_server_read));
    srv->accepted = 1;
}

static void server_start(evmux_loop *loop, struct server *srv, const char *ip)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(srv, 0, sizeof *srv);
    CHECK_OK(evmux_addr_ip(ip, 0, &ss, &len));
    srv->listener.handle.data = srv;
    CHECK_OK(evmux_listen(loop, &srv->listener, (struct sockaddr *)&ss, len, NULL,
                          on_server_accept));
    CHECK_OK(evmux_listener_address(&srv->listener, &ss, &len));
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
}

static void server_close(struct server *srv)
{
    CHECK_OK(evmux_close(&srv->listener.handle, NULL));
    if (srv->accepted)
        CHECK_OK(evmux_close(&srv->conn.handle, NULL));
}

/* A port on 127.0.0.1 where nothing listens. */
static int unused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A listener on 127.0.0.1 that answers no new connection: its accept
 * queue is full (backlog 0, never accepted), so the kernel drops the SYNs
 * of new ones and their connects stay pending. Checked, not assumed: 0
 * once a plain connect stays pending for 300 ms, -1 if none does. */
struct full_listener {
    int fd, port;
    int fillers[8];
    int n;
};

static int full_listener_open(struct full_listener *f)
{
    memset(f, 0, sizeof *f);
    f->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    CHECK(f->fd >= 0);
    CHECK(bind(f->fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(f->fd, 0) == 0);
    CHECK(getsockname(f->fd, (struct sockaddr *)&a, &len) == 0);
    f->port = ntohs(a.sin_port);
    while (f->n < 8) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0);
        f->fillers[f->n++] = fd;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            continue;
        CHECK(errno == EINPROGRESS);
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 300) == 0)
            return 0; /* pending: the queue is full */
    }
    return -1;
}

static void full_listener_close(struct full_listener *f)
{
    for (int i = 0; i < f->n; i++)
        close(f->fillers[i]);
    close(f->fd);
}

/* ---- a client ---- */

struct client {
    evmux_stream s;
    evmux_connect_host_req req;
    evmux_write_req wreq;
    int calls, status, order;
    int write_calls, write_status;
    int shut_calls, shut_status;
    int closed_order;
    uint64_t start_ns, done_ns;
    int held_at_report; /* lookups held on their thread when cb ran */
};

static void on_host(evmux_connect_host_req *req, int status)
{
    struct client *c = req->data;
    CHECK(!in_call);
    c->calls++;
    c->status = status;
    c->order = ++sequence;
    c->done_ns = unit_mono_ns();
    c->held_at_report = atomic_load(&resolve_held);
    if (status == 0)
        CHECK(evmux_stream_fd(&c->s) >= 0);
    else
        CHECK_EQ(evmux_stream_fd(&c->s), -1);
}

static void on_write(evmux_write_req *req, int status)
{
    struct client *c = req->data;
    c->write_calls++;
    c->write_status = status;
}

static void on_shutdown(evmux_stream *s, int status)
{
    struct client *c = s->handle.data;
    c->shut_calls++;
    c->shut_status = status;
}

static void on_client_closed(evmux_handle *h)
{
    struct client *c = h->data;
    c->closed_order = ++sequence;
}

static void client_init(evmux_loop *loop, struct client *c)
{
    memset(c, 0, sizeof *c);
    c->s.handle.data = c;
    c->req.data = c;
    c->wreq.data = c;
    CHECK_OK(evmux_stream_init(loop, &c->s));
}

static void client_connect(struct client *c, const char *host, unsigned port, uint64_t timeout_ms)
{
    c->calls = 0;
    /* Timeouts count from the loop's cached time: read it now, so that
     * they count from no earlier than start_ns. */
    c->start_ns = unit_mono_ns();
    evmux_update_time(evmux_handle_loop(&c->s.handle));
    in_call = 1;
    CHECK_OK(evmux_connect_host(&c->req, &c->s, host, port, timeout_ms, on_host));
    in_call = 0;
    CHECK_EQ(c->calls, 0);
}

static void client_write(struct client *c, const char *text)
{
    evmux_buf b = {text, strlen(text)};
    CHECK_OK(evmux_stream_write(&c->wreq, &c->s, &b, 1, on_write));
}

static uint64_t elapsed_ms(const struct client *c)
{
    return (c->done_ns - c->start_ns) / 1000000u;
}

/* Runs the loop until cond holds, failing the test after 10 s. NOWAIT
 * iterations: a report made before the wait must not leave the test
 * blocked in a wait for events that never come. */
#define RUN_UNTIL(loop, cond)                                                                      \
    do {                                                                                           \
        uint64_t end_ = unit_mono_ns() + UINT64_C(10000000000);                                    \
        while (!(cond)) {                                                                          \
            CHECK(unit_mono_ns() < end_);                                                          \
            CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));                                           \
            if (!(cond))                                                                           \
                unit_sleep_ms(1);                                                                  \
        }                                                                                          \
    } while (0)

static void finish(evmux_loop *loop)
{
    unit_loop_finish(loop);
    CHECK_EQ(atomic_load(&resolve_answers_live), 0); /* every answer freed */
}

/* ---- connecting ---- */

static void test_localhost(void)
{
    evmux_loop *loop = unit_loop_new();
    struct server srv;
    struct client c;
    server_start(loop, &srv, "127.0.0.1");
    client_init(loop, &c);
    int before = atomic_load(&resolve_gai_calls);
    client_connect(&c, "localhost", (unsigned)srv.port, 5000);
    /* While it resolves: writes and a shutdown wait for the connection. */
    client_write(&c, "hello");
    CHECK_OK(evmux_stream_shutdown(&c.s, on_shutdown));
    RUN_UNTIL(loop, c.calls == 1 && srv.eof && c.shut_calls == 1);
    CHECK_EQ(c.status, 0);
    CHECK_EQ(atomic_load(&resolve_gai_calls), before + 1);
    CHECK_EQ(srv.got_len, 5);
    CHECK(memcmp(srv.got, "hello", 5) == 0);
    CHECK_EQ(c.write_calls, 1);
    CHECK_EQ(c.write_status, 0);
    CHECK_EQ(c.shut_status, 0);
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    CHECK_OK(evmux_stream_peer(&c.s, &peer, &len));
    CHECK(peer.ss_family == AF_INET || peer.ss_family == AF_INET6);
    CHECK_OK(evmux_close(&c.s.handle, NULL));
    server_close(&srv);
    finish(loop);
}

static void test_literal(void)
{
    evmux_loop *loop = unit_loop_new();
    struct server srv;
    struct client c;
    server_start(loop, &srv, "127.0.0.1");
    client_init(loop, &c);
    int before = atomic_load(&resolve_gai_calls);
    client_connect(&c, "127.0.0.1", (unsigned)srv.port, 0);
    CHECK(evmux_stream_fd(&c.s) >= 0); /* connecting at once: no lookup */
    RUN_UNTIL(loop, c.calls == 1 && srv.accepted);
    CHECK_EQ(c.status, 0);
    CHECK_EQ(atomic_load(&resolve_gai_calls), before);
    CHECK_OK(evmux_close(&c.s.handle, NULL));
    server_close(&srv);
    finish(loop);
}

static void test_ipv6(void)
{
    if (!have_ipv6_loopback())
        UNIT_SKIP("no IPv6 loopback");
    evmux_loop *loop = unit_loop_new();
    static const char *const hosts[] = {"::1", "[::1]"};
    struct server srv[2];
    struct client c[2];
    for (int i = 0; i < 2; i++) {
        server_start(loop, &srv[i], "::1");
        client_init(loop, &c[i]);
        client_connect(&c[i], hosts[i], (unsigned)srv[i].port, 5000);
        RUN_UNTIL(loop, c[i].calls == 1 && srv[i].accepted);
        CHECK_EQ(c[i].status, 0);
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        CHECK_OK(evmux_stream_peer(&c[i].s, &peer, &len));
        CHECK_EQ(peer.ss_family, AF_INET6);
        CHECK_OK(evmux_close(&c[i].s.handle, NULL));
        server_close(&srv[i]);
    }
    finish(loop);
}

static void test_refused(void)
{
    evmux_loop *loop = unit_loop_new();
    static const char *const hosts[] = {"localhost", "127.0.0.1", "two.test"};
    int port = unused_port();
    struct client cs[3];
    for (int i = 0; i < 3; i++) {
        struct client *c = &cs[i];
        client_init(loop, c);
        client_connect(c, hosts[i], (unsigned)port, 5000);
        client_write(c, "lost");
        RUN_UNTIL(loop, c->calls == 1 && c->write_calls == 1);
        if (c->status != -ECONNREFUSED)
            fprintf(stderr, "%s: %d (%s)\n", hosts[i], c->status, evmux_strerror(c->status));
        CHECK_EQ(c->status, -ECONNREFUSED);
        CHECK_EQ(c->write_status, -ECONNREFUSED);
        CHECK_OK(evmux_close(&c->s.handle, NULL));
    }
    finish(loop);
}

/* two.test is 127.0.0.2, where nothing listens, then 127.0.0.1. */
static void test_next_address(void)
{
    evmux_loop *loop = unit_loop_new();
    struct server srv;
    struct client c;
    server_start(loop, &srv, "127.0.0.1");
    client_init(loop, &c);
    client_connect(&c, "two.test", (unsigned)srv.port, 5000);
    client_write(&c, "abc");
    CHECK_OK(evmux_stream_shutdown(&c.s, on_shutdown));
    RUN_UNTIL(loop, c.calls == 1 && srv.eof && c.shut_calls == 1);
    CHECK_EQ(c.status, 0);
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    char text[64];
    CHECK_OK(evmux_stream_peer(&c.s, &peer, &len));
    CHECK_OK(evmux_addr_format((struct sockaddr *)&peer, len, text, sizeof text));
    CHECK(strncmp(text, "127.0.0.1:", 10) == 0);
    CHECK_EQ(srv.got_len, 3);
    CHECK(memcmp(srv.got, "abc", 3) == 0);
    CHECK_EQ(c.write_status, 0);
    CHECK_EQ(c.shut_status, 0);
    CHECK_OK(evmux_close(&c.s.handle, NULL));
    server_close(&srv);
    finish(loop);
}

/* mixed.test is 127.0.0.1, refused, then a multicast address, which
 * connect refuses at once (ENETUNREACH): the refusal is what counts. */
static void test_unusable_address(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(80)};
    CHECK(fd >= 0);
    CHECK(inet_pton(AF_INET, RESOLVE_UNUSABLE, &a.sin_addr) == 1);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ? errno : 0;
    close(fd);
    if (rc != ENETUNREACH)
        UNIT_SKIP("a multicast address is not refused with ENETUNREACH here");
    evmux_loop *loop = unit_loop_new();
    struct client c;
    client_init(loop, &c);
    client_connect(&c, "mixed.test", (unsigned)unused_port(), 5000);
    RUN_UNTIL(loop, c.calls == 1);
    CHECK_EQ(c.status, -ECONNREFUSED);
    CHECK_OK(evmux_close(&c.s.handle, NULL));
    finish(loop);
}

static void test_nonexistent(void)
{
    evmux_loop *loop = unit_loop_new();
    struct server srv;
    struct client c;
    server_start(loop, &srv, "127.0.0.1");
    client_init(loop, &c);
    client_connect(&c, "nonexistent.invalid", 80, 5000);
    client_write(&c, "lost");
    RUN_UNTIL(loop, c.calls == 1 && c.write_calls == 1);
    if (!EVMUX_IS_EAI(c.status))
        fprintf(stderr, "status %d (%s)\n", c.status, evmux_strerror(c.status));
    CHECK(EVMUX_IS_EAI(c.status));
    CHECK_EQ(c.write_status, c.status);
    CHECK_EQ(evmux_stream_write(NULL, &c.s, &(evmux_buf){"x", 1}, 1, NULL), -ENOTCONN);
    /* The stream may connect again. */
    client_connect(&c, "localhost", (unsigned)srv.port, 5000);
    RUN_UNTIL(loop, c.calls == 1 && srv.accepted);
    CHECK_EQ(c.status, 0);
    CHECK_OK(evmux_close(&c.s.handle, NULL));
    server_close(&srv);
    finish(loop);
}

/* ---- one overall timeout ---- */

static void test_timeout_resolving(void)
{
    evmux_loop *loop = unit_loop_new();
    struct client c;
    client_init(loop, &c);
    resolve_gate_close();
    client_connect(&c, "held.test", 80, 200);
    RUN_UNTIL(loop, c.calls == 1);
    CHECK_EQ(c.status, -ETIMEDOUT);
    CHECK(elapsed_ms(&c) >= 200);
    CHECK_EQ(c.held_at_report, 1); /* before the lookup's thread was done */
    resolve_gate_release();
    CHECK_OK(evmux_close(&c.s.handle, NULL));
    finish(loop); /* the late answer was freed */
}

static void test_timeout_connecting(void)
{
    struct full_listener f;
    if (full_listener_open(&f) < 0) {
        full_listener_close(&f);
        UNIT_SKIP("a listener with a full backlog still answers connects here");
    }
    evmux_loop *loop = unit_loop_new();
    static const char *const hosts[] = {"127.0.0.1", "localhost"};
    struct client cs[2];
    for (int i = 0; i < 2; i++) {
        struct client *c = &cs[i];
        client_init(loop, c);
        client_connect(c, hosts[i], (unsigned)f.port, 300);
        RUN_UNTIL(loop, c->calls == 1);
        CHECK_EQ(c->status, -ETIMEDOUT);
        CHECK(elapsed_ms(c) >= 300);
        CHECK(elapsed_ms(c) < 5000);
        CHECK_OK(evmux_close(&c->s.handle, NULL));
    }
    finish(loop);
    full_listener_close(&f);
}

/* The lookup takes RESOLVE_SLOW_MS of the timeout and the connect gets
 * what is left, not a whole timeout of its own. */
static void test_timeout_split(void)
{
    struct full_listener f;
    if (full_listener_open(&f) < 0) {
        full_listener_close(&f);
        UNIT_SKIP("a listener with a full backlog still answers connects here");
    }
    evmux_loop *loop = unit_loop_new();
    struct client c;
    client_init(loop, &c);
    const unsigned timeout = RESOLVE_SLOW_MS + 200;
    client_connect(&c, "slow.test", (unsigned)f.port, timeout);
    RUN_UNTIL(loop, c.calls == 1);
    CHECK_EQ(c.status, -ETIMEDOUT);
    fprintf(stderr, "   timed out after %llu ms of %u\n", (unsigned long long)elapsed_ms(&c),
            timeout);
    CHECK(elapsed_ms(&c) >= timeout);
    CHECK(elapsed_ms(&c) < timeout + 800); /* each its own: RESOLVE_SLOW_MS more */
    CHECK_OK(evmux_close(&c.s.handle, NULL));
    finish(loop);
    full_listener_close(&f);
}

/* ---- closing, cancelling ---- */

static void test_close_while_resolving(void)
{
    evmux_loop *loop = unit_loop_new();
    struct client c;
    client_init(loop, &c);
    resolve_gate_close();
    client_connect(&c, "held.test", 80, 0);
    client_write(&c, "lost");
    resolve_wait_held(1);
    CHECK_OK(evmux_close(&c.s.handle, on_client_closed));
    RUN_UNTIL(loop, c.closed_order != 0);
    CHECK_EQ(c.calls, 1);
    CHECK_EQ(c.status, -ECANCELED);
    CHECK(c.order < c.closed_order);
    CHECK_EQ(c.held_at_report, 1);
    CHECK_EQ(c.write_calls, 1);
    CHECK_EQ(c.write_status, -ECANCELED);
    resolve_gate_release();
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* the lookup's thread ends */
    CHECK_EQ(c.calls, 1);
    finish(loop);
}

static void test_close_while_connecting(void)
{
    struct full_listener f;
    if (full_listener_open(&f) < 0) {
        full_listener_close(&f);
        UNIT_SKIP("a listener with a full backlog still answers connects here");
    }
    evmux_loop *loop = unit_loop_new();
    struct client c;
    client_init(loop, &c);
    client_connect(&c, "localhost", (unsigned)f.port, 0);
    RUN_UNTIL(loop, evmux_stream_fd(&c.s) >= 0); /* resolved, connecting */
    CHECK_EQ(c.calls, 0);
    CHECK_OK(evmux_close(&c.s.handle, on_client_closed));
    RUN_UNTIL(loop, c.closed_order != 0);
    CHECK_EQ(c.calls, 1);
    CHECK_EQ(c.status, -ECANCELED);
    CHECK(c.order < c.closed_order);
    finish(loop);
    full_listener_close(&f);
}

static void test_cancel_resolving(void)
{
    evmux_loop *loop = unit_loop_new();
    struct server srv;
    struct client c;
    server_start(loop, &srv, "127.0.0.1");
    client_init(loop, &c);
    resolve_gate_close();
    client_connect(&c, "held.test", 80, 0);
    resolve_wait_held(1);
    in_call = 1;
    CHECK_OK(evmux_connect_host_cancel(&c.req));
    CHECK_EQ(evmux_connect_host_cancel(&c.req), -EALREADY);
    in_call = 0;
    RUN_UNTIL(loop, c.calls == 1);
    CHECK_EQ(c.status, -ECANCELED);
    CHECK_EQ(c.held_at_report, 1);
    CHECK_EQ(evmux_connect_host_cancel(&c.req), -EINVAL); /* idle */
    /* The same stream and request connect again. */
    client_connect(&c, "localhost", (unsigned)srv.port, 5000);
    RUN_UNTIL(loop, c.calls == 1 && srv.accepted);
    CHECK_EQ(c.status, 0);
    resolve_gate_release();
    CHECK_OK(evmux_close(&c.s.handle, NULL));
    server_close(&srv);
    finish(loop);
}

static void connect_cb(evmux_connect_req *req, int status)
{
    (void)req;
    (void)status;
    CHECK(!"never called");
}

/* Cancelled before the loop ran: the kernel may have connected already,
 * but the report is -ECANCELED and the socket goes. */
static void test_cancel_connecting(void)
{
    evmux_loop *loop = unit_loop_new();
    struct server srv;
    struct client c;
    server_start(loop, &srv, "127.0.0.1");
    client_init(loop, &c);
    client_connect(&c, "127.0.0.1", (unsigned)srv.port, 0);
    client_write(&c, "lost");
    in_call = 1;
    CHECK_OK(evmux_connect_host_cancel(&c.req));
    CHECK_EQ(evmux_connect_host_cancel(&c.req), -EALREADY);
    in_call = 0;
    CHECK_EQ(evmux_stream_fd(&c.s), -1);
    evmux_connect_req creq; /* the report is still owed: busy */
    struct sockaddr_storage ss;
    socklen_t len;
    CHECK_OK(evmux_addr_ip("127.0.0.1", (unsigned)srv.port, &ss, &len));
    CHECK_EQ(evmux_connect(&creq, &c.s, (struct sockaddr *)&ss, len, 0, connect_cb), -EALREADY);
    RUN_UNTIL(loop, c.calls == 1 && c.write_calls == 1);
    CHECK_EQ(c.status, -ECANCELED);
    CHECK_EQ(c.write_status, -ECANCELED);
    client_connect(&c, "localhost", (unsigned)srv.port, 5000);
    RUN_UNTIL(loop, c.calls == 1);
    CHECK_EQ(c.status, 0);
    CHECK_OK(evmux_close(&c.s.handle, NULL));
    server_close(&srv);
    finish(loop);
}

static void test_busy(void)
{
    evmux_loop *loop = unit_loop_new();
    struct client c;
    client_init(loop, &c);
    CHECK_EQ(evmux_connect_host(&c.req, &c.s, "", 80, 0, on_host), -EINVAL);
    CHECK_EQ(evmux_connect_host(&c.req, &c.s, "localhost", 65536, 0, on_host), -EINVAL);
    resolve_gate_close();
    client_connect(&c, "held.test", 80, 0);
    evmux_connect_host_req other;
    CHECK_EQ(evmux_connect_host(&other, &c.s, "localhost", 80, 0, on_host), -EALREADY);
    evmux_connect_req creq;
    struct sockaddr_storage ss;
    socklen_t len;
    CHECK_OK(evmux_addr_ip("127.0.0.1", 80, &ss, &len));
    CHECK_EQ(evmux_connect(&creq, &c.s, (struct sockaddr *)&ss, len, 0, connect_cb), -EALREADY);
    int sv[2];
    unit_socketpair(sv);
    CHECK_EQ(evmux_stream_open(&c.s, sv[0]), -EISCONN);
    CHECK_EQ(evmux_stream_read_start(&c.s, NULL), -EINVAL);
    CHECK_OK(evmux_close(&c.s.handle, NULL));
    resolve_gate_release();
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(c.calls, 1);
    CHECK_EQ(c.status, -ECANCELED);

    /* An open stream: -EISCONN. */
    struct client d;
    client_init(loop, &d);
    CHECK_OK(evmux_stream_open(&d.s, sv[0]));
    CHECK_EQ(evmux_connect_host(&d.req, &d.s, "localhost", 80, 0, on_host), -EISCONN);
    CHECK_OK(evmux_close(&d.s.handle, NULL));
    close(sv[1]);
    finish(loop);
}

/* ---- a host with nothing but loopback ---- */

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    int rc = fputs(text, f) < 0 ? -1 : 0;
    return fclose(f) != 0 ? -1 : rc;
}

/* A network namespace of our own (a user namespace too when we are not
 * allowed one alone): its only interface is lo, down until we bring it
 * up. 0, or -1 when the system does not let us. */
static int enter_loopback_only_namespace(void)
{
    if (unshare(CLONE_NEWNET) != 0) {
        uid_t uid = getuid();
        gid_t gid = getgid();
        char map[64];
        if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0)
            return -1;
        snprintf(map, sizeof map, "0 %u 1\n", (unsigned)uid);
        if (write_file("/proc/self/uid_map", map) != 0)
            return -1;
        write_file("/proc/self/setgroups", "deny\n");
        snprintf(map, sizeof map, "0 %u 1\n", (unsigned)gid);
        if (write_file("/proc/self/gid_map", map) != 0)
            return -1;
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    int rc = fd >= 0 && ioctl(fd, SIOCGIFFLAGS, &ifr) == 0 ? 0 : -1;
    ifr.ifr_flags |= IFF_UP;
    if (rc == 0 && ioctl(fd, SIOCSIFFLAGS, &ifr) != 0)
        rc = -1;
    if (fd >= 0)
        close(fd);
    return rc;
}

/* 127.0.0.2 on lo, as an alias: an IPv4 address that is not 127.0.0.1. */
static int add_second_loopback_address(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo:1");
    struct sockaddr_in *a = (struct sockaddr_in *)&ifr.ifr_addr;
    a->sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.2", &a->sin_addr);
    int rc = fd >= 0 && ioctl(fd, SIOCSIFADDR, &ifr) == 0 ? 0 : -1;
    if (fd >= 0)
        close(fd);
    return rc;
}

static int connect_to(evmux_loop *loop, const char *listen_ip, const char *host)
{
    struct server srv;
    struct client c;
    server_start(loop, &srv, listen_ip);
    client_init(loop, &c);
    client_connect(&c, host, (unsigned)srv.port, 5000);
    RUN_UNTIL(loop, c.calls == 1);
    if (c.status != 0)
        fprintf(stderr, "   %s: %s\n", host, evmux_strerror(c.status));
    CHECK_OK(evmux_close(&c.s.handle, NULL));
    server_close(&srv);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    return c.status;
}

/* The child of test_loopback_only: 0 passed, 77 cannot run here. */
static int loopback_only_child(void)
{
    if (enter_loopback_only_namespace() != 0)
        return UNIT_SKIP_CODE;
    evmux_loop *loop = unit_loop_new();
    CHECK_EQ(connect_to(loop, "127.0.0.1", "localhost"), 0);
    if (have_ipv6_loopback() && add_second_loopback_address() == 0)
        CHECK_EQ(connect_to(loop, "::1", "v6only.test"), 0);
    else
        fprintf(stderr, "   (no IPv6 loopback or no second address: the AI_ADDRCONFIG case is left out)\n");
    finish(loop);
    return 0;
}

/* In a child, which enters the namespace: the test process keeps its
 * network. No thread is running when it forks (each test's loop, with its
 * pool, is gone). */
static void test_loopback_only(void)
{
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(loopback_only_child());
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    if (WEXITSTATUS(status) == UNIT_SKIP_CODE)
        UNIT_SKIP("no network namespace of our own");
    CHECK_EQ(WEXITSTATUS(status), 0);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(120);
    RUN_TEST(test_localhost);
    RUN_TEST(test_literal);
    RUN_TEST(test_ipv6);
    RUN_TEST(test_refused);
    RUN_TEST(test_next_address);
    RUN_TEST(test_unusable_address);
    RUN_TEST(test_nonexistent);
    RUN_TEST(test_timeout_resolving);
    RUN_TEST(test_timeout_connecting);
    RUN_TEST(test_timeout_split);
    RUN_TEST(test_close_while_resolving);
    RUN_TEST(test_close_while_connecting);
    RUN_TEST(test_cancel_resolving);
    RUN_TEST(test_cancel_connecting);
    RUN_TEST(test_busy);
    RUN_TEST(test_loopback_only);
    return unit_end();
}
