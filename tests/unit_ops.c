/* The kernel request object (src/op.h) on io_uring: a full ring queues
 * requests in order and never fails them; a cancel is never dropped; a
 * request cancelled before the kernel saw it ends with -ECANCELED from the
 * loop, once; a stream's close waits for its requests even when the ring
 * refuses the cancel; a forked child submits every live request again;
 * an io watcher's poll, armed, changed or removed while the ring refuses,
 * is retried before the next wait, never failed or dropped.
 *
 * The kernel refuses new entries only while it holds overflowed results,
 * which a test cannot bring about on demand: a wrapper around the real
 * backend's request calls refuses instead, or (for polls) the backend's
 * own test hook (evmux__test_refuse_ring), for as long as a test says. Everything else is the real
 * ring. */
#include "stream_util.h"
#include "evmux_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- a ring that refuses on demand ---- */

static const struct evmux_completion_ops *real_ops;
static struct evmux_completion_ops refusing_ops;
static struct evmux_backend refusing_backend;
static int refuse_submits, refuse_cancels; /* refusals left */
static int submits_refused, cancels_refused;

static int refusing_submit(evmux_loop *loop, struct evmux__op *op)
{
    if (refuse_submits > 0) {
        refuse_submits--;
        submits_refused++;
        return -EBUSY;
    }
    return real_ops->submit(loop, op);
}

static int refusing_cancel(evmux_loop *loop, struct evmux__op *op)
{
    if (refuse_cancels > 0) {
        refuse_cancels--;
        cancels_refused++;
        return -EBUSY;
    }
    return real_ops->cancel(loop, op);
}

/* An io_uring loop with the refusing ring, or NULL (skipped) without
 * io_uring. */
static evmux_loop *refusing_loop(void)
{
    evmux_loop *loop = NULL;
    evmux_loop_options opts = { .backend = "uring" };
    int rc = evmux_loop_new(&loop, &opts);
    if (rc < 0)
        return NULL;
    real_ops = loop->backend->completion;
    CHECK(real_ops != NULL);
    refusing_ops = *real_ops;
    refusing_ops.submit = refusing_submit;
    refusing_ops.cancel = refusing_cancel;
    refusing_backend = *loop->backend;
    refusing_backend.completion = &refusing_ops;
    loop->backend = &refusing_backend;
    refuse_submits = refuse_cancels = submits_refused = cancels_refused = 0;
    return loop;
}

/* Declares `loop`, an io_uring loop with the refusing ring, or skips. */
#define USE_REFUSING_LOOP(loop)             \
    evmux_loop *loop = refusing_loop();     \
    if (loop == NULL)                       \
        UNIT_SKIP("no io_uring here")

