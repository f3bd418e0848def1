/* Small helpers shared by the unit tests (header-only). */
#ifndef EVMUX_TEST_UNIT_UTIL_H
#define EVMUX_TEST_UNIT_UTIL_H

#include "check.h"
#include "evmux.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Kills the process with a message if a test hangs: a missed wake-up must
 * fail the test, not stall ctest until its own timeout. RUN_TEST has already
 * printed the name of the test that hung. */
static inline void unit_watchdog_handler(int sig)
{
    static const char msg[] = "watchdog: test hung (SIGALRM)\n";
    (void)sig;
    ssize_t rc = write(2, msg, sizeof msg - 1);
    (void)rc;
    _exit(3);
}

static inline void unit_watchdog(unsigned seconds)
{
    signal(SIGALRM, unit_watchdog_handler);
    alarm(seconds);
}

static inline evmux_loop *unit_loop_new(void)
{
    evmux_loop *loop = NULL;
    CHECK_OK(evmux_loop_new(&loop, NULL));
    CHECK(loop != NULL);
    return loop;
}

/* Runs the pending close callbacks, then frees the loop. Every handle must
 * already be closed; a leaked handle shows up as -EBUSY here. */
static inline void unit_loop_finish(evmux_loop *loop)
{
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_loop_free(loop));
}

static inline int unit_backend_is(const evmux_loop *loop, const char *name)
{
    const char *b = evmux_loop_backend(loop);
    return b != NULL && strcmp(b, name) == 0;
}

/* 1 if `name` is one of the comma-separated entries of evmux_backends_available(). */
static inline int unit_backend_compiled(const char *name)
{
    const char *p = evmux_backends_available();
    size_t n = strlen(name);
    CHECK(p != NULL);
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

static inline uint64_t unit_mono_ns(void)
{
    struct timespec ts;
    CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void unit_sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A connected, non-blocking AF_UNIX stream pair. */
static inline void unit_socketpair(int sv[2])
{
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
}

static inline void unit_write_byte(int fd)
{
    CHECK(write(fd, "x", 1) == 1);
}

/* Reads until the socket would block; returns the number of bytes read
 * (0 also when the peer has closed). */
static inline size_t unit_drain(int fd)
{
    char buf[4096];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        CHECK(n == 0 || errno == EAGAIN || errno == EWOULDBLOCK);
        return total;
    }
}

static inline int unit_fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

/* Deterministic pseudo-random numbers (xorshift32) so failures reproduce. */
static inline uint32_t unit_rand(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* A guard timer: unreferenced, so it never keeps evmux_run going by itself,
 * but if the thing under test never happens it stops the loop and the test
 * sees guard.fired instead of hanging. */
struct unit_guard {
    evmux_timer timer;
    evmux_loop *loop;
    int fired;
};

static inline void unit_guard_cb(evmux_timer *t)
{
    struct unit_guard *g = (struct unit_guard *)t->handle.data;
    g->fired = 1;
    evmux_stop(g->loop);
}

static inline void unit_guard_start(evmux_loop *loop, struct unit_guard *g, uint64_t ms)
{
    memset(g, 0, sizeof *g);
    g->loop = loop;
    CHECK_OK(evmux_timer_init(loop, &g->timer, unit_guard_cb));
    g->timer.handle.data = g;
    CHECK_OK(evmux_timer_start(&g->timer, ms, 0));
    evmux_unref(&g->timer.handle);
}

static inline void unit_guard_close(struct unit_guard *g)
{
    CHECK_OK(evmux_close(&g->timer.handle, NULL));
}

#endif
