/* evmux-peer-udp-libevent: the UDP uppercase echo on libevent 2.
 *
 * The plain libevent way for a datagram socket (bufferevents are for
 * streams): one `event` on the non-blocking socket (EV_READ | EV_PERSIST);
 * libevent says when it is readable and we do the I/O. The read callback takes up to RECV_BATCH datagrams, one recvfrom each
 * into one static 64 KiB buffer, stopping early at EAGAIN; each is handled
 * and its reply goes straight back with sendto. libevent's epoll backend is
 * level-triggered, so datagrams left past the bound are reported again on
 * the next turn of the loop.
 *
 * A reply the socket does not take (EAGAIN) is copied into a FIFO with its
 * destination, and a second event (EV_WRITE | EV_PERSIST), added while the
 * FIFO is not empty, sends it when the socket has room; while anything
 * waits there new replies queue behind it, so they leave in order. The FIFO
 * holds at most PEER_UDP_QUEUE_MAX bytes, bookkeeping included; past that a
 * reply is dropped and counted. Linked against libevent_core only.
 */
#include <event2/event.h>

#include "peer_common.h"

#define RECV_BATCH 64 /* datagrams per read callback at most */

struct queued {
    struct queued *next;
    size_t size; /* what it counts in queued_bytes */
    socklen_t addrlen;
    struct sockaddr_storage addr;
    size_t len;
    char data[];
};

static char recv_buf[PEER_UDP_DGRAM_MAX]; /* one loop, one buffer */
static struct queued *queue_head, **queue_tail = &queue_head;
static size_t queued_bytes;
static struct event *write_event; /* added while the queue is not empty */

/* False when the socket has no room (EAGAIN); a reply refused with an error
 * counts as sent (and dropped). */
static bool send_reply(int fd, const char *p, size_t n, const struct sockaddr *to,
                       socklen_t tolen)
{
    while (sendto(fd, p, n, 0, to, tolen) < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return false;
        if (errno != EINTR) {
            peer_udp_send_failed(errno);
            break;
        }
    }
    return true;
}

static void enqueue(const char *p, size_t n, const struct sockaddr_storage *to, socklen_t tolen)
{
    size_t size = sizeof(struct queued) + n;
    struct queued *q = NULL;
    if (queued_bytes + size > PEER_UDP_QUEUE_MAX || (q = malloc(size)) == NULL) {
        peer_udp_dropped_full++;
        return;
    }
    q->next = NULL;
    q->size = size;
    q->addrlen = tolen;
    memcpy(&q->addr, to, tolen);
    q->len = n;
    memcpy(q->data, p, n);
    if (queue_head == NULL)
        event_add(write_event, NULL);
    *queue_tail = q;
    queue_tail = &q->next;
    queued_bytes += size;
}

static void on_writable(evutil_socket_t fd, short events, void *arg)
{
    (void)events;
    (void)arg;
    while (queue_head != NULL) {
        struct queued *q = queue_head;
        if (!send_reply(fd, q->data, q->len, (struct sockaddr *)&q->addr, q->addrlen))
            return; /* still full: the event stays */
        queue_head = q->next;
        queued_bytes -= q->size;
        free(q);
    }
    queue_tail = &queue_head;
    event_del(write_event);
}

static void on_readable(evutil_socket_t fd, short events, void *arg)
{
    (void)events;
    (void)arg;
    for (int i = 0; i < RECV_BATCH; i++) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t n = recvfrom(fd, recv_buf, sizeof recv_buf, 0, (struct sockaddr *)&from, &fromlen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                peer_udp_recv_failed(errno);
            return;
        }
        peer_handle(recv_buf, (size_t)n);
        if (queue_head != NULL ||
            !send_reply(fd, recv_buf, (size_t)n, (struct sockaddr *)&from, fromlen))
            enqueue(recv_buf, (size_t)n, &from, fromlen);
    }
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
    int status = peer_udp_parse_args(argc, argv, "udp-libevent",
                                     "libevent event, recvfrom/sendto", &opt);
    if (status >= 0)
        return status;
    peer_init_process();

    struct event_base *base = event_base_new();
    if (base == NULL) {
        fprintf(stderr, "evmux-peer-udp-libevent: cannot make an event base\n");
        return 1;
    }
    int fd = peer_udp_socket(&opt, true);
    struct event *read_event = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, NULL);
    write_event = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, NULL);
    if (read_event == NULL || write_event == NULL || event_add(read_event, NULL) < 0) {
        fprintf(stderr, "evmux-peer-udp-libevent: cannot make the socket's events\n");
        return 1;
    }

    struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);

    peer_announce(fd);
    event_base_dispatch(base);
    peer_print_summary();
    return 0;
}
