/* Addresses and listeners: parsing and printing addresses, refusing a
 * connection by not taking it, evmux_accept outside the callback, closing
 * the listener from its callback, SO_REUSEPORT, IPv6-only, and running out
 * of descriptors without spinning. Unix socket files: unit_listen_unix.c. */
#include "evmux_internal.h"
#include "stream_util.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/resource.h>

/* ---- addresses ---- */

static void test_addr_ip(void)
{
    struct sockaddr_storage ss, ss2;
    socklen_t len = 0, len2 = 0;

    CHECK_OK(evmux_addr_ip("127.0.0.1", 8080, &ss, &len));
    CHECK_EQ(ss.ss_family, AF_INET);
    CHECK_EQ(len, sizeof(struct sockaddr_in));
    CHECK_EQ(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    CHECK_EQ(ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr), 0x7f000001);

    CHECK_OK(evmux_addr_ip("::1", 443, &ss, &len));
    CHECK_EQ(ss.ss_family, AF_INET6);
    CHECK_EQ(len, sizeof(struct sockaddr_in6));
    CHECK_EQ(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 443);
    CHECK(memcmp(&((struct sockaddr_in6 *)&ss)->sin6_addr, &in6addr_loopback,
                 sizeof in6addr_loopback) == 0);
    memset(&ss2, 0x5a, sizeof ss2);
    CHECK_OK(evmux_addr_ip("[::1]", 443, &ss2, &len2));
    CHECK_EQ(len2, len);
    CHECK(memcmp(&ss, &ss2, len) == 0);

    CHECK_OK(evmux_addr_ip("0.0.0.0", 0, &ss, &len));
    CHECK_OK(evmux_addr_ip("::", 65535, &ss, &len));
    CHECK_EQ(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 65535);
    CHECK_OK(evmux_addr_ip("::ffff:10.1.2.3", 1, &ss, &len));
    CHECK_EQ(ss.ss_family, AF_INET6);
    CHECK_OK(evmux_addr_ip("fe80::1:2", 1, &ss, &len));

    static const char *const bad[] = {
        "localhost", "example.com", "", "1.2.3", "256.1.1.1", "1.2.3.4.5",
        " 127.0.0.1", "127.0.0.1 ", "[127.0.0.1]", "[::1", "::1]", "[]", "[",
        "]", "::g", "1.2.3.4:80", "[::1]:80", ":::", "1::2::3", "0x7f.0.0.1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = evmux_addr_ip(bad[i], 80, &ss, &len);
        if (rc != -EINVAL) {
            fprintf(stderr, "evmux_addr_ip(\"%s\") = %d, want -EINVAL\n", bad[i], rc);
            CHECK(0);
        }
    }
    CHECK_EQ(evmux_addr_ip("127.0.0.1", 65536, &ss, &len), -EINVAL);
    CHECK_EQ(evmux_addr_ip(NULL, 1, &ss, &len), -EINVAL);
    CHECK_EQ(evmux_addr_ip("127.0.0.1", 1, NULL, &len), -EINVAL);
    CHECK_EQ(evmux_addr_ip("127.0.0.1", 1, &ss, NULL), -EINVAL);
}

static void test_addr_unix(void)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;
    const size_t max = sizeof un->sun_path - 1; /* room for the NUL */
    char path[300];

    memset(path, 'p', sizeof path);
    path[0] = '/';
    path[max] = '\0';
    CHECK_OK(evmux_addr_unix(path, &ss, &len));
    CHECK_EQ(ss.ss_family, AF_UNIX);
    CHECK_EQ(len, offsetof(struct sockaddr_un, sun_path) + max + 1);
    CHECK(strcmp(un->sun_path, path) == 0);

    /* One byte more does not fit: refused, never truncated. */
    path[max] = 'p';
    path[max + 1] = '\0';
    memset(&ss, 0, sizeof ss);
    len = 0;
    CHECK_EQ(evmux_addr_unix(path, &ss, &len), -ENAMETOOLONG);
    CHECK(!(ss.ss_family == AF_UNIX && strncmp(un->sun_path, path, max) == 0 && len != 0));
    path[250] = '\0';
    CHECK_EQ(evmux_addr_unix(path, &ss, &len), -ENAMETOOLONG);
    CHECK(strcmp(evmux_strerror(-ENAMETOOLONG), "name too long") == 0);

    CHECK_EQ(evmux_addr_unix("", &ss, &len), -EINVAL);
    CHECK_EQ(evmux_addr_unix(NULL, &ss, &len), -EINVAL);

    CHECK_OK(evmux_addr_unix("rel.sock", &ss, &len));
    CHECK_EQ(len, offsetof(struct sockaddr_un, sun_path) + 9);
}

