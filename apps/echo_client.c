/*
 * evmux-echo-client: the seed's client.py on an evmux loop.
 *
 * Reads lines from stdin, strips them, skips empty ones, sends each with a
 * newline to the uppercase echo server and prints the replies. Unlike the
 * seed it does not wait for each reply before sending the next line: stdin
 * and the socket are watched together, so a whole file can be piped through
 * with bounded memory. The prompt `msg>: ` is shown only on a terminal.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "evmux.h"

#define PROG "evmux-echo-client"
#define PROMPT "msg>: "
#define CHUNK (64 * 1024)        /* one read from stdin or the socket */
#define OUT_LIMIT (1024 * 1024)  /* stop reading stdin above this much unsent */

/* A byte queue: bytes [off, len) of data are still to be used. */
struct buf {
    char *data;
    size_t off, len, cap;
};

struct client {
    evmux_loop *loop;
    const char *host;
    char port[8];
    char where[300];              /* "host:port" for messages */
    struct addrinfo *addrs, *next_addr;
    int last_error;               /* errno of the last failed attempt */

    int fd;                       /* the socket, -1 when none */
    evmux_io sock_io;
    bool sock_live;               /* initialised and not being closed */
    bool connected;

    evmux_io in_io;               /* stdin, when the backend can watch it */
    evmux_timer in_timer;         /* stdin otherwise: a regular file */
    bool in_io_live, in_timer_live;
    bool in_reading;              /* the watcher or timer is started */
    bool in_eof;
    bool tty;
    bool at_prompt;               /* the cursor sits after the prompt */

    /* Stripping the current input line on the fly. */
    bool line_started;            /* a non-space byte of it was queued */
    struct buf spaces;            /* whitespace run held back: may be trailing */

    struct buf out;               /* bytes to send */
    unsigned long long queued, received;

    bool finishing;
    int exit_code;
};

/* ---- small helpers ---- */

static size_t buf_pending(const struct buf *b)
{
    return b->len - b->off;
}

