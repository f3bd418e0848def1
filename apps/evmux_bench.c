/*
 * evmux-bench: load generator for the uppercase echo protocol, on evmux.
 *
 * One loop per thread (--threads, bench_threads.c); this file is one
 * thread's share, connection i running on loop i % threads. All its
 * connections (active and idle) are opened first, a bounded number at a
 * time so the server's listen backlog never overflows. Once every thread
 * has its connections, each active connection keeps `depth` messages in
 * flight: every time the last byte of a reply arrives, the next message
 * goes out. Traffic runs through a warmup, then the measured window (both
 * ending at the same moments on every thread), then sending stops and the
 * replies still owed are awaited, so every byte sent is checked.
 *
 * Checking: connection i sends a fixed pseudo-random pattern (lowercase
 * letters, bytes >= 0x80, everything else) starting at its own offset; the
 * reply stream must be that pattern uppercased, byte for byte. Streams may
 * split or merge messages anywhere, so the check follows stream offsets,
 * not message boundaries. The pattern's period is a prime, so consecutive
 * messages and different connections carry different bytes and a reply
 * from the wrong place is caught too.
 *
 * With --mark, the first byte of every message is MARK_BYTE (0x7F), which
 * the pattern itself never holds: a server that does extra work per marked
 * message (the lab's --work-us) sees exactly one marker per message. The
 * marker replaces the pattern byte at stream offsets that are multiples of
 * --size; sending and checking both walk the stream in pieces (see
 * stream_piece), so the marker costs one more iovec and one more compare
 * per message and no copy.
 */
#include "bench.h"
#include "bench_threads.h"

#include <evmux.h>

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define CONNECTS_IN_FLIGHT 256  /* well below a default listen backlog */
#define CONNECT_TIMEOUT_MS 10000
#define DRAIN_TIMEOUT_MS 5000   /* for the replies owed when sending stops */
#define CONN_STRIDE 4099        /* how far apart connections start in the pattern */
#define WRITE_SEGMENTS 16       /* pattern pieces per evmux_stream_write */
#define MAX_NOTES 5             /* problems described on stderr; the rest are counted */

enum phase {
    PHASE_CONNECT, /* opening every connection */
    PHASE_READY,   /* connected; waiting for the other threads */
    PHASE_WARMUP,  /* traffic runs; nothing is counted */
    PHASE_MEASURE, /* messages completed now are counted */
    PHASE_DRAIN,   /* no new messages; waiting for the replies owed */
    PHASE_DONE
};

struct bench;

struct conn {
    evmux_stream stream;
    evmux_connect_req connect_req;
    struct bench *bench;
    uint64_t *sent_at;     /* ring of `depth` send times in ns; NULL when idle */
    uint64_t base;         /* pattern position of the stream's first byte */
    uint64_t sent;         /* bytes given to evmux_stream_write */
    uint64_t received;     /* reply bytes received and checked */
    uint64_t msgs_sent, msgs_done;
    size_t index;          /* the connection's number in the whole run */
    bool active;           /* carries traffic; else stays silent */
    bool open;             /* the stream is initialised and not yet closed */
    bool live;             /* connected, and neither failed nor dropped */
};

struct bench {
    const struct bench_options *opt; /* this thread's share */
    struct bench_results *res;       /* this thread's results */
    struct bench_member *member;
    evmux_loop *loop;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct conn *conns;
    size_t nconns;         /* active first, then idle */
    uint64_t *rings;       /* every active connection's sent_at, in one block */
    uint8_t *payload;      /* PATTERN_PERIOD bytes to send */
    uint8_t *expected;     /* the same, uppercased: what must come back */
    enum phase phase;
    evmux_timer timer;     /* ends warmup, the window, the drain */
    size_t next_connect, connecting, settled;
    size_t live_active;
    size_t owed;           /* during the drain: live connections still owed replies */
    evmux_connect_host_req first; /* the first connection finds the address */
    uint64_t connect_start_ns;
};

/* ---- problems worth a line on stderr ---- */

