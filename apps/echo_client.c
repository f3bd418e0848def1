/*
 * evmux-echo-client: the client.py of the original text (quoted in
 * docs/io-models.md) on an evmux loop.
 *
 * Reads lines from stdin, strips them, skips empty ones, sends each with a
 * newline to the uppercase echo server and prints the replies. Unlike the
 * original it does not wait for each reply before sending the next line: stdin
 * and the connection are both evmux streams on one loop, so a whole file
 * can be piped through with bounded memory. stdin may be a terminal, a pipe
 * or a file (`< file`): the stream takes each alike. The prompt `msg>: ` is
 * shown only on a terminal.
 *
 * With --udp each line goes as one datagram (with its newline) and each
 * reply datagram is printed. Datagrams can be lost: once stdin has ended,
 * replies still missing after UDP_REPLY_WAIT_MS make it exit 1, saying how
 * many.
 */
#include <evmux.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define PROG "evmux-echo-client"
#define PROMPT "msg>: "
#define UNSENT_HIGH (1024 * 1024)  /* stop reading stdin above this much unsent */
#define UNSENT_LOW (256 * 1024)    /* and go on once it is down to this */
#define UDP_REPLY_WAIT_MS 2000     /* --udp: after stdin's end, for the last replies */

struct client {
    evmux_loop *loop;
    const char *host, *unix_path;
    unsigned port;
    char where[300];        /* "host:port" or the socket path, for messages */
    struct sockaddr_storage unix_addr;
    socklen_t unix_len;

    evmux_stream stream;
    evmux_connect_req connect;           /* --unix */
    evmux_connect_host_req connect_host; /* TCP: each address of --host in turn */

    evmux_stream in;        /* stdin */
    bool in_reading;
    bool in_eof;
    bool tty;
    bool at_prompt;         /* the cursor sits after the prompt */

    bool line_started;      /* the current line has a non-blank byte */
    char *held;             /* blanks from earlier reads that may be trailing */
    size_t held_len, held_cap;

    unsigned long long sent, received;
    bool finishing;

    bool udp;                      /* --udp: datagrams instead of a connection */
    evmux_getaddrinfo_req lookup;  /* --udp: --host, resolved */
    evmux_udp dgram;
    evmux_timer reply_wait;        /* --udp: bounds the wait for the last replies */
    char *line;                    /* --udp: the line being stripped, until its newline */
    size_t line_len, line_cap;
    unsigned long long lines_sent, replies;
    int exit_code;
};

/* Whitespace as Python's str.strip() sees it, ASCII part, minus '\n'. */
static bool is_blank(unsigned char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r' && ch != '\n') || (ch >= 0x1c && ch <= 0x1f);
}

/* Writes all of p to stdout. Blocking is fine here; stdout is left as the
 * shell gave it, but someone else may have made it non-blocking, hence
 * the poll. */
static int write_out(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = {.fd = STDOUT_FILENO, .events = POLLOUT};
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

/* ---- ending: close every handle; the loop runs their callbacks ---- */

static void finish(struct client *c, int code)
{
    if (c->finishing)
        return;
    c->finishing = true;
    c->exit_code = code;
    c->in_reading = false;
    evmux_close(&c->in.handle, NULL);
    evmux_close(&c->stream.handle, NULL); /* drops what is unsent */
    if (c->udp) {
        evmux_getaddrinfo_cancel(&c->lookup); /* -EINVAL once it has answered */
        evmux_close(&c->dgram.handle, NULL);
        evmux_close(&c->reply_wait.handle, NULL);
    }
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
    return c->received >= c->sent;
}

static void connection_lost(struct client *c, int err)
{
    if (err == EVMUX_EOF || err == -EPIPE || err == -ECONNRESET)
        fail(c, "server closed the connection");
    else
        fail(c, "connection to %s failed: %s", c->where, evmux_strerror(err));
}

/* ---- stdin: read only while the stream's queue is short ---- */

static void on_stdin_read(evmux_stream *in, ssize_t nread, char *buf);

static void update_stdin(struct client *c)
{
    bool want = !c->in_eof && !c->finishing && !evmux_stream_over_high(&c->stream);
    if (want == c->in_reading)
        return;
    int rc = want ? evmux_stream_read_start(&c->in, on_stdin_read) : evmux_stream_read_stop(&c->in);
    if (rc < 0) {
        fail(c, "cannot watch stdin: %s", evmux_strerror(rc));
        return;
    }
    c->in_reading = want;
}

static void on_drained(evmux_stream *s)
{
    update_stdin(s->handle.data);
}

static void grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t len = *cap ? *cap : 256;
    while (len < need)
        len *= 2;
    if ((*p = realloc(*p, len)) == NULL) {
        fputs(PROG ": out of memory\n", stderr);
        exit(1);
    }
    *cap = len;
}

