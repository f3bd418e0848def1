/* Timer benchmark harness: options, the shared pseudo-random timeouts,
 * timing of the four phases, checks and output. See README.md. */
#include "timers_bench.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint8_t *timers_fired;
size_t timers_fired_total;

enum { PHASE_START, PHASE_RESTART, PHASE_STOP, PHASE_EXPIRE, PHASES };
static const char *const phase_names[PHASES] = {"start", "restart", "stop", "expire"};

/* A restarted timer must be due within this of its new timeout. Libraries
 * that count from the loop's cached time are exact; libevent counts from
 * the clock at each call, so its timers drift by the phase's duration. */
#define DUE_TOLERANCE_MS 5000.0

struct options {
    size_t count;
    int runs;
    uint64_t seed;
    bool csv, header;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: evmux-bench-timers-%s [options]\n"
            "  --count N    timers (default 1000000)\n"
            "  --runs R     runs of all four phases; the median is reported (default 5)\n"
            "  --seed S     seed of the timeouts, the same for every library (default 1)\n"
            "  --csv        CSV rows (with a header line unless --no-header)\n"
            "  --no-header  omit the CSV header line\n",
            timers_lib.name);
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"count", required_argument, NULL, 'n'}, {"runs", required_argument, NULL, 'r'},
        {"seed", required_argument, NULL, 's'},  {"csv", no_argument, NULL, 'c'},
        {"no-header", no_argument, NULL, 'H'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct options){.count = 1000000, .runs = 5, .seed = 1, .header = true};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        char *end;
        errno = 0;
        switch (c) {
        case 'n':
        case 'r':
        case 's': {
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || optarg[0] == '-' ||
                (c != 's' && (v < 1 || v > 100000000ull))) {
                fprintf(stderr, "bad value '%s'\n", optarg);
                return -1;
            }
            if (c == 'n')
                o->count = (size_t)v;
            else if (c == 'r')
                o->runs = (int)v;
            else
                o->seed = v;
            break;
        }
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
    return 0;
}

/* splitmix64: small, fast, and the same sequence on every build, so every
 * library gets the very same timeouts in the very same order. */
static uint64_t rng_state;
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of the process (the program has one thread): it leaves out the
 * time spent asleep waiting for timers, and the time other processes on
 * the shared machine held the CPU. */
struct stamp {
    uint64_t cpu, wall;
};

static struct stamp stamp_now(void)
{
    return (struct stamp){clock_ns(CLOCK_PROCESS_CPUTIME_ID), clock_ns(CLOCK_MONOTONIC)};
}

static void record(double *cpu, double *wall, struct stamp t0, size_t n)
{
    struct stamp t1 = stamp_now();
    *cpu = (double)(t1.cpu - t0.cpu) / (double)n;
    *wall = (double)(t1.wall - t0.wall) / (double)n;
}

static int check_armed(const char *phase, const uint32_t *ms, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double due = timers_lib.due_in_ms(i);
        if (!timers_lib.is_active(i) || fabs(due - ms[i]) > DUE_TOLERANCE_MS) {
            fprintf(stderr, "%s: after %s, timer %zu is %s, due in %.0f ms, expected %u ms\n",
                    timers_lib.name, phase, i, timers_lib.is_active(i) ? "active" : "inactive",
                    due, ms[i]);
            return 1;
        }
    }
    return 0;
}

static int check_stopped(size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (timers_lib.is_active(i)) {
            fprintf(stderr, "%s: timer %zu still active after stop\n", timers_lib.name, i);
            return 1;
        }
    return 0;
}

static int check_fired(size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (timers_fired[i] != 1) {
            fprintf(stderr, "%s: timer %zu fired %u times, expected once\n", timers_lib.name, i,
                    timers_fired[i]);
            return 1;
        }
    if (timers_fired_total != n) {
        fprintf(stderr, "%s: %zu callbacks for %zu timers\n", timers_lib.name,
                timers_fired_total, n);
        return 1;
    }
    return 0;
}

/* One run of the four phases; fills cpu[phase] and wall[phase] in ns per
 * timer. */
