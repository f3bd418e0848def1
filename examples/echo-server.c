/* The uppercase echo server of the original text, on evmux streams: one
 * thread serves every client, and each byte comes back with a-z
 * uppercased. Backpressure: when a client stops reading its replies, we
 * stop reading its requests, so it costs at most about HIGH bytes here.
 * Like the original, it runs until killed (Ctrl-C); examples/
 * timers-and-signals.c shows a graceful stop.
 * Run: evmux-example-echo-server [PORT]   (default 8081; 0 picks a free one) */
#include <evmux.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define HIGH (1024 * 1024) /* owed more than this: pause the client */

static void on_closed(evmux_handle *h)
{
    free(h); /* the stream is the first member of what calloc gave us */
}

static void on_shutdown(evmux_stream *s, int status)
{
    (void)status;
    evmux_close(&s->handle, on_closed);
}

static void on_read(evmux_stream *s, ssize_t nread, char *buf)
{
    if (nread == EVMUX_EOF && evmux_stream_shutdown(s, on_shutdown) == 0)
        return; /* the client is done: send what we owe, then close */
    if (nread < 0) { /* reset, or an error */
        evmux_close(&s->handle, on_closed);
        return;
    }
    for (ssize_t i = 0; i < nread; i++) /* the buffer is ours to change */
        if (buf[i] >= 'a' && buf[i] <= 'z')
            buf[i] -= 'a' - 'A';
    evmux_buf reply = {buf, (size_t)nread};
    if (evmux_stream_write(NULL, s, &reply, 1, NULL) < 0)
        evmux_close(&s->handle, on_closed);
    else if (evmux_stream_over_high(s))
        evmux_stream_read_stop(s); /* it is not reading: neither do we */
}

static void on_drain(evmux_stream *s)
{
    evmux_stream_read_start(s, on_read);
}

static void on_accept(evmux_listener *l, int status)
{
    evmux_stream *s = status < 0 ? NULL : calloc(1, sizeof *s);
    if (s == NULL)
        return; /* out of descriptors, say: the listener copes on its own */
    evmux_stream_init(evmux_handle_loop(&l->handle), s);
    if (evmux_accept(l, s) < 0 || evmux_stream_set_watermarks(s, HIGH, HIGH / 4, on_drain) < 0 ||
        evmux_stream_read_start(s, on_read) < 0)
        evmux_close(&s->handle, on_closed);
}

int main(int argc, char **argv)
{
    char *end = "", where[64];
    unsigned long port = argc > 1 ? strtoul(argv[1], &end, 10) : 8081;
    struct sockaddr_storage addr;
    socklen_t len;
    evmux_loop *loop;
    evmux_listener listener;
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
    fflush(stdout); /* a script may be waiting for that line on a pipe */
    return evmux_run(loop, EVMUX_RUN_DEFAULT) < 0 ? 1 : 0;
}
