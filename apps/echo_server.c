/* evmux-echo-server: the select() echo server of the original text (quoted
 * in docs/io-models.md), done properly.
 *
 * One thread serves every client: each byte a client sends comes back with
 * a-z uppercased, in order. The stream queues what a slow client has not
 * taken yet; past OWED_HIGH bytes we stop reading from that client until
 * its queue drains to OWED_LOW, so a client that never reads costs bounded
 * memory and nobody else waits for it.
 *
 * For the original text's third claim (a heavy handler on the loop's thread stalls
 * every client) it can make some input expensive: with --work-us U, each
 * 0x7F byte received costs U microseconds of CPU before its reply. By
 * default that work runs on the loop's thread; with --workers N it runs on
 * evmux's worker pool, while the connection stops reading (so replies stay
 * in order) and every other client goes on being served.
 *
 * With --udp it serves datagrams instead: each one comes back to its
 * sender, uppercased, as one datagram. Replies the socket has not taken
 * are bounded (UDP_OWED_MAX); beyond that a reply is dropped and counted,
 * as a full socket buffer would drop it.
 */
#include <evmux.h>

#include "echo_upper.h"
#include "first_address.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define OWED_HIGH (1024 * 1024)
#define OWED_LOW (256 * 1024)
#define SHUTDOWN_GRACE_MS 5000
#define HEAVY_MARK 0x7f /* each of these bytes costs --work-us of CPU */

struct server {
    evmux_loop *loop;
    evmux_listener listener;
    evmux_udp udp;  /* --udp: the socket instead of the listener */
    bool udp_mode;
    unsigned long long dropped; /* --udp: replies dropped, the socket being full */
    struct conn *conns;
    size_t conn_count;
    size_t max_conns; /* 0: no limit */
    unsigned long long served, refused;
    evmux_signal sigint, sigterm;
    evmux_timer grace; /* bounds how long shutdown waits for slow peers */
    bool stopping;
    unsigned long long work_us; /* CPU per HEAVY_MARK byte */
    unsigned workers;           /* 0: the work runs on the loop's thread */
    atomic_bool give_up_work;   /* shutting down without waiting: jobs end now */
};

/* Input handed to the pool: the connection reads nothing more meanwhile.
 * Allocated per heavy request, so that an idle connection pays one pointer. */
struct job {
    evmux_work work;
    struct conn *conn;
    atomic_bool *give_up;
    unsigned long long cpu_us;
    size_t len;
    char bytes[];
};

struct conn {
    evmux_stream stream;
    struct server *srv;
    struct conn *prev, *next;
    bool peer_done; /* the client sent EOF */
    bool fin_sent;  /* everything owed went out, then our FIN */
    bool closed;    /* the stream's close callback ran; free after the job */
    bool goodbye_after_job; /* shutdown began while the job ran */
    struct job *job; /* with the pool, or NULL */
};

/* ---- one connection: read, uppercase, write back ---- */
#define UDP_OWED_MAX (4 * 1024 * 1024) /* --udp: reply bytes waiting for the socket */


/* Where burn_cpu's result goes, so the compiler must compute it. */
static _Thread_local volatile unsigned burn_sink;

/* Burns `us` microseconds of this thread's CPU time on real work, or
 * less if *give_up becomes true. */
static void burn_cpu(unsigned long long us, atomic_bool *give_up)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    unsigned long long now = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
    unsigned long long end = now + us * 1000ull;
    unsigned h = 2166136261u;
    while (now < end && !atomic_load_explicit(give_up, memory_order_relaxed)) {
        for (unsigned i = 0; i < 1024; i++)
            h = (h ^ i) * 16777619u;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        now = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
    }
    burn_sink = h;
}

static size_t count_marks(const char *p, size_t n)
{
    size_t k = 0;
    for (const char *end = p + n; (p = memchr(p, HEAVY_MARK, (size_t)(end - p))) != NULL; p++)
        k++;
    return k;
}

