/* Timer benchmark: libevent 2 (binary min-heap of event pointers; common
 * timeouts are not used, as the timeouts here are all different). */
#include "timers_bench.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

static struct event_base *base;
static char *events; /* ntimers structs of event_get_struct_event_size() */
static size_t event_size, ntimers;

static struct event *event_at(size_t i)
{
    return (struct event *)(events + i * event_size);
}

static void on_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    timers_on_fire((size_t)(uintptr_t)arg);
}

static int bench_alloc(size_t n)
{
    /* struct event stays opaque: one array sized by the library. */
    event_size = event_get_struct_event_size();
    events = calloc(n, event_size);
    ntimers = n;
    return events == NULL;
}

static int bench_open(void)
{
    struct event_config *cfg = event_config_new();
    if (cfg == NULL)
        return 1;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_IGNORE_ENV);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (base == NULL) {
        fprintf(stderr, "libevent: event_base_new failed\n");
        return 1;
    }
    for (size_t i = 0; i < ntimers; i++)
        evtimer_assign(event_at(i), base, on_fire, (void *)(uintptr_t)i);
    return 0;
}

/* libevent reads the clock in every event_add made outside a callback;
 * there is no cached time to refresh. */
static void bench_update_time(void)
{
}

static struct timeval ms_to_tv(uint32_t ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
}

static void bench_start_all(const uint32_t *ms)
{
    for (size_t i = 0; i < ntimers; i++) {
        struct timeval tv = ms_to_tv(ms[i]);
        evtimer_add(event_at(i), &tv);
    }
}

/* Adding a pending timer again re-arms it (adjusting it in the heap). */
static void bench_restart_all(const uint32_t *ms)
{
    for (size_t i = 0; i < ntimers; i++) {
        struct timeval tv = ms_to_tv(ms[i]);
        evtimer_add(event_at(i), &tv);
    }
}

static void bench_stop_all(void)
{
    for (size_t i = 0; i < ntimers; i++)
        evtimer_del(event_at(i));
}

static int bench_run(void)
{
    if (event_base_dispatch(base) < 0) {
        fprintf(stderr, "libevent: event_base_dispatch failed\n");
        return 1;
    }
    return 0;
}

static int bench_is_active(size_t i)
{
    return evtimer_pending(event_at(i), NULL) != 0;
}

/* event_pending reports the deadline on the wall clock. */
static double bench_due_in_ms(size_t i)
{
    struct timeval when, now;
    if (!event_pending(event_at(i), EV_TIMEOUT, &when))
        return 0;
    gettimeofday(&now, NULL);
    return (double)(when.tv_sec - now.tv_sec) * 1e3 + (double)(when.tv_usec - now.tv_usec) / 1e3;
}

static void bench_close(void)
{
    event_base_free(base);
}

const struct timers_lib timers_lib = {
    .name = "libevent",
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
