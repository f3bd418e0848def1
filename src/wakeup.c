/* The wake-up descriptor: the one platform-specific piece of cross-thread
 * wake-ups. An eventfd is a counter in one descriptor: a write makes it
 * readable, and the loop's watcher on it ends the wait. (evmux builds on
 * Linux only for now: the core uses accept4 and MSG_NOSIGNAL too. A port
 * would add a non-blocking pipe here, with its two descriptors.) */
#include "evmux_internal.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

int evmux__wakeup_open(int *read_fd, int *write_fd)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    *read_fd = *write_fd = fd;
    return 0;
}

/* Async-signal-safe. A saturated counter already means "readable", so
 * EAGAIN needs no retry. */
void evmux__wakeup_signal(int write_fd)
{
    int saved_errno = errno; /* a signal handler's caller must not see ours */
    uint64_t one = 1;
    ssize_t n;
    do
        n = write(write_fd, &one, sizeof one);
    while (n < 0 && errno == EINTR);
    errno = saved_errno;
}

void evmux__wakeup_drain(int read_fd)
{
    uint64_t count;
    ssize_t n;
    do
        n = read(read_fd, &count, sizeof count);
    while (n < 0 && errno == EINTR);
}

void evmux__wakeup_close(int read_fd, int write_fd)
{
    if (read_fd >= 0)
        close(read_fd);
    if (write_fd >= 0 && write_fd != read_fd)
        close(write_fd);
}
