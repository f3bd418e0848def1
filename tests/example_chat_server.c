/* examples/chat-server.c:
 *  - three_clients: A, B and C each get "* you are client N" (distinct N),
 *    then send 40 lines each, cut into random pieces and interleaved; each
 *    client receives exactly the other two's 80 lines as "N: line", each
 *    sender's in order, never its own; after SIGTERM each gets EOF with
 *    nothing more, and the server exits 0.
 *  - slow_reader: D reads its welcome, then nothing, while A floods in
 *    64 KB batches that B and C read in full before the next: the server
 *    logs "client D left: too slow: over 256 KiB unread" (and no other
 *    client leaves) before 64 MB; B and C got every flood line, in order;
 *    A, B and C still talk to each other afterwards; what D can still read
 *    is an exact prefix of the flood (cut, never a gap), then the end.
 *  - long_line: 5000 bytes without a newline (the limit is 4096) get the
 *    sender disconnected, logged "client N left: line too long", while a
 *    line of 4095 bytes and its newline reaches the other client whole.
 * Run as: example_chat_server PATH/evmux-example-chat-server */
#include "example_harness.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LINES 40
#define BATCH_LINES 640
#define FLOOD_MAX (64u << 20)

static const char *path;

struct peer {
    char name; /* 'A', 'B', ... for messages */
    int fd;
    unsigned id;
    char buf[65536]; /* received, not yet taken as lines: buf[off, len) */
    size_t off, len;
};

/* The next line from p, without its '\n'. */
static void next_line(struct peer *p, char *out, size_t size)
{
    for (;;) {
        char *nl = memchr(p->buf + p->off, '\n', p->len - p->off);
        if (nl != NULL) {
            size_t n = (size_t)(nl - (p->buf + p->off));
            if (n >= size)
                echo_fail("client %c: a line of %zu bytes, longer than expected", p->name, n);
            memcpy(out, p->buf + p->off, n);
            out[n] = '\0';
            p->off += n + 1;
            return;
        }
        memmove(p->buf, p->buf + p->off, p->len - p->off);
        p->len -= p->off;
        p->off = 0;
        if (p->len == sizeof p->buf)
            echo_fail("client %c: no newline in %zu bytes", p->name, p->len);
        ssize_t r = echo_recv_some(p->fd, p->buf + p->len, sizeof p->buf - p->len, 20000);
        if (r <= 0)
            echo_fail("client %c: %s while waiting for a line", p->name,
                      r == 0 ? "EOF" : strerror((int)-r));
        p->len += (size_t)r;
    }
}

static void join(struct peer *p, char name, int port)
{
    char line[128], want[64];
    memset(p, 0, sizeof *p);
    p->name = name;
    p->fd = echo_connect(port, 5000);
    if (p->fd < 0)
        echo_fail("client %c: connect: %s", name, strerror(-p->fd));
    next_line(p, line, sizeof line);
    if (sscanf(line, "* you are client %u", &p->id) != 1)
        echo_fail("client %c: welcome \"%s\"", name, line);
    snprintf(want, sizeof want, "* you are client %u", p->id);
    CHECK(strcmp(line, want) == 0);
}

static void expect_line(struct peer *p, const char *want)
{
    char line[8192];
    next_line(p, line, sizeof line);
    if (strcmp(line, want) != 0)
        echo_fail("client %c: got \"%s\", expected \"%s\"", p->name, line, want);
}

/* What we own to the end: nothing after what was expected, then EOF. */
static void expect_eof(struct peer *p)
{
    if (p->off != p->len)
        echo_fail("client %c: unexpected \"%.*s\"", p->name, (int)(p->len - p->off), p->buf + p->off);
    int rc = echo_recv_eof(p->fd, 10000);
    if (rc != 0)
        echo_fail("client %c: expected EOF, got %s", p->name,
                  rc == -EPROTO ? "more data" : strerror(-rc));
    close(p->fd);
}

static void say(struct peer *from, const char *text, struct peer **to, int nto)
{
    char line[4096], want[4200];
    snprintf(line, sizeof line, "%s\n", text);
    CHECK(echo_send_all(from->fd, line, strlen(line), 10000) == 0);
    snprintf(want, sizeof want, "%u: %s", from->id, text);
    for (int i = 0; i < nto; i++)
        expect_line(to[i], want);
}