/* Waits for a forked child; true if it exited with 0. */
static bool child_succeeded(pid_t pid)
{
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ---- requests of the test's own ---- */

struct test_op {
    struct evmux__op op;
    char byte;  /* what a send sends */
    int results, last_res, finals;
    int order;  /* when its final result came, counted from 1 */
    char got[64];
    int got_len;
};

static int finals_seen;

static void test_done(struct evmux__op *op, int res, void *buf, bool more)
{
    struct test_op *t = EVMUX__CONTAINER_OF(op, struct test_op, op);
    t->results++;
    t->last_res = res;
    if (buf != NULL && res > 0 && t->got_len + res <= (int)sizeof t->got) {
        memcpy(t->got + t->got_len, buf, (size_t)res);
        t->got_len += res;
    }
    if (!more) {
        CHECK_EQ(evmux__op_busy(op), 0); /* idle when its last result runs */
        t->finals++;
        t->order = ++finals_seen;
    }
}

static int test_fill(struct evmux__op *op, struct iovec *iov, int max)
{
    struct test_op *t = EVMUX__CONTAINER_OF(op, struct test_op, op);
    CHECK(max >= 1);
    iov[0].iov_base = &t->byte;
    iov[0].iov_len = 1;
    return 1;
}

static const struct evmux__op_class test_class = { .done = test_done, .fill = test_fill };

static void test_op_init(struct test_op *t)
{
    memset(t, 0, sizeof *t);
    evmux__op_init(&t->op, &test_class);
}

/* A referenced timer keeps the loop running while the test's requests,
 * which belong to no handle, are in flight. */
static void tick(evmux_timer *t)
{
    (void)t;
}

static void run_iterations(evmux_loop *loop, int n)
{
    evmux_timer keep;
    CHECK_OK(evmux_timer_init(loop, &keep, tick));
    CHECK_OK(evmux_timer_start(&keep, 1, 1));
    for (int i = 0; i < n; i++)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_OK(evmux_close(&keep.handle, NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
}

/* ---- the tests ---- */

/* Eight sends while the ring refuses: none fails, none runs a callback
 * inside the submit, and the peer gets their bytes in submission order,
 * although the ring had room again for the later ones (they queue behind
 * the first, never ahead of it). */
static void test_full_ring_queues_in_order(void)
{
    USE_REFUSING_LOOP(loop);
    int sv[2];
    unit_socketpair(sv);
    struct test_op ops[8];
    finals_seen = 0;
    refuse_submits = 3; /* the first send, and its first two retries */
    for (int i = 0; i < 8; i++) {
        test_op_init(&ops[i]);
        ops[i].byte = (char)('A' + i);
        evmux__op_submit(loop, &ops[i].op, EVMUX__OP_SEND, sv[0], 0);
        CHECK_EQ(ops[i].op.state, EVMUX__OP_QUEUED);
        CHECK_EQ(ops[i].results, 0);
    }
    CHECK_EQ(submits_refused, 1); /* the others never asked past the queue */
    run_iterations(loop, 20);
    CHECK_EQ(submits_refused, 3);
    char got[16] = {0};
    CHECK_EQ(read(sv[1], got, sizeof got), 8);
    CHECK(memcmp(got, "ABCDEFGH", 8) == 0);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ(ops[i].results, 1);
        CHECK_EQ(ops[i].last_res, 1);
        CHECK_EQ(ops[i].order, i + 1);
        CHECK_EQ(evmux__op_busy(&ops[i].op), 0);
    }
    CHECK_EQ(evmux__ops_busy(loop), 0);
    close(sv[0]);
    close(sv[1]);
    unit_loop_finish(loop);
}

/* A request cancelled while it waits for room never reaches the kernel:
 * it ends with -ECANCELED, once, from the loop, not inside the cancel. */
static void test_cancel_while_queued(void)
{
    USE_REFUSING_LOOP(loop);
    int sv[2];
    unit_socketpair(sv);
    struct test_op t;
    test_op_init(&t);
    t.byte = 'x';
    refuse_submits = 1;
    evmux__op_submit(loop, &t.op, EVMUX__OP_SEND, sv[0], 0);
    CHECK_EQ(t.op.state, EVMUX__OP_QUEUED);
    evmux__op_cancel(loop, &t.op);
    CHECK_EQ(t.op.state, EVMUX__OP_ENDING);
    CHECK_EQ(t.results, 0);
    evmux__op_cancel(loop, &t.op); /* twice: still one result */
    run_iterations(loop, 5);
    CHECK_EQ(t.results, 1);
    CHECK_EQ(t.finals, 1);
    CHECK_EQ(t.last_res, -ECANCELED);
    CHECK_EQ(unit_drain(sv[1]), 0); /* nothing was sent */
    /* Idle again: it can be submitted anew, and this time it is sent. */
    evmux__op_submit(loop, &t.op, EVMUX__OP_SEND, sv[0], 0);
    run_iterations(loop, 5);
    CHECK_EQ(t.finals, 2);
    CHECK_EQ(t.last_res, 1);
    CHECK_EQ(unit_drain(sv[1]), 1);
    close(sv[0]);
    close(sv[1]);
    unit_loop_finish(loop);
}

/* A cancel the ring refuses is owed, not dropped: the loop does not sleep
 * on it, sends it once there is room, and the recv ends with -ECANCELED. */
static void test_cancel_never_dropped(void)
{
    USE_REFUSING_LOOP(loop);
    int sv[2];
    unit_socketpair(sv);
    struct test_op t;
    test_op_init(&t);
    evmux__op_submit(loop, &t.op, EVMUX__OP_RECV, sv[0], 0);
    run_iterations(loop, 2);
    CHECK_EQ(t.op.state, EVMUX__OP_KERNEL);
    unit_write_byte(sv[1]);
    run_iterations(loop, 5);
    CHECK_EQ(t.got_len, 1); /* the recv works */
    refuse_cancels = 4;
    evmux__op_cancel(loop, &t.op);
    CHECK_EQ(cancels_refused, 1);
    CHECK_EQ(t.op.state, EVMUX__OP_KERNEL);
    CHECK_EQ(loop->ops.cancels_owed, 1);
    /* With only a 10 s timer to wait for, the loop would sleep that long:
     * the owed cancel keeps its waits short, and every retry goes out. */
    evmux_timer far;
    CHECK_OK(evmux_timer_init(loop, &far, tick));
    CHECK_OK(evmux_timer_start(&far, 10000, 0));
    uint64_t start = unit_mono_ns();
    for (int i = 0; i < 10 && t.finals == 0; i++)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK(unit_mono_ns() - start < 2000000000u);
    CHECK_OK(evmux_close(&far.handle, NULL));
    CHECK_EQ(cancels_refused, 4); /* each retry asked again */
    CHECK_EQ(t.finals, 1);
    CHECK_EQ(t.last_res, -ECANCELED);
    CHECK_EQ(loop->ops.cancels_owed, 0);
    close(sv[0]);
    close(sv[1]);
    unit_loop_finish(loop);
}

/* A reading stream closed while the ring refuses its cancel: the close
 * callback still runs, once, when the cancel gets through. (Before the
 * request object the cancel was dropped and the stream waited for its
 * peer to hang up.) */
static int stream_closes;

static void stream_closed(evmux_handle *h)
{
    (void)h;
    stream_closes++;
}

/* A stream on one end of a new socket pair; sv[1] is the test's end. */
static void stream_on_pair(evmux_loop *loop, evmux_stream *s, int sv[2])
{
    unit_socketpair(sv);
    CHECK_OK(evmux_stream_init(loop, s));
    CHECK_OK(evmux_stream_open(s, sv[0]));
}

static void ignore_read(evmux_stream *s, ssize_t n, char *buf)
{
    (void)s;
    (void)n;
    (void)buf;
}

static void test_stream_close_with_refused_cancel(void)
{
    USE_REFUSING_LOOP(loop);
    int sv[2];
    evmux_stream s;
    stream_on_pair(loop, &s, sv);
    CHECK_OK(evmux_stream_read_start(&s, ignore_read));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT)); /* the recv goes in */
    CHECK_EQ(s.driver_state.native.recv.state, EVMUX__OP_KERNEL);
    refuse_cancels = 3;
    stream_closes = 0;
    CHECK_OK(evmux_close(&s.handle, stream_closed));
    CHECK_EQ(cancels_refused, 1);
    uint64_t start = unit_mono_ns();
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* returns once the stream is closed */
    CHECK(unit_mono_ns() - start < 2000000000u);
    CHECK_EQ(cancels_refused, 3);
    CHECK_EQ(stream_closes, 1);
    /* The peer (which never hangs up) sees the end. */
    CHECK_EQ(su_wait_readable(sv[1], 1000), 1);
    char c;
    CHECK_EQ(read(sv[1], &c, 1), 0);
    close(sv[1]);
    unit_loop_finish(loop);
}

