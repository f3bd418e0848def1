/* Streams: byte-exact echo over TCP (IPv4 and IPv6) and Unix sockets,
 * vectored writes, write callbacks (once each, in order, never inside the
 * call), queue size and watermarks, half-close from either side, and
 * starting and stopping reads. */
#include "stream_util.h"

#include <errno.h>
#include <stdlib.h>

/* ---- echo ---- */

static void test_strerror_eof(void)
{
    CHECK(strcmp(evmux_strerror(EVMUX_EOF), "end of stream") == 0);
}

static void test_tcp_echo_concurrent(void)
{
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    su_echo_run(&ss, len, 3, 4u << 20, 1234);
}

static void test_unix_echo(void)
{
    char dir[128], path[200];
    su_tmpdir(dir, sizeof dir);
    su_path(path, sizeof path, dir, "echo.sock");
    struct sockaddr_storage ss;
    socklen_t len = su_unix(path, &ss);
    su_echo_run(&ss, len, 2, 1u << 20, 777);
    /* The listener removed its socket file on close. */
    CHECK_EQ(su_path_exists(path), 0);
    CHECK(rmdir(dir) == 0);
}

static void test_ipv6_echo(void)
{
    if (!have_ipv6_loopback()) {
        UNIT_SKIP("no IPv6 loopback");
    }
    struct sockaddr_storage ss;
    socklen_t len = su_ip("::1", 0, &ss);
    CHECK_EQ(ss.ss_family, AF_INET6);
    su_echo_run(&ss, len, 2, 2u << 20, 4321);
}

/* ---- a reading end that checks what arrives against what was written ---- */

struct sink {
    evmux_stream s;
    unsigned char *expect; /* grows as writes are made */
    size_t expect_len, expect_cap;
    size_t got;
    int eof;
    int reads;
};

static void sink_expect(struct sink *k, const void *p, size_t n)
{
    if (k->expect_len + n > k->expect_cap) {
        size_t cap = k->expect_cap ? k->expect_cap : 65536;
        while (cap < k->expect_len + n)
            cap *= 2;
        k->expect = realloc(k->expect, cap);
        CHECK(k->expect != NULL);
        k->expect_cap = cap;
    }
    if (n > 0)
        memcpy(k->expect + k->expect_len, p, n);
    k->expect_len += n;
}

static void sink_read_cb(evmux_stream *s, ssize_t nread, char *buf)
{
    struct sink *k = (struct sink *)s->handle.data;
    k->reads++;
    if (nread > 0) {
        CHECK(k->got + (size_t)nread <= k->expect_len);
        if (memcmp(buf, k->expect + k->got, (size_t)nread) != 0) {
            fprintf(stderr, "sink: wrong bytes near offset %zu\n", k->got);
            CHECK(0);
        }
        k->got += (size_t)nread;
        return;
    }
    CHECK_EQ(nread, EVMUX_EOF);
    CHECK_EQ(k->eof, 0);
    k->eof = 1;
}

static void sink_open(evmux_loop *loop, struct sink *k, int fd)
{
    memset(k, 0, sizeof *k);
    k->s.handle.data = k;
    CHECK_OK(evmux_stream_init(loop, &k->s));
    CHECK_OK(evmux_stream_open(&k->s, fd));
    CHECK_EQ(evmux_stream_fd(&k->s), fd);
    CHECK_OK(evmux_stream_read_start(&k->s, sink_read_cb));
}

/* ---- write requests that record their completion ---- */

enum { MAX_WRITES = 64 };

struct wlog {
    int in_call;
    int count;
    int index[MAX_WRITES * 4];
    int status[MAX_WRITES * 4];
    int calls[MAX_WRITES * 4]; /* per request index */
};

struct wreq {
    evmux_write_req req;
    struct wlog *log;
    int index;
};

static void wlog_cb(evmux_write_req *req, int status)
{
    struct wreq *w = (struct wreq *)req->data;
    struct wlog *log = w->log;
    CHECK_EQ(log->in_call, 0);
    CHECK(log->count < MAX_WRITES * 4);
    log->index[log->count] = w->index;
    log->status[log->count] = status;
    log->count++;
    log->calls[w->index]++;
}

static void wreq_init(struct wreq *w, struct wlog *log, int index)
{
    memset(w, 0, sizeof *w);
    w->req.data = w;
    w->log = log;
    w->index = index;
}

static int logged_write(struct wlog *log, struct wreq *w, evmux_stream *s, const evmux_buf *bufs,
                        size_t nbufs)
{
    log->in_call = 1;
    int rc = evmux_stream_write(&w->req, s, bufs, nbufs, wlog_cb);
    log->in_call = 0;
    return rc;
}

