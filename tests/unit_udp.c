/* Datagram handles on every backend: datagrams of every size echoed
 * byte-exact (IPv4 and IPv6), truncation, an ICMP port-unreachable on a
 * connected socket, multicast on loopback, a 100,000-datagram burst,
 * close with sends pending, stops and restarts that lose nothing, the
 * kernel's offloads, and clear errors for bad calls. */
#include "unit_util.h"
#include "ipv6_loopback.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>

static evmux_loop *loop;

static socklen_t ip_addr(const char *ip, unsigned port, struct sockaddr_storage *ss)
{
    socklen_t len;
    CHECK_OK(evmux_addr_ip(ip, port, ss, &len));
    return len;
}

static void bound(evmux_udp *u, const char *ip, struct sockaddr_storage *addr, socklen_t *len)
{
    struct sockaddr_storage any;
    socklen_t any_len = ip_addr(ip, 0, &any);
    CHECK_OK(evmux_udp_init(loop, u));
    CHECK_OK(evmux_udp_bind(u, (struct sockaddr *)&any, any_len, 0));
    CHECK_OK(evmux_udp_address(u, addr, len));
}

/* A receiver and a sender on 127.0.0.1, on a new loop. */
static void open_pair(evmux_udp *rx, struct sockaddr_storage *rx_addr, socklen_t *rx_len,
                      evmux_udp *tx)
{
    loop = unit_loop_new();
    struct sockaddr_storage tx_addr;
    socklen_t tx_len;
    bound(rx, "127.0.0.1", rx_addr, rx_len);
    bound(tx, "127.0.0.1", &tx_addr, &tx_len);
}

static void close_pair(evmux_udp *rx, evmux_udp *tx)
{
    CHECK_OK(evmux_close(&rx->handle, NULL));
    CHECK_OK(evmux_close(&tx->handle, NULL));
    unit_loop_finish(loop);
}

static void fill_pattern(char *p, size_t n, unsigned seed)
{
    uint32_t state = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++)
        p[i] = (char)unit_rand(&state);
}

/* ---- an echo server: every datagram goes back to its sender ---- */

static evmux_udp server;
static unsigned long server_got;

static void on_server_recv(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                           socklen_t from_len, unsigned flags)
{
    CHECK(nread >= 0);
    CHECK(from != NULL && from_len > 0);
    CHECK_EQ(flags, 0);
    server_got++;
    evmux_buf b = {buf, (size_t)nread};
    CHECK_OK(evmux_udp_send(NULL, u, &b, 1, from, from_len, NULL));
}

/* ---- the client side of echo tests ---- */

static const size_t sizes[] = {0, 1, 1472, 8192, 65507};
#define NSIZES (sizeof sizes / sizeof sizes[0])
static char sent_bytes[NSIZES][65507];
static unsigned replies, send_reports[NSIZES];
static struct sockaddr_storage server_addr;
static socklen_t server_len;

static void on_client_recv(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                           socklen_t from_len, unsigned flags)
{
    (void)u;
    CHECK(nread >= 0);
    CHECK_EQ(flags, 0);
    CHECK_EQ(from_len, server_len);
    CHECK(memcmp(from, &server_addr, from_len) == 0);
    /* Datagrams may come back in any order: find ours by size. */
    size_t i = 0;
    while (i < NSIZES && sizes[i] != (size_t)nread)
        i++;
    CHECK(i < NSIZES);
    CHECK(memcmp(buf, sent_bytes[i], (size_t)nread) == 0);
    if (++replies == NSIZES)
        evmux_stop(loop);
}

static void on_sent(evmux_udp_send_req *req, int status)
{
    CHECK_EQ(status, 0);
    send_reports[(size_t)(uintptr_t)req->data]++;
}