/* An echo then a close while the ring refuses: the reply's send request
 * waits in the loop's queue, and the close takes it back and offers the
 * bytes at once, as a readiness backend's write would have sent them.
 * (The close once cancelled the queued request: the peer got no reply.) */
static void test_close_sends_queued_bytes(void)
{
    USE_REFUSING_LOOP(loop);
    int sv[2];
    evmux_stream s;
    stream_on_pair(loop, &s, sv);
    refuse_submits = 1000;
    evmux_buf b = { "reply", 5 };
    CHECK_OK(evmux_stream_write(NULL, &s, &b, 1, NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT)); /* the send is made, and queued */
    CHECK_EQ(s.driver_state.native.send.state, EVMUX__OP_QUEUED);
    stream_closes = 0;
    CHECK_OK(evmux_close(&s.handle, stream_closed));
    refuse_submits = 0;
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(stream_closes, 1);
    char got[16] = {0};
    CHECK_EQ(su_wait_readable(sv[1], 1000), 1);
    CHECK_EQ(read(sv[1], got, sizeof got), 5);
    CHECK(memcmp(got, "reply", 5) == 0);
    CHECK_EQ(read(sv[1], got, sizeof got), 0);
    close(sv[1]);
    unit_loop_finish(loop);
}

/* While a closed stream's recv may still be in the kernel, its descriptor
 * stays open, so no new file can take its number (the kernel looks the
 * number up only when it takes the entry); it is closed when the recv has
 * ended, before the close callback. */
