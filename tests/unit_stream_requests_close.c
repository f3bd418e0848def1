/* Regression tests for the streams' kernel requests (issue 11), part two:
 * closing a stream while it has requests pending, on every backend. Each
 * checks that every callback runs exactly once, in order (the requests'
 * callbacks before the close callback), that the socket really goes (the
 * peer sees the end) and that no descriptor stays open; ASan checks that
 * nothing leaks or is touched after its close callback.
 *  - test_close_pending_write_tcp, _unix: a pending recv and a 100 MB write
 *    to a peer that never reads.
 *  - test_close_while_connecting: before the loop ran, and with the connect
 *    in the kernel.
 *  - test_close_after_accept: from the accept callback, bytes in flight
 *    both ways.
 *  - test_close_in_write_cb: from the callback of a large write, with
 *    more writes queued behind it. */
#include "request_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>

/* What ran, in order: one letter per callback. */
static char events[32];
static int n_events;

static void event(char c)
{
    CHECK(n_events < (int)sizeof events - 1);
    events[n_events++] = c;
    events[n_events] = '\0';
}

static void events_reset(void)
{
    n_events = 0;
    events[0] = '\0';
}

static void check_events(const char *want)
{
    if (strcmp(events, want) != 0) {
        fprintf(stderr, "callbacks ran as \"%s\", want \"%s\"\n", events, want);
        CHECK(0);
    }
}

/* A connected TCP pair over loopback, both ends non-blocking. */
static void tcp_pair(int sv[2])
{
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(l >= 0);
    CHECK(bind(l, (struct sockaddr *)&ss, len) == 0);
    CHECK(listen(l, 1) == 0);
    len = sizeof ss;
    CHECK(getsockname(l, (struct sockaddr *)&ss, &len) == 0);
    sv[1] = su_raw_connect(&ss, len);
    sv[0] = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    CHECK(sv[0] >= 0);
    close(l);
}

/* Reads a raw non-blocking socket until the connection ends (EOF or an
 * error such as a reset), checking that the bytes are the pattern's; fails
 * if the end has not come 5 s after t0. Returns the milliseconds from t0. */
static double peer_wait_end(int fd, uint64_t t0, uint64_t *got)
{
    static unsigned char buf[256 * 1024];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r > 0) {
            CHECK(ru_pat_match(buf, *got, (size_t)r));
            *got += (uint64_t)r;
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR))
            return (double)(unit_mono_ns() - t0) / 1e6;
        int64_t left_ms = 5000 - (int64_t)((unit_mono_ns() - t0) / 1000000u);
        if (left_ms <= 0) {
            fprintf(stderr, "the peer saw no end 5 s after the close (%llu bytes read)\n",
                    (unsigned long long)*got);
            CHECK(0);
        }
        su_wait_readable(fd, (int)left_ms);
    }
}

/* ---- a pending recv and a 100 MB write to a peer that never reads ---- */

struct pending {
    evmux_stream s;
    evmux_write_req req;
    int write_calls, write_status;
    int reads, closes;
};

static void pending_write_cb(evmux_write_req *req, int status)
{
    struct pending *p = req->data;
    p->write_calls++;
    p->write_status = status;
    event('w');
}

static void pending_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    (void)n;
    (void)buf;
    ((struct pending *)s->handle.data)->reads++; /* the peer never sends or ends */
}

static void pending_closed(evmux_handle *h)
{
    ((struct pending *)h->data)->closes++;
    event('X');
}

static void close_pending_write(int tcp)
{
    int fds_before = ru_count_fds();
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    if (tcp)
        tcp_pair(sv);
    else
        unit_socketpair(sv);
    struct pending p;
    memset(&p, 0, sizeof p);
    p.s.handle.data = p.req.data = &p;
    CHECK_OK(evmux_stream_init(loop, &p.s));
    CHECK_OK(evmux_stream_open(&p.s, sv[0]));
    CHECK_OK(evmux_stream_read_start(&p.s, pending_read_cb));
    size_t len = 100u << 20;
    unsigned char *big = malloc(len);
    CHECK(big != NULL);
    ru_pat_fill(big, 0, len);
    CHECK_OK(evmux_stream_write(&p.req, &p.s, &(evmux_buf){ big, len }, 1, pending_write_cb));
    free(big); /* copied */
    su_run_for(loop, 50); /* io_uring: the recv is armed, the send waits for room */
    CHECK(evmux_stream_queued(&p.s) > 0);
    CHECK_EQ(p.write_calls, 0);

    events_reset();
    uint64_t t0 = unit_mono_ns();
    CHECK_OK(evmux_close(&p.s.handle, pending_closed));
    su_run_until(loop, &p.closes, 1, 5000);
    check_events("wX");
    CHECK_EQ(p.write_status, -ECANCELED);
    CHECK_EQ(p.reads, 0);
    uint64_t got = 0;
    double ms = peer_wait_end(sv[1], t0, &got);
    fprintf(stderr, "   the peer saw the end %.1f ms after the close, after %llu bytes\n", ms,
            (unsigned long long)got);
    CHECK(got < len);
    close(sv[1]);
    unit_loop_finish(loop);
    CHECK_EQ(p.closes, 1);
    CHECK_EQ(p.write_calls, 1);
    CHECK_EQ(ru_count_fds(), fds_before);
}

