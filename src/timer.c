/* Timers on a 4-ary min-heap of 16-byte entries {key, timer}.
 *
 * With a million timers the heap is far larger than the caches, and the
 * cost is the cache misses waited for. Each entry carries its whole sort key
 * as one integer, so a sift compares integers and reads no timer, and the
 * array is placed so that the four children of a node fill one 64-byte
 * line: a step down reads one line (plus the moved timer's heap_index),
 * and the lines it may read next are prefetched before it decides.
 *
 * key = (bucket << SEQ_BITS) | seq:
 *  - bucket: the deadline in 2^16 ns units (65.5 us) from a per-loop epoch,
 *    rounded up. The exact deadline stays in the timer, and decides when
 *    the top of the heap fires (the loop sleeps until just after it). The
 *    rounding only merges deadlines less than 65.5 us apart into start
 *    order: a timer started later but due a little earlier than one in its
 *    bucket fires right after that one, up to 65.5 us late, never early.
 *  - seq: the start order, so equal deadlines fire first in, first out.
 *    When the SEQ_BITS run out, renormalize() sorts the heap in place,
 *    renumbers it in the same order and moves the epoch to now. At most
 *    half of the sequence space is in use (TIMERS_MAX = 2^27 timers; one
 *    more fails with -ENOMEM), so that happens at most once per 2^27 starts
 *    (it takes about 0.35 s with a million timers).
 *  - Buckets saturate at BUCKET_MAX, about 52 days ahead, where timers are
 *    in start order rather than deadline order. The loop renormalizes at
 *    least every 26 days (waking up for it if need be), which gives each
 *    of them its real bucket, from its exact deadline, long before it is
 *    due.
 *
 * Restarting to a later deadline, the common case (an idle timeout pushed
 * back on each request), is lazy: only the timer changes, and its entry
 * keeps the older, smaller key. When the entry reaches the top,
 * evmux__timers_run sees that the timer's own key differs and moves the
 * entry down instead of firing it. An entry's key is never larger than its
 * timer's, so it comes up in time; the cost is at most one early wake-up,
 * when such an entry is on top as the loop goes to sleep. A restart to an
 * earlier deadline, a stop and an expiry move entries at once: the parent
 * decides the direction, so the entry being replaced is never read, and the
 * parent's and the children's lines are prefetched together. */
#include "evmux_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const struct evmux__kind timer_kind;

#define NS_PER_MS 1000000u
#define UNIT_SHIFT EVMUX__TIMER_UNIT_SHIFT
#define SEQ_BITS EVMUX__TIMER_SEQ_BITS
#define SEQ_LIMIT (UINT64_C(1) << SEQ_BITS)
#define SEQ_MASK (SEQ_LIMIT - 1)
#define BUCKET_MAX EVMUX__TIMER_BUCKET_MAX
/* Renormalizing every half range gives saturated timers their real bucket
 * long before they are due. */
#define REBASE_AFTER (BUCKET_MAX / 2)
#define TIMERS_MAX ((size_t)(SEQ_LIMIT / 2))
#define HEAP_PAD 3 /* slots before the root, to align the children */

typedef struct evmux_timer_slot slot_t;

#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
/* Rare paths out of line, so the hot ones keep fewer registers to save. */
#define COLD __attribute__((cold, noinline))
#else
#define PREFETCH(p) ((void)(p))
#define COLD
#endif

static inline void heap_place(slot_t *heap, size_t i, slot_t e)
{
    heap[i] = e;
    e.timer->heap_index = i;
}

static void sift_up(slot_t *heap, size_t i, slot_t e)
{
    while (i > 0) {
        size_t parent = (i - 1) / 4;
        if (heap[parent].key < e.key)
            break;
        heap_place(heap, i, heap[parent]);
        i = parent;
    }
    heap_place(heap, i, e);
}

/* The smallest of four children is found as the smaller of two pairs, so
 * the comparisons do not wait on each other. The grandchildren's four lines
 * are requested before the choice: the one needed next is then on its way,
 * and a long descent (every expiry) waits for one miss at a time less. */
