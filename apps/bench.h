/* evmux-bench: what the command line asks for and what a run found.
 * bench_args.c parses the one, bench_report.c prints the other (and
 * bench_verdict.c judges it), and in between evmux_bench.c (streams) or
 * bench_udp.c (datagrams) runs the load, on one loop per thread
 * (bench_threads.c). */
#ifndef EVMUX_BENCH_H
#define EVMUX_BENCH_H

#include "bench_hist.h"

#include <evmux.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PROG "evmux-bench"

/* "evmux-bench: " and the message, one whole line on stderr, even while
 * other threads print (bench_common.c). */
void bench_vsay(const char *fmt, va_list ap);
#define MARK_BYTE 0x7F       /* DEL: the servers' "heavy request" marker; uppercase keeps it */
#define PATTERN_PERIOD 65521 /* prime, so the pattern never lines up with a message */
#define BENCH_MAX_THREADS 64 /* --threads: far beyond the cores of any machine we measure on */

enum bench_format {
    FORMAT_TEXT = 0,
    FORMAT_CSV,
    FORMAT_JSON
};

struct bench_options {
    const char *host;
    unsigned port;
    const char *backend; /* "auto", "select", "poll" or "epoll" */
    size_t conns;        /* connections that carry traffic */
    size_t idle;         /* extra connections that stay silent */
    size_t size;         /* bytes per message */
    size_t depth;        /* messages in flight per connection */
    double duration_s;
    double warmup_s;
    pid_t server_pid;    /* 0: not given */
    bool mark;           /* every message starts with the marker byte 0x7F */
    bool udp;            /* datagrams: --conns sockets, one datagram a message */
    unsigned threads;    /* loops, one per thread; connection i on loop i % threads */
    enum bench_format format;
};

/* Parses argv into *opt (which holds the defaults on entry). Returns -1 to
 * go on, or an exit status: 0 after --help, 2 after a usage error (already
 * reported on stderr with the usage). */
int bench_parse_args(int argc, char **argv, struct bench_options *opt);

struct bench_results {
    const char *backend;
    char target[300];           /* "host:port" as connected to */
    size_t active_ok, idle_ok;  /* connections that were established */
    uint64_t connect_failures;
    uint64_t errors;            /* resets, EOF, write errors, missing replies */
    uint64_t mismatches;        /* connections whose replies were wrong */
    uint64_t messages;          /* completed inside the measured window */
    uint64_t sent;              /* --udp: datagrams sent inside the window */
    uint64_t lost;              /* --udp: of those, never answered (or too late) */
    uint64_t bytes_checked;     /* every reply byte compared, whole run */
    double connect_s;
    double duration_s;          /* measured window as it really lasted */
    double server_cpu_s;        /* < 0: not measured */
    double client_cpu_s;
    bench_hist hist;            /* latencies of the counted messages */
    /* What the end of the run says on stderr, and its exit status: */
    int resolve_error;          /* --host is no address: EVMUX_EAI_* or an errno value */
    int first_connect_error;
    bool no_connection;         /* no active connection could be used */
    uint64_t late;              /* --udp: replies after their datagram was counted lost */
    int send_error;             /* --udp: the first send evmux refused */
    uint64_t thread_msgs[BENCH_MAX_THREADS]; /* merged results: each thread's messages */
};

/* bench_common.c */
uint64_t now_ns(void);
double self_cpu_s(void);
/* utime + stime of a process from /proc/PID/stat, or -1. */
double process_cpu_s(pid_t pid);
/* The payload pattern (n bytes) and the same uppercased. */
void make_pattern(uint8_t *payload, uint8_t *expected, size_t n);
/* A phase of s seconds, in whole milliseconds (at least 1), as ns. */
uint64_t phase_ns(double s);
/* Milliseconds from now until deadline_ns (of now_ns), rounded up, so that a
 * timer started with them never fires before it; 0 if it has passed. */
uint64_t ms_until(uint64_t deadline_ns);
/* Starts timer (of loop) to fire at deadline_ns. The timer counts from the
 * loop's cached time: that is refreshed after taking the time left, or a
 * long callback would shorten the phase and the timer could fire early. */
void bench_timer_at(evmux_loop *loop, evmux_timer *timer, uint64_t deadline_ns);

/* The two loads (evmux_bench.c, bench_udp.c), run by each member
 * (bench_threads.h); and what each says of the merged results
 * (bench_verdict.c): the exit status, having reported (`status`: what
 * bench_threads_run returned). */
struct bench_member;
void bench_tcp_load(struct bench_member *m);
int bench_tcp_conclude(const struct bench_options *opt, struct bench_results *r, int status);
void bench_udp_load(struct bench_member *m);
int bench_udp_conclude(const struct bench_options *opt, struct bench_results *r, int status);

/* Prints the results on stdout in the chosen format. */
void bench_report(const struct bench_options *opt, const struct bench_results *r);

#endif