/* Closing a stream with a recv pending and most of a 100 MB write queued
 * (its send blocked, on io_uring in the kernel) to a peer that never reads:
 * the write fails once with -ECANCELED before the close callback, which
 * runs once, and the peer sees the connection end (within a 5 s bound). */
static void test_close_pending_write_tcp(void)
{
    close_pending_write(1);
}

static void test_close_pending_write_unix(void)
{
    close_pending_write(0);
}

/* ---- close while connecting ---- */

struct connecting {
    evmux_stream s;
    evmux_connect_req creq;
    evmux_write_req w1, w2;
    int connect_status, w1_status, w2_status, shut_status;
    int closes;
};

static void conn_connect_cb(evmux_connect_req *req, int status)
{
    ((struct connecting *)req->data)->connect_status = status;
    event('c');
}

static void conn_write_cb(evmux_write_req *req, int status)
{
    struct connecting *c = req->data;
    if (req == &c->w1) {
        c->w1_status = status;
        event('1');
    } else {
        c->w2_status = status;
        event('2');
    }
}

static void conn_shut_cb(evmux_stream *s, int status)
{
    ((struct connecting *)s->handle.data)->shut_status = status;
    event('s');
}

static void conn_closed(evmux_handle *h)
{
    ((struct connecting *)h->data)->closes++;
    event('X');
}

/* A connect that cannot finish: to a listener whose accept queue is full
 * (backlog 0 holds one connection), which drops the SYNs. Closed before
 * the loop ran (in_kernel 0), or after (its watch is in the kernel): the
 * connect, the two writes made meanwhile and the shutdown each fail once
 * with -ECANCELED, in that order, then the close callback runs once. */
static void close_while_connecting(int in_kernel)
{
    int fds_before = ru_count_fds();
    evmux_loop *loop = unit_loop_new();
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(l >= 0);
    CHECK(bind(l, (struct sockaddr *)&ss, len) == 0);
    CHECK(listen(l, 0) == 0);
    len = sizeof ss;
    CHECK(getsockname(l, (struct sockaddr *)&ss, &len) == 0);
    int filler = su_raw_connect(&ss, len);

    struct connecting c;
    memset(&c, 0, sizeof c);
    c.s.handle.data = c.creq.data = c.w1.data = c.w2.data = &c;
    c.connect_status = c.w1_status = c.w2_status = c.shut_status = 1;
    events_reset();
    CHECK_OK(evmux_stream_init(loop, &c.s));
    CHECK_OK(evmux_connect(&c.creq, &c.s, (struct sockaddr *)&ss, len, 0, conn_connect_cb));
    static unsigned char piece[64 * 1024];
    ru_pat_fill(piece, 0, sizeof piece);
    CHECK_OK(evmux_stream_write(&c.w1, &c.s, &(evmux_buf){ piece, 100 }, 1, conn_write_cb));
    CHECK_OK(evmux_stream_write(&c.w2, &c.s, &(evmux_buf){ piece, sizeof piece }, 1, conn_write_cb));
    CHECK_OK(evmux_stream_shutdown(&c.s, conn_shut_cb));
    if (in_kernel) {
        su_run_for(loop, 30);
        check_events(""); /* still connecting: the SYN was dropped */
    }
    CHECK_OK(evmux_close(&c.s.handle, conn_closed));
    CHECK_EQ(evmux_stream_fd(&c.s), -1);
    check_events(""); /* never inside evmux_close */
    su_run_until(loop, &c.closes, 1, 5000);
    check_events("c12sX");
    CHECK_EQ(c.connect_status, -ECANCELED);
    CHECK_EQ(c.w1_status, -ECANCELED);
    CHECK_EQ(c.w2_status, -ECANCELED);
    CHECK_EQ(c.shut_status, -ECANCELED);
    unit_loop_finish(loop);
    check_events("c12sX");
    close(filler);
    close(l);
    CHECK_EQ(ru_count_fds(), fds_before);
}

