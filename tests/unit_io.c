/* Descriptor watchers: event masks, interest changes, level triggering,
 * hang-up, one watcher per fd, FD_SETSIZE under select, and the interest
 * bookkeeping counters. */
#include "evmux_internal.h"
#include "unit_util.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

/* What the callbacks saw. */
struct rec {
    int calls;
    unsigned last;
    unsigned all; /* OR of every mask seen */
    int drain;    /* read the data in the callback */
    int stop;     /* stop the watcher in the callback */
    int bad;      /* a callback with an empty mask */
};

static void rec_cb(evmux_io *io, unsigned events)
{
    struct rec *r = (struct rec *)io->handle.data;
    r->calls++;
    r->last = events;
    r->all |= events;
    if (events == 0)
        r->bad++;
    if (r->drain)
        unit_drain(evmux_io_fd(io));
    if (r->stop)
        CHECK_OK(evmux_io_stop(io));
}

struct fixture {
    evmux_loop *loop;
    int sv[2];
    evmux_io io;
    struct rec rec;
    struct unit_guard guard;
};

static void fx_setup(struct fixture *f)
{
    memset(f, 0, sizeof *f);
    f->loop = unit_loop_new();
    unit_socketpair(f->sv);
    CHECK_OK(evmux_io_init(f->loop, &f->io, f->sv[0], rec_cb));
    f->io.handle.data = &f->rec;
    unit_guard_start(f->loop, &f->guard, 5000);
}

static void fx_teardown(struct fixture *f)
{
    CHECK_EQ(f->guard.fired, 0);
    CHECK_EQ(f->rec.bad, 0);
    CHECK_OK(evmux_close(&f->io.handle, NULL));
    unit_guard_close(&f->guard);
    unit_loop_finish(f->loop);
    close(f->sv[0]);
    close(f->sv[1]);
}

static void test_readable(void)
{
    struct fixture f;
    fx_setup(&f);
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_EQ(evmux_is_active(&f.io.handle), 1);

    /* Nothing written yet: a writable socket must not wake a reader. */
    for (int i = 0; i < 3; i++)
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 0);

    unit_write_byte(f.sv[1]);
    f.rec.drain = 1;
    f.rec.stop = 1;
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(f.rec.calls, 1);
    CHECK_EQ(f.rec.last, EVMUX_READABLE);
    CHECK_EQ(evmux_is_active(&f.io.handle), 0);
    fx_teardown(&f);
}

static void test_writable(void)
{
    struct fixture f;
    fx_setup(&f);
    f.rec.stop = 1;
    CHECK_OK(evmux_io_start(&f.io, EVMUX_WRITABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(f.rec.calls, 1);
    CHECK_EQ(f.rec.last, EVMUX_WRITABLE);

    /* Readable data does not leak into a writable-only watcher. */
    unit_write_byte(f.sv[1]);
    CHECK_OK(evmux_io_start(&f.io, EVMUX_WRITABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(f.rec.calls, 2);
    CHECK_EQ(f.rec.last, EVMUX_WRITABLE);
    fx_teardown(&f);
}

static void test_both(void)
{
    struct fixture f;
    fx_setup(&f);
    f.rec.stop = 1;

    /* Only writable holds. */
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE | EVMUX_WRITABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(f.rec.calls, 1);
    CHECK_EQ(f.rec.last, EVMUX_WRITABLE);

    /* Both hold: one callback with both bits. */
    unit_write_byte(f.sv[1]);
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE | EVMUX_WRITABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(f.rec.calls, 2);
    CHECK_EQ(f.rec.last, EVMUX_READABLE | EVMUX_WRITABLE);
    fx_teardown(&f);
}

static void test_change_interest(void)
{
    struct fixture f;
    fx_setup(&f);

    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 0);

    /* READABLE -> WRITABLE on a started watcher. */
    CHECK_OK(evmux_io_start(&f.io, EVMUX_WRITABLE));
    CHECK_EQ(evmux_is_active(&f.io.handle), 1);
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 1);
    CHECK_EQ(f.rec.last, EVMUX_WRITABLE);

    /* And back: no data, so silence again. */
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    for (int i = 0; i < 3; i++)
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 1);

    unit_write_byte(f.sv[1]);
    f.rec.drain = 1;
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_ONCE));
    CHECK_EQ(f.rec.calls, 2);
    CHECK_EQ(f.rec.last, EVMUX_READABLE);
    CHECK_EQ(f.rec.all, EVMUX_READABLE | EVMUX_WRITABLE);
    fx_teardown(&f);
}

