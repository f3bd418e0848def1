/* The first address of a host name and port for one socket type, as the
 * C library orders them, looked up with evmux_getaddrinfo on a loop that
 * has nothing else to do yet: the run returns once the answer is in.
 * Shared by evmux-echo-server (where to listen) and evmux-bench --udp
 * (where to send). Header-only: each program includes it once. */
#ifndef EVMUX_APPS_FIRST_ADDRESS_H
#define EVMUX_APPS_FIRST_ADDRESS_H

#include <evmux.h>

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

struct first_address {
    struct sockaddr_storage addr;
    socklen_t len;
    int status;
};

static void first_address_found(evmux_getaddrinfo_req *req, int status, struct addrinfo *res)
{
    struct first_address *where = req->data;
    where->status = status;
    if (status == 0 && res->ai_addrlen <= sizeof where->addr) {
        memcpy(&where->addr, res->ai_addr, res->ai_addrlen);
        where->len = res->ai_addrlen;
    } else if (status == 0) {
        where->status = -EAFNOSUPPORT;
    }
    evmux_freeaddrinfo(res);
}

/* 0, or a negative errno or EVMUX_EAI_* value. flags: AI_PASSIVE, say. */
static int first_address(evmux_loop *loop, const char *host, unsigned port, int socktype,
                         int flags, struct first_address *where)
{
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    struct addrinfo hints = {.ai_socktype = socktype, .ai_flags = flags | AI_NUMERICSERV};
    evmux_getaddrinfo_req req = {.data = where};
    int rc = evmux_getaddrinfo(loop, &req, first_address_found, host, service, &hints);
    if (rc == 0)
        rc = evmux_run(loop, EVMUX_RUN_DEFAULT);
    return rc < 0 ? rc : where->status;
}

#endif
