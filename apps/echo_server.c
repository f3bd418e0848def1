/* evmux-echo-server: the seed's select() echo server, done properly.
 *
 * One thread serves every client. Each byte a client sends comes back with
 * a-z uppercased, in order. What a client is owed but has not yet taken is
 * buffered; past OWED_HIGH bytes we stop reading from that client until it
 * drains below OWED_LOW, so a client that never reads costs bounded memory
 * and nobody else waits for it. An idle connection holds no buffer.
 */
#include <evmux.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)
#define OWED_HIGH (1024 * 1024)
#define OWED_LOW (256 * 1024)
#define ACCEPTS_PER_WAKEUP 128
#define ACCEPT_RETRY_MS 100
#define SHUTDOWN_GRACE_MS 5000

struct server;

struct conn {
    evmux_io io;
    struct server *srv;
    struct conn *prev, *next;
    char *owed;          /* bytes read but not yet sent back */
    size_t owed_start;   /* first unsent byte */
    size_t owed_end;
    size_t owed_cap;
    bool paused;         /* stopped reading: too much owed */
    bool peer_done;      /* peer sent EOF */
    bool farewell;       /* shutting down: our FIN is out, discarding input */
};

struct server {
    evmux_loop *loop;
    int listen_fd;
    evmux_io listener;
    evmux_timer accept_retry;   /* resumes accepting after running out of fds */
    int reserve_fd;             /* given up to accept-and-close when out of fds */
    bool out_of_fds;            /* logged once per episode */
    struct conn *conns;
    size_t conn_count;
    size_t max_conns;           /* 0: no limit */
    unsigned long long served, refused, shed;
    int signal_pipe[2];
    evmux_io signals;
    evmux_timer grace;          /* bounds how long shutdown waits for slow peers */
    bool stopping;
    char buf[READ_CHUNK];
};

static int signal_write_fd = -1;

/* ---- one connection ---- */

static size_t owed_bytes(const struct conn *c)
{
    return c->owed_end - c->owed_start;
}

static void uppercase(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)(p[i] - 'a') < 26)
            p[i] = (char)(p[i] - ('a' - 'A'));
}

static void conn_closed(evmux_handle *h)
{
    struct conn *c = h->data;
    free(c->owed);
    free(c);
}

static void server_maybe_finish(struct server *srv);

static void conn_close(struct conn *c)
{
    struct server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->conn_count--;
    evmux_close(&c->io.handle, conn_closed);
    close(c->io.fd);
    server_maybe_finish(srv);
}

/* Appends to what the client is owed; the buffer never exceeds
 * OWED_HIGH + READ_CHUNK because reading stops at OWED_HIGH. */
static bool owe(struct conn *c, const char *data, size_t n)
{
    if (c->owed_end + n > c->owed_cap && c->owed_start > 0) {
        memmove(c->owed, c->owed + c->owed_start, owed_bytes(c));
        c->owed_end -= c->owed_start;
        c->owed_start = 0;
    }
    if (c->owed_end + n > c->owed_cap) {
        size_t cap = c->owed_cap ? c->owed_cap : 16 * 1024;
        while (cap < c->owed_end + n)
            cap *= 2;
        char *p = realloc(c->owed, cap);
        if (p == NULL)
            return false;
        c->owed = p;
        c->owed_cap = cap;
    }
    memcpy(c->owed + c->owed_end, data, n);
    c->owed_end += n;
    return true;
}

