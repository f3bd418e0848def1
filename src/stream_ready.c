/* The readiness driver of streams: the loop says a descriptor is ready,
 * and the stream reads or writes it itself. recv() (read() for a
 * descriptor that is not a socket) goes into a buffer owned by the loop
 * and lent to the read callback, so an idle connection holds no read
 * buffer and a busy one allocates nothing.
 *
 * Pipes, terminals and files take this driver on every backend, with
 * read() and write(): SIGPIPE is blocked around a write() (there is no
 * MSG_NOSIGNAL for pipes), a terminal is reopened so that making it
 * non-blocking does not change the shell's file description, and a regular
 * file's watcher is always ready (io.c). */
#include "stream_internal.h"

#define IO(s) (&(s)->driver_state.io)

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- sending ---- */

/* write() to a pipe whose reader is gone raises SIGPIPE, and only sockets
 * have MSG_NOSIGNAL: block the signal for this thread around the write,
 * and take back the one the write raised, if it raised one. */
static ssize_t write_no_sigpipe(int fd, const struct iovec *iov, size_t n)
{
    sigset_t pipe_only, old_mask, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old_mask);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE) == 1;
    ssize_t w = writev(fd, iov, (int)(n > IOV_MAX ? IOV_MAX : n));
    int err = errno;
    if (w < 0 && err == EPIPE && !was_pending) {
        const struct timespec no_wait = {0, 0};
        while (sigtimedwait(&pipe_only, NULL, &no_wait) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    errno = err;
    return w;
}

static ssize_t send_iov(const evmux_stream *s, struct iovec *iov, size_t n)
{
    ssize_t w;
    if (s->state & ST_NOT_SOCKET) {
        do
            w = write_no_sigpipe(s->fd, iov, n);
        while (w < 0 && errno == EINTR);
        return w;
    }
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = iov;
    msg.msg_iovlen = n;
    do
        w = sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    return w;
}

int evmux__st_send_queued(evmux_stream *s)
{
    while (s->queued > 0) {
        struct iovec iov[SEND_IOV_MAX];
        size_t total;
        size_t n = evmux__st_queue_iov(s, iov, SEND_IOV_MAX, &total);
        ssize_t w = send_iov(s, iov, n);
        if (w < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        evmux__st_consume_queue(s, (size_t)w);
        if ((size_t)w < total)
            break;
    }
    return 0;
}

/* The socket is writable: send the queue, then report what went out (or
 * fail the writes). */
static void flush_queue(evmux_stream *s)
{
    int rc = evmux__st_send_queued(s);
    if (rc < 0)
        evmux__st_fail_writes(s, rc);
    else
        evmux__st_after_send(s);
}

/* ---- reading ---- */

/* A read that fills the whole buffer suggests more is waiting: take up to
 * READS_PER_EVENT buffers per readiness event, which saves a wait per
 * buffer on a fast sender without letting one stream starve the others. */
static void read_ready(evmux_stream *s)
{
    struct stream_loop *sl = st_loop(s);
    if (sl->read_buf == NULL && (sl->read_buf = malloc(READ_BUF_BYTES)) == NULL) {
        s->state &= ~ST_READING;
        evmux__st_update_interest(s);
        s->read_cb(s, -ENOMEM, NULL);
        return;
    }
    for (int i = 0; i < READS_PER_EVENT; i++) {
        ssize_t n = (s->state & ST_NOT_SOCKET) ? read(s->fd, sl->read_buf, READ_BUF_BYTES)
                                               : recv(s->fd, sl->read_buf, READ_BUF_BYTES, 0);
        if (n > 0) {
            s->read_cb(s, n, sl->read_buf);
            if (n < READ_BUF_BYTES || !(s->state & ST_READING) || evmux__closing(&s->handle))
                return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        int status = n == 0 ? EVMUX_EOF : -errno;
        if (n == 0)
            s->state |= ST_EOF;
        s->state &= ~ST_READING;
        evmux__st_update_interest(s);
        s->read_cb(s, status, NULL);
        return;
    }
}

/* ---- the watcher ---- */

static void on_stream_io(evmux_io *io, unsigned events)
{
    evmux_stream *s = io->handle.data;
    if (s->state & ST_CONNECTING) {
        evmux__st_connect_settled(s);
        return;
    }
    if ((events & EVMUX_WRITABLE) && s->queued > 0) {
        flush_queue(s);
        if (evmux__closing(&s->handle))
            return;
    }
    if ((events & EVMUX_READABLE) && (s->state & ST_READING))
        read_ready(s);
}

/* A terminal's file description is shared with the shell that started us:
 * made non-blocking, it would stay so after we exit and break the shell's
 * next read. Opening the terminal again gives a description of our own,
 * put in place under the same number. If that fails, the shared one is
 * used. */
void evmux__st_reopen_terminal(int fd)
{
    int pty_number;
    if (ioctl(fd, TIOCGPTN, &pty_number) == 0)
        return; /* a pseudo-terminal's master: opening it again makes a new pty */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int flags = fcntl(fd, F_GETFL);
    int fd_flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fd_flags < 0)
        return;
    /* O_NONBLOCK: a serial line without CLOCAL would block the open until
     * carrier; the stream wants it non-blocking anyway. */
    int own = open(path, (flags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (own < 0)
        return;
    if (own != fd) {
        if (dup3(own, fd, fd_flags & FD_CLOEXEC ? O_CLOEXEC : 0) < 0) {
            close(own);
            return;
        }
        close(own);
    }
}

/* ---- the driver ---- */

static int ready_sync(evmux_stream *s)
{
    unsigned want;
    if (s->state & ST_CONNECTING)
        want = EVMUX_WRITABLE;
    else
        want = ((s->state & ST_READING) ? EVMUX_READABLE : 0) |
               (s->queued > 0 ? EVMUX_WRITABLE : 0);
    if (want == IO(s)->events)
        return 0;
    return evmux_io_start(IO(s), want);
}

static ssize_t ready_write_now(evmux_stream *s, const evmux_buf bufs[], size_t nbufs)
{
    size_t done = 0, first = 0;
    while (first < nbufs) {
        struct iovec iov[SEND_IOV_MAX];
        size_t n = 0, batch = 0;
        for (; first + n < nbufs && n < SEND_IOV_MAX; n++) {
            iov[n].iov_base = (void *)bufs[first + n].base;
            iov[n].iov_len = bufs[first + n].len;
            batch += bufs[first + n].len;
        }
        ssize_t w = send_iov(s, iov, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -errno;
        }
        done += (size_t)w;
        if ((size_t)w < batch)
            break;
        first += n;
    }
    return (ssize_t)done;
}

static bool ready_detach(evmux_stream *s)
{
    evmux__io_stop_now(IO(s)); /* while the descriptor still names the file */
    /* A pipe may be shared with other processes (a shell pipeline): leave
     * its description blocking, as we found it. */
    if (s->state & ST_MADE_NONBLOCK) {
        int flags = fcntl(s->fd, F_GETFL);
        if (flags >= 0)
            fcntl(s->fd, F_SETFL, flags & ~O_NONBLOCK);
        s->state &= ~ST_MADE_NONBLOCK;
    }
    return false; /* the caller closes it */
}

static void ready_set_ref(evmux_stream *s, bool ref)
{
    evmux__handle_set_ref(&IO(s)->handle, ref);
}

static bool ready_is_active(const evmux_stream *s)
{
    return evmux_is_active(&IO(s)->handle);
}

static bool ready_idle(const evmux_stream *s)
{
    /* Stopped when the descriptor went; it may still be on the loop's
     * pending queue until the current dispatch ends. */
    return !(IO(s)->handle.flags & EVMUX_FLAG_PENDING);
}

static int ready_attach(evmux_stream *s)
{
    int rc = evmux_io_init(s->handle.loop, IO(s), s->fd, on_stream_io);
    if (rc < 0)
        return rc;
    if (!(s->state & ST_NOT_SOCKET))
        IO(s)->handle.flags |= EVMUX_FLAG_IO_SOCKET;
    evmux__handle_make_internal(&IO(s)->handle);
    if (!(s->handle.flags & EVMUX_FLAG_REF))
        evmux_unref(&IO(s)->handle);
    IO(s)->handle.data = s;
    s->driver = &evmux__stream_ready;
    return 0;
}

const struct evmux__stream_driver evmux__stream_ready = {
    .attach = ready_attach,
    .sync = ready_sync,
    .write_now = ready_write_now,
    .connected = flush_queue,
    .detach = ready_detach,
    .set_ref = ready_set_ref,
    .is_active = ready_is_active,
    .idle = ready_idle,
};
