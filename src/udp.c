/* Datagram handles: the API and what both drivers share (udp_internal.h).
 *
 * Two promises shape this file. A datagram is never split or merged: a
 * send is one datagram, copied whole into one record when it must wait,
 * and a receive callback gets one datagram, also when UDP_GRO handed
 * several over in one piece. And a program does not see its backend: the
 * readiness driver sends at once what the kernel takes and the completion
 * driver sends before the next wait, but either way a send's callback runs
 * later, from the loop, once; a close cancels (-ECANCELED) what the kernel
 * has not taken; datagrams that arrive while a handle does not receive
 * (already taken from the kernel by a batch, or by a multishot request
 * whose cancel is on its way) are kept and given first by the next start. */
#include "udp_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static const struct evmux__kind udp_kind;

/* ---- the loop's part ---- */

static void udp_loop_free(evmux_loop *loop)
{
    struct udp_loop *ul = loop->kind_data[EVMUX_HANDLE_UDP];
    if (ul == NULL)
        return;
    evmux__dgram_pool_free(&ul->pool);
    if (ul->recv_area != NULL)
        munmap(ul->recv_area, (size_t)UDP_BATCH * EVMUX__DATAGRAM_MAX);
    free(ul->recv_batch);
    free(ul);
    loop->kind_data[EVMUX_HANDLE_UDP] = NULL;
}

void evmux__udp_defer(evmux_udp *u)
{
    if (evmux__linked(&u->deferred))
        return;
    evmux__list_push(&udp_loop(u)->deferred, &u->deferred);
    u->handle.loop->deferred_owed++;
}

static void undefer(evmux_udp *u)
{
    if (!evmux__linked(&u->deferred))
        return;
    evmux__list_remove(&u->deferred);
    u->handle.loop->deferred_owed--;
}

/* ---- send callbacks owed ---- */

static void owe_report(evmux_udp *u, evmux_udp_send_req *req, int status)
{
    if (req == NULL)
        return;
    assert(req->udp == u && !evmux__linked(&req->link));
    req->status = status;
    evmux__list_push(&u->reports, &req->link);
    evmux__udp_defer(u);
}

/* In order, those owed when the pass began: a callback that sends again
 * (its report owed at once, on a readiness backend) is heard in the next
 * pass, so it cannot hold the loop here. A callback that closes the
 * handle leaves the rest to close, unless the close itself runs them. */
static void run_reports(evmux_udp *u, bool closing_too)
{
    struct evmux__link now;
    evmux__list_init(&now);
    evmux__list_splice(&now, &u->reports);
    struct evmux__link *l;
    while ((closing_too || !evmux__closing(&u->handle)) && (l = evmux__list_pop(&now))) {
        evmux_udp_send_req *req = EVMUX__CONTAINER_OF(l, evmux_udp_send_req, link);
        if (req->cb != NULL)
            req->cb(req, req->status);
    }
    /* Left by a close: back in front of any owed since, for close_finish. */
    evmux__list_splice(&now, &u->reports);
    evmux__list_splice(&u->reports, &now);
}

void evmux__udp_finish(evmux_udp *u, struct evmux__dgram *d, int status)
{
    if (evmux__linked(&d->link))
        evmux__list_remove(&d->link);
    assert(u->queued_count > 0 && u->queued_bytes >= d->iov.iov_len);
    u->queued_bytes -= d->iov.iov_len;
    u->queued_count--;
    owe_report(u, d->req, status);
    evmux__dgram_free(udp_pool(u), d);
}

void evmux__udp_message(struct evmux__dgram *d, struct msghdr *msg)
{
    msg->msg_name = d->addr_len > 0 ? &d->addr : NULL;
    msg->msg_namelen = d->addr_len;
    msg->msg_iov = &d->iov;
    msg->msg_iovlen = 1;
}

/* ---- sending ---- */

