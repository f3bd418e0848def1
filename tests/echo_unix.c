/* The echo programs over a Unix-domain socket (--unix PATH), in a mkdtemp
 * directory:
 *  - 500 lines piped through evmux-echo-client --unix: exact output, exit 0;
 *  - a raw AF_UNIX client sends 4 MiB (every byte value) while reading the
 *    echo concurrently: byte-exact, then a clean EOF after its own FIN;
 *  - a second server on the live path fails and leaves the first alone;
 *  - SIGTERM: exit 0 and the socket file is gone; the client then cannot
 *    connect (exit 1, a message naming the path);
 *  - a path longer than sun_path: both programs exit 2 with a clear error
 *    and create nothing; a path of exactly the longest length works;
 *  - a stale socket file (bound, closed, never unlinked) is replaced; so is
 *    the one a SIGKILLed server leaves, and the client connected to that
 *    server says "server closed the connection" and exits 1;
 *  - a regular file at the path is neither replaced nor removed.
 * echo_server_start() speaks TCP only (it adds --port 0 and expects
 * HOST:PORT in the listening line), so unix_server_start() below is its
 * Unix-socket twin. */
#include "echo_harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define SUN_PATH_MAX (sizeof ((struct sockaddr_un *)0)->sun_path - 1)

static char dir[64];
static char sock_path[128];

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[sizeof dir + 256];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static size_t dir_entries(void)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static int is_socket_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Starts the server on `path`, waits for exactly
 * "listening on PATH (backend NAME)" and checks the backend. */
static void unix_server_start(echo_server *s, const char *path)
{
    char *argv[] = { (char *)echo_server_path, "--unix", (char *)path, NULL };
    char want[256];

    memset(s, 0, sizeof *s);
    echo_spawn(&s->proc, argv, ECHO_PIPE_OUT, 0);
    size_t len = echo_proc_read_line(&s->proc, s->line, sizeof s->line, path);

    int prefix = snprintf(want, sizeof want, "listening on %s (backend ", path);
    const char *name = s->line + prefix;
    size_t name_len = len > (size_t)prefix ? len - (size_t)prefix - 1 : 0;
    if (strncmp(s->line, want, (size_t)prefix) != 0 || len < (size_t)prefix + 2 ||
        s->line[len - 1] != ')' || memchr(name, ')', name_len) != NULL)
        echo_fail("malformed listening line: \"%s\" (expected \"%sNAME)\")", s->line, want);
    snprintf(s->backend, sizeof s->backend, "%.*s", (int)name_len, name);
    const char *env = getenv("EVMUX_BACKEND");
    if (env && *env && strcmp(env, "auto") != 0 && strcmp(env, s->backend) != 0)
        echo_fail("server uses backend \"%s\", expected \"%s\"", s->backend, env);
    if (!is_socket_file(path))
        echo_fail("server says it listens on %s, but that is not a socket file", path);
}

/* A non-blocking AF_UNIX socket connected to path, or -errno. */
static int unix_connect(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    CHECK(strlen(path) <= SUN_PATH_MAX);
    memcpy(a.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0);
    return fd;
}

static void check_roundtrip(const char *path, const char *what)
{
    int fd = unix_connect(path);
    if (fd < 0)
        echo_fail("%s: connect to %s: %s", what, path, strerror(-fd));
    int rc = echo_roundtrip(fd, 7, 100000, 10000);
    if (rc != 0)
        echo_fail("%s: echo of 100000 bytes: %s", what, strerror(-rc));
    close(fd);
}

static char *const *client_argv(const char *path)
{
    static char *argv[4];
    argv[0] = (char *)echo_client_path;
    argv[1] = "--unix";
    argv[2] = (char *)path;
    argv[3] = NULL;
    return argv;
}

static void check_exit(const char *what, const echo_output *o, int code)
{
    char st[96];
    if (o->timed_out)
        echo_fail("%s: still running at the deadline (stderr \"%.300s\")", what, o->err);
    if (!WIFEXITED(o->status) || WEXITSTATUS(o->status) != code)
        echo_fail("%s: %s, expected exit %d (stderr \"%.300s\")", what,
                  echo_status_str(o->status, st, sizeof st), code, o->err);
}

/* ---- the tests ---- */

