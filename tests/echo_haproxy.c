/* evmux-echo-server behind HAProxy (Debian's haproxy; skipped without it),
 * as docs/scale-out.md describes: HAProxy on loopback in TCP mode with
 * send-proxy-v2 and health checks, in front of two servers run with
 * --proxy-protocol --log-conns.
 *  - 200 clients echo byte-exact through it; both servers get
 *    connections, and each client's own address (its local port) is in
 *    the log of the server that served it, read from the PROXY header.
 *  - One server is drained (SIGTERM) while 40 clients stream 4 MiB each
 *    through HAProxy: every stream completes byte-exact, those on the
 *    drained server too; it exits 0; then 20 new clients are served, all
 *    by the other server. */
#include "echo_harness.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CLIENTS 200
#define STREAMS 40
#define STREAM_BYTES (4u << 20)
#define LATE 20

static echo_server servers[2];
static char err_paths[2][256], cfg_path[256];
static echo_proc haproxy;
static int front_port;

static void remove_files(void)
{
    unlink(err_paths[0]);
    unlink(err_paths[1]);
    unlink(cfg_path);
}

static const char *find_haproxy(void)
{
    static const char *const places[] = {"/usr/sbin/haproxy", "/usr/bin/haproxy",
                                         "/usr/local/sbin/haproxy", "/usr/local/bin/haproxy"};
    const char *env = getenv("EVMUX_HAPROXY");
    if (env != NULL && access(env, X_OK) == 0)
        return env;
    for (size_t i = 0; i < sizeof places / sizeof places[0]; i++)
        if (access(places[i], X_OK) == 0)
            return places[i];
    return NULL;
}

/* The configuration docs/scale-out.md shows, with this test's ports. */
static void write_config(void)
{
    FILE *f = fopen(cfg_path, "w");
    CHECK(f != NULL);
    fprintf(f,
            "global\n"
            "    maxconn 4096\n"
            "defaults\n"
            "    mode tcp\n"
            "    timeout connect 2s\n"
            "    timeout client 60s\n"
            "    timeout server 60s\n"
            "    retries 3\n"
            "    option redispatch\n"
            "frontend echo\n"
            "    bind 127.0.0.1:%d\n"
            "    default_backend evmux\n"
            "backend evmux\n"
            "    balance roundrobin\n"
            "    default-server send-proxy-v2 check-send-proxy check inter 200ms fall 1 rise 2\n"
            "    server a 127.0.0.1:%d\n"
            "    server b 127.0.0.1:%d\n",
            front_port, servers[0].port, servers[1].port);
    CHECK(fclose(f) == 0);
}

/* Until HAProxy accepts and has both servers up: a round trip works. */
static void wait_front_ready(void)
{
    uint64_t deadline = echo_now_ms() + 10000;
    while (echo_now_ms() < deadline) {
        int fd = echo_connect(front_port, 1000);
        if (fd >= 0) {
            char got[4];
            int ok = echo_send_all(fd, "ping", 4, 1000) == 0 && echo_recv_exact(fd, got, 4, 1000) == 0 &&
                     memcmp(got, "PING", 4) == 0;
            close(fd);
            if (ok) {
                echo_sleep_ms(600); /* the health checks see both servers up */
                return;
            }
        }
        if (!echo_server_alive(&servers[0]) || echo_proc_wait(&haproxy, 0))
            break;
        echo_sleep_ms(100);
    }
    echo_fail("HAProxy did not pass a round trip on port %d within 10 s", front_port);
}

static int count_in_log(int k, const char *needle)
{
    char *log = echo_read_file(err_paths[k]);
    int n = 0;
    for (const char *p = log; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    free(log);
    return n;
}

static void init_streams(echo_stream *s, size_t n, uint64_t seed, uint64_t bytes, unsigned mode)
{
    for (size_t i = 0; i < n; i++) {
        memset(&s[i], 0, sizeof s[i]);
        s[i].fd = -1;
        s[i].seed = seed + i;
        s[i].total = bytes;
        s[i].max_chunk = 16384;
        s[i].mode = mode;
    }
}

static void test_clients_and_addresses(void)
{
    static echo_stream s[CLIENTS];
    init_streams(s, CLIENTS, 5000, 16 * 1024, ES_KEEP_FD);
    echo_group_opts o = {.what = "200 clients through HAProxy", .port = front_port,
                         .timeout_ms = 60000, .max_unconfirmed = 64, .barrier = 1};
    echo_group_run(s, CLIENTS, &o);
    echo_group_check_all_ok(s, CLIENTS, o.what);
    int per_server[2] = {0, 0};
    for (int i = 0; i < CLIENTS; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "connection from 127.0.0.1:%d via ",
                 echo_local_port(s[i].fd));
        int a = count_in_log(0, needle), b = count_in_log(1, needle);
        if (a + b != 1)
            echo_fail("client %d (port %d): its address is in %d server logs, expected 1", i,
                      echo_local_port(s[i].fd), a + b);
        per_server[b]++;
        close(s[i].fd);
    }
    echo_note("200 clients echoed through HAProxy; servers saw %d and %d of their addresses",
              per_server[0], per_server[1]);
    if (per_server[0] == 0 || per_server[1] == 0)
        echo_fail("one server got no client: %d and %d", per_server[0], per_server[1]);
}

