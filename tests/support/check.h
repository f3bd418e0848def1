/* Minimal assertions for the evmux tests: a failed check prints where and
 * why, then exits non-zero, so ctest reports the test as failed. */
#ifndef EVMUX_TEST_CHECK_H
#define EVMUX_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#define CHECK_EQ(a, b)                                                        \
    do {                                                                      \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);       \
        if (check_a_ != check_b_) {                                           \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld != %lld)\n", \
                    __FILE__, __LINE__, #a, #b, check_a_, check_b_);          \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

/* An evmux call that must succeed. */
#define CHECK_OK(expr)                                                       \
    do {                                                                     \
        int check_rc_ = (expr);                                              \
        if (check_rc_ != 0) {                                                \
            fprintf(stderr, "%s:%d: %s returned %d (%s)\n", __FILE__,         \
                    __LINE__, #expr, check_rc_, evmux_strerror(check_rc_));  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

/* Runs one test function and prints its name, so a failure is easy to place. */
#define RUN_TEST(fn)                                 \
    do {                                             \
        fprintf(stderr, "-- %s\n", #fn);             \
        fn();                                        \
    } while (0)

#endif