static void add(char **p, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        CHECK((*p = realloc(*p, *cap)) != NULL);
    }
    memcpy(*p + *len, s, n);
    *len += n;
    (*p)[*len] = '\0';
}

static void pipe_lines(const char *path, int count, const char *what)
{
    static const char *const lead[] = { "", " ", "\t", "  \t " };
    static const char *const trail[] = { "", "  ", "\t", " \r" };
    char *in = NULL, *want = NULL;
    size_t in_len = 0, in_cap = 0, want_len = 0, want_cap = 0;
    for (int i = 0; i < count; i++) {
        char line[512];
        int n = snprintf(line, sizeof line, "line %d of %d: select,\tpoll and epoll 多路复用 %.*s!", i,
                         count, i * 37 % 300,
                         "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789"
                         "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789"
                         "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789"
                         "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789"
                         "abcdefghijklmnopqrstuvwxyz0123");
        add(&in, &in_len, &in_cap, lead[i % 4], strlen(lead[i % 4]));
        add(&in, &in_len, &in_cap, line, (size_t)n);
        add(&in, &in_len, &in_cap, trail[i / 4 % 4], strlen(trail[i / 4 % 4]));
        add(&in, &in_len, &in_cap, "\n", 1);
        if (i % 25 == 24)
            add(&in, &in_len, &in_cap, " \t \n\n", 5); /* blank lines: skipped */
        echo_upper_buf((uint8_t *)line, (uint8_t *)line, (size_t)n);
        add(&want, &want_len, &want_cap, line, (size_t)n);
        add(&want, &want_len, &want_cap, "\n", 1);
    }

    echo_output o;
    uint64_t t0 = echo_now_ms();
    echo_run(client_argv(path), in, in_len, 30000, &o);
    check_exit(what, &o, 0);
    if (o.out_len != want_len || memcmp(o.out, want, want_len) != 0) {
        size_t i = 0;
        while (i < o.out_len && i < want_len && o.out[i] == want[i])
            i++;
        echo_fail("%s: stdout differs from the uppercased lines at byte %zu (got %zu bytes, "
                  "expected %zu): \"%.60s\" vs \"%.60s\"",
                  what, i, o.out_len, want_len, o.out + i, want + i);
    }
    echo_note("%s: %d lines, %zu bytes in, %zu out, exact, exit 0, %llu ms", what, count, in_len,
              o.out_len, (unsigned long long)(echo_now_ms() - t0));
    echo_output_free(&o);
    free(in);
    free(want);
}

/* Sends `total` bytes of stream `seed`, then a FIN, reading all the while;
 * the echo must match byte for byte and end with the server's FIN. */
