/* evmux-echo-server --proxy-protocol --log-conns, without a balancer: the
 * test writes the headers itself.
 *  - v1 with data in the same segment: the data is echoed, and the log
 *    names the client of the header, via the real peer.
 *  - v2 (IPv6 client) sent in pieces, then data: echoed; logged.
 *  - v2 LOCAL (what a balancer's health check sends): echoed.
 *  - "GET /", or a v2 header claiming 65,535 bytes: closed at once, with
 *    the reason logged, no byte echoed; half a header then EOF: logged.
 *  - A connection that sends nothing is closed after 5 s, with the reason;
 *    meanwhile another connection is served at once (nothing stalls). */
#include "echo_harness.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static echo_server srv;
static char err_path[256];

static void remove_err_file(void)
{
    unlink(err_path);
}

/* The log must say `what` within 2 s. */
static void expect_log(const char *what)
{
    uint64_t deadline = echo_now_ms() + 2000;
    for (;;) {
        char *log = echo_read_file(err_path);
        bool found = strstr(log, what) != NULL;
        if (found || echo_now_ms() > deadline) {
            if (!found)
                echo_fail("the server's log lacks \"%s\":\n%s", what, log);
            free(log);
            return;
        }
        free(log);
        echo_sleep_ms(20);
    }
}

static int connect_or_fail(void)
{
    int fd = echo_connect(srv.port, 5000);
    if (fd < 0)
        echo_fail("connect: %s", strerror(-fd));
    return fd;
}

static void expect_echo(int fd, const char *sent, const char *what)
{
    char want[64], got[64];
    size_t n = strlen(sent);
    echo_upper_buf((uint8_t *)want, (const uint8_t *)sent, n);
    int rc = echo_recv_exact(fd, got, n, 5000);
    if (rc < 0)
        echo_fail("%s: no echo: %s", what, strerror(-rc));
    if (memcmp(got, want, n) != 0)
        echo_fail("%s: echoed \"%.*s\", expected \"%.*s\"", what, (int)n, got, (int)n, want);
}

static void expect_closed(int fd, const char *what)
{
    char byte;
    ssize_t r = echo_recv_some(fd, &byte, 1, 3000);
    if (r > 0)
        echo_fail("%s: the server echoed instead of closing", what);
    if (r == -ETIMEDOUT)
        echo_fail("%s: the server did not close the connection within 3 s", what);
}

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static void test_v1(void)
{
    int fd = connect_or_fail();
    const char *hello = "PROXY TCP4 192.0.2.1 198.51.100.2 5555 80\r\nhello, v1";
    CHECK(echo_send_all(fd, hello, strlen(hello), 5000) == 0);
    expect_echo(fd, "hello, v1", "v1");
    char line[96];
    snprintf(line, sizeof line, "connection from 192.0.2.1:5555 via 127.0.0.1:%d (PROXY v1)",
             echo_local_port(fd));
    expect_log(line);
    close(fd);
}

static void test_v2_in_pieces(void)
{
    uint8_t h[16 + 36];
    memcpy(h, v2_sig, 12);
    h[12] = 0x21; /* version 2, PROXY */
    h[13] = 0x21; /* AF_INET6, STREAM */
    h[14] = 0;
    h[15] = 36;
    uint8_t src[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1}, dst[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 2};
    memcpy(h + 16, src, 16);
    memcpy(h + 32, dst, 16);
    h[48] = 6666 >> 8, h[49] = 6666 & 0xff, h[50] = 0, h[51] = 80;
    int fd = connect_or_fail();
    /* In three pieces, each its own segment. */
    CHECK(echo_send_all(fd, h, 5, 5000) == 0);
    echo_sleep_ms(30);
    CHECK(echo_send_all(fd, h + 5, 20, 5000) == 0);
    echo_sleep_ms(30);
    CHECK(echo_send_all(fd, h + 25, sizeof h - 25, 5000) == 0);
    CHECK(echo_send_all(fd, "pieces", 6, 5000) == 0);
    expect_echo(fd, "pieces", "v2 in pieces");
    char line[96];
    snprintf(line, sizeof line, "connection from [2001:db8::1]:6666 via 127.0.0.1:%d (PROXY v2)",
             echo_local_port(fd));
    expect_log(line);
    close(fd);
}

