/* evmux-peer-libevent: the uppercase echo server on libevent 2.
 *
 * The way the libevent book's ROT13 server does it: an evconnlistener
 * accepts, each connection is a bufferevent, and the read callback drains
 * the input evbuffer through a buffer, transforms it and adds it to the
 * output. libevent does the reading, writing and queueing.
 *
 * Backpressure with the write watermark: past PEER_OWED_HIGH bytes in the
 * output buffer we disable reading; the write callback, which libevent runs
 * when the output drains to the low watermark (PEER_OWED_LOW), enables it
 * again. On EOF the low watermark drops to 0 so that the write callback
 * says when everything owed has gone out; then we free the bufferevent.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "peer_common.h"

static char read_buf[PEER_READ_SIZE]; /* one loop, one buffer for everybody */

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *input = bufferevent_get_input(bev);
    struct evbuffer *output = bufferevent_get_output(bev);
    int n;
    while ((n = evbuffer_remove(input, read_buf, sizeof read_buf)) > 0) {
        peer_handle(read_buf, (size_t)n);
        evbuffer_add(output, read_buf, (size_t)n);
    }
    if (evbuffer_get_length(output) > PEER_OWED_HIGH)
        bufferevent_disable(bev, EV_READ); /* on_write enables it again */
}

/* The output drained to PEER_OWED_LOW or below. */
static void on_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    bufferevent_enable(bev, EV_READ);
}

/* After EOF: the output is empty, everything owed went out. */
static void on_flushed(struct bufferevent *bev, void *arg)
{
    (void)arg;
    bufferevent_free(bev);
}

static void on_event(struct bufferevent *bev, short events, void *arg)
{
    (void)arg;
    if (events & BEV_EVENT_ERROR) {
        bufferevent_free(bev); /* reset: nothing more can be delivered */
    } else if (events & BEV_EVENT_EOF) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
            bufferevent_free(bev);
            return;
        }
        bufferevent_disable(bev, EV_READ);
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        bufferevent_setcb(bev, NULL, on_flushed, on_event, NULL);
    }
}

static void on_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *addr,
                      int len, void *arg)
{
    (void)addr;
    (void)len;
    (void)arg;
    struct event_base *base = evconnlistener_get_base(listener);
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        evutil_closesocket(fd);
        peer_count_refused("cannot make a bufferevent");
        return;
    }
    peer_set_nodelay(fd);
    bufferevent_setcb(bev, on_read, on_write, on_event, NULL);
    bufferevent_setwatermark(bev, EV_WRITE, PEER_OWED_LOW, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void on_accept_error(struct evconnlistener *listener, void *arg)
{
    (void)listener;
    (void)arg;
    peer_accept_failed(EVUTIL_SOCKET_ERROR());
}

static void on_signal(evutil_socket_t signo, short events, void *arg)
{
    (void)signo;
    (void)events;
    event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
    struct peer_options opt;
    int status = peer_parse_args(argc, argv, "libevent", "libevent bufferevents", &opt);
    if (status >= 0)
        return status;
    peer_init_process();

    struct event_base *base = event_base_new();
    if (base == NULL) {
        fprintf(stderr, "evmux-peer-libevent: cannot make an event base\n");
        return 1;
    }
    struct sockaddr_storage addr;
    socklen_t len;
    peer_resolve(&opt, &addr, &len);
    struct evconnlistener *listener =
        evconnlistener_new_bind(base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                SOMAXCONN, (struct sockaddr *)&addr, (int)len);
    if (listener == NULL) {
        fprintf(stderr, "evmux-peer-libevent: cannot listen on %s:%u: %s\n", opt.host, opt.port,
                strerror(errno));
        return 1;
    }
    evconnlistener_set_error_cb(listener, on_accept_error);

    struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);

    peer_announce(evconnlistener_get_fd(listener));
    event_base_dispatch(base);
    peer_print_summary();
    return 0;
}