static void raw_echo(const char *path, size_t total, uint64_t seed)
{
    static uint8_t out[65536], in[65536], want[65536];
    unsigned char seen[256] = { 0 };
    size_t sent = 0, got = 0, max_ahead = 0, seen_count = 0;
    uint64_t t0 = echo_now_ms(), deadline = t0 + (ECHO_SANITIZED ? 120000 : 60000);
    int fd = unix_connect(path);
    if (fd < 0)
        echo_fail("raw: connect to %s: %s", path, strerror(-fd));

    for (;;) {
        if (sent < total) {
            size_t n = total - sent < sizeof out ? total - sent : sizeof out;
            echo_payload(seed, sent, out, n);
            ssize_t w = send(fd, out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                echo_fail("raw: send after %zu bytes: %s", sent, strerror(errno));
            for (ssize_t i = 0; i < w; i++)
                if (!seen[out[i]]) {
                    seen[out[i]] = 1;
                    seen_count++;
                }
            sent += w > 0 ? (size_t)w : 0;
            if (sent == total)
                CHECK(shutdown(fd, SHUT_WR) == 0);
        }
        ssize_t r = recv(fd, in, sizeof in, MSG_DONTWAIT);
        if (r == 0)
            break;
        if (r > 0) {
            if (got + (size_t)r > sent)
                echo_fail("raw: %zu bytes came back but only %zu were sent", got + (size_t)r, sent);
            echo_payload(seed, got, want, (size_t)r);
            echo_upper_buf(want, want, (size_t)r);
            if (memcmp(in, want, (size_t)r) != 0) {
                size_t i = 0;
                while (in[i] == want[i])
                    i++;
                echo_fail("raw: byte %zu of the echo is 0x%02x, expected 0x%02x", got + i, in[i],
                          want[i]);
            }
            got += (size_t)r;
        } else if (errno != EAGAIN && errno != EINTR) {
            echo_fail("raw: recv after %zu of %zu bytes: %s", got, total, strerror(errno));
        }
        if (sent - got > max_ahead)
            max_ahead = sent - got;
        if (echo_now_ms() >= deadline)
            echo_fail("raw: timed out with %zu of %zu bytes sent, %zu back", sent, total, got);
        if (r < 0) {
            struct pollfd pfd = { .fd = fd, .events = (short)(POLLIN | (sent < total ? POLLOUT : 0)) };
            poll(&pfd, 1, 100);
        }
    }
    close(fd);
    if (got != total)
        echo_fail("raw: the server ended the stream after %zu of %zu bytes", got, total);
    CHECK(seen_count == 256);
    echo_note("raw AF_UNIX: %zu bytes (all 256 values) echoed exactly, then EOF; up to %zu bytes "
              "in flight; %llu ms",
              total, max_ahead, (unsigned long long)(echo_now_ms() - t0));
}

static void test_serve(void)
{
    echo_server srv;
    unix_server_start(&srv, sock_path);
    echo_note("server: %s", srv.line);
    pipe_lines(sock_path, 500, "client --unix, 500 lines");
    raw_echo(sock_path, 4u << 20, 0x5EC7);

    /* A live socket is not "stale": a second server must not take it. */
    echo_output o;
    char *argv[] = { (char *)echo_server_path, "--unix", sock_path, NULL };
    echo_run(argv, NULL, 0, 10000, &o);
    if (o.timed_out || (WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0) ||
        strstr(o.out, "listening"))
        echo_fail("second server on the live path %s did not fail (stdout \"%.100s\")", sock_path,
                  o.out);
    echo_note("second server on the live path: stderr \"%.*s\"", (int)strcspn(o.err, "\n"), o.err);
    echo_output_free(&o);
    check_roundtrip(sock_path, "first server after the second one failed");

    echo_server_stop_ok(&srv);
    if (access(sock_path, F_OK) == 0 || errno != ENOENT)
        echo_fail("after SIGTERM the socket file %s is still there", sock_path);
    echo_note("SIGTERM: exit 0, socket file removed");

    echo_run(client_argv(sock_path), "hello\n", 6, 10000, &o);
    check_exit("client without a server", &o, 1);
    char want[256];
    snprintf(want, sizeof want, "evmux-echo-client: cannot connect to %s: ", sock_path);
    if (strncmp(o.err, want, strlen(want)) != 0 || o.out_len != 0)
        echo_fail("client without a server: stderr \"%.200s\", expected \"%s...\"", o.err, want);
    echo_note("client without a server: \"%.*s\"", (int)strcspn(o.err, "\n"), o.err);
    echo_output_free(&o);
}

static void test_path_length(void)
{
    char longp[256];
    int n = snprintf(longp, sizeof longp, "%s/", dir);
    memset(longp + n, 'x', SUN_PATH_MAX + 1 - (size_t)n); /* one byte too many */
    longp[SUN_PATH_MAX + 1] = '\0';

    echo_output o;
    char *sargv[] = { (char *)echo_server_path, "--unix", longp, NULL };
    echo_run(sargv, NULL, 0, 10000, &o);
    check_exit("server, path too long", &o, 2);
    if (!strstr(o.err, "too long") || o.out_len != 0)
        echo_fail("server, path too long: stderr \"%.200s\", stdout \"%.100s\"", o.err, o.out);
    echo_note("server, %zu-byte path: exit 2, \"%.*s\"", strlen(longp), 100, o.err);
    echo_output_free(&o);

    echo_run(client_argv(longp), "hello\n", 6, 10000, &o);
    check_exit("client, path too long", &o, 2);
    if (!strstr(o.err, "too long") || o.out_len != 0)
        echo_fail("client, path too long: stderr \"%.200s\", stdout \"%.100s\"", o.err, o.out);
    echo_note("client, %zu-byte path: exit 2, \"%.*s\"", strlen(longp), 100, o.err);
    echo_output_free(&o);
    if (dir_entries() != 0)
        echo_fail("a too-long path left a file in %s (truncated?)", dir);

    /* The longest path that fits works end to end. */
    longp[SUN_PATH_MAX] = '\0';
    echo_server srv;
    unix_server_start(&srv, longp);
    pipe_lines(longp, 3, "client on a path of the longest length");
    echo_server_stop_ok(&srv);
    CHECK(access(longp, F_OK) != 0);
}

static void test_stale(void)
{
    /* A socket file nobody listens on: bound, closed, never unlinked. */
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    memcpy(a.sun_path, sock_path, strlen(sock_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    close(fd);
    CHECK(is_socket_file(sock_path));

    echo_server srv;
    unix_server_start(&srv, sock_path);
    echo_note("stale socket file replaced: %s", srv.line);
    pipe_lines(sock_path, 20, "client on the replaced path");

    /* SIGKILL leaves a stale file too; the client waiting on the server
     * must notice it is gone although its stdin stays open. */
    echo_proc c;
    char buf[256], st[96];
    size_t got = 0;
    echo_spawn(&c, client_argv(sock_path), ECHO_PIPE_IN | ECHO_PIPE_OUT | ECHO_PIPE_ERR,
               0);
    CHECK(write(c.in_fd, "hello\n", 6) == 6);
    uint64_t deadline = echo_now_ms() + 10000;
    while (got < 6 && echo_now_ms() < deadline) {
        ssize_t r = read(c.out_fd, buf + got, sizeof buf - 1 - got);
        if (r > 0)
            got += (size_t)r;
        else
            echo_sleep_ms(5);
    }
    buf[got] = '\0';
    if (strcmp(buf, "HELLO\n") != 0)
        echo_fail("killed server: client stdout \"%s\", expected \"HELLO\\n\"", buf);
    echo_proc_kill(&srv.proc);
    if (!echo_proc_wait(&c, 10000))
        echo_fail("killed server: client still running 10 s later (its stdin is open)");
    ssize_t r = read(c.err_fd, buf, sizeof buf - 1);
    buf[r > 0 ? r : 0] = '\0';
    if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 1 ||
        strcmp(buf, "evmux-echo-client: server closed the connection\n") != 0)
        echo_fail("killed server: client %s, stderr \"%s\"; expected exit 1 and \"server closed "
                  "the connection\"",
                  echo_status_str(c.status, st, sizeof st), buf);
    echo_proc_close_pipes(&c);
    CHECK(is_socket_file(sock_path));
    echo_note("killed server: client exit 1, \"%.*s\"; socket file left behind",
              (int)strcspn(buf, "\n"), buf);

    unix_server_start(&srv, sock_path);
    check_roundtrip(sock_path, "server on a killed server's path");
    echo_server_stop_ok(&srv);
    CHECK(access(sock_path, F_OK) != 0);
}

static void test_regular_file(void)
{
    int fd = open(sock_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, "keep me\n", 8) == 8);
    close(fd);

    echo_output o;
    char *argv[] = { (char *)echo_server_path, "--unix", sock_path, NULL };
    echo_run(argv, NULL, 0, 10000, &o);
    if (o.timed_out || (WIFEXITED(o.status) && WEXITSTATUS(o.status) == 0) ||
        strstr(o.out, "listening"))
        echo_fail("server on a regular file did not fail (stdout \"%.100s\")", o.out);
    struct stat st;
    if (stat(sock_path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != 8)
        echo_fail("the server removed or replaced the regular file at %s", sock_path);
    echo_note("regular file at the path: kept; server \"%.*s\"", (int)strcspn(o.err, "\n"), o.err);
    echo_output_free(&o);
    CHECK(unlink(sock_path) == 0);
}

int main(int argc, char **argv)
{
    echo_init(argc, argv, 150);
    /* /tmp, not $TMPDIR: the path must leave room below sun_path's limit. */
    snprintf(dir, sizeof dir, "/tmp/evmux-unix-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    atexit(remove_dir);
    snprintf(sock_path, sizeof sock_path, "%s/echo.sock", dir);

    RUN_TEST(test_serve);
    RUN_TEST(test_path_length);
    RUN_TEST(test_stale);
    RUN_TEST(test_regular_file);
    CHECK(dir_entries() == 0);
    echo_note("done");
    return 0;
}
