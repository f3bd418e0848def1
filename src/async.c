/* Cross-thread wake-ups: evmux_async handles and evmux_stop from afar.
 *
 * Each loop owns one wake-up descriptor (wakeup.c) and an internal,
 * unreferenced watcher on it. A send marks its handle pending and writes
 * the descriptor only if the loop's own flag was clear, so a burst of
 * sends from many threads costs one system call until the loop wakes.
 *
 * The loop drains the descriptor, then clears its flag, then scans the
 * handles. A send that finds the flag set has marked its handle before
 * the clear, so the scan sees it; one that finds it clear writes again, so
 * the loop wakes once more. (Clearing before draining would lose a wake-up:
 * the drain could swallow the write of a send that had just set the flag,
 * leaving the flag set and the descriptor empty for good.) The atomic
 * exchanges also order the sender's memory before the callback's reads. */
#include "evmux_internal.h"

#include <errno.h>

static const struct evmux__kind async_kind;

void evmux__loop_wake(evmux_loop *loop)
{
    if (atomic_exchange(&loop->wake_pending, 1) == 0)
        evmux__wakeup_signal(loop->wake_write_fd);
}

static void on_wake(evmux_io *io, unsigned events)
{
    (void)events;
    evmux_loop *loop = io->handle.loop;
    uint64_t calls_before = loop->wake_calls;
    evmux__wakeup_drain(loop->wake_read_fd);
    if (loop->wake_test_hook != NULL)
        loop->wake_test_hook(loop); /* a send that lands right here */
    atomic_store(&loop->wake_pending, 0);
    if (loop->signals != NULL)
        evmux__signals_dispatch(loop);
    /* A callback may close any handle, including the next one: closing
     * moves async_next past itself. */
    for (evmux_async *a = loop->asyncs; a != NULL; a = loop->async_next) {
        loop->async_next = a->next;
        if (atomic_load_explicit(&a->pending, memory_order_relaxed) &&
            atomic_exchange(&a->pending, 0)) {
            if (!(a->handle.flags & EVMUX_FLAG_INTERNAL))
                loop->wake_calls++; /* the pool counts its own callbacks */
            a->cb(a);
        }
    }
    loop->async_next = NULL;
    if (loop->wake_calls == calls_before)
        loop->silent_wakes++; /* e.g. a stop's wake-up: no event for RUN_ONCE */
}

static int start_wake_watcher(evmux_loop *loop)
{
    int rc = evmux__wakeup_open(&loop->wake_read_fd, &loop->wake_write_fd);
    if (rc < 0) {
        loop->wake_read_fd = loop->wake_write_fd = -1;
        return rc;
    }
    evmux_io_init(loop, &loop->wake_io, loop->wake_read_fd, on_wake);
    evmux__handle_make_internal(&loop->wake_io.handle);
    loop->wake_io.handle.flags &= ~EVMUX_FLAG_REF; /* wake-ups alone keep nothing alive */
    rc = evmux_io_start(&loop->wake_io, EVMUX_READABLE);
    if (rc < 0) {
        evmux__wakeup_close(loop->wake_read_fd, loop->wake_write_fd);
        loop->wake_read_fd = loop->wake_write_fd = -1;
    }
    return rc;
}

static void stop_wake_watcher(evmux_loop *loop)
{
    if (loop->wake_read_fd < 0)
        return;
    evmux__io_stop_now(&loop->wake_io);
    evmux__wakeup_close(loop->wake_read_fd, loop->wake_write_fd);
    loop->wake_read_fd = loop->wake_write_fd = -1;
}

int evmux__async_loop_init(evmux_loop *loop)
{
    loop->wake_read_fd = loop->wake_write_fd = -1;
    atomic_init(&loop->wake_pending, 0);
    evmux__loop_register_kind(loop, &async_kind); /* its hooks rebuild and free it */
    return start_wake_watcher(loop);
}

static void async_loop_free(evmux_loop *loop)
{
    stop_wake_watcher(loop);
}

/* The parent's descriptor would carry the parent's wake-ups into the child
 * (and the child's into the parent): the child gets its own. Sends that
 * were pending at the fork are delivered here too. */
static int async_after_fork(evmux_loop *loop)
{
    stop_wake_watcher(loop);
    atomic_store(&loop->wake_pending, 0);
    int rc = start_wake_watcher(loop);
    if (rc < 0)
        return rc;
    for (evmux_async *a = loop->asyncs; a != NULL; a = a->next)
        if (atomic_load(&a->pending)) {
            evmux__loop_wake(loop);
            break;
        }
    return 0;
}

int evmux_async_init(evmux_loop *loop, evmux_async *async, evmux_async_cb cb)
{
    if (loop == NULL || async == NULL || cb == NULL)
        return -EINVAL;
    evmux__handle_init(loop, &async->handle, &async_kind);
    async->cb = cb;
    atomic_init(&async->pending, 0);
    async->prev = NULL;
    async->next = loop->asyncs;
    if (loop->asyncs != NULL)
        loop->asyncs->prev = async;
    loop->asyncs = async;
    evmux__handle_activate(&async->handle);
    return 0;
}

int evmux_async_send(evmux_async *async)
{
    if (async == NULL)
        return -EINVAL;
    /* Handle flags belong to the loop's thread: only the atomic flag is
     * touched, and nothing of the handle after it is set, since the loop
     * may run the callback, and the callback close and free the handle,
     * at once. */
    evmux_loop *loop = async->handle.loop;
    if (atomic_exchange(&async->pending, 1) == 0)
        evmux__loop_wake(loop);
    return 0;
}

void evmux__async_close(evmux_async *async)
{
    evmux_loop *loop = async->handle.loop;
    if (loop->async_next == async)
        loop->async_next = async->next;
    if (async->prev != NULL)
        async->prev->next = async->next;
    else
        loop->asyncs = async->next;
    if (async->next != NULL)
        async->next->prev = async->prev;
    async->prev = async->next = NULL;
    evmux__handle_deactivate(&async->handle);
}

static void async_close_begin(evmux_handle *h)
{
    evmux__async_close((evmux_async *)h);
}

static const struct evmux__kind async_kind = {
    .number = EVMUX_HANDLE_ASYNC,
    .close_begin = async_close_begin,
    .loop_after_fork = async_after_fork,
    .loop_free = async_loop_free,
};
