/* Helpers for the examples' tests; see example_harness.h. */
#include "example_harness.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void example_init(int argc, char **argv, int nprogs, unsigned seconds)
{
    if (argc != nprogs + 1) {
        fprintf(stderr, "usage: %s and the paths of %d example programs\n", argv[0], nprogs);
        exit(2);
    }
    for (int i = 1; i <= nprogs; i++)
        CHECK(access(argv[i], X_OK) == 0);
    /* echo_init wants a server and a client: the first example is both. */
    char *args[] = {argv[0], argv[1], argv[1], NULL};
    echo_init(3, args, seconds);
}

int example_read_line(echo_proc *p, char *buf, size_t size, int timeout_ms)
{
    uint64_t deadline = echo_now_ms() + (uint64_t)timeout_ms;
    size_t len = 0;
    CHECK(p->out_fd >= 0 && size > 0);
    for (;;) {
        char c;
        ssize_t r = read(p->out_fd, &c, 1); /* a byte at a time: the rest stays in the pipe */
        if (r == 1 && c == '\n')
            break;
        if (r == 1) {
            if (len + 1 >= size)
                echo_fail("a line of the example's output is longer than %zu bytes", size - 1);
            buf[len++] = c;
            continue;
        }
        if (r == 0) {
            if (len == 0)
                return -1;
            break;
        }
        if (errno != EAGAIN && errno != EINTR)
            echo_fail("reading the example's output: %s", strerror(errno));
        uint64_t now = echo_now_ms();
        if (now >= deadline)
            echo_fail("no complete line from the example within %d ms (got \"%.*s\")", timeout_ms,
                      (int)len, buf);
        struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
        poll(&pfd, 1, (int)(deadline - now));
    }
    buf[len] = '\0';
    return (int)len;
}

int example_start_server(echo_proc *p, const char *path)
{
    char *argv[] = {(char *)path, "0", NULL};
    char line[256], rebuilt[256];
    int port = 0;
    echo_spawn(p, argv, ECHO_PIPE_OUT, 0);
    if (example_read_line(p, line, sizeof line, ECHO_SANITIZED ? 20000 : 10000) < 0)
        echo_fail("%s closed its output without a listening line", path);
    if (sscanf(line, "listening on 127.0.0.1:%d", &port) != 1 || port <= 0 || port > 65535)
        echo_fail("%s: expected \"listening on 127.0.0.1:PORT\", got \"%s\"", path, line);
    snprintf(rebuilt, sizeof rebuilt, "listening on 127.0.0.1:%d", port);
    if (strcmp(line, rebuilt) != 0)
        echo_fail("%s: expected exactly \"%s\", got \"%s\"", path, rebuilt, line);
    return port;
}

void example_expect_exit(echo_proc *p, int code, int timeout_ms, const char *what)
{
    char st[96];
    if (!echo_proc_wait(p, timeout_ms))
        echo_fail("%s: still running after %d ms", what, timeout_ms);
    if (!WIFEXITED(p->status) || WEXITSTATUS(p->status) != code)
        echo_fail("%s: %s, expected exit %d", what, echo_status_str(p->status, st, sizeof st), code);
    echo_proc_close_pipes(p);
}

void example_stop(echo_proc *p, int sig, const char *what)
{
    if (echo_proc_wait(p, 0))
        echo_fail("%s: exited before the signal", what);
    CHECK(kill(p->pid, sig) == 0);
    example_expect_exit(p, 0, 10000, what);
}
