/* evmux-bench end to end, run as: bench_smoke SERVER_PATH BENCH_PATH.
 *  - Against the real server (--csv --server-pid): exit 0, messages > 0, no
 *    mismatch, no error, p50 <= p99 <= p99.9 <= max, server CPU reported;
 *    --json and the text summary with idle connections and --flag=value.
 *  - Against wrong servers this test runs itself (an evmux loop in a forked
 *    child): one that echoes without uppercasing, one that flips a single
 *    byte deep into one connection's stream, one that drops a connection
 *    halfway: exit 1, with mismatches (or errors) counted. The first two
 *    again with --mark, the flipped byte then being a marker.
 *  - --mark: clean against the real server; and against a server of ours
 *    that drops a connection whose 0x7F bytes are not exactly at the
 *    message starts (with --mark) or not absent (without): exit 0, so the
 *    markers are on the wire where they belong and nowhere else.
 *  - --udp against the real server (--udp): exit 0, datagrams answered,
 *    loss counted; against a UDP server of ours that echoes without
 *    uppercasing: exit 1 with mismatches.
 *  - --threads 2 (TCP against the real server, then --udp): exit 0, every
 *    reply byte checked, the merged figures whole (the thread counts add up
 *    to the messages, percentiles from the merged histogram in order), and
 *    each thread did work. Against a server of ours that answers one
 *    connection late, the merged latencies hold both threads'; against
 *    one that does not uppercase, the connections of both threads are
 *    mismatches. A wrong server that drops the only connection of one
 *    thread: the other thread's run ends too, long before --duration,
 *    exit 1 with the drop counted.
 *  - --host localhost: the name is resolved, and every connection goes
 *    to the address that answered: exit 0, the report names 127.0.0.1;
 *    --host nonexistent.invalid: exit 2, "bad address" and the resolver's
 *    message, nothing tried.
 *  - Nobody listening: exit 1 with a message. Bad flags: exit 2, one line
 *    plus the usage on stderr, nothing on stdout; --help: exit 0. */
#include "echo_harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_COLS 64

static const char *bench_path;

/* ---- running evmux-bench ---- */

/* Runs evmux-bench with the given arguments (NULL-terminated). */
static void run_bench(echo_output *o, const char *const *args)
{
    char *argv[48];
    int argc = 0;
    argv[argc++] = (char *)bench_path;
    for (; *args; args++) {
        CHECK(argc < 47);
        argv[argc++] = (char *)*args;
    }
    argv[argc] = NULL;
    echo_run(argv, NULL, 0, ECHO_SANITIZED ? 60000 : 30000, o);
    if (o->timed_out)
        echo_fail("evmux-bench timed out (stderr \"%.300s\")", o->err);
}

static int exit_code(const echo_output *o)
{
    return WIFEXITED(o->status) ? WEXITSTATUS(o->status) : -1;
}

static void expect_exit(const char *what, const echo_output *o, int want)
{
    char st[96];
    if (exit_code(o) != want)
        echo_fail("%s: evmux-bench %s, expected exit %d\nstdout: %.600s\nstderr: %.600s", what,
                  echo_status_str(o->status, st, sizeof st), want, o->out, o->err);
}

/* ---- the CSV result ---- */

struct csv {
    char buf[2048];
    char *names[MAX_COLS], *values[MAX_COLS];
    int cols;
};

static int split(char *line, char **fields)
{
    int n = 0;
    for (char *p = line;; p++) {
        CHECK(n < MAX_COLS);
        fields[n++] = p;
        p = strchr(p, ',');
        if (p == NULL)
            return n;
        *p = '\0';
    }
}

/* Exactly a header line and a data line with as many fields. */
static void parse_csv(const char *what, const echo_output *o, struct csv *c)
{
    if (o->out_len == 0 || o->out_len >= sizeof c->buf || o->out[o->out_len - 1] != '\n')
        echo_fail("%s: expected two CSV lines on stdout, got \"%.600s\"", what, o->out);
    memcpy(c->buf, o->out, o->out_len + 1);
    char *nl = strchr(c->buf, '\n');
    if (nl == NULL || strchr(nl + 1, '\n') != c->buf + o->out_len - 1)
        echo_fail("%s: expected exactly two lines on stdout, got \"%.600s\"", what, o->out);
    *nl = '\0';
    c->buf[o->out_len - 1] = '\0';
    c->cols = split(c->buf, c->names);
    if (split(nl + 1, c->values) != c->cols)
        echo_fail("%s: the CSV header and data line differ in length: \"%.600s\"", what, o->out);
}

static const char *csv_get(const struct csv *c, const char *name)
{
    for (int i = 0; i < c->cols; i++)
        if (strcmp(c->names[i], name) == 0)
            return c->values[i];
    echo_fail("CSV has no column \"%s\"", name);
}

