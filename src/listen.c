/* Listening sockets and accepting connections.
 *
 * The hard case is running out of descriptors. accept() then fails with
 * EMFILE but leaves the connection in the backlog, so the listener stays
 * readable and a level-triggered loop would spin at full speed doing
 * nothing. We keep one spare descriptor open: when accept() fails for lack
 * of descriptors, we close the spare, accept the waiting connection, close
 * it at once (the peer sees the connection end instead of hanging), and
 * open the spare again. If even that fails, we stop watching the listener
 * for a short while and try again, so the process never spins.
 *
 * On a readiness backend the listener's watcher says a connection waits,
 * and accept4() takes up to ACCEPTS_PER_WAKEUP of them. On io_uring the
 * kernel accepts by itself: one multishot accept request (op.h) posts a
 * result per connection, and a busy listener costs no system call. Both
 * hand each outcome to accepted(). The kernel's accept takes a descriptor
 * before it looks at the backlog, so without a free one it fails at once
 * even when nobody waits: where readiness would wait for the next
 * connection, the request pauses instead of asking again in a loop. */
#include "stream_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const struct evmux__kind listener_kind;

#define ACCEPTS_PER_WAKEUP 64
#define ACCEPT_RETRY_MS 100

#define IO(l) (&(l)->wait.io)
#define ACCEPT(l) (&(l)->wait.accept)

enum listener_state {
    LS_OUT_OF_FDS = 1u << 0, /* reported once per episode */
    LS_PAUSED = 1u << 1      /* not accepting until the retry timer fires */
};

/* The kernel accepts (io_uring), rather than telling us to. */
static bool kernel_accepts(const evmux_listener *l)
{
    return l->handle.loop->backend->completion != NULL;
}

static void start_accepting_request(evmux_listener *l)
{
    if (!evmux__op_busy(ACCEPT(l))) /* else its end asks again */
        evmux__op_submit(l->handle.loop, ACCEPT(l), EVMUX__OP_ACCEPT, l->fd, 0);
    evmux__handle_activate(&l->handle);
}

static int start_accepting(evmux_listener *l)
{
    if (!kernel_accepts(l))
        return evmux_io_start(IO(l), EVMUX_READABLE);
    start_accepting_request(l);
    return 0;
}

static void stop_accepting(evmux_listener *l)
{
    if (!kernel_accepts(l)) {
        evmux_io_stop(IO(l));
        return;
    }
    evmux__op_cancel(l->handle.loop, ACCEPT(l));
    evmux__handle_deactivate(&l->handle);
}

static int open_reserve(void)
{
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Stops accepting for a while. Without the timer that would end the
 * pause (no memory for it), the listener keeps accepting rather than stop
 * for good, and says why. */
static void pause_accepting(evmux_listener *l)
{
    int rc = evmux_timer_start(&l->retry, ACCEPT_RETRY_MS, 0);
    if (rc < 0) {
        l->cb(l, rc);
        return;
    }
    l->state |= LS_PAUSED;
    stop_accepting(l);
}

static void on_retry(evmux_timer *t)
{
    evmux_listener *l = t->handle.data;
    l->state &= ~LS_PAUSED;
    if (l->reserve_fd < 0)
        l->reserve_fd = open_reserve();
    int rc = start_accepting(l);
    if (rc < 0) { /* no memory, say: tell, and try again after a pause */
        l->cb(l, rc);
        if (!evmux_is_closing(&l->handle) && evmux_timer_start(&l->retry, ACCEPT_RETRY_MS, 0) < 0)
            l->cb(l, -ENOMEM); /* cannot even wait: the listener has stopped */
    }
}

/* Accepts and closes one waiting connection with the spare descriptor.
 * Returns 1 to go on, 0 when the backlog is empty, -1 to pause. */
static int shed_one(evmux_listener *l)
{
    if (l->reserve_fd < 0)
        return -1;
    close(l->reserve_fd);
    int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    int accept_errno = errno;
    if (fd >= 0)
        close(fd);
    l->reserve_fd = open_reserve();
    if (l->reserve_fd < 0)
        return -1;
    if (fd < 0)
        return accept_errno == EAGAIN || accept_errno == EWOULDBLOCK ? 0 : -1;
    return 1;
}

/* One outcome of accepting: a new descriptor, offered to the callback, or
 * a negative errno value. Returns false when accepting should stop for
 * now (it has paused, or the backlog is empty, or the listener closed). */
static bool accepted(evmux_listener *l, int fd)
{
    if (fd >= 0) {
        l->state &= ~LS_OUT_OF_FDS;
        l->pending_fd = fd;
        l->cb(l, 0);
        if (l->pending_fd >= 0) { /* not taken: refused */
            close(l->pending_fd);
            l->pending_fd = -1;
        }
        return !evmux__closing(&l->handle);
    }
    int err = -fd;
    switch (err) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
        return true;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM: {
        /* Linux fails accept with EMFILE even on an empty backlog when no
         * descriptor is free, so report only once shedding shows that a
         * connection was really turned away. */
        int shed = shed_one(l);
        if (shed == 0) {
            if (kernel_accepts(l))
                pause_accepting(l); /* it would fail again at once: see the top */
            return false;
        }
        if (!(l->state & LS_OUT_OF_FDS)) {
            l->state |= LS_OUT_OF_FDS;
            l->cb(l, -err);
            if (evmux__closing(&l->handle))
                return false;
        }
        if (shed > 0)
            return true;
        pause_accepting(l);
        return false;
    }
    default:
        l->cb(l, -err);
        if (!evmux__closing(&l->handle))
            pause_accepting(l);
        return false;
    }
}

