/* Event-loop core benchmark harness: options, socket pairs, rounds, checks
 * and output. See README.md for the method. */
#include "core_bench.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct core_state core;

/* Descriptors kept free for the loop itself (epoll fd, libuv's signal and
 * async pipes, stdio). */
#define FD_RESERVE 32
/* Iterations in a row without a callback before a round counts as stuck:
 * some byte was written but its event never arrives. */
#define IDLE_LIMIT 1000000L

struct options {
    int pipes, active, rounds;
    long writes;
    bool rereg, csv, header;
    const char *backend;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: evmux-bench-core-%s [options]\n"
            "  --pipes N     socket pairs, each with a read watcher (default 100)\n"
            "  --active A    pairs primed with a byte per round (default min(100, N))\n"
            "  --writes W    chained writes per round (default 1000)\n"
            "  --rounds R    timed rounds, after one warm-up round (default 25)\n"
            "  --rereg       stop and start every watcher before each round (timed)\n"
            "  --backend B   uring, epoll, poll or select (default: the library's default)\n"
            "  --csv         one CSV row (with a header line unless --no-header)\n"
            "  --no-header   omit the CSV header line\n",
            core_lib.name);
}

static int parse_int(const char *name, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "%s: want an integer in %ld..%ld, got '%s'\n", name, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"pipes", required_argument, NULL, 'n'},  {"active", required_argument, NULL, 'a'},
        {"writes", required_argument, NULL, 'w'}, {"rounds", required_argument, NULL, 'r'},
        {"rereg", no_argument, NULL, 'e'},        {"backend", required_argument, NULL, 'b'},
        {"csv", no_argument, NULL, 'c'},          {"no-header", no_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    *o = (struct options){.pipes = 100, .active = -1, .rounds = 25, .writes = 1000,
                          .header = true};
    long v;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (parse_int("--pipes", optarg, 2, 1000000, &v) < 0)
                return -1;
            o->pipes = (int)v;
            break;
        case 'a':
            if (parse_int("--active", optarg, 1, 1000000, &v) < 0)
                return -1;
            o->active = (int)v;
            break;
        case 'w':
            if (parse_int("--writes", optarg, 0, 1000000000L, &v) < 0)
                return -1;
            o->writes = v;
            break;
        case 'r':
            if (parse_int("--rounds", optarg, 1, 1000000, &v) < 0)
                return -1;
            o->rounds = (int)v;
            break;
        case 'e': o->rereg = true; break;
        case 'b': o->backend = optarg; break;
        case 'c': o->csv = true; break;
        case 'H': o->header = false; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return -1;
    }
    if (o->active < 0)
        o->active = o->pipes < 100 ? o->pipes : 100;
    if (o->active > o->pipes) {
        fprintf(stderr, "--active %d exceeds --pipes %d\n", o->active, o->pipes);
        return -1;
    }
    return 0;
}

/* 20000 pairs' worth of descriptors is more than the usual soft limit of
 * 1024, so take whatever the hard limit allows, and say clearly when even
 * that is too little instead of failing halfway through socketpair(). */
static int reserve_descriptors(int pipes)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    rlim_t need = 2 * (rlim_t)pipes + FD_RESERVE;
    if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
        fprintf(stderr,
                "--pipes %d needs %llu descriptors but RLIMIT_NOFILE allows %llu: "
                "use --pipes %llu or fewer\n",
                pipes, (unsigned long long)need, (unsigned long long)rl.rlim_cur,
                (unsigned long long)((rl.rlim_cur - FD_RESERVE) / 2));
        return -1;
    }
    return 0;
}

static int *make_pairs(int pipes)
{
    int *fds = malloc(sizeof *fds * 2 * (size_t)pipes);
    if (fds == NULL)
        return NULL;
    for (int i = 0; i < pipes; i++) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, &fds[2 * i]) < 0) {
            fprintf(stderr, "socketpair #%d: %s\n", i, strerror(errno));
            return NULL;
        }
        for (int k = 0; k < 2; k++) {
            int fl = fcntl(fds[2 * i + k], F_GETFL);
            fcntl(fds[2 * i + k], F_SETFL, fl | O_NONBLOCK);
        }
    }
    return fds;
}

static double clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static double now_us(void)
{
    return clock_us(CLOCK_MONOTONIC);
}

/* The process's CPU time (user + system; the program has one thread and
 * never sleeps in a round): unlike wall time, it leaves out the time other
 * processes on a shared machine held the CPU. */
static double cpu_us(void)
{
    return clock_us(CLOCK_PROCESS_CPUTIME_ID);
}

/* One round; returns 0 and the times, or nonzero if the library failed or
 * did not deliver exactly one callback per byte written. */
