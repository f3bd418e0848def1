/* The completion driver of datagram handles (io_uring): the handle's I/O
 * is requests to the kernel (op.h). `recv`, embedded in the handle, is a
 * multishot recvmsg while the handle receives: one result per datagram,
 * each in a buffer of the backend's datagram group, with its source
 * address, so an idle socket holds no buffer and a busy one costs no
 * system call. A send is one sendmsg request per datagram, embedded in the
 * datagram's record (dgram.h): datagrams queue until the loop's pass just
 * before it waits, which moves the whole queue into the ring, so the wait
 * submits every handle's datagrams in one system call.
 *
 * What the kernel refuses for lack of room (-EAGAIN: the socket is
 * non-blocking) goes back into the queue, in its place. Then the queue
 * waits for room (`writable`, a poll request) and leaves with sendmmsg,
 * which stops at the first datagram refused: requests waiting for room
 * side by side would be woken together and could overtake each other,
 * and a Unix datagram socket promises its order.
 *
 * A close sends at once what is queued and not yet in the ring, as a
 * readiness backend would have inside evmux_udp_send, then cancels the
 * requests and orphans them; their datagrams report what the kernel made
 * of them (sent: 0; cancelled in time: -ECANCELED). The descriptor stays
 * open until the last request has ended (requests name it by number), and
 * the close callback waits for that. */
#include "udp_internal.h"

#include <errno.h>
#include <unistd.h>

#define RECV(u) (&(u)->driver_state.native.recv)
#define WRITABLE(u) (&(u)->driver_state.native.writable)
#define UDP_OF_RECV(op) EVMUX__CONTAINER_OF(op, evmux_udp, driver_state.native.recv)
#define UDP_OF_WRITABLE(op) EVMUX__CONTAINER_OF(op, evmux_udp, driver_state.native.writable)
#define DGRAM_OF(op) EVMUX__CONTAINER_OF(op, struct evmux__dgram, op)

static const struct evmux__op_class recv_class, send_class, writable_class;

static bool native_busy(const evmux_udp *u)
{
    return evmux__op_busy(&u->driver_state.native.recv) ||
           evmux__op_busy(&u->driver_state.native.writable) || !evmux__list_empty(&u->inflight);
}

/* Active while it wants the kernel's work: receiving, or sending. */
static void update_active(evmux_udp *u)
{
    bool wanted = !evmux__closing(&u->handle) &&
                  ((u->state & UDP_RECEIVING) || !evmux__list_empty(&u->queue) ||
                   !evmux__list_empty(&u->inflight));
    if (wanted)
        evmux__handle_activate(&u->handle);
    else
        evmux__handle_deactivate(&u->handle);
}

/* A closed handle whose last request has ended: the descriptor goes, and
 * the close callback may run. */
static void close_if_done(evmux_udp *u)
{
    if (!evmux__closing(&u->handle) || native_busy(u))
        return;
    if (u->state & UDP_FD_KEPT) {
        u->state &= ~UDP_FD_KEPT;
        close(RECV(u)->fd);
    }
    evmux__close_resume(&u->handle);
}

static int native_sync(evmux_udp *u)
{
    evmux_loop *loop = u->handle.loop;
    struct evmux__op *recv = RECV(u);
    if (evmux__closing(&u->handle))
        return 0;
    if ((u->state & UDP_RECEIVING) && !evmux__op_busy(recv))
        evmux__op_submit(loop, recv, EVMUX__OP_RECVMSG, u->fd, 0);
    else if (!(u->state & UDP_RECEIVING) && evmux__op_busy(recv))
        evmux__op_cancel(loop, recv); /* its end asks again if started meanwhile */
    if (evmux__list_empty(&u->queue)) {
        u->state &= ~UDP_SEND_FULL;
    } else if (u->state & UDP_SEND_FULL) {
        /* Once the refused ones are back: the queue waits for room. */
        if (evmux__list_empty(&u->inflight) && !evmux__op_busy(WRITABLE(u)))
            evmux__op_submit(loop, WRITABLE(u), EVMUX__OP_WRITABLE, u->fd, 0);
        assert(!evmux__op_busy(WRITABLE(u)) || evmux__list_empty(&u->inflight));
    } else if (!(u->state & UDP_SUBMIT_WANTED)) {
        u->state |= UDP_SUBMIT_WANTED;
        evmux__udp_defer(u);
    }
    update_active(u);
    return 0;
}

