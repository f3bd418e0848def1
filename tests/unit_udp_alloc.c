/* Steady-state datagrams allocate nothing: after a warm-up, hundreds of
 * rounds of echoed bursts (receive buffers are the loop's; replies and
 * refused sends wait in records from the loop's pool) make no call to
 * malloc, calloc or realloc. Also with the send queue in use: a Unix
 * datagram pair whose reader is slower than its writer, so the kernel
 * refuses and evmux queues. This executable is linked with --wrap for the
 * three, so every allocation the library makes is counted. */
#include "alloc_count.h"
#include "unit_util.h"

#include <sys/socket.h>

#define BURST 32
#define WARMUP_ROUNDS 50
#define MEASURED_ROUNDS 500

static evmux_loop *loop;
static evmux_udp server, client;
static struct sockaddr_storage server_addr;
static socklen_t server_len;
static char payload[BURST][2000];
static unsigned replies, rounds, mismatches, sends_done;
static evmux_udp_send_req reqs[BURST];

static size_t size_of(unsigned i)
{
    return 1 + (i * 61 + rounds * 7) % 1999;
}

static void on_sent(evmux_udp_send_req *req, int status)
{
    (void)req;
    CHECK_EQ(status, 0);
    sends_done++;
}

static void start_round(void)
{
    replies = 0;
    for (unsigned i = 0; i < BURST; i++) {
        evmux_buf b = {payload[i], size_of(i)};
        CHECK_OK(evmux_udp_send(&reqs[i], &client, &b, 1, (struct sockaddr *)&server_addr,
                                server_len, on_sent));
    }
}

static void on_echo(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                    socklen_t from_len, unsigned flags)
{
    CHECK(nread > 0 && flags == 0);
    evmux_buf b = {buf, (size_t)nread};
    CHECK_OK(evmux_udp_send(NULL, u, &b, 1, from, from_len, NULL));
}

static void on_reply(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                     socklen_t from_len, unsigned flags)
{
    (void)u, (void)from, (void)from_len, (void)flags;
    CHECK(nread > 0);
    unsigned i = 0; /* datagrams may arrive in any order: find it by size */
    while (i < BURST && size_of(i) != (size_t)nread)
        i++;
    if (i == BURST || memcmp(buf, payload[i], (size_t)nread) != 0)
        mismatches++;
    if (++replies < BURST)
        return;
    rounds++;
    if (rounds == WARMUP_ROUNDS)
        allocations = 0;
    if (rounds < WARMUP_ROUNDS + MEASURED_ROUNDS)
        start_round();
}

static void test_echo_allocates_nothing(void)
{
    loop = unit_loop_new();
    for (unsigned i = 0; i < BURST; i++)
        memset(payload[i], 'a' + (int)i, sizeof payload[i]);
    struct sockaddr_storage any;
    socklen_t any_len;
    CHECK_OK(evmux_addr_ip("127.0.0.1", 0, &any, &any_len));
    CHECK_OK(evmux_udp_init(loop, &server));
    CHECK_OK(evmux_udp_bind(&server, (struct sockaddr *)&any, any_len, 0));
    CHECK_OK(evmux_udp_address(&server, &server_addr, &server_len));
    CHECK_OK(evmux_udp_init(loop, &client));
    CHECK_OK(evmux_udp_bind(&client, (struct sockaddr *)&any, any_len, 0));
    CHECK_OK(evmux_udp_recv_start(&server, on_echo));
    CHECK_OK(evmux_udp_recv_start(&client, on_reply));
    rounds = 0;
    start_round();
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 20000);
    while (rounds < WARMUP_ROUNDS + MEASURED_ROUNDS && !guard.fired)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    unsigned long measured = allocations;
    CHECK(!guard.fired); /* a lost datagram would stall a round: loopback loses none here */
    CHECK_EQ(mismatches, 0);
    CHECK_EQ(sends_done, (WARMUP_ROUNDS + MEASURED_ROUNDS) * BURST);
    if (measured != 0)
        fprintf(stderr, "%lu allocations in %d steady-state rounds\n", measured,
                MEASURED_ROUNDS);
    CHECK_EQ(measured, 0);
    unit_guard_close(&guard);
    CHECK_OK(evmux_close(&server.handle, NULL));
    CHECK_OK(evmux_close(&client.handle, NULL));
    unit_loop_finish(loop);
}

/* ---- the send queue ---- */

#define QUEUE_BURST 200
static unsigned long queue_received, queue_sent;
static evmux_udp writer, reader;

static void on_queue_read(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                          socklen_t from_len, unsigned flags)
{
    (void)u, (void)from, (void)from_len, (void)flags;
    CHECK_EQ(nread, 1000);
    if ((unsigned char)buf[0] != (unsigned char)(queue_received % 251))
        mismatches++; /* a connected pair keeps the order */
    queue_received++;
}

static void test_queue_allocates_nothing(void)
{
    loop = unit_loop_new();
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv) == 0);
    CHECK_OK(evmux_udp_init(loop, &writer));
    CHECK_OK(evmux_udp_open(&writer, sv[0]));
    CHECK_OK(evmux_udp_init(loop, &reader));
    CHECK_OK(evmux_udp_open(&reader, sv[1]));
    CHECK_OK(evmux_udp_recv_start(&reader, on_queue_read));
    mismatches = 0;
    queue_received = queue_sent = 0;
    size_t most_queued = 0;
    char bytes[1000];
    for (unsigned round = 0; round < WARMUP_ROUNDS + MEASURED_ROUNDS; round++) {
        if (round == WARMUP_ROUNDS)
            allocations = 0;
        /* More than the pair holds: the kernel refuses, evmux queues. */
        for (unsigned i = 0; i < QUEUE_BURST; i++) {
            memset(bytes, (int)(queue_sent % 251), sizeof bytes);
            evmux_buf b = {bytes, sizeof bytes};
            CHECK_OK(evmux_udp_send(NULL, &writer, &b, 1, NULL, 0, NULL));
            queue_sent++;
        }
        if (evmux_udp_queued_count(&writer) > most_queued)
            most_queued = evmux_udp_queued_count(&writer);
        while (queue_received < queue_sent)
            CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    }
    unsigned long measured = allocations;
    CHECK_EQ(mismatches, 0);
    CHECK(most_queued > 0);
    if (measured != 0)
        fprintf(stderr, "%lu allocations in %d steady-state rounds\n", measured,
                MEASURED_ROUNDS);
    CHECK_EQ(measured, 0);
    CHECK_OK(evmux_close(&writer.handle, NULL));
    CHECK_OK(evmux_close(&reader.handle, NULL));
    unit_loop_finish(loop);
}

int main(void)
{
    unit_watchdog(60);
    RUN_TEST(test_echo_allocates_nothing);
    RUN_TEST(test_queue_allocates_nothing);
    return 0;
}
