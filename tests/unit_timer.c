/* Timers: once, repeat, again, restart, stop, never early, ordering by
 * deadline and by start order, heap stress, and no starvation of I/O by a
 * timer that re-arms itself with 0 ms. White-box parts drive the loop's
 * cached clock by hand: firing just after the exact deadline, start order
 * within a 65.5 us bucket, lazy restarts, renumbering of the start sequence,
 * the timer limit, and timeouts beyond the heap key's range. */
#include "evmux_internal.h"
#include "unit_util.h"

#include <errno.h>
#include <stdlib.h>

/* A timer with what the tests need to know about it. */
struct tt {
    evmux_timer t;
    int id;
    int fired;
    uint64_t timeout;
    uint64_t key;         /* expected position: (timeout, start order) */
    uint64_t start_now;   /* evmux_now at start */
    uint64_t start_real;  /* CLOCK_MONOTONIC ns, read before the start */
    uint64_t last_real;   /* CLOCK_MONOTONIC ns at the last callback */
    uint64_t due_ns;      /* fake-clock tests: the deadline on the loop's clock */
    uint64_t fired_ns;    /* fake-clock tests: the loop's clock at the callback */
    int stop_after;       /* repeating: stop in the callback at this count */
    struct tt *victim;    /* stopped by this timer's callback */
};

static evmux_loop *g_loop;
static int order[20000];
static int order_len;
static int early; /* count of callbacks seen before their deadline */

static void tt_init(evmux_loop *loop, struct tt *x, int id, evmux_timer_cb cb)
{
    memset(x, 0, sizeof *x);
    x->id = id;
    CHECK_OK(evmux_timer_init(loop, &x->t, cb));
    x->t.handle.data = x;
}

/* Starts with a fresh cached time, the real clock read first, so that the
 * real elapsed time at the callback must be >= the timeout exactly. */
static void tt_start_fresh(evmux_loop *loop, struct tt *x, uint64_t timeout, uint64_t repeat)
{
    x->start_real = unit_mono_ns();
    evmux_update_time(loop);
    x->start_now = evmux_now(loop);
    x->timeout = timeout;
    CHECK_OK(evmux_timer_start(&x->t, timeout, repeat));
}

static void record_cb(evmux_timer *t)
{
    struct tt *x = (struct tt *)t->handle.data;
    x->fired++;
    x->last_real = unit_mono_ns();
    if (order_len < (int)(sizeof order / sizeof order[0]))
        order[order_len++] = x->id;
    if (x->victim)
        CHECK_OK(evmux_timer_stop(&x->victim->t));
    if (x->stop_after && x->fired == x->stop_after)
        CHECK_OK(evmux_timer_stop(t));
}

/* Checks the never-early rule for the n-th firing (n from 1). */
static void early_cb(evmux_timer *t)
{
    struct tt *x = (struct tt *)t->handle.data;
    uint64_t real = unit_mono_ns();
    x->fired++;
    uint64_t repeat = evmux_timer_get_repeat(t);
    uint64_t due_ms = x->timeout + (uint64_t)(x->fired - 1) * repeat;
    if (evmux_now(g_loop) - x->start_now < due_ms || real - x->start_real < due_ms * 1000000u) {
        fprintf(stderr, "timer %d (timeout %llu, repeat %llu) firing %d early: now-start=%llu ms, real=%llu ns\n",
                x->id, (unsigned long long)x->timeout, (unsigned long long)repeat, x->fired,
                (unsigned long long)(evmux_now(g_loop) - x->start_now),
                (unsigned long long)(real - x->start_real));
        early++;
    }
    if (x->stop_after && x->fired == x->stop_after)
        CHECK_OK(evmux_timer_stop(t));
}

static void close_all(struct tt *xs, int n)
{
    for (int i = 0; i < n; i++)
        CHECK_OK(evmux_close(&xs[i].t.handle, NULL));
}

static void test_oneshot(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt a, z;
    tt_init(loop, &a, 0, record_cb);
    tt_init(loop, &z, 1, record_cb);
    CHECK_OK(evmux_timer_start(&a.t, 10, 0));
    CHECK_OK(evmux_timer_start(&z.t, 0, 0));
    CHECK_EQ(evmux_is_active(&a.t.handle), 1);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(a.fired, 1);
    CHECK_EQ(z.fired, 1);
    CHECK_EQ(evmux_is_active(&a.t.handle), 0);
    CHECK_EQ(evmux_is_active(&z.t.handle), 0);
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(a.fired, 1);
    close_all(&a, 1);
    close_all(&z, 1);
    unit_loop_finish(loop);
}

static void test_never_early(void)
{
    static const uint64_t timeouts[] = { 0, 1, 2, 3, 5, 7, 10, 13, 17, 25, 50 };
    enum { N = sizeof timeouts / sizeof timeouts[0] };
    evmux_loop *loop = unit_loop_new();
    struct tt xs[N + 1];
    struct unit_guard guard;
    g_loop = loop;
    early = 0;
    unit_guard_start(loop, &guard, 5000);

    for (int i = 0; i < N; i++) {
        tt_init(loop, &xs[i], i, early_cb);
        tt_start_fresh(loop, &xs[i], timeouts[i], 0);
    }
    /* A repeating one: the n-th firing is never before timeout + (n-1) * repeat. */
    tt_init(loop, &xs[N], N, early_cb);
    xs[N].stop_after = 5;
    tt_start_fresh(loop, &xs[N], 3, 4);

    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(guard.fired, 0);
    CHECK_EQ(early, 0);
    for (int i = 0; i < N; i++)
        CHECK_EQ(xs[i].fired, 1);
    CHECK_EQ(xs[N].fired, 5);

    /* One at a time too, each alone in the loop. */
    for (int i = 0; i < N; i++) {
        xs[i].fired = 0;
        tt_start_fresh(loop, &xs[i], timeouts[i], 0);
        CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
        CHECK_EQ(xs[i].fired, 1);
    }
    CHECK_EQ(guard.fired, 0);
    CHECK_EQ(early, 0);

    close_all(xs, N + 1);
    unit_guard_close(&guard);
    unit_loop_finish(loop);
}

