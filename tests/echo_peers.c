/* Badly behaved peers.
 *  - Half-close: a client sends 1 MiB (reading meanwhile), shuts down its
 *    write side, and must get the full uppercase 1 MiB and then EOF; also
 *    256 KiB sent entirely before reading anything, 50 clients at once,
 *    and clients that half-close while the server owes them 256 KiB it
 *    could not deliver yet.
 *  - Resets: clients send megabytes and reset (SO_LINGER 0) while the
 *    server is in the middle of echoing to them.
 *  - 200 clients that connect and vanish: before the handshake settles,
 *    right after it (FIN or RST), or after a few bytes.
 * Afterwards the server is alive, serves a new client exactly, and its
 * descriptor count is back to its baseline (no leak). */
#include "echo_harness.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static echo_server srv;

static void test_half_close(void)
{
    echo_stream s = { .fd = -1, .seed = 11, .total = 1u << 20,
                      .mode = ES_HALF_CLOSE | ES_EXPECT_EOF };
    echo_group_opts o = { .what = "half-close 1 MiB", .port = srv.port, .timeout_ms = 20000 };
    echo_group_run(&s, 1, &o);
    echo_group_check_all_ok(&s, 1, o.what);

    /* Everything sent and the write side shut before the first read: the
     * server holds the whole echo when it sees EOF. */
    echo_stream d = { .fd = -1, .seed = 12, .total = 256u * 1024u,
                      .mode = ES_HALF_CLOSE | ES_EXPECT_EOF | ES_DEFER_READ };
    o.what = "half-close 256 KiB, read after shutdown";
    echo_group_run(&d, 1, &o);
    echo_group_check_all_ok(&d, 1, o.what);

    echo_stream m[50];
    memset(m, 0, sizeof m);
    for (int i = 0; i < 50; i++) {
        m[i].fd = -1;
        m[i].seed = 100 + (uint64_t)i;
        m[i].total = (uint64_t)(i + 1) * 2731u;
        m[i].mode = ES_HALF_CLOSE | ES_EXPECT_EOF | (i % 2 ? ES_DEFER_READ : 0);
    }
    o.what = "50 half-closing clients";
    echo_group_run(m, 50, &o);
    echo_group_check_all_ok(m, 50, o.what);
    echo_note("half-close: full echo then EOF in every case");
}

/* Half-close while the server still owes data: the client writes without
 * reading until the server holds 256 KiB it cannot deliver (while still
 * reading), shuts down its write side and waits, so the server meets the
 * EOF while it owes data; only then the client reads. The whole echo must
 * come, then EOF. Done twice: reading fast, and reading slowly. */
static void half_close_owed(int slow)
{
    const char *what = slow ? "half-close owed, slow reader" : "half-close owed";
    int fd = echo_connect(srv.port, 5000);
    CHECK(fd >= 0);
    size_t owed = 0;
    size_t sent = echo_make_server_owe(fd, srv.port, 13, 256u * 1024u, 64u << 20, &owed);
    CHECK(shutdown(fd, SHUT_WR) == 0);
    echo_sleep_ms(200);

    uint8_t *out = malloc(sent), *want = malloc(sent), *in = malloc(65536);
    CHECK(out && want && in);
    echo_payload(13, 0, out, sent);
    echo_upper_buf(want, out, sent);
    size_t got = 0;
    uint64_t deadline = echo_now_ms() + 20000;
    while (got < sent) {
        if (echo_now_ms() > deadline)
            echo_fail("%s: only %zu of %zu bytes echoed after 20 s", what, got, sent);
        size_t n = sent - got < 65536 ? sent - got : 65536;
        if (slow && n > 16384)
            n = 16384;
        ssize_t r = echo_recv_some(fd, in, n, 5000);
        if (r == 0)
            echo_fail("%s: EOF after %zu of %zu bytes echoed: the server dropped what it still "
                      "owed (~%zu bytes) when the client half-closed",
                      what, got, sent, owed);
        if (r < 0)
            echo_fail("%s: recv after %zu of %zu bytes: %s", what, got, sent, strerror((int)-r));
        if (memcmp(in, want + got, (size_t)r) != 0)
            echo_fail("%s: wrong bytes at offset %zu", what, got);
        got += (size_t)r;
        if (slow)
            echo_sleep_ms(1);
    }
    int rc = echo_recv_eof(fd, 10000);
    if (rc != 0)
        echo_fail("%s: expected EOF after the full echo, got %s", what,
                  rc == -EPROTO ? "more data" : strerror(-rc));
    close(fd);
    free(out);
    free(want);
    free(in);
    echo_note("%s: %zu bytes (server owed %zu at the FIN) echoed in full, then EOF", what, sent,
              owed);
}

