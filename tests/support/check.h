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

/* Sub-test selection and skipping (see tests/CMakeLists.txt). A main that
 * may skip calls unit_args(argc, argv) first and returns unit_end().
 * Arguments: none runs every sub-test; NAME runs only that one;
 * "--except NAME..." runs all but those. A name that matches no sub-test
 * fails the run, so a renamed sub-test cannot drop out of ctest unseen. */
#define UNIT_SKIP_CODE 77 /* SKIP_RETURN_CODE in tests/CMakeLists.txt */

struct unit_selection {
    int ready; /* unit_args was called */
    int argc, first, except;
    char **argv;
    unsigned long matched; /* bit i: argv[first + i] named a sub-test */
    int skipped;
};

static inline struct unit_selection *unit_selection(void)
{
    static struct unit_selection sel;
    return &sel;
}

static inline void unit_args(int argc, char **argv)
{
    struct unit_selection *s = unit_selection();
    s->ready = 1;
    s->argc = argc;
    s->argv = argv;
    s->except = argc > 1 && strcmp(argv[1], "--except") == 0;
    s->first = s->except ? 2 : 1;
    if ((!s->except && argc > 2) || argc - s->first > (int)(8 * sizeof s->matched)) {
        fprintf(stderr, "usage: %s [NAME | --except NAME...]\n", argv[0]);
        exit(2);
    }
}

static inline int unit_selected(const char *name)
{
    struct unit_selection *s = unit_selection();
    for (int i = s->first; i < s->argc; i++)
        if (strcmp(s->argv[i], name) == 0) {
            s->matched |= 1ul << (i - s->first);
            return !s->except;
        }
    return s->except || s->argc <= 1;
}

/* A sub-test that cannot run on this machine: the others still run, and
 * the executable then exits with UNIT_SKIP_CODE (a failure exits at once
 * with 1, so a skip never hides one). */
static inline void unit_skipped(const char *why)
{
    struct unit_selection *s = unit_selection();
    if (!s->ready) {
        fprintf(stderr, "UNIT_SKIP needs main to call unit_args() and return unit_end()\n");
        exit(1);
    }
    fprintf(stderr, "   SKIPPED: %s\n", why);
    s->skipped++;
}

#define UNIT_SKIP(why)       \
    do {                     \
        unit_skipped(why);   \
        return;              \
    } while (0)

static inline int unit_end(void)
{
    struct unit_selection *s = unit_selection();
    for (int i = s->first; i < s->argc; i++)
        if (!(s->matched & (1ul << (i - s->first)))) {
            fprintf(stderr, "no sub-test named %s\n", s->argv[i]);
            return 1;
        }
    return s->skipped ? UNIT_SKIP_CODE : 0;
}

/* Runs one test function, if selected, and prints its name, so a failure
 * is easy to place. */
#define RUN_TEST(fn)                              \
    do {                                          \
        if (unit_selected(#fn)) {                 \
            fprintf(stderr, "-- %s\n", #fn);      \
            fn();                                 \
        }                                         \
    } while (0)

#endif
