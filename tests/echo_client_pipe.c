/* evmux-echo-client driven through pipes: ~2000 lines with surrounding
 * whitespace, blank lines, UTF-8 and 10 KB lines must come back as exactly
 * the uppercased, stripped, non-empty lines (no prompt: stdin is not a
 * terminal), exit 0; the same lines from a regular file on stdin (`< file`),
 * which no backend can wait for. The terminal the client reads is left
 * blocking for the shell that shares it. Also: no server -> non-zero exit and a message; server
 * killed while the client waits for a reply -> the same; with a terminal on
 * stdin the "msg>: " prompt appears; --help -> 0. */
#include "echo_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static echo_server srv;

typedef struct strbuf {
    char *p;
    size_t len, cap;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        CHECK(b->p != NULL);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_addc(strbuf *b, char c)
{
    sb_add(b, &c, 1);
}

static void add_ws(strbuf *b, uint64_t *rng, int allow_cr)
{
    static const char ws[] = " \t";
    int n = (int)echo_rand_range(rng, 0, 3);
    for (int i = 0; i < n; i++)
        sb_addc(b, ws[echo_rand(rng) % 2]);
    if (allow_cr && echo_rand(rng) % 8 == 0)
        sb_addc(b, '\r'); /* CRLF input: \r is trailing whitespace too */
}

/* A line body that starts and ends with a non-blank and may hold blanks
 * inside, so stripping leaves it as is. */
static void make_body(strbuf *b, uint64_t *rng, size_t len)
{
    static const char *cjk[] = { "多路复用", "事件驱动", "你好", "服务器" };
    for (size_t i = 0; i < len; i++) {
        uint64_t r = echo_rand(rng) % 100;
        int edge = (i == 0 || i + 1 == len);
        if (!edge && r < 8)
            sb_addc(b, r < 6 ? ' ' : '\t');
        else if (!edge && r < 10 && i + 4 < len) {
            const char *w = cjk[echo_rand(rng) % 4];
            sb_add(b, w, strlen(w));
        } else
            sb_addc(b, (char)echo_rand_range(rng, 0x21, 0x7e));
    }
}

static void upper_line(strbuf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sb_addc(out, (char)echo_upper((uint8_t)s[i]));
    sb_addc(out, '\n');
}

static void report_diff(const char *got, size_t got_len, const char *want, size_t want_len)
{
    size_t i = 0, line = 1, line_start = 0;
    while (i < got_len && i < want_len && got[i] == want[i]) {
        if (got[i] == '\n') {
            line++;
            line_start = i + 1;
        }
        i++;
    }
    fprintf(stderr, "  stdout differs at byte %zu (output line %zu); got %zu bytes, expected %zu\n", i,
            line, got_len, want_len);
    fprintf(stderr, "  got:      \"%.80s\"\n", got + line_start);
    fprintf(stderr, "  expected: \"%.80s\"\n", want + line_start);
}

static char *client_argv[8];

static void set_client_argv(int port)
{
    static char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    client_argv[0] = (char *)echo_client_path;
    client_argv[1] = "--port";
    client_argv[2] = portbuf;
    client_argv[3] = NULL;
}

/* Runs the client with `in` in a regular file on its stdin. */
static void run_with_file(const strbuf *in, echo_output *o)
{
    char path[] = "/tmp/evmux-client-stdin-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    CHECK(in->len == 0 || write(fd, in->p, in->len) == (ssize_t)in->len);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    echo_run_fd(client_argv, fd, 30000, o);
    close(fd);
}

/* stdin_file: the input comes from a regular file rather than a pipe. */
static void check_client_output_from(const char *what, const strbuf *in, const strbuf *want,
                                     int stdin_file)
{
    echo_output o;
    char st[96];
    uint64_t t0 = echo_now_ms();
    if (stdin_file)
        run_with_file(in, &o);
    else
        echo_run(client_argv, in->p, in->len, 30000, &o);
    if (o.timed_out)
        echo_fail("%s: client still running after 30 s (stdout %zu bytes, stderr: %.300s)", what,
                  o.out_len, o.err);
    if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) != 0)
        echo_fail("%s: client %s, expected exit 0 (stderr: %.300s)", what,
                  echo_status_str(o.status, st, sizeof st), o.err);
    if (o.out_len != want->len || memcmp(o.out, want->p, want->len) != 0) {
        report_diff(o.out, o.out_len, want->p, want->len);
        echo_fail("%s: client stdout is not exactly the uppercased lines", what);
    }
    echo_note("%s: %zu bytes in, %zu bytes out, exact, exit 0, %llu ms", what, in->len, o.out_len,
              (unsigned long long)(echo_now_ms() - t0));
    echo_output_free(&o);
}

static void check_client_output(const char *what, const strbuf *in, const strbuf *want)
{
    check_client_output_from(what, in, want, 0);
}

/* The 2000-line input of test_pipe_lines; returns its number of lines. */
static void make_lines(strbuf *in_out, strbuf *want_out);