static void conn_freed(evmux_handle *h)
{
    struct conn *c = h->data;
    c->closed = true;
    if (c->job == NULL) /* else the job's after callback frees it */
        free(c);
}

static void server_maybe_finish(struct server *srv);

static void conn_close(struct conn *c)
{
    struct server *srv = c->srv;
    if (evmux_is_closing(&c->stream.handle))
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->conn_count--;
    if (c->job != NULL)
        evmux_cancel_work(&c->job->work); /* if no thread took it yet */
    evmux_close(&c->stream.handle, conn_freed);
    server_maybe_finish(srv);
}

/* Everything owed has been sent and our FIN is out. */
static void on_shutdown(evmux_stream *s, int status)
{
    struct conn *c = s->handle.data;
    c->fin_sent = true;
    /* When stopping, wait for the client's EOF before closing, so that
     * closing does not reset the connection under replies in flight. */
    if (status < 0 || c->peer_done)
        conn_close(c);
}

static void on_read(evmux_stream *s, ssize_t nread, char *buf);
static void say_goodbye(struct conn *c);

static void send_reply(struct conn *c, char *bytes, size_t len)
{
    evmux_buf reply = {bytes, len};
    if (evmux_stream_write(NULL, &c->stream, &reply, 1, NULL) < 0)
        conn_close(c);
    else if (evmux_stream_over_high(&c->stream))
        evmux_stream_read_stop(&c->stream);
}

static void job_run(evmux_work *w) /* on a pool thread */
{
    struct job *job = (struct job *)w;
    burn_cpu(job->cpu_us, job->give_up);
    echo_uppercase(job->bytes, job->len);
}

static void job_done(evmux_work *w, int status)
{
    struct job *job = (struct job *)w;
    struct conn *c = job->conn;
    c->job = NULL;
    if (c->closed) {
        free(job);
        free(c);
        return;
    }
    if (status < 0 && !evmux_is_closing(&c->stream.handle)) {
        conn_close(c); /* its input went unanswered: the stream is broken */
    } else if (status == 0 && !evmux_is_closing(&c->stream.handle)) {
        send_reply(c, job->bytes, job->len);
        if (c->goodbye_after_job)
            say_goodbye(c);
        else if (!evmux_is_closing(&c->stream.handle) && !evmux_stream_over_high(&c->stream) &&
                 evmux_stream_read_start(&c->stream, on_read) < 0)
            conn_close(c);
    }
    free(job);
}

/* Heavy input goes to the pool; the copy outlives the lent buffer. */
static bool hand_to_pool(struct conn *c, const char *buf, size_t len, unsigned long long cpu_us)
{
    struct job *job = malloc(sizeof *job + len);
    if (job == NULL)
        return false;
    evmux_work_init(&job->work);
    memcpy(job->bytes, buf, len);
    job->len = len;
    job->cpu_us = cpu_us;
    job->conn = c;
    job->give_up = &c->srv->give_up_work;
    if (evmux_queue_work(c->srv->loop, &job->work, job_run, job_done) < 0) {
        free(job);
        return false;
    }
    c->job = job;
    evmux_stream_read_stop(&c->stream);
    return true;
}

static void on_read(evmux_stream *s, ssize_t nread, char *buf)
{
    struct conn *c = s->handle.data;
    if (nread > 0) {
        if (c->srv->stopping)
            return; /* saying goodbye: input is no longer answered */
        unsigned long long cpu_us = 0;
        if (c->srv->work_us > 0)
            cpu_us = c->srv->work_us * count_marks(buf, (size_t)nread);
        if (cpu_us > 0 && c->srv->workers > 0) {
            if (!hand_to_pool(c, buf, (size_t)nread, cpu_us))
                conn_close(c); /* out of memory or threads: cannot answer */
            return;
        }
        if (cpu_us > 0) /* reading the thread's CPU clock is a system call */
            burn_cpu(cpu_us, &c->srv->give_up_work);
        echo_uppercase(buf, (size_t)nread);
        send_reply(c, buf, (size_t)nread);
    } else if (nread == EVMUX_EOF) {
        c->peer_done = true;
        if (c->fin_sent)
            conn_close(c);
        else if (!c->srv->stopping && evmux_stream_shutdown(s, on_shutdown) < 0)
            conn_close(c);
        /* else: on_shutdown closes once what is owed has gone out */
    } else {
        conn_close(c); /* reset or other error: nothing more can be delivered */
    }
}

