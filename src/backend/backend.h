/* The contract every kernel interface implements.
 *
 * The core keeps, per descriptor, the interest the backend currently holds
 * (struct evmux_fd_slot.kernel_events) and calls into the backend only when
 * that interest really changes. A backend's wait only collects: for each
 * descriptor with events it calls evmux__io_ready(), which queues the
 * watcher; the core runs callbacks after wait returns (two-phase dispatch),
 * so a backend never sees a callback re-enter it in the middle of a batch. */
#ifndef EVMUX_BACKEND_H
#define EVMUX_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct evmux_loop;
struct evmux__op;

/* Receive buffers a completion backend provides to the kernel, and write
 * chunks the loop keeps for reuse: as many of one as of the other, since
 * on io_uring every write waits in chunks for the loop's next submission. */
#define EVMUX__IO_BUFFERS 256
/* At most this many buffers (chunks) per send request. */
#define EVMUX__SEND_IOV_MAX 8

/* Requests for a completion-based backend, which runs operations in the
 * kernel itself instead of reporting readiness (src/op.h). The backend
 * knows requests only; it reports each result with evmux__op_result(), from
 * run_completions(), never from inside the call that submitted. */
struct evmux_completion_ops {
    /* Prepares the request for the kernel's next look at the ring; -EBUSY
     * if the ring has no room even after handing it to the kernel (the core
     * queues the request and asks again before the next wait). */
    int (*submit)(struct evmux_loop *loop, struct evmux__op *op);
    /* Asks the kernel to end the request; -EBUSY as above. */
    int (*cancel)(struct evmux_loop *loop, struct evmux__op *op);
    /* Reports the results wait() collected. */
    void (*run_completions)(struct evmux_loop *loop);
    /* Hands the kernel what is prepared, now, without waiting. */
    void (*flush)(struct evmux_loop *loop);
    /* Sets up the buffers of recvmsg requests, once, before the first:
     * 0 or a negative errno value (-ENOMEM). */
    int (*datagram_buffers)(struct evmux_loop *loop);
};

struct evmux_backend {
    const char *name;
    /* The highest descriptor number it can watch. */
    int highest_fd;
    /* Sets loop->backend_state. Returns 0 or a negative errno value. */
    int (*init)(struct evmux_loop *loop);
    void (*destroy)(struct evmux_loop *loop);
    /* Interest for fd goes from old_events (0: not registered) to
     * new_events (never 0). */
    int (*change)(struct evmux_loop *loop, int fd, unsigned old_events, unsigned new_events);
    /* The fd leaves the interest set. May be called after the caller
     * closed fd. */
    void (*forget)(struct evmux_loop *loop, int fd);
    /* Waits up to timeout_ns (UINT64_MAX: forever, 0: poll) and reports
     * ready descriptors through evmux__io_ready(). Returns how many events
     * or results it collected (0: the time ran out, or a signal came), or a
     * negative errno value; EINTR is not an error. */
    int (*wait)(struct evmux_loop *loop, uint64_t timeout_ns);
    /* Rebuilds kernel state in a forked child; NULL if there is none. */
    int (*after_fork)(struct evmux_loop *loop);
    /* NULL for a readiness backend: handles use read() and write(). */
    const struct evmux_completion_ops *completion;
    /* Tests only; NULL where there is no ring: the ring refuses the next n
     * new entries, as the kernel does while it holds overflowed results.
     * Returns how many refusals were left. */
    unsigned (*test_refuse)(struct evmux_loop *loop, unsigned n);
};

extern const struct evmux_backend evmux__backend_select;
#ifdef EVMUX_HAVE_POLL
extern const struct evmux_backend evmux__backend_poll;
#endif
#ifdef EVMUX_HAVE_EPOLL
extern const struct evmux_backend evmux__backend_epoll;
#endif
#ifdef EVMUX_HAVE_URING
extern const struct evmux_backend evmux__backend_uring;
#endif

/* Timeout conversions shared by the backends: never shorter than asked,
 * so a timer is never reported due before its deadline. */
static inline int evmux__timeout_ms_ceil(uint64_t timeout_ns)
{
    if (timeout_ns == UINT64_MAX)
        return -1;
    uint64_t ms = timeout_ns / 1000000u + (timeout_ns % 1000000u != 0);
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

#endif
