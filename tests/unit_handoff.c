/* Handing descriptors to another loop (evmux_handoff).
 *  - Descriptors sent from another thread arrive once each, in the order
 *    sent, with their data, and are usable: each is adopted as a stream
 *    and reads the bytes written to its peer before the send.
 *  - Closing the handle closes every descriptor sent and not delivered,
 *    and the callback never runs for them; a send to a closing handle is
 *    -EPIPE and leaves the descriptor with the caller.
 *  - A callback that closes the handle mid-batch: the rest are closed, not
 *    delivered.
 *  - A send without a descriptor (fd -1) comes after every descriptor sent
 *    before it.
 *  - EVMUX_RUN_ONCE returns after a delivery.
 *  - A handoff keeps its loop alive unless unreferenced; bad arguments. */
#include "unit_util.h"

#include <pthread.h>
#include <stdlib.h>

/* ---- from another thread: every descriptor once, in order, usable ---- */

#define CROSS_COUNT 300

struct cross {
    evmux_handoff handoff;
    int peers[CROSS_COUNT]; /* the sender's ends */
    int next_expected;      /* delivery order */
    int streams_done;
    int bad;
};

struct adopted {
    evmux_stream stream;
    struct cross *cross;
    uint32_t index;
};

static void *cross_sender(void *arg)
{
    struct cross *x = arg;
    for (uint32_t i = 0; i < CROSS_COUNT; i++) {
        int sv[2];
        CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        CHECK_EQ(write(sv[1], &i, sizeof i), (ssize_t)sizeof i);
        x->peers[i] = sv[1];
        CHECK_OK(evmux_handoff_send(&x->handoff, sv[0], (void *)(uintptr_t)i));
    }
    return NULL;
}

static void adopted_closed(evmux_handle *h)
{
    free(h->data);
}

static void adopted_read(evmux_stream *s, ssize_t nread, char *buf)
{
    struct adopted *a = s->handle.data;
    uint32_t got = 0;
    if (nread != (ssize_t)sizeof got) {
        a->cross->bad++;
    } else {
        memcpy(&got, buf, sizeof got);
        if (got != a->index)
            a->cross->bad++;
    }
    evmux_close(&s->handle, adopted_closed);
    if (++a->cross->streams_done == CROSS_COUNT)
        evmux_close(&a->cross->handoff.handle, NULL);
}

static void cross_received(evmux_handoff *h, int fd, void *data)
{
    struct cross *x = (struct cross *)h;
    uint32_t index = (uint32_t)(uintptr_t)data;
    CHECK_EQ(index, x->next_expected);
    x->next_expected++;
    struct adopted *a = calloc(1, sizeof *a);
    CHECK(a != NULL);
    a->cross = x;
    a->index = index;
    a->stream.handle.data = a;
    CHECK_OK(evmux_stream_init(h->handle.loop, &a->stream));
    CHECK_OK(evmux_stream_open(&a->stream, fd));
    CHECK_OK(evmux_stream_read_start(&a->stream, adopted_read));
}

static void test_from_another_thread(void)
{
    evmux_loop *loop = unit_loop_new();
    static struct cross x;
    memset(&x, 0, sizeof x);
    CHECK_OK(evmux_handoff_init(loop, &x.handoff, cross_received));
    pthread_t sender;
    CHECK_EQ(pthread_create(&sender, NULL, cross_sender, &x), 0);
    /* The handoff keeps the loop running until the last stream closes it. */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(pthread_join(sender, NULL), 0);
    CHECK_EQ(x.next_expected, CROSS_COUNT);
    CHECK_EQ(x.streams_done, CROSS_COUNT);
    CHECK_EQ(x.bad, 0);
    for (int i = 0; i < CROSS_COUNT; i++) { /* each adopted end was closed */
        CHECK_EQ(unit_drain(x.peers[i]), 0);
        close(x.peers[i]);
    }
    unit_loop_finish(loop);
}

/* ---- closing with descriptors undelivered ---- */

static int never_calls;

static void never_cb(evmux_handoff *h, int fd, void *data)
{
    (void)h, (void)fd, (void)data;
    never_calls++;
}

static void test_close_closes_undelivered(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_handoff h;
    CHECK_OK(evmux_handoff_init(loop, &h, never_cb));
    int peers[4];
    for (int i = 0; i < 4; i++) {
        int sv[2];
        unit_socketpair(sv);
        peers[i] = sv[1];
        CHECK_OK(evmux_handoff_send(&h, sv[0], NULL));
    }
    never_calls = 0;
    CHECK_OK(evmux_close(&h.handle, NULL));
    /* The sent ends are closed at once: their peers read EOF. */
    for (int i = 0; i < 4; i++) {
        char byte;
        CHECK_EQ(read(peers[i], &byte, 1), 0);
    }
    int sv[2];
    unit_socketpair(sv);
    CHECK_EQ(evmux_handoff_send(&h, sv[0], NULL), -EPIPE);
    CHECK(unit_fd_is_open(sv[0])); /* still the caller's */
    unit_loop_finish(loop);
    CHECK_EQ(never_calls, 0);
    close(sv[0]);
    close(sv[1]);
    for (int i = 0; i < 4; i++)
        close(peers[i]);
}

/* ---- a callback that closes the handle mid-batch ---- */

static int batch_calls;

static void close_on_second(evmux_handoff *h, int fd, void *data)
{
    (void)data;
    batch_calls++;
    close(fd);
    if (batch_calls == 2)
        CHECK_OK(evmux_close(&h->handle, NULL));
}

