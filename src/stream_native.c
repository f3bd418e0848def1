/* The completion driver of streams: on a completion-based backend
 * (io_uring) the backend's stream_ops do the I/O. The loop keeps one recv
 * in the kernel while the stream reads, with buffers the backend owns, and
 * one send of the queue's head chunks while bytes are queued. The chunk
 * and offset design fits as it is, since queued bytes belong to the
 * library and stay put until the kernel is done with them. Bytes that
 * arrive after read_stop, before the kernel has heard of the cancel, are
 * stashed and given to the next read callback, in order; a closed stream's
 * close callback waits until its requests have ended.
 *
 * A program must not see which backend runs it, so this driver keeps the
 * readiness driver's promises where batching would break them. Queued
 * bytes become a send request only just before the loop waits, so no
 * callback ever sees a send that the kernel has not been offered yet. A
 * write that takes the queue past the high watermark, and a close with
 * bytes queued, first offer the queue to the kernel at once, as a
 * readiness backend's write does: the watermark then counts bytes the
 * kernel was offered and did not take, and an echo followed by a close
 * delivers its reply, on every backend. */
#include "stream_internal.h"

#include <assert.h>
#include <errno.h>
#include <sys/uio.h>

/* ---- interest ---- */

void evmux__st_set_native_active(evmux_stream *s, bool active)
{
    if (active)
        evmux__handle_activate(&s->handle);
    else
        evmux__handle_deactivate(&s->handle);
}

/* Asks the kernel to end the stream's recv, once. */
void evmux__st_cancel_recv(evmux_stream *s)
{
    /* A cancelled recv is an armed recv: the flag ends with its last result. */
    assert(!(s->state & ST_RECV_CANCELLED) || (s->state & ST_RECV_ARMED));
    if ((s->state & (ST_RECV_ARMED | ST_RECV_CANCELLED)) != ST_RECV_ARMED)
        return;
    native_ops(s)->cancel_recv(s->handle.loop, s);
    s->state |= ST_RECV_CANCELLED;
}

/* The completion-based counterpart of the io watcher's interest: a recv in
 * the kernel while reading (and nothing stashed is owed first), and, while
 * bytes are queued, a send made in the pass just before the loop waits. */
int evmux__st_native_sync(evmux_stream *s)
{
    assert((s->state & ST_NATIVE) && !(s->state & ST_NOT_SOCKET));
    int rc = 0;
    if (s->io.events != 0)
        evmux_io_stop(&s->io); /* it served the connect */
    bool want_recv = (s->state & ST_READING) && s->stash == NULL && s->read_end == 0;
    if (want_recv && !(s->state & ST_RECV_ARMED)) {
        rc = native_ops(s)->recv(s->handle.loop, s, s->io.fd);
        if (rc == 0) {
            s->state |= ST_RECV_ARMED;
            s->armed_wait = (unsigned)s->handle.loop->stats.backend_waits;
        }
    } else if (!want_recv) {
        evmux__st_cancel_recv(s);
    }
    if (s->queued > 0 && !(s->state & ST_SEND_BUSY)) {
        s->state |= ST_SEND_WANTED;
        evmux__st_defer(s);
    }
    evmux__st_set_native_active(s, (s->state & ST_READING) || s->queued > 0);
    return rc;
}

/* Hands the head of the queue to the kernel; called only just before the
 * loop waits (or returns), so ST_SEND_BUSY always means the kernel has
 * been offered the bytes (see the top of the file). Runs no callback. */
int evmux__st_native_submit_send(evmux_stream *s)
{
    s->state &= ~(ST_SEND_WANTED | ST_QUEUE_INHERITED);
    if (s->queued == 0 || (s->state & ST_SEND_BUSY) || !(s->state & ST_OPEN) ||
        evmux__closing(&s->handle))
        return 0;
    assert(!(s->state & ST_SEND_DISCARD)); /* only ever set while a send is busy */
    assert(s->state & ST_NATIVE);
    struct iovec iov[EVMUX__SEND_IOV_MAX];
    size_t total;
    int n = (int)evmux__st_queue_iov(s, iov, EVMUX__SEND_IOV_MAX, &total);
    int rc = native_ops(s)->send(s->handle.loop, s, s->io.fd, iov, n,
                                 (s->state & ST_SEND_FULL) != 0);
    if (rc < 0)
        return rc;
    s->state = (s->state & ~ST_SEND_FULL) | ST_SEND_BUSY;
    s->armed_wait = (unsigned)s->handle.loop->stats.backend_waits;
    return 0;
}