/* --udp: the stripped bytes gather into lines; each whole line leaves as
 * one datagram. */
static void send_lines(struct client *c, const evmux_buf *bufs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *p = bufs[i].base;
        for (size_t k = 0; k < bufs[i].len; k++) {
            grow(&c->line, &c->line_cap, c->line_len + 1);
            c->line[c->line_len++] = p[k];
            if (p[k] != '\n')
                continue;
            evmux_buf datagram = {c->line, c->line_len};
            int rc = evmux_udp_send(NULL, &c->dgram, &datagram, 1, NULL, 0, NULL);
            c->line_len = 0;
            if (rc < 0) {
                fail(c, "cannot send to %s: %s", c->where, evmux_strerror(rc));
                return;
            }
            c->sent += datagram.len;
            c->lines_sent++;
        }
    }
}

static void send_bufs(struct client *c, const evmux_buf *bufs, size_t n)
{
    if (c->udp) {
        if (!c->finishing)
            send_lines(c, bufs, n);
        return;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0 || c->finishing)
        return;
    int rc = evmux_stream_write(NULL, &c->stream, bufs, n, NULL);
    if (rc < 0)
        connection_lost(c, rc);
    else
        c->sent += total;
}

static void hold(struct client *c, const char *p, size_t n)
{
    grow(&c->held, &c->held_cap, c->held_len + n);
    memcpy(c->held + c->held_len, p, n);
    c->held_len += n;
}

/* Strips lines on the fly, compacting p in place, then sends it with one
 * write. Blanks inside a line wait until a non-blank shows they are not
 * trailing: p[run..] in this read, c->held from earlier ones (these come
 * first, as nothing of this read was kept before them). */
static void send_stripped(struct client *c, char *p, size_t n)
{
    evmux_buf out[2] = {{c->held, 0}, {p, 0}};
    size_t w = 0, run = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            if (c->line_started)
                p[w++] = '\n';
            else if (c->tty && w == 0 && all_answered(c))
                prompt(c); /* an empty line: ask again, as the original does */
            c->line_started = false;
            c->held_len = 0;
            run = SIZE_MAX;
        } else if (is_blank((unsigned char)p[i])) {
            if (c->line_started && run == SIZE_MAX) /* leading blanks are dropped */
                run = i;
        } else {
            if (run != SIZE_MAX) {
                memmove(p + w, p + run, i - run);
                w += i - run;
                run = SIZE_MAX;
            }
            if (c->held_len > 0) { /* only ever before anything of this read */
                out[0].len = c->held_len;
                c->held_len = 0;
            }
            p[w++] = p[i];
            c->line_started = true;
        }
    }
    out[1].len = w;
    send_bufs(c, out, 2);
    if (run != SIZE_MAX)
        hold(c, p + run, n - run);
}

/* buf is the loop's, lent for this call: stripping compacts it in place,
 * and the write copies what it cannot send at once. */
static void on_stdin_read(evmux_stream *in, ssize_t nread, char *buf)
{
    struct client *c = in->handle.data;
    if (nread > 0) {
        c->at_prompt = false; /* the terminal echoed the user's line */
        send_stripped(c, buf, (size_t)nread);
    } else if (nread == EVMUX_EOF) {
        if (c->line_started) /* a last line without its newline */
            send_bufs(c, &(evmux_buf){"\n", 1}, 1);
        c->in_eof = true;
        c->in_reading = false; /* the stream stopped reading by itself */
        leave_prompt(c); /* Ctrl-D echoes nothing */
        if (c->udp && !all_answered(c))
            evmux_timer_start(&c->reply_wait, UDP_REPLY_WAIT_MS, 0);
    } else {
        c->in_reading = false;
        fail(c, "cannot read stdin: %s", evmux_strerror((int)nread));
        return;
    }
    if (c->in_eof && all_answered(c))
        finish(c, 0);
    update_stdin(c); /* pauses on a long queue */
}

static void start_stdin(struct client *c)
{
    int rc = evmux_stream_open(&c->in, STDIN_FILENO);
    if (rc < 0)
        fail(c, "cannot read stdin: %s", evmux_strerror(rc));
    else
        update_stdin(c);
}

/* ---- the connection: replies go straight to stdout ---- */

