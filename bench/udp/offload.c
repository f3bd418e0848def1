/* What UDP_SEGMENT (GSO) and UDP_GRO buy, through evmux's options: one
 * process sends DATAGRAMS datagrams of SIZE bytes as fast as the receiver
 * keeps up, another receives them, each on its own CPU; each reports its
 * CPU time per datagram. Four runs: offloads off, GSO on the sender
 * (SEGMENTS datagrams per send), GRO on the receiver, both.
 *
 * The sender paces itself by the receiver's acknowledgements (one 8-byte
 * datagram per WINDOW/2 received), so that what is measured is datagrams
 * delivered, not dropped. Output: one line per run, and with --csv a CSV
 * table. Usage: evmux-bench-udp-offload [--size N] [--datagrams N] [--csv] */
#define _GNU_SOURCE
#include <evmux.h>

#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define SEGMENTS 16
#define WINDOW 64 /* datagrams in flight: 64 x 1472 bytes fit a default receive buffer */

static size_t size = 1200;
static unsigned long total = 1000000;

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set); /* best effort: one CPU is fine too */
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "evmux-bench-udp-offload: %s: %s\n", what, evmux_strerror(rc));
    exit(1);
}

/* ---- the receiver: counts, acknowledges every WINDOW/2 ---- */

struct receiver {
    evmux_udp udp;
    unsigned long got, acked;
    struct sockaddr_storage peer;
    socklen_t peer_len;
};

static void on_datagram(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                        socklen_t from_len, unsigned flags)
{
    struct receiver *r = u->handle.data;
    (void)buf, (void)flags;
    if (nread != (ssize_t)size)
        return;
    r->got++;
    if (r->got - r->acked >= WINDOW / 2 || r->got == total) {
        r->acked = r->got;
        evmux_buf ack = {&r->got, sizeof r->got};
        evmux_udp_send(NULL, u, &ack, 1, from, from_len, NULL);
    }
    if (r->got == total)
        evmux_udp_recv_stop(u);
}

static int receive(int gro, const char *backend, int ready_fd, int port_fd)
{
    pin(0);
    evmux_loop *loop;
    evmux_loop_options opts = {.backend = backend};
    struct receiver r = {0};
    struct sockaddr_storage addr;
    socklen_t len;
    int rc = evmux_loop_new(&loop, &opts);
    if (rc == 0 && (rc = evmux_addr_ip("127.0.0.1", 0, &addr, &len)) == 0 &&
        (rc = evmux_udp_init(loop, &r.udp)) == 0)
        rc = evmux_udp_bind(&r.udp, (struct sockaddr *)&addr, len, 0);
    if (rc == 0 && gro)
        rc = evmux_udp_set_gro(&r.udp, 1);
    r.udp.handle.data = &r;
    if (rc == 0)
        rc = evmux_udp_recv_start(&r.udp, on_datagram);
    if (rc == 0)
        rc = evmux_udp_address(&r.udp, &addr, &len);
    if (rc < 0)
        die("receiver", rc);
    if (write(port_fd, &addr, sizeof addr) != (ssize_t)sizeof addr)
        exit(1);
    char go;
    if (read(ready_fd, &go, 1) != 1)
        exit(1);
    double start = cpu_s();
    while (r.got < total)
        if ((rc = evmux_run(loop, EVMUX_RUN_ONCE)) < 0)
            die("receiver loop", rc);
    double used = cpu_s() - start;
    if (write(port_fd, &used, sizeof used) != (ssize_t)sizeof used)
        exit(1);
    evmux_close(&r.udp.handle, NULL);
    evmux_run(loop, EVMUX_RUN_DEFAULT);
    evmux_loop_free(loop);
    return 0;
}

/* ---- the sender: WINDOW datagrams ahead of the acknowledgements ---- */

struct sender {
    evmux_udp udp;
    unsigned long acked;
};

static void on_ack(evmux_udp *u, ssize_t nread, char *buf, const struct sockaddr *from,
                   socklen_t from_len, unsigned flags)
{
    struct sender *s = u->handle.data;
    (void)from, (void)from_len, (void)flags;
    unsigned long n;
    if (nread == (ssize_t)sizeof n) {
        memcpy(&n, buf, sizeof n);
        if (n > s->acked)
            s->acked = n;
    }
}