static void test_v2_local(void)
{
    uint8_t h[16 + 5];
    memcpy(h, v2_sig, 12);
    h[12] = 0x20; /* version 2, LOCAL */
    h[13] = 0x00;
    h[14] = 0;
    h[15] = 0;
    memcpy(h + 16, "local", 5);
    int fd = connect_or_fail();
    CHECK(echo_send_all(fd, h, sizeof h, 5000) == 0);
    expect_echo(fd, "local", "v2 LOCAL");
    close(fd);
}

static void test_refused(void)
{
    int fd = connect_or_fail();
    CHECK(echo_send_all(fd, "GET / HTTP/1.0\r\n\r\n", 18, 5000) == 0);
    expect_closed(fd, "no header (GET /)");
    close(fd);
    expect_log("no valid PROXY header");

    uint8_t h[16 + 64] = {0};
    memcpy(h, v2_sig, 12);
    h[12] = 0x21;
    h[13] = 0x11;
    h[14] = 0xff;
    h[15] = 0xff; /* 65,535 bytes to come */
    fd = connect_or_fail();
    CHECK(echo_send_all(fd, h, sizeof h, 5000) == 0);
    expect_closed(fd, "v2 claiming 65535 bytes");
    close(fd);
    expect_log("PROXY header too long");
}

static void test_partial_then_eof(void)
{
    int fd = connect_or_fail();
    CHECK(echo_send_all(fd, "PROXY TCP4 192.0", 16, 5000) == 0);
    CHECK(shutdown(fd, SHUT_WR) == 0);
    expect_closed(fd, "half a header, then EOF");
    close(fd);
    expect_log("closed before its PROXY header was whole");
}

static void test_silent(void)
{
    int silent = connect_or_fail();
    uint64_t t0 = echo_now_ms();
    /* Meanwhile the loop serves others at once. */
    int fd = connect_or_fail();
    const char *hello = "PROXY TCP4 192.0.2.9 198.51.100.2 7777 80\r\nwhile waiting";
    CHECK(echo_send_all(fd, hello, strlen(hello), 5000) == 0);
    expect_echo(fd, "while waiting", "while another waits for its header");
    close(fd);
    char byte;
    ssize_t r = echo_recv_some(silent, &byte, 1, 10000);
    uint64_t ms = echo_now_ms() - t0;
    if (r > 0 || r == -ETIMEDOUT)
        echo_fail("silent connection: %s after %llu ms", r > 0 ? "data" : "still open",
                  (unsigned long long)ms);
    if (ms < 4500)
        echo_fail("silent connection closed after %llu ms, before its 5 s", (unsigned long long)ms);
    close(silent);
    expect_log("no PROXY header within 5 s");
    echo_note("silent connection closed after %llu ms", (unsigned long long)ms);
}

int main(int argc, char **argv)
{
    echo_init(argc, argv, 120);
    const char *tmp = getenv("TMPDIR");
    snprintf(err_path, sizeof err_path, "%s/evmux-echo-proxy.%d.err", tmp ? tmp : "/tmp",
             (int)getpid());
    atexit(remove_err_file);
    static const char *const args[] = {"--proxy-protocol", "--log-conns", NULL};
    echo_server_opts so = {.args = args, .stderr_file = err_path};
    echo_server_start(&srv, &so);
    RUN_TEST(test_v1);
    RUN_TEST(test_v2_in_pieces);
    RUN_TEST(test_v2_local);
    RUN_TEST(test_refused);
    RUN_TEST(test_partial_then_eof);
    RUN_TEST(test_silent);
    echo_server_check_alive(&srv, "after every bad header");
    echo_server_stop_ok(&srv);
    echo_note("done");
    return 0;
}