/* Sends as much as the socket takes. Returns false if the peer is gone. */
static bool send_all(struct conn *c, const char *data, size_t n, size_t *sent)
{
    *sent = 0;
    while (*sent < n) {
        ssize_t w = send(c->io.fd, data + *sent, n - *sent, MSG_NOSIGNAL);
        if (w > 0) {
            *sent += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else {
            return w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        }
    }
    return true;
}

static void conn_update_interest(struct conn *c)
{
    size_t owed = owed_bytes(c);
    if (c->paused && owed <= OWED_LOW)
        c->paused = false;
    else if (!c->paused && owed >= OWED_HIGH)
        c->paused = true;
    unsigned want = 0;
    if (c->farewell || (!c->peer_done && !c->paused && !c->srv->stopping))
        want |= EVMUX_READABLE;
    if (owed > 0 && !c->farewell)
        want |= EVMUX_WRITABLE;
    evmux_io_start(&c->io, want);
}

/* Everything owed has been sent: decide whether the connection is over. */
static void conn_settled(struct conn *c)
{
    free(c->owed);
    c->owed = NULL;
    c->owed_start = c->owed_end = c->owed_cap = 0;
    if (c->peer_done) {
        conn_close(c);
    } else if (c->srv->stopping) {
        /* Send our FIN, then read until the peer's, so that closing does
         * not reset the connection under replies still in flight. */
        shutdown(c->io.fd, SHUT_WR);
        c->farewell = true;
        conn_update_interest(c);
    } else {
        conn_update_interest(c);
    }
}

static void conn_flush(struct conn *c)
{
    size_t sent;
    if (!send_all(c, c->owed + c->owed_start, owed_bytes(c), &sent)) {
        conn_close(c);
        return;
    }
    c->owed_start += sent;
    if (owed_bytes(c) == 0)
        conn_settled(c);
    else
        conn_update_interest(c);
}

static void conn_read(struct conn *c)
{
    struct server *srv = c->srv;
    ssize_t n = recv(c->io.fd, srv->buf, sizeof srv->buf, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_close(c); /* reset or other error: nothing more can be delivered */
        return;
    }
    if (n == 0 || c->farewell) {
        if (n == 0)
            c->peer_done = true;
        if (c->farewell) {
            if (n == 0)
                conn_close(c);
            return;
        }
        if (owed_bytes(c) == 0)
            conn_close(c);
        else
            conn_update_interest(c);
        return;
    }

    uppercase(srv->buf, (size_t)n);
    size_t sent = 0;
    if (owed_bytes(c) == 0 && !send_all(c, srv->buf, (size_t)n, &sent)) {
        conn_close(c);
        return;
    }
    if (sent < (size_t)n && !owe(c, srv->buf + sent, (size_t)n - sent)) {
        fprintf(stderr, "evmux-echo-server: out of memory; dropping a connection\n");
        conn_close(c);
        return;
    }
    conn_update_interest(c);
}

static void on_conn_event(evmux_io *io, unsigned events)
{
    struct conn *c = io->handle.data;
    if (events & EVMUX_WRITABLE) {
        conn_flush(c);
        if (evmux_is_closing(&io->handle))
            return;
    }
    if (events & EVMUX_READABLE)
        conn_read(c);
}

static void conn_open(struct server *srv, int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        srv->refused++;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->srv = srv;
    evmux_io_init(srv->loop, &c->io, fd, on_conn_event);
    c->io.handle.data = c;
    int rc = evmux_io_start(&c->io, EVMUX_READABLE);
    if (rc < 0) {
        /* e.g. select cannot watch descriptors past FD_SETSIZE */
        static bool warned;
        if (!warned) {
            fprintf(stderr, "evmux-echo-server: cannot watch a new connection: %s\n",
                    evmux_strerror(rc));
            warned = true;
        }
        srv->refused++;
        evmux_close(&c->io.handle, conn_closed);
        close(fd);
        return;
    }
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->conn_count++;
    srv->served++;
}

/* ---- accepting ---- */

static void pause_accepting(struct server *srv)
{
    evmux_io_stop(&srv->listener);
    evmux_timer_start(&srv->accept_retry, ACCEPT_RETRY_MS, 0);
}

static void on_accept_retry(evmux_timer *t)
{
    struct server *srv = t->handle.data;
    if (srv->reserve_fd < 0)
        srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    evmux_io_start(&srv->listener, EVMUX_READABLE);
}

/* Out of descriptors: the kernel keeps the listener readable, so doing
 * nothing would spin. Spend the reserve descriptor to accept and close one
 * pending connection at a time. Returns 1 to go on accepting, 0 when the
 * backlog is empty, -1 when there is no reserve (then pause accepting). */
static int shed_one(struct server *srv)
{
    if (!srv->out_of_fds) {
        fprintf(stderr, "evmux-echo-server: out of file descriptors (%zu connections); "
                        "closing new connections until some end\n", srv->conn_count);
        srv->out_of_fds = true;
    }
    if (srv->reserve_fd < 0)
        return -1;
    close(srv->reserve_fd);
    int fd = accept(srv->listen_fd, NULL, NULL);
    int accept_errno = errno;
    if (fd >= 0) {
        close(fd);
        srv->shed++;
    }
    srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (srv->reserve_fd < 0)
        return -1;
    if (fd < 0)
        return accept_errno == EAGAIN || accept_errno == EWOULDBLOCK ? 0 : -1;
    return 1;
}

static void on_listener(evmux_io *io, unsigned events)
{
    (void)events;
    struct server *srv = io->handle.data;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            switch (errno) {
            case EAGAIN:
#if EWOULDBLOCK != EAGAIN
            case EWOULDBLOCK:
#endif
                return;
            case EINTR:
            case ECONNABORTED:
            case EPROTO:
                continue;
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                switch (shed_one(srv)) {
                case 1:
                    continue;
                case 0:
                    return;
                default:
                    pause_accepting(srv);
                    return;
                }
            default:
                fprintf(stderr, "evmux-echo-server: accept: %s\n", strerror(errno));
                pause_accepting(srv);
                return;
            }
        }
        srv->out_of_fds = false;
        if (srv->max_conns != 0 && srv->conn_count >= srv->max_conns) {
            close(fd);
            srv->refused++;
            continue;
        }
        conn_open(srv, fd);
    }
}

