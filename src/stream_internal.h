/* What the stream files share (stream.c, stream_ready.c, stream_native.c):
 * a stream's state word, and the functions one file calls in another.
 * stream.c holds the API and what both drivers share: the write queue and
 * its requests, watermarks, shutdown, connecting and closing. A stream
 * whose descriptor is not a socket, or whose loop waits for readiness,
 * takes the readiness driver (stream_ready.c); a socket on a completion
 * backend (io_uring) takes the completion driver (stream_native.c),
 * chosen when the descriptor is attached (ST_NATIVE). */
#ifndef EVMUX_STREAM_INTERNAL_H
#define EVMUX_STREAM_INTERNAL_H

#include "chunk.h"

#define READ_BUF_BYTES (64 * 1024)
#define SEND_IOV_MAX 64
#define READS_PER_EVENT 4

enum stream_state {
    ST_OPEN = 1u << 0,         /* has a connected socket */
    ST_CONNECTING = 1u << 1,
    ST_READING = 1u << 2,
    ST_EOF = 1u << 3,          /* the peer finished sending */
    ST_SHUT_WANTED = 1u << 4,  /* shutdown after the queue drains */
    ST_SHUT_DONE = 1u << 5,
    ST_SHUT_REPORT = 1u << 6,  /* shutdown callback owed */
    ST_OVER_HIGH = 1u << 7,
    ST_DEFERRED = 1u << 8,     /* on the loop's deferred list */
    ST_CONNECT_FAILED = 1u << 9, /* connect failed at once; reported deferred */
    /* completion-based backends */
    ST_NATIVE = 1u << 10,        /* I/O through stream_ops; on loop->native_streams */
    ST_RECV_ARMED = 1u << 11,    /* a recv is in the kernel */
    ST_RECV_CANCELLED = 1u << 12, /* ...and we asked it to end */
    ST_SEND_BUSY = 1u << 13,     /* a send of the head chunk is in the kernel */
    ST_SEND_DISCARD = 1u << 14,  /* ...of chunks already dropped from the queue */
    ST_PARKED = 1u << 15,        /* closed; close callback waits for the kernel */
    ST_SEND_FULL = 1u << 16,     /* the last send found no room: wait for some first */
    ST_SEND_WANTED = 1u << 17,   /* bytes queued for a send made before the next wait */
    ST_NOT_SOCKET = 1u << 18,    /* a pipe, terminal or file: read() and write() */
    ST_MADE_NONBLOCK = 1u << 19, /* ...that we made non-blocking: undone at close */
    /* The queue came through fork() unsent: the other process sends it
     * too, so a close here does not offer it (a readiness backend had
     * sent what the kernel took inside the write, before the fork). */
    ST_QUEUE_INHERITED = 1u << 20
};

#define ST_KERNEL_BUSY (ST_RECV_ARMED | ST_SEND_BUSY)

static inline const struct evmux_stream_ops *native_ops(const evmux_stream *s)
{
    return s->handle.loop->backend->stream_ops;
}

/* stream.c: the shared part */
void evmux__st_defer(evmux_stream *s);
void evmux__st_fail_writes(evmux_stream *s, int err);
void evmux__st_consume_queue(evmux_stream *s, size_t n);
size_t evmux__st_queue_iov(const evmux_stream *s, struct iovec *iov, size_t max, size_t *total);
void evmux__st_after_send(evmux_stream *s);
int evmux__st_update_interest(evmux_stream *s);
void evmux__st_connect_settled(evmux_stream *s);
void evmux__st_free_queue_chunks(evmux_stream *s);

/* stream_ready.c: the readiness driver */
ssize_t evmux__st_send_iov(const evmux_stream *s, struct iovec *iov, size_t n);
/* Sends the queue until the kernel stops taking it; runs no callback.
 * 0, or the error of the send (the bytes sent before it are consumed). */
int evmux__st_send_queued(evmux_stream *s);
void evmux__st_flush_queue(evmux_stream *s);
void evmux__st_on_stream_io(evmux_io *io, unsigned events);
void evmux__st_reopen_terminal(int fd);

/* stream_native.c: the completion driver */
int evmux__st_native_sync(evmux_stream *s);
int evmux__st_native_submit_send(evmux_stream *s);
int evmux__st_native_send_now(evmux_stream *s);
void evmux__st_cancel_recv(evmux_stream *s);
void evmux__st_set_native_active(evmux_stream *s, bool active);
void evmux__st_deliver_stash(evmux_stream *s);
void evmux__st_end_reading_with(evmux_stream *s, int err);
void evmux__st_native_list_remove(evmux_stream *s);
bool evmux__st_stream_close_wait(evmux_handle *h);
int evmux__st_streams_after_fork(evmux_loop *loop);

#endif
