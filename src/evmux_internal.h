/* Internal declarations shared by the core files and the backends. Not
 * installed; the tests include it for the statistics below. */
#ifndef EVMUX_INTERNAL_H
#define EVMUX_INTERNAL_H

#include "evmux.h"
#include "backend/backend.h"
#include "op.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>

/* Kinds of handle (and the worker pool's requests), numbered for
 * evmux_handle.type and loop->kinds. A loop sets its kinds up after fork
 * in this order and tears them down in the reverse one: the async kind
 * (the loop's wake-up) exists before the pool and outlives it. */
enum evmux_handle_type {
    EVMUX_HANDLE_IO = 1,
    EVMUX_HANDLE_TIMER = 2,
    EVMUX_HANDLE_STREAM = 3,
    EVMUX_HANDLE_LISTENER = 4,
    EVMUX_HANDLE_ASYNC = 5,
    EVMUX_HANDLE_SIGNAL = 6,
    EVMUX_KIND_WORK = 7, /* requests, not handles: only the loop hooks */
    EVMUX_KIND_LOOKUP = 8, /* name lookups (resolve.c): their reports owed */
    EVMUX_HANDLE_UDP = 9,
    EVMUX_HANDLE_HANDOFF = 10,
    EVMUX__KIND_LIMIT = 11
};

/* The loop's passes over the kinds that keep reports owed (loop_pass). */
enum evmux__pass {
    /* After the iteration's callbacks: report what completed without
     * waiting (a write the kernel took at once), never inside the call
     * that made the request. */
    EVMUX__PASS_REPORT,
    /* The same, right before the wait; a completion backend's requests
     * are made here too, so that the wait submits them. */
    EVMUX__PASS_BEFORE_WAIT,
    /* evmux_run is returning: bytes written in its callbacks go to the
     * kernel now, as a readiness backend's would have gone. */
    EVMUX__PASS_RUN_EXIT,
};

/* What the core does with one kind, so that it names none (handle.c).
 * Every entry but number and close_begin may be NULL. */
struct evmux__kind {
    unsigned number; /* enum evmux_handle_type */
    /* evmux_close: stop the handle at once. */
    void (*close_begin)(evmux_handle *h);
    /* true while the kernel still holds requests of the closed handle: its
     * close callback waits, and the kind calls evmux__close_resume when
     * the last one has ended. */
    bool (*close_wait)(evmux_handle *h);
    /* Right before the close callback: pending requests complete. */
    void (*close_finish)(evmux_handle *h);
    /* The handle's internal parts follow its reference. */
    void (*set_ref)(evmux_handle *h, bool ref);
    /* When the handle's own flag does not tell it all. */
    int (*is_active)(const evmux_handle *h);
    /* Once per loop that has the kind: in a forked child, after the
     * backend's kernel state is rebuilt; and in evmux_loop_free. */
    int (*loop_after_fork)(evmux_loop *loop);
    void (*loop_free)(evmux_loop *loop);
    /* Runs while loop->deferred_owed > 0 (see enum evmux__pass). */
    void (*loop_pass)(evmux_loop *loop, enum evmux__pass pass);
};

enum evmux_handle_flag {
    EVMUX_FLAG_ACTIVE = 1u << 0,
    EVMUX_FLAG_REF = 1u << 1,
    EVMUX_FLAG_CLOSING = 1u << 2,
    EVMUX_FLAG_CLOSED = 1u << 3,
    EVMUX_FLAG_PENDING = 1u << 4, /* io: on the pending queue */
    /* Part of another handle (a stream's watcher or its connect timeout): not
     * counted as open, never closed on its own, only stopped. */
    EVMUX_FLAG_INTERNAL = 1u << 5,
    /* io: not yet registered since init; its descriptor may be a new file
     * behind a number whose old registration is still being removed. */
    EVMUX_FLAG_IO_FRESH = 1u << 6,
    /* io: its descriptor cannot be waited for (a regular file): it counts
     * as ready for its whole interest on every iteration, as poll(2)
     * reports such files, and the backend never hears of it. */
    EVMUX_FLAG_IO_ALWAYS_READY = 1u << 7,
    /* io: its descriptor is known to be an open socket (accepted or made
     * by the library), so its first start skips the fstat check. */
    EVMUX_FLAG_IO_SOCKET = 1u << 8,
    /* Closed; its close callback waits for the kernel (close_wait). */
    EVMUX_FLAG_CLOSE_WAITING = 1u << 9
};

