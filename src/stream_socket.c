/* A stream's descriptor: attaching one (evmux_stream_open, an accepted
 * socket), connecting, letting it go, and the socket options. The driver
 * is chosen here, when the descriptor is attached. */
#include "stream_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- attaching, connecting ---- */

void evmux__st_detach(evmux_stream *s)
{
    if (!(s->state & (ST_OPEN | ST_CONNECTING)))
        return;
    if (!s->driver->detach(s))
        close(s->fd);
    s->fd = -1;
    s->state &= ~(ST_OPEN | ST_CONNECTING);
}

void evmux__st_report_connect(evmux_stream *s, int status)
{
    evmux_connect_req *req = s->connect_req;
    assert(req != NULL); /* one report per connect */
    s->connect_req = NULL;
    evmux_timer_stop(&req->timeout);
    if (status != 0) {
        evmux__st_detach(s);
        s->error = 0; /* the stream may try again */
    }
    req->cb(req, status); /* may free req, or connect again */
    evmux__st_connect_given_up(s, status);
}

void evmux__st_connect_given_up(evmux_stream *s, int status)
{
    if (status == 0 || evmux__closing(&s->handle) || (s->state & ST_CONNECTED_OR_ON_THE_WAY))
        return; /* connecting again: the writes wait for that connection */
    /* Writes made while connecting cannot go anywhere now. */
    if (s->req_head != NULL || s->queued > 0 || (s->state & ST_SHUT_WANTED)) {
        evmux__st_fail_writes(s, status);
        s->error = 0;
        s->state &= ~(ST_SHUT_WANTED | ST_SHUT_DONE | ST_SHUT_REPORT);
    }
}

void evmux__st_connect_abort(evmux_stream *s, int err)
{
    assert(s->connect_req != NULL);
    evmux_timer_stop(&s->connect_req->timeout);
    evmux__st_detach(s);
    s->state |= ST_CONNECT_HOST | ST_CONNECT_FAILED;
    s->error = err;
    evmux__st_defer(s); /* run_deferred reports it */
}

static void on_connect_timeout(evmux_timer *t)
{
    evmux_connect_req *req = t->handle.data;
    evmux__st_report_connect(req->stream, -ETIMEDOUT);
}

/* The driver for a socket, or (is_socket false) a pipe, terminal or file,
 * which takes the readiness driver; NULL (-EBUSY) while the other driver,
 * which shares its memory, still has requests of an earlier descriptor
 * (they end from the loop, after a close or a failed connect). */
static const struct evmux__stream_driver *driver_for(const evmux_stream *s, bool is_socket)
{
    const struct evmux__stream_driver *driver =
        is_socket && s->handle.loop->backend->completion != NULL ? &evmux__stream_native
                                                                 : &evmux__stream_ready;
    if (s->driver != NULL && s->driver != driver && !s->driver->idle(s))
        return NULL;
    return driver;
}

/* Gives the stream its descriptor and its driver. */
static int attach(evmux_stream *s, int fd, bool is_socket)
{
    int rc = evmux__io_check_fd(s->handle.loop, fd);
    if (rc < 0)
        return rc;
    if (s->state & ST_CONNECT_HOST)
        return -EISCONN; /* an evmux_connect_host has it */
    const struct evmux__stream_driver *driver = driver_for(s, is_socket);
    if (driver == NULL)
        return -EBUSY;
    s->fd = fd;
    /* A shutdown asked for while an earlier connect failed stays wanted:
     * its callback connects again, and the shutdown follows that
     * connection as the writes do. */
    s->state = (s->state & ~(ST_EOF | ST_SHUT_DONE | ST_SHUT_REPORT | ST_NOT_SOCKET)) |
               (is_socket ? 0 : ST_NOT_SOCKET);
    rc = driver->attach(s);
    if (rc < 0) {
        s->fd = -1;
        return rc;
    }
    assert(s->driver == driver);
    s->state |= ST_OPEN;
    s->error = 0;
    s->read_end = 0;
    return 0;
}

int evmux__stream_attach(evmux_stream *s, int fd)
{
    return attach(s, fd, true);
}

void evmux__st_connect_settled(evmux_stream *s)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        evmux__st_report_connect(s, -err);
        return;
    }
    s->state = (s->state & ~ST_CONNECTING) | ST_OPEN;
    evmux__st_report_connect(s, 0);
    if (evmux__closing(&s->handle))
        return;
    /* Writes and a shutdown asked for while connecting go out now. */
    if (s->queued > 0) {
        s->driver->connected(s);
        return;
    }
    if ((s->state & ST_SHUT_WANTED) && !(s->state & ST_SHUT_DONE)) {
        evmux__st_finish_shutdown(s);
        evmux__st_defer(s);
    }
    evmux__st_update_interest(s);
}

