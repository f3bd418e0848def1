/* evmux-peer-poll: the model of the original text (quoted in
 * docs/io-models.md) on poll(), in C.
 *
 * One thread; one array of struct pollfd (the listener first, then every
 * connection) passed whole to poll() each round, and a parallel array of
 * connection state. Each entry's events say what we want from it: POLLIN
 * while we read from it, POLLOUT while bytes are owed to it. Ready entries
 * get one recv each. A closed connection's slot is filled with the last
 * entry, so the array stays dense; new connections go at the end.
 * Unlike select() there is no descriptor ceiling.
 */
#include <poll.h>

#include "peer_common.h"

struct conn {
    struct peer_owed owed;  /* bytes the client has not taken yet */
    bool eof;               /* the client sent EOF */
};

static struct pollfd *pfds;  /* [0] is the listener */
static struct conn **conns;  /* conns[i] goes with pfds[i] */
static size_t count, cap;
static char read_buf[PEER_READ_SIZE]; /* one thread, one buffer for everybody */

static void conn_close(size_t i)
{
    close(pfds[i].fd);
    free(conns[i]->owed.data);
    free(conns[i]);
    count--;
    pfds[i] = pfds[count];
    conns[i] = conns[count];
}

/* Serves entry i, which poll() reported ready. If it closes, slot i
 * then holds what was the last entry. */
static void conn_ready(size_t i)
{
    struct pollfd *p = &pfds[i];
    struct conn *c = conns[i];
    if ((p->revents & (POLLOUT | POLLERR | POLLHUP)) && c->owed.len > 0 &&
        !peer_owed_send(&c->owed, p->fd)) {
        conn_close(i);
        return;
    }
    if ((p->revents & (POLLIN | POLLERR | POLLHUP)) && (p->events & POLLIN)) {
        ssize_t n = recv(p->fd, read_buf, sizeof read_buf, 0);
        if (n > 0) {
            peer_handle(read_buf, (size_t)n);
            if (!peer_reply(&c->owed, p->fd, read_buf, (size_t)n)) {
                conn_close(i);
                return;
            }
        } else if (n == 0) {
            c->eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_close(i); /* reset: nothing more can be delivered */
            return;
        }
    }
    if (c->eof && c->owed.len == 0) {
        conn_close(i); /* everything went out: done */
        return;
    }
    /* Stop reading past HIGH, resume at LOW; watch writability while owed. */
    bool reading = !c->eof && c->owed.len <= (p->events & POLLIN ? PEER_OWED_HIGH : PEER_OWED_LOW);
    p->events = (short)((reading ? POLLIN : 0) | (c->owed.len > 0 ? POLLOUT : 0));
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            peer_accept_failed(errno);
            return;
        }
        if (count == cap) {
            size_t ncap = cap * 2;
            struct pollfd *np = realloc(pfds, ncap * sizeof *np);
            if (np != NULL)
                pfds = np;
            struct conn **nc = np ? realloc(conns, ncap * sizeof *nc) : NULL;
            if (nc != NULL) {
                conns = nc;
                cap = ncap;
            }
        }
        struct conn *c = count < cap ? calloc(1, sizeof *c) : NULL;
        if (c == NULL) {
            close(fd);
            peer_count_refused("out of memory");
            continue;
        }
        peer_set_nodelay(fd);
        pfds[count] = (struct pollfd){.fd = fd, .events = POLLIN};
        conns[count] = c;
        count++;
    }
}

int main(int argc, char **argv)
{
    struct peer_options opt;
    int status = peer_parse_args(argc, argv, "poll", "poll(), one thread", &opt);
    if (status >= 0)
        return status;
    peer_init_process();
    peer_exit_on_signals();

    int lfd = peer_listen(&opt, true);
    cap = 64;
    pfds = malloc(cap * sizeof *pfds);
    conns = malloc(cap * sizeof *conns);
    if (pfds == NULL || conns == NULL)
        return 1;
    pfds[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
    conns[0] = NULL;
    count = 1;
    peer_announce(lfd);

    for (;;) {
        int n = poll(pfds, count, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("evmux-peer-poll: poll");
            return 1;
        }
        /* From the end down: closing entry i moves the last entry, which
         * was already served, into slot i. */
        for (size_t i = count - 1; i >= 1; i--)
            if (pfds[i].revents != 0)
                conn_ready(i);
        /* Accept last: new entries (revents 0) are served from the next round. */
        if (pfds[0].revents & POLLIN)
            accept_all(lfd);
    }
}
