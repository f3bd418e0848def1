/* Helpers for the stream and listener unit tests (header-only): addresses,
 * raw blocking sockets for the far side, pseudo-random payloads, a temporary
 * directory for Unix sockets, and an echo server plus an echo client written
 * on the stream API that check every byte and every callback. */
#ifndef EVMUX_TEST_STREAM_UTIL_H
#define EVMUX_TEST_STREAM_UTIL_H

#include "unit_util.h"
#include "ipv6_loopback.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- payloads ---- */

/* n pseudo-random bytes (every value 0..255 appears once n is a few KB). */
/* Readiness backends try a write inside evmux_stream_write; io_uring
 * queues it and submits the send from the loop, before it next waits. */
static inline int su_writes_at_once(const evmux_loop *loop)
{
    return strcmp(evmux_loop_backend(loop), "uring") != 0;
}

static inline unsigned char *su_random_bytes(size_t n, uint32_t seed)
{
    unsigned char *p = malloc(n ? n : 1);
    CHECK(p != NULL);
    uint32_t st = seed ? seed : 1;
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(unit_rand(&st) >> 13);
    return p;
}

static inline int su_all_byte_values(const unsigned char *p, size_t n)
{
    int seen[256] = {0};
    int distinct = 0;
    for (size_t i = 0; i < n && distinct < 256; i++)
        if (!seen[p[i]]++)
            distinct++;
    return distinct == 256;
}

/* ---- addresses ---- */

static inline socklen_t su_ip(const char *ip, unsigned port, struct sockaddr_storage *ss)
{
    socklen_t len = 0;
    CHECK_OK(evmux_addr_ip(ip, port, ss, &len));
    return len;
}

static inline socklen_t su_unix(const char *path, struct sockaddr_storage *ss)
{
    socklen_t len = 0;
    CHECK_OK(evmux_addr_unix(path, ss, &len));
    return len;
}

static inline socklen_t su_listener_addr(const evmux_listener *l, struct sockaddr_storage *ss)
{
    socklen_t len = 0;
    CHECK_OK(evmux_listener_address(l, ss, &len));
    return len;
}

static inline unsigned su_port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    CHECK_EQ(ss->ss_family, AF_INET6);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* A TCP port on 127.0.0.1 with nothing listening: bound, read, closed. */
static inline unsigned su_unused_port(void)
{
    struct sockaddr_storage ss;
    socklen_t len = su_ip("127.0.0.1", 0, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&ss, len) == 0);
    len = sizeof ss;
    CHECK(getsockname(fd, (struct sockaddr *)&ss, &len) == 0);
    close(fd);
    return su_port_of(&ss);
}

/* ---- raw sockets for the far side ---- */

/* A blocking connect (loopback: completes at once while the backlog has
 * room); the socket is returned non-blocking. */
static inline int su_raw_connect(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(connect(fd, (const struct sockaddr *)ss, len) == 0);
    CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
    return fd;
}

/* Close with SO_LINGER {1, 0}: the peer gets a reset, not a FIN. */
static inline void su_close_with_reset(int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    CHECK(close(fd) == 0);
}

/* What a raw non-blocking socket sees right now: 1 data waiting, 0 EOF,
 * -errno for an error (-ECONNRESET), -EAGAIN when nothing has happened. */
static inline int su_peek_state(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0)
        return 1;
    if (n == 0)
        return 0;
    return -errno;
}

/* Waits (outside any loop) up to ms for fd to become readable or fail. */
static inline int su_wait_readable(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int rc;
    do
        rc = poll(&p, 1, ms);
    while (rc < 0 && errno == EINTR);
    return rc > 0;
}

/* ---- temporary directory for Unix sockets ---- */

static inline void su_tmpdir(char *dir, size_t size)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0' || strlen(base) > 40)
        base = "/tmp";
    CHECK(snprintf(dir, size, "%s/evmux-unit-XXXXXX", base) < (int)size);
    CHECK(mkdtemp(dir) != NULL);
}

static inline void su_path(char *out, size_t size, const char *dir, const char *name)
{
    CHECK(snprintf(out, size, "%s/%s", dir, name) < (int)size);
}

static inline int su_path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* ---- runs the loop until *flag reaches want (or the guard fires) ---- */

struct su_until {
    evmux_timer poll_timer;
    const int *flag;
    int want;
};

static inline void su_until_cb(evmux_timer *t)
{
    struct su_until *u = (struct su_until *)t->handle.data;
    if (*u->flag >= u->want)
        evmux_stop(t->handle.loop);
}

/* Runs `loop` until *flag >= want; fails the test after ms. Works whether
 * or not other handles keep the loop alive. */