static void test_stop_and_zero_interest(void)
{
    struct fixture f;
    fx_setup(&f);
    unit_write_byte(f.sv[1]); /* stays unread: readable throughout */

    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 1);

    /* Interest 0 stops the watcher. */
    CHECK_OK(evmux_io_start(&f.io, 0));
    CHECK_EQ(evmux_is_active(&f.io.handle), 0);
    CHECK_EQ(evmux_loop_alive(f.loop), 0);
    for (int i = 0; i < 3; i++)
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 1);

    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 2);

    CHECK_OK(evmux_io_stop(&f.io));
    CHECK_EQ(evmux_is_active(&f.io.handle), 0);
    for (int i = 0; i < 3; i++)
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 2);
    /* A DEFAULT run has nothing to wait for. */
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(f.rec.calls, 2);

    /* Stopping a stopped watcher is harmless. */
    CHECK_OK(evmux_io_stop(&f.io));
    CHECK_OK(evmux_io_start(&f.io, 0));
    fx_teardown(&f);
}

static void test_bad_mask(void)
{
    struct fixture f;
    fx_setup(&f);

    CHECK_EQ(evmux_io_start(&f.io, 1u << 7), -EINVAL);
    CHECK_EQ(evmux_io_start(&f.io, EVMUX_READABLE | (1u << 7)), -EINVAL);
    CHECK_EQ(evmux_io_start(&f.io, ~0u), -EINVAL);
    CHECK_EQ(evmux_is_active(&f.io.handle), 0);
    CHECK_EQ(evmux_loop_alive(f.loop), 0);

    /* A refused change leaves a started watcher as it was. */
    unit_write_byte(f.sv[1]);
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_EQ(evmux_io_start(&f.io, EVMUX_WRITABLE | (1u << 7)), -EINVAL);
    CHECK_EQ(evmux_is_active(&f.io.handle), 1);
    f.rec.stop = 1;
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(f.rec.calls, 1);
    CHECK_EQ(f.rec.last, EVMUX_READABLE);
    fx_teardown(&f);
}

static void test_one_watcher_per_fd(void)
{
    struct fixture f;
    evmux_io other;
    struct rec orec = { 0 };
    fx_setup(&f);
    CHECK_OK(evmux_io_init(f.loop, &other, f.sv[0], rec_cb));
    other.handle.data = &orec;

    unit_write_byte(f.sv[1]);
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_EQ(evmux_io_start(&other, EVMUX_READABLE), -EEXIST);
    CHECK_EQ(evmux_io_start(&other, EVMUX_WRITABLE), -EEXIST);
    CHECK_EQ(evmux_is_active(&other.handle), 0);
    /* Restarting the owner with another mask is no conflict. */
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE | EVMUX_WRITABLE));
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));

    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 1);
    CHECK_EQ(orec.calls, 0);

    /* Once the first is stopped the fd is free for the second. */
    CHECK_OK(evmux_io_stop(&f.io));
    CHECK_OK(evmux_io_start(&other, EVMUX_READABLE));
    CHECK_EQ(evmux_io_start(&f.io, EVMUX_READABLE), -EEXIST);
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 1);
    CHECK_EQ(orec.calls, 1);
    CHECK_EQ(orec.last, EVMUX_READABLE);

    CHECK_OK(evmux_close(&other.handle, NULL));
    fx_teardown(&f);
}

static void test_level_triggered(void)
{
    struct fixture f;
    fx_setup(&f);
    CHECK(write(f.sv[1], "abc", 3) == 3);
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));

    /* Unread data fires again on every iteration. */
    for (int i = 0; i < 3; i++)
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 3);
    for (int i = 0; i < 3; i++)
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_ONCE));
    CHECK_EQ(f.rec.calls, 6);
    CHECK_EQ(f.rec.all, EVMUX_READABLE);

    /* Partial reads keep it readable; a drained socket goes quiet. */
    char c;
    CHECK(read(f.sv[0], &c, 1) == 1);
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 7);
    f.rec.drain = 1;
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 8);
    for (int i = 0; i < 3; i++)
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(f.rec.calls, 8);
    fx_teardown(&f);
}

