/* Streams whose I/O is still in the kernel: what io_uring makes hard, asked
 * of every backend.
 *  - Stopping in a read callback while more bytes are already on their way
 *    (on io_uring: received into the loop's buffers before the cancel
 *    lands): nothing is delivered while stopped, and after read_start every
 *    byte arrives exactly once, in order.
 *  - Closing a stream with a receive and a blocked send in the kernel: the
 *    close callback runs once, after which the stream's memory is freed;
 *    ASan catches any later touch.
 *  - Forking: the child's evmux_loop_fork gives it a working loop (watchers,
 *    streams, timers), and the parent's loop keeps working too. */
#include "stream_util.h"

#include <stdlib.h>
#include <sys/wait.h>

enum { BIG = 300 * 1000 };

struct reader {
    size_t got;
    unsigned char *data;
    int calls;
    int calls_while_stopped;
    int stopped;
    int eof;
};

static void stop_first_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    struct reader *r = s->handle.data;
    if (n < 0) {
        r->eof = n == EVMUX_EOF;
        return;
    }
    if (r->stopped)
        r->calls_while_stopped++;
    CHECK(r->got + (size_t)n <= BIG);
    memcpy(r->data + r->got, buf, (size_t)n);
    r->got += (size_t)n;
    r->calls++;
    if (r->calls == 1) {
        CHECK_OK(evmux_stream_read_stop(s));
        r->stopped = 1;
    }
}

static void test_stop_with_bytes_in_flight(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    int big = 1 << 20;
    CHECK(setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big) == 0);
    unsigned char *sent = su_random_bytes(BIG, 7);
    struct reader r;
    memset(&r, 0, sizeof r);
    r.data = malloc(BIG);
    CHECK(r.data != NULL);

    evmux_stream s;
    s.handle.data = &r;
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_OK(evmux_stream_open(&s, sv[0]));
    CHECK_OK(evmux_stream_read_start(&s, stop_first_read_cb));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT)); /* io_uring: the recv is in the kernel */

    /* Much more than one receive buffer arrives at once. */
    size_t off = 0;
    while (off < BIG) {
        ssize_t w = write(sv[1], sent + off, BIG - off);
        if (w < 0) {
            CHECK(errno == EAGAIN);
            break;
        }
        off += (size_t)w;
    }
    su_run_until(loop, &r.calls, 1, 3000);
    su_run_for(loop, 30);
    CHECK_EQ(r.calls, 1);
    CHECK_EQ(r.calls_while_stopped, 0);
    CHECK(r.got < off);

    /* Restarted: the rest, in order, then EOF once the writer is done. */
    r.stopped = 0;
    CHECK_OK(evmux_stream_read_start(&s, stop_first_read_cb));
    CHECK_EQ(r.calls, 1); /* never inside read_start */
    while (off < BIG) {
        su_run_for(loop, 2);
        ssize_t w = write(sv[1], sent + off, BIG - off);
        if (w > 0)
            off += (size_t)w;
    }
    CHECK(shutdown(sv[1], SHUT_WR) == 0);
    su_run_until(loop, &r.eof, 1, 5000);
    CHECK_EQ(r.got, (size_t)BIG);
    CHECK(memcmp(r.data, sent, BIG) == 0);

    CHECK_OK(evmux_close(&s.handle, NULL));
    unit_loop_finish(loop);
    close(sv[1]);
    free(sent);
    free(r.data);
}

static int closes;

static void count_close_cb(evmux_handle *h)
{
    closes++;
    memset(h, 0xEE, sizeof(evmux_stream)); /* poison, then free: a late touch shows */
    free(h);
}

static int write_status = 1;

static void record_write_cb(evmux_write_req *req, int status)
{
    (void)req;
    write_status = status;
}

static void ignore_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    (void)s;
    (void)n;
    (void)buf;
}

static void close_stream_timer_cb(evmux_timer *t)
{
    CHECK_OK(evmux_close(t->handle.data, count_close_cb));
}

