/* Cross-thread wake-ups: evmux_async and evmux_stop from other threads.
 *  - No send is ever lost: many threads send while the loop sleeps, and
 *    the loop sees the last one (a lost wake-up hangs: the watchdog fails).
 *  - Sends before the callback merge into one call; a closed handle's
 *    pending send never runs; a callback may close a handle the same scan
 *    would reach next.
 *  - Memory written before a send is seen by the callback (ThreadSanitizer
 *    checks the ordering).
 *  - evmux_stop from another thread ends a blocked evmux_run.
 *  - An async keeps the loop alive unless unreferenced.
 *  - After fork, the child's loop has its own wake-up descriptor. */
#include "unit_util.h"
#include "evmux_internal.h" /* wake_test_hook */

#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

static void merged_cb_for_hook(evmux_async *a)
{
    (void)a;
}

/* ---- many senders on two handles, no lost wake-up ---- */

#define HANDLES 2
#define SENDERS_EACH 2
#define SEND_FOR_MS 1000

struct counted {
    evmux_async async;
    atomic_int senders_finished;
    atomic_long sends;
    int calls;
};

static void *sender_main(void *arg)
{
    struct counted *c = arg;
    uint64_t until = unit_mono_ns() + SEND_FOR_MS * 1000000ull;
    unsigned spin = (unsigned)(uintptr_t)c % 31 + 7; /* the senders drift apart */
    for (long i = 0;; i++) {
        atomic_fetch_add(&c->sends, 1);
        CHECK_OK(evmux_async_send(&c->async));
        for (volatile unsigned k = 0; k < spin; k++)
            ;
        if ((i & 1023) == 0 && unit_mono_ns() > until)
            break;
    }
    /* One more send after saying so, so that a callback sees "finished". */
    atomic_fetch_add(&c->senders_finished, 1);
    CHECK_OK(evmux_async_send(&c->async));
    return NULL;
}

static void count_until_all_cb(evmux_async *async)
{
    struct counted *c = (struct counted *)async;
    c->calls++;
    if (atomic_load(&c->senders_finished) == SENDERS_EACH)
        CHECK_OK(evmux_close(&async->handle, NULL));
}

/* Two handles whose sends race with the loop's wake-ups for a second: a
 * wake-up lost between them leaves the loop asleep with sends pending for
 * good (the watchdog fails the test). The handles outlive the senders,
 * who may still be inside their last send when the callback closes. */
