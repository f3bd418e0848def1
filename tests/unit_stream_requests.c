/* Regression tests for the streams' kernel requests (issue 11 puts a
 * request object under streams): the loads that make io_uring's rings
 * overflow and the fork that copies requests in flight, asked of every
 * backend. The close cases are in unit_stream_requests_close.c.
 *  - test_write_storm: thousands of writes from one callback (io_uring:
 *    far more sends than the 512-entry submission queue holds).
 *  - test_completion_flood: thousands of streams with bytes waiting (io_uring:
 *    more results at once than the 4096-entry completion queue holds).
 *  - test_fork_requests_in_flight: a fork with a recv armed and a send
 *    blocked; both processes go on with their copy of the loop. */
#include "request_util.h"

#include <sys/resource.h>
#include <sys/wait.h>

enum { MANY = 5000, SELECT_MANY = 400 };

/* ---- helpers ---- */

/* How many socketpairs with both ends in the loop this backend can take
 * (select: every number below FD_SETSIZE), with the soft descriptor limit
 * raised to match; 0 if the hard limit is too low. */
static int pairs_for(const evmux_loop *loop, int want)
{
    if (unit_backend_is(loop, "select"))
        want = SELECT_MANY;
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    rlim_t need = (rlim_t)want * 2 + 256;
    if (rl.rlim_cur >= need)
        return want;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        return 0;
    rl.rlim_cur = need;
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    return want;
}

/* ---- 1. a storm of writes from one callback ---- */

enum { STORM_BYTES = 64 * 1024 };

struct storm_pair {
    evmux_stream w, r; /* writer, and the reader at the far end */
    evmux_write_req req;
    int idx;
    size_t got;
    int write_calls, write_status;
    int shut_calls, shut_status;
    int eofs, closes;
};

static struct {
    struct storm_pair *p;
    int n, in_timer, writes, eofs, closed;
} storm;

static void storm_closed(evmux_handle *h)
{
    ((struct storm_pair *)h->data)->closes++;
    storm.closed++;
}

static void storm_shut_cb(evmux_stream *s, int status)
{
    struct storm_pair *p = s->handle.data;
    p->shut_calls++;
    p->shut_status = status;
}

static void storm_write_cb(evmux_write_req *req, int status)
{
    struct storm_pair *p = req->data;
    CHECK_EQ(storm.in_timer, 0); /* never from inside evmux_stream_write */
    p->write_calls++;
    p->write_status = status;
    storm.writes++;
    CHECK_OK(evmux_stream_shutdown(&p->w, storm_shut_cb)); /* the reader's EOF */
}

/* Checks n received bytes of stream idx against its pattern (which starts
 * at offset base) and counts them into *got, which may reach at most max. */
static void take_pattern(int idx, uint64_t base, size_t *got, size_t max, const char *buf, size_t n)
{
    CHECK(*got + n <= max);
    if (!ru_pat_match((const unsigned char *)buf, base + *got, n)) {
        fprintf(stderr, "stream %d: wrong bytes at offset %zu\n", idx, *got);
        CHECK(0);
    }
    *got += n;
}

static void storm_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    struct storm_pair *p = s->handle.data;
    if (n > 0) {
        take_pattern(p->idx, (uint64_t)p->idx * 7, &p->got, STORM_BYTES, buf, (size_t)n);
        return;
    }
    CHECK_EQ(n, EVMUX_EOF);
    CHECK_EQ(p->got, STORM_BYTES);
    p->eofs++;
    storm.eofs++;
    CHECK_OK(evmux_close(&p->r.handle, storm_closed));
    CHECK_OK(evmux_close(&p->w.handle, storm_closed));
}

static void storm_timer_cb(evmux_timer *t)
{
    const unsigned char *data = t->handle.data;
    storm.in_timer = 1;
    for (int i = 0; i < storm.n; i++) {
        struct storm_pair *p = &storm.p[i];
        evmux_buf b = { data + (size_t)i * 7, STORM_BYTES };
        CHECK_OK(evmux_stream_write(&p->req, &p->w, &b, 1, storm_write_cb));
    }
    storm.in_timer = 0;
}

/* 5,000 streams (select: 400) each write 64 KiB from one timer callback:
 * every write callback runs once with 0, and every reader at the far end
 * gets its 64 KiB byte-exact, then EOF, once. */