static void test_pipe_lines(void)
{
    strbuf in = { 0 }, want = { 0 };
    make_lines(&in, &want);
    check_client_output("2000 piped lines", &in, &want);
    free(in.p);
    free(want.p);
}

/* The same lines from a regular file: stdin is always ready and ends. */
static void test_file_lines(void)
{
    strbuf in = { 0 }, want = { 0 };
    make_lines(&in, &want);
    check_client_output_from("2000 lines from a file", &in, &want, 1);
    strbuf empty = { 0 }, none = { 0 };
    sb_add(&empty, "", 0);
    sb_add(&none, "", 0);
    check_client_output_from("an empty file", &empty, &none, 1);
    free(in.p);
    free(want.p);
    free(empty.p);
    free(none.p);
}

static void make_lines(strbuf *in_out, strbuf *want_out)
{
    strbuf in = { 0 }, want = { 0 };
    uint64_t rng = 0xC11E47;
    size_t lines = 0, blank = 0, longl = 0;

    for (int i = 0; i < 2000; i++) {
        uint64_t r = echo_rand(&rng) % 100;
        if (r < 5) { /* empty */
            blank++;
        } else if (r < 10) { /* whitespace only */
            sb_add(&in, " \t ", echo_rand_range(&rng, 1, 3));
            add_ws(&in, &rng, 1);
            blank++;
        } else {
            size_t len = i % 100 == 7 ? 10240 : (size_t)echo_rand_range(&rng, 1, 200);
            strbuf body = { 0 };
            make_body(&body, &rng, len);
            add_ws(&in, &rng, 0);
            sb_add(&in, body.p, body.len);
            add_ws(&in, &rng, 1);
            upper_line(&want, body.p, body.len);
            free(body.p);
            lines++;
            longl += len == 10240;
        }
        sb_addc(&in, '\n');
    }
    echo_note("input: %zu lines with text (%zu of 10 KB), %zu blank", lines, longl, blank);
    *in_out = in;
    *want_out = want;
}

/* The last line has no newline: it is still a line. Whitespace inside a
 * line stays. */
static void test_last_line_unterminated(void)
{
    strbuf in = { 0 }, want = { 0 };
    const char *text = "  first\tline  \n\n  inner  spaces\tand\ttabs \nlast line without newline  ";
    const char *exp = "FIRST\tLINE\nINNER  SPACES\tAND\tTABS\nLAST LINE WITHOUT NEWLINE\n";
    sb_add(&in, text, strlen(text));
    sb_add(&want, exp, strlen(exp));
    check_client_output("unterminated last line", &in, &want);
    free(in.p);
    free(want.p);
}

static void test_empty_input(void)
{
    strbuf in = { 0 }, want = { 0 };
    sb_add(&in, "", 0);
    sb_add(&want, "", 0);
    check_client_output("empty stdin", &in, &want);
    sb_add(&in, "\n  \n\t\n", 6);
    check_client_output("only blank lines", &in, &want);
    free(in.p);
    free(want.p);
}

static void test_no_server(void)
{
    echo_output o;
    char st[96];
    int port = echo_unused_port();
    set_client_argv(port);
    echo_run(client_argv, "hello\n", 6, 15000, &o);
    if (o.timed_out)
        echo_fail("no server: client still running after 15 s");
    if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) == 0)
        echo_fail("no server: client %s, expected a non-zero exit",
                  echo_status_str(o.status, st, sizeof st));
    if (o.err_len == 0)
        echo_fail("no server: client printed nothing on stderr");
    if (o.out_len != 0)
        echo_fail("no server: client printed on stdout: \"%.100s\"", o.out);
    echo_note("no server on port %d: %s, stderr \"%.*s\"", port,
              echo_status_str(o.status, st, sizeof st), (int)strcspn(o.err, "\n"), o.err);
    echo_output_free(&o);
}

/* Reads the child's pipe into b until it holds `want` or the time is up. */
static int read_until(int fd, strbuf *b, const char *want, int timeout_ms)
{
    uint64_t deadline = echo_now_ms() + (uint64_t)timeout_ms;
    char buf[4096];
    while (!b->p || !strstr(b->p, want)) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) {
            sb_add(b, buf, (size_t)r);
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR))
            return 0;
        uint64_t now = echo_now_ms();
        if (now >= deadline)
            return 0;
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        poll(&pfd, 1, (int)(deadline - now));
    }
    return 1;
}

static void drain(int fd, strbuf *b)
{
    char buf[4096];
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
        sb_add(b, buf, (size_t)r);
}