static void test_many_senders(void)
{
    evmux_loop *loop = unit_loop_new();
    static struct counted handles[HANDLES];
    pthread_t threads[HANDLES * SENDERS_EACH];
    for (int h = 0; h < HANDLES; h++) {
        atomic_store(&handles[h].senders_finished, 0);
        atomic_store(&handles[h].sends, 0);
        handles[h].calls = 0;
        CHECK_OK(evmux_async_init(loop, &handles[h].async, count_until_all_cb));
    }
    for (int i = 0; i < HANDLES * SENDERS_EACH; i++)
        CHECK_EQ(pthread_create(&threads[i], NULL, sender_main, &handles[i % HANDLES]), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* until both have closed */
    for (int i = 0; i < HANDLES * SENDERS_EACH; i++)
        CHECK_EQ(pthread_join(threads[i], NULL), 0);
    for (int h = 0; h < HANDLES; h++)
        CHECK(handles[h].calls >= 1);
    unit_loop_finish(loop);
}

/* ---- the same race, made certain ---- */

static evmux_async hook_target;
static int hook_calls, hooked_calls, late_calls;

static void send_from_hook(evmux_loop *loop)
{
    loop->wake_test_hook = NULL; /* once */
    hook_calls++;
    CHECK_OK(evmux_async_send(&hook_target));
}

static void hooked_cb(evmux_async *a)
{
    (void)a;
    hooked_calls++;
}

static void late_cb(evmux_async *a)
{
    late_calls++;
    CHECK_OK(evmux_close(&a->handle, NULL));
}

static void *late_sender_main(void *arg)
{
    struct timespec pause = {0, 30 * 1000 * 1000};
    nanosleep(&pause, NULL);
    CHECK_OK(evmux_async_send(arg));
    return NULL;
}

/* A send that lands between the loop's two steps of taking a wake-up must
 * neither be lost nor leave the loop deaf: a later send from another
 * thread still wakes it. (Clearing the flag before draining the
 * descriptor fails here: the drain swallows the hook's write and the flag
 * stays set, so the late send never writes.) */
static void test_send_during_wake(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_async first, late;
    pthread_t t;
    hook_calls = hooked_calls = late_calls = 0;
    CHECK_OK(evmux_async_init(loop, &first, merged_cb_for_hook));
    CHECK_OK(evmux_async_init(loop, &hook_target, hooked_cb));
    CHECK_OK(evmux_async_init(loop, &late, late_cb));
    loop->wake_test_hook = send_from_hook;
    CHECK_OK(evmux_async_send(&first));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(hook_calls, 1);
    CHECK_EQ(hooked_calls, 1); /* not lost */
    CHECK_OK(evmux_close(&first.handle, NULL));
    CHECK_OK(evmux_close(&hook_target.handle, NULL));
    CHECK_EQ(pthread_create(&t, NULL, late_sender_main, &late), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* until late_cb closes */
    CHECK_EQ(pthread_join(t, NULL), 0);
    CHECK_EQ(late_calls, 1);
    unit_loop_finish(loop);
}

/* ---- RUN_ONCE is not ended by a wake-up that ran nothing ---- */

static int once_timer_fired;

static void once_timer_cb(evmux_timer *t)
{
    (void)t;
    once_timer_fired++;
}

static void test_once_after_stop(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    once_timer_fired = 0;
    evmux_stop(loop); /* before run: the next run returns at once */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_OK(evmux_timer_init(loop, &t, once_timer_cb));
    CHECK_OK(evmux_timer_start(&t, 30, 0));
    /* ONCE waits for the timer: nothing else can end it. */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(once_timer_fired, 1);
    CHECK_OK(evmux_close(&t.handle, NULL));
    unit_loop_finish(loop);
}

/* ---- merging, close, and closing the next handle ---- */

static int merged_calls;

static void merged_cb(evmux_async *async)
{
    (void)async;
    merged_calls++;
}

static int closes;

static void close_counted(evmux_handle *h)
{
    (void)h;
    closes++;
}

static void test_merge_and_close(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_async a;
    merged_calls = 0;
    closes = 0;
    CHECK_OK(evmux_async_init(loop, &a, merged_cb));
    CHECK(evmux_is_active(&a.handle));
    CHECK_OK(evmux_async_send(&a));
    CHECK_OK(evmux_async_send(&a));
    CHECK_OK(evmux_async_send(&a));
    CHECK_EQ(merged_calls, 0); /* never inside the send */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(merged_calls, 1);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(merged_calls, 1);

    /* A send then a close: the callback never runs, close_cb once. */
    CHECK_OK(evmux_async_send(&a));
    CHECK_OK(evmux_close(&a.handle, close_counted));
    CHECK_EQ(evmux_close(&a.handle, close_counted), -EALREADY);
    unit_loop_finish(loop);
    CHECK_EQ(merged_calls, 1);
    CHECK_EQ(closes, 1);
}

static evmux_async pair[2];
static int pair_calls;

static void close_the_other_cb(evmux_async *async)
{
    pair_calls++;
    evmux_async *other = async == &pair[0] ? &pair[1] : &pair[0];
    CHECK_OK(evmux_close(&other->handle, close_counted));
    CHECK_OK(evmux_close(&async->handle, close_counted));
}

/* Whichever runs first closes the other, which then must not run although
 * its send was pending in the same scan. */
static void test_close_next_in_scan(void)
{
    evmux_loop *loop = unit_loop_new();
    pair_calls = 0;
    closes = 0;
    CHECK_OK(evmux_async_init(loop, &pair[0], close_the_other_cb));
    CHECK_OK(evmux_async_init(loop, &pair[1], close_the_other_cb));
    CHECK_OK(evmux_async_send(&pair[0]));
    CHECK_OK(evmux_async_send(&pair[1]));
    unit_loop_finish(loop);
    CHECK_EQ(pair_calls, 1);
    CHECK_EQ(closes, 2);
}

/* ---- memory ordering ---- */

struct handoff {
    evmux_async async;
    long payload[64]; /* plain memory, written by the sender only */
    long sum_seen;
};

static void *handoff_main(void *arg)
{
    struct handoff *h = arg;
    for (int i = 0; i < 64; i++)
        h->payload[i] = i + 1;
    CHECK_OK(evmux_async_send(&h->async));
    return NULL;
}

static void handoff_cb(evmux_async *async)
{
    struct handoff *h = (struct handoff *)async;
    for (int i = 0; i < 64; i++)
        h->sum_seen += h->payload[i];
    CHECK_OK(evmux_close(&async->handle, NULL));
}

static void test_send_publishes_memory(void)
{
    evmux_loop *loop = unit_loop_new();
    static struct handoff h;
    pthread_t t;
    memset(&h, 0, sizeof h);
    CHECK_OK(evmux_async_init(loop, &h.async, handoff_cb));
    CHECK_EQ(pthread_create(&t, NULL, handoff_main, &h), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(pthread_join(t, NULL), 0);
    CHECK_EQ(h.sum_seen, 64 * 65 / 2);
    unit_loop_finish(loop);
}

/* ---- stop from another thread ---- */

static void *stopper_main(void *arg)
{
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    evmux_stop(arg);
    return NULL;
}

static void never_cb(evmux_async *async)
{
    (void)async;
    CHECK(!"an async nobody sent ran");
}

static void test_stop_from_thread(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_async keep_alive;
    pthread_t t;
    CHECK_OK(evmux_async_init(loop, &keep_alive, never_cb));
    CHECK_EQ(pthread_create(&t, NULL, stopper_main, loop), 0);
    /* Blocks with no timer: only the stop's wake-up can end it. */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(pthread_join(t, NULL), 0);
    CHECK_EQ(evmux_loop_alive(loop), 1);
    CHECK_OK(evmux_close(&keep_alive.handle, NULL));
    unit_loop_finish(loop);
}

/* ---- references ---- */

static void test_unref(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_async a;
    CHECK_OK(evmux_async_init(loop, &a, never_cb));
    CHECK_EQ(evmux_loop_alive(loop), 1);
    evmux_unref(&a.handle);
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* returns at once */
    CHECK_EQ(evmux_loop_free(loop), -EBUSY);      /* still open */
    CHECK_OK(evmux_close(&a.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(evmux_async_init(NULL, &a, never_cb), -EINVAL);
    CHECK_EQ(evmux_async_send(NULL), -EINVAL);
}

/* ---- fork ---- */

static int fork_calls;

static void fork_cb(evmux_async *async)
{
    fork_calls++;
    CHECK_OK(evmux_close(&async->handle, NULL));
}

/* A send pending at the fork reaches both loops. The parent's loop runs
 * first and drains its wake-up descriptor; had the child kept that shared
 * descriptor, its loop would then sleep forever (the watchdog fails). */
static void test_fork(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_async a;
    int go[2];
    fork_calls = 0;
    CHECK_EQ(pipe(go), 0);
    CHECK_OK(evmux_async_init(loop, &a, fork_cb));
    CHECK_OK(evmux_async_send(&a));
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char byte;
        close(go[1]);
        CHECK_EQ(read(go[0], &byte, 1), 1); /* the parent has run its loop */
        CHECK_OK(evmux_loop_fork(loop));
        CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
        CHECK_EQ(fork_calls, 1);
        CHECK_OK(evmux_loop_free(loop));
        _exit(0);
    }
    close(go[0]);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(fork_calls, 1);
    CHECK_EQ(write(go[1], "g", 1), 1);
    close(go[1]);
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    unit_loop_finish(loop);
}

int main(void)
{
    unit_watchdog(60);
    RUN_TEST(test_many_senders);
    RUN_TEST(test_once_after_stop);
    RUN_TEST(test_send_during_wake);
    RUN_TEST(test_merge_and_close);
    RUN_TEST(test_close_next_in_scan);
    RUN_TEST(test_send_publishes_memory);
    RUN_TEST(test_stop_from_thread);
    RUN_TEST(test_unref);
    RUN_TEST(test_fork);
    return 0;
}