static double csv_num(const struct csv *c, const char *name)
{
    const char *v = csv_get(c, name);
    char *end;
    double d = strtod(v, &end);
    if (*v == '\0' || *end != '\0')
        echo_fail("CSV column %s is \"%s\", not a number", name, v);
    return d;
}

/* ---- the JSON result ---- */

/* The number after "name": in one JSON object. */
static double json_num(const char *what, const echo_output *o, const char *name)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", name);
    const char *p = strstr(o->out, key);
    if (p == NULL)
        echo_fail("%s: no %s in \"%.600s\"", what, key, o->out);
    p += strlen(key);
    char *end;
    double d = strtod(p, &end);
    if (end == p)
        echo_fail("%s: %s is not a number in \"%.600s\"", what, key, o->out);
    return d;
}

/* The numbers of the array "name":[...]; returns how many. */
static int json_array(const char *what, const echo_output *o, const char *name, double *v,
                      int max)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\":[", name);
    const char *p = strstr(o->out, key);
    if (p == NULL)
        echo_fail("%s: no %s in \"%.600s\"", what, key, o->out);
    p += strlen(key);
    int n = 0;
    while (*p != ']') {
        char *end;
        if (n == max || (v[n++] = strtod(p, &end), end == p) || (*end != ',' && *end != ']'))
            echo_fail("%s: %s...] is not an array of numbers: \"%.600s\"", what, key, o->out);
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

/* ---- a deliberately wrong echo server, in a child process ---- */

enum wrong_mode {
    WRONG_NO_UPPERCASE, /* echoes every byte unchanged */
    WRONG_FLIP_BYTE,    /* right, except one byte of the first connection */
    WRONG_DROP,         /* right, but closes the first connection halfway */
    CHECK_MARKS,        /* right, but drops a connection whose 0x7F bytes are misplaced */
    SLOW_FIRST,         /* right, but answers the first connection SLOW_MS late */
    WRONG_HELD          /* echoes unchanged, once HELD_CONNS connections have all spoken */
};

#define WRONG_AT 40000 /* stream offset of the flipped byte, or of the drop */
#define SLOW_MS 20
#define HELD_CONNS 2

#define MARK_BYTE 0x7F
#define MARK_SIZE 1000 /* --size of the runs against CHECK_MARKS */

static enum wrong_mode wrong_mode;
static bool wrong_marks_expected; /* CHECK_MARKS: at every MARK_SIZE-th byte, or nowhere */
static size_t wrong_accepted;

struct wrong_conn {
    evmux_stream stream;
    uint64_t seen; /* bytes of this connection echoed so far */
    bool first;
    evmux_timer slow;         /* SLOW_FIRST: sends what is held */
    char held[4096];          /* SLOW_FIRST, WRONG_HELD: replies that wait */
    size_t held_len;
};

static void wrong_free(evmux_handle *h)
{
    free(h->data);
}

static void slow_send(evmux_timer *t)
{
    struct wrong_conn *c = t->handle.data;
    evmux_buf reply = {c->held, c->held_len};
    c->held_len = 0;
    evmux_stream_write(NULL, &c->stream, &reply, 1, NULL); /* evmux copies what waits */
}

/* SLOW_FIRST, the first connection: the replies wait SLOW_MS. */
static void slow_hold(struct wrong_conn *c, const char *buf, size_t n)
{
    if (c->held_len + n > sizeof c->held)
        abort(); /* the test's --depth and --size keep far below */
    for (size_t i = 0; i < n; i++)
        c->held[c->held_len++] = (char)echo_upper((uint8_t)buf[i]);
    if (!evmux_is_active(&c->slow.handle))
        evmux_timer_start(&c->slow, SLOW_MS, 0);
}

/* WRONG_HELD: the first HELD_CONNS connections to speak are answered
 * together, once the last of them has; later bytes are answered at once. */
static struct wrong_conn *held_conns[HELD_CONNS];
static size_t held_spoken;
static bool held_released;

static bool held_keep(struct wrong_conn *c, const char *buf, size_t n)
{
    if (held_released)
        return false;
    if (c->held_len + n > sizeof c->held)
        abort(); /* the test's --depth and --size keep far below */
    if (c->held_len == 0)
        held_conns[held_spoken++] = c;
    memcpy(c->held + c->held_len, buf, n);
    c->held_len += n;
    held_released = held_spoken == HELD_CONNS;
    for (size_t i = 0; held_released && i < HELD_CONNS; i++) {
        struct wrong_conn *h = held_conns[i];
        if (h == NULL)
            continue; /* closed meanwhile */
        evmux_buf reply = {h->held, h->held_len};
        evmux_stream_write(NULL, &h->stream, &reply, 1, NULL);
    }
    return true;
}

static void held_forget(struct wrong_conn *c)
{
    for (size_t i = 0; i < HELD_CONNS; i++)
        if (held_conns[i] == c)
            held_conns[i] = NULL;
}

static void wrong_on_read(evmux_stream *s, ssize_t nread, char *buf)
{
    struct wrong_conn *c = s->handle.data;
    if (nread < 0) {
        held_forget(c);
        if (wrong_mode == SLOW_FIRST && c->first)
            evmux_close(&c->slow.handle, NULL); /* closed before the stream frees c */
        evmux_close(&s->handle, wrong_free);
        return;
    }
    if (wrong_mode == SLOW_FIRST && c->first) {
        slow_hold(c, buf, (size_t)nread);
        return;
    }
    if (wrong_mode == WRONG_HELD && held_keep(c, buf, (size_t)nread))
        return;
    size_t n = (size_t)nread;
    for (size_t i = 0; i < n; i++) {
        bool marker = (uint8_t)buf[i] == MARK_BYTE;
        if (wrong_mode == CHECK_MARKS &&
            marker != (wrong_marks_expected && (c->seen + i) % MARK_SIZE == 0)) {
            evmux_close(&s->handle, wrong_free);
            return;
        }
        if (wrong_mode != WRONG_NO_UPPERCASE && wrong_mode != WRONG_HELD)
            buf[i] = (char)echo_upper((uint8_t)buf[i]);
        if (wrong_mode == WRONG_FLIP_BYTE && c->first && c->seen + i == WRONG_AT)
            buf[i] ^= 0x01;
    }
    if (wrong_mode == WRONG_DROP && c->first && c->seen + n >= WRONG_AT) {
        evmux_close(&s->handle, wrong_free);
        return;
    }
    c->seen += n;
    evmux_buf reply = {buf, n};
    if (evmux_stream_write(NULL, s, &reply, 1, NULL) < 0)
        evmux_close(&s->handle, wrong_free);
}

static void wrong_on_accept(evmux_listener *l, int status)
{
    if (status < 0)
        return;
    struct wrong_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->stream.handle.data = c;
    c->first = wrong_accepted++ == 0;
    evmux_stream_init(l->handle.loop, &c->stream);
    if (wrong_mode == SLOW_FIRST && c->first) {
        evmux_timer_init(l->handle.loop, &c->slow, slow_send);
        c->slow.handle.data = c;
    }
    if (evmux_accept(l, &c->stream) < 0 || evmux_stream_read_start(&c->stream, wrong_on_read) < 0)
        evmux_close(&c->stream.handle, wrong_free);
}

/* The child: listens on a free port, tells the parent which, serves. */
static void wrong_server_main(int port_fd)
{
    evmux_loop *loop;
    evmux_listener listener;
    struct sockaddr_storage addr;
    socklen_t len;
    if (evmux_loop_new(&loop, NULL) < 0 || evmux_addr_ip("127.0.0.1", 0, &addr, &len) < 0 ||
        evmux_listen(loop, &listener, (struct sockaddr *)&addr, len, NULL, wrong_on_accept) < 0 ||
        evmux_listener_address(&listener, &addr, &len) < 0)
        _exit(1);
    int port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
    if (write(port_fd, &port, sizeof port) != (ssize_t)sizeof port)
        _exit(1);
    close(port_fd);
    evmux_run(loop, EVMUX_RUN_DEFAULT);
    _exit(0);
}

static pid_t wrong_pid;

static void wrong_server_stop(void)
{
    if (wrong_pid > 0) {
        kill(wrong_pid, SIGKILL);
        waitpid(wrong_pid, NULL, 0);
        wrong_pid = 0;
    }
}

/* Starts a wrong server; returns its port. */
static int wrong_server_start(enum wrong_mode mode, bool marks)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        if (getppid() != parent)
            _exit(1);
        alarm(0);
        close(fds[0]);
        wrong_mode = mode;
        wrong_marks_expected = marks;
        wrong_server_main(fds[1]);
    }
    wrong_pid = pid;
    close(fds[1]);
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    int port = 0;
    if (poll(&pfd, 1, 10000) != 1 || read(fds[0], &port, sizeof port) != (ssize_t)sizeof port)
        echo_fail("the wrong echo server did not start");
    close(fds[0]);
    return port;
}

