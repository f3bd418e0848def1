/* Timers on a 4-ary min-heap ordered by (deadline, start sequence).
 *
 * A 4-ary heap is shallower than a binary one and keeps a node's children
 * in one cache line of pointers, which matters once there are many timers.
 * The start sequence breaks ties, so timers with equal deadlines fire in the
 * order they were started. Deadlines are kept in nanoseconds even though the
 * API speaks milliseconds, so that rounding can never make a timer early. */
#include "evmux_internal.h"

#include <errno.h>
#include <stdlib.h>

#define HEAP_ARITY 4
#define NS_PER_MS 1000000u

static bool fires_before(const evmux_timer *a, const evmux_timer *b)
{
    if (a->deadline_ns != b->deadline_ns)
        return a->deadline_ns < b->deadline_ns;
    return a->start_seq < b->start_seq;
}

static void heap_place(evmux_timer **heap, size_t i, evmux_timer *t)
{
    heap[i] = t;
    t->heap_index = i;
}

static void sift_up(evmux_timer **heap, size_t i)
{
    evmux_timer *t = heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / HEAP_ARITY;
        if (!fires_before(t, heap[parent]))
            break;
        heap_place(heap, i, heap[parent]);
        i = parent;
    }
    heap_place(heap, i, t);
}

static void sift_down(evmux_timer **heap, size_t count, size_t i)
{
    evmux_timer *t = heap[i];
    for (;;) {
        size_t first = i * HEAP_ARITY + 1;
        if (first >= count)
            break;
        size_t last = first + HEAP_ARITY < count ? first + HEAP_ARITY : count;
        size_t best = first;
        for (size_t c = first + 1; c < last; c++)
            if (fires_before(heap[c], heap[best]))
                best = c;
        if (!fires_before(heap[best], t))
            break;
        heap_place(heap, i, heap[best]);
        i = best;
    }
    heap_place(heap, i, t);
}

static int heap_insert(evmux_loop *loop, evmux_timer *t)
{
    if (loop->timer_count == loop->timer_capacity) {
        size_t cap = loop->timer_capacity ? loop->timer_capacity * 2 : 64;
        evmux_timer **heap = realloc(loop->timer_heap, cap * sizeof *heap);
        if (heap == NULL)
            return -ENOMEM;
        loop->timer_heap = heap;
        loop->timer_capacity = cap;
    }
    size_t i = loop->timer_count++;
    heap_place(loop->timer_heap, i, t);
    sift_up(loop->timer_heap, i);
    return 0;
}

static void heap_remove(evmux_loop *loop, evmux_timer *t)
{
    evmux_timer **heap = loop->timer_heap;
    size_t i = t->heap_index;
    evmux_timer *last = heap[--loop->timer_count];
    if (last == t)
        return;
    heap_place(heap, i, last);
    if (i > 0 && fires_before(last, heap[(i - 1) / HEAP_ARITY]))
        sift_up(heap, i);
    else
        sift_down(heap, loop->timer_count, i);
}

static uint64_t deadline_after(uint64_t now_ns, uint64_t timeout_ms)
{
    if (timeout_ms > (UINT64_MAX - now_ns) / NS_PER_MS)
        return UINT64_MAX;
    return now_ns + timeout_ms * NS_PER_MS;
}

int evmux_timer_init(evmux_loop *loop, evmux_timer *timer, evmux_timer_cb cb)
{
    if (loop == NULL || timer == NULL || cb == NULL)
        return -EINVAL;
    evmux__handle_init(loop, &timer->handle, EVMUX_HANDLE_TIMER);
    timer->cb = cb;
    timer->deadline_ns = 0;
    timer->repeat_ms = 0;
    timer->start_seq = 0;
    timer->heap_index = 0;
    return 0;
}

int evmux_timer_start(evmux_timer *timer, uint64_t timeout_ms, uint64_t repeat_ms)
{
    if (timer == NULL || evmux_is_closing(&timer->handle))
        return -EINVAL;
    evmux_loop *loop = timer->handle.loop;
    if (evmux_is_active(&timer->handle))
        heap_remove(loop, timer);
    timer->deadline_ns = deadline_after(loop->now_ns, timeout_ms);
    timer->repeat_ms = repeat_ms;
    timer->start_seq = loop->timer_seq++;
    int rc = heap_insert(loop, timer);
    if (rc < 0) {
        evmux__handle_deactivate(&timer->handle);
        return rc;
    }
    evmux__handle_activate(&timer->handle);
    return 0;
}

int evmux_timer_stop(evmux_timer *timer)
{
    if (timer == NULL)
        return -EINVAL;
    if (!evmux_is_active(&timer->handle))
        return 0;
    heap_remove(timer->handle.loop, timer);
    evmux__handle_deactivate(&timer->handle);
    return 0;
}

int evmux_timer_again(evmux_timer *timer)
{
    if (timer == NULL || timer->repeat_ms == 0)
        return -EINVAL;
    return evmux_timer_start(timer, timer->repeat_ms, timer->repeat_ms);
}

void evmux_timer_set_repeat(evmux_timer *timer, uint64_t repeat_ms)
{
    timer->repeat_ms = repeat_ms;
}

uint64_t evmux_timer_get_repeat(const evmux_timer *timer)
{
    return timer->repeat_ms;
}

uint64_t evmux_timer_get_due_in(const evmux_timer *timer)
{
    const evmux_loop *loop = timer->handle.loop;
    if (!evmux_is_active(&timer->handle) || timer->deadline_ns <= loop->now_ns)
        return 0;
    uint64_t ns = timer->deadline_ns - loop->now_ns;
    return ns / NS_PER_MS + (ns % NS_PER_MS != 0);
}

/* Timers started during this pass (a callback re-arming itself with 0 ms)
 * wait for the next iteration, so they cannot keep the loop from polling
 * for I/O. Because deadlines come from the cached clock, such a timer's
 * deadline is the latest any due timer can have, and the (deadline, seq)
 * order puts every timer that is still due before it: stopping at the first
 * one skips nothing. */
void evmux__timers_run(evmux_loop *loop)
{
    uint64_t seq_limit = loop->timer_seq;
    while (loop->timer_count > 0) {
        evmux_timer *t = loop->timer_heap[0];
        if (t->deadline_ns > loop->now_ns || t->start_seq >= seq_limit)
            break;
        heap_remove(loop, t);
        if (t->repeat_ms != 0) {
            /* Keep the period from drifting; after a stall, skip the
             * missed ticks instead of firing them in a burst. */
            uint64_t next = deadline_after(t->deadline_ns, t->repeat_ms);
            if (next <= loop->now_ns)
                next = deadline_after(loop->now_ns, t->repeat_ms);
            t->deadline_ns = next;
            t->start_seq = loop->timer_seq++;
            if (heap_insert(loop, t) < 0) /* cannot fail: the slot was just freed */
                evmux__handle_deactivate(&t->handle);
        } else {
            evmux__handle_deactivate(&t->handle);
        }
        t->cb(t);
    }
}

uint64_t evmux__timers_next_ns(const evmux_loop *loop)
{
    if (loop->timer_count == 0)
        return UINT64_MAX;
    const evmux_timer *t = loop->timer_heap[0];
    return t->deadline_ns <= loop->now_ns ? 0 : t->deadline_ns - loop->now_ns;
}

void evmux__timers_free(evmux_loop *loop)
{
    free(loop->timer_heap);
    loop->timer_heap = NULL;
    loop->timer_count = loop->timer_capacity = 0;
}
