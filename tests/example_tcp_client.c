/* examples/tcp-client.c against examples/echo-server.c:
 *  - reply: a short message comes back uppercased: stdout exactly the
 *    reply and a newline, nothing on stderr, exit 0;
 *  - long_reply: a 100000-byte message (the reply arrives in many reads)
 *    comes back whole, byte for byte;
 *  - refused: a port nobody listens on gives a non-zero exit, nothing on
 *    stdout, and a message naming the address and "connection refused";
 *  - usage: wrong arguments (too few, a host name, a bad port) exit 2.
 * Run as: example_tcp_client PATH/evmux-example-echo-server PATH/evmux-example-tcp-client */
#include "example_harness.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *server_path, *client_path;

/* Runs the client with host, port and message; fails unless it exits with
 * `code` and prints exactly `out` (when not NULL). */
static void run_client(const char *host, const char *port, const char *msg, int code,
                       const char *out, echo_output *o)
{
    char *argv[] = {(char *)client_path, (char *)host, (char *)port, (char *)msg, NULL};
    echo_run(argv, NULL, 0, 30000, o);
    char st[96];
    if (o->timed_out || !WIFEXITED(o->status) || WEXITSTATUS(o->status) != code)
        echo_fail("tcp-client %s %s: %s, expected exit %d; stderr: %s", host, port,
                  o->timed_out ? "timed out" : echo_status_str(o->status, st, sizeof st), code,
                  o->err);
    if (out != NULL && (o->out_len != strlen(out) || memcmp(o->out, out, o->out_len) != 0))
        echo_fail("tcp-client %s %s: stdout \"%.200s\" (%zu bytes), expected \"%.200s\" (%zu bytes)",
                  host, port, o->out, o->out_len, out, strlen(out));
}

static void test_reply(void)
{
    echo_proc srv;
    char port[16];
    echo_output o;
    snprintf(port, sizeof port, "%d", example_start_server(&srv, server_path));
    run_client("127.0.0.1", port, "Hello, World! abc xyz 123 é", 0, "HELLO, WORLD! ABC XYZ 123 é\n", &o);
    if (o.err_len != 0)
        echo_fail("tcp-client wrote to stderr on success: %s", o.err);
    echo_output_free(&o);
    echo_proc_kill(&srv); /* the example runs until killed */
}

static void test_long_reply(void)
{
    enum { LEN = 100000 };
    echo_proc srv;
    char port[16], *msg = malloc(LEN + 1), *want = malloc(LEN + 2);
    echo_output o;
    uint64_t rng = 0x7C9;
    CHECK(msg && want);
    for (size_t i = 0; i < LEN; i++) /* printable ASCII: an argument cannot hold NUL */
        msg[i] = (char)echo_rand_range(&rng, 0x20, 0x7e);
    msg[LEN] = '\0';
    echo_upper_buf((uint8_t *)want, (const uint8_t *)msg, LEN);
    memcpy(want + LEN, "\n", 2);
    snprintf(port, sizeof port, "%d", example_start_server(&srv, server_path));
    run_client("127.0.0.1", port, msg, 0, want, &o);
    echo_output_free(&o);
    echo_proc_kill(&srv); /* the example runs until killed */
    free(msg);
    free(want);
}

static void test_refused(void)
{
    char port[16], where[64];
    echo_output o;
    snprintf(port, sizeof port, "%d", echo_unused_port());
    snprintf(where, sizeof where, "127.0.0.1:%s", port);
    char *argv[] = {(char *)client_path, "127.0.0.1", port, "hello", NULL};
    echo_run(argv, NULL, 0, 30000, &o);
    if (o.timed_out || !WIFEXITED(o.status) || WEXITSTATUS(o.status) == 0 || o.out_len != 0)
        echo_fail("tcp-client to a closed port: status 0x%x, stdout \"%s\"; expected a non-zero "
                  "exit and no output", o.status, o.out);
    if (strstr(o.err, "connection refused") == NULL || strstr(o.err, where) == NULL)
        echo_fail("tcp-client to a closed port: the message \"%s\" should name %s and "
                  "\"connection refused\"", o.err, where);
    echo_output_free(&o);
}

static void test_usage(void)
{
    const char *cases[][3] = {{"127.0.0.1", "8081", NULL}, {"localhost", "8081", "hi"},
                              {"127.0.0.1", "http", "hi"}, {"127.0.0.1", "65536", "hi"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *argv[] = {(char *)client_path, (char *)cases[i][0], (char *)cases[i][1],
                        (char *)cases[i][2], NULL};
        echo_output o;
        echo_run(argv, NULL, 0, 10000, &o);
        if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) != 2 || strstr(o.err, "usage") == NULL)
            echo_fail("tcp-client %s %s %s: status 0x%x, stderr \"%s\"; expected exit 2 and usage",
                      cases[i][0], cases[i][1], cases[i][2] ? cases[i][2] : "(none)", o.status,
                      o.err);
        echo_output_free(&o);
    }
}

int main(int argc, char **argv)
{
    example_init(argc, argv, 2, 240);
    server_path = argv[1];
    client_path = argv[2];
    RUN_TEST(test_reply);
    RUN_TEST(test_long_reply);
    RUN_TEST(test_refused);
    RUN_TEST(test_usage);
    return 0;
}
