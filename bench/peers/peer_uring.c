/* evmux-peer-uring: the uppercase echo server on raw io_uring (liburing).
 *
 * Completion-based: nothing waits for readiness. One multishot accept
 * delivers every new connection; each connection has one multishot recv
 * that picks its buffers from a ring of provided buffers (shared by all
 * connections, so an idle one holds none); replies go out with
 * io_uring_prep_send, one send in flight per connection so that bytes
 * cannot be reordered.
 *
 * Received bytes are uppercased in the provided buffer, copied to the
 * connection's queue, and the buffer goes straight back to the ring: a send
 * straight from it would let a client that does not read pin ring buffers
 * until the ring runs dry for everybody. A send completion takes the queue
 * that built up meanwhile as the next send.
 *
 * The cases a careful user handles:
 *  - a multishot request ends whenever a CQE comes without IORING_CQE_F_MORE
 *    (the ring's CQ overflowed, the kernel chose to, an error): re-arm it if
 *    we still want it;
 *  - -ENOBUFS: the buffer ring was empty; buffers return to it as their CQEs
 *    are handled, so re-arming is enough (it is submitted after the batch);
 *  - a short send: send the rest before anything else;
 *  - CQ overflow: the CQ is 4x the SQ; with IORING_FEAT_NODROP the kernel
 *    keeps what did not fit and liburing's submit_and_wait flushes it;
 *  - backpressure: past PEER_OWED_HIGH owed, cancel the multishot recv;
 *    re-arm it once the queue drains to PEER_OWED_LOW;
 *  - closing with requests in flight: shutdown() the socket, which ends them,
 *    and free the connection when its last request has completed.
 */
#include <liburing.h>
#include <sys/mman.h>

#include "peer_common.h"

#define RING_ENTRIES 4096
#define BUF_GROUP 0
#define BUF_COUNT 256            /* a power of two */
#define BUF_SIZE (16 * 1024)     /* 4 MiB of receive buffers in all */

/* user_data: a pointer (malloc aligns to 16) with the operation in its low bits */
enum op { OP_NONE, OP_ACCEPT, OP_RECV, OP_SEND };
#define OP_MASK 7u

struct conn {
    int fd;
    bool recv_armed;          /* a multishot recv is in the kernel */
    bool cancelling;          /* ...and we asked to cancel it */
    bool paused;              /* owed too much: not reading */
    bool eof;                 /* the client sent EOF */
    bool closing;             /* shut down; freed once no request is in flight */
    bool sending;             /* a send of `inflight` is in the kernel */
    struct peer_owed inflight; /* what the current send is sending */
    struct peer_owed pending;  /* what came in since; the next send */
};

static struct io_uring ring;
static struct io_uring_buf_ring *buf_ring;
static char *bufs;
static int listen_fd;

#ifndef PEER_HAVE_SETUP_BUF_RING
/* io_uring_setup_buf_ring() arrived in liburing 2.4; this is the same for
 * 2.3: map a page-aligned ring, register it, empty it. */
static struct io_uring_buf_ring *io_uring_setup_buf_ring(struct io_uring *ring,
                                                         unsigned int nentries, int bgid,
                                                         unsigned int flags, int *ret)
{
    size_t size = nentries * sizeof(struct io_uring_buf);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (p == MAP_FAILED) {
        *ret = -errno;
        return NULL;
    }
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)(uintptr_t)p, .ring_entries = nentries, .bgid = (__u16)bgid};
    int rc = io_uring_register_buf_ring(ring, &reg, flags);
    if (rc < 0) {
        munmap(p, size);
        *ret = rc;
        return NULL;
    }
    io_uring_buf_ring_init(p);
    *ret = 0;
    return p;
}
#endif

static struct io_uring_sqe *get_sqe(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (sqe == NULL) { /* SQ full: hand what is there to the kernel */
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
        if (sqe == NULL) {
            fprintf(stderr, "evmux-peer-uring: submission queue stuck full\n");
            exit(1);
        }
    }
    return sqe;
}

static void set_op(struct io_uring_sqe *sqe, void *ptr, enum op op)
{
    io_uring_sqe_set_data64(sqe, (__u64)(uintptr_t)ptr | op);
}

static void recycle_buffer(unsigned bid)
{
    io_uring_buf_ring_add(buf_ring, bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(BUF_COUNT), 0);
    io_uring_buf_ring_advance(buf_ring, 1);
}

static void arm_accept(void)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, SOCK_CLOEXEC);
    set_op(sqe, NULL, OP_ACCEPT);
}

static void arm_recv(struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    set_op(sqe, c, OP_RECV);
    c->recv_armed = true;
}

static void submit_send(struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_send(sqe, c->fd, c->inflight.data + c->inflight.head, c->inflight.len,
                       MSG_NOSIGNAL);
    set_op(sqe, c, OP_SEND);
    c->sending = true;
}

/* Sends what is pending, unless a send is already in flight. */
static void start_send(struct conn *c)
{
    if (c->sending || c->pending.len == 0)
        return;
    c->inflight = c->pending;
    c->pending = (struct peer_owed){0};
    submit_send(c);
}

static size_t owed(const struct conn *c)
{
    return c->inflight.len + c->pending.len;
}

static bool wants_recv(const struct conn *c)
{
    return !c->eof && !c->paused && !c->closing;
}

/* Ends the connection: shutdown() completes its requests in flight. */
static void conn_close(struct conn *c)
{
    if (!c->closing) {
        c->closing = true;
        shutdown(c->fd, SHUT_RDWR);
    }
}

/* Every CQE handler ends here: frees a closing connection with nothing in flight. */
static void conn_settle(struct conn *c)
{
    if (!c->closing || c->recv_armed || c->sending)
        return;
    close(c->fd);
    free(c->inflight.data);
    free(c->pending.data);
    free(c);
}

