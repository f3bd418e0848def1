/* Streams over descriptors that are not sockets, on every backend: a pipe
 * in each direction, a regular file (always ready, read to its end), and a
 * terminal (a pseudo-terminal here). Writing to a pipe whose reader is gone
 * is -EPIPE, never a SIGPIPE that kills the program. Socket-only calls
 * refuse with -ENOTSUP. */
#include "stream_util.h"

#include <signal.h>

struct sink {
    unsigned char *data;
    size_t len, cap;
    int eof, err, calls;
};

static void sink_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    struct sink *k = s->handle.data;
    k->calls++;
    if (n == EVMUX_EOF) {
        k->eof = 1;
        return;
    }
    if (n < 0) {
        k->err = (int)n;
        return;
    }
    CHECK(k->len + (size_t)n <= k->cap);
    memcpy(k->data + k->len, buf, (size_t)n);
    k->len += (size_t)n;
}

static void write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        CHECK(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

/* Reading a pipe: every byte in order, then EVMUX_EOF. */
static void test_read_pipe(void)
{
    evmux_loop *loop = unit_loop_new();
    int p[2];
    CHECK(pipe2(p, O_CLOEXEC) == 0);
    enum { N = 200 * 1000 };
    unsigned char *want = su_random_bytes(N, 7);
    struct sink k = { .data = malloc(N), .cap = N };
    evmux_stream s;
    CHECK_OK(evmux_stream_init(loop, &s));
    s.handle.data = &k;
    CHECK_OK(evmux_stream_open(&s, p[0]));
    CHECK_OK(evmux_stream_read_start(&s, sink_read_cb));
    CHECK_EQ(evmux_stream_set_nodelay(&s, 1), -ENOTSUP);
    CHECK_EQ(evmux_stream_set_keepalive(&s, 1, 10), -ENOTSUP);
    /* Fill the pipe a piece at a time, letting the loop drain it. */
    CHECK(fcntl(p[1], F_SETFL, O_NONBLOCK) == 0);
    size_t off = 0;
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 20000);
    while (off < N && !guard.fired) {
        ssize_t w = write(p[1], want + off, N - off);
        if (w > 0)
            off += (size_t)w;
        else
            CHECK(errno == EAGAIN);
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    }
    close(p[1]);
    while (!k.eof && !guard.fired)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(guard.fired, 0);
    unit_guard_close(&guard);
    CHECK_EQ(k.err, 0);
    CHECK_EQ(k.len, N);
    CHECK(memcmp(k.data, want, N) == 0);
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    CHECK(!unit_fd_is_open(p[0]) || errno == EBADF);
    free(want);
    free(k.data);
}

struct wlog {
    int calls, status;
};

static void wlog_cb(evmux_write_req *req, int status)
{
    struct wlog *w = req->data;
    w->calls++;
    w->status = status;
}

/* Writing a pipe: more than it holds is queued and drained as the reader
 * reads; once the reader is gone the write fails with -EPIPE and the
 * process lives, with SIGPIPE at its default (fatal) disposition. */
static void test_write_pipe(void)
{
    CHECK(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
    evmux_loop *loop = unit_loop_new();
    int p[2];
    CHECK(pipe2(p, O_CLOEXEC) == 0);
    enum { N = 1000 * 1000 };
    unsigned char *data = su_random_bytes(N, 11);
    evmux_stream s;
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_OK(evmux_stream_open(&s, p[1]));
    CHECK_EQ(evmux_stream_shutdown(&s, NULL), -ENOTSUP);
    struct wlog w1 = { 0 }, w2 = { 0 };
    evmux_write_req r1 = { .data = &w1 }, r2 = { .data = &w2 };
    CHECK_OK(evmux_stream_write(&r1, &s, &(evmux_buf){ data, N }, 1, wlog_cb));
    CHECK(evmux_stream_queued(&s) > 0); /* a pipe holds 64 KiB by default */
    unsigned char *got = malloc(N);
    size_t len = 0;
    CHECK(fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 20000);
    while ((len < N || w1.calls == 0) && !guard.fired) {
        ssize_t n = read(p[0], got + len, N - len);
        if (n > 0)
            len += (size_t)n;
        CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    }
    CHECK_EQ(guard.fired, 0);
    CHECK_EQ(len, N);
    CHECK(memcmp(got, data, N) == 0);
    CHECK_EQ(w1.calls, 1);
    CHECK_EQ(w1.status, 0);

    close(p[0]); /* the reader goes away */
    /* Refused at once (the write is tried inside the call), or accepted
     * and failed through its callback: -EPIPE either way. */
    int rc = evmux_stream_write(&r2, &s, &(evmux_buf){ data, 1000 }, 1, wlog_cb);
    if (rc == 0) {
        while (w2.calls == 0 && !guard.fired)
            CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
        CHECK_EQ(guard.fired, 0);
        CHECK_EQ(w2.calls, 1);
        CHECK_EQ(w2.status, -EPIPE);
    } else {
        CHECK_EQ(rc, -EPIPE);
        CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
        CHECK_EQ(w2.calls, 0);
    }
    unit_guard_close(&guard);
    CHECK_EQ(evmux_stream_write(NULL, &s, &(evmux_buf){ data, 1 }, 1, NULL), -EPIPE);
    /* No SIGPIPE is left pending for the thread either. */
    sigset_t pending;
    CHECK(sigpending(&pending) == 0);
    CHECK_EQ(sigismember(&pending, SIGPIPE), 0);
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    free(got);
    free(data);
}

/* A regular file is always ready: read to its end, every byte, then EOF;
 * and written through a stream, every byte lands in it. */
static void test_regular_file(void)
{
    evmux_loop *loop = unit_loop_new();
    char path[] = "/tmp/evmux-unit-stream-fds-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    enum { N = 300 * 1000 };
    unsigned char *data = su_random_bytes(N, 3);
    write_all(fd, data, N);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);

    struct sink k = { .data = malloc(N), .cap = N };
    evmux_stream s;
    CHECK_OK(evmux_stream_init(loop, &s));
    s.handle.data = &k;
    CHECK_OK(evmux_stream_open(&s, fd));
    CHECK_OK(evmux_stream_read_start(&s, sink_read_cb));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* ends: reading stopped at EOF */
    CHECK_EQ(k.eof, 1);
    CHECK_EQ(k.err, 0);
    CHECK_EQ(k.len, N);
    CHECK(memcmp(k.data, data, N) == 0);
    CHECK_OK(evmux_close(&s.handle, NULL));

    int wfd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    CHECK(wfd >= 0);
    evmux_stream ws;
    struct wlog w = { 0 };
    evmux_write_req r = { .data = &w };
    CHECK_OK(evmux_stream_init(loop, &ws));
    CHECK_OK(evmux_stream_open(&ws, wfd));
    CHECK_OK(evmux_stream_write(&r, &ws, &(evmux_buf){ data, N }, 1, wlog_cb));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(w.calls, 1);
    CHECK_EQ(w.status, 0);
    CHECK_OK(evmux_close(&ws.handle, NULL));
    unit_loop_finish(loop);

    int rfd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(rfd >= 0);
    unsigned char *back = malloc(N + 1);
    size_t len = 0;
    ssize_t n;
    while ((n = read(rfd, back + len, N + 1 - len)) > 0)
        len += (size_t)n;
    CHECK_EQ(len, N);
    CHECK(memcmp(back, data, N) == 0);
    close(rfd);
    unlink(path);
    free(back);
    free(k.data);
    free(data);
}

