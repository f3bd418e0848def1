/* What every benchmark peer shares: the command line, the listening socket,
 * the start-up line the scripts parse, the request handler (uppercase, and
 * the heavy work of --work-us), the descriptor limit, a queue for bytes
 * owed to a client, and exit on SIGINT/SIGTERM. Header-only: each peer is
 * one .c file that includes it.
 *
 * The behaviour to match is apps/echo_server.c: every byte comes back with
 * a-z uppercased; past PEER_OWED_HIGH bytes owed to a client we stop reading
 * from it until that drains to PEER_OWED_LOW; on the client's EOF we send
 * what is owed, then close.
 *
 * The UDP peers (peer_udp_*.c) share the command line, the handler and the
 * signals too, plus their socket (peer_udp_socket) and the count of replies
 * they dropped (printed at exit): each datagram goes back to its sender,
 * uppercased, and a reply the socket does not take is queued only up to
 * PEER_UDP_QUEUE_MAX bytes.
 */
#ifndef PEER_COMMON_H
#define PEER_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "echo_upper.h" /* apps/: the transform every echo server shares */

#define PEER_OWED_HIGH (1024 * 1024) /* stop reading from a client owed more */
#define PEER_OWED_LOW (256 * 1024)   /* ...and resume once it is down to this */
#define PEER_READ_SIZE (64 * 1024)   /* one read, as evmux's loop buffer */
#define PEER_MARK 0x7F               /* a heavy request: evmux-bench --mark starts messages with it */
#define PEER_WORK_US_MAX 10000000ul  /* --work-us: 10 s per marker is plenty */

static const char *peer_name = "peer";
static const char *peer_model = "";
static volatile unsigned long peer_refused; /* connections closed unserved */
static bool peer_udp;           /* a UDP peer (peer_udp_parse_args): datagrams, not streams */
static volatile unsigned long peer_udp_dropped_full;  /* replies dropped: socket full, queue at its bound */
static volatile unsigned long peer_udp_dropped_error; /* replies the socket refused with an error */
static uint64_t peer_work_ns;   /* --work-us in ns: CPU burnt per PEER_MARK received */
static _Thread_local volatile uint64_t peer_work_sink; /* keeps the burnt work observable (per thread: no race) */

struct peer_options {
    const char *host;
    unsigned port;
};

static inline void peer_usage(FILE *out)
{
    fprintf(out,
            "usage: evmux-peer-%s [--host ADDR] [--port N] [--work-us U]\n"
            "\n"
            "%s"
            "Model: %s.\n"
            "\n"
            "  --host ADDR   address or host name to listen on (default 127.0.0.1)\n"
            "  --port N      %s port, 0 picks a free one (default 0)\n"
            "  --work-us U   for every byte 0x7F received, spend U microseconds of the\n"
            "                serving thread's CPU time before replying: a heavy request\n"
            "                (evmux-bench --mark sends one per message; default 0)\n"
            "  --help        show this help\n"
            "\n"
            "On start it prints 'listening on ADDRESS:PORT (peer %s)'. SIGINT or SIGTERM\n"
            "exits 0 at once%s.\n",
            peer_name,
            peer_udp ? "Sends every datagram back to its sender with a-z uppercased, one reply\n"
                       "per datagram: a benchmark peer for evmux's UDP handle.\n"
                     : "Echoes every byte each client sends, with a-z uppercased, as\n"
                       "evmux-echo-server does: a benchmark peer for evmux.\n",
            peer_model, peer_udp ? "UDP" : "TCP", peer_name,
            peer_udp ? ", saying on stderr how many replies it dropped" : "");
}

