/* Loop life cycle, run modes, the dispatch cycle and closing.
 *
 * One iteration:
 *   1. run the timers that are due (by the clock read at the end of the
 *      previous iteration); read the clock again if any ran;
 *   2. report stream requests that completed without waiting, and hand
 *      the streams' queued bytes to a completion backend (io_uring), so
 *      that the wait below submits them;
 *   3. apply deferred watcher removals, then ask the backend to wait, at
 *      most until the next timer (not at all if something is owed now); it
 *      only collects ready watchers into the pending queue, and results
 *      of kernel requests;
 *   4. refresh the clock; queue the always-ready watchers (regular files);
 *      run the pending io callbacks, then the completion backend's results;
 *   5. report stream requests that completed without waiting (a write the
 *      kernel took at once), so their callbacks never run inside the call
 *      that made the request;
 *   6. in EVMUX_RUN_ONCE, the timers that ended the wait;
 *   7. run the close callbacks of handles closed so far;
 *   8. if timers are pending, refresh the clock for the next iteration.
 * So the wait's timeout always counts from a clock read after the last
 * callback: a timer that fell due while callbacks ran fires in the next
 * iteration, whose wait does not block. The reads in steps 1 and 8 cost a
 * vDSO call each and are skipped when no timer needs them; callbacks
 * still see one cached time per phase (io callbacks: step 4's).
 * Callbacks never run inside the backend's wait, so stopping or closing a
 * watcher from any callback takes effect for the rest of the batch. */
#include "evmux_internal.h"

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
    evmux__pool_free(loop); /* joins its threads, which may still wake us */
    evmux__async_loop_free(loop);
    evmux__io_flush(loop); /* a backend with requests in flight ends them */
    loop->backend->destroy(loop);
    evmux__streams_free(loop);
    evmux__io_free(loop);
    evmux__timers_free(loop);
    free(loop);
    return 0;
}