/* Splits "host:port" / "[v6]:port" at the last colon and parses it back. */
static void parse_back(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon = strrchr(text, ':');
    CHECK(colon != NULL && (size_t)(colon - text) < sizeof host);
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    CHECK_OK(evmux_addr_ip(host, (unsigned)atoi(colon + 1), ss, len));
}

static void test_addr_format(void)
{
    struct sockaddr_storage ss, back;
    socklen_t len, blen;
    char buf[128];

    static const struct {
        const char *ip;
        unsigned port;
        const char *text;
    } cases[] = {
        { "127.0.0.1", 8080, "127.0.0.1:8080" },
        { "10.20.30.40", 0, "10.20.30.40:0" },
        { "255.255.255.255", 65535, "255.255.255.255:65535" },
        { "::1", 80, "[::1]:80" },
        { "[::1]", 80, "[::1]:80" },
        { "2001:db8::ff00:42:8329", 443, "[2001:db8::ff00:42:8329]:443" },
        { "::", 1, "[::]:1" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        len = su_ip(cases[i].ip, cases[i].port, &ss);
        CHECK_OK(evmux_addr_format((struct sockaddr *)&ss, len, buf, sizeof buf));
        if (strcmp(buf, cases[i].text) != 0) {
            fprintf(stderr, "format(%s) = \"%s\", want \"%s\"\n", cases[i].ip, buf,
                    cases[i].text);
            CHECK(0);
        }
        parse_back(buf, &back, &blen);
        CHECK_EQ(blen, len);
        CHECK(memcmp(&back, &ss, len) == 0);

        /* Too small: -ENOSPC, still terminated. */
        size_t need = strlen(cases[i].text) + 1;
        memset(buf, 'x', sizeof buf);
        CHECK_EQ(evmux_addr_format((struct sockaddr *)&ss, len, buf, need - 1), -ENOSPC);
        CHECK(memchr(buf, '\0', need - 1) != NULL);
        CHECK_OK(evmux_addr_format((struct sockaddr *)&ss, len, buf, need));
        CHECK(strcmp(buf, cases[i].text) == 0);
    }

    /* Unix paths. */
    const char *p = "/tmp/some dir/sock";
    len = su_unix(p, &ss);
    CHECK_OK(evmux_addr_format((struct sockaddr *)&ss, len, buf, sizeof buf));
    CHECK(strcmp(buf, p) == 0);
    len = su_unix(buf, &back);
    CHECK(memcmp(&back, &ss, len) == 0);
    CHECK_EQ(evmux_addr_format((struct sockaddr *)&ss, len, buf, 5), -ENOSPC);
    CHECK_EQ(strlen(buf), 4);

    /* Unknown family. */
    memset(&ss, 0, sizeof ss);
    ss.ss_family = AF_APPLETALK;
    strcpy(buf, "junk");
    CHECK_EQ(evmux_addr_format((struct sockaddr *)&ss, sizeof ss, buf, sizeof buf), -EINVAL);
    CHECK_EQ(buf[0], '\0');
    CHECK_EQ(evmux_addr_format(NULL, 0, buf, sizeof buf), -EINVAL);
}

/* ---- listeners ---- */

struct acc {
    evmux_listener l;
    evmux_loop *loop;
    int calls;
    int errors;
    int last_status;
    int take;             /* evmux_accept the connection */
    int close_after;      /* close the listener after this many calls */
    int closed;
    evmux_stream streams[32];
    int nstreams;
    int nclosed_streams;
};

static void acc_closed(evmux_handle *h)
{
    ((struct acc *)h->data)->closed++;
}

static void free_data_cb(evmux_handle *h)
{
    free(h->data);
}

static void acc_cb(evmux_listener *l, int status)
{
    struct acc *a = (struct acc *)l->handle.data;
    a->calls++;
    a->last_status = status;
    if (status < 0) {
        a->errors++;
        /* Nothing is waiting on an error. */
        evmux_stream *probe = malloc(sizeof *probe);
        CHECK(probe != NULL);
        probe->handle.data = probe;
        CHECK_OK(evmux_stream_init(a->loop, probe));
        CHECK_EQ(evmux_accept(l, probe), -EAGAIN);
        CHECK_OK(evmux_close(&probe->handle, free_data_cb));
        return;
    }
    if (a->take) {
        CHECK(a->nstreams < 32);
        evmux_stream *s = &a->streams[a->nstreams];
        s->handle.data = a;
        CHECK_OK(evmux_stream_init(a->loop, s));
        CHECK_OK(evmux_accept(l, s));
        a->nstreams++;
        /* Taken: nothing is waiting any more. */
        CHECK_EQ(evmux_accept(l, s), -EAGAIN);
    }
    if (a->close_after && a->calls == a->close_after)
        CHECK_OK(evmux_close(&l->handle, acc_closed));
}

static socklen_t acc_listen(evmux_loop *loop, struct acc *a, const char *ip,
                            const evmux_listen_options *opts, struct sockaddr_storage *bound)
{
    struct sockaddr_storage ss;
    socklen_t len = su_ip(ip, 0, &ss);
    memset(a, 0, sizeof *a);
    a->loop = loop;
    a->l.handle.data = a;
    CHECK_OK(evmux_listen(loop, &a->l, (struct sockaddr *)&ss, len, opts, acc_cb));
    return su_listener_addr(&a->l, bound);
}

static void acc_close_streams(struct acc *a)
{
    for (int i = 0; i < a->nstreams; i++)
        if (!evmux_is_closing(&a->streams[i].handle))
            CHECK_OK(evmux_close(&a->streams[i].handle, NULL));
}

/* A client the listener closed sees EOF or a reset, soon. */
static void check_closed_by_peer(int fd)
{
    CHECK(su_wait_readable(fd, 2000));
    int st = su_peek_state(fd);
    if (st != 0 && st != -ECONNRESET) {
        fprintf(stderr, "client state %d (%s), want EOF or reset\n", st, evmux_strerror(st));
        CHECK(0);
    }
}

/* The same, running the loop meanwhile (the listener must act). */
static void loop_until_closed_by_peer(evmux_loop *loop, int fd)
{
    for (int i = 0; i < 400 && !su_wait_readable(fd, 0); i++)
        su_run_for(loop, 5);
    check_closed_by_peer(fd);
}

static void test_accept_not_taken(void)
{
    evmux_loop *loop = unit_loop_new();
    struct acc a;
    struct sockaddr_storage bound;
    socklen_t blen = acc_listen(loop, &a, "127.0.0.1", NULL, &bound);
    CHECK(su_port_of(&bound) != 0);
    CHECK_EQ(evmux_is_active(&a.l.handle), 1);

    /* Outside the callback nothing is waiting. */
    evmux_stream s;
    CHECK_OK(evmux_stream_init(loop, &s));
    CHECK_EQ(evmux_accept(&a.l, &s), -EAGAIN);

    int c1 = su_raw_connect(&bound, blen);
    int c2 = su_raw_connect(&bound, blen);
    /* Even with connections in the backlog, outside the callback. */
    CHECK_EQ(evmux_accept(&a.l, &s), -EAGAIN);
    su_run_until(loop, &a.calls, 2, 3000);
    CHECK_EQ(a.last_status, 0);
    CHECK_EQ(evmux_accept(&a.l, &s), -EAGAIN);
    CHECK_EQ(evmux_stream_fd(&s), -1);
    check_closed_by_peer(c1);
    check_closed_by_peer(c2);
    su_run_for(loop, 20);
    CHECK_EQ(a.calls, 2);

    CHECK_OK(evmux_close(&s.handle, NULL));
    CHECK_OK(evmux_close(&a.l.handle, acc_closed));
    CHECK_EQ(evmux_close(&a.l.handle, acc_closed), -EALREADY);
    struct sockaddr_storage tmp;
    socklen_t tlen;
    CHECK_EQ(evmux_listener_address(&a.l, &tmp, &tlen), -EINVAL);
    unit_loop_finish(loop);
    CHECK_EQ(a.closed, 1);
    /* Nobody listens there any more. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(connect(fd, (struct sockaddr *)&bound, blen) < 0 && errno == ECONNREFUSED);
    close(fd);
    close(c1);
    close(c2);
}

static void test_close_listener_in_accept_cb(void)
{
    evmux_loop *loop = unit_loop_new();
    struct acc a;
    struct sockaddr_storage bound;
    socklen_t blen = acc_listen(loop, &a, "127.0.0.1", NULL, &bound);
    a.take = 1;
    a.close_after = 1;
    int c[3];
    for (int i = 0; i < 3; i++)
        c[i] = su_raw_connect(&bound, blen);

    su_run_until(loop, &a.closed, 1, 3000);
    /* One callback only, although more connections were waiting. */
    CHECK_EQ(a.calls, 1);
    CHECK_EQ(a.nstreams, 1);
    /* The accepted one works. */
    CHECK_OK(evmux_stream_write(NULL, &a.streams[0], (evmux_buf[]){ { "hi", 2 } }, 1, NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT)); /* io_uring sends from the loop */
    char buf[4];
    CHECK(su_wait_readable(c[0], 2000));
    CHECK_EQ(read(c[0], buf, sizeof buf), 2);
    CHECK(memcmp(buf, "hi", 2) == 0);
    /* The others were never accepted and go away with the listener. */
    for (int i = 1; i < 3; i++)
        check_closed_by_peer(c[i]);

    acc_close_streams(&a);
    unit_loop_finish(loop);
    CHECK_EQ(a.closed, 1);
    CHECK(su_wait_readable(c[0], 2000));
    CHECK_EQ(su_peek_state(c[0]), 0);
    for (int i = 0; i < 3; i++)
        close(c[i]);
}

/* evmux_accept_fd: the waiting connection as a bare descriptor,
 * non-blocking and close-on-exec, usable, and taken once. */
struct bare {
    evmux_listener l;
    int fd;
    int second; /* a second take in the same callback */
};

static void bare_cb(evmux_listener *l, int status)
{
    struct bare *b = l->handle.data;
    CHECK_EQ(status, 0);
    CHECK_OK(evmux_accept_fd(l, &b->fd));
    b->second = evmux_accept_fd(l, &(int){-1});
}

static void test_accept_fd(void)
{
    evmux_loop *loop = unit_loop_new();
    struct bare b = {.fd = -1, .second = 1};
    struct sockaddr_storage ss, bound;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    b.l.handle.data = &b;
    CHECK_OK(evmux_listen(loop, &b.l, (struct sockaddr *)&ss, len, NULL, bare_cb));
    socklen_t blen = su_listener_addr(&b.l, &bound);
    int out = -1;
    CHECK_EQ(evmux_accept_fd(&b.l, &out), -EAGAIN); /* outside the callback */
    CHECK_EQ(evmux_accept_fd(NULL, &out), -EINVAL);
    CHECK_EQ(evmux_accept_fd(&b.l, NULL), -EINVAL);
    CHECK_EQ(out, -1);

    int client = su_raw_connect(&bound, blen);
    for (int i = 0; i < 400 && b.fd < 0; i++)
        su_run_for(loop, 5);
    CHECK(b.fd >= 0);
    CHECK_EQ(b.second, -EAGAIN);
    CHECK(fcntl(b.fd, F_GETFL) & O_NONBLOCK);
    CHECK(fcntl(b.fd, F_GETFD) & FD_CLOEXEC);
    /* The listener let go of it: it is ours, and it is the client's peer. */
    CHECK_EQ(write(client, "x", 1), 1);
    char byte = 0;
    for (int i = 0; i < 200 && read(b.fd, &byte, 1) != 1; i++)
        unit_sleep_ms(5);
    CHECK_EQ(byte, 'x');
    close(b.fd);
    check_closed_by_peer(client);
    CHECK_OK(evmux_close(&b.l.handle, NULL));
    unit_loop_finish(loop);
    close(client);
}

static void test_reuseport(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_listen_options opts = { 0, EVMUX_LISTEN_REUSEPORT };
    struct acc a, b, c;
    struct sockaddr_storage bound, bound2;
    socklen_t blen = acc_listen(loop, &a, "127.0.0.1", &opts, &bound);
    a.take = 1;
    memset(&b, 0, sizeof b);
    b.loop = loop;
    b.take = 1;
    b.l.handle.data = &b;
    CHECK_OK(evmux_listen(loop, &b.l, (struct sockaddr *)&bound, blen, &opts, acc_cb));
    su_listener_addr(&b.l, &bound2);
    CHECK_EQ(su_port_of(&bound2), su_port_of(&bound));

    /* Without the flag the port is taken. */
    memset(&c, 0, sizeof c);
    c.loop = loop;
    c.l.handle.data = &c;
    CHECK_EQ(evmux_listen(loop, &c.l, (struct sockaddr *)&bound, blen, NULL, acc_cb),
             -EADDRINUSE);

    enum { N = 16 };
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = su_raw_connect(&bound, blen);
    int total = 0;
    for (int i = 0; i < 300 && total < N; i++) {
        su_run_for(loop, 5);
        total = a.calls + b.calls;
    }
    CHECK_EQ(a.calls + b.calls, N);
    CHECK_EQ(a.nstreams + b.nstreams, N);
    CHECK_EQ(a.errors + b.errors, 0);

    acc_close_streams(&a);
    acc_close_streams(&b);
    CHECK_OK(evmux_close(&a.l.handle, acc_closed));
    CHECK_OK(evmux_close(&b.l.handle, acc_closed));
    unit_loop_finish(loop);
    CHECK_EQ(a.closed, 1);
    CHECK_EQ(b.closed, 1);
    for (int i = 0; i < N; i++)
        close(fds[i]);
}

static void test_ipv6_only(void)
{
    if (!have_ipv6_loopback()) {
        UNIT_SKIP("no IPv6 loopback");
    }
    for (int only = 0; only < 2; only++) {
        evmux_loop *loop = unit_loop_new();
        evmux_listen_options opts = { 0, only ? EVMUX_LISTEN_IPV6_ONLY : 0 };
        struct acc a;
        struct sockaddr_storage bound, v4;
        acc_listen(loop, &a, "::", &opts, &bound);
        CHECK_EQ(bound.ss_family, AF_INET6);
        socklen_t v4len = su_ip("127.0.0.1", su_port_of(&bound), &v4);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int rc = connect(fd, (struct sockaddr *)&v4, v4len);
        if (only) {
            CHECK(rc < 0 && errno == ECONNREFUSED);
        } else {
            CHECK_EQ(rc, 0);
            su_run_until(loop, &a.calls, 1, 3000);
        }
        close(fd);
        CHECK_OK(evmux_close(&a.l.handle, NULL));
        unit_loop_finish(loop);
    }
}

static void test_listen_errors(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_listener l;
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    CHECK_EQ(evmux_listen(loop, &l, (struct sockaddr *)&ss, len, NULL, NULL), -EINVAL);
    CHECK_EQ(evmux_listen(loop, &l, NULL, len, NULL, acc_cb), -EINVAL);
    memset(&ss, 0, sizeof ss);
    ss.ss_family = AF_APPLETALK;
    CHECK_EQ(evmux_listen(loop, &l, (struct sockaddr *)&ss, sizeof ss, NULL, acc_cb),
             -EAFNOSUPPORT);
    /* A failed listen leaves no open handle behind. */
    unit_loop_finish(loop);
}

/* ---- out of descriptors ---- */

static int count_iterations(evmux_loop *loop, unsigned ms)
{
    struct evmux_loop_stats before, after;
    evmux__loop_stats(loop, &before);
    struct unit_guard g;
    unit_guard_start(loop, &g, ms);
    evmux_ref(&g.timer.handle); /* keeps the loop running until it fires */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(g.fired, 1);
    unit_guard_close(&g);
    evmux__loop_stats(loop, &after);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    return (int)(after.iterations - before.iterations);
}

/* Lowers RLIMIT_NOFILE and fills the descriptor table so that exactly
 * `free_slots` descriptors are left. */
struct fdfill {
    struct rlimit old;
    int fd[256];
    int n;
};

static void fdfill_start(struct fdfill *f, int maxfd, int free_slots)
{
    CHECK(getrlimit(RLIMIT_NOFILE, &f->old) == 0);
    struct rlimit rl = f->old;
    rl.rlim_cur = (rlim_t)maxfd + 64;
    CHECK(rl.rlim_cur <= f->old.rlim_cur || f->old.rlim_cur == RLIM_INFINITY);
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    f->n = 0;
    for (;;) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            CHECK_EQ(errno, EMFILE);
            break;
        }
        CHECK(f->n < 256);
        f->fd[f->n++] = fd;
    }
    CHECK(f->n >= free_slots);
    for (int i = 0; i < free_slots; i++)
        close(f->fd[--f->n]);
}