static void test_write_storm(void)
{
    int fds_before = ru_count_fds();
    evmux_loop *loop = unit_loop_new();
    int n = pairs_for(loop, MANY);
    if (n == 0) {
        CHECK_OK(evmux_loop_free(loop));
        UNIT_SKIP("RLIMIT_NOFILE too low for 5,000 socketpairs");
    }
    uint64_t t0 = unit_mono_ns();
    /* Stream i writes the pattern from offset 7 * i: its own bytes. */
    size_t data_len = (size_t)n * 7 + STORM_BYTES;
    unsigned char *data = malloc(data_len);
    CHECK(data != NULL);
    ru_pat_fill(data, 0, data_len);
    memset(&storm, 0, sizeof storm);
    storm.n = n;
    storm.p = calloc((size_t)n, sizeof *storm.p);
    CHECK(storm.p != NULL);
    for (int i = 0; i < n; i++) {
        struct storm_pair *p = &storm.p[i];
        int sv[2];
        unit_socketpair(sv);
        p->idx = i;
        p->req.data = p;
        p->w.handle.data = p->r.handle.data = p;
        CHECK_OK(evmux_stream_init(loop, &p->w));
        CHECK_OK(evmux_stream_init(loop, &p->r));
        CHECK_OK(evmux_stream_open(&p->w, sv[0]));
        CHECK_OK(evmux_stream_open(&p->r, sv[1]));
        CHECK_OK(evmux_stream_read_start(&p->r, storm_read_cb));
    }
    evmux_timer t;
    CHECK_OK(evmux_timer_init(loop, &t, storm_timer_cb));
    t.handle.data = data;
    CHECK_OK(evmux_timer_start(&t, 1, 0));
    su_run_until(loop, &storm.closed, 2 * n, 60000);
    CHECK_EQ(storm.writes, n);
    CHECK_EQ(storm.eofs, n);
    for (int i = 0; i < n; i++) {
        struct storm_pair *p = &storm.p[i];
        CHECK_EQ(p->write_calls, 1);
        CHECK_EQ(p->write_status, 0);
        CHECK_EQ(p->shut_calls, 1);
        CHECK_EQ(p->shut_status, 0);
        CHECK_EQ(p->got, STORM_BYTES);
        CHECK_EQ(p->eofs, 1);
        CHECK_EQ(p->closes, 2);
    }
    CHECK_OK(evmux_close(&t.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(ru_count_fds(), fds_before);
    free(storm.p);
    free(data);
    fprintf(stderr, "   %d streams, %.0f ms\n", n, (double)(unit_mono_ns() - t0) / 1e6);
}

/* ---- 2. more results at once than the completion queue holds ---- */

enum { FLOOD_FIRST = 12 * 1024, FLOOD_BYTES = 20 * 1024 }; /* two receive buffers' worth */

struct flood_stream {
    evmux_stream s;
    int idx, peer;
    size_t got;
    int eofs, closes;
};

static int flood_eofs, flood_closed;

static void flood_closed_cb(evmux_handle *h)
{
    ((struct flood_stream *)h->data)->closes++;
    flood_closed++;
}

static void flood_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    struct flood_stream *f = s->handle.data;
    if (n > 0) {
        take_pattern(f->idx, (uint64_t)f->idx * 13, &f->got, FLOOD_BYTES, buf, (size_t)n);
        return;
    }
    CHECK_EQ(n, EVMUX_EOF);
    CHECK_EQ(f->got, FLOOD_BYTES);
    f->eofs++;
    flood_eofs++;
    CHECK_OK(evmux_close(&s->handle, flood_closed_cb));
}

static void flood_send(struct flood_stream *f, size_t from, size_t to)
{
    unsigned char buf[FLOOD_BYTES];
    ru_pat_fill(buf, (uint64_t)f->idx * 13 + from, to - from);
    CHECK_EQ(write(f->peer, buf, to - from), (ssize_t)(to - from));
}

/* 5,000 streams (select: 400) with 20 KiB and EOF waiting for each: 12 KiB
 * before reading starts (io_uring: every recv has a result as it is
 * submitted), 8 KiB and the EOF once every recv is armed (a result from
 * each at the next wait). Every read callback gets its bytes once, in
 * order, then EOF once. */
static void test_completion_flood(void)
{
    int fds_before = ru_count_fds();
    evmux_loop *loop = unit_loop_new();
    int n = pairs_for(loop, MANY);
    if (n == 0) {
        CHECK_OK(evmux_loop_free(loop));
        UNIT_SKIP("RLIMIT_NOFILE too low for 5,000 socketpairs");
    }
    uint64_t t0 = unit_mono_ns();
    struct flood_stream *fl = calloc((size_t)n, sizeof *fl);
    CHECK(fl != NULL);
    flood_eofs = flood_closed = 0;
    for (int i = 0; i < n; i++) {
        int sv[2];
        unit_socketpair(sv);
        fl[i].idx = i;
        fl[i].peer = sv[1];
        fl[i].s.handle.data = &fl[i];
        CHECK_OK(evmux_stream_init(loop, &fl[i].s));
        CHECK_OK(evmux_stream_open(&fl[i].s, sv[0]));
        flood_send(&fl[i], 0, FLOOD_FIRST);
    }
    for (int i = 0; i < n; i++)
        CHECK_OK(evmux_stream_read_start(&fl[i].s, flood_read_cb));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    for (int i = 0; i < n; i++) {
        flood_send(&fl[i], FLOOD_FIRST, FLOOD_BYTES);
        CHECK(shutdown(fl[i].peer, SHUT_WR) == 0);
    }
    su_run_until(loop, &flood_closed, n, 60000);
    CHECK_EQ(flood_eofs, n);
    for (int i = 0; i < n; i++) {
        CHECK_EQ(fl[i].got, FLOOD_BYTES);
        CHECK_EQ(fl[i].eofs, 1);
        CHECK_EQ(fl[i].closes, 1);
        close(fl[i].peer);
    }
    unit_loop_finish(loop);
    CHECK_EQ(ru_count_fds(), fds_before);
    free(fl);
    fprintf(stderr, "   %d streams, %.0f ms\n", n, (double)(unit_mono_ns() - t0) / 1e6);
}

/* ---- 3. fork with requests in flight ---- */

struct fork_stream {
    evmux_stream s;
    evmux_write_req req;
    uint64_t accepted; /* pattern bytes written */
    int write_calls, write_status;
    size_t read_got;
    char read[8];
    int closes;
};

static int fork_closed;

static void fork_closed_cb(evmux_handle *h)
{
    ((struct fork_stream *)h->data)->closes++;
    fork_closed++;
}

static void fork_write_cb(evmux_write_req *req, int status)
{
    struct fork_stream *f = req->data;
    f->write_calls++;
    f->write_status = status;
}

static void fork_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    struct fork_stream *f = s->handle.data;
    CHECK(n > 0); /* the peer never ends the stream */
    CHECK(f->read_got + (size_t)n <= sizeof f->read);
    memcpy(f->read + f->read_got, buf, (size_t)n);
    f->read_got += (size_t)n;
}

