/* poll(2): no FD_SETSIZE ceiling, but still a full scan per call.
 *
 * The kernel walks every pollfd on each call and we walk them again to find
 * the ready ones, so the cost grows with the number of watched descriptors,
 * like select's, only without the bitmap limit and with one entry per
 * descriptor instead of one bit per possible number.
 *
 * We keep the pollfd array dense (a removed entry is replaced by the last
 * one) and a map from descriptor to array index, so a change costs O(1).
 *
 * poll reports errors in revents rather than failing: POLLERR and POLLHUP
 * arrive even when not asked for, and POLLNVAL marks a descriptor that was
 * closed while still watched. All three are reported as every watched
 * event, so the owner's next read() or write() returns the real error (for
 * POLLHUP on a socket, read() returns 0: the peer's EOF). */
#include "../evmux_internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>

struct poll_state {
    struct pollfd *fds;
    size_t count;
    size_t capacity;
    size_t *slot_of; /* descriptor -> 1 + its index in fds, 0 if absent */
    size_t index_len;
};

static int poll_init(evmux_loop *loop)
{
    struct poll_state *st = calloc(1, sizeof *st);
    if (st == NULL)
        return -ENOMEM;
    loop->backend_state = st;
    return 0;
}

static void poll_destroy(evmux_loop *loop)
{
    struct poll_state *st = loop->backend_state;
    free(st->fds);
    free(st->slot_of);
    free(st);
    loop->backend_state = NULL;
}

static short poll_mask(unsigned events)
{
    return (short)(((events & EVMUX_READABLE) ? POLLIN : 0) |
                   ((events & EVMUX_WRITABLE) ? POLLOUT : 0));
}

static int ensure_index(struct poll_state *st, int fd)
{
    size_t *slot_of = evmux__grow_zeroed(st->slot_of, &st->index_len, (size_t)fd,
                                         sizeof *st->slot_of);
    if (slot_of == NULL)
        return -ENOMEM;
    st->slot_of = slot_of;
    return 0;
}

static int poll_change(evmux_loop *loop, int fd, unsigned old_events, unsigned new_events)
{
    (void)old_events;
    struct poll_state *st = loop->backend_state;
    int rc = ensure_index(st, fd);
    if (rc < 0)
        return rc;
    size_t i;
    if (st->slot_of[fd] != 0) {
        i = st->slot_of[fd] - 1;
    } else {
        if (st->count == st->capacity) {
            size_t cap = st->capacity ? st->capacity * 2 : 64;
            struct pollfd *fds = realloc(st->fds, cap * sizeof *fds);
            if (fds == NULL)
                return -ENOMEM;
            st->fds = fds;
            st->capacity = cap;
        }
        i = st->count++;
        st->fds[i].fd = fd;
        st->fds[i].revents = 0;
        st->slot_of[fd] = i + 1;
    }
    st->fds[i].events = poll_mask(new_events);
    return 0;
}

static void poll_forget(evmux_loop *loop, int fd)
{
    struct poll_state *st = loop->backend_state;
    if (fd < 0 || (size_t)fd >= st->index_len || st->slot_of[fd] == 0)
        return;
    size_t i = st->slot_of[fd] - 1;
    size_t last = --st->count;
    if (i != last) {
        st->fds[i] = st->fds[last];
        st->slot_of[st->fds[i].fd] = i + 1;
    }
    st->slot_of[fd] = 0;
}

static int poll_wait(evmux_loop *loop, uint64_t timeout_ns)
{
    struct poll_state *st = loop->backend_state;
    int n = poll(st->fds, (nfds_t)st->count, evmux__timeout_ms_ceil(timeout_ns));
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    int ready = n;
    for (size_t i = 0; n > 0 && i < st->count; i++) {
        short revents = st->fds[i].revents;
        if (revents == 0)
            continue;
        n--;
        unsigned events = 0;
        if (revents & (POLLERR | POLLHUP | POLLNVAL))
            events = EVMUX_READABLE | EVMUX_WRITABLE;
        if (revents & POLLIN)
            events |= EVMUX_READABLE;
        if (revents & POLLOUT)
            events |= EVMUX_WRITABLE;
        evmux__io_ready(loop, st->fds[i].fd, events);
    }
    return ready;
}

const struct evmux_backend evmux__backend_poll = {
    .name = "poll",
    .highest_fd = INT_MAX,
    .init = poll_init,
    .destroy = poll_destroy,
    .change = poll_change,
    .forget = poll_forget,
    .wait = poll_wait,
    .after_fork = NULL,
};