/* ---- the tests ---- */

static echo_server srv;

static void test_real_server_csv(void)
{
    char port[16], pid[16];
    snprintf(port, sizeof port, "%d", srv.port);
    snprintf(pid, sizeof pid, "%d", (int)srv.proc.pid);
    const char *args[] = {"--port", port, "--conns", "4", "--depth", "4", "--size", "1000",
                          "--duration", "1", "--warmup", "0.2", "--csv", "--server-pid", pid,
                          NULL};
    echo_output o;
    run_bench(&o, args);
    expect_exit("real server, --csv", &o, 0);
    struct csv c;
    parse_csv("real server, --csv", &o, &c);
    double messages = csv_num(&c, "messages");
    double p50 = csv_num(&c, "p50_us"), p99 = csv_num(&c, "p99_us");
    double p999 = csv_num(&c, "p999_us"), max = csv_num(&c, "max_us");
    double server_cpu = csv_num(&c, "server_cpu_s");
    if (messages <= 0)
        echo_fail("real server: no messages counted: %s", o.out);
    CHECK_EQ(csv_num(&c, "mismatches"), 0);
    CHECK_EQ(csv_num(&c, "errors"), 0);
    CHECK_EQ(csv_num(&c, "connect_failures"), 0);
    CHECK_EQ(csv_num(&c, "conns"), 4);
    CHECK_EQ(csv_num(&c, "size"), 1000);
    CHECK_EQ(csv_num(&c, "depth"), 4);
    if (!(p50 > 0 && p50 <= p99 && p99 <= p999 && p999 <= max))
        echo_fail("real server: percentiles out of order: p50 %g p99 %g p99.9 %g max %g", p50,
                  p99, p999, max);
    if (server_cpu < 0)
        echo_fail("real server: server_cpu_s is %g", server_cpu);
    csv_num(&c, "server_ns_per_msg");
    /* Every byte of every counted message was checked, and more (warmup). */
    if (csv_num(&c, "bytes_checked") < messages * 1000)
        echo_fail("real server: bytes_checked %s < messages x size", csv_get(&c, "bytes_checked"));
    double secs = csv_num(&c, "duration_s");
    if (secs < 0.9 || secs > 3)
        echo_fail("real server: measured %g s for --duration 1", secs);
    echo_note("real server: %.0f messages in %.3f s (%s msg/s), p50 %g us, p99 %g us, "
              "p99.9 %g us, server CPU %g s", messages, secs, csv_get(&c, "msgs_per_s"), p50,
              p99, p999, server_cpu);
    echo_output_free(&o);
}