/* Returns -1 to go on, or an exit status. Takes "--flag value" and "--flag=value". */
static inline int peer_parse_args(int argc, char **argv, const char *name, const char *model,
                                  struct peer_options *opt)
{
    peer_name = name;
    peer_model = model;
    opt->host = "127.0.0.1";
    opt->port = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            peer_usage(stdout);
            return 0;
        }
        bool is_host = strncmp(arg, "--host", 6) == 0 && (arg[6] == '\0' || arg[6] == '=');
        bool is_port = strncmp(arg, "--port", 6) == 0 && (arg[6] == '\0' || arg[6] == '=');
        bool is_work = strncmp(arg, "--work-us", 9) == 0 && (arg[9] == '\0' || arg[9] == '=');
        if (!is_host && !is_port && !is_work) {
            fprintf(stderr, "evmux-peer-%s: unknown argument '%s'\n", name, arg);
            peer_usage(stderr);
            return 2;
        }
        size_t len = is_work ? 9 : 6;
        if (arg[len] == '=')
            value = arg + len + 1;
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            fprintf(stderr, "evmux-peer-%s: %s needs a value\n", name, arg);
            peer_usage(stderr);
            return 2;
        }
        if (is_host) {
            opt->host = value;
            continue;
        }
        char *end;
        errno = 0;
        unsigned long n = strtoul(value, &end, 10);
        bool number = value[0] >= '0' && value[0] <= '9' && *end == '\0' && errno == 0;
        if (is_work) {
            if (!number || n > PEER_WORK_US_MAX) {
                fprintf(stderr, "evmux-peer-%s: --work-us must be a number of microseconds "
                        "from 0 to %lu, not '%s'\n", name, PEER_WORK_US_MAX, value);
                peer_usage(stderr);
                return 2;
            }
            peer_work_ns = (uint64_t)n * 1000;
            continue;
        }
        if (!number || n > 65535) {
            fprintf(stderr, "evmux-peer-%s: --port must be a number from 0 to 65535, not '%s'\n",
                    name, value);
            peer_usage(stderr);
            return 2;
        }
        opt->port = (unsigned)n;
    }
    return -1;
}

/* The address to listen on: a literal, or a name resolved once at start. */
static inline void peer_resolve_type(const struct peer_options *opt, int socktype,
                                     struct sockaddr_storage *addr, socklen_t *len)
{
    char port[8];
    snprintf(port, sizeof port, "%u", opt->port);
    struct addrinfo hints = {.ai_socktype = socktype, .ai_flags = AI_PASSIVE}, *res;
    int rc = getaddrinfo(opt->host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "evmux-peer-%s: bad address '%s': %s\n", peer_name, opt->host,
                gai_strerror(rc));
        exit(2);
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
}

static inline void peer_resolve(const struct peer_options *opt, struct sockaddr_storage *addr,
                         socklen_t *len)
{
    peer_resolve_type(opt, peer_udp ? SOCK_DGRAM : SOCK_STREAM, addr, len);
}

/* A listening TCP socket (SOMAXCONN backlog, as evmux's listener), optionally
 * non-blocking. Exits on failure. */
static inline int peer_listen(const struct peer_options *opt, bool nonblock)
{
    struct sockaddr_storage addr;
    socklen_t len;
    peer_resolve(opt, &addr, &len);
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&addr, len) < 0 || listen(fd, SOMAXCONN) < 0) {
        fprintf(stderr, "evmux-peer-%s: cannot listen on %s:%u: %s\n", peer_name, opt->host,
                opt->port, strerror(errno));
        exit(1);
    }
    return fd;
}

/* Prints the line the scripts parse: "listening on 127.0.0.1:PORT (peer NAME)". */
static inline void peer_announce(int listen_fd)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getsockname(listen_fd, (struct sockaddr *)&addr, &len) == 0) {
        if (addr.ss_family == AF_INET6) {
            struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
            inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip);
            port = ntohs(v6->sin6_port);
            printf("listening on [%s]:%u (peer %s)\n", ip, port, peer_name);
        } else {
            struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
            inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
            port = ntohs(v4->sin_port);
            printf("listening on %s:%u (peer %s)\n", ip, port, peer_name);
        }
    }
    fflush(stdout);
}

static inline void peer_uppercase(char *p, size_t n)
{
    echo_uppercase(p, n); /* the same code as evmux-echo-server's */
}

static inline uint64_t peer_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The heavy part of a request: spins until this thread has used `ns` more
 * CPU time. Thread CPU time, not wall time, so that a request costs the
 * same CPU whether or not the thread is preempted meanwhile; and real work
 * (FNV-1a over a counter) between the clock reads, so the compiler cannot
 * drop the loop and the core is really busy. */
static inline void peer_burn(uint64_t ns)
{
    uint64_t start = peer_thread_cpu_ns(), h = 0xcbf29ce484222325ull;
    uint64_t i = 0;
    do {
        for (int k = 0; k < 256; k++, i++) /* about a microsecond between clock reads */
            h = (h ^ i) * 0x100000001b3ull;
    } while (peer_thread_cpu_ns() - start < ns);
    peer_work_sink = h;
}