static void test_repeat(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt a, b;
    tt_init(loop, &a, 0, record_cb);
    tt_init(loop, &b, 1, record_cb);
    a.stop_after = 5;
    b.stop_after = 3;
    CHECK_OK(evmux_timer_start(&a.t, 2, 3));
    CHECK_OK(evmux_timer_start(&b.t, 0, 1));
    CHECK_EQ(evmux_timer_get_repeat(&a.t), 3);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(a.fired, 5);
    CHECK_EQ(b.fired, 3);
    CHECK_EQ(evmux_is_active(&a.t.handle), 0);
    CHECK_EQ(evmux_timer_get_repeat(&a.t), 3);
    close_all(&a, 1);
    close_all(&b, 1);
    unit_loop_finish(loop);
}

static void test_again(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt a;
    struct unit_guard guard;
    g_loop = loop;
    early = 0;
    unit_guard_start(loop, &guard, 5000);
    tt_init(loop, &a, 0, early_cb);

    /* No repeat interval: refused, and nothing starts. */
    CHECK_EQ(evmux_timer_again(&a.t), -EINVAL);
    CHECK_EQ(evmux_is_active(&a.t.handle), 0);
    CHECK_OK(evmux_timer_start(&a.t, 1000, 0));
    CHECK_EQ(evmux_timer_again(&a.t), -EINVAL);
    CHECK_EQ(evmux_is_active(&a.t.handle), 1); /* left as it was */
    CHECK(evmux_timer_get_due_in(&a.t) > 10);

    /* With a repeat, again replaces the 1000 ms timeout by the repeat. */
    evmux_timer_set_repeat(&a.t, 10);
    a.start_real = unit_mono_ns();
    evmux_update_time(loop);
    a.start_now = evmux_now(loop);
    a.timeout = 10;
    CHECK_OK(evmux_timer_again(&a.t));
    CHECK_EQ(evmux_is_active(&a.t.handle), 1);
    CHECK(evmux_timer_get_due_in(&a.t) <= 10);
    a.stop_after = 3;
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(guard.fired, 0);
    CHECK_EQ(a.fired, 3);
    CHECK_EQ(early, 0);

    /* Setting the repeat to 0 makes again refuse again. */
    evmux_timer_set_repeat(&a.t, 0);
    CHECK_EQ(evmux_timer_again(&a.t), -EINVAL);
    CHECK_EQ(evmux_is_active(&a.t.handle), 0);

    close_all(&a, 1);
    unit_guard_close(&guard);
    unit_loop_finish(loop);
}

static void test_restart(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt a;
    g_loop = loop;
    early = 0;
    tt_init(loop, &a, 0, early_cb);

    /* Restart to a later deadline: fires once, not before the later one. */
    CHECK_OK(evmux_timer_start(&a.t, 5, 0));
    unit_sleep_ms(2);
    tt_start_fresh(loop, &a, 20, 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(a.fired, 1);
    CHECK_EQ(early, 0);

    /* Restart to an earlier deadline: fires once, and the old 10 s entry is
     * gone (the loop is not kept alive by it). */
    a.fired = 0;
    CHECK_OK(evmux_timer_start(&a.t, 10000, 0));
    tt_start_fresh(loop, &a, 3, 0);
    uint64_t t0 = unit_mono_ns();
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(a.fired, 1);
    CHECK(unit_mono_ns() - t0 < 5000000000ull);
    CHECK_EQ(evmux_loop_alive(loop), 0);

    /* Restart from inside its own callback is covered by repeat; restart
     * many times in a row leaves one entry. */
    a.fired = 0;
    for (int i = 0; i < 100; i++)
        CHECK_OK(evmux_timer_start(&a.t, (uint64_t)(i % 7), 0));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(a.fired, 1);

    close_all(&a, 1);
    unit_loop_finish(loop);
}

static void test_stop(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt a, b;
    tt_init(loop, &a, 0, record_cb);
    tt_init(loop, &b, 1, record_cb);

    CHECK_OK(evmux_timer_start(&a.t, 10, 0));
    CHECK_OK(evmux_timer_stop(&a.t));
    CHECK_EQ(evmux_is_active(&a.t.handle), 0);
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_timer_stop(&a.t)); /* stopping twice is harmless */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(a.fired, 0);

    /* Stopped by another timer before it is due. */
    CHECK_OK(evmux_timer_start(&a.t, 20, 0));
    CHECK_OK(evmux_timer_start(&b.t, 2, 0));
    b.victim = &a;
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(b.fired, 1);
    CHECK_EQ(a.fired, 0);
    unit_sleep_ms(25);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(a.fired, 0);

    close_all(&a, 1);
    close_all(&b, 1);
    unit_loop_finish(loop);
}

/* A timer stopped by an earlier callback of the same iteration does not
 * fire, whether its deadline equals the stopper's or is later but already
 * passed. (A timer restarted that way: test_restarted_in_same_iteration.) */
static void test_stopped_in_same_iteration(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt a, b;
    tt_init(loop, &a, 0, record_cb);
    tt_init(loop, &b, 1, record_cb);

    /* Equal deadlines: a was started first so it runs first. */
    a.victim = &b;
    CHECK_OK(evmux_timer_start(&a.t, 5, 0));
    CHECK_OK(evmux_timer_start(&b.t, 5, 0));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(a.fired, 1);
    CHECK_EQ(b.fired, 0);

    /* Different deadlines, both passed before the loop looks. */
    a.fired = 0;
    evmux_update_time(loop);
    CHECK_OK(evmux_timer_start(&a.t, 1, 0));
    CHECK_OK(evmux_timer_start(&b.t, 3, 0));
    unit_sleep_ms(10);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(a.fired, 1);
    CHECK_EQ(b.fired, 0);

    close_all(&a, 1);
    close_all(&b, 1);
    unit_loop_finish(loop);
}

