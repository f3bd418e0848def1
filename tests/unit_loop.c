/* Loop life cycle: backend choice, freeing, run modes, stop, ref/unref,
 * error strings and the cached clock. */
#include "unit_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int counter_fired;

static void counting_timer_cb(evmux_timer *t)
{
    (void)t;
    counter_fired++;
}

static void test_backend_from_env(void)
{
    const char *env = getenv("EVMUX_BACKEND");
    evmux_loop *loop = unit_loop_new();
    const char *name = evmux_loop_backend(loop);

    CHECK(name != NULL);
    CHECK(unit_backend_compiled(name));
    if (env && *env && strcmp(env, "auto") != 0)
        CHECK(strcmp(name, env) == 0);
    unit_loop_finish(loop);

    /* "auto" means the same as NULL options. */
    evmux_loop_options opts = { .backend = "auto" };
    CHECK_OK(evmux_loop_new(&loop, &opts));
    CHECK(strcmp(evmux_loop_backend(loop), name) == 0);
    unit_loop_finish(loop);

    opts.backend = NULL;
    CHECK_OK(evmux_loop_new(&loop, &opts));
    CHECK(strcmp(evmux_loop_backend(loop), name) == 0);
    unit_loop_finish(loop);
}

/* Without EVMUX_BACKEND, "auto" takes the most preferred backend that
 * starts; on Linux every compiled backend starts, so that is the first. */
static void test_auto_without_env(void)
{
    const char *env = getenv("EVMUX_BACKEND");
    char *saved = env ? strdup(env) : NULL;
    const char *avail = evmux_backends_available();
    size_t first_len = strcspn(avail, ",");
    evmux_loop *loop = NULL;
    evmux_loop_options opts = { .backend = "auto" };

    CHECK(first_len > 0);
    CHECK_OK(unsetenv("EVMUX_BACKEND"));
    CHECK_OK(evmux_loop_new(&loop, &opts));
    CHECK_EQ(strlen(evmux_loop_backend(loop)), first_len);
    CHECK(strncmp(evmux_loop_backend(loop), avail, first_len) == 0);
    unit_loop_finish(loop);

    if (saved) {
        CHECK_OK(setenv("EVMUX_BACKEND", saved, 1));
        free(saved);
    }
}

static int smoke_io_events;

static void smoke_io_cb(evmux_io *io, unsigned events)
{
    smoke_io_events = (int)events;
    unit_drain(evmux_io_fd(io));
    CHECK_OK(evmux_io_stop(io));
}

/* A named backend overrides EVMUX_BACKEND, and really does I/O and timers. */
static void test_explicit_backends(void)
{
    static const char *const names[] = { "select", "poll", "epoll", "uring" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        evmux_loop_options opts = { .backend = names[i] };
        evmux_loop *loop = NULL;
        int rc = evmux_loop_new(&loop, &opts);
        if (!unit_backend_compiled(names[i])) {
            CHECK_EQ(rc, -ENOSYS);
            CHECK(loop == NULL);
            continue;
        }
        CHECK_OK(rc);
        CHECK(strcmp(evmux_loop_backend(loop), names[i]) == 0);

        int sv[2];
        evmux_io io;
        evmux_timer t;
        unit_socketpair(sv);
        unit_write_byte(sv[1]);
        smoke_io_events = 0;
        counter_fired = 0;
        CHECK_OK(evmux_io_init(loop, &io, sv[0], smoke_io_cb));
        CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
        CHECK_OK(evmux_timer_init(loop, &t, counting_timer_cb));
        CHECK_OK(evmux_timer_start(&t, 5, 0));
        CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
        CHECK_EQ(smoke_io_events, EVMUX_READABLE);
        CHECK_EQ(counter_fired, 1);
        CHECK_OK(evmux_close(&io.handle, NULL));
        CHECK_OK(evmux_close(&t.handle, NULL));
        unit_loop_finish(loop);
        close(sv[0]);
        close(sv[1]);
    }
}

static void test_unknown_backend(void)
{
    static const char *const bad[] = { "bogus", "EPOLL ", "selectx" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        evmux_loop_options opts = { .backend = bad[i] };
        evmux_loop *sentinel = (evmux_loop *)&opts;
        evmux_loop *loop = sentinel;
        CHECK_EQ(evmux_loop_new(&loop, &opts), -EINVAL);
        CHECK(loop == sentinel || loop == NULL);
    }

    /* No kqueue backend exists: the name is unknown, not merely absent
     * from this build. A backend evmux has elsewhere (uring without
     * liburing) is -ENOSYS. */
    evmux_loop_options opts = { .backend = "kqueue" };
    evmux_loop *sentinel = (evmux_loop *)&opts;
    evmux_loop *loop = sentinel;
    CHECK_EQ(evmux_loop_new(&loop, &opts), -EINVAL);
    CHECK(loop == sentinel || loop == NULL);
    if (!unit_backend_compiled("uring")) {
        opts.backend = "uring";
        CHECK_EQ(evmux_loop_new(&loop, &opts), -ENOSYS);
    }
}