static inline void su_run_until(evmux_loop *loop, const int *flag, int want, uint64_t ms)
{
    struct unit_guard guard;
    struct su_until u = { .flag = flag, .want = want };
    unit_guard_start(loop, &guard, ms);
    CHECK_OK(evmux_timer_init(loop, &u.poll_timer, su_until_cb));
    u.poll_timer.handle.data = &u;
    CHECK_OK(evmux_timer_start(&u.poll_timer, 1, 1));
    while (*flag < want && !guard.fired)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(guard.fired, 0);
    CHECK_OK(evmux_close(&u.poll_timer.handle, NULL));
    unit_guard_close(&guard);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT)); /* the two close callbacks */
}

/* Runs `loop` for about ms milliseconds, whatever happens. */
static inline void su_run_for(evmux_loop *loop, uint64_t ms)
{
    int never = 0;
    struct unit_guard guard;
    struct su_until u = { .flag = &never, .want = 1 };
    unit_guard_start(loop, &guard, ms);
    CHECK_OK(evmux_timer_init(loop, &u.poll_timer, su_until_cb));
    u.poll_timer.handle.data = &u;
    CHECK_OK(evmux_timer_start(&u.poll_timer, ms + 1000, 0)); /* keeps the loop alive */
    while (!guard.fired)
        CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_OK(evmux_close(&u.poll_timer.handle, NULL));
    unit_guard_close(&guard);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_NOWAIT));
}

/* Writes pieces until the socket takes no more (the peer does not read):
 * from then on the queue only grows. A readiness backend gets there inside
 * the writes; io_uring only once the loop has submitted them. */
static inline void su_fill_socket(evmux_loop *loop, evmux_stream *s, const void *piece, size_t len)
{
    for (int i = 0; i < 4096; i++) {
        CHECK_OK(evmux_stream_write(NULL, s, &(evmux_buf){ piece, len }, 1, NULL));
        su_run_for(loop, 2);
        size_t before = evmux_stream_queued(s);
        if (before == 0)
            continue;
        su_run_for(loop, 20);
        if (evmux_stream_queued(s) == before)
            return;
    }
    CHECK(0); /* the kernel kept taking bytes: is the peer reading? */
}

/* ---- an echo server on the stream API ---- */

struct su_echo_server {
    evmux_listener listener;
    evmux_loop *loop;
    size_t high, low;  /* watermarks of each connection */
    int accepted;
    int closed;        /* connections closed after a clean end */
    int read_errors;
    int drains;
    int listener_closed;
};

struct su_echo_conn {
    evmux_stream s;
    struct su_echo_server *srv;
    uint64_t bytes;
    int eof;
};

static inline void su_echo_conn_closed(evmux_handle *h)
{
    struct su_echo_conn *c = (struct su_echo_conn *)h->data;
    c->srv->closed++;
    free(c);
}

static inline void su_echo_shut_cb(evmux_stream *s, int status)
{
    CHECK_EQ(status, 0);
    CHECK_OK(evmux_close(&s->handle, su_echo_conn_closed));
}

static inline void su_echo_read_cb(evmux_stream *s, ssize_t nread, char *buf)
{
    struct su_echo_conn *c = (struct su_echo_conn *)s->handle.data;
    if (nread > 0) {
        CHECK(buf != NULL);
        evmux_buf b = { buf, (size_t)nread };
        CHECK_OK(evmux_stream_write(NULL, s, &b, 1, NULL));
        c->bytes += (uint64_t)nread;
        if (evmux_stream_over_high(s))
            CHECK_OK(evmux_stream_read_stop(s));
        return;
    }
    CHECK(buf == NULL);
    if (nread == EVMUX_EOF) {
        c->eof = 1;
        CHECK_OK(evmux_stream_shutdown(s, su_echo_shut_cb));
        return;
    }
    fprintf(stderr, "echo server: read error %zd (%s)\n", nread, evmux_strerror((int)nread));
    c->srv->read_errors++;
    CHECK_OK(evmux_close(&s->handle, su_echo_conn_closed));
}

static inline void su_echo_drain_cb(evmux_stream *s)
{
    struct su_echo_conn *c = (struct su_echo_conn *)s->handle.data;
    c->srv->drains++;
    CHECK_EQ(evmux_stream_over_high(s), 0);
    CHECK(evmux_stream_queued(s) <= c->srv->low);
    if (!c->eof)
        CHECK_OK(evmux_stream_read_start(s, su_echo_read_cb));
}