static void fdfill_end(struct fdfill *f)
{
    for (int i = 0; i < f->n; i++)
        close(f->fd[i]);
    f->n = 0;
    CHECK(setrlimit(RLIMIT_NOFILE, &f->old) == 0);
}

/* Unconnected client sockets, made while descriptors are plentiful. */
static int make_clients(int *cl, int n)
{
    int maxfd = 0;
    for (int i = 0; i < n; i++) {
        cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(cl[i] >= 0);
        if (cl[i] > maxfd)
            maxfd = cl[i];
    }
    return maxfd;
}

static void run_until_calls(evmux_loop *loop, struct acc *a, int calls)
{
    for (int i = 0; i < 400 && a->calls < calls; i++)
        su_run_for(loop, 5);
    su_run_for(loop, 20);
}

static void test_out_of_descriptors(void)
{
    enum { NCLIENTS = 16, FIRST = 10, FREE = 3 };
    evmux_loop *loop = unit_loop_new();
    struct acc *a = calloc(1, sizeof *a);
    CHECK(a != NULL);
    struct sockaddr_storage bound;
    socklen_t blen = acc_listen(loop, a, "127.0.0.1", NULL, &bound);
    a->take = 1;
    int cl[NCLIENTS];
    struct fdfill fill;
    fdfill_start(&fill, make_clients(cl, NCLIENTS), FREE);

    /* FIRST clients for FREE descriptors: FREE are accepted, the callback
     * hears -EMFILE once, the rest are closed by the listener. */
    for (int i = 0; i < FIRST; i++)
        CHECK(connect(cl[i], (struct sockaddr *)&bound, blen) == 0);
    run_until_calls(loop, a, FREE + 1);
    CHECK_EQ(a->nstreams, FREE);
    CHECK_EQ(a->errors, 1);
    CHECK_EQ(a->last_status, -EMFILE);
    CHECK_EQ(a->calls, FREE + 1);
    int open_clients = 0, closed_clients = 0;
    for (int i = 0; i < FIRST; i++) {
        int st = su_peek_state(cl[i]);
        if (st == -EAGAIN) {
            open_clients++;
        } else {
            CHECK(st == 0 || st == -ECONNRESET);
            closed_clients++;
        }
    }
    CHECK_EQ(open_clients, FREE);
    CHECK_EQ(closed_clients, FIRST - FREE);

    /* No spinning while out of descriptors. */
    int iters = count_iterations(loop, 300);
    fprintf(stderr, "   %d iterations in 300 ms while out of descriptors\n", iters);
    CHECK(iters < 100);
    CHECK_EQ(a->calls, FREE + 1);

    /* Two descriptors come back: two more connections are taken; a third
     * is closed by the listener; still no spinning. */
    CHECK_OK(evmux_close(&a->streams[0].handle, NULL));
    CHECK_OK(evmux_close(&a->streams[1].handle, NULL));
    su_run_for(loop, 5);
    for (int i = FIRST; i < FIRST + 2; i++)
        CHECK(connect(cl[i], (struct sockaddr *)&bound, blen) == 0);
    for (int i = 0; i < 400 && a->nstreams < FREE + 2; i++)
        su_run_for(loop, 5);
    CHECK_EQ(a->nstreams, FREE + 2);
    CHECK(connect(cl[FIRST + 2], (struct sockaddr *)&bound, blen) == 0);
    loop_until_closed_by_peer(loop, cl[FIRST + 2]);
    su_run_for(loop, 20);
    CHECK_EQ(a->nstreams, FREE + 2);
    CHECK(a->errors >= 1 && a->errors <= 2);
    iters = count_iterations(loop, 300);
    CHECK(iters < 100);

    /* Descriptors back: accepting works again. */
    fdfill_end(&fill);
    CHECK(connect(cl[FIRST + 3], (struct sockaddr *)&bound, blen) == 0);
    for (int i = 0; i < 400 && a->nstreams < FREE + 3; i++)
        su_run_for(loop, 5);
    CHECK_EQ(a->nstreams, FREE + 3);
    CHECK_EQ(a->last_status, 0);
    CHECK_OK(evmux_stream_write(NULL, &a->streams[FREE + 2], (evmux_buf[]){ { "ok", 2 } }, 1,
                                NULL));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
    char buf[4];
    CHECK(su_wait_readable(cl[FIRST + 3], 2000));
    CHECK_EQ(read(cl[FIRST + 3], buf, sizeof buf), 2);

    acc_close_streams(a);
    CHECK_OK(evmux_close(&a->l.handle, NULL));
    unit_loop_finish(loop);
    for (int i = 0; i < NCLIENTS; i++)
        close(cl[i]);
    free(a);
}

