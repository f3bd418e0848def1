/* Socket addresses: parsing literals and Unix paths, and printing them. */
#include "evmux_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

int evmux_addr_ip(const char *ip, unsigned port, struct sockaddr_storage *out, socklen_t *out_len)
{
    if (ip == NULL || out == NULL || out_len == NULL || port > 65535)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *out_len = sizeof *v4;
        return 0;
    }
    /* Accept "[::1]" as well as "::1": people copy addresses from URLs. */
    char bare[INET6_ADDRSTRLEN];
    size_t len = strlen(ip);
    if (len >= 2 && ip[0] == '[' && ip[len - 1] == ']' && len - 2 < sizeof bare) {
        memcpy(bare, ip + 1, len - 2);
        bare[len - 2] = '\0';
        ip = bare;
    }
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *out_len = sizeof *v6;
        return 0;
    }
    return -EINVAL;
}

int evmux_addr_unix(const char *path, struct sockaddr_storage *out, socklen_t *out_len)
{
    if (path == NULL || out == NULL || out_len == NULL || path[0] == '\0')
        return -EINVAL;
    struct sockaddr_un *un = (struct sockaddr_un *)out;
    size_t len = strlen(path);
    if (len >= sizeof un->sun_path)
        return -ENAMETOOLONG;
    memset(out, 0, sizeof *out);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, len + 1);
    *out_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    return 0;
}

int evmux_addr_format(const struct sockaddr *addr, socklen_t len, char *buf, size_t size)
{
    if (addr == NULL || buf == NULL || size == 0)
        return -EINVAL;
    char ip[INET6_ADDRSTRLEN];
    int n;
    switch (addr->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
        n = snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(v4->sin_port));
        break;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip);
        n = snprintf(buf, size, "[%s]:%u", ip, (unsigned)ntohs(v6->sin6_port));
        break;
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
        size_t max = len > offsetof(struct sockaddr_un, sun_path)
                         ? (size_t)len - offsetof(struct sockaddr_un, sun_path)
                         : 0;
        n = snprintf(buf, size, "%.*s", (int)strnlen(un->sun_path, max), un->sun_path);
        break;
    }
    default:
        buf[0] = '\0';
        return -EINVAL;
    }
    return n < 0 || (size_t)n >= size ? -ENOSPC : 0;
}
