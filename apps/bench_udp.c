/*
 * evmux-bench --udp: load for a UDP uppercase echo server, on evmux.
 *
 * --conns sockets, each connected to the server, keep --depth datagrams in
 * flight: a reply frees its slot and the slot sends the next datagram. UDP
 * loses datagrams, so a slot whose datagram has had no reply for
 * LOSS_TIMEOUT_MS counts it lost and sends the next one; a reply that
 * comes later still is counted late and otherwise ignored. Loss is
 * reported, not a failure: the figures say how much of the offered load
 * the server answered.
 *
 * Each datagram starts with its sequence number in 8 bytes of 7 bits each,
 * every byte >= 0x80 so that uppercasing leaves it alone (after the marker
 * byte with --mark); the sequence number names the slot (seq % depth) and
 * where in the pattern the rest of the datagram comes from. A reply must be
 * the datagram, uppercased, exactly: its length, its header, and every
 * pattern byte.
 *
 * With --threads, this is one thread's share (bench_threads.c): socket i
 * on loop i % threads, every loop resolving --host itself; the warmup and
 * the window end at the same moments on every thread.
 */
#include "bench.h"
#include "bench_threads.h"
#include "first_address.h"

#include <evmux.h>

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOSS_TIMEOUT_MS 200 /* a datagram unanswered this long is lost */
#define SWEEP_MS 20         /* how often slots are checked for that */
#define SEQ_BYTES 8
#define SEQ_STRIDE 7919 /* pattern offset between consecutive datagrams (prime) */
#define CLIENT_STRIDE 4099

enum udp_phase {
    UDP_SETUP,   /* opening the sockets */
    UDP_READY,   /* waiting for the other threads */
    UDP_WARMUP,
    UDP_MEASURE,
    UDP_DRAIN,
    UDP_DONE
};

struct udp_bench;

struct client {
    evmux_udp udp;
    struct udp_bench *b;
    uint64_t *seq;     /* per slot: the datagram in flight */
    uint64_t *sent_at; /* per slot: when it left, in ns; 0 when the slot is free */
    size_t index;      /* the socket's number in the whole run */
    bool open;
};

struct udp_bench {
    const struct bench_options *opt; /* this thread's share */
    struct bench_results *res;       /* this thread's results */
    struct bench_member *member;
    evmux_loop *loop;
    struct client *clients;
    uint64_t *slots; /* every client's seq and sent_at, in one block */
    uint8_t *payload, *expected;
    uint8_t *datagram; /* one datagram being built */
    size_t header;     /* bytes before the pattern: marker and sequence */
    enum udp_phase phase;
    evmux_timer phase_timer, sweep;
    uint64_t window_start_ns, window_end_ns; /* this thread's, for in_window */
    size_t in_flight;
};

static size_t pattern_at(const struct client *c, uint64_t seq)
{
    return (size_t)((seq * SEQ_STRIDE + c->index * CLIENT_STRIDE) % PATTERN_PERIOD);
}

/* Copies n bytes of the pattern from position pos, wrapping. */
static void copy_pattern(uint8_t *dst, const uint8_t *pattern, size_t pos, size_t n)
{
    while (n > 0) {
        size_t k = PATTERN_PERIOD - pos < n ? PATTERN_PERIOD - pos : n;
        memcpy(dst, pattern + pos, k);
        dst += k;
        n -= k;
        pos = 0;
    }
}

static void put_seq(uint8_t *p, uint64_t seq)
{
    for (int i = 0; i < SEQ_BYTES; i++)
        p[i] = (uint8_t)(0x80 | ((seq >> (7 * i)) & 0x7f));
}

static bool get_seq(const uint8_t *p, uint64_t *seq)
{
    uint64_t v = 0;
    for (int i = 0; i < SEQ_BYTES; i++) {
        if (!(p[i] & 0x80))
            return false;
        v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
    }
    *seq = v;
    return true;
}

static void send_slot(struct client *c, size_t slot, uint64_t seq)
{
    struct udp_bench *b = c->b;
    size_t size = b->opt->size;
    uint8_t *d = b->datagram;
    if (b->opt->mark)
        d[0] = MARK_BYTE;
    put_seq(d + (b->opt->mark ? 1 : 0), seq);
    copy_pattern(d + b->header, b->payload, pattern_at(c, seq), size - b->header);
    evmux_buf buf = {d, size};
    int rc = evmux_udp_send(NULL, &c->udp, &buf, 1, NULL, 0, NULL);
    if (rc < 0 && b->res->send_error == 0) {
        b->res->send_error = rc;
        fprintf(stderr, PROG ": cannot send a datagram: %s\n", evmux_strerror(rc));
    }
    c->seq[slot] = seq;
    c->sent_at[slot] = now_ns();
    b->in_flight++;
    if (b->phase == UDP_MEASURE)
        b->res->sent++;
}

