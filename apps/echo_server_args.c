/* evmux-echo-server's command line. */
#include "echo_server.h"

#include "args_common.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fputs("usage: evmux-echo-server [--host ADDR] [--port N] [--unix PATH] [--backend NAME]\n"
          "                         [--threads N|auto] [--balance reuseport|handoff] [--pin]\n"
          "                         [--max-conns N] [--work-us U] [--workers N] [--udp]\n"
          "                         [--proxy-protocol] [--log-conns]\n"
          "                         [--drain-idle-ms MS] [--drain-timeout S]\n"
          "\n"
          "Echoes every byte each client sends, with a-z uppercased.\n"
          "\n"
          "  --host ADDR      IPv4 or IPv6 address, or host name, to listen on (a name:\n"
          "                   its first address; default 127.0.0.1)\n"
          "  --port N         TCP (or UDP) port, 0 picks a free one (default 8081)\n"
          "  --unix PATH      listen on a Unix-domain socket instead of TCP\n"
          "  --backend NAME   auto, select, poll, epoll, uring (default auto: EVMUX_BACKEND,\n"
          "                   else the best available)\n"
          "  --threads N      serve with N loops, one per thread (auto: one per CPU this\n"
          "                   process may run on; default 1)\n"
          "  --balance MODE   how connections reach the loops: reuseport (each loop listens,\n"
          "                   the kernel spreads; the default) or handoff (loop 0 accepts and\n"
          "                   hands each connection to the loop serving the fewest)\n"
          "  --pin            pin each loop's thread to its own CPU\n"
          "  --max-conns N    serve at most N clients at once (all loops together); later\n"
          "                   ones are closed at once\n"
          "  --work-us U      each 0x7F byte received costs U microseconds of CPU before its\n"
          "                   reply (a heavy handler; default 0)\n"
          "  --workers N      run that work on a pool of N threads per loop instead of the\n"
          "                   loop's thread (default 0: on the loop's thread)\n"
          "  --udp            serve UDP datagrams: each comes back, uppercased, to its sender\n"
          "  --proxy-protocol each connection starts with a PROXY header (v1 or v2, as\n"
          "                   HAProxy's send-proxy and send-proxy-v2 send it); a connection\n"
          "                   without a valid one is closed, with the reason logged\n"
          "  --log-conns      log each connection's client address (the real one, with\n"
          "                   --proxy-protocol) on stderr\n"
          "  --drain-idle-ms MS  on SIGTERM, a connection whose input pauses this long is\n"
          "                   finished (default 200)\n"
          "  --drain-timeout S   on SIGTERM, connections still busy after S seconds are\n"
          "                   finished anyway (default 30)\n"
          "  --help           show this help\n"
          "\n"
          "On start it prints 'listening on ADDRESS (backend NAME)'. SIGINT or SIGTERM\n"
          "stops accepting, finishes idle connections at once, goes on serving busy ones\n"
          "until their input pauses (--drain-idle-ms) or --drain-timeout, sends every\n"
          "client what it is owed, and exits 0. A second signal ends everything at once.\n",
          out);
    /* What this build can offer: a missing liburing at build time drops uring. */
    fprintf(out, "\nBackends compiled in: %s\n", evmux_backends_available());
}

