/* evmux-peer-select: the select() server of the original text (quoted in
 * docs/io-models.md), in C.
 *
 * One thread; each round rebuilds the fd_sets from the table of
 * connections (readable: the ones we read from; writable: the ones owed
 * bytes), calls select() over every descriptor up to the highest, then
 * serves the ready ones, one recv each. As in the original, sockets are
 * non-blocking; unlike the original, a reply goes to the socket at once and only
 * what it does not take waits for writability, nothing is dropped, and a
 * client owed more than PEER_OWED_HIGH is not read from until it catches up.
 *
 * select() cannot watch a descriptor >= FD_SETSIZE (1024): such
 * connections are closed at once and counted. That is the model's limit.
 */
#include <sys/select.h>

#include "peer_common.h"

struct conn {
    struct peer_owed owed;  /* bytes the client has not taken yet */
    bool reading;           /* in the read set */
    bool eof;               /* the client sent EOF */
};

static struct conn *conns[FD_SETSIZE]; /* by descriptor */
static int max_fd = -1;                /* highest descriptor in conns */
static char read_buf[PEER_READ_SIZE];  /* one thread, one buffer for everybody */

static void conn_close(int fd)
{
    close(fd);
    free(conns[fd]->owed.data);
    free(conns[fd]);
    conns[fd] = NULL;
    while (max_fd >= 0 && conns[max_fd] == NULL)
        max_fd--;
}

/* Serves one ready connection. */
static void conn_ready(int fd, bool readable, bool writable)
{
    struct conn *c = conns[fd];
    if (writable && !peer_owed_send(&c->owed, fd)) {
        conn_close(fd);
        return;
    }
    if (readable) {
        ssize_t n = recv(fd, read_buf, sizeof read_buf, 0);
        if (n > 0) {
            peer_handle(read_buf, (size_t)n);
            if (!peer_reply(&c->owed, fd, read_buf, (size_t)n)) {
                conn_close(fd);
                return;
            }
        } else if (n == 0) {
            c->eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_close(fd); /* reset: nothing more can be delivered */
            return;
        }
    }
    if (c->eof && c->owed.len == 0) {
        conn_close(fd); /* everything went out: done */
        return;
    }
    /* Stop reading past HIGH, resume at LOW. */
    c->reading = !c->eof && c->owed.len <= (c->reading ? PEER_OWED_HIGH : PEER_OWED_LOW);
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            peer_accept_failed(errno);
            return;
        }
        if (fd >= FD_SETSIZE) {
            close(fd);
            peer_count_refused("descriptor >= FD_SETSIZE");
            continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            peer_count_refused("out of memory");
            continue;
        }
        peer_set_nodelay(fd);
        c->reading = true;
        conns[fd] = c;
        if (fd > max_fd)
            max_fd = fd;
    }
}

int main(int argc, char **argv)
{
    struct peer_options opt;
    int status = peer_parse_args(argc, argv, "select",
                                 "select(), one thread; refuses descriptors >= FD_SETSIZE", &opt);
    if (status >= 0)
        return status;
    peer_init_process();
    peer_exit_on_signals();

    int lfd = peer_listen(&opt, true);
    if (lfd >= FD_SETSIZE) {
        fprintf(stderr, "evmux-peer-select: listening descriptor %d >= FD_SETSIZE\n", lfd);
        return 1;
    }
    peer_announce(lfd);

    for (;;) {
        fd_set rfds, wfds;
        FD_ZERO(&rfds);
        FD_ZERO(&wfds);
        FD_SET(lfd, &rfds);
        int nfds = lfd + 1;
        for (int fd = 0; fd <= max_fd; fd++) {
            struct conn *c = conns[fd];
            if (c == NULL)
                continue;
            if (c->reading)
                FD_SET(fd, &rfds);
            if (c->owed.len > 0)
                FD_SET(fd, &wfds);
            if (fd >= nfds)
                nfds = fd + 1;
        }
        int n = select(nfds, &rfds, &wfds, NULL, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("evmux-peer-select: select");
            return 1;
        }
        /* Connections first: closing one frees only its own slot. Accept
         * last, so that a new connection on a reused descriptor number
         * cannot inherit a ready bit from this round. */
        for (int fd = 0; fd < nfds; fd++) {
            if (fd == lfd || conns[fd] == NULL)
                continue;
            bool r = FD_ISSET(fd, &rfds), w = FD_ISSET(fd, &wfds);
            if (r || w)
                conn_ready(fd, r, w);
        }
        if (FD_ISSET(lfd, &rfds))
            accept_all(lfd);
    }
}
