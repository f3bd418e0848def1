/* evmux-echo-server --udp: each datagram comes back to its sender,
 * uppercased, as one datagram. Replies the socket has not taken are
 * bounded (UDP_OWED_MAX); beyond that a reply is dropped and counted, as a
 * full socket buffer would drop it. With several loops, each has its own
 * socket on the same port (SO_REUSEPORT) and the kernel spreads senders. */
#include "echo_server.h"

#include "echo_upper.h"

static void on_datagram(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                        socklen_t from_len, unsigned flags)
{
    struct shard *sh = u->handle.data;
    (void)flags; /* the default receive size takes any datagram whole */
    if (nread < 0 || from == NULL)
        return; /* an ICMP report about an earlier reply; nobody to answer */
    if (sh->srv->opt.work_us > 0)
        burn_cpu(count_marks(buf, (size_t)nread) * sh->srv->opt.work_us, &sh->give_up_work);
    echo_uppercase(buf, (size_t)nread);
    evmux_buf reply = {buf, (size_t)nread};
    if (evmux_udp_queued(u) > UDP_OWED_MAX ||
        evmux_udp_send(NULL, u, &reply, 1, from, from_len, NULL) < 0) {
        sh->dropped++;
        return;
    }
    sh->served++;
}

int shard_start_udp(struct shard *sh, const struct sockaddr *addr, socklen_t len, unsigned flags)
{
    sh->udp.handle.data = sh;
    int rc = evmux_udp_init(sh->loop, &sh->udp);
    if (rc < 0)
        return rc;
    rc = evmux_udp_bind(&sh->udp, addr, len, flags);
    if (rc == 0)
        rc = evmux_udp_recv_start(&sh->udp, on_datagram);
    if (rc < 0) {
        evmux_close(&sh->udp.handle, NULL);
        return rc;
    }
    return 0;
}
