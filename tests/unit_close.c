/* Closing handles: the close callback runs exactly once, later, from the
 * loop; memory may be freed there; closed handles never call back. */
#include "unit_util.h"

#include <errno.h>
#include <stdlib.h>

static int close_calls;
static evmux_handle *last_closed;

static void count_close_cb(evmux_handle *h)
{
    close_calls++;
    last_closed = h;
}

/* Handles on the heap whose memory is released in the close callback:
 * AddressSanitizer reports any later touch by the loop. */
struct heap_timer {
    evmux_timer t;
    int *freed;
};

struct heap_io {
    evmux_io io;
    int *freed;
};

static void free_timer_close_cb(evmux_handle *h)
{
    struct heap_timer *ht = (struct heap_timer *)h->data;
    CHECK(&ht->t.handle == h);
    CHECK_EQ(evmux_is_closing(h), 1);
    (*ht->freed)++;
    free(ht);
}

static void free_io_close_cb(evmux_handle *h)
{
    struct heap_io *hi = (struct heap_io *)h->data;
    CHECK(&hi->io.handle == h);
    (*hi->freed)++;
    free(hi);
}

static int timer_calls;

static void count_timer_cb(evmux_timer *t)
{
    (void)t;
    timer_calls++;
}

static int io_calls;

static void count_io_cb(evmux_io *io, unsigned events)
{
    (void)io;
    (void)events;
    io_calls++;
}

/* Closes the handle in data from inside a callback and checks that its close
 * callback did not run synchronously. */
static int closer_saw_sync;

static void closer_timer_cb(evmux_timer *t)
{
    struct heap_timer *victim = (struct heap_timer *)t->handle.data;
    int before = *victim->freed;
    CHECK_OK(evmux_close(&victim->t.handle, free_timer_close_cb));
    if (*victim->freed != before)
        closer_saw_sync = 1;
    /* Still ours until the close callback runs. */
    CHECK_EQ(evmux_is_closing(&victim->t.handle), 1);
}

static void test_close_cb_runs_later_once(void)
{
    evmux_loop *loop = unit_loop_new();
    int freed = 0;

    /* Closed outside of a run. */
    struct heap_timer *ht = malloc(sizeof *ht);
    CHECK(ht != NULL);
    ht->freed = &freed;
    CHECK_OK(evmux_timer_init(loop, &ht->t, count_timer_cb));
    ht->t.handle.data = ht;
    CHECK_OK(evmux_timer_start(&ht->t, 1000, 0));
    CHECK_OK(evmux_close(&ht->t.handle, free_timer_close_cb));
    CHECK_EQ(freed, 0);
    CHECK_EQ(evmux_loop_alive(loop), 1); /* a close callback is pending */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(freed, 1);
    CHECK_EQ(evmux_loop_alive(loop), 0);

    /* Closed from inside another handle's callback. */
    evmux_timer closer;
    ht = malloc(sizeof *ht);
    CHECK(ht != NULL);
    ht->freed = &freed;
    CHECK_OK(evmux_timer_init(loop, &ht->t, count_timer_cb));
    ht->t.handle.data = ht;
    CHECK_OK(evmux_timer_start(&ht->t, 1000, 0));
    CHECK_OK(evmux_timer_init(loop, &closer, closer_timer_cb));
    closer.handle.data = ht;
    CHECK_OK(evmux_timer_start(&closer, 1, 0));
    closer_saw_sync = 0;
    timer_calls = 0;
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(closer_saw_sync, 0);
    CHECK_EQ(freed, 2);
    CHECK_EQ(timer_calls, 0);

    CHECK_OK(evmux_close(&closer.handle, NULL));
    unit_loop_finish(loop);
}

/* Many heap handles closed together, each freed in its callback: the loop
 * must not follow links out of a handle after its close callback. */
