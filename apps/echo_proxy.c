/* evmux-echo-server --proxy-protocol: behind HAProxy (send-proxy or
 * send-proxy-v2), each connection starts with a PROXY header naming the
 * real client. Its bytes are gathered here, parsed by the library
 * (evmux_proxy_parse), and what follows the header is echoed as usual.
 *
 * A header that is malformed, too long, or missing (the first bytes are
 * something else) closes that connection with its reason logged; one that
 * does not come within PROXY_WAIT_MS does too. Nothing here blocks or
 * waits on the loop: the header's bytes arrive as reads like any other. */
#include "echo_server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PROXY_WAIT_MS 5000

struct proxy_wait {
    evmux_timer timeout;
    struct conn *conn; /* NULL once the connection no longer waits */
    size_t len;
    unsigned char bytes[EVMUX_PROXY_HEADER_MAX];
};

static void wait_freed(evmux_handle *h)
{
    free(h->data);
}

void proxy_wait_end(struct conn *c)
{
    struct proxy_wait *w = c->proxy;
    c->proxy = NULL;
    w->conn = NULL;
    evmux_close(&w->timeout.handle, wait_freed);
}

void proxy_refuse(struct conn *c, const char *why)
{
    char text[128];
    conn_peer_text(c, text, sizeof text);
    conn_log(c, "closing the connection from %s: %s", text, why);
    conn_close(c);
}

static void on_wait_over(evmux_timer *t)
{
    struct proxy_wait *w = t->handle.data;
    proxy_refuse(w->conn, "no PROXY header within 5 s");
}

int proxy_wait_start(struct conn *c)
{
    struct proxy_wait *w = malloc(sizeof *w);
    if (w == NULL)
        return -ENOMEM;
    w->conn = c;
    w->len = 0;
    evmux_timer_init(c->shard->loop, &w->timeout, on_wait_over);
    w->timeout.handle.data = w;
    int rc = evmux_timer_start(&w->timeout, PROXY_WAIT_MS, 0);
    if (rc < 0) {
        evmux_close(&w->timeout.handle, wait_freed);
        return rc;
    }
    evmux_unref(&w->timeout.handle); /* the connection keeps the loop going */
    c->proxy = w;
    return 0;
}

static void log_client(struct conn *c, const evmux_proxy_header *h)
{
    char via[128], from[128];
    conn_peer_text(c, via, sizeof via);
    if (h->local)
        conn_log(c, "connection from %s (PROXY v%d, local: no client address)", via, h->version);
    else if (evmux_addr_format((const struct sockaddr *)&h->source, h->source_len, from,
                               sizeof from) == 0)
        conn_log(c, "connection from %s via %s (PROXY v%d)", from, via, h->version);
}

void proxy_input(struct conn *c, const char *buf, size_t len)
{
    struct proxy_wait *w = c->proxy;
    size_t take = sizeof w->bytes - w->len;
    if (take > len)
        take = len;
    memcpy(w->bytes + w->len, buf, take);
    w->len += take;
    evmux_proxy_header h;
    ssize_t n = evmux_proxy_parse(w->bytes, w->len, &h);
    if (n == -EAGAIN)
        return; /* a correct beginning: more is coming */
    if (n < 0) {
        proxy_refuse(c, n == -EMSGSIZE ? "PROXY header too long" : "no valid PROXY header");
        return;
    }
    if (c->shard->srv->opt.log_conns)
        log_client(c, &h);
    /* What followed the header: the rest of our copy, then of buf. */
    size_t after = w->len - (size_t)n, rest = len - take;
    char *data = malloc(after + rest + 1);
    if (data == NULL) {
        proxy_refuse(c, "out of memory");
        return;
    }
    memcpy(data, w->bytes + n, after);
    memcpy(data + after, buf + take, rest);
    proxy_wait_end(c);
    if (after + rest > 0)
        conn_echo(c, data, after + rest);
    free(data);
}
