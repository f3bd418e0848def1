/* A client that writes and never reads. For 3 s it writes up to 64 MiB,
 * whatever its socket takes; the server must stop reading from it once it
 * owes it about 1 MiB, so:
 *  - the server's VmRSS grows by less than ~8 MiB;
 *  - by the last second the slow client cannot send any more (stalled);
 *  - a second client doing ping-pong round trips keeps getting exact echoes
 *    while the slow one is stalled;
 * then (after a 1 s idle look at the server's CPU use) the slow client
 * reads, and gets exactly the uppercase of everything its socket accepted,
 * in order. */
#include "echo_harness.h"

#include <stdlib.h>

#define SLOW_TOTAL (64ull << 20)
#define WRITE_MS 3000
#define STALL_FROM_MS 2000
#define IDLE_MS 1000

static echo_server srv;

static struct {
    echo_stream *slow, *fast;
    long rss_base, rss_max;
    int phase;
    uint64_t slow_sent_2s, slow_sent_3s;
    uint64_t fast_rt_2s, fast_rt_3s;
    double cpu_3s, cpu_4s;
} st;

static void tick(echo_group *g)
{
    uint64_t t = echo_group_elapsed_ms(g);
    long rss = echo_proc_rss_kib(srv.proc.pid);
    if (rss > st.rss_max)
        st.rss_max = rss;

    if (st.phase == 0 && t >= STALL_FROM_MS) {
        st.slow_sent_2s = st.slow->sent;
        st.fast_rt_2s = st.fast->roundtrips;
        st.phase = 1;
    } else if (st.phase == 1 && t >= WRITE_MS) {
        st.slow_sent_3s = st.slow->sent;
        st.fast_rt_3s = st.fast->roundtrips;
        echo_note("after %llu ms: slow client sent %.1f MiB (%.1f MiB in the last second), fast "
                  "client %llu round trips (%llu in the last second), server RSS %ld KiB (base %ld)",
                  (unsigned long long)t, (double)st.slow->sent / 1048576.0,
                  (double)(st.slow_sent_3s - st.slow_sent_2s) / 1048576.0,
                  (unsigned long long)st.fast_rt_3s,
                  (unsigned long long)(st.fast_rt_3s - st.fast_rt_2s), rss, st.rss_base);
        /* Stop the fast client; then watch the idle server for a while. */
        echo_stream_finish_sending(st.fast);
        st.cpu_3s = echo_proc_cpu_s(srv.proc.pid);
        st.phase = 2;
    } else if (st.phase == 2 && t >= WRITE_MS + IDLE_MS) {
        st.cpu_4s = echo_proc_cpu_s(srv.proc.pid);
        /* The slow client now reads everything it is owed. */
        echo_stream_finish_sending(st.slow);
        st.slow->mode &= ~(unsigned)ES_NO_READ;
        echo_stream_update(st.slow);
        st.phase = 3;
    }
}

int main(int argc, char **argv)
{
    echo_init(argc, argv, 150);
    echo_server_start(&srv, NULL);
    echo_note("server: %s", srv.line);

    /* Warm up, so the baseline includes the buffers of a normal client. */
    echo_stream warm = { .fd = -1, .seed = 1, .total = 2u << 20 };
    echo_group_opts wo = { .what = "warm-up", .port = srv.port, .timeout_ms = 20000 };
    echo_group_run(&warm, 1, &wo);
    echo_group_check_all_ok(&warm, 1, "warm-up");
    echo_sleep_ms(100);
    st.rss_base = st.rss_max = echo_proc_rss_kib(srv.proc.pid);
    CHECK(st.rss_base > 0);

    echo_stream s[2] = {
        { .fd = -1, .seed = 2, .total = SLOW_TOTAL, .mode = ES_NO_READ, .max_chunk = 256 * 1024 },
        { .fd = -1, .seed = 3, .total = 1ull << 40, .mode = ES_PINGPONG, .max_chunk = 16384 },
    };
    st.slow = &s[0];
    st.fast = &s[1];
    echo_group_opts o = {
        .what = "slow reader",
        .port = srv.port,
        .timeout_ms = 60000,
        .on_tick = tick,
        .tick_ms = 20,
    };
    uint64_t t0 = echo_now_ms();
    echo_group_run(s, 2, &o);
    echo_group_check_all_ok(s, 2, "slow reader + fast client");
    echo_note("slow client: %.2f MiB accepted by its socket, all echoed back exactly, %llu ms total",
              (double)s[0].total / 1048576.0, (unsigned long long)(echo_now_ms() - t0));

    long growth = st.rss_max - st.rss_base;
    /* Sanitizer allocators keep freed blocks in quarantine: allow more. */
    long limit_kib = ECHO_SANITIZED ? 32 * 1024 : 8 * 1024;
    echo_note("server VmRSS: base %ld KiB, max %ld KiB, growth %ld KiB (limit %ld KiB)", st.rss_base,
              st.rss_max, growth, limit_kib);
    if (growth >= limit_kib)
        echo_fail("server memory grew by %ld KiB while a client did not read (limit %ld KiB): "
                  "it keeps reading from a client it cannot write to",
                  growth, limit_kib);
    if (s[0].total >= SLOW_TOTAL)
        echo_fail("the never-reading client could send all %llu MiB: the server never stopped "
                  "reading from it",
                  SLOW_TOTAL >> 20);
    if (st.slow_sent_3s - st.slow_sent_2s > (1u << 20))
        echo_fail("the never-reading client still sent %.1f MiB in the last second of writing: "
                  "the server keeps reading from it",
                  (double)(st.slow_sent_3s - st.slow_sent_2s) / 1048576.0);
    if (st.fast_rt_3s - st.fast_rt_2s < 20)
        echo_fail("the other client got only %llu round trips in the second the slow one was "
                  "stalled",
                  (unsigned long long)(st.fast_rt_3s - st.fast_rt_2s));
    double idle_cpu = st.cpu_4s - st.cpu_3s;
    echo_note("server CPU during %d ms with only the stalled client: %.2f s", IDLE_MS, idle_cpu);
    /* A stalled client must cost no CPU: a level-triggered watcher left on
     * a descriptor the server does not service would spin. */
    if (idle_cpu > 0.5)
        echo_fail("the server used %.2f s CPU in %d ms with only a stalled client connected: "
                  "busy loop on a descriptor it does not service?",
                  idle_cpu, IDLE_MS);

    echo_server_check_alive(&srv, "after the slow reader");
    echo_server_stop_ok(&srv);
    echo_note("done");
    return 0;
}
