/* Buffered streams over connected sockets (TCP or Unix-domain), and over
 * pipes, terminals and files: the API and what both drivers share.
 *
 * Writing: on a readiness backend a write is tried at once when nothing is
 * queued; whatever the kernel does not take is copied into fixed-size
 * chunks taken from a per-loop pool (chunk.c), so callers may reuse their
 * buffers on return and steady traffic allocates nothing. Each write
 * request remembers the stream offset at which it is complete; its
 * callback runs once the bytes sent reach that offset. Requests that
 * complete inside evmux_stream_write are reported from the loop's deferred
 * phase, never from inside the call.
 *
 * Reading, and how bytes reach the kernel, is the drivers' part:
 * stream_ready.c (readiness: recv/send, or read/write for pipes, terminals
 * and files) and stream_native.c (io_uring's own requests). A program must
 * not see which one runs it: the same callbacks, the same bytes, the same
 * meaning of the queue and its watermarks. */
#include "stream_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static const struct evmux__kind stream_kind;

/* ---- the queue ---- */

static void streams_free(evmux_loop *loop)
{
    struct stream_loop *sl = loop->kind_data[EVMUX_HANDLE_STREAM];
    if (sl == NULL)
        return;
    evmux__chunk_pool_free(&sl->chunks);
    free(sl->read_buf);
    free(sl);
    loop->kind_data[EVMUX_HANDLE_STREAM] = NULL;
}

void evmux__st_free_queue_chunks(evmux_stream *s)
{
    evmux__chunks_put(st_chunks(s), s->out_head);
    s->out_head = s->out_tail = NULL;
}

/* Drops every queued byte. While the kernel is still sending from the
 * chunks they stay allocated, marked, until that send completes: reused
 * early, they would put another stream's bytes on this socket. */
static void drop_queue(evmux_stream *s)
{
    s->queued = 0;
    if (!(s->state & ST_SEND_BUSY)) {
        evmux__st_free_queue_chunks(s);
        return;
    }
    s->state |= ST_SEND_DISCARD;
    if (s->driver->discard != NULL)
        s->driver->discard(s);
}

/* The caller drops the whole queue if this fails. */
static int queue_bytes(evmux_stream *s, const char *p, size_t n)
{
    if (s->state & ST_SEND_DISCARD)
        return -EPIPE; /* only after an error, which refuses writes first */
    int rc = evmux__chunks_append(st_chunks(s), &s->out_head, &s->out_tail, p, n);
    if (rc == 0)
        s->queued += n;
    return rc;
}

/* Describes the queue's first chunks (at most max) for one send. */
size_t evmux__st_queue_iov(const evmux_stream *s, struct iovec *iov, size_t max, size_t *total)
{
    size_t n = 0;
    *total = 0;
    for (struct evmux_chunk *c = s->out_head; c != NULL && n < max; c = c->next) {
        iov[n].iov_base = c->data + c->start;
        iov[n].iov_len = c->end - c->start;
        *total += iov[n].iov_len;
        n++;
    }
    return n;
}

void evmux__st_consume_queue(evmux_stream *s, size_t n)
{
    s->queued -= n;
    s->sent += n;
    while (n > 0) {
        struct evmux_chunk *c = s->out_head;
        size_t k = c->end - c->start < n ? c->end - c->start : n;
        c->start += k;
        n -= k;
        if (c->start == c->end) {
            s->out_head = c->next;
            if (s->out_head == NULL)
                s->out_tail = NULL;
            c->next = NULL;
            evmux__chunks_put(st_chunks(s), c);
        }
    }
}

/* ---- deferred reporting ---- */

void evmux__st_defer(evmux_stream *s)
{
    if (evmux__linked(&s->deferred))
        return;
    evmux__list_push(&st_loop(s)->deferred, &s->deferred);
    s->handle.loop->deferred_owed++;
}

static void undefer(evmux_stream *s)
{
    if (!evmux__linked(&s->deferred))
        return;
    evmux__list_remove(&s->deferred);
    s->handle.loop->deferred_owed--;
}

