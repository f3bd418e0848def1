/* The echo programs by host name (--host NAME), resolved with evmux's own
 * lookups (evmux_getaddrinfo in the server, evmux_connect_host in the
 * client):
 *  - evmux-echo-server --host localhost listens on a loopback address and
 *    says so in its usual line, "listening on HOST:PORT (backend NAME)";
 *    evmux-echo-client --host localhost sends 300 lines through it and
 *    prints exactly the uppercased lines, exit 0;
 *  - the same with --host ::1 for both (the line names [::1]:PORT); the
 *    file ends "Skipped" (77) after its other parts where there is no IPv6
 *    loopback;
 *  - a name that does not exist: the client exits 1 with "cannot connect
 *    to NAME:PORT: " and the resolver's message, the server exits 2 with
 *    "bad address", neither printing on stdout. */
#include "echo_harness.h"
#include "ipv6_loopback.h"

#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define LINES 300

struct server {
    echo_proc proc;
    char line[256];
    char host[80]; /* as the line names it: "127.0.0.1" or "[::1]" */
    int port;
};

/* Starts evmux-echo-server --host HOST --port 0 and reads its line. */
static void server_start(struct server *s, const char *host)
{
    char *argv[] = {(char *)echo_server_path, "--host", (char *)host, "--port", "0", NULL};
    memset(s, 0, sizeof *s);
    echo_spawn(&s->proc, argv, ECHO_PIPE_OUT, 0);
    size_t len = echo_proc_read_line(&s->proc, s->line, sizeof s->line, host);
    /* listening on HOST:PORT (backend NAME), HOST possibly "[v6]": the
     * port follows the last ':' before " (backend ". */
    const char *prefix = "listening on ";
    const char *tail = strstr(s->line, " (backend ");
    if (strncmp(s->line, prefix, strlen(prefix)) != 0 || tail == NULL || s->line[len - 1] != ')')
        echo_fail("--host %s: malformed listening line \"%s\"", host, s->line);
    const char *colon = tail;
    while (colon > s->line && *colon != ':')
        colon--;
    const char *h = s->line + strlen(prefix);
    if (*colon != ':' || colon <= h)
        echo_fail("--host %s: no HOST:PORT in \"%s\"", host, s->line);
    snprintf(s->host, sizeof s->host, "%.*s", (int)(colon - h), h);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end != tail || port <= 0 || port > 65535)
        echo_fail("--host %s: bad port in \"%s\"", host, s->line);
    s->port = (int)port;
    echo_note("--host %s: \"%s\"", host, s->line);
}

static void server_stop(struct server *s)
{
    char st[96];
    kill(s->proc.pid, SIGTERM);
    if (!echo_proc_wait(&s->proc, 10000))
        echo_fail("the server did not exit after SIGTERM");
    if (!WIFEXITED(s->proc.status) || WEXITSTATUS(s->proc.status) != 0)
        echo_fail("the server after SIGTERM: %s, expected exit 0",
                  echo_status_str(s->proc.status, st, sizeof st));
    echo_proc_close_pipes(&s->proc);
}

/* Pipes LINES lines through evmux-echo-client --host HOST. */
static void client_roundtrip(const char *host, int port)
{
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    char *argv[] = {(char *)echo_client_path, "--host", (char *)host, "--port", portbuf, NULL};
    size_t cap = LINES * 32;
    char *in = malloc(cap), *want = malloc(cap);
    size_t in_len = 0, want_len = 0;
    CHECK(in != NULL && want != NULL);
    for (int i = 0; i < LINES; i++) {
        in_len += (size_t)snprintf(in + in_len, cap - in_len, "line %d of host %s\n", i, host);
        want_len += (size_t)snprintf(want + want_len, cap - want_len, "LINE %d OF HOST ", i);
        for (const char *p = host; *p; p++)
            want[want_len++] = *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
        want[want_len++] = '\n';
    }
    echo_output o;
    char st[96];
    echo_run(argv, in, in_len, 30000, &o);
    if (o.timed_out || !WIFEXITED(o.status) || WEXITSTATUS(o.status) != 0)
        echo_fail("client --host %s: %s, expected exit 0 (stderr \"%.300s\")", host,
                  o.timed_out ? "still running after 30 s" : echo_status_str(o.status, st, sizeof st),
                  o.err);
    if (o.out_len != want_len || memcmp(o.out, want, want_len) != 0)
        echo_fail("client --host %s: stdout is not exactly the %d uppercased lines (%zu bytes, "
                  "expected %zu): \"%.100s\"", host, LINES, o.out_len, want_len, o.out);
    echo_note("client --host %s: %d lines echoed exactly, exit 0", host, LINES);
    echo_output_free(&o);
    free(in);
    free(want);
}

