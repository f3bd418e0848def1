/* examples/echo-server.c, driven the way the original text's Python client (docs/io-models.md) drives a
 * server: send a line (no newline: input() strips it), recv(1024), print.
 *  - seed_client: 4 clients at once, 25 lines each of 1 to 1000 bytes
 *    (letters, digits, punctuation, UTF-8): each reply is exactly the line
 *    uppercased (a-z only), read in recv(1024) calls; then our EOF gets the
 *    server's EOF with nothing more.
 *  - backpressure: a client sends at least 4 MB without reading until its
 *    socket takes no more; the server must have stopped reading it (bytes
 *    left unread in the server's socket, and it never took 64 MB), serve
 *    another client meanwhile, and send back every byte, uppercased, once
 *    the first reads.
 *  - it runs until killed, as the original does: a client's end does not
 *    stop it (checked after each test, before the kill).
 *  - bad_port: "abc" and "70000" are refused with exit 1 and no listening.
 * Run as: example_echo_server PATH/evmux-example-echo-server */
#include "example_harness.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define NCLIENTS 4
#define ROUNDS 25
#define BIG_MIN (4u << 20)
#define BIG_MAX (64u << 20)

static const char *server_path;

/* A line as a user might type it, in UTF-8, without the newline. */
static size_t make_line(uint64_t *rng, char *buf, size_t max)
{
    static const char *pieces[] = {"a", "z", "q", "A", "Z", "0", "9", " ", "!", "{", "`", "@",
                                   "~", "é", "ß", "ü", "你好", "\t", "hello", "World"};
    size_t want = (size_t)echo_rand_range(rng, 1, max), len = 0;
    while (len < want) {
        const char *p = pieces[echo_rand(rng) % (sizeof pieces / sizeof *pieces)];
        size_t n = strlen(p);
        if (len + n > max)
            break;
        memcpy(buf + len, p, n);
        len += n;
    }
    return len; /* want >= 1 and every piece fits at first: never 0 */
}

/* The example runs until killed, like the original server. */
static void kill_server(echo_proc *srv, const char *what)
{
    if (echo_proc_wait(srv, 0))
        echo_fail("%s: the server exited by itself", what);
    echo_proc_kill(srv);
}

static void test_seed_client(void)
{
    echo_proc srv;
    int port = example_start_server(&srv, server_path);
    int fds[NCLIENTS];
    uint64_t rng = 0xEC40;
    for (int i = 0; i < NCLIENTS; i++) {
        fds[i] = echo_connect(port, 5000);
        if (fds[i] < 0)
            echo_fail("connect: %s", strerror(-fds[i]));
    }
    for (int round = 0; round < ROUNDS; round++) {
        char sent[NCLIENTS][1000];
        size_t len[NCLIENTS];
        /* Every client sends before any reads: the server has them all at once. */
        for (int i = 0; i < NCLIENTS; i++) {
            len[i] = make_line(&rng, sent[i], sizeof sent[i]);
            int rc = echo_send_all(fds[i], sent[i], len[i], 5000);
            if (rc != 0)
                echo_fail("client %d, line %d: send: %s", i, round, strerror(-rc));
        }
        for (int i = 0; i < NCLIENTS; i++) {
            char got[1000 + 1024], want[1000];
            size_t have = 0;
            while (have < len[i]) { /* recv(1024) until the whole line is back */
                ssize_t r = echo_recv_some(fds[i], got + have, 1024, 10000);
                if (r <= 0)
                    echo_fail("client %d, line %d: recv after %zu of %zu bytes: %s", i, round, have,
                              len[i], r == 0 ? "EOF" : strerror((int)-r));
                have += (size_t)r;
            }
            echo_upper_buf((uint8_t *)want, (const uint8_t *)sent[i], len[i]);
            if (have != len[i] || memcmp(got, want, len[i]) != 0)
                echo_fail("client %d, line %d: sent \"%.*s\", got \"%.*s\"", i, round, (int)len[i],
                          sent[i], (int)have, got);
        }
    }
    for (int i = 0; i < NCLIENTS; i++) {
        CHECK(shutdown(fds[i], SHUT_WR) == 0);
        int rc = echo_recv_eof(fds[i], 10000);
        if (rc != 0)
            echo_fail("client %d: after our EOF expected the server's, got %s", i,
                      rc == -EPROTO ? "more data" : strerror(-rc));
        close(fds[i]);
    }
    kill_server(&srv, "echo-server after the original client's exchange");
}

static void test_backpressure(void)
{
    echo_proc srv;
    int port = example_start_server(&srv, server_path);
    int fd = echo_connect(port, 5000), other = echo_connect(port, 5000);
    CHECK(fd >= 0 && other >= 0);
    size_t sent = echo_send_until_stalled(fd, 77, BIG_MIN, BIG_MAX, 300);
    echo_note("a client that does not read could send %zu bytes", sent);
    if (sent >= BIG_MAX)
        echo_fail("the server read all %u bytes of a client that reads nothing: no backpressure",
                  BIG_MAX);
    long unread = echo_server_rx_queue(port, echo_local_port(fd));
    if (unread < 0)
        echo_note("cannot see the server's socket in /proc/net/tcp: unread bytes not checked");
    else if (unread == 0)
        echo_fail("the server's socket holds no unread bytes: it did not stop reading the client");

    /* The original client's exchange, on another connection, while the first is stuck. */
    char reply[1024];
    CHECK(echo_send_all(other, "still there?", 12, 5000) == 0);
    CHECK(echo_recv_exact(other, reply, 12, 10000) == 0);
    CHECK(memcmp(reply, "STILL THERE?", 12) == 0);

    /* Now read: every byte must come back, in order, uppercased. */
    uint8_t *want = malloc(65536), *got = malloc(65536);
    CHECK(want && got);
    for (size_t off = 0; off < sent;) {
        size_t n = sent - off < 65536 ? sent - off : 65536;
        int rc = echo_recv_exact(fd, got, n, 20000);
        if (rc != 0)
            echo_fail("reading the echo back at byte %zu of %zu: %s", off, sent,
                      rc == -ENODATA ? "EOF" : strerror(-rc));
        echo_payload(77, off, want, n);
        echo_upper_buf(want, want, n);
        for (size_t i = 0; i < n; i++)
            if (got[i] != want[i])
                echo_fail("byte %zu of the echo: 0x%02x, expected 0x%02x", off + i, got[i], want[i]);
        off += n;
    }
    CHECK(shutdown(fd, SHUT_WR) == 0);
    CHECK(echo_recv_eof(fd, 10000) == 0);
    free(want);
    free(got);
    close(fd);
    close(other);
    kill_server(&srv, "echo-server after the backpressure test");
}

static void test_bad_port(void)
{
    const char *bad[] = {"abc", "70000", "80x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *argv[] = {(char *)server_path, (char *)bad[i], NULL};
        echo_output o;
        echo_run(argv, NULL, 0, 10000, &o);
        if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) != 1 || o.out_len != 0 || o.err_len == 0)
            echo_fail("port \"%s\": expected exit 1, a message and no listening line; got status "
                      "0x%x, stdout \"%s\"", bad[i], o.status, o.out);
        echo_output_free(&o);
    }
}

int main(int argc, char **argv)
{
    example_init(argc, argv, 1, 240);
    server_path = argv[1];
    RUN_TEST(test_seed_client);
    RUN_TEST(test_backpressure);
    RUN_TEST(test_bad_port);
    return 0;
}
