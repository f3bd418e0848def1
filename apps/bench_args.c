/* Command line of evmux-bench: "--flag value" and "--flag=value" both
 * work, as in the other programs; a bad flag is one line on stderr plus the
 * usage, and exit status 2. */
#include "bench.h"

#include "args_common.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_CONNS 1000000
#define MAX_SIZE (64u * 1024 * 1024)
#define MAX_DEPTH 65536
#define MAX_SECONDS 86400.0

static void usage(FILE *out)
{
    fputs("usage: evmux-bench [--host ADDR] [--port N] [--conns N] [--idle M] [--size BYTES]\n"
          "                   [--depth D] [--duration S] [--warmup S] [--server-pid PID]\n"
          "                   [--backend NAME] [--threads N] [--mark] [--udp] [--csv | --json]\n"
          "\n"
          "Load generator for the uppercase echo server (evmux-echo-server). Each of N\n"
          "connections keeps D messages of BYTES bytes in flight and sends the next one\n"
          "as each reply completes. Every reply byte is checked against the uppercased\n"
          "stream that was sent; a wrong byte or a connection the server drops makes the\n"
          "run fail. A connection is ended, and counted as one mismatch, at its first\n"
          "wrong byte.\n"
          "\n"
          "  --host ADDR       server address or host name (default 127.0.0.1); the first\n"
          "                    connection tries each address of a name in turn, the\n"
          "                    others use the one that answered\n"
          "  --port N          server port (default 8081)\n"
          "  --conns N         connections carrying traffic (default 1)\n"
          "  --idle M          extra connections that stay silent (default 0)\n"
          "  --size BYTES      bytes per message (default 64)\n"
          "  --depth D         messages in flight per connection (default 1)\n"
          "  --duration S      seconds measured, decimals allowed (default 5)\n"
          "  --warmup S        seconds of traffic before measuring (default 1)\n"
          "  --server-pid PID  also report the server's CPU time per message\n"
          "  --backend NAME    auto, select, poll, epoll, uring (default auto: EVMUX_BACKEND,\n"
          "                    else the best available)\n"
          "  --threads N       N event loops, one per thread, 1 to 64 and at most --conns\n"
          "                    (default 1): connection (or socket) i runs on loop i % N;\n"
          "                    all start and stop measuring together, and the results are\n"
          "                    merged, with each thread's message count\n"
          "  --mark            start every message with the byte 0x7F (DEL), which the\n"
          "                    payload never holds otherwise: servers started with\n"
          "                    --work-us U spend U microseconds of CPU on each one\n"
          "  --udp             datagrams to a UDP echo server (evmux-echo-server --udp):\n"
          "                    N sockets keep D datagrams of BYTES (9 to 65507) in flight;\n"
          "                    one unanswered for 200 ms is counted lost and replaced\n"
          "  --csv             print a header line and one line of values\n"
          "  --json            print one JSON object\n"
          "  --help            show this help\n"
          "\n"
          "Reports messages/s, MB/s (payload bytes echoed, 10^6 bytes, each byte counted\n"
          "once), latency percentiles from send to the last reply byte, connect failures,\n"
          "errors and mismatches. Exit status: 0 clean run, 1 wrong replies, connections\n"
          "dropped by the server or nothing measured, 2 usage error.\n",
          out);
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int bad_usage(const char *fmt, ...)
{
    va_list ap;
    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    usage(stderr);
    return 2;
}

static bool parse_seconds(const char *s, double *out)
{
    if ((s[0] < '0' || s[0] > '9') && s[0] != '.')
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0 || v > MAX_SECONDS)
        return false;
    *out = v;
    return true;
}

enum flag {
    F_HOST, F_PORT, F_CONNS, F_IDLE, F_SIZE, F_DEPTH, F_DURATION, F_WARMUP, F_SERVER_PID,
    F_BACKEND, F_THREADS, F_VALUE_FLAGS, /* those above take a value */
    F_CSV = F_VALUE_FLAGS, F_JSON, F_MARK, F_UDP, F_HELP, F_COUNT
};

static const char *const flag_names[F_COUNT] = {
    "--host", "--port", "--conns", "--idle", "--size", "--depth", "--duration", "--warmup",
    "--server-pid", "--backend", "--threads", "--csv", "--json", "--mark", "--udp", "--help",
};

/* Which flag `arg` is, and where its value starts (after '=') if given
 * inline; F_COUNT if none. */
static enum flag match_flag(const char *arg, const char **inline_value)
{
    *inline_value = NULL;
    if (strcmp(arg, "-h") == 0)
        return F_HELP;
    for (int k = 0; k < F_COUNT; k++) {
        size_t len = strlen(flag_names[k]);
        if (strncmp(arg, flag_names[k], len) != 0 || (arg[len] != '=' && arg[len] != '\0'))
            continue;
        if (arg[len] == '=')
            *inline_value = arg + len + 1;
        return (enum flag)k;
    }
    return F_COUNT;
}