/* The destination is valid for the handle, which has a socket after. */
static int check_destination(evmux_udp *u, const struct sockaddr *addr, socklen_t addr_len)
{
    if (addr == NULL) {
        if (addr_len != 0)
            return -EINVAL;
        return (u->state & UDP_CONNECTED) ? 0 : -EDESTADDRREQ;
    }
    if (u->state & UDP_CONNECTED)
        return -EISCONN;
    if (addr_len < sizeof(sa_family_t) || addr_len > sizeof(struct sockaddr_storage))
        return -EINVAL;
    if ((addr->sa_family == AF_INET && addr_len < sizeof(struct sockaddr_in)) ||
        (addr->sa_family == AF_INET6 && addr_len < sizeof(struct sockaddr_in6)))
        return -EINVAL;
    if (u->fd >= 0)
        return 0; /* the kernel judges the family: the callback hears it */
    if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
        return -EAFNOSUPPORT;
    return evmux__udp_ensure_socket(u, addr->sa_family);
}

static int total_length(const evmux_buf bufs[], size_t nbufs, size_t *total)
{
    size_t sum = 0;
    for (size_t i = 0; i < nbufs; i++) {
        if (bufs[i].len > SIZE_MAX - sum || (bufs[i].base == NULL && bufs[i].len > 0))
            return -EINVAL;
        sum += bufs[i].len;
    }
    *total = sum;
    return 0;
}

static int check_send(evmux_udp *u, const evmux_buf bufs[], size_t nbufs,
                      const struct sockaddr *addr, socklen_t addr_len, size_t *total)
{
    if (u == NULL || (bufs == NULL && nbufs > 0) || evmux__closing(&u->handle))
        return -EINVAL;
    int rc = total_length(bufs, nbufs, total);
    return rc < 0 ? rc : check_destination(u, addr, addr_len);
}

/* Up to this many buffers go to the kernel as they are (1 KiB of iovecs on
 * the stack); more are copied into the queue, and try_send refuses them. */
#define DIRECT_IOV_MAX 64

/* sendmsg of the caller's buffers, without waiting: the bytes sent or a
 * negative errno value. */
