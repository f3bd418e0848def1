/* Descriptor watchers: interest bookkeeping, the pending queue, and the
 * rules that keep a stopped watcher from ever seeing a stale event.
 *
 * The loop keeps one slot per descriptor number: the started watcher and the
 * interest the backend holds. The backend is told only about real changes,
 * so a watcher that keeps its interest costs no system call per event.
 *
 * Starting and changing interest reach the backend at once, so its errors
 * (epoll refusing a regular file) come back from evmux_io_start. Removal is
 * deferred to just before the next wait: a watcher stopped and started
 * again in between (pausing a reader, re-registration) costs nothing. The
 * deferral is safe because a watcher's descriptor cannot change: a new
 * descriptor needs a new watcher, whose first start always registers anew
 * (EVMUX_FLAG_IO_FRESH), even when the number is the same.
 *
 * Events are collected per watcher, not per descriptor: a watcher stopped in
 * one callback has its collected events dropped, and a new watcher started
 * on a reused descriptor number was never in the batch, so it cannot
 * receive the old descriptor's event.
 *
 * Backends disagree about descriptors they cannot wait for. select and poll
 * take a closed number without complaint (the watcher then never fires, or
 * fires with POLLNVAL), epoll refuses a regular file with EPERM, and poll
 * reports it always ready. So the first start of a watcher checks its
 * descriptor here, once for every backend: a closed one is -EBADF, and a
 * file with no wait queue (regular file, directory, block device, or one the
 * backend refuses with EPERM) becomes an always-ready watcher that the
 * backend never sees and every iteration reports, as poll(2) would. */
#include "evmux_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const struct evmux__kind io_kind;

#define EVMUX_IO_EVENTS (EVMUX_READABLE | EVMUX_WRITABLE)

static int ensure_slot(evmux_loop *loop, int fd)
{
    struct evmux_fd_slot *fds =
        evmux__grow_zeroed(loop->fds, &loop->fds_len, (size_t)fd, sizeof *loop->fds);
    if (fds == NULL)
        return -ENOMEM;
    loop->fds = fds;
    return 0;
}

int evmux_io_init(evmux_loop *loop, evmux_io *io, int fd, evmux_io_cb cb)
{
    if (loop == NULL || io == NULL || fd < 0 || cb == NULL)
        return -EINVAL;
    evmux__handle_init(loop, &io->handle, &io_kind);
    io->handle.flags |= EVMUX_FLAG_IO_FRESH;
    io->fd = fd;
    io->events = 0;
    io->pending_events = 0;
    io->cb = cb;
    io->next_pending = NULL;
    return 0;
}

int evmux_io_fd(const evmux_io *io)
{
    if (io == NULL)
        return -1;
    return io->fd;
}

static void forget_now(evmux_loop *loop, struct evmux_fd_slot *slot, int fd)
{
    if (slot->kernel_events == 0)
        return;
    loop->stats.interest_changes++;
    loop->backend->forget(loop, fd);
    slot->kernel_events = 0;
}

/* The first start's check of the descriptor (see the top of the file). */
static int classify_fd(evmux_io *io)
{
    struct stat st;
    if (fstat(io->fd, &st) < 0)
        return -errno;
    if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISBLK(st.st_mode))
        io->handle.flags |= EVMUX_FLAG_IO_ALWAYS_READY;
    return 0;
}

static int mark_started(evmux_io *io, struct evmux_fd_slot *slot, unsigned events)
{
    io->handle.flags &= ~EVMUX_FLAG_IO_FRESH;
    slot->watcher = io;
    io->events = events;
    io->pending_events &= events;
    evmux__handle_activate(&io->handle);
    return 0;
}

static int start_always_ready(evmux_io *io, struct evmux_fd_slot *slot, unsigned events)
{
    evmux_loop *loop = io->handle.loop;
    assert(slot->kernel_events == 0);
    if (slot->watcher != io) {
        if (loop->always_ready_count == loop->always_ready_capacity) {
            size_t cap = loop->always_ready_capacity ? loop->always_ready_capacity * 2 : 8;
            evmux_io **grown = realloc(loop->always_ready, cap * sizeof *grown);
            if (grown == NULL)
                return -ENOMEM;
            loop->always_ready = grown;
            loop->always_ready_capacity = cap;
        }
        loop->always_ready[loop->always_ready_count++] = io;
    }
    return mark_started(io, slot, events);
}

