/* Descriptor watchers: interest bookkeeping, the pending queue, and the
 * rules that keep a stopped watcher from ever seeing a stale event.
 *
 * The loop keeps one slot per descriptor number: the started watcher and the
 * interest the backend holds. The backend is told only about real changes,
 * so a watcher that keeps its interest costs no system call per event.
 *
 * Events are collected per watcher, not per descriptor: a watcher stopped in
 * one callback has its collected events dropped, and a new watcher started
 * on a reused descriptor number was never in the batch, so it cannot
 * receive the old descriptor's event. */
#include "evmux_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define EVMUX_IO_EVENTS (EVMUX_READABLE | EVMUX_WRITABLE)

static int ensure_slot(evmux_loop *loop, int fd)
{
    size_t need = (size_t)fd + 1;
    if (need <= loop->fds_len)
        return 0;
    size_t len = loop->fds_len ? loop->fds_len : 64;
    while (len < need)
        len *= 2;
    struct evmux_fd_slot *fds = realloc(loop->fds, len * sizeof *fds);
    if (fds == NULL)
        return -ENOMEM;
    memset(fds + loop->fds_len, 0, (len - loop->fds_len) * sizeof *fds);
    loop->fds = fds;
    loop->fds_len = len;
    return 0;
}

int evmux_io_init(evmux_loop *loop, evmux_io *io, int fd, evmux_io_cb cb)
{
    if (loop == NULL || io == NULL || fd < 0 || cb == NULL)
        return -EINVAL;
    evmux__handle_init(loop, &io->handle, EVMUX_HANDLE_IO);
    io->fd = fd;
    io->events = 0;
    io->pending_events = 0;
    io->cb = cb;
    io->next_pending = NULL;
    return 0;
}

int evmux_io_fd(const evmux_io *io)
{
    return io->fd;
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

    if (slot->kernel_events != events) {
        loop->stats.interest_changes++;
        rc = loop->backend->change(loop, io->fd, slot->kernel_events, events);
        if (rc < 0)
            return rc; /* the old interest, if any, still holds */
        slot->kernel_events = events;
    }
    slot->watcher = io;
    io->events = events;
    io->pending_events &= events;
    evmux__handle_activate(&io->handle);
    return 0;
}

int evmux_io_stop(evmux_io *io)
{
    if (io == NULL)
        return -EINVAL;
    if (!evmux_is_active(&io->handle))
        return 0;
    evmux_loop *loop = io->handle.loop;
    struct evmux_fd_slot *slot = &loop->fds[io->fd];
    if (slot->watcher == io) {
        loop->stats.interest_changes++;
        loop->backend->forget(loop, io->fd, slot->kernel_events);
        slot->kernel_events = 0;
        slot->watcher = NULL;
    }
    io->events = 0;
    io->pending_events = 0; /* stays queued if pending; dispatch skips it */
    evmux__handle_deactivate(&io->handle);
    return 0;
}

bool evmux__io_ready(evmux_loop *loop, int fd, unsigned events)
{
    if (fd < 0 || (size_t)fd >= loop->fds_len)
        return false;
    evmux_io *io = loop->fds[fd].watcher;
    if (io == NULL)
        return false;
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
    for (size_t fd = 0; fd < loop->fds_len; fd++) {
        struct evmux_fd_slot *slot = &loop->fds[fd];
        if (slot->kernel_events == 0)
            continue;
        loop->stats.interest_changes++;
        int rc = loop->backend->change(loop, (int)fd, 0, slot->kernel_events);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void evmux__io_free(evmux_loop *loop)
{
    free(loop->fds);
    loop->fds = NULL;
    loop->fds_len = 0;
}