static ssize_t send_direct(evmux_udp *u, const evmux_buf bufs[], size_t nbufs,
                           const struct sockaddr *addr, socklen_t addr_len)
{
    struct iovec iov[DIRECT_IOV_MAX];
    for (size_t i = 0; i < nbufs; i++)
        iov[i] = (struct iovec){(void *)bufs[i].base, bufs[i].len};
    struct msghdr msg = {
        .msg_name = (void *)addr,
        .msg_namelen = addr_len,
        .msg_iov = iov,
        .msg_iovlen = nbufs,
    };
    ssize_t n = sendmsg(u->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    return n >= 0 ? n : -errno;
}

static int enqueue(evmux_udp_send_req *req, evmux_udp *u, const evmux_buf bufs[], size_t nbufs,
                   size_t total, const struct sockaddr *addr, socklen_t addr_len)
{
    struct evmux__dgram *d = evmux__dgram_new(udp_pool(u), total, addr, addr_len);
    if (d == NULL)
        return -ENOMEM;
    char *p = d->iov.iov_base;
    for (size_t i = 0; i < nbufs; i++) {
        if (bufs[i].len > 0)
            memcpy(p, bufs[i].base, bufs[i].len);
        p += bufs[i].len;
    }
    d->udp = u;
    d->req = req;
    d->seq = udp_loop(u)->next_seq++;
    evmux__list_push(&u->queue, &d->link);
    u->queued_bytes += total;
    u->queued_count++;
    int rc = u->driver->sync(u);
    if (rc < 0) {
        evmux__list_remove(&d->link);
        u->queued_bytes -= total;
        u->queued_count--;
        evmux__dgram_free(udp_pool(u), d);
    }
    return rc;
}

int evmux_udp_send(evmux_udp_send_req *req, evmux_udp *u, const evmux_buf bufs[], size_t nbufs,
                   const struct sockaddr *addr, socklen_t addr_len, evmux_udp_send_cb cb)
{
    if (req == NULL && cb != NULL)
        return -EINVAL;
    size_t total;
    int rc = check_send(u, bufs, nbufs, addr, addr_len, &total);
    if (rc < 0)
        return rc;
    if (req != NULL) {
        req->udp = u;
        req->cb = cb;
        req->link = (struct evmux__link){NULL, NULL};
        req->status = 0;
    }
    if (u->driver->send_at_once && evmux__list_empty(&u->queue) && nbufs <= DIRECT_IOV_MAX) {
        ssize_t n = send_direct(u, bufs, nbufs, addr, addr_len);
        if (n != -EAGAIN && n != -EWOULDBLOCK) {
            owe_report(u, req, n < 0 ? (int)n : 0);
            return 0;
        }
    }
    return enqueue(req, u, bufs, nbufs, total, addr, addr_len);
}

ssize_t evmux_udp_try_send(evmux_udp *u, const evmux_buf bufs[], size_t nbufs,
                           const struct sockaddr *addr, socklen_t addr_len)
{
    size_t total;
    int rc = check_send(u, bufs, nbufs, addr, addr_len, &total);
    if (rc < 0)
        return rc;
    if (nbufs > DIRECT_IOV_MAX)
        return -EINVAL;
    /* Not past datagrams that wait (io_uring: also in the ring, or refused
     * with their results not yet seen): their order is kept. */
    if (!evmux__list_empty(&u->queue) || !evmux__list_empty(&u->inflight) ||
        (u->state & UDP_SEND_FULL))
        return -EAGAIN;
    return send_direct(u, bufs, nbufs, addr, addr_len);
}

size_t evmux_udp_queued(const evmux_udp *u)
{
    return u != NULL ? u->queued_bytes : 0;
}

size_t evmux_udp_queued_count(const evmux_udp *u)
{
    return u != NULL ? u->queued_count : 0;
}

int evmux_udp_fd(const evmux_udp *u)
{
    return u != NULL ? u->fd : -1;
}

/* Sends the queue with sendmmsg until the kernel stops taking it. A
 * datagram the kernel rejects fails alone; the rest go on. */
void evmux__udp_send_queue_now(evmux_udp *u)
{
    struct mmsghdr msgs[UDP_BATCH];
    struct evmux__dgram *batch[UDP_BATCH];
    while (!evmux__list_empty(&u->queue)) {
        int n = 0;
        for (struct evmux__link *l = u->queue.next; l != &u->queue && n < UDP_BATCH; l = l->next) {
            batch[n] = EVMUX__CONTAINER_OF(l, struct evmux__dgram, link);
            memset(&msgs[n], 0, sizeof msgs[n]);
            evmux__udp_message(batch[n], &msgs[n].msg_hdr);
            n++;
        }
        int sent = sendmmsg(u->fd, msgs, (unsigned)n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno != EINTR)
                evmux__udp_finish(u, batch[0], -errno);
            continue;
        }
        for (int i = 0; i < sent; i++)
            evmux__udp_finish(u, batch[i], 0);
    }
}

/* ---- the loop's passes ---- */

static void run_deferred(evmux_udp *u, enum evmux__pass pass)
{
    run_reports(u, false);
    if (pass != EVMUX__PASS_RUN_EXIT) /* callbacks: never once evmux_run is returning */
        evmux__udp_deliver_stash(u);
    if (u->driver != NULL && u->driver->deferred != NULL && !evmux__closing(&u->handle))
        u->driver->deferred(u, pass);
}