static void test_peer_close(void)
{
    /* Full close of the peer, reader only. */
    struct fixture f;
    fx_setup(&f);
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    close(f.sv[1]);
    f.sv[1] = -1;
    f.rec.stop = 1;
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(f.rec.calls, 1);
    CHECK_EQ(f.rec.last, EVMUX_READABLE);
    char c;
    CHECK(read(f.sv[0], &c, 1) == 0);

    /* A hang-up is reported as every watched event, and the write then
     * fails instead of blocking. */
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE | EVMUX_WRITABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(f.rec.calls, 2);
    CHECK_EQ(f.rec.last, EVMUX_READABLE | EVMUX_WRITABLE);
    CHECK(send(f.sv[0], "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE);
    fx_teardown(&f);

    /* Half close: shutdown(SHUT_WR) of the peer gives EOF to the reader. */
    fx_setup(&f);
    CHECK(write(f.sv[1], "hi", 2) == 2);
    CHECK(shutdown(f.sv[1], SHUT_WR) == 0);
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    f.rec.stop = 1;
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(f.rec.calls, 1);
    CHECK_EQ(f.rec.last, EVMUX_READABLE);
    char buf[8];
    CHECK(read(f.sv[0], buf, sizeof buf) == 2);
    CHECK(read(f.sv[0], buf, sizeof buf) == 0);
    /* EOF stays readable (level-triggered). */
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(f.rec.calls, 2);
    CHECK_EQ(f.rec.last, EVMUX_READABLE);
    fx_teardown(&f);
}

static void test_io_fd(void)
{
    struct fixture f;
    fx_setup(&f);
    CHECK_EQ(evmux_io_fd(&f.io), f.sv[0]);
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_EQ(evmux_io_fd(&f.io), f.sv[0]);
    CHECK_OK(evmux_io_stop(&f.io));
    CHECK_EQ(evmux_io_fd(&f.io), f.sv[0]);
    fx_teardown(&f);
}

static struct evmux_loop_stats stats_of(evmux_loop *loop)
{
    struct evmux_loop_stats s;
    memset(&s, 0xa5, sizeof s);
    evmux__loop_stats(loop, &s);
    return s;
}

/* Interest changes are counted (and, under epoll, cost a syscall) only when
 * the interest really changes; steady traffic costs nothing. Counters are
 * read after a NOWAIT run so that a backend that applies changes lazily,
 * just before waiting, is measured the same way. */
static void test_interest_bookkeeping(void)
{
    struct fixture f;
    fx_setup(&f);
    int epoll = unit_backend_is(f.loop, "epoll");
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    struct evmux_loop_stats s0 = stats_of(f.loop);

    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    struct evmux_loop_stats s1 = stats_of(f.loop);
    CHECK(s1.interest_changes > s0.interest_changes);
    if (epoll)
        CHECK_EQ(s1.kernel_ctl_calls - s0.kernel_ctl_calls, 1);

    /* Same mask again: nothing to tell the backend. */
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    struct evmux_loop_stats s2 = stats_of(f.loop);
    CHECK_EQ(s2.interest_changes, s1.interest_changes);
    CHECK_EQ(s2.kernel_ctl_calls, s1.kernel_ctl_calls);

    /* 100 readable events on an unchanged watcher. */
    f.rec.drain = 1;
    for (int i = 0; i < 100; i++) {
        unit_write_byte(f.sv[1]);
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_ONCE));
        CHECK_EQ(f.rec.calls, i + 1);
        CHECK_EQ(f.rec.last, EVMUX_READABLE);
    }
    struct evmux_loop_stats s3 = stats_of(f.loop);
    CHECK_EQ(s3.interest_changes, s2.interest_changes);
    CHECK_EQ(s3.kernel_ctl_calls, s2.kernel_ctl_calls);
    CHECK(s3.iterations >= s2.iterations + 100);

    /* A real change is counted once; epoll needs exactly one epoll_ctl. */
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE | EVMUX_WRITABLE));
    f.rec.stop = 1; /* the socket is writable: stop after one callback */
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    struct evmux_loop_stats s4 = stats_of(f.loop);
    CHECK(s4.interest_changes > s3.interest_changes);
    if (epoll) {
        /* The change costs one call; the stop in the callback at most one
         * more (a backend may defer removal). */
        CHECK(s4.kernel_ctl_calls - s3.kernel_ctl_calls >= 1);
        CHECK(s4.kernel_ctl_calls - s3.kernel_ctl_calls <= 2);
    }
    CHECK_EQ(f.rec.last, EVMUX_WRITABLE);
    fx_teardown(&f);

    /* The change alone, measured without a stop mixed in. */
    fx_setup(&f);
    CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    s0 = stats_of(f.loop);
    CHECK_OK(evmux_io_start(&f.io, EVMUX_WRITABLE));
    f.rec.stop = 0;
    CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    s1 = stats_of(f.loop);
    CHECK_EQ(f.rec.calls, 1);
    CHECK(s1.interest_changes > s0.interest_changes);
    if (epoll)
        CHECK_EQ(s1.kernel_ctl_calls - s0.kernel_ctl_calls, 1);
    /* Writable events while the mask stays put cost nothing either. */
    for (int i = 0; i < 20; i++)
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
    s2 = stats_of(f.loop);
    CHECK_EQ(f.rec.calls, 21);
    CHECK_EQ(s2.interest_changes, s1.interest_changes);
    CHECK_EQ(s2.kernel_ctl_calls, s1.kernel_ctl_calls);
    fx_teardown(&f);
}