static double send_all(const struct sockaddr_storage *to, int gso, const char *backend)
{
    pin(1);
    evmux_loop *loop;
    evmux_loop_options opts = {.backend = backend};
    struct sender s = {0};
    struct sockaddr_storage any;
    socklen_t any_len;
    int rc = evmux_loop_new(&loop, &opts);
    if (rc == 0 && (rc = evmux_addr_ip("127.0.0.1", 0, &any, &any_len)) == 0 &&
        (rc = evmux_udp_init(loop, &s.udp)) == 0)
        rc = evmux_udp_bind(&s.udp, (struct sockaddr *)&any, any_len, 0);
    if (rc == 0)
        rc = evmux_udp_connect(&s.udp, (const struct sockaddr *)to, sizeof(struct sockaddr_in));
    if (rc == 0 && gso)
        rc = evmux_udp_set_gso(&s.udp, (unsigned)size);
    s.udp.handle.data = &s;
    if (rc == 0)
        rc = evmux_udp_recv_start(&s.udp, on_ack);
    if (rc < 0)
        die("sender", rc);
    static char train[SEGMENTS * 65507];
    memset(train, 'x', sizeof train);
    unsigned per_send = gso ? SEGMENTS : 1;
    unsigned long sent = 0;
    double start = cpu_s();
    while (s.acked < total) {
        while (sent < total && sent - s.acked + per_send <= WINDOW) {
            unsigned n = total - sent < per_send ? (unsigned)(total - sent) : per_send;
            evmux_buf b = {train, n * size};
            if ((rc = evmux_udp_send(NULL, &s.udp, &b, 1, NULL, 0, NULL)) < 0)
                die("send", rc);
            sent += n;
        }
        if ((rc = evmux_run(loop, EVMUX_RUN_ONCE)) < 0)
            die("sender loop", rc);
    }
    double used = cpu_s() - start;
    evmux_close(&s.udp.handle, NULL);
    evmux_run(loop, EVMUX_RUN_DEFAULT);
    evmux_loop_free(loop);
    return used;
}

static void run(int gso, int gro, const char *backend, bool csv)
{
    int go[2], back[2];
    if (pipe(go) < 0 || pipe(back) < 0)
        exit(1);
    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        exit(1);
    if (child == 0) {
        close(go[1]);
        close(back[0]);
        _exit(receive(gro, backend, go[0], back[1]));
    }
    close(go[0]);
    close(back[1]);
    struct sockaddr_storage to;
    if (read(back[0], &to, sizeof to) != (ssize_t)sizeof to)
        exit(1);
    if (write(go[1], "g", 1) != 1)
        exit(1);
    double sender = send_all(&to, gso, backend);
    double receiver;
    if (read(back[0], &receiver, sizeof receiver) != (ssize_t)sizeof receiver)
        exit(1);
    int status;
    waitpid(child, &status, 0);
    close(go[1]);
    close(back[0]);
    double n = (double)total;
    if (csv)
        printf("%s,%zu,%d,%d,%lu,%.0f,%.0f\n", backend, size, gso, gro, total, sender * 1e9 / n,
               receiver * 1e9 / n);
    else
        printf("%-6s %5zu-byte datagrams  GSO %-3s GRO %-3s  sender %5.0f ns/datagram  "
               "receiver %5.0f ns/datagram\n",
               backend, size, gso ? "on" : "off", gro ? "on" : "off", sender * 1e9 / n,
               receiver * 1e9 / n);
}

int main(int argc, char **argv)
{
    bool csv = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--csv") == 0)
            csv = true;
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
            size = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--datagrams") == 0 && i + 1 < argc)
            total = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: evmux-bench-udp-offload [--size N] [--datagrams N] [--csv]\n");
            return 2;
        }
    }
    if (size < 16 || size > 1472 || total == 0) {
        fprintf(stderr, "evmux-bench-udp-offload: --size from 16 to 1472, --datagrams > 0\n");
        return 2;
    }
    if (csv)
        printf("backend,size,gso,gro,datagrams,sender_ns,receiver_ns\n");
    static const char *const backends[] = {"uring", "epoll"};
    for (int b = 0; b < 2; b++)
        for (int mode = 0; mode < 4; mode++)
            run(mode & 1, (mode >> 1) & 1, backends[b], csv);
    return 0;
}
