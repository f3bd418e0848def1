/* Streams when things go wrong: the peer resets during a large write,
 * closing with requests pending, connect failures (refused, no such Unix
 * socket, timeout, closed while connecting), writes issued while
 * connecting, descriptors select cannot watch, and a failed write that
 * must end reading even when the kernel's receive never reports the end. */
#include "stream_util.h"
#include "evmux_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/select.h>

/* ---- an ordered log of callbacks ---- */

enum { LOG_MAX = 256 };

struct evlog {
    int n;
    char what[LOG_MAX];  /* 'w' write, 's' shutdown, 'c' connect, 'C' close */
    int id[LOG_MAX];
    int status[LOG_MAX];
    int in_call;         /* set around library calls that must not call back */
};

static void log_add(struct evlog *log, char what, int id, int status)
{
    CHECK_EQ(log->in_call, 0);
    CHECK(log->n < LOG_MAX);
    log->what[log->n] = what;
    log->id[log->n] = id;
    log->status[log->n] = status;
    log->n++;
}

/* A stream whose callbacks record into a fresh log. */
static void logged_stream(evmux_loop *loop, struct evlog *log, evmux_stream *s)
{
    memset(log, 0, sizeof *log);
    s->handle.data = log;
    CHECK_OK(evmux_stream_init(loop, s));
}

static int log_count(const struct evlog *log, char what, int id)
{
    int c = 0;
    for (int i = 0; i < log->n; i++)
        if (log->what[i] == what && log->id[i] == id)
            c++;
    return c;
}

struct lreq {
    evmux_write_req req;
    struct evlog *log;
    int id;
};

static void lreq_cb(evmux_write_req *req, int status)
{
    struct lreq *r = (struct lreq *)req->data;
    log_add(r->log, 'w', r->id, status);
}

static int lwrite(struct evlog *log, struct lreq *r, int id, evmux_stream *s, const void *p,
                  size_t n)
{
    memset(r, 0, sizeof *r);
    r->req.data = r;
    r->log = log;
    r->id = id;
    evmux_buf b = { p, n };
    log->in_call = 1;
    int rc = evmux_stream_write(&r->req, s, &b, 1, lreq_cb);
    log->in_call = 0;
    return rc;
}

/* Streams whose handle.data points at an evlog. */
static void log_shut_cb(evmux_stream *s, int status)
{
    log_add((struct evlog *)s->handle.data, 's', 0, status);
}

static void log_close_cb(evmux_handle *h)
{
    log_add((struct evlog *)h->data, 'C', 0, 0);
}

struct lconn {
    evmux_connect_req req;
    struct evlog *log;
};

static void log_connect_cb(evmux_connect_req *req, int status)
{
    struct lconn *c = (struct lconn *)req->data;
    log_add(c->log, 'c', 0, status);
}

static int lconnect(struct evlog *log, struct lconn *c, evmux_stream *s,
                    const struct sockaddr_storage *ss, socklen_t len, uint64_t timeout_ms)
{
    memset(c, 0, sizeof *c);
    c->req.data = c;
    c->log = log;
    log->in_call = 1;
    int rc = evmux_connect(&c->req, s, (const struct sockaddr *)ss, len, timeout_ms,
                           log_connect_cb);
    log->in_call = 0;
    return rc;
}

/* ---- accepting into one stream ---- */

struct one_accept {
    evmux_listener l;
    evmux_loop *loop;
    evmux_stream *into;
    int accepted;
};

static void one_accept_cb(evmux_listener *l, int status)
{
    struct one_accept *a = (struct one_accept *)l->handle.data;
    CHECK_EQ(status, 0);
    CHECK_EQ(a->accepted, 0);
    CHECK_OK(evmux_stream_init(a->loop, a->into));
    CHECK_OK(evmux_accept(l, a->into));
    a->accepted++;
}

static socklen_t one_accept_listen(evmux_loop *loop, struct one_accept *a, evmux_stream *into,
                                   struct sockaddr_storage *bound)
{
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    memset(a, 0, sizeof *a);
    a->loop = loop;
    a->into = into;
    a->l.handle.data = a;
    CHECK_OK(evmux_listen(loop, &a->l, (struct sockaddr *)&ss, len, NULL, one_accept_cb));
    return su_listener_addr(&a->l, bound);
}

/* ---- peer reset during a large write ---- */

struct reset_ctx {
    struct evlog log; /* first: log callbacks take handle.data as an evlog */
    int read_end_seen;
};

static void reset_read_cb(evmux_stream *s, ssize_t nread, char *buf)
{
    int *seen = &((struct reset_ctx *)s->handle.data)->read_end_seen;
    (void)buf;
    if (nread > 0)
        return;
    /* After the reset: an error, or EOF once the error was consumed by the
     * failed send. */
    CHECK(nread < 0);
    (*seen)++;
}