static void note(struct bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The first MAX_NOTES of the whole run, from any thread, each line whole. */
static void note(struct bench *b, const char *fmt, ...)
{
    unsigned n = bench_next_note(b->member);
    if (n >= MAX_NOTES) {
        if (n == MAX_NOTES)
            fputs(PROG ": (further problems are counted, not shown)\n", stderr);
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    bench_vsay(fmt, ap);
    va_end(ap);
}

/* ---- the payload ---- */

static const uint8_t mark_byte = MARK_BYTE; /* upper(MARK_BYTE) == MARK_BYTE: sent and expected */

/* The longest run of connection c's stream starting at stream offset `off`
 * (at most `left` bytes) that lies contiguously in `pattern` (the payload
 * or the expected bytes): up to where the pattern wraps and, with --mark,
 * up to the next message start; a message start itself is the marker
 * alone. Sending and checking both walk the stream with this, so they
 * cannot disagree on where the markers are. */
static evmux_buf stream_piece(const struct bench *b, const struct conn *c, const uint8_t *pattern,
                              uint64_t off, uint64_t left)
{
    size_t pos = (size_t)((c->base + off) % PATTERN_PERIOD);
    uint64_t len = left < PATTERN_PERIOD - pos ? left : PATTERN_PERIOD - pos;
    if (b->opt->mark) {
        uint64_t in_msg = off % b->opt->size;
        if (in_msg == 0)
            return (evmux_buf){&mark_byte, 1};
        if (len > b->opt->size - in_msg)
            len = b->opt->size - in_msg;
    }
    return (evmux_buf){pattern + pos, (size_t)len};
}

/* ---- one connection ---- */

static void finish(struct bench *b);

/* Takes a connection out of the run: closes its stream and its place in
 * the counts. Ends the run early once no active connection is left (once
 * connected: finish ends the other threads' runs too). */
static void conn_end(struct conn *c)
{
    struct bench *b = c->bench;
    if (c->open) {
        c->open = false;
        evmux_close(&c->stream.handle, NULL);
    }
    if (!c->live)
        return;
    c->live = false;
    if (!c->active)
        return;
    b->live_active--;
    if (b->phase == PHASE_DRAIN && c->received < c->sent)
        b->owed--;
    bool connected = b->phase == PHASE_READY || b->phase == PHASE_WARMUP ||
                     b->phase == PHASE_MEASURE;
    if ((connected && b->live_active == 0) || (b->phase == PHASE_DRAIN && b->owed == 0))
        finish(b);
}

/* The server dropped the connection, or writing to it failed. */
static void conn_failed(struct conn *c, int status)
{
    struct bench *b = c->bench;
    const char *kind = c->active ? "" : " (idle)";
    b->res->errors++;
    if (status == EVMUX_EOF)
        note(b, "connection %zu%s: the server closed it with %llu of %llu bytes echoed", c->index,
             kind, (unsigned long long)c->received, (unsigned long long)c->sent);
    else
        note(b, "connection %zu%s: %s, with %llu of %llu bytes echoed", c->index, kind,
             evmux_strerror(status), (unsigned long long)c->received,
             (unsigned long long)c->sent);
    conn_end(c);
}

/* Compares reply bytes with what must come back at this stream offset.
 * On the first wrong byte the connection is counted as a mismatch and
 * ended: after a lost or extra byte everything that follows is wrong too. */
static bool conn_check(struct conn *c, const uint8_t *buf, size_t n)
{
    struct bench *b = c->bench;
    if (c->received + n > c->sent) {
        b->res->mismatches++;
        note(b, "connection %zu%s: %llu reply bytes where only %llu were sent", c->index,
             c->active ? "" : " (idle)", (unsigned long long)(c->received + n),
             (unsigned long long)c->sent);
        conn_end(c);
        return false;
    }
    size_t done = 0;
    while (done < n) {
        uint64_t off = c->received + done;
        evmux_buf want = stream_piece(b, c, b->expected, off, n - done);
        const uint8_t *exp = want.base;
        if (memcmp(buf + done, exp, want.len) != 0) {
            size_t i = 0;
            while (buf[done + i] == exp[i])
                i++;
            const uint8_t *sent = stream_piece(b, c, b->payload, off, want.len).base;
            b->res->mismatches++;
            note(b, "connection %zu: reply byte %llu is 0x%02x, expected 0x%02x (sent 0x%02x)",
                 c->index, (unsigned long long)(off + i), buf[done + i], exp[i], sent[i]);
            conn_end(c);
            return false;
        }
        done += want.len;
    }
    return true;
}

/* Sends the next `count` messages, stamping each with the send time. */
static void conn_send(struct conn *c, uint64_t count)
{
    struct bench *b = c->bench;
    size_t depth = b->opt->depth;
    uint64_t now = now_ns();
    for (uint64_t m = c->msgs_sent; m < c->msgs_sent + count; m++)
        c->sent_at[m % depth] = now;

    /* The bytes are the pattern from the stream offset on, in pieces that
     * end where the pattern wraps (and around each marker with --mark);
     * evmux copies what the kernel defers. */
    uint64_t left = count * b->opt->size;
    while (left > 0) {
        evmux_buf bufs[WRITE_SEGMENTS];
        size_t n = 0;
        uint64_t batch = 0;
        for (; n < WRITE_SEGMENTS && left > 0; n++) {
            bufs[n] = stream_piece(b, c, b->payload, c->sent + batch, left);
            batch += bufs[n].len;
            left -= bufs[n].len;
        }
        int rc = evmux_stream_write(NULL, &c->stream, bufs, n, NULL);
        if (rc < 0) {
            conn_failed(c, rc);
            return;
        }
        c->sent += batch;
    }
    c->msgs_sent += count;
}

/* Retires every message whose reply is now complete and, while traffic
 * runs, replaces it with a new one. */
static void conn_complete(struct conn *c, uint64_t now)
{
    struct bench *b = c->bench;
    size_t size = b->opt->size, depth = b->opt->depth;
    bool counted = b->phase == PHASE_MEASURE;
    uint64_t completed = 0;
    while (c->msgs_done < c->msgs_sent && c->received >= (c->msgs_done + 1) * size) {
        if (counted) {
            hist_record(&b->res->hist, now - c->sent_at[c->msgs_done % depth]);
            b->res->messages++;
        }
        c->msgs_done++;
        completed++;
    }
    if (completed == 0)
        return;
    if (b->phase == PHASE_WARMUP || b->phase == PHASE_MEASURE)
        conn_send(c, completed);
    else if (b->phase == PHASE_DRAIN && c->received == c->sent && --b->owed == 0)
        finish(b);
}

static void on_read(evmux_stream *s, ssize_t nread, char *buf)
{
    struct conn *c = s->handle.data;
    if (nread < 0) {
        conn_failed(c, (int)nread);
        return;
    }
    uint64_t now = now_ns(); /* before checking, which takes time of its own */
    if (!conn_check(c, (const uint8_t *)buf, (size_t)nread))
        return;
    c->received += (uint64_t)nread;
    c->bench->res->bytes_checked += (uint64_t)nread;
    conn_complete(c, now);
}

/* ---- phases ---- */

/* Phases end at deadlines shared by every thread. */
static void start_timer(struct bench *b, uint64_t deadline_ns)
{
    bench_timer_at(b->loop, &b->timer, deadline_ns);
}

/* The window's length and the CPU spent in it are the team's (the first
 * thread to open it to the last to close it); its end is the same
 * deadline for every thread. */
static void start_window(struct bench *b)
{
    b->phase = PHASE_MEASURE;
    hist_reset(&b->res->hist);
    b->res->messages = 0;
    start_timer(b, bench_window_open(b->member));
}

static void close_window(struct bench *b)
{
    bench_window_close(b->member);
}

/* Sending stops; the replies still owed are awaited so that every byte
 * sent is checked. */
static void start_drain(struct bench *b)
{
    close_window(b);
    b->phase = PHASE_DRAIN;
    b->owed = 0;
    for (size_t i = 0; i < b->nconns; i++)
        if (b->conns[i].live && b->conns[i].received < b->conns[i].sent)
            b->owed++;
    if (b->owed == 0)
        finish(b);
    else
        start_timer(b, now_ns() + (uint64_t)DRAIN_TIMEOUT_MS * 1000000u);
}

static void drain_timed_out(struct bench *b)
{
    for (size_t i = 0; i < b->nconns; i++) {
        struct conn *c = &b->conns[i];
        if (!c->live || c->received == c->sent)
            continue;
        b->res->errors++;
        note(b, "connection %zu: %llu of %llu bytes still not echoed %d s after sending stopped",
             c->index, (unsigned long long)c->received, (unsigned long long)c->sent,
             DRAIN_TIMEOUT_MS / 1000);
    }
    finish(b);
}

/* Every thread is connected (bench_member_ready): traffic starts, and the
 * warmup ends at go_ns + --warmup on every thread. */
static void start_traffic(struct bench_member *m, uint64_t go_ns)
{
    struct bench *b = m->load;
    b->phase = PHASE_WARMUP;
    for (size_t i = 0; i < b->nconns && b->phase == PHASE_WARMUP; i++)
        if (b->conns[i].live && b->conns[i].active)
            conn_send(&b->conns[i], b->opt->depth);
    if (b->phase != PHASE_WARMUP)
        return; /* every connection failed at once */
    if (b->opt->warmup_s > 0)
        start_timer(b, go_ns + phase_ns(b->opt->warmup_s));
    else
        start_window(b);
}

/* Another thread's run ended early: so does this one's, the replies owed
 * still being checked if traffic ran. */
static void on_team_stop(struct bench_member *m)
{
    struct bench *b = m->load;
    if (b->phase == PHASE_MEASURE)
        start_drain(b);
    else if (b->phase != PHASE_DRAIN)
        finish(b);
}

static void on_timer(evmux_timer *t)
{
    struct bench *b = t->handle.data;
    switch (b->phase) {
    case PHASE_WARMUP: start_window(b); break;
    case PHASE_MEASURE: start_drain(b); break;
    case PHASE_DRAIN: drain_timed_out(b); break;
    default: break;
    }
}

/* Ends the run: closes every stream and the timer, so evmux_run returns.
 * Between connecting and the drain, the run ends early, and the other
 * threads' with it. (While connecting, the others go on: they count their
 * own connect failures, see bench_member_ready.) */
static void finish(struct bench *b)
{
    if (b->phase == PHASE_DONE)
        return;
    if (b->phase == PHASE_MEASURE)
        close_window(b); /* cut short: every active connection is gone */
    bool early = b->phase == PHASE_READY || b->phase == PHASE_WARMUP ||
                 b->phase == PHASE_MEASURE;
    b->phase = PHASE_DONE;
    evmux_close(&b->timer.handle, NULL);
    for (size_t i = 0; i < b->nconns; i++)
        conn_end(&b->conns[i]);
    if (early && bench_member_stop_all(b->member) && b->member->count > 1)
        fprintf(stderr, PROG ": thread %u has no connection left: the run ends on every "
                        "thread\n", b->member->index);
}

/* ---- connecting ---- */

static void connect_more(struct bench *b);

static void connect_failed(struct conn *c, int status)
{
    struct bench *b = c->bench;
    b->res->connect_failures++;
    if (b->res->first_connect_error == 0)
        b->res->first_connect_error = status;
    conn_end(c);
}

static void conn_established(struct conn *c)
{
    struct bench *b = c->bench;
    evmux_stream_set_nodelay(&c->stream, 1); /* messages must not wait for ACKs */
    /* Idle connections read too: to notice the server dropping them. */
    int rc = evmux_stream_read_start(&c->stream, on_read);
    if (rc < 0) {
        connect_failed(c, rc);
        return;
    }
    c->live = true;
    if (c->active) {
        b->live_active++;
        b->res->active_ok++;
    } else {
        b->res->idle_ok++;
    }
}

static void on_connected(evmux_connect_req *req, int status)
{
    struct conn *c = req->data;
    struct bench *b = c->bench;
    b->connecting--;
    if (b->phase == PHASE_DONE)
        return; /* cancelled by the end of the run */
    b->settled++;
    if (status < 0)
        connect_failed(c, status);
    else
        conn_established(c);
    connect_more(b);
}

static void connect_phase_done(struct bench *b)
{
    b->res->connect_s = (double)(now_ns() - b->connect_start_ns) / 1e9;
    if (b->live_active == 0) {
        b->res->no_connection = true;
        bench_member_ready(b->member, false);
        finish(b);
        return;
    }
    b->phase = PHASE_READY;
    bench_member_ready(b->member, true); /* start_traffic, now or once all are */
}

/* The first connection's attempt failed: a name that does not resolve is
 * a bad --host; otherwise no address of the host answered, and the other
 * connections, which would go to the same addresses, count as failed
 * with the same error without trying. */
static void first_failed(struct bench *b, struct conn *c, int status)
{
    if (EVMUX_IS_EAI(status)) {
        b->res->resolve_error = status;
        bench_member_ready(b->member, false);
        finish(b);
        return;
    }
    connect_failed(c, status);
    b->res->connect_failures += b->nconns - b->next_connect;
    b->next_connect = b->settled = b->nconns;
    connect_phase_done(b);
}

static void on_first_connected(evmux_connect_host_req *req, int status)
{
    struct bench *b = req->data;
    struct conn *c = &b->conns[0];
    b->connecting--;
    if (b->phase == PHASE_DONE)
        return; /* cancelled by the end of the run */
    b->settled++;
    b->addr_len = sizeof b->addr;
    if (status == 0)
        status = evmux_stream_peer(&c->stream, &b->addr, &b->addr_len);
    if (status < 0) {
        first_failed(b, c, status);
        return;
    }
    evmux_addr_format((struct sockaddr *)&b->addr, b->addr_len, b->res->target,
                      sizeof b->res->target);
    conn_established(c);
    connect_more(b);
}

/* The first connection tries each address of --host in turn (a name is
 * resolved on the loop's worker pool); the one that answers serves every
 * other connection, so the rest cost no lookup. */
static void connect_first(struct bench *b)
{
    struct conn *c = &b->conns[b->next_connect++];
    evmux_stream_init(b->loop, &c->stream);
    c->open = true;
    b->first.data = b;
    int rc = evmux_connect_host(&b->first, &c->stream, b->opt->host, b->opt->port,
                                CONNECT_TIMEOUT_MS, on_first_connected);
    if (rc < 0) {
        b->settled++;
        first_failed(b, c, rc);
    } else {
        b->connecting++;
    }
}

/* Keeps up to CONNECTS_IN_FLIGHT connects going until all have settled. */
static void connect_more(struct bench *b)
{
    while (b->connecting < CONNECTS_IN_FLIGHT && b->next_connect < b->nconns &&
           b->phase == PHASE_CONNECT) {
        struct conn *c = &b->conns[b->next_connect++];
        evmux_stream_init(b->loop, &c->stream);
        c->open = true;
        int rc = evmux_connect(&c->connect_req, &c->stream, (struct sockaddr *)&b->addr,
                               b->addr_len, CONNECT_TIMEOUT_MS, on_connected);
        if (rc < 0) {
            b->settled++;
            connect_failed(c, rc); /* e.g. out of descriptors */
        } else {
            b->connecting++;
        }
    }
    if (b->phase == PHASE_CONNECT && b->settled == b->nconns)
        connect_phase_done(b);
}

/* ---- setting up ---- */

/* Every connection is a descriptor: take all the system allows us. */
static void raise_fd_limit(size_t needed)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && needed > rl.rlim_cur)
        fprintf(stderr, PROG ": warning: %zu connections need more descriptors than the "
                        "limit of %llu; expect connect failures\n",
                needed, (unsigned long long)rl.rlim_cur);
}