static void on_listener_io(evmux_io *io, unsigned events)
{
    (void)events;
    evmux_listener *l = io->handle.data;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP && !evmux__closing(&l->handle); i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (!accepted(l, fd < 0 ? -errno : fd))
            return;
    }
}

/* A result of the multishot accept: a connection, or why the request
 * ended; once it has ended, the listener asks again unless it is paused
 * or closed. A closed listener's request is an orphan: what it still
 * accepts is closed, and its end closes the listening descriptor (kept
 * open until then, as the request names it by number). */
static void accept_done(struct evmux__op *op, int res, void *buf, bool more)
{
    (void)buf;
    evmux_listener *l = EVMUX__CONTAINER_OF(op, evmux_listener, wait.accept);
    if (evmux__op_orphaned(op)) {
        if (res >= 0)
            close(res);
        if (!more) {
            close(op->fd);
            evmux__close_resume(&l->handle);
        }
        return;
    }
    if (res != -ECANCELED)
        accepted(l, res);
    if (!more && !evmux__closing(&l->handle) && !(l->state & LS_PAUSED))
        start_accepting_request(l);
}

static const struct evmux__op_class accept_class = {.done = accept_done};

int evmux_accept(evmux_listener *l, evmux_stream *client)
{
    if (l == NULL || client == NULL || evmux_is_closing(&client->handle) ||
        client->handle.type != EVMUX_HANDLE_STREAM)
        return -EINVAL;
    if (l->pending_fd < 0)
        return -EAGAIN;
    if (evmux_stream_fd(client) >= 0)
        return -EISCONN;
    int rc = evmux__stream_attach(client, l->pending_fd);
    if (rc < 0)
        return rc; /* stays pending: closed when the callback returns */
    l->pending_fd = -1;
    return 0;
}

int evmux_accept_fd(evmux_listener *l, int *fd)
{
    if (l == NULL || fd == NULL)
        return -EINVAL;
    if (l->pending_fd < 0)
        return -EAGAIN;
    *fd = l->pending_fd; /* accept4 made it non-blocking and close-on-exec */
    l->pending_fd = -1;
    return 0;
}

/* A Unix socket file left by a process that died blocks bind() with
 * EADDRINUSE. Replace it only if it is a socket nobody accepts on. */
static bool remove_stale_socket(const struct sockaddr *addr, socklen_t len)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
    struct stat st;
    if (un->sun_path[0] == '\0' || stat(un->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return false;
    /* Non-blocking: a live server with a full backlog must not stall us
     * (EAGAIN means someone is there). A live server does see the probe as
     * a connection that closes at once. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return false;
    bool stale = connect(probe, addr, len) < 0 && errno == ECONNREFUSED;
    close(probe);
    return stale && unlink(un->sun_path) == 0;
}

static int open_listening_socket(const struct sockaddr *addr, socklen_t len,
                                 const evmux_listen_options *opts)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    int rc = 0;
    if (addr->sa_family == AF_INET || addr->sa_family == AF_INET6) {
        /* Restarting a server must not wait for old connections' TIME_WAIT. */
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
            rc = -errno;
        if (rc == 0 && (opts->flags & EVMUX_LISTEN_REUSEPORT)) {
#ifdef SO_REUSEPORT
            if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
                rc = -errno;
#else
            rc = -ENOTSUP;
#endif
        }
        if (rc == 0 && addr->sa_family == AF_INET6) {
            int v6only = (opts->flags & EVMUX_LISTEN_IPV6_ONLY) != 0;
            if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0)
                rc = -errno;
        }
    } else if (opts->flags & EVMUX_LISTEN_REUSEPORT) {
        rc = -EINVAL;
    }
    if (rc == 0 && bind(fd, addr, len) < 0) {
        rc = -errno;
        if (rc == -EADDRINUSE && addr->sa_family == AF_UNIX && remove_stale_socket(addr, len))
            rc = bind(fd, addr, len) < 0 ? -errno : 0;
    }
    if (rc == 0 && listen(fd, opts->backlog > 0 ? opts->backlog : SOMAXCONN) < 0)
        rc = -errno;
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

