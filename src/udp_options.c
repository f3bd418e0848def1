/* Socket options of datagram handles: broadcast, TTLs, multicast groups
 * (any-source and source-specific), and the kernel's segmentation and
 * receive offloads. Interfaces are named ("lo"), not given by address:
 * one form for IPv4 and IPv6, turned into an index here. */
#include "udp_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>

/* The socket's family, or a negative errno value. */
static int inet_family(const evmux_udp *u)
{
    if (u == NULL)
        return -EINVAL;
    if (u->fd < 0)
        return -EBADF;
    if (u->state & UDP_NOT_INET)
        return -ENOTSUP;
    struct sockaddr_storage self;
    socklen_t len = sizeof self;
    if (getsockname(u->fd, (struct sockaddr *)&self, &len) < 0)
        return -errno;
    return self.ss_family;
}

static int set_int(const evmux_udp *u, int level, int name, int value)
{
    return setsockopt(u->fd, level, name, &value, sizeof value) < 0 ? -errno : 0;
}

/* An IPv6 socket that also carries IPv4 (IPV6_V6ONLY off): its IPv4
 * traffic follows the IPv4 options, so both are set. */
static bool dual_stack(const evmux_udp *u)
{
    int v6_only = 1;
    socklen_t len = sizeof v6_only;
    return getsockopt(u->fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6_only, &len) == 0 && v6_only == 0;
}

/* An option with an IPv4 and an IPv6 name. */
static int set_ip_int(evmux_udp *u, int v4_name, int v6_name, int value)
{
    int family = inet_family(u);
    if (family < 0)
        return family;
    if (family == AF_INET)
        return set_int(u, IPPROTO_IP, v4_name, value);
    int rc = set_int(u, IPPROTO_IPV6, v6_name, value);
    if (rc == 0 && dual_stack(u))
        rc = set_int(u, IPPROTO_IP, v4_name, value);
    return rc;
}

int evmux_udp_set_broadcast(evmux_udp *u, int on)
{
    int family = inet_family(u);
    return family < 0 ? family : set_int(u, SOL_SOCKET, SO_BROADCAST, on != 0);
}

int evmux_udp_set_ttl(evmux_udp *u, int ttl)
{
    if (ttl < 1 || ttl > 255)
        return -EINVAL;
    return set_ip_int(u, IP_TTL, IPV6_UNICAST_HOPS, ttl);
}

int evmux_udp_set_multicast_ttl(evmux_udp *u, int ttl)
{
    if (ttl < 1 || ttl > 255)
        return -EINVAL;
    return set_ip_int(u, IP_MULTICAST_TTL, IPV6_MULTICAST_HOPS, ttl);
}

int evmux_udp_set_multicast_loop(evmux_udp *u, int on)
{
    return set_ip_int(u, IP_MULTICAST_LOOP, IPV6_MULTICAST_LOOP, on != 0);
}

/* 0 for NULL (the kernel chooses), else the index, or -ENODEV. */
static int interface_index(const char *name, unsigned *index)
{
    *index = 0;
    if (name == NULL)
        return 0;
    *index = if_nametoindex(name);
    return *index == 0 ? -ENODEV : 0;
}

int evmux_udp_set_multicast_interface(evmux_udp *u, const char *interface_name)
{
    int family = inet_family(u);
    if (family < 0)
        return family;
    unsigned index;
    int rc = interface_index(interface_name, &index);
    if (rc < 0)
        return rc;
    if (family == AF_INET6 && (rc = set_int(u, IPPROTO_IPV6, IPV6_MULTICAST_IF, (int)index)) < 0)
        return rc;
    if (family == AF_INET6 && !dual_stack(u))
        return 0;
    struct ip_mreqn req = {.imr_ifindex = (int)index};
    return setsockopt(u->fd, IPPROTO_IP, IP_MULTICAST_IF, &req, sizeof req) < 0 ? -errno : 0;
}

/* A multicast literal of the family, as a socket address. */
static int multicast_address(int family, const char *text, struct sockaddr_storage *out,
                             bool must_be_multicast)
{
    memset(out, 0, sizeof *out);
    if (text == NULL)
        return -EINVAL;
    if (family == AF_INET) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)out;
        v4->sin_family = AF_INET;
        if (inet_pton(AF_INET, text, &v4->sin_addr) != 1)
            return -EINVAL;
        return !must_be_multicast || IN_MULTICAST(ntohl(v4->sin_addr.s_addr)) ? 0 : -EINVAL;
    }
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    v6->sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, text, &v6->sin6_addr) != 1)
        return -EINVAL;
    return !must_be_multicast || IN6_IS_ADDR_MULTICAST(&v6->sin6_addr) ? 0 : -EINVAL;
}

static int level_of(int family)
{
    return family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP;
}

int evmux_udp_set_membership(evmux_udp *u, const char *group, const char *interface_name,
                             int join)
{
    int family = inet_family(u);
    if (family < 0)
        return family;
    struct group_req req = {0};
    int rc = multicast_address(family, group, &req.gr_group, true);
    if (rc == 0)
        rc = interface_index(interface_name, &req.gr_interface);
    if (rc < 0)
        return rc;
    int name = join ? MCAST_JOIN_GROUP : MCAST_LEAVE_GROUP;
    return setsockopt(u->fd, level_of(family), name, &req, sizeof req) < 0 ? -errno : 0;
}

int evmux_udp_set_source_membership(evmux_udp *u, const char *group, const char *interface_name,
                                    const char *source, int join)
{
    int family = inet_family(u);
    if (family < 0)
        return family;
    struct group_source_req req = {0};
    int rc = multicast_address(family, group, &req.gsr_group, true);
    if (rc == 0)
        rc = multicast_address(family, source, &req.gsr_source, false);
    if (rc == 0)
        rc = interface_index(interface_name, &req.gsr_interface);
    if (rc < 0)
        return rc;
    int name = join ? MCAST_JOIN_SOURCE_GROUP : MCAST_LEAVE_SOURCE_GROUP;
    return setsockopt(u->fd, level_of(family), name, &req, sizeof req) < 0 ? -errno : 0;
}

/* The kernel says ENOPROTOOPT for an option it does not know. */
static int offload_error(int err)
{
    return err == ENOPROTOOPT ? -ENOTSUP : -err;
}

int evmux_udp_set_gso(evmux_udp *u, unsigned segment_size)
{
    int family = inet_family(u);
    if (family < 0)
        return family;
    if (segment_size > UINT16_MAX)
        return -EINVAL;
    int value = (int)segment_size;
    if (setsockopt(u->fd, SOL_UDP, UDP_SEGMENT, &value, sizeof value) < 0)
        return offload_error(errno);
    return 0;
}

int evmux_udp_set_gro(evmux_udp *u, int on)
{
    int family = inet_family(u);
    if (family < 0)
        return family;
    int value = on != 0;
    if (setsockopt(u->fd, SOL_UDP, UDP_GRO, &value, sizeof value) < 0)
        return offload_error(errno);
    return 0;
}
