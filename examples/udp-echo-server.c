/* The uppercase echo server of the original text, for datagrams: each one
 * that arrives goes back to its sender with a-z uppercased. evmux reads
 * many datagrams per system call (recvmmsg, or io_uring's multishot
 * recvmsg) and lends each to the callback; the reply is copied only if the
 * kernel cannot take it at once. Runs until killed.
 * Run: evmux-example-udp-echo-server [PORT]   (default 8081; 0 picks a free one) */
#include <evmux.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static void on_datagram(evmux_udp *udp, ssize_t nread, char *buf, const struct sockaddr *from,
                        socklen_t from_len, unsigned flags)
{
    (void)flags; /* EVMUX_UDP_TRUNCATED cannot happen: the default size takes any datagram */
    if (nread < 0 || from == NULL)
        return; /* an ICMP report about an earlier reply: nobody to answer */
    for (ssize_t i = 0; i < nread; i++) /* the buffer is ours to change */
        if (buf[i] >= 'a' && buf[i] <= 'z')
            buf[i] -= 'a' - 'A';
    evmux_buf reply = {buf, (size_t)nread};
    evmux_udp_send(NULL, udp, &reply, 1, from, from_len, NULL); /* UDP: a failure is a loss */
}

int main(int argc, char **argv)
{
    char *end = "", where[64];
    unsigned long port = argc > 1 ? strtoul(argv[1], &end, 10) : 8081;
    struct sockaddr_storage addr;
    socklen_t len;
    evmux_loop *loop;
    evmux_udp udp;
    int rc = *end || port > 65535 ? -EINVAL : evmux_loop_new(&loop, NULL);
    if (rc == 0)
        rc = evmux_addr_ip("127.0.0.1", (unsigned)port, &addr, &len);
    if (rc == 0 && (rc = evmux_udp_init(loop, &udp)) == 0)
        rc = evmux_udp_bind(&udp, (struct sockaddr *)&addr, len, 0);
    if (rc == 0)
        rc = evmux_udp_recv_start(&udp, on_datagram);
    if (rc < 0) {
        fprintf(stderr, "cannot serve UDP port %s: %s\n", argc > 1 ? argv[1] : "8081",
                evmux_strerror(rc));
        return 1;
    }
    evmux_udp_address(&udp, &addr, &len); /* the port picked for 0 */
    evmux_addr_format((struct sockaddr *)&addr, len, where, sizeof where);
    printf("listening on %s\n", where);
    fflush(stdout); /* a script may be waiting for that line on a pipe */
    return evmux_run(loop, EVMUX_RUN_DEFAULT) < 0 ? 1 : 0;
}