/* ---- shutting down ---- */

static void on_signal_byte(int signo)
{
    int saved = errno;
    unsigned char b = (unsigned char)signo;
    ssize_t ignored = write(signal_write_fd, &b, 1);
    (void)ignored;
    errno = saved;
}

static void server_maybe_finish(struct server *srv)
{
    if (!srv->stopping || srv->conns != NULL)
        return;
    if (!evmux_is_closing(&srv->grace.handle))
        evmux_close(&srv->grace.handle, NULL);
    if (!evmux_is_closing(&srv->signals.handle))
        evmux_close(&srv->signals.handle, NULL);
}

static void close_everyone(struct server *srv)
{
    while (srv->conns != NULL)
        conn_close(srv->conns);
}

static void on_grace_over(evmux_timer *t)
{
    close_everyone(t->handle.data);
}

static void begin_shutdown(struct server *srv)
{
    srv->stopping = true;
    evmux_close(&srv->listener.handle, NULL);
    evmux_close(&srv->accept_retry.handle, NULL);
    close(srv->listen_fd);
    evmux_timer_start(&srv->grace, SHUTDOWN_GRACE_MS, 0);
    for (struct conn *c = srv->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (owed_bytes(c) == 0)
            conn_settled(c);
        else
            conn_update_interest(c);
    }
    server_maybe_finish(srv);
}

static void on_signals(evmux_io *io, unsigned events)
{
    (void)events;
    struct server *srv = io->handle.data;
    unsigned char sigs[16];
    if (read(io->fd, sigs, sizeof sigs) <= 0)
        return;
    if (!srv->stopping)
        begin_shutdown(srv);
    else
        close_everyone(srv); /* a second signal: stop waiting for slow peers */
}