static struct tt *restart_target;
static uint64_t restart_real;

static void restarter_cb(evmux_timer *t)
{
    struct tt *x = (struct tt *)t->handle.data;
    x->fired++;
    restart_real = unit_mono_ns();
    CHECK_OK(evmux_timer_start(&restart_target->t, 30, 0));
}

static void test_restarted_in_same_iteration(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt r, v;
    tt_init(loop, &r, 0, restarter_cb);
    tt_init(loop, &v, 1, record_cb);
    restart_target = &v;

    /* r (1 ms) runs before v (2 ms); both are due when the loop looks. */
    evmux_update_time(loop);
    CHECK_OK(evmux_timer_start(&r.t, 1, 0));
    CHECK_OK(evmux_timer_start(&v.t, 2, 0));
    unit_sleep_ms(5);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(r.fired, 1);
    CHECK_EQ(v.fired, 1);
    /* Well after the restart, not in the iteration that restarted it (the
     * margin allows for the cached time being a little stale). */
    CHECK(v.last_real - restart_real >= 20000000ull);

    close_all(&r, 1);
    close_all(&v, 1);
    unit_loop_finish(loop);
}

static void check_order(const char *what, const int *expected, int n)
{
    CHECK_EQ(order_len, n);
    for (int i = 0; i < n; i++)
        if (order[i] != expected[i]) {
            fprintf(stderr, "%s: position %d fired timer %d, expected %d\n", what, i, order[i],
                    expected[i]);
            CHECK(order[i] == expected[i]);
        }
}

static void test_equal_deadlines_in_start_order(void)
{
    enum { N = 100 };
    evmux_loop *loop = unit_loop_new();
    struct tt xs[N];
    int expected[N];

    for (int i = 0; i < N; i++)
        tt_init(loop, &xs[i], i, record_cb);

    /* All started under one cached time: one deadline, so start order. */
    order_len = 0;
    for (int i = 0; i < N; i++)
        CHECK_OK(evmux_timer_start(&xs[i].t, 10, 0));
    for (int i = 0; i < N; i++)
        expected[i] = i;
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    check_order("same now", expected, N);

    /* Restarting moves a timer behind the others with the same deadline. */
    order_len = 0;
    for (int i = 0; i < N; i++)
        CHECK_OK(evmux_timer_start(&xs[i].t, 10, 0));
    CHECK_OK(evmux_timer_start(&xs[0].t, 10, 0));
    CHECK_OK(evmux_timer_start(&xs[50].t, 10, 0));
    CHECK_OK(evmux_timer_start(&xs[10].t, 10, 0));
    int k = 0;
    for (int i = 0; i < N; i++)
        if (i != 0 && i != 50 && i != 10)
            expected[k++] = i;
    expected[k++] = 0;
    expected[k++] = 50;
    expected[k++] = 10;
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    check_order("restarted", expected, N);

    /* Half under one cached time, half after the time moved on: deadlines
     * never decrease in start order, so start order is still the order;
     * stop/start churn in the middle moves the restarted ones last. */
    order_len = 0;
    for (int i = 0; i < N / 2; i++)
        CHECK_OK(evmux_timer_start(&xs[i].t, 10, 0));
    unit_sleep_ms(1);
    evmux_update_time(loop);
    for (int i = N / 2; i < N; i++)
        CHECK_OK(evmux_timer_start(&xs[i].t, 10, 0));
    for (int i = 3; i < N; i += 7)
        CHECK_OK(evmux_timer_stop(&xs[i].t));
    for (int i = 3; i < N; i += 7)
        CHECK_OK(evmux_timer_start(&xs[i].t, 10, 0));
    k = 0;
    for (int i = 0; i < N; i++)
        if (i < 3 || (i - 3) % 7 != 0)
            expected[k++] = i;
    for (int i = 3; i < N; i += 7)
        expected[k++] = i;
    CHECK_EQ(k, N);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    check_order("two clocks", expected, N);

    close_all(xs, N);
    unit_loop_finish(loop);
}

/* ---- white-box helpers ---- */

#define SEQ_LIMIT (UINT64_C(1) << EVMUX__TIMER_SEQ_BITS)
#define UNIT_NS (UINT64_C(1) << EVMUX__TIMER_UNIT_SHIFT)
#define DAY_MS (24ull * 3600 * 1000)

/* The next few starts exhaust the sequence and make the heap renumber.
 * Only ever forward: a sequence handed out twice would break the order. */
static void force_renumber_soon(evmux_loop *loop)
{
    if (loop->timer_seq < SEQ_LIMIT - 2)
        loop->timer_seq = SEQ_LIMIT - 2;
}

/* Moves the loop's cached clock forward (never back) to `ns`. */
static void fake_set_now(evmux_loop *loop, uint64_t ns)
{
    CHECK(ns >= loop->now_ns);
    loop->now_ns = ns;
}

/* The key a timer's own deadline and sequence give it (as in timer.c). */
static uint64_t timer_key(const evmux_loop *loop, const evmux_timer *t)
{
    uint64_t at = t->deadline_ns >> EVMUX__TIMER_UNIT_SHIFT, bucket;
    if (at < loop->timer_epoch)
        bucket = 0;
    else if (at - loop->timer_epoch < EVMUX__TIMER_BUCKET_MAX)
        bucket = at - loop->timer_epoch + 1;
    else
        bucket = EVMUX__TIMER_BUCKET_MAX;
    return bucket << EVMUX__TIMER_SEQ_BITS | t->start_seq;
}

