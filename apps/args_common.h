/* Command-line pieces evmux-echo-server and evmux-bench share.
 * Header-only: each program includes it once. */
#ifndef EVMUX_APPS_ARGS_COMMON_H
#define EVMUX_APPS_ARGS_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A decimal count from min to max: digits only (no sign, no spaces). */
static bool args_count(const char *s, unsigned long long min, unsigned long long max,
                       unsigned long long *out)
{
    if (s[0] < '0' || s[0] > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* A name --backend takes: auto, select, poll, epoll or uring. */
static bool args_backend_ok(const char *name)
{
    static const char *const names[] = {"auto", "select", "poll", "epoll", "uring"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

#endif
