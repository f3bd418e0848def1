/* The wake-up descriptor: the one platform-specific piece of cross-thread
 * wake-ups. Linux has eventfd, a counter in one descriptor; elsewhere a
 * non-blocking pipe does the same job with two. Either way a write makes
 * the descriptor readable and the loop's watcher on it ends the wait. */
#include "evmux_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

int evmux__wakeup_open(int *read_fd, int *write_fd)
{
#ifdef __linux__
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    *read_fd = *write_fd = fd;
    return 0;
#else
    int fds[2];
    if (pipe(fds) < 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) < 0 ||
            fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0) {
            int err = -errno;
            close(fds[0]);
            close(fds[1]);
            return err;
        }
    }
    *read_fd = fds[0];
    *write_fd = fds[1];
    return 0;
#endif
}

/* Async-signal-safe. A full pipe or a saturated counter already means
 * "readable", so EAGAIN needs no retry. */
void evmux__wakeup_signal(int write_fd)
{
    int saved_errno = errno; /* a signal handler's caller must not see ours */
#ifdef __linux__
    uint64_t one = 1;
    ssize_t n;
    do
        n = write(write_fd, &one, sizeof one);
    while (n < 0 && errno == EINTR);
#else
    char byte = 1;
    ssize_t n;
    do
        n = write(write_fd, &byte, 1);
    while (n < 0 && errno == EINTR);
#endif
    errno = saved_errno;
}

void evmux__wakeup_drain(int read_fd)
{
#ifdef __linux__
    uint64_t count;
    ssize_t n;
    do
        n = read(read_fd, &count, sizeof count);
    while (n < 0 && errno == EINTR);
#else
    char buf[64];
    ssize_t n;
    do
        n = read(read_fd, buf, sizeof buf);
    while (n > 0 || (n < 0 && errno == EINTR));
#endif
}

void evmux__wakeup_close(int read_fd, int write_fd)
{
    if (read_fd >= 0)
        close(read_fd);
    if (write_fd >= 0 && write_fd != read_fd)
        close(write_fd);
}
