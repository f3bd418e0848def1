/* Loop life cycle, run modes, the dispatch cycle and closing. The same on
 * every backend (select, poll, epoll, io_uring); the loop names no kind of
 * handle: each kind's table (handle.c) does what is particular to it.
 *
 * One iteration:
 *   1. run the timers that are due (by the clock read at the end of the
 *      previous iteration); read the clock again if any ran;
 *   2. the kinds' pass before the wait, if any kind has reports owed: what
 *      completed without waiting is reported, and a completion backend's
 *      requests for queued bytes are made, so that the wait submits them;
 *   3. on a completion backend, requests queued for room in the ring are
 *      submitted and owed cancels sent (op.c);
 *   4. apply deferred watcher removals, then ask the backend to wait, at
 *      most until the next timer (not at all if something is owed now:
 *      close callbacks, reports, always-ready watchers, requests); it only
 *      collects ready watchers into the pending queue, and results of
 *      requests;
 *   5. refresh the clock; queue the always-ready watchers (regular files);
 *      run the pending io callbacks, then the requests' results;
 *   6. the kinds' report pass: what completed without waiting (a write the
 *      kernel took at once), so that no callback runs inside the call that
 *      made the request;
 *   7. in EVMUX_RUN_ONCE, the timers that ended the wait;
 *   8. run the close callbacks of handles closed so far, and of closed
 *      handles whose last request has just ended;
 *   9. if timers are pending, refresh the clock for the next iteration.
 * When evmux_run returns, the kinds' exit pass and a submit hand the
 * kernel what callbacks wrote, as a readiness backend's write would have.
 * So the wait's timeout always counts from a clock read after the last
 * callback: a timer that fell due while callbacks ran fires in the next
 * iteration, whose wait does not block. The reads in steps 1 and 9 cost a
 * vDSO call each and are skipped when no timer needs them; callbacks
 * still see one cached time per phase (io callbacks: step 5's).
 * Callbacks never run inside the backend's wait, so stopping or closing a
 * watcher from any callback takes effect for the rest of the batch. */
#include "evmux_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t evmux__clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void *evmux__grow_zeroed(void *items, size_t *len, size_t index, size_t elem_size)
{
    if (index < *len)
        return items;
    size_t new_len = *len ? *len : 64;
    while (new_len <= index)
        new_len *= 2;
    char *grown = realloc(items, new_len * elem_size);
    if (grown == NULL)
        return NULL;
    memset(grown + *len * elem_size, 0, (new_len - *len) * elem_size);
    *len = new_len;
    return grown;
}

/* In order of preference for "auto". */
static const struct evmux_backend *const compiled_backends[] = {
#ifdef EVMUX_HAVE_URING
    &evmux__backend_uring,
#endif
#ifdef EVMUX_HAVE_EPOLL
    &evmux__backend_epoll,
#endif
#ifdef EVMUX_HAVE_POLL
    &evmux__backend_poll,
#endif
    &evmux__backend_select,
};
#define BACKEND_COUNT (sizeof compiled_backends / sizeof compiled_backends[0])

/* Backends evmux has on some build; naming one that this build lacks is
 * -ENOSYS rather than -EINVAL, so callers can tell the two apart. */
static const char *const known_backend_names[] = {
    "uring", "epoll", "poll", "select",
};

const char *evmux_backends_available(void)
{
    return ""
#ifdef EVMUX_HAVE_URING
           "uring,"
#endif
#ifdef EVMUX_HAVE_EPOLL
           "epoll,"
#endif
#ifdef EVMUX_HAVE_POLL
           "poll,"
#endif
           "select";
}

static int start_backend(evmux_loop *loop, const struct evmux_backend *backend)
{
    loop->backend = backend;
    int rc = backend->init(loop);
    if (rc < 0) {
        loop->backend = NULL;
        loop->backend_state = NULL;
    }
    return rc;
}

static int start_backend_named(evmux_loop *loop, const char *name)
{
    for (size_t i = 0; i < BACKEND_COUNT; i++)
        if (strcmp(compiled_backends[i]->name, name) == 0)
            return start_backend(loop, compiled_backends[i]);
    for (size_t i = 0; i < sizeof known_backend_names / sizeof known_backend_names[0]; i++)
        if (strcmp(known_backend_names[i], name) == 0)
            return -ENOSYS;
    return -EINVAL;
}

static int start_best_backend(evmux_loop *loop)
{
    int rc = -ENOSYS;
    for (size_t i = 0; i < BACKEND_COUNT; i++) {
        rc = start_backend(loop, compiled_backends[i]);
        if (rc == 0)
            return 0;
    }
    return rc;
}

