/* Promises of evmux.h that a program must be able to rely on whatever
 * backend runs it (issue 9), each once broken on io_uring:
 *  - the write queue that watermarks measure is what the kernel was
 *    offered and did not take: a fan-out to clients that read never goes
 *    over the high mark, even when one burst is larger than the mark;
 *  - bytes written just before evmux_close get the same chance as on a
 *    readiness backend: a server that echoes and closes in one callback
 *    delivers every reply;
 *  - a Unix connect refused at once (no such path) behaves like any other
 *    failed connect: writes made meanwhile fail through their callbacks
 *    with the connect's error, later ones with -ENOTCONN. */
#include "stream_util.h"

#include <netinet/tcp.h>

/* A connected TCP pair over loopback, both ends non-blocking. */
static void tcp_pair(int *a, int *b)
{
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(lfd >= 0);
    CHECK(bind(lfd, (struct sockaddr *)&ss, len) == 0);
    CHECK(listen(lfd, 1) == 0);
    len = sizeof ss;
    CHECK(getsockname(lfd, (struct sockaddr *)&ss, &len) == 0);
    *a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(*a >= 0);
    CHECK(connect(*a, (struct sockaddr *)&ss, len) == 0);
    *b = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    CHECK(*b >= 0);
    CHECK(fcntl(*a, F_SETFL, O_NONBLOCK) == 0);
    close(lfd);
}

/* ---- fan-out under a high watermark ---- */

enum { FANOUT_CLIENTS = 3, BURST_PIECES = 5, PIECE = 16 * 1024, BURSTS = 60,
       HIGH_MARK = 64 * 1024 };

struct fan_client {
    evmux_stream server_side, client_side;
    uint64_t received;
    uint8_t next_byte; /* the pattern: byte i of the stream is i mod 251 */
    int bad_bytes;
};

struct fanout {
    struct fan_client c[FANOUT_CLIENTS];
    evmux_timer burst;
    int bursts;
    int over_high; /* writes after which a stream was over its high mark */
    int dropped_pieces;
    uint64_t sent;
    unsigned char piece[PIECE + 251];
};

static void fan_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    struct fan_client *c = s->handle.data;
    CHECK(n > 0);
    for (ssize_t i = 0; i < n; i++) {
        if ((uint8_t)buf[i] != c->next_byte)
            c->bad_bytes++;
        c->next_byte = (uint8_t)((c->next_byte + 1) % 251);
    }
    c->received += (uint64_t)n;
}

/* The fan-out server's policy: a client over the mark loses the piece. */
static void fan_burst_cb(evmux_timer *t)
{
    struct fanout *f = t->handle.data;
    for (int p = 0; p < BURST_PIECES; p++) {
        size_t offset = (size_t)(f->sent % 251);
        for (int i = 0; i < FANOUT_CLIENTS; i++) {
            evmux_stream *s = &f->c[i].server_side;
            if (evmux_stream_over_high(s)) {
                f->dropped_pieces++;
                continue;
            }
            CHECK_OK(evmux_stream_write(NULL, s, &(evmux_buf){ f->piece + offset, PIECE }, 1, NULL));
            if (evmux_stream_over_high(s))
                f->over_high++;
        }
        f->sent += PIECE;
    }
    if (++f->bursts == BURSTS)
        CHECK_OK(evmux_timer_stop(t));
}

static void test_fanout_watermarks(void)
{
    evmux_loop *loop = unit_loop_new();
    struct fanout *f = calloc(1, sizeof *f);
    CHECK(f != NULL);
    for (size_t i = 0; i < sizeof f->piece; i++)
        f->piece[i] = (unsigned char)(i % 251);
    for (int i = 0; i < FANOUT_CLIENTS; i++) {
        int a, b;
        tcp_pair(&a, &b);
        struct fan_client *c = &f->c[i];
        CHECK_OK(evmux_stream_init(loop, &c->server_side));
        CHECK_OK(evmux_stream_init(loop, &c->client_side));
        CHECK_OK(evmux_stream_open(&c->server_side, b));
        CHECK_OK(evmux_stream_open(&c->client_side, a));
        CHECK_OK(evmux_stream_set_watermarks(&c->server_side, HIGH_MARK, HIGH_MARK / 2, NULL));
        c->client_side.handle.data = c;
        CHECK_OK(evmux_stream_read_start(&c->client_side, fan_read_cb));
    }
    CHECK_OK(evmux_timer_init(loop, &f->burst, fan_burst_cb));
    f->burst.handle.data = f;
    CHECK_OK(evmux_timer_start(&f->burst, 1, 2));

    struct unit_guard guard;
    unit_guard_start(loop, &guard, 20000);
    uint64_t want = (uint64_t)BURSTS * BURST_PIECES * PIECE;
    for (;;) {
        int done = f->bursts == BURSTS;
        for (int i = 0; i < FANOUT_CLIENTS; i++)
            done = done && f->c[i].received + (uint64_t)f->dropped_pieces * PIECE >= want;
        if (done || guard.fired)
            break;
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    }
    CHECK_EQ(guard.fired, 0);
    /* Clients that read never went over the mark, so none lost a piece. */
    CHECK_EQ(f->over_high, 0);
    CHECK_EQ(f->dropped_pieces, 0);
    for (int i = 0; i < FANOUT_CLIENTS; i++) {
        CHECK_EQ(f->c[i].received, want);
        CHECK_EQ(f->c[i].bad_bytes, 0);
        CHECK_EQ(evmux_stream_queued(&f->c[i].server_side), 0);
        CHECK_OK(evmux_close(&f->c[i].server_side.handle, NULL));
        CHECK_OK(evmux_close(&f->c[i].client_side.handle, NULL));
    }
    unit_guard_close(&guard);
    CHECK_OK(evmux_close(&f->burst.handle, NULL));
    unit_loop_finish(loop);
    free(f);
}