static void test_close_many_freed_in_cb(void)
{
    enum { N = 64 };
    evmux_loop *loop = unit_loop_new();
    int tfreed = 0, ifreed = 0;
    int sv[N][2];

    for (int i = 0; i < N; i++) {
        struct heap_timer *ht = malloc(sizeof *ht);
        struct heap_io *hi = malloc(sizeof *hi);
        CHECK(ht && hi);
        ht->freed = &tfreed;
        hi->freed = &ifreed;
        CHECK_OK(evmux_timer_init(loop, &ht->t, count_timer_cb));
        ht->t.handle.data = ht;
        CHECK_OK(evmux_timer_start(&ht->t, (uint64_t)(i % 5), 0));
        unit_socketpair(sv[i]);
        unit_write_byte(sv[i][1]);
        CHECK_OK(evmux_io_init(loop, &hi->io, sv[i][0], count_io_cb));
        hi->io.handle.data = hi;
        CHECK_OK(evmux_io_start(&hi->io, EVMUX_READABLE));
        CHECK_OK(evmux_close(&ht->t.handle, free_timer_close_cb));
        CHECK_OK(evmux_close(&hi->io.handle, free_io_close_cb));
    }
    timer_calls = 0;
    io_calls = 0;
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(tfreed, N);
    CHECK_EQ(ifreed, N);
    CHECK_EQ(timer_calls, 0);
    CHECK_EQ(io_calls, 0);
    /* More iterations must not touch the freed handles. */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_OK(evmux_loop_free(loop));
    for (int i = 0; i < N; i++) {
        close(sv[i][0]);
        close(sv[i][1]);
    }
}

static void test_close_twice(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    evmux_io io;
    int sv[2];
    unit_socketpair(sv);

    close_calls = 0;
    CHECK_OK(evmux_timer_init(loop, &t, count_timer_cb));
    CHECK_OK(evmux_close(&t.handle, count_close_cb));
    CHECK_EQ(evmux_close(&t.handle, count_close_cb), -EALREADY);
    CHECK_EQ(evmux_close(&t.handle, NULL), -EALREADY);
    CHECK_OK(evmux_io_init(loop, &io, sv[0], count_io_cb));
    CHECK_OK(evmux_close(&io.handle, count_close_cb));
    CHECK_EQ(evmux_close(&io.handle, count_close_cb), -EALREADY);
    CHECK_EQ(close_calls, 0);

    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(close_calls, 2);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(close_calls, 2);

    /* Still refused once the close has completed. */
    CHECK_EQ(evmux_close(&t.handle, count_close_cb), -EALREADY);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(close_calls, 2);
    CHECK_OK(evmux_loop_free(loop));
    close(sv[0]);
    close(sv[1]);
}

static void test_close_active_io(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_io io, io2;
    int sv[2];
    unit_socketpair(sv);
    unit_write_byte(sv[1]); /* readable from here on: never read */

    io_calls = 0;
    close_calls = 0;
    CHECK_OK(evmux_io_init(loop, &io, sv[0], count_io_cb));
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(io_calls, 1);

    CHECK_OK(evmux_close(&io.handle, count_close_cb));
    CHECK_EQ(evmux_is_active(&io.handle), 0);
    CHECK_EQ(evmux_is_closing(&io.handle), 1);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(io_calls, 1);
    CHECK_EQ(close_calls, 1);
    CHECK(last_closed == &io.handle);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(io_calls, 1);
    /* evmux_close leaves the caller's descriptor open. */
    CHECK(unit_fd_is_open(sv[0]));

    /* The closed watcher no longer owns the fd, even before its close
     * callback has run. */
    CHECK_OK(evmux_io_init(loop, &io, sv[0], count_io_cb));
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    CHECK_OK(evmux_close(&io.handle, count_close_cb));
    CHECK_OK(evmux_io_init(loop, &io2, sv[0], count_io_cb));
    CHECK_OK(evmux_io_start(&io2, EVMUX_READABLE));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(io_calls, 2); /* io2 only */
    CHECK_EQ(close_calls, 2);

    CHECK_OK(evmux_close(&io2.handle, NULL));
    unit_loop_finish(loop);
    CHECK_EQ(io_calls, 2);
    close(sv[0]);
    close(sv[1]);
}