static void on_drained(evmux_stream *s)
{
    struct conn *c = s->handle.data;
    if (!c->peer_done && c->job == NULL && evmux_stream_read_start(s, on_read) < 0)
        conn_close(c);
}

static void on_accept(evmux_listener *l, int status)
{
    struct server *srv = l->handle.data;
    if (status == -EMFILE || status == -ENFILE) {
        fprintf(stderr, "evmux-echo-server: %s with %zu connections; closing new ones until some end\n",
                evmux_strerror(status), srv->conn_count);
        return;
    }
    if (status < 0) {
        fprintf(stderr, "evmux-echo-server: trouble accepting with %zu connections: %s\n",
                srv->conn_count, evmux_strerror(status));
        return;
    }
    if (srv->max_conns != 0 && srv->conn_count >= srv->max_conns) {
        srv->refused++; /* not taken: the listener closes it */
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        srv->refused++;
        return;
    }
    c->srv = srv;
    c->stream.handle.data = c;
    evmux_stream_init(srv->loop, &c->stream);
    int rc = evmux_accept(l, &c->stream);
    if (rc == 0) {
        evmux_stream_set_nodelay(&c->stream, 1);
        evmux_stream_set_watermarks(&c->stream, OWED_HIGH, OWED_LOW, on_drained);
        rc = evmux_stream_read_start(&c->stream, on_read);
    }
    if (rc < 0) {
        /* e.g. select cannot watch descriptors past FD_SETSIZE */
        fprintf(stderr, "evmux-echo-server: cannot serve a new connection: %s\n",
                evmux_strerror(rc));
        srv->refused++;
        evmux_close(&c->stream.handle, conn_freed);
        return;
    }
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->conn_count++;
    srv->served++;
}

/* ---- stopping on SIGINT/SIGTERM ---- */

/* ---- datagrams (--udp): each answered, uppercased, to its sender ---- */

static void on_datagram(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                        socklen_t from_len, unsigned flags)
{
    struct server *srv = u->handle.data;
    (void)flags; /* the default receive size takes any datagram whole */
    if (nread < 0 || from == NULL)
        return; /* an ICMP report about an earlier reply; nobody to answer */
    if (srv->work_us > 0)
        burn_cpu(count_marks(buf, (size_t)nread) * srv->work_us, &srv->give_up_work);
    echo_uppercase(buf, (size_t)nread);
    evmux_buf reply = {buf, (size_t)nread};
    if (evmux_udp_queued(u) > UDP_OWED_MAX ||
        evmux_udp_send(NULL, u, &reply, 1, from, from_len, NULL) < 0) {
        srv->dropped++;
        return;
    }
    srv->served++;
}

static int start_udp(struct server *srv, const struct sockaddr *addr, socklen_t len)
{
    srv->udp.handle.data = srv;
    int rc = evmux_udp_init(srv->loop, &srv->udp);
    if (rc < 0)
        return rc;
    rc = evmux_udp_bind(&srv->udp, addr, len, 0);
    if (rc == 0)
        rc = evmux_udp_recv_start(&srv->udp, on_datagram);
    if (rc < 0) {
        evmux_close(&srv->udp.handle, NULL);
        return rc;
    }
    srv->udp_mode = true;
    return 0;
}

static void server_maybe_finish(struct server *srv)
{
    if (!srv->stopping || srv->conns != NULL)
        return;
    if (!evmux_is_closing(&srv->grace.handle))
        evmux_close(&srv->grace.handle, NULL);
    if (!evmux_is_closing(&srv->sigint.handle))
        evmux_close(&srv->sigint.handle, NULL);
    if (!evmux_is_closing(&srv->sigterm.handle))
        evmux_close(&srv->sigterm.handle, NULL);
}

