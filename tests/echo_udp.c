/* The echo programs over UDP (--udp), on the backend EVMUX_BACKEND names:
 *  - raw datagrams of 0, 1, 1,472, 8,192 and 65,507 bytes (every byte
 *    value) each come back to their sender as one datagram, uppercased;
 *  - 200 lines piped through evmux-echo-client --udp: each printed back
 *    uppercased, exit 0;
 *  - both programs by host name (--host localhost);
 *  - the client against a port nobody serves: exit 1, saying so;
 *  - SIGTERM: exit 0 and the summary counts the datagrams answered;
 *  - --udp with --unix or --workers: exit 2. */
#include "echo_harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int exit_code(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int udp_socket_to(int port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    return fd;
}

static ssize_t recv_within(int fd, void *buf, size_t n, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        return -ETIMEDOUT;
    ssize_t r = recv(fd, buf, n, 0);
    return r < 0 ? -errno : r;
}

static void test_datagram_sizes(void)
{
    static const size_t sizes[] = {0, 1, 1472, 8192, 65507};
    static uint8_t sent[65507], want[65507], got[65536];
    /* Started here, not by echo_server_start, to read its stderr. */
    char *argv[] = {(char *)echo_server_path, "--udp", "--port", "0", NULL};
    echo_proc p;
    echo_spawn(&p, argv, ECHO_PIPE_OUT | ECHO_PIPE_ERR, 0);
    char line[256];
    size_t len = 0;
    while (len + 1 < sizeof line) {
        struct pollfd pfd = {.fd = p.out_fd, .events = POLLIN};
        CHECK(poll(&pfd, 1, 10000) == 1);
        if (read(p.out_fd, line + len, 1) != 1)
            echo_fail("no listening line");
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    int port = 0;
    if (sscanf(line, "listening on 127.0.0.1:%d (backend", &port) != 1 || port <= 0)
        echo_fail("malformed listening line: \"%s\"", line);
    int fd = udp_socket_to(port);
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        echo_payload(i + 1, 0, sent, sizes[i]);
        echo_upper_buf(want, sent, sizes[i]);
        CHECK(send(fd, sent, sizes[i], 0) == (ssize_t)sizes[i]);
        ssize_t n = recv_within(fd, got, sizeof got, 5000);
        if (n != (ssize_t)sizes[i])
            echo_fail("a %zu-byte datagram: reply of %zd", sizes[i], n);
        if (memcmp(got, want, sizes[i]) != 0)
            echo_fail("a %zu-byte datagram: reply differs", sizes[i]);
    }
    close(fd);
    kill(p.pid, SIGTERM);
    if (!echo_proc_wait(&p, 10000) || exit_code(p.status) != 0)
        echo_fail("SIGTERM: the server did not exit 0");
    char err[512] = "";
    ssize_t n = read(p.err_fd, err, sizeof err - 1);
    err[n > 0 ? n : 0] = '\0';
    echo_note("summary: %s", err);
    if (strstr(err, "answered 5 datagrams") == NULL)
        echo_fail("SIGTERM summary: expected 'answered 5 datagrams', got '%s'", err);
    echo_proc_close_pipes(&p);
}

static void test_client_lines(const char *host)
{
    const char *args[] = {"--udp", "--host", host, NULL};
    echo_server s;
    echo_server_opts so = {.args = args};
    echo_server_start(&s, &so);
    char port[16];
    snprintf(port, sizeof port, "%d", s.port);
    char *argv[] = {(char *)echo_client_path, "--udp", "--host", (char *)host, "--port", port,
                    NULL};
    /* Paced by the test: 200 lines in 4 runs, so that no datagram needs
     * more room than the server's socket has. */
    for (int run = 0; run < 4; run++) {
        char in[8192], want[8192];
        size_t in_len = 0, want_len = 0;
        for (int i = 0; i < 50; i++) {
            int k = snprintf(in + in_len, sizeof in - in_len, "  line %d of run %d, mixed Case!\n",
                             i, run);
            in_len += (size_t)k;
            k = snprintf(want + want_len, sizeof want - want_len, "LINE %d OF RUN %d, MIXED CASE!\n",
                         i, run);
            want_len += (size_t)k;
        }
        echo_output o;
        echo_run(argv, in, in_len, 10000, &o);
        if (exit_code(o.status) != 0 || o.out_len != want_len || memcmp(o.out, want, want_len) != 0)
            echo_fail("client --udp --host %s: status %d, %zu bytes out (want %zu); stderr: %.*s",
                      host, o.status, o.out_len, want_len, (int)o.err_len, o.err);
        echo_output_free(&o);
    }
    echo_server_stop_ok(&s);
}

static void test_client_lines_ip(void)
{
    test_client_lines("127.0.0.1");
}

static void test_client_lines_by_name(void)
{
    test_client_lines("localhost");
}

static void test_client_no_server(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", echo_unused_port());
    char *argv[] = {(char *)echo_client_path, "--udp", "--port", port, NULL};
    echo_output o;
    echo_run(argv, "hello\n", 6, 10000, &o);
    if (exit_code(o.status) != 1 || o.err_len == 0)
        echo_fail("client --udp to a closed port: status %d, stderr '%.*s'", o.status,
                  (int)o.err_len, o.err);
    echo_note("no server: %.*s", (int)o.err_len, o.err);
    echo_output_free(&o);
}

static void test_bad_combinations(void)
{
    char *a[] = {(char *)echo_server_path, "--udp", "--unix", "/tmp/x.sock", NULL};
    char *b[] = {(char *)echo_server_path, "--udp", "--workers", "2", NULL};
    char *c[] = {(char *)echo_client_path, "--udp", "--unix", "/tmp/x.sock", NULL};
    char *const *cases[] = {a, b, c};
    for (size_t i = 0; i < 3; i++) {
        echo_output o;
        echo_run(cases[i], NULL, 0, 10000, &o);
        if (exit_code(o.status) != 2)
            echo_fail("%s %s %s: status %d, want 2", cases[i][0], cases[i][1], cases[i][2],
                      o.status);
        echo_output_free(&o);
    }
}

int main(int argc, char **argv)
{
    echo_init(argc, argv, 150);
    RUN_TEST(test_datagram_sizes);
    RUN_TEST(test_client_lines_ip);
    RUN_TEST(test_client_lines_by_name);
    RUN_TEST(test_client_no_server);
    RUN_TEST(test_bad_combinations);
    echo_note("done");
    return 0;
}