/* Every backend treats a descriptor it cannot wait for the same way: a
 * regular file (and /dev/null, which epoll refuses too) is always ready,
 * as poll(2) reports it, and a number that is not open is -EBADF at once
 * (select and poll used to take it and then never fire). */
static void check_always_ready(evmux_loop *loop, int fd)
{
    evmux_io io;
    struct rec r = { .stop = 0 };
    CHECK_OK(evmux_io_init(loop, &io, fd, rec_cb));
    io.handle.data = &r;
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE | EVMUX_WRITABLE));
    CHECK_EQ(evmux_is_active(&io.handle), 1);
    /* Level-triggered and never blocking: each iteration reports it. */
    for (int i = 1; i <= 3; i++) {
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
        CHECK_EQ(r.calls, i);
        CHECK_EQ(r.last, EVMUX_READABLE | EVMUX_WRITABLE);
    }
    CHECK_OK(evmux_io_start(&io, EVMUX_WRITABLE));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(r.calls, 4);
    CHECK_EQ(r.last, EVMUX_WRITABLE);
    /* Stopped: never again, and the loop has nothing left to run. */
    CHECK_OK(evmux_io_stop(&io));
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(r.calls, 4);
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(r.calls, 5);
    CHECK_EQ(r.bad, 0);
    CHECK_OK(evmux_close(&io.handle, NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(r.calls, 5);
}

static void test_unwaitable_descriptors(void)
{
    evmux_loop *loop = unit_loop_new();
    char path[] = "/tmp/evmux-unit-io-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    CHECK(write(fd, "data", 4) == 4);
    check_always_ready(loop, fd);
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    CHECK(null_fd >= 0);
    check_always_ready(loop, null_fd);

    /* A number that is not open. */
    int sv[2];
    unit_socketpair(sv);
    int dead = sv[0];
    close(sv[0]);
    evmux_io dio; /* must outlive its close callback */
    struct rec r = { .stop = 1 };
    CHECK_OK(evmux_io_init(loop, &dio, dead, rec_cb));
    dio.handle.data = &r;
    CHECK_EQ(evmux_io_start(&dio, EVMUX_READABLE), -EBADF);
    CHECK_EQ(evmux_is_active(&dio.handle), 0);
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_close(&dio.handle, NULL));
    close(sv[1]);
    unit_loop_finish(loop);
    CHECK_EQ(r.calls, 0);
    close(fd);
    close(null_fd);
}

/* Raises the soft descriptor limit so that numbers past FD_SETSIZE exist. */
static int raise_nofile(rlim_t want)
{
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur >= want)
        return 1;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
        return 0;
    rl.rlim_cur = want;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

