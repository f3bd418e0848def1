/* The readiness driver of datagram handles (select, poll, epoll): an io
 * watcher on the socket, readable while the handle receives and writable
 * while datagrams are queued. A readable socket is read with recvmmsg,
 * UDP_BATCH datagrams per system call, into the loop's receive batch; a
 * send goes to the kernel at once (evmux_udp_send), and only what it
 * refuses for lack of room is queued, to leave with sendmmsg once the
 * socket is writable. The watcher is level-triggered, so a batch that
 * leaves datagrams in the socket is simply reported again next time,
 * after the other handles have had their turn. */
#include "udp_internal.h"

#include <errno.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define IO(u) (&(u)->driver_state.io)

struct udp_recv_batch {
    struct mmsghdr msgs[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    struct sockaddr_storage names[UDP_BATCH];
    union {
        char bytes[EVMUX__DATAGRAM_CONTROL]; /* UDP_GRO's segment size, and room for others */
        struct cmsghdr align;
    } control[UDP_BATCH];
};

/* The loop's batch, made by the first handle that receives. */
static int ensure_batch(struct udp_loop *ul)
{
    if (ul->recv_batch != NULL)
        return 0;
    void *area = mmap(NULL, (size_t)UDP_BATCH * EVMUX__DATAGRAM_MAX, PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED)
        return -ENOMEM;
    struct udp_recv_batch *b = calloc(1, sizeof *b);
    if (b == NULL) {
        munmap(area, (size_t)UDP_BATCH * EVMUX__DATAGRAM_MAX);
        return -ENOMEM;
    }
    for (int i = 0; i < UDP_BATCH; i++) {
        b->iov[i] = (struct iovec){(char *)area + (size_t)i * EVMUX__DATAGRAM_MAX,
                                   EVMUX__DATAGRAM_MAX};
        b->msgs[i].msg_hdr.msg_name = &b->names[i];
        b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
        b->msgs[i].msg_hdr.msg_iovlen = 1;
        b->msgs[i].msg_hdr.msg_control = b->control[i].bytes;
    }
    ul->recv_area = area;
    ul->recv_batch = b;
    return 0;
}

static int ready_sync(evmux_udp *u)
{
    unsigned want = 0;
    if (u->state & UDP_RECEIVING) {
        int rc = ensure_batch(udp_loop(u));
        if (rc < 0)
            return rc;
        want |= EVMUX_READABLE;
    }
    if (!evmux__list_empty(&u->queue))
        want |= EVMUX_WRITABLE;
    return evmux_io_start(IO(u), want);
}

static unsigned gro_segment(struct msghdr *hdr)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(hdr); c != NULL; c = CMSG_NXTHDR(hdr, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            int size;
            memcpy(&size, CMSG_DATA(c), sizeof size);
            return size > 0 ? (unsigned)size : 0;
        }
    }
    return 0;
}

static void receive(evmux_udp *u)
{
    struct udp_recv_batch *b = udp_loop(u)->recv_batch;
    for (int round = 0; round < UDP_BATCHES_PER_EVENT; round++) {
        if (!(u->state & UDP_RECEIVING) || evmux__closing(&u->handle))
            return;
        for (int i = 0; i < UDP_BATCH; i++) {
            b->msgs[i].msg_hdr.msg_namelen = sizeof b->names[i];
            b->msgs[i].msg_hdr.msg_controllen = sizeof b->control[i].bytes;
        }
        int n = recvmmsg(u->fd, b->msgs, UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno != EINTR)
                evmux__udp_recv_error(u, -errno); /* consumed: read on */
            continue;
        }
        for (int i = 0; i < n; i++) {
            struct msghdr *hdr = &b->msgs[i].msg_hdr;
            struct evmux__datagram d = {
                .data = hdr->msg_iov->iov_base,
                .len = b->msgs[i].msg_len,
                .from = hdr->msg_name,
                .from_len = hdr->msg_namelen,
                .truncated = (hdr->msg_flags & MSG_TRUNC) != 0,
                .segment_size = hdr->msg_controllen > 0 ? gro_segment(hdr) : 0,
            };
            evmux__udp_deliver(u, &d);
        }
        if (n < UDP_BATCH)
            return;
    }
}

static void on_udp_io(evmux_io *io, unsigned events)
{
    evmux_udp *u = io->handle.data;
    if (events & EVMUX_READABLE)
        receive(u);
    if ((events & EVMUX_WRITABLE) && !evmux__closing(&u->handle)) {
        evmux__udp_send_queue_now(u);
        (void)ready_sync(u); /* the queue only shrank: no new watch to fail */
    }
}

static bool ready_detach(evmux_udp *u)
{
    /* What the kernel refused earlier gets one more chance, as on io_uring:
     * a writable report may be waiting in this very iteration. */
    evmux__udp_send_queue_now(u);
    evmux__io_stop_now(IO(u)); /* while the descriptor still names the file */
    return false;              /* the caller closes it */
}

static void ready_set_ref(evmux_udp *u, bool ref)
{
    evmux__handle_set_ref(&IO(u)->handle, ref);
}

static bool ready_is_active(const evmux_udp *u)
{
    return evmux_is_active(&IO(u)->handle);
}

static int ready_attach(evmux_udp *u)
{
    int rc = evmux_io_init(u->handle.loop, IO(u), u->fd, on_udp_io);
    if (rc < 0)
        return rc;
    IO(u)->handle.flags |= EVMUX_FLAG_IO_SOCKET;
    evmux__handle_make_internal(&IO(u)->handle);
    if (!(u->handle.flags & EVMUX_FLAG_REF))
        evmux_unref(&IO(u)->handle);
    IO(u)->handle.data = u;
    u->driver = &evmux__udp_ready;
    return 0;
}

const struct evmux__udp_driver evmux__udp_ready = {
    .attach = ready_attach,
    .sync = ready_sync,
    .send_at_once = true,
    .detach = ready_detach,
    .set_ref = ready_set_ref,
    .is_active = ready_is_active,
};