static void sift_down(slot_t *heap, size_t count, size_t i, slot_t e)
{
    for (;;) {
        size_t first = 4 * i + 1;
        size_t best;
        uint64_t best_key;
        if (first + 3 < count) {
            const slot_t *c = &heap[first];
            if (4 * first + 13 < count) {
                PREFETCH(&heap[4 * first + 1]);
                PREFETCH(&heap[4 * first + 5]);
                PREFETCH(&heap[4 * first + 9]);
                PREFETCH(&heap[4 * first + 13]);
            }
            uint64_t k0 = c[0].key, k1 = c[1].key, k2 = c[2].key, k3 = c[3].key;
            size_t a = k1 < k0, b = 2 + (k3 < k2);
            uint64_t ka = k1 < k0 ? k1 : k0, kb = k3 < k2 ? k3 : k2;
            best = first + (kb < ka ? b : a);
            best_key = kb < ka ? kb : ka;
        } else {
            if (first >= count)
                break;
            best = first;
            best_key = heap[first].key;
            for (size_t k = first + 1; k < count; k++)
                if (heap[k].key < best_key) {
                    best = k;
                    best_key = heap[k].key;
                }
        }
        if (e.key < best_key)
            break;
        heap_place(heap, i, heap[best]);
        i = best;
    }
    heap_place(heap, i, e);
}

/* Starts loading the lines a sift from i may read, the parent's and the
 * children's, before the first comparison: they then arrive together
 * instead of one after the other. Ancestors near the root stay cached. */
static inline void prefetch_around(const slot_t *heap, size_t count, size_t i)
{
    if (i > 0)
        PREFETCH(&heap[(i - 1) / 4]);
    if (4 * i + 1 < count)
        PREFETCH(&heap[4 * i + 1]);
}

/* Puts e at i, where the heap has a hole (or an entry being replaced) and
 * is in order everywhere else. */
static inline void heap_replace(evmux_loop *loop, size_t i, slot_t e)
{
    slot_t *heap = loop->timer_heap;
    if (i > 0 && e.key < heap[(i - 1) / 4].key)
        sift_up(heap, i, e);
    else
        sift_down(heap, loop->timer_count, i, e);
}

static void heap_remove(evmux_loop *loop, size_t i)
{
    size_t last = --loop->timer_count;
    if (i == last)
        return;
    prefetch_around(loop->timer_heap, last, i);
    heap_replace(loop, i, loop->timer_heap[last]);
}

/* Moves the array so that the root is the last slot of a cache line (an
 * address 48 mod 64): the children of node i, 4i+1..4i+4, then start a
 * line. malloc only promises 16 bytes, so the offset is redone after every
 * realloc. */
COLD static int heap_grow(evmux_loop *loop)
{
    size_t cap = loop->timer_capacity ? loop->timer_capacity * 2 : 64;
    size_t old_off = loop->timer_alloc ? (size_t)(loop->timer_heap - loop->timer_alloc) : 0;
    if (cap > SIZE_MAX / sizeof(slot_t) - HEAP_PAD)
        return -ENOMEM;
    slot_t *mem = realloc(loop->timer_alloc, (cap + HEAP_PAD) * sizeof(slot_t));
    if (mem == NULL)
        return -ENOMEM;
    size_t off = ((48 - ((uintptr_t)mem & 63)) & 63) / sizeof(slot_t);
    if (off > HEAP_PAD)
        off = 0; /* slots of another size: no alignment to gain */
    if (off != old_off)
        memmove(mem + off, mem + old_off, loop->timer_count * sizeof(slot_t));
    loop->timer_alloc = mem;
    loop->timer_heap = mem + off;
    loop->timer_capacity = cap;
    return 0;
}

/* ---- keys ---- */

static inline uint64_t bucket_of(const evmux_loop *loop, uint64_t deadline_ns)
{
    uint64_t at = deadline_ns >> UNIT_SHIFT;
    if (at < loop->timer_epoch)
        return 0; /* passed before the last renormalization: due */
    at -= loop->timer_epoch;
    return at < BUCKET_MAX ? at + 1 : BUCKET_MAX;
}

/* The key t's deadline and sequence give it. Its heap entry holds that key,
 * or a smaller one after a lazy restart. */
static inline uint64_t key_of(const evmux_loop *loop, const evmux_timer *t)
{
    return bucket_of(loop, t->deadline_ns) << SEQ_BITS | t->start_seq;
}

/* ---- renormalizing: rare, so simple rather than fast ---- */

static void sort_down(slot_t *a, size_t n, size_t i)
{
    slot_t e = a[i];
    for (size_t c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && a[c + 1].key > a[c].key)
            c++;
        if (a[c].key < e.key)
            break;
        a[i] = a[c];
    }
    a[i] = e;
}

