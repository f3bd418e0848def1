/* epoll(7): the kernel keeps the interest set, so a wait costs what is
 * ready, not what is watched. Its surprises all come from one fact: epoll
 * registers the open file description, not the descriptor number.
 *
 *  - close(fd) removes the registration only when it closes the last
 *    reference to the file. After dup() or fork() the file lives on under
 *    another descriptor and keeps reporting events under the old number,
 *    which EPOLL_CTL_DEL can no longer name (EBADF). The core removes a
 *    stopped watcher's descriptor just before the next wait (streams and
 *    listeners at once, before they close their sockets); if an event then
 *    arrives for a number nobody watches and DEL cannot remove it, we build
 *    a new epoll set from the core's records, so a level-triggered ghost
 *    cannot keep waking the loop. Each registration also carries a
 *    per-number generation in its event data, so a ghost is recognised
 *    even when a new watcher has taken its number. No callback ever sees
 *    such an event.
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
    /* Per descriptor, how many times it was ADDed: stamped into each event
     * so that a ghost of an earlier registration is recognised. */
    uint32_t *generation;
    size_t generation_len;
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
    free(st->generation);
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

static int ensure_generation(struct epoll_state *st, int fd)
{
    uint32_t *gen = evmux__grow_zeroed(st->generation, &st->generation_len, (size_t)fd,
                                       sizeof *st->generation);
    if (gen == NULL)
        return -ENOMEM;
    st->generation = gen;
    return 0;
}

static void set_event(struct epoll_event *ev, const struct epoll_state *st, int fd,
                      unsigned events)
{
    ev->events = ((events & EVMUX_READABLE) ? EPOLLIN : 0u) |
                 ((events & EVMUX_WRITABLE) ? EPOLLOUT : 0u);
    ev->data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)st->generation[fd] << 32;
}

static int epoll_change(evmux_loop *loop, int fd, unsigned old_events, unsigned new_events)
{
    struct epoll_state *st = loop->backend_state;
    int rc = ensure_generation(st, fd);
    if (rc < 0)
        return rc;
    struct epoll_event ev = {0};
    if (old_events != 0) {
        set_event(&ev, st, fd, new_events);
        rc = epoll_ctl_counted(loop, EPOLL_CTL_MOD, fd, &ev);
        if (rc != -ENOENT)
            return rc;
        /* The number now names a new file: its old registration is gone. */
    }
    st->generation[fd]++;
    set_event(&ev, st, fd, new_events);
    rc = epoll_ctl_counted(loop, EPOLL_CTL_ADD, fd, &ev);
    if (rc == -EEXIST) /* registered behind our back (a shared set after fork) */
        rc = epoll_ctl_counted(loop, EPOLL_CTL_MOD, fd, &ev);
    return rc;
}

static void epoll_forget(evmux_loop *loop, int fd)
{
    struct epoll_event ev = {0}; /* kernels before 2.6.9 insisted on one */
    epoll_ctl_counted(loop, EPOLL_CTL_DEL, fd, &ev);
}

static int epoll_after_fork(evmux_loop *loop)
{
    struct epoll_state *st = loop->backend_state;
    close(st->epfd);
    return epoll_open(st);
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
    bool rebuild = false;
    for (int i = 0; i < n; i++) {
        uint32_t got = st->events[i].events;
        int fd = (int)(uint32_t)st->events[i].data.u64;
        uint32_t generation = (uint32_t)(st->events[i].data.u64 >> 32);
        if ((size_t)fd >= st->generation_len || generation != st->generation[fd]) {
            rebuild = true; /* a ghost: an older file once known by this number */
            continue;
        }
        unsigned events = 0;
        if (got & (EPOLLERR | EPOLLHUP))
            events = EVMUX_READABLE | EVMUX_WRITABLE;
        if (got & EPOLLIN)
            events |= EVMUX_READABLE;
        if (got & EPOLLOUT)
            events |= EVMUX_WRITABLE;
        if (!evmux__io_ready(loop, fd, events)) {
            /* A registration that outlived its descriptor (dup, fork):
             * if DEL cannot name it any more, only a new set drops it. */
            struct epoll_event ev = {0};
            if (epoll_ctl_counted(loop, EPOLL_CTL_DEL, fd, &ev) < 0)
                rebuild = true;
        }
    }
    if (rebuild && epoll_after_fork(loop) == 0)
        evmux__io_reinstall_all(loop);
    /* A full batch suggests more were ready: take more next time. */
    if (n == st->event_capacity && st->event_capacity < EPOLL_EVENTS_MAX) {
        int cap = st->event_capacity * 2;
        struct epoll_event *events = realloc(st->events, sizeof *events * (size_t)cap);
        if (events != NULL) {
            st->events = events;
            st->event_capacity = cap;
        }
    }
    return n;
}

const struct evmux_backend evmux__backend_epoll = {
    .name = "epoll",
    .highest_fd = INT_MAX,
    .init = epoll_init,
    .destroy = epoll_destroy,
    .change = epoll_change,
    .forget = epoll_forget,
    .wait = epoll_wait_events,
    .after_fork = epoll_after_fork,
};
