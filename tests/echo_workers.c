/* The heavy handler of the original text's third claim (quoted in
 * docs/io-models.md), with and without the pool.
 * With --work-us U, each 0x7F byte costs the server U us of CPU.
 *  - On the loop's thread (--workers 0), a heavy request stalls everyone:
 *    a light client's reply comes only after the heavy one.
 *  - On the pool (--workers N), a light client is answered while the heavy
 *    work runs, and the heavy reply still arrives whole and in order.
 *  - Many clients mixing heavy and light bytes get every byte back exactly,
 *    in order, on the pool.
 *  - SIGTERM while a job runs: its reply is still delivered, then EOF.
 *  - A client that resets while its job runs costs nothing but the job. */
#include "echo_harness.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char heavy_msg[] = "\x7fheavy work";
static const char heavy_reply[] = "\x7fHEAVY WORK";

static void start_server(echo_server *s, const char *work_us, const char *workers)
{
    const char *args[] = {"--work-us", work_us, "--workers", workers, NULL};
    echo_server_opts so = {.args = args};
    echo_server_start(s, &so);
}

/* Waits until the server has read everything `fd` sent. */
static void wait_server_read(echo_server *s, int fd, const char *what)
{
    uint64_t until = echo_now_ms() + 10000;
    while (echo_outq(fd) != 0 || echo_server_rx_queue(s->port, echo_local_port(fd)) != 0) {
        if (echo_now_ms() > until)
            echo_fail("%s: the server did not read what we sent", what);
        echo_sleep_ms(2);
    }
}

/* Sends the heavy request and waits until the server is working on it:
 * read from the socket is not enough (on io_uring the bytes may still wait
 * in a completion), so this watches the server's CPU time grow by 50 ms of
 * the job's hundreds. */
static void send_heavy_and_wait_busy(echo_server *s, int fd, const char *what)
{
    double cpu_before = echo_proc_cpu_s(s->proc.pid);
    CHECK_EQ(echo_send_all(fd, heavy_msg, sizeof heavy_msg - 1, 5000), 0);
    wait_server_read(s, fd, what);
    uint64_t until = echo_now_ms() + 20000;
    while (echo_proc_cpu_s(s->proc.pid) < cpu_before + 0.05) {
        if (echo_now_ms() > until)
            echo_fail("%s: the server never started the heavy work", what);
        echo_sleep_ms(5);
    }
}


/* No 0x7F in here: it costs the server nothing. (The harness's payloads
 * hold every byte value, so they are not light.) */
static int light_roundtrip(int fd)
{
    static const char msg[] = "a light message, answered at once";
    static const char want[] = "A LIGHT MESSAGE, ANSWERED AT ONCE";
    char got[sizeof want - 1];
    int rc = echo_send_all(fd, msg, sizeof msg - 1, 5000);
    if (rc == 0)
        rc = echo_recv_exact(fd, got, sizeof got, 30000);
    if (rc == 0 && memcmp(got, want, sizeof got) != 0)
        rc = -EBADMSG;
    return rc;
}

static void expect_heavy_reply(int fd, const char *what)
{
    char got[sizeof heavy_reply - 1];
    int rc = echo_recv_exact(fd, got, sizeof got, 30000);
    if (rc != 0)
        echo_fail("%s: heavy reply: %s", what, strerror(-rc));
    if (memcmp(got, heavy_reply, sizeof got) != 0)
        echo_fail("%s: heavy reply is \"%.*s\"", what, (int)sizeof got, got);
}

/* One heavy request of 1 s CPU, then a light round trip from another
 * client. */
static void test_light_client_during_heavy_work(int workers)
{
    char what[64];
    snprintf(what, sizeof what, "light during heavy, --workers %d", workers);
    echo_server s;
    start_server(&s, "1000000", workers ? "2" : "0");
    int heavy = echo_connect(s.port, 5000), light = echo_connect(s.port, 5000);
    CHECK(heavy >= 0 && light >= 0);
    CHECK_EQ(light_roundtrip(light), 0); /* connected and served */
    send_heavy_and_wait_busy(&s, heavy, what); /* the 1 s of work has begun */
    uint64_t t0 = echo_now_ms();
    int rc = light_roundtrip(light);
    if (rc != 0)
        echo_fail("%s: light round trip: %s", what, strerror(-rc));
    uint64_t light_ms = echo_now_ms() - t0;
    long heavy_waiting = echo_inq(heavy);
    if (workers) {
        /* Served while the job still ran: its reply is not here yet. */
        if (heavy_waiting != 0)
            echo_fail("%s: the light reply came after the heavy one (%ld bytes waiting)", what,
                      heavy_waiting);
    } else {
        /* The loop was busy: the heavy reply went out first. */
        if (heavy_waiting != (long)sizeof heavy_reply - 1)
            echo_fail("%s: expected the heavy reply before the light one, %ld bytes waiting",
                      what, heavy_waiting);
    }
    expect_heavy_reply(heavy, what);
    echo_note("%s: light round trip took %llu ms", what, (unsigned long long)light_ms);
    close(heavy);
    close(light);
    echo_server_stop_ok(&s);
}