static void test_free_busy_with_open_handle(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    evmux_io io;
    int sv[2];

    /* Initialised but never started still counts as open. */
    CHECK_OK(evmux_timer_init(loop, &t, counting_timer_cb));
    CHECK_EQ(evmux_loop_free(loop), -EBUSY);

    /* The refused free left the loop usable. */
    counter_fired = 0;
    CHECK_OK(evmux_timer_start(&t, 1, 0));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(counter_fired, 1);
    CHECK_EQ(evmux_loop_free(loop), -EBUSY);

    /* An io watcher counts too. */
    unit_socketpair(sv);
    CHECK_OK(evmux_io_init(loop, &io, sv[0], smoke_io_cb));
    CHECK_OK(evmux_close(&t.handle, NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(evmux_loop_free(loop), -EBUSY);

    CHECK_OK(evmux_close(&io.handle, NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_OK(evmux_loop_free(loop));
    close(sv[0]);
    close(sv[1]);
}

static void test_run_default_empty(void)
{
    evmux_loop *loop = unit_loop_new();
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_loop_free(loop));
}

static void test_run_nowait(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    counter_fired = 0;
    CHECK_OK(evmux_timer_init(loop, &t, counting_timer_cb));
    CHECK_OK(evmux_timer_start(&t, 10000, 0));

    uint64_t t0 = unit_mono_ns();
    for (int i = 0; i < 3; i++)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    /* Generous bound: only catches a NOWAIT that waited for the timer. */
    CHECK(unit_mono_ns() - t0 < 5000000000ull);
    CHECK_EQ(counter_fired, 0);
    CHECK_EQ(evmux_loop_alive(loop), 1);
    CHECK_EQ(evmux_is_active(&t.handle), 1);

    CHECK_OK(evmux_close(&t.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(counter_fired, 0);
}

static void test_run_once_blocks(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    counter_fired = 0;
    CHECK_OK(evmux_timer_init(loop, &t, counting_timer_cb));
    evmux_update_time(loop);
    uint64_t t0 = unit_mono_ns();
    CHECK_OK(evmux_timer_start(&t, 20, 0));

    /* A single ONCE must wait for the timer and run it, not return early
     * because the backend's timeout expired a little before the deadline. */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(counter_fired, 1);
    CHECK(unit_mono_ns() - t0 >= 20000000ull);
    CHECK_EQ(evmux_is_active(&t.handle), 0);
    CHECK_EQ(evmux_loop_alive(loop), 0);

    CHECK_OK(evmux_close(&t.handle, NULL));
    unit_loop_finish(loop);
}

static evmux_loop *stop_loop;
static int stop_at;

static void stopping_timer_cb(evmux_timer *t)
{
    counter_fired++;
    if (counter_fired == stop_at)
        evmux_stop(stop_loop);
    if (counter_fired == 6)
        CHECK_OK(evmux_timer_stop(t));
}

static int peer_fired;

static void peer_timer_cb(evmux_timer *t)
{
    (void)t;
    peer_fired++;
}

static void test_stop(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t, peer;
    stop_loop = loop;
    stop_at = 3;
    counter_fired = 0;
    CHECK_OK(evmux_timer_init(loop, &t, stopping_timer_cb));
    CHECK_OK(evmux_timer_start(&t, 1, 1));

    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(counter_fired, 3);
    CHECK_EQ(evmux_is_active(&t.handle), 1);
    CHECK_EQ(evmux_loop_alive(loop), 1);

    /* The stop request was consumed: the next run goes on until the
     * callback stops the timer at 6. */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(counter_fired, 6);
    CHECK_EQ(evmux_loop_alive(loop), 0);

    /* evmux_stop ends the run after the current iteration: a timer due in
     * the same iteration (same deadline, started later) still runs. */
    counter_fired = 0;
    stop_at = 1;
    peer_fired = 0;
    CHECK_OK(evmux_timer_init(loop, &peer, peer_timer_cb));
    CHECK_OK(evmux_timer_start(&t, 5, 0));
    CHECK_OK(evmux_timer_start(&peer, 5, 0));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(counter_fired, 1);
    CHECK_EQ(peer_fired, 1);

    CHECK_OK(evmux_close(&t.handle, NULL));
    CHECK_OK(evmux_close(&peer.handle, NULL));
    unit_loop_finish(loop);
}

static void test_ref_unref(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t, keeper;
    counter_fired = 0;
    CHECK_OK(evmux_timer_init(loop, &t, counting_timer_cb));
    CHECK_OK(evmux_timer_start(&t, 10000, 0));
    CHECK_EQ(evmux_loop_alive(loop), 1);
    evmux_unref(&t.handle);
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_EQ(evmux_is_active(&t.handle), 1);

    uint64_t t0 = unit_mono_ns();
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK(unit_mono_ns() - t0 < 5000000000ull);
    CHECK_EQ(counter_fired, 0);
    CHECK_EQ(evmux_is_active(&t.handle), 1);

    /* ref/unref are a flag, not a counter. */
    evmux_unref(&t.handle);
    evmux_ref(&t.handle);
    CHECK_EQ(evmux_loop_alive(loop), 1);
    evmux_ref(&t.handle);
    evmux_unref(&t.handle);
    CHECK_EQ(evmux_loop_alive(loop), 0);

    /* Stopping an unreferenced timer must not upset the accounting, and a
     * stopped referenced handle does not count. */
    CHECK_OK(evmux_timer_stop(&t));
    CHECK_EQ(evmux_loop_alive(loop), 0);
    evmux_ref(&t.handle);
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_timer_start(&t, 10000, 0));
    CHECK_EQ(evmux_loop_alive(loop), 1);
    CHECK_OK(evmux_timer_stop(&t));
    CHECK_EQ(evmux_loop_alive(loop), 0);

    /* An unreferenced timer still fires while a referenced one keeps the
     * loop running. */
    CHECK_OK(evmux_timer_init(loop, &keeper, peer_timer_cb));
    peer_fired = 0;
    CHECK_OK(evmux_timer_start(&t, 2, 0));
    evmux_unref(&t.handle);
    CHECK_OK(evmux_timer_start(&keeper, 30, 0));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(counter_fired, 1);
    CHECK_EQ(peer_fired, 1);

    CHECK_OK(evmux_close(&t.handle, NULL));
    CHECK_OK(evmux_close(&keeper.handle, NULL));
    unit_loop_finish(loop);
}

static void test_strerror(void)
{
    static const int codes[] = { 0,        -EINVAL,   -ENOMEM, -EEXIST, -ERANGE,
                                 -EBUSY,   -EALREADY, -ENOSYS, -EBADF,  -EPERM,
                                 -ECANCELED };
    const size_t n = sizeof codes / sizeof codes[0];
    const char *s[sizeof codes / sizeof codes[0]];

    for (size_t i = 0; i < n; i++) {
        s[i] = evmux_strerror(codes[i]);
        CHECK(s[i] != NULL);
        CHECK(s[i][0] != '\0');
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(s[i], s[j]) == 0) {
                fprintf(stderr, "codes %d and %d share \"%s\"\n", codes[i], codes[j], s[i]);
                CHECK(!"distinct strings");
            }

    /* Unknown or positive values still get a string. */
    CHECK(evmux_strerror(-123456) != NULL);
    CHECK(evmux_strerror(123456) != NULL);
    CHECK(evmux_strerror(-2147483647 - 1) != NULL);
}

static void test_now(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;

    uint64_t prev = evmux_now(loop);
    for (int i = 0; i < 1000; i++) {
        evmux_update_time(loop);
        uint64_t cur = evmux_now(loop);
        CHECK(cur >= prev);
        prev = cur;
    }

    /* The cached time is not re-read on its own. */
    uint64_t cached = evmux_now(loop);
    unit_sleep_ms(3);
    CHECK_EQ(evmux_now(loop), cached);
    evmux_update_time(loop);
    CHECK(evmux_now(loop) >= cached + 3);

    /* A run that waited advances it by at least the wait. */
    counter_fired = 0;
    CHECK_OK(evmux_timer_init(loop, &t, counting_timer_cb));
    evmux_update_time(loop);
    uint64_t before = evmux_now(loop);
    CHECK_OK(evmux_timer_start(&t, 30, 0));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(counter_fired, 1);
    CHECK(evmux_now(loop) >= before + 30);

    CHECK_OK(evmux_close(&t.handle, NULL));
    unit_loop_finish(loop);
}

int main(void)
{
    unit_watchdog(30);
    RUN_TEST(test_backend_from_env);
    RUN_TEST(test_auto_without_env);
    RUN_TEST(test_explicit_backends);
    RUN_TEST(test_unknown_backend);
    RUN_TEST(test_free_busy_with_open_handle);
    RUN_TEST(test_run_default_empty);
    RUN_TEST(test_run_nowait);
    RUN_TEST(test_run_once_blocks);
    RUN_TEST(test_stop);
    RUN_TEST(test_ref_unref);
    RUN_TEST(test_strerror);
    RUN_TEST(test_now);
    return 0;
}