static int run_round(const struct options *o, double *total_us, double *setup_us, double *cpu)
{
    core.writes_left = 0;
    core.fired = core.reads = core.callbacks = core.failures = 0;

    double c0 = cpu_us();
    double t0 = now_us();
    if (o->rereg) {
        /* The extra non-blocking iteration applies what lazy libraries
         * (libev, libuv) only queued, so that every library's
         * re-registration cost lands in the setup part of the round. */
        if (core_lib.rereg() != 0 || core_lib.run_once() != 0)
            return 1;
    }
    double t1 = now_us();

    /* Primes spread evenly over the pairs, as libevent's bench does, so the
     * A chains start far apart. */
    int space = o->pipes / o->active;
    for (int i = 0; i < o->active; i++) {
        if (send(core.fds[2 * (i * space) + 1], "e", 1, 0) != 1)
            core.failures++;
        core.fired++;
    }
    core.writes_left = o->writes;

    long idle = 0;
    while (core.reads < core.fired) {
        long before = core.callbacks;
        if (core_lib.run_once() != 0)
            return 1;
        if (core.callbacks != before)
            idle = 0;
        else if (++idle > IDLE_LIMIT) {
            fprintf(stderr, "%s: stuck: %ld of %ld bytes read, no event in %ld iterations\n",
                    core_lib.name, core.reads, core.fired, IDLE_LIMIT);
            return 1;
        }
    }
    double t2 = now_us();
    double c2 = cpu_us();

    long want = o->active + o->writes;
    if (core.failures != 0 || core.callbacks != want || core.reads != want ||
        core.fired != want || core.writes_left != 0) {
        fprintf(stderr,
                "%s: round check failed: callbacks %ld, reads %ld, writes %ld, expected %ld each; "
                "%ld failed reads/writes\n",
                core_lib.name, core.callbacks, core.reads, core.fired, want, core.failures);
        return 1;
    }
    *total_us = t2 - t0;
    *setup_us = t1 - t0;
    *cpu = c2 - c0;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const double *sorted, int n, double p)
{
    int rank = (int)(p / 100.0 * n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

int main(int argc, char **argv)
{
    struct options o;
    if (parse_options(argc, argv, &o) < 0)
        return 2;
    if (reserve_descriptors(o.pipes) < 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);

    int rc = core_lib.open(o.backend);
    if (rc != 0)
        return rc;
    int *fds = make_pairs(o.pipes);
    if (fds == NULL)
        return 1;
    core.fds = fds;
    core.npipes = o.pipes;
    rc = core_lib.watch(o.pipes, fds);
    if (rc != 0)
        return rc;

    double *total = calloc((size_t)o.rounds, sizeof *total);
    double *setup = calloc((size_t)o.rounds, sizeof *setup);
    double *cpu = calloc((size_t)o.rounds, sizeof *cpu);
    if (total == NULL || setup == NULL || cpu == NULL)
        return 1;
    double warm_total, warm_setup, warm_cpu;
    if (run_round(&o, &warm_total, &warm_setup, &warm_cpu) != 0)
        return 1;
    for (int r = 0; r < o.rounds; r++)
        if (run_round(&o, &total[r], &setup[r], &cpu[r]) != 0)
            return 1;

    qsort(total, (size_t)o.rounds, sizeof *total, cmp_double);
    qsort(setup, (size_t)o.rounds, sizeof *setup, cmp_double);
    qsort(cpu, (size_t)o.rounds, sizeof *cpu, cmp_double);
    double cpu_med = percentile(cpu, o.rounds, 50);
    double med = percentile(total, o.rounds, 50), p90 = percentile(total, o.rounds, 90);
    double setup_med = o.rereg ? percentile(setup, o.rounds, 50) : 0.0;
    const char *backend = core_lib.backend();

    if (o.csv) {
        if (o.header)
            printf("library,backend,pipes,active,writes,rereg,rounds,median_us,min_us,p90_us,"
                   "setup_median_us,cpu_median_us\n");
        printf("%s,%s,%d,%d,%ld,%d,%d,%.1f,%.1f,%.1f,%.1f,%.1f\n", core_lib.name, backend,
               o.pipes, o.active, o.writes, o.rereg, o.rounds, med, total[0], p90, setup_med,
               cpu_med);
    } else {
        printf("%s (%s): pipes %d, active %d, writes %ld, rereg %s, %d rounds\n", core_lib.name,
               backend, o.pipes, o.active, o.writes, o.rereg ? "yes" : "no", o.rounds);
        printf("  per round: median %.1f us, min %.1f us, p90 %.1f us (%.3f us per event)\n", med,
               total[0], p90, med / (double)(o.active + o.writes));
        printf("  CPU time per round: median %.1f us\n", cpu_med);
        if (o.rereg)
            printf("  of which re-registration (median): %.1f us (%.3f us per watcher)\n",
                   setup_med, setup_med / o.pipes);
    }

    core_lib.close();
    for (int i = 0; i < 2 * o.pipes; i++)
        close(fds[i]);
    free(fds);
    free(total);
    free(setup);
    free(cpu);
    return 0;
}