static void buf_append(struct buf *b, const char *p, size_t n)
{
    if (b->len + n > b->cap && b->off > 0) { /* reuse the consumed prefix */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (data == NULL) {
            fputs(PROG ": out of memory\n", stderr);
            exit(1);
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Whitespace as Python's str.strip() sees it, ASCII part, minus '\n'. */
static bool is_blank(unsigned char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r' && ch != '\n') || (ch >= 0x1c && ch <= 0x1f);
}

/* Writes all of p to stdout. Blocking is fine here; but stdout may share
 * a non-blocking file description with stdin (one tty), hence the poll. */
static int write_out(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = { .fd = STDOUT_FILENO, .events = POLLOUT };
                poll(&pfd, 1, -1);
            } else if (errno != EINTR) {
                return -1;
            }
            continue;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- stdin's flags: made non-blocking while we run, restored after ---- */

static int saved_stdin_flags = -1;

static void restore_stdin(void)
{
    if (saved_stdin_flags >= 0)
        fcntl(STDIN_FILENO, F_SETFL, saved_stdin_flags);
}

/* So that Ctrl-C does not leave the terminal non-blocking for the shell. */
static void on_fatal_signal(int sig)
{
    restore_stdin();
    raise(sig); /* SA_RESETHAND: the default action, once we return */
}

static void make_stdin_nonblocking(void)
{
    struct stat st;
    if (fstat(STDIN_FILENO, &st) < 0)
        return;
    /* Regular files and devices never block; leave them alone. */
    if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode) && !isatty(STDIN_FILENO))
        return;
    int flags = fcntl(STDIN_FILENO, F_GETFL);
    if (flags < 0 || (flags & O_NONBLOCK))
        return;
    struct sigaction sa = { .sa_handler = on_fatal_signal, .sa_flags = SA_RESETHAND };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    saved_stdin_flags = flags;
    fcntl(STDIN_FILENO, F_SETFL, flags | O_NONBLOCK);
}

/* ---- ending: close every handle; the loop runs their callbacks ---- */

static void close_handle(evmux_handle *h, bool *live)
{
    if (*live)
        evmux_close(h, NULL);
    *live = false;
}

static void finish(struct client *c, int code)
{
    if (c->finishing)
        return;
    c->finishing = true;
    c->exit_code = code;
    close_handle(&c->in_io.handle, &c->in_io_live);
    close_handle(&c->in_timer.handle, &c->in_timer_live);
    close_handle(&c->sock_io.handle, &c->sock_live);
    if (c->fd >= 0)
        close(c->fd); /* after its watcher: closing stops it at once */
    c->fd = -1;
}

static void leave_prompt(struct client *c)
{
    if (c->at_prompt)
        write_out("\n", 1); /* so what follows starts a line of its own */
    c->at_prompt = false;
}

static void fail(struct client *c, const char *fmt, ...)
{
    va_list ap;
    leave_prompt(c);
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    finish(c, 1);
}

static void stdout_failed(struct client *c)
{
    if (errno == EPIPE) /* the reader went away: nothing to tell it */
        finish(c, 1);
    else
        fail(c, "cannot write to stdout: %s", strerror(errno));
}

static void prompt(struct client *c)
{
    if (write_out(PROMPT, strlen(PROMPT)) < 0)
        stdout_failed(c);
    c->at_prompt = true;
}

/* Done once stdin has ended and every byte sent has come back. */
static bool all_answered(const struct client *c)
{
    return c->received >= c->queued;
}

/* ---- watching: stdin only while the send queue is short ---- */

static void update_socket(struct client *c)
{
    unsigned events = EVMUX_READABLE | (buf_pending(&c->out) ? EVMUX_WRITABLE : 0);
    int rc = evmux_io_start(&c->sock_io, events);
    if (rc < 0)
        fail(c, "cannot watch the socket: %s", evmux_strerror(rc));
}

static void update_stdin(struct client *c)
{
    bool want = !c->in_eof && !c->finishing && buf_pending(&c->out) < OUT_LIMIT;
    if (want == c->in_reading)
        return;
    int rc;
    if (c->in_timer_live) /* one-shot 0 ms timer, re-armed after each read */
        rc = want ? evmux_timer_start(&c->in_timer, 0, 0) : evmux_timer_stop(&c->in_timer);
    else
        rc = want ? evmux_io_start(&c->in_io, EVMUX_READABLE) : evmux_io_stop(&c->in_io);
    if (rc < 0) {
        fail(c, "cannot watch stdin: %s", evmux_strerror(rc));
        return;
    }
    c->in_reading = want;
}

/* ---- stdin: strip each line on the fly and queue it for sending ---- */

static void queue(struct client *c, const char *p, size_t n)
{
    buf_append(&c->out, p, n);
    c->queued += n;
}

static void end_line(struct client *c)
{
    if (c->line_started)
        queue(c, "\n", 1);
    else if (c->tty && all_answered(c))
        prompt(c); /* an empty line: ask again, as the seed does */
    c->line_started = false;
    c->spaces.off = c->spaces.len = 0; /* trailing: dropped */
}

static void feed_input(struct client *c, const char *p, size_t n)
{
    while (n > 0) {
        size_t k = 0;
        if (*p == '\n') {
            end_line(c);
            k = 1;
        } else if (is_blank(*p)) {
            while (k < n && is_blank(p[k]))
                k++;
            if (c->line_started) /* leading spaces are simply skipped */
                buf_append(&c->spaces, p, k);
        } else {
            while (k < n && p[k] != '\n' && !is_blank(p[k]))
                k++;
            if (buf_pending(&c->spaces)) { /* not trailing after all */
                queue(c, c->spaces.data + c->spaces.off, buf_pending(&c->spaces));
                c->spaces.off = c->spaces.len = 0;
            }
            queue(c, p, k);
            c->line_started = true;
        }
        p += k;
        n -= k;
    }
}

static void read_stdin(struct client *c)
{
    char chunk[CHUNK];
    ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            update_stdin(c); /* try again later (re-arms the timer) */
        else
            fail(c, "cannot read stdin: %s", strerror(errno));
        return;
    }
    if (n > 0) {
        c->at_prompt = false; /* the terminal echoed the user's line */
        feed_input(c, chunk, (size_t)n);
    } else {
        if (c->line_started) /* a last line without its newline */
            end_line(c);
        c->in_eof = true;
        leave_prompt(c); /* Ctrl-D echoes nothing */
    }
    if (c->finishing)
        return;
    if (c->in_eof && all_answered(c)) {
        finish(c, 0);
        return;
    }
    update_socket(c);
    update_stdin(c);
}

