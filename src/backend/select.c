/* select(2): the oldest and most portable interface, and the one with the
 * sharpest edges.
 *
 * An fd_set is a fixed bitmap of FD_SETSIZE bits (1024 on Linux). FD_SET
 * with a larger descriptor does not fail: it writes past the end of the
 * bitmap and corrupts whatever lies next to it. So this backend refuses any
 * descriptor >= FD_SETSIZE with -ERANGE before touching a set, even though
 * the process may legally hold 20000 descriptors. A server that must go
 * further has to pick another backend.
 *
 * select also rewrites its arguments in place, so every call needs fresh
 * copies of the interest sets, and the kernel then scans every bit up to the
 * highest descriptor, ready or not: the cost grows with the number watched,
 * which is the original text's complaint (quoted in docs/io-models.md).
 * We keep the highest watched descriptor so that a scan stops there.
 *
 * If a watched descriptor is closed behind our back, select fails as a whole
 * with EBADF and would fail again at once forever. We then probe each
 * watched descriptor and report the dead ones as ready, so their owners'
 * read() or write() sees the error and the loop keeps going. */
#include "../evmux_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/select.h>

struct select_state {
    fd_set readers;
    fd_set writers;
    int max_fd; /* -1 when nothing is watched */
};

static int select_init(evmux_loop *loop)
{
    struct select_state *st = malloc(sizeof *st);
    if (st == NULL)
        return -ENOMEM;
    FD_ZERO(&st->readers);
    FD_ZERO(&st->writers);
    st->max_fd = -1;
    loop->backend_state = st;
    return 0;
}

static void select_destroy(evmux_loop *loop)
{
    free(loop->backend_state);
    loop->backend_state = NULL;
}

static int select_change(evmux_loop *loop, int fd, unsigned old_events, unsigned new_events)
{
    (void)old_events;
    struct select_state *st = loop->backend_state;
    if (fd < 0 || fd >= FD_SETSIZE)
        return -ERANGE;
    if (new_events & EVMUX_READABLE)
        FD_SET(fd, &st->readers);
    else
        FD_CLR(fd, &st->readers);
    if (new_events & EVMUX_WRITABLE)
        FD_SET(fd, &st->writers);
    else
        FD_CLR(fd, &st->writers);
    if (fd > st->max_fd)
        st->max_fd = fd;
    return 0;
}

static void select_forget(evmux_loop *loop, int fd)
{
    struct select_state *st = loop->backend_state;
    if (fd < 0 || fd >= FD_SETSIZE)
        return;
    FD_CLR(fd, &st->readers);
    FD_CLR(fd, &st->writers);
    while (st->max_fd >= 0 && !FD_ISSET(st->max_fd, &st->readers) &&
           !FD_ISSET(st->max_fd, &st->writers))
        st->max_fd--;
}

static void report_dead_descriptors(evmux_loop *loop, const struct select_state *st)
{
    for (int fd = 0; fd <= st->max_fd; fd++) {
        if (!FD_ISSET(fd, &st->readers) && !FD_ISSET(fd, &st->writers))
            continue;
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF)
            evmux__io_ready(loop, fd, EVMUX_READABLE | EVMUX_WRITABLE);
    }
}

static int select_wait(evmux_loop *loop, uint64_t timeout_ns)
{
    struct select_state *st = loop->backend_state;
    fd_set readers = st->readers;
    fd_set writers = st->writers;
    struct timeval tv, *tvp = NULL;
    if (timeout_ns != UINT64_MAX) {
        uint64_t us = timeout_ns / 1000u + (timeout_ns % 1000u != 0);
        tv.tv_sec = (time_t)(us / 1000000u);
        tv.tv_usec = (suseconds_t)(us % 1000000u);
        tvp = &tv;
    }
    int n = select(st->max_fd + 1, &readers, &writers, NULL, tvp);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        if (errno == EBADF) {
            report_dead_descriptors(loop, st);
            return 1;
        }
        return -errno;
    }
    int ready = n;
    for (int fd = 0; n > 0 && fd <= st->max_fd; fd++) {
        unsigned events = 0;
        if (FD_ISSET(fd, &readers))
            events |= EVMUX_READABLE;
        if (FD_ISSET(fd, &writers))
            events |= EVMUX_WRITABLE;
        if (events != 0) {
            n -= (events == (EVMUX_READABLE | EVMUX_WRITABLE)) ? 2 : 1;
            evmux__io_ready(loop, fd, events);
        }
    }
    return ready;
}

const struct evmux_backend evmux__backend_select = {
    .name = "select",
    .highest_fd = FD_SETSIZE - 1,
    .init = select_init,
    .destroy = select_destroy,
    .change = select_change,
    .forget = select_forget,
    .wait = select_wait,
    .after_fork = NULL,
};