static void echo_sizes(const char *ip)
{
    loop = unit_loop_new();
    server_got = replies = 0;
    memset(send_reports, 0, sizeof send_reports);
    bound(&server, ip, &server_addr, &server_len);
    CHECK_OK(evmux_udp_recv_start(&server, on_server_recv));
    evmux_udp client;
    struct sockaddr_storage client_addr;
    socklen_t client_len;
    bound(&client, ip, &client_addr, &client_len);
    CHECK_OK(evmux_udp_recv_start(&client, on_client_recv));
    evmux_udp_send_req reqs[NSIZES];
    for (size_t i = 0; i < NSIZES; i++) {
        fill_pattern(sent_bytes[i], sizes[i], (unsigned)i + 1);
        evmux_buf b = {sent_bytes[i], sizes[i]};
        reqs[i].data = (void *)(uintptr_t)i;
        CHECK_OK(evmux_udp_send(&reqs[i], &client, &b, 1, (struct sockaddr *)&server_addr,
                                server_len, on_sent));
        CHECK_EQ(send_reports[i], 0); /* never inside the call */
    }
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 5000);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK(!guard.fired);
    CHECK_EQ(replies, NSIZES);
    CHECK_EQ(server_got, NSIZES);
    for (size_t i = 0; i < NSIZES; i++)
        CHECK_EQ(send_reports[i], 1);
    unit_guard_close(&guard);
    CHECK_OK(evmux_close(&client.handle, NULL));
    CHECK_OK(evmux_close(&server.handle, NULL));
    unit_loop_finish(loop);
}

static void test_echo_sizes_ipv4(void)
{
    echo_sizes("127.0.0.1");
}

static void test_echo_sizes_ipv6(void)
{
    if (!have_ipv6_loopback())
        UNIT_SKIP("no IPv6 loopback");
    echo_sizes("::1");
}

/* ---- truncation ---- */

static size_t got_len;
static unsigned got_flags, got_count;

static void on_record(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                      socklen_t from_len, unsigned flags)
{
    (void)u, (void)from, (void)from_len;
    CHECK(nread >= 0);
    for (ssize_t i = 0; i < nread; i++)
        CHECK_EQ((unsigned char)buf[i], (unsigned char)(i % 251));
    got_len = (size_t)nread;
    got_flags = flags;
    got_count++;
    evmux_stop(loop);
}

static void send_and_wait(evmux_udp *from, size_t len, const struct sockaddr_storage *to,
                          socklen_t to_len)
{
    static char bytes[65507];
    for (size_t i = 0; i < len; i++)
        bytes[i] = (char)(i % 251);
    evmux_buf b = {bytes, len};
    unsigned before = got_count;
    CHECK_OK(evmux_udp_send(NULL, from, &b, 1, (const struct sockaddr *)to, to_len, NULL));
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 5000);
    while (got_count == before && !guard.fired)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK(!guard.fired);
    unit_guard_close(&guard);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT)); /* its close callback: the guard is ours again */
}

static void test_truncation(void)
{
    evmux_udp rx, tx;
    struct sockaddr_storage rx_addr;
    socklen_t rx_len;
    open_pair(&rx, &rx_addr, &rx_len, &tx);
    CHECK_EQ(evmux_udp_set_recv_size(&rx, 0), -EINVAL);
    CHECK_EQ(evmux_udp_set_recv_size(&rx, 65537), -EINVAL);
    CHECK_OK(evmux_udp_recv_start(&rx, on_record));
    send_and_wait(&tx, 65507, &rx_addr, rx_len); /* the default takes any datagram */
    CHECK_EQ(got_len, 65507);
    CHECK_EQ(got_flags, 0);
    CHECK_OK(evmux_udp_set_recv_size(&rx, 100));
    send_and_wait(&tx, 1000, &rx_addr, rx_len);
    CHECK_EQ(got_len, 100);
    CHECK_EQ(got_flags, EVMUX_UDP_TRUNCATED);
    send_and_wait(&tx, 100, &rx_addr, rx_len); /* exactly the size: whole */
    CHECK_EQ(got_len, 100);
    CHECK_EQ(got_flags, 0);
    send_and_wait(&tx, 0, &rx_addr, rx_len);
    CHECK_EQ(got_len, 0);
    CHECK_EQ(got_flags, 0);
    close_pair(&rx, &tx);
}

