/* An allocation that fails inside the loop never loses an event silently.
 * Once handles are set up, every malloc, calloc and realloc fails (this
 * executable is linked with --wrap for the three), and the loop must go on
 * delivering: 100 level-triggered watchers fire on every iteration, and a
 * wake-up sent each iteration is delivered each time. On io_uring, a fired
 * one-shot poll used to need a realloc to be re-armed; when it failed, the
 * watcher (the loop's own wake-up watcher among them) never fired again and
 * nobody was told. */
#include "unit_util.h"

#include <stdbool.h>
#include <sys/socket.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);

static bool fail_allocations;
static unsigned long refused;

void *__wrap_malloc(size_t n)
{
    if (fail_allocations) {
        refused++;
        return NULL;
    }
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    if (fail_allocations) {
        refused++;
        return NULL;
    }
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    if (fail_allocations) {
        refused++;
        return NULL;
    }
    return __real_realloc(p, n);
}

enum { WATCHERS = 100, ROUNDS = 5 };

struct counted {
    evmux_io io;
    int calls;
};

static struct counted watchers[WATCHERS];
static int pairs[WATCHERS][2];
static int wakeups;

static void on_readable(evmux_io *io, unsigned events)
{
    CHECK(events & EVMUX_READABLE);
    ((struct counted *)io)->calls++; /* the byte stays: fires again next time */
}

static void on_wakeup(evmux_async *a)
{
    (void)a;
    wakeups++;
}

static void test_events_survive_failed_allocations(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_async async;
    CHECK_OK(evmux_async_init(loop, &async, on_wakeup));
    for (int i = 0; i < WATCHERS; i++) {
        unit_socketpair(pairs[i]);
        unit_write_byte(pairs[i][1]);
        CHECK_OK(evmux_io_init(loop, &watchers[i].io, pairs[i][0], on_readable));
    }
    /* A few iterations with allocations allowed and a few watchers, as a
     * program's first ones are; then the rest start (allocations still
     * allowed, so a start that must reserve can), one more iteration
     * lets epoll grow its event array after a wait that filled it, and
     * the failures begin. */
    for (int i = 0; i < 10; i++)
        CHECK_OK(evmux_io_start(&watchers[i].io, EVMUX_READABLE));
    CHECK_OK(evmux_async_send(&async));
    for (int i = 0; i < 3; i++)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(wakeups, 1);
    for (int i = 10; i < WATCHERS; i++)
        CHECK_OK(evmux_io_start(&watchers[i].io, EVMUX_READABLE));
    if (!unit_backend_is(loop, "uring")) /* uring: this would fill its re-arm list now */
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    wakeups = 0;
    for (int i = 0; i < WATCHERS; i++)
        watchers[i].calls = 0;

    fail_allocations = true;
    for (int round = 1; round <= ROUNDS; round++) {
        CHECK_OK(evmux_async_send(&async));
        /* ONCE blocks until something happens: every watcher is ready, so
         * it returns after one iteration, and that iteration must also
         * see the wake-up. */
        int rc = evmux_run(loop, EVMUX_RUN_ONCE);
        CHECK(rc == 0 || rc == -ENOMEM);
        if (rc == -ENOMEM) /* surfaced, not lost: the next run retries */
            CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
        CHECK_EQ(wakeups, round);
        for (int i = 0; i < WATCHERS; i++)
            CHECK_EQ(watchers[i].calls, round);
    }
    fail_allocations = false;
    fprintf(stderr, "   %lu allocations refused meanwhile\n", refused);

    for (int i = 0; i < WATCHERS; i++) {
        CHECK_OK(evmux_close(&watchers[i].io.handle, NULL));
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
    CHECK_OK(evmux_close(&async.handle, NULL));
    unit_loop_finish(loop);
}

int main(void)
{
    unit_watchdog(60);
    RUN_TEST(test_events_survive_failed_allocations);
    return 0;
}
