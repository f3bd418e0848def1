/* Timer benchmark: libuv (binary heap of nodes embedded in the handles,
 * linked by pointers). */
#include "timers_bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

static uv_loop_t loop;
static uv_timer_t *timers;
static size_t ntimers;

static void on_fire(uv_timer_t *t)
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
    int rc = uv_loop_init(&loop);
    if (rc < 0) {
        fprintf(stderr, "libuv: uv_loop_init: %s\n", uv_strerror(rc));
        return 1;
    }
    for (size_t i = 0; i < ntimers; i++)
        uv_timer_init(&loop, &timers[i]);
    return 0;
}

static void bench_update_time(void)
{
    uv_update_time(&loop);
}

static void bench_start_all(const uint32_t *ms)
{
    for (size_t i = 0; i < ntimers; i++)
        uv_timer_start(&timers[i], on_fire, ms[i], 0);
}

/* uv_timer_start on an active timer stops and starts it again; that is
 * what uv_timer_again does too. */
static void bench_restart_all(const uint32_t *ms)
{
    for (size_t i = 0; i < ntimers; i++)
        uv_timer_start(&timers[i], on_fire, ms[i], 0);
}

static void bench_stop_all(void)
{
    for (size_t i = 0; i < ntimers; i++)
        uv_timer_stop(&timers[i]);
}

static int bench_run(void)
{
    uv_run(&loop, UV_RUN_DEFAULT);
    return 0;
}

static int bench_is_active(size_t i)
{
    return uv_is_active((uv_handle_t *)&timers[i]);
}

static double bench_due_in_ms(size_t i)
{
    return (double)uv_timer_get_due_in(&timers[i]);
}

static void bench_close(void)
{
    for (size_t i = 0; i < ntimers; i++)
        uv_close((uv_handle_t *)&timers[i], NULL);
    uv_run(&loop, UV_RUN_DEFAULT); /* runs the close callbacks */
    int rc = uv_loop_close(&loop);
    if (rc < 0)
        fprintf(stderr, "libuv: uv_loop_close: %s\n", uv_strerror(rc));
}

const struct timers_lib timers_lib = {
    .name = "libuv",
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
