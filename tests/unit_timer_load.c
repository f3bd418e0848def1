/* Timers under a heavy I/O load keep their turn: a 16 MB echo through an
 * evmux stream, fed and drained by peer threads as fast as the kernel
 * takes it, must not stretch one iteration's I/O work without bound.
 *
 * The measure is deterministic: a probe timer re-arms itself with 0 ms, so
 * it fires once per iteration, and counts the bytes the stream's read
 * callbacks received since its previous call. That count has a bound set
 * by the loop, not by the machine's speed:
 *  - readiness backends: a ready stream reads at most 4 buffers of 64 KiB
 *    per iteration (READS_PER_EVENT in stream.c): 1 MiB for 4 streams;
 *  - io_uring: at most 128 results of at most 16 KiB per wait
 *    (RESULTS_PER_WAIT and BUF_SIZE in uring.c): 2 MiB. Before that bound,
 *    one wait took every result the kernel had posted, here all 256
 *    receive buffers, 4 MiB, while the probe had to wait.
 * The probe's callback also does some work (a 5 ms sleep), which gives the
 * peer time to fill the sockets, as a busy application would.
 *
 * A 10 ms repeating timer's gaps are checked against the wall clock too,
 * with a margin (1 s) that only a starved loop could exceed. */
#include "stream_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>

enum {
    CONNS = 4,
    CONN_BYTES = 4 << 20, /* 16 MiB echoed in all */
    SEND_STEP = 256 << 10,
    BURST_MAX_READINESS = CONNS * 4 * (64 << 10),
    BURST_MAX_URING = 128 * (16 << 10),
    PROBE_WORK_MS = 5,
    TICK_MS = 10,
    GAP_MAX_MS = 1000,
    PEER_IDLE_MAX_MS = 30000,
    SOCK_BUF = 4 << 20, /* lets the kernel hold a lot while the loop works */
};

static unsigned char *payload; /* connection i sends bytes [i, i+1) * CONN_BYTES */
static int peer_fds[CONNS];
static int peer_failed;
static size_t peer_received[CONNS];

/* ---- the peer: one thread sends on every connection and checks the echo ---- */

static int peer_step(int i, short revents, size_t *sent, int *eof)
{
    const unsigned char *data = payload + (size_t)i * CONN_BYTES;
    if ((revents & POLLOUT) && *sent < CONN_BYTES) {
        size_t n = CONN_BYTES - *sent < SEND_STEP ? CONN_BYTES - *sent : SEND_STEP;
        ssize_t w = send(peer_fds[i], data + *sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
        if (w > 0 && (*sent += (size_t)w) == CONN_BYTES && shutdown(peer_fds[i], SHUT_WR) != 0)
            return -1;
    }
    static unsigned char buf[256 << 10];
    while (revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t r = recv(peer_fds[i], buf, sizeof buf, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (r == 0) {
            *eof = 1;
            break;
        }
        if (r < 0 || peer_received[i] + (size_t)r > CONN_BYTES ||
            memcmp(buf, data + peer_received[i], (size_t)r) != 0)
            return -1;
        peer_received[i] += (size_t)r;
    }
    return 0;
}

static void *peer_run(void *arg)
{
    (void)arg;
    size_t sent[CONNS] = {0};
    int eof[CONNS] = {0};
    for (int done = 0; done < CONNS;) {
        struct pollfd p[CONNS];
        for (int i = 0; i < CONNS; i++) {
            p[i].fd = eof[i] ? -1 : peer_fds[i];
            p[i].events = (short)(POLLIN | (sent[i] < CONN_BYTES ? POLLOUT : 0));
            p[i].revents = 0;
        }
        int rc = poll(p, CONNS, PEER_IDLE_MAX_MS);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0) {
            fprintf(stderr, "peer: %s\n", rc == 0 ? "no progress" : strerror(errno));
            peer_failed = 1;
            return NULL;
        }
        done = 0;
        for (int i = 0; i < CONNS; i++) {
            if (!eof[i] && p[i].revents != 0 && peer_step(i, p[i].revents, &sent[i], &eof[i]) < 0) {
                fprintf(stderr, "peer %d: failed at %zu received (%s)\n", i, peer_received[i],
                        strerror(errno));
                peer_failed = 1;
                return NULL;
            }
            done += eof[i];
        }
    }
    return NULL;
}

/* A TCP pair on loopback; the server end is made non-blocking by
 * evmux_stream_open. */
static void tcp_pair(int *server_fd, int *client_fd)
{
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(lfd >= 0);
    int size = SOCK_BUF;
    /* Set before the handshake, so the window can grow to it; inherited. */
    CHECK(setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) == 0);
    CHECK(bind(lfd, (struct sockaddr *)&ss, len) == 0);
    CHECK(listen(lfd, 1) == 0);
    len = sizeof ss;
    CHECK(getsockname(lfd, (struct sockaddr *)&ss, &len) == 0);
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(cfd >= 0);
    CHECK(setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size) == 0);
    CHECK(setsockopt(cfd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) == 0);
    CHECK(connect(cfd, (struct sockaddr *)&ss, len) == 0);
    *server_fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    CHECK(*server_fd >= 0);
    close(lfd);
    *client_fd = cfd;
}