static void test_descriptor_kept_until_requests_end(void)
{
    USE_REFUSING_LOOP(loop);
    int sv[2];
    evmux_stream s;
    stream_on_pair(loop, &s, sv);
    CHECK_OK(evmux_stream_read_start(&s, ignore_read));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    refuse_cancels = 1000;
    stream_closes = 0;
    CHECK_OK(evmux_close(&s.handle, stream_closed));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(stream_closes, 0);     /* the recv is still in the kernel */
    CHECK_EQ(unit_fd_is_open(sv[0]), 1);
    int probe = dup(sv[1]);
    CHECK(probe >= 0 && probe != sv[0]); /* the number is not free */
    close(probe);
    refuse_cancels = 0;
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(stream_closes, 1);
    CHECK_EQ(unit_fd_is_open(sv[0]), 0);
    close(sv[1]);
    unit_loop_finish(loop);
}

/* fork() with a recv in the kernel, a send queued for room and a recv
 * being cancelled: the child's loop submits the first two again (the
 * parent's ring keeps the old ones) and ends the third with -ECANCELED.
 * The child reports through its exit status. */
static void test_fork_submits_again(void)
{
    USE_REFUSING_LOOP(loop);
    int in[2], out[2], gone[2];
    unit_socketpair(in);
    unit_socketpair(out);
    unit_socketpair(gone);
    struct test_op recv, send, cancelled;
    test_op_init(&recv);
    test_op_init(&send);
    test_op_init(&cancelled);
    send.byte = 'F';
    evmux__op_submit(loop, &recv.op, EVMUX__OP_RECV, in[0], 0);
    evmux__op_submit(loop, &cancelled.op, EVMUX__OP_RECV, gone[0], 0);
    run_iterations(loop, 2);
    refuse_cancels = 1;
    evmux__op_cancel(loop, &cancelled.op); /* owed at the fork */
    refuse_submits = 1;
    evmux__op_submit(loop, &send.op, EVMUX__OP_SEND, out[0], 0);
    CHECK_EQ(send.op.state, EVMUX__OP_QUEUED);

    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* The child: failures exit non-zero through CHECK. */
        CHECK_OK(evmux_loop_fork(loop));
        CHECK_EQ(loop->ops.cancels_owed, 0);
        unit_write_byte(in[1]);
        finals_seen = 0;
        for (int i = 0; i < 50 && (recv.got_len == 0 || send.finals == 0); i++)
            run_iterations(loop, 1);
        CHECK_EQ(recv.got_len, 1);      /* the recv, submitted again */
        CHECK_EQ(send.finals, 1);       /* the send, submitted in the child */
        CHECK_EQ(send.last_res, 1);
        CHECK_EQ(cancelled.finals, 1);  /* the cancelled one ended */
        CHECK_EQ(cancelled.last_res, -ECANCELED);
        char c = 0;
        CHECK_EQ(read(out[1], &c, 1), 1);
        CHECK_EQ(c, 'F');
        _exit(0);
    }
    CHECK(child_succeeded(pid));
    /* The parent's requests go on: its recv gets what is sent now. */
    unit_write_byte(in[1]);
    for (int i = 0; i < 50 && recv.got_len == 0; i++)
        run_iterations(loop, 1);
    CHECK_EQ(recv.got_len, 1);
    evmux__op_cancel(loop, &recv.op);
    for (int i = 0; i < 50 && (recv.finals == 0 || cancelled.finals == 0 || send.finals == 0); i++)
        run_iterations(loop, 1);
    CHECK_EQ(recv.finals, 1);
    CHECK_EQ(cancelled.finals, 1);
    CHECK_EQ(send.finals, 1);
    CHECK_EQ(evmux__ops_busy(loop), 0);
    for (int i = 0; i < 2; i++) {
        close(in[i]);
        close(out[i]);
        close(gone[i]);
    }
    unit_loop_finish(loop);
}


