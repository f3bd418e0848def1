/* evmux_strerror:
 *  - a value means the same wherever it arises (evmux_run's -EBUSY and
 *    evmux_loop_free's, a seccomp -EPERM and epoll's), so no message
 *    names one caller's case;
 *  - every value evmux.h documents has a message of its own;
 *  - 0, EVMUX_EOF, positive and out-of-range values get a fixed string,
 *    never NULL;
 *  - the resolver's values (EVMUX_EAI_*) are distinct, in their reserved
 *    range, equal to no errno value the C library knows nor to EVMUX_EOF,
 *    and each has a message of its own; each EAI_* code of getaddrinfo(3)
 *    becomes its constant, EAI_SYSTEM the errno value. */
#include "check.h"
#include "evmux.h"
#include "resolve.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Every negative value evmux.h lists for some function. */
static const int documented[] = {
    -EINVAL,       -ENOMEM,      -EBUSY,       -ENOSYS,       -EALREADY,   -ECANCELED,
    -EEXIST,       -ERANGE,      -EBADF,       -EPERM,        -ENOSPC,     -EAGAIN,
    -ENAMETOOLONG, -EPIPE,       -ENOTCONN,    -EISCONN,      -ECONNRESET, -ECONNREFUSED,
    -ETIMEDOUT,    -ENOENT,      -EMFILE,      -ENFILE,       -ENOTSUP,    -EAFNOSUPPORT,
    -EADDRINUSE,   -EACCES,      -EADDRNOTAVAIL, -ENOBUFS,    -EPROTO,     -EMSGSIZE,
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
    const char *msg = evmux_strerror(-EDOM);
    CHECK(msg != NULL);
    CHECK(msg[0] != '\0');
}

static const struct {
    int value;
    int code; /* the EAI_* code it stands for */
} resolver[] = {
    {EVMUX_EAI_AGAIN, EAI_AGAIN},       {EVMUX_EAI_BADFLAGS, EAI_BADFLAGS},
    {EVMUX_EAI_FAIL, EAI_FAIL},         {EVMUX_EAI_FAMILY, EAI_FAMILY},
    {EVMUX_EAI_MEMORY, EAI_MEMORY},     {EVMUX_EAI_NONAME, EAI_NONAME},
    {EVMUX_EAI_SERVICE, EAI_SERVICE},   {EVMUX_EAI_SOCKTYPE, EAI_SOCKTYPE},
    {EVMUX_EAI_NODATA, EAI_NODATA},     {EVMUX_EAI_ADDRFAMILY, EAI_ADDRFAMILY},
    {EVMUX_EAI_OVERFLOW, EAI_OVERFLOW}, {EVMUX_EAI_IDN_ENCODE, EAI_IDN_ENCODE},
};

/* An errno value the C library has a name for (glibc says "Unknown error
 * N" for the others). */
static int is_errno_value(int e)
{
    char unknown[64];
    snprintf(unknown, sizeof unknown, "Unknown error %d", e);
    return strcmp(strerror(e), unknown) != 0;
}

static void test_resolver_values(void)
{
    int known = 0;
    for (int e = 1; e <= 4095; e++)
        known += is_errno_value(e);
    CHECK(known > 100); /* the probe itself tells errno values apart */
    for (size_t i = 0; i < COUNT(resolver); i++) {
        int v = resolver[i].value;
        CHECK(EVMUX_IS_EAI(v));
        CHECK(v != EVMUX_EOF);
        CHECK(v < 0 && v > -4096); /* inside the window of error values */
        if (is_errno_value(-v)) {
            fprintf(stderr, "%d is errno %d (%s)\n", v, -v, strerror(-v));
            CHECK(!"no errno value");
        }
        for (size_t j = 0; j < i; j++)
            CHECK(resolver[j].value != v);
        const char *msg = evmux_strerror(v);
        CHECK(msg != NULL && msg[0] != '\0');
        CHECK(strcasecmp(msg, "unknown error") != 0);
        for (size_t j = 0; j < i; j++)
            if (strcmp(msg, evmux_strerror(resolver[j].value)) == 0) {
                fprintf(stderr, "%d and %d share \"%s\"\n", v, resolver[j].value, msg);
                CHECK(!"a message of its own");
            }
        for (size_t j = 0; j < COUNT(documented); j++)
            CHECK(strcmp(msg, evmux_strerror(documented[j])) != 0);
        CHECK_EQ(evmux__eai_error(resolver[i].code, 0), v);
    }
    /* Nothing else is in the range: no errno value, not EVMUX_EOF. */
    for (int e = 1; e <= 4095; e++)
        if (is_errno_value(e))
            CHECK(!EVMUX_IS_EAI(-e));
    CHECK(!EVMUX_IS_EAI(EVMUX_EOF));
    CHECK(!EVMUX_IS_EAI(0));
    CHECK(!EVMUX_IS_EAI(-3000));
    CHECK(!EVMUX_IS_EAI(-3100));
    /* By design: EAI_SYSTEM is the errno value it stands for. */
    CHECK_EQ(evmux__eai_error(0, 0), 0);
    CHECK_EQ(evmux__eai_error(EAI_SYSTEM, EMFILE), -EMFILE);
    CHECK_EQ(evmux__eai_error(EAI_SYSTEM, 0), -EIO);
    CHECK_EQ(evmux__eai_error(-12345, 0), EVMUX_EAI_FAIL); /* one libc adds later */
    CHECK(strcmp(evmux_strerror(-EIO), "unknown error") != 0);
}

int main(void)
{
    RUN_TEST(test_general_terms);
    RUN_TEST(test_resolver_values);
    RUN_TEST(test_documented_values);
    RUN_TEST(test_fixed_values);
    return 0;
}
