/* io_uring(7): the kernel takes requests from one ring and posts results on
 * another, so a whole iteration's worth of work costs one system call. That
 * changes what can go wrong:
 *
 *  - Requests outlive descriptors. A request holds its own reference to the
 *    file: closing the descriptor neither ends a pending poll or recv nor
 *    frees the socket, and the request's result still names the memory it
 *    was given. So every request is ended by asking (a poll remove, a
 *    cancel), and a handle whose requests are still in the kernel is not
 *    handed back to its owner (no close callback) until their last results
 *    have come in (op.h).
 *  - Results come late and out of turn. A poll result can arrive after its
 *    descriptor number has been forgotten and reused, and a recv result
 *    after the reader stopped. Polls carry a per-number generation in their
 *    user_data, so a late one is dropped; a request's results all go to
 *    the request, which its owner keeps until the last one.
 *  - One-shot polls are level-triggered, multishot ones are not: a
 *    multishot poll posts only when the socket's wait queue is woken, so
 *    bytes left unread after a callback would never be reported again. Io
 *    watchers therefore use one-shot polls, re-armed before the next wait
 *    (no extra system call: the re-arm rides on the wait's submission).
 *  - The completion queue can overflow. With IORING_FEAT_NODROP the kernel
 *    keeps what did not fit, refuses new submissions (-EBUSY) until we have
 *    made room, and says so in the ring's flags; the next entry into the
 *    kernel moves those results into the room we made.
 *  - One wait could collect thousands of results (one busy connection
 *    alone fills all 256 receive buffers), and their callbacks would keep the
 *    timers waiting for hundreds of milliseconds. A wait takes at most
 *    READS_PER_WAIT of those that bring data (and polls), and leaves the
 *    rest, in order, in the ring; the next wait then does not block. The
 *    results of sends carry no data and cost little: they are taken up to
 *    the ring's size, or a sender that queues faster than 128 datagrams an
 *    iteration would hold its records until memory runs out.
 *  - Multishot requests end on their own: a recv whose buffer ring ran dry
 *    ends with -ENOBUFS, and any multishot result without IORING_CQE_F_MORE
 *    was the last. The owner asks again if it still wants to read; buffers
 *    go back to the ring as soon as each result has been reported, so by the next
 *    submission there are some again.
 *  - Setup can fail for reasons that say nothing about the kernel's age:
 *    seccomp filters, io_uring_disabled sysctl, a container. init reports
 *    the error and "auto" falls back to epoll.
 *  - The submission queue can be full when the kernel refuses to take it
 *    (it does while overflowed results wait, above). A request is then
 *    refused with -EBUSY and the core queues it, in order, for the next
 *    wait (op.c): a caller never sees the refusal, and no cancel is lost.
 *  - A forked child shares the parent's rings (they are shared memory). It
 *    builds its own ring; the core registers its watchers again and
 *    submits every live request again.
 *
 * Besides polls for io watchers, the ring runs the core's requests (op.h):
 * a multishot recv with buffers the loop provides (an idle connection
 * holds no buffer), sends, waits for writability, multishot accepts, and
 * for datagram sockets a multishot recvmsg (a datagram per buffer, with
 * its source address) and a sendmsg per datagram. The backend knows
 * nothing of who made them: a request is its own user_data, and each
 * result goes back to it. A busy connection then costs no system call of
 * its own at all. */
#include "../evmux_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define SQ_ENTRIES 512
#define CQ_ENTRIES 4096
/* Bounds one iteration's callbacks (a read each, up to BUF_SIZE bytes:
 * 2 MiB), so that timers keep their turn under load. 64 cost 4-14% more
 * CPU per 16 KiB echo at 100 connections (smaller batches, smaller sends);
 * 128 cost nothing measurable. */
#define READS_PER_WAIT 128
#define RESULTS_PER_WAIT CQ_ENTRIES /* reads and the rest */
/* Two groups of provided buffers. Bytes of streams: 4 MiB in all,
 * resident once the ring has cycled. Datagrams: one whole datagram each
 * (recvmsg never splits one), behind the header, source address and
 * control message the kernel puts first; 4 MiB of address space, of which
 * a small datagram touches a page. The datagram group is set up for the
 * first datagram socket. */
