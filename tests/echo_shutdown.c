/* Orderly shutdown and SIGPIPE.
 *  - SIGTERM / SIGINT on an idle server: exit 0, port closed.
 *  - SIGTERM / SIGINT with clients connected: each client sends message A
 *    and gets its full echo, then sends message B: small for half of them;
 *    the others send without reading until the server holds 256 KiB for
 *    them that it cannot pass on yet. Once the server has read every B
 *    (our send queues and its receive queues are empty), the signal: every
 *    B must come back complete, followed by a clean EOF; a new connection
 *    is not served; exit 0; then the port refuses connections.
 *  - Clients that send over 1 MiB and go away without reading while the
 *    server owes them data (RST, or FIN then RST, so the server's writes
 *    fail with ECONNRESET or EPIPE): the server survives and serves. */
#include "echo_harness.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NCLIENTS 6

static void check_refused(int port, const char *what)
{
    int fd = echo_connect(port, 2000);
    if (fd >= 0) {
        close(fd);
        echo_fail("%s: port %d still accepts connections after the server exited", what, port);
    }
    if (fd != -ECONNREFUSED)
        echo_fail("%s: connect after exit: %s, expected ECONNREFUSED", what, strerror(-fd));
}

static void test_idle_signal(int sig)
{
    echo_server s;
    char what[64];
    snprintf(what, sizeof what, "idle %s", sigabbrev_np(sig));
    echo_server_start(&s, NULL);
    uint64_t t0 = echo_now_ms();
    CHECK(kill(s.proc.pid, sig) == 0);
    echo_server_expect_exit0(&s, what, 5000);
    check_refused(s.port, what);
    echo_note("%s: exit 0 after %llu ms", what, (unsigned long long)(echo_now_ms() - t0));
}

/* Waits until the server has read everything each client sent. */
static void wait_server_read_all(int port, const int *fds, int n)
{
    uint64_t deadline = echo_now_ms() + 5000;
    for (;;) {
        long worst = 0;
        int unknown = 0;
        for (int i = 0; i < n; i++) {
            /* Our unsent/unacknowledged bytes, then the server's unread. */
            long q = echo_outq(fds[i]);
            if (q > worst)
                worst = q;
            q = echo_server_rx_queue(port, echo_local_port(fds[i]));
            if (q < 0)
                unknown++;
            else if (q > worst)
                worst = q;
        }
        if (unknown == n) {
            /* No /proc/net/tcp view of the sockets: fall back to a pause. */
            echo_note("cannot see the server's sockets in /proc/net/tcp; sleeping 200 ms");
            echo_sleep_ms(200);
            return;
        }
        if (worst == 0)
            return;
        if (echo_now_ms() >= deadline)
            echo_fail("%ld bytes sent by a client were still not read by the server after 5 s", worst);
        echo_sleep_ms(2);
    }
}

static void test_signal_with_clients(int sig)
{
    echo_server s;
    int fds[NCLIENTS];
    size_t bsize[NCLIENTS];
    uint64_t rng = 0x5167 + (uint64_t)sig;
    char what[64];
    int rc;

    snprintf(what, sizeof what, "%s with clients", sigabbrev_np(sig));
    echo_server_start(&s, NULL);
    for (int i = 0; i < NCLIENTS; i++) {
        fds[i] = echo_connect(s.port, 5000);
        if (fds[i] < 0)
            echo_fail("%s: connect: %s", what, strerror(-fds[i]));
    }
    /* Message A: a full round trip each. */
    for (int i = 0; i < NCLIENTS; i++) {
        size_t n = (size_t)echo_rand_range(&rng, 1000, 65536);
        rc = echo_roundtrip(fds[i], 100 + (uint64_t)i, n, 10000);
        if (rc != 0)
            echo_fail("%s: client %d message A (%zu bytes): %s", what, i, n, strerror(-rc));
    }
    /* Message B: small for even clients; odd clients send, without
     * reading, until the server holds 256 KiB for them that it could not
     * pass on yet (all they sent has been read by the server). */
    for (int i = 0; i < NCLIENTS; i++) {
        if (i % 2) {
            size_t owed;
            bsize[i] = echo_make_server_owe(fds[i], s.port, 200 + (uint64_t)i, 256u * 1024u,
                                            64u << 20, &owed);
            continue;
        }
        bsize[i] = (size_t)echo_rand_range(&rng, 100, 4000);
        uint8_t *b = malloc(bsize[i]);
        CHECK(b != NULL);
        echo_payload(200 + (uint64_t)i, 0, b, bsize[i]);
        rc = echo_send_all(fds[i], b, bsize[i], 10000);
        if (rc != 0)
            echo_fail("%s: client %d sending message B (%zu bytes): %s", what, i, bsize[i],
                      strerror(-rc));
        free(b);
    }
    wait_server_read_all(s.port, fds, NCLIENTS);
    echo_server_check_alive(&s, "before the signal");
    CHECK(kill(s.proc.pid, sig) == 0);
    uint64_t t_sig = echo_now_ms();

    /* Small messages first; the big ones keep the server busy meanwhile. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = pass; i < NCLIENTS; i += 2) {
            uint8_t *want = malloc(bsize[i]), *got = malloc(bsize[i]);
            CHECK(want && got);
            echo_payload(200 + (uint64_t)i, 0, want, bsize[i]);
            echo_upper_buf(want, want, bsize[i]);
            rc = echo_recv_exact(fds[i], got, bsize[i], 10000);
            if (rc != 0)
                echo_fail("%s: client %d: the echo of message B (%zu bytes, sent and read by the "
                          "server before the signal) did not arrive complete: %s",
                          what, i, bsize[i], rc == -ENODATA ? "EOF first" : strerror(-rc));
            if (memcmp(got, want, bsize[i]) != 0)
                echo_fail("%s: client %d: wrong bytes in the echo of message B", what, i);
            rc = echo_recv_eof(fds[i], 10000);
            if (rc != 0)
                echo_fail("%s: client %d: after the echo of B expected a clean EOF, got %s", what,
                          i, rc == -EPROTO ? "more data" : strerror(-rc));
            free(want);
            free(got);
        }
        if (pass == 0) {
            /* The big echoes are still owed (not read by us): the server
             * may still run, but must not serve a new connection. */
            int fd = echo_connect(s.port, 1000);
            if (fd >= 0) {
                char buf[16];
                (void)echo_send_all(fd, "probe", 5, 1000);
                ssize_t r = echo_recv_some(fd, buf, sizeof buf, 300);
                if (r > 0)
                    echo_fail("%s: a connection made after the signal was served", what);
                close(fd);
            }
        }
    }
    for (int i = 0; i < NCLIENTS; i++)
        close(fds[i]);
    echo_server_expect_exit0(&s, what, 10000);
    check_refused(s.port, what);
    echo_note("%s: all %d second messages echoed complete, then EOF; exit 0 %llu ms after the "
              "signal",
              what, NCLIENTS, (unsigned long long)(echo_now_ms() - t_sig));
}

