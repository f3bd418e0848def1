/* Latency histogram for evmux-bench: log-linear buckets in the manner of
 * HdrHistogram. Values are nanoseconds; every power of two is split into
 * 64 equal sub-buckets, so a reported percentile is within 1/64 (1.6%) of
 * the true value, from the smallest latencies up to 60 s. Recording is a
 * few instructions and never allocates. */
#ifndef EVMUX_BENCH_HIST_H
#define EVMUX_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS) /* sub-buckets per power of two */
#define HIST_MAX_NS 60000000000ull     /* larger values count as 60 s */
/* 60 s < 2^36 ns: values below 2 * HIST_SUB have a bucket each, then
 * HIST_SUB buckets for each power of two from 2^7 up to 2^35. */
#define HIST_BUCKETS ((36 - HIST_SUB_BITS) * HIST_SUB + HIST_SUB)

typedef struct bench_hist {
    uint64_t count;
    uint64_t sum_ns;
    uint64_t min_ns, max_ns; /* exact, not bucketed */
    uint64_t buckets[HIST_BUCKETS];
} bench_hist;

void hist_reset(bench_hist *h);
void hist_record(bench_hist *h, uint64_t ns);
/* Adds src's values to dst, as if recorded there (evmux-bench --threads:
 * one histogram per thread, merged before any percentile is taken). */
void hist_merge(bench_hist *dst, const bench_hist *src);

/* The value at quantile q (0 < q <= 1): the upper edge of the bucket that
 * holds the ceil(q * count)-th smallest value, clamped to [min, max].
 * 0 when the histogram is empty. */
uint64_t hist_quantile(const bench_hist *h, double q);

#endif