enum { GROUP_BYTES = 0, GROUP_DATAGRAMS = 1, GROUPS = 2 };
#define BUF_COUNT EVMUX__IO_BUFFERS /* a power of two */
#define BUF_SIZE (16 * 1024)
#define DGRAM_BUF_COUNT 64
#define DGRAM_NAME_BYTES ((unsigned)sizeof(struct sockaddr_storage))
#define DGRAM_CONTROL_BYTES ((unsigned)EVMUX__DATAGRAM_CONTROL)
#define DGRAM_BUF_SIZE                                                                             \
    (sizeof(struct io_uring_recvmsg_out) + DGRAM_NAME_BYTES + DGRAM_CONTROL_BYTES +               \
     EVMUX__DATAGRAM_MAX)

/* user_data: what a result is for, in the low three bits. Requests are
 * pointers (aligned to 8); polls carry the descriptor and its generation. */
enum uring_tag { TAG_IGNORE = 0, TAG_POLL = 1, TAG_OP = 2 };
#define TAG_MASK 7u
#define POLL_FD_BITS 29

struct uring_fd {
    uint32_t generation; /* bumped whenever the number gets a new registration */
    unsigned want;       /* interest the core holds */
    unsigned armed;      /* mask of the poll in the kernel, 0 if none */
    bool listed;         /* on the re-arm list: armed or updated before the next wait */
    bool failed;         /* the poll failed: not re-armed until the interest changes */
};

struct uring_result {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};


struct buf_group {
    struct io_uring_buf_ring *ring; /* NULL until set up */
    char *bufs;
    unsigned count; /* a power of two */
    size_t size;
    int lent_bid; /* lent to a callback right now, or -1 */
    int recycled; /* given back in this run of completions, not yet published */
};

struct uring_msg {
    struct msghdr hdr;
    struct iovec iov[EVMUX__SEND_IOV_MAX];
};

struct uring_state {
    struct io_uring ring;
    unsigned test_refusals; /* tests only: new entries the ring refuses */
    struct uring_msg *msgs; /* one per submission-queue slot, for sendmsg */
    bool skip_success; /* IOSQE_CQE_SKIP_SUCCESS works: no results for removals */
    /* Datagram sends prepared since the last entry into the kernel: each
     * runs inside that entry (MSG_DONTWAIT) and posts its result there, so
     * a wait that submits them waits for that many results more. */
    unsigned inline_results;

    struct uring_fd *fds;
    size_t fds_len;
    size_t live_polls; /* poll requests whose final result has not come in */
    int *rearm; /* descriptors whose poll fired, or the ring refused */
    size_t rearm_count, rearm_capacity;
    /* Removals of forgotten polls that the ring refused: sent before the
     * next wait, since a poll holds its file open (a closed socket would
     * not end for its peer). At most one per live poll, reserved ahead. */
    uint64_t *owed_removes;
    size_t owed_count, owed_capacity;

    /* Results of requests, collected by wait, reported by run_completions. */
    struct uring_result *results;
    size_t result_count;

    /* Provided receive buffers. A fork in one of run_completions'
     * callbacks registers the rings anew, with every buffer but the one
     * lent, and what that batch had given back is forgotten. */
    struct buf_group groups[GROUPS];
    /* The layout of a datagram buffer, for multishot recvmsg. */
    struct msghdr dgram_layout;
};

/* ---- ring set-up ---- */

static int ring_open(struct uring_state *st)
{
    struct io_uring_params params = {
        .flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
                 IORING_SETUP_DEFER_TASKRUN,
        .cq_entries = CQ_ENTRIES,
    };
    int rc = io_uring_queue_init_params(SQ_ENTRIES, &st->ring, &params);
    if (rc == -EINVAL) { /* before Linux 6.1: without the task-run flags */
        params = (struct io_uring_params){.flags = IORING_SETUP_CQSIZE, .cq_entries = CQ_ENTRIES};
        rc = io_uring_queue_init_params(SQ_ENTRIES, &st->ring, &params);
    }
    if (rc < 0)
        return rc;
    /* Without these, timeouts would cost a request each, overflowing
     * results would be lost, and sendmsg headers would have to live as long
     * as their requests: not worth supporting (they came with Linux 5.11). */
    unsigned needed = IORING_FEAT_EXT_ARG | IORING_FEAT_NODROP | IORING_FEAT_SUBMIT_STABLE;
    if ((params.features & needed) != needed || st->ring.sq.ring_entries > SQ_ENTRIES) {
        io_uring_queue_exit(&st->ring);
        return -ENOSYS;
    }
    st->skip_success = (params.features & IORING_FEAT_CQE_SKIP) != 0;
    return 0;
}