static inline void peer_work(const char *p, size_t n)
{
    uint64_t marks = 0;
    for (const char *end = p + n; (p = memchr(p, PEER_MARK, (size_t)(end - p))) != NULL; p++)
        marks++;
    if (marks > 0)
        peer_burn(marks * peer_work_ns);
}

/* Handles a chunk just received, before any of it is replied to: the work
 * --work-us asks for per marker byte, then the uppercase. Without
 * --work-us this costs one branch. */
static inline void peer_handle(char *p, size_t n)
{
    if (peer_work_ns != 0)
        peer_work(p, n);
    peer_uppercase(p, n);
}

static inline void peer_set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Every connection is a descriptor: take all the system allows us. Also
 * ignores SIGPIPE, so that a write to a reset connection is just an error. */
static inline void peer_init_process(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
}

/* Counts a connection closed without being served, and says so on the 1st,
 * 2nd, 4th, 8th... time (the total is printed at exit). */
static inline void peer_count_refused(const char *why)
{
    unsigned long n = ++peer_refused;
    if ((n & (n - 1)) == 0)
        fprintf(stderr, "evmux-peer-%s: refused a connection (%s); %lu so far\n", peer_name,
                why, n);
}

/* An accept() that failed for another reason than "nothing waiting": said
 * on the 1st, 2nd, 4th... time, as running out of descriptors repeats. */
static inline void peer_accept_failed(int err)
{
    static unsigned long count;
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED)
        return;
    unsigned long n = ++count;
    if ((n & (n - 1)) == 0)
        fprintf(stderr, "evmux-peer-%s: accept: %s (%lu times)\n", peer_name, strerror(err), n);
}

/* A line built without stdio, so that it can be printed from a signal
 * handler: text and numbers appended up to its size, cut beyond. */
struct peer_line {
    char text[192];
    size_t len;
};

static inline void peer_line_str(struct peer_line *l, const char *s)
{
    for (; *s && l->len < sizeof l->text; s++)
        l->text[l->len++] = *s;
}

static inline void peer_line_num(struct peer_line *l, unsigned long n)
{
    char digits[24];
    int d = 0;
    do
        digits[d++] = (char)('0' + n % 10);
    while ((n /= 10) != 0);
    while (d > 0 && l->len < sizeof l->text)
        l->text[l->len++] = digits[--d];
}

static inline void peer_line_print(const struct peer_line *l)
{
    ssize_t ignored = write(STDERR_FILENO, l->text, l->len); /* async-signal-safe */
    (void)ignored;
}

/* At exit, a summary line if any connection was refused; a UDP peer always
 * says how many replies it dropped. */
static inline void peer_print_summary(void)
{
    if (peer_refused != 0) {
        struct peer_line l = {.len = 0};
        peer_line_str(&l, "evmux-peer-");
        peer_line_str(&l, peer_name);
        peer_line_str(&l, ": refused ");
        peer_line_num(&l, peer_refused);
        peer_line_str(&l, " connections\n");
        peer_line_print(&l);
    }
    if (peer_udp) {
        struct peer_line l = {.len = 0};
        unsigned long full = peer_udp_dropped_full, error = peer_udp_dropped_error;
        peer_line_str(&l, "evmux-peer-");
        peer_line_str(&l, peer_name);
        peer_line_str(&l, ": dropped ");
        peer_line_num(&l, full + error);
        peer_line_str(&l, " replies (");
        peer_line_num(&l, full);
        peer_line_str(&l, " with the socket full, ");
        peer_line_num(&l, error);
        peer_line_str(&l, " refused by it)\n");
        peer_line_print(&l);
    }
}

static inline void peer_on_exit_signal(int signo)
{
    (void)signo;
    peer_print_summary();
    _exit(0);
}

/* For the peers without an event library: SIGINT/SIGTERM end the process at
 * once, whatever it is doing (the benchmarks need no graceful flush). */
static inline void peer_exit_on_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = peer_on_exit_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* ---- bytes owed to a client (used by the peers that manage their own) ----
 *
 * A queue of bytes with the unsent part at data[head, head+len). It holds no
 * memory while empty, so an idle connection costs nothing here. */
