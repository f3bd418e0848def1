/* Whether this machine has an IPv6 loopback (::1 can be bound): tests of
 * IPv6 skip (exit 77) where it has none, such as a container without
 * IPv6. */
#ifndef EVMUX_TEST_IPV6_LOOPBACK_H
#define EVMUX_TEST_IPV6_LOOPBACK_H

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

static inline int have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

#endif