static void listener_close_begin(evmux_handle *h);
static void listener_close_finish(evmux_handle *h);

int evmux_listen(evmux_loop *loop, evmux_listener *l, const struct sockaddr *addr,
                 socklen_t addr_len, const evmux_listen_options *opts, evmux_accept_cb cb)
{
    static const evmux_listen_options defaults = {0, 0};
    if (loop == NULL || l == NULL || addr == NULL || cb == NULL)
        return -EINVAL;
    if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6 && addr->sa_family != AF_UNIX)
        return -EAFNOSUPPORT;
    if (opts == NULL)
        opts = &defaults;

    char *unix_path = NULL;
    if (addr->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
        if (un->sun_path[0] != '\0' && (unix_path = strdup(un->sun_path)) == NULL)
            return -ENOMEM;
    }
    int fd = open_listening_socket(addr, addr_len, opts);
    if (fd >= 0 && evmux__io_check_fd(loop, fd) < 0) {
        close(fd);
        fd = -ERANGE;
    }
    if (fd < 0) {
        free(unix_path);
        return fd;
    }

    void *data = l->handle.data;
    memset(l, 0, sizeof *l);
    l->handle.data = data;
    evmux__handle_init(loop, &l->handle, &listener_kind);
    l->cb = cb;
    l->fd = fd;
    l->pending_fd = -1;
    l->unix_path = unix_path;
    l->reserve_fd = open_reserve();
    if (kernel_accepts(l)) {
        evmux__op_init(ACCEPT(l), &accept_class);
    } else {
        evmux_io_init(loop, IO(l), fd, on_listener_io);
        evmux__handle_make_internal(&IO(l)->handle);
        IO(l)->handle.data = l;
    }
    evmux_timer_init(loop, &l->retry, on_retry);
    evmux__handle_make_internal(&l->retry.handle);
    l->retry.handle.data = l;

    int rc = start_accepting(l);
    if (rc < 0) {
        listener_close_begin(&l->handle);
        listener_close_finish(&l->handle);
        loop->open_handles--; /* never handed to the caller */
        return rc;
    }
    return 0;
}

int evmux_listener_address(const evmux_listener *l, struct sockaddr_storage *out,
                           socklen_t *out_len)
{
    if (l == NULL || out == NULL || out_len == NULL || l->fd < 0)
        return -EINVAL;
    *out_len = sizeof *out;
    return getsockname(l->fd, (struct sockaddr *)out, out_len) < 0 ? -errno : 0;
}

static void listener_close_begin(evmux_handle *h)
{
    evmux_listener *l = (evmux_listener *)h;
    evmux_timer_stop(&l->retry);
    bool kept = false; /* by the accept request, which still names it */
    if (kernel_accepts(l)) {
        evmux__op_release(l->handle.loop, ACCEPT(l));
        evmux__handle_deactivate(&l->handle);
        kept = evmux__op_busy(ACCEPT(l));
    } else {
        evmux__io_stop_now(IO(l));
    }
    if (l->fd >= 0 && !kept)
        close(l->fd);
    l->fd = -1;
    if (l->reserve_fd >= 0)
        close(l->reserve_fd);
    l->reserve_fd = -1;
    if (l->unix_path != NULL)
        unlink(l->unix_path);
}

static void listener_close_finish(evmux_handle *h)
{
    evmux_listener *l = (evmux_listener *)h;
    free(l->unix_path);
    l->unix_path = NULL;
}

/* The listener is kept running by its watcher (or its own flag, for the
 * accept request) and its retry timer. */
static void listener_set_ref(evmux_handle *h, bool ref)
{
    evmux_listener *l = (evmux_listener *)h;
    if (!kernel_accepts(l))
        evmux__handle_set_ref(&IO(l)->handle, ref);
    evmux__handle_set_ref(&l->retry.handle, ref);
}

static int listener_is_active(const evmux_handle *h)
{
    const evmux_listener *l = (const evmux_listener *)h;
    if ((h->flags & EVMUX_FLAG_ACTIVE) || evmux_is_active(&l->retry.handle))
        return 1;
    return !kernel_accepts(l) && evmux_is_active(&IO(l)->handle);
}

/* A closed listener's close callback waits for its accept request. */
static bool listener_close_wait(evmux_handle *h)
{
    evmux_listener *l = (evmux_listener *)h;
    return kernel_accepts(l) && evmux__op_busy(ACCEPT(l));
}

static const struct evmux__kind listener_kind = {
    .number = EVMUX_HANDLE_LISTENER,
    .close_begin = listener_close_begin,
    .close_wait = listener_close_wait,
    .close_finish = listener_close_finish,
    .set_ref = listener_set_ref,
    .is_active = listener_is_active,
};