static void udp_pass(evmux_loop *loop, enum evmux__pass pass)
{
    struct udp_loop *ul = loop->kind_data[EVMUX_HANDLE_UDP];
    if (pass == EVMUX__PASS_RUN_EXIT) {
        /* Only the datagrams queued for the kernel; reports wait for the
         * next run, as the handles stay on the list. */
        for (struct evmux__link *l = ul->deferred.next; l != &ul->deferred; l = l->next) {
            evmux_udp *u = EVMUX__CONTAINER_OF(l, evmux_udp, deferred);
            if ((u->state & UDP_SUBMIT_WANTED) && !evmux__closing(&u->handle)) {
                assert(u->driver->deferred != NULL); /* only a driver that defers sets it */
                u->driver->deferred(u, pass);
            }
        }
        return;
    }
    /* Handles deferred by these callbacks wait for the next pass. */
    assert(evmux__list_empty(&ul->running)); /* passes do not nest */
    evmux__list_splice(&ul->running, &ul->deferred);
    struct evmux__link *l;
    while ((l = evmux__list_pop(&ul->running)) != NULL) {
        loop->deferred_owed--;
        evmux_udp *u = EVMUX__CONTAINER_OF(l, evmux_udp, deferred);
        if (!evmux__closing(&u->handle))
            run_deferred(u, pass);
    }
}

/* ---- life cycle ---- */

int evmux_udp_init(evmux_loop *loop, evmux_udp *u)
{
    if (loop == NULL || u == NULL)
        return -EINVAL;
    void *data = u->handle.data;
    memset(u, 0, sizeof *u);
    u->handle.data = data;
    struct udp_loop *ul = loop->kind_data[EVMUX_HANDLE_UDP];
    if (ul == NULL) {
        ul = calloc(1, sizeof *ul);
        if (ul == NULL)
            return -ENOMEM;
        evmux__list_init(&ul->deferred);
        evmux__list_init(&ul->running);
        loop->kind_data[EVMUX_HANDLE_UDP] = ul;
    }
    evmux__handle_init(loop, &u->handle, &udp_kind);
    u->fd = -1;
    u->recv_size = EVMUX__DATAGRAM_MAX;
    evmux__list_init(&u->queue);
    evmux__list_init(&u->inflight);
    evmux__list_init(&u->stash);
    evmux__list_init(&u->reports);
    return 0;
}

static void udp_close_begin(evmux_handle *h)
{
    evmux_udp *u = (evmux_udp *)h;
    u->state &= ~(UDP_RECEIVING | UDP_SUBMIT_WANTED);
    if (u->fd >= 0)
        evmux__udp_detach(u);
}

static bool udp_close_wait(evmux_handle *h)
{
    evmux_udp *u = (evmux_udp *)h;
    return u->driver != NULL && u->driver->close_wait != NULL && u->driver->close_wait(u);
}

/* The callbacks owed run in order, then those of datagrams the kernel
 * never took, with -ECANCELED. */
static void udp_close_finish(evmux_handle *h)
{
    evmux_udp *u = (evmux_udp *)h;
    undefer(u);
    assert(evmux__list_empty(&u->inflight)); /* close waited for them */
    struct evmux__link *l;
    while ((l = evmux__list_pop(&u->queue)) != NULL) {
        struct evmux__dgram *d = EVMUX__CONTAINER_OF(l, struct evmux__dgram, link);
        evmux__udp_finish(u, d, -ECANCELED);
    }
    undefer(u); /* the reports above deferred it again */
    run_reports(u, true);
    evmux__udp_free_stash(u);
    assert(u->queued_count == 0 && u->queued_bytes == 0);
}

static void udp_set_ref(evmux_handle *h, bool ref)
{
    evmux_udp *u = (evmux_udp *)h;
    if (u->driver != NULL && u->driver->set_ref != NULL)
        u->driver->set_ref(u, ref);
}

static int udp_is_active(const evmux_handle *h)
{
    const evmux_udp *u = (const evmux_udp *)h;
    if (h->flags & EVMUX_FLAG_ACTIVE)
        return 1;
    return u->driver != NULL && u->driver->is_active != NULL && u->driver->is_active(u);
}

static const struct evmux__kind udp_kind = {
    .number = EVMUX_HANDLE_UDP,
    .close_begin = udp_close_begin,
    .close_wait = udp_close_wait,
    .close_finish = udp_close_finish,
    .set_ref = udp_set_ref,
    .is_active = udp_is_active,
    .loop_free = udp_loop_free,
    .loop_pass = udp_pass,
};