static void test_peer_reset_during_large_write(void)
{
    enum { BIG = 32 << 20 };
    evmux_loop *loop = unit_loop_new();
    struct reset_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    evmux_stream srv;
    srv.handle.data = &ctx.log;
    struct one_accept a;
    struct sockaddr_storage bound;
    socklen_t blen = one_accept_listen(loop, &a, &srv, &bound);
    int cfd = su_raw_connect(&bound, blen);
    su_run_until(loop, &a.accepted, 1, 5000);
    srv.handle.data = &ctx.log; /* stream_init keeps it; be explicit */
    CHECK_OK(evmux_close(&a.l.handle, NULL));
    CHECK_OK(evmux_stream_read_start(&srv, reset_read_cb));

    unsigned char *big = su_random_bytes(BIG, 3);
    struct lreq w[4];
    CHECK_OK(lwrite(&ctx.log, &w[0], 0, &srv, big, BIG));
    CHECK(evmux_stream_queued(&srv) > 0);
    CHECK_OK(lwrite(&ctx.log, &w[1], 1, &srv, big, 1 << 20));
    CHECK_OK(lwrite(&ctx.log, &w[2], 2, &srv, "tail", 4));
    free(big); /* the stream copied what it queued */

    /* The client takes a little, then resets the connection. */
    su_run_for(loop, 20);
    char tmp[65536];
    CHECK(su_wait_readable(cfd, 2000));
    CHECK(read(cfd, tmp, sizeof tmp) > 0);
    su_close_with_reset(cfd);

    su_run_until(loop, &ctx.log.n, 3, 5000);
    su_run_for(loop, 20);
    CHECK_EQ(ctx.log.n, 3);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(ctx.log.what[i], 'w');
        CHECK_EQ(ctx.log.id[i], i);
        int st = ctx.log.status[i];
        if (st != -ECONNRESET && st != -EPIPE) {
            fprintf(stderr, "write %d: status %d (%s)\n", i, st, evmux_strerror(st));
            CHECK(0);
        }
    }
    CHECK_EQ(evmux_stream_queued(&srv), 0);
    CHECK_EQ(ctx.read_end_seen, 1); /* the read side hears of it once */

    /* Later writes and a shutdown are refused with the error. */
    evmux_buf b = { "x", 1 };
    int rc = evmux_stream_write(NULL, &srv, &b, 1, NULL);
    CHECK(rc == -ECONNRESET || rc == -EPIPE);
    struct lreq w4;
    rc = lwrite(&ctx.log, &w4, 4, &srv, "y", 1);
    CHECK(rc == -ECONNRESET || rc == -EPIPE);
    rc = evmux_stream_shutdown(&srv, log_shut_cb);
    CHECK(rc < 0);

    CHECK_OK(evmux_close(&srv.handle, log_close_cb));
    unit_loop_finish(loop);
    /* No callback for the refused requests; the close came last. */
    CHECK_EQ(ctx.log.n, 4);
    CHECK_EQ(ctx.log.what[3], 'C');
}

/* ---- closing with requests pending ---- */

static void test_close_with_pending_writes(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    struct evlog log;
    evmux_stream s;
    logged_stream(loop, &log, &s);
    CHECK_OK(evmux_stream_open(&s, sv[0]));

    static char mb[1 << 20];
    memset(mb, 'm', sizeof mb);
    struct lreq w[5];
    CHECK_OK(lwrite(&log, &w[0], 0, &s, "hello", 5)); /* sent at once, or by the loop */
    if (!su_writes_at_once(loop))
        CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(evmux_stream_queued(&s), 0);
    int reported = log.n; /* io_uring: the first write's callback already ran */
    CHECK_OK(lwrite(&log, &w[1], 1, &s, mb, sizeof mb)); /* partly sent, or queued */
    CHECK(evmux_stream_queued(&s) > 0);
    if (su_writes_at_once(loop))
        CHECK(evmux_stream_queued(&s) < sizeof mb);
    CHECK_OK(lwrite(&log, &w[2], 2, &s, mb, 65536));
    CHECK_OK(lwrite(&log, &w[3], 3, &s, mb, 1));
    CHECK_OK(evmux_stream_write(NULL, &s, (evmux_buf[]){ { mb, 10 } }, 1, NULL));
    CHECK_OK(lwrite(&log, &w[4], 4, &s, "", 0));
    log.in_call = 1;
    CHECK_OK(evmux_stream_shutdown(&s, log_shut_cb));
    log.in_call = 0;
    CHECK_EQ(log.n, reported);

    int fd = evmux_stream_fd(&s);
    CHECK_EQ(fd, sv[0]);
    log.in_call = 1;
    CHECK_OK(evmux_close(&s.handle, log_close_cb));
    log.in_call = 0;
    /* The socket is closed at once... */
    errno = 0;
    CHECK_EQ(fcntl(fd, F_GETFD), -1);
    CHECK_EQ(errno, EBADF);
    CHECK_EQ(evmux_stream_fd(&s), -1);
    /* ...and only once: a descriptor that reuses the number survives. */
    int reuse = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(reuse >= 0);

    unit_loop_finish(loop);
    CHECK(unit_fd_is_open(reuse));
    if (reuse == fd)
        fprintf(stderr, "   (descriptor %d reused and kept)\n", fd);
    close(reuse);

    /* Each write once, in order: the one fully sent with 0, the others
     * canceled; then the shutdown, canceled; the close callback last. */
    CHECK_EQ(log.n, 7);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(log.what[i], 'w');
        CHECK_EQ(log.id[i], i);
        CHECK_EQ(log.status[i], i == 0 ? 0 : -ECANCELED);
    }
    CHECK_EQ(log.what[5], 's');
    CHECK_EQ(log.status[5], -ECANCELED);
    CHECK_EQ(log.what[6], 'C');

    /* The peer got a prefix of the bytes and then the end. */
    size_t got = unit_drain(sv[1]);
    CHECK(got >= 5 && got < 5 + sizeof mb);
    /* io_uring too: the close offered the queue to the kernel first. */
    CHECK(got > 5);
    CHECK_EQ(su_peek_state(sv[1]), 0);
    close(sv[1]);
}

/* A shutdown that completed (its callback still owed) reports 0 on close;
 * one already reported is not reported again. */