int evmux_loop_new(evmux_loop **out, const evmux_loop_options *opts)
{
    if (out == NULL)
        return -EINVAL;
    const char *name = opts != NULL && opts->backend != NULL ? opts->backend : "auto";
    if (strcmp(name, "auto") == 0) {
        const char *env = getenv("EVMUX_BACKEND");
        if (env != NULL && env[0] != '\0')
            name = env;
    }

    if (opts != NULL && opts->pool_threads > 1024)
        return -EINVAL;
    evmux_loop *loop = calloc(1, sizeof *loop);
    if (loop == NULL)
        return -ENOMEM;
    loop->now_ns = evmux__clock_ns();
    loop->pool_threads_max = opts != NULL ? opts->pool_threads : 0;
    loop->signal_slot = -1;
    atomic_init(&loop->run_owner, 0);
    atomic_init(&loop->signal_mask, 0);
    atomic_init(&loop->stop_requested, false);
    evmux__ops_init(loop);

    int rc = strcmp(name, "auto") == 0 ? start_best_backend(loop)
                                       : start_backend_named(loop, name);
    if (rc < 0) {
        free(loop);
        return rc;
    }
    rc = evmux__async_loop_init(loop);
    if (rc < 0) {
        evmux__io_flush(loop);
        loop->backend->destroy(loop);
        evmux__io_free(loop);
        free(loop);
        return rc;
    }
    *out = loop;
    return 0;
}

int evmux_loop_free(evmux_loop *loop)
{
    if (loop == NULL)
        return -EINVAL;
    if (loop->open_handles > 0 || loop->work_outstanding > 0 ||
        atomic_load(&loop->run_owner) != 0)
        return -EBUSY;
    /* The kinds in reverse: the pool joins its threads (which may still
     * wake us) before the wake-up goes. */
    for (unsigned n = EVMUX__KIND_LIMIT; n-- > 0;)
        if (loop->kinds[n] != NULL && loop->kinds[n]->loop_free != NULL)
            loop->kinds[n]->loop_free(loop);
    assert(!evmux__ops_busy(loop)); /* their handles are open until they end */
    evmux__io_flush(loop); /* a backend with requests in flight ends them */
    loop->backend->destroy(loop);
    evmux__io_free(loop);
    evmux__timers_free(loop);
    free(loop);
    return 0;
}

int evmux_loop_fork(evmux_loop *loop)
{
    if (loop == NULL)
        return -EINVAL;
    /* User-space interest sets (poll, select) survive fork as they are.
     * A kernel's (epoll, io_uring) is still the parent's until rebuilt:
     * the removals owed to it are dropped, not applied, since the child
     * would take them out of the parent's set (or write into its ring).
     * A backend that cannot rebuild leaves a loop that cannot wait: the
     * kinds then ask nothing of it. */
    int rc = 0;
    if (loop->backend->after_fork == NULL) {
        evmux__io_flush(loop);
    } else {
        evmux__io_drop_removals(loop);
        rc = loop->backend->after_fork(loop);
        if (rc < 0)
            return rc;
        rc = evmux__io_reinstall_all(loop);
    }
    if (loop->backend->completion != NULL)
        evmux__ops_after_fork(loop);
    /* The kinds in order: the wake-up before the pool that uses it. */
    for (unsigned n = 0; n < EVMUX__KIND_LIMIT; n++) {
        if (loop->kinds[n] == NULL || loop->kinds[n]->loop_after_fork == NULL)
            continue;
        int kind_rc = loop->kinds[n]->loop_after_fork(loop);
        if (rc == 0)
            rc = kind_rc;
    }
    return rc;
}

const char *evmux_loop_backend(const evmux_loop *loop)
{
    if (loop == NULL)
        return "";
    return loop->backend->name;
}

uint64_t evmux_now(const evmux_loop *loop)
{
    if (loop == NULL)
        return 0;
    return loop->now_ns / 1000000u;
}

void evmux_update_time(evmux_loop *loop)
{
    if (loop == NULL)
        return;
    loop->now_ns = evmux__clock_ns();
}

int evmux_loop_alive(const evmux_loop *loop)
{
    if (loop == NULL)
        return 0;
    return loop->active_refs > 0 || loop->closing_head != NULL || loop->deferred_owed > 0 ||
           loop->closes_waiting > 0;
}

/* Identifies the calling thread: the address of a thread-local object. */
static _Thread_local char this_thread_tag;

