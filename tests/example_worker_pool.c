/* examples/worker-pool.c: every result correct and present exactly once.
 *  - defaults: "primes below L: P" for L = 100000, 200000 ... 800000, each
 *    once, P checked against a sieve; every other line a well-formed tick
 *    ("tick N: J jobs to go", N counting up, J below the job count) and a
 *    last line "all done; the loop ticked T times meanwhile", T the ticks
 *    printed; exit 0;
 *  - edges: limits 0 1 2 3 10 100 7919 7920 10 (7919 is the 1000th prime,
 *    10 twice) give 0 0 0 1 4 25 999 1000 4;
 *  - bad_limit: "12x" exits 2 with a usage message.
 * Run as: example_worker_pool PATH/evmux-example-worker-pool */
#include "example_harness.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *path;

static unsigned long primes_below(unsigned long n)
{
    if (n < 3)
        return 0;
    char *composite = calloc(n, 1);
    unsigned long count = 0;
    CHECK(composite != NULL);
    for (unsigned long k = 2; k < n; k++) {
        if (composite[k])
            continue;
        count++;
        for (unsigned long m = k * k; m < n; m += k)
            composite[m] = 1;
    }
    free(composite);
    return count;
}

/* Runs the example with `limits` (none: its defaults) and checks its output
 * against `want_limits`. */
static void check_run(const char *const *limits, const unsigned long *want_limits, size_t n)
{
    char *argv[16] = {(char *)path};
    for (size_t i = 0; limits && limits[i]; i++)
        argv[i + 1] = (char *)limits[i];
    echo_output o;
    echo_run(argv, NULL, 0, 60000, &o);
    char st[96];
    if (o.timed_out || !WIFEXITED(o.status) || WEXITSTATUS(o.status) != 0)
        echo_fail("worker-pool: %s, expected exit 0; stderr: %s",
                  o.timed_out ? "timed out" : echo_status_str(o.status, st, sizeof st), o.err);

    int found[16] = {0};
    unsigned ticks = 0, total_ticks = 0;
    int done = 0;
    for (char *line = o.out, *nl; *line; line = nl + 1) {
        CHECK((nl = strchr(line, '\n')) != NULL);
        *nl = '\0';
        unsigned long limit, primes;
        unsigned t, jobs;
        int end = 0;
        if (done)
            echo_fail("a line after the last one: \"%s\"", line);
        if (sscanf(line, "primes below %lu: %lu%n", &limit, &primes, &end) == 2 && !line[end]) {
            size_t i = 0; /* the first of its limit not yet found: limits may repeat */
            while (i < n && (want_limits[i] != limit || found[i]))
                i++;
            if (i == n)
                echo_fail("a result nobody asked for, or twice: \"%s\"", line);
            if (primes != primes_below(limit))
                echo_fail("\"%s\": expected %lu", line, primes_below(limit));
            found[i] = 1;
        } else if (sscanf(line, "tick %u: %u jobs to go%n", &t, &jobs, &end) == 2 && !line[end]) {
            if (t != ticks + 1 || jobs == 0 || jobs > n)
                echo_fail("\"%s\" after tick %u, with %zu jobs", line, ticks, n);
            ticks = t;
        } else if (sscanf(line, "all done; the loop ticked %u times meanwhile%n", &total_ticks,
                          &end) == 1 && !line[end]) {
            done = 1;
        } else {
            echo_fail("unexpected line \"%s\"", line);
        }
    }
    if (!done || total_ticks != ticks)
        echo_fail("the last line should be \"all done; the loop ticked %u times meanwhile\"", ticks);
    for (size_t i = 0; i < n; i++)
        if (!found[i])
            echo_fail("no result for the limit %lu", want_limits[i]);
    echo_note("%zu results, %u ticks", n, ticks);
    echo_output_free(&o);
}

static void test_defaults(void)
{
    unsigned long want[8];
    for (int i = 0; i < 8; i++)
        want[i] = 100000ul * (unsigned long)(i + 1);
    check_run(NULL, want, 8);
}

static void test_edges(void)
{
    const char *limits[] = {"0", "1", "2", "3", "10", "100", "7919", "7920", "10", NULL};
    const unsigned long want[] = {0, 1, 2, 3, 10, 100, 7919, 7920, 10};
    CHECK(primes_below(7919) == 999 && primes_below(7920) == 1000 && primes_below(10) == 4);
    check_run(limits, want, 9);
}

static void test_bad_limit(void)
{
    char *argv[] = {(char *)path, "100", "12x", NULL};
    echo_output o;
    echo_run(argv, NULL, 0, 10000, &o);
    if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) != 2 || strstr(o.err, "usage") == NULL)
        echo_fail("worker-pool 100 12x: status 0x%x, stderr \"%s\"; expected exit 2 and usage",
                  o.status, o.err);
    echo_output_free(&o);
}

int main(int argc, char **argv)
{
    example_init(argc, argv, 1, 240);
    path = argv[1];
    RUN_TEST(test_defaults);
    RUN_TEST(test_edges);
    RUN_TEST(test_bad_limit);
    return 0;
}