/* A stream that really cannot keep up still goes over the mark on every
 * backend, and hears of the drain once its peer reads again. */
struct slow {
    int drained;
};

static void slow_drain_cb(evmux_stream *s)
{
    ((struct slow *)s->handle.data)->drained++;
}

static void test_watermark_still_holds_for_a_stalled_peer(void)
{
    evmux_loop *loop = unit_loop_new();
    int a, b;
    tcp_pair(&a, &b);
    evmux_stream s;
    struct slow slow = { 0 };
    CHECK_OK(evmux_stream_init(loop, &s));
    s.handle.data = &slow;
    CHECK_OK(evmux_stream_open(&s, b));
    CHECK_OK(evmux_stream_set_watermarks(&s, HIGH_MARK, HIGH_MARK / 2, slow_drain_cb));
    static unsigned char piece[PIECE];
    int writes = 0;
    while (!evmux_stream_over_high(&s)) {
        CHECK(++writes < 100000); /* the kernel's buffers are finite */
        CHECK_OK(evmux_stream_write(NULL, &s, &(evmux_buf){ piece, sizeof piece }, 1, NULL));
        if (!evmux_stream_over_high(&s))
            CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    }
    CHECK(evmux_stream_queued(&s) > HIGH_MARK);
    /* The peer reads everything: the queue drains and says so once. */
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 20000);
    while (slow.drained == 0 && !guard.fired) {
        unit_drain(a);
        CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
        unit_sleep_ms(1);
    }
    CHECK_EQ(guard.fired, 0);
    CHECK_EQ(slow.drained, 1);
    CHECK_EQ(evmux_stream_over_high(&s), 0);
    unit_guard_close(&guard);
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    close(a);
}

/* ---- echo, then close in the same callback ---- */

enum { ECHO_CLIENTS = 400, ECHO_BATCH = 100 };

struct ec_server {
    evmux_listener listener;
    int accepted;
};

struct ec_conn {
    evmux_stream s;
};

struct ec_client {
    evmux_stream s;
    evmux_connect_req creq;
    char msg[32];
    char got[64];
    size_t got_len;
    int eof, err;
    int *finished;
};

static void ec_conn_closed(evmux_handle *h)
{
    free(h->data);
}

static void ec_server_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    if (n > 0) {
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] >= 'a' && buf[i] <= 'z')
                buf[i] = (char)(buf[i] - 'a' + 'A');
        CHECK_OK(evmux_stream_write(NULL, s, &(evmux_buf){ buf, (size_t)n }, 1, NULL));
    }
    CHECK_OK(evmux_close(&s->handle, ec_conn_closed)); /* the reply is owed */
}

static void ec_accept_cb(evmux_listener *l, int status)
{
    CHECK_OK(status);
    struct ec_server *srv = l->handle.data;
    struct ec_conn *c = calloc(1, sizeof *c);
    CHECK(c != NULL);
    CHECK_OK(evmux_stream_init(l->handle.loop, &c->s));
    c->s.handle.data = c;
    CHECK_OK(evmux_accept(l, &c->s));
    CHECK_OK(evmux_stream_read_start(&c->s, ec_server_read_cb));
    srv->accepted++;
}

static void ec_client_closed(evmux_handle *h)
{
    struct ec_client *c = h->data;
    ++*c->finished;
}

static void ec_client_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    struct ec_client *c = s->handle.data;
    if (n > 0) {
        CHECK(c->got_len + (size_t)n <= sizeof c->got);
        memcpy(c->got + c->got_len, buf, (size_t)n);
        c->got_len += (size_t)n;
        return;
    }
    if (n == EVMUX_EOF)
        c->eof = 1;
    else
        c->err = (int)n;
    CHECK_OK(evmux_close(&s->handle, ec_client_closed));
}