static void test_close_while_connecting(void)
{
    close_while_connecting(0);
    close_while_connecting(1);
}

/* ---- close right after accept ---- */

enum { ACC_REPLY1 = 64 * 1024, ACC_REPLY2 = 1 << 20 };

struct acceptor {
    evmux_listener l;
    evmux_stream s;
    evmux_write_req w1, w2;
    int w1_calls, w2_calls, w1_status, w2_status;
    int accepts, reads, closes;
};

static void acc_write_cb(evmux_write_req *req, int status)
{
    struct acceptor *a = req->data;
    if (req == &a->w1) {
        a->w1_calls++;
        a->w1_status = status;
        event('1');
    } else {
        a->w2_calls++;
        a->w2_status = status;
        event('2');
    }
}

static void acc_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    (void)n;
    (void)buf;
    ((struct acceptor *)s->handle.data)->reads++; /* closed before any read */
}

static void acc_closed(evmux_handle *h)
{
    ((struct acceptor *)h->data)->closes++;
    event('X');
}

static void acc_accept_cb(evmux_listener *l, int status)
{
    struct acceptor *a = l->handle.data;
    CHECK_EQ(status, 0);
    CHECK_EQ(a->accepts, 0);
    a->accepts++;
    a->s.handle.data = a->w1.data = a->w2.data = a;
    CHECK_OK(evmux_stream_init(l->handle.loop, &a->s));
    CHECK_OK(evmux_accept(l, &a->s));
    CHECK_OK(evmux_stream_read_start(&a->s, acc_read_cb));
    unsigned char *reply = malloc(ACC_REPLY1 + ACC_REPLY2);
    CHECK(reply != NULL);
    ru_pat_fill(reply, 0, ACC_REPLY1 + ACC_REPLY2);
    CHECK_OK(evmux_stream_write(&a->w1, &a->s, &(evmux_buf){ reply, ACC_REPLY1 }, 1, acc_write_cb));
    CHECK_OK(evmux_stream_write(&a->w2, &a->s, &(evmux_buf){ reply + ACC_REPLY1, ACC_REPLY2 }, 1,
                                acc_write_cb));
    free(reply);
    CHECK_OK(evmux_close(&a->s.handle, acc_closed));
    CHECK_EQ(evmux_stream_fd(&a->s), -1);
    check_events("");
}

/* A client connects and sends 256 KiB; the server accepts, starts reading,
 * writes 64 KiB and 1 MiB and closes, all in the accept callback: no read
 * callback, each write callback once (0 or -ECANCELED, never 0 after a
 * -ECANCELED), then the close callback once; the client gets a byte-exact
 * prefix of the reply, then the end. */