static void check_big_fd(int target)
{
    struct fixture f;
    fx_setup(&f);
    int big = dup2(f.sv[0], target);
    CHECK_EQ(big, target);
    fcntl(big, F_SETFD, FD_CLOEXEC);

    evmux_io bio;
    struct rec brec = { .drain = 1, .stop = 1 };
    CHECK_OK(evmux_io_init(f.loop, &bio, big, rec_cb));
    bio.handle.data = &brec;
    unit_write_byte(f.sv[1]);

    int rc = evmux_io_start(&bio, EVMUX_READABLE);
    if (unit_backend_is(f.loop, "select") && target >= FD_SETSIZE) {
        CHECK_EQ(rc, -ERANGE);
        CHECK_EQ(evmux_is_active(&bio.handle), 0);
        CHECK_EQ(evmux_loop_alive(f.loop), 0);
        /* The loop carries on, and a small fd still works beside it. */
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_NOWAIT));
        CHECK_EQ(brec.calls, 0);
        f.rec.drain = 1;
        f.rec.stop = 1;
        CHECK_OK(evmux_io_start(&f.io, EVMUX_READABLE));
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
        CHECK_EQ(f.rec.calls, 1);
        CHECK_EQ(f.rec.last, EVMUX_READABLE);
    } else {
        CHECK_OK(rc);
        CHECK_OK(evmux_run(f.loop, EVMUX_RUN_DEFAULT));
        CHECK_EQ(brec.calls, 1);
        CHECK_EQ(brec.last, EVMUX_READABLE);
    }
    CHECK_EQ(brec.bad, 0);
    CHECK_OK(evmux_close(&bio.handle, NULL));
    fx_teardown(&f);
    close(big);
}

static void test_fd_setsize(void)
{
    if (!raise_nofile(FD_SETSIZE + 64)) {
        UNIT_SKIP("cannot raise RLIMIT_NOFILE past FD_SETSIZE");
    }
    check_big_fd(FD_SETSIZE - 1); /* the last number select can take */
    check_big_fd(FD_SETSIZE);     /* the first it cannot */
    check_big_fd(FD_SETSIZE + 5);
}

/* A child forks while the parent's watcher is stopped, its removal still
 * owed to the kernel, and the parent starts it again right after: the
 * child's evmux_loop_fork must leave the parent's registration alone.
 * (On epoll the child once applied the owed removal to the epoll set the
 * two processes share, and the parent's restarted watcher, which it
 * believed registered, never fired again.) */
struct fork_between {
    evmux_io *watcher;
    int child_ok;
};

static void fork_between_cb(evmux_timer *t)
{
    struct fork_between *fb = t->handle.data;
    CHECK_OK(evmux_io_stop(fb->watcher));
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(evmux_loop_fork(t->handle.loop) == 0 ? 0 : 1);
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    fb->child_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    CHECK_OK(evmux_io_start(fb->watcher, EVMUX_READABLE));
}

static void test_fork_between_stop_and_start(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    unit_socketpair(sv);
    struct rec r = { .drain = 1 };
    evmux_io io;
    CHECK_OK(evmux_io_init(loop, &io, sv[0], rec_cb));
    io.handle.data = &r;
    CHECK_OK(evmux_io_start(&io, EVMUX_READABLE));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT)); /* registered with the kernel */
    struct fork_between fb = { .watcher = &io };
    evmux_timer t;
    CHECK_OK(evmux_timer_init(loop, &t, fork_between_cb));
    t.handle.data = &fb;
    CHECK_OK(evmux_timer_start(&t, 1, 0));
    while (evmux_is_active(&t.handle))
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(fb.child_ok, 1);
    unit_write_byte(sv[1]);
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 2000);
    while (r.calls == 0 && !guard.fired)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(guard.fired, 0);
    CHECK_EQ(r.calls, 1);
    unit_guard_close(&guard);
    CHECK_OK(evmux_close(&io.handle, NULL));
    CHECK_OK(evmux_close(&t.handle, NULL));
    close(sv[0]);
    close(sv[1]);
    unit_loop_finish(loop);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(30);
    RUN_TEST(test_readable);
    RUN_TEST(test_writable);
    RUN_TEST(test_both);
    RUN_TEST(test_change_interest);
    RUN_TEST(test_stop_and_zero_interest);
    RUN_TEST(test_bad_mask);
    RUN_TEST(test_one_watcher_per_fd);
    RUN_TEST(test_level_triggered);
    RUN_TEST(test_peer_close);
    RUN_TEST(test_io_fd);
    RUN_TEST(test_interest_bookkeeping);
    RUN_TEST(test_unwaitable_descriptors);
    RUN_TEST(test_fork_between_stop_and_start);
    RUN_TEST(test_fd_setsize);
    return unit_end();
}