/* A timer heap entry: the whole sort key in one integer, next to the timer,
 * so that sifting compares integers and never touches the timers. The key
 * is (bucket << SEQ_BITS) | seq: the bucket is the deadline rounded up to
 * the next 2^UNIT_SHIFT ns, counted from the loop's epoch (never early);
 * seq is the start order, which keeps equal deadlines first in, first out.
 * After a lazy restart the key is smaller than the timer's own (timer.c). */
#define EVMUX__TIMER_UNIT_SHIFT 16 /* 65.536 us buckets */
#define EVMUX__TIMER_SEQ_BITS 28
#define EVMUX__TIMER_BUCKET_MAX ((UINT64_C(1) << (64 - EVMUX__TIMER_SEQ_BITS)) - 1)
struct evmux_timer_slot {
    uint64_t key;
    evmux_timer *timer;
};

/* Counters for tests and tuning; cheap enough to keep always. */
struct evmux_loop_stats {
    uint64_t iterations;
    uint64_t backend_waits;
    uint64_t interest_changes; /* calls into backend change/forget */
    uint64_t kernel_ctl_calls; /* epoll_ctl and the like, made by the backend */
};

/* What the loop knows about one descriptor number. */
struct evmux_fd_slot {
    evmux_io *watcher;      /* started watcher on this fd, or NULL */
    unsigned kernel_events; /* interest the backend holds for this fd */
    bool dirty;             /* on the loop's list of removals to apply */
};

#define EVMUX__SIGNAL_LIMIT 65 /* signals 1..64 */

struct evmux_loop {
    const struct evmux_backend *backend;
    void *backend_state;

    uint64_t now_ns; /* cached monotonic time */

    struct evmux_fd_slot *fds;
    size_t fds_len;
    int *dirty_fds; /* stopped watchers' descriptors, removed before waiting */
    size_t dirty_count;
    size_t dirty_capacity;

    evmux_io **always_ready; /* started watchers with EVMUX_FLAG_IO_ALWAYS_READY */
    size_t always_ready_count, always_ready_capacity;

    evmux_io *pending_head; /* io watchers with collected events */
    evmux_io *pending_tail;

    struct evmux_timer_slot *timer_alloc; /* what malloc returned */
    struct evmux_timer_slot *timer_heap;  /* the root: timer_alloc + 0..3 */
    size_t timer_count;
    size_t timer_capacity; /* slots from timer_heap on */
    uint64_t timer_seq;    /* next start sequence */
    uint64_t timer_epoch;  /* bucket number (ns >> UNIT_SHIFT) keys count from */

    evmux_handle *closing_head;
    evmux_handle *closing_tail;

    size_t closes_waiting; /* handles with EVMUX_FLAG_CLOSE_WAITING */
    /* Handles on some kind's list of reports owed (loop_pass): while there
     * are any the loop neither blocks nor ends. */
    size_t deferred_owed;

    struct evmux__ops ops; /* requests to the kernel (op.c) */

    /* Cross-thread wake-ups (async.c, wakeup.c): one descriptor per loop,
     * written at most once until the loop has read it. */
    int wake_read_fd, wake_write_fd;
    evmux_io wake_io;
    atomic_int wake_pending;
    evmux_async *asyncs;      /* every open evmux_async of the loop */
    evmux_async *async_next;  /* the scan's next handle, kept valid by closes */
    uint64_t wake_calls;      /* callbacks run from wake-ups (async, signal, pool) */
    unsigned silent_wakes;    /* wake-ups in this wait that ran no callback */
    atomic_uintptr_t run_owner; /* the running thread's tag while evmux_run runs, else 0 */
    /* Tests only: called between the two steps of taking a wake-up. */
    void (*wake_test_hook)(evmux_loop *loop);

