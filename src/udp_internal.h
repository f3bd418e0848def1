/* What the datagram files share (udp.c, udp_socket.c, udp_options.c,
 * udp_ready.c, udp_native.c): a handle's state word, its driver's table,
 * the handles' per-loop part, and the functions one file calls in another.
 *
 * udp.c holds the API and what both drivers share on the sending side:
 * the send queue and the callbacks owed, the loop's passes and closing;
 * udp_recv.c delivers what arrives (cut to the receive size, split again
 * after UDP_GRO, kept while not receiving); udp_socket.c the socket:
 * making, binding, adopting, connecting; udp_options.c its options.
 * The driver is chosen when the socket is made: on a completion backend
 * (io_uring) the completion driver (udp_native.c) works through requests
 * to the kernel (op.h), a multishot recvmsg and a sendmsg per datagram;
 * elsewhere the readiness driver (udp_ready.c) works through an io
 * watcher, with recvmmsg and sendmmsg. Each keeps its own state in
 * u->driver_state, a union.
 *
 * A datagram that waits is a record (dgram.h). One accepted by
 * evmux_udp_send is on exactly one list until its callback is owed: the
 * handle's queue (not yet offered to the kernel, or offered and refused
 * for lack of room) or, on io_uring, inflight (its send request is the
 * kernel's). Then its request, if any, moves to reports with its status
 * and the record is freed. */
#ifndef EVMUX_UDP_INTERNAL_H
#define EVMUX_UDP_INTERNAL_H

#include "dgram.h"

#include <netinet/in.h>

/* Datagrams per recvmmsg and sendmmsg, and receive batches per readiness
 * report before other handles get their turn. */
#define UDP_BATCH 32
#define UDP_BATCHES_PER_EVENT 4

enum udp_state {
    UDP_RECEIVING = 1u << 0,
    UDP_CONNECTED = 1u << 1,
    UDP_NOT_INET = 1u << 2, /* a Unix-domain datagram socket: no IP options */
    /* io_uring: the kernel refused a send for lack of room; the queue
     * waits for room, then goes with sendmmsg. */
    UDP_SEND_FULL = 1u << 3,
    /* io_uring: datagrams are queued for sends made before the next wait. */
    UDP_SUBMIT_WANTED = 1u << 4,
    /* io_uring: closed with requests that still name the descriptor: it
     * stays open (its number in the recv request) until they end. */
    UDP_FD_KEPT = 1u << 5,
};

/* What a driver does; the shared part calls these, never tests which
 * driver it has. NULL entries do nothing. */
struct evmux__udp_driver {
    /* u->fd is set: set the driver's part up and make u->driver this
     * table. 0 or a negative errno value. */
    int (*attach)(evmux_udp *u);
    /* What the kernel is asked for follows u->state and the queue: 0 or a
     * negative errno value. */
    int (*sync)(evmux_udp *u);
    /* A datagram with nothing queued goes to the kernel inside
     * evmux_udp_send (sendmsg), and only what it refuses is queued; else
     * every datagram is queued. */
    bool send_at_once;
    /* In each of the loop's passes, for a deferred handle (after the
     * shared reports). */
    void (*deferred)(evmux_udp *u, enum evmux__pass pass);
    /* evmux_close: let the descriptor go; true if the driver closes it
     * itself, later (requests still name it), else the caller closes it. */
    bool (*detach)(evmux_udp *u);
    /* evmux_close: true while the kernel holds requests of the handle. */
    bool (*close_wait)(evmux_udp *u);
    void (*set_ref)(evmux_udp *u, bool ref);
    bool (*is_active)(const evmux_udp *u);
};

extern const struct evmux__udp_driver evmux__udp_ready, evmux__udp_native;

struct udp_recv_batch;

/* The handles' part of a loop (loop->kind_data), made by the first. */
struct udp_loop {
    struct evmux__link deferred; /* handles with work owed, in order */
    struct evmux__link running;  /* ...taken by the pass that runs now */
    struct evmux__dgram_pool pool;
    uint64_t next_seq; /* of the next datagram sent */
    /* The readiness driver's receive batch, set up by its first receive:
     * UDP_BATCH buffers of EVMUX__DATAGRAM_MAX bytes (address space; a
     * small datagram touches one page). */
    char *recv_area;
    struct udp_recv_batch *recv_batch;
};

static inline struct udp_loop *udp_loop(const evmux_udp *u)
{
    return u->handle.loop->kind_data[EVMUX_HANDLE_UDP];
}

static inline struct evmux__dgram_pool *udp_pool(const evmux_udp *u)
{
    return &udp_loop(u)->pool;
}

/* udp.c: the shared part */
void evmux__udp_defer(evmux_udp *u);
/* One datagram arrived: to the callback, or stashed while not receiving
 * (or behind older stashed ones). */
void evmux__udp_deliver(evmux_udp *u, const struct evmux__datagram *d);
/* The socket reported an error while receiving. */
void evmux__udp_recv_error(evmux_udp *u, int err);
/* A pass: what was kept goes to the callback, if receiving. */
void evmux__udp_deliver_stash(evmux_udp *u);
void evmux__udp_free_stash(evmux_udp *u);
/* A queued datagram is done: sent (0) or failed; it leaves its list, its
 * callback is owed, the record is freed. */
void evmux__udp_finish(evmux_udp *u, struct evmux__dgram *d, int status);
/* A queued datagram's message, for sendmsg. */
void evmux__udp_message(struct evmux__dgram *d, struct msghdr *msg);
/* Sends the queue with sendmmsg until the kernel stops taking it; the
 * callbacks are owed. */
void evmux__udp_send_queue_now(evmux_udp *u);

/* udp_socket.c */
/* Makes a socket of the family if the handle has none. */
int evmux__udp_ensure_socket(evmux_udp *u, int family);
/* Lets the descriptor go (driver first). */
void evmux__udp_detach(evmux_udp *u);

#endif