/* ---- a connected socket hears of a closed port ---- */

static int refused_recv, refused_send, refused_other;

static void on_refused_recv(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                            socklen_t from_len, unsigned flags)
{
    (void)u, (void)buf, (void)from, (void)from_len, (void)flags;
    if (nread == -ECONNREFUSED)
        refused_recv++;
    else
        refused_other++;
    evmux_stop(loop);
}

static void on_refused_send(evmux_udp_send_req *req, int status)
{
    (void)req;
    if (status == -ECONNREFUSED) {
        refused_send++;
        evmux_stop(loop);
    } else if (status != 0) {
        refused_other++;
    }
}

static void test_connected_refused(void)
{
    loop = unit_loop_new();
    /* A port nobody has: bound, then closed. */
    evmux_udp gone;
    struct sockaddr_storage gone_addr;
    socklen_t gone_len;
    bound(&gone, "127.0.0.1", &gone_addr, &gone_len);
    CHECK_OK(evmux_close(&gone.handle, NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));

    evmux_udp u;
    CHECK_OK(evmux_udp_init(loop, &u));
    CHECK_OK(evmux_udp_connect(&u, (struct sockaddr *)&gone_addr, gone_len));
    struct sockaddr_storage peer;
    socklen_t peer_len;
    CHECK_OK(evmux_udp_peer(&u, &peer, &peer_len));
    CHECK_EQ(peer_len, gone_len);
    CHECK(memcmp(&peer, &gone_addr, gone_len) == 0);
    CHECK_OK(evmux_udp_recv_start(&u, on_refused_recv));
    refused_recv = refused_send = refused_other = 0;
    /* The ICMP report reaches whichever asks first: the receive, or the
     * next send. Either way the program hears -ECONNREFUSED. */
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 5000);
    /* Paced: the kernel's ICMP replies share a global budget (about 1000
     * a second) with every other test sending to closed ports meanwhile. */
    evmux_udp_send_req reqs[50];
    for (int i = 0; i < 50 && refused_recv + refused_send == 0 && !guard.fired; i++) {
        evmux_buf b = {"ping", 4};
        CHECK_OK(evmux_udp_send(&reqs[i], &u, &b, 1, NULL, 0, on_refused_send));
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
        CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
        if (refused_recv + refused_send == 0) {
            unit_sleep_ms(20);
            CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
        }
    }
    CHECK(!guard.fired);
    CHECK(refused_recv + refused_send > 0);
    CHECK_EQ(refused_other, 0);
    unit_guard_close(&guard);
    CHECK_OK(evmux_close(&u.handle, NULL));
    unit_loop_finish(loop);
}

/* ---- multicast on loopback ---- */