/* The heap's own invariants: each entry after its parent, each timer
 * knowing its place, and no entry later than its timer (a lazy restart
 * leaves it earlier, never later, or the timer would fire late). */
static void check_heap(const evmux_loop *loop)
{
    /* The root is the last slot of a cache line, so that siblings share one
     * (given the 16-byte alignment malloc gives here). */
    if (loop->timer_count > 0 && sizeof(struct evmux_timer_slot) == 16 &&
        ((uintptr_t)loop->timer_alloc & 15) == 0)
        CHECK(((uintptr_t)loop->timer_heap & 63) == 48);
    for (size_t i = 0; i < loop->timer_count; i++) {
        const struct evmux_timer_slot *e = &loop->timer_heap[i];
        CHECK(e->timer->heap_index == i);
        CHECK(i == 0 || loop->timer_heap[(i - 1) / 4].key < e->key);
        CHECK(e->key <= timer_key(loop, e->timer));
        CHECK(evmux_is_active(&e->timer->handle));
    }
}

/* Runs the due timers, as the loop would, and checks the heap after. */
static void fake_run(evmux_loop *loop)
{
    evmux__timers_run(loop);
    check_heap(loop);
}

static void fake_start(struct tt *x, uint64_t timeout_ms)
{
    x->timeout = timeout_ms;
    x->due_ns = timeout_ms > UINT64_MAX / 1000000u ? UINT64_MAX
                                                    : g_loop->now_ns + timeout_ms * 1000000u;
    CHECK_OK(evmux_timer_start(&x->t, timeout_ms, 0));
}

static void fake_cb(evmux_timer *t)
{
    struct tt *x = (struct tt *)t->handle.data;
    x->fired++;
    x->fired_ns = g_loop->now_ns;
    if (g_loop->now_ns < x->due_ns) {
        fprintf(stderr, "timer %d fired %llu ns early\n", x->id,
                (unsigned long long)(x->due_ns - g_loop->now_ns));
        early++;
    }
    if (order_len < (int)(sizeof order / sizeof order[0]))
        order[order_len++] = x->id;
}

static int cmp_key(const void *a, const void *b)
{
    const struct tt *x = *(struct tt *const *)a, *y = *(struct tt *const *)b;
    return x->key < y->key ? -1 : x->key > y->key;
}

/* Starts n timers under one cached time with random timeouts in
 * [0, max_ms], stops `stop` of them at random and restarts `restart` of the
 * rest with new timeouts; checks that every live timer fires exactly once,
 * in (deadline, start order) order, and no stopped one fires. */
static void heap_run(int n, int stop, int restart, uint64_t max_ms, uint32_t seed,
                     int renumber_every)
{
    evmux_loop *loop = unit_loop_new();
    struct tt *xs = calloc((size_t)n, sizeof *xs);
    int *perm = malloc((size_t)n * sizeof *perm);
    struct tt **live = malloc((size_t)n * sizeof *live);
    int *expected = malloc((size_t)n * sizeof *expected);
    uint64_t seq = 0;
    CHECK(xs && perm && live && expected);
    CHECK(n <= (int)(sizeof order / sizeof order[0]));

    evmux_update_time(loop);
    for (int i = 0; i < n; i++) {
        tt_init(loop, &xs[i], i, record_cb);
        xs[i].timeout = unit_rand(&seed) % (max_ms + 1);
        xs[i].key = (xs[i].timeout << 32) | seq++;
        if (renumber_every && i % renumber_every == 0)
            force_renumber_soon(loop);
        CHECK_OK(evmux_timer_start(&xs[i].t, xs[i].timeout, 0));
        perm[i] = i;
    }
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(unit_rand(&seed) % (uint32_t)(i + 1));
        int tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (int i = 0; i < stop; i++) {
        CHECK_OK(evmux_timer_stop(&xs[perm[i]].t));
        CHECK_EQ(evmux_is_active(&xs[perm[i]].t.handle), 0);
        xs[perm[i]].key = UINT64_MAX;
    }
    for (int i = stop; i < stop + restart && i < n; i++) {
        struct tt *x = &xs[perm[i]];
        x->timeout = unit_rand(&seed) % (max_ms + 1);
        x->key = (x->timeout << 32) | seq++;
        if (renumber_every && i % renumber_every == 0)
            force_renumber_soon(loop);
        CHECK_OK(evmux_timer_start(&x->t, x->timeout, 0));
    }
    check_heap(loop);
    int nlive = 0;
    for (int i = 0; i < n; i++)
        if (xs[i].key != UINT64_MAX)
            live[nlive++] = &xs[i];
    qsort(live, (size_t)nlive, sizeof *live, cmp_key);
    for (int i = 0; i < nlive; i++)
        expected[i] = live[i]->id;

    order_len = 0;
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    for (int i = 0; i < n; i++)
        CHECK_EQ(xs[i].fired, xs[i].key == UINT64_MAX ? 0 : 1);
    check_order("heap", expected, nlive);

    close_all(xs, n);
    unit_loop_finish(loop);
    free(xs);
    free(perm);
    free(live);
    free(expected);
}

static void test_deadline_order(void)
{
    /* 200 timers, 0..30 ms: order by deadline, ties by start order. */
    heap_run(200, 0, 0, 30, 12345u, 0);
}

static void test_heap_stress(void)
{
    heap_run(10000, 5000, 1000, 40, 0xdecafbadu, 0);
}

/* Renumbering must keep (deadline, start order), ties included. */
static void test_renumber_keeps_order(void)
{
    heap_run(2000, 0, 0, 5, 777u, 97);
    heap_run(3000, 1000, 1500, 20, 4242u, 13);
    heap_run(500, 100, 300, 3, 99u, 1); /* renumbers every third start */
}

/* The top of the heap fires in the first pass whose clock is past its
 * exact deadline, wherever the deadline falls in its bucket; the loop is
 * told to sleep until just then. */
