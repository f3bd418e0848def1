/* evmux-peer-udp-raw: the UDP uppercase echo on raw system calls, in batches.
 *
 * The best we know how to write by hand for one socket on one thread, the
 * reference the library peers are measured against. Two system calls per
 * batch of up to BATCH datagrams:
 *  - recvmmsg(MSG_WAITFORONE) on a blocking socket sleeps in the kernel until
 *    a datagram arrives, then takes whatever else is already queued, up to
 *    BATCH, without waiting more; each datagram has its own 64 KiB buffer and
 *    source address, so all of them stay in place until replied to;
 *  - each is handled in its buffer (--work-us, uppercase) and the whole batch
 *    of replies goes back with one sendmmsg(MSG_DONTWAIT), each to its
 *    datagram's source. sendmmsg may take fewer than given: the rest is sent
 *    again; on EAGAIN (no room in the socket's send buffer) we poll() for
 *    POLLOUT and go on, reading nothing meanwhile, so that what the peer
 *    cannot answer waits in (and overflows from) the kernel's receive queue
 *    instead of its memory. A reply refused with an error is dropped and
 *    counted (sendmmsg reports it on the call that starts with that reply).
 * Nothing is allocated after start: the buffers are static (BATCH x 64 KiB,
 * resident only once touched). SIGINT/SIGTERM _exit(0) from the handler.
 */
#include <poll.h>
#include <sys/uio.h>

#include "peer_common.h"

#define BATCH 64

static char bufs[BATCH][PEER_UDP_DGRAM_MAX];
static struct sockaddr_storage addrs[BATCH];
static struct iovec iovs[BATCH];
static struct mmsghdr msgs[BATCH];

/* Makes msgs[i] ready to receive a datagram of any size into bufs[i]. */
static void reset(unsigned i)
{
    iovs[i].iov_len = PEER_UDP_DGRAM_MAX;
    msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
}

static void wait_writable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    while (poll(&p, 1, -1) < 0 && errno == EINTR)
        ;
}

/* Sends the replies in msgs[0, n): iov_len is the reply's length and
 * msg_name its destination, as recvmmsg left it. */
static void send_batch(int fd, unsigned n)
{
    unsigned done = 0;
    while (done < n) {
        int sent = sendmmsg(fd, msgs + done, n - done, MSG_DONTWAIT);
        if (sent > 0)
            done += (unsigned)sent; /* a partial batch: send the rest */
        else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            wait_writable(fd);
        else if (sent < 0 && errno == EINTR)
            continue;
        else {
            peer_udp_send_failed(sent < 0 ? errno : EIO); /* msgs[done] was refused */
            done++;
        }
    }
}

int main(int argc, char **argv)
{
    struct peer_options opt;
    int status = peer_udp_parse_args(argc, argv, "udp-raw",
                                     "raw recvmmsg/sendmmsg, batches of 64", &opt);
    if (status >= 0)
        return status;
    peer_init_process();
    peer_exit_on_signals();
    int fd = peer_udp_socket(&opt, false); /* blocking: recvmmsg sleeps in it */

    for (unsigned i = 0; i < BATCH; i++) {
        iovs[i].iov_base = bufs[i];
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &addrs[i];
        reset(i);
    }

    peer_announce(fd);
    for (;;) {
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno != EINTR)
                peer_udp_recv_failed(errno);
            continue;
        }
        /* The buffer holds any datagram, so none comes truncated (MSG_TRUNC). */
        for (unsigned i = 0; i < (unsigned)n; i++) {
            peer_handle(bufs[i], msgs[i].msg_len);
            iovs[i].iov_len = msgs[i].msg_len; /* the reply: same bytes, same length */
        }
        send_batch(fd, (unsigned)n);
        for (unsigned i = 0; i < (unsigned)n; i++)
            reset(i);
    }
}
