/* Helpers for the tests of examples/ (tests/example_*.c), on top of the
 * echo harness's process and socket helpers. Each test gets the paths of
 * the example programs it runs as its arguments. */
#ifndef EVMUX_TEST_EXAMPLE_HARNESS_H
#define EVMUX_TEST_EXAMPLE_HARNESS_H

#include "echo_harness.h"

/* Checks that argv[1..nprogs] are programs, then does what echo_init does
 * (watchdog after `seconds`, children killed on exit, SIGPIPE ignored). */
void example_init(int argc, char **argv, int nprogs, unsigned seconds);

/* One line of p's stdout, without its '\n', into buf (at most size - 1
 * bytes). Returns its length, or -1 at EOF (a last line without '\n' is
 * returned first); fails the test after timeout_ms. */
int example_read_line(echo_proc *p, char *buf, size_t size, int timeout_ms);

/* Starts a server example as `path 0` (stdout piped, stderr the test's),
 * checks that its first line is exactly "listening on 127.0.0.1:PORT" and
 * returns PORT. */
int example_start_server(echo_proc *p, const char *path);

/* Waits up to timeout_ms for p to exit; fails unless it exited with
 * `code`. Closes the pipes. */
void example_expect_exit(echo_proc *p, int code, int timeout_ms, const char *what);

/* Sends sig and expects exit 0 within 10 s. */
void example_stop(echo_proc *p, int sig, const char *what);

#endif