static void test_multicast(void)
{
    loop = unit_loop_new();
    evmux_udp rx, tx;
    struct sockaddr_storage any;
    socklen_t any_len = ip_addr("0.0.0.0", 0, &any);
    CHECK_OK(evmux_udp_init(loop, &rx));
    CHECK_OK(evmux_udp_bind(&rx, (struct sockaddr *)&any, any_len, EVMUX_UDP_REUSEADDR));
    struct sockaddr_storage rx_addr;
    socklen_t rx_len;
    CHECK_OK(evmux_udp_address(&rx, &rx_addr, &rx_len));
    unsigned port = ntohs(((struct sockaddr_in *)&rx_addr)->sin_port);
    CHECK_EQ(evmux_udp_set_membership(&rx, "10.0.0.1", "lo", 1), -EINVAL); /* not a group */
    CHECK_EQ(evmux_udp_set_membership(&rx, "239.255.0.1", "no-such-if0", 1), -ENODEV);
    int rc = evmux_udp_set_membership(&rx, "239.255.0.1", "lo", 1);
    /* Bound to 127.0.0.1, which is then the datagrams' source (else the
     * kernel picks the host's first address). */
    struct sockaddr_storage local;
    socklen_t local_len = ip_addr("127.0.0.1", 0, &local);
    CHECK_OK(evmux_udp_init(loop, &tx));
    CHECK_OK(evmux_udp_bind(&tx, (struct sockaddr *)&local, local_len, 0));
    int tx_rc = rc == 0 ? evmux_udp_set_multicast_interface(&tx, "lo") : rc;
    if (rc != 0 || tx_rc != 0) {
        fprintf(stderr, "multicast join on lo: %s\n", evmux_strerror(rc != 0 ? rc : tx_rc));
        CHECK_OK(evmux_close(&rx.handle, NULL));
        CHECK_OK(evmux_close(&tx.handle, NULL));
        unit_loop_finish(loop);
        UNIT_SKIP("the kernel refuses multicast on loopback here");
    }
    CHECK_OK(evmux_udp_set_multicast_loop(&tx, 1));
    CHECK_OK(evmux_udp_set_multicast_ttl(&tx, 1));
    CHECK_EQ(evmux_udp_set_multicast_ttl(&tx, 0), -EINVAL);
    CHECK_OK(evmux_udp_recv_start(&rx, on_record));
    struct sockaddr_storage group;
    socklen_t group_len = ip_addr("239.255.0.1", port, &group);
    got_count = 0;
    send_and_wait(&tx, 300, &group, group_len);
    CHECK_EQ(got_len, 300);
    /* Left: nothing more arrives. */
    CHECK_OK(evmux_udp_set_membership(&rx, "239.255.0.1", "lo", 0));
    /* Source-specific: only 127.0.0.1's datagrams, which ours are. */
    CHECK_OK(evmux_udp_set_source_membership(&rx, "232.1.1.1", "lo", "127.0.0.1", 1));
    socklen_t ssm_len = ip_addr("232.1.1.1", port, &group);
    send_and_wait(&tx, 200, &group, ssm_len);
    CHECK_EQ(got_len, 200);
    CHECK_OK(evmux_udp_set_source_membership(&rx, "232.1.1.1", "lo", "127.0.0.1", 0));
    close_pair(&rx, &tx);
}

/* ---- a burst: loss allowed and counted, memory bounded ---- */

#define BURST_TOTAL 100000
#define BURST_STEP 2000
static unsigned long burst_got;

static void on_burst_recv(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                          socklen_t from_len, unsigned flags)
{
    (void)u, (void)buf, (void)from, (void)from_len;
    CHECK_EQ(nread, 64);
    CHECK_EQ(flags, 0);
    burst_got++;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL);
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void test_burst(void)
{
    evmux_udp rx, tx;
    struct sockaddr_storage rx_addr;
    socklen_t rx_len;
    open_pair(&rx, &rx_addr, &rx_len, &tx);
    CHECK_OK(evmux_udp_recv_start(&rx, on_burst_recv));
    burst_got = 0;
    char payload[64];
    memset(payload, 'b', sizeof payload);
    evmux_buf b = {payload, sizeof payload};
    unsigned long sent = 0, failed = 0;
    long rss_start = 0;
    size_t most_queued = 0;
    while (sent + failed < BURST_TOTAL) {
        /* Each step queues a burst with no room to pace it. */
        for (int i = 0; i < BURST_STEP; i++)
            CHECK_OK(evmux_udp_send(NULL, &tx, &b, 1, (struct sockaddr *)&rx_addr, rx_len, NULL));
        sent += BURST_STEP;
        if (evmux_udp_queued_count(&tx) > most_queued)
            most_queued = evmux_udp_queued_count(&tx);
        CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
        if (sent == 10 * BURST_STEP)
            rss_start = rss_kib(); /* warmed up */
    }
    /* What is still queued leaves, and what arrives is read. */
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 200);
    while (!guard.fired)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    unit_guard_close(&guard);
    long rss_end = rss_kib();
    fprintf(stderr, "burst: %lu sent, %lu received, %lu lost (%.1f%%); queue peaked at %zu; "
                    "RSS %ld -> %ld KiB\n",
            sent, burst_got, sent - burst_got, 100.0 * (double)(sent - burst_got) / (double)sent,
            most_queued, rss_start, rss_end);
    CHECK(burst_got > 0 && burst_got <= sent);
    CHECK_EQ(evmux_udp_queued_count(&tx), 0);
    CHECK_EQ(evmux_udp_queued(&tx), 0);
    CHECK(most_queued <= 4 * BURST_STEP); /* the loop keeps up: no growth with the total */
    CHECK(rss_end - rss_start < 32 * 1024); /* bounded by the queue, not the total */
    close_pair(&rx, &tx);
}