/* Heapsort by key, ascending: in place, allocation-free. */
static void sort_slots(slot_t *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sort_down(a, n, i);
    while (n > 1) {
        slot_t top = a[0];
        a[0] = a[--n];
        a[n] = top;
        sort_down(a, n, 0);
    }
}

/* Renumbers the sequences from 0 and moves the epoch to now. Sorted by the
 * real keys (lazy entries included), the array is a heap in firing order,
 * and each timer's rank becomes its sequence, so the order is kept. The new
 * buckets come from the exact deadlines; one already passed becomes 0 (due,
 * keeping its rank). Only the saturated entries, all last, can change order
 * among themselves: they are sorted again. */
COLD static void renormalize(evmux_loop *loop)
{
    slot_t *heap = loop->timer_heap;
    size_t n = loop->timer_count;
    for (size_t i = 0; i < n; i++)
        heap[i].key = key_of(loop, heap[i].timer);
    sort_slots(heap, n);
    size_t saturated = n;
    while (saturated > 0 && heap[saturated - 1].key >> SEQ_BITS == BUCKET_MAX)
        saturated--;
    loop->timer_epoch = loop->now_ns >> UNIT_SHIFT;
    for (size_t i = 0; i < n; i++)
        heap[i].key = bucket_of(loop, heap[i].timer->deadline_ns) << SEQ_BITS | i;
    sort_slots(heap + saturated, n - saturated);
    for (size_t i = 0; i < n; i++) {
        heap[i].key = (heap[i].key & ~SEQ_MASK) | i;
        heap[i].timer->heap_index = i;
        heap[i].timer->start_seq = i;
    }
    loop->timer_seq = n;
}

/* Saturates instead of wrapping; only constant divisions on this hot path. */
static uint64_t deadline_after(uint64_t now_ns, uint64_t timeout_ms)
{
    if (timeout_ms > UINT64_MAX / NS_PER_MS)
        return UINT64_MAX;
    uint64_t ns = timeout_ms * NS_PER_MS;
    return ns > UINT64_MAX - now_ns ? UINT64_MAX : now_ns + ns;
}

/* Gives t a deadline (at or after loop->now_ns, hence after the epoch) and
 * the next sequence; returns its key. */
static inline uint64_t arm(evmux_loop *loop, evmux_timer *t, uint64_t deadline_ns)
{
    if (loop->timer_seq == SEQ_LIMIT)
        renormalize(loop); /* before t changes: it renumbers t's entry too */
    t->deadline_ns = deadline_ns;
    t->start_seq = loop->timer_seq++;
    return key_of(loop, t);
}

/* ---- API ---- */

int evmux_timer_init(evmux_loop *loop, evmux_timer *timer, evmux_timer_cb cb)
{
    if (loop == NULL || timer == NULL || cb == NULL)
        return -EINVAL;
    evmux__handle_init(loop, &timer->handle, &timer_kind);
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
    uint64_t deadline = deadline_after(loop->now_ns, timeout_ms);
    if (timer->handle.flags & EVMUX_FLAG_ACTIVE) {
        timer->repeat_ms = repeat_ms;
        if (deadline >= timer->deadline_ns) {
            /* Lazy: the entry's older key comes up first, and the entry
             * moves then (see evmux__timers_run). */
            arm(loop, timer, deadline);
            return 0;
        }
        prefetch_around(loop->timer_heap, loop->timer_count, timer->heap_index);
        uint64_t key = arm(loop, timer, deadline); /* may renumber: index after */
        heap_replace(loop, timer->heap_index, (slot_t){key, timer});
        return 0;
    }
    if (loop->timer_count == 0) {
        /* Nothing to keep in order: a fresh epoch and numbering, free. */
        loop->timer_epoch = loop->now_ns >> UNIT_SHIFT;
        loop->timer_seq = 0;
    } else if (loop->timer_count == TIMERS_MAX) {
        return -ENOMEM;
    }
    if (loop->timer_count == loop->timer_capacity) {
        int rc = heap_grow(loop);
        if (rc < 0)
            return rc;
    }
    timer->repeat_ms = repeat_ms;
    uint64_t key = arm(loop, timer, deadline);
    sift_up(loop->timer_heap, loop->timer_count++, (slot_t){key, timer});
    evmux__handle_activate(&timer->handle);
    return 0;
}