static void test_fires_just_after_deadline(void)
{
    static const uint64_t timeouts[] = {0, 1, 2, 3, 7, 50, 1000};
    static const uint64_t offsets[] = {0, 1, 12345, UNIT_NS / 2, UNIT_NS - 1};
    evmux_loop *loop = unit_loop_new();
    struct tt a;
    g_loop = loop;
    early = 0;
    tt_init(loop, &a, 0, fake_cb);
    evmux_update_time(loop);
    for (size_t ti = 0; ti < sizeof timeouts / sizeof timeouts[0]; ti++)
        for (size_t oi = 0; oi < sizeof offsets / sizeof offsets[0]; oi++) {
            uint64_t grid = (loop->now_ns / UNIT_NS + 1) * UNIT_NS;
            fake_set_now(loop, grid + offsets[oi]);
            a.fired = 0;
            fake_start(&a, timeouts[ti]);
            if (a.due_ns > loop->now_ns) {
                fake_set_now(loop, a.due_ns - 1);
                fake_run(loop);
                CHECK_EQ(a.fired, 0);
                CHECK(evmux__timers_next_ns(loop) == 2);
            }
            fake_set_now(loop, a.due_ns);
            fake_run(loop);
            CHECK_EQ(a.fired, 0);
            CHECK(evmux__timers_next_ns(loop) == 1);
            fake_set_now(loop, a.due_ns + 1);
            fake_run(loop);
            CHECK_EQ(a.fired, 1);
            CHECK_EQ(evmux_is_active(&a.t.handle), 0);
        }
    CHECK_EQ(early, 0);
    close_all(&a, 1);
    unit_loop_finish(loop);
}

/* Two deadlines less than a bucket apart are in start order: the one started
 * later but due first waits for the other (less than a bucket), then both
 * fire in the same pass; neither early. */
static void test_same_bucket_start_order(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt a, b;
    g_loop = loop;
    early = 0;
    order_len = 0;
    tt_init(loop, &a, 0, fake_cb);
    tt_init(loop, &b, 1, fake_cb);
    evmux_update_time(loop);
    fake_set_now(loop, (loop->now_ns / UNIT_NS + 1) * UNIT_NS + 1000);
    fake_start(&a, 2);
    fake_set_now(loop, loop->now_ns + 990000);
    fake_start(&b, 1); /* due 10 us before a */
    CHECK(b.due_ns < a.due_ns);
    CHECK_EQ(b.due_ns / UNIT_NS, a.due_ns / UNIT_NS);
    fake_set_now(loop, b.due_ns + 1);
    fake_run(loop);
    CHECK_EQ(order_len, 0);
    CHECK(evmux__timers_next_ns(loop) == a.due_ns + 1 - loop->now_ns);
    fake_set_now(loop, a.due_ns + 1);
    fake_run(loop);
    static const int expected[] = {0, 1};
    check_order("same bucket", expected, 2);
    CHECK_EQ(early, 0);
    close_all(&a, 1);
    close_all(&b, 1);
    unit_loop_finish(loop);
}

/* Renumbering in the middle of a pass, from a callback: the due timers
 * still fire in order, and the ones started by the callback wait for the
 * next pass, in their start order. */
static struct tt *midpass_xs;

static void midpass_cb(evmux_timer *t)
{
    struct tt *x = (struct tt *)t->handle.data;
    fake_cb(t);
    if (x->id != 0)
        return;
    force_renumber_soon(g_loop);
    fake_start(&midpass_xs[10], 0);
    fake_start(&midpass_xs[4], 0); /* restarted: now behind 10 */
    fake_start(&midpass_xs[11], 0);
    fake_start(&midpass_xs[12], 0);
}

static void test_renumber_mid_pass(void)
{
    enum { N = 13 };
    evmux_loop *loop = unit_loop_new();
    struct tt xs[N];
    g_loop = loop;
    early = 0;
    order_len = 0;
    midpass_xs = xs;
    for (int i = 0; i < N; i++)
        tt_init(loop, &xs[i], i, midpass_cb);
    evmux_update_time(loop);
    for (int i = 0; i < 8; i++)
        fake_start(&xs[i], i < 6 ? 0 : 1); /* 0..5 share a deadline */
    fake_set_now(loop, loop->now_ns + 5 * 1000000u);
    fake_run(loop);
    static const int first[] = {0, 1, 2, 3, 5, 6, 7};
    check_order("first pass", first, 7);
    order_len = 0;
    fake_set_now(loop, loop->now_ns + UNIT_NS);
    fake_run(loop);
    static const int second[] = {10, 4, 11, 12};
    check_order("second pass", second, 4);
    CHECK_EQ(early, 0);
    close_all(xs, N);
    unit_loop_finish(loop);
}

/* Timeouts beyond the key's range (about 52 days) saturate; the loop still
 * wakes up often enough to give them their real place in time, so they
 * fire in deadline order, at most one bucket late, and a UINT64_MAX timeout
 * never fires. */