static void test_close_after_shutdown(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2], sv2[2];
    unit_socketpair(sv);
    unit_socketpair(sv2);
    struct evlog log, log2;
    memset(&log, 0, sizeof log);
    memset(&log2, 0, sizeof log2);
    evmux_stream s, s2;
    s.handle.data = &log;
    s2.handle.data = &log2;
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_OK(evmux_stream_open(&s, sv[0]));
    CHECK_OK(evmux_stream_init(loop, &s2));
    CHECK_OK(evmux_stream_open(&s2, sv2[0]));

    /* Done at once (io_uring: by the loop), closed before the loop
     * reported the shutdown. */
    struct lreq w;
    CHECK_OK(lwrite(&log, &w, 0, &s, "abc", 3));
    if (!su_writes_at_once(loop))
        CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    log.in_call = 1;
    CHECK_OK(evmux_stream_shutdown(&s, log_shut_cb));
    CHECK_OK(evmux_close(&s.handle, log_close_cb));
    log.in_call = 0;

    /* Done and reported, then closed. */
    CHECK_OK(evmux_stream_shutdown(&s2, log_shut_cb));
    CHECK_EQ(evmux_stream_shutdown(&s2, log_shut_cb), -EALREADY);
    su_run_until(loop, &log2.n, 1, 2000);
    CHECK_EQ(log2.what[0], 's');
    CHECK_EQ(log2.status[0], 0);
    CHECK_OK(evmux_close(&s2.handle, log_close_cb));
    unit_loop_finish(loop);

    CHECK_EQ(log.n, 3);
    CHECK_EQ(log.what[0], 'w');
    CHECK_EQ(log.status[0], 0);
    CHECK_EQ(log.what[1], 's');
    CHECK_EQ(log.status[1], 0);
    CHECK_EQ(log.what[2], 'C');
    CHECK_EQ(log2.n, 2);
    CHECK_EQ(log2.what[1], 'C');

    char buf[8];
    CHECK_EQ(read(sv[1], buf, sizeof buf), 3);
    CHECK_EQ(read(sv[1], buf, sizeof buf), 0);
    CHECK_EQ(read(sv2[1], buf, sizeof buf), 0);
    close(sv[1]);
    close(sv2[1]);
}

/* Closing the stream from a write callback: the later writes are
 * canceled, each once, and nothing runs after the close callback. */
struct closer_ctx {
    struct evlog log; /* first: handle.data points here */
    evmux_stream *s;
};

static void close_in_write_cb(evmux_write_req *req, int status)
{
    struct lreq *r = (struct lreq *)req->data;
    log_add(r->log, 'w', r->id, status);
    if (r->id == 1)
        CHECK_OK(evmux_close(&((struct closer_ctx *)r->log)->s->handle, log_close_cb));
}

static void test_close_inside_write_cb(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    struct closer_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    evmux_stream s;
    ctx.s = &s;
    s.handle.data = &ctx.log;
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_OK(evmux_stream_open(&s, sv[0]));

    static char mb[1 << 20];
    struct lreq w[4];
    for (int i = 0; i < 4; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].req.data = &w[i];
        w[i].log = &ctx.log;
        w[i].id = i;
    }
    evmux_buf small = { "0123456789", 10 };
    evmux_buf big = { mb, sizeof mb };
    CHECK_OK(evmux_stream_write(&w[0].req, &s, &small, 1, close_in_write_cb));
    CHECK_OK(evmux_stream_write(&w[1].req, &s, &small, 1, close_in_write_cb));
    CHECK_OK(evmux_stream_write(&w[2].req, &s, &big, 1, close_in_write_cb));
    CHECK_OK(evmux_stream_write(&w[3].req, &s, &small, 1, close_in_write_cb));
    unit_loop_finish(loop);
    CHECK_EQ(ctx.log.n, 5);
    CHECK_EQ(ctx.log.id[0], 0);
    CHECK_EQ(ctx.log.status[0], 0);
    CHECK_EQ(ctx.log.id[1], 1);
    CHECK_EQ(ctx.log.status[1], 0);
    CHECK_EQ(ctx.log.id[2], 2);
    CHECK_EQ(ctx.log.status[2], -ECANCELED);
    CHECK_EQ(ctx.log.id[3], 3);
    CHECK_EQ(ctx.log.status[3], -ECANCELED);
    CHECK_EQ(ctx.log.what[4], 'C');
    close(sv[1]);
}

/* ---- errors and closes seen from the read side ---- */

struct rlog {
    struct evlog log; /* first: the log callbacks take handle.data as an evlog */
    int reads;
    ssize_t last;
    int close_in_read;
    size_t bytes;
};

static void rlog_read_cb(evmux_stream *s, ssize_t nread, char *buf)
{
    struct rlog *r = (struct rlog *)s->handle.data;
    CHECK_EQ(evmux_is_closing(&s->handle), 0);
    r->reads++;
    r->last = nread;
    if (nread > 0) {
        CHECK(buf != NULL);
        r->bytes += (size_t)nread;
        if (r->close_in_read)
            CHECK_OK(evmux_close(&s->handle, log_close_cb));
    } else {
        CHECK(buf == NULL);
    }
}

/* Accepts one TCP connection into srv through a (which must outlive its
 * listener's close), reading into the log r; returns the raw client
 * socket. */
static int accepted_reader(evmux_loop *loop, struct one_accept *a, evmux_stream *srv,
                           struct rlog *r)
{
    memset(r, 0, sizeof *r);
    struct sockaddr_storage bound;
    socklen_t blen = one_accept_listen(loop, a, srv, &bound);
    int cfd = su_raw_connect(&bound, blen);
    su_run_until(loop, &a->accepted, 1, 5000);
    CHECK_OK(evmux_close(&a->l.handle, NULL));
    srv->handle.data = r;
    CHECK_OK(evmux_stream_read_start(srv, rlog_read_cb));
    return cfd;
}

/* The peer resets a stream that only reads: one read callback with the
 * error, then nothing; writing afterwards fails. */