static void test_close_pending_timer(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    timer_calls = 0;
    close_calls = 0;
    CHECK_OK(evmux_timer_init(loop, &t, count_timer_cb));
    CHECK_OK(evmux_timer_start(&t, 5, 0));
    CHECK_OK(evmux_close(&t.handle, count_close_cb));
    CHECK_EQ(evmux_is_active(&t.handle), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(close_calls, 1);
    unit_sleep_ms(10);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(timer_calls, 0);

    /* Already due when closed. */
    CHECK_OK(evmux_timer_init(loop, &t, count_timer_cb));
    CHECK_OK(evmux_timer_start(&t, 0, 0));
    unit_sleep_ms(2);
    CHECK_OK(evmux_close(&t.handle, count_close_cb));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(timer_calls, 0);
    CHECK_EQ(close_calls, 2);
    CHECK_OK(evmux_loop_free(loop));
}

static void test_state_flags(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    evmux_io io;
    int sv[2];
    unit_socketpair(sv);

    CHECK_OK(evmux_timer_init(loop, &t, count_timer_cb));
    CHECK_EQ(evmux_is_active(&t.handle), 0);
    CHECK_EQ(evmux_is_closing(&t.handle), 0);
    CHECK_OK(evmux_timer_start(&t, 1000, 0));
    CHECK_EQ(evmux_is_active(&t.handle), 1);
    CHECK_EQ(evmux_is_closing(&t.handle), 0);
    CHECK_OK(evmux_timer_stop(&t));
    CHECK_EQ(evmux_is_active(&t.handle), 0);
    CHECK_OK(evmux_timer_start(&t, 1000, 0));
    CHECK_OK(evmux_close(&t.handle, NULL));
    CHECK_EQ(evmux_is_active(&t.handle), 0);
    CHECK_EQ(evmux_is_closing(&t.handle), 1);

    CHECK_OK(evmux_io_init(loop, &io, sv[0], count_io_cb));
    CHECK_EQ(evmux_is_active(&io.handle), 0);
    CHECK_EQ(evmux_is_closing(&io.handle), 0);
    CHECK_OK(evmux_io_start(&io, EVMUX_WRITABLE));
    CHECK_EQ(evmux_is_active(&io.handle), 1);
    CHECK_OK(evmux_io_start(&io, 0));
    CHECK_EQ(evmux_is_active(&io.handle), 0);
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    CHECK_EQ(evmux_is_active(&io.handle), 1);
    CHECK_OK(evmux_close(&io.handle, NULL));
    CHECK_EQ(evmux_is_active(&io.handle), 0);
    CHECK_EQ(evmux_is_closing(&io.handle), 1);

    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    /* Closed counts as closing too. */
    CHECK_EQ(evmux_is_closing(&t.handle), 1);
    CHECK_EQ(evmux_is_closing(&io.handle), 1);
    CHECK_EQ(evmux_is_active(&t.handle), 0);
    CHECK_OK(evmux_loop_free(loop));
    close(sv[0]);
    close(sv[1]);
}

static void test_close_null_cb(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    evmux_io io;
    int sv[2];
    unit_socketpair(sv);
    CHECK_OK(evmux_timer_init(loop, &t, count_timer_cb));
    CHECK_OK(evmux_timer_start(&t, 1000, 0));
    CHECK_OK(evmux_io_init(loop, &io, sv[0], count_io_cb));
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    CHECK_OK(evmux_close(&t.handle, NULL));
    CHECK_OK(evmux_close(&io.handle, NULL));
    CHECK_EQ(evmux_loop_free(loop), -EBUSY);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_loop_free(loop));
    close(sv[0]);
    close(sv[1]);
}

static void test_close_before_first_run(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    close_calls = 0;
    CHECK_OK(evmux_timer_init(loop, &t, count_timer_cb));
    CHECK_OK(evmux_close(&t.handle, count_close_cb));
    CHECK_EQ(evmux_loop_alive(loop), 1);
    /* Must not block: nothing is active, only a close callback pending. */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(close_calls, 1);
    CHECK(last_closed == &t.handle);
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_loop_free(loop));

    /* ONCE with only a close pending must not block either. */
    loop = unit_loop_new();
    CHECK_OK(evmux_timer_init(loop, &t, count_timer_cb));
    CHECK_OK(evmux_close(&t.handle, count_close_cb));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(close_calls, 2);
    CHECK_OK(evmux_loop_free(loop));
}

static void test_start_on_closing(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    evmux_io io;
    int sv[2];
    unit_socketpair(sv);
    CHECK_OK(evmux_timer_init(loop, &t, count_timer_cb));
    CHECK_OK(evmux_io_init(loop, &io, sv[0], count_io_cb));
    CHECK_OK(evmux_close(&t.handle, NULL));
    CHECK_OK(evmux_close(&io.handle, NULL));

    CHECK_EQ(evmux_timer_start(&t, 1, 0), -EINVAL);
    CHECK_EQ(evmux_io_start(&io, EVMUX_WRITABLE), -EINVAL);
    CHECK_EQ(evmux_is_active(&t.handle), 0);
    CHECK_EQ(evmux_is_active(&io.handle), 0);

    timer_calls = 0;
    io_calls = 0;
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(evmux_loop_alive(loop), 0);

    /* And after the close has completed. */
    CHECK_EQ(evmux_timer_start(&t, 1, 0), -EINVAL);
    CHECK_EQ(evmux_io_start(&io, EVMUX_WRITABLE), -EINVAL);
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(timer_calls, 0);
    CHECK_EQ(io_calls, 0);
    CHECK_OK(evmux_loop_free(loop));
    close(sv[0]);
    close(sv[1]);
}