static void test_localhost(void)
{
    struct server s;
    server_start(&s, "localhost");
    if (strcmp(s.host, "127.0.0.1") != 0 && strcmp(s.host, "[::1]") != 0)
        echo_fail("--host localhost: listening on \"%s\", not a loopback address", s.host);
    client_roundtrip("localhost", s.port);
    server_stop(&s);
}

static int test_ipv6(void)
{
    if (!have_ipv6_loopback()) {
        echo_note("SKIPPED: no IPv6 loopback");
        return 0;
    }
    struct server s;
    server_start(&s, "::1");
    if (strcmp(s.host, "[::1]") != 0)
        echo_fail("--host ::1: the line names \"%s\", expected [::1]", s.host);
    client_roundtrip("::1", s.port);
    server_stop(&s);
    return 1;
}

static void test_no_such_name(void)
{
    echo_output o;
    char st[96];
    char *client[] = {(char *)echo_client_path, "--host", "nonexistent.invalid", "--port", "9",
                      NULL};
    echo_run(client, "hello\n", 6, 30000, &o);
    if (o.timed_out || !WIFEXITED(o.status) || WEXITSTATUS(o.status) != 1)
        echo_fail("client --host nonexistent.invalid: %s, expected exit 1 (stderr \"%.300s\")",
                  o.timed_out ? "still running" : echo_status_str(o.status, st, sizeof st), o.err);
    const char *want = "evmux-echo-client: cannot connect to nonexistent.invalid:9: ";
    if (strncmp(o.err, want, strlen(want)) != 0 || o.err_len <= strlen(want) + 1)
        echo_fail("client --host nonexistent.invalid: expected \"%s<reason>\", got \"%.300s\"",
                  want, o.err);
    if (o.out_len != 0)
        echo_fail("client --host nonexistent.invalid: printed on stdout: \"%.100s\"", o.out);
    echo_note("client: \"%.*s\", exit 1", (int)strcspn(o.err, "\n"), o.err);
    echo_output_free(&o);

    char *server[] = {(char *)echo_server_path, "--host", "nonexistent.invalid", "--port", "0",
                      NULL};
    echo_run(server, NULL, 0, 30000, &o);
    if (o.timed_out || !WIFEXITED(o.status) || WEXITSTATUS(o.status) != 2)
        echo_fail("server --host nonexistent.invalid: %s, expected exit 2 (stderr \"%.300s\")",
                  o.timed_out ? "still running" : echo_status_str(o.status, st, sizeof st), o.err);
    if (strstr(o.err, "bad address 'nonexistent.invalid': ") == NULL || o.out_len != 0)
        echo_fail("server --host nonexistent.invalid: stderr \"%.300s\", stdout \"%.100s\"",
                  o.err, o.out);
    echo_note("server: \"%.*s\", exit 2", (int)strcspn(o.err, "\n"), o.err);
    echo_output_free(&o);
}

int main(int argc, char **argv)
{
    echo_init(argc, argv, 120);
    RUN_TEST(test_localhost);
    RUN_TEST(test_no_such_name);
    fprintf(stderr, "-- test_ipv6\n");
    int ran_ipv6 = test_ipv6();
    echo_note("done");
    return ran_ipv6 ? 0 : 77; /* SKIP_RETURN_CODE: the IPv6 part could not run */
}