static void test_host_name(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    const char *args[] = {"--host", "localhost", "--port", port, "--conns", "3", "--idle", "2",
                          "--duration", "0.3", "--warmup", "0", "--csv", NULL};
    echo_output o;
    run_bench(&o, args);
    expect_exit("--host localhost", &o, 0);
    struct csv c;
    parse_csv("--host localhost", &o, &c);
    CHECK_EQ(csv_num(&c, "connect_failures"), 0);
    CHECK_EQ(csv_num(&c, "mismatches"), 0);
    if (csv_num(&c, "messages") <= 0)
        echo_fail("--host localhost: no messages counted: %s", o.out);
    echo_output_free(&o);

    const char *text_args[] = {"--host", "localhost", "--port", port, "--duration", "0.2",
                               "--warmup", "0", NULL};
    run_bench(&o, text_args);
    expect_exit("--host localhost (text)", &o, 0);
    char want[64];
    snprintf(want, sizeof want, "evmux-bench: 127.0.0.1:%d,", srv.port);
    if (strstr(o.out, want) == NULL)
        echo_fail("--host localhost: expected \"%s\" in the report, got \"%.300s\"", want, o.out);
    echo_output_free(&o);

    const char *bad_args[] = {"--host", "nonexistent.invalid", "--port", port, "--duration",
                              "0.2", NULL};
    run_bench(&o, bad_args);
    expect_exit("--host nonexistent.invalid", &o, 2);
    if (strstr(o.err, "bad address 'nonexistent.invalid'") == NULL)
        echo_fail("--host nonexistent.invalid: expected \"bad address\" on stderr, got \"%.300s\"",
                  o.err);
    if (o.out_len != 0)
        echo_fail("--host nonexistent.invalid: printed on stdout: \"%.200s\"", o.out);
    echo_note("--host localhost: exit 0 via 127.0.0.1; nonexistent.invalid: exit 2, \"%.*s\"",
              (int)strcspn(o.err, "\n"), o.err);
    echo_output_free(&o);
}