static void stop_always_ready(evmux_io *io)
{
    evmux_loop *loop = io->handle.loop;
    for (size_t i = 0; i < loop->always_ready_count; i++) {
        if (loop->always_ready[i] == io) {
            loop->always_ready[i] = loop->always_ready[--loop->always_ready_count];
            return;
        }
    }
    assert(!"a started always-ready watcher is on the list");
}

size_t evmux__io_collect_always_ready(evmux_loop *loop)
{
    for (size_t i = 0; i < loop->always_ready_count; i++) {
        evmux_io *io = loop->always_ready[i];
        evmux__io_ready(loop, io->fd, io->events);
    }
    return loop->always_ready_count;
}

int evmux_io_start(evmux_io *io, unsigned events)
{
    if (io == NULL || (events & ~EVMUX_IO_EVENTS) != 0 || evmux_is_closing(&io->handle))
        return -EINVAL;
    if (events == 0)
        return evmux_io_stop(io);

    evmux_loop *loop = io->handle.loop;
    int rc = ensure_slot(loop, io->fd);
    if (rc < 0)
        return rc;
    struct evmux_fd_slot *slot = &loop->fds[io->fd];
    if (slot->watcher != NULL && slot->watcher != io)
        return -EEXIST;
    bool fresh = (io->handle.flags & EVMUX_FLAG_IO_FRESH) != 0;
    if (fresh && !(io->handle.flags & EVMUX_FLAG_IO_SOCKET) && (rc = classify_fd(io)) < 0)
        return rc;
    /* The backend's limit, for what it will see (not always-ready ones). */
    if (!(io->handle.flags & EVMUX_FLAG_IO_ALWAYS_READY) &&
        (rc = evmux__io_check_fd(loop, io->fd)) < 0)
        return rc;

    /* A new watcher's number may name a new file while the old file's
     * registration still waits for removal: drop that one first, so the
     * backend registers this file rather than amending the old one. */
    if (fresh && slot->watcher == NULL)
        forget_now(loop, slot, io->fd);
    if (io->handle.flags & EVMUX_FLAG_IO_ALWAYS_READY)
        return start_always_ready(io, slot, events);
    if (slot->kernel_events != events) {
        loop->stats.interest_changes++;
        rc = loop->backend->change(loop, io->fd, slot->kernel_events, events);
        if (rc == -EPERM && fresh && slot->kernel_events == 0) {
            /* epoll's word for a file it cannot wait for (/dev/null). */
            io->handle.flags |= EVMUX_FLAG_IO_ALWAYS_READY;
            return start_always_ready(io, slot, events);
        }
        if (rc < 0)
            return rc; /* the old interest, if any, still holds */
        slot->kernel_events = events;
    }
    return mark_started(io, slot, events);
}


static void mark_dirty(evmux_loop *loop, struct evmux_fd_slot *slot, int fd)
{
    if (slot->dirty)
        return;
    if (loop->dirty_count == loop->dirty_capacity) {
        size_t cap = loop->dirty_capacity ? loop->dirty_capacity * 2 : 64;
        int *fds = realloc(loop->dirty_fds, cap * sizeof *fds);
        if (fds == NULL) {
            forget_now(loop, slot, fd); /* cannot defer: remove at once */
            return;
        }
        loop->dirty_fds = fds;
        loop->dirty_capacity = cap;
    }
    loop->dirty_fds[loop->dirty_count++] = fd;
    slot->dirty = true;
}

int evmux_io_stop(evmux_io *io)
{
    if (io == NULL)
        return -EINVAL;
    if (!(io->handle.flags & EVMUX_FLAG_ACTIVE))
        return 0;
    evmux_loop *loop = io->handle.loop;
    struct evmux_fd_slot *slot = &loop->fds[io->fd];
    if (io->handle.flags & EVMUX_FLAG_IO_ALWAYS_READY) {
        stop_always_ready(io);
        slot->watcher = NULL;
    } else if (slot->watcher == io) {
        slot->watcher = NULL;
        mark_dirty(loop, slot, io->fd);
    }
    io->events = 0;
    io->pending_events = 0; /* stays queued if pending; dispatch skips it */
    evmux__handle_deactivate(&io->handle);
    return 0;
}

