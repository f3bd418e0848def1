/* evmux_strerror:
 *  - a value means the same wherever it arises (evmux_run's -EBUSY and
 *    evmux_loop_free's, a seccomp -EPERM and epoll's), so no message
 *    names one caller's case;
 *  - every value evmux.h documents has a message of its own;
 *  - 0, EVMUX_EOF, positive and out-of-range values get a fixed string,
 *    never NULL. */
#include "check.h"
#include "evmux.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

/* Every negative value evmux.h lists for some function. */
static const int documented[] = {
    -EINVAL,       -ENOMEM,      -EBUSY,       -ENOSYS,       -EALREADY,   -ECANCELED,
    -EEXIST,       -ERANGE,      -EBADF,       -EPERM,        -ENOSPC,     -EAGAIN,
    -ENAMETOOLONG, -EPIPE,       -ENOTCONN,    -EISCONN,      -ECONNRESET, -ECONNREFUSED,
    -ETIMEDOUT,    -ENOENT,      -EMFILE,      -ENFILE,       -ENOTSUP,    -EAFNOSUPPORT,
    -EADDRINUSE,   -EACCES,      -EADDRNOTAVAIL, -ENOBUFS,
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void test_general_terms(void)
{
    /* Values evmux returns for several reasons, or the kernel does. */
    static const int values[] = {-EBUSY, -EPERM, -EEXIST, -EALREADY, -ERANGE, -ENAMETOOLONG,
                                 -ENOSPC, -EAGAIN, -EINVAL, -ENOSYS};
    /* Words that would tie a message to one function's case. */
    static const char *const specific[] = {"handle", "watcher", "descriptor", "backend",
                                           "loop",   "unix",    "socket",     "seccomp",
                                           "uring",  "open",    "closing",    "select"};
    for (size_t i = 0; i < COUNT(values); i++) {
        const char *msg = evmux_strerror(values[i]);
        for (size_t w = 0; w < COUNT(specific); w++)
            if (strcasestr(msg, specific[w]) != NULL) {
                fprintf(stderr, "%d: \"%s\" names a case (\"%s\")\n", values[i], msg,
                        specific[w]);
                CHECK(!"a message in general terms");
            }
    }
}

static void test_documented_values(void)
{
    for (size_t i = 0; i < COUNT(documented); i++) {
        const char *msg = evmux_strerror(documented[i]);
        CHECK(msg != NULL);
        CHECK(msg[0] != '\0');
        CHECK(strcmp(msg, "unknown error") != 0);
        CHECK(strncasecmp(msg, "unknown error", 13) != 0); /* libc's "Unknown error N" */
        for (size_t j = 0; j < i; j++)
            if (documented[j] != documented[i] && strcmp(msg, evmux_strerror(documented[j])) == 0) {
                fprintf(stderr, "%d and %d share \"%s\"\n", documented[i], documented[j], msg);
                CHECK(!"a message of its own");
            }
    }
}

static void test_fixed_values(void)
{
    CHECK(strcmp(evmux_strerror(0), "success") == 0);
    CHECK(strcmp(evmux_strerror(EVMUX_EOF), "end of stream") == 0);
    /* evmux returns negative values only: a positive one is a caller's
     * mistake, not a message to guess at. */
    static const int unknown[] = {1, EINVAL, 4095, INT_MAX, -4096, -100000, INT_MIN};
    for (size_t i = 0; i < COUNT(unknown); i++) {
        const char *msg = evmux_strerror(unknown[i]);
        CHECK(msg != NULL);
        CHECK(strcmp(msg, "unknown error") == 0);
    }
    /* A value evmux does not name itself still gets one (from libc). */
    const char *msg = evmux_strerror(-EPROTO);
    CHECK(msg != NULL);
    CHECK(msg[0] != '\0');
}

int main(void)
{
    RUN_TEST(test_general_terms);
    RUN_TEST(test_documented_values);
    RUN_TEST(test_fixed_values);
    return 0;
}