static void group_release(struct buf_group *g)
{
    if (g->ring != NULL)
        munmap(g->ring, g->count * sizeof(struct io_uring_buf));
    if (g->bufs != NULL)
        munmap(g->bufs, g->count * g->size);
    g->ring = NULL;
    g->bufs = NULL;
}

static char *group_buffer(const struct buf_group *g, unsigned bid)
{
    return g->bufs + (size_t)bid * g->size;
}

/* Published to the kernel by the next io_uring_buf_ring_advance. */
static void buffer_put(struct buf_group *g, unsigned bid)
{
    io_uring_buf_ring_add(g->ring, group_buffer(g, bid), (unsigned)g->size, (unsigned short)bid,
                          io_uring_buf_ring_mask(g->count), g->recycled++);
}

static void group_publish(struct buf_group *g)
{
    if (g->recycled > 0)
        io_uring_buf_ring_advance(g->ring, g->recycled);
    g->recycled = 0;
}

/* Registers a group's ring and fills it with every buffer but the one a
 * callback may hold right now (a fork from inside a read callback). */
static int group_register(struct uring_state *st, unsigned bgid)
{
    struct buf_group *g = &st->groups[bgid];
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)(uintptr_t)g->ring,
        .ring_entries = g->count,
        .bgid = (unsigned short)bgid,
    };
    int rc = io_uring_register_buf_ring(&st->ring, &reg, 0);
    if (rc < 0)
        return rc;
    io_uring_buf_ring_init(g->ring);
    g->recycled = 0;
    for (unsigned bid = 0; bid < g->count; bid++)
        if ((int)bid != g->lent_bid)
            buffer_put(g, bid);
    group_publish(g);
    return 0;
}

/* Maps and registers a group; its buffers cost address space only until
 * touched. */
