/* evmux-bench --threads: one loop per thread, each running a share of the
 * load (connection i on loop i % N), started and stopped together. The
 * loads (evmux_bench.c: streams, bench_udp.c: datagrams) see one member
 * each: their share of the options, their own results, and the few calls
 * below that tie them to the others; bench_threads.c does the rest.
 *
 * A member's life, on its own thread:
 *   bench_member_loop_new   the loop, made on this thread (io_uring ties
 *                           a loop to the thread that created it)
 *   bench_member_listen     from now on the team may call on_go / on_stop
 *   bench_member_ready      set up (or found it has nothing to run),
 *                           waiting for the others; on_go runs once every
 *                           member is ready (at once for the last one),
 *                           on_stop if the run ends instead
 *   bench_window_open/close around the measured window
 *   bench_member_stop_all   this member's run ended early: the others end
 *                           theirs (their replies owed are still checked)
 *   bench_member_detach     after evmux_run returned
 * Every callback runs on the member's own thread, from its loop. */
#ifndef EVMUX_BENCH_THREADS_H
#define EVMUX_BENCH_THREADS_H

#include "bench.h"

#include <evmux.h>

#include <stdbool.h>
#include <stdint.h>

struct bench_team;
struct bench_member;

typedef void (*bench_go_cb)(struct bench_member *m, uint64_t go_ns);
typedef void (*bench_stop_cb)(struct bench_member *m);

struct bench_member {
    struct bench_team *team;
    unsigned index;                 /* this thread's number, 0 to threads - 1 */
    unsigned count;                 /* how many threads */
    struct bench_options opt;       /* this thread's share: conns and idle are its own */
    const struct bench_options *all; /* the whole run's */
    struct bench_results *res;      /* this thread's results, merged at the end */
    void *load;                     /* the load's context */
    /* private to bench_threads.c */
    evmux_loop *loop;
    evmux_async wake;
    bench_go_cb on_go;
    bench_stop_cb on_stop;
    bool listening;                 /* the team may wake it (under the team's lock) */
    bool arrived;                   /* it said ready, or stopped the run */
    bool started, stopped;          /* on_go, on_stop called (its own thread only) */
};

/* The load run by each thread; it reports through m->res. */
typedef void (*bench_load_fn)(struct bench_member *m);

/* Runs opt->threads members of `load` (member 0 on the calling thread) and
 * merges their results into *merged, whose target (--host as given) each
 * member starts from. Returns 0, or 1 when a member failed in a way it
 * already said on stderr (the loop, memory, a thread). */
int bench_threads_run(const struct bench_options *opt, bench_load_fn load,
                      struct bench_results *merged);

/* The global number of a member's k-th connection (of its active ones, or
 * of its idle ones): connection i runs on loop i % threads. */
static inline size_t bench_member_conn(const struct bench_member *m, size_t k)
{
    return m->index + k * m->count;
}

/* The loop of --backend, on the calling thread; its name goes into the
 * results. NULL when it cannot start (said on stderr, once for the run). */
evmux_loop *bench_member_loop_new(struct bench_member *m);

/* Lets the team reach this member through its loop. If the run is already
 * over, on_stop runs in the loop's first iteration. */
int bench_member_listen(struct bench_member *m, bench_go_cb on_go, bench_stop_cb on_stop);

/* Every connection is set up. on_go(go_ns) runs when all members are: at
 * once if this is the last, else from the loop. go_ns is the moment the
 * last one was ready: the warm-up ends at go_ns + --warmup for everyone.
 * With `usable` false the member has nothing to run (no connection, no
 * address) and ends its own run; the run then stops once every member has
 * said ready, rather than start: so each has tried all its connections,
 * and the failures are counted as without --threads. */
void bench_member_ready(struct bench_member *m, bool usable);

/* This member's run ends before its time (every connection gone, a
 * failure): the others are stopped (on_stop). Harmless when repeated.
 * True if this call ended the run (it was not over already). */
bool bench_member_stop_all(struct bench_member *m);

/* As bench_member_stop_all, for a failure that makes the whole run fail
 * (exit 1): says it on stderr unless another member failed first. */
void bench_member_fail(struct bench_member *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* After evmux_run returned: the team no longer wakes this member. With
 * loop_ok, its wake-up handle is closed (the loop runs until it is), so
 * that the loop can be freed. */
void bench_member_detach(struct bench_member *m, bool loop_ok);

/* The measured window: the first member to open it starts the team's
 * window (its start time and the CPU times at that moment); every member
 * ends at the same deadline, returned in ns of now_ns(). The team's window
 * ends with the last member to close its own. */
uint64_t bench_window_open(struct bench_member *m);
void bench_window_close(struct bench_member *m);

/* The number of the next problem note for the whole run, from 0: the loads
 * show the first few and count the rest. */
unsigned bench_next_note(struct bench_member *m);

#endif