static void test_server_killed(void)
{
    echo_proc c;
    strbuf out = { 0 }, err = { 0 };
    char st[96];

    echo_server_start(&srv, NULL);
    set_client_argv(srv.port);
    /* stdin stays an open pipe: the client must notice the server going
     * away while it waits for a reply, not at EOF on stdin. */
    echo_spawn(&c, client_argv, ECHO_PIPE_IN | ECHO_PIPE_OUT | ECHO_PIPE_ERR, 0);
    CHECK(write(c.in_fd, "hello\n", 6) == 6);
    if (!read_until(c.out_fd, &out, "HELLO\n", 10000))
        echo_fail("server killed: no \"HELLO\" reply from the client (stdout \"%s\")",
                  out.p ? out.p : "");

    /* Freeze the server so the next line gets no reply, then kill it. */
    CHECK(kill(srv.proc.pid, SIGSTOP) == 0);
    CHECK(write(c.in_fd, "are you there\n", 14) == 14);
    echo_sleep_ms(300);
    if (echo_proc_wait(&c, 0))
        echo_fail("server killed: client exited before the server died (%s)",
                  echo_status_str(c.status, st, sizeof st));
    echo_proc_kill(&srv.proc);

    if (!echo_proc_wait(&c, 10000))
        echo_fail("server killed: client still running 10 s after the server died "
                  "(its stdin is still open)");
    drain(c.out_fd, &out);
    drain(c.err_fd, &err);
    if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) == 0)
        echo_fail("server killed: client %s, expected a non-zero exit (stderr \"%s\")",
                  echo_status_str(c.status, st, sizeof st), err.p ? err.p : "");
    if (err.len == 0)
        echo_fail("server killed: client exited without a message on stderr");
    if (strcmp(out.p, "HELLO\n") != 0)
        echo_fail("server killed: unexpected client stdout \"%.200s\"", out.p);
    echo_note("server killed: client %s, stderr \"%.*s\"", echo_status_str(c.status, st, sizeof st),
              (int)strcspn(err.p, "\n"), err.p);
    echo_proc_close_pipes(&c);
    free(out.p);
    free(err.p);
}

/* With a terminal on stdin the prompt appears (the counterpart of the
 * piped case, where stdout must hold only replies). */
static void test_tty_prompt(void)
{
    echo_proc c;
    strbuf out = { 0 };
    char st[96];
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    CHECK(master >= 0);
    CHECK(grantpt(master) == 0 && unlockpt(master) == 0);
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    CHECK(slave >= 0);

    echo_server_start(&srv, NULL);
    set_client_argv(srv.port);
    echo_spawn_io(&c, client_argv, slave, ECHO_PIPE_OUT, 0);
    /* slave stays open here: it shares the client's terminal description,
     * as the shell that started the client would. */
    if (!read_until(c.out_fd, &out, "msg>: ", 10000))
        echo_fail("tty: no \"msg>: \" prompt on stdout with a terminal on stdin (got \"%s\")",
                  out.p ? out.p : "");
    CHECK(write(master, "  tty line \n", 12) == 12);
    if (!read_until(c.out_fd, &out, "TTY LINE\n", 10000))
        echo_fail("tty: no \"TTY LINE\" reply (stdout \"%s\")", out.p);
    if (fcntl(slave, F_GETFL) & O_NONBLOCK)
        echo_fail("tty: the client made the shell's terminal description non-blocking");
    /* ^D at the start of a line: EOF on the terminal. */
    echo_sleep_ms(100);
    CHECK(write(master, "\x04", 1) == 1);
    if (!echo_proc_wait(&c, 10000))
        echo_fail("tty: client still running 10 s after EOF on its terminal");
    if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0)
        echo_fail("tty: client %s after EOF, expected exit 0",
                  echo_status_str(c.status, st, sizeof st));
    if (fcntl(slave, F_GETFL) & O_NONBLOCK)
        echo_fail("tty: the terminal description is non-blocking after the client exited");
    echo_note("tty: prompt shown, reply \"TTY LINE\", exit 0 at EOF, terminal left blocking");
    echo_proc_close_pipes(&c);
    close(slave);
    close(master);
    free(out.p);
    echo_server_stop_ok(&srv);
}

static void test_help(void)
{
    echo_output o;
    char st[96];
    char *argv[] = { (char *)echo_client_path, "--help", NULL };
    echo_run(argv, NULL, 0, 10000, &o);
    if (o.timed_out || !WIFEXITED(o.status) || WEXITSTATUS(o.status) != 0)
        echo_fail("client --help: %s, expected exit 0",
                  o.timed_out ? "timed out" : echo_status_str(o.status, st, sizeof st));
    if (o.out_len + o.err_len == 0)
        echo_fail("client --help printed nothing");
    echo_output_free(&o);
}

int main(int argc, char **argv)
{
    echo_init(argc, argv, 150);
    echo_server_start(&srv, NULL);
    echo_note("server: %s", srv.line);
    set_client_argv(srv.port);

    RUN_TEST(test_pipe_lines);
    RUN_TEST(test_file_lines);
    RUN_TEST(test_last_line_unterminated);
    RUN_TEST(test_empty_input);
    echo_server_check_alive(&srv, "after the piped clients");
    echo_server_stop_ok(&srv);

    RUN_TEST(test_no_server);
    RUN_TEST(test_server_killed);
    RUN_TEST(test_tty_prompt);
    RUN_TEST(test_help);
    echo_note("done");
    return 0;
}