/* Allocates everything the run needs, so that traffic allocates nothing. */
static int bench_alloc(struct bench *b)
{
    const struct bench_options *opt = b->opt;
    const struct bench_member *m = b->member;
    b->nconns = opt->conns + opt->idle;
    if (opt->depth > SIZE_MAX / sizeof(uint64_t) / opt->conns)
        return -ENOMEM;
    b->conns = calloc(b->nconns, sizeof *b->conns);
    b->rings = calloc(opt->conns * opt->depth, sizeof *b->rings);
    b->payload = malloc(PATTERN_PERIOD);
    b->expected = malloc(PATTERN_PERIOD);
    if (!b->conns || !b->rings || !b->payload || !b->expected)
        return -ENOMEM;
    make_pattern(b->payload, b->expected, PATTERN_PERIOD);
    for (size_t i = 0; i < b->nconns; i++) {
        struct conn *c = &b->conns[i];
        c->bench = b;
        c->active = i < opt->conns;
        /* Numbered across threads (the idle ones after every active one),
         * so that no two connections of the run share a pattern offset. */
        c->index = c->active ? bench_member_conn(m, i)
                             : m->all->conns + bench_member_conn(m, i - opt->conns);
        c->sent_at = c->active ? b->rings + i * opt->depth : NULL;
        c->base = (uint64_t)c->index * CONN_STRIDE % PATTERN_PERIOD;
        c->stream.handle.data = c; /* evmux_stream_init keeps it */
        c->connect_req.data = c;
    }
    return 0;
}