static void test_close_after_accept(void)
{
    int fds_before = ru_count_fds();
    evmux_loop *loop = unit_loop_new();
    struct acceptor a;
    memset(&a, 0, sizeof a);
    a.l.handle.data = &a;
    struct sockaddr_storage ss, bound;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    CHECK_OK(evmux_listen(loop, &a.l, (struct sockaddr *)&ss, len, NULL, acc_accept_cb));
    len = su_listener_addr(&a.l, &bound);
    int client = su_raw_connect(&bound, len);
    static unsigned char hello[256 * 1024];
    ru_pat_fill(hello, 0, sizeof hello);
    CHECK(write(client, hello, sizeof hello) > 0); /* as much as fits */
    events_reset();
    uint64_t t0 = unit_mono_ns();
    su_run_until(loop, &a.closes, 1, 5000);
    check_events("12X");
    CHECK_EQ(a.accepts, 1);
    CHECK_EQ(a.reads, 0);
    CHECK_EQ(a.w1_calls, 1);
    CHECK_EQ(a.w2_calls, 1);
    CHECK(a.w1_status == 0 || a.w1_status == -ECANCELED);
    CHECK(a.w2_status == 0 || a.w2_status == -ECANCELED);
    CHECK(!(a.w1_status == -ECANCELED && a.w2_status == 0));
    uint64_t got = 0;
    double ms = peer_wait_end(client, t0, &got);
    fprintf(stderr, "   the client saw the end %.1f ms after the accept, after %llu bytes\n", ms,
            (unsigned long long)got);
    CHECK(got <= ACC_REPLY1 + ACC_REPLY2);
    close(client);
    CHECK_OK(evmux_close(&a.l.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(a.closes, 1);
    check_events("12X");
    CHECK_EQ(ru_count_fds(), fds_before);
}

/* ---- close from the callback of a large write ---- */

static const size_t wcb_len[3] = { 4u << 20, 4u << 20, 1 };

struct wcb_stream {
    evmux_stream s;
    evmux_write_req req[3];
    int calls[3], status[3];
    int closes;
};

/* The far end: reads as bytes come, checks them, notes the end. */
struct wcb_peer {
    evmux_io io;
    uint64_t got;
    int ended;
};

static void wcb_closed(evmux_handle *h)
{
    ((struct wcb_stream *)h->data)->closes++;
    event('X');
}

static void wcb_write_cb(evmux_write_req *req, int status)
{
    struct wcb_stream *w = req->data;
    int i = (int)(req - w->req);
    w->calls[i]++;
    w->status[i] = status;
    event((char)('1' + i));
    if (i == 0) {
        CHECK_EQ(status, 0);
        CHECK_OK(evmux_close(&w->s.handle, wcb_closed));
    }
}

static void wcb_peer_cb(evmux_io *io, unsigned events_)
{
    struct wcb_peer *p = io->handle.data;
    static unsigned char buf[256 * 1024];
    (void)events_;
    ssize_t r;
    while ((r = read(evmux_io_fd(io), buf, sizeof buf)) > 0) {
        CHECK(ru_pat_match(buf, p->got, (size_t)r));
        p->got += (uint64_t)r;
    }
    if (r == 0 || errno != EAGAIN) {
        p->ended = 1;
        CHECK_OK(evmux_io_stop(io));
    }
}

/* A 4 MiB write, then 4 MiB and 1 byte behind it, to a peer that reads;
 * the first write's callback (0) closes the stream. The other two each
 * complete once with -ECANCELED (the socket holds far less than 4 MiB), in
 * order, before the close callback, which runs once. The peer gets every
 * byte of the first write, byte-exact, then EOF. */
static void test_close_in_write_cb(void)
{
    int fds_before = ru_count_fds();
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    struct wcb_stream w;
    memset(&w, 0, sizeof w);
    w.s.handle.data = &w;
    CHECK_OK(evmux_stream_init(loop, &w.s));
    CHECK_OK(evmux_stream_open(&w.s, sv[0]));
    struct wcb_peer peer = { .got = 0 };
    CHECK_OK(evmux_io_init(loop, &peer.io, sv[1], wcb_peer_cb));
    peer.io.handle.data = &peer;
    CHECK_OK(evmux_io_start(&peer.io, EVMUX_READABLE));

    size_t total = wcb_len[0] + wcb_len[1] + wcb_len[2];
    unsigned char *data = malloc(total);
    CHECK(data != NULL);
    ru_pat_fill(data, 0, total);
    events_reset();
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        w.req[i].data = &w;
        CHECK_OK(evmux_stream_write(&w.req[i], &w.s, &(evmux_buf){ data + off, wcb_len[i] }, 1,
                                    wcb_write_cb));
        off += wcb_len[i];
    }
    free(data);
    su_run_until(loop, &w.closes, 1, 10000);
    check_events("123X");
    su_run_until(loop, &peer.ended, 1, 5000);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(w.calls[i], 1);
    CHECK_EQ(w.status[0], 0);
    CHECK_EQ(w.status[1], -ECANCELED);
    CHECK_EQ(w.status[2], -ECANCELED);
    fprintf(stderr, "   the peer got %llu of %zu bytes\n", (unsigned long long)peer.got, total);
    CHECK(peer.got >= wcb_len[0]);
    CHECK(peer.got < wcb_len[0] + wcb_len[1]);
    CHECK_OK(evmux_close(&peer.io.handle, NULL));
    unit_loop_finish(loop);
    close(sv[1]);
    CHECK_EQ(w.closes, 1);
    CHECK_EQ(ru_count_fds(), fds_before);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(100);
    ru_pat_init();
    RUN_TEST(test_close_pending_write_tcp);
    RUN_TEST(test_close_pending_write_unix);
    RUN_TEST(test_close_while_connecting);
    RUN_TEST(test_close_after_accept);
    RUN_TEST(test_close_in_write_cb);
    return unit_end();
}
