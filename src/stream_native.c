/* The completion driver of streams: on a completion-based backend
 * (io_uring) a socket's I/O is two requests to the kernel (op.h), embedded
 * in the stream. `recv` is a multishot recv while the stream reads, into
 * buffers the backend owns; `send` is a send of the queue's head chunks
 * while bytes are queued, or, while connecting, the wait for the socket to
 * become writable. The chunk and offset design fits as it is, since
 * queued bytes belong to the library and stay put until the kernel is done
 * with them. Bytes that arrive after read_stop, before the kernel has
 * heard of the cancel, are stashed and given to the next read callback, in
 * order; a closed stream's close callback waits until both requests are
 * idle.
 *
 * A program must not see which backend runs it, so this driver keeps the
 * readiness driver's promises where batching would break them. Queued
 * bytes become a send request only just before the loop waits, so no
 * callback ever sees a send that the kernel has not been offered yet (or,
 * while the ring refuses, one that waits in the loop's queue for room). A
 * write that takes the queue past the high watermark, and a close with
 * bytes queued, first offer the queue to the kernel at once, as a
 * readiness backend's write does, taking back a send still waiting for
 * room: the watermark then counts bytes the kernel was offered and did
 * not take, and an echo followed by a close delivers its reply, on every
 * backend.
 *
 * Letting the descriptor go (a close, a failed connect) cancels both
 * requests and orphans those still busy: what they still report is
 * dropped, and the stream asks again, for its new descriptor if it has
 * one, once they are idle. The descriptor itself stays open until then,
 * and the last orphan closes it: a request names it by number, which the
 * kernel looks up only when it takes the entry (later than the close, if
 * the ring refuses), and a new file must not get that number meanwhile. */
#include "stream_internal.h"

#include <assert.h>
#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

#define NATIVE(s) (&(s)->driver_state.native)
#define STREAM_OF(op, which)                                                                       \
    EVMUX__CONTAINER_OF(op, evmux_stream, driver_state.native.which)

static bool native_busy(const evmux_stream *s)
{
    return evmux__op_busy(&NATIVE(s)->recv) || evmux__op_busy(&NATIVE(s)->send);
}

static bool busy_on(const struct evmux__op *op, int fd)
{
    return evmux__op_busy(op) && op->fd == fd;
}

/* An orphan is idle: the descriptor it named is closed once no request
 * names it any more (see the top of the file). */
static void close_orphan_fd(evmux_stream *s, const struct evmux__op *op)
{
    assert(evmux__op_orphaned(op) && !evmux__op_busy(op));
    const struct evmux__op *other =
        op == &NATIVE(s)->recv ? &NATIVE(s)->send : &NATIVE(s)->recv;
    if (!busy_on(other, op->fd))
        close(op->fd);
}

static void set_active(evmux_stream *s, bool active)
{
    if (active)
        evmux__handle_activate(&s->handle);
    else
        evmux__handle_deactivate(&s->handle);
}

static void end_reading_with(evmux_stream *s, int err);

/* ---- the requests follow the state ---- */

/* A recv in the kernel while reading (and nothing stashed is owed first);
 * while bytes are queued, a send made in the pass just before the loop
 * waits; while connecting, a wait for writability. */
static int native_sync(evmux_stream *s)
{
    evmux_loop *loop = s->handle.loop;
    struct evmux__op *recv = &NATIVE(s)->recv, *send = &NATIVE(s)->send;
    if (s->state & ST_CONNECTING) {
        if (!evmux__op_busy(send)) /* else its end asks again */
            evmux__op_submit(loop, send, EVMUX__OP_WRITABLE, s->fd, 0);
        set_active(s, true);
        return 0;
    }
    bool owed = NATIVE(s)->stash != NULL || s->read_end != 0;
    if ((s->state & ST_READING) && !owed) {
        if (!evmux__op_busy(recv))
            evmux__op_submit(loop, recv, EVMUX__OP_RECV, s->fd, 0);
    } else {
        evmux__op_cancel(loop, recv);
        if ((s->state & ST_READING) && owed)
            evmux__st_defer(s); /* given from the loop, never inside the call */
    }
    if (s->queued > 0 && !(s->state & ST_SEND_BUSY)) {
        s->state |= ST_SEND_WANTED;
        evmux__st_defer(s);
    }
    set_active(s, (s->state & ST_READING) || s->queued > 0);
    return 0;
}

