/* evmux-peer-libuv: the uppercase echo server on libuv.
 *
 * The echo server of the libuv guide ("Networking"): uv_tcp_t handles,
 * uv_listen/uv_accept, uv_read_start with an alloc callback, uv_write for the
 * replies, uv_shutdown on EOF. Two departures from the guide's code, both
 * within libuv's documented API:
 *  - the alloc callback lends one static buffer to every read (the buffer is
 *    ours again once read_cb returns; one loop, one thread). The guide's
 *    malloc(suggested_size) per read, freed when the write completes, made
 *    glibc trim its heap (a brk() call) on about one message in five, and let
 *    every queued write pin 64 KiB however few bytes it carried;
 *  - a reply goes out with uv_try_write first, and only the part the socket
 *    did not take is copied into a uv_write request (as Node.js does).
 *    uv_try_write refuses while writes are queued, so order is kept.
 * An idle connection thus holds nothing but its uv_tcp_t.
 *
 * Backpressure: libuv counts queued bytes in write_queue_size. Past
 * PEER_OWED_HIGH we stop reading; a completed write that leaves
 * PEER_OWED_LOW or less starts it again. On EOF, uv_shutdown waits for the
 * queued writes, then we close.
 */
#include <uv.h>

#include "peer_common.h"

struct conn {
    uv_tcp_t tcp; /* first member: a uv_stream_t * to it is a struct conn * */
    bool paused;  /* reading stopped until the client catches up */
    bool eof;     /* the client sent EOF; uv_shutdown is under way */
};

struct write_req {
    uv_write_t req;
    uv_buf_t buf;
    char data[]; /* the part of a reply the socket did not take at once */
};

static char read_buf[PEER_READ_SIZE]; /* one loop, one buffer for everybody */

static void on_close(uv_handle_t *handle)
{
    free(handle); /* the struct conn */
}

static void conn_close(uv_stream_t *stream)
{
    if (!uv_is_closing((uv_handle_t *)stream))
        uv_close((uv_handle_t *)stream, on_close);
}

static void alloc_buffer(uv_handle_t *handle, size_t suggested_size, uv_buf_t *buf)
{
    (void)handle;
    (void)suggested_size;
    *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void on_write(uv_write_t *req, int status)
{
    struct write_req *wr = (struct write_req *)req;
    uv_stream_t *stream = req->handle;
    struct conn *c = (struct conn *)stream;
    free(wr);
    if (status < 0) {
        conn_close(stream); /* reset, or cancelled by our close */
        return;
    }
    if (c->paused && !c->eof && stream->write_queue_size <= PEER_OWED_LOW) {
        c->paused = false;
        uv_read_start(stream, alloc_buffer, on_read);
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    conn_close(req->handle); /* everything owed went out (or never will) */
    free(req);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = (struct conn *)stream;
    if (nread > 0) {
        peer_handle(buf->base, (size_t)nread);
        uv_buf_t reply = uv_buf_init(buf->base, (unsigned)nread);
        int sent = uv_try_write(stream, &reply, 1);
        if (sent == UV_EAGAIN)
            sent = 0; /* the socket is full, or writes are queued */
        if (sent < 0) {
            conn_close(stream); /* reset: nothing more can be delivered */
            return;
        }
        if (sent == nread)
            return;
        size_t rest = (size_t)nread - (size_t)sent;
        struct write_req *wr = malloc(sizeof *wr + rest);
        if (wr == NULL) {
            conn_close(stream);
            return;
        }
        memcpy(wr->data, buf->base + sent, rest);
        wr->buf = uv_buf_init(wr->data, (unsigned)rest);
        if (uv_write(&wr->req, stream, &wr->buf, 1, on_write) < 0) {
            free(wr);
            conn_close(stream);
            return;
        }
        if (stream->write_queue_size > PEER_OWED_HIGH) {
            uv_read_stop(stream); /* on_write starts it again */
            c->paused = true;
        }
    } else if (nread == UV_EOF) {
        c->eof = true;
        uv_shutdown_t *req = malloc(sizeof *req);
        if (req == NULL || uv_shutdown(req, stream, on_shutdown) < 0) {
            free(req);
            conn_close(stream);
        }
    } else if (nread < 0) {
        conn_close(stream); /* reset: nothing more can be delivered */
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) {
        peer_accept_failed(-status);
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        peer_count_refused("out of memory");
        return;
    }
    uv_tcp_init(server->loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close((uv_stream_t *)&c->tcp);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_buffer, on_read);
}

static void on_signal(uv_signal_t *handle, int signum)
{
    (void)signum;
    uv_stop(handle->loop);
}

int main(int argc, char **argv)
{
    struct peer_options opt;
    int status = peer_parse_args(argc, argv, "libuv", "libuv", &opt);
    if (status >= 0)
        return status;
    peer_init_process();

    uv_loop_t *loop = uv_default_loop();
    struct sockaddr_storage addr;
    socklen_t len;
    peer_resolve(&opt, &addr, &len);
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    int rc = uv_tcp_bind(&server, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&server, SOMAXCONN, on_connection);
    uv_os_fd_t fd;
    if (rc == 0)
        rc = uv_fileno((uv_handle_t *)&server, &fd);
    if (rc < 0) {
        fprintf(stderr, "evmux-peer-libuv: cannot listen on %s:%u: %s\n", opt.host, opt.port,
                uv_strerror(rc));
        return 1;
    }

    uv_signal_t sigint, sigterm;
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);

    peer_announce(fd);
    uv_run(loop, UV_RUN_DEFAULT);
    peer_print_summary();
    return 0;
}