/* ---- close with sends pending ---- */

#define PENDING_MAX 4096
static int pending_status[PENDING_MAX];
static unsigned pending_calls[PENDING_MAX];

static void on_pending_sent(evmux_udp_send_req *req, int status)
{
    size_t i = (size_t)(uintptr_t)req->data;
    pending_calls[i]++;
    pending_status[i] = status;
}

static void test_close_with_sends_pending(void)
{
    loop = unit_loop_new();
    int sv[2];
    /* A Unix datagram pair whose reader never reads: the kernel refuses
     * once its queue is full, and the rest waits in ours. */
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    evmux_udp u;
    CHECK_OK(evmux_udp_init(loop, &u));
    CHECK_OK(evmux_udp_open(&u, sv[0]));
    CHECK_EQ(evmux_udp_fd(&u), sv[0]);
    CHECK_EQ(evmux_udp_set_ttl(&u, 5), -ENOTSUP);
    static evmux_udp_send_req reqs[PENDING_MAX];
    char payload[1024];
    memset(payload, 'p', sizeof payload);
    evmux_buf b = {payload, sizeof payload};
    size_t n = 0;
    memset(pending_calls, 0, sizeof pending_calls);
    /* Send until the kernel has refused some (queued after a run). */
    while (n < PENDING_MAX - 8) {
        reqs[n].data = (void *)(uintptr_t)n;
        CHECK_OK(evmux_udp_send(&reqs[n], &u, &b, 1, NULL, 0, on_pending_sent));
        n++;
        if (n % 16 == 0) {
            CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
            if (evmux_udp_queued_count(&u) > 0)
                break;
        }
    }
    CHECK(evmux_udp_queued_count(&u) > 0);
    CHECK(evmux_udp_queued(&u) == evmux_udp_queued_count(&u) * sizeof payload);
    for (int extra = 0; extra < 8; extra++, n++) {
        reqs[n].data = (void *)(uintptr_t)n;
        CHECK_OK(evmux_udp_send(&reqs[n], &u, &b, 1, NULL, 0, on_pending_sent));
    }
    CHECK_OK(evmux_close(&u.handle, NULL));
    CHECK_EQ(evmux_udp_fd(&u), -1);
    unit_loop_finish(loop);
    /* Every callback once; what the reader can read is what reported 0. */
    size_t ok = 0, cancelled = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ(pending_calls[i], 1);
        CHECK(pending_status[i] == 0 || pending_status[i] == -ECANCELED);
        ok += pending_status[i] == 0;
        cancelled += pending_status[i] == -ECANCELED;
    }
    CHECK(cancelled > 0);
    size_t delivered = 0;
    char buf[2048];
    while (recv(sv[1], buf, sizeof buf, MSG_DONTWAIT) == (ssize_t)sizeof payload)
        delivered++;
    CHECK_EQ(delivered, ok);
    close(sv[1]);
}

/* ---- stopping inside a burst loses nothing ---- */

#define STOP_BURST 20
static unsigned stop_seen;
static int stop_order_ok;