static void test_three_clients(void)
{
    echo_proc srv;
    int port = example_start_server(&srv, path);
    struct peer *p = calloc(3, sizeof *p);
    CHECK(p != NULL);
    for (int i = 0; i < 3; i++)
        join(&p[i], (char)('A' + i), port);
    CHECK(p[0].id != p[1].id && p[1].id != p[2].id && p[0].id != p[2].id);

    /* Each client's lines as one byte stream, sent in random pieces. */
    uint64_t rng = 0xC4A7;
    char *text[3][LINES], out[3][LINES * 400];
    size_t out_len[3] = {0}, out_off[3] = {0};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < LINES; j++) {
            char body[320];
            size_t n = (size_t)echo_rand_range(&rng, 0, 300);
            for (size_t k = 0; k < n; k++)
                body[k] = (char)echo_rand_range(&rng, 0x20, 0x7e);
            body[n] = '\0';
            CHECK(asprintf(&text[i][j], "line %d from %c: %s", j, p[i].name, body) > 0);
            out_len[i] += (size_t)sprintf(out[i] + out_len[i], "%s\n", text[i][j]);
        }
    while (out_off[0] < out_len[0] || out_off[1] < out_len[1] || out_off[2] < out_len[2]) {
        int i = (int)(echo_rand(&rng) % 3);
        size_t n = (size_t)echo_rand_range(&rng, 1, 300);
        if (n > out_len[i] - out_off[i])
            n = out_len[i] - out_off[i];
        CHECK(echo_send_all(p[i].fd, out[i] + out_off[i], n, 10000) == 0);
        out_off[i] += n;
    }

    /* Each receives 2 * LINES lines: every other client's, in its order. */
    for (int r = 0; r < 3; r++) {
        int next[3] = {0};
        for (int k = 0; k < 2 * LINES; k++) {
            char line[512];
            unsigned id;
            int at = 0;
            next_line(&p[r], line, sizeof line);
            if (sscanf(line, "%u: %n", &id, &at) != 1 || at == 0)
                echo_fail("client %c: malformed line \"%s\"", p[r].name, line);
            int s = 0;
            while (s < 3 && p[s].id != id)
                s++;
            if (s == 3 || s == r)
                echo_fail("client %c (id %u): a line from id %u: \"%s\"", p[r].name, p[r].id, id,
                          line);
            if (next[s] == LINES || strcmp(line + at, text[s][next[s]]) != 0)
                echo_fail("client %c: from %c got \"%s\", expected \"%s\"", p[r].name, p[s].name,
                          line + at, next[s] == LINES ? "(nothing more)" : text[s][next[s]]);
            next[s]++;
        }
    }
    example_stop(&srv, SIGTERM, "chat-server after three clients");
    for (int i = 0; i < 3; i++)
        expect_eof(&p[i]);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < LINES; j++)
            free(text[i][j]);
    free(p);
}

