/* Signals as loop callbacks (evmux_signal):
 *  - a raised signal calls its handle once, from the loop, never inside
 *    the handler; arrivals before the callback merge into one call;
 *  - only the handles of that signal are called; two loops watching one
 *    signal are both called;
 *  - a signal handled on another thread wakes a blocked loop;
 *  - a stopped or closed handle is not called, even with its signal
 *    already counted; a callback may stop the next handle;
 *  - the disposition before the first start is back after the last stop;
 *  - SIGKILL, SIGSTOP and out-of-range numbers are -EINVAL. */
#include "unit_util.h"

#include <pthread.h>

static int calls_usr1, calls_usr2, last_signum;

static void on_usr1(evmux_signal *s, int signum)
{
    (void)s;
    calls_usr1++;
    last_signum = signum;
}

static void on_usr2(evmux_signal *s, int signum)
{
    (void)s;
    (void)signum;
    calls_usr2++;
}

static void test_raise_and_merge(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_signal a, b, c;
    calls_usr1 = calls_usr2 = last_signum = 0;
    CHECK_OK(evmux_signal_init(loop, &a));
    CHECK_OK(evmux_signal_init(loop, &b));
    CHECK_OK(evmux_signal_init(loop, &c));
    CHECK_OK(evmux_signal_start(&a, on_usr1, SIGUSR1));
    CHECK_OK(evmux_signal_start(&b, on_usr1, SIGUSR1));
    CHECK_OK(evmux_signal_start(&c, on_usr2, SIGUSR2));
    CHECK(evmux_is_active(&a.handle));

    CHECK_EQ(raise(SIGUSR1), 0);
    CHECK_EQ(raise(SIGUSR1), 0);
    CHECK_EQ(calls_usr1, 0); /* only from the loop */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(calls_usr1, 2); /* each handle once: the two arrivals merged */
    CHECK_EQ(last_signum, SIGUSR1);
    CHECK_EQ(calls_usr2, 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(calls_usr1, 2);

    CHECK_EQ(raise(SIGUSR2), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(calls_usr2, 1);
    CHECK_EQ(calls_usr1, 2);

    /* Stopped with its signal already counted: not called. */
    CHECK_EQ(raise(SIGUSR1), 0);
    CHECK_OK(evmux_signal_stop(&a));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(calls_usr1, 3); /* b only */

    CHECK_OK(evmux_close(&a.handle, NULL));
    CHECK_OK(evmux_close(&b.handle, NULL));
    CHECK_OK(evmux_close(&c.handle, NULL));
    unit_loop_finish(loop);
}

static void test_two_loops(void)
{
    evmux_loop *one = unit_loop_new(), *two = unit_loop_new();
    evmux_signal a, b;
    calls_usr1 = 0;
    CHECK_OK(evmux_signal_init(one, &a));
    CHECK_OK(evmux_signal_init(two, &b));
    CHECK_OK(evmux_signal_start(&a, on_usr1, SIGUSR1));
    CHECK_OK(evmux_signal_start(&b, on_usr1, SIGUSR1));
    CHECK_EQ(raise(SIGUSR1), 0);
    CHECK_OK(evmux_run(one, EVMUX_RUN_ONCE));
    CHECK_EQ(calls_usr1, 1);
    CHECK_OK(evmux_run(two, EVMUX_RUN_ONCE));
    CHECK_EQ(calls_usr1, 2);
    CHECK_OK(evmux_close(&a.handle, NULL));
    CHECK_OK(evmux_close(&b.handle, NULL));
    unit_loop_finish(one);
    unit_loop_finish(two);
}

/* ---- from another thread, while the loop blocks ---- */

static void *killer_main(void *arg)
{
    (void)arg;
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    /* Taken by this thread, so the handler runs off the loop's thread.
     * (kill() would let the kernel pick the loop's thread, blocked in its
     * wait; ThreadSanitizer then defers the handler until an intercepted
     * call, which io_uring_enter is not, and the test would hang there.) */
    pthread_kill(pthread_self(), SIGUSR2);
    return NULL;
}

static void close_on_signal(evmux_signal *s, int signum)
{
    CHECK_EQ(signum, SIGUSR2);
    calls_usr2++;
    CHECK_OK(evmux_close(&s->handle, NULL));
}

static void test_from_another_thread(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_signal s;
    pthread_t t;
    calls_usr2 = 0;
    CHECK_OK(evmux_signal_init(loop, &s));
    CHECK_OK(evmux_signal_start(&s, close_on_signal, SIGUSR2));
    CHECK_EQ(pthread_create(&t, NULL, killer_main, NULL), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* ends when the callback closes s */
    CHECK_EQ(pthread_join(t, NULL), 0);
    CHECK_EQ(calls_usr2, 1);
    unit_loop_finish(loop);
}

/* ---- a callback stops the next handle ---- */

static evmux_signal pair[2];
static int pair_calls;

static void stop_the_other(evmux_signal *s, int signum)
{
    (void)signum;
    pair_calls++;
    CHECK_OK(evmux_signal_stop(s == &pair[0] ? &pair[1] : &pair[0]));
}

static void test_stop_next_in_dispatch(void)
{
    evmux_loop *loop = unit_loop_new();
    pair_calls = 0;
    CHECK_OK(evmux_signal_init(loop, &pair[0]));
    CHECK_OK(evmux_signal_init(loop, &pair[1]));
    CHECK_OK(evmux_signal_start(&pair[0], stop_the_other, SIGUSR1));
    CHECK_OK(evmux_signal_start(&pair[1], stop_the_other, SIGUSR1));
    CHECK_EQ(raise(SIGUSR1), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(pair_calls, 1);
    CHECK_OK(evmux_close(&pair[0].handle, NULL));
    CHECK_OK(evmux_close(&pair[1].handle, NULL));
    unit_loop_finish(loop);
}

/* ---- dispositions and bad input ---- */

static volatile sig_atomic_t own_handler_calls;

static void own_handler(int signum)
{
    (void)signum;
    own_handler_calls++;
}

static void test_disposition_restored(void)
{
    struct sigaction sa, now;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = own_handler;
    sigemptyset(&sa.sa_mask);
    CHECK_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
    own_handler_calls = 0;
    calls_usr1 = 0;

    evmux_loop *loop = unit_loop_new();
    evmux_signal a, b;
    CHECK_OK(evmux_signal_init(loop, &a));
    CHECK_OK(evmux_signal_init(loop, &b));
    CHECK_OK(evmux_signal_start(&a, on_usr1, SIGUSR1));
    CHECK_OK(evmux_signal_start(&b, on_usr1, SIGUSR1));
    CHECK_EQ(raise(SIGUSR1), 0);
    CHECK_EQ(own_handler_calls, 0); /* evmux's handler took it */
    CHECK_OK(evmux_signal_stop(&a));
    CHECK_EQ(sigaction(SIGUSR1, NULL, &now), 0);
    CHECK(now.sa_handler != own_handler); /* b still watches */
    CHECK_OK(evmux_close(&b.handle, NULL));
    CHECK_EQ(sigaction(SIGUSR1, NULL, &now), 0);
    CHECK(now.sa_handler == own_handler);
    CHECK_EQ(raise(SIGUSR1), 0);
    CHECK_EQ(own_handler_calls, 1);
    CHECK_OK(evmux_close(&a.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(calls_usr1, 0); /* b was closed before the loop ran */
    signal(SIGUSR1, SIG_DFL);
}

static void test_bad_input(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_signal s;
    CHECK_OK(evmux_signal_init(loop, &s));
    CHECK_EQ(evmux_signal_start(&s, on_usr1, SIGKILL), -EINVAL);
    CHECK_EQ(evmux_signal_start(&s, on_usr1, SIGSTOP), -EINVAL);
    CHECK_EQ(evmux_signal_start(&s, on_usr1, 0), -EINVAL);
    CHECK_EQ(evmux_signal_start(&s, on_usr1, 65), -EINVAL);
    CHECK_EQ(evmux_signal_start(&s, NULL, SIGUSR1), -EINVAL);
    CHECK(!evmux_is_active(&s.handle));
    CHECK_EQ(evmux_loop_alive(loop), 0);
    /* Started, it keeps the loop alive unless unreferenced. */
    CHECK_OK(evmux_signal_start(&s, on_usr1, SIGUSR2));
    CHECK_EQ(evmux_loop_alive(loop), 1);
    evmux_unref(&s.handle);
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_close(&s.handle, NULL));
    CHECK_EQ(evmux_signal_start(&s, on_usr1, SIGUSR1), -EINVAL); /* closing */
    unit_loop_finish(loop);
}

int main(void)
{
    unit_watchdog(60);
    RUN_TEST(test_raise_and_merge);
    RUN_TEST(test_two_loops);
    RUN_TEST(test_from_another_thread);
    RUN_TEST(test_stop_next_in_dispatch);
    RUN_TEST(test_disposition_restored);
    RUN_TEST(test_bad_input);
    return 0;
}