static void on_stop_recv(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                         socklen_t from_len, unsigned flags)
{
    (void)from, (void)from_len, (void)flags;
    CHECK_EQ(nread, 1);
    if ((unsigned char)buf[0] != stop_seen)
        stop_order_ok = 0;
    stop_seen++;
    CHECK_OK(evmux_udp_recv_stop(u)); /* one per start */
    evmux_stop(loop);
}

static void test_stop_in_burst(void)
{
    evmux_udp rx, tx;
    struct sockaddr_storage rx_addr;
    socklen_t rx_len;
    open_pair(&rx, &rx_addr, &rx_len, &tx);
    for (unsigned i = 0; i < STOP_BURST; i++) {
        char byte = (char)i;
        evmux_buf b = {&byte, 1};
        CHECK_OK(evmux_udp_send(NULL, &tx, &b, 1, (struct sockaddr *)&rx_addr, rx_len, NULL));
    }
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT)); /* they all reach rx's socket */
    stop_seen = 0;
    stop_order_ok = 1;
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 5000);
    while (stop_seen < STOP_BURST && !guard.fired) {
        unsigned before = stop_seen;
        CHECK_OK(evmux_udp_recv_start(&rx, on_stop_recv));
        while (stop_seen == before && !guard.fired)
            CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
        /* Stopped: a few iterations bring nothing more. */
        CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
        CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
        CHECK_EQ(stop_seen, before + 1);
    }
    CHECK(!guard.fired);
    CHECK_EQ(stop_seen, STOP_BURST);
    CHECK(stop_order_ok);
    unit_guard_close(&guard);
    close_pair(&rx, &tx);
}

/* ---- segmentation and receive offload ---- */

static char gso_bytes[10000];
static unsigned gso_count;
static size_t gso_total;
static int gso_ok;

static void on_gro_recv(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                        socklen_t from_len, unsigned flags)
{
    (void)u, (void)from, (void)from_len;
    CHECK_EQ(flags, 0);
    size_t expect = sizeof gso_bytes - gso_total < 1000 ? sizeof gso_bytes - gso_total : 1000;
    if ((size_t)nread != expect || memcmp(buf, gso_bytes + gso_total, expect) != 0)
        gso_ok = 0;
    gso_total += (size_t)nread;
    if (++gso_count == 10)
        evmux_stop(loop);
}

static void test_gso_gro(void)
{
    evmux_udp rx, tx;
    struct sockaddr_storage rx_addr;
    socklen_t rx_len;
    open_pair(&rx, &rx_addr, &rx_len, &tx);
    int rc = evmux_udp_set_gso(&tx, 1000);
    int rc2 = evmux_udp_set_gro(&rx, 1);
    if (rc == -ENOTSUP || rc2 == -ENOTSUP) {
        CHECK_OK(evmux_close(&rx.handle, NULL));
        CHECK_OK(evmux_close(&tx.handle, NULL));
        unit_loop_finish(loop);
        UNIT_SKIP("no UDP_SEGMENT / UDP_GRO in this kernel");
    }
    CHECK_OK(rc);
    CHECK_OK(rc2);
    CHECK_EQ(evmux_udp_set_gso(&tx, 70000), -EINVAL);
    fill_pattern(gso_bytes, sizeof gso_bytes, 7);
    gso_count = 0;
    gso_total = 0;
    gso_ok = 1;
    CHECK_OK(evmux_udp_recv_start(&rx, on_gro_recv));
    /* One send of 10,000 bytes leaves as ten datagrams of 1,000; they may
     * arrive as one GRO train, which the callback must see as ten. */
    evmux_buf b = {gso_bytes, sizeof gso_bytes};
    CHECK_OK(evmux_udp_send(NULL, &tx, &b, 1, (struct sockaddr *)&rx_addr, rx_len, NULL));
    struct unit_guard guard;
    unit_guard_start(loop, &guard, 5000);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK(!guard.fired);
    unit_guard_close(&guard);
    CHECK_EQ(gso_count, 10);
    CHECK_EQ(gso_total, sizeof gso_bytes);
    CHECK(gso_ok);
    close_pair(&rx, &tx);
}