/* Reply bytes, from the connection or a datagram: printed; done once
 * stdin has ended and everything has come back. */
static void print_reply(struct client *c, const char *buf, size_t n)
{
    c->received += n;
    c->at_prompt = false;
    if (write_out(buf, n) < 0)
        stdout_failed(c);
    else if (all_answered(c) && c->in_eof)
        finish(c, 0);
    else if (all_answered(c) && c->tty)
        prompt(c);
}

static void on_read(evmux_stream *s, ssize_t nread, char *buf)
{
    struct client *c = s->handle.data;
    if (nread < 0) { /* we would have finished had nothing been outstanding */
        connection_lost(c, (int)nread);
        return;
    }
    print_reply(c, buf, (size_t)nread);
}

/* ---- --udp: one datagram a line, one a reply ---- */

static void on_reply(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                     socklen_t from_len, unsigned flags)
{
    struct client *c = u->handle.data;
    (void)from, (void)from_len, (void)flags; /* connected: only the server's arrive */
    if (nread < 0) {
        fail(c, "no server at %s: %s", c->where, evmux_strerror((int)nread));
        return;
    }
    c->replies++;
    print_reply(c, buf, (size_t)nread);
}

static void on_reply_wait_over(evmux_timer *t)
{
    struct client *c = t->handle.data;
    fail(c, "%llu of %llu replies did not come (UDP may lose datagrams)",
         c->lines_sent - c->replies, c->lines_sent);
}

/* Connected to the first address: a datagram socket has no handshake to
 * try the others with. */
static void on_udp_resolved(evmux_getaddrinfo_req *req, int status, struct addrinfo *res)
{
    struct client *c = req->data;
    if (status < 0) {
        fail(c, "cannot resolve %s: %s", c->host, evmux_strerror(status));
        return;
    }
    int rc = evmux_udp_connect(&c->dgram, res->ai_addr, res->ai_addrlen);
    evmux_freeaddrinfo(res);
    if (rc == 0)
        rc = evmux_udp_recv_start(&c->dgram, on_reply);
    if (rc < 0) {
        fail(c, "cannot send to %s: %s", c->where, evmux_strerror(rc));
        return;
    }
    start_stdin(c);
    if (!c->finishing && c->tty)
        prompt(c);
}

static void start_udp(struct client *c)
{
    evmux_timer_init(c->loop, &c->reply_wait, on_reply_wait_over);
    c->reply_wait.handle.data = c->dgram.handle.data = c->lookup.data = c;
    char port[8];
    snprintf(port, sizeof port, "%u", c->port);
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV};
    int rc = evmux_udp_init(c->loop, &c->dgram);
    if (rc == 0)
        rc = evmux_getaddrinfo(c->loop, &c->lookup, on_udp_resolved, c->host, port, &hints);
    if (rc < 0)
        fail(c, "cannot resolve %s: %s", c->host, evmux_strerror(rc));
}

static void connected(struct client *c, int status)
{
    if (c->finishing)
        return;
    if (status < 0) {
        fail(c, "cannot connect to %s: %s", c->where, evmux_strerror(status));
        return;
    }
    int rc = evmux_stream_read_start(&c->stream, on_read);
    if (rc < 0) {
        fail(c, "cannot watch the connection: %s", evmux_strerror(rc));
        return;
    }
    start_stdin(c);
    if (!c->finishing && c->tty)
        prompt(c);
}

static void on_connect(evmux_connect_req *req, int status)
{
    connected(req->data, status);
}

static void on_connect_host(evmux_connect_host_req *req, int status)
{
    connected(req->data, status);
}

/* A socket path, or a host (a name, resolved on the loop's worker pool,
 * or an address) whose addresses are tried in turn. */
static void start_connecting(struct client *c)
{
    int rc = c->unix_path ? evmux_connect(&c->connect, &c->stream,
                                          (struct sockaddr *)&c->unix_addr, c->unix_len, 0,
                                          on_connect)
                          : evmux_connect_host(&c->connect_host, &c->stream, c->host, c->port, 0,
                                               on_connect_host);
    if (rc < 0)
        fail(c, "cannot connect to %s: %s", c->where, evmux_strerror(rc));
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fputs("usage: " PROG " [--host HOST] [--port PORT] [--unix PATH] [--udp]\n"
          "Sends each line of stdin, stripped, to an uppercase echo server and\n"
          "prints the replies. Shows the prompt `" PROMPT "` when stdin is a terminal.\n"
          "  --host HOST  server address or host name, e.g. localhost or ::1; each\n"
          "               address of a name is tried in turn (default 127.0.0.1)\n"
          "  --port PORT  server port, 1-65535 (default 8081)\n"
          "  --unix PATH  connect to a Unix-domain socket instead of TCP\n"
          "  --udp        send each line as a UDP datagram; print each reply\n"
          "  --help       show this help and exit\n",
          f);
}