/* The slot is free: it sends again while the load runs. */
static void slot_freed(struct client *c, size_t slot)
{
    struct udp_bench *b = c->b;
    c->sent_at[slot] = 0;
    b->in_flight--;
    if (b->phase == UDP_WARMUP || b->phase == UDP_MEASURE)
        send_slot(c, slot, c->seq[slot] + b->opt->depth);
}

static bool in_window(const struct udp_bench *b, uint64_t sent_at)
{
    return sent_at >= b->window_start_ns && (b->window_end_ns == 0 || sent_at < b->window_end_ns);
}

static void finish(struct udp_bench *b);

static void on_reply(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                     socklen_t from_len, unsigned flags)
{
    struct client *c = u->handle.data;
    struct udp_bench *b = c->b;
    (void)from, (void)from_len; /* connected: only the server's arrive */
    if (nread < 0) {
        b->res->errors++;
        fprintf(stderr, PROG ": socket %zu: %s\n", c->index, evmux_strerror((int)nread));
        finish(b);
        return;
    }
    const uint8_t *p = (const uint8_t *)buf;
    size_t size = b->opt->size;
    uint64_t seq;
    if ((size_t)nread != size || (flags & EVMUX_UDP_TRUNCATED) ||
        (b->opt->mark && p[0] != MARK_BYTE) || !get_seq(p + (b->opt->mark ? 1 : 0), &seq)) {
        b->res->mismatches++;
        return;
    }
    size_t slot = (size_t)(seq % b->opt->depth);
    if (c->sent_at[slot] == 0 || c->seq[slot] != seq) {
        b->res->late++; /* counted lost already */
        return;
    }
    size_t pos = pattern_at(c, seq), n = size - b->header;
    const uint8_t *body = p + b->header;
    while (n > 0) {
        size_t k = PATTERN_PERIOD - pos < n ? PATTERN_PERIOD - pos : n;
        if (memcmp(body, b->expected + pos, k) != 0) {
            b->res->mismatches++;
            break;
        }
        body += k;
        n -= k;
        pos = 0;
    }
    b->res->bytes_checked += size;
    if (b->phase == UDP_MEASURE && in_window(b, c->sent_at[slot])) {
        b->res->messages++;
        hist_record(&b->res->hist, now_ns() - c->sent_at[slot]);
    }
    slot_freed(c, slot);
    if (b->phase == UDP_DRAIN && b->in_flight == 0)
        finish(b);
}

/* Slots waiting longer than LOSS_TIMEOUT_MS lost their datagram. */
static void on_sweep(evmux_timer *t)
{
    struct udp_bench *b = t->handle.data;
    uint64_t now = now_ns(), limit = (uint64_t)LOSS_TIMEOUT_MS * 1000000u;
    for (size_t i = 0; i < b->opt->conns; i++) {
        struct client *c = &b->clients[i];
        for (size_t slot = 0; slot < b->opt->depth; slot++) {
            if (c->sent_at[slot] == 0 || now - c->sent_at[slot] < limit)
                continue;
            if (in_window(b, c->sent_at[slot]))
                b->res->lost++;
            slot_freed(c, slot);
        }
    }
    if (b->phase == UDP_DRAIN && b->in_flight == 0)
        finish(b);
}

static void start_phase_timer(struct udp_bench *b, uint64_t deadline_ns)
{
    bench_timer_at(b->loop, &b->phase_timer, deadline_ns);
}

/* The window's length and CPU are the team's; its end is shared. */
static void start_window(struct udp_bench *b)
{
    b->phase = UDP_MEASURE;
    hist_reset(&b->res->hist);
    b->window_start_ns = now_ns();
    start_phase_timer(b, bench_window_open(b->member));
}

static void close_window(struct udp_bench *b)
{
    b->window_end_ns = now_ns();
    bench_window_close(b->member);
}

/* Sending stops: replies or losses free the slots; none sends again. */
static void start_drain(struct udp_bench *b)
{
    close_window(b);
    b->phase = UDP_DRAIN;
    if (b->in_flight == 0)
        finish(b);
}

static void on_phase_timer(evmux_timer *t)
{
    struct udp_bench *b = t->handle.data;
    if (b->phase == UDP_WARMUP) {
        start_window(b);
        return;
    }
    if (b->phase == UDP_MEASURE)
        start_drain(b);
}

/* Every thread has its sockets: the load starts, and the warmup ends at
 * go_ns + --warmup on every thread. */
static void start_traffic(struct bench_member *m, uint64_t go_ns)
{
    struct udp_bench *b = m->load;
    b->phase = UDP_WARMUP;
    for (size_t i = 0; i < b->opt->conns; i++)
        for (size_t slot = 0; slot < b->opt->depth; slot++)
            send_slot(&b->clients[i], slot, slot);
    evmux_timer_start(&b->sweep, SWEEP_MS, SWEEP_MS);
    if (b->opt->warmup_s > 0)
        start_phase_timer(b, go_ns + phase_ns(b->opt->warmup_s));
    else
        start_window(b);
}