/* Hands the head of the queue to the kernel; only just before the loop
 * waits (or returns), so ST_SEND_BUSY means the kernel has been offered
 * the bytes, or the request waits in the loop for room (see the top of
 * the file). Runs no callback. */
static void submit_send(evmux_stream *s)
{
    s->state &= ~(ST_SEND_WANTED | ST_QUEUE_INHERITED);
    if (s->queued == 0 || (s->state & ST_SEND_BUSY) || !(s->state & ST_OPEN) ||
        evmux__closing(&s->handle))
        return;
    assert(!(s->state & ST_SEND_DISCARD)); /* only ever set while a send is busy */
    struct evmux__op *send = &NATIVE(s)->send;
    if (evmux__op_busy(send))
        return; /* an orphaned wait of an earlier socket: its end asks again */
    unsigned flags = (s->state & ST_SEND_FULL) ? EVMUX__OP_WHEN_WRITABLE : 0;
    s->state = (s->state & ~ST_SEND_FULL) | ST_SEND_BUSY; /* before fill_send asks */
    evmux__op_submit(s->handle.loop, send, EVMUX__OP_SEND, s->fd, flags);
}

static int fill_send(struct evmux__op *op, struct iovec *iov, int max)
{
    evmux_stream *s = STREAM_OF(op, send);
    assert((s->state & ST_SEND_BUSY) && s->out_head != NULL);
    size_t total;
    return (int)evmux__st_queue_iov(s, iov, (size_t)max, &total);
}

/* A send request still waiting for room in the ring is taken back, so its
 * bytes can be offered at once instead (a close, the high watermark).
 * False if a send is in the kernel. */
static bool withdraw_send(evmux_stream *s)
{
    struct evmux__op *send = &NATIVE(s)->send;
    if (!(s->state & ST_SEND_BUSY))
        return true;
    if (!evmux__op_withdraw(send))
        return false;
    /* Dropped bytes cancel their send (native_discard): never queued. */
    assert(!(s->state & ST_SEND_DISCARD));
    s->state &= ~ST_SEND_BUSY;
    if (send->flags & EVMUX__OP_INHERITED)
        s->state |= ST_QUEUE_INHERITED; /* the parent's ring sends these */
    return true;
}

/* Offers the queue to the kernel at once, as a readiness backend's write
 * does (see the top of the file); only while no send is in the kernel,
 * which keeps the bytes in order. Runs no callback. */
static int send_now(evmux_stream *s)
{
    assert(!(s->state & ST_SEND_BUSY));
    s->state &= ~ST_QUEUE_INHERITED; /* this process sends it after all */
    return evmux__st_send_queued(s);
}

static int native_offer(evmux_stream *s)
{
    if (!(s->state & ST_OPEN) || !withdraw_send(s))
        return 0;
    int rc = send_now(s);
    if (rc < 0)
        end_reading_with(s, rc); /* the peer is gone */
    else
        evmux__st_update_interest(s); /* no longer active if all went */
    return rc;
}

static void native_connected(evmux_stream *s)
{
    evmux__st_update_interest(s); /* the shutdown follows the last send */
}

/* ---- reading ---- */