static int bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, PROG ": %s '%s'\n", what, arg);
    usage(stderr);
    return 2;
}

static bool parse_port(const char *s, unsigned *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > 65535)
        return false;
    *out = (unsigned)v;
    return true;
}

/* Returns -1 to go on, or the status to exit with. */
static int parse_args(struct client *c, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(arg, "--udp") == 0) {
            c->udp = true;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        bool is_host = name_len == 6 && strncmp(arg, "--host", 6) == 0;
        bool is_port = name_len == 6 && strncmp(arg, "--port", 6) == 0;
        bool is_unix = name_len == 6 && strncmp(arg, "--unix", 6) == 0;
        if (strncmp(arg, "--", 2) != 0)
            return bad_usage("unexpected argument", arg);
        if (!is_host && !is_port && !is_unix)
            return bad_usage("unknown option", arg);
        const char *val;
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            val = argv[++i];
        else
            return bad_usage("missing value for", arg);
        if ((is_host || is_unix) && *val == '\0')
            return bad_usage(is_host ? "empty host in" : "empty path in", arg);
        if (is_host)
            c->host = val;
        else if (is_unix)
            c->unix_path = val;
        else if (!parse_port(val, &c->port))
            return bad_usage("port must be a number in 1..65535, not", val);
    }
    if (c->udp && c->unix_path)
        return bad_usage("--udp sends IP datagrams: it does not go with", "--unix");
    if (c->unix_path)
        snprintf(c->where, sizeof c->where, "%s", c->unix_path);
    else /* IPv6 literals in brackets, so the port stands apart */
        snprintf(c->where, sizeof c->where,
                 strchr(c->host, ':') && c->host[0] != '[' ? "[%s]:%u" : "%s:%u", c->host,
                 c->port);
    return -1;
}

/* A socket path that cannot be is a usage error, found before any loop.
 * Returns -1 to go on, or the status to exit with. */
static int check_unix_path(struct client *c)
{
    if (c->unix_path == NULL)
        return -1;
    int rc = evmux_addr_unix(c->unix_path, &c->unix_addr, &c->unix_len);
    if (rc == 0)
        return -1;
    if (rc == -ENAMETOOLONG)
        fprintf(stderr, PROG ": --unix: %s (%zu bytes, at most %zu) '%s'\n", evmux_strerror(rc),
                strlen(c->unix_path), sizeof ((struct sockaddr_un *)0)->sun_path - 1, c->unix_path);
    else
        fprintf(stderr, PROG ": --unix: %s '%s'\n", evmux_strerror(rc), c->unix_path);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    struct client c = {.host = "127.0.0.1", .port = 8081};
    int status = parse_args(&c, argc, argv);
    if (status < 0)
        status = check_unix_path(&c);
    if (status >= 0)
        return status;

    signal(SIGPIPE, SIG_IGN); /* a closed stdout is an error, not death */
    c.tty = isatty(STDIN_FILENO);

    int rc = evmux_loop_new(&c.loop, NULL);
    if (rc < 0) {
        fprintf(stderr, PROG ": cannot create the event loop: %s\n", evmux_strerror(rc));
        return 1;
    }
    evmux_stream_init(c.loop, &c.stream);
    evmux_stream_set_watermarks(&c.stream, UNSENT_HIGH, UNSENT_LOW, on_drained);
    evmux_stream_init(c.loop, &c.in);
    c.stream.handle.data = c.in.handle.data = c.connect.data = c.connect_host.data = &c;

    if (c.udp)
        start_udp(&c);
    else
        start_connecting(&c);
    rc = evmux_run(c.loop, EVMUX_RUN_DEFAULT);
    if (!c.finishing) { /* the loop failed, or ran out of work unexpectedly */
        fail(&c, "event loop stopped: %s", evmux_strerror(rc));
        evmux_run(c.loop, EVMUX_RUN_DEFAULT); /* runs the close callbacks */
    }

    free(c.held);
    free(c.line);
    rc = evmux_loop_free(c.loop);
    if (rc < 0) {
        fprintf(stderr, PROG ": cannot free the event loop: %s\n", evmux_strerror(rc));
        return 1;
    }
    return c.exit_code;
}