static void test_drain_one(void)
{
    int before[2] = {count_in_log(0, " via "), count_in_log(1, " via ")};
    static echo_stream s[STREAMS];
    init_streams(s, STREAMS, 6000, STREAM_BYTES, ES_HALF_CLOSE | ES_EXPECT_EOF);
    /* SIGTERM to server a once a quarter of the bytes are back. */
    echo_signal_midway d = {.pid = servers[0].proc.pid, .sig = SIGTERM, .fraction = 0.25};
    echo_group_opts o = {.what = "40 streams of 4 MiB, one server drained", .port = front_port,
                         .timeout_ms = 120000, .barrier = 1,
                         .on_tick = echo_signal_midway_tick, .tick_ms = 5, .user = &d};
    echo_group_run(s, STREAMS, &o);
    if (!d.sent || d.finished_at > STREAMS / 2)
        echo_fail("the drain came too late to test anything (%zu streams complete)",
                  d.finished_at);
    int on_a = count_in_log(0, " via ") - before[0];
    echo_group_check_all_ok(s, STREAMS, o.what);
    echo_note("every stream complete and exact, %d of them on the drained server", on_a);
    if (on_a == 0)
        echo_fail("no stream went to server a: the drain tested nothing");
    echo_server_expect_exit0(&servers[0], "the drained server", 30000);

    /* New clients go to the other server. */
    int b_before = count_in_log(1, " via ");
    static echo_stream late[LATE];
    init_streams(late, LATE, 7000, 8192, 0);
    echo_group_opts lo = {.what = "20 clients after the drain", .port = front_port,
                          .timeout_ms = 30000, .barrier = 1};
    echo_group_run(late, LATE, &lo);
    echo_group_check_all_ok(late, LATE, lo.what);
    int got = count_in_log(1, " via ") - b_before;
    if (got != LATE)
        echo_fail("server b logged %d of the %d clients after the drain", got, LATE);
    echo_note("20 clients after the drain: all served by server b");
}

int main(int argc, char **argv)
{
    echo_init(argc, argv, 280);
    const char *haproxy_path = find_haproxy();
    if (haproxy_path == NULL) {
        echo_note("skipped: no haproxy (apt-get install haproxy, or set EVMUX_HAPROXY)");
        return 77;
    }
    const char *tmp = getenv("TMPDIR");
    for (int k = 0; k < 2; k++)
        snprintf(err_paths[k], sizeof err_paths[k], "%s/evmux-haproxy.%d.%c.err",
                 tmp ? tmp : "/tmp", (int)getpid(), 'a' + k);
    snprintf(cfg_path, sizeof cfg_path, "%s/evmux-haproxy.%d.cfg", tmp ? tmp : "/tmp",
             (int)getpid());
    atexit(remove_files);

    /* --drain-idle-ms longer than the default 200: this one test process
     * paces every stream, and on a loaded machine (ctest -j, a sanitizer)
     * a stream can wait longer than 200 ms for its turn, which the server
     * rightly takes for a pause (see echo_threads.c). */
    static const char *const args[] = {"--proxy-protocol", "--log-conns", "--drain-idle-ms",
                                       ECHO_SANITIZED ? "5000" : "2000", NULL};
    for (int k = 0; k < 2; k++) {
        echo_server_opts so = {.args = args, .stderr_file = err_paths[k]};
        echo_server_start(&servers[k], &so);
    }
    front_port = echo_unused_port();
    write_config();
    char *const argv_h[] = {(char *)haproxy_path, "-db", "-f", cfg_path, NULL};
    echo_spawn(&haproxy, argv_h, 0, 0);
    wait_front_ready();
    echo_note("HAProxy on port %d, servers on %d and %d", front_port, servers[0].port,
              servers[1].port);

    test_clients_and_addresses();
    test_drain_one();

    echo_server_stop_ok(&servers[1]);
    echo_proc_kill(&haproxy);
    echo_note("done");
    return 0;
}