static void test_real_server_json_and_text(void)
{
    char port[32];
    snprintf(port, sizeof port, "--port=%d", srv.port);
    const char *json_args[] = {port, "--conns=3", "--idle=16", "--size=100", "--depth=8",
                               "--duration=0.3", "--warmup=0", "--json", NULL};
    echo_output o;
    run_bench(&o, json_args);
    expect_exit("real server, --json", &o, 0);
    if (o.out_len < 2 || o.out[0] != '{' || strcmp(o.out + o.out_len - 2, "}\n") != 0 ||
        strchr(o.out, '\n') != o.out + o.out_len - 1)
        echo_fail("--json: expected one JSON object on one line, got \"%.600s\"", o.out);
    const char *want[] = {"\"conns\":3,", "\"idle\":16,", "\"mismatches\":0,", "\"errors\":0,",
                          "\"connect_failures\":0,", "\"server_cpu_s\":null,", "\"p999_us\":"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (strstr(o.out, want[i]) == NULL)
            echo_fail("--json: no %s in \"%.600s\"", want[i], o.out);
    echo_output_free(&o);

    const char *text_args[] = {port, "--conns", "2", "--duration", "0.2", "--warmup", "0.1",
                               NULL};
    run_bench(&o, text_args);
    expect_exit("real server, text", &o, 0);
    if (!strstr(o.out, "0 mismatches") || !strstr(o.out, "p99.9") || !strstr(o.out, "msg/s"))
        echo_fail("text summary lacks its figures: \"%.600s\"", o.out);
    echo_output_free(&o);
    echo_note("--json with 16 idle connections and the text summary: clean");
}

/* A wrong server must make evmux-bench fail: exit 1, with the damage
 * counted in `column`, and `want_err` (if given) in what it says. */
static void expect_caught(enum wrong_mode mode, bool mark, const char *what, const char *column,
                          const char *want_err)
{
    int port = wrong_server_start(mode, false);
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    const char *args[] = {"--port", p, "--conns", "3", "--depth", "2", "--size", "1000",
                          "--duration", "0.5", "--warmup", "0", "--csv",
                          mark ? "--mark" : NULL, NULL};
    echo_output o;
    uint64_t t0 = echo_now_ms();
    run_bench(&o, args);
    wrong_server_stop();
    expect_exit(what, &o, 1);
    struct csv c;
    parse_csv(what, &o, &c);
    if (csv_num(&c, column) < 1)
        echo_fail("%s: expected %s > 0, got %s\n%s", what, column, csv_get(&c, column), o.out);
    if (strstr(o.err, "FAILED") == NULL)
        echo_fail("%s: no FAILED verdict on stderr: \"%.600s\"", what, o.err);
    if (want_err != NULL && strstr(o.err, want_err) == NULL)
        echo_fail("%s: no \"%s\" on stderr: \"%.600s\"", what, want_err, o.err);
    echo_note("%s: exit 1 after %llu ms, mismatches %s, errors %s; stderr starts \"%.*s\"", what,
              (unsigned long long)(echo_now_ms() - t0), csv_get(&c, "mismatches"),
              csv_get(&c, "errors"), (int)strcspn(o.err, "\n"), o.err);
    echo_output_free(&o);
}

static void test_wrong_servers(void)
{
    expect_caught(WRONG_NO_UPPERCASE, false, "server that does not uppercase", "mismatches",
                  NULL);
    expect_caught(WRONG_FLIP_BYTE, false, "server that flips one byte", "mismatches", NULL);
    expect_caught(WRONG_DROP, false, "server that drops a connection", "errors", NULL);
    /* WRONG_AT is a multiple of the size, so with --mark the flip hits a marker. */
    expect_caught(WRONG_NO_UPPERCASE, true, "--mark, server that does not uppercase",
                  "mismatches", NULL);
    expect_caught(WRONG_FLIP_BYTE, true, "--mark, server that flips a marker", "mismatches",
                  "reply byte 40000 is 0x7e, expected 0x7f (sent 0x7f)");
}

/* --mark against the real server: clean, and the CSV says it was marked. */
static void test_mark_real_server(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", srv.port);
    const char *args[] = {"--port", port, "--conns", "3", "--depth", "4", "--size", "64",
                          "--duration", "0.5", "--warmup", "0.1", "--mark", "--csv", NULL};
    echo_output o;
    run_bench(&o, args);
    expect_exit("real server, --mark", &o, 0);
    struct csv c;
    parse_csv("real server, --mark", &o, &c);
    if (csv_num(&c, "messages") <= 0)
        echo_fail("real server, --mark: no messages counted: %s", o.out);
    CHECK_EQ(csv_num(&c, "mismatches"), 0);
    CHECK_EQ(csv_num(&c, "errors"), 0);
    CHECK_EQ(csv_num(&c, "mark"), 1);
    echo_note("real server, --mark: %s messages, clean", csv_get(&c, "messages"));
    echo_output_free(&o);
}

/* ---- --threads ---- */

/* A --threads run's merged JSON: clean, every reply byte checked, the
 * thread counts adding up to the messages and each > 0, the percentiles
 * (from the merged histogram) in order, the server's CPU measured. */
static void expect_threads_json(const char *what, const echo_output *o, double size, int threads)
{
    expect_exit(what, o, 0);
    double messages = json_num(what, o, "messages");
    CHECK_EQ(json_num(what, o, "mismatches"), 0);
    CHECK_EQ(json_num(what, o, "errors"), 0);
    CHECK_EQ(json_num(what, o, "threads"), threads);
    double per[8], sum = 0;
    if (json_array(what, o, "thread_msgs", per, 8) != threads)
        echo_fail("%s: expected %d thread counts: %s", what, threads, o->out);
    for (int i = 0; i < threads; i++) {
        if (per[i] <= 0)
            echo_fail("%s: thread %d did no work: %s", what, i, o->out);
        sum += per[i];
    }
    if (messages <= 0 || sum != messages)
        echo_fail("%s: the threads' counts add up to %g, not the %g messages", what, sum,
                  messages);
    if (json_num(what, o, "bytes_checked") < messages * size)
        echo_fail("%s: bytes_checked < messages x size: %s", what, o->out);
    double min = json_num(what, o, "min_us"), p50 = json_num(what, o, "p50_us");
    double p99 = json_num(what, o, "p99_us"), max = json_num(what, o, "max_us");
    if (!(min > 0 && min <= p50 && p50 <= p99 && p99 <= max))
        echo_fail("%s: latencies out of order: min %g p50 %g p99 %g max %g", what, min, p50,
                  p99, max);
    if (json_num(what, o, "server_cpu_s") < 0)
        echo_fail("%s: no server CPU: %s", what, o->out);
    echo_note("%s: %g messages, per thread %g and %g, p50 %g us", what, messages, per[0],
              per[1], p50);
}

static void test_threads_real_server(void)
{
    char port[16], pid[16];
    snprintf(port, sizeof port, "%d", srv.port);
    snprintf(pid, sizeof pid, "%d", (int)srv.proc.pid);
    const char *args[] = {"--port", port, "--conns", "4", "--depth", "2", "--size", "1000",
                          "--threads", "2", "--duration", "0.5", "--warmup", "0.1", "--json",
                          "--server-pid", pid, NULL};
    echo_output o;
    run_bench(&o, args);
    expect_threads_json("--threads 2", &o, 1000, 2);
    echo_output_free(&o);

    /* Idle connections spread too; the text names the threads. */
    const char *text_args[] = {"--port", port, "--conns", "2", "--idle", "3", "--threads", "2",
                               "--duration", "0.2", "--warmup", "0", NULL};
    run_bench(&o, text_args);
    expect_exit("--threads 2, text", &o, 0);
    if (!strstr(o.out, "connected   2 + 3 idle") ||
        !strstr(o.out, "threads     2 loops, messages per thread: ") ||
        !strstr(o.out, "0 mismatches, 0 errors"))
        echo_fail("--threads 2: the text lacks its figures: \"%.600s\"", o.out);
    echo_output_free(&o);
}

/* Every thread checks its replies: against a server that does not
 * uppercase, each connection, one per thread, is a mismatch. The server
 * answers both at once, once both have spoken: so both threads are
 * measuring when the first mismatch ends its thread's run, and the other
 * thread, stopped, still checks the reply it is owed. (Answered at once,
 * one thread could end the run before the other got to send.) */
static void test_threads_wrong_server(void)
{
    int port = wrong_server_start(WRONG_HELD, false);
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    const char *args[] = {"--port", p, "--conns", "2", "--threads", "2", "--duration", "5",
                          "--warmup", "0", "--csv", NULL};
    echo_output o;
    run_bench(&o, args);
    wrong_server_stop();
    const char *what = "--threads 2, a server that does not uppercase";
    expect_exit(what, &o, 1);
    struct csv c;
    parse_csv(what, &o, &c);
    if (csv_num(&c, "mismatches") != 2)
        echo_fail("%s: expected 2 mismatches, one per connection: %s", what, o.out);
    echo_output_free(&o);
}

/* One thread's connection is answered SLOW_MS late, the other's at once:
 * the merged latencies hold both (a histogram of one thread alone would
 * have all its values on one side of SLOW_MS). */
static void test_threads_merge(void)
{
    int port = wrong_server_start(SLOW_FIRST, false);
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    const char *args[] = {"--port", p, "--conns", "2", "--threads", "2", "--size", "100",
                          "--duration", "0.5", "--warmup", "0", "--json", NULL};
    echo_output o;
    run_bench(&o, args);
    wrong_server_stop();
    const char *what = "--threads 2, one connection slow";
    expect_exit(what, &o, 0);
    double per[2];
    if (json_array(what, &o, "thread_msgs", per, 2) != 2 || per[0] <= 0 || per[1] <= 0)
        echo_fail("%s: a thread did no work: %s", what, o.out);
    double min = json_num(what, &o, "min_us"), max = json_num(what, &o, "max_us");
    if (!(min < SLOW_MS * 1000 && max >= SLOW_MS * 1000))
        echo_fail("%s: latencies from %g to %g us do not hold both threads'", what, min, max);
    echo_note("%s: %g and %g messages, latencies %g to %g us", what, per[0], per[1], min, max);
    echo_output_free(&o);
}

/* The dropped connection is the only one of its thread: that thread's run
 * ends, and with it the other's, long before --duration. */
static void test_threads_early_end(void)
{
    int port = wrong_server_start(WRONG_DROP, false);
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    const char *args[] = {"--port", p, "--conns", "2", "--threads", "2", "--depth", "2",
                          "--size", "1000", "--duration", "30", "--warmup", "0", "--csv", NULL};
    echo_output o;
    uint64_t t0 = echo_now_ms();
    run_bench(&o, args);
    uint64_t ms = echo_now_ms() - t0;
    wrong_server_stop();
    expect_exit("--threads 2, one thread's connection dropped", &o, 1);
    struct csv c;
    parse_csv("--threads 2, one thread's connection dropped", &o, &c);
    if (csv_num(&c, "errors") < 1 || strstr(o.err, "the run ends on every thread") == NULL)
        echo_fail("--threads 2, a drop: expected the error counted and the end said: %s\n%s",
                  o.out, o.err);
    if (ms > 15000)
        echo_fail("--threads 2, a drop: the run took %llu ms", (unsigned long long)ms);
    echo_note("--threads 2, one thread's connection dropped: exit 1 after %llu ms",
              (unsigned long long)ms);
    echo_output_free(&o);
}

/* Where the markers are on the wire: our server drops any connection with a
 * 0x7F byte off the message starts, or a message start without one (with
 * --mark); evmux-bench would report the drop as an error, exit 1. */
static void expect_marks(bool server_expects, bool bench_marks, int want_exit)
{
    int port = wrong_server_start(CHECK_MARKS, server_expects);
    char p[16], size[16];
    snprintf(p, sizeof p, "%d", port);
    snprintf(size, sizeof size, "%d", MARK_SIZE);
    /* Depth 3 and several connections, so messages merge and split in the stream. */
    const char *args[] = {"--port", p, "--conns", "3", "--depth", "3", "--size", size,
                          "--duration", "0.3", "--warmup", "0", "--csv",
                          bench_marks ? "--mark" : NULL, NULL};
    echo_output o;
    run_bench(&o, args);
    wrong_server_stop();
    char what[96];
    snprintf(what, sizeof what, "markers %s, server expects them %s",
             bench_marks ? "sent" : "not sent", server_expects ? "at message starts" : "nowhere");
    expect_exit(what, &o, want_exit);
    echo_note("%s: exit %d", what, want_exit);
    echo_output_free(&o);
}

static void test_mark_on_the_wire(void)
{
    expect_marks(true, true, 0);
    expect_marks(false, false, 0);
    expect_marks(true, false, 1); /* the check itself can fail */
    expect_marks(false, true, 1);
}

static void test_no_server(void)
{
    char p[16];
    snprintf(p, sizeof p, "%d", echo_unused_port());
    const char *args[] = {"--port", p, "--conns", "2", "--duration", "0.2", NULL};
    echo_output o;
    run_bench(&o, args);
    expect_exit("nobody listening", &o, 1);
    if (strstr(o.err, "refused") == NULL)
        echo_fail("nobody listening: expected the connect error on stderr, got \"%.300s\"", o.err);
    echo_note("nobody listening: exit 1, \"%.*s\"", (int)strcspn(o.err, "\n"), o.err);
    echo_output_free(&o);
}

static void expect_usage_error(const char *const *args)
{
    echo_output o;
    run_bench(&o, args);
    char what[128];
    snprintf(what, sizeof what, "flags \"%s%s%s\"", args[0], args[1] ? " " : "",
             args[1] ? args[1] : "");
    expect_exit(what, &o, 2);
    if (o.out_len != 0)
        echo_fail("%s: printed on stdout: \"%.200s\"", what, o.out);
    if (strncmp(o.err, "evmux-bench: ", 13) != 0 || strstr(o.err, "usage:") == NULL)
        echo_fail("%s: expected an error line and the usage on stderr, got \"%.300s\"", what,
                  o.err);
    echo_output_free(&o);
}

/* ---- --udp ---- */

/* Stops a UDP server: SIGTERM, then a datagram. Under ThreadSanitizer a
 * signal's handler waits for an intercepted call, which io_uring_enter is
 * not (tests/unit_signal.c), so an idle server on io_uring would wait for
 * good; the datagram ends its wait. Elsewhere it is one more answered. */
static void udp_server_stop(echo_server *u)
{
    echo_server_check_alive(u, "before SIGTERM");
    CHECK(kill(u->proc.pid, SIGTERM) == 0);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)u->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(sendto(fd, "wake", 4, 0, (struct sockaddr *)&a, sizeof a) == 4);
    close(fd);
    echo_server_expect_exit0(u, "the UDP server, after SIGTERM", 10000);
}

