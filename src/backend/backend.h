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
struct evmux_stream;

/* Receive buffers a completion backend provides to the kernel, and write
 * chunks the loop keeps for reuse: as many of one as of the other, since
 * on io_uring every write waits in chunks for the loop's next submission. */
#define EVMUX__IO_BUFFERS 256
/* At most this many buffers (chunks) per send request. */
#define EVMUX__SEND_IOV_MAX 8

/* Stream I/O for a completion-based backend, which submits recv and send
 * to the kernel itself instead of reporting readiness. The backend calls
 * the evmux__stream_*_done() functions of stream.c with each result, from
 * run_completions(), never from inside the submitting call. */
struct evmux_stream_ops {
    /* Starts receiving into buffers the backend owns, until cancelled, the
     * stream ends, or the backend stops on its own (no free buffer). */
    int (*recv)(struct evmux_loop *loop, struct evmux_stream *s, int fd);
    /* Sends the bytes of iov[0..n), which stay put until the send is done
     * (the iovec array itself need not); once the socket has room if
     * when_writable (the previous send ended with -EAGAIN). */
    int (*send)(struct evmux_loop *loop, struct evmux_stream *s, int fd, const struct iovec *iov,
                int n, bool when_writable);
    /* Asks the kernel to end the stream's recv, or its send. Their own
     * completions still follow (with -ECANCELED if cancelled in time). */
    void (*cancel_recv)(struct evmux_loop *loop, struct evmux_stream *s);
    void (*cancel_send)(struct evmux_loop *loop, struct evmux_stream *s);
    /* Runs the stream callbacks for the completions wait() collected. */
    void (*run_completions)(struct evmux_loop *loop);
    /* Hands the kernel what is prepared, now, without waiting: before a
     * socket is closed under a request the kernel has not seen (it looks
     * the descriptor up when it takes the request, and the number may be
     * reused by then), and before evmux_run returns. */
    void (*flush)(struct evmux_loop *loop);
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
    /* NULL for a readiness backend: streams use read() and write(). */
    const struct evmux_stream_ops *stream_ops;
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