static int bad_usage(const char *fmt, const char *arg)
{
    fputs("evmux-echo-server: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    usage(stderr);
    return 2;
}

static unsigned cpus_allowed(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? (unsigned)n : 1;
}

static const char *const flags[] = {"--udp", "--pin", "--proxy-protocol", "--log-conns"};
enum { F_UDP, F_PIN, F_PROXY, F_LOG, F_COUNT };
static const char *const valued[] = {"--host",    "--port",          "--unix",
                                     "--backend", "--max-conns",     "--work-us",
                                     "--workers", "--threads",       "--balance",
                                     "--drain-idle-ms", "--drain-timeout"};
enum { HOST, PORT, UNIX, BACKEND, MAX_CONNS, WORK_US, WORKERS, THREADS, BALANCE, DRAIN_IDLE,
       DRAIN_TIMEOUT, UNKNOWN };

static int take_value(int which, const char *value, struct options *opt)
{
    unsigned long long n;
    switch (which) {
    case HOST:
        opt->host = value;
        break;
    case PORT:
        if (!args_count(value, 0, 65535, &n))
            return bad_usage("--port must be a number from 0 to 65535, not '%s'", value);
        opt->port = (unsigned)n;
        break;
    case UNIX:
        opt->unix_path = value;
        break;
    case BACKEND:
        if (!args_backend_ok(value))
            return bad_usage("--backend must be auto, select, poll, epoll or uring, not '%s'",
                             value);
        opt->backend = value;
        break;
    case MAX_CONNS:
        if (!args_count(value, 0, 1000000000, &n) || n == 0)
            return bad_usage("--max-conns must be a positive number, not '%s'", value);
        opt->max_conns = (size_t)n;
        break;
    case WORK_US:
        if (!args_count(value, 0, 10000000, &n))
            return bad_usage("--work-us must be a number from 0 to 10000000, not '%s'", value);
        opt->work_us = n;
        break;
    case WORKERS:
        if (!args_count(value, 0, 256, &n))
            return bad_usage("--workers must be a number from 0 to 256, not '%s'", value);
        opt->workers = (unsigned)n;
        break;
    case THREADS:
        if (strcmp(value, "auto") == 0)
            n = cpus_allowed();
        else if (!args_count(value, 0, MAX_THREADS, &n) || n == 0)
            return bad_usage("--threads must be auto or a number from 1 to 256, not '%s'", value);
        opt->threads = (unsigned)n;
        break;
    case BALANCE:
        if (strcmp(value, "reuseport") == 0)
            opt->balance = BALANCE_REUSEPORT;
        else if (strcmp(value, "handoff") == 0)
            opt->balance = BALANCE_HANDOFF;
        else
            return bad_usage("--balance must be reuseport or handoff, not '%s'", value);
        break;
    case DRAIN_IDLE:
        if (!args_count(value, 0, 600000, &n) || n == 0)
            return bad_usage("--drain-idle-ms must be a number from 1 to 600000, not '%s'", value);
        opt->drain_idle_ms = n;
        break;
    case DRAIN_TIMEOUT:
        if (!args_count(value, 0, 86400, &n))
            return bad_usage("--drain-timeout must be a number of seconds up to 86400, not '%s'",
                             value);
        opt->drain_timeout_ms = n * 1000;
        break;
    }
    return -1;
}

static int check_combinations(const struct options *opt)
{
    if (opt->udp && opt->unix_path != NULL)
        return bad_usage("%s", "--udp serves IP datagrams: it does not go with --unix");
    if (opt->udp && (opt->workers > 0 || opt->max_conns > 0 || opt->proxy_protocol))
        return bad_usage("%s", "--workers, --max-conns and --proxy-protocol are for TCP "
                               "connections, not --udp");
    if (opt->udp && opt->balance == BALANCE_HANDOFF)
        return bad_usage("%s", "--udp spreads datagrams with reuseport: --balance handoff is "
                               "for connections");
    if (opt->unix_path != NULL && opt->threads > 1 && opt->balance == BALANCE_REUSEPORT)
        return bad_usage("%s", "a Unix socket has no SO_REUSEPORT: use --balance handoff "
                               "with --threads");
    return -1;
}

int parse_args(int argc, char **argv, struct options *opt)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        int flag = 0;
        while (flag < F_COUNT && strcmp(arg, flags[flag]) != 0)
            flag++;
        if (flag < F_COUNT) {
            opt->udp |= flag == F_UDP;
            opt->pin |= flag == F_PIN;
            opt->proxy_protocol |= flag == F_PROXY;
            opt->log_conns |= flag == F_LOG;
            continue;
        }
        const char *value = NULL;
        int which = UNKNOWN;
        for (int k = 0; k < UNKNOWN; k++) {
            size_t len = strlen(valued[k]);
            if (strncmp(arg, valued[k], len) != 0 || (arg[len] != '=' && arg[len] != '\0'))
                continue;
            if (arg[len] == '=')
                value = arg + len + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else
                return bad_usage("%s needs a value", arg);
            which = k;
            break;
        }
        if (which == UNKNOWN)
            return bad_usage("unknown argument '%s'", arg);
        int status = take_value(which, value, opt);
        if (status >= 0)
            return status;
    }
    return check_combinations(opt);
}
