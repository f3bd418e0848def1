/* Log-linear latency histogram; see bench_hist.h. */
#include "bench_hist.h"

#include <string.h>

/* Bucket of a value: exact below 2 * HIST_SUB; above, the power of two
 * (msb) picks a group and the next HIST_SUB_BITS bits the sub-bucket. The
 * formula (msb - SUB_BITS) * SUB + top bits also gives `v` itself for
 * values in [SUB, 2 * SUB), so the two ranges join without a gap. */
static unsigned bucket_of(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    return shift * HIST_SUB + (unsigned)(v >> shift);
}

/* The largest value that falls in bucket `b`. */
static uint64_t bucket_upper(unsigned b)
{
    if (b < 2 * HIST_SUB)
        return b;
    unsigned shift = b / HIST_SUB - 1;
    uint64_t top = b % HIST_SUB + HIST_SUB;
    return ((top + 1) << shift) - 1;
}

void hist_reset(bench_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min_ns = UINT64_MAX;
}

void hist_record(bench_hist *h, uint64_t ns)
{
    h->count++;
    h->sum_ns += ns;
    if (ns < h->min_ns)
        h->min_ns = ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
    h->buckets[bucket_of(ns < HIST_MAX_NS ? ns : HIST_MAX_NS)]++;
}

void hist_merge(bench_hist *dst, const bench_hist *src)
{
    dst->count += src->count;
    dst->sum_ns += src->sum_ns;
    if (src->min_ns < dst->min_ns)
        dst->min_ns = src->min_ns;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
    for (unsigned b = 0; b < HIST_BUCKETS; b++)
        dst->buckets[b] += src->buckets[b];
}

uint64_t hist_quantile(const bench_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    double want = q * (double)h->count;
    uint64_t rank = (uint64_t)want; /* ceil, without libm */
    if ((double)rank < want)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        seen += h->buckets[b];
        if (seen >= rank) {
            uint64_t v = bucket_upper(b);
            if (v < h->min_ns)
                v = h->min_ns;
            return v < h->max_ns ? v : h->max_ns;
        }
    }
    return h->max_ns;
}