static void test_read_sees_reset(void)
{
    evmux_loop *loop = unit_loop_new();
    struct rlog r;
    evmux_stream srv;
    struct one_accept a;
    int cfd = accepted_reader(loop, &a, &srv, &r);
    CHECK(write(cfd, "data", 4) == 4);
    su_run_until(loop, &r.reads, 1, 3000);
    CHECK_EQ(r.bytes, 4);
    su_close_with_reset(cfd);
    su_run_until(loop, &r.reads, 2, 3000);
    su_run_for(loop, 30);
    CHECK_EQ(r.reads, 2);
    CHECK_EQ(r.last, -ECONNRESET);
    CHECK_EQ(evmux_is_active(&srv.handle), 0); /* reading stopped */
    evmux_buf b = { "x", 1 };
    int rc = evmux_stream_write(NULL, &srv, &b, 1, NULL);
    CHECK(rc == -EPIPE || rc == -ECONNRESET);
    CHECK_OK(evmux_close(&srv.handle, log_close_cb));
    unit_loop_finish(loop);
    CHECK_EQ(r.log.n, 1);
}

/* Closed from its own read callback with writes queued: no more reads,
 * every write canceled once, then the close callback. */
static void test_close_inside_read_cb(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    struct rlog r;
    memset(&r, 0, sizeof r);
    r.close_in_read = 1;
    evmux_stream s;
    s.handle.data = &r;
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_OK(evmux_stream_open(&s, sv[0]));
    static char mb[1 << 20];
    struct lreq w[3];
    for (int i = 0; i < 3; i++)
        CHECK_OK(lwrite(&r.log, &w[i], i, &s, mb, sizeof mb));
    CHECK(evmux_stream_queued(&s) > 2 * sizeof mb);
    CHECK_OK(evmux_stream_read_start(&s, rlog_read_cb));
    static char lots[100000];
    CHECK(write(sv[1], lots, sizeof lots) > 0);
    unit_loop_finish(loop);
    CHECK_EQ(r.reads, 1);
    CHECK_EQ(r.log.n, 4);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(r.log.what[i], 'w');
        CHECK_EQ(r.log.id[i], i);
        CHECK_EQ(r.log.status[i], -ECANCELED);
    }
    CHECK_EQ(r.log.what[3], 'C');
    close(sv[1]);
}

/* ---- connect failures ---- */