static void test_close_with_requests_in_kernel(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    evmux_stream *s = calloc(1, sizeof *s);
    CHECK(s != NULL);
    CHECK_OK(evmux_stream_init(loop, s));
    CHECK_OK(evmux_stream_open(s, sv[0]));
    CHECK_OK(evmux_stream_read_start(s, ignore_read_cb));
    static char piece[64 << 10];
    su_fill_socket(loop, s, piece, sizeof piece); /* a send now waits for room */
    evmux_write_req req;
    CHECK_OK(evmux_stream_write(&req, s, &(evmux_buf){ piece, sizeof piece }, 1, record_write_cb));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));

    /* Closed from a callback: the close callback would be due in this very
     * iteration, before the kernel has even heard of the cancel. */
    closes = 0;
    evmux_timer t;
    CHECK_OK(evmux_timer_init(loop, &t, close_stream_timer_cb));
    t.handle.data = s;
    CHECK_OK(evmux_timer_start(&t, 1, 0));
    su_run_for(loop, 30); /* whatever the kernel still reports comes in */
    CHECK_OK(evmux_close(&t.handle, NULL));
    CHECK_EQ(closes, 1);
    unit_loop_finish(loop);
    CHECK_EQ(closes, 1);
    CHECK_EQ(write_status, -ECANCELED);
    /* The socket is really gone: the peer sees the end after the bytes. */
    unit_drain(sv[1]);
    CHECK_EQ(su_peek_state(sv[1]), 0);
    close(sv[1]);
}

/* ---- fork ---- */

struct echo_once {
    evmux_stream s;
    evmux_write_req req;
    char reply[16];
    int done;
};

static void upper_once_read_cb(evmux_stream *s, ssize_t n, char *buf)
{
    struct echo_once *e = s->handle.data;
    if (n <= 0)
        return;
    CHECK(n <= (ssize_t)sizeof e->reply);
    for (ssize_t i = 0; i < n; i++)
        e->reply[i] = (char)(buf[i] >= 'a' && buf[i] <= 'z' ? buf[i] - 32 : buf[i]);
    CHECK_OK(evmux_stream_write(&e->req, s, &(evmux_buf){ e->reply, (size_t)n }, 1, NULL));
    e->done = 1;
}

static int io_calls;

static void count_io_cb(evmux_io *io, unsigned events)
{
    (void)events;
    unit_drain(evmux_io_fd(io));
    io_calls++;
}

static void test_fork(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2], pv[2];
    unit_socketpair(sv);
    unit_socketpair(pv);
    struct echo_once e;
    memset(&e, 0, sizeof e);
    e.s.handle.data = &e;
    CHECK_OK(evmux_stream_init(loop, &e.s));
    CHECK_OK(evmux_stream_open(&e.s, sv[0]));
    evmux_io io;
    CHECK_OK(evmux_io_init(loop, &io, pv[0], count_io_cb));
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    /* Kernel state exists before the fork (an armed poll, a ring). */
    unit_write_byte(pv[1]);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(io_calls, 1);

    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* The child takes over the stream; the parent leaves it alone. */
        CHECK_OK(evmux_loop_fork(loop));
        CHECK_OK(evmux_io_stop(&io));
        CHECK_OK(evmux_stream_read_start(&e.s, upper_once_read_cb));
        su_run_until(loop, &e.done, 1, 3000);
        su_run_for(loop, 20); /* the reply goes out */
        CHECK_OK(evmux_close(&e.s.handle, NULL));
        CHECK_OK(evmux_close(&io.handle, NULL));
        unit_loop_finish(loop);
        _exit(0);
    }
    CHECK(write(sv[1], "ping", 4) == 4);
    CHECK(su_wait_readable(sv[1], 5000));
    char got[8];
    CHECK_EQ(read(sv[1], got, sizeof got), 4);
    CHECK(memcmp(got, "PING", 4) == 0);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* The parent's loop still works after the child's changes and exit. */
    unit_write_byte(pv[1]);
    su_run_until(loop, &io_calls, 2, 3000);
    CHECK_OK(evmux_close(&e.s.handle, NULL));
    CHECK_OK(evmux_close(&io.handle, NULL));
    unit_loop_finish(loop);
    close(sv[1]);
    close(pv[1]);
}

int main(void)
{
    unit_watchdog(60);
    RUN_TEST(test_stop_with_bytes_in_flight);
    RUN_TEST(test_close_with_requests_in_kernel);
    RUN_TEST(test_fork);
    return 0;
}