static int install_signals(struct server *srv)
{
    if (pipe2(srv->signal_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        return -errno;
    signal_write_fd = srv->signal_pipe[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal_byte;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    evmux_io_init(srv->loop, &srv->signals, srv->signal_pipe[0], on_signals);
    srv->signals.handle.data = srv;
    int rc = evmux_io_start(&srv->signals, EVMUX_READABLE);
    /* Only connections keep the loop running; signals merely wake it. */
    evmux_unref(&srv->signals.handle);
    return rc;
}

/* ---- start up ---- */

struct options {
    const char *host;
    const char *port;
    const char *backend;
    size_t max_conns;
};

static void usage(FILE *out)
{
    fputs("usage: evmux-echo-server [--host ADDR] [--port N] [--backend NAME] [--max-conns N]\n"
          "\n"
          "Echoes every byte each client sends, with a-z uppercased.\n"
          "\n"
          "  --host ADDR      address to listen on (default 127.0.0.1; IPv6 works too)\n"
          "  --port N         TCP port, 0 picks a free one (default 8081)\n"
          "  --backend NAME   auto, select, poll or epoll (default auto: EVMUX_BACKEND,\n"
          "                   else the best available)\n"
          "  --max-conns N    serve at most N clients at once; later ones are closed at once\n"
          "  --help           show this help\n"
          "\n"
          "On start it prints 'listening on HOST:PORT (backend NAME)'. SIGINT or SIGTERM\n"
          "stops accepting, sends every client what it is owed, and exits 0.\n",
          out);
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

/* Returns -1 to go on, or an exit status. */
static int parse_args(int argc, char **argv, struct options *opt)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        const char *names[] = {"--host", "--port", "--backend", "--max-conns"};
        const char *value = NULL;
        size_t which = sizeof names / sizeof names[0];
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            size_t len = strlen(names[k]);
            if (strncmp(arg, names[k], len) != 0)
                continue;
            if (arg[len] == '=') {
                value = arg + len + 1;
            } else if (arg[len] == '\0') {
                if (i + 1 >= argc)
                    return bad_usage("%s needs a value", arg);
                value = argv[++i];
            } else {
                continue;
            }
            which = k;
            break;
        }
        unsigned long long n;
        switch (which) {
        case 0:
            if (value[0] == '\0')
                return bad_usage("--host needs an address", arg);
            opt->host = value;
            break;
        case 1:
            if (!parse_number(value, 65535, &n))
                return bad_usage("--port must be a number from 0 to 65535, not '%s'", value);
            opt->port = value;
            break;
        case 2:
            if (strcmp(value, "auto") && strcmp(value, "select") && strcmp(value, "poll") &&
                strcmp(value, "epoll"))
                return bad_usage("--backend must be auto, select, poll or epoll, not '%s'", value);
            opt->backend = value;
            break;
        case 3:
            if (!parse_number(value, 1000000000, &n) || n == 0)
                return bad_usage("--max-conns must be a positive number, not '%s'", value);
            opt->max_conns = (size_t)n;
            break;
        default:
            return bad_usage("unknown argument '%s'", arg);
        }
    }
    return -1;
}

static int listen_on(const struct options *opt, char *where, size_t where_len)
{
    struct addrinfo hints = {0}, *res;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(opt->host, opt->port, &hints, &res);
    if (gai != 0) {
        fprintf(stderr, "evmux-echo-server: cannot resolve %s: %s\n", opt->host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "evmux-echo-server: cannot listen on %s port %s: %s\n", opt->host,
                opt->port, strerror(err));
        return -1;
    }

    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        snprintf(where, where_len, "[%s]:%u", ip, port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        port = ntohs(a->sin_port);
        snprintf(where, where_len, "%s:%u", ip, port);
    }
    return fd;
}

int main(int argc, char **argv)
{
    struct options opt = {.host = "127.0.0.1", .port = "8081", .backend = "auto"};
    int status = parse_args(argc, argv, &opt);
    if (status >= 0)
        return status;

    static struct server srv; /* static: holds the 64 KiB read buffer */
    srv.max_conns = opt.max_conns;
    srv.reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    evmux_loop_options lopt = {.backend = opt.backend};
    int rc = evmux_loop_new(&srv.loop, &lopt);
    if (rc < 0) {
        fprintf(stderr, "evmux-echo-server: cannot start the %s backend: %s\n", opt.backend,
                evmux_strerror(rc));
        return 1;
    }

    char where[INET6_ADDRSTRLEN + 16];
    srv.listen_fd = listen_on(&opt, where, sizeof where);
    if (srv.listen_fd < 0)
        return 1;
    evmux_io_init(srv.loop, &srv.listener, srv.listen_fd, on_listener);
    srv.listener.handle.data = &srv;
    evmux_timer_init(srv.loop, &srv.accept_retry, on_accept_retry);
    srv.accept_retry.handle.data = &srv;
    evmux_timer_init(srv.loop, &srv.grace, on_grace_over);
    srv.grace.handle.data = &srv;
    evmux_unref(&srv.grace.handle);
    if ((rc = evmux_io_start(&srv.listener, EVMUX_READABLE)) < 0 ||
        (rc = install_signals(&srv)) < 0) {
        fprintf(stderr, "evmux-echo-server: %s\n", evmux_strerror(rc));
        return 1;
    }

    printf("listening on %s (backend %s)\n", where, evmux_loop_backend(srv.loop));
    fflush(stdout);

    rc = evmux_run(srv.loop, EVMUX_RUN_DEFAULT);
    if (rc < 0) {
        fprintf(stderr, "evmux-echo-server: event loop failed: %s\n", evmux_strerror(rc));
        return 1;
    }
    fprintf(stderr, "evmux-echo-server: served %llu connections, refused %llu, shed %llu\n",
            srv.served, srv.refused, srv.shed);
    if (evmux_loop_free(srv.loop) < 0)
        fprintf(stderr, "evmux-echo-server: handles left open at exit\n");
    close(srv.signal_pipe[0]);
    close(srv.signal_pipe[1]);
    if (srv.reserve_fd >= 0)
        close(srv.reserve_fd);
    return 0;
}