static void test_far_future_order(void)
{
    enum { N = 7 };
    static const uint64_t timeouts[N] = {
        1, 100 * DAY_MS, 70 * DAY_MS, UINT64_MAX, 40 * DAY_MS, 80 * DAY_MS, 80 * DAY_MS,
    };
    static const int expected[] = {0, 4, 2, 5, 6, 1}; /* 3 never fires */
    evmux_loop *loop = unit_loop_new();
    struct tt xs[N];
    g_loop = loop;
    early = 0;
    order_len = 0;
    evmux_update_time(loop);
    uint64_t start = loop->now_ns;
    for (int i = 0; i < N; i++) {
        tt_init(loop, &xs[i], i, fake_cb);
        fake_start(&xs[i], timeouts[i]);
    }
    CHECK_EQ(evmux_timer_get_due_in(&xs[1].t), 100 * DAY_MS);
    int wakeups = 0;
    while (loop->now_ns - start < 400 * DAY_MS * 1000000u) {
        uint64_t wait = evmux__timers_next_ns(loop);
        CHECK(wait <= 41 * DAY_MS * 1000000u); /* saturated ones do not hide */
        fake_set_now(loop, loop->now_ns + wait);
        fake_run(loop);
        CHECK(++wakeups < 100);
    }
    check_order("far future", expected, 6);
    CHECK_EQ(early, 0);
    for (int i = 0; i < N; i++)
        if (i != 3)
            CHECK(xs[i].fired_ns - xs[i].due_ns <= UNIT_NS);
    CHECK_EQ(evmux_is_active(&xs[3].t.handle), 1);
    CHECK(evmux_timer_get_due_in(&xs[3].t) > 100 * 365 * DAY_MS);
    CHECK_OK(evmux_timer_stop(&xs[3].t));
    close_all(xs, N);
    unit_loop_finish(loop);
}

/* Saturated timers started latest-deadline first: each renormalization
 * must sort those it brings back into range among themselves. */
static void test_far_future_descending(void)
{
    enum { N = 40 };
    evmux_loop *loop = unit_loop_new();
    struct tt xs[N];
    g_loop = loop;
    early = 0;
    order_len = 0;
    evmux_update_time(loop);
    uint64_t start = loop->now_ns;
    for (int i = 0; i < N; i++) {
        tt_init(loop, &xs[i], i, fake_cb);
        fake_start(&xs[i], (uint64_t)(99 - i) * DAY_MS);
    }
    while (order_len < N) {
        fake_set_now(loop, loop->now_ns + evmux__timers_next_ns(loop));
        fake_run(loop);
        CHECK(loop->now_ns - start < 200 * DAY_MS * 1000000u);
    }
    int expected[N];
    for (int i = 0; i < N; i++)
        expected[i] = N - 1 - i;
    check_order("descending", expected, N);
    CHECK_EQ(early, 0);
    for (int i = 0; i < N; i++)
        CHECK(xs[i].fired_ns - xs[i].due_ns <= UNIT_NS);
    close_all(xs, N);
    unit_loop_finish(loop);
}

/* Restarting to a later deadline leaves the heap entry where it was; when
 * it comes up it is moved, not fired, and the wait after that is the real
 * one. Restarting it earlier again, or stopping it, still works. */
static void test_lazy_restart(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt a, b, c;
    g_loop = loop;
    early = 0;
    order_len = 0;
    tt_init(loop, &a, 0, fake_cb);
    tt_init(loop, &b, 1, fake_cb);
    tt_init(loop, &c, 2, fake_cb);
    evmux_update_time(loop);
    uint64_t t0 = loop->now_ns;
    fake_start(&a, 10);
    fake_start(&b, 30);
    fake_start(&c, 10);
    fake_start(&a, 50); /* later: lazy */
    fake_start(&c, 40);
    check_heap(loop);
    CHECK_OK(evmux_timer_stop(&c.t));
    check_heap(loop);
    CHECK_EQ(evmux_timer_get_due_in(&a.t), 50);
    /* a's old entry is on top: the loop must wake for it (b is behind). */
    CHECK(evmux__timers_next_ns(loop) <= 10 * 1000000u + UNIT_NS);

    /* The old 10 ms entry comes up: moved, and the next wait is b's. */
    fake_set_now(loop, t0 + 11 * 1000000u);
    fake_run(loop);
    CHECK_EQ(order_len, 0);
    CHECK(evmux__timers_next_ns(loop) >= 18 * 1000000u);
    CHECK(evmux__timers_next_ns(loop) <= 20 * 1000000u);

    /* Pushed back twice, then brought forward below its entry's key. */
    fake_start(&a, 60);
    fake_start(&a, 70);
    fake_set_now(loop, t0 + 31 * 1000000u);
    fake_run(loop);
    static const int first[] = {1};
    check_order("b", first, 1);
    fake_start(&a, 2); /* t0 + 33 ms: earlier than any key a had */
    check_heap(loop);
    fake_set_now(loop, t0 + 32 * 1000000u);
    fake_run(loop);
    CHECK_EQ(order_len, 1);
    fake_set_now(loop, t0 + 34 * 1000000u);
    fake_run(loop);
    static const int both[] = {1, 0};
    check_order("a", both, 2);
    CHECK_EQ(a.fired, 1);
    CHECK_EQ(c.fired, 0);
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_EQ(early, 0);
    close_all(&a, 1);
    close_all(&b, 1);
    close_all(&c, 1);
    unit_loop_finish(loop);
}

/* A loop that did not run for a month: every overdue timer fires in the
 * next pass, in (deadline, start order), saturated ones included. */
static void test_overdue_after_long_stall(void)
{
    enum { N = 8 };
    static const uint64_t timeouts[N] = {5, 3, 9, 1, 3, 60 * DAY_MS, 29 * DAY_MS, 60 * DAY_MS};
    static const int expected[] = {3, 1, 4, 0, 2, 6};
    evmux_loop *loop = unit_loop_new();
    struct tt xs[N];
    g_loop = loop;
    early = 0;
    order_len = 0;
    evmux_update_time(loop);
    for (int i = 0; i < N; i++) {
        tt_init(loop, &xs[i], i, fake_cb);
        fake_start(&xs[i], timeouts[i]);
    }
    fake_set_now(loop, loop->now_ns + 30 * DAY_MS * 1000000u);
    fake_run(loop);
    check_order("after a month", expected, 6);
    order_len = 0;
    fake_set_now(loop, loop->now_ns + 31 * DAY_MS * 1000000u);
    fake_run(loop);
    static const int later[] = {5, 7};
    check_order("two months", later, 2);
    CHECK_EQ(early, 0);
    close_all(xs, N);
    unit_loop_finish(loop);
}