void evmux__streams_flush(evmux_loop *loop)
{
    if (loop->backend->stream_ops == NULL)
        return;
    for (evmux_stream *s = loop->deferred_head; s != NULL; s = s->next_deferred) {
        if (!(s->state & ST_SEND_WANTED) || evmux_is_closing(&s->handle))
            continue;
        int rc = evmux__st_native_submit_send(s);
        if (rc < 0 && s->error == 0)
            s->error = rc; /* its writes fail from the next run's deferred pass */
    }
    loop->backend->stream_ops->flush(loop);
}

/* A completion backend's stream offers its queue to the kernel at once, as
 * a readiness backend's write does (see the top of the file). Only while
 * no send is in the kernel, which keeps the bytes in order. Runs no
 * callback; returns 0 or the send's error. */
int evmux__st_native_send_now(evmux_stream *s)
{
    assert(!(s->state & ST_SEND_BUSY));
    s->state &= ~ST_QUEUE_INHERITED; /* this process sends it after all */
    return evmux__st_send_queued(s);
}

/* ---- reading on a completion-based backend ---- */

static int stash_bytes(evmux_stream *s, const char *p, size_t n)
{
    struct evmux_chunk *tail = s->stash;
    while (tail != NULL && tail->next != NULL)
        tail = tail->next;
    return evmux__chunks_append(s->handle.loop, &s->stash, &tail, p, n);
}

/* Reading ends: EVMUX_EOF or an error, reported once. */
static void report_read_end(evmux_stream *s, int status)
{
    if (status == EVMUX_EOF)
        s->state |= ST_EOF;
    s->state &= ~ST_READING;
    evmux__st_update_interest(s);
    s->read_cb(s, status, NULL);
}

/* Gives a reader what arrived while it was not reading, then how the
 * stream ended if it did, then lets the kernel receive again. */
void evmux__st_deliver_stash(evmux_stream *s)
{
    while (s->stash != NULL && (s->state & ST_READING) && !evmux__closing(&s->handle)) {
        struct evmux_chunk *c = s->stash;
        s->stash = c->next;
        s->read_cb(s, (ssize_t)(c->end - c->start), c->data + c->start);
        c->next = NULL;
        evmux__chunks_put(s->handle.loop, c);
    }
    if (s->stash == NULL && s->read_end != 0 && (s->state & ST_READING) &&
        !evmux__closing(&s->handle)) {
        int status = s->read_end;
        s->read_end = 0;
        report_read_end(s, status);
        return;
    }
    evmux__st_update_interest(s);
}

/* A closed stream waits for the kernel; when its last request has ended,
 * its close goes on. */
static void settle(evmux_stream *s)
{
    assert(!(s->state & ST_PARKED) || evmux__closing(&s->handle));
    if ((s->state & ST_PARKED) && !(s->state & ST_KERNEL_BUSY)) {
        s->state &= ~ST_PARKED;
        s->handle.loop->parked_streams--;
        evmux__closing_push(&s->handle);
    }
}

bool evmux__st_stream_close_wait(evmux_handle *h)
{
    evmux_stream *s = (evmux_stream *)h;
    if (!(s->state & ST_KERNEL_BUSY))
        return false;
    s->state |= ST_PARKED;
    s->handle.loop->parked_streams++;
    return true;
}

void evmux__stream_recv_done(evmux_stream *s, int res, char *buf)
{
    assert(s->state & ST_RECV_ARMED); /* results come only for a recv in the kernel */
    if (res <= 0 || evmux__closing(&s->handle))
        return;
    if ((s->state & ST_READING) && s->stash == NULL) {
        s->read_cb(s, res, buf);
        return;
    }
    /* Not reading (the cancel is on its way) or older bytes wait first. */
    if (stash_bytes(s, buf, (size_t)res) < 0 && s->read_end == 0)
        s->read_end = -ENOMEM; /* cannot keep the order: end reading with it */
    if (s->state & ST_READING)
        evmux__st_defer(s);
}