/* ---- the loop: echo streams, the probe, the ticker ---- */

static evmux_stream servers[CONNS];
static int servers_closed;
static size_t echoed[CONNS];
static size_t since_probe, burst_max; /* bytes read between two probes */
static int reads_since_probe, reads_max;
static uint64_t probes;
static uint64_t last_tick_ns, gap_max_ns;
static uint64_t ticks;

static void server_closed_cb(evmux_handle *h)
{
    (void)h;
    servers_closed++;
}

static void server_shut_cb(evmux_stream *s, int status)
{
    CHECK_EQ(status, 0);
    CHECK_OK(evmux_close(&s->handle, server_closed_cb));
}

static void server_read_cb(evmux_stream *s, ssize_t nread, char *buf)
{
    if (nread > 0) {
        since_probe += (size_t)nread;
        reads_since_probe++;
        echoed[s - servers] += (size_t)nread;
        CHECK_OK(evmux_stream_write(NULL, s, &(evmux_buf){buf, (size_t)nread}, 1, NULL));
        return;
    }
    CHECK_EQ(nread, EVMUX_EOF);
    CHECK_OK(evmux_stream_shutdown(s, server_shut_cb));
}

static void probe_cb(evmux_timer *t)
{
    probes++;
    if (since_probe > burst_max)
        burst_max = since_probe;
    if (reads_since_probe > reads_max)
        reads_max = reads_since_probe;
    since_probe = 0;
    reads_since_probe = 0;
    if (servers_closed == CONNS)
        return;
    unit_sleep_ms(PROBE_WORK_MS);
    CHECK_OK(evmux_timer_start(t, 0, 0)); /* due again in the next iteration */
}

static void ticker_cb(evmux_timer *t)
{
    uint64_t now = unit_mono_ns();
    if (now - last_tick_ns > gap_max_ns)
        gap_max_ns = now - last_tick_ns;
    last_tick_ns = now;
    ticks++;
    if (servers_closed == CONNS)
        CHECK_OK(evmux_timer_stop(t));
}

