/* A line-based chat: each complete line a client sends goes to every other
 * client as "ID: line". Try it with a few `nc 127.0.0.1 PORT` terminals.
 * Run: evmux-example-chat-server [PORT]   (default 8081; 0 picks a free one)
 *
 * Backpressure in a fan-out server: one client that does not read must not
 * cost unbounded memory, nor hold up the others. The echo server stops
 * reading the client that falls behind; here that would be the wrong
 * client, the sender, and pausing senders would let one slow reader stall
 * the whole room. So the policy is to disconnect: a client owed more than
 * HIGH bytes is closed, with the reason logged. We do not drop its lines
 * instead: a conversation with silent holes is worse than a clean cut the
 * client sees and can recover from by reconnecting. What it did receive is
 * then exactly what was said, in order, up to the cut. */
#include <evmux.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#define HIGH (256 * 1024) /* owed more than this: the client is disconnected */
#define MAX_LINE 4096     /* a longer line is refused too: memory per client is bounded */

struct client {
    evmux_stream stream;
    struct client *prev, *next; /* everyone in the room */
    unsigned id;
    size_t len;          /* bytes of the line being received */
    char line[MAX_LINE]; /* lines arrive in pieces; each is sent on when complete */
};
static struct client *clients;
static unsigned last_id;
static evmux_listener listener;
static evmux_signal sigs[2];

static void on_closed(evmux_handle *h) { free(h->data); }

static void drop(struct client *c, const char *why)
{
    printf("client %u left: %s\n", c->id, why);
    if (c->prev) c->prev->next = c->next; else clients = c->next;
    if (c->next) c->next->prev = c->prev;
    evmux_close(&c->stream.handle, on_closed);
}

/* To everyone but the sender. Each write is copied into the stream's queue
 * as far as the kernel does not take it at once: the queue is what a slow
 * client costs us, hence the check after each write. */
static void broadcast(struct client *from, const char *line, size_t len)
{
    char prefix[16];
    int n = snprintf(prefix, sizeof prefix, "%u: ", from->id);
    evmux_buf msg[2] = {{prefix, (size_t)n}, {line, len}};
    for (struct client *c = clients, *next; c != NULL; c = next) {
        next = c->next; /* drop() unlinks c */
        if (c == from)
            continue;
        if (evmux_stream_write(NULL, &c->stream, msg, 2, NULL) < 0)
            drop(c, "cannot write to it");
        else if (evmux_stream_over_high(&c->stream))
            drop(c, "too slow: over 256 KiB unread");
    }
}

static void on_read(evmux_stream *s, ssize_t nread, char *buf)
{
    struct client *c = s->handle.data;
    if (nread < 0) {
        drop(c, nread == EVMUX_EOF ? "disconnected" : evmux_strerror((int)nread));
        return;
    }
    for (ssize_t i = 0; i < nread; i++) {
        if (c->len == MAX_LINE) {
            drop(c, "line too long");
            return;
        }
        c->line[c->len++] = buf[i];
        if (buf[i] == '\n') {
            broadcast(c, c->line, c->len);
            c->len = 0;
        }
    }
}

static void on_accept(evmux_listener *l, int status)
{
    struct client *c = status < 0 ? NULL : calloc(1, sizeof *c);
    if (c == NULL)
        return; /* e.g. out of descriptors: the listener copes on its own */
    evmux_stream_init(evmux_handle_loop(&l->handle), &c->stream);
    c->stream.handle.data = c;
    c->id = ++last_id;
    if ((c->next = clients)) clients->prev = c;
    clients = c;
    char hello[48];
    evmux_buf msg = {hello, (size_t)snprintf(hello, sizeof hello, "* you are client %u\n", c->id)};
    printf("client %u joined\n", c->id);
    if (evmux_accept(l, &c->stream) < 0 ||
        evmux_stream_set_watermarks(&c->stream, HIGH, HIGH / 2, NULL) < 0 ||
        evmux_stream_write(NULL, &c->stream, &msg, 1, NULL) < 0 ||
        evmux_stream_read_start(&c->stream, on_read) < 0)
        drop(c, "cannot serve it");
}

static void on_signal(evmux_signal *sig, int signum)
{
    (void)sig;
    printf("signal %d: stopping\n", signum);
    evmux_close(&listener.handle, NULL); /* once all is closed, evmux_run returns */
    for (int i = 0; i < 2; i++)
        evmux_close(&sigs[i].handle, NULL);
    while (clients)
        drop(clients, "server stopping");
}

int main(int argc, char **argv)
{
    char *end = "", where[64];
    unsigned long port = argc > 1 ? strtoul(argv[1], &end, 10) : 8081;
    struct sockaddr_storage addr;
    socklen_t len;
    evmux_loop *loop;
    setvbuf(stdout, NULL, _IOLBF, 0); /* the log, line by line, even into a pipe */
    int rc = *end || port > 65535 ? -EINVAL : evmux_loop_new(&loop, NULL);
    if (rc == 0)
        rc = evmux_addr_ip("127.0.0.1", (unsigned)port, &addr, &len);
    if (rc == 0)
        rc = evmux_listen(loop, &listener, (struct sockaddr *)&addr, len, NULL, on_accept);
    if (rc < 0) {
        fprintf(stderr, "cannot listen on port %s: %s\n", argc > 1 ? argv[1] : "8081",
                evmux_strerror(rc));
        return 1;
    }
    evmux_listener_address(&listener, &addr, &len); /* the port picked for 0 */
    evmux_addr_format((struct sockaddr *)&addr, len, where, sizeof where);
    printf("listening on %s\n", where);
    for (int i = 0; i < 2; i++) {
        evmux_signal_init(loop, &sigs[i]);
        evmux_signal_start(&sigs[i], on_signal, i ? SIGTERM : SIGINT);
    }
    rc = evmux_run(loop, EVMUX_RUN_DEFAULT);
    evmux_loop_free(loop);
    return rc < 0 ? 1 : 0;
}