static void test_connect_refused(void)
{
    evmux_loop *loop = unit_loop_new();
    struct evlog log;
    evmux_stream s;
    logged_stream(loop, &log, &s);
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", su_unused_port(), &ss);
    struct lconn c;
    CHECK_OK(lconnect(&log, &c, &s, &ss, len, 5000));
    CHECK_EQ(log.n, 0);
    struct lconn c2;
    CHECK_EQ(lconnect(&log, &c2, &s, &ss, len, 5000), -EALREADY);
    su_run_until(loop, &log.n, 1, 5000);
    su_run_for(loop, 20);
    CHECK_EQ(log.n, 1);
    CHECK_EQ(log.what[0], 'c');
    CHECK_EQ(log.status[0], -ECONNREFUSED);
    /* The stream is left without a socket... */
    CHECK_EQ(evmux_stream_fd(&s), -1);
    evmux_buf b = { "x", 1 };
    CHECK_EQ(evmux_stream_write(NULL, &s, &b, 1, NULL), -ENOTCONN);

    /* ...and may connect again. */
    evmux_stream peer;
    struct one_accept a;
    struct sockaddr_storage bound;
    socklen_t blen = one_accept_listen(loop, &a, &peer, &bound);
    CHECK_OK(lconnect(&log, &c, &s, &bound, blen, 5000));
    su_run_until(loop, &log.n, 2, 5000);
    CHECK_EQ(log.status[1], 0);
    CHECK(evmux_stream_fd(&s) >= 0);
    su_run_until(loop, &a.accepted, 1, 5000);
    CHECK_EQ(lconnect(&log, &c2, &s, &bound, blen, 5000), -EISCONN);

    /* The peer address is the listener's. */
    struct sockaddr_storage pa;
    socklen_t plen = 0;
    CHECK_OK(evmux_stream_peer(&s, &pa, &plen));
    CHECK_EQ(plen, blen);
    CHECK(memcmp(&pa, &bound, blen) == 0);
    CHECK_OK(evmux_stream_set_nodelay(&s, 1));
    CHECK_OK(evmux_stream_set_nodelay(&s, 0));
    CHECK_OK(evmux_stream_set_keepalive(&s, 1, 30));
    CHECK_OK(evmux_stream_set_keepalive(&s, 1, 0));
    CHECK_OK(evmux_stream_set_keepalive(&s, 0, 0));

    CHECK_OK(evmux_close(&s.handle, log_close_cb));
    CHECK_OK(evmux_close(&peer.handle, NULL));
    CHECK_OK(evmux_close(&a.l.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(log.n, 3);
    CHECK_EQ(log.what[2], 'C');
}

static void test_connect_unix_missing(void)
{
    evmux_loop *loop = unit_loop_new();
    char dir[128], path[200], stale[200];
    su_tmpdir(dir, sizeof dir);
    su_path(path, sizeof path, dir, "nobody-here.sock");
    su_path(stale, sizeof stale, dir, "stale.sock");

    struct evlog log;
    evmux_stream s;
    logged_stream(loop, &log, &s);
    struct sockaddr_storage ss;
    socklen_t len = su_unix(path, &ss);
    struct lconn c;
    CHECK_OK(lconnect(&log, &c, &s, &ss, len, 0));
    CHECK_EQ(log.n, 0); /* never from inside evmux_connect */
    su_run_until(loop, &log.n, 1, 5000);
    su_run_for(loop, 10);
    CHECK_EQ(log.n, 1);
    CHECK(log.status[0] == -ENOENT || log.status[0] == -ECONNREFUSED);

    /* A socket file nobody listens on: refused. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_storage st;
    socklen_t stlen = su_unix(stale, &st);
    CHECK(bind(fd, (struct sockaddr *)&st, stlen) == 0);
    close(fd);
    CHECK_OK(lconnect(&log, &c, &s, &st, stlen, 0));
    CHECK_EQ(log.n, 1);
    su_run_until(loop, &log.n, 2, 5000);
    CHECK_EQ(log.status[1], -ECONNREFUSED);

    /* Closed before the loop reported the failure: canceled, once. */
    CHECK_OK(lconnect(&log, &c, &s, &ss, len, 0));
    CHECK_OK(evmux_close(&s.handle, log_close_cb));
    unit_loop_finish(loop);
    CHECK_EQ(log.n, 4);
    CHECK_EQ(log.what[2], 'c');
    CHECK_EQ(log.status[2], -ECANCELED);
    CHECK_EQ(log.what[3], 'C');

    unlink(stale);
    CHECK(rmdir(dir) == 0);
}

/* A TCP listener (outside the loop) whose accept queue is full: Linux then
 * drops new SYNs, so a connect stays pending until its timeout. Returns
 * the listening socket; *filler is the connection that fills the queue. */
static int full_backlog_listener(struct sockaddr_storage *bound, socklen_t *blen, int *filler)
{
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(lfd >= 0);
    CHECK(bind(lfd, (struct sockaddr *)&ss, len) == 0);
    CHECK(listen(lfd, 0) == 0);
    *blen = sizeof *bound;
    CHECK(getsockname(lfd, (struct sockaddr *)bound, blen) == 0);
    *filler = su_raw_connect(bound, *blen); /* takes the one slot */
    return lfd;
}

static void test_connect_timeout(void)
{
    evmux_loop *loop = unit_loop_new();
    struct sockaddr_storage bound;
    socklen_t blen;
    int filler;
    int lfd = full_backlog_listener(&bound, &blen, &filler);

    struct evlog log;
    evmux_stream s;
    logged_stream(loop, &log, &s);
    struct lconn c;
    evmux_update_time(loop);
    uint64_t t0 = unit_mono_ns();
    CHECK_OK(lconnect(&log, &c, &s, &bound, blen, 200));
    su_run_until(loop, &log.n, 1, 3000);
    uint64_t ms = (unit_mono_ns() - t0) / 1000000u;
    CHECK_EQ(log.status[0], -ETIMEDOUT);
    CHECK(ms >= 195); /* not before the timeout */
    CHECK(ms < 900);  /* before the kernel's own SYN retry */
    CHECK_EQ(evmux_stream_fd(&s), -1);
    su_run_for(loop, 30);
    CHECK_EQ(log.n, 1);

    CHECK_OK(evmux_close(&s.handle, log_close_cb));
    unit_loop_finish(loop);
    CHECK_EQ(log.n, 2);
    close(filler);
    close(lfd);
}

static void close_stream_timer_cb(evmux_timer *t)
{
    evmux_stream *s = (evmux_stream *)t->handle.data;
    CHECK_OK(evmux_close(&s->handle, log_close_cb));
}

static void test_connect_closed_while_connecting(void)
{
    evmux_loop *loop = unit_loop_new();
    struct sockaddr_storage bound;
    socklen_t blen;
    int filler;
    int lfd = full_backlog_listener(&bound, &blen, &filler);

    /* Closed from the loop while the SYN goes unanswered, with a write and
     * a shutdown waiting for the connection. */
    struct evlog log;
    evmux_stream s;
    logged_stream(loop, &log, &s);
    struct lconn c;
    CHECK_OK(lconnect(&log, &c, &s, &bound, blen, 0));
    int fd = evmux_stream_fd(&s);
    CHECK(fd >= 0);
    struct lreq w;
    CHECK_OK(lwrite(&log, &w, 0, &s, "early", 5));
    CHECK_EQ(evmux_stream_queued(&s), 5);
    log.in_call = 1;
    CHECK_OK(evmux_stream_shutdown(&s, log_shut_cb));
    log.in_call = 0;
    evmux_timer t;
    CHECK_OK(evmux_timer_init(loop, &t, close_stream_timer_cb));
    t.handle.data = &s;
    CHECK_OK(evmux_timer_start(&t, 50, 0));
    su_run_until(loop, &log.n, 4, 3000);
    CHECK_OK(evmux_close(&t.handle, NULL));
    CHECK_EQ(unit_fd_is_open(fd), 0);
    unit_loop_finish(loop);
    CHECK_EQ(log.n, 4);
    CHECK_EQ(log.what[0], 'c');
    CHECK_EQ(log.status[0], -ECANCELED);
    CHECK_EQ(log_count(&log, 'w', 0), 1);
    CHECK_EQ(log_count(&log, 's', 0), 1);
    for (int i = 1; i < 3; i++)
        CHECK_EQ(log.status[i], -ECANCELED);
    CHECK_EQ(log.what[3], 'C');

    /* Closed right after evmux_connect, before the loop ran. */
    memset(&log, 0, sizeof log);
    loop = unit_loop_new();
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_OK(lconnect(&log, &c, &s, &bound, blen, 100));
    CHECK_OK(evmux_close(&s.handle, log_close_cb));
    CHECK_EQ(log.n, 0);
    unit_loop_finish(loop);
    CHECK_EQ(log.n, 2);
    CHECK_EQ(log.what[0], 'c');
    CHECK_EQ(log.status[0], -ECANCELED);
    CHECK_EQ(log.what[1], 'C');

    close(filler);
    close(lfd);
}

/* ---- writes while connecting ---- */

struct collector {
    evmux_stream s;
    unsigned char buf[1 << 16];
    size_t got;
    int eof;
};

static void collector_read_cb(evmux_stream *s, ssize_t nread, char *buf)
{
    struct collector *k = (struct collector *)s->handle.data;
    if (nread > 0) {
        CHECK(k->got + (size_t)nread <= sizeof k->buf);
        memcpy(k->buf + k->got, buf, (size_t)nread);
        k->got += (size_t)nread;
        return;
    }
    CHECK_EQ(nread, EVMUX_EOF);
    k->eof++;
}

struct collect_accept {
    evmux_listener l;
    evmux_loop *loop;
    struct collector *k;
    int accepted;
};

static void collect_accept_cb(evmux_listener *l, int status)
{
    struct collect_accept *a = (struct collect_accept *)l->handle.data;
    CHECK_EQ(status, 0);
    a->k->s.handle.data = a->k;
    CHECK_OK(evmux_stream_init(a->loop, &a->k->s));
    CHECK_OK(evmux_accept(l, &a->k->s));
    CHECK_OK(evmux_stream_read_start(&a->k->s, collector_read_cb));
    a->accepted++;
}

static void connected_then_read_cb(evmux_connect_req *req, int status)
{
    struct lconn *c = (struct lconn *)req->data;
    log_add(c->log, 'c', 0, status);
    /* Writes queued while connecting have not been sent yet... maybe; but
     * none of their callbacks ran before the connect callback. */
    CHECK_EQ(log_count(c->log, 'w', 0), 0);
}

static void test_writes_while_connecting(void)
{
    evmux_loop *loop = unit_loop_new();
    struct collector *k = calloc(1, sizeof *k);
    CHECK(k != NULL);
    struct collect_accept a;
    memset(&a, 0, sizeof a);
    a.loop = loop;
    a.k = k;
    a.l.handle.data = &a;
    struct sockaddr_storage ss, bound;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    CHECK_OK(evmux_listen(loop, &a.l, (struct sockaddr *)&ss, len, NULL, collect_accept_cb));
    socklen_t blen = su_listener_addr(&a.l, &bound);

    struct evlog log;
    evmux_stream s;
    logged_stream(loop, &log, &s);
    struct lconn c;
    memset(&c, 0, sizeof c);
    c.req.data = &c;
    c.log = &log;
    log.in_call = 1;
    CHECK_OK(evmux_connect(&c.req, &s, (struct sockaddr *)&bound, blen, 5000,
                           connected_then_read_cb));
    log.in_call = 0;
    /* Reading needs the connection. */
    CHECK_EQ(evmux_stream_read_start(&s, collector_read_cb), -ENOTCONN);
    struct lreq w[3];
    CHECK_OK(lwrite(&log, &w[0], 0, &s, "one,", 4));
    CHECK_OK(lwrite(&log, &w[1], 1, &s, "two,", 4));
    CHECK_OK(evmux_stream_write(NULL, &s, (evmux_buf[]){ { "", 0 }, { "thr", 3 }, { "ee", 2 } }, 3,
                                NULL));
    CHECK_OK(lwrite(&log, &w[2], 2, &s, "!", 1));
    CHECK_EQ(evmux_stream_queued(&s), 14);
    log.in_call = 1;
    CHECK_OK(evmux_stream_shutdown(&s, log_shut_cb));
    log.in_call = 0;
    CHECK_EQ(log.n, 0);

    su_run_until(loop, &k->eof, 1, 5000);
    CHECK_EQ(k->got, 14);
    CHECK(memcmp(k->buf, "one,two,three!", 14) == 0);
    su_run_until(loop, &log.n, 5, 2000);
    CHECK_EQ(log.what[0], 'c');
    CHECK_EQ(log.status[0], 0);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(log.what[1 + i], 'w');
        CHECK_EQ(log.id[1 + i], i);
        CHECK_EQ(log.status[1 + i], 0);
    }
    CHECK_EQ(log.what[4], 's');
    CHECK_EQ(log.status[4], 0);

    CHECK_OK(evmux_close(&s.handle, log_close_cb));
    CHECK_OK(evmux_close(&k->s.handle, NULL));
    CHECK_OK(evmux_close(&a.l.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(log.n, 6);
    free(k);
}

/* Writes queued while connecting to a refused port: the connect fails;
 * closing the stream then reports each write exactly once, with an
 * error, before the close callback. */
static void record_connect_cb(evmux_connect_req *req, int status)
{
    struct lconn *c = (struct lconn *)req->data;
    log_add(c->log, 'c', 0, status);
}

static void test_writes_while_connecting_refused(void)
{
    evmux_loop *loop = unit_loop_new();
    struct evlog log;
    evmux_stream s;
    logged_stream(loop, &log, &s);
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", su_unused_port(), &ss);
    struct lconn c;
    memset(&c, 0, sizeof c);
    c.req.data = &c;
    c.log = &log;
    CHECK_OK(evmux_connect(&c.req, &s, (struct sockaddr *)&ss, len, 5000, record_connect_cb));
    struct lreq w[2];
    CHECK_OK(lwrite(&log, &w[0], 0, &s, "lost", 4));
    CHECK_OK(lwrite(&log, &w[1], 1, &s, "too", 3));
    su_run_until(loop, &log.n, 1, 5000);
    CHECK_EQ(log.what[0], 'c');
    CHECK_EQ(log.status[0], -ECONNREFUSED);
    su_run_for(loop, 20);
    CHECK_OK(evmux_close(&s.handle, log_close_cb));
    unit_loop_finish(loop);
    CHECK_EQ(log_count(&log, 'w', 0), 1);
    CHECK_EQ(log_count(&log, 'w', 1), 1);
    CHECK_EQ(log.what[log.n - 1], 'C');
    int wi = 0;
    for (int i = 1; i < log.n - 1; i++) {
        CHECK_EQ(log.what[i], 'w');
        CHECK_EQ(log.id[i], wi++);
        CHECK(log.status[i] < 0);
    }
    CHECK_EQ(log.n, 4);
}

/* ---- descriptors select cannot watch ---- */

static void test_large_fd(void)
{
    struct rlimit old, rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
    const int high = FD_SETSIZE + 100;
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max <= (rlim_t)high + 1) {
        fprintf(stderr, "   RLIMIT_NOFILE hard limit: %llu\n", (unsigned long long)old.rlim_max);
        UNIT_SKIP("RLIMIT_NOFILE hard limit too low");
    }
    rl = old;
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur < (rlim_t)high + 1)
        rl.rlim_cur = (rlim_t)high + 1;
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);

    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    CHECK(dup2(sv[0], high) == high);
    close(sv[0]);
    evmux_stream s;
    struct collector *k = calloc(1, sizeof *k);
    CHECK(k != NULL);
    s.handle.data = k;
    CHECK_OK(evmux_stream_init(loop, &s));
    int rc = evmux_stream_open(&s, high);
    if (unit_backend_is(loop, "select")) {
        CHECK_EQ(rc, -ERANGE);
        CHECK_EQ(evmux_stream_fd(&s), -1);
        CHECK_OK(evmux_close(&s.handle, NULL));
        if (unit_fd_is_open(high))
            close(high);
    } else {
        CHECK_OK(rc);
        CHECK_EQ(evmux_stream_fd(&s), high);
        CHECK_OK(evmux_stream_read_start(&s, collector_read_cb));
        CHECK_OK(evmux_stream_write(NULL, &s, (evmux_buf[]){ { "ping", 4 } }, 1, NULL));
        CHECK(write(sv[1], "pong", 4) == 4);
        CHECK(shutdown(sv[1], SHUT_WR) == 0);
        su_run_until(loop, &k->eof, 1, 3000);
        CHECK_EQ(k->got, 4);
        CHECK(memcmp(k->buf, "pong", 4) == 0);
        char buf[8];
        CHECK(su_wait_readable(sv[1], 1000));
        CHECK_EQ(read(sv[1], buf, sizeof buf), 4);
        CHECK(memcmp(buf, "ping", 4) == 0);
        CHECK_OK(evmux_close(&s.handle, NULL));
        CHECK_EQ(unit_fd_is_open(high), 0);
    }
    unit_loop_finish(loop);
    close(sv[1]);
    free(k);
    CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
}