void evmux__stream_recv_ended(evmux_stream *s, int status)
{
    s->state &= ~(ST_RECV_ARMED | ST_RECV_CANCELLED);
    if (evmux__closing(&s->handle)) {
        settle(s);
        return;
    }
    if (status == -EAGAIN || status == -ENOBUFS || status == -ECANCELED) {
        int rc = evmux__st_update_interest(s); /* again, if still reading */
        if (rc < 0 && (s->state & ST_READING) && !(s->state & ST_RECV_ARMED))
            report_read_end(s, rc); /* no way to ask: say so rather than stall */
        return;
    }
    int end = status == 0 ? EVMUX_EOF : status;
    /* A reset socket cannot send either: refuse writes now, as a
     * readiness backend's immediate send would. */
    if (status < 0 && s->error == 0)
        s->error = status;
    if ((s->state & ST_READING) && s->stash == NULL && s->read_end == 0) {
        report_read_end(s, end);
        return;
    }
    if (s->read_end == 0)
        s->read_end = end;
    if (s->state & ST_READING)
        evmux__st_defer(s);
}

/* A send failed: the connection is gone (reset, or timed out), and the
 * read side must hear of it from us. The kernel's multishot recv cannot be
 * relied on to report the end: the failed send consumed the socket's
 * pending error, and a recv that has already taken the last bytes waits for
 * a wake-up that never comes (Linux 6.18, a race seen under load), so the
 * stream would stay open forever. The recv is cancelled and not asked for
 * again; the reader gets the bytes that came before, then this error. */
void evmux__st_end_reading_with(evmux_stream *s, int err)
{
    if (s->read_end == 0 && !(s->state & ST_EOF))
        s->read_end = err;
    evmux__st_cancel_recv(s);
    if (s->state & ST_READING)
        evmux__st_defer(s);
}

void evmux__stream_send_done(evmux_stream *s, int res)
{
    s->state &= ~ST_SEND_BUSY;
    if (s->state & ST_SEND_DISCARD) {
        evmux__st_free_queue_chunks(s);
        s->state &= ~ST_SEND_DISCARD;
        if (evmux__closing(&s->handle))
            settle(s);
        else
            evmux__st_update_interest(s);
        return;
    }
    if (evmux__closing(&s->handle)) {
        if (res > 0)
            evmux__st_consume_queue(s, (size_t)res); /* sent after all: its writes report 0 */
        settle(s);
        return;
    }
    if (res == -EAGAIN || res == -EWOULDBLOCK) {
        /* The socket is non-blocking and the kernel tried it from a
         * context that would not wait: send again once there is room. */
        s->state |= ST_SEND_FULL;
        evmux__st_update_interest(s);
        return;
    }
    if (res <= 0) {
        int err = res < 0 ? res : -EPIPE;
        evmux__st_end_reading_with(s, err);
        evmux__st_fail_writes(s, err);
        return;
    }
    evmux__st_consume_queue(s, (size_t)res);
    evmux__st_after_send(s);
}

/* In a forked child, after the backend has a ring of its own: the
 * requests died with the parent's, so each stream asks anew. */
int evmux__st_streams_after_fork(evmux_loop *loop)
{
    evmux_stream *s = loop->native_streams;
    while (s != NULL) {
        evmux_stream *next = s->native_next;
        s->state &= ~(ST_RECV_ARMED | ST_RECV_CANCELLED | ST_SEND_BUSY);
        if (s->queued > 0)
            s->state |= ST_QUEUE_INHERITED;
        if (s->state & ST_SEND_DISCARD)
            evmux__stream_send_done(s, -ECANCELED); /* frees the orphaned chunks */
        else if (s->state & ST_PARKED)
            settle(s);
        else
            evmux__st_update_interest(s);
        s = next;
    }
    return 0;
}

void evmux__st_native_list_remove(evmux_stream *s)
{
    if (!(s->state & ST_NATIVE))
        return;
    if (s->native_prev != NULL)
        s->native_prev->native_next = s->native_next;
    else
        s->handle.loop->native_streams = s->native_next;
    if (s->native_next != NULL)
        s->native_next->native_prev = s->native_prev;
    s->native_prev = s->native_next = NULL;
    s->state &= ~ST_NATIVE;
}