static void pause_reading(struct conn *c)
{
    c->paused = true;
    if (c->recv_armed && !c->cancelling) {
        struct io_uring_sqe *sqe = get_sqe();
        io_uring_prep_cancel64(sqe, (__u64)(uintptr_t)c | OP_RECV, 0);
        set_op(sqe, NULL, OP_NONE); /* its own CQE is of no interest */
        c->cancelling = true;
    }
}

static void on_accept(int res, unsigned flags)
{
    if (res >= 0) {
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(res);
            peer_count_refused("out of memory");
        } else {
            peer_set_nodelay(res);
            c->fd = res;
            arm_recv(c);
        }
    } else {
        peer_accept_failed(-res);
    }
    if (!(flags & IORING_CQE_F_MORE))
        arm_accept();
}

static void on_recv(struct conn *c, int res, unsigned flags)
{
    if (!(flags & IORING_CQE_F_MORE)) {
        c->recv_armed = false;
        c->cancelling = false;
    }
    if (res > 0) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        char *data = bufs + (size_t)bid * BUF_SIZE;
        if (!c->closing) {
            peer_handle(data, (size_t)res);
            if (!peer_owed_append(&c->pending, data, (size_t)res))
                conn_close(c);
        }
        recycle_buffer(bid);
        if (!c->closing) {
            start_send(c);
            if (owed(c) > PEER_OWED_HIGH && !c->paused)
                pause_reading(c);
        }
    } else if (res == 0) {
        c->eof = true;
        if (!c->sending)
            conn_close(c); /* nothing owed: done */
    } else if (res != -ENOBUFS && res != -ECANCELED) {
        conn_close(c); /* reset: nothing more can be delivered */
    }
    /* Ended (-ENOBUFS, CQ overflow, cancelled after a resume...): re-arm. */
    if (!c->recv_armed && wants_recv(c))
        arm_recv(c);
    conn_settle(c);
}

static void on_send(struct conn *c, int res)
{
    c->sending = false;
    if (res < 0) {
        conn_close(c);
    } else if (!c->closing) {
        peer_owed_consume(&c->inflight, (size_t)res);
        if (c->inflight.len > 0)
            submit_send(c); /* short send: the rest goes first */
        else
            start_send(c);
        if (!c->sending && c->eof) {
            conn_close(c); /* everything went out: done */
        } else if (c->paused && owed(c) <= PEER_OWED_LOW) {
            c->paused = false;
            if (!c->recv_armed)
                arm_recv(c); /* else the cancelled one re-arms when it ends */
        }
    }
    conn_settle(c);
}

static void setup(void)
{
    struct io_uring_params params = {
        .flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
                 IORING_SETUP_DEFER_TASKRUN,
        .cq_entries = 4 * RING_ENTRIES,
    };
    int rc = io_uring_queue_init_params(RING_ENTRIES, &ring, &params);
    if (rc == -EINVAL) { /* a kernel older than 6.1: without the task-run flags */
        params = (struct io_uring_params){.flags = IORING_SETUP_CQSIZE,
                                          .cq_entries = 4 * RING_ENTRIES};
        rc = io_uring_queue_init_params(RING_ENTRIES, &ring, &params);
    }
    if (rc < 0) {
        fprintf(stderr, "evmux-peer-uring: io_uring_queue_init: %s\n", strerror(-rc));
        exit(1);
    }
    if (!(params.features & IORING_FEAT_NODROP))
        fprintf(stderr, "evmux-peer-uring: warning: this kernel drops CQEs on overflow\n");

    buf_ring = io_uring_setup_buf_ring(&ring, BUF_COUNT, BUF_GROUP, 0, &rc);
    bufs = malloc((size_t)BUF_COUNT * BUF_SIZE);
    if (buf_ring == NULL || bufs == NULL) {
        fprintf(stderr, "evmux-peer-uring: cannot set up the buffer ring: %s\n",
                strerror(buf_ring == NULL ? -rc : ENOMEM));
        exit(1);
    }
    for (unsigned i = 0; i < BUF_COUNT; i++)
        io_uring_buf_ring_add(buf_ring, bufs + (size_t)i * BUF_SIZE, BUF_SIZE,
                              (unsigned short)i, io_uring_buf_ring_mask(BUF_COUNT), (int)i);
    io_uring_buf_ring_advance(buf_ring, BUF_COUNT);
}

int main(int argc, char **argv)
{
    struct peer_options opt;
    int status = peer_parse_args(argc, argv, "uring", "raw io_uring through liburing", &opt);
    if (status >= 0)
        return status;
    peer_init_process();
    peer_exit_on_signals();

    listen_fd = peer_listen(&opt, false);
    setup();
    arm_accept();
    peer_announce(listen_fd);

    for (;;) {
        int rc = io_uring_submit_and_wait(&ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN) {
            fprintf(stderr, "evmux-peer-uring: io_uring_submit_and_wait: %s\n", strerror(-rc));
            return 1;
        }
        /* -EBUSY/-EAGAIN: the kernel wants completions reaped first. */
        unsigned head, seen = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(&ring, head, cqe) {
            void *ptr = (void *)(uintptr_t)(cqe->user_data & ~(__u64)OP_MASK);
            switch (cqe->user_data & OP_MASK) {
            case OP_ACCEPT:
                on_accept(cqe->res, cqe->flags);
                break;
            case OP_RECV:
                on_recv(ptr, cqe->res, cqe->flags);
                break;
            case OP_SEND:
                on_send(ptr, cqe->res);
                break;
            default:
                break; /* a cancel's own result */
            }
            seen++;
        }
        io_uring_cq_advance(&ring, seen);
    }
}