/* Another thread's run ended early: so does this one's. */
static void on_team_stop(struct bench_member *m)
{
    struct udp_bench *b = m->load;
    if (b->phase == UDP_MEASURE)
        start_drain(b);
    else if (b->phase != UDP_DRAIN)
        finish(b);
}

/* Ends the run: closes every handle, so evmux_run returns. Between
 * setting up and the drain, the run ends early, and the other threads'
 * with it. */
static void finish(struct udp_bench *b)
{
    if (b->phase == UDP_DONE)
        return;
    if (b->phase == UDP_MEASURE)
        close_window(b);
    bool early = b->phase == UDP_READY || b->phase == UDP_WARMUP || b->phase == UDP_MEASURE;
    b->phase = UDP_DONE;
    evmux_close(&b->phase_timer.handle, NULL);
    evmux_close(&b->sweep.handle, NULL);
    for (size_t i = 0; b->clients != NULL && i < b->opt->conns; i++)
        if (b->clients[i].open)
            evmux_close(&b->clients[i].udp.handle, NULL);
    if (early && bench_member_stop_all(b->member) && b->member->count > 1)
        fprintf(stderr, PROG ": thread %u stopped early: the run ends on every thread\n",
                b->member->index);
}

static int setup(struct udp_bench *b, const struct sockaddr *addr, socklen_t addr_len)
{
    const struct bench_options *opt = b->opt;
    size_t slots = opt->conns * opt->depth;
    /* The timers first: finish closes them whatever failed. */
    evmux_timer_init(b->loop, &b->phase_timer, on_phase_timer);
    evmux_timer_init(b->loop, &b->sweep, on_sweep);
    b->phase_timer.handle.data = b->sweep.handle.data = b;
    b->clients = calloc(opt->conns, sizeof *b->clients);
    b->slots = calloc(2 * slots, sizeof *b->slots);
    b->payload = malloc(PATTERN_PERIOD);
    b->expected = malloc(PATTERN_PERIOD);
    b->datagram = malloc(opt->size);
    if (!b->clients || !b->slots || !b->payload || !b->expected || !b->datagram)
        return -ENOMEM;
    make_pattern(b->payload, b->expected, PATTERN_PERIOD);
    for (size_t i = 0; i < opt->conns; i++) {
        struct client *c = &b->clients[i];
        c->b = b;
        c->index = bench_member_conn(b->member, i);
        c->seq = b->slots + i * opt->depth;
        c->sent_at = b->slots + slots + i * opt->depth;
        c->udp.handle.data = c;
        int rc = evmux_udp_init(b->loop, &c->udp);
        if (rc < 0)
            return rc;
        c->open = true;
        if ((rc = evmux_udp_connect(&c->udp, addr, addr_len)) < 0 ||
            (rc = evmux_udp_recv_start(&c->udp, on_reply)) < 0)
            return rc;
    }
    b->res->active_ok = opt->conns;
    return 0;
}

static void udp_free(struct udp_bench *b)
{
    free(b->clients);
    free(b->slots);
    free(b->payload);
    free(b->expected);
    free(b->datagram);
}

/* One thread's share of the datagram load, on a loop of its own. */
void bench_udp_load(struct bench_member *m)
{
    const struct bench_options *opt = &m->opt;
    struct udp_bench b = {.opt = opt, .res = m->res, .member = m,
                          .header = SEQ_BYTES + (opt->mark ? 1 : 0)};
    m->load = &b;
    if ((b.loop = bench_member_loop_new(m)) == NULL)
        return;
    struct first_address where;
    /* (the first address: a datagram socket has no handshake to try others with) */
    int rc = first_address(b.loop, opt->host, opt->port, SOCK_DGRAM, 0, &where);
    if (rc < 0) {
        m->res->resolve_error = rc;
        bench_member_ready(m, false);
        evmux_loop_free(b.loop);
        return;
    }
    evmux_addr_format((struct sockaddr *)&where.addr, where.len, m->res->target,
                      sizeof m->res->target);
    rc = setup(&b, (struct sockaddr *)&where.addr, where.len);
    if (rc < 0) {
        bench_member_fail(m, "cannot set up %zu sockets to %s: %s", m->all->conns,
                          m->res->target, evmux_strerror(rc));
        finish(&b);
    } else if ((rc = bench_member_listen(m, start_traffic, on_team_stop)) < 0) {
        bench_member_fail(m, "cannot wait for the other threads: %s", evmux_strerror(rc));
        finish(&b);
    } else {
        b.phase = UDP_READY;
        bench_member_ready(m, true); /* start_traffic, now or once all are */
    }
    int run_rc = evmux_run(b.loop, EVMUX_RUN_DEFAULT);
    bench_member_detach(m, run_rc >= 0);
    if (run_rc < 0)
        bench_member_fail(m, "event loop failed: %s", evmux_strerror(run_rc));
    else if (evmux_loop_free(b.loop) < 0)
        fprintf(stderr, PROG ": handles left open at exit\n");
    udp_free(&b);
}
