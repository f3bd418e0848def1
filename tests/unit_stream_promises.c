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
 *    with the connect's error, later ones with -ENOTCONN; and a retry from
 *    the callback, refused at once again, is reported as refused;
 *  - bytes written in a callback are handed to the kernel before
 *    evmux_run returns (evmux_stop, RUN_ONCE), as a readiness backend's are;
 *  - a stream closed in a callback, whose send the kernel has not taken
 *    yet, never sends it on a socket that gets its descriptor number. */
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

/* ---- a retry from the connect callback, refused at once again ---- */

struct retry {
    evmux_connect_req second;
    struct sockaddr_storage addr;
    socklen_t len;
    int calls, status[2], write_calls, write_status;
};

static struct retry retry;

static void retry_second_cb(evmux_connect_req *req, int status)
{
    (void)req;
    retry.status[retry.calls++] = status;
}

static void retry_first_cb(evmux_connect_req *req, int status)
{
    retry.status[retry.calls++] = status;
    CHECK_OK(evmux_connect(&retry.second, req->stream, (struct sockaddr *)&retry.addr, retry.len,
                           0, retry_second_cb));
}

static void retry_write_cb(evmux_write_req *req, int status)
{
    (void)req;
    retry.write_calls++;
    retry.write_status = status;
}

static void test_connect_retry_refused_at_once(void)
{
    evmux_loop *loop = unit_loop_new();
    char dir[64], path[128];
    su_tmpdir(dir, sizeof dir);
    su_path(path, sizeof path, dir, "nobody-listens");
    memset(&retry, 0, sizeof retry);
    retry.len = su_unix(path, &retry.addr);
    evmux_stream s;
    evmux_connect_req first;
    evmux_write_req w;
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_OK(evmux_connect(&first, &s, (struct sockaddr *)&retry.addr, retry.len, 0,
                           retry_first_cb));
    CHECK_OK(evmux_stream_write(&w, &s, &(evmux_buf){ "hello", 5 }, 1, retry_write_cb));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(retry.calls, 2);
    CHECK_EQ(retry.status[0], -ENOENT);
    CHECK_EQ(retry.status[1], -ENOENT); /* once reported as success */
    /* The write waited for the retry, and failed with it. */
    CHECK_EQ(retry.write_calls, 1);
    CHECK_EQ(retry.write_status, -ENOENT);
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    rmdir(dir);
}

/* ---- bytes written in a callback are out when evmux_run returns ---- */

static void pong_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    (void)buf;
    if (n > 0) {
        CHECK_OK(evmux_stream_write(NULL, s, &(evmux_buf){ "pong", 4 }, 1, NULL));
        evmux_stop(evmux_handle_loop(&s->handle));
    }
}

static void test_written_bytes_out_when_run_returns(void)
{
    for (int mode = 0; mode < 2; mode++) {
        evmux_loop *loop = unit_loop_new();
        int sv[2];
        unit_socketpair(sv);
        evmux_stream s;
        CHECK_OK(evmux_stream_init(loop, &s));
        CHECK_OK(evmux_stream_open(&s, sv[0]));
        CHECK_OK(evmux_stream_read_start(&s, pong_read_cb));
        CHECK(write(sv[1], "ping", 4) == 4);
        CHECK_OK(evmux_run(loop, mode == 0 ? EVMUX_RUN_DEFAULT : EVMUX_RUN_ONCE));
        /* The program may exit now: the reply must be on its way. */
        char reply[8];
        CHECK(su_wait_readable(sv[1], 0)); /* no waiting: already there */
        CHECK_EQ(read(sv[1], reply, sizeof reply), 4);
        CHECK(memcmp(reply, "pong", 4) == 0);
        /* (io_uring hears that the kernel took them in the next run.) */
        CHECK_OK(evmux_close(&s.handle, NULL));
        unit_loop_finish(loop);
        close(sv[1]);
    }
}

/* ---- a closed stream's send never reaches its number's next owner ---- */

static evmux_stream misdirect_a, misdirect_b;
static int misdirect_new[2] = { -1, -1 };

static void misdirect_b_written(evmux_write_req *req, int status)
{
    (void)req;
    CHECK_OK(status);
    CHECK_OK(evmux_close(&misdirect_a.handle, NULL));
    unit_socketpair(misdirect_new); /* takes A's descriptor number */
}

static void test_close_before_submit_keeps_bytes_home(void)
{
    evmux_loop *loop = unit_loop_new();
    int a[2], b[2];
    unit_socketpair(a);
    unit_socketpair(b);
    int a_number = a[0];
    CHECK_OK(evmux_stream_init(loop, &misdirect_a));
    CHECK_OK(evmux_stream_init(loop, &misdirect_b));
    CHECK_OK(evmux_stream_open(&misdirect_a, a[0]));
    CHECK_OK(evmux_stream_open(&misdirect_b, b[0]));
    /* B's write passes its mark and goes out at once, so its callback runs
     * in the pass that prepares A's send, after it. */
    CHECK_OK(evmux_stream_set_watermarks(&misdirect_b, 1, 0, NULL));
    evmux_write_req wb;
    CHECK_OK(evmux_stream_write(NULL, &misdirect_a, &(evmux_buf){ "SECRET-OF-A", 11 }, 1, NULL));
    CHECK_OK(evmux_stream_write(&wb, &misdirect_b, &(evmux_buf){ "bb", 2 }, 1, misdirect_b_written));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK(misdirect_new[0] >= 0);
    if (misdirect_new[0] != a_number && misdirect_new[1] != a_number)
        fprintf(stderr, "   (A's number %d was not reused: %d, %d)\n", a_number, misdirect_new[0],
                misdirect_new[1]);
    char buf[64];
    CHECK_EQ(read(misdirect_new[1], buf, sizeof buf), -1); /* nothing for the new socket */
    CHECK(errno == EAGAIN);
    CHECK_EQ(read(misdirect_new[0], buf, sizeof buf), -1);
    CHECK(errno == EAGAIN);
    CHECK_OK(evmux_close(&misdirect_b.handle, NULL));
    unit_loop_finish(loop);
    for (int i = 0; i < 2; i++)
        close(misdirect_new[i]);
    close(a[1]);
    close(b[1]);
}

int main(void)
{
    unit_watchdog(120);
    RUN_TEST(test_fanout_watermarks);
    RUN_TEST(test_watermark_still_holds_for_a_stalled_peer);
    RUN_TEST(test_echo_then_close);
    RUN_TEST(test_unix_connect_to_missing_path);
    RUN_TEST(test_connect_retry_refused_at_once);
    RUN_TEST(test_written_bytes_out_when_run_returns);
    RUN_TEST(test_close_before_submit_keeps_bytes_home);
    return 0;
}