static bool process_exists(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    return access(path, R_OK) == 0;
}

/* Stores one flag's value; returns -1 or an exit status. */
static int apply_value(enum flag f, const char *value, struct bench_options *opt)
{
    unsigned long long n;
    switch (f) {
    case F_HOST:
        if (value[0] == '\0')
            return bad_usage("--host needs an address");
        opt->host = value;
        return -1;
    case F_PORT:
        if (!args_count(value, 1, 65535, &n))
            return bad_usage("--port must be a number from 1 to 65535, not '%s'", value);
        opt->port = (unsigned)n;
        return -1;
    case F_CONNS:
        if (!args_count(value, 1, MAX_CONNS, &n))
            return bad_usage("--conns must be a number from 1 to 1000000, not '%s'", value);
        opt->conns = (size_t)n;
        return -1;
    case F_IDLE:
        if (!args_count(value, 0, MAX_CONNS, &n))
            return bad_usage("--idle must be a number from 0 to 1000000, not '%s'", value);
        opt->idle = (size_t)n;
        return -1;
    case F_SIZE:
        if (!args_count(value, 1, MAX_SIZE, &n))
            return bad_usage("--size must be a number of bytes from 1 to 67108864, not '%s'", value);
        opt->size = (size_t)n;
        return -1;
    case F_DEPTH:
        if (!args_count(value, 1, MAX_DEPTH, &n))
            return bad_usage("--depth must be a number from 1 to 65536, not '%s'", value);
        opt->depth = (size_t)n;
        return -1;
    case F_DURATION:
        if (!parse_seconds(value, &opt->duration_s) || opt->duration_s <= 0)
            return bad_usage("--duration must be a positive number of seconds, not '%s'", value);
        return -1;
    case F_WARMUP:
        if (!parse_seconds(value, &opt->warmup_s))
            return bad_usage("--warmup must be a number of seconds, not '%s'", value);
        return -1;
    case F_SERVER_PID:
        if (!args_count(value, 1, 0x7fffffff, &n))
            return bad_usage("--server-pid must be a process id, not '%s'", value);
        if (!process_exists((pid_t)n))
            return bad_usage("--server-pid: no process %s to watch", value);
        opt->server_pid = (pid_t)n;
        return -1;
    case F_BACKEND:
        if (!args_backend_ok(value))
            return bad_usage("--backend must be auto, select, poll, epoll or uring, not '%s'", value);
        opt->backend = value;
        return -1;
    case F_THREADS:
        if (!args_count(value, 1, BENCH_MAX_THREADS, &n))
            return bad_usage("--threads must be a number from 1 to %d, not '%s'",
                             BENCH_MAX_THREADS, value);
        opt->threads = (unsigned)n;
        return -1;
    default:
        return bad_usage("internal error at flag %d", (int)f);
    }
}

int bench_parse_args(int argc, char **argv, struct bench_options *opt)
{
    bool csv = false, json = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value;
        enum flag f = match_flag(arg, &value);
        if (f == F_COUNT)
            return bad_usage("unknown argument '%s'", arg);
        if (f >= F_VALUE_FLAGS) {
            if (value != NULL)
                return bad_usage("%s takes no value", flag_names[f]);
            if (f == F_HELP) {
                usage(stdout);
                return 0;
            }
            csv |= f == F_CSV;
            json |= f == F_JSON;
            opt->mark |= f == F_MARK;
            opt->udp |= f == F_UDP;
            continue;
        }
        if (value == NULL) {
            if (i + 1 >= argc)
                return bad_usage("%s needs a value", arg);
            value = argv[++i];
        }
        int status = apply_value(f, value, opt);
        if (status >= 0)
            return status;
    }
    if (csv && json)
        return bad_usage("choose one of --csv and --json");
    size_t header = 8 + (opt->mark ? 1 : 0); /* bench_udp.c: the sequence number, the marker */
    if (opt->udp && (opt->size < header || opt->size > 65507))
        return bad_usage("--udp: --size must be from %zu to 65507 bytes", header);
    if (opt->udp && opt->idle > 0)
        return bad_usage("--udp has no idle connections: drop --idle");
    /* A thread without traffic would only measure nothing. */
    if (opt->threads > opt->conns)
        return bad_usage("--threads %u needs at least as many %s, not %zu", opt->threads,
                         opt->udp ? "sockets (--conns)" : "connections (--conns)", opt->conns);
    opt->format = csv ? FORMAT_CSV : json ? FORMAT_JSON : FORMAT_TEXT;
    return -1;
}
