/* epoll(7): the kernel keeps the interest set, so a wait costs what is
 * ready, not what is watched. Its surprises all come from one fact: epoll
 * registers the open file description, not the descriptor number.
 *
 *  - close(fd) removes the registration only when it closes the last
 *    reference to the file. After dup() or fork() the file lives on under
 *    another descriptor and keeps reporting events under the old number,
 *    which EPOLL_CTL_DEL can no longer name (EBADF). We therefore stop a
 *    watcher with an explicit DEL while its descriptor is still open (the
 *    API asks callers to stop before closing), and when an event arrives for
 *    a number the loop does not watch we try to DEL it; if that fails the
 *    core still drops the event, so no callback ever sees it.
 *  - A closed and reused number is a new file: its old registration is
 *    gone, so MOD fails with ENOENT and we ADD instead; the reverse (ADD
 *    gives EEXIST, a registration left over) falls back to MOD.
 *  - A forked child shares the parent's epoll instance: a change made in
 *    one process shows in the other. after_fork() builds a new instance
 *    and the core registers every watched descriptor again.
 *  - epoll refuses regular files and directories with EPERM (they are
 *    always ready); that error goes to the caller of evmux_io_start.
 *
 * We use level-triggered mode, which matches the other backends, and call
 * epoll_ctl only when a watcher's interest really changes. epoll_wait takes
 * milliseconds; epoll_pwait2 (Linux 5.11) takes a timespec, so we prefer it
 * for exact timer wake-ups and fall back when the kernel lacks it. */
#include "../evmux_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define EPOLL_EVENTS_MIN 64
#define EPOLL_EVENTS_MAX 4096

struct epoll_state {
    int epfd;
    bool pwait2_missing;
    int event_capacity;
    struct epoll_event *events;
};

static int epoll_open(struct epoll_state *st)
{
    st->epfd = epoll_create1(EPOLL_CLOEXEC);
    return st->epfd < 0 ? -errno : 0;
}

static int epoll_init(evmux_loop *loop)
{
    struct epoll_state *st = calloc(1, sizeof *st);
    if (st == NULL)
        return -ENOMEM;
    st->event_capacity = EPOLL_EVENTS_MIN;
    st->events = malloc(sizeof *st->events * (size_t)st->event_capacity);
    int rc = st->events == NULL ? -ENOMEM : epoll_open(st);
    if (rc < 0) {
        free(st->events);
        free(st);
        return rc;
    }
    loop->backend_state = st;
    return 0;
}

static void epoll_destroy(evmux_loop *loop)
{
    struct epoll_state *st = loop->backend_state;
    close(st->epfd);
    free(st->events);
    free(st);
    loop->backend_state = NULL;
}

static int epoll_ctl_counted(evmux_loop *loop, int op, int fd, struct epoll_event *ev)
{
    struct epoll_state *st = loop->backend_state;
    loop->stats.kernel_ctl_calls++;
    return epoll_ctl(st->epfd, op, fd, ev) < 0 ? -errno : 0;
}

static int epoll_change(evmux_loop *loop, int fd, unsigned old_events, unsigned new_events)
{
    struct epoll_event ev = {0};
    ev.events = ((new_events & EVMUX_READABLE) ? EPOLLIN : 0u) |
                ((new_events & EVMUX_WRITABLE) ? EPOLLOUT : 0u);
    ev.data.fd = fd;
    int op = old_events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    int rc = epoll_ctl_counted(loop, op, fd, &ev);
    if (rc == -ENOENT && op == EPOLL_CTL_MOD)
        rc = epoll_ctl_counted(loop, EPOLL_CTL_ADD, fd, &ev);
    else if (rc == -EEXIST && op == EPOLL_CTL_ADD)
        rc = epoll_ctl_counted(loop, EPOLL_CTL_MOD, fd, &ev);
    return rc;
}

static void epoll_forget(evmux_loop *loop, int fd, unsigned old_events)
{
    (void)old_events;
    struct epoll_event ev = {0}; /* kernels before 2.6.9 insisted on one */
    epoll_ctl_counted(loop, EPOLL_CTL_DEL, fd, &ev);
}

static int epoll_wait_ns(evmux_loop *loop, struct epoll_state *st, uint64_t timeout_ns)
{
#ifdef EVMUX_HAVE_EPOLL_PWAIT2
    if (!st->pwait2_missing) {
        struct timespec ts, *tsp = NULL;
        if (timeout_ns != UINT64_MAX) {
            ts.tv_sec = (time_t)(timeout_ns / 1000000000u);
            ts.tv_nsec = (long)(timeout_ns % 1000000000u);
            tsp = &ts;
        }
        int n = epoll_pwait2(st->epfd, st->events, st->event_capacity, tsp, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        st->pwait2_missing = true;
    }
#endif
    (void)loop;
    return epoll_wait(st->epfd, st->events, st->event_capacity,
                      evmux__timeout_ms_ceil(timeout_ns));
}

static int epoll_wait_events(evmux_loop *loop, uint64_t timeout_ns)
{
    struct epoll_state *st = loop->backend_state;
    int n = epoll_wait_ns(loop, st, timeout_ns);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        uint32_t got = st->events[i].events;
        int fd = st->events[i].data.fd;
        unsigned events = 0;
        if (got & (EPOLLERR | EPOLLHUP))
            events = EVMUX_READABLE | EVMUX_WRITABLE;
        if (got & EPOLLIN)
            events |= EVMUX_READABLE;
        if (got & EPOLLOUT)
            events |= EVMUX_WRITABLE;
        if (!evmux__io_ready(loop, fd, events))
            epoll_forget(loop, fd, 0); /* a registration that outlived its watcher */
    }
    /* A full batch suggests more were ready: take more next time. */
    if (n == st->event_capacity && st->event_capacity < EPOLL_EVENTS_MAX) {
        int cap = st->event_capacity * 2;
        struct epoll_event *events = realloc(st->events, sizeof *events * (size_t)cap);
        if (events != NULL) {
            st->events = events;
            st->event_capacity = cap;
        }
    }
    return 0;
}

static int epoll_after_fork(evmux_loop *loop)
{
    struct epoll_state *st = loop->backend_state;
    close(st->epfd);
    return epoll_open(st);
}

const struct evmux_backend evmux__backend_epoll = {
    .name = "epoll",
    .features = EVMUX_FEATURE_LARGE_FDS | EVMUX_FEATURE_SCALABLE | EVMUX_FEATURE_KERNEL_STATE,
    .highest_fd = INT_MAX,
    .init = epoll_init,
    .destroy = epoll_destroy,
    .change = epoll_change,
    .forget = epoll_forget,
    .wait = epoll_wait_events,
    .after_fork = epoll_after_fork,
};