/* ---- argument checks ---- */

static void noop_connect_cb(evmux_connect_req *req, int status)
{
    (void)req;
    (void)status;
}

static void noop_write_cb(evmux_write_req *req, int status)
{
    (void)req;
    (void)status;
}

static void test_bad_arguments(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_stream s;
    CHECK_OK(evmux_stream_init(loop, &s));
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 9, &ss);
    evmux_connect_req req;
    CHECK_EQ(evmux_connect(&req, &s, (struct sockaddr *)&ss, len, 0, NULL), -EINVAL);
    CHECK_EQ(evmux_connect(NULL, &s, (struct sockaddr *)&ss, len, 0, noop_connect_cb), -EINVAL);
    CHECK_EQ(evmux_connect(&req, &s, NULL, len, 0, noop_connect_cb), -EINVAL);
    CHECK_EQ(evmux_stream_open(&s, -1), -EINVAL);
    int sv[2];
    unit_socketpair(sv);
    CHECK_OK(evmux_stream_open(&s, sv[0]));
    evmux_buf b = { "x", 1 };
    /* A callback needs a request. */
    CHECK_EQ(evmux_stream_write(NULL, &s, &b, 1, noop_write_cb), -EINVAL);
    CHECK_EQ(evmux_stream_write(NULL, &s, NULL, 1, NULL), -EINVAL);
    CHECK_EQ(evmux_connect(&req, &s, (struct sockaddr *)&ss, len, 0, noop_connect_cb), -EISCONN);
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(unit_fd_is_open(sv[0]), 0);
    close(sv[1]);
}

