/* Helpers for the stream-request tests (unit_stream_requests*.c),
 * header-only: a count of open descriptors and a byte pattern that tells
 * every stream offset apart. */
#ifndef EVMUX_TEST_REQUEST_UTIL_H
#define EVMUX_TEST_REQUEST_UTIL_H

#include "stream_util.h"

#include <dirent.h>

/* Descriptors open in this process right now. */
static inline int ru_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own */
}

/* The byte at every stream offset: a random block of prime length, so a
 * piece delivered twice or skipped shows at once. ru_pat_init first. */
#define RU_PAT_PERIOD 65521u

static inline unsigned char *ru_pat_block(void)
{
    static unsigned char block[RU_PAT_PERIOD];
    return block;
}

static inline void ru_pat_init(void)
{
    unsigned char *r = su_random_bytes(RU_PAT_PERIOD, 11);
    memcpy(ru_pat_block(), r, RU_PAT_PERIOD);
    free(r);
}

static inline void ru_pat_fill(unsigned char *dst, uint64_t off, size_t n)
{
    while (n > 0) {
        size_t at = (size_t)(off % RU_PAT_PERIOD);
        size_t k = RU_PAT_PERIOD - at < n ? RU_PAT_PERIOD - at : n;
        memcpy(dst, ru_pat_block() + at, k);
        dst += k, off += k, n -= k;
    }
}

/* 1 if p holds the pattern's n bytes from offset off. */
static inline int ru_pat_match(const unsigned char *p, uint64_t off, size_t n)
{
    while (n > 0) {
        size_t at = (size_t)(off % RU_PAT_PERIOD);
        size_t k = RU_PAT_PERIOD - at < n ? RU_PAT_PERIOD - at : n;
        if (memcmp(p, ru_pat_block() + at, k) != 0)
            return 0;
        p += k, off += k, n -= k;
    }
    return 1;
}

#endif