/* ---- a send callback that sends again does not hold the loop ---- */

static evmux_udp chain_tx;
static struct sockaddr_storage chain_to;
static socklen_t chain_to_len;
static unsigned long chain_sends;
static int chain_timer_fired;

static void on_chain_sent(evmux_udp_send_req *req, int status)
{
    CHECK_EQ(status, 0);
    chain_sends++;
    if (chain_timer_fired)
        return;
    evmux_buf b = {"x", 1};
    CHECK_OK(evmux_udp_send(req, &chain_tx, &b, 1, (struct sockaddr *)&chain_to, chain_to_len,
                            on_chain_sent));
}

static void on_chain_timer(evmux_timer *t)
{
    chain_timer_fired = 1;
    CHECK_OK(evmux_close(&t->handle, NULL));
}

static void test_send_from_send_callback(void)
{
    loop = unit_loop_new();
    evmux_udp rx;
    struct sockaddr_storage tx_addr;
    socklen_t tx_len;
    bound(&rx, "127.0.0.1", &chain_to, &chain_to_len);
    bound(&chain_tx, "127.0.0.1", &tx_addr, &tx_len);
    chain_sends = 0;
    chain_timer_fired = 0;
    evmux_timer timer;
    CHECK_OK(evmux_timer_init(loop, &timer, on_chain_timer));
    CHECK_OK(evmux_timer_start(&timer, 20, 0));
    /* Each callback sends the next datagram at once: nothing refuses on
     * loopback, so on a readiness backend each report is owed at once.
     * They must wait for the next pass, or the timer never gets a turn. */
    evmux_udp_send_req req;
    evmux_buf b = {"x", 1};
    CHECK_OK(evmux_udp_send(&req, &chain_tx, &b, 1, (struct sockaddr *)&chain_to, chain_to_len,
                            on_chain_sent));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* ends once the chain stops */
    CHECK(chain_timer_fired);
    CHECK(chain_sends > 1);
    CHECK_OK(evmux_close(&rx.handle, NULL));
    CHECK_OK(evmux_close(&chain_tx.handle, NULL));
    unit_loop_finish(loop);
}

/* ---- errors ---- */

static int msgsize_status = 1;

static void on_msgsize(evmux_udp_send_req *req, int status)
{
    (void)req;
    msgsize_status = status;
}