static void ec_connect_cb(evmux_connect_req *req, int status)
{
    struct ec_client *c = req->data;
    CHECK_OK(status);
    CHECK_OK(evmux_stream_read_start(&c->s, ec_client_read_cb));
}

static void test_echo_then_close(void)
{
    evmux_loop *loop = unit_loop_new();
    struct ec_server srv = { .accepted = 0 };
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    srv.listener.handle.data = &srv;
    CHECK_OK(evmux_listen(loop, &srv.listener, (struct sockaddr *)&ss, len, NULL, ec_accept_cb));
    len = su_listener_addr(&srv.listener, &ss);

    struct ec_client *clients = calloc(ECHO_CLIENTS, sizeof *clients);
    CHECK(clients != NULL);
    int finished = 0;
    for (int first = 0; first < ECHO_CLIENTS; first += ECHO_BATCH) {
        for (int i = first; i < first + ECHO_BATCH; i++) {
            struct ec_client *c = &clients[i];
            c->finished = &finished;
            snprintf(c->msg, sizeof c->msg, "reply owed to client %d", i);
            CHECK_OK(evmux_stream_init(loop, &c->s));
            c->s.handle.data = c;
            c->creq.data = c;
            CHECK_OK(evmux_connect(&c->creq, &c->s, (struct sockaddr *)&ss, len, 10000,
                                   ec_connect_cb));
            CHECK_OK(evmux_stream_write(NULL, &c->s, &(evmux_buf){ c->msg, strlen(c->msg) }, 1,
                                        NULL));
        }
        su_run_until(loop, &finished, first + ECHO_BATCH, 30000);
    }
    int replied = 0;
    for (int i = 0; i < ECHO_CLIENTS; i++) {
        struct ec_client *c = &clients[i];
        char want[32];
        snprintf(want, sizeof want, "REPLY OWED TO CLIENT %d", i);
        CHECK_EQ(c->err, 0);
        CHECK_EQ(c->eof, 1);
        if (c->got_len == strlen(want) && memcmp(c->got, want, c->got_len) == 0)
            replied++;
    }
    CHECK_EQ(replied, ECHO_CLIENTS);
    CHECK_EQ(srv.accepted, ECHO_CLIENTS);
    CHECK_OK(evmux_close(&srv.listener.handle, NULL));
    unit_loop_finish(loop);
    free(clients);
}

/* ---- a connect refused at once ---- */

struct refused {
    int connect_status, connect_calls;
    int write_status, write_calls;
    int write_after_connect_cb;
};

static void refused_write_cb(evmux_write_req *req, int status)
{
    struct refused *r = req->data;
    r->write_status = status;
    r->write_calls++;
}

static void refused_connect_cb(evmux_connect_req *req, int status)
{
    struct refused *r = req->data;
    r->connect_status = status;
    r->connect_calls++;
    r->write_after_connect_cb = evmux_stream_write(NULL, req->stream,
                                                   &(evmux_buf){ "late", 4 }, 1, NULL);
}

static void test_unix_connect_to_missing_path(void)
{
    evmux_loop *loop = unit_loop_new();
    char dir[64], path[128];
    su_tmpdir(dir, sizeof dir);
    su_path(path, sizeof path, dir, "nobody-listens");
    struct sockaddr_storage ss;
    socklen_t len = su_unix(path, &ss);
    evmux_stream s;
    evmux_connect_req creq;
    evmux_write_req wreq;
    struct refused r = { 0 };
    creq.data = wreq.data = &r;
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_OK(evmux_connect(&creq, &s, (struct sockaddr *)&ss, len, 0, refused_connect_cb));
    /* Accepted while connecting, as for a connect that fails later. */
    CHECK_OK(evmux_stream_write(&wreq, &s, &(evmux_buf){ "early", 5 }, 1, refused_write_cb));
    CHECK_EQ(evmux_stream_queued(&s), 5);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(r.connect_calls, 1);
    CHECK_EQ(r.connect_status, -ENOENT);
    CHECK_EQ(r.write_calls, 1);
    CHECK_EQ(r.write_status, -ENOENT);
    CHECK_EQ(r.write_after_connect_cb, -ENOTCONN);
    CHECK_EQ(evmux_stream_write(NULL, &s, &(evmux_buf){ "x", 1 }, 1, NULL), -ENOTCONN);
    CHECK_EQ(evmux_stream_queued(&s), 0);
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    rmdir(dir);
}

int main(void)
{
    unit_watchdog(120);
    RUN_TEST(test_fanout_watermarks);
    RUN_TEST(test_watermark_still_holds_for_a_stalled_peer);
    RUN_TEST(test_echo_then_close);
    RUN_TEST(test_unix_connect_to_missing_path);
    return 0;
}