/* Clients that send at least 1 MiB and go away without reading while the
 * server still owes them data (its writes then fail with ECONNRESET or
 * EPIPE): SIGPIPE must not kill it. */
static void test_sigpipe(void)
{
    echo_server s;
    echo_server_start(&s, NULL);
    for (int i = 0; i < 12; i++) {
        int fd = echo_connect(s.port, 5000);
        if (fd < 0)
            echo_fail("sigpipe: connect %d: %s", i, strerror(-fd));
        if (i % 4 == 3) {
            /* The server owes data and has our data, then gets our FIN:
             * its socket is in CLOSE_WAIT. The RST that follows (close
             * with unread data) makes its next write fail with EPIPE,
             * which raises SIGPIPE unless it is handled. */
            size_t owed;
            echo_make_server_owe(fd, s.port, 77 + (uint64_t)i, 256u * 1024u, 64u << 20, &owed);
            shutdown(fd, SHUT_WR);
            echo_sleep_ms(50);
            close(fd);
            echo_sleep_ms(50);
            echo_server_check_alive(&s, "after a client half-closed and reset while owed data "
                                        "(SIGPIPE?)");
            continue;
        }
        /* Past what the kernel buffers absorb, so the server owes data. */
        size_t sent = echo_send_until_stalled(fd, 77 + (uint64_t)i, 1u << 20, 64u << 20, 100);
        if (sent < (1u << 20))
            echo_fail("sigpipe: client %d could send only %zu bytes", i, sent);
        switch (i % 4) {
        case 0: /* plain close with unread data: the kernel sends RST */
            close(fd);
            break;
        case 1:
            echo_close_reset(fd);
            break;
        case 2: /* read a little first, so the server is mid-write */
        {
            char tmp[4096];
            echo_recv_some(fd, tmp, sizeof tmp, 1000);
            shutdown(fd, SHUT_RDWR);
            close(fd);
            break;
        }
        }
        echo_sleep_ms(50);
        echo_server_check_alive(&s, "after a client closed without reading (SIGPIPE?)");
    }
    echo_sleep_ms(300);
    echo_server_check_alive(&s, "after clients closed without reading (SIGPIPE?)");
    int fd = echo_connect(s.port, 5000);
    CHECK(fd >= 0);
    int rc = echo_roundtrip(fd, 78, 65536, 10000);
    if (rc != 0)
        echo_fail("sigpipe: a new client after the vanished ones: %s", strerror(-rc));
    close(fd);
    echo_server_stop_ok(&s);
    echo_note("sigpipe: server survived 12 clients that closed without reading");
}

static void test_sigterm_idle(void) { test_idle_signal(SIGTERM); }
static void test_sigint_idle(void) { test_idle_signal(SIGINT); }
static void test_sigterm_clients(void) { test_signal_with_clients(SIGTERM); }
static void test_sigint_clients(void) { test_signal_with_clients(SIGINT); }

int main(int argc, char **argv)
{
    echo_init(argc, argv, 150);
    RUN_TEST(test_sigterm_idle);
    RUN_TEST(test_sigint_idle);
    RUN_TEST(test_sigterm_clients);
    RUN_TEST(test_sigint_clients);
    RUN_TEST(test_sigpipe);
    echo_note("done");
    return 0;
}