/* Reports, in order, every write whose bytes have all been sent. Stops if
 * a callback closes the stream; close reports the rest. */
static void report_sent_writes(evmux_stream *s)
{
    evmux_write_req *req;
    while ((req = s->req_head) != NULL && req->end <= s->sent &&
           !evmux__closing(&s->handle)) {
        s->req_head = req->next;
        if (s->req_head == NULL)
            s->req_tail = NULL;
        req->next = NULL;
        if (req->cb != NULL)
            req->cb(req, 0);
    }
}

static void report_shutdown(evmux_stream *s, int status)
{
    s->state &= ~ST_SHUT_REPORT;
    if (s->shutdown_cb != NULL)
        s->shutdown_cb(s, status);
}

/* What one deferred stream is owed. */
static void run_deferred(evmux_stream *s, enum evmux__pass pass)
{
    if (s->state & ST_CONNECT_FAILED) {
        s->state &= ~ST_CONNECT_FAILED;
        evmux__st_report_connect(s, s->error);
    }
    report_sent_writes(s);
    /* (A connect refused at once, by a retry from the callback above: its
     * report fails the writes, next pass.) */
    if (s->error != 0 && s->req_head != NULL && !(s->state & ST_CONNECT_FAILED) &&
        !evmux__closing(&s->handle))
        evmux__st_fail_writes(s, s->error);
    if ((s->state & ST_SHUT_REPORT) && !evmux__closing(&s->handle) && s->req_head == NULL)
        report_shutdown(s, s->error);
    if (s->driver != NULL && s->driver->deferred != NULL && !evmux__closing(&s->handle))
        s->driver->deferred(s, pass);
}

static void streams_pass(evmux_loop *loop, enum evmux__pass pass)
{
    struct stream_loop *sl = loop->kind_data[EVMUX_HANDLE_STREAM];
    if (pass == EVMUX__PASS_RUN_EXIT) {
        /* Only the bytes queued for the kernel; reports wait for the next
         * run, as the streams stay on the list. */
        for (struct evmux__link *l = sl->deferred.next; l != &sl->deferred; l = l->next) {
            evmux_stream *s = EVMUX__CONTAINER_OF(l, evmux_stream, deferred);
            if ((s->state & ST_SEND_WANTED) && !evmux__closing(&s->handle))
                s->driver->deferred(s, pass);
        }
        return;
    }
    /* Streams deferred by these callbacks wait for the next pass, so a
     * callback that keeps writing cannot hold the loop here. */
    assert(evmux__list_empty(&sl->running)); /* passes do not nest */
    evmux__list_splice(&sl->running, &sl->deferred);
    struct evmux__link *l;
    while ((l = evmux__list_pop(&sl->running)) != NULL) {
        loop->deferred_owed--;
        evmux_stream *s = EVMUX__CONTAINER_OF(l, evmux_stream, deferred);
        if (!evmux__closing(&s->handle)) {
            sl->current = s;
            run_deferred(s, pass);
            sl->current = NULL;
        }
    }
}

int evmux__st_update_interest(evmux_stream *s)
{
    if (!(s->state & (ST_OPEN | ST_CONNECTING)) || evmux__closing(&s->handle))
        return 0;
    if (s->state & ST_CONNECT_FAILED)
        return 0; /* refused at once: nothing to watch, the report is on its way */
    return s->driver->sync(s);
}

/* A write failed: the peer is gone. Every request not yet fully sent gets
 * the error, exactly once; later writes are refused with it. */