/* -EMFILE reports trouble accepting, i.e. a connection that had to be
 * dropped; "nothing is waiting then". Taking the last free descriptor for
 * a connection is no trouble and must not start an episode (which would
 * also swallow the report of the real overflow that follows). */
static void test_emfile_reported_when_refusing(void)
{
    enum { NCLIENTS = 8, FREE = 2 };
    evmux_loop *loop = unit_loop_new();
    struct acc *a = calloc(1, sizeof *a);
    CHECK(a != NULL);
    struct sockaddr_storage bound;
    socklen_t blen = acc_listen(loop, a, "127.0.0.1", NULL, &bound);
    a->take = 1;
    int cl[NCLIENTS];
    struct fdfill fill;
    fdfill_start(&fill, make_clients(cl, NCLIENTS), FREE);

    /* Exactly as many clients as descriptors: all accepted, none refused. */
    for (int i = 0; i < FREE; i++)
        CHECK(connect(cl[i], (struct sockaddr *)&bound, blen) == 0);
    run_until_calls(loop, a, FREE);
    CHECK_EQ(a->nstreams, FREE);
    int spurious = a->errors;

    /* One more: refused, and reported. Another: same episode, silent. */
    CHECK(connect(cl[FREE], (struct sockaddr *)&bound, blen) == 0);
    loop_until_closed_by_peer(loop, cl[FREE]);
    su_run_for(loop, 20);
    int after_refusal = a->errors;
    CHECK(connect(cl[FREE + 1], (struct sockaddr *)&bound, blen) == 0);
    loop_until_closed_by_peer(loop, cl[FREE + 1]);
    su_run_for(loop, 20);
    int after_second = a->errors;

    fdfill_end(&fill);
    acc_close_streams(a);
    CHECK_OK(evmux_close(&a->l.handle, NULL));
    unit_loop_finish(loop);
    for (int i = 0; i < NCLIENTS; i++)
        close(cl[i]);
    free(a);

    if (spurious != 0)
        fprintf(stderr, "   -EMFILE reported %d time(s) with no connection refused\n", spurious);
    CHECK_EQ(spurious, 0);
    CHECK_EQ(after_refusal, 1);
    CHECK_EQ(after_second, 1);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(60);
    RUN_TEST(test_addr_ip);
    RUN_TEST(test_addr_unix);
    RUN_TEST(test_addr_format);
    RUN_TEST(test_accept_not_taken);
    RUN_TEST(test_close_listener_in_accept_cb);
    RUN_TEST(test_accept_fd);
    RUN_TEST(test_reuseport);
    RUN_TEST(test_ipv6_only);
    RUN_TEST(test_listen_errors);
    RUN_TEST(test_out_of_descriptors);
    RUN_TEST(test_emfile_reported_when_refusing); /* fails: see the comment above it */
    return unit_end();
}
