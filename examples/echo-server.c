/* The seed's uppercase echo server on evmux streams: one thread serves every
 * client, and each byte comes back with a-z uppercased. Backpressure: when
 * a client stops reading its replies, we stop reading its requests, so it
 * costs at most about HIGH bytes here. SIGINT or SIGTERM stops it.
 * Run: evmux-example-echo-server [PORT]   (default 8081; 0 picks a free one) */
#include <evmux.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#define HIGH (1024 * 1024) /* owed more: stop reading the client until it has taken 3/4 */

struct client {
    evmux_stream stream;
    struct client *prev, *next; /* the open clients, to close them on a signal */
};
static struct client *clients;
static evmux_listener listener;
static evmux_signal sigs[2];

static void on_closed(evmux_handle *h) { free(h->data); }
static void drop(struct client *c)
{
    if (c->prev) c->prev->next = c->next; else clients = c->next;
    if (c->next) c->next->prev = c->prev;
    evmux_close(&c->stream.handle, on_closed);
}
static void on_shutdown(evmux_stream *s, int status)
{
    if (status != -ECANCELED) drop(s->handle.data); /* -ECANCELED: we closed it first */
}

static void on_read(evmux_stream *s, ssize_t nread, char *buf)
{
    if (nread == EVMUX_EOF && evmux_stream_shutdown(s, on_shutdown) == 0)
        return; /* the client is done: send what we owe, then close */
    if (nread < 0) { drop(s->handle.data); return; } /* reset or other error */
    for (ssize_t i = 0; i < nread; i++) /* the buffer is ours to change */
        if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] -= 'a' - 'A';
    evmux_buf reply = {buf, (size_t)nread};
    if (evmux_stream_write(NULL, s, &reply, 1, NULL) < 0) drop(s->handle.data);
    else if (evmux_stream_over_high(s)) evmux_stream_read_stop(s); /* it is not reading */
}

static void on_drain(evmux_stream *s) { evmux_stream_read_start(s, on_read); }

static void on_accept(evmux_listener *l, int status)
{
    struct client *c = status < 0 ? NULL : calloc(1, sizeof *c);
    if (c == NULL) return; /* e.g. out of descriptors: the listener copes on its own */
    evmux_stream_init(evmux_handle_loop(&l->handle), &c->stream);
    c->stream.handle.data = c;
    if ((c->next = clients)) clients->prev = c;
    clients = c;
    if (evmux_accept(l, &c->stream) < 0 ||
        evmux_stream_set_watermarks(&c->stream, HIGH, HIGH / 4, on_drain) < 0 ||
        evmux_stream_read_start(&c->stream, on_read) < 0)
        drop(c);
}

/* Closes every handle: then evmux_run returns, and the loop can be freed. */
static void on_signal(evmux_signal *sig, int signum)
{
    (void)sig;
    fprintf(stderr, "signal %d: stopping\n", signum);
    evmux_close(&listener.handle, NULL);
    for (int i = 0; i < 2; i++) evmux_close(&sigs[i].handle, NULL);
    while (clients) drop(clients);
}

int main(int argc, char **argv)
{
    char *end = "", where[64];
    unsigned long port = argc > 1 ? strtoul(argv[1], &end, 10) : 8081;
    struct sockaddr_storage addr;
    socklen_t len;
    evmux_loop *loop;
    int rc = *end || port > 65535 ? -EINVAL : evmux_loop_new(&loop, NULL);
    if (rc == 0) rc = evmux_addr_ip("127.0.0.1", (unsigned)port, &addr, &len);
    if (rc == 0) rc = evmux_listen(loop, &listener, (struct sockaddr *)&addr, len, NULL, on_accept);
    if (rc < 0) {
        fprintf(stderr, "cannot listen on port %s: %s\n", argc > 1 ? argv[1] : "8081",
                evmux_strerror(rc));
        return 1;
    }
    for (int i = 0; i < 2; i++) { /* before the line below: a script may signal once it sees it */
        evmux_signal_init(loop, &sigs[i]);
        evmux_signal_start(&sigs[i], on_signal, i ? SIGTERM : SIGINT);
    }
    evmux_listener_address(&listener, &addr, &len); /* the port picked for 0 */
    evmux_addr_format((struct sockaddr *)&addr, len, where, sizeof where);
    printf("listening on %s\n", where);
    fflush(stdout); /* a script may be waiting for that line on a pipe */
    rc = evmux_run(loop, EVMUX_RUN_DEFAULT);
    evmux_loop_free(loop);
    return rc < 0 ? 1 : 0;
}