static void close_everyone(struct server *srv)
{
    atomic_store(&srv->give_up_work, true); /* running jobs end, unanswered */
    while (srv->conns != NULL)
        conn_close(srv->conns);
}

static void on_grace_over(evmux_timer *t)
{
    close_everyone(t->handle.data);
}

/* Stop accepting; send each client what it is owed, then our FIN; close
 * once the client closes too, or when the grace period ends. */
static void begin_shutdown(struct server *srv)
{
    srv->stopping = true;
    if (srv->udp_mode) {
        /* Replies queued go out as far as the socket takes them. */
        evmux_close(&srv->udp.handle, NULL);
        server_maybe_finish(srv);
        return;
    }
    evmux_close(&srv->listener.handle, NULL);
    int rc = evmux_timer_start(&srv->grace, SHUTDOWN_GRACE_MS, 0);
    if (rc < 0) { /* nothing would bound the wait for slow peers */
        fprintf(stderr, "evmux-echo-server: cannot time the shutdown (%s): closing every connection now\n",
                evmux_strerror(rc));
        close_everyone(srv);
        server_maybe_finish(srv);
        return;
    }
    for (struct conn *c = srv->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->peer_done)
            continue; /* already finishing */
        if (c->job != NULL)
            c->goodbye_after_job = true; /* its reply is owed too */
        else
            say_goodbye(c);
    }
    server_maybe_finish(srv);
}

static void say_goodbye(struct conn *c)
{
    int rc = evmux_stream_read_start(&c->stream, on_read); /* to see its EOF */
    if (rc == EVMUX_EOF)
        c->peer_done = true;
    else if (rc < 0) /* cannot see its EOF: close once our FIN is out */
        c->peer_done = true;
    if (evmux_stream_shutdown(&c->stream, on_shutdown) < 0)
        conn_close(c);
}

static void on_stop_signal(evmux_signal *sig, int signum)
{
    (void)signum;
    struct server *srv = sig->handle.data;
    if (!srv->stopping)
        begin_shutdown(srv);
    else
        close_everyone(srv); /* a second signal: stop waiting for slow peers */
}

static int install_signals(struct server *srv)
{
    signal(SIGPIPE, SIG_IGN); /* belt and braces: evmux sends with MSG_NOSIGNAL */
    evmux_signal_init(srv->loop, &srv->sigint);
    evmux_signal_init(srv->loop, &srv->sigterm);
    srv->sigint.handle.data = srv->sigterm.handle.data = srv;
    /* Only the listener and connections keep the loop running. */
    evmux_unref(&srv->sigint.handle);
    evmux_unref(&srv->sigterm.handle);
    int rc = evmux_signal_start(&srv->sigint, on_stop_signal, SIGINT);
    if (rc == 0)
        rc = evmux_signal_start(&srv->sigterm, on_stop_signal, SIGTERM);
    return rc;
}

/* ---- command line ---- */

struct options {
    const char *host;
    unsigned port;
    const char *unix_path;
    const char *backend;
    size_t max_conns;
    unsigned long long work_us;
    unsigned workers;
    bool udp;
};

