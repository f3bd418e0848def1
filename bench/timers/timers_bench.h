/* Timer benchmark: the harness shared by the per-library programs.
 *
 * The harness draws the timeouts, times the phases and checks the results;
 * each library file (timers_evmux.c, timers_libev.c, ...) wraps its loop
 * behind struct timers_lib. Each phase function loops over all timers
 * itself, so a timer operation is a direct call into the library, not a
 * call through this table. */
#ifndef TIMERS_BENCH_H
#define TIMERS_BENCH_H

#include <stddef.h>
#include <stdint.h>

struct timers_lib {
    const char *name;
    /* Allocates n timer structs in one array; called once per program, so
     * no phase measures malloc. */
    int (*alloc)(size_t n);
    /* Creates a loop and initialises every timer (not started). */
    int (*open)(void);
    /* Refreshes the loop's cached time (timeouts count from it). */
    void (*update_time)(void);
    /* Starts timer i with timeout ms[i] (one-shot). */
    void (*start_all)(const uint32_t *ms);
    /* Re-arms every started timer i to ms[i], the library's idiomatic way. */
    void (*restart_all)(const uint32_t *ms);
    void (*stop_all)(void);
    /* Runs the loop until no timer is left. Returns 0 or nonzero. */
    int (*run)(void);
    /* For the checks: whether timer i is started, and when it is due. */
    int (*is_active)(size_t i);
    double (*due_in_ms)(size_t i);
    /* Closes every timer and frees the loop (not the array). */
    void (*close)(void);
};

extern const struct timers_lib timers_lib; /* defined by each library file */

/* Per-timer fire counts, checked after 'expire'. */
extern uint8_t *timers_fired;
extern size_t timers_fired_total;

/* The body of every library's timer callback. */
static inline void timers_on_fire(size_t i)
{
    timers_fired[i]++;
    timers_fired_total++;
}

#endif