static void test_close_inside_callback(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_handoff h;
    CHECK_OK(evmux_handoff_init(loop, &h, close_on_second));
    int peers[5];
    for (int i = 0; i < 5; i++) {
        int sv[2];
        unit_socketpair(sv);
        peers[i] = sv[1];
        CHECK_OK(evmux_handoff_send(&h, sv[0], NULL));
    }
    batch_calls = 0;
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(batch_calls, 2);
    for (int i = 0; i < 5; i++) { /* delivered and closed, or closed with the handle */
        char byte;
        CHECK_EQ(read(peers[i], &byte, 1), 0);
        close(peers[i]);
    }
    unit_loop_finish(loop);
}

/* ---- a message without a descriptor comes in order ---- */

struct ordered {
    int fds_seen, done_at; /* done_at: fds seen when the message came */
};

static void ordered_cb(evmux_handoff *h, int fd, void *data)
{
    struct ordered *o = h->handle.data;
    if (fd < 0) {
        CHECK(data == (void *)o);
        o->done_at = o->fds_seen;
        CHECK_OK(evmux_close(&h->handle, NULL)); /* nothing queued after it */
        return;
    }
    CHECK_EQ((uintptr_t)data, (uintptr_t)o->fds_seen);
    o->fds_seen++;
    close(fd);
}

/* Three descriptors, then "no more" (fd -1), from another thread: the
 * message comes after all three, never before (as a separate async would). */
struct ordered_sender {
    evmux_handoff *h;
    struct ordered *o;
};

static void *ordered_send(void *arg)
{
    struct ordered_sender *os = arg;
    for (uintptr_t i = 0; i < 3; i++) {
        int sv[2];
        CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        close(sv[1]);
        CHECK_OK(evmux_handoff_send(os->h, sv[0], (void *)i));
    }
    CHECK_OK(evmux_handoff_send(os->h, -1, os->o));
    return NULL;
}

static void test_message_in_order(void)
{
    for (int round = 0; round < 50; round++) {
        evmux_loop *loop = unit_loop_new();
        evmux_handoff h;
        struct ordered o = {0, -1};
        CHECK_OK(evmux_handoff_init(loop, &h, ordered_cb));
        h.handle.data = &o;
        struct ordered_sender os = {&h, &o};
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, ordered_send, &os), 0);
        CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* until the message closes it */
        CHECK_EQ(pthread_join(t, NULL), 0);
        CHECK_EQ(o.done_at, 3);
        unit_loop_finish(loop);
    }
}

/* ---- EVMUX_RUN_ONCE returns once a delivery ran ---- */

static int once_calls;

static void once_cb(evmux_handoff *h, int fd, void *data)
{
    (void)h, (void)data;
    once_calls++;
    close(fd);
}

static void *send_later(void *arg)
{
    unit_sleep_ms(50);
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(sv[1]);
    CHECK_OK(evmux_handoff_send(arg, sv[0], NULL));
    return NULL;
}

static int guard_fired;

static void guard_cb(evmux_timer *t)
{
    (void)t;
    guard_fired = 1;
}

static void test_run_once_returns(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_handoff h;
    CHECK_OK(evmux_handoff_init(loop, &h, once_cb));
    /* A referenced timer: the wait could end with it too, and must not. */
    evmux_timer guard;
    CHECK_OK(evmux_timer_init(loop, &guard, guard_cb));
    CHECK_OK(evmux_timer_start(&guard, 3000, 0));
    once_calls = guard_fired = 0;
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, send_later, &h), 0);
    uint64_t t0 = unit_mono_ns();
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    uint64_t ms = (unit_mono_ns() - t0) / 1000000;
    CHECK_EQ(pthread_join(t, NULL), 0);
    CHECK_EQ(once_calls, 1);
    CHECK_EQ(guard_fired, 0);
    CHECK(ms < 2000); /* the delivery ended the wait, not the timer */
    CHECK_OK(evmux_close(&guard.handle, NULL));
    CHECK_OK(evmux_close(&h.handle, NULL));
    unit_loop_finish(loop);
}

/* ---- reference, errors ---- */

static void test_ref_and_errors(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_handoff h;
    CHECK_EQ(evmux_handoff_init(NULL, &h, never_cb), -EINVAL);
    CHECK_EQ(evmux_handoff_init(loop, NULL, never_cb), -EINVAL);
    CHECK_EQ(evmux_handoff_init(loop, &h, NULL), -EINVAL);
    CHECK_OK(evmux_handoff_init(loop, &h, never_cb));
    CHECK_EQ(evmux_handoff_send(NULL, 0, NULL), -EINVAL);
    CHECK_EQ(evmux_handoff_send(&h, -2, NULL), -EINVAL);
    CHECK_EQ(evmux_is_active(&h.handle), 1);
    CHECK_EQ(evmux_loop_alive(loop), 1);
    evmux_unref(&h.handle);
    CHECK_EQ(evmux_loop_alive(loop), 0);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* returns: nothing holds it */
    CHECK_EQ(evmux_loop_free(loop), -EBUSY);      /* still open */
    CHECK_OK(evmux_close(&h.handle, NULL));
    CHECK_EQ(evmux_is_active(&h.handle), 0);
    unit_loop_finish(loop);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(60);
    RUN_TEST(test_from_another_thread);
    RUN_TEST(test_close_closes_undelivered);
    RUN_TEST(test_close_inside_callback);
    RUN_TEST(test_message_in_order);
    RUN_TEST(test_run_once_returns);
    RUN_TEST(test_ref_and_errors);
    return unit_end();
}