struct peer_owed {
    char *data;
    size_t head, len, cap;
};

/* Returns false when out of memory. */
static inline bool peer_owed_append(struct peer_owed *q, const char *p, size_t n)
{
    if (q->cap - q->head - q->len < n) {
        if (q->head > 0) {
            memmove(q->data, q->data + q->head, q->len);
            q->head = 0;
        }
        if (q->cap - q->len < n) {
            size_t cap = q->cap ? q->cap : 1024; /* small replies stay in malloc's fast bins */
            while (cap - q->len < n)
                cap *= 2;
            char *data = realloc(q->data, cap);
            if (data == NULL)
                return false;
            q->data = data;
            q->cap = cap;
        }
    }
    memcpy(q->data + q->head + q->len, p, n);
    q->len += n;
    return true;
}

static inline void peer_owed_consume(struct peer_owed *q, size_t n)
{
    q->head += n;
    q->len -= n;
    if (q->len == 0) {
        free(q->data);
        *q = (struct peer_owed){0};
    }
}

/* Sends as much of the queue as the socket takes. Returns false on a hard
 * error (the connection is finished); EAGAIN is not one. */
static inline bool peer_owed_send(struct peer_owed *q, int fd)
{
    while (q->len > 0) {
        ssize_t n = send(fd, q->data + q->head, q->len, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        peer_owed_consume(q, (size_t)n);
    }
    return true;
}

/* Sends a fresh reply: straight to the socket when nothing is queued, and
 * queues what the socket does not take. Returns false on a hard error. */
static inline bool peer_reply(struct peer_owed *q, int fd, const char *p, size_t n)
{
    if (q->len == 0) {
        ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
        if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return false;
        if (sent > 0) {
            p += sent;
            n -= (size_t)sent;
        }
    }
    return n == 0 || peer_owed_append(q, p, n);
}

/* ---- UDP peers ---- */

/* A receive buffer that holds any datagram whole: 65,507 bytes of payload at
 * most over IPv4, 65,527 over IPv6 (without jumbograms). */
#define PEER_UDP_DGRAM_MAX (64 * 1024)
/* What a UDP peer may hold in replies the socket did not take, counting each
 * one's bookkeeping too (so that a flood of empty datagrams is bounded as
 * well); past it a reply is dropped and counted. */
#define PEER_UDP_QUEUE_MAX PEER_OWED_HIGH

/* peer_parse_args for a UDP peer: the usage speaks of datagrams, addresses
 * resolve for SOCK_DGRAM and the exit summary counts dropped replies. */
static inline int peer_udp_parse_args(int argc, char **argv, const char *name,
                                      const char *model, struct peer_options *opt)
{
    peer_udp = true;
    return peer_parse_args(argc, argv, name, model, opt);
}

/* A UDP socket bound to --host/--port, optionally non-blocking. No
 * SO_REUSEADDR: on UDP it would let a second peer share the port unnoticed.
 * Socket buffers keep the system's defaults. Exits on failure. The caller
 * prints the start-up line (peer_announce) once it is ready to serve. */
static inline int peer_udp_socket(const struct peer_options *opt, bool nonblock)
{
    struct sockaddr_storage addr;
    socklen_t len;
    peer_resolve_type(opt, SOCK_DGRAM, &addr, &len);
    int fd = socket(addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, len) < 0) {
        fprintf(stderr, "evmux-peer-%s: cannot bind %s:%u: %s\n", peer_name, opt->host,
                opt->port, strerror(errno));
        exit(1);
    }
    return fd;
}

/* Says on stderr the 1st, 2nd, 4th, 8th... time a call failed (a UDP socket
 * has no connection to close: the peer goes on). */
static inline void peer_udp_notice(const char *call, int err, unsigned long n)
{
    if ((n & (n - 1)) == 0)
        fprintf(stderr, "evmux-peer-%s: %s: %s (%lu times)\n", peer_name, call, strerror(err), n);
}

/* A reply the socket refused with an error (not EAGAIN): dropped, counted. */
static inline void peer_udp_send_failed(int err)
{
    peer_udp_notice("send", err, ++peer_udp_dropped_error);
}

/* A receive that failed with an error (not EAGAIN or EINTR). */
static inline void peer_udp_recv_failed(int err)
{
    static unsigned long count;
    peer_udp_notice("receive", err, ++count);
}

#endif