static void bench_free(struct bench *b)
{
    free(b->conns);
    free(b->rings);
    free(b->payload);
    free(b->expected);
}

/* One thread's share of the streams load, on a loop of its own. */
void bench_tcp_load(struct bench_member *m)
{
    struct bench b = {.opt = &m->opt, .res = m->res, .member = m, .phase = PHASE_CONNECT};
    m->load = &b;
    if ((b.loop = bench_member_loop_new(m)) == NULL)
        return;
    if (bench_alloc(&b) < 0) {
        bench_member_fail(m, "out of memory for %zu connections", b.nconns);
        bench_free(&b);
        evmux_loop_free(b.loop);
        return;
    }
    evmux_timer_init(b.loop, &b.timer, on_timer);
    b.timer.handle.data = &b;
    int rc = bench_member_listen(m, start_traffic, on_team_stop);
    if (rc < 0) {
        bench_member_fail(m, "cannot wait for the other threads: %s", evmux_strerror(rc));
        finish(&b);
    } else {
        b.connect_start_ns = now_ns();
        connect_first(&b);
    }
    rc = evmux_run(b.loop, EVMUX_RUN_DEFAULT);
    bench_member_detach(m, rc >= 0);
    if (rc < 0) {
        bench_member_fail(m, "event loop failed: %s", evmux_strerror(rc));
        return; /* the loop cannot be trusted to close cleanly now */
    }
    if (evmux_loop_free(b.loop) < 0)
        fprintf(stderr, PROG ": handles left open at exit\n");
    bench_free(&b);
}

static int run(const struct bench_options *opt, struct bench_results *res)
{
    /* Until the first connection names the address: --host as given. */
    snprintf(res->target, sizeof res->target,
             strchr(opt->host, ':') != NULL && opt->host[0] != '[' ? "[%s]:%u" : "%s:%u",
             opt->host, opt->port);
    if (opt->udp)
        return bench_udp_conclude(opt, res, bench_threads_run(opt, bench_udp_load, res));
    raise_fd_limit(opt->conns + opt->idle + 16);
    return bench_tcp_conclude(opt, res, bench_threads_run(opt, bench_tcp_load, res));
}

int main(int argc, char **argv)
{
    struct bench_options opt = {
        .host = "127.0.0.1",
        .port = 8081,
        .backend = "auto",
        .conns = 1,
        .idle = 0,
        .size = 64,
        .depth = 1,
        .duration_s = 5,
        .warmup_s = 1,
        .threads = 1,
    };
    int status = bench_parse_args(argc, argv, &opt);
    if (status >= 0)
        return status;
    signal(SIGPIPE, SIG_IGN); /* evmux sends with MSG_NOSIGNAL; this is belt and braces */

    static struct bench_results res; /* the histogram is large for a stack */
    return run(&opt, &res);
}