static void on_stdin_readable(evmux_io *io, unsigned events)
{
    (void)events;
    read_stdin(io->handle.data);
}

static void on_stdin_timer(evmux_timer *timer)
{
    struct client *c = timer->handle.data;
    c->in_reading = false; /* a one-shot timer that has fired */
    read_stdin(c);
}

static void start_stdin(struct client *c)
{
    make_stdin_nonblocking();
    evmux_io_init(c->loop, &c->in_io, STDIN_FILENO, on_stdin_readable);
    c->in_io.handle.data = c;
    c->in_io_live = true;
    int rc = evmux_io_start(&c->in_io, EVMUX_READABLE);
    if (rc == -EPERM) {
        /* The backend cannot watch it (a regular file under epoll); such a
         * file never blocks, so read it a chunk per loop iteration. */
        close_handle(&c->in_io.handle, &c->in_io_live);
        evmux_timer_init(c->loop, &c->in_timer, on_stdin_timer);
        c->in_timer.handle.data = c;
        c->in_timer_live = true;
        rc = evmux_timer_start(&c->in_timer, 0, 0);
    }
    if (rc < 0) {
        fail(c, "cannot watch stdin: %s", evmux_strerror(rc));
        return;
    }
    c->in_reading = true;
}

/* ---- the socket: replies go straight to stdout ---- */

static void connection_lost(struct client *c, int err)
{
    if (err == 0 || err == EPIPE || err == ECONNRESET)
        fail(c, "server closed the connection");
    else
        fail(c, "connection to %s failed: %s", c->where, strerror(err));
}

static void read_socket(struct client *c)
{
    char chunk[CHUNK];
    ssize_t n = recv(c->fd, chunk, sizeof chunk, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            connection_lost(c, errno);
        return;
    }
    if (n == 0) { /* we would have finished had nothing been outstanding */
        connection_lost(c, 0);
        return;
    }
    c->received += (size_t)n;
    c->at_prompt = false;
    if (write_out(chunk, (size_t)n) < 0) {
        stdout_failed(c);
        return;
    }
    if (!all_answered(c))
        return;
    if (c->in_eof)
        finish(c, 0);
    else if (c->tty)
        prompt(c);
}

static void write_socket(struct client *c)
{
    struct buf *b = &c->out;
    while (buf_pending(b) > 0) {
        ssize_t n = send(c->fd, b->data + b->off, buf_pending(b), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno != EINTR) {
                connection_lost(c, errno);
                return;
            }
            continue;
        }
        b->off += (size_t)n;
    }
    if (buf_pending(b) == 0)
        b->off = b->len = 0;
    update_socket(c);
    update_stdin(c);
}

static void connect_next(struct client *c);

/* A failed attempt's watcher has closed: its struct can be reused. */
static void on_attempt_closed(evmux_handle *h)
{
    struct client *c = h->data;
    if (!c->finishing)
        connect_next(c);
}

/* The socket became writable while connecting: connected, or failed. */
static void connect_done(struct client *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        c->last_error = err;
        c->sock_live = false;
        evmux_close(&c->sock_io.handle, on_attempt_closed);
        close(c->fd);
        c->fd = -1;
        return;
    }
    c->connected = true;
    update_socket(c);
    if (!c->finishing)
        start_stdin(c);
    if (!c->finishing && c->tty)
        prompt(c);
}

static void on_socket(evmux_io *io, unsigned events)
{
    struct client *c = io->handle.data;
    if (!c->connected) {
        connect_done(c);
        return;
    }
    if (events & EVMUX_READABLE)
        read_socket(c);
    if ((events & EVMUX_WRITABLE) && !c->finishing)
        write_socket(c);
}

