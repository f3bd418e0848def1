/* Timer benchmark: libev (4-ary heap whose entries cache the deadline next
 * to the watcher pointer). */
#include "timers_bench.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>

static struct ev_loop *loop;
static ev_timer *timers;
static size_t ntimers;

static void on_fire(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    timers_on_fire((size_t)(w - timers));
}

static int bench_alloc(size_t n)
{
    timers = calloc(n, sizeof *timers);
    ntimers = n;
    return timers == NULL;
}

static int bench_open(void)
{
    loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOENV);
    if (loop == NULL) {
        fprintf(stderr, "libev: ev_loop_new failed\n");
        return 1;
    }
    for (size_t i = 0; i < ntimers; i++)
        ev_timer_init(&timers[i], on_fire, 0., 0.);
    return 0;
}

static void bench_update_time(void)
{
    ev_now_update(loop);
}

static void bench_start_all(const uint32_t *ms)
{
    for (size_t i = 0; i < ntimers; i++) {
        ev_timer_set(&timers[i], ms[i] * 1e-3, 0.);
        ev_timer_start(loop, &timers[i]);
    }
}

/* libev's documented way to re-arm: set the repeat value and call
 * ev_timer_again, which moves the running timer within the heap instead of
 * removing and inserting it. */
static void bench_restart_all(const uint32_t *ms)
{
    for (size_t i = 0; i < ntimers; i++) {
        timers[i].repeat = ms[i] * 1e-3;
        ev_timer_again(loop, &timers[i]);
    }
}

static void bench_stop_all(void)
{
    for (size_t i = 0; i < ntimers; i++)
        ev_timer_stop(loop, &timers[i]);
}

static int bench_run(void)
{
    ev_run(loop, 0);
    return 0;
}

static int bench_is_active(size_t i)
{
    return ev_is_active(&timers[i]);
}

static double bench_due_in_ms(size_t i)
{
    return ev_timer_remaining(loop, &timers[i]) * 1e3;
}

static void bench_close(void)
{
    ev_loop_destroy(loop);
}

const struct timers_lib timers_lib = {
    .name = "libev",
    .alloc = bench_alloc,
    .open = bench_open,
    .update_time = bench_update_time,
    .start_all = bench_start_all,
    .restart_all = bench_restart_all,
    .stop_all = bench_stop_all,
    .run = bench_run,
    .is_active = bench_is_active,
    .due_in_ms = bench_due_in_ms,
    .close = bench_close,
};