int evmux_loop_fork(evmux_loop *loop)
{
    if (loop == NULL)
        return -EINVAL;
    evmux__io_flush(loop);
    int rc = 0;
    /* User-space interest sets (poll, select) survive fork as they are. */
    if (loop->backend->after_fork != NULL) {
        rc = loop->backend->after_fork(loop);
        if (rc == 0)
            rc = evmux__io_reinstall_all(loop);
    }
    /* Each step regardless of the others' failure: the pool's requests
     * must settle even when the loop can no longer wait. */
    int async_rc = evmux__async_after_fork(loop);
    int pool_rc = evmux__pool_after_fork(loop);
    return rc < 0 ? rc : async_rc < 0 ? async_rc : pool_rc;
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
    return loop->active_refs > 0 || loop->closing_head != NULL || loop->deferred_head != NULL ||
           loop->parked_streams > 0;
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

/* ---- handles ---- */

void evmux__handle_init(evmux_loop *loop, evmux_handle *h, unsigned type)
{
    h->loop = loop;
    h->close_cb = NULL;
    h->next_closing = NULL;
    h->type = type;
    h->flags = EVMUX_FLAG_REF;
    loop->open_handles++;
}

void evmux__handle_make_internal(evmux_handle *h)
{
    if (h->flags & EVMUX_FLAG_INTERNAL)
        return;
    h->flags |= EVMUX_FLAG_INTERNAL;
    h->loop->open_handles--;
}

static void set_ref(evmux_handle *h, bool ref)
{
    if (ref == ((h->flags & EVMUX_FLAG_REF) != 0))
        return;
    if (h->flags & EVMUX_FLAG_ACTIVE) {
        if (ref)
            h->loop->active_refs++;
        else
            h->loop->active_refs--;
    }
    h->flags ^= EVMUX_FLAG_REF;
}

/* A stream or listener is kept running by its internal watchers, so the
 * reference follows them. */
static void set_ref_deep(evmux_handle *h, bool ref)
{
    set_ref(h, ref);
    if (h->type == EVMUX_HANDLE_STREAM) {
        evmux_stream *s = (evmux_stream *)h;
        set_ref(&s->io.handle, ref);
        if (s->connect_req != NULL)
            set_ref(&s->connect_req->timeout.handle, ref);
    } else if (h->type == EVMUX_HANDLE_LISTENER) {
        set_ref(&((evmux_listener *)h)->io.handle, ref);
        set_ref(&((evmux_listener *)h)->retry.handle, ref);
    }
}

void evmux_ref(evmux_handle *h)
{
    if (h == NULL)
        return;
    set_ref_deep(h, true);
}

void evmux_unref(evmux_handle *h)
{
    if (h == NULL)
        return;
    set_ref_deep(h, false);
}

int evmux_is_closing(const evmux_handle *h)
{
    if (h == NULL)
        return 0;
    return evmux__closing(h);
}

evmux_loop *evmux_handle_loop(const evmux_handle *h)
{
    return h ? h->loop : NULL;
}

int evmux_is_active(const evmux_handle *h)
{
    if (h == NULL)
        return 0;
    if (h->type == EVMUX_HANDLE_STREAM) /* its own flag: requests in a completion backend */
        return (h->flags & EVMUX_FLAG_ACTIVE) ||
               evmux_is_active(&((const evmux_stream *)h)->io.handle);
    if (h->type == EVMUX_HANDLE_LISTENER)
        return evmux_is_active(&((const evmux_listener *)h)->io.handle) ||
               evmux_is_active(&((const evmux_listener *)h)->retry.handle);
    return (h->flags & EVMUX_FLAG_ACTIVE) != 0;
}

int evmux_close(evmux_handle *h, evmux_close_cb close_cb)
{
    if (h == NULL || h->loop == NULL || (h->flags & EVMUX_FLAG_INTERNAL))
        return -EINVAL;
    if (evmux_is_closing(h))
        return -EALREADY;
    switch (h->type) {
    case EVMUX_HANDLE_IO:
        evmux_io_stop((evmux_io *)h);
        break;
    case EVMUX_HANDLE_TIMER:
        evmux_timer_stop((evmux_timer *)h);
        break;
    case EVMUX_HANDLE_STREAM:
        evmux__stream_close_begin((evmux_stream *)h);
        break;
    case EVMUX_HANDLE_LISTENER:
        evmux__listener_close_begin((evmux_listener *)h);
        break;
    case EVMUX_HANDLE_ASYNC:
        evmux__async_close((evmux_async *)h);
        break;
    case EVMUX_HANDLE_SIGNAL:
        evmux_signal_stop((evmux_signal *)h);
        break;
    default:
        return -EINVAL;
    }
    h->flags |= EVMUX_FLAG_CLOSING;
    h->close_cb = close_cb;
    evmux__closing_push(h);
    return 0;
}

void evmux__closing_push(evmux_handle *h)
{
    evmux_loop *loop = h->loop;
    h->next_closing = NULL;
    if (loop->closing_tail != NULL)
        loop->closing_tail->next_closing = h;
    else
        loop->closing_head = h;
    loop->closing_tail = h;
}

/* Close callbacks queued by other close callbacks run in the same pass. */
static void run_closing(evmux_loop *loop)
{
    evmux_handle *h;
    while ((h = loop->closing_head) != NULL) {
        loop->closing_head = h->next_closing;
        if (loop->closing_head == NULL)
            loop->closing_tail = NULL;
        h->next_closing = NULL;
        if (h->type == EVMUX_HANDLE_STREAM && evmux__stream_park((evmux_stream *)h))
            continue; /* queued again when the kernel lets go of it */
        if (h->type == EVMUX_HANDLE_STREAM)
            evmux__stream_close_finish((evmux_stream *)h); /* -ECANCELED requests */
        else if (h->type == EVMUX_HANDLE_LISTENER)
            evmux__listener_close_finish((evmux_listener *)h);
        h->flags = (h->flags & ~EVMUX_FLAG_CLOSING) | EVMUX_FLAG_CLOSED;
        loop->open_handles--;
        if (h->close_cb != NULL)
            h->close_cb(h); /* may free h */
    }
}

/* ---- running ---- */

static uint64_t wait_timeout_ns(const evmux_loop *loop, evmux_run_mode mode)
{
    if (mode == EVMUX_RUN_NOWAIT || atomic_load(&loop->stop_requested) ||
        loop->closing_head != NULL ||
        loop->deferred_head != NULL || loop->always_ready_count > 0 ||
        (loop->active_refs == 0 && loop->parked_streams == 0))
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
        evmux__streams_run_deferred(loop, true); /* and queued sends, just before waiting */
        evmux__io_flush(loop);
        uint64_t timeout_ns = wait_timeout_ns(loop, mode);
        loop->silent_wakes = 0;
        rc = loop->backend->wait(loop, timeout_ns);
        loop->stats.backend_waits++;
        evmux_update_time(loop);
        bool woken = rc > (int)loop->silent_wakes;
        if (rc >= 0 && evmux__io_collect_always_ready(loop) > 0)
            woken = true;
        evmux__io_run_pending(loop);
        if (loop->backend->stream_ops != NULL)
            loop->backend->stream_ops->run_completions(loop);
        evmux__streams_run_deferred(loop, false);
        if (mode == EVMUX_RUN_ONCE && evmux__timers_next_ns(loop) == 0) {
            evmux__timers_run(loop); /* the timer that ended the wait */
            woken = true;
        }
        run_closing(loop);
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
    atomic_store(&loop->stop_requested, false);
    atomic_store(&loop->run_owner, 0);
    return rc < 0 ? rc : 0;
}