static void test_udp_real_server(void)
{
    const char *udp_args[] = {"--udp", NULL};
    echo_server_opts so = {.args = udp_args};
    echo_server u;
    echo_server_start(&u, &so);
    char port[16], pid[16];
    snprintf(port, sizeof port, "%d", u.port);
    snprintf(pid, sizeof pid, "%d", (int)u.proc.pid);
    const char *args[] = {"--udp", "--port", port, "--conns", "4", "--depth", "4", "--size",
                          "1200", "--duration", "1", "--warmup", "0.2", "--csv",
                          "--server-pid", pid, NULL};
    echo_output o;
    run_bench(&o, args);
    expect_exit("--udp, real server", &o, 0);
    struct csv c;
    parse_csv("--udp, real server", &o, &c);
    double messages = csv_num(&c, "messages"), sent = csv_num(&c, "sent");
    double lost = csv_num(&c, "lost");
    CHECK_EQ(csv_num(&c, "udp"), 1);
    CHECK_EQ(csv_num(&c, "mismatches"), 0);
    CHECK_EQ(csv_num(&c, "errors"), 0);
    if (!(messages > 0 && messages <= sent && lost <= sent))
        echo_fail("--udp: %g answered, %g sent, %g lost", messages, sent, lost);
    if (csv_num(&c, "bytes_checked") < messages * 1200)
        echo_fail("--udp: bytes_checked %s < messages x size", csv_get(&c, "bytes_checked"));
    csv_num(&c, "server_ns_per_msg");
    echo_note("--udp: %.0f datagrams answered of %.0f sent, %.0f lost", messages, sent, lost);
    echo_output_free(&o);
    udp_server_stop(&u);
}

