/* evmux-peer-libev: the uppercase echo server on libev.
 *
 * libev only says when a descriptor is ready; the reading, writing and
 * buffering are ours, as in the libev manual's examples. Each connection has
 * two ev_io watchers, one for EV_READ and one for EV_WRITE: the read watcher
 * runs while we want input, the write watcher only while bytes are owed.
 * Replies go straight to the socket; what it does not take waits in a
 * per-connection queue. All connections read into one shared buffer.
 */
#include <ev.h>

#include "peer_common.h"

struct conn {
    ev_io rio, wio;         /* readable / writable watchers on the socket */
    struct peer_owed owed;  /* bytes the client has not taken yet */
    bool eof;               /* the client sent EOF */
};

static char read_buf[PEER_READ_SIZE]; /* one loop, one buffer for everybody */

static void conn_close(EV_P_ struct conn *c)
{
    ev_io_stop(EV_A_ &c->rio);
    ev_io_stop(EV_A_ &c->wio);
    close(c->rio.fd);
    free(c->owed.data);
    free(c);
}

/* After anything changed how much is owed: watch for writability only while
 * something is owed, read only while the client is not too far behind. */
static void conn_update(EV_P_ struct conn *c)
{
    if (c->owed.len == 0) {
        ev_io_stop(EV_A_ &c->wio);
        if (c->eof) {
            conn_close(EV_A_ c); /* everything went out: done */
            return;
        }
    } else {
        ev_io_start(EV_A_ &c->wio); /* no-op when already active */
    }
    if (c->owed.len > PEER_OWED_HIGH || c->eof)
        ev_io_stop(EV_A_ &c->rio);
    else if (c->owed.len <= PEER_OWED_LOW)
        ev_io_start(EV_A_ &c->rio);
}

static void on_readable(EV_P_ ev_io *w, int revents)
{
    (void)revents;
    struct conn *c = w->data;
    ssize_t n = recv(w->fd, read_buf, sizeof read_buf, 0);
    if (n > 0) {
        peer_handle(read_buf, (size_t)n);
        if (!peer_reply(&c->owed, w->fd, read_buf, (size_t)n)) {
            conn_close(EV_A_ c);
            return;
        }
    } else if (n == 0) {
        c->eof = true;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return;
    } else {
        conn_close(EV_A_ c); /* reset: nothing more can be delivered */
        return;
    }
    conn_update(EV_A_ c);
}

static void on_writable(EV_P_ ev_io *w, int revents)
{
    (void)revents;
    struct conn *c = w->data;
    if (!peer_owed_send(&c->owed, w->fd)) {
        conn_close(EV_A_ c);
        return;
    }
    conn_update(EV_A_ c);
}

static void on_accept(EV_P_ ev_io *w, int revents)
{
    (void)revents;
    for (;;) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            peer_accept_failed(errno);
            return;
        }
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            peer_count_refused("out of memory");
            continue;
        }
        peer_set_nodelay(fd);
        ev_io_init(&c->rio, on_readable, fd, EV_READ);
        ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
        c->rio.data = c->wio.data = c;
        ev_io_start(EV_A_ &c->rio);
    }
}

static void on_signal(EV_P_ ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(EV_A_ EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    struct peer_options opt;
    int status = peer_parse_args(argc, argv, "libev", "libev", &opt);
    if (status >= 0)
        return status;
    peer_init_process();

    struct ev_loop *loop = EV_DEFAULT; /* signal watchers need the default loop */
    int lfd = peer_listen(&opt, true);
    ev_io accept_watcher;
    ev_io_init(&accept_watcher, on_accept, lfd, EV_READ);
    ev_io_start(loop, &accept_watcher);

    ev_signal sigint, sigterm;
    ev_signal_init(&sigint, on_signal, SIGINT);
    ev_signal_init(&sigterm, on_signal, SIGTERM);
    ev_signal_start(loop, &sigint);
    ev_signal_start(loop, &sigterm);

    peer_announce(lfd);
    ev_run(loop, 0);
    peer_print_summary();
    return 0;
}