void evmux__st_fail_writes(evmux_stream *s, int err)
{
    if (s->error == 0)
        s->error = err;
    drop_queue(s);
    evmux_write_req *req;
    while ((req = s->req_head) != NULL && !evmux__closing(&s->handle)) {
        s->req_head = req->next;
        if (s->req_head == NULL)
            s->req_tail = NULL;
        req->next = NULL;
        if (req->cb != NULL)
            req->cb(req, req->end <= s->sent ? 0 : err);
    }
    if (s->req_head == NULL)
        s->sent = s->accepted; /* discarded bytes retire their offsets too */
    if ((s->state & ST_SHUT_WANTED) && !(s->state & ST_SHUT_DONE) &&
        !evmux__closing(&s->handle)) {
        s->state |= ST_SHUT_DONE;
        report_shutdown(s, err);
    }
    /* The queue is empty now, if by discarding: a reader paused on the high
     * watermark must hear of it, or it would wait forever. */
    if ((s->state & ST_OVER_HIGH) && !evmux__closing(&s->handle)) {
        s->state &= ~ST_OVER_HIGH;
        if (s->drain_cb != NULL)
            s->drain_cb(s);
    }
    evmux__st_update_interest(s);
}

void evmux__st_finish_shutdown(evmux_stream *s)
{
    s->state |= ST_SHUT_DONE | ST_SHUT_REPORT;
    if (shutdown(s->fd, SHUT_WR) < 0 && s->error == 0)
        s->error = -errno;
}

/* Bytes went out: report finished writes, then a shutdown the empty queue
 * allows, then the drain, and ask for what comes next. */
void evmux__st_after_send(evmux_stream *s)
{
    assert(s->sent <= s->accepted && s->queued <= s->accepted - s->sent);
    report_sent_writes(s);
    if (evmux__closing(&s->handle))
        return;
    if (s->queued == 0 && (s->state & ST_SHUT_WANTED) && !(s->state & ST_SHUT_DONE)) {
        evmux__st_finish_shutdown(s);
        report_shutdown(s, s->error);
        if (evmux__closing(&s->handle))
            return;
    }
    if ((s->state & ST_OVER_HIGH) && s->queued <= s->low_water) {
        s->state &= ~ST_OVER_HIGH;
        if (s->drain_cb != NULL)
            s->drain_cb(s);
        if (evmux__closing(&s->handle))
            return;
    }
    evmux__st_update_interest(s);
}

int evmux_stream_write(evmux_write_req *req, evmux_stream *s, const evmux_buf bufs[], size_t nbufs,
                       evmux_write_cb cb)
{
    if (s == NULL || (nbufs > 0 && bufs == NULL) || (cb != NULL && req == NULL) ||
        evmux__closing(&s->handle))
        return -EINVAL;
    if (!(s->state & ST_CONNECTED_OR_ON_THE_WAY))
        return -ENOTCONN;
    /* A connect that failed at once is still "connecting" until its
     * callback: writes queue and fail with it, as for a later failure. */
    if (s->error != 0 && !(s->state & ST_CONNECT_FAILED))
        return s->error;
    if (s->state & ST_SHUT_WANTED)
        return -EPIPE;

    size_t total = 0;
    for (size_t i = 0; i < nbufs; i++) {
        if (bufs[i].len > SIZE_MAX - total)
            return -EINVAL;
        total += bufs[i].len;
    }

    /* Send at once what the kernel takes, if nothing is ahead of us. */
    size_t done = 0;
    if (s->queued == 0 && (s->state & ST_OPEN) && total > 0 && s->driver->write_now != NULL) {
        ssize_t w = s->driver->write_now(s, bufs, nbufs);
        if (w < 0) {
            /* The peer is gone. Earlier writes were all sent (nothing was
             * queued); they are reported from the loop. */
            s->error = (int)w;
            if (s->req_head != NULL)
                evmux__st_defer(s);
            return s->error;
        }
        done = (size_t)w;
        s->sent += done;
    }

    /* Queue the rest: skip the `done` bytes already sent. */
    size_t skip = done;
    for (size_t i = 0; i < nbufs; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        int rc = queue_bytes(s, (const char *)bufs[i].base + skip, len - skip);
        skip = 0;
        if (rc < 0) {
            /* Out of memory: the stream cannot keep its order any more.
             * Earlier requests fail from the loop; this one is refused. */
            s->accepted += total;
            s->error = rc;
            drop_queue(s);
            evmux__st_defer(s);
            return rc;
        }
    }
    s->accepted += total;

    if (req != NULL) {
        req->stream = s;
        req->cb = cb;
        req->end = s->accepted;
        req->next = NULL;
        if (s->req_tail != NULL)
            s->req_tail->next = req;
        else
            s->req_head = req;
        s->req_tail = req;
    }
    if (s->high_water != 0 && s->queued > s->high_water && (s->state & (ST_OPEN | ST_CONNECTING)) &&
        s->driver->offer != NULL) {
        int rc = s->driver->offer(s);
        if (rc < 0) {
            s->error = rc; /* this write and the ones before it fail from the loop */
            drop_queue(s);
            evmux__st_defer(s);
            return 0;
        }
    }
    if (s->high_water != 0 && s->queued > s->high_water)
        s->state |= ST_OVER_HIGH;
    if (s->queued == 0) {
        if (s->req_head != NULL)
            evmux__st_defer(s); /* complete already: reported from the loop */
        return 0;
    }
    int rc = evmux__st_update_interest(s);
    if (rc < 0) {
        /* Cannot wait for the socket: fail every request from the loop. */
        s->error = rc;
        drop_queue(s);
        evmux__st_defer(s);
    }
    return 0;
}

