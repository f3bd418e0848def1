/* Steady-state streaming allocates nothing: after a warm-up, hundreds of
 * rounds of vectored writes that overflow the socket buffer (so the rest is
 * queued in chunks) and echoes of every read make no call to malloc, calloc
 * or realloc. This executable is linked with --wrap for those three, so
 * every allocation made by the library is counted. */
#include "alloc_count.h"
#include "unit_util.h"

#include <sys/socket.h>

#define PIECE 70000u /* three pieces a round: about 200 KiB, many chunks */
#define WARMUP_ROUNDS 40
#define MEASURED_ROUNDS 400

static unsigned char pattern[3 * PIECE];
static evmux_stream client, echoer;
static evmux_write_req round_req;
static size_t received, expected;
static int rounds, mismatches;

static void start_round(void)
{
    evmux_buf bufs[3] = {
        {pattern, PIECE}, {pattern + PIECE, PIECE}, {pattern + 2 * PIECE, PIECE}};
    received = 0;
    expected = sizeof pattern;
    CHECK_OK(evmux_stream_write(&round_req, &client, bufs, 3, NULL));
}

static void on_echo_read(evmux_stream *s, ssize_t nread, char *buf)
{
    CHECK(nread > 0);
    evmux_buf b = {buf, (size_t)nread};
    CHECK_OK(evmux_stream_write(NULL, s, &b, 1, NULL));
}

static void on_client_read(evmux_stream *s, ssize_t nread, char *buf)
{
    (void)s;
    CHECK(nread > 0);
    if (memcmp(buf, pattern + received, (size_t)nread) != 0)
        mismatches++;
    received += (size_t)nread;
    CHECK(received <= expected);
    if (received < expected)
        return;
    rounds++;
    if (rounds == WARMUP_ROUNDS)
        allocations = 0;
    if (rounds < WARMUP_ROUNDS + MEASURED_ROUNDS)
        start_round();
}

static void test_streaming_allocates_nothing(void)
{
    evmux_loop *loop = unit_loop_new();
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    /* Small kernel buffers: most of every write must be queued by evmux. */
    int small = 16 * 1024;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (unsigned char)(i * 7 + (i >> 9));

    CHECK_OK(evmux_stream_init(loop, &client));
    CHECK_OK(evmux_stream_open(&client, sv[0]));
    CHECK_OK(evmux_stream_init(loop, &echoer));
    CHECK_OK(evmux_stream_open(&echoer, sv[1]));
    CHECK_OK(evmux_stream_read_start(&client, on_client_read));
    CHECK_OK(evmux_stream_read_start(&echoer, on_echo_read));
    start_round();

    while (rounds < WARMUP_ROUNDS + MEASURED_ROUNDS)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    unsigned long measured = allocations;

    CHECK_EQ(mismatches, 0);
    if (measured != 0)
        fprintf(stderr, "%lu allocations in %d steady-state rounds\n", measured,
                MEASURED_ROUNDS);
    CHECK_EQ(measured, 0);

    evmux_close(&client.handle, NULL);
    evmux_close(&echoer.handle, NULL);
    unit_loop_finish(loop);
}

int main(void)
{
    unit_watchdog(60);
    RUN_TEST(test_streaming_allocates_nothing);
    return 0;
}