static void test_free_busy_until_close_cb(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    close_calls = 0;
    CHECK_OK(evmux_timer_init(loop, &t, count_timer_cb));
    CHECK_EQ(evmux_loop_free(loop), -EBUSY);
    CHECK_OK(evmux_close(&t.handle, count_close_cb));
    CHECK_EQ(evmux_loop_free(loop), -EBUSY);
    CHECK_EQ(close_calls, 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(close_calls, 1);
    CHECK_OK(evmux_loop_free(loop));
}

/* A handle closing itself from its own callback, and a close callback that
 * closes another handle: both close callbacks run before DEFAULT returns. */
struct self_closer {
    evmux_io io;
    int calls;
    int *freed;
    evmux_handle *chain; /* closed from this handle's close callback */
};

static void self_close_cb_chain(evmux_handle *h)
{
    struct self_closer *s = (struct self_closer *)h->data;
    (*s->freed)++;
    if (s->chain)
        CHECK_OK(evmux_close(s->chain, count_close_cb));
    free(s);
}

static void self_io_cb(evmux_io *io, unsigned events)
{
    struct self_closer *s = (struct self_closer *)io->handle.data;
    CHECK_EQ(events, EVMUX_READABLE);
    s->calls++;
    CHECK_EQ(s->calls, 1);
    CHECK_OK(evmux_close(&io->handle, self_close_cb_chain));
    /* Still ours: freed only in the close callback. */
    CHECK_EQ(evmux_is_closing(&s->io.handle), 1);
}

static void repeat_self_close_cb(evmux_timer *t)
{
    timer_calls++;
    CHECK_OK(evmux_close(&t->handle, count_close_cb));
}

static void test_close_from_own_callback(void)
{
    evmux_loop *loop = unit_loop_new();
    int freed = 0;
    int sv[2];
    evmux_timer chained, rep;
    unit_socketpair(sv);
    unit_write_byte(sv[1]);

    close_calls = 0;
    timer_calls = 0;
    CHECK_OK(evmux_timer_init(loop, &chained, count_timer_cb));
    CHECK_OK(evmux_timer_start(&chained, 10000, 0));

    struct self_closer *s = calloc(1, sizeof *s);
    CHECK(s != NULL);
    s->freed = &freed;
    s->chain = &chained.handle;
    CHECK_OK(evmux_io_init(loop, &s->io, sv[0], self_io_cb));
    s->io.handle.data = s;
    CHECK_OK(evmux_io_start(&s->io, EVMUX_READABLE));

    /* A repeating timer that closes itself fires once. */
    CHECK_OK(evmux_timer_init(loop, &rep, repeat_self_close_cb));
    CHECK_OK(evmux_timer_start(&rep, 1, 1));

    /* The 10 s timer is closed from the io close callback, so DEFAULT
     * returns promptly with every close callback run. */
    uint64_t t0 = unit_mono_ns();
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK(unit_mono_ns() - t0 < 5000000000ull);
    CHECK_EQ(freed, 1);
    CHECK_EQ(timer_calls, 1);
    CHECK_EQ(close_calls, 2); /* rep and chained */
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_loop_free(loop));
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    unit_watchdog(30);
    RUN_TEST(test_close_cb_runs_later_once);
    RUN_TEST(test_close_many_freed_in_cb);
    RUN_TEST(test_close_twice);
    RUN_TEST(test_close_active_io);
    RUN_TEST(test_close_pending_timer);
    RUN_TEST(test_state_flags);
    RUN_TEST(test_close_null_cb);
    RUN_TEST(test_close_before_first_run);
    RUN_TEST(test_start_on_closing);
    RUN_TEST(test_free_busy_until_close_cb);
    RUN_TEST(test_close_from_own_callback);
    return 0;
}