size_t evmux_stream_queued(const evmux_stream *s)
{
    if (s == NULL)
        return 0;
    return s->queued;
}

int evmux_stream_set_watermarks(evmux_stream *s, size_t high, size_t low, evmux_drain_cb drain_cb)
{
    if (s == NULL || high == 0 || low >= high)
        return -EINVAL;
    s->high_water = high;
    s->low_water = low;
    s->drain_cb = drain_cb;
    if (s->queued > high)
        s->state |= ST_OVER_HIGH;
    return 0;
}

int evmux_stream_over_high(const evmux_stream *s)
{
    if (s == NULL)
        return 0;
    return (s->state & ST_OVER_HIGH) != 0;
}

int evmux_stream_shutdown(evmux_stream *s, evmux_shutdown_cb cb)
{
    if (s == NULL || evmux__closing(&s->handle))
        return -EINVAL;
    if (!(s->state & ST_CONNECTED_OR_ON_THE_WAY))
        return -ENOTCONN;
    if (s->state & ST_NOT_SOCKET)
        return -ENOTSUP; /* a pipe or terminal has no half-close */
    if (s->state & ST_SHUT_WANTED)
        return -EALREADY;
    if (s->error != 0 && !(s->state & ST_CONNECT_FAILED))
        return s->error;
    s->state |= ST_SHUT_WANTED;
    s->shutdown_cb = cb;
    if (s->queued == 0 && (s->state & ST_OPEN)) {
        evmux__st_finish_shutdown(s);
        evmux__st_defer(s);
    }
    return 0;
}

int evmux_stream_read_start(evmux_stream *s, evmux_read_cb cb)
{
    if (s == NULL || cb == NULL || evmux__closing(&s->handle))
        return -EINVAL;
    if (!(s->state & ST_OPEN))
        return -ENOTCONN;
    if (s->state & ST_EOF)
        return EVMUX_EOF;
    s->read_cb = cb;
    s->state |= ST_READING;
    int rc = evmux__st_update_interest(s);
    if (rc < 0)
        s->state &= ~ST_READING;
    return rc;
}

int evmux_stream_read_stop(evmux_stream *s)
{
    if (s == NULL)
        return -EINVAL;
    s->state &= ~ST_READING;
    return evmux__st_update_interest(s);
}

/* ---- life cycle ---- */

int evmux_stream_init(evmux_loop *loop, evmux_stream *s)
{
    if (loop == NULL || s == NULL)
        return -EINVAL;
    void *data = s->handle.data;
    memset(s, 0, sizeof *s);
    s->handle.data = data;
    struct stream_loop *sl = loop->kind_data[EVMUX_HANDLE_STREAM];
    if (sl == NULL) {
        sl = calloc(1, sizeof *sl);
        if (sl == NULL)
            return -ENOMEM;
        evmux__list_init(&sl->deferred);
        evmux__list_init(&sl->running);
        loop->kind_data[EVMUX_HANDLE_STREAM] = sl;
    }
    evmux__handle_init(loop, &s->handle, &stream_kind);
    s->fd = -1;
    return 0;
}