void evmux__io_stop_now(evmux_io *io)
{
    evmux_io_stop(io);
    /* Also a removal deferred by an earlier stop (a paused stream). */
    evmux_loop *loop = io->handle.loop;
    if (io->fd >= 0 && (size_t)io->fd < loop->fds_len) {
        struct evmux_fd_slot *slot = &loop->fds[io->fd];
        if (slot->watcher == NULL)
            forget_now(loop, slot, io->fd);
    }
}

void evmux__io_flush(evmux_loop *loop)
{
    for (size_t i = 0; i < loop->dirty_count; i++) {
        int fd = loop->dirty_fds[i];
        struct evmux_fd_slot *slot = &loop->fds[fd];
        slot->dirty = false;
        if (slot->watcher == NULL)
            forget_now(loop, slot, fd);
    }
    loop->dirty_count = 0;
}

void evmux__io_drop_removals(evmux_loop *loop)
{
    for (size_t i = 0; i < loop->dirty_count; i++)
        loop->fds[loop->dirty_fds[i]].dirty = false;
    loop->dirty_count = 0; /* evmux__io_reinstall_all resets what the kernel holds */
}

bool evmux__io_ready(evmux_loop *loop, int fd, unsigned events)
{
    if (fd < 0 || (size_t)fd >= loop->fds_len)
        return false;
    evmux_io *io = loop->fds[fd].watcher;
    if (io == NULL)
        return loop->fds[fd].kernel_events != 0; /* removal already pending */
    events &= io->events;
    if (events == 0)
        return true;
    io->pending_events |= events;
    if (!(io->handle.flags & EVMUX_FLAG_PENDING)) {
        io->handle.flags |= EVMUX_FLAG_PENDING;
        io->next_pending = NULL;
        if (loop->pending_tail != NULL)
            loop->pending_tail->next_pending = io;
        else
            loop->pending_head = io;
        loop->pending_tail = io;
    }
    return true;
}

void evmux__io_run_pending(evmux_loop *loop)
{
    evmux_io *io;
    while ((io = loop->pending_head) != NULL) {
        loop->pending_head = io->next_pending;
        if (loop->pending_head == NULL)
            loop->pending_tail = NULL;
        io->next_pending = NULL;
        io->handle.flags &= ~EVMUX_FLAG_PENDING;
        unsigned events = io->pending_events & io->events;
        io->pending_events = 0;
        if (events != 0)
            io->cb(io, events);
    }
}

int evmux__io_check_fd(const evmux_loop *loop, int fd)
{
    return fd < 0 || fd > loop->backend->highest_fd ? -ERANGE : 0;
}

int evmux__io_reinstall_all(evmux_loop *loop)
{
    int result = 0;
    for (size_t fd = 0; fd < loop->fds_len; fd++) {
        struct evmux_fd_slot *slot = &loop->fds[fd];
        slot->kernel_events = 0;
        if (slot->watcher == NULL || (slot->watcher->handle.flags & EVMUX_FLAG_IO_ALWAYS_READY))
            continue;
        loop->stats.interest_changes++;
        int rc = loop->backend->change(loop, (int)fd, 0, slot->watcher->events);
        if (rc == 0)
            slot->kernel_events = slot->watcher->events;
        else if (result == 0)
            result = rc;
    }
    return result;
}

void evmux__io_free(evmux_loop *loop)
{
    free(loop->always_ready);
    loop->always_ready = NULL;
    loop->always_ready_count = loop->always_ready_capacity = 0;
    free(loop->dirty_fds);
    loop->dirty_fds = NULL;
    loop->dirty_count = loop->dirty_capacity = 0;
    free(loop->fds);
    loop->fds = NULL;
    loop->fds_len = 0;
}

static void io_close_begin(evmux_handle *h)
{
    evmux_io_stop((evmux_io *)h);
}

static const struct evmux__kind io_kind = {
    .number = EVMUX_HANDLE_IO,
    .close_begin = io_close_begin,
};