static void test_timers_keep_turn_under_echo_load(void)
{
    evmux_loop *loop = unit_loop_new();
    struct unit_guard guard;
    evmux_timer probe, ticker;
    pthread_t peer;
    payload = su_random_bytes((size_t)CONNS * CONN_BYTES, 91);

    unit_guard_start(loop, &guard, 60000);
    for (int i = 0; i < CONNS; i++) {
        int fd;
        tcp_pair(&fd, &peer_fds[i]);
        CHECK_OK(evmux_stream_init(loop, &servers[i]));
        CHECK_OK(evmux_stream_open(&servers[i], fd));
        CHECK_OK(evmux_stream_read_start(&servers[i], server_read_cb));
    }
    CHECK_OK(evmux_timer_init(loop, &probe, probe_cb));
    CHECK_OK(evmux_timer_init(loop, &ticker, ticker_cb));
    CHECK_OK(evmux_timer_start(&probe, 0, 0));
    evmux_update_time(loop);
    last_tick_ns = unit_mono_ns();
    CHECK_OK(evmux_timer_start(&ticker, TICK_MS, TICK_MS));
    CHECK(pthread_create(&peer, NULL, peer_run, NULL) == 0);

    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK(pthread_join(peer, NULL) == 0);
    fprintf(stderr, "%s: %llu iterations probed, at most %zu bytes in %d reads between probes; "
                    "%llu ticks, longest gap %llu ms\n",
            evmux_loop_backend(loop), (unsigned long long)probes, burst_max, reads_max,
            (unsigned long long)ticks, (unsigned long long)(gap_max_ns / 1000000u));
    CHECK_EQ(guard.fired, 0);
    CHECK_EQ(peer_failed, 0);
    CHECK_EQ(servers_closed, CONNS);
    for (int i = 0; i < CONNS; i++) {
        CHECK_EQ(echoed[i], CONN_BYTES);
        CHECK_EQ(peer_received[i], CONN_BYTES);
    }
    CHECK(burst_max <= (unit_backend_is(loop, "uring") ? BURST_MAX_URING : BURST_MAX_READINESS));
    CHECK(gap_max_ns < GAP_MAX_MS * 1000000ull);

    CHECK_OK(evmux_close(&probe.handle, NULL));
    CHECK_OK(evmux_close(&ticker.handle, NULL));
    unit_guard_close(&guard);
    unit_loop_finish(loop);
    for (int i = 0; i < CONNS; i++)
        close(peer_fds[i]);
    free(payload);
}

/* ---- many ready watchers: more results than the completion queue holds ---- */

/* 5000 watchers stay readable (dups of one pipe with a byte in it), more
 * than io_uring's 4096 completion entries, so the ring overflows and the
 * kernel keeps the rest (NODROP). Each watcher must fire exactly
 * FIRES_EACH times, and the probe still gets every iteration; on io_uring
 * one iteration runs at most 128 of the callbacks. */
enum { WATCHERS = 5000, WATCHERS_SELECT = 900, FIRES_EACH = 3, URING_BATCH_MAX = 128 };

static evmux_io *watchers;
static int *fires;
static int calls_since_probe, calls_max, watchers_done, watchers_n;

static void watcher_cb(evmux_io *io, unsigned events)
{
    CHECK_EQ(events, EVMUX_READABLE);
    calls_since_probe++;
    if (++fires[io - watchers] == FIRES_EACH) {
        CHECK_OK(evmux_io_stop(io));
        watchers_done++;
    }
}

static void watcher_probe_cb(evmux_timer *t)
{
    if (calls_since_probe > calls_max)
        calls_max = calls_since_probe;
    calls_since_probe = 0;
    if (watchers_done < watchers_n)
        CHECK_OK(evmux_timer_start(t, 0, 0));
}

