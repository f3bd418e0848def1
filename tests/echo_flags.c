/* Command line of evmux-echo-server.
 *  - --help: usage on stdout, exit 0.
 *  - Bad flags and values: a one-line error plus the usage on stderr,
 *    nothing on stdout, exit 2, and no listening.
 *  - --backend NAME for each compiled backend wins over EVMUX_BACKEND and
 *    is named in the listening line; --host 127.0.0.1 works.
 *  - stdout holds exactly the one listening line, through shutdown.
 *  - A second server on a port in use exits non-zero with a message. */
#include "echo_harness.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int count_lines(const char *s, size_t n)
{
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += s[i] == '\n';
    if (n > 0 && s[n - 1] != '\n')
        lines++;
    return lines;
}

static void test_help(void)
{
    echo_output o;
    char st[96];
    char *argv[] = { (char *)echo_server_path, "--help", NULL };
    echo_run(argv, NULL, 0, 10000, &o);
    if (o.timed_out)
        echo_fail("--help: server still running after 10 s");
    if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) != 0)
        echo_fail("--help: %s, expected exit 0", echo_status_str(o.status, st, sizeof st));
    if (o.out_len == 0 || !strstr(o.out, "--port"))
        echo_fail("--help: expected the usage (naming --port) on stdout, got \"%.200s\"", o.out);
    echo_note("--help: exit 0, %d lines of usage on stdout", count_lines(o.out, o.out_len));
    echo_output_free(&o);
}

static void expect_usage_error(const char *what, char *const argv[])
{
    echo_output o;
    char st[96];
    echo_run(argv, NULL, 0, 10000, &o);
    if (o.timed_out)
        echo_fail("%s: still running after 10 s (it should refuse the arguments; stdout \"%.100s\")",
                  what, o.out);
    if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) != 2)
        echo_fail("%s: %s, expected exit 2 (stderr \"%.200s\")", what,
                  echo_status_str(o.status, st, sizeof st), o.err);
    if (o.out_len != 0)
        echo_fail("%s: printed on stdout: \"%.200s\" (errors and usage belong on stderr)", what,
                  o.out);
    /* An error line and the usage. */
    if (count_lines(o.err, o.err_len) < 2 || !strstr(o.err, "--port"))
        echo_fail("%s: expected an error line and the usage on stderr, got \"%.300s\"", what, o.err);
    echo_note("%s: exit 2, stderr \"%.*s\" + usage", what, (int)strcspn(o.err, "\n"), o.err);
    echo_output_free(&o);
}

static void test_bad_flags(void)
{
    static const char *const cases[][3] = {
        { "--bogus", NULL, NULL },
        { "--port", "70000", NULL },
        { "--port", "abc", NULL },
        { "--port", "12abc", NULL },
        { "--port", "-1", NULL },
        { "--port", NULL, NULL }, /* missing value */
        { "--max-conns", "-1", NULL },
        { "--max-conns", "abc", NULL },
        { "--work-us", "x", NULL },
        { "--work-us", "10000001", NULL },
        { "--workers", "257", NULL },
        { "--workers", "-1", NULL },
        { "--backend", "bogus", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *argv[4] = { (char *)echo_server_path, NULL, NULL, NULL };
        char what[64];
        argv[1] = (char *)cases[i][0];
        argv[2] = (char *)cases[i][1];
        snprintf(what, sizeof what, "server %s%s%s", cases[i][0], cases[i][1] ? " " : "",
                 cases[i][1] ? cases[i][1] : "");
        expect_usage_error(what, argv);
    }
}

/* Each compiled backend by flag, against a different EVMUX_BACKEND. */
static void test_backend_flag(void)
{
    const char *avail = evmux_backends_available();
    const char *env = getenv("EVMUX_BACKEND");
    char list[64];
    snprintf(list, sizeof list, "%s", avail);
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name;
         name = strtok_r(NULL, ",", &save)) {
        const char *args[] = { "--host", "127.0.0.1", "--backend", name, NULL };
        echo_server_opts so = { .args = args, .backend = name };
        echo_server s;
        echo_server_start(&s, &so);
        int fd = echo_connect(s.port, 5000);
        CHECK(fd >= 0);
        int rc = echo_roundtrip(fd, 42, 100000, 10000);
        if (rc != 0)
            echo_fail("--backend %s: echo: %s", name, strerror(-rc));
        close(fd);
        echo_server_stop_ok(&s);
        echo_note("--backend %s (EVMUX_BACKEND=%s): \"%s\", echo ok", name, env ? env : "", s.line);
    }
}

static void test_stdout_one_line(void)
{
    echo_server s;
    char extra[256];
    echo_server_start(&s, NULL);
    int fd = echo_connect(s.port, 5000);
    CHECK(fd >= 0);
    CHECK(echo_roundtrip(fd, 43, 1000, 5000) == 0);
    close(fd);
    int status = echo_server_stop(&s, SIGTERM, 10000);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    size_t n = echo_server_extra_stdout(&s, extra, sizeof extra - 1);
    extra[n] = '\0';
    if (n != 0)
        echo_fail("server wrote more than its listening line to stdout: \"%s\"", extra);
    echo_proc_close_pipes(&s.proc);
}

static void test_port_in_use(void)
{
    echo_server a;
    echo_output o;
    char st[96], port[16];
    echo_server_start(&a, NULL);
    snprintf(port, sizeof port, "%d", a.port);
    char *argv[] = { (char *)echo_server_path, "--port", port, NULL };
    echo_run(argv, NULL, 0, 10000, &o);
    if (o.timed_out)
        echo_fail("port in use: second server on port %s still running after 10 s (stdout \"%.100s\")",
                  port, o.out);
    if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) == 0)
        echo_fail("port in use: second server %s, expected a non-zero exit",
                  echo_status_str(o.status, st, sizeof st));
    if (o.err_len == 0)
        echo_fail("port in use: second server printed no error on stderr");
    if (strstr(o.out, "listening"))
        echo_fail("port in use: second server claims to listen: \"%.100s\"", o.out);
    echo_note("port in use: %s, stderr \"%.*s\"", echo_status_str(o.status, st, sizeof st),
              (int)strcspn(o.err, "\n"), o.err);
    echo_output_free(&o);

    /* The first one is unaffected. */
    int fd = echo_connect(a.port, 5000);
    CHECK(fd >= 0);
    CHECK(echo_roundtrip(fd, 44, 1000, 5000) == 0);
    close(fd);
    echo_server_stop_ok(&a);
}

int main(int argc, char **argv)
{
    echo_init(argc, argv, 150);
    RUN_TEST(test_help);
    RUN_TEST(test_bad_flags);
    RUN_TEST(test_backend_flag);
    RUN_TEST(test_stdout_one_line);
    RUN_TEST(test_port_in_use);
    echo_note("done");
    return 0;
}
