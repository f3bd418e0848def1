/* What the end of an evmux-bench run says on stderr, and its exit status,
 * from the merged results of every thread: for the streams load and the
 * datagram load, each in its own words. The figures themselves are
 * bench_report.c's. */
#include "bench.h"

#include <evmux.h>

#include <stdio.h>

/* The ends that leave no figures: --host is no address (exit 2), or a
 * thread failed and said why (the status of bench_threads_run). -1 when
 * the run has figures to report. */
static int no_figures(const struct bench_options *opt, const struct bench_results *r, int status)
{
    if (r->resolve_error < 0) {
        fprintf(stderr, PROG ": bad address '%s': %s\n", opt->host,
                evmux_strerror(r->resolve_error));
        return 2;
    }
    return status != 0 ? status : -1;
}

static void report_connect_failures(const struct bench_options *opt,
                                    const struct bench_results *r)
{
    if (r->connect_failures == 0)
        return;
    fprintf(stderr, PROG ": %llu of %zu connections to %s failed (first error: %s)\n",
            (unsigned long long)r->connect_failures, opt->conns + opt->idle, r->target,
            evmux_strerror(r->first_connect_error));
}

/* The exit status a finished streams run deserves, with the reason. */
static int tcp_verdict(const struct bench_results *r)
{
    if (r->mismatches > 0) {
        fprintf(stderr, PROG ": FAILED: %llu connections got replies that differ from what "
                        "was sent, uppercased\n", (unsigned long long)r->mismatches);
        return 1;
    }
    if (r->errors > 0) {
        fprintf(stderr, PROG ": FAILED: %llu connections were dropped or left replies "
                        "unanswered\n", (unsigned long long)r->errors);
        return 1;
    }
    if (r->messages == 0) {
        fprintf(stderr, PROG ": FAILED: no message completed in the measured window\n");
        return 1;
    }
    return 0;
}

int bench_tcp_conclude(const struct bench_options *opt, struct bench_results *r, int status)
{
    int early = no_figures(opt, r, status);
    if (early >= 0)
        return early;
    report_connect_failures(opt, r);
    if (r->no_connection) {
        fprintf(stderr, PROG ": no connection to %s could be used\n", r->target);
        return 1;
    }
    bench_report(opt, r);
    return tcp_verdict(r);
}

int bench_udp_conclude(const struct bench_options *opt, struct bench_results *res, int status)
{
    int early = no_figures(opt, res, status);
    if (early >= 0)
        return early;
    if (res->late > 0)
        fprintf(stderr, PROG ": %llu replies came after their datagram was counted lost\n",
                (unsigned long long)res->late);
    bench_report(opt, res);
    if (res->mismatches > 0 || res->errors > 0 || res->send_error != 0) {
        fprintf(stderr, PROG ": FAILED: %llu replies differ from what was sent, uppercased; "
                        "%llu socket errors\n",
                (unsigned long long)res->mismatches, (unsigned long long)res->errors);
        return 1;
    }
    if (res->messages == 0) {
        fprintf(stderr, PROG ": FAILED: no datagram answered in the measured window\n");
        return 1;
    }
    return 0;
}