static void usage(FILE *out)
{
    fputs("usage: evmux-echo-server [--host ADDR] [--port N] [--unix PATH] [--backend NAME]\n"
          "                         [--max-conns N] [--work-us U] [--workers N] [--udp]\n"
          "\n"
          "Echoes every byte each client sends, with a-z uppercased.\n"
          "\n"
          "  --host ADDR      IPv4 or IPv6 address, or host name, to listen on (a name:\n"
          "                   its first address; default 127.0.0.1)\n"
          "  --port N         TCP (or UDP) port, 0 picks a free one (default 8081)\n"
          "  --unix PATH      listen on a Unix-domain socket instead of TCP\n"
          "  --backend NAME   auto, select, poll, epoll, uring (default auto: EVMUX_BACKEND,\n"
          "                   else the best available)\n"
          "  --max-conns N    serve at most N clients at once; later ones are closed at once\n"
          "  --work-us U      each 0x7F byte received costs U microseconds of CPU before its\n"
          "                   reply (a heavy handler; default 0)\n"
          "  --workers N      run that work on a pool of N threads instead of the loop's\n"
          "                   thread (default 0: on the loop's thread)\n"
          "  --udp            serve UDP datagrams: each comes back, uppercased, to its sender\n"
          "  --help           show this help\n"
          "\n"
          "On start it prints 'listening on ADDRESS (backend NAME)'. SIGINT or SIGTERM\n"
          "stops accepting, sends every client what it is owed, and exits 0.\n",
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

static bool parse_number(const char *s, unsigned long long max, unsigned long long *out)
{
    if (s[0] < '0' || s[0] > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return false;
    *out = v;
    return true;
}

/* Returns -1 to go on, or an exit status. Takes "--flag value" and "--flag=value". */
static int parse_args(int argc, char **argv, struct options *opt)
{
    static const char *const names[] = {"--host",      "--port",    "--unix",   "--backend",
                                        "--max-conns", "--work-us", "--workers"};
    enum { HOST, PORT, UNIX, BACKEND, MAX_CONNS, WORK_US, WORKERS, UNKNOWN };
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(arg, "--udp") == 0) {
            opt->udp = true;
            continue;
        }
        const char *value = NULL;
        int which = UNKNOWN;
        for (int k = 0; k < UNKNOWN; k++) {
            size_t len = strlen(names[k]);
            if (strncmp(arg, names[k], len) != 0 || (arg[len] != '=' && arg[len] != '\0'))
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
        unsigned long long n;
        switch (which) {
        case HOST:
            opt->host = value;
            break;
        case PORT:
            if (!parse_number(value, 65535, &n))
                return bad_usage("--port must be a number from 0 to 65535, not '%s'", value);
            opt->port = (unsigned)n;
            break;
        case UNIX:
            opt->unix_path = value;
            break;
        case BACKEND:
            if (strcmp(value, "auto") && strcmp(value, "select") && strcmp(value, "poll") &&
                strcmp(value, "uring") &&
                strcmp(value, "epoll"))
                return bad_usage("--backend must be auto, select, poll, epoll or uring, not '%s'",
                                 value);
            opt->backend = value;
            break;
        case MAX_CONNS:
            if (!parse_number(value, 1000000000, &n) || n == 0)
                return bad_usage("--max-conns must be a positive number, not '%s'", value);
            opt->max_conns = (size_t)n;
            break;
        case WORK_US:
            if (!parse_number(value, 10000000, &n))
                return bad_usage("--work-us must be a number from 0 to 10000000, not '%s'", value);
            opt->work_us = n;
            break;
        case WORKERS:
            if (!parse_number(value, 256, &n))
                return bad_usage("--workers must be a number from 0 to 256, not '%s'", value);
            opt->workers = (unsigned)n;
            break;
        default:
            return bad_usage("unknown argument '%s'", arg);
        }
    }
    if (opt->udp && opt->unix_path != NULL)
        return bad_usage("%s", "--udp serves IP datagrams: it does not go with --unix");
    if (opt->udp && (opt->workers > 0 || opt->max_conns > 0))
        return bad_usage("%s", "--workers and --max-conns are for TCP connections, not --udp");
    return -1;
}

/* A socket path, an address literal, or a host name, resolved on the
 * loop's worker pool before anything else is on the loop. */
static int resolve(evmux_loop *loop, const struct options *opt, struct first_address *where)
{
    if (opt->unix_path)
        return evmux_addr_unix(opt->unix_path, &where->addr, &where->len);
    if (evmux_addr_ip(opt->host, opt->port, &where->addr, &where->len) == 0)
        return 0; /* also "[::1]", as people copy it from URLs */
    return first_address(loop, opt->host, opt->port, opt->udp ? SOCK_DGRAM : SOCK_STREAM,
                         AI_PASSIVE, where);
}

static int start_listening(struct server *srv, const struct options *opt,
                           const struct first_address *at)
{
    struct sockaddr_storage addr = at->addr;
    socklen_t len = at->len;
    srv->listener.handle.data = srv;
    int rc;
    if (opt->udp)
        rc = start_udp(srv, (struct sockaddr *)&addr, len);
    else
        rc = evmux_listen(srv->loop, &srv->listener, (struct sockaddr *)&addr, len, NULL,
                          on_accept);
    if (rc < 0) {
        fprintf(stderr, "evmux-echo-server: cannot listen on %s: %s\n",
                opt->unix_path ? opt->unix_path : opt->host, evmux_strerror(rc));
        return 1;
    }
    char where[256];
    rc = opt->udp ? evmux_udp_address(&srv->udp, &addr, &len)
                  : evmux_listener_address(&srv->listener, &addr, &len);
    if (rc < 0 ||
        evmux_addr_format((struct sockaddr *)&addr, len, where, sizeof where) < 0)
        snprintf(where, sizeof where, "%s", opt->unix_path ? opt->unix_path : opt->host);
    printf("listening on %s (backend %s)\n", where, evmux_loop_backend(srv->loop));
    fflush(stdout);
    return 0;
}

/* Every connection is a descriptor: take all the system allows us. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    struct options opt = {.host = "127.0.0.1", .port = 8081, .backend = "auto"};
    int status = parse_args(argc, argv, &opt);
    if (status >= 0)
        return status;

    raise_fd_limit();
    struct server srv = {.max_conns = opt.max_conns, .work_us = opt.work_us,
                         .workers = opt.workers};
    evmux_loop_options lopt = {.backend = opt.backend, .pool_threads = opt.workers};
    int rc = evmux_loop_new(&srv.loop, &lopt);
    if (rc < 0) {
        fprintf(stderr, "evmux-echo-server: cannot start the %s backend: %s\n", opt.backend,
                evmux_strerror(rc));
        return 1;
    }
    struct first_address where = {.status = 0};
    if ((rc = resolve(srv.loop, &opt, &where)) < 0) {
        fprintf(stderr, "evmux-echo-server: bad address '%s': %s\n",
                opt.unix_path ? opt.unix_path : opt.host,
                rc == -EINVAL ? "not an address or known host name" : evmux_strerror(rc));
        evmux_loop_free(srv.loop);
        return 2;
    }
    evmux_timer_init(srv.loop, &srv.grace, on_grace_over);
    srv.grace.handle.data = &srv;
    evmux_unref(&srv.grace.handle);
    if ((rc = install_signals(&srv)) < 0) {
        fprintf(stderr, "evmux-echo-server: cannot handle signals: %s\n", evmux_strerror(rc));
        return 1;
    }
    if ((status = start_listening(&srv, &opt, &where)) != 0) {
        evmux_close(&srv.grace.handle, NULL);
        evmux_close(&srv.sigint.handle, NULL);
        evmux_close(&srv.sigterm.handle, NULL);
    }

    rc = evmux_run(srv.loop, EVMUX_RUN_DEFAULT);
    if (rc < 0) {
        fprintf(stderr, "evmux-echo-server: event loop failed: %s\n", evmux_strerror(rc));
        return 1;
    }
    if (status == 0 && srv.udp_mode)
        fprintf(stderr, "evmux-echo-server: answered %llu datagrams, dropped %llu\n", srv.served,
                srv.dropped);
    else if (status == 0)
        fprintf(stderr, "evmux-echo-server: served %llu connections, refused %llu\n",
                srv.served, srv.refused);
    if (evmux_loop_free(srv.loop) < 0)
        fprintf(stderr, "evmux-echo-server: handles left open at exit\n");
    return status;
}