int evmux_timer_stop(evmux_timer *timer)
{
    if (timer == NULL)
        return -EINVAL;
    if (!(timer->handle.flags & EVMUX_FLAG_ACTIVE))
        return 0;
    heap_remove(timer->handle.loop, timer->heap_index);
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
    if (timer == NULL)
        return;
    timer->repeat_ms = repeat_ms;
}

uint64_t evmux_timer_get_repeat(const evmux_timer *timer)
{
    if (timer == NULL)
        return 0;
    return timer->repeat_ms;
}

uint64_t evmux_timer_get_due_in(const evmux_timer *timer)
{
    if (timer == NULL)
        return 0;
    const evmux_loop *loop = timer->handle.loop;
    if (!evmux_is_active(&timer->handle) || timer->deadline_ns <= loop->now_ns)
        return 0;
    uint64_t ns = timer->deadline_ns - loop->now_ns;
    return ns / NS_PER_MS + (ns % NS_PER_MS != 0);
}

/* Runs the timers whose deadline is strictly before the pass's clock. A
 * timer started by a callback has a deadline at or after that clock, so it
 * waits for the next iteration (a timer re-arming itself with 0 ms cannot
 * starve I/O). Only the top is tested: a timer behind it in the same bucket,
 * started later but due a little earlier, waits for it, less than a bucket.
 * Returns whether any callback ran (and took time the clock has not seen). */
bool evmux__timers_run(evmux_loop *loop)
{
    uint64_t now = loop->now_ns;
    bool ran = false;
    if (loop->timer_count > 0 && (now >> UNIT_SHIFT) - loop->timer_epoch >= REBASE_AFTER)
        renormalize(loop);
    while (loop->timer_count > 0) {
        slot_t top = loop->timer_heap[0];
        evmux_timer *t = top.timer;
        uint64_t key = key_of(loop, t);
        if (key != top.key) {
            /* Restarted later since it was placed: place it now, due or
             * not, so that the wait is not cut short by the old key. */
            sift_down(loop->timer_heap, loop->timer_count, 0, (slot_t){key, t});
            continue;
        }
        if (t->deadline_ns >= now)
            break;
        if (t->repeat_ms != 0) {
            /* Keep the period from drifting; after a stall, skip the
             * missed ticks instead of firing them in a burst. */
            uint64_t next = deadline_after(t->deadline_ns, t->repeat_ms);
            if (next <= loop->now_ns)
                next = deadline_after(loop->now_ns, t->repeat_ms);
            key = arm(loop, t, next);
            heap_replace(loop, t->heap_index, (slot_t){key, t}); /* 0 unless renumbered */
        } else {
            heap_remove(loop, 0);
            evmux__handle_deactivate(&t->handle);
        }
        ran = true;
        t->cb(t);
    }
    return ran;
}

static uint64_t bucket_end_ns(const evmux_loop *loop, uint64_t bucket)
{
    uint64_t at = loop->timer_epoch + bucket;
    return at > UINT64_MAX >> UNIT_SHIFT ? UINT64_MAX : at << UNIT_SHIFT;
}

/* Until just past the top's exact deadline, the moment the next pass fires
 * it; until its old bucket's end if it was restarted lazily (the true next
 * timer may be behind it). At the latest, when the loop must renormalize. */
uint64_t evmux__timers_next_ns(const evmux_loop *loop)
{
    if (loop->timer_count == 0)
        return UINT64_MAX;
    const slot_t *top = &loop->timer_heap[0];
    uint64_t at;
    if (key_of(loop, top->timer) != top->key)
        at = bucket_end_ns(loop, top->key >> SEQ_BITS);
    else
        at = top->timer->deadline_ns + (top->timer->deadline_ns != UINT64_MAX);
    uint64_t rebase = bucket_end_ns(loop, REBASE_AFTER);
    if (at > rebase)
        at = rebase;
    return at <= loop->now_ns ? 0 : at - loop->now_ns;
}

void evmux__timers_free(evmux_loop *loop)
{
    free(loop->timer_alloc);
    loop->timer_alloc = loop->timer_heap = NULL;
    loop->timer_count = loop->timer_capacity = 0;
}

static void timer_close_begin(evmux_handle *h)
{
    evmux_timer_stop((evmux_timer *)h);
}

static const struct evmux__kind timer_kind = {
    .number = EVMUX_HANDLE_TIMER,
    .close_begin = timer_close_begin,
};
