/* Timer benchmark: evmux (4-ary heap of 16-byte {key, timer} entries, src/timer.c). */
#include "timers_bench.h"

#include "evmux.h"

#include <stdio.h>
#include <stdlib.h>

static evmux_loop *loop;
static evmux_timer *timers;
static size_t ntimers;

static void on_fire(evmux_timer *t)
{
    timers_on_fire((size_t)(t - timers));
}

static int bench_alloc(size_t n)
{
    timers = calloc(n, sizeof *timers);
    ntimers = n;
    return timers == NULL;
}

static int bench_open(void)
{
    int rc = evmux_loop_new(&loop, NULL);
    if (rc < 0) {
        fprintf(stderr, "evmux: evmux_loop_new: %s\n", evmux_strerror(rc));
        return 1;
    }
    for (size_t i = 0; i < ntimers; i++)
        evmux_timer_init(loop, &timers[i], on_fire);
    return 0;
}

static void bench_update_time(void)
{
    evmux_update_time(loop);
}

/* Return values are not checked in the timed loops; the harness checks
 * every timer's state after each phase instead. */
static void bench_start_all(const uint32_t *ms)
{
    for (size_t i = 0; i < ntimers; i++)
        evmux_timer_start(&timers[i], ms[i], 0);
}

/* Starting a started timer re-arms it; to a later deadline that is lazy
 * (only the timer changes until its entry reaches the top of the heap). */
static void bench_restart_all(const uint32_t *ms)
{
    for (size_t i = 0; i < ntimers; i++)
        evmux_timer_start(&timers[i], ms[i], 0);
}

static void bench_stop_all(void)
{
    for (size_t i = 0; i < ntimers; i++)
        evmux_timer_stop(&timers[i]);
}

static int bench_run(void)
{
    int rc = evmux_run(loop, EVMUX_RUN_DEFAULT);
    if (rc < 0)
        fprintf(stderr, "evmux: evmux_run: %s\n", evmux_strerror(rc));
    return rc < 0;
}

static int bench_is_active(size_t i)
{
    return evmux_is_active(&timers[i].handle);
}

static double bench_due_in_ms(size_t i)
{
    return (double)evmux_timer_get_due_in(&timers[i]);
}

static void bench_close(void)
{
    for (size_t i = 0; i < ntimers; i++)
        evmux_close(&timers[i].handle, NULL);
    evmux_run(loop, EVMUX_RUN_DEFAULT); /* runs the close callbacks */
    int rc = evmux_loop_free(loop);
    if (rc < 0)
        fprintf(stderr, "evmux: evmux_loop_free: %s\n", evmux_strerror(rc));
}

const struct timers_lib timers_lib = {
    .name = "evmux",
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
