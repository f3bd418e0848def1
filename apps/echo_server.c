/* evmux-echo-server: the select() echo server of the original text (quoted
 * in docs/io-models.md), done properly.
 *
 * Each byte a client sends comes back with a-z uppercased, in order
 * (echo_conn.c). One loop serves every client, or with --threads N, N
 * loops on N threads share them (echo_shard.c: SO_REUSEPORT listeners, or
 * one accepting loop handing connections to the least busy). SIGINT or
 * SIGTERM drains without loss, as a load balancer needs (echo_drain.c).
 * Also: a heavy handler, on the loop or on its worker pool (echo_work.c),
 * datagrams with --udp (echo_udp.c), and the PROXY protocol of the
 * balancer in front (echo_proxy.c).
 *
 * This file: start-up (address, loops, threads) and the summary at exit. */
#include "echo_server.h"

#include "first_address.h"

#include <errno.h>
#include <netdb.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* A socket path, an address literal, or a host name, resolved on the
 * loop's worker pool before anything else is on the loop. */
static int resolve(evmux_loop *loop, const struct options *opt, struct server *srv)
{
    struct first_address where = {.status = 0};
    int rc;
    if (opt->unix_path)
        rc = evmux_addr_unix(opt->unix_path, &where.addr, &where.len);
    else if (evmux_addr_ip(opt->host, opt->port, &where.addr, &where.len) == 0)
        rc = 0; /* also "[::1]", as people copy it from URLs */
    else
        rc = first_address(loop, opt->host, opt->port, opt->udp ? SOCK_DGRAM : SOCK_STREAM,
                           AI_PASSIVE, &where);
    srv->addr = where.addr;
    srv->addr_len = where.len;
    return rc;
}

/* Every connection is a descriptor: take all the system allows us. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* --pin: loop k on the k-th CPU this process may use (wrapping round). */
static void choose_cpus(struct server *srv)
{
    cpu_set_t set;
    int count = 0;
    if (srv->opt.pin && sched_getaffinity(0, sizeof set, &set) == 0)
        count = CPU_COUNT(&set);
    for (unsigned k = 0; k < srv->shard_count; k++) {
        srv->shards[k].cpu = -1;
        if (count == 0)
            continue;
        int nth = (int)(k % (unsigned)count);
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
            if (CPU_ISSET(cpu, &set) && nth-- == 0) {
                srv->shards[k].cpu = cpu;
                break;
            }
    }
}

static void print_listening(const struct server *srv)
{
    char where[256];
    if (evmux_addr_format((const struct sockaddr *)&srv->addr, srv->addr_len, where,
                          sizeof where) < 0)
        snprintf(where, sizeof where, "%s",
                 srv->opt.unix_path ? srv->opt.unix_path : srv->opt.host);
    /* Scripts read this line for the port: its form never changes. */
    printf("listening on %s (backend %s)\n", where, evmux_loop_backend(srv->shards[0].loop));
    fflush(stdout);
    if (srv->shard_count > 1)
        fprintf(stderr, "evmux-echo-server: %u loops, balance %s%s\n", srv->shard_count,
                srv->opt.udp || srv->opt.balance == BALANCE_REUSEPORT ? "reuseport" : "handoff",
                srv->opt.pin ? ", pinned" : "");
}

static void print_summary(const struct server *srv)
{
    unsigned long long served = 0, refused = 0, dropped = 0;
    char each[64 * 24] = "";
    size_t used = 0;
    for (unsigned k = 0; k < srv->shard_count; k++) {
        const struct shard *sh = &srv->shards[k];
        served += sh->served;
        refused += sh->refused;
        dropped += sh->dropped;
        if (srv->shard_count > 1 && used < sizeof each - 32)
            used += (size_t)snprintf(each + used, sizeof each - used, "%sloop %u: %llu",
                                     k == 0 ? " (" : ", ", k, sh->served);
    }
    if (srv->shard_count > 1)
        snprintf(each + used, sizeof each - used, ")");
    if (srv->opt.udp)
        fprintf(stderr, "evmux-echo-server: answered %llu datagrams, dropped %llu%s\n", served,
                dropped, each);
    else
        fprintf(stderr, "evmux-echo-server: served %llu connections, refused %llu%s\n", served,
                refused, each);
}

int main(int argc, char **argv)
{
    static struct server srv = {
        .opt = {.host = "127.0.0.1", .port = 8081, .backend = "auto", .threads = 1,
                .drain_idle_ms = 200, .drain_timeout_ms = 30000}};
    int status = parse_args(argc, argv, &srv.opt);
    if (status >= 0)
        return status;
    signal(SIGPIPE, SIG_IGN); /* belt and braces: evmux sends with MSG_NOSIGNAL */
    raise_fd_limit();
    srv.shard_count = srv.opt.threads;
    srv.shards = calloc(srv.shard_count, sizeof *srv.shards);
    if (srv.shards == NULL) {
        fprintf(stderr, "evmux-echo-server: out of memory\n");
        return 1;
    }
    for (unsigned k = 0; k < srv.shard_count; k++) {
        srv.shards[k].srv = &srv;
        srv.shards[k].index = k;
    }
    choose_cpus(&srv);
    pthread_mutex_init(&srv.life_mutex, NULL);
    srv.shards_running = srv.shard_count - 1;

    struct shard *first = &srv.shards[0];
    pin_self(first); /* before its loop and pool threads exist, which inherit it */
    if (shard_loop_new(first) < 0)
        return 1;
    int rc = resolve(first->loop, &srv.opt, &srv);
    if (rc < 0) {
        fprintf(stderr, "evmux-echo-server: bad address '%s': %s\n",
                srv.opt.unix_path ? srv.opt.unix_path : srv.opt.host,
                rc == -EINVAL ? "not an address or known host name" : evmux_strerror(rc));
        evmux_loop_free(first->loop);
        return 2;
    }
    /* Loop 0 listens first, so that port 0 becomes a port the others share. */
    if (shard_start(first) != 0 || shards_spawn(&srv) != 0)
        return 1; /* said why; threads already started end with the process */
    print_listening(&srv);

    rc = shard_run(first);
    shards_join(&srv);
    if (rc < 0)
        return 1;
    print_summary(&srv);
    shard_free(first);
    free(srv.shards);
    return 0;
}
