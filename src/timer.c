/* Timers on a 4-ary min-heap ordered by (deadline, start sequence).
 *
 * A 4-ary heap is shallower than a binary one, and its entries carry the
 * sort key, so a sift reads a few adjacent entries instead of chasing
 * pointers to timers scattered through memory.
 * The start sequence breaks ties, so timers with equal deadlines fire in the
 * order they were started. Deadlines are kept in nanoseconds even though the
 * API speaks milliseconds, so that rounding can never make a timer early. */
#include "evmux_internal.h"

#include <errno.h>
#include <stdlib.h>

#define HEAP_ARITY 4
#define NS_PER_MS 1000000u

static inline bool key_before(uint64_t deadline_a, uint64_t seq_a, uint64_t deadline_b,
                              uint64_t seq_b)
{
    return deadline_a < deadline_b || (deadline_a == deadline_b && seq_a < seq_b);
}

static inline bool fires_before(const struct evmux_timer_slot *a, const struct evmux_timer_slot *b)
{
    return key_before(a->deadline_ns, a->start_seq, b->deadline_ns, b->start_seq);
}

static inline void heap_place(struct evmux_timer_slot *heap, size_t i, struct evmux_timer_slot e)
{
    heap[i] = e;
    e.timer->heap_index = i;
}

static void sift_up(struct evmux_timer_slot *heap, size_t i)
{
    struct evmux_timer_slot e = heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / HEAP_ARITY;
        if (!fires_before(&e, &heap[parent]))
            break;
        heap_place(heap, i, heap[parent]);
        i = parent;
    }
    heap_place(heap, i, e);
}

/* The smallest child's key stays in registers while the siblings are
 * compared against it. */
static void sift_down(struct evmux_timer_slot *heap, size_t count, size_t i)
{
    struct evmux_timer_slot e = heap[i];
    for (;;) {
        size_t first = i * HEAP_ARITY + 1;
        if (first >= count)
            break;
        const struct evmux_timer_slot *child = &heap[first];
        size_t n = count - first < HEAP_ARITY ? count - first : HEAP_ARITY;
        size_t best = 0;
        uint64_t best_deadline = child[0].deadline_ns, best_seq = child[0].start_seq;
        for (size_t k = 1; k < n; k++) {
            if (key_before(child[k].deadline_ns, child[k].start_seq, best_deadline, best_seq)) {
                best = k;
                best_deadline = child[k].deadline_ns;
                best_seq = child[k].start_seq;
            }
        }
        if (!key_before(best_deadline, best_seq, e.deadline_ns, e.start_seq))
            break;
        heap_place(heap, i, child[best]);
        i = first + best;
    }
    heap_place(heap, i, e);
}

/* Restores heap order around entry i after its key changed either way. */
static void sift(evmux_loop *loop, size_t i)
{
    struct evmux_timer_slot *heap = loop->timer_heap;
    if (i > 0 && fires_before(&heap[i], &heap[(i - 1) / HEAP_ARITY]))
        sift_up(heap, i);
    else
        sift_down(heap, loop->timer_count, i);
}

static int heap_insert(evmux_loop *loop, evmux_timer *t)
{
    if (loop->timer_count == loop->timer_capacity) {
        size_t cap = loop->timer_capacity ? loop->timer_capacity * 2 : 64;
        struct evmux_timer_slot *heap = realloc(loop->timer_heap, cap * sizeof *heap);
        if (heap == NULL)
            return -ENOMEM;
        loop->timer_heap = heap;
        loop->timer_capacity = cap;
    }
    size_t i = loop->timer_count++;
    heap_place(loop->timer_heap, i, (struct evmux_timer_slot){t->deadline_ns, t->start_seq, t});
    sift_up(loop->timer_heap, i);
    return 0;
}

static void heap_remove(evmux_loop *loop, evmux_timer *t)
{
    struct evmux_timer_slot *heap = loop->timer_heap;
    size_t i = t->heap_index;
    struct evmux_timer_slot last = heap[--loop->timer_count];
    if (last.timer == t)
        return;
    heap_place(heap, i, last);
    sift(loop, i);
}

/* Gives a timer in the heap a new deadline and start order in place: one
 * sift instead of a removal and an insertion. */
static void heap_rekey(evmux_loop *loop, evmux_timer *t)
{
    struct evmux_timer_slot *slot = &loop->timer_heap[t->heap_index];
    slot->deadline_ns = t->deadline_ns;
    slot->start_seq = t->start_seq;
    sift(loop, t->heap_index);
}

/* Saturates instead of wrapping; only constant divisions on this hot path. */
static uint64_t deadline_after(uint64_t now_ns, uint64_t timeout_ms)
{
    if (timeout_ms > UINT64_MAX / NS_PER_MS)
        return UINT64_MAX;
    uint64_t ns = timeout_ms * NS_PER_MS;
    return ns > UINT64_MAX - now_ns ? UINT64_MAX : now_ns + ns;
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
    if (timer == NULL || evmux__closing(&timer->handle))
        return -EINVAL;
    evmux_loop *loop = timer->handle.loop;
    timer->deadline_ns = deadline_after(loop->now_ns, timeout_ms);
    timer->repeat_ms = repeat_ms;
    timer->start_seq = loop->timer_seq++;
    if (timer->handle.flags & EVMUX_FLAG_ACTIVE) {
        heap_rekey(loop, timer);
        return 0;
    }
    int rc = heap_insert(loop, timer);
    if (rc < 0)
        return rc;
    evmux__handle_activate(&timer->handle);
    return 0;
}

int evmux_timer_stop(evmux_timer *timer)
{
    if (timer == NULL)
        return -EINVAL;
    if (!(timer->handle.flags & EVMUX_FLAG_ACTIVE))
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
        struct evmux_timer_slot top = loop->timer_heap[0];
        evmux_timer *t = top.timer;
        if (top.deadline_ns > loop->now_ns || top.start_seq >= seq_limit)
            break;
        if (t->repeat_ms != 0) {
            /* Keep the period from drifting; after a stall, skip the
             * missed ticks instead of firing them in a burst. */
            uint64_t next = deadline_after(t->deadline_ns, t->repeat_ms);
            if (next <= loop->now_ns)
                next = deadline_after(loop->now_ns, t->repeat_ms);
            t->deadline_ns = next;
            t->start_seq = loop->timer_seq++;
            heap_rekey(loop, t);
        } else {
            heap_remove(loop, t);
            evmux__handle_deactivate(&t->handle);
        }
        t->cb(t);
    }
}

uint64_t evmux__timers_next_ns(const evmux_loop *loop)
{
    if (loop->timer_count == 0)
        return UINT64_MAX;
    uint64_t deadline = loop->timer_heap[0].deadline_ns;
    return deadline <= loop->now_ns ? 0 : deadline - loop->now_ns;
}

void evmux__timers_free(evmux_loop *loop)
{
    free(loop->timer_heap);
    loop->timer_heap = NULL;
    loop->timer_count = loop->timer_capacity = 0;
}