/* Streams of pseudo-random bytes hold 0x7F about once in 256 bytes: here
 * each one costs 20 us, and the pool must keep every stream in order. */
static void test_many_mixed_clients(void)
{
    enum { N = 24 };
    echo_server s;
    start_server(&s, "20", "3");
    echo_stream streams[N];
    memset(streams, 0, sizeof streams);
    for (size_t i = 0; i < N; i++) {
        streams[i].fd = -1;
        streams[i].seed = 7000 + i;
        streams[i].total = 96 * 1024 + i * 1111;
        streams[i].max_chunk = 1 + (i * 997) % 8192;
        streams[i].mode = i % 3 == 0 ? ES_PINGPONG : 0;
    }
    echo_group_opts go = {.what = "mixed clients on the pool", .port = s.port,
                          .timeout_ms = 120000};
    echo_group_run(streams, N, &go);
    echo_group_check_all_ok(streams, N, go.what);
    echo_server_check_alive(&s, go.what);
    echo_server_stop_ok(&s);
}

static void test_sigterm_during_job(void)
{
    const char *what = "SIGTERM while a job runs";
    echo_server s;
    start_server(&s, "300000", "1");
    int fd = echo_connect(s.port, 5000);
    CHECK(fd >= 0);
    send_heavy_and_wait_busy(&s, fd, what);
    CHECK(kill(s.proc.pid, SIGTERM) == 0);
    expect_heavy_reply(fd, what);
    int rc = echo_recv_eof(fd, 10000);
    if (rc != 0)
        echo_fail("%s: expected EOF after the reply: %s", what, strerror(-rc));
    close(fd);
    echo_server_expect_exit0(&s, what, 10000);
}

/* A second SIGTERM stops waiting for slow peers: a job of 10 s of CPU
 * gives up, and the server exits long before it would have ended. */
static void test_second_sigterm_ends_job(void)
{
    const char *what = "second SIGTERM while a 10 s job runs";
    echo_server s;
    start_server(&s, "10000000", "1");
    int fd = echo_connect(s.port, 5000);
    CHECK(fd >= 0);
    send_heavy_and_wait_busy(&s, fd, what);
    uint64_t t0 = echo_now_ms();
    CHECK(kill(s.proc.pid, SIGTERM) == 0);
    echo_sleep_ms(100);
    CHECK(kill(s.proc.pid, SIGTERM) == 0);
    echo_server_expect_exit0(&s, what, 8000);
    echo_note("%s: exit 0 after %llu ms", what, (unsigned long long)(echo_now_ms() - t0));
    close(fd);
}

static void test_reset_during_job(void)
{
    const char *what = "reset while a job runs";
    echo_server s;
    start_server(&s, "200000", "2");
    for (int i = 0; i < 4; i++) {
        int fd = echo_connect(s.port, 5000);
        CHECK(fd >= 0);
        CHECK_EQ(echo_send_all(fd, heavy_msg, sizeof heavy_msg - 1, 5000), 0);
        wait_server_read(&s, fd, what);
        echo_close_reset(fd);
    }
    /* Served as before once the orphaned jobs end. */
    int fd = echo_connect(s.port, 5000);
    CHECK(fd >= 0);
    CHECK_EQ(echo_send_all(fd, heavy_msg, sizeof heavy_msg - 1, 5000), 0);
    expect_heavy_reply(fd, what);
    CHECK_EQ(light_roundtrip(fd), 0);
    close(fd);
    echo_server_check_alive(&s, what);
    echo_server_stop_ok(&s);
}

int main(int argc, char **argv)
{
    echo_init(argc, argv, 240);
    RUN_TEST(test_many_mixed_clients);
    test_light_client_during_heavy_work(1);
    test_light_client_during_heavy_work(0);
    RUN_TEST(test_sigterm_during_job);
    RUN_TEST(test_second_sigterm_ends_job);
    RUN_TEST(test_reset_during_job);
    return 0;
}