    /* Signals (signal.c): the signals this loop's handles watch (bit
     * signum - 1), read by the handler on any thread; the count of each
     * signal's arrivals seen so far; the started handles. */
    atomic_ullong signal_mask;
    unsigned signal_seen[EVMUX__SIGNAL_LIMIT];
    evmux_signal *signals;
    evmux_signal *signal_next; /* the dispatch's next handle, kept valid by stops */
    int signal_slot;           /* in the process's table of such loops, or -1 */

    struct evmux_pool *pool; /* started by the first evmux_queue_work */
    /* Work queued whose after_cb has not run, and lookups whose report is
     * owed without the pool (resolve.c): evmux_loop_free waits for both. */
    size_t work_outstanding;

    size_t open_handles;   /* initialised, close callback not yet run */
    size_t active_refs;    /* active and referenced */
    atomic_bool stop_requested;
    unsigned pool_threads_max;

    /* The kinds of handle this loop has had, by number (handle.c), and
     * what each keeps per loop. */
    const struct evmux__kind *kinds[EVMUX__KIND_LIMIT];
    void *kind_data[EVMUX__KIND_LIMIT];

    struct evmux_loop_stats stats;
};

void evmux__loop_stats(const evmux_loop *loop, struct evmux_loop_stats *out);
/* Tests only: see struct evmux_backend.test_refuse; 0 without a ring. */
unsigned evmux__test_refuse_ring(evmux_loop *loop, unsigned n);

/* Requests (op.h) the loop owes a submit, a cancel or a result. */
static inline bool evmux__ops_owed(const evmux_loop *loop)
{
    const struct evmux__ops *ops = &loop->ops;
    return ops->cancels_owed > 0 || !evmux__list_empty(&ops->queued) ||
           !evmux__list_empty(&ops->ending);
}

/* A request the ring has taken (or will take with the next submit). */
static inline void evmux__op_to_kernel(evmux_loop *loop, struct evmux__op *op)
{
    op->state = EVMUX__OP_KERNEL;
    evmux__list_push(&loop->ops.kernel, &op->link);
}

/* Starts an idle request (op.h): into the ring, or behind the requests
 * queued for room, never ahead of them. */
static inline void evmux__op_submit(evmux_loop *loop, struct evmux__op *op,
                                    enum evmux__op_type type, int fd, unsigned flags)
{
    assert(op->state == EVMUX__OP_IDLE && !evmux__linked(&op->link));
    assert(fd >= 0 && op->cls != NULL && (type != EVMUX__OP_SEND || op->cls->fill != NULL) &&
           (type != EVMUX__OP_SENDMSG || op->cls->message != NULL));
    op->type = (unsigned char)type;
    op->fd = fd;
    op->flags = (unsigned char)(flags & EVMUX__OP_WHEN_WRITABLE);
    op->generation++;
    if (evmux__list_empty(&loop->ops.queued) && loop->backend->completion->submit(loop, op) == 0) {
        evmux__op_to_kernel(loop, op);
        return;
    }
    evmux__op_queue(loop, op);
}

/* A completion backend's report of one result of a request in the kernel
 * (from run_completions): the last one (more false) makes it idle before
 * its class hears of it. */
static inline void evmux__op_result(evmux_loop *loop, struct evmux__op *op, unsigned generation,
                                    int res, void *buf, bool more)
{
    /* Results come only from the kernel, for the submission it has. */
    assert(op->state == EVMUX__OP_KERNEL && generation == op->generation);
    (void)generation;
    if (!more) {
        evmux__list_remove(&op->link);
        if ((op->flags & (EVMUX__OP_CANCEL | EVMUX__OP_CANCEL_SENT)) == EVMUX__OP_CANCEL) {
            assert(loop->ops.cancels_owed > 0);
            loop->ops.cancels_owed--; /* it ended before its cancel could be sent */
        }
        op->state = EVMUX__OP_IDLE;
    }
    op->cls->done(op, res, buf, more);
}

/* Handles. The state tests and (de)activation sit on hot paths (every timer
 * start, every watcher change), hence inline. */
