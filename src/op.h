/* Requests to the kernel: one asynchronous operation on a descriptor (a
 * multishot recv or recvmsg, a send or sendmsg, a wait for writability, a
 * multishot accept), made by a handle, run
 * by a completion backend (io_uring), reported back through the request's
 * class. The backend sees requests only: never a stream, a listener or any
 * handle. The owner embeds the request and keeps it (and its descriptor)
 * alive until the request is idle again.
 *
 * States, and who owns the request in each:
 *
 *     IDLE --submit, ring has room--------------> KERNEL --last result--> IDLE
 *     IDLE --submit, ring full--> QUEUED --room--> KERNEL
 *          (or others queued)     QUEUED --cancel--> ENDING --next run--> IDLE
 *                                 QUEUED --withdraw--> IDLE (no result)
 *     KERNEL --cancel--> KERNEL (cancel sent, or owed until there is room;
 *                                the kernel's last result follows)
 *
 *  IDLE:   the owner's; no result will come.
 *  QUEUED: the loop's: the submission queue had no room (or others were
 *          queued already); submitted, in order, before the next wait.
 *  KERNEL: the kernel's (prepared in the ring or taken): results come
 *          from the backend's run of completions, the last with more false.
 *  ENDING: cancelled before the kernel saw it; its result (-ECANCELED)
 *          comes from the next run of completions, never from inside the
 *          cancel.
 *
 * A cancel is never dropped: without a free slot it is owed, and sent
 * before the next wait. After fork() the child's loop queues every request
 * that was in the kernel again (the parent's ring keeps the old ones),
 * except those being cancelled, which end with -ECANCELED.
 *
 * A request names its descriptor by number, and the kernel looks the
 * number up only when it takes the entry, which may be after the next
 * wait if the ring refuses. So the owner keeps the descriptor open until
 * its requests are idle (a stream closes it then), and no new file can
 * take the number meanwhile. Results that belong to a descriptor the
 * owner has let go are marked by the orphan flag. */
/* Each submit bumps the request's generation, which the backend carries
 * with the request (io_uring: the top byte of user_data). A cancel so
 * names one submission, never a later one of the same request, and a
 * result names the submission it belongs to (asserted). */
#ifndef EVMUX_OP_H
#define EVMUX_OP_H

#include "list.h"

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/uio.h>

struct evmux_loop;

enum evmux__op_type {
    EVMUX__OP_RECV = 1,     /* multishot, into buffers the backend provides */
    EVMUX__OP_SEND = 2,     /* the iovecs the class's fill gives */
    EVMUX__OP_WRITABLE = 3, /* one wait until the descriptor is writable */
    EVMUX__OP_ACCEPT = 4,   /* multishot: a result per connection (non-blocking) */
    EVMUX__OP_RECVMSG = 5,  /* multishot: a datagram per result, in a provided buffer */
    EVMUX__OP_SENDMSG = 6,  /* one datagram: the message the class's message gives */
};

/* The largest datagram a receive buffer holds whole: any UDP datagram
 * (65,507 bytes over IPv4, 65,527 over IPv6), and a UDP_GRO train. */
#define EVMUX__DATAGRAM_MAX 65536
/* Control messages received with a datagram: UDP_GRO's segment size, with
 * room for a few more an adopted socket may have asked for (IP_PKTINFO,
 * timestamps), so that the one we need is never cut off. */
#define EVMUX__DATAGRAM_CONTROL 128

/* What a recvmsg result's buf points to: one datagram, lent for the call. */
struct evmux__datagram {
    char *data;
    size_t len;                 /* bytes in data */
    const struct sockaddr *from;
    socklen_t from_len;         /* 0: the sender has no address */
    bool truncated;             /* longer than the buffer: the rest is gone */
    unsigned segment_size;      /* UDP_GRO: data holds datagrams of this size */
};

enum evmux__op_state { EVMUX__OP_IDLE, EVMUX__OP_QUEUED, EVMUX__OP_KERNEL, EVMUX__OP_ENDING };

