/* evmux-peer-epoll: the uppercase echo server on raw epoll, level-triggered.
 *
 * One thread, one epoll set. Each connection is registered once with its
 * struct as epoll_data; its interest is EPOLLIN while we read from it and
 * EPOLLOUT while bytes are owed to it, changed with EPOLL_CTL_MOD only when
 * that changes (in a steady echo the reply goes out at once, so never).
 * Level-triggered: one recv per readiness report keeps clients fair without
 * a ready list, and stopping to read is just dropping EPOLLIN.
 * Replies go straight to the socket; what it does not take waits in a
 * per-connection queue. All connections read into one shared buffer.
 */
#include <sys/epoll.h>

#include "peer_common.h"

struct conn {
    int fd;
    uint32_t events;        /* the interest registered with epoll */
    struct peer_owed owed;  /* bytes the client has not taken yet */
    bool eof;               /* the client sent EOF */
};

static int epfd;
static char read_buf[PEER_READ_SIZE]; /* one thread, one buffer for everybody */

static void conn_close(struct conn *c)
{
    close(c->fd); /* also leaves the epoll set */
    free(c->owed.data);
    free(c);
}

/* Read while the client is not too far behind (stop past HIGH, resume at
 * LOW), watch writability while something is owed. False: closed. */
static bool conn_update(struct conn *c)
{
    if (c->eof && c->owed.len == 0) {
        conn_close(c); /* everything went out: done */
        return false;
    }
    uint32_t want = 0;
    if (!c->eof && c->owed.len <= (c->events & EPOLLIN ? PEER_OWED_HIGH : PEER_OWED_LOW))
        want |= EPOLLIN;
    if (c->owed.len > 0)
        want |= EPOLLOUT;
    if (want != c->events) {
        struct epoll_event ev = {.events = want, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
            conn_close(c);
            return false;
        }
        c->events = want;
    }
    return true;
}

static void conn_ready(struct conn *c, uint32_t events)
{
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && c->owed.len > 0 &&
        !peer_owed_send(&c->owed, c->fd)) {
        conn_close(c);
        return;
    }
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && (c->events & EPOLLIN)) {
        ssize_t n = recv(c->fd, read_buf, sizeof read_buf, 0);
        if (n > 0) {
            peer_handle(read_buf, (size_t)n);
            if (!peer_reply(&c->owed, c->fd, read_buf, (size_t)n)) {
                conn_close(c);
                return;
            }
        } else if (n == 0) {
            c->eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_close(c); /* reset: nothing more can be delivered */
            return;
        }
    }
    conn_update(c);
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            peer_accept_failed(errno);
            return;
        }
        struct conn *c = calloc(1, sizeof *c);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (c == NULL || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
            peer_count_refused("out of memory");
            continue;
        }
        peer_set_nodelay(fd);
        c->fd = fd;
        c->events = EPOLLIN;
    }
}

int main(int argc, char **argv)
{
    struct peer_options opt;
    int status = peer_parse_args(argc, argv, "epoll", "raw epoll, level-triggered", &opt);
    if (status >= 0)
        return status;
    peer_init_process();
    peer_exit_on_signals();

    int lfd = peer_listen(&opt, true);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: the listener */
    if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        perror("evmux-peer-epoll: epoll");
        return 1;
    }
    peer_announce(lfd);

    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        if (n < 0 && errno != EINTR) {
            perror("evmux-peer-epoll: epoll_wait");
            return 1;
        }
        /* Each descriptor appears at most once per batch, and a callback
         * closes only its own connection: no event outlives its struct. */
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL)
                accept_all(lfd);
            else
                conn_ready(events[i].data.ptr, events[i].events);
        }
    }
}
