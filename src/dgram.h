/* Datagrams that wait: sent but not yet taken by the kernel, or received
 * while their handle was not receiving. Each is one record, carved from
 * blocks that a pool per loop keeps for reuse, so steady traffic allocates
 * nothing, and a record never moves: on io_uring it embeds the send
 * request the kernel holds.
 *
 * A block hands out records from its start and counts those still live;
 * it is reused once that count is back to 0. Records are freed in any
 * order (io_uring completes sends out of turn), so a block held by one
 * slow record wastes its rest until then: a bound, not a leak, since
 * the pool keeps at most DGRAM_POOL_MAX empty blocks and frees the rest. */
#ifndef EVMUX_DGRAM_H
#define EVMUX_DGRAM_H

#include "evmux_internal.h"

#include <sys/uio.h>

#define EVMUX__DGRAM_BLOCK_BYTES (256 * 1024)
#define EVMUX__DGRAM_POOL_MAX 8 /* empty blocks kept per loop: 2 MiB */

struct evmux__dgram_block;

struct evmux__dgram {
    struct evmux__op op;      /* io_uring: the send request of this datagram */
    struct evmux__link link;  /* on its handle's queue or stash */
    struct evmux__dgram_block *block;
    evmux_udp *udp;
    evmux_udp_send_req *req;  /* NULL: no callback wanted (or received) */
    struct iovec iov;         /* the bytes, for the backend's message */
    socklen_t addr_len;       /* 0: none (a connected socket's send) */
    unsigned flags;           /* received: EVMUX_UDP_TRUNCATED */
    uint64_t seq;             /* sent: the order of the sends */
    struct sockaddr_storage addr;
};

struct evmux__dgram_pool {
    struct evmux__dgram_block *current; /* records are carved from here */
    struct evmux__dgram_block *free;    /* empty, for reuse */
    size_t free_count;
};

/* A record with room for len bytes (iov set to them, uninitialised) and
 * addr (copied; NULL: none); NULL when out of memory. */
struct evmux__dgram *evmux__dgram_new(struct evmux__dgram_pool *pool, size_t len,
                                      const struct sockaddr *addr, socklen_t addr_len);
void evmux__dgram_free(struct evmux__dgram_pool *pool, struct evmux__dgram *d);
/* Frees the pool's blocks; every record must have been freed. */
void evmux__dgram_pool_free(struct evmux__dgram_pool *pool);

#endif