static int run_once(const struct options *o, const uint32_t *start_ms, const uint32_t *restart_ms,
                    const uint32_t *expire_ms, double *cpu, double *wall)
{
    size_t n = o->count;
    if (timers_lib.open() != 0)
        return 1;

    timers_lib.update_time();
    struct stamp t0 = stamp_now();
    timers_lib.start_all(start_ms);
    record(&cpu[PHASE_START], &wall[PHASE_START], t0, n);
    if (check_armed("start", start_ms, n) != 0)
        return 1;

    t0 = stamp_now();
    timers_lib.restart_all(restart_ms);
    record(&cpu[PHASE_RESTART], &wall[PHASE_RESTART], t0, n);
    if (check_armed("restart", restart_ms, n) != 0)
        return 1;

    t0 = stamp_now();
    timers_lib.stop_all();
    record(&cpu[PHASE_STOP], &wall[PHASE_STOP], t0, n);
    if (check_stopped(n) != 0)
        return 1;

    /* expire: the starts are not timed here (that is the 'start' phase);
     * the loop run is, in CPU time, since its wall time is mostly the
     * ~200 ms of waiting for the last deadline. */
    memset(timers_fired, 0, n);
    timers_fired_total = 0;
    timers_lib.update_time();
    timers_lib.start_all(expire_ms);
    t0 = stamp_now();
    if (timers_lib.run() != 0)
        return 1;
    record(&cpu[PHASE_EXPIRE], &wall[PHASE_EXPIRE], t0, n);
    if (check_fired(n) != 0)
        return 1;

    timers_lib.close();
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    struct options o;
    if (parse_options(argc, argv, &o) < 0)
        return 2;
    size_t n = o.count;

    /* Everything is allocated and drawn before any timing. */
    uint32_t *start_ms = malloc(n * sizeof *start_ms);
    uint32_t *restart_ms = malloc(n * sizeof *restart_ms);
    uint32_t *expire_ms = malloc(n * sizeof *expire_ms);
    timers_fired = calloc(n, 1);
    double *cpu = calloc((size_t)o.runs * PHASES, sizeof *cpu);
    double *wall = calloc((size_t)o.runs * PHASES, sizeof *wall);
    if (!start_ms || !restart_ms || !expire_ms || !timers_fired || !cpu || !wall) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    rng_state = o.seed;
    for (size_t i = 0; i < n; i++) {
        start_ms[i] = 1 + (uint32_t)(rng_next() % 1000000u);   /* 1 ms .. ~16.7 min */
        restart_ms[i] = 1 + (uint32_t)(rng_next() % 1000000u);
        expire_ms[i] = (uint32_t)(rng_next() % 201u);          /* 0 .. 200 ms */
    }
    if (timers_lib.alloc(n) != 0)
        return 1;

    for (int r = 0; r < o.runs; r++)
        if (run_once(&o, start_ms, restart_ms, expire_ms, &cpu[r * PHASES], &wall[r * PHASES]) != 0)
            return 1;

    if (o.csv && o.header)
        printf("library,count,runs,op,median_ns,min_ns,max_ns,median_wall_ns\n");
    else if (!o.csv)
        printf("%s: %zu timers, %d runs (ns per timer, CPU time; median [min..max])\n",
               timers_lib.name, n, o.runs);
    for (int p = 0; p < PHASES; p++) {
        double c[o.runs], w[o.runs];
        for (int r = 0; r < o.runs; r++) {
            c[r] = cpu[r * PHASES + p];
            w[r] = wall[r * PHASES + p];
        }
        double med = median(c, o.runs), wmed = median(w, o.runs);
        if (o.csv)
            printf("%s,%zu,%d,%s,%.1f,%.1f,%.1f,%.1f\n", timers_lib.name, n, o.runs,
                   phase_names[p], med, c[0], c[o.runs - 1], wmed);
        else
            printf("  %-8s %8.1f  [%.1f..%.1f]   wall %8.1f%s\n", phase_names[p], med, c[0],
                   c[o.runs - 1], wmed, p == PHASE_EXPIRE ? " (includes the waiting)" : "");
    }
    return 0;
}