int evmux_connect(evmux_connect_req *req, evmux_stream *s, const struct sockaddr *addr,
                  socklen_t addr_len, uint64_t timeout_ms, evmux_connect_cb cb)
{
    if (req == NULL || s == NULL || addr == NULL || cb == NULL || evmux__closing(&s->handle))
        return -EINVAL;
    if (s->state & ST_OPEN)
        return -EISCONN;
    if (s->state & (ST_CONNECTING | ST_CONNECT_HOST))
        return -EALREADY;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = evmux__stream_attach(s, fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    s->state = (s->state & ~ST_OPEN) | ST_CONNECTING;
    req->stream = s;
    req->cb = cb;
    s->connect_req = req;
    evmux_timer_init(s->handle.loop, &req->timeout, on_connect_timeout);
    evmux__handle_make_internal(&req->timeout.handle);
    if (!(s->handle.flags & EVMUX_FLAG_REF))
        evmux_unref(&req->timeout.handle);
    req->timeout.handle.data = req;

    if (connect(fd, addr, addr_len) < 0 && errno != EINPROGRESS) {
        /* Refused at once (a Unix socket nobody listens on, say): still
         * reported through the callback, from the loop. */
        s->error = -errno;
        s->state |= ST_CONNECT_FAILED;
        evmux__st_defer(s);
        return 0;
    }
    rc = evmux__st_update_interest(s);
    if (rc < 0) {
        evmux__st_detach(s);
        s->connect_req = NULL;
        return rc;
    }
    if (timeout_ms > 0 && (rc = evmux_timer_start(&req->timeout, timeout_ms, 0)) < 0) {
        evmux__st_detach(s); /* no connect without the timeout asked for */
        s->connect_req = NULL;
        return rc;
    }
    return 0;
}

/* ---- adopting a descriptor ---- */

int evmux_stream_open(evmux_stream *s, int fd)
{
    if (s == NULL || fd < 0 || evmux__closing(&s->handle))
        return -EINVAL;
    if (s->state & ST_CONNECTED_OR_ON_THE_WAY)
        return -EISCONN;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    int rc = evmux__io_check_fd(s->handle.loop, fd);
    if (rc < 0)
        return rc; /* before the terminal's description is replaced */
    if (driver_for(s, S_ISSOCK(st.st_mode)) == NULL)
        return -EBUSY; /* likewise */
    if (isatty(fd))
        evmux__st_reopen_terminal(fd);
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -errno;
    bool made_nonblock = !(flags & O_NONBLOCK);
    if (made_nonblock && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;
    rc = attach(s, fd, S_ISSOCK(st.st_mode));
    if (rc < 0 && made_nonblock)
        fcntl(fd, F_SETFL, flags);
    else if (made_nonblock && !S_ISSOCK(st.st_mode))
        s->state |= ST_MADE_NONBLOCK;
    return rc;
}

int evmux_stream_fd(const evmux_stream *s)
{
    if (s == NULL)
        return -1;
    return s->fd;
}

/* ---- socket options ---- */

/* Unix-domain sockets take some TCP options (SO_KEEPALIVE) and ignore
 * them, and refuse others: all are refused alike, up front. */
static bool is_unix_socket(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    return getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_UNIX;
}

/* 0 if the stream has a TCP socket to set options on. */
static int tcp_socket_of(const evmux_stream *s)
{
    if (s == NULL)
        return -EINVAL;
    if (!(s->state & (ST_OPEN | ST_CONNECTING)))
        return -ENOTCONN;
    if ((s->state & ST_NOT_SOCKET) || is_unix_socket(s->fd))
        return -ENOTSUP;
    return 0;
}

int evmux_stream_set_nodelay(evmux_stream *s, int on)
{
    int rc = tcp_socket_of(s);
    if (rc < 0)
        return rc;
    int v = on != 0;
    return setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) < 0 ? -errno : 0;
}

int evmux_stream_set_keepalive(evmux_stream *s, int on, unsigned idle_s)
{
    int rc = tcp_socket_of(s);
    if (rc < 0)
        return rc;
    int v = on != 0;
    if (setsockopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v) < 0)
        return -errno;
    if (on && idle_s > 0) {
#ifdef TCP_KEEPIDLE
        int idle = idle_s > INT_MAX ? INT_MAX : (int)idle_s;
        if (setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0)
            return -errno;
#endif
    }
    return 0;
}

int evmux_stream_peer(const evmux_stream *s, struct sockaddr_storage *out, socklen_t *out_len)
{
    if (s == NULL || out == NULL || out_len == NULL)
        return -EINVAL;
    if (!(s->state & ST_OPEN))
        return -ENOTCONN;
    *out_len = sizeof *out;
    return getpeername(s->fd, (struct sockaddr *)out, out_len) < 0 ? -errno : 0;
}