void evmux_stop(evmux_loop *loop)
{
    if (loop == NULL)
        return;
    atomic_store(&loop->stop_requested, true);
    /* Another thread's loop may be blocked: wake it. Its own thread, or a
     * loop not running, checks the flag before it next blocks. (evmux_run
     * publishes its owner before its first check of the flag, so either it
     * sees the flag or we see it running.) */
    uintptr_t owner = atomic_load(&loop->run_owner);
    if (owner != 0 && owner != (uintptr_t)&this_thread_tag)
        evmux__loop_wake(loop);
}

void evmux__loop_stats(const evmux_loop *loop, struct evmux_loop_stats *out)
{
    *out = loop->stats;
}

unsigned evmux__test_refuse_ring(evmux_loop *loop, unsigned n)
{
    return loop->backend->test_refuse != NULL ? loop->backend->test_refuse(loop, n) : 0;
}

/* ---- running ---- */

/* ops_owed: requests still wait for room in the ring, or their results
 * are owed without the kernel (op.c). */
static uint64_t wait_timeout_ns(const evmux_loop *loop, evmux_run_mode mode, bool ops_owed)
{
    if (mode == EVMUX_RUN_NOWAIT || atomic_load(&loop->stop_requested) || ops_owed ||
        loop->closing_head != NULL || loop->deferred_owed > 0 || loop->always_ready_count > 0 ||
        (loop->active_refs == 0 && loop->closes_waiting == 0))
        return 0;
    return evmux__timers_next_ns(loop);
}

int evmux_run(evmux_loop *loop, evmux_run_mode mode)
{
    if (loop == NULL || mode < EVMUX_RUN_DEFAULT || mode > EVMUX_RUN_NOWAIT)
        return -EINVAL;
    if (atomic_load(&loop->run_owner) != 0)
        return -EBUSY;
    atomic_store(&loop->run_owner, (uintptr_t)&this_thread_tag);

    int rc = 0;
    evmux_update_time(loop);
    evmux__io_flush(loop); /* even when nothing is left to run */
    /* A sequentially consistent load, after run_owner is set (evmux_stop). */
    while (!atomic_load(&loop->stop_requested) && evmux_loop_alive(loop)) {
        /* Timer callbacks take time too: the wait below counts from after
         * them, so a timer that fell due meanwhile does not sleep on. */
        if (evmux__timers_run(loop))
            evmux_update_time(loop);
        if (loop->deferred_owed > 0)
            evmux__kinds_pass(loop, EVMUX__PASS_BEFORE_WAIT);
        bool ops_owed = loop->backend->completion != NULL && evmux__ops_owed(loop) &&
                        evmux__ops_prepare(loop);
        evmux__io_flush(loop);
        uint64_t timeout_ns = wait_timeout_ns(loop, mode, ops_owed);
        loop->silent_wakes = 0;
        rc = loop->backend->wait(loop, timeout_ns);
        loop->stats.backend_waits++;
        evmux_update_time(loop);
        bool woken = rc > (int)loop->silent_wakes;
        if (rc >= 0 && evmux__io_collect_always_ready(loop) > 0)
            woken = true;
        evmux__io_run_pending(loop);
        if (loop->backend->completion != NULL)
            evmux__ops_run_completions(loop);
        if (loop->deferred_owed > 0)
            evmux__kinds_pass(loop, EVMUX__PASS_REPORT);
        if (mode == EVMUX_RUN_ONCE && evmux__timers_next_ns(loop) == 0) {
            evmux__timers_run(loop); /* the timer that ended the wait */
            woken = true;
        }
        evmux__run_closing(loop);
        loop->stats.iterations++;
        if (rc < 0)
            break;
        /* ONCE blocks until something happens: a wait cut short by a
         * signal (or by the kernel tearing down some io_uring ring of this
         * thread, which looks the same) waits again. */
        if (mode == EVMUX_RUN_ONCE ? woken || timeout_ns == 0 : mode != EVMUX_RUN_DEFAULT)
            break;
        /* The callbacks above took time: the next pass's timers and wait
         * count from now, so a timer that fell due during them fires at
         * once. Without timers nothing reads the time before the wait. */
        if (loop->timer_count > 0)
            evmux_update_time(loop);
    }
    if (loop->deferred_owed > 0)
        evmux__kinds_pass(loop, EVMUX__PASS_RUN_EXIT);
    if (loop->backend->completion != NULL)
        evmux__ops_flush(loop);
    atomic_store(&loop->stop_requested, false);
    atomic_store(&loop->run_owner, 0);
    return rc < 0 ? rc : 0;
}