static void test_half_close_owed(void)
{
    half_close_owed(0);
    half_close_owed(1);
}

/* Sends up to `bytes` while reading a little of the echo, then resets. */
static void reset_during_echo(int i, size_t bytes, size_t read_before_reset)
{
    int fd = echo_connect(srv.port, 5000);
    if (fd < 0)
        echo_fail("reset: connect: %s", strerror(-fd));
    uint8_t *out = malloc(bytes), *in = malloc(read_before_reset + 1), *want = malloc(bytes);
    CHECK(out && in && want);
    echo_payload(500 + (uint64_t)i, 0, out, bytes);
    echo_upper_buf(want, out, bytes);
    size_t sent = 0, got = 0;
    uint64_t deadline = echo_now_ms() + 10000;
    while (sent < bytes && echo_now_ms() < deadline) {
        ssize_t w = send(fd, out + sent, bytes - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        ssize_t r = -1;
        if (w > 0)
            sent += (size_t)w;
        if (got < read_before_reset) {
            r = recv(fd, in + got, read_before_reset - got, MSG_DONTWAIT);
            if (r > 0) {
                if (memcmp(in + got, want + got, (size_t)r) != 0)
                    echo_fail("reset: client %d: wrong echo before the reset", i);
                got += (size_t)r;
            }
        }
        if (w > 0 || r > 0)
            continue;
        /* Neither side moved: wait; stop once the server has stopped
         * taking data from us (it owes us plenty by then). */
        struct pollfd pfd = { .fd = fd,
                              .events = (short)(POLLOUT | (got < read_before_reset ? POLLIN : 0)) };
        if (poll(&pfd, 1, 200) == 0 && got >= read_before_reset)
            break;
    }
    echo_close_reset(fd);
    free(out);
    free(in);
    free(want);
}

static void test_resets(void)
{
    for (int i = 0; i < 12; i++)
        reset_during_echo(i, (size_t)(1 + i % 4) << 20, (i % 3) * 100000u);
    echo_sleep_ms(100);
    echo_server_check_alive(&srv, "after clients reset during large echoes");
    echo_note("resets: 12 clients reset mid-echo, server alive");
}

static void test_vanishing(void)
{
    for (int i = 0; i < 200; i++) {
        int fd = echo_connect(srv.port, (i % 4 == 0) ? 0 : 5000);
        if (fd < 0)
            echo_fail("vanish: connect %d: %s", i, strerror(-fd));
        switch (i % 4) {
        case 0: /* gone before the handshake was necessarily seen */
            echo_close_reset(fd);
            break;
        case 1:
            close(fd);
            break;
        case 2:
            echo_close_reset(fd);
            break;
        case 3: /* a few bytes, then gone without reading the echo */
            (void)send(fd, "hello?", 6, MSG_NOSIGNAL);
            if (i % 8 == 3)
                echo_close_reset(fd);
            else
                close(fd);
            break;
        }
    }
    echo_sleep_ms(200);
    echo_server_check_alive(&srv, "after 200 clients connected and vanished");
    echo_note("vanish: 200 clients came and went, server alive");
}

int main(int argc, char **argv)
{
    echo_init(argc, argv, 150);
    echo_server_start(&srv, NULL);
    echo_note("server: %s", srv.line);

    /* Baseline after one ordinary client, so lazily opened descriptors
     * do not count as leaks. */
    int fd = echo_connect(srv.port, 5000);
    CHECK(fd >= 0);
    CHECK(echo_roundtrip(fd, 1, 4096, 5000) == 0);
    close(fd);
    echo_sleep_ms(200);
    int base_fds = echo_proc_fd_count(srv.proc.pid);
    echo_note("server baseline: %d fds", base_fds);

    RUN_TEST(test_half_close);
    RUN_TEST(test_half_close_owed);
    RUN_TEST(test_resets);
    RUN_TEST(test_vanishing);

    int fds = echo_wait_fd_count(srv.proc.pid, base_fds, 5000);
    if (fds > base_fds)
        echo_fail("server has %d fds open 5 s after every bad peer left (baseline %d): leak", fds,
                  base_fds);
    fd = echo_connect(srv.port, 5000);
    CHECK(fd >= 0);
    int rc = echo_roundtrip(fd, 2, 256 * 1024, 10000);
    if (rc != 0)
        echo_fail("a new client after the bad peers: %s", strerror(-rc));
    close(fd);
    echo_note("server fds back to %d, new client served exactly", fds);
    echo_server_stop_ok(&srv);
    echo_note("done");
    return 0;
}