/* ---- a paused server whose peer goes away ---- */

/* The pattern evmux.h recommends: write without callbacks, stop reading
 * past the high watermark, start again in drain_cb. If the peer resets
 * meanwhile, the write error empties the queue; drain_cb still runs
 * (exactly once), over_high clears, and the next read or write reports
 * the error, so the paused server does not wait forever on a dead
 * connection. */
struct paused {
    int drains;
    int reads;
    int read_errors;
};

static void paused_read_cb(evmux_stream *s, ssize_t nread, char *buf)
{
    struct paused *p = (struct paused *)s->handle.data;
    (void)buf;
    p->reads++;
    if (nread < 0)
        p->read_errors++;
}

static void paused_drain_cb(evmux_stream *s)
{
    struct paused *p = (struct paused *)s->handle.data;
    p->drains++;
    CHECK(evmux_stream_read_start(s, paused_read_cb) <= 0);
}

static void test_reset_while_paused_over_high(void)
{
    evmux_loop *loop = unit_loop_new();
    struct paused p;
    memset(&p, 0, sizeof p);
    evmux_stream srv;
    struct one_accept a;
    struct sockaddr_storage bound;
    socklen_t blen = one_accept_listen(loop, &a, &srv, &bound);
    int cfd = su_raw_connect(&bound, blen);
    su_run_until(loop, &a.accepted, 1, 5000);
    CHECK_OK(evmux_close(&a.l.handle, NULL));
    srv.handle.data = &p;
    CHECK_OK(evmux_stream_read_start(&srv, paused_read_cb));

    static char chunk[256 << 10];
    evmux_buf b = { chunk, sizeof chunk };
    su_fill_socket(loop, &srv, chunk, sizeof chunk);
    CHECK_OK(evmux_stream_set_watermarks(&srv, 1 << 20, 256 << 10, paused_drain_cb));
    while (!evmux_stream_over_high(&srv))
        CHECK_OK(evmux_stream_write(NULL, &srv, &b, 1, NULL));
    CHECK_OK(evmux_stream_read_stop(&srv));
    su_run_for(loop, 20);
    CHECK_EQ(evmux_stream_over_high(&srv), 1);
    su_close_with_reset(cfd);
    su_run_for(loop, 200);

    size_t queued = evmux_stream_queued(&srv);
    int over = evmux_stream_over_high(&srv);
    int wrc = evmux_stream_write(NULL, &srv, &b, 1, NULL);
    CHECK_OK(evmux_close(&srv.handle, NULL));
    unit_loop_finish(loop);
    if (over != 0 || p.drains != 1)
        fprintf(stderr, "   after the reset: queued %zu, over_high %d, drain_cb %d, read_cb %d\n",
                queued, over, p.drains, p.reads);
    CHECK_EQ(queued, 0);
    CHECK_EQ(over, 0);
    CHECK_EQ(p.drains, 1);
    /* Restarted in drain_cb, the read reports the end: once. */
    CHECK_EQ(p.reads, 1);
    CHECK(wrc == -ECONNRESET || wrc == -EPIPE);
}