/* Builds nbufs buffers in a scratch area from a random generator: lengths
 * from `pick`, zero-length ones mixed in. Records the bytes in the sink,
 * writes, then scribbles over and frees the scratch area: the stream must
 * have copied what it did not send. Returns the bytes written. */
static size_t scratch_write(struct wlog *log, struct wreq *w, evmux_stream *s, struct sink *k,
                            size_t nbufs, size_t max_len, int zero_pct, uint32_t *rng)
{
    evmux_buf *bufs = calloc(nbufs ? nbufs : 1, sizeof *bufs);
    size_t *lens = calloc(nbufs ? nbufs : 1, sizeof *lens);
    CHECK(bufs && lens);
    size_t total = 0;
    for (size_t i = 0; i < nbufs; i++) {
        uint32_t r = unit_rand(rng);
        lens[i] = (int)(r % 100) < zero_pct ? 0 : 1 + (unit_rand(rng) % max_len);
        total += lens[i];
    }
    unsigned char *scratch = malloc(total ? total : 1);
    CHECK(scratch != NULL);
    size_t off = 0;
    for (size_t i = 0; i < nbufs; i++) {
        for (size_t j = 0; j < lens[i]; j++)
            scratch[off + j] = (unsigned char)(unit_rand(rng) >> 7);
        bufs[i].base = lens[i] ? scratch + off : (const void *)"";
        bufs[i].len = lens[i];
        off += lens[i];
    }
    sink_expect(k, scratch, total);
    size_t before = evmux_stream_queued(s);
    CHECK_OK(logged_write(log, w, s, bufs, nbufs));
    if (before > 0) /* something was queued: nothing is sent inline */
        CHECK_EQ(evmux_stream_queued(s), before + total);
    else
        CHECK(evmux_stream_queued(s) <= total);
    memset(scratch, 0xA5, total);
    free(scratch);
    free(bufs);
    free(lens);
    return total;
}