/* fork() from the second read callback of one batch, after the first has
 * given its buffer back: the child registers its buffer ring anew, and
 * the buffer lent at the fork must go back to the new ring at the right
 * place. (It went back at the old ring's offset: the ring then claimed one
 * entry more than it has, and once more than 256 buffers were taken in one
 * go, two receives shared one, and one stream read another's bytes.) The
 * child floods 32 streams at once, several times over, and checks every
 * byte. */
#define RING_STREAMS 32
#define RING_FLOODS 4

struct ring_reader {
    evmux_stream s;
    int id, peer;
    uint64_t got, sent; /* bytes of the stream so far */
    int bad;
};

static int ring_callbacks, ring_fork_at, ring_fork_at_eof;
static pid_t ring_child = -1;

static void ring_fork(evmux_loop *loop)
{
    fflush(NULL);
    ring_child = fork();
    CHECK(ring_child >= 0);
    if (ring_child == 0)
        CHECK_OK(evmux_loop_fork(loop)); /* at once: the loop goes on */
}

static unsigned char ring_byte(int id, uint64_t offset)
{
    return (unsigned char)(id * 37 + (int)(offset >> 9));
}

static void ring_read(evmux_stream *s, ssize_t n, char *buf)
{
    struct ring_reader *r = s->handle.data;
    if (n == EVMUX_EOF && ring_fork_at_eof) {
        ring_fork_at_eof = 0;
        ring_fork(s->handle.loop); /* a result without a buffer */
        return;
    }
    if (n <= 0)
        return;
    for (ssize_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] != ring_byte(r->id, r->got + (uint64_t)i))
            r->bad++;
    r->got += (uint64_t)n;
    if (++ring_callbacks == ring_fork_at)
        ring_fork(s->handle.loop);
}

/* Writes the stream's pattern until the socket takes no more (or max). */
static void ring_fill(struct ring_reader *r, size_t max)
{
    unsigned char piece[4096];
    while (max > 0) {
        size_t n = max < sizeof piece ? max : sizeof piece;
        for (size_t i = 0; i < n; i++)
            piece[i] = ring_byte(r->id, r->sent + i);
        ssize_t w = write(r->peer, piece, n);
        if (w <= 0)
            return;
        r->sent += (uint64_t)w;
        max -= (size_t)w;
    }
}

static int ring_all_read(struct ring_reader *rd)
{
    for (int i = 0; i < RING_STREAMS; i++)
        if (rd[i].got != rd[i].sent)
            return 0;
    return 1;
}

/* at_eof: the fork comes in the callback of stream 1's end of stream (a
 * result without a buffer), after stream 0's bytes in the same batch;
 * else in the callback of the batch's second piece of bytes. */
static void ring_fork_test(bool at_eof)
{
    USE_REFUSING_LOOP(loop);
    static struct ring_reader rd[RING_STREAMS];
    memset(rd, 0, sizeof rd);
    for (int i = 0; i < RING_STREAMS; i++) {
        int sv[2];
        unit_socketpair(sv);
        CHECK_OK(fcntl(sv[1], F_SETFL, O_NONBLOCK));
        rd[i].id = i;
        rd[i].peer = sv[1];
        CHECK_OK(evmux_stream_init(loop, &rd[i].s));
        rd[i].s.handle.data = &rd[i];
        CHECK_OK(evmux_stream_open(&rd[i].s, sv[0]));
        CHECK_OK(evmux_stream_read_start(&rd[i].s, ring_read));
    }
    run_iterations(loop, 2);
    /* Two small pieces, in the kernel before the loop looks: one batch,
     * and the fork in its second callback. */
    ring_callbacks = 0;
    ring_fork_at = at_eof ? 0 : 2;
    ring_fork_at_eof = at_eof;
    ring_child = -1;
    /* The parent's ring keeps its recv requests on the same sockets, and
     * its loop runs on a little after the fork (the rest of its
     * iteration): bytes the child's flood sent then could go to the
     * parent. The child floods once the parent has stopped its loop. */
    int parked[2];
    CHECK_OK(pipe(parked));
    ring_fill(&rd[0], 100);
    if (at_eof)
        CHECK_OK(shutdown(rd[1].peer, SHUT_WR));
    else
        ring_fill(&rd[1], 100);
    unit_sleep_ms(20);
    for (int i = 0; i < 50 && ring_child < 0; i++)
        run_iterations(loop, 1);
    CHECK(ring_child >= 0);
    if (ring_child == 0) {
        char go;
        CHECK_EQ(read(parked[0], &go, 1), 1);
        for (int flood = 0; flood < RING_FLOODS; flood++) {
            for (int i = 0; i < RING_STREAMS; i++)
                if (!(at_eof && i == 1))
                    ring_fill(&rd[i], 1 << 20); /* as much as each socket takes */
            for (int i = 0; i < 2000 && !ring_all_read(rd); i++)
                run_iterations(loop, 1);
            CHECK(ring_all_read(rd));
        }
        uint64_t total = 0;
        for (int i = 0; i < RING_STREAMS; i++) {
            CHECK_EQ(rd[i].bad, 0);
            total += rd[i].got;
        }
        CHECK(total > (uint64_t)RING_FLOODS * 4 * 1024 * 1024); /* the ring went round */
        _exit(0);
    }
    CHECK_EQ(write(parked[1], "p", 1), 1); /* no more iterations here until the child is done */
    CHECK(child_succeeded(ring_child));
    close(parked[0]);
    close(parked[1]);
    for (int i = 0; i < RING_STREAMS; i++) {
        CHECK_OK(evmux_close(&rd[i].s.handle, NULL));
        close(rd[i].peer);
    }
    unit_loop_finish(loop);
}