/* ---- a failed write ends reading, whatever the receive does ---- */

/* On io_uring, the stream's multishot recv is replaced by one that never
 * completes unless cancelled: what Linux does, now and then under load,
 * to a recv on a reset connection once a failed send has taken the
 * socket's error (the recv has read the last bytes and waits for a wake-up
 * that already happened). Sends and everything else are the real ones. */
static const struct evmux_completion_ops *lost_real_ops;
static struct evmux_completion_ops lost_ops;
static struct evmux_backend lost_backend;
static struct evmux__op *lost_held[8];     /* recvs "in the kernel" */
static struct evmux__op *lost_cancelled[8]; /* ...asked to end */
static int lost_held_count, lost_cancel_count;

static int lost_submit(evmux_loop *loop, struct evmux__op *op)
{
    if (op->type != EVMUX__OP_RECV)
        return lost_real_ops->submit(loop, op);
    CHECK(lost_held_count < 8);
    lost_held[lost_held_count++] = op;
    return 0; /* no result until cancelled */
}

static int lost_cancel(evmux_loop *loop, struct evmux__op *op)
{
    for (int i = 0; i < lost_held_count; i++) {
        if (lost_held[i] != op)
            continue;
        lost_held[i] = lost_held[--lost_held_count];
        CHECK(lost_cancel_count < 8);
        lost_cancelled[lost_cancel_count++] = op;
        return 0;
    }
    return lost_real_ops->cancel(loop, op);
}

static void lost_run_completions(evmux_loop *loop)
{
    lost_real_ops->run_completions(loop);
    int n = lost_cancel_count;
    lost_cancel_count = 0;
    for (int i = 0; i < n; i++)
        evmux__op_result(loop, lost_cancelled[i], lost_cancelled[i]->generation, -ECANCELED, NULL,
                         false);
}

static void install_lost_recv(evmux_loop *loop)
{
    lost_real_ops = loop->backend->completion;
    lost_ops = *lost_real_ops;
    lost_ops.submit = lost_submit;
    lost_ops.cancel = lost_cancel;
    lost_ops.run_completions = lost_run_completions;
    lost_backend = *loop->backend;
    lost_backend.completion = &lost_ops;
    lost_held_count = lost_cancel_count = 0;
    loop->backend = &lost_backend;
}

/* The peer resets a stream that reads and writes; the write fails. The
 * reader must hear that the stream ended (once), even if the receive in
 * the kernel never says so; otherwise a server never closes the socket. */
static void test_write_failure_ends_reading(void)
{
    evmux_loop *loop = unit_loop_new();
    int native = loop->backend->completion != NULL;
    if (native)
        install_lost_recv(loop);
    struct rlog r;
    evmux_stream srv;
    struct one_accept a;
    int cfd = accepted_reader(loop, &a, &srv, &r);
    su_run_for(loop, 20);
    su_close_with_reset(cfd);
    su_run_for(loop, 20);

    static char chunk[64 << 10];
    evmux_buf b = { chunk, sizeof chunk };
    int wrc = evmux_stream_write(NULL, &srv, &b, 1, NULL);
    CHECK(wrc == 0 || wrc == -ECONNRESET || wrc == -EPIPE);
    su_run_until(loop, &r.reads, 1, 3000);
    su_run_for(loop, 30);
    CHECK_EQ(r.reads, 1);
    CHECK(r.last == -ECONNRESET || r.last == -EPIPE || r.last == EVMUX_EOF);
    CHECK_EQ(evmux_is_active(&srv.handle), 0); /* reading stopped */
    CHECK_OK(evmux_close(&srv.handle, log_close_cb));
    unit_loop_finish(loop);
    CHECK_EQ(r.log.n, 1);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(60);
    RUN_TEST(test_peer_reset_during_large_write);
    RUN_TEST(test_close_with_pending_writes);
    RUN_TEST(test_close_after_shutdown);
    RUN_TEST(test_close_inside_write_cb);
    RUN_TEST(test_read_sees_reset);
    RUN_TEST(test_close_inside_read_cb);
    RUN_TEST(test_connect_refused);
    RUN_TEST(test_connect_unix_missing);
    RUN_TEST(test_connect_timeout);
    RUN_TEST(test_connect_closed_while_connecting);
    RUN_TEST(test_writes_while_connecting);
    RUN_TEST(test_writes_while_connecting_refused);
    RUN_TEST(test_large_fd);
    RUN_TEST(test_bad_arguments);
    RUN_TEST(test_reset_while_paused_over_high);
    RUN_TEST(test_write_failure_ends_reading);
    return unit_end();
}