static void test_vectored_writes(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    evmux_stream w;
    struct sink k;
    struct wlog log;
    struct wreq reqs[16];
    uint32_t rng = 99;
    memset(&log, 0, sizeof log);
    CHECK_OK(evmux_stream_init(loop, &w));
    CHECK_OK(evmux_stream_open(&w, sv[0]));
    sink_open(loop, &k, sv[1]);

    /* 2000 tiny buffers (more than IOV_MAX), a third of them empty: the
     * kernel takes it all at once, and the callback still comes from the
     * loop, not from inside the call. */
    wreq_init(&reqs[0], &log, 0);
    size_t n0 = scratch_write(&log, &reqs[0], &w, &k, 2000, 3, 33, &rng);
    CHECK(n0 > 0);
    CHECK_EQ(evmux_stream_queued(&w), su_writes_at_once(loop) ? 0 : n0);
    CHECK_EQ(log.count, 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(log.count, 1);
    CHECK_EQ(log.status[0], 0);

    /* Large vectored writes: 70 buffers (> 64 per sendmsg), 1025 and 3000
     * buffers (> IOV_MAX), with empty buffers, an empty write (no buffers),
     * and a write of empty buffers only, queued behind each other. */
    int nw = 1;
    wreq_init(&reqs[nw], &log, nw);
    scratch_write(&log, &reqs[nw], &w, &k, 70, 64 << 10, 10, &rng);
    nw++;
    CHECK(evmux_stream_queued(&w) > 0); /* more than a socket buffer */
    wreq_init(&reqs[nw], &log, nw);
    scratch_write(&log, &reqs[nw], &w, &k, 1025, 4000, 20, &rng);
    nw++;
    wreq_init(&reqs[nw], &log, nw);
    size_t q = evmux_stream_queued(&w);
    CHECK_OK(logged_write(&log, &reqs[nw], &w, NULL, 0));
    CHECK_EQ(evmux_stream_queued(&w), q);
    nw++;
    wreq_init(&reqs[nw], &log, nw);
    scratch_write(&log, &reqs[nw], &w, &k, 3000, 1000, 5, &rng);
    nw++;
    wreq_init(&reqs[nw], &log, nw);
    scratch_write(&log, &reqs[nw], &w, &k, 5, 10, 100, &rng); /* all empty */
    nw++;
    wreq_init(&reqs[nw], &log, nw);
    scratch_write(&log, &reqs[nw], &w, &k, 1, 100000, 0, &rng);
    nw++;
    /* A write without a request (and without a callback). */
    {
        char tail[300];
        for (size_t i = 0; i < sizeof tail; i++)
            tail[i] = (char)i;
        evmux_buf b[2] = { { tail, 100 }, { tail + 100, 200 } };
        sink_expect(&k, tail, sizeof tail);
        CHECK_OK(evmux_stream_write(NULL, &w, b, 2, NULL));
    }
    CHECK_EQ(log.count, 1);

    su_run_until(loop, &log.count, nw, 10000);
    CHECK_EQ(evmux_stream_queued(&w), 0);
    for (int i = 0; i < nw; i++) {
        CHECK_EQ(log.index[i], i);
        CHECK_EQ(log.status[i], 0);
        CHECK_EQ(log.calls[i], 1);
    }
    /* Everything arrives, in order. */
    for (int i = 0; i < 1000 && k.got < k.expect_len; i++)
        su_run_for(loop, 5);
    CHECK_EQ(k.got, k.expect_len);

    /* A zero-byte write on an idle stream also reports from the loop. */
    wreq_init(&reqs[nw], &log, nw);
    CHECK_OK(logged_write(&log, &reqs[nw], &w, NULL, 0));
    nw++;
    CHECK_EQ(log.count, nw - 1);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(log.count, nw);
    CHECK_EQ(log.status[nw - 1], 0);

    /* The end: shutdown reaches the reader as EOF after all the bytes. */
    CHECK_OK(evmux_stream_shutdown(&w, NULL));
    su_run_until(loop, &k.eof, 1, 5000);
    CHECK_EQ(k.got, k.expect_len);
    CHECK_EQ(log.count, nw); /* nothing called twice */

    CHECK_OK(evmux_close(&w.handle, NULL));
    CHECK_OK(evmux_close(&k.s.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(unit_fd_is_open(sv[0]), 0);
    CHECK_EQ(unit_fd_is_open(sv[1]), 0);
    free(k.expect);
}

/* The same many-buffer write when the stream has nothing queued and the
 * kernel takes only part of it: the rest must be queued from the exact
 * byte where the kernel stopped, even in the middle of a buffer. */
static void test_vectored_partial_send(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    int small = 4096;
    CHECK(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    evmux_stream w;
    struct sink k;
    struct wlog log;
    struct wreq reqs[8];
    uint32_t rng = 5;
    memset(&log, 0, sizeof log);
    CHECK_OK(evmux_stream_init(loop, &w));
    CHECK_OK(evmux_stream_open(&w, sv[0]));
    sink_open(loop, &k, sv[1]);

    for (int i = 0; i < 6; i++) {
        wreq_init(&reqs[i], &log, i);
        size_t before = evmux_stream_queued(&w);
        size_t n = scratch_write(&log, &reqs[i], &w, &k, 1100 + 300 * (size_t)i, 777, 15, &rng);
        if (before == 0) /* io_uring: all of it, until the loop submits */
            CHECK(evmux_stream_queued(&w) > 0 &&
                  (evmux_stream_queued(&w) < n || !su_writes_at_once(loop)));
        /* Let part of it go, so that the next write may find an empty queue. */
        if (i % 2 == 1)
            su_run_until(loop, &log.count, i + 1, 5000);
    }
    su_run_until(loop, &log.count, 6, 10000);
    for (int i = 0; i < 6; i++) {
        CHECK_EQ(log.index[i], i);
        CHECK_EQ(log.status[i], 0);
    }
    CHECK_OK(evmux_stream_shutdown(&w, NULL));
    su_run_until(loop, &k.eof, 1, 5000);
    CHECK_EQ(k.got, k.expect_len);
    CHECK_EQ(log.count, 6);
    CHECK_OK(evmux_close(&w.handle, NULL));
    CHECK_OK(evmux_close(&k.s.handle, NULL));
    unit_loop_finish(loop);
    free(k.expect);
}

/* ---- watermarks ---- */

struct drain_rec {
    int calls;
    size_t queued_at_drain;
    int over_at_drain;
};

static void drain_cb(evmux_stream *s)
{
    struct drain_rec *d = (struct drain_rec *)s->handle.data;
    d->calls++;
    d->queued_at_drain = evmux_stream_queued(s);
    d->over_at_drain = evmux_stream_over_high(s);
}

static void peer_drain_io_cb(evmux_io *io, unsigned events)
{
    size_t *total = (size_t *)io->handle.data;
    (void)events;
    *total += unit_drain(evmux_io_fd(io));
}

static void test_watermarks(void)
{
    enum { HIGH = 256 << 10, LOW = 64 << 10, PIECE = 32 << 10 };
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    evmux_stream w;
    struct drain_rec d;
    struct wlog log;
    struct wreq reqs[MAX_WRITES];
    memset(&d, 0, sizeof d);
    memset(&log, 0, sizeof log);
    w.handle.data = &d;
    CHECK_OK(evmux_stream_init(loop, &w));
    CHECK(w.handle.data == &d); /* init keeps the caller's data */
    CHECK_OK(evmux_stream_open(&w, sv[0]));

    CHECK_EQ(evmux_stream_set_watermarks(&w, 0, 0, drain_cb), -EINVAL);
    CHECK_EQ(evmux_stream_set_watermarks(&w, 100, 100, drain_cb), -EINVAL);
    CHECK_EQ(evmux_stream_set_watermarks(&w, 100, 200, drain_cb), -EINVAL);
    CHECK_OK(evmux_stream_set_watermarks(&w, HIGH, LOW, drain_cb));
    CHECK_EQ(evmux_stream_over_high(&w), 0);
    CHECK_EQ(evmux_stream_queued(&w), 0);

    static char piece[PIECE];
    memset(piece, 'w', sizeof piece);
    evmux_buf b = { piece, sizeof piece };
    size_t written = 0;
    int nw = 0;

    /* The peer does not read: the queue grows by exactly what is written
     * once the socket buffer is full. */
    while (evmux_stream_queued(&w) == 0) {
        CHECK(nw < MAX_WRITES);
        wreq_init(&reqs[nw], &log, nw);
        CHECK_OK(logged_write(&log, &reqs[nw], &w, &b, 1));
        nw++;
        written += PIECE;
        CHECK(written < (16u << 20));
        if (!su_writes_at_once(loop))
            su_run_for(loop, 5); /* io_uring: the loop hands it to the kernel */
    }
    CHECK_EQ(evmux_stream_over_high(&w), 0);
    /* Fill exactly to the high watermark: not past it yet. */
    size_t q = evmux_stream_queued(&w);
    CHECK(q < HIGH);
    {
        static char fill[HIGH];
        evmux_buf fb = { fill, HIGH - q };
        CHECK(nw < MAX_WRITES);
        wreq_init(&reqs[nw], &log, nw);
        CHECK_OK(logged_write(&log, &reqs[nw], &w, &fb, 1));
        nw++;
    }
    CHECK_EQ(evmux_stream_queued(&w), HIGH);
    CHECK_EQ(evmux_stream_over_high(&w), 0);
    /* One byte more is past it. */
    evmux_buf one = { "!", 1 };
    wreq_init(&reqs[nw], &log, nw);
    CHECK_OK(logged_write(&log, &reqs[nw], &w, &one, 1));
    nw++;
    CHECK_EQ(evmux_stream_queued(&w), HIGH + 1);
    CHECK_EQ(evmux_stream_over_high(&w), 1);
    /* Writes beyond high are still accepted. */
    for (int i = 0; i < 4; i++) {
        size_t before = evmux_stream_queued(&w);
        wreq_init(&reqs[nw], &log, nw);
        CHECK_OK(logged_write(&log, &reqs[nw], &w, &b, 1));
        nw++;
        CHECK_EQ(evmux_stream_queued(&w), before + PIECE);
    }
    q = evmux_stream_queued(&w);
    /* The loop runs, the peer still does not read: nothing changes. */
    su_run_for(loop, 30);
    CHECK_EQ(evmux_stream_queued(&w), q);
    CHECK_EQ(evmux_stream_over_high(&w), 1);
    CHECK_EQ(d.calls, 0);

    /* The peer reads: the queue drains, drain_cb runs exactly once, at or
     * below the low watermark, with over_high already cleared. */
    size_t peer_got = 0;
    evmux_io peer;
    CHECK_OK(evmux_io_init(loop, &peer, sv[1], peer_drain_io_cb));
    peer.handle.data = &peer_got;
    CHECK_OK(evmux_io_start(&peer, EVMUX_READABLE));
    su_run_until(loop, &log.count, nw, 10000);
    CHECK_EQ(evmux_stream_queued(&w), 0);
    CHECK_EQ(d.calls, 1);
    CHECK(d.queued_at_drain <= LOW);
    CHECK_EQ(d.over_at_drain, 0);
    CHECK_EQ(evmux_stream_over_high(&w), 0);
    for (int i = 0; i < nw; i++) {
        CHECK_EQ(log.index[i], i);
        CHECK_EQ(log.status[i], 0);
    }

    /* A second episode: another drain. */
    CHECK_OK(evmux_io_stop(&peer));
    su_fill_socket(loop, &w, piece, sizeof piece);
    while (!evmux_stream_over_high(&w)) {
        CHECK(nw < MAX_WRITES);
        wreq_init(&reqs[nw], &log, nw);
        CHECK_OK(logged_write(&log, &reqs[nw], &w, &b, 1));
        nw++;
    }
    CHECK(evmux_stream_queued(&w) > HIGH);
    su_run_for(loop, 10);
    CHECK_EQ(d.calls, 1);
    CHECK_OK(evmux_io_start(&peer, EVMUX_READABLE));
    su_run_until(loop, &log.count, nw, 10000);
    CHECK_EQ(d.calls, 2);
    CHECK(d.queued_at_drain <= LOW);

    /* Setting watermarks below what is queued marks the stream over high. */
    CHECK_OK(evmux_io_stop(&peer));
    while (evmux_stream_queued(&w) == 0) {
        CHECK(nw < MAX_WRITES);
        wreq_init(&reqs[nw], &log, nw);
        CHECK_OK(logged_write(&log, &reqs[nw], &w, &b, 1));
        nw++;
    }
    CHECK_EQ(evmux_stream_over_high(&w), 0);
    CHECK_OK(evmux_stream_set_watermarks(&w, 2, 1, drain_cb));
    CHECK_EQ(evmux_stream_over_high(&w), 1);
    CHECK_OK(evmux_io_start(&peer, EVMUX_READABLE));
    su_run_until(loop, &log.count, nw, 10000);
    CHECK_EQ(d.calls, 3);
    CHECK(d.queued_at_drain <= 1);

    CHECK_OK(evmux_close(&w.handle, NULL));
    su_run_for(loop, 5); /* the peer reads what is left, then EOF */
    CHECK_OK(evmux_close(&peer.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(log.count, nw);
    close(sv[1]);
}

/* ---- half-close ---- */

struct hc_end {
    evmux_stream s;
    const char *name;
    const unsigned char *out;
    size_t out_len;
    const unsigned char *in;
    size_t in_len;
    size_t got;
    int first;        /* sends before hearing from the other side */
    int sending;      /* has written its data */
    int eof;
    int shut_calls;
    int writes_done;
    int nwrites;
    int in_call;
    int closed;
    struct hc_end *other;
    evmux_write_req reqs[8];
};

static void hc_closed(evmux_handle *h)
{
    struct hc_end *e = (struct hc_end *)h->data;
    e->closed++;
}

static void hc_maybe_close(struct hc_end *e)
{
    if (e->eof && e->shut_calls == 1 && e->writes_done == e->nwrites)
        CHECK_OK(evmux_close(&e->s.handle, hc_closed));
}

static void hc_write_cb(evmux_write_req *req, int status)
{
    struct hc_end *e = (struct hc_end *)req->data;
    CHECK_EQ(e->in_call, 0);
    CHECK_EQ(status, 0);
    CHECK(req == &e->reqs[e->writes_done]); /* in order */
    e->writes_done++;
}

static void hc_shut_cb(evmux_stream *s, int status)
{
    struct hc_end *e = (struct hc_end *)s->handle.data;
    CHECK_EQ(e->in_call, 0);
    CHECK_EQ(status, 0);
    CHECK_EQ(e->shut_calls, 0);
    /* Every write was reported before the shutdown. */
    CHECK_EQ(e->writes_done, e->nwrites);
    e->shut_calls++;
    hc_maybe_close(e);
}

static void hc_send_all(struct hc_end *e)
{
    /* Eight writes of irregular sizes covering out[]. */
    size_t cuts[9] = {0};
    uint32_t rng = (uint32_t)e->out_len | 1u;
    for (int i = 1; i < 8; i++)
        cuts[i] = unit_rand(&rng) % e->out_len;
    cuts[8] = e->out_len;
    for (int i = 1; i < 9; i++) /* sort */
        for (int j = i; j > 0 && cuts[j] < cuts[j - 1]; j--) {
            size_t t = cuts[j];
            cuts[j] = cuts[j - 1];
            cuts[j - 1] = t;
        }
    e->in_call = 1;
    for (int i = 0; i < 8; i++) {
        evmux_buf b = { e->out + cuts[i], cuts[i + 1] - cuts[i] };
        e->reqs[i].data = e;
        CHECK_OK(evmux_stream_write(&e->reqs[i], &e->s, &b, 1, hc_write_cb));
    }
    e->nwrites = 8;
    CHECK_OK(evmux_stream_shutdown(&e->s, hc_shut_cb));
    evmux_buf x = { "x", 1 };
    CHECK_EQ(evmux_stream_write(NULL, &e->s, &x, 1, NULL), -EPIPE);
    CHECK_EQ(evmux_stream_shutdown(&e->s, hc_shut_cb), -EALREADY);
    e->in_call = 0;
    e->sending = 1;
}

static void hc_read_cb(evmux_stream *s, ssize_t nread, char *buf)
{
    struct hc_end *e = (struct hc_end *)s->handle.data;
    if (nread > 0) {
        /* The side that answers hears everything before it answers. */
        CHECK(e->first || !e->sending);
        CHECK(e->got + (size_t)nread <= e->in_len);
        CHECK(memcmp(buf, e->in + e->got, (size_t)nread) == 0);
        e->got += (size_t)nread;
        return;
    }
    CHECK_EQ(nread, EVMUX_EOF);
    CHECK_EQ(e->eof, 0);
    CHECK_EQ(e->got, e->in_len);
    e->eof = 1;
    CHECK_EQ(evmux_stream_read_start(s, hc_read_cb), EVMUX_EOF);
    if (!e->first) {
        /* Reading is over; writing still works. */
        hc_send_all(e);
    } else {
        CHECK_EQ(e->shut_calls, 1);
    }
    hc_maybe_close(e);
}

struct hc_ctx {
    evmux_listener l;
    evmux_loop *loop;
    struct hc_end *server;
    evmux_connect_req creq;
    struct hc_end *client;
};

static void hc_accept_cb(evmux_listener *l, int status)
{
    struct hc_ctx *x = (struct hc_ctx *)l->handle.data;
    CHECK_EQ(status, 0);
    struct hc_end *e = x->server;
    CHECK_OK(evmux_stream_init(x->loop, &e->s));
    CHECK_OK(evmux_accept(l, &e->s));
    CHECK_EQ(evmux_accept(l, &e->s), -EAGAIN); /* taken */
    CHECK_OK(evmux_stream_read_start(&e->s, hc_read_cb));
    if (e->first)
        hc_send_all(e);
    CHECK_OK(evmux_close(&l->handle, NULL)); /* one connection only */
}

static void hc_connect_cb(evmux_connect_req *req, int status)
{
    struct hc_ctx *x = (struct hc_ctx *)req->data;
    CHECK_EQ(status, 0);
    struct hc_end *e = x->client;
    CHECK_OK(evmux_stream_read_start(&e->s, hc_read_cb));
    if (e->first)
        hc_send_all(e);
}

static void run_half_close(int client_first, size_t n_first, size_t n_reply)
{
    evmux_loop *loop = unit_loop_new();
    struct hc_ctx x;
    struct hc_end srv, cli;
    memset(&x, 0, sizeof x);
    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
    x.loop = loop;
    x.server = &srv;
    x.client = &cli;
    srv.s.handle.data = &srv;
    cli.s.handle.data = &cli;
    unsigned char *a = su_random_bytes(n_first, 11);
    unsigned char *b = su_random_bytes(n_reply, 22);
    struct hc_end *first = client_first ? &cli : &srv;
    struct hc_end *second = client_first ? &srv : &cli;
    first->first = 1;
    first->out = a;
    first->out_len = n_first;
    second->in = a;
    second->in_len = n_first;
    second->out = b;
    second->out_len = n_reply;
    first->in = b;
    first->in_len = n_reply;

    struct sockaddr_storage ss, bound;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    x.l.handle.data = &x;
    CHECK_OK(evmux_listen(loop, &x.l, (struct sockaddr *)&ss, len, NULL, hc_accept_cb));
    socklen_t blen = su_listener_addr(&x.l, &bound);
    CHECK(su_port_of(&bound) != 0);
    CHECK_OK(evmux_stream_init(loop, &cli.s));
    x.creq.data = &x;
    CHECK_OK(evmux_connect(&x.creq, &cli.s, (struct sockaddr *)&bound, blen, 5000, hc_connect_cb));

    struct unit_guard g;
    unit_guard_start(loop, &g, 15000);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(g.fired, 0);
    unit_guard_close(&g);
    unit_loop_finish(loop);
    CHECK_EQ(srv.closed, 1);
    CHECK_EQ(cli.closed, 1);
    CHECK_EQ(srv.got, srv.in_len);
    CHECK_EQ(cli.got, cli.in_len);
    CHECK_EQ(srv.shut_calls, 1);
    CHECK_EQ(cli.shut_calls, 1);
    CHECK_EQ(srv.writes_done, 8);
    CHECK_EQ(cli.writes_done, 8);
    free(a);
    free(b);
}

static void test_half_close_client_first(void)
{
    run_half_close(1, 3u << 20, 2u << 20);
}

static void test_half_close_server_first(void)
{
    run_half_close(0, 3u << 20, 1u << 20);
}

/* ---- read start / stop ---- */

struct rd {
    int calls;
    size_t bytes;
    char last[64];
    ssize_t last_n;
    int stop_in_cb;
};

static void rd_cb(evmux_stream *s, ssize_t nread, char *buf)
{
    struct rd *r = (struct rd *)s->handle.data;
    r->calls++;
    r->last_n = nread;
    if (nread > 0) {
        r->bytes += (size_t)nread;
        memcpy(r->last, buf, (size_t)nread < sizeof r->last ? (size_t)nread : sizeof r->last);
        if (r->stop_in_cb)
            CHECK_OK(evmux_stream_read_stop(s));
    }
}

static void test_read_start_stop(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    evmux_stream s;
    struct rd r;
    memset(&r, 0, sizeof r);
    s.handle.data = &r;
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_EQ(evmux_stream_fd(&s), -1);

    /* No socket yet. */
    evmux_buf b = { "abc", 3 };
    CHECK_EQ(evmux_stream_write(NULL, &s, &b, 1, NULL), -ENOTCONN);
    CHECK_EQ(evmux_stream_read_start(&s, rd_cb), -ENOTCONN);
    CHECK_EQ(evmux_stream_shutdown(&s, NULL), -ENOTCONN);
    CHECK_EQ(evmux_stream_queued(&s), 0);
    CHECK_EQ(evmux_is_active(&s.handle), 0);

    CHECK_OK(evmux_stream_open(&s, sv[0]));
    CHECK_EQ(evmux_stream_open(&s, sv[0]), -EISCONN);
    /* Unix-domain: no TCP options, whatever the arguments (the kernel
     * itself would take SO_KEEPALIVE, and do nothing with it). */
    CHECK_EQ(evmux_stream_set_nodelay(&s, 1), -ENOTSUP);
    CHECK_EQ(evmux_stream_set_nodelay(&s, 0), -ENOTSUP);
    CHECK_EQ(evmux_stream_set_keepalive(&s, 1, 10), -ENOTSUP);
    CHECK_EQ(evmux_stream_set_keepalive(&s, 1, 0), -ENOTSUP);
    CHECK_EQ(evmux_stream_set_keepalive(&s, 0, 0), -ENOTSUP);
    CHECK_EQ(evmux_stream_read_start(&s, NULL), -EINVAL);

    CHECK(write(sv[1], "abc", 3) == 3);
    CHECK_OK(evmux_stream_read_start(&s, rd_cb));
    CHECK_EQ(evmux_is_active(&s.handle), 1);
    su_run_until(loop, &r.calls, 1, 2000);
    CHECK_EQ(r.bytes, 3);
    CHECK(memcmp(r.last, "abc", 3) == 0);

    /* Stopped: data waits in the socket, no callback, the loop is idle. */
    CHECK_OK(evmux_stream_read_stop(&s));
    CHECK_EQ(evmux_is_active(&s.handle), 0);
    CHECK_OK(evmux_stream_read_stop(&s)); /* twice is fine */
    CHECK(write(sv[1], "defg", 4) == 4);
    su_run_for(loop, 30);
    CHECK_EQ(r.calls, 1);
    CHECK_EQ(evmux_loop_alive(loop), 0); /* nothing keeps it running */

    /* Started again: the waiting bytes arrive. */
    CHECK_OK(evmux_stream_read_start(&s, rd_cb));
    su_run_until(loop, &r.calls, 2, 2000);
    CHECK_EQ(r.bytes, 7);
    CHECK(memcmp(r.last, "defg", 4) == 0);

    /* Stopping from inside the read callback: no second call for data
     * that arrives afterwards. */
    r.stop_in_cb = 1;
    CHECK(write(sv[1], "h", 1) == 1);
    su_run_until(loop, &r.calls, 3, 2000);
    CHECK(write(sv[1], "ij", 2) == 2);
    su_run_for(loop, 20);
    CHECK_EQ(r.calls, 3);
    r.stop_in_cb = 0;

    /* EOF: reported once; read_start afterwards says EVMUX_EOF. */
    CHECK(shutdown(sv[1], SHUT_WR) == 0);
    CHECK_OK(evmux_stream_read_start(&s, rd_cb));
    su_run_until(loop, &r.calls, 5, 2000);
    CHECK_EQ(r.bytes, 10);
    CHECK_EQ(r.last_n, EVMUX_EOF);
    su_run_for(loop, 10);
    CHECK_EQ(r.calls, 5);
    CHECK_EQ(evmux_stream_read_start(&s, rd_cb), EVMUX_EOF);
    CHECK_EQ(evmux_is_active(&s.handle), 0);

    /* The stream still writes after EOF. */
    CHECK_OK(evmux_stream_write(NULL, &s, &b, 1, NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT)); /* io_uring sends from the loop */
    char got[4];
    CHECK(su_wait_readable(sv[1], 1000));
    CHECK(read(sv[1], got, sizeof got) == 3);
    CHECK(memcmp(got, "abc", 3) == 0);

    int fd = evmux_stream_fd(&s);
    CHECK_EQ(fd, sv[0]);
    CHECK_OK(evmux_close(&s.handle, NULL));
    CHECK_EQ(evmux_stream_fd(&s), -1);
    CHECK_EQ(evmux_close(&s.handle, NULL), -EALREADY);
    CHECK_EQ(evmux_stream_read_start(&s, rd_cb), -EINVAL);
    CHECK_EQ(evmux_stream_write(NULL, &s, &b, 1, NULL), -EINVAL);
    unit_loop_finish(loop);
    close(sv[1]);
}

/* A stream unreferenced does not keep the loop running. */
static void test_stream_unref(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    evmux_stream s;
    struct rd r;
    memset(&r, 0, sizeof r);
    s.handle.data = &r;
    CHECK_OK(evmux_stream_init(loop, &s));
    evmux_unref(&s.handle);
    CHECK_OK(evmux_stream_open(&s, sv[0]));
    CHECK_OK(evmux_stream_read_start(&s, rd_cb));
    CHECK_EQ(evmux_loop_alive(loop), 0);
    uint64_t t0 = unit_mono_ns();
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* returns at once */
    CHECK(unit_mono_ns() - t0 < 1000000000ull);
    evmux_ref(&s.handle);
    CHECK_EQ(evmux_loop_alive(loop), 1);
    CHECK(write(sv[1], "z", 1) == 1);
    su_run_until(loop, &r.calls, 1, 2000);
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    close(sv[1]);
}

/* An unreferenced stream does not keep the loop running while it
 * connects either: the connect timeout belongs to the stream. */
static void ignore_connect_cb(evmux_connect_req *req, int status)
{
    int *calls = (int *)req->data;
    (*calls)++;
    CHECK(status == -ECANCELED || status == -ETIMEDOUT);
}

static void test_unref_connecting_stream(void)
{
    /* A listener whose accept queue is full: the SYN goes unanswered. */
    struct sockaddr_storage ss, bound;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(lfd >= 0);
    CHECK(bind(lfd, (struct sockaddr *)&ss, len) == 0);
    CHECK(listen(lfd, 0) == 0);
    socklen_t blen = sizeof bound;
    CHECK(getsockname(lfd, (struct sockaddr *)&bound, &blen) == 0);
    int filler = su_raw_connect(&bound, blen);

    evmux_loop *loop = unit_loop_new();
    evmux_stream s;
    evmux_connect_req req;
    int calls = 0;
    req.data = &calls;
    CHECK_OK(evmux_stream_init(loop, &s));
    evmux_unref(&s.handle);
    CHECK_OK(evmux_connect(&req, &s, (struct sockaddr *)&bound, blen, 2000, ignore_connect_cb));
    int alive = evmux_loop_alive(loop);
    struct unit_guard g;
    unit_guard_start(loop, &g, 3000);
    uint64_t t0 = unit_mono_ns();
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    uint64_t ms = (unit_mono_ns() - t0) / 1000000u;
    unit_guard_close(&g);
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    close(filler);
    close(lfd);
    CHECK_EQ(calls, 1);
    fprintf(stderr, "   loop alive %d, evmux_run took %llu ms\n", alive, (unsigned long long)ms);
    CHECK_EQ(alive, 0);
    CHECK(ms < 1000);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(60);
    RUN_TEST(test_strerror_eof);
    RUN_TEST(test_tcp_echo_concurrent);
    RUN_TEST(test_unix_echo);
    RUN_TEST(test_ipv6_echo);
    RUN_TEST(test_vectored_writes);
    RUN_TEST(test_vectored_partial_send);
    RUN_TEST(test_watermarks);
    RUN_TEST(test_half_close_client_first);
    RUN_TEST(test_half_close_server_first);
    RUN_TEST(test_read_start_stop);
    RUN_TEST(test_stream_unref);
    RUN_TEST(test_unref_connecting_stream); /* fails: see the comment above it */
    return unit_end();
}