static inline void su_echo_accept_cb(evmux_listener *l, int status)
{
    struct su_echo_server *srv = (struct su_echo_server *)l->handle.data;
    CHECK_EQ(status, 0);
    struct su_echo_conn *c = calloc(1, sizeof *c);
    CHECK(c != NULL);
    c->srv = srv;
    c->s.handle.data = c;
    CHECK_OK(evmux_stream_init(srv->loop, &c->s));
    CHECK_OK(evmux_accept(l, &c->s));
    CHECK(evmux_stream_fd(&c->s) >= 0);
    CHECK_OK(evmux_stream_set_watermarks(&c->s, srv->high, srv->low, su_echo_drain_cb));
    CHECK_OK(evmux_stream_read_start(&c->s, su_echo_read_cb));
    srv->accepted++;
}

static inline void su_echo_listener_closed(evmux_handle *h)
{
    struct su_echo_server *srv = (struct su_echo_server *)h->data;
    srv->listener_closed++;
}

/* Listens on addr; returns the bound address in *bound. */
static inline socklen_t su_echo_server_start(evmux_loop *loop, struct su_echo_server *srv,
                                             const struct sockaddr_storage *addr, socklen_t len,
                                             struct sockaddr_storage *bound)
{
    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    srv->high = 1u << 20;
    srv->low = 256u << 10;
    srv->listener.handle.data = srv;
    CHECK_OK(evmux_listen(loop, &srv->listener, (const struct sockaddr *)addr, len, NULL,
                          su_echo_accept_cb));
    return su_listener_addr(&srv->listener, bound);
}

/* ---- an echo client on the stream API ---- */

struct su_echo_client;

struct su_piece {
    evmux_write_req req;
    struct su_echo_client *c;
    unsigned index;
    size_t len;
};

struct su_echo_client {
    evmux_stream s;
    evmux_connect_req creq;
    evmux_loop *loop;
    const unsigned char *data;
    size_t total;
    size_t issued;    /* bytes handed to evmux_stream_write */
    size_t inflight;  /* bytes of writes whose callback is still owed */
    size_t received;
    uint32_t rng;
    unsigned writes_issued, writes_done;
    int in_call;      /* inside evmux_stream_write / shutdown / connect */
    int connected;
    int shut_calls;
    int eof;
    int *done;        /* incremented by the close callback */
};

static inline void su_client_pump(struct su_echo_client *c);

static inline void su_client_write_cb(evmux_write_req *req, int status)
{
    struct su_piece *p = (struct su_piece *)req->data;
    struct su_echo_client *c = p->c;
    CHECK_EQ(c->in_call, 0);      /* never from inside the call */
    CHECK_EQ(status, 0);
    CHECK_EQ(p->index, c->writes_done); /* in order, each once */
    c->writes_done++;
    c->inflight -= p->len;
    free(p);
    su_client_pump(c);
}

static inline void su_client_shut_cb(evmux_stream *s, int status)
{
    struct su_echo_client *c = (struct su_echo_client *)s->handle.data;
    CHECK_EQ(c->in_call, 0);
    CHECK_EQ(status, 0);
    CHECK_EQ(c->shut_calls, 0);
    CHECK_EQ(evmux_stream_queued(s), 0);
    c->shut_calls++;
}

/* Irregular writes: 1 to 5 buffers each, lengths from 0 up to 96 KB with
 * many small ones, at most 512 KB outstanding. */
static inline void su_client_pump(struct su_echo_client *c)
{
    while (c->issued < c->total && c->inflight < (512u << 10)) {
        evmux_buf bufs[5];
        unsigned nb = 1 + unit_rand(&c->rng) % 5;
        size_t len = 0;
        for (unsigned i = 0; i < nb; i++) {
            uint32_t r = unit_rand(&c->rng);
            size_t want;
            switch (r % 4) {
            case 0: want = 0; break;
            case 1: want = 1 + r % 17; break;
            case 2: want = 1 + r % 4096; break;
            default: want = 1 + r % (96u << 10); break;
            }
            size_t left = c->total - c->issued - len;
            if (want > left)
                want = left;
            bufs[i].base = c->data + c->issued + len;
            bufs[i].len = want;
            len += want;
        }
        struct su_piece *p = calloc(1, sizeof *p);
        CHECK(p != NULL);
        p->c = c;
        p->index = c->writes_issued;
        p->len = len;
        p->req.data = p;
        c->in_call = 1;
        int rc = evmux_stream_write(&p->req, &c->s, bufs, nb, su_client_write_cb);
        c->in_call = 0;
        CHECK_OK(rc);
        c->writes_issued++;
        c->issued += len;
        c->inflight += len;
    }
    if (c->issued == c->total && c->shut_calls == 0 && !evmux_is_closing(&c->s.handle)) {
        c->in_call = 1;
        int rc = evmux_stream_shutdown(&c->s, su_client_shut_cb);
        c->in_call = 0;
        if (rc == -EALREADY)
            return; /* asked before */
        CHECK_OK(rc);
        /* Writing after the shutdown is refused. */
        evmux_buf b = { "x", 1 };
        CHECK_EQ(evmux_stream_write(NULL, &c->s, &b, 1, NULL), -EPIPE);
    }
}