static void test_fork_in_read_callback_keeps_buffer_ring(void)
{
    ring_fork_test(false);
}

/* The same from the callback of a result without a buffer: the ring was
 * advanced by the buffers given back before the fork (found in review). */
static void test_fork_after_buffers_given_back(void)
{
    ring_fork_test(true);
}

/* fork() from a callback of the loop's report pass, while another
 * stream's queued bytes wait in the same pass for their send request: the
 * child's copy is the parent's to send, so a close in the child does not
 * offer it, and the peer gets the bytes once. (The child once missed the
 * streams its pass had already taken, and the peer got them twice.) */
struct pass_fork {
    evmux_stream *other;
    pid_t child;
};

static void fork_in_write_cb(evmux_write_req *req, int status)
{
    struct pass_fork *pf = req->data;
    CHECK_EQ(status, 0);
    fflush(NULL);
    pf->child = fork();
    CHECK(pf->child >= 0);
    if (pf->child == 0) {
        CHECK_OK(evmux_loop_fork(req->stream->handle.loop));
        CHECK_OK(evmux_close(&pf->other->handle, NULL)); /* closes the socket now */
        _exit(0);
    }
}

static void test_fork_in_pass_keeps_queue_inherited(void)
{
    USE_REFUSING_LOOP(loop);
    int a[2], b[2];
    evmux_stream sa, sb;
    stream_on_pair(loop, &sa, a);
    stream_on_pair(loop, &sb, b);
    struct pass_fork pf = { .other = &sb, .child = -1 };
    evmux_write_req req = { .data = &pf };
    /* An empty write completes at once: reported from the pass, first. */
    CHECK_OK(evmux_stream_write(&req, &sa, NULL, 0, fork_in_write_cb));
    evmux_buf hello = { "hello", 5 };
    CHECK_OK(evmux_stream_write(NULL, &sb, &hello, 1, NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK(pf.child > 0);
    CHECK(child_succeeded(pf.child));
    run_iterations(loop, 3);
    char got[16] = {0};
    CHECK_EQ(su_wait_readable(b[1], 1000), 1);
    unit_sleep_ms(50);
    CHECK_EQ(read(b[1], got, sizeof got), 5);
    CHECK(memcmp(got, "hello", 5) == 0);
    CHECK_OK(evmux_close(&sa.handle, NULL));
    CHECK_OK(evmux_close(&sb.handle, NULL));
    close(a[1]);
    close(b[1]);
    unit_loop_finish(loop);
}

/* fork() from a write callback that runs inside a send's result, with more
 * bytes queued behind it: that stream is on no list at that moment, and
 * a close in the child must still leave its queue to the parent. (The
 * child once sent it too.) The child makes room on the peer's side, closes
 * the stream, and checks that nothing arrived. */
struct partial_fork {
    int peer;
    pid_t child;
};

static void fork_after_partial_send(evmux_write_req *req, int status)
{
    struct partial_fork *pf = req->data;
    CHECK_EQ(status, 0);
    evmux_stream *s = req->stream;
    CHECK(evmux_stream_queued(s) > 0);
    fflush(NULL);
    pf->child = fork();
    CHECK(pf->child >= 0);
    if (pf->child != 0)
        return;
    CHECK_OK(evmux_loop_fork(s->handle.loop));
    unit_drain(pf->peer); /* room for what a close would offer */
    CHECK_OK(evmux_close(&s->handle, NULL));
    int waiting = -1;
    CHECK_OK(ioctl(pf->peer, FIONREAD, &waiting));
    _exit(waiting == 0 ? 0 : 2);
}

static void test_fork_in_write_callback_keeps_queue_inherited(void)
{
    USE_REFUSING_LOOP(loop);
    int sv[2];
    evmux_stream s;
    stream_on_pair(loop, &s, sv);
    CHECK_OK(fcntl(sv[1], F_SETFL, O_NONBLOCK));
    static char first[32 << 10], rest[4 << 20];
    memset(first, 'a', sizeof first);
    memset(rest, 'b', sizeof rest);
    struct partial_fork pf = { .peer = sv[1], .child = -1 };
    evmux_write_req req = { .data = &pf };
    evmux_buf b1 = { first, sizeof first }, b2 = { rest, sizeof rest };
    CHECK_OK(evmux_stream_write(&req, &s, &b1, 1, fork_after_partial_send));
    CHECK_OK(evmux_stream_write(NULL, &s, &b2, 1, NULL));
    for (int i = 0; i < 100 && pf.child < 0; i++)
        run_iterations(loop, 1);
    CHECK(pf.child > 0);
    CHECK(child_succeeded(pf.child));
    CHECK_OK(evmux_close(&s.handle, NULL));
    close(sv[1]);
    unit_loop_finish(loop);
}

/* A write past the high watermark offers the queue at once; when the
 * kernel takes all of it, a stream that does not read has nothing left to
 * do and must not keep the loop running. (It stayed active, and
 * evmux_run never returned.) */
static void test_offer_that_empties_the_queue(void)
{
    USE_REFUSING_LOOP(loop);
    int sv[2];
    evmux_stream s;
    stream_on_pair(loop, &s, sv);
    CHECK_OK(evmux_stream_set_watermarks(&s, 10, 0, NULL));
    evmux_buf small = { "12345", 5 }, large = { "abcdefghijklmnopqrst", 20 };
    CHECK_OK(evmux_stream_write(NULL, &s, &small, 1, NULL));
    CHECK_EQ(evmux_is_active(&s.handle), 1); /* bytes queued */
    CHECK_OK(evmux_stream_write(NULL, &s, &large, 1, NULL));
    CHECK_EQ(evmux_stream_queued(&s), 0); /* the offer took them all */
    CHECK_EQ(evmux_is_active(&s.handle), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* returns: nothing to do */
    char got[32] = {0};
    CHECK_EQ(read(sv[1], got, sizeof got), 25);
    CHECK(memcmp(got, "12345abcdefghijklmnopqrst", 25) == 0);
    CHECK_OK(evmux_close(&s.handle, NULL));
    close(sv[1]);
    unit_loop_finish(loop);
}

/* A listener's multishot accept is a request too: closed while the ring
 * refuses the cancel, the listener's close callback waits until the
 * request has ended, a connection the kernel accepts meanwhile is closed,
 * and then the port refuses connections. */
static int listener_closes;

static void listener_closed(evmux_handle *h)
{
    (void)h;
    listener_closes++;
}

static void take_nothing(evmux_listener *l, int status)
{
    (void)l;
    (void)status; /* not taken: the listener closes it */
}

static void test_listener_close_with_refused_cancel(void)
{
    USE_REFUSING_LOOP(loop);
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    evmux_listener l;
    CHECK_OK(evmux_listen(loop, &l, (struct sockaddr *)&ss, len, NULL, take_nothing));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT)); /* the accept goes in */
    CHECK_EQ(l.wait.accept.state, EVMUX__OP_KERNEL);
    len = su_listener_addr(&l, &ss);
    refuse_cancels = 3;
    listener_closes = 0;
    CHECK_OK(evmux_close(&l.handle, listener_closed));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(listener_closes, 0); /* the accept is still in the kernel */
    int early = su_raw_connect(&ss, len); /* accepted by it, then closed */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(listener_closes, 1);
    CHECK_EQ(cancels_refused, 3);
    if (early >= 0) {
        CHECK_EQ(su_wait_readable(early, 1000), 1);
        char c;
        CHECK(read(early, &c, 1) <= 0); /* the end, or a reset */
        close(early);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    CHECK(connect(fd, (struct sockaddr *)&ss, len) < 0 && errno == ECONNREFUSED);
    close(fd);
    unit_loop_finish(loop);
}

/* ---- io watchers' polls, when the ring itself refuses ---- */

static int watcher_calls;

static unsigned refusals_left(evmux_loop *loop)
{
    unsigned left = evmux__test_refuse_ring(loop, 0);
    evmux__test_refuse_ring(loop, left);
    return left;
}

static void count_watcher(evmux_io *io, unsigned events)
{
    (void)events;
    watcher_calls++;
    unit_drain(io->fd);
}

/* A watcher started while the ring refuses its poll: the start succeeds
 * (it once failed with -EBUSY), and the poll goes in before the wait. */
static void test_watcher_start_when_ring_refuses(void)
{
    USE_REFUSING_LOOP(loop);
    int sv[2];
    unit_socketpair(sv);
    evmux_io io;
    CHECK_OK(evmux_io_init(loop, &io, sv[0], count_watcher));
    evmux__test_refuse_ring(loop, 3);
    watcher_calls = 0;
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    CHECK_EQ(refusals_left(loop), 2);
    unit_write_byte(sv[1]);
    for (int i = 0; i < 100 && watcher_calls == 0; i++)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(watcher_calls, 1);
    CHECK_EQ(refusals_left(loop), 0);
    /* A change of interest the ring refuses is put right too. */
    evmux__test_refuse_ring(loop, 1);
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE | EVMUX_WRITABLE));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK(watcher_calls >= 2); /* writable */
    CHECK_OK(evmux_close(&io.handle, NULL));
    close(sv[0]);
    close(sv[1]);
    unit_loop_finish(loop);
}