static void fork_write(struct fork_stream *f, size_t len, evmux_write_cb cb)
{
    unsigned char *b = malloc(len);
    CHECK(b != NULL);
    ru_pat_fill(b, f->accepted, len);
    CHECK_OK(evmux_stream_write(cb ? &f->req : NULL, &f->s, &(evmux_buf){ b, len }, 1, cb));
    f->accepted += len;
    free(b);
}

/* The far end of the parent's stream, reading once the child has gone. */
struct fork_peer {
    evmux_io io;
    uint64_t got;
};

static void fork_peer_cb(evmux_io *io, unsigned events)
{
    struct fork_peer *p = io->handle.data;
    (void)events;
    unsigned char buf[65536];
    ssize_t r;
    while ((r = read(evmux_io_fd(io), buf, sizeof buf)) > 0) {
        if (!ru_pat_match(buf, p->got, (size_t)r)) {
            fprintf(stderr, "fork peer: wrong bytes at offset %llu\n", (unsigned long long)p->got);
            CHECK(0);
        }
        p->got += (uint64_t)r;
    }
    CHECK(r < 0 && errno == EAGAIN);
}

/* Reads what a raw socket holds (up to size bytes): the byte count. */
static size_t drain_into(int fd, unsigned char *buf, size_t size)
{
    size_t got = 0;
    ssize_t r;
    while (got < size && (r = read(fd, buf + got, size - got)) > 0)
        got += (size_t)r;
    return got;
}

/* The child: closes the inherited streams (each callback once), then runs
 * an echo exchange over TCP on its copy of the loop. Exits 0 if all held. */
static void fork_child(evmux_loop *loop, struct fork_stream *a, struct fork_stream *b)
{
    unit_watchdog(30);
    CHECK_OK(evmux_loop_fork(loop));
    fork_closed = 0;
    CHECK_OK(evmux_close(&a->s.handle, fork_closed_cb));
    CHECK_OK(evmux_close(&b->s.handle, fork_closed_cb));
    su_run_until(loop, &fork_closed, 2, 5000);
    CHECK_EQ(a->closes, 1);
    CHECK_EQ(b->closes, 1);
    CHECK_EQ(a->write_calls, 1);
    CHECK_EQ(a->write_status, -ECANCELED); /* its bytes had no room */
    CHECK_EQ(b->write_calls, 1);
    CHECK(b->write_status == 0 || b->write_status == -ECANCELED);
    CHECK_EQ(a->read_got, 0);

    struct su_echo_server srv;
    struct su_echo_client c;
    struct sockaddr_storage any, bound;
    socklen_t len = su_echo_server_start(loop, &srv, &any, su_ip("127.0.0.1", 0, &any), &bound);
    unsigned char *data = su_random_bytes(300 * 1000, 5);
    int done = 0;
    su_client_start(loop, &c, data, 300 * 1000, 9, &bound, len, 1, &done);
    su_run_until(loop, &done, 1, 10000);
    su_run_until(loop, &srv.closed, 1, 5000);
    CHECK_EQ(c.received, 300 * 1000);
    CHECK_EQ(srv.read_errors, 0);
    CHECK_OK(evmux_close(&srv.listener.handle, NULL));
    unit_loop_finish(loop);
    free(data);
    exit(0); /* not _exit: under ASan, the child is checked for leaks too */
}

