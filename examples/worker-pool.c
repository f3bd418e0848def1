/* Heavy work off the loop's thread: counts the primes below each LIMIT on
 * evmux's worker pool (evmux_queue_work); each result comes back to the
 * loop's thread, in its after_cb, which prints it. A timer ticks meanwhile:
 * the loop stays free to serve timers and sockets while the work runs.
 * Run: evmux-example-worker-pool [LIMIT...]   (default: 100000, 200000 ... 800000) */
#include <evmux.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct job {
    evmux_work work;
    unsigned long limit, primes; /* primes: written by a pool thread, read in on_done */
};

static evmux_timer ticker;
static int pending;
static unsigned ticks;

static void count_primes(evmux_work *w) /* on a pool thread: no evmux calls here */
{
    struct job *job = w->data;
    unsigned long n = job->limit > 2; /* 2, then the odd ones by trial division */
    for (unsigned long k = 3; k < job->limit; k += 2) {
        unsigned long d = 3;
        while (d * d <= k && k % d != 0) d += 2;
        n += d * d > k;
    }
    job->primes = n;
}

static void on_done(evmux_work *w, int status) /* back on the loop's thread */
{
    struct job *job = w->data;
    if (status == 0) printf("primes below %lu: %lu\n", job->limit, job->primes);
    if (--pending == 0) evmux_close(&ticker.handle, NULL); /* the last one: nothing left to do */
}

static void on_tick(evmux_timer *t) { (void)t; printf("tick %u: %d jobs to go\n", ++ticks, pending); }

int main(int argc, char **argv)
{
    int n = argc > 1 ? argc - 1 : 8;
    struct job *jobs = calloc((size_t)n, sizeof *jobs);
    for (int i = 0; jobs && i < n; i++) {
        char *end = "";
        jobs[i].limit = argc > 1 ? strtoul(argv[i + 1], &end, 10) : 100000ul * (unsigned long)(i + 1);
        if (*end || jobs[i].limit > 100000000) {
            fprintf(stderr, "usage: %s [LIMIT...]   (each a number up to 100000000)\n", argv[0]);
            free(jobs);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* each line at once, even into a pipe */
    evmux_loop *loop;
    int rc = jobs ? evmux_loop_new(&loop, NULL) : -ENOMEM; /* pool_threads 0: up to four */
    if (rc < 0) {
        fprintf(stderr, "cannot start: %s\n", evmux_strerror(rc));
        return 1;
    }
    evmux_timer_init(loop, &ticker, on_tick);
    evmux_timer_start(&ticker, 50, 50);
    for (int i = 0; rc == 0 && i < n; i++) {
        evmux_work_init(&jobs[i].work);
        jobs[i].work.data = &jobs[i];
        rc = evmux_queue_work(loop, &jobs[i].work, count_primes, on_done);
        pending += rc == 0;
    }
    if (rc < 0) fprintf(stderr, "cannot queue all the work: %s\n", evmux_strerror(rc));
    if (pending == 0) evmux_close(&ticker.handle, NULL); /* else the last on_done closes it */
    int run_rc = evmux_run(loop, EVMUX_RUN_DEFAULT); /* until no job or timer is left */
    printf("all done; the loop ticked %u times meanwhile\n", ticks);
    evmux_loop_free(loop);
    free(jobs);
    return rc < 0 || run_rc < 0 ? 1 : 0;
}