static void test_threads_udp(void)
{
    const char *udp_args[] = {"--udp", NULL};
    echo_server_opts so = {.args = udp_args};
    echo_server u;
    echo_server_start(&u, &so);
    char port[16], pid[16];
    snprintf(port, sizeof port, "%d", u.port);
    snprintf(pid, sizeof pid, "%d", (int)u.proc.pid);
    const char *args[] = {"--udp", "--port", port, "--conns", "4", "--depth", "4", "--size",
                          "1200", "--threads", "2", "--duration", "0.5", "--warmup", "0.1",
                          "--json", "--server-pid", pid, NULL};
    echo_output o;
    run_bench(&o, args);
    expect_threads_json("--udp --threads 2", &o, 1200, 2);
    echo_output_free(&o);
    udp_server_stop(&u);
}

/* A UDP echo server that does not uppercase, in a child. */
static void test_udp_wrong_server(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t len = sizeof a;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        static char buf[65536];
        for (;;) {
            struct sockaddr_storage from;
            socklen_t from_len = sizeof from;
            ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &from_len);
            if (n >= 0)
                sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, from_len);
        }
    }
    close(fd);
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    const char *args[] = {"--udp", "--port", port, "--duration", "0.3", "--warmup", "0",
                          "--csv", NULL};
    echo_output o;
    run_bench(&o, args);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    expect_exit("--udp, a server that does not uppercase", &o, 1);
    struct csv c;
    parse_csv("--udp, a server that does not uppercase", &o, &c);
    if (csv_num(&c, "mismatches") <= 0)
        echo_fail("--udp: no mismatch counted against a server that does not uppercase");
    echo_output_free(&o);
}

