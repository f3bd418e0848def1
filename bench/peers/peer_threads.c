/* evmux-peer-threads: blocking I/O, one thread per connection.
 *
 * The main thread blocks in accept(); each client gets a detached thread
 * that blocks in recv(), uppercases, and blocks in send() until all of it
 * went out. No event loop, no non-blocking sockets, no queue: while a
 * thread waits in send() for a slow client it does not read from it, so
 * what is owed stays in the kernel's socket buffers and backpressure comes
 * for free. On EOF everything already went out: close.
 *
 * Threads get small stacks (THREAD_STACK) so that 10000 connections fit;
 * the read buffer lives on that stack.
 */
#include <pthread.h>

#include "peer_common.h"

#define THREAD_STACK (64 * 1024)
#define THREAD_BUF (16 * 1024)

static bool send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        p += sent;
        n -= (size_t)sent;
    }
    return true;
}

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[THREAD_BUF];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* EOF (all replies went out) or reset */
        peer_handle(buf, (size_t)n);
        if (!send_all(fd, buf, (size_t)n))
            break;
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    struct peer_options opt;
    int status = peer_parse_args(argc, argv, "threads", "blocking I/O, one thread per connection", &opt);
    if (status >= 0)
        return status;
    peer_init_process();
    peer_exit_on_signals();

    int lfd = peer_listen(&opt, false);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    peer_announce(lfd);

    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            peer_accept_failed(errno);
            if (errno == EMFILE || errno == ENFILE)
                usleep(10000); /* blocking accept would spin: wait for a close */
            continue;
        }
        peer_set_nodelay(fd);
        pthread_t thread;
        int rc = pthread_create(&thread, &attr, serve, (void *)(intptr_t)fd);
        if (rc != 0) {
            close(fd);
            peer_count_refused(strerror(rc));
        }
    }
}
