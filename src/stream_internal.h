/* What the stream files share (stream.c, stream_ready.c, stream_native.c):
 * a stream's state word, its driver's table, the streams' per-loop part,
 * and the functions one file calls in another.
 *
 * stream.c holds the API and what both drivers share: the write queue and
 * its requests, watermarks, shutdown, reading, the loop's passes and
 * closing; stream_socket.c the descriptor: attaching, connecting, letting
 * it go, socket options. The driver is chosen when a descriptor is
 * attached: a socket on a completion
 * backend (io_uring) takes the completion driver (stream_native.c), which
 * works through requests to the kernel (op.h); anything else takes the
 * readiness driver (stream_ready.c), which works through an io watcher.
 * Each keeps its own state in s->driver_state, a union: a stream holds
 * one driver's parts only. */
#ifndef EVMUX_STREAM_INTERNAL_H
#define EVMUX_STREAM_INTERNAL_H

#include "chunk.h"

#define READ_BUF_BYTES (64 * 1024)
#define SEND_IOV_MAX 64
#define READS_PER_EVENT 4

enum stream_state {
    ST_OPEN = 1u << 0, /* has a connected descriptor */
    ST_CONNECTING = 1u << 1,
    ST_READING = 1u << 2,
    ST_EOF = 1u << 3,         /* the peer finished sending */
    ST_SHUT_WANTED = 1u << 4, /* shutdown after the queue drains */
    ST_SHUT_DONE = 1u << 5,
    ST_SHUT_REPORT = 1u << 6, /* shutdown callback owed */
    ST_OVER_HIGH = 1u << 7,
    ST_CONNECT_FAILED = 1u << 8, /* connect failed at once; reported deferred */
    ST_NOT_SOCKET = 1u << 9,     /* a pipe, terminal or file: read() and write() */
    ST_MADE_NONBLOCK = 1u << 10, /* ...that we made non-blocking: undone at close */
    /* A send request holds the queue's head chunks (in the kernel, or in
     * the loop's queue for room): they are neither reused nor sent again
     * until it is done. */
    ST_SEND_BUSY = 1u << 11,
    ST_SEND_DISCARD = 1u << 12, /* ...of chunks already dropped from the queue */
    /* completion driver only */
    ST_SEND_FULL = 1u << 13,   /* the last send found no room: wait for some first */
    ST_SEND_WANTED = 1u << 14, /* bytes queued for a send made before the next wait */
    /* The queue came through fork() unsent: the other process sends it
     * too, so a close here does not offer it (a readiness backend had
     * sent what the kernel took inside the write, before the fork). */
    ST_QUEUE_INHERITED = 1u << 15,
    /* An evmux_connect_host holds s->connect_req while the stream has no
     * descriptor: resolving, between two attempts, or cancelled with its
     * report owed (ST_CONNECT_FAILED). Writes and a shutdown wait as
     * while connecting; another connect, open or accept is refused. */
    ST_CONNECT_HOST = 1u << 16
};

/* States in which writes and a shutdown are taken: connected, or on the
 * way to a connection. */
#define ST_CONNECTED_OR_ON_THE_WAY (ST_OPEN | ST_CONNECTING | ST_CONNECT_HOST)

/* What a driver does; the shared part calls these, never tests which
 * driver it has. NULL entries do nothing. */
