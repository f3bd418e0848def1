/* examples/timers-and-signals.c:
 *  - SIGTERM, then SIGINT: after two ticks ("tick 1 at N ms", "tick 2 at
 *    M ms", numbered in order, M >= N), the signal gives "got SIGTERM:
 *    stopping after K ticks" (or SIGINT), K the last tick printed, then
 *    end of output and exit 0;
 *  - time_limit: with the argument 1, "time is up: stopping after K
 *    ticks", K the ticks printed, and exit 0, with no signal at all.
 * Run as: example_timers_and_signals PATH/evmux-example-timers-and-signals */
#include "example_harness.h"

#include <signal.h>
#include <string.h>

static const char *path;

/* Reads tick lines until a stopping line; returns the ticks seen and the
 * stopping line's reason in `why`. Stops reading ticks after `until`
 * ticks when until > 0 (the caller then signals). */
static unsigned read_ticks(echo_proc *p, unsigned from, unsigned until, char *why, size_t why_len)
{
    char line[256];
    unsigned seen = from;
    unsigned long long last_ms = 0;
    while (until == 0 || seen < until) {
        if (example_read_line(p, line, sizeof line, 20000) < 0)
            echo_fail("output ended after %u ticks without a stopping line", seen);
        unsigned n, k;
        unsigned long long ms;
        int end = 0;
        if (sscanf(line, "tick %u at %llu ms%n", &n, &ms, &end) == 2 && line[end] == '\0') {
            if (n != seen + 1 || (seen > from && ms < last_ms))
                echo_fail("\"%s\" after tick %u at %llu ms", line, seen, last_ms);
            seen = n;
            last_ms = ms;
            continue;
        }
        char reason[64];
        if (sscanf(line, "%63[^:]: stopping after %u ticks%n", reason, &k, &end) == 2 &&
            line[end] == '\0') {
            if (k != seen)
                echo_fail("\"%s\", but %u ticks were printed", line, seen);
            snprintf(why, why_len, "%s", reason);
            return seen;
        }
        echo_fail("unexpected line \"%s\"", line);
    }
    return seen;
}

static void stop_with(int sig, const char *want)
{
    char *argv[] = {(char *)path, NULL}, why[64] = "", line[256];
    echo_proc p;
    echo_spawn(&p, argv, ECHO_PIPE_OUT, 0);
    unsigned ticks = read_ticks(&p, 0, 2, why, sizeof why);
    CHECK(kill(p.pid, sig) == 0);
    read_ticks(&p, ticks, 0, why, sizeof why); /* a tick may come before the signal is seen */
    if (strcmp(why, want) != 0)
        echo_fail("stopping line gives \"%s\", expected \"%s\"", why, want);
    if (example_read_line(&p, line, sizeof line, 10000) >= 0)
        echo_fail("output after the stopping line: \"%s\"", line);
    example_expect_exit(&p, 0, 10000, want);
}

static void test_sigterm(void) { stop_with(SIGTERM, "got SIGTERM"); }
static void test_sigint(void) { stop_with(SIGINT, "got SIGINT"); }

static void test_time_limit(void)
{
    char *argv[] = {(char *)path, "1", NULL}, why[64] = "", line[256];
    echo_proc p;
    echo_spawn(&p, argv, ECHO_PIPE_OUT, 0);
    read_ticks(&p, 0, 0, why, sizeof why);
    if (strcmp(why, "time is up") != 0)
        echo_fail("stopping line gives \"%s\", expected \"time is up\"", why);
    if (example_read_line(&p, line, sizeof line, 10000) >= 0)
        echo_fail("output after the stopping line: \"%s\"", line);
    example_expect_exit(&p, 0, 10000, "time limit");
}

int main(int argc, char **argv)
{
    example_init(argc, argv, 1, 120);
    path = argv[1];
    RUN_TEST(test_sigterm);
    RUN_TEST(test_sigint);
    RUN_TEST(test_time_limit);
    return 0;
}