static void test_flags(void)
{
    static const char *const bad[][4] = {
        {"--conns", "0"},          {"--size=abc"},          {"--bogus"},
        {"--port"},                {"--csv", "--json"},     {"--depth", "-1"},
        {"--duration", "0"},       {"--warmup=x"},          {"--backend", "kqueue"},
        {"--csv=yes"},             {"--port", "70000"},     {"--server-pid", "0"},
        {"--idle", "1e3"},         {"--duration", "nan"},   {"stray"},
        {"--mark=1"},              {"--udp", "--size=4"},   {"--udp", "--idle=1"},
        {"--udp", "--size=65508"}, {"--threads", "0"},     {"--threads", "65"},
        {"--threads=3", "--conns=2"},                       {"--udp", "--threads=2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_usage_error(bad[i]);

    echo_output o;
    const char *help[] = {"--help", NULL};
    run_bench(&o, help);
    expect_exit("--help", &o, 0);
    if (strstr(o.out, "--conns") == NULL || strstr(o.out, "--server-pid") == NULL)
        echo_fail("--help: expected the usage on stdout, got \"%.300s\"", o.out);
    echo_output_free(&o);
    echo_note("%zu bad command lines: exit 2 with a message and the usage; --help: exit 0",
              sizeof bad / sizeof bad[0]);
}

int main(int argc, char **argv)
{
    echo_init(argc, argv, 60);
    bench_path = echo_client_path; /* the harness's second program */
    atexit(wrong_server_stop);

    RUN_TEST(test_flags);
    echo_server_start(&srv, NULL);
    RUN_TEST(test_real_server_csv);
    RUN_TEST(test_real_server_json_and_text);
    RUN_TEST(test_host_name);
    RUN_TEST(test_mark_real_server);
    RUN_TEST(test_threads_real_server);
    echo_server_check_alive(&srv, "after the benchmarks");
    echo_server_stop_ok(&srv);
    RUN_TEST(test_wrong_servers);
    RUN_TEST(test_mark_on_the_wire);
    RUN_TEST(test_threads_wrong_server);
    RUN_TEST(test_threads_early_end);
    RUN_TEST(test_threads_merge);
    RUN_TEST(test_no_server);
    RUN_TEST(test_udp_real_server);
    RUN_TEST(test_udp_wrong_server);
    RUN_TEST(test_threads_udp);
    echo_note("ok");
    return 0;
}