static void test_many_ready_watchers_take_turns(void)
{
    evmux_loop *loop = unit_loop_new();
    int n = unit_backend_is(loop, "select") ? WATCHERS_SELECT : WATCHERS;
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < (rlim_t)n + 100 && rl.rlim_max >= (rlim_t)n + 100) {
        rl.rlim_cur = (rlim_t)n + 100;
        CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    }
    if (rl.rlim_cur < (rlim_t)n + 100)
        n = (int)rl.rlim_cur - 100; /* still more than the ring holds, usually */
    watchers_n = n;
    watchers = calloc((size_t)n, sizeof *watchers);
    fires = calloc((size_t)n, sizeof *fires);
    CHECK(watchers != NULL && fires != NULL);
    int p[2];
    CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
    unit_write_byte(p[1]);
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 30000);
    for (int i = 0; i < n; i++) {
        int fd = fcntl(p[0], F_DUPFD_CLOEXEC, 0);
        CHECK(fd >= 0);
        CHECK_OK(evmux_io_init(loop, &watchers[i], fd, watcher_cb));
        CHECK_OK(evmux_io_start(&watchers[i], EVMUX_READABLE));
    }
    evmux_timer probe;
    CHECK_OK(evmux_timer_init(loop, &probe, watcher_probe_cb));
    CHECK_OK(evmux_timer_start(&probe, 0, 0));

    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    fprintf(stderr, "%s: %d watchers, at most %d callbacks between probes\n",
            evmux_loop_backend(loop), n, calls_max);
    CHECK_EQ(guard.fired, 0);
    CHECK_EQ(watchers_done, n);
    for (int i = 0; i < n; i++)
        CHECK_EQ(fires[i], FIRES_EACH);
    if (unit_backend_is(loop, "uring"))
        CHECK(calls_max <= URING_BATCH_MAX);

    for (int i = 0; i < n; i++) {
        CHECK_OK(evmux_close(&watchers[i].handle, NULL));
        close(watchers[i].fd);
    }
    CHECK_OK(evmux_close(&probe.handle, NULL));
    unit_guard_close(&guard);
    unit_loop_finish(loop);
    close(p[0]);
    close(p[1]);
    free(watchers);
    free(fires);
}

/* io_uring leaves results it did not take in the ring. After one
 * iteration, most of these watchers' results are still there: a forked
 * child rebuilds its ring and still sees every watcher fire once (the
 * parent's results are not its own); the parent then closes them all and
 * frees the loop with the results unread, which must end their polls
 * (end_polls) rather than hang or leak. */
static int single_fired;

static void single_cb(evmux_io *io, unsigned events)
{
    CHECK_EQ(events, EVMUX_READABLE);
    fires[io - watchers]++;
    single_fired++;
    CHECK_OK(evmux_io_stop(io));
}

static void test_leftover_results_at_fork_and_free(void)
{
    evmux_loop *loop = unit_loop_new();
    int n = unit_backend_is(loop, "select") ? WATCHERS_SELECT : 2000;
    watchers = calloc((size_t)n, sizeof *watchers);
    fires = calloc((size_t)n, sizeof *fires);
    CHECK(watchers != NULL && fires != NULL);
    single_fired = 0;
    int p[2];
    CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
    unit_write_byte(p[1]);
    for (int i = 0; i < n; i++) {
        int fd = fcntl(p[0], F_DUPFD_CLOEXEC, 0);
        CHECK(fd >= 0);
        CHECK_OK(evmux_io_init(loop, &watchers[i], fd, single_cb));
        CHECK_OK(evmux_io_start(&watchers[i], EVMUX_READABLE));
    }
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK(single_fired > 0);
    if (unit_backend_is(loop, "uring"))
        CHECK(single_fired <= URING_BATCH_MAX);

    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        CHECK_OK(evmux_loop_fork(loop));
        CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
        CHECK_EQ(single_fired, n);
        for (int i = 0; i < n; i++)
            CHECK_EQ(fires[i], 1);
        for (int i = 0; i < n; i++)
            CHECK_OK(evmux_close(&watchers[i].handle, NULL));
        unit_loop_finish(loop);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    for (int i = 0; i < n; i++)
        CHECK_OK(evmux_close(&watchers[i].handle, NULL));
    unit_loop_finish(loop);
    for (int i = 0; i < n; i++)
        close(watchers[i].fd);
    close(p[0]);
    close(p[1]);
    free(watchers);
    free(fires);
}

int main(void)
{
    unit_watchdog(90);
    RUN_TEST(test_timers_keep_turn_under_echo_load);
    RUN_TEST(test_many_ready_watchers_take_turns);
    RUN_TEST(test_leftover_results_at_fork_and_free);
    return 0;
}