/* Past 2^27 timers the start sequence could not be renumbered compactly:
 * one more start fails cleanly (the count is faked, nothing is touched). */
static void test_timer_limit(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt a, b;
    tt_init(loop, &a, 0, record_cb);
    tt_init(loop, &b, 1, record_cb);
    CHECK_OK(evmux_timer_start(&a.t, 1000, 0));
    size_t saved = loop->timer_count;
    loop->timer_count = (size_t)(SEQ_LIMIT / 2);
    CHECK_EQ(evmux_timer_start(&b.t, 10, 0), -ENOMEM);
    CHECK_EQ(evmux_is_active(&b.t.handle), 0);
    CHECK_OK(evmux_timer_start(&a.t, 2000, 0)); /* a restart needs no room */
    loop->timer_count = saved;
    check_heap(loop);
    close_all(&a, 1);
    close_all(&b, 1);
    unit_loop_finish(loop);
}

static void test_getters(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt a;
    tt_init(loop, &a, 0, record_cb);

    CHECK_EQ(evmux_timer_get_repeat(&a.t), 0);
    CHECK_EQ(evmux_timer_get_due_in(&a.t), 0);

    CHECK_OK(evmux_timer_start(&a.t, 100, 7));
    CHECK_EQ(evmux_timer_get_repeat(&a.t), 7);
    uint64_t due = evmux_timer_get_due_in(&a.t);
    CHECK(due >= 90 && due <= 100);

    evmux_timer_set_repeat(&a.t, 3);
    CHECK_EQ(evmux_timer_get_repeat(&a.t), 3);
    /* Changing the repeat does not move the pending deadline. */
    CHECK(evmux_timer_get_due_in(&a.t) >= 90);

    /* Due-in counts down with the loop's time. */
    unit_sleep_ms(20);
    evmux_update_time(loop);
    due = evmux_timer_get_due_in(&a.t);
    CHECK(due <= 80);

    CHECK_OK(evmux_timer_stop(&a.t));
    CHECK_EQ(evmux_timer_get_due_in(&a.t), 0);
    CHECK_EQ(evmux_timer_get_repeat(&a.t), 3);

    /* A timer already due reports 0. */
    CHECK_OK(evmux_timer_start(&a.t, 1, 0));
    unit_sleep_ms(3);
    evmux_update_time(loop);
    CHECK_EQ(evmux_timer_get_due_in(&a.t), 0);
    CHECK_OK(evmux_timer_start(&a.t, 0, 0));
    CHECK_EQ(evmux_timer_get_due_in(&a.t), 0);
    CHECK_OK(evmux_timer_stop(&a.t));

    close_all(&a, 1);
    unit_loop_finish(loop);
}

static void stop_loop_cb(evmux_timer *t)
{
    (void)t;
    evmux_stop(g_loop);
}

/* Far-future deadlines saturate instead of overflowing, and a timeout
 * longer than the backend's wait can express does not turn into a busy
 * loop: over 50 ms the loop waits only a few times. */
static void test_far_future_timeout(void)
{
    evmux_loop *loop = unit_loop_new();
    struct tt huge, big;
    evmux_timer stopper;
    g_loop = loop;
    tt_init(loop, &huge, 0, record_cb);
    tt_init(loop, &big, 1, record_cb);
    CHECK_OK(evmux_timer_init(loop, &stopper, stop_loop_cb));

    CHECK_OK(evmux_timer_start(&huge.t, UINT64_MAX, 0));
    CHECK_OK(evmux_timer_start(&big.t, 0x80000000ull + 5, 0)); /* > INT_MAX ms */
    CHECK(evmux_timer_get_due_in(&huge.t) > 0x80000000ull);
    CHECK(evmux_timer_get_due_in(&big.t) >= 0x80000000ull);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));

    /* Alone with them: DEFAULT blocks until the stopper ends it. */
    CHECK_OK(evmux_timer_start(&stopper, 50, 0));
    struct evmux_loop_stats s0, s1;
    evmux__loop_stats(loop, &s0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    evmux__loop_stats(loop, &s1);
    CHECK_EQ(huge.fired, 0);
    CHECK_EQ(big.fired, 0);
    CHECK(s1.backend_waits - s0.backend_waits <= 5);
    CHECK_EQ(evmux_is_active(&huge.t.handle), 1);

    /* Restarted to a near deadline, the saturated timer fires normally. */
    CHECK_OK(evmux_timer_start(&huge.t, 5, 0));
    CHECK_OK(evmux_timer_stop(&big.t));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(huge.fired, 1);

    close_all(&huge, 1);
    close_all(&big, 1);
    CHECK_OK(evmux_close(&stopper.handle, NULL));
    unit_loop_finish(loop);
}

/* A timer re-armed with 0 ms in its own callback must wait for the next
 * iteration, so I/O still gets its turn. */
static int starve_timer_calls;
static int starve_io_at = -1;
static evmux_io *starve_io;

static void starve_timer_cb(evmux_timer *t)
{
    starve_timer_calls++;
    if (starve_io_at >= 0)
        return; /* I/O ran: stop re-arming */
    if (starve_timer_calls > 1000) {
        /* Starved: give up so the check below reports it. */
        CHECK_OK(evmux_io_stop(starve_io));
        return;
    }
    CHECK_OK(evmux_timer_start(t, 0, 0));
}

static void starve_io_cb(evmux_io *io, unsigned events)
{
    CHECK_EQ(events, EVMUX_READABLE);
    starve_io_at = starve_timer_calls;
    unit_drain(evmux_io_fd(io));
    CHECK_OK(evmux_io_stop(io));
}