/* ---- receiving ---- */

static void recv_done(struct evmux__op *op, int res, void *buf, bool more)
{
    evmux_udp *u = UDP_OF_RECV(op);
    if (evmux__op_orphaned(op) || evmux__closing(&u->handle)) {
        if (!more)
            close_if_done(u);
        return;
    }
    if (buf != NULL)
        evmux__udp_deliver(u, buf);
    if (more)
        return;
    if (evmux__closing(&u->handle)) {
        close_if_done(u);
        return;
    }
    /* The last result. Out of buffers, cancelled by a stop, or ended by the
     * kernel after a datagram: ask again if still receiving. An error is
     * the socket's (an ICMP report): the callback hears it, and the
     * socket goes on; unless the kernel refuses the request itself (no
     * multishot recvmsg before Linux 6.0), which asking again would only
     * repeat: then receiving stops, with that error. */
    if (buf == NULL && res < 0 && res != -ENOBUFS && res != -ECANCELED && res != -EAGAIN) {
        evmux__udp_recv_error(u, res);
        if (res == -EINVAL || res == -EOPNOTSUPP || res == -EBADF || res == -EFAULT)
            u->state &= ~UDP_RECEIVING;
    }
    (void)native_sync(u);
}

/* ---- sending ---- */

/* Back into the queue in the order of the sends (records are carved in
 * that order only within a block, so the handle's sequence decides). */
static void requeue(evmux_udp *u, struct evmux__dgram *d)
{
    evmux__list_remove(&d->link);
    struct evmux__link *l = u->queue.next;
    while (l != &u->queue && EVMUX__CONTAINER_OF(l, struct evmux__dgram, link)->seq < d->seq)
        l = l->next;
    evmux__list_insert_before(l, &d->link);
}

static void send_done(struct evmux__op *op, int res, void *buf, bool more)
{
    (void)buf;
    (void)more;
    assert(!more); /* one result per sendmsg */
    struct evmux__dgram *d = DGRAM_OF(op);
    evmux_udp *u = d->udp;
    if (res == -EAGAIN || res == -EWOULDBLOCK) {
        if (evmux__op_orphaned(op) || evmux__closing(&u->handle)) {
            res = -ECANCELED; /* refused, and closed before it could go again */
        } else {
            requeue(u, d);
            u->state |= UDP_SEND_FULL;
            (void)native_sync(u);
            return;
        }
    }
    evmux__udp_finish(u, d, res >= 0 ? 0 : res);
    if (evmux__closing(&u->handle))
        close_if_done(u);
    else
        (void)native_sync(u); /* the last of a refused batch: wait for room */
}

/* Room: the queue goes with sendmmsg, in order, as far as the kernel
 * takes it; the rest waits for room again. */
static void writable_done(struct evmux__op *op, int res, void *buf, bool more)
{
    (void)res, (void)buf, (void)more;
    evmux_udp *u = UDP_OF_WRITABLE(op);
    if (evmux__op_orphaned(op) || evmux__closing(&u->handle)) {
        close_if_done(u);
        return;
    }
    evmux__udp_send_queue_now(u);
    (void)native_sync(u);
}

static void send_message(struct evmux__op *op, struct msghdr *msg)
{
    evmux__udp_message(DGRAM_OF(op), msg);
}

