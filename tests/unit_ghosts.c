/* A descriptor closed while a dup() keeps its file alive: epoll keeps
 * reporting the old file under the old number (a "ghost"), which
 * EPOLL_CTL_DEL can no longer name. The loop must neither spin on it nor
 * hand it to a new watcher that reuses the number. Every backend must pass;
 * only epoll has ghosts to exorcise. */
#include "unit_util.h"

#include "evmux_internal.h"

static int calls;
static unsigned last_events;

static void on_io(evmux_io *io, unsigned events)
{
    (void)io;
    calls++;
    last_events = events;
}

static void on_timer(evmux_timer *t)
{
    (void)t;
}

static void test_ghost_of_dup(void)
{
    evmux_loop *loop = unit_loop_new();
    int old_pair[2];
    unit_socketpair(old_pair);
    int ghost_fd = old_pair[0];
    int keeper = dup(ghost_fd); /* keeps the file alive after close */
    CHECK(keeper >= 0);

    evmux_io old;
    CHECK_OK(evmux_io_init(loop, &old, ghost_fd, on_io));
    CHECK_OK(evmux_io_start(&old, EVMUX_READABLE));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));

    /* Stop and close in the order the API asks for, then reuse the number. */
    CHECK_OK(evmux_close(&old.handle, NULL));
    close(ghost_fd);
    int new_pair[2];
    unit_socketpair(new_pair);
    CHECK_EQ(new_pair[0], ghost_fd);
    evmux_io fresh;
    CHECK_OK(evmux_io_init(loop, &fresh, new_pair[0], on_io));
    CHECK_OK(evmux_io_start(&fresh, EVMUX_READABLE));

    /* The old file becomes readable: only the ghost could report it. */
    unit_write_byte(old_pair[1]);
    calls = 0;
    evmux_timer t;
    CHECK_OK(evmux_timer_init(loop, &t, on_timer));
    CHECK_OK(evmux_timer_start(&t, 100, 0));
    struct evmux_loop_stats before, after;
    evmux__loop_stats(loop, &before);
    while (evmux_is_active(&t.handle))
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    evmux__loop_stats(loop, &after);
    CHECK_EQ(calls, 0); /* the new watcher never hears of the old file */
    if (after.backend_waits - before.backend_waits > 20) {
        fprintf(stderr, "%llu waits in 100 ms: spinning on a ghost\n",
                (unsigned long long)(after.backend_waits - before.backend_waits));
        CHECK(0);
    }

    /* The new watcher still works. */
    unit_write_byte(new_pair[1]);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(calls, 1);
    CHECK_EQ(last_events, EVMUX_READABLE);

    CHECK_OK(evmux_close(&fresh.handle, NULL));
    CHECK_OK(evmux_close(&t.handle, NULL));
    unit_loop_finish(loop);
    close(new_pair[0]);
    close(new_pair[1]);
    close(old_pair[1]);
    close(keeper);
}

/* Stop and start again within one iteration costs no system call. */
static void test_stop_start_is_free(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    evmux_io io;
    CHECK_OK(evmux_io_init(loop, &io, sv[0], on_io));
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    struct evmux_loop_stats before, after;
    evmux__loop_stats(loop, &before);
    for (int i = 0; i < 100; i++) {
        CHECK_OK(evmux_io_stop(&io));
        CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
        CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    }
    evmux__loop_stats(loop, &after);
    CHECK_EQ(after.kernel_ctl_calls, before.kernel_ctl_calls);
    CHECK_EQ(after.interest_changes, before.interest_changes);
    /* A stop that is not undone reaches the backend before the next wait. */
    CHECK_OK(evmux_io_stop(&io));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    evmux__loop_stats(loop, &after);
    CHECK_EQ(after.interest_changes, before.interest_changes + 1);
    CHECK_OK(evmux_close(&io.handle, NULL));
    unit_loop_finish(loop);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    unit_watchdog(30);
    RUN_TEST(test_ghost_of_dup);
    RUN_TEST(test_stop_start_is_free);
    return 0;
}