static void flood_line(char *buf, size_t size, unsigned id, unsigned k)
{
    snprintf(buf, size, "%u: flood %06u xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                        "xxxxxxxxxxxxxxxxxxxxxxxx\n", id, k);
}

/* A line of the server's log, if one is ready now: 1, else 0. */
static int log_line(echo_proc *srv, char *line, size_t size)
{
    struct pollfd pfd = {.fd = srv->out_fd, .events = POLLIN};
    if (poll(&pfd, 1, 0) != 1)
        return 0;
    /* The log is line-buffered: a ready pipe holds whole lines. */
    return example_read_line(srv, line, size, 10000) >= 0;
}

static void test_slow_reader(void)
{
    echo_proc srv;
    char line[256], want[256], quit[128];
    int port = example_start_server(&srv, path);
    struct peer *p = calloc(4, sizeof *p), *a = &p[0], *b = &p[1], *c = &p[2], *d = &p[3];
    CHECK(p != NULL);
    for (int i = 0; i < 4; i++)
        join(&p[i], (char)('A' + i), port);
    snprintf(quit, sizeof quit, "client %u left: too slow: over 256 KiB unread", d->id);

    /* A floods; B and C take each batch before the next, so only D lags. */
    char *batch = malloc(BATCH_LINES * 128);
    CHECK(batch != NULL);
    unsigned sent_lines = 0;
    int d_gone = 0;
    while (!d_gone) {
        size_t len = 0;
        for (unsigned k = 0; k < BATCH_LINES; k++) {
            flood_line(want, sizeof want, a->id, sent_lines + k);
            char *text = strchr(want, ' ') + 1; /* without "ID: " */
            len += (size_t)sprintf(batch + len, "%s", text);
        }
        CHECK(echo_send_all(a->fd, batch, len, 20000) == 0);
        for (unsigned k = 0; k < BATCH_LINES; k++) {
            flood_line(want, sizeof want, a->id, sent_lines + k);
            want[strlen(want) - 1] = '\0';
            expect_line(b, want);
            expect_line(c, want);
        }
        sent_lines += BATCH_LINES;
        while (log_line(&srv, line, sizeof line)) {
            if (strcmp(line, quit) == 0)
                d_gone = 1;
            else if (strstr(line, " left: ") != NULL)
                echo_fail("server log: \"%s\" (only client %u should leave)", line, d->id);
        }
        if (!d_gone && (size_t)sent_lines * 100 > FLOOD_MAX)
            echo_fail("flooded %u lines: client D, which never reads, is still connected",
                      sent_lines);
    }
    echo_note("client D was disconnected after %u lines of 100 bytes", sent_lines);

    /* The others go on talking. */
    struct peer *to_ac[] = {a, c}, *to_ab[] = {a, b}, *to_bc[] = {b, c};
    say(b, "B is still here", to_ac, 2);
    say(c, "so is C", to_ab, 2);
    say(a, "and A", to_bc, 2);

    /* D can read what the kernel held for it: a prefix of the flood, then the end. */
    size_t got = 0, ok = 0, wlen = 0;
    unsigned k = 0;
    for (;;) {
        char buf[65536];
        ssize_t r = echo_recv_some(d->fd, buf, sizeof buf, 20000);
        if (r == 0 || r == -ECONNRESET)
            break;
        if (r < 0)
            echo_fail("client D: reading after the disconnect: %s", strerror((int)-r));
        for (ssize_t i = 0; i < r; i++, got++) {
            if (got == ok) { /* the next expected line starts here */
                flood_line(want, sizeof want, a->id, k++);
                wlen = strlen(want);
                ok += wlen;
            }
            if (buf[i] != want[wlen - (ok - got)])
                echo_fail("client D: byte %zu of the flood differs: a gap or damage", got);
        }
    }
    echo_note("client D could still read %zu bytes (%u lines begun) of %u", got, k, sent_lines);
    if (k >= sent_lines)
        echo_fail("client D got the whole flood: it was not cut off");

    example_stop(&srv, SIGTERM, "chat-server after the flood");
    expect_eof(a);
    expect_eof(b);
    expect_eof(c);
    close(d->fd);
    free(batch);
    free(p);
}

static void test_long_line(void)
{
    echo_proc srv;
    char line[256], want[64], *big = malloc(5001), *text = malloc(4200);
    int port = example_start_server(&srv, path);
    struct peer *p = calloc(2, sizeof *p);
    CHECK(p && big && text);
    join(&p[0], 'A', port);
    join(&p[1], 'B', port);
    for (int i = 0; i < 2; i++) /* the two join lines */
        CHECK(example_read_line(&srv, line, sizeof line, 10000) > 0);
    memset(text, 'y', 4094); /* 4094 + '\n' = 4095 bytes: fits */
    text[4094] = '\0';
    struct peer *to_b[] = {&p[1]};
    say(&p[0], text, to_b, 1);
    memset(big, 'z', 5000);
    CHECK(echo_send_all(p[0].fd, big, 5000, 10000) == 0);
    snprintf(want, sizeof want, "client %u left: line too long", p[0].id);
    CHECK(example_read_line(&srv, line, sizeof line, 10000) > 0);
    if (strcmp(line, want) != 0)
        echo_fail("server log \"%s\", expected \"%s\"", line, want);
    int rc = echo_recv_eof(p[0].fd, 10000);
    if (rc != 0 && rc != -ECONNRESET) /* reset: it closed with our bytes unread */
        echo_fail("client A after its long line: expected the end, got %s",
                  rc == -EPROTO ? "data" : strerror(-rc));
    close(p[0].fd);
    example_stop(&srv, SIGTERM, "chat-server after the long line");
    expect_eof(&p[1]);
    free(big);
    free(text);
    free(p);
}

int main(int argc, char **argv)
{
    example_init(argc, argv, 1, 240);
    path = argv[1];
    RUN_TEST(test_three_clients);
    RUN_TEST(test_slow_reader);
    RUN_TEST(test_long_line);
    return 0;
}