enum evmux__op_flag {
    /* send: only once the socket has room (the last send found none) */
    EVMUX__OP_WHEN_WRITABLE = 1u << 0,
    EVMUX__OP_CANCEL = 1u << 1,      /* asked to end; kept until the next submit */
    EVMUX__OP_CANCEL_SENT = 1u << 2, /* ...and the kernel has the cancel */
    /* Its owner let its descriptor go (evmux__op_release): what it still
     * reports belongs to no one. Kept until the next submit. */
    EVMUX__OP_ORPHAN = 1u << 3,
    /* Queued again by a forked child: the parent's ring runs the original. */
    EVMUX__OP_INHERITED = 1u << 4,
};

struct evmux__op_class {
    /* One result: res bytes or a negative errno value; buf holds received
     * bytes (recv), lent for the call. more: further results follow.
     * Otherwise the request is idle again when this runs, and its owner
     * may submit it again or let it go. */
    void (*done)(struct evmux__op *op, int res, void *buf, bool more);
    /* recvmsg: buf is a struct evmux__datagram (res: its len), or NULL
     * with an error. */
    /* send: describes the bytes to send in iov[0..max), returns how many
     * entries (at least 1). Asked when the request is prepared, which can
     * be later than the submit (a full ring); the bytes stay put until the
     * last result. */
    int (*fill)(struct evmux__op *op, struct iovec *iov, int max);
    /* sendmsg: sets msg's name and iovecs, which stay put until the last
     * result; the rest of msg is zero. */
    void (*message)(struct evmux__op *op, struct msghdr *msg);
};

/* The loop's part (struct evmux_loop.ops). */
struct evmux__ops {
    struct evmux__link kernel; /* KERNEL: the kernel has them or will */
    struct evmux__link queued; /* QUEUED, in submission order */
    struct evmux__link ending; /* ENDING, in order */
    size_t cancels_owed;       /* KERNEL with CANCEL but not CANCEL_SENT */
};

static inline void evmux__op_init(struct evmux__op *op, const struct evmux__op_class *cls)
{
    *op = (struct evmux__op){.cls = cls, .fd = -1};
}

static inline bool evmux__op_busy(const struct evmux__op *op)
{
    return op->state != EVMUX__OP_IDLE;
}

static inline bool evmux__op_cancelling(const struct evmux__op *op)
{
    return (op->flags & EVMUX__OP_CANCEL) != 0;
}

static inline bool evmux__op_orphaned(const struct evmux__op *op)
{
    return (op->flags & EVMUX__OP_ORPHAN) != 0;
}

void evmux__ops_init(struct evmux_loop *loop);
/* Starts an idle request; never fails (without room it is queued):
 * evmux__op_submit(), inline in evmux_internal.h (once per send). */
/* Its slow path: queues a request the ring has no room for. */
void evmux__op_queue(struct evmux_loop *loop, struct evmux__op *op);
/* Asks a busy request to end; its results still come (the last with
 * -ECANCELED if the cancel was in time). Nothing for an idle one. */
void evmux__op_cancel(struct evmux_loop *loop, struct evmux__op *op);
/* Takes a QUEUED request back, idle, with no result; false otherwise. */
bool evmux__op_withdraw(struct evmux__op *op);
/* Its owner lets the descriptor go: the request is cancelled and, while
 * busy, orphaned. The owner closes the descriptor once it is idle. */
void evmux__op_release(struct evmux_loop *loop, struct evmux__op *op);

/* The backend's report of one result of a request in the kernel:
 * evmux__op_result(), inline in evmux_internal.h (once per result). */

/* The loop's part. Before the wait: submits what is queued and sends owed
 * cancels; true if something is still owed (evmux__ops_owed), so the wait
 * must not block. */
bool evmux__ops_prepare(struct evmux_loop *loop);
/* After the wait: the backend's results, then the ENDING requests. */
void evmux__ops_run_completions(struct evmux_loop *loop);
/* Before evmux_run returns: the kernel gets what is prepared. */
void evmux__ops_flush(struct evmux_loop *loop);
/* In a forked child, once the backend has a ring of its own. */
void evmux__ops_after_fork(struct evmux_loop *loop);
/* true if some request is not idle (evmux_loop_free refuses then). */
bool evmux__ops_busy(const struct evmux_loop *loop);

#endif