static void test_zero_rearm_does_not_starve_io(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer t;
    evmux_io io;
    int sv[2];
    unit_socketpair(sv);
    unit_write_byte(sv[1]);
    starve_io = &io;
    CHECK_OK(evmux_timer_init(loop, &t, starve_timer_cb));
    CHECK_OK(evmux_io_init(loop, &io, sv[0], starve_io_cb));
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    CHECK_OK(evmux_timer_start(&t, 0, 0));

    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK(starve_io_at >= 0);
    CHECK(starve_io_at <= 3);
    CHECK_EQ(evmux_is_active(&t.handle), 0);
    CHECK_EQ(evmux_is_active(&io.handle), 0);
    /* Re-arming from the callback fires once per iteration at most. */
    CHECK(starve_timer_calls <= starve_io_at + 2);

    CHECK_OK(evmux_close(&t.handle, NULL));
    CHECK_OK(evmux_close(&io.handle, NULL));
    unit_loop_finish(loop);
    close(sv[0]);
    close(sv[1]);
}

/* A callback that blocks past the deadlines of two timers: one pending
 * before it, and one it starts from the cached (stale) time without
 * evmux_update_time. Both must fire right after the block, not a whole
 * timeout later: the wait's timeout must count from a clock read after the
 * callbacks. The times are far apart, so that noise cannot decide: fixed,
 * both fire within milliseconds of the block's end; before the fix, about
 * DURING_MS after it. */
enum { BLOCK_MS = 1000, PENDING_MS = 800, DURING_MS = 700, LATE_MAX_MS = 350 };

static struct tt block_pending, block_during;
static uint64_t block_end_real;

static void block_now(void)
{
    CHECK_OK(evmux_timer_start(&block_during.t, DURING_MS, 0));
    unit_sleep_ms(BLOCK_MS);
    block_end_real = unit_mono_ns();
}

static void block_io_cb(evmux_io *io, unsigned events)
{
    CHECK_EQ(events, EVMUX_READABLE);
    unit_drain(evmux_io_fd(io));
    CHECK_OK(evmux_io_stop(io));
    block_now();
}

static void block_timer_cb(evmux_timer *t)
{
    (void)t;
    block_now();
}

static void check_fires_after_block(int in_timer_cb)
{
    evmux_loop *loop = unit_loop_new();
    struct unit_guard guard;
    evmux_timer blocker;
    evmux_io io;
    int sv[2];
    unit_socketpair(sv);
    order_len = 0;
    block_end_real = 0;
    unit_guard_start(loop, &guard, 10000);
    tt_init(loop, &block_pending, 0, record_cb);
    tt_init(loop, &block_during, 1, record_cb);
    CHECK_OK(evmux_timer_init(loop, &blocker, block_timer_cb));
    CHECK_OK(evmux_io_init(loop, &io, sv[0], block_io_cb));
    tt_start_fresh(loop, &block_pending, PENDING_MS, 0);
    if (in_timer_cb) {
        CHECK_OK(evmux_timer_start(&blocker, 0, 0));
    } else {
        unit_write_byte(sv[1]);
        CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    }

    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(guard.fired, 0);
    CHECK(block_end_real != 0);
    CHECK_EQ(block_pending.fired, 1);
    CHECK_EQ(block_during.fired, 1);
    static const int expected[] = {1, 0}; /* by deadline */
    check_order(in_timer_cb ? "block in timer" : "block in io", expected, 2);
    /* Never early, and right after the block. */
    CHECK(block_pending.last_real - block_pending.start_real >= PENDING_MS * 1000000ull);
    uint64_t late_pending = block_pending.last_real - block_end_real;
    uint64_t late_during = block_during.last_real - block_end_real;
    if (late_pending >= LATE_MAX_MS * 1000000ull || late_during >= LATE_MAX_MS * 1000000ull)
        fprintf(stderr, "fired %llu and %llu ms after the block\n",
                (unsigned long long)(late_pending / 1000000u),
                (unsigned long long)(late_during / 1000000u));
    CHECK(late_pending < LATE_MAX_MS * 1000000ull);
    CHECK(late_during < LATE_MAX_MS * 1000000ull);

    CHECK_OK(evmux_close(&blocker.handle, NULL));
    CHECK_OK(evmux_close(&io.handle, NULL));
    close_all(&block_pending, 1);
    close_all(&block_during, 1);
    unit_guard_close(&guard);
    unit_loop_finish(loop);
    close(sv[0]);
    close(sv[1]);
}

static void test_fires_after_blocking_io_cb(void)
{
    check_fires_after_block(0);
}

static void test_fires_after_blocking_timer_cb(void)
{
    check_fires_after_block(1);
}

int main(void)
{
    unit_watchdog(60);
    RUN_TEST(test_oneshot);
    RUN_TEST(test_never_early);
    RUN_TEST(test_repeat);
    RUN_TEST(test_again);
    RUN_TEST(test_restart);
    RUN_TEST(test_stop);
    RUN_TEST(test_stopped_in_same_iteration);
    RUN_TEST(test_restarted_in_same_iteration);
    RUN_TEST(test_equal_deadlines_in_start_order);
    RUN_TEST(test_deadline_order);
    RUN_TEST(test_heap_stress);
    RUN_TEST(test_renumber_keeps_order);
    RUN_TEST(test_fires_just_after_deadline);
    RUN_TEST(test_same_bucket_start_order);
    RUN_TEST(test_renumber_mid_pass);
    RUN_TEST(test_far_future_order);
    RUN_TEST(test_far_future_descending);
    RUN_TEST(test_overdue_after_long_stall);
    RUN_TEST(test_lazy_restart);
    RUN_TEST(test_timer_limit);
    RUN_TEST(test_getters);
    RUN_TEST(test_far_future_timeout);
    RUN_TEST(test_zero_rearm_does_not_starve_io);
    RUN_TEST(test_fires_after_blocking_io_cb);
    RUN_TEST(test_fires_after_blocking_timer_cb);
    return 0;
}
