/* Many concurrent clients: 1 x 8 MiB, 100 x 512 KiB, 1000 x 32 KiB of
 * pseudo-random bytes (all 256 values) written in irregular chunks while
 * reading concurrently; every echoed byte is checked against the uppercase
 * of what was sent. With more than one client, each first sends a short
 * message and holds until every client has its echo, so all of them are
 * open on the server at once before the bulk of the data flows. */
#include "echo_harness.h"

#include <stdlib.h>
#include <sys/resource.h>

static echo_server srv;

static void on_barrier(echo_group *g)
{
    int fds = echo_proc_fd_count(srv.proc.pid);
    echo_note("%s: all %zu clients connected and echoed after %llu ms; server has %d fds open",
              g->o->what, g->n, (unsigned long long)echo_group_elapsed_ms(g), fds);
    /* Each client is one server descriptor, plus at least the listener. */
    if (fds < (int)g->n + 1)
        echo_fail("%s: server has only %d fds open with %zu clients connected", g->o->what, fds,
                  g->n);
}

static void run_clients(const char *what, size_t n, uint64_t bytes, size_t max_chunk,
                        int timeout_ms)
{
    echo_stream *s = calloc(n, sizeof *s);
    CHECK(s != NULL);
    for (size_t i = 0; i < n; i++) {
        s[i].fd = -1;
        s[i].seed = (uint64_t)n * 1000003u + i;
        s[i].total = bytes;
        s[i].max_chunk = max_chunk;
    }
    echo_group_opts o = {
        .what = what,
        .port = srv.port,
        .timeout_ms = timeout_ms,
        /* Do not overrun the listen backlog: a dropped SYN costs a 1 s retry. */
        .max_unconfirmed = 64,
        .barrier = n > 1,
        .on_barrier = on_barrier,
    };
    uint64_t t0 = echo_now_ms();
    double cpu0 = echo_proc_cpu_s(srv.proc.pid);
    echo_group_run(s, n, &o);
    uint64_t ms = echo_now_ms() - t0;
    echo_group_check_all_ok(s, n, what);
    echo_note("%s: %zu x %llu bytes echoed exactly in %llu ms (%.1f MiB/s each way), server CPU %.2f s",
              what, n, (unsigned long long)bytes, (unsigned long long)ms,
              (double)n * (double)bytes / 1048576.0 / ((double)(ms ? ms : 1) / 1000.0),
              echo_proc_cpu_s(srv.proc.pid) - cpu0);
    echo_server_check_alive(&srv, what);
    free(s);
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    echo_init(argc, argv, 200);
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < 1100)
        echo_fail("RLIMIT_NOFILE is %llu; 1000 clients need at least 1100",
                  (unsigned long long)rl.rlim_cur);

    echo_server_start(&srv, NULL);
    echo_note("server: %s", srv.line);
    int base_fds = echo_proc_fd_count(srv.proc.pid);

    run_clients("1 client x 8 MiB", 1, 8u << 20, 256u * 1024u, 60000);
    run_clients("100 clients x 512 KiB", 100, 512u * 1024u, 65536, 60000);
    run_clients("1000 clients x 32 KiB", 1000, 32u * 1024u, 16384, 90000);

    /* Every connection is closed on our side: the server must let go too. */
    int fds = echo_wait_fd_count(srv.proc.pid, base_fds, 5000);
    if (fds > base_fds)
        echo_fail("server still has %d fds open 5 s after all clients closed (baseline %d)", fds,
                  base_fds);
    echo_server_stop_ok(&srv);
    echo_note("done");
    return 0;
}