static int stash_bytes(evmux_stream *s, const char *p, size_t n)
{
    struct evmux_chunk *tail = NATIVE(s)->stash;
    while (tail != NULL && tail->next != NULL)
        tail = tail->next;
    return evmux__chunks_append(st_chunks(s), &NATIVE(s)->stash, &tail, p, n);
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
static void deliver_stash(evmux_stream *s)
{
    while (NATIVE(s)->stash != NULL && (s->state & ST_READING) && !evmux__closing(&s->handle)) {
        struct evmux_chunk *c = NATIVE(s)->stash;
        NATIVE(s)->stash = c->next;
        s->read_cb(s, (ssize_t)(c->end - c->start), c->data + c->start);
        c->next = NULL;
        evmux__chunks_put(st_chunks(s), c);
    }
    if (NATIVE(s)->stash == NULL && s->read_end != 0 && (s->state & ST_READING) &&
        !evmux__closing(&s->handle)) {
        int status = s->read_end;
        s->read_end = 0;
        report_read_end(s, status);
        return;
    }
    evmux__st_update_interest(s);
}

/* A request went idle: a closed stream's close goes on once both are; an
 * open one asks for what it wants now (for a new descriptor, if the idle
 * request was an orphan). */
static void settle(evmux_stream *s)
{
    if (evmux__closing(&s->handle)) {
        if (!native_busy(s))
            evmux__close_resume(&s->handle);
        return;
    }
    evmux__st_update_interest(s); /* never fails: a full ring queues */
}

static void recv_ended(evmux_stream *s, int status)
{
    if (status == -EAGAIN || status == -ENOBUFS || status == -ECANCELED) {
        settle(s); /* ask again, if still reading */
        return;
    }
    int end = status == 0 ? EVMUX_EOF : status;
    /* A reset socket cannot send either: refuse writes now, as a
     * readiness backend's immediate send would. */
    if (status < 0 && s->error == 0)
        s->error = status;
    if ((s->state & ST_READING) && NATIVE(s)->stash == NULL && s->read_end == 0) {
        report_read_end(s, end);
        return;
    }
    if (s->read_end == 0)
        s->read_end = end;
    if (s->state & ST_READING)
        evmux__st_defer(s);
}

static void recv_done(struct evmux__op *op, int res, void *buf, bool more)
{
    evmux_stream *s = STREAM_OF(op, recv);
    if (evmux__op_orphaned(op) || evmux__closing(&s->handle)) {
        if (more)
            return;
        if (evmux__op_orphaned(op))
            close_orphan_fd(s, op);
        settle(s);
        return;
    }
    if (buf != NULL && res > 0) {
        if ((s->state & ST_READING) && NATIVE(s)->stash == NULL) {
            s->read_cb(s, res, buf);
        } else {
            /* Not reading (the cancel is on its way) or older bytes first. */
            if (stash_bytes(s, buf, (size_t)res) < 0 && s->read_end == 0)
                s->read_end = -ENOMEM; /* cannot keep the order: end reading with it */
            if (s->state & ST_READING)
                evmux__st_defer(s);
        }
    }
    if (more)
        return;
    if (evmux__closing(&s->handle)) {
        settle(s);
        return;
    }
    /* The last result: 0 is the end of the stream; after data, the kernel
     * ended the recv on its own (ask again). */
    recv_ended(s, buf != NULL && res > 0 ? -EAGAIN : res);
}

/* ---- sending ---- */

/* A send failed: the connection is gone (reset, or timed out), and the
 * read side must hear of it from us. The kernel's multishot recv cannot be
 * relied on to report the end: the failed send consumed the socket's
 * pending error, and a recv that has already taken the last bytes waits for
 * a wake-up that never comes (Linux 6.18, a race seen under load), so the
 * stream would stay open forever. The recv is cancelled and not asked for
 * again; the reader gets the bytes that came before, then this error. */
static void end_reading_with(evmux_stream *s, int err)
{
    if (s->read_end == 0 && !(s->state & ST_EOF))
        s->read_end = err;
    evmux__op_cancel(s->handle.loop, &NATIVE(s)->recv);
    if (s->state & ST_READING)
        evmux__st_defer(s);
}

static void sent(evmux_stream *s, int res)
{
    s->state &= ~ST_SEND_BUSY;
    if (s->state & ST_SEND_DISCARD) {
        evmux__st_free_queue_chunks(s);
        s->state &= ~ST_SEND_DISCARD;
        settle(s);
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
        settle(s);
        return;
    }
    if (res <= 0) {
        int err = res < 0 ? res : -EPIPE;
        end_reading_with(s, err);
        evmux__st_fail_writes(s, err);
        return;
    }
    evmux__st_consume_queue(s, (size_t)res);
    evmux__st_after_send(s);
}

static void send_done(struct evmux__op *op, int res, void *buf, bool more)
{
    (void)buf;
    (void)more;
    assert(!more); /* sends and waits are single-shot */
    evmux_stream *s = STREAM_OF(op, send);
    if (evmux__op_orphaned(op))
        close_orphan_fd(s, op);
    /* Its callbacks (writes done, a connect) run with bytes queued and no
     * send in the kernel, the stream on no list: a fork from one of them
     * must still know it (streams_after_fork). A read callback's stream
     * with bytes queued is always on a list or has a send. */
    st_loop(s)->current = s;
    if (op->type == EVMUX__OP_SEND)
        sent(s, res);
    else if (evmux__op_orphaned(op) || evmux__closing(&s->handle) || !(s->state & ST_CONNECTING))
        settle(s); /* the wait of a connect that is over */
    else
        evmux__st_connect_settled(s);
    st_loop(s)->current = NULL;
}

static const struct evmux__op_class recv_class = {.done = recv_done};
static const struct evmux__op_class send_class = {.done = send_done, .fill = fill_send};

/* ---- attaching, the loop's passes, closing, fork ---- */

static int native_attach(evmux_stream *s)
{
    /* Requests of an earlier descriptor may still be ending (orphans):
     * they stay, and their ends ask again for this one. */
    if (s->driver != &evmux__stream_native) {
        evmux__op_init(&NATIVE(s)->recv, &recv_class);
        evmux__op_init(&NATIVE(s)->send, &send_class);
        NATIVE(s)->stash = NULL;
    }
    s->driver = &evmux__stream_native;
    s->state &= ~(ST_SEND_FULL | ST_SEND_WANTED | ST_QUEUE_INHERITED);
    return 0;
}

static void native_deferred(evmux_stream *s, enum evmux__pass pass)
{
    if (pass != EVMUX__PASS_RUN_EXIT && (s->state & ST_READING) &&
        (NATIVE(s)->stash != NULL || s->read_end != 0))
        deliver_stash(s); /* a callback: never once evmux_run is returning */
    if (!(s->state & ST_SEND_WANTED) || evmux__closing(&s->handle))
        return;
    if (pass == EVMUX__PASS_REPORT)
        evmux__st_defer(s); /* sent from the pass just before the wait */
    else
        submit_send(s);
}

static bool native_detach(evmux_stream *s)
{
    /* Bytes a readiness backend would have sent inside evmux_stream_write
     * get the same chance here before the socket goes. */
    withdraw_send(s);
    if ((s->state & (ST_OPEN | ST_SEND_BUSY | ST_QUEUE_INHERITED)) == ST_OPEN && s->queued > 0 &&
        s->error == 0)
        (void)send_now(s); /* an error only means no more goes out */
    s->state &= ~ST_SEND_WANTED;
    evmux__op_release(s->handle.loop, &NATIVE(s)->recv);
    evmux__op_release(s->handle.loop, &NATIVE(s)->send);
    set_active(s, false);
    /* Requests still name the descriptor: it stays open until they end. */
    return busy_on(&NATIVE(s)->recv, s->fd) || busy_on(&NATIVE(s)->send, s->fd);
}

/* Queued bytes were dropped under a send: it need not finish. */
static void native_discard(evmux_stream *s)
{
    evmux__op_cancel(s->handle.loop, &NATIVE(s)->send);
}

static bool native_close_wait(evmux_stream *s)
{
    return native_busy(s);
}

static void native_close_finish(evmux_stream *s)
{
    evmux__chunks_put(st_chunks(s), NATIVE(s)->stash);
    NATIVE(s)->stash = NULL;
}

static bool native_idle(const evmux_stream *s)
{
    return !native_busy(s);
}

/* In a forked child: the requests are the loop's to submit again (op.c);
 * bytes queued but not yet offered belong to the parent as much. */
static void native_after_fork(evmux_stream *s)
{
    if (s->queued > 0)
        s->state |= ST_QUEUE_INHERITED;
}

const struct evmux__stream_driver evmux__stream_native = {
    .attach = native_attach,
    .sync = native_sync,
    .offer = native_offer,
    .connected = native_connected,
    .deferred = native_deferred,
    .detach = native_detach,
    .discard = native_discard,
    .close_wait = native_close_wait,
    .close_finish = native_close_finish,
    .idle = native_idle,
    .after_fork = native_after_fork,
};
