/* Datagram handles receiving: delivering what arrives, whichever driver
 * took it from the kernel (udp_internal.h).
 *
 * A receive callback gets one datagram: also when UDP_GRO handed a train
 * of them over in one piece (split again here), and cut to the handle's
 * receive size. What arrives while the handle does not receive (the rest
 * of a recvmmsg batch after a stop in its callback, or results of a
 * multishot request whose cancel is on its way) is kept, in order, and
 * given first by the next start, from the loop. */
#include "udp_internal.h"

#include <errno.h>
#include <string.h>

static bool receiving_now(const evmux_udp *u)
{
    return (u->state & UDP_RECEIVING) && !evmux__closing(&u->handle) &&
           evmux__list_empty(&u->stash);
}

static void give(evmux_udp *u, char *data, size_t len, const struct sockaddr *from,
                 socklen_t from_len, unsigned flags)
{
    if (len > u->recv_size) {
        len = u->recv_size;
        flags |= EVMUX_UDP_TRUNCATED;
    }
    u->recv_cb(u, (ssize_t)len, data, from_len > 0 ? from : NULL, from_len, flags);
}

/* Kept for the next start. Out of memory the datagram is dropped, as the
 * kernel drops one its buffer has no room for. */
static void stash(evmux_udp *u, const char *data, size_t len, const struct sockaddr *from,
                  socklen_t from_len, unsigned flags)
{
    struct evmux__dgram *d = evmux__dgram_new(udp_pool(u), len, from, from_len);
    if (d == NULL)
        return;
    memcpy(d->iov.iov_base, data, len);
    d->flags = flags;
    d->udp = u;
    evmux__list_push(&u->stash, &d->link);
}

void evmux__udp_deliver(evmux_udp *u, const struct evmux__datagram *dg)
{
    /* Without UDP_GRO one datagram; with it, a train of segment_size
     * datagrams (the last may be shorter), each given on its own. */
    size_t segment = dg->segment_size > 0 ? dg->segment_size : dg->len;
    size_t offset = 0;
    do {
        if (evmux__closing(&u->handle))
            return;
        size_t len = dg->len - offset < segment ? dg->len - offset : segment;
        /* A cut train loses its end: its last piece is the one cut. */
        unsigned flags = dg->truncated && offset + len == dg->len ? EVMUX_UDP_TRUNCATED : 0;
        if (receiving_now(u))
            give(u, dg->data + offset, len, dg->from, dg->from_len, flags);
        else
            stash(u, dg->data + offset, len, dg->from, dg->from_len, flags);
        offset += len;
    } while (offset < dg->len);
}

void evmux__udp_recv_error(evmux_udp *u, int err)
{
    assert(err < 0);
    /* An error is news about datagrams sent earlier, not data: a handle
     * that does not receive now does not hear of it. */
    if (receiving_now(u))
        u->recv_cb(u, err, NULL, NULL, 0, 0);
}

void evmux__udp_deliver_stash(evmux_udp *u)
{
    struct evmux__link *l;
    while ((u->state & UDP_RECEIVING) && !evmux__closing(&u->handle) &&
           (l = evmux__list_pop(&u->stash)) != NULL) {
        struct evmux__dgram *d = EVMUX__CONTAINER_OF(l, struct evmux__dgram, link);
        give(u, d->iov.iov_base, d->iov.iov_len, (const struct sockaddr *)&d->addr, d->addr_len,
             d->flags);
        evmux__dgram_free(udp_pool(u), d);
    }
}

void evmux__udp_free_stash(evmux_udp *u)
{
    struct evmux__link *l;
    while ((l = evmux__list_pop(&u->stash)) != NULL)
        evmux__dgram_free(udp_pool(u), EVMUX__CONTAINER_OF(l, struct evmux__dgram, link));
}

int evmux_udp_recv_start(evmux_udp *u, evmux_udp_recv_cb cb)
{
    if (u == NULL || cb == NULL || evmux__closing(&u->handle))
        return -EINVAL;
    if (u->fd < 0)
        return -EBADF;
    unsigned was = u->state;
    u->recv_cb = cb;
    u->state |= UDP_RECEIVING;
    int rc = u->driver->sync(u);
    if (rc < 0) {
        u->state = was;
        return rc;
    }
    if (!evmux__list_empty(&u->stash))
        evmux__udp_defer(u); /* given from the loop, never inside this call */
    return 0;
}

int evmux_udp_recv_stop(evmux_udp *u)
{
    if (u == NULL)
        return -EINVAL;
    if (!(u->state & UDP_RECEIVING))
        return 0;
    u->state &= ~UDP_RECEIVING;
    int rc = u->driver->sync(u);
    if (rc < 0)
        u->state |= UDP_RECEIVING; /* the kernel still reports to it: keep reading */
    return rc;
}

int evmux_udp_set_recv_size(evmux_udp *u, size_t size)
{
    if (u == NULL || size == 0 || size > EVMUX__DATAGRAM_MAX)
        return -EINVAL;
    u->recv_size = size;
    return 0;
}