static void stream_close_begin(evmux_handle *h)
{
    evmux_stream *s = (evmux_stream *)h;
    if (s->connect_req != NULL)
        evmux_timer_stop(&s->connect_req->timeout);
    s->state &= ~ST_READING;
    evmux__st_detach(s);
}

static void stream_close_finish(evmux_handle *h)
{
    evmux_stream *s = (evmux_stream *)h;
    undefer(s);
    if (s->driver != NULL && s->driver->close_finish != NULL)
        s->driver->close_finish(s);
    evmux_connect_req *creq = s->connect_req;
    s->connect_req = NULL;
    if (creq != NULL)
        creq->cb(creq, -ECANCELED);
    evmux_write_req *req;
    while ((req = s->req_head) != NULL) {
        s->req_head = req->next;
        req->next = NULL;
        if (req->cb != NULL)
            req->cb(req, req->end <= s->sent ? 0 : -ECANCELED);
    }
    s->req_tail = NULL;
    bool done = (s->state & ST_SHUT_DONE) != 0;
    bool owed = (s->state & ST_SHUT_WANTED) && (!done || (s->state & ST_SHUT_REPORT));
    if (owed && s->shutdown_cb != NULL)
        s->shutdown_cb(s, done ? s->error : -ECANCELED);
    drop_queue(s);
}

/* A stream is kept running by its driver's parts and its connect timeout. */
static void stream_set_ref(evmux_handle *h, bool ref)
{
    evmux_stream *s = (evmux_stream *)h;
    if (s->driver != NULL && s->driver->set_ref != NULL)
        s->driver->set_ref(s, ref);
    if (s->connect_req != NULL)
        evmux__handle_set_ref(&s->connect_req->timeout.handle, ref);
}

/* Its own flag stands for requests in the kernel. */
static int stream_is_active(const evmux_handle *h)
{
    const evmux_stream *s = (const evmux_stream *)h;
    if (h->flags & EVMUX_FLAG_ACTIVE)
        return 1;
    return s->driver != NULL && s->driver->is_active != NULL && s->driver->is_active(s);
}

static bool stream_close_wait(evmux_handle *h)
{
    evmux_stream *s = (evmux_stream *)h;
    return s->driver != NULL && s->driver->close_wait != NULL && s->driver->close_wait(s);
}

/* In a forked child: bytes queued but not yet in a send request belong to
 * the parent as much. Such a stream is on the list, on the running pass's,
 * or the one whose callback forked; one whose send request was queued
 * again learns it from the request (EVMUX__OP_INHERITED). */
static int streams_after_fork(evmux_loop *loop)
{
    struct stream_loop *sl = loop->kind_data[EVMUX_HANDLE_STREAM];
    struct evmux__link *lists[] = {&sl->deferred, &sl->running}; /* a fork from a callback of a pass */
    for (int i = 0; i < 2; i++) {
        for (struct evmux__link *l = lists[i]->next; l != lists[i]; l = l->next) {
            evmux_stream *s = EVMUX__CONTAINER_OF(l, evmux_stream, deferred);
            if (s->driver != NULL && s->driver->after_fork != NULL)
                s->driver->after_fork(s);
        }
    }
    evmux_stream *s = sl->current; /* the fork came from its callback */
    if (s != NULL && s->driver != NULL && s->driver->after_fork != NULL)
        s->driver->after_fork(s);
    return 0;
}

static const struct evmux__kind stream_kind = {
    .number = EVMUX_HANDLE_STREAM,
    .close_begin = stream_close_begin,
    .close_wait = stream_close_wait,
    .close_finish = stream_close_finish,
    .set_ref = stream_set_ref,
    .is_active = stream_is_active,
    .loop_after_fork = streams_after_fork,
    .loop_free = streams_free,
    .loop_pass = streams_pass,
};
