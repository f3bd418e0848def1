/* evmux_connect_host: a stream connected to a host name. It resolves the
 * name on the worker pool (resolve.c), then tries each address in turn
 * with evmux_connect, under one overall timeout, and reports once.
 *
 * How it fits the stream: the request embeds an evmux_connect_req, and
 * from the start to the report the stream's connect_req points at it,
 * also while no attempt is under way (resolving, or between attempts),
 * which ST_CONNECT_HOST marks. So everything the stream does about a
 * connect applies unchanged: its close stops the request's timer and
 * reports -ECANCELED through it before the close callback; writes and a
 * shutdown made meanwhile wait for the connection, or fail with the
 * report; another connect is refused with -EALREADY. The embedded
 * request's timer serves the lookup as the overall timeout, and each
 * attempt gets what is left of it through evmux_connect.
 *
 * A lookup abandoned (the stream closed, the timeout passed) is let go
 * without a report: its job finishes on its thread and frees what it
 * made, and the request is the caller's again at once. A cancel ends the
 * attempt under way (or the lookup) and owes the report through the
 * stream's path for a connect refused at once, so it comes from the loop.
 *
 * Which error is reported when no address connects: the last attempt's,
 * except that an address this host cannot use at all (no such family in
 * the kernel, no route, no source address: typical of IPv6 addresses on
 * an IPv4-only host) does not hide an earlier attempt's answer, which
 * says more about the server (-ECONNREFUSED). */
#include "resolve.h"
#include "stream_internal.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>

enum host_state {
    HOST_IDLE = 0,
    HOST_RESOLVING,
    HOST_CONNECTING, /* an attempt is under way, or one is being started */
    HOST_CANCELLED,  /* its report is owed through the stream */
    HOST_CLOSING     /* the stream was closed: its close reports */
};

static void on_attempt(evmux_connect_req *creq, int status);

static void finish(evmux_connect_host_req *req, int status)
{
    evmux_stream *s = req->stream;
    evmux_freeaddrinfo(req->addrs);
    req->addrs = req->next = NULL;
    if (s->connect_req == &req->connect) { /* no attempt under way */
        evmux_timer_stop(&req->connect.timeout);
        s->connect_req = NULL;
    }
    s->state &= ~ST_CONNECT_HOST;
    req->state = HOST_IDLE;
    req->cb(req, status); /* may free req, or connect the stream again */
    evmux__st_connect_given_up(s, status);
}

/* The stream is closing: its close reports -ECANCELED through the
 * request (stream.c, close_finish), before the close callback. */
static void await_close(evmux_connect_host_req *req)
{
    req->stream->connect_req = &req->connect;
    req->stream->state |= ST_CONNECT_HOST;
    req->state = HOST_CLOSING;
}

/* Between attempts, or before the first one: the request holds the
 * stream, without a descriptor. */
static void hold(evmux_connect_host_req *req)
{
    req->stream->connect_req = &req->connect;
    req->stream->state |= ST_CONNECT_HOST;
}

static bool unusable_here(int err)
{
    return err == -EAFNOSUPPORT || err == -ENETUNREACH || err == -EADDRNOTAVAIL;
}

static void note_error(evmux_connect_host_req *req, int err)
{
    if (req->error == 0 || !unusable_here(err))
        req->error = err;
}

static bool deadline_passed(const evmux_connect_host_req *req)
{
    return req->deadline != 0 && req->stream->handle.loop->now_ns >= req->deadline;
}

/* Starts an attempt on the next address; reports when none is left. */
static void try_next(evmux_connect_host_req *req)
{
    evmux_stream *s = req->stream;
    struct addrinfo *ai;
    while ((ai = req->next) != NULL) {
        req->next = ai->ai_next;
        if (evmux__closing(&s->handle)) {
            await_close(req);
            return;
        }
        uint64_t left = 0;
        if (req->deadline != 0) {
            if (deadline_passed(req)) {
                finish(req, -ETIMEDOUT);
                return;
            }
            /* Rounded up: the timeout never passes early. */
            left = (req->deadline - s->handle.loop->now_ns + 999999) / 1000000;
        }
        /* evmux_connect takes the stream's connect_req and the timer. */
        evmux_timer_stop(&req->connect.timeout);
        s->connect_req = NULL;
        s->state &= ~ST_CONNECT_HOST;
        req->state = HOST_CONNECTING;
        int rc = evmux_connect(&req->connect, s, ai->ai_addr, ai->ai_addrlen, left, on_attempt);
        if (rc == 0)
            return;
        hold(req);
        note_error(req, rc); /* e.g. -EAFNOSUPPORT: no IPv6 in this kernel */
    }
    finish(req, req->error);
}