/* Starts a non-blocking connect to the next address, if any is left. */
static void connect_next(struct client *c)
{
    for (struct addrinfo *ai; (ai = c->next_addr) != NULL;) {
        c->next_addr = ai->ai_next;
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            c->last_error = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            c->last_error = errno;
            close(fd);
            continue;
        }
        /* Writable once the outcome is known, even an immediate success. */
        c->fd = fd;
        evmux_io_init(c->loop, &c->sock_io, fd, on_socket);
        c->sock_io.handle.data = c;
        c->sock_live = true;
        int rc = evmux_io_start(&c->sock_io, EVMUX_WRITABLE);
        if (rc < 0)
            fail(c, "cannot watch the socket: %s", evmux_strerror(rc));
        return;
    }
    fail(c, "cannot connect to %s: %s", c->where, strerror(c->last_error));
}

static void start_connect(struct client *c)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_NUMERICSERV,
    };
    int rc = getaddrinfo(c->host, c->port, &hints, &c->addrs);
    if (rc != 0) {
        fail(c, "cannot connect to %s: %s", c->where,
             rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return;
    }
    c->next_addr = c->addrs;
    c->last_error = ECONNREFUSED;
    connect_next(c);
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fputs("usage: " PROG " [--host HOST] [--port PORT]\n"
          "Sends each line of stdin, stripped, to an uppercase echo server and\n"
          "prints the replies. Shows the prompt `" PROMPT "` when stdin is a terminal.\n"
          "  --host HOST  server address or name (default 127.0.0.1)\n"
          "  --port PORT  server port, 1-65535 (default 8081)\n"
          "  --help       show this help and exit\n",
          f);
}

static int bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, PROG ": %s '%s'\n", what, arg);
    usage(stderr);
    return 2;
}

static bool parse_port(const char *s, long *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > 65535)
        return false;
    *out = v;
    return true;
}

/* Returns -1 to go on, or the status to exit with. */
static int parse_args(struct client *c, int argc, char **argv)
{
    long port = 8081;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        bool is_host = name_len == 6 && strncmp(arg, "--host", 6) == 0;
        bool is_port = name_len == 6 && strncmp(arg, "--port", 6) == 0;
        if (strncmp(arg, "--", 2) != 0)
            return bad_usage("unexpected argument", arg);
        if (!is_host && !is_port)
            return bad_usage("unknown option", arg);
        const char *val;
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            val = argv[++i];
        else
            return bad_usage("missing value for", arg);
        if (is_host && *val == '\0')
            return bad_usage("empty host in", arg);
        if (is_host)
            c->host = val;
        else if (!parse_port(val, &port))
            return bad_usage("port must be a number in 1..65535, not", val);
    }
    snprintf(c->port, sizeof c->port, "%ld", port);
    /* IPv6 literals in brackets, so the port stands apart. */
    snprintf(c->where, sizeof c->where, strchr(c->host, ':') ? "[%s]:%s" : "%s:%s", c->host,
             c->port);
    return -1;
}

int main(int argc, char **argv)
{
    struct client c = { .host = "127.0.0.1", .fd = -1 };
    int status = parse_args(&c, argc, argv);
    if (status >= 0)
        return status;

    signal(SIGPIPE, SIG_IGN); /* a closed socket or stdout is an error, not death */
    atexit(restore_stdin);
    c.tty = isatty(STDIN_FILENO);

    int rc = evmux_loop_new(&c.loop, NULL);
    if (rc < 0) {
        fprintf(stderr, PROG ": cannot create the event loop: %s\n", evmux_strerror(rc));
        return 1;
    }

    start_connect(&c);
    rc = evmux_run(c.loop, EVMUX_RUN_DEFAULT);
    if (!c.finishing) { /* the loop failed, or ran out of work unexpectedly */
        fail(&c, "event loop stopped: %s", evmux_strerror(rc));
        evmux_run(c.loop, EVMUX_RUN_DEFAULT); /* runs the close callbacks */
    }

    restore_stdin();
    if (c.addrs)
        freeaddrinfo(c.addrs);
    free(c.out.data);
    free(c.spaces.data);
    rc = evmux_loop_free(c.loop);
    if (rc < 0) {
        fprintf(stderr, PROG ": cannot free the event loop: %s\n", evmux_strerror(rc));
        return 1;
    }
    return c.exit_code;
}
