/* A TCP client: connects with a timeout, sends one message, half-closes (the
 * server sees where the request ends), prints the whole reply, which ends
 * when the server closes, and gives up if the reply takes too long.
 * Run: evmux-example-tcp-client 127.0.0.1 8081 "hello"   (prints HELLO from
 * the echo server). HOST is an IP literal: evmux never resolves names. */
#include <evmux.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_TIMEOUT_MS 5000
#define REPLY_TIMEOUT_MS 10000

static evmux_stream conn;
static evmux_timer deadline;
static const char *host, *port, *message;
static int exit_code = 1; /* 0 once the whole reply is in */

static void finish(const char *what, int err)
{
    if (evmux_is_closing(&conn.handle))
        return; /* a connect we cancel by closing reports -ECANCELED afterwards */
    if (err < 0)
        fprintf(stderr, "%s %s:%s: %s\n", what, host, port, evmux_strerror(err));
    evmux_close(&conn.handle, NULL); /* nothing left open: evmux_run returns */
    evmux_close(&deadline.handle, NULL);
}

static void on_read(evmux_stream *s, ssize_t nread, char *buf)
{
    (void)s;
    if (nread > 0) { fwrite(buf, 1, (size_t)nread, stdout); return; }
    if (nread == EVMUX_EOF) { putchar('\n'); exit_code = 0; nread = 0; } /* all of it is in */
    finish("reading the reply from", (int)nread);
}

static void on_connect(evmux_connect_req *req, int status)
{
    (void)req;
    if (status < 0) { finish("cannot connect to", status); return; } /* e.g. refused */
    evmux_buf msg = {message, strlen(message)};
    status = evmux_stream_write(NULL, &conn, &msg, 1, NULL);
    if (status == 0) status = evmux_stream_shutdown(&conn, NULL); /* the request ends here */
    if (status == 0) status = evmux_stream_read_start(&conn, on_read);
    if (status < 0) finish("cannot send to", status);
}

static void on_timeout(evmux_timer *t) { (void)t; finish("no reply in time from", -ETIMEDOUT); }

int main(int argc, char **argv)
{
    char *end = "";
    unsigned long port_number = argc == 4 ? strtoul(argv[2], &end, 10) : 0;
    struct sockaddr_storage addr;
    socklen_t len;
    if (argc != 4 || *end || port_number > 65535 ||
        evmux_addr_ip(argv[1], (unsigned)port_number, &addr, &len) < 0) {
        fprintf(stderr, "usage: %s HOST PORT MESSAGE   (HOST: an IP literal like 127.0.0.1)\n", argv[0]);
        return 2;
    }
    host = argv[1], port = argv[2], message = argv[3];
    evmux_loop *loop;
    evmux_connect_req req;
    int rc = evmux_loop_new(&loop, NULL);
    if (rc == 0) {
        evmux_stream_init(loop, &conn);
        evmux_timer_init(loop, &deadline, on_timeout);
        evmux_timer_start(&deadline, CONNECT_TIMEOUT_MS + REPLY_TIMEOUT_MS, 0); /* one-shot */
        rc = evmux_connect(&req, &conn, (struct sockaddr *)&addr, len, CONNECT_TIMEOUT_MS, on_connect);
        if (rc < 0) finish("cannot connect to", rc); /* e.g. out of descriptors */
        rc = evmux_run(loop, EVMUX_RUN_DEFAULT);
        evmux_loop_free(loop);
    }
    if (rc < 0) fprintf(stderr, "event loop: %s\n", evmux_strerror(rc));
    return exit_code;
}
