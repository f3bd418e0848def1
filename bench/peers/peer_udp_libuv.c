/* evmux-peer-udp-libuv: the UDP uppercase echo on libuv.
 *
 * A uv_udp_t made with uv_udp_init_ex(..., family | UV_UDP_RECVMMSG), as a
 * performance-minded libuv user would:
 *  - receiving: with UV_UDP_RECVMMSG libuv reads with recvmmsg into the
 *    buffer alloc_cb gives, cut in 64 KiB slices, one datagram per slice, at
 *    most 20 per call (UV__MMSG_MAXWIDTH in libuv 1.40 to 1.44 at least), so
 *    alloc_cb lends one static buffer of 20 x 64 KiB, reused by every call:
 *    no malloc in the receive path. recv_cb then runs once per datagram
 *    (flags UV_UDP_MMSG_CHUNK, addr its source), and once more with
 *    UV_UDP_MMSG_FREE (nread 0, addr NULL) to say the buffer is ours again;
 *    a read that found nothing also calls it with nread 0 and addr NULL.
 *    An empty datagram is nread 0 with an address, and is answered. Per
 *    readiness report libuv reads until a recvmmsg finds nothing or 32
 *    datagrams or more were read;
 *  - replying: uv_udp_try_send straight from the receive buffer (one
 *    sendmsg per reply: libuv 1.44 has no batched try_send). On UV_EAGAIN
 *    (socket full, or replies already queued: try_send refuses then, which
 *    keeps the order) the reply is copied into a request for uv_udp_send,
 *    which libuv sends with sendmmsg, up to 20 at a time. Queued
 *    replies may hold up to PEER_UDP_QUEUE_MAX bytes, requests included;
 *    past that a reply is dropped and counted.
 */
#include <stddef.h>
#include <uv.h>

#include "peer_common.h"

#if UV_VERSION_HEX < 0x012800
#error "evmux-peer-udp-libuv needs libuv 1.40 or later (UV_UDP_RECVMMSG, UV_UDP_MMSG_FREE)"
#endif

#define RECV_SLICES 20 /* libuv's recvmmsg takes at most 20 datagrams per call */

struct send_req {
    uv_udp_send_t req;
    size_t size; /* what this request counts in `queued` */
    uv_buf_t buf;
    char data[]; /* the reply */
};

static char recv_buf[RECV_SLICES * PEER_UDP_DGRAM_MAX]; /* one loop, one buffer */
static size_t queued; /* bytes held by replies waiting in uv_udp_send requests */

static void alloc_buffer(uv_handle_t *handle, size_t suggested_size, uv_buf_t *buf)
{
    (void)handle;
    (void)suggested_size; /* 64 KiB: one datagram; we give room for RECV_SLICES */
    *buf = uv_buf_init(recv_buf, sizeof recv_buf);
}

static void on_sent(uv_udp_send_t *req, int status)
{
    struct send_req *sr = (struct send_req *)((char *)req - offsetof(struct send_req, req));
    queued -= sr->size;
    if (status < 0 && status != UV_ECANCELED)
        peer_udp_send_failed(-status);
    free(sr);
}

static void on_recv(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf,
                    const struct sockaddr *addr, unsigned flags)
{
    (void)flags; /* UV_UDP_PARTIAL cannot be: a slice holds any datagram */
    if (nread < 0) {
        peer_udp_recv_failed((int)-nread);
        return;
    }
    if (addr == NULL)
        return; /* nothing more to read, or UV_UDP_MMSG_FREE: the buffer is static */
    peer_handle(buf->base, (size_t)nread);
    uv_buf_t reply = uv_buf_init(buf->base, (unsigned)nread);
    int rc = uv_udp_try_send(udp, &reply, 1, addr);
    if (rc >= 0)
        return;
    if (rc != UV_EAGAIN) {
        peer_udp_send_failed(-rc);
        return;
    }
    size_t size = sizeof(struct send_req) + (size_t)nread;
    struct send_req *sr = NULL;
    if (queued + size > PEER_UDP_QUEUE_MAX || (sr = malloc(size)) == NULL) {
        peer_udp_dropped_full++;
        return;
    }
    sr->size = size;
    memcpy(sr->data, buf->base, (size_t)nread);
    sr->buf = uv_buf_init(sr->data, (unsigned)nread);
    rc = uv_udp_send(&sr->req, udp, &sr->buf, 1, addr, on_sent); /* copies addr */
    if (rc < 0) {
        free(sr);
        peer_udp_send_failed(-rc);
        return;
    }
    queued += size;
}

static void on_signal(uv_signal_t *handle, int signum)
{
    (void)signum;
    uv_stop(handle->loop);
}

int main(int argc, char **argv)
{
    struct peer_options opt;
    int status = peer_udp_parse_args(argc, argv, "udp-libuv",
                                     "libuv uv_udp_t, recvmmsg, try_send", &opt);
    if (status >= 0)
        return status;
    peer_init_process();

    uv_loop_t *loop = uv_default_loop();
    struct sockaddr_storage addr;
    socklen_t len;
    peer_resolve(&opt, &addr, &len);
    uv_udp_t udp;
    int rc = uv_udp_init_ex(loop, &udp, addr.ss_family | UV_UDP_RECVMMSG);
    if (rc == 0)
        rc = uv_udp_bind(&udp, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_udp_recv_start(&udp, alloc_buffer, on_recv);
    uv_os_fd_t fd;
    if (rc == 0)
        rc = uv_fileno((uv_handle_t *)&udp, &fd);
    if (rc < 0) {
        fprintf(stderr, "evmux-peer-udp-libuv: cannot bind %s:%u: %s\n", opt.host, opt.port,
                uv_strerror(rc));
        return 1;
    }
    if (!uv_udp_using_recvmmsg(&udp))
        fprintf(stderr, "evmux-peer-udp-libuv: libuv does not use recvmmsg here; "
                        "one datagram per read\n");

    uv_signal_t sigint, sigterm;
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);

    peer_announce(fd);
    uv_run(loop, UV_RUN_DEFAULT);
    peer_print_summary();
    return 0;
}