/* A watcher stopped while the ring refuses the poll's removal: the removal
 * is owed, not dropped, so the descriptor's file is let go and the peer
 * sees the socket end once it is closed. (A dropped removal left the poll
 * holding the socket open for good.) */
static void test_watcher_stop_when_ring_refuses(void)
{
    USE_REFUSING_LOOP(loop);
    int sv[2];
    unit_socketpair(sv);
    evmux_io io;
    CHECK_OK(evmux_io_init(loop, &io, sv[0], count_watcher));
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    run_iterations(loop, 2); /* the poll is in the kernel */
    evmux__test_refuse_ring(loop, 3);
    CHECK_OK(evmux_io_stop(&io));
    run_iterations(loop, 5);
    CHECK_OK(evmux_close(&io.handle, NULL));
    close(sv[0]);
    CHECK_EQ(su_wait_readable(sv[1], 1000), 1);
    char c;
    CHECK_EQ(read(sv[1], &c, 1), 0);
    CHECK_EQ(refusals_left(loop), 0);
    close(sv[1]);
    unit_loop_finish(loop);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(60);
    RUN_TEST(test_full_ring_queues_in_order);
    RUN_TEST(test_cancel_while_queued);
    RUN_TEST(test_cancel_never_dropped);
    RUN_TEST(test_stream_close_with_refused_cancel);
    RUN_TEST(test_close_sends_queued_bytes);
    RUN_TEST(test_descriptor_kept_until_requests_end);
    RUN_TEST(test_fork_submits_again);
    RUN_TEST(test_fork_in_read_callback_keeps_buffer_ring);
    RUN_TEST(test_fork_after_buffers_given_back);
    RUN_TEST(test_fork_in_write_callback_keeps_queue_inherited);
    RUN_TEST(test_offer_that_empties_the_queue);
    RUN_TEST(test_listener_close_with_refused_cancel);
    RUN_TEST(test_fork_in_pass_keeps_queue_inherited);
    RUN_TEST(test_watcher_start_when_ring_refuses);
    RUN_TEST(test_watcher_stop_when_ring_refuses);
    return unit_end();
}