void evmux__handle_init(evmux_loop *loop, evmux_handle *h, const struct evmux__kind *kind);
void evmux__loop_register_kind(evmux_loop *loop, const struct evmux__kind *kind);
void evmux__handle_set_ref(evmux_handle *h, bool ref);
/* Runs the close callbacks due (loop.c, once per iteration). */
void evmux__run_closing(evmux_loop *loop);
/* Runs the pass of every kind that has one. */
void evmux__kinds_pass(evmux_loop *loop, enum evmux__pass pass);

static inline bool evmux__closing(const evmux_handle *h)
{
    return (h->flags & (EVMUX_FLAG_CLOSING | EVMUX_FLAG_CLOSED)) != 0;
}

static inline void evmux__handle_activate(evmux_handle *h)
{
    if (h->flags & EVMUX_FLAG_ACTIVE)
        return;
    h->flags |= EVMUX_FLAG_ACTIVE;
    if (h->flags & EVMUX_FLAG_REF)
        h->loop->active_refs++;
}

static inline void evmux__handle_deactivate(evmux_handle *h)
{
    if (!(h->flags & EVMUX_FLAG_ACTIVE))
        return;
    h->flags &= ~EVMUX_FLAG_ACTIVE;
    if (h->flags & EVMUX_FLAG_REF)
        h->loop->active_refs--;
}
void evmux__handle_make_internal(evmux_handle *h);

/* Time */
uint64_t evmux__clock_ns(void);

/* Arrays indexed by descriptor number: returns `items` grown (doubling from
 * 64) so that `index` exists, with new elements zeroed and *len updated, or
 * NULL if out of memory (the array is then unchanged). */
void *evmux__grow_zeroed(void *items, size_t *len, size_t index, size_t elem_size);

/* Timers (timer.c) */
/* Runs the due timers; true if any callback ran. */
bool evmux__timers_run(evmux_loop *loop);
/* Nanoseconds until the next timer is due, 0 if one is due, UINT64_MAX if none. */
uint64_t evmux__timers_next_ns(const evmux_loop *loop);
void evmux__timers_free(evmux_loop *loop);

/* Descriptor watchers (io.c) */
/* Called by a backend's wait for each descriptor with events; only collects.
 * Returns false when the loop holds no interest in fd at all, so the backend
 * can drop a stale kernel registration. */
bool evmux__io_ready(evmux_loop *loop, int fd, unsigned events);
void evmux__io_run_pending(evmux_loop *loop);
/* Queues every started always-ready watcher; returns how many. */
size_t evmux__io_collect_always_ready(evmux_loop *loop);
void evmux__io_free(evmux_loop *loop);
/* Registers every started watcher anew (a fresh kernel interest set). */
int evmux__io_reinstall_all(evmux_loop *loop);
/* Applies deferred removals; called before each wait. */
void evmux__io_flush(evmux_loop *loop);
/* Forgets them instead (a forked child, about to rebuild its kernel set). */
void evmux__io_drop_removals(evmux_loop *loop);
/* Stops a watcher and removes its descriptor from the backend at once,
 * for owners about to close the descriptor themselves. */
void evmux__io_stop_now(evmux_io *io);
/* -ERANGE if the backend cannot watch this descriptor number at all. */
int evmux__io_check_fd(const evmux_loop *loop, int fd);

/* Wake-up descriptor (wakeup.c): the one platform-specific part of the
 * cross-thread machinery. Both numbers are the same for an eventfd. */
int evmux__wakeup_open(int *read_fd, int *write_fd);
void evmux__wakeup_signal(int write_fd);
void evmux__wakeup_drain(int read_fd);
void evmux__wakeup_close(int read_fd, int write_fd);


/* Async handles (async.c). The loop's wake-up is core: made with the loop
 * (which registers the async kind), rebuilt and freed by the kind's hooks. */
int evmux__async_loop_init(evmux_loop *loop);
/* Wakes the loop's thread out of its wait; any thread. */
void evmux__loop_wake(evmux_loop *loop);
/* Closes an internal async handle at once (the pool's). */
void evmux__async_close(evmux_async *async);

/* Signals (signal.c) */
void evmux__signals_dispatch(evmux_loop *loop);

/* Closing (handle.c): the closed handle's last kernel request has ended;
 * if its close callback was waiting for that (close_wait), it runs now. */
void evmux__close_resume(evmux_handle *h);

#endif
