/* A datagram handle's socket: making one (bind, connect, or the first
 * send), adopting one, connecting and disconnecting, its addresses, and
 * letting it go. The driver is chosen here, when the socket is attached:
 * a handle has one socket for its life, so the driver never changes. */
#include "udp_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

static int attach(evmux_udp *u, int fd, bool inet)
{
    int rc = evmux__io_check_fd(u->handle.loop, fd);
    if (rc < 0)
        return rc;
    const struct evmux__udp_driver *driver =
        u->handle.loop->backend->completion != NULL ? &evmux__udp_native : &evmux__udp_ready;
    u->fd = fd;
    u->state = inet ? 0 : UDP_NOT_INET;
    rc = driver->attach(u);
    if (rc < 0) {
        u->fd = -1;
        u->state = 0;
        return rc;
    }
    assert(u->driver == driver);
    return 0;
}

void evmux__udp_detach(evmux_udp *u)
{
    assert(u->fd >= 0);
    if (!u->driver->detach(u))
        close(u->fd);
    u->fd = -1;
    u->state &= ~UDP_CONNECTED;
}

static int set_flag(int fd, int level, int name, int on)
{
    return setsockopt(fd, level, name, &on, sizeof on) < 0 ? -errno : 0;
}

/* A descriptor, or a negative errno value. An IPv6 socket takes IPv4 too
 * (dual stack) unless v6_only: set either way, so that the system default
 * (net.ipv6.bindv6only) does not decide what it receives. */
static int make_socket(int family, bool v6_only)
{
    if (family != AF_INET && family != AF_INET6)
        return -EAFNOSUPPORT;
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = family == AF_INET6 ? set_flag(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6_only) : 0;
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

int evmux__udp_ensure_socket(evmux_udp *u, int family)
{
    if (u->fd >= 0)
        return 0;
    int fd = make_socket(family, false);
    if (fd < 0)
        return fd;
    int rc = attach(u, fd, true);
    if (rc < 0)
        close(fd);
    return rc;
}

static int check_address(const struct sockaddr *addr, socklen_t len)
{
    if (addr == NULL || len < sizeof(sa_family_t))
        return -EINVAL;
    if (addr->sa_family == AF_INET)
        return len >= sizeof(struct sockaddr_in) ? 0 : -EINVAL;
    if (addr->sa_family == AF_INET6)
        return len >= sizeof(struct sockaddr_in6) ? 0 : -EINVAL;
    return -EAFNOSUPPORT;
}

int evmux_udp_bind(evmux_udp *u, const struct sockaddr *addr, socklen_t addr_len, unsigned flags)
{
    if (u == NULL || evmux__closing(&u->handle) ||
        (flags & ~(unsigned)(EVMUX_UDP_REUSEPORT | EVMUX_UDP_IPV6_ONLY | EVMUX_UDP_REUSEADDR)))
        return -EINVAL;
    int rc = check_address(addr, addr_len);
    if (rc < 0)
        return rc;
    if ((flags & EVMUX_UDP_IPV6_ONLY) && addr->sa_family != AF_INET6)
        return -EINVAL;
    if (u->fd >= 0)
        return -EISCONN;
    int fd = make_socket(addr->sa_family, (flags & EVMUX_UDP_IPV6_ONLY) != 0);
    if (fd < 0)
        return fd;
    if (flags & EVMUX_UDP_REUSEADDR)
        rc = set_flag(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (rc == 0 && (flags & EVMUX_UDP_REUSEPORT)) {
#ifdef SO_REUSEPORT
        rc = set_flag(fd, SOL_SOCKET, SO_REUSEPORT, 1);
#else
        rc = -ENOTSUP;
#endif
    }
    if (rc == 0 && bind(fd, addr, addr_len) < 0)
        rc = -errno;
    if (rc == 0)
        rc = attach(u, fd, true);
    if (rc < 0)
        close(fd);
    return rc;
}

int evmux_udp_open(evmux_udp *u, int fd)
{
    if (u == NULL || fd < 0 || evmux__closing(&u->handle))
        return -EINVAL;
    if (u->fd >= 0)
        return -EISCONN;
    int type;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return -errno;
    if (type != SOCK_DGRAM)
        return -EPROTOTYPE;
    struct sockaddr_storage self;
    socklen_t self_len = sizeof self;
    if (getsockname(fd, (struct sockaddr *)&self, &self_len) < 0)
        return -errno;
    bool inet = self.ss_family == AF_INET || self.ss_family == AF_INET6;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0))
        return -errno;
    int rc = attach(u, fd, inet);
    if (rc < 0) {
        fcntl(fd, F_SETFL, flags); /* the caller's again, as it was */
        return rc;
    }
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0)
        u->state |= UDP_CONNECTED;
    return 0;
}

int evmux_udp_connect(evmux_udp *u, const struct sockaddr *addr, socklen_t addr_len)
{
    if (u == NULL || evmux__closing(&u->handle))
        return -EINVAL;
    int rc = check_address(addr, addr_len);
    if (rc < 0)
        return rc;
    rc = evmux__udp_ensure_socket(u, addr->sa_family);
    if (rc < 0)
        return rc;
    if (connect(u->fd, addr, addr_len) < 0)
        return -errno;
    u->state |= UDP_CONNECTED;
    return 0;
}

int evmux_udp_disconnect(evmux_udp *u)
{
    if (u == NULL)
        return -EINVAL;
    if (!(u->state & UDP_CONNECTED) || u->fd < 0)
        return -ENOTCONN;
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    /* Linux returns 0; some systems report EAFNOSUPPORT after dissolving
     * the association all the same. */
    if (connect(u->fd, &unspec, sizeof unspec) < 0 && errno != EAFNOSUPPORT)
        return -errno;
    u->state &= ~UDP_CONNECTED;
    return 0;
}

int evmux_udp_address(const evmux_udp *u, struct sockaddr_storage *out, socklen_t *out_len)
{
    if (u == NULL || out == NULL || out_len == NULL)
        return -EINVAL;
    if (u->fd < 0)
        return -EBADF;
    *out_len = sizeof *out;
    return getsockname(u->fd, (struct sockaddr *)out, out_len) < 0 ? -errno : 0;
}

int evmux_udp_peer(const evmux_udp *u, struct sockaddr_storage *out, socklen_t *out_len)
{
    if (u == NULL || out == NULL || out_len == NULL)
        return -EINVAL;
    if (u->fd < 0)
        return -EBADF;
    if (!(u->state & UDP_CONNECTED))
        return -ENOTCONN;
    *out_len = sizeof *out;
    return getpeername(u->fd, (struct sockaddr *)out, out_len) < 0 ? -errno : 0;
}