static inline void su_client_closed(evmux_handle *h)
{
    struct su_echo_client *c = (struct su_echo_client *)h->data;
    (*c->done)++;
}

static inline void su_client_read_cb(evmux_stream *s, ssize_t nread, char *buf)
{
    struct su_echo_client *c = (struct su_echo_client *)s->handle.data;
    if (nread > 0) {
        CHECK(c->received + (size_t)nread <= c->total);
        if (memcmp(buf, c->data + c->received, (size_t)nread) != 0) {
            fprintf(stderr, "echo client: wrong bytes at offset %zu\n", c->received);
            CHECK(0);
        }
        c->received += (size_t)nread;
        return;
    }
    CHECK_EQ(nread, EVMUX_EOF);
    CHECK(buf == NULL);
    CHECK_EQ(c->received, c->total);
    CHECK_EQ(c->writes_done, c->writes_issued);
    CHECK_EQ(c->inflight, 0);
    CHECK_EQ(c->shut_calls, 1);
    CHECK_EQ(c->eof, 0);
    c->eof = 1;
    CHECK_EQ(evmux_stream_read_start(s, su_client_read_cb), EVMUX_EOF);
    CHECK_OK(evmux_close(&s->handle, su_client_closed));
}

static inline void su_client_connect_cb(evmux_connect_req *req, int status)
{
    struct su_echo_client *c = (struct su_echo_client *)req->data;
    CHECK_EQ(c->in_call, 0);
    CHECK_EQ(status, 0);
    CHECK_EQ(c->connected, 0);
    c->connected = 1;
    CHECK_OK(evmux_stream_read_start(&c->s, su_client_read_cb));
    su_client_pump(c);
}

/* Connects a client; early: start writing before the connection is up. */
static inline void su_client_start(evmux_loop *loop, struct su_echo_client *c,
                                   const unsigned char *data, size_t total, uint32_t seed,
                                   const struct sockaddr_storage *addr, socklen_t len, int early,
                                   int *done)
{
    memset(c, 0, sizeof *c);
    c->loop = loop;
    c->data = data;
    c->total = total;
    c->rng = seed ? seed : 7;
    c->done = done;
    c->s.handle.data = c;
    c->creq.data = c;
    CHECK_OK(evmux_stream_init(loop, &c->s));
    c->in_call = 1;
    int rc = evmux_connect(&c->creq, &c->s, (const struct sockaddr *)addr, len, 5000,
                           su_client_connect_cb);
    c->in_call = 0;
    CHECK_OK(rc);
    if (early)
        su_client_pump(c);
}

/* Echoes `bytes` per connection over `nclients` connections to a stream
 * API echo server listening on addr, all on one loop, and checks
 * everything. */
static inline void su_echo_run(const struct sockaddr_storage *addr, socklen_t len, int nclients,
                               size_t bytes, uint32_t seed)
{
    enum { MAXC = 8 };
    CHECK(nclients <= MAXC);
    evmux_loop *loop = unit_loop_new();
    struct su_echo_server srv;
    struct sockaddr_storage bound;
    socklen_t blen = su_echo_server_start(loop, &srv, addr, len, &bound);

    unsigned char *data[MAXC];
    struct su_echo_client *clients = calloc((size_t)nclients, sizeof *clients);
    CHECK(clients != NULL);
    int done = 0;
    for (int i = 0; i < nclients; i++) {
        data[i] = su_random_bytes(bytes, seed + 977u * (uint32_t)i);
        if (bytes >= 65536)
            CHECK(su_all_byte_values(data[i], bytes));
        su_client_start(loop, &clients[i], data[i], bytes, seed * 31u + (uint32_t)i, &bound,
                        blen, i % 2, &done);
    }
    su_run_until(loop, &done, nclients, 20000);
    CHECK_EQ(srv.accepted, nclients);
    /* The server closes in its shutdown callback, which may follow the
     * client's EOF by an iteration. */
    su_run_until(loop, &srv.closed, nclients, 5000);
    CHECK_EQ(srv.read_errors, 0);
    for (int i = 0; i < nclients; i++) {
        CHECK_EQ(clients[i].received, bytes);
        CHECK_EQ(clients[i].eof, 1);
        CHECK_EQ(clients[i].shut_calls, 1);
        CHECK_EQ(clients[i].connected, 1);
        free(data[i]);
    }
    CHECK_OK(evmux_close(&srv.listener.handle, su_echo_listener_closed));
    unit_loop_finish(loop);
    CHECK_EQ(srv.listener_closed, 1);
    free(clients);
}

#endif