/* A terminal: lines typed on the master side arrive in order; the stream
 * must not make the terminal's shared file description non-blocking (the
 * shell reading the same terminal after us would see EAGAIN). */
static void test_terminal(void)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    CHECK(master >= 0);
    CHECK(grantpt(master) == 0 && unlockpt(master) == 0);
    const char *name = ptsname(master);
    CHECK(name != NULL);
    int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    CHECK(slave >= 0);
    int shell_copy = dup(slave); /* what the shell would keep: the same description */
    CHECK(shell_copy >= 0);

    evmux_loop *loop = unit_loop_new();
    struct sink k = { .data = malloc(4096), .cap = 4096 };
    evmux_stream s;
    CHECK_OK(evmux_stream_init(loop, &s));
    s.handle.data = &k;
    CHECK_OK(evmux_stream_open(&s, slave));
    CHECK_EQ(evmux_stream_fd(&s), slave); /* the same number, owned by the stream */
    CHECK_EQ(fcntl(shell_copy, F_GETFL) & O_NONBLOCK, 0);
    CHECK(fcntl(slave, F_GETFL) & O_NONBLOCK);
    CHECK_OK(evmux_stream_read_start(&s, sink_read_cb));

    const char *lines = "first line\nsecond line\n";
    write_all(master, (const unsigned char *)lines, strlen(lines));
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 10000);
    while (k.len < strlen(lines) && !guard.fired)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(guard.fired, 0);
    CHECK_EQ(k.len, strlen(lines));
    CHECK(memcmp(k.data, lines, k.len) == 0);

    /* Writing to the terminal reaches the master side. */
    CHECK_OK(evmux_stream_write(NULL, &s, &(evmux_buf){ "out", 3 }, 1, NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    char echoed[512]; /* the terminal echoes the typed lines first */
    size_t echoed_len = 0;
    while (memmem(echoed, echoed_len, "out", 3) == NULL) {
        CHECK_EQ(su_wait_readable(master, 5000), 1);
        ssize_t n = read(master, echoed + echoed_len, sizeof echoed - echoed_len);
        CHECK(n > 0);
        echoed_len += (size_t)n;
    }

    unit_guard_close(&guard);
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(fcntl(shell_copy, F_GETFL) & O_NONBLOCK, 0);
    close(shell_copy);
    close(master);
    free(k.data);
}

/* A pseudo-terminal's master is a terminal too (isatty), but opening it
 * again would make a new pty: the stream must keep the one it was given,
 * so what it writes reaches the slave. */
static void test_pty_master(void)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    CHECK(master >= 0);
    CHECK(grantpt(master) == 0 && unlockpt(master) == 0);
    char name[64];
    snprintf(name, sizeof name, "%s", ptsname(master));
    int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    CHECK(slave >= 0);
    evmux_loop *loop = unit_loop_new();
    evmux_stream s;
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_OK(evmux_stream_open(&s, master));
    CHECK(ptsname(master) != NULL && strcmp(ptsname(master), name) == 0);
    CHECK_OK(evmux_stream_write(NULL, &s, &(evmux_buf){ "hello\n", 6 }, 1, NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(su_wait_readable(slave, 5000), 1);
    char buf[64];
    CHECK_EQ(read(slave, buf, sizeof buf), 6);
    CHECK(memcmp(buf, "hello\n", 6) == 0);
    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    close(slave);
}

int main(void)
{
    unit_watchdog(120);
    RUN_TEST(test_read_pipe);
    RUN_TEST(test_write_pipe);
    RUN_TEST(test_regular_file);
    RUN_TEST(test_terminal);
    RUN_TEST(test_pty_master);
    return 0;
}