struct evmux__stream_driver {
    /* The stream has its descriptor (s->fd): set the driver's part up and
     * make s->driver this table. 0 or a negative errno value. */
    int (*attach)(evmux_stream *s);
    /* The kernel's work follows the stream's state: what is waited for,
     * read and sent. 0 or a negative errno value. */
    int (*sync)(evmux_stream *s);
    /* evmux_stream_write with nothing queued: sends what the kernel takes
     * at once. Returns the bytes sent, or a negative errno value (the peer
     * is gone). */
    ssize_t (*write_now)(evmux_stream *s, const evmux_buf bufs[], size_t nbufs);
    /* The queue went past the high watermark: offer it to the kernel now.
     * 0, or the error that refuses every write. */
    int (*offer)(evmux_stream *s);
    /* The connect succeeded with bytes queued. */
    void (*connected)(evmux_stream *s);
    /* In each of the loop's passes, for a deferred stream (after the
     * shared reports). */
    void (*deferred)(evmux_stream *s, enum evmux__pass pass);
    /* The stream lets its descriptor go; true if the driver closes it
     * itself, later (requests still name it), else the caller closes it. */
    bool (*detach)(evmux_stream *s);
    /* Queued bytes were dropped while ST_SEND_BUSY. */
    void (*discard)(evmux_stream *s);
    /* evmux_close: true while the kernel holds requests of the stream. */
    bool (*close_wait)(evmux_stream *s);
    void (*close_finish)(evmux_stream *s);
    void (*set_ref)(evmux_stream *s, bool ref);
    bool (*is_active)(const evmux_stream *s);
    /* The driver's part of the union may be set up anew (on attach). */
    bool (*idle)(const evmux_stream *s);
    /* In a forked child, for a stream with reports owed. */
    void (*after_fork)(evmux_stream *s);
};

extern const struct evmux__stream_driver evmux__stream_ready, evmux__stream_native;

/* The streams' part of a loop (loop->kind_data), made by the first stream. */
struct stream_loop {
    struct evmux__link deferred; /* streams with reports owed, in order */
    struct evmux__link running;  /* ...taken by the pass that runs now */
    /* The stream whose callbacks run now, from a pass or a send's result:
     * on neither list, and a fork may come from its callback. */
    evmux_stream *current;
    struct evmux__chunk_pool chunks;
    char *read_buf; /* lent to the readiness driver's read callbacks */
};

static inline struct stream_loop *st_loop(const evmux_stream *s)
{
    return s->handle.loop->kind_data[EVMUX_HANDLE_STREAM];
}

static inline struct evmux__chunk_pool *st_chunks(const evmux_stream *s)
{
    return &st_loop(s)->chunks;
}

/* stream.c: the shared part */
void evmux__st_defer(evmux_stream *s);
void evmux__st_fail_writes(evmux_stream *s, int err);
void evmux__st_consume_queue(evmux_stream *s, size_t n);
size_t evmux__st_queue_iov(const evmux_stream *s, struct iovec *iov, size_t max, size_t *total);
void evmux__st_after_send(evmux_stream *s);
int evmux__st_update_interest(evmux_stream *s);
void evmux__st_free_queue_chunks(evmux_stream *s);
/* The queue is empty: half-close now (the report is owed). */
void evmux__st_finish_shutdown(evmux_stream *s);

/* stream_socket.c: the descriptor */
/* Gives an initialised stream its connected, non-blocking socket (accept). */
int evmux__stream_attach(evmux_stream *s, int fd);
/* The connect's outcome is known (the socket became writable). */
void evmux__st_connect_settled(evmux_stream *s);
/* Reports the connect, once; a failure lets the descriptor go. */
void evmux__st_report_connect(evmux_stream *s, int status);
/* After a connect's callback reported status: unless it succeeded or the
 * callback connects again (or closed the stream), the writes and the
 * shutdown asked for meanwhile fail with status. */
void evmux__st_connect_given_up(evmux_stream *s, int status);
/* Ends the connect under way (or the wait of a connect_host without a
 * descriptor) now; its report of err is owed from the loop. */
void evmux__st_connect_abort(evmux_stream *s, int err);
/* Lets the descriptor go: the driver first, then close(). */
void evmux__st_detach(evmux_stream *s);

/* stream_ready.c */
/* Sends the queue with sendmsg (write for a pipe) until the kernel stops
 * taking it; runs no callback. 0, or the error of the send (the bytes sent
 * before it are consumed). The completion driver's immediate sends too. */
int evmux__st_send_queued(evmux_stream *s);
void evmux__st_reopen_terminal(int fd);

#endif