/* An attempt's report, or the stream's close (-ECANCELED) at any stage. */
static void on_attempt(evmux_connect_req *creq, int status)
{
    evmux_connect_host_req *req = EVMUX__CONTAINER_OF(creq, evmux_connect_host_req, connect);
    if (req->state == HOST_RESOLVING)
        evmux__lookup_abandon(&req->resolve.lookup); /* only a close reaches us here */
    if (status == 0 || status == -ECANCELED || req->state != HOST_CONNECTING) {
        finish(req, status == 0 ? 0 : -ECANCELED);
        return;
    }
    if (status == -ETIMEDOUT && deadline_passed(req)) {
        finish(req, -ETIMEDOUT); /* the overall timeout, not the kernel's */
        return;
    }
    note_error(req, status);
    hold(req);
    try_next(req);
}

static void on_resolved(evmux_getaddrinfo_req *greq, int status, struct addrinfo *res)
{
    evmux_connect_host_req *req = EVMUX__CONTAINER_OF(greq, evmux_connect_host_req, resolve);
    if (evmux__closing(&req->stream->handle)) {
        /* Closed in this iteration, its close callback not yet run. */
        evmux_freeaddrinfo(res);
        await_close(req);
        return;
    }
    if (status < 0) {
        finish(req, status);
        return;
    }
    req->addrs = req->next = res;
    try_next(req);
}

static void on_lookup_timeout(evmux_timer *timer)
{
    evmux_connect_host_req *req = timer->handle.data;
    evmux__lookup_abandon(&req->resolve.lookup);
    finish(req, -ETIMEDOUT);
}

int evmux_connect_host(evmux_connect_host_req *req, evmux_stream *s, const char *host,
                       unsigned port, uint64_t timeout_ms, evmux_connect_host_cb cb)
{
    if (req == NULL || s == NULL || host == NULL || host[0] == '\0' || port > 65535 ||
        cb == NULL || evmux__closing(&s->handle))
        return -EINVAL;
    if (s->state & ST_OPEN)
        return -EISCONN;
    if (s->state & (ST_CONNECTING | ST_CONNECT_HOST))
        return -EALREADY;
    evmux_loop *loop = s->handle.loop;
    req->stream = s;
    req->cb = cb;
    req->addrs = req->next = NULL;
    req->error = 0;
    req->deadline = 0;
    if (timeout_ms > 0) /* past UINT64_MAX ns (584 years): as good as none */
        req->deadline = timeout_ms < (UINT64_MAX - loop->now_ns) / 1000000
                            ? loop->now_ns + timeout_ms * 1000000
                            : UINT64_MAX;

    /* An IP literal: no lookup, one attempt. */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    if (evmux_addr_ip(host, port, &addr, &addr_len) == 0) {
        req->state = HOST_CONNECTING;
        int rc = evmux_connect(&req->connect, s, (struct sockaddr *)&addr, addr_len, timeout_ms,
                               on_attempt);
        if (rc < 0)
            req->state = HOST_IDLE;
        return rc;
    }

    /* A name: the stream waits on the request while the pool resolves it,
     * under the overall timeout. */
    req->connect.stream = s;
    req->connect.cb = on_attempt;
    evmux_timer_init(loop, &req->connect.timeout, on_lookup_timeout);
    evmux__handle_make_internal(&req->connect.timeout.handle);
    if (!(s->handle.flags & EVMUX_FLAG_REF))
        evmux_unref(&req->connect.timeout.handle);
    req->connect.timeout.handle.data = req;
    int rc = timeout_ms > 0 ? evmux_timer_start(&req->connect.timeout, timeout_ms, 0) : 0;
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    if (rc == 0)
        rc = evmux_getaddrinfo(loop, &req->resolve, on_resolved, host, service, &hints);
    if (rc < 0) {
        evmux_timer_stop(&req->connect.timeout);
        req->state = HOST_IDLE;
        return rc;
    }
    req->state = HOST_RESOLVING;
    hold(req);
    return 0;
}

int evmux_connect_host_cancel(evmux_connect_host_req *req)
{
    if (req == NULL)
        return -EINVAL;
    switch (req->state) {
    case HOST_RESOLVING:
        evmux__lookup_abandon(&req->resolve.lookup);
        break;
    case HOST_CONNECTING:
        break;
    case HOST_CANCELLED:
    case HOST_CLOSING:
        return -EALREADY; /* the report of -ECANCELED is on its way */
    default:
        return -EINVAL;
    }
    req->state = HOST_CANCELLED;
    req->stream->connect_req = &req->connect;
    evmux__st_connect_abort(req->stream, -ECANCELED);
    return 0;
}