/* A fork while stream a has a recv armed and a send blocked (its peer does
 * not read), and stream b has just accepted a write (io_uring: not yet
 * submitted). The child closes both and runs an echo exchange on its copy
 * of the loop. The parent's loop goes on: once the peer reads, a delivers
 * every byte exactly once and its write completes with 0; its recv still
 * receives; b's bytes reach its peer exactly once. */
static void test_fork_requests_in_flight(void)
{
    int fds_before = ru_count_fds();
    evmux_loop *loop = unit_loop_new();
    int sv[2], tv[2];
    unit_socketpair(sv);
    unit_socketpair(tv);
    struct fork_stream a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.s.handle.data = a.req.data = &a;
    b.s.handle.data = b.req.data = &b;
    CHECK_OK(evmux_stream_init(loop, &a.s));
    CHECK_OK(evmux_stream_init(loop, &b.s));
    CHECK_OK(evmux_stream_open(&a.s, sv[0]));
    CHECK_OK(evmux_stream_open(&b.s, tv[0]));
    CHECK_OK(evmux_stream_read_start(&a.s, fork_read_cb));
    /* Fill a's socket: the kernel takes no more. */
    for (int i = 0;; i++) {
        CHECK(i < 4096);
        fork_write(&a, 64 * 1024, NULL);
        su_run_for(loop, 2);
        size_t before = evmux_stream_queued(&a.s);
        if (before == 0)
            continue;
        su_run_for(loop, 20);
        if (evmux_stream_queued(&a.s) == before)
            break;
    }
    fork_write(&a, 256 * 1024, fork_write_cb);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT)); /* io_uring: the send waits for room */
    CHECK(evmux_stream_queued(&a.s) > 0);
    fork_write(&b, 1000, fork_write_cb);
    fflush(stderr);

    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        fork_child(loop, &a, &b);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);

    /* The parent's peer starts reading. */
    CHECK_EQ(a.write_calls, 0);
    struct fork_peer peer = { .got = 0 };
    CHECK_OK(evmux_io_init(loop, &peer.io, sv[1], fork_peer_cb));
    peer.io.handle.data = &peer;
    CHECK_OK(evmux_io_start(&peer.io, EVMUX_READABLE));
    su_run_until(loop, &a.write_calls, 1, 10000);
    CHECK_EQ(a.write_status, 0);
    for (int i = 0; i < 500 && peer.got < a.accepted; i++)
        su_run_for(loop, 10);
    CHECK_EQ(peer.got, a.accepted);
    CHECK(write(sv[1], "pong", 4) == 4);
    for (int i = 0; i < 500 && a.read_got < 4; i++)
        su_run_for(loop, 10);
    CHECK_EQ(a.read_got, 4);
    CHECK(memcmp(a.read, "pong", 4) == 0);
    su_run_until(loop, &b.write_calls, 1, 5000);
    CHECK_EQ(b.write_status, 0);
    su_run_for(loop, 20);
    /* The child has exited: whatever it sent is in. */
    unsigned char b_buf[8192];
    size_t b_got = drain_into(tv[1], b_buf, sizeof b_buf);
    CHECK(ru_pat_match(b_buf, 0, b_got < b.accepted ? b_got : b.accepted));
    /* io_uring: b's write was still unsubmitted at the fork; the child's
     * close must not offer it to the shared socket too (it once did, and
     * the peer got 2000 bytes). */
    CHECK_EQ(b_got, b.accepted);

    fork_closed = 0;
    CHECK_OK(evmux_close(&a.s.handle, fork_closed_cb));
    CHECK_OK(evmux_close(&b.s.handle, fork_closed_cb));
    CHECK_OK(evmux_close(&peer.io.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(fork_closed, 2);
    CHECK_EQ(a.write_calls, 1);
    CHECK_EQ(b.write_calls, 1);
    close(sv[1]);
    close(tv[1]);
    CHECK_EQ(ru_count_fds(), fds_before);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(100);
    ru_pat_init();
    RUN_TEST(test_write_storm);
    RUN_TEST(test_completion_flood);
    RUN_TEST(test_fork_requests_in_flight);
    return unit_end();
}