static void test_errors(void)
{
    loop = unit_loop_new();
    evmux_udp u;
    struct sockaddr_storage addr;
    socklen_t len = ip_addr("127.0.0.1", 0, &addr);
    evmux_buf b = {"x", 1};
    CHECK_EQ(evmux_udp_init(NULL, &u), -EINVAL);
    CHECK_OK(evmux_udp_init(loop, &u));
    CHECK_EQ(evmux_udp_fd(&u), -1);
    CHECK_EQ(evmux_udp_recv_start(&u, on_record), -EBADF);
    CHECK_EQ(evmux_udp_set_broadcast(&u, 1), -EBADF);
    CHECK_EQ(evmux_udp_send(NULL, &u, &b, 1, NULL, 0, NULL), -EDESTADDRREQ);
    CHECK_EQ(evmux_udp_send(NULL, &u, &b, 1, (struct sockaddr *)&addr, 3, NULL), -EINVAL);
    CHECK_EQ(evmux_udp_send(NULL, &u, &b, 1, (struct sockaddr *)&addr, len, on_msgsize), -EINVAL);
    CHECK_EQ(evmux_udp_bind(&u, (struct sockaddr *)&addr, len, EVMUX_UDP_IPV6_ONLY), -EINVAL);
    CHECK_EQ(evmux_udp_bind(&u, (struct sockaddr *)&addr, len, 1u << 10), -EINVAL);
    CHECK_OK(evmux_udp_bind(&u, (struct sockaddr *)&addr, len, 0));
    CHECK_EQ(evmux_udp_bind(&u, (struct sockaddr *)&addr, len, 0), -EISCONN);
    CHECK_EQ(evmux_udp_disconnect(&u), -ENOTCONN);
    struct sockaddr_storage self, peer;
    socklen_t self_len, peer_len;
    CHECK_OK(evmux_udp_address(&u, &self, &self_len));
    CHECK_EQ(evmux_udp_peer(&u, &peer, &peer_len), -ENOTCONN);
    CHECK_OK(evmux_udp_set_broadcast(&u, 1));
    CHECK_OK(evmux_udp_set_ttl(&u, 64));
    CHECK_EQ(evmux_udp_set_ttl(&u, 256), -EINVAL);
    /* Too large for IPv4: the kernel's verdict, through the callback. */
    static char big[65508];
    evmux_buf huge = {big, sizeof big};
    evmux_udp_send_req req;
    CHECK_OK(evmux_udp_send(&req, &u, &huge, 1, (struct sockaddr *)&self, self_len, on_msgsize));
    CHECK_EQ(msgsize_status, 1);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    CHECK_EQ(msgsize_status, -EMSGSIZE);
    CHECK_EQ(evmux_udp_try_send(&u, &huge, 1, (struct sockaddr *)&self, self_len), -EMSGSIZE);
    CHECK_EQ(evmux_udp_try_send(&u, &b, 1, (struct sockaddr *)&self, self_len), 1);
    evmux_buf many[65];
    for (int i = 0; i < 65; i++)
        many[i] = b;
    CHECK_EQ(evmux_udp_try_send(&u, many, 65, (struct sockaddr *)&self, self_len), -EINVAL);
    CHECK_EQ(evmux_udp_try_send(&u, many, 64, (struct sockaddr *)&self, self_len), 64);
    /* Connected: sends name no address. */
    CHECK_OK(evmux_udp_connect(&u, (struct sockaddr *)&self, self_len));
    CHECK_EQ(evmux_udp_send(NULL, &u, &b, 1, (struct sockaddr *)&self, self_len, NULL), -EISCONN);
    CHECK_OK(evmux_udp_peer(&u, &peer, &peer_len));
    CHECK_OK(evmux_udp_disconnect(&u));
    CHECK_EQ(evmux_udp_peer(&u, &peer, &peer_len), -ENOTCONN);
    CHECK_EQ(evmux_udp_send(NULL, &u, &b, 1, NULL, 0, NULL), -EDESTADDRREQ);
    /* Not a datagram socket. */
    evmux_udp other;
    CHECK_OK(evmux_udp_init(loop, &other));
    int tcp = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(tcp >= 0);
    CHECK_EQ(evmux_udp_open(&other, tcp), -EPROTOTYPE);
    close(tcp);
    CHECK_EQ(evmux_udp_open(&other, -1), -EINVAL);
    CHECK_OK(evmux_close(&other.handle, NULL));
    CHECK_OK(evmux_close(&u.handle, NULL));
    CHECK_EQ(evmux_close(&u.handle, NULL), -EALREADY);
    CHECK_EQ(evmux_udp_send(NULL, &u, &b, 1, NULL, 0, NULL), -EINVAL);
    unit_loop_finish(loop);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(60);
    RUN_TEST(test_echo_sizes_ipv4);
    RUN_TEST(test_echo_sizes_ipv6);
    RUN_TEST(test_truncation);
    RUN_TEST(test_connected_refused);
    RUN_TEST(test_multicast);
    RUN_TEST(test_burst);
    RUN_TEST(test_close_with_sends_pending);
    RUN_TEST(test_stop_in_burst);
    RUN_TEST(test_gso_gro);
    RUN_TEST(test_send_from_send_callback);
    RUN_TEST(test_errors);
    return unit_end();
}