static int group_setup(struct uring_state *st, unsigned bgid, unsigned count, size_t size)
{
    struct buf_group *g = &st->groups[bgid];
    g->count = count;
    g->size = size;
    void *ring = mmap(NULL, count * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    void *bufs = mmap(NULL, count * size, PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    g->ring = ring == MAP_FAILED ? NULL : ring;
    g->bufs = bufs == MAP_FAILED ? NULL : bufs;
    int rc = g->ring == NULL || g->bufs == NULL ? -ENOMEM : group_register(st, bgid);
    if (rc < 0)
        group_release(g);
    return rc;
}

static int uring_init(evmux_loop *loop)
{
    struct uring_state *st = calloc(1, sizeof *st);
    if (st == NULL)
        return -ENOMEM;
    for (unsigned bgid = 0; bgid < GROUPS; bgid++)
        st->groups[bgid].lent_bid = -1;
    st->dgram_layout.msg_namelen = DGRAM_NAME_BYTES;
    st->dgram_layout.msg_controllen = DGRAM_CONTROL_BYTES;
    st->results = malloc(sizeof *st->results * RESULTS_PER_WAIT);
    st->msgs = malloc(sizeof *st->msgs * SQ_ENTRIES);
    int rc = st->results == NULL || st->msgs == NULL ? -ENOMEM : ring_open(st);
    if (rc == 0) {
        /* Registered now rather than at the first read: a kernel without
         * provided-buffer rings (before 5.19) then fails here, where "auto"
         * can still fall back to epoll, not in some later request. */
        rc = group_setup(st, GROUP_BYTES, BUF_COUNT, BUF_SIZE);
        if (rc < 0)
            io_uring_queue_exit(&st->ring);
    }
    if (rc < 0) {
        free(st->msgs);
        free(st->results);
        free(st);
        return rc;
    }
    loop->backend_state = st;
    return 0;
}

/* A poll holds its file: the kernel would close a listening socket only
 * when it tears the ring down, some time after we let go of it, and the
 * port would keep accepting meanwhile. So the removals the core asked for
 * are submitted and their polls seen to end before the ring goes. */
static bool remove_poll(evmux_loop *loop, uint64_t user_data);

static void end_polls(evmux_loop *loop)
{
    struct uring_state *st = loop->backend_state;
    for (int round = 0; round < 100 && st->live_polls > 0; round++) {
        size_t kept = 0; /* removals the ring refused so far */
        for (size_t i = 0; i < st->owed_count; i++)
            if (!remove_poll(loop, st->owed_removes[i]))
                st->owed_removes[kept++] = st->owed_removes[i];
        st->owed_count = kept;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        struct io_uring_cqe *cqe;
        io_uring_submit_and_wait_timeout(&st->ring, &cqe, 1, &ts, NULL);
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&st->ring, head, cqe)
        {
            if ((io_uring_cqe_get_data64(cqe) & TAG_MASK) == TAG_POLL)
                st->live_polls--;
            seen++;
        }
        io_uring_cq_advance(&st->ring, seen);
    }
}

static void uring_destroy(evmux_loop *loop)
{
    struct uring_state *st = loop->backend_state;
    end_polls(loop);
    io_uring_queue_exit(&st->ring);
    for (unsigned bgid = 0; bgid < GROUPS; bgid++)
        group_release(&st->groups[bgid]);
    free(st->msgs);
    free(st->results);
    free(st->rearm);
    free(st->owed_removes);
    free(st->fds);
    free(st);
    loop->backend_state = NULL;
}

/* A full submission queue is handed to the kernel to make room; this is
 * the only place a request can cost a system call of its own. NULL if the
 * kernel would not take it (while it holds overflowed results): every
 * caller then retries before the next wait, none fails. */
static struct io_uring_sqe *get_sqe(evmux_loop *loop)
{
    struct uring_state *st = loop->backend_state;
    if (st->test_refusals > 0) {
        st->test_refusals--;
        return NULL;
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&st->ring);
    if (sqe == NULL) {
        io_uring_submit(&st->ring);
        st->inline_results = 0; /* posted already: the wait will not block on them */
        sqe = io_uring_get_sqe(&st->ring);
    }
    return sqe;
}

/* A request whose success needs no answer: its result, if any, is dropped. */
static void set_no_answer(struct uring_state *st, struct io_uring_sqe *sqe)
{
    io_uring_sqe_set_data64(sqe, TAG_IGNORE);
    if (st->skip_success)
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

/* ---- io watchers: one-shot polls ---- */

static uint64_t poll_data(const struct uring_state *st, int fd)
{
    return (uint64_t)st->fds[fd].generation << 32 | (uint64_t)(uint32_t)fd << 3 | TAG_POLL;
}

static unsigned poll_mask(unsigned events)
{
    return ((events & EVMUX_READABLE) ? POLLIN : 0u) | ((events & EVMUX_WRITABLE) ? POLLOUT : 0u);
}

/* Each returns false if the ring refused (no entry even after handing the
 * queue to the kernel): the caller retries before the next wait. */
static bool arm_poll(evmux_loop *loop, int fd)
{
    struct uring_state *st = loop->backend_state;
    struct io_uring_sqe *sqe = get_sqe(loop);
    if (sqe == NULL)
        return false;
    io_uring_prep_poll_add(sqe, fd, poll_mask(st->fds[fd].want));
    io_uring_sqe_set_data64(sqe, poll_data(st, fd));
    st->fds[fd].armed = st->fds[fd].want;
    st->live_polls++;
    return true;
}

/* Changes the pending poll in place. If it fired meanwhile, the update
 * fails quietly and the re-arm uses the new interest. */
static bool update_poll(evmux_loop *loop, int fd)
{
    struct uring_state *st = loop->backend_state;
    struct io_uring_sqe *sqe = get_sqe(loop);
    if (sqe == NULL)
        return false;
    struct uring_fd *slot = &st->fds[fd];
    io_uring_prep_poll_update(sqe, poll_data(st, fd), 0, poll_mask(slot->want),
                              IORING_POLL_UPDATE_EVENTS);
    set_no_answer(st, sqe);
    slot->armed = slot->want;
    return true;
}

static bool remove_poll(evmux_loop *loop, uint64_t user_data)
{
    struct uring_state *st = loop->backend_state;
    struct io_uring_sqe *sqe = get_sqe(loop);
    if (sqe == NULL)
        return false;
    io_uring_prep_poll_remove(sqe, user_data);
    set_no_answer(st, sqe);
    loop->stats.kernel_ctl_calls++;
    return true;
}

static void list_rearm(struct uring_state *st, int fd)
{
    struct uring_fd *slot = &st->fds[fd];
    if (slot->listed)
        return;
    assert(st->rearm_count < st->rearm_capacity); /* reserved by uring_change */
    slot->listed = true;
    st->rearm[st->rearm_count++] = fd;
}

/* The wait that reaps a fired one-shot poll re-arms it, and a refused
 * change is retried there too; neither can report an allocation failure
 * to anyone: a watcher (the loop's own wake-up among them) would lose its
 * poll for good. So the lists are sized here, where an error reaches the
 * caller of evmux_io_start: one re-arm entry per descriptor number in use
 * (a number is listed at most once), one owed removal per live poll. */
static int reserve_lists(struct uring_state *st, int fd)
{
    int *rearm = evmux__grow_zeroed(st->rearm, &st->rearm_capacity, (size_t)fd, sizeof *rearm);
    if (rearm == NULL)
        return -ENOMEM;
    st->rearm = rearm;
    uint64_t *owed = evmux__grow_zeroed(st->owed_removes, &st->owed_capacity, st->live_polls,
                                        sizeof *owed);
    if (owed == NULL)
        return -ENOMEM;
    st->owed_removes = owed;
    return 0;
}

static int uring_change(evmux_loop *loop, int fd, unsigned old_events, unsigned new_events)
{
    struct uring_state *st = loop->backend_state;
    int rc = reserve_lists(st, fd);
    if (rc < 0)
        return rc;
    struct uring_fd *fds = evmux__grow_zeroed(st->fds, &st->fds_len, (size_t)fd, sizeof *fds);
    if (fds == NULL)
        return -ENOMEM;
    st->fds = fds;
    struct uring_fd *slot = &fds[fd];
    if (old_events == 0) {
        /* A poll request reports a bad descriptor only in its result; the
         * caller of evmux_io_start deserves to hear it at once. */
        if (fcntl(fd, F_GETFD) < 0)
            return -errno;
        slot->generation++;
    }
    loop->stats.kernel_ctl_calls++; /* a request, not a system call, but a change */
    slot->want = new_events;
    slot->failed = false;
    if (slot->armed == new_events || slot->listed)
        return 0; /* as wanted, or put right before the next wait */
    bool sent = slot->armed != 0 ? update_poll(loop, fd) : arm_poll(loop, fd);
    if (!sent)
        list_rearm(st, fd); /* the ring refused: before the next wait */
    return 0;
}

static void uring_forget(evmux_loop *loop, int fd)
{
    struct uring_state *st = loop->backend_state;
    if ((size_t)fd >= st->fds_len)
        return;
    struct uring_fd *slot = &st->fds[fd];
    if (slot->armed != 0 && !remove_poll(loop, poll_data(st, fd))) {
        assert(st->owed_count < st->owed_capacity); /* reserved by uring_change */
        st->owed_removes[st->owed_count++] = poll_data(st, fd);
    }
    /* Whatever the old poll still reports carries the old generation. */
    slot->generation++;
    slot->armed = 0;
    slot->want = 0;
}

/* Before each wait: owed removals, then every listed descriptor's poll
 * made to match its interest. What the ring still refuses stays listed
 * (kept in place: an entry is only ever moved to a lower index). */
static void rearm_polls(evmux_loop *loop)
{
    struct uring_state *st = loop->backend_state;
    size_t kept = 0;
    if (st->owed_count > 0) {
        for (size_t i = 0; i < st->owed_count; i++)
            if (!remove_poll(loop, st->owed_removes[i]))
                st->owed_removes[kept++] = st->owed_removes[i];
        st->owed_count = kept;
        kept = 0;
    }
    for (size_t i = 0; i < st->rearm_count; i++) {
        int fd = st->rearm[i];
        struct uring_fd *slot = &st->fds[fd];
        slot->listed = false;
        if (slot->want == 0 || slot->failed || slot->armed == slot->want)
            continue;
        if (slot->armed == 0 ? arm_poll(loop, fd) : update_poll(loop, fd))
            continue;
        slot->listed = true; /* the ring refused: next time */
        st->rearm[kept++] = fd;
    }
    st->rearm_count = kept;
}

static void poll_result(evmux_loop *loop, uint64_t user_data, int res)
{
    struct uring_state *st = loop->backend_state;
    st->live_polls--; /* one-shot: every result is the last */
    int fd = (int)((user_data >> 3) & ((1u << POLL_FD_BITS) - 1));
    uint32_t generation = (uint32_t)(user_data >> 32);
    if ((size_t)fd >= st->fds_len || st->fds[fd].generation != generation)
        return; /* the number was forgotten since: a late result */
    struct uring_fd *slot = &st->fds[fd];
    slot->armed = 0;
    unsigned events;
    if (res == -ECANCELED) {
        events = 0; /* ended by the kernel, not by us: ask again */
    } else if (res < 0) {
        /* The descriptor cannot be polled (closed behind our back, say):
         * tell the watcher once, as poll(2) would, and stop asking. */
        slot->failed = true;
        events = EVMUX_READABLE | EVMUX_WRITABLE;
    } else {
        events = 0;
        if (res & (POLLERR | POLLHUP | POLLNVAL))
            events = EVMUX_READABLE | EVMUX_WRITABLE;
        if (res & POLLIN)
            events |= EVMUX_READABLE;
        if (res & POLLOUT)
            events |= EVMUX_WRITABLE;
    }
    if (events != 0 && !evmux__io_ready(loop, fd, events)) {
        slot->want = 0;
        return;
    }
    list_rearm(st, fd);
}

/* ---- waiting ---- */

/* Takes results from the completion queue, up to READS_PER_WAIT that
 * bring data or poll results and RESULTS_PER_WAIT in all: polls mark their
 * watchers pending, requests' results are copied for run_completions. The
 * rest waits in the ring, in order, for the next wait. Results without an
 * answer (TAG_IGNORE) cost nothing and are not counted. */
static int reap(evmux_loop *loop)
{
    struct uring_state *st = loop->backend_state;
    int collected = 0, reads = 0;
    for (;;) {
        unsigned head, seen = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(&st->ring, head, cqe)
        {
            if (collected == RESULTS_PER_WAIT || reads == READS_PER_WAIT)
                break;
            uint64_t user_data = io_uring_cqe_get_data64(cqe);
            unsigned tag = (unsigned)(user_data & TAG_MASK);
            collected += tag != TAG_IGNORE;
            reads += tag == TAG_POLL || (cqe->flags & IORING_CQE_F_BUFFER);
            if (tag == TAG_POLL)
                poll_result(loop, user_data, cqe->res);
            else if (tag != TAG_IGNORE)
                st->results[st->result_count++] =
                    (struct uring_result){user_data, cqe->res, cqe->flags};
            seen++;
        }
        io_uring_cq_advance(&st->ring, seen);
        /* Results the kernel kept back for lack of room are fetched now if
         * this batch has room; else the next wait's entry fetches them. */
        if (collected == RESULTS_PER_WAIT || reads == READS_PER_WAIT ||
            !io_uring_cq_has_overflow(&st->ring))
            return collected;
        if (io_uring_get_events(&st->ring) < 0)
            return collected;
    }
}

static int uring_wait(evmux_loop *loop, uint64_t timeout_ns)
{
    struct uring_state *st = loop->backend_state;
    rearm_polls(loop);
    int rc;
    /* Results left by the last reap, or kept back by the kernel, are ready,
     * and polls the ring refused are owed: no sleeping on them. */
    if (timeout_ns == 0 || io_uring_cq_ready(&st->ring) > 0 ||
        io_uring_cq_has_overflow(&st->ring) || st->rearm_count > 0 || st->owed_count > 0) {
        rc = io_uring_submit_and_get_events(&st->ring);
    } else {
        struct __kernel_timespec ts, *tsp = NULL;
        if (timeout_ns != UINT64_MAX) {
            ts.tv_sec = (long long)(timeout_ns / 1000000000u);
            ts.tv_nsec = (long long)(timeout_ns % 1000000000u);
            tsp = &ts;
        }
        /* The results of the datagrams sent by this very submit do not
         * end the wait: something else must happen (one ping-pong round
         * is then one system call, not two). */
        struct io_uring_cqe *cqe;
        rc = io_uring_submit_and_wait_timeout(&st->ring, &cqe, 1 + st->inline_results, tsp, NULL);
    }
    st->inline_results = 0;
    /* -ETIME: the timeout passed; -EBUSY: the kernel holds overflowed
     * results and wants room first, which reaping makes. */
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN)
        return rc;
    return reap(loop);
}

static int uring_after_fork(evmux_loop *loop)
{
    struct uring_state *st = loop->backend_state;
    /* Unmaps the shared rings and closes our copy of the descriptor; the
     * parent's ring and its requests live on in the parent. */
    io_uring_queue_exit(&st->ring);
    int rc = ring_open(st);
    if (rc < 0)
        return rc;
    for (size_t fd = 0; fd < st->fds_len; fd++) {
        st->fds[fd].generation++;
        st->fds[fd].armed = 0;
        st->fds[fd].want = 0;
        st->fds[fd].listed = false;
    }
    st->rearm_count = 0;
    st->owed_count = 0; /* the parent's polls */
    st->live_polls = 0;
    st->inline_results = 0;
    st->result_count = 0; /* results of the parent's requests */
    for (unsigned bgid = 0; bgid < GROUPS; bgid++) {
        if (st->groups[bgid].ring == NULL)
            continue;
        rc = group_register(st, bgid);
        if (rc < 0)
            return rc;
    }
    return 0; /* the core then submits its requests anew (op.c) */
}

/* ---- the core's requests ---- */

/* A request's address, its tag, and its generation in the top byte: user
 * addresses stay below 2^56 on every 64-bit Linux (57-bit x86 paging
 * included), and a 32-bit one leaves the whole upper half free. */
#define OP_GENERATION_SHIFT 56
#define OP_ADDRESS_MASK (((uint64_t)1 << OP_GENERATION_SHIFT) - 1 - TAG_MASK)

static uint64_t op_data(const struct evmux__op *op)
{
    assert(((uint64_t)(uintptr_t)op & ~OP_ADDRESS_MASK) == 0);
    return (uint64_t)(uintptr_t)op | TAG_OP | (uint64_t)op->generation << OP_GENERATION_SHIFT;
}

static void prep_send(struct uring_state *st, struct io_uring_sqe *sqe, struct evmux__op *op)
{
    struct uring_msg *m = &st->msgs[sqe - st->ring.sq.sqes];
    int n = op->cls->fill(op, m->iov, EVMUX__SEND_IOV_MAX);
    assert(n >= 1 && n <= EVMUX__SEND_IOV_MAX);
    if (n == 1) {
        io_uring_prep_send(sqe, op->fd, m->iov[0].iov_base, m->iov[0].iov_len, MSG_NOSIGNAL);
    } else {
        /* The kernel reads the message header when the request is
         * submitted (IORING_FEAT_SUBMIT_STABLE), and a submission-queue
         * slot is reused only after that: one header per slot will do. */
        memset(&m->hdr, 0, sizeof m->hdr);
        m->hdr.msg_iov = m->iov;
        m->hdr.msg_iovlen = (size_t)n;
        io_uring_prep_sendmsg(sqe, op->fd, &m->hdr, MSG_NOSIGNAL);
    }
    if (op->flags & EVMUX__OP_WHEN_WRITABLE)
        sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
}

static void prep_sendmsg(struct uring_state *st, struct io_uring_sqe *sqe, struct evmux__op *op)
{
    struct uring_msg *m = &st->msgs[sqe - st->ring.sq.sqes];
    memset(&m->hdr, 0, sizeof m->hdr);
    op->cls->message(op, &m->hdr);
    /* Without room, -EAGAIN rather than a wait in the kernel: sends that
     * wait side by side are woken newest first (the wait queue is a
     * stack), which would reverse the datagrams' order. */
    io_uring_prep_sendmsg(sqe, op->fd, &m->hdr, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static int uring_submit(evmux_loop *loop, struct evmux__op *op)
{
    struct uring_state *st = loop->backend_state;
    struct io_uring_sqe *sqe = get_sqe(loop);
    if (sqe == NULL)
        return -EBUSY;
    switch (op->type) {
    case EVMUX__OP_RECV:
        io_uring_prep_recv_multishot(sqe, op->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = GROUP_BYTES;
        break;
    case EVMUX__OP_RECVMSG:
        assert(st->groups[GROUP_DATAGRAMS].ring != NULL);
        io_uring_prep_recvmsg_multishot(sqe, op->fd, &st->dgram_layout, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = GROUP_DATAGRAMS;
        break;
    case EVMUX__OP_SENDMSG:
        prep_sendmsg(st, sqe, op);
        st->inline_results++;
        break;
    case EVMUX__OP_SEND:
        prep_send(st, sqe, op);
        break;
    case EVMUX__OP_WRITABLE:
        io_uring_prep_poll_add(sqe, op->fd, POLLOUT);
        break;
    case EVMUX__OP_ACCEPT:
        io_uring_prep_multishot_accept(sqe, op->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
    default:
        assert(!"unknown request type");
    }
    io_uring_sqe_set_data64(sqe, op_data(op));
    return 0;
}

static int uring_cancel(evmux_loop *loop, struct evmux__op *op)
{
    struct uring_state *st = loop->backend_state;
    struct io_uring_sqe *sqe = get_sqe(loop);
    if (sqe == NULL)
        return -EBUSY;
    io_uring_prep_cancel64(sqe, op_data(op), 0);
    set_no_answer(st, sqe);
    return 0;
}

/* A recvmsg result: the kernel's header, the source address, the control
 * messages and the datagram, in that order, in one buffer. */
static void datagram_result(evmux_loop *loop, struct evmux__op *op, unsigned generation, int res,
                            char *buf, bool more)
{
    struct uring_state *st = loop->backend_state;
    struct msghdr *layout = &st->dgram_layout;
    struct io_uring_recvmsg_out *out = io_uring_recvmsg_validate(buf, res, layout);
    assert(out != NULL); /* the buffers fit the layout */
    struct evmux__datagram d = {
        .data = io_uring_recvmsg_payload(out, layout),
        .len = io_uring_recvmsg_payload_length(out, res, layout),
        .from = io_uring_recvmsg_name(out),
        .from_len = out->namelen < DGRAM_NAME_BYTES ? out->namelen : DGRAM_NAME_BYTES,
        .truncated = (out->flags & MSG_TRUNC) != 0,
    };
    for (struct cmsghdr *c = io_uring_recvmsg_cmsg_firsthdr(out, layout); c != NULL;
         c = io_uring_recvmsg_cmsg_nexthdr(out, layout, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            int size;
            memcpy(&size, CMSG_DATA(c), sizeof size);
            d.segment_size = size > 0 ? (unsigned)size : 0;
        }
    }
    evmux__op_result(loop, op, generation, (int)d.len, &d, more);
}

static void uring_run_completions(evmux_loop *loop)
{
    struct uring_state *st = loop->backend_state;
    for (size_t i = 0; i < st->result_count; i++) {
        const struct uring_result *r = &st->results[i];
        struct evmux__op *op = (struct evmux__op *)(uintptr_t)(r->user_data & OP_ADDRESS_MASK);
        unsigned generation = (unsigned)(r->user_data >> OP_GENERATION_SHIFT);
        bool more = (r->flags & IORING_CQE_F_MORE) != 0;
        if (!(r->flags & IORING_CQE_F_BUFFER)) {
            evmux__op_result(loop, op, generation, r->res, NULL, more);
            continue;
        }
        bool datagram = op->type == EVMUX__OP_RECVMSG;
        struct buf_group *g = &st->groups[datagram ? GROUP_DATAGRAMS : GROUP_BYTES];
        unsigned bid = r->flags >> IORING_CQE_BUFFER_SHIFT;
        g->lent_bid = (int)bid;
        if (datagram)
            datagram_result(loop, op, generation, r->res, group_buffer(g, bid), more);
        else
            evmux__op_result(loop, op, generation, r->res, group_buffer(g, bid), more);
        g->lent_bid = -1;
        buffer_put(g, bid);
    }
    st->result_count = 0;
    for (unsigned bgid = 0; bgid < GROUPS; bgid++)
        if (st->groups[bgid].ring != NULL)
            group_publish(&st->groups[bgid]);
}

static void uring_flush(evmux_loop *loop)
{
    struct uring_state *st = loop->backend_state;
    if (io_uring_sq_ready(&st->ring) > 0)
        io_uring_submit(&st->ring);
    st->inline_results = 0;
}

static int uring_datagram_buffers(evmux_loop *loop)
{
    struct uring_state *st = loop->backend_state;
    if (st->groups[GROUP_DATAGRAMS].ring != NULL)
        return 0;
    return group_setup(st, GROUP_DATAGRAMS, DGRAM_BUF_COUNT, DGRAM_BUF_SIZE);
}

static const struct evmux_completion_ops uring_completion = {
    .submit = uring_submit,
    .cancel = uring_cancel,
    .run_completions = uring_run_completions,
    .flush = uring_flush,
    .datagram_buffers = uring_datagram_buffers,
};

static unsigned uring_test_refuse(evmux_loop *loop, unsigned n)
{
    struct uring_state *st = loop->backend_state;
    unsigned left = st->test_refusals;
    st->test_refusals = n;
    return left;
}

const struct evmux_backend evmux__backend_uring = {
    .name = "uring",
    .highest_fd = (1 << POLL_FD_BITS) - 1,
    .init = uring_init,
    .destroy = uring_destroy,
    .change = uring_change,
    .forget = uring_forget,
    .wait = uring_wait,
    .after_fork = uring_after_fork,
    .completion = &uring_completion,
    .test_refuse = uring_test_refuse,
};