/* The pass just before the wait: the queue goes into the ring. */
static void submit_sends(evmux_udp *u)
{
    evmux_loop *loop = u->handle.loop;
    /* Not past sends whose results are not in yet (a refused one would go
     * again after these), nor past a full socket (the wait for room sends
     * them). A send with MSG_DONTWAIT is done when the ring's submit
     * returns, so the results are in by the next pass. */
    u->state &= ~UDP_SUBMIT_WANTED; /* those results' native_sync asks again */
    if (!evmux__list_empty(&u->inflight) || (u->state & UDP_SEND_FULL))
        return;
    struct evmux__link *l;
    while ((l = evmux__list_pop(&u->queue)) != NULL) {
        struct evmux__dgram *d = EVMUX__CONTAINER_OF(l, struct evmux__dgram, link);
        evmux__list_push(&u->inflight, &d->link);
        evmux__op_init(&d->op, &send_class);
        d->op.generation = (unsigned char)d->seq; /* records reuse addresses: tell them apart */
        evmux__op_submit(loop, &d->op, EVMUX__OP_SENDMSG, u->fd, 0);
    }
}

static void native_deferred(evmux_udp *u, enum evmux__pass pass)
{
    if (!(u->state & UDP_SUBMIT_WANTED) || evmux__closing(&u->handle))
        return;
    if (pass == EVMUX__PASS_REPORT)
        evmux__udp_defer(u); /* sent from the pass just before the wait */
    else
        submit_sends(u);
}

/* ---- attaching, closing ---- */

static int native_attach(evmux_udp *u)
{
    int rc = u->handle.loop->backend->completion->datagram_buffers(u->handle.loop);
    if (rc < 0)
        return rc;
    evmux__op_init(RECV(u), &recv_class);
    evmux__op_init(WRITABLE(u), &writable_class);
    RECV(u)->fd = u->fd;
    u->driver = &evmux__udp_native;
    return 0;
}

static bool native_detach(evmux_udp *u)
{
    evmux_loop *loop = u->handle.loop;
    /* Datagrams a readiness backend would have sent inside evmux_udp_send
     * get the same chance before the socket goes, in order: those still
     * waiting for room in the ring come back to the queue, those prepared
     * in it run now (with MSG_DONTWAIT each is sent or refused when the
     * submit returns), and the queue follows, unless the socket is full. */
    for (struct evmux__link *l = u->inflight.next, *next; l != &u->inflight; l = next) {
        next = l->next;
        struct evmux__dgram *d = EVMUX__CONTAINER_OF(l, struct evmux__dgram, link);
        if (evmux__op_withdraw(&d->op))
            requeue(u, d);
    }
    if (!evmux__list_empty(&u->inflight))
        evmux__ops_flush(loop);
    if (!(u->state & UDP_SEND_FULL))
        evmux__udp_send_queue_now(u);
    u->state &= ~UDP_SUBMIT_WANTED;
    evmux__op_release(loop, RECV(u));
    evmux__op_release(loop, WRITABLE(u));
    for (struct evmux__link *l = u->inflight.next; l != &u->inflight; l = l->next)
        evmux__op_release(loop, &EVMUX__CONTAINER_OF(l, struct evmux__dgram, link)->op);
    evmux__handle_deactivate(&u->handle); /* (close sets its flag after this) */
    if (!native_busy(u))
        return false;
    u->state |= UDP_FD_KEPT; /* RECV(u)->fd names it since attach */
    return true;
}

static bool native_close_wait(evmux_udp *u)
{
    return native_busy(u);
}

static const struct evmux__op_class recv_class = {.done = recv_done};
static const struct evmux__op_class send_class = {.done = send_done, .message = send_message};
static const struct evmux__op_class writable_class = {.done = writable_done};

const struct evmux__udp_driver evmux__udp_native = {
    .attach = native_attach,
    .sync = native_sync,
    .deferred = native_deferred,
    .detach = native_detach,
    .close_wait = native_close_wait,
};
