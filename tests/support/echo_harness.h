/* Shared helpers for the echo integration tests (tests/echo_*.c).
 *
 * Each test is run as: test SERVER_PATH CLIENT_PATH, with EVMUX_BACKEND set.
 * The harness starts evmux-echo-server as a child on port 0, reads its
 * "listening on HOST:PORT (backend NAME)" line, watches it through /proc,
 * and drives many client connections with an evmux loop of its own (epoll,
 * else poll: the select backend could not hold 1000+ client fds). */
#ifndef EVMUX_TEST_ECHO_HARNESS_H
#define EVMUX_TEST_ECHO_HARNESS_H

#include "check.h"
#include "evmux.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Sanitizer builds run the server instrumented too: slower, and with an
 * allocator that keeps freed memory in quarantine, so RSS limits relax. */
#if defined(__SANITIZE_ADDRESS__)
#define ECHO_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ECHO_SANITIZED 1
#endif
#endif
#ifndef ECHO_SANITIZED
#define ECHO_SANITIZED 0
#endif

/* ThreadSanitizer runs a signal handler only at the next call it
 * intercepts, which io_uring_enter is not: under it, a server asleep in
 * its ring sees a signal only once something else wakes it. */
#if defined(__SANITIZE_THREAD__)
#define ECHO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ECHO_TSAN 1
#endif
#endif
#ifndef ECHO_TSAN
#define ECHO_TSAN 0
#endif

/* Set by echo_init from argv. */
extern const char *echo_server_path;
extern const char *echo_client_path;

/* Checks argv, ignores SIGPIPE in the test process (the children get it
 * back at its default), raises RLIMIT_NOFILE to the hard limit and arms a
 * whole-test watchdog that kills every child and fails after `seconds`. */
void echo_init(int argc, char **argv, unsigned seconds);

/* Prints "[test] fmt" to stderr with the elapsed time: progress notes that
 * make a ctest log readable. */
void echo_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Fails the test with a message (and kills the children via atexit). */
void echo_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

uint64_t echo_now_ms(void);
void echo_sleep_ms(unsigned ms);

/* ------------------------------------------------------------------ */
/* Child processes                                                     */
/* ------------------------------------------------------------------ */

enum {
    ECHO_PIPE_IN = 1u << 0,
    ECHO_PIPE_OUT = 1u << 1,
    ECHO_PIPE_ERR = 1u << 2
};

typedef struct echo_proc {
    pid_t pid;
    int in_fd;  /* write end of the child's stdin, or -1 */
    int out_fd; /* read end of the child's stdout, or -1 */
    int err_fd; /* read end of the child's stderr, or -1 */
    int exited;
    int status; /* waitpid status once exited */
} echo_proc;

/* fork/exec argv[0] with argv. Pipes per `pipes` (non-blocking on our
 * side); unpiped streams stay the test's own (stdin: /dev/null). In the
 * child: default signal dispositions and mask, no fds but 0-2, death signal
 * when the test dies, and RLIMIT_NOFILE = nofile if nofile > 0. */
void echo_spawn(echo_proc *p, char *const argv[], unsigned pipes, long nofile);

/* The same, with stdin_fd (e.g. a pty) as the child's stdin when it is
 * >= 0 (then ECHO_PIPE_IN is ignored). */
void echo_spawn_io(echo_proc *p, char *const argv[], int stdin_fd, unsigned pipes, long nofile);
/* The same, with stderr_fd (e.g. a file) as the child's stderr when it is
 * >= 0 (then ECHO_PIPE_ERR is ignored). */
void echo_spawn_full(echo_proc *p, char *const argv[], int stdin_fd, int stderr_fd, unsigned pipes,
                     long nofile);

/* The whole of a (small) file as a NUL-terminated string; "" if missing.
 * The caller frees it. */
char *echo_read_file(const char *path);

/* Waits up to timeout_ms for the child to exit; 1 if it has (p->status
 * set), 0 if it still runs. */
int echo_proc_wait(echo_proc *p, int timeout_ms);

/* SIGKILLs the child if it still runs, reaps it, closes the pipes. */
void echo_proc_kill(echo_proc *p);
void echo_proc_close_pipes(echo_proc *p);

/* Reads p's first stdout line (without '\n') into line, one byte at a
 * time so that nothing after it is consumed; fails the test, naming
 * `what`, if p ends first, the line is too long, or it takes over 10 s
 * (20 s under a sanitizer). Returns the line's length. */
size_t echo_proc_read_line(echo_proc *p, char *line, size_t size, const char *what);

/* Describes a wait status ("exit 0", "signal 9 (Killed)") into buf. */
const char *echo_status_str(int status, char *buf, size_t len);

/* Output of a finished program run. */
typedef struct echo_output {
    char *out;
    size_t out_len;
    char *err;
    size_t err_len;
    int status;
    int timed_out;
} echo_output;

/* Runs argv with `in` (in_len bytes) on its stdin, then EOF, collecting
 * stdout and stderr, for at most timeout_ms (then SIGKILL, timed_out=1). */
void echo_run(char *const argv[], const void *in, size_t in_len, int timeout_ms,
              echo_output *o);
/* The same with stdin_fd (a file, say) as the program's stdin. */
void echo_run_fd(char *const argv[], int stdin_fd, int timeout_ms, echo_output *o);
void echo_output_free(echo_output *o);

/* ------------------------------------------------------------------ */
/* The server under test                                               */
/* ------------------------------------------------------------------ */

typedef struct echo_server_opts {
    const char *const *args; /* extra arguments, NULL-terminated, or NULL */
    long nofile;             /* RLIMIT_NOFILE for the server, 0 = inherit */
    const char *backend;     /* expected backend; NULL = EVMUX_BACKEND */
    const char *stderr_file; /* the server's stderr goes there (truncated), or
                                NULL: to the test's own */
} echo_server_opts;

typedef struct echo_server {
    echo_proc proc;
    int port;
    char backend[32];
    char line[256]; /* the listening line, without '\n' */
} echo_server;

/* Starts the server with "--port 0" plus opts->args (opts may be NULL),
 * waits for its listening line and checks it (host 127.0.0.1, backend as
 * expected). Fails the test on any problem. */
void echo_server_start(echo_server *s, const echo_server_opts *opts);

/* Sends `sig` and waits up to timeout_ms for the exit; returns the wait
 * status. Fails the test if the server does not exit in time. */
int echo_server_stop(echo_server *s, int sig, int timeout_ms);

/* Stops with SIGTERM and checks exit status 0. */
void echo_server_stop_ok(echo_server *s);

/* Waits up to timeout_ms for an exit already asked for (a signal sent by
 * the test) and fails unless it is exit 0; closes the pipes. */
void echo_server_expect_exit0(echo_server *s, const char *what, int timeout_ms);

/* 1 while the server process runs (reaps it if it died). */
int echo_server_alive(echo_server *s);

/* Fails with the server's exit status unless it still runs. */
void echo_server_check_alive(echo_server *s, const char *when);

/* Bytes the server wrote to stdout after the listening line (drains the
 * pipe without blocking); for the "exactly one line" check. */
size_t echo_server_extra_stdout(echo_server *s, char *buf, size_t len);

/* /proc readings of a process: VmRSS in KiB, user+system CPU seconds,
 * number of open descriptors. */
long echo_proc_rss_kib(pid_t pid);
double echo_proc_cpu_s(pid_t pid);
int echo_proc_fd_count(pid_t pid);

/* Waits up to timeout_ms until the server's fd count is <= want; returns
 * the last count seen. */
int echo_wait_fd_count(pid_t pid, int want, int timeout_ms);

/* The queues of the server's socket for the connection from our local port
 * `client_port`, from /proc/net/tcp: *rxq = received but not yet read by
 * the server, *txq = written by the server but not yet acknowledged by us.
 * Returns 0, or -1 if the socket is not found. */
int echo_server_queues(int server_port, int client_port, long *txq, long *rxq);
long echo_server_rx_queue(int server_port, int client_port);

/* ------------------------------------------------------------------ */
/* Sockets and data                                                    */
/* ------------------------------------------------------------------ */

/* A non-blocking, close-on-exec TCP socket to 127.0.0.1:port. With
 * wait_ms > 0 it waits that long for the connection to complete; with 0 it
 * may return while the connection is in progress. Returns the fd or -errno
 * (-ETIMEDOUT if it did not complete in time). */
int echo_connect(int port, int wait_ms);

/* The local port of a socket. */
int echo_local_port(int fd);

/* A port on 127.0.0.1 that nothing listens on (bound then released). */
int echo_unused_port(void);

/* Closes with SO_LINGER 0, so the peer gets a RST. */
void echo_close_reset(int fd);

/* Deterministic payload: byte `off` of stream `seed`. The first 256 bytes
 * of a stream are a permutation of all byte values; the rest is
 * pseudo-random (all values too). Any range can be regenerated. */
void echo_payload(uint64_t seed, uint64_t off, uint8_t *buf, size_t n);

/* What the server must send back: ASCII a-z uppercased, all else as is. */
static inline uint8_t echo_upper(uint8_t c)
{
    return (c >= 'a' && c <= 'z') ? (uint8_t)(c - 'a' + 'A') : c;
}
void echo_upper_buf(uint8_t *dst, const uint8_t *src, size_t n);

/* xorshift64*: the tests' own deterministic random numbers. */
uint64_t echo_rand(uint64_t *state);
/* A value in [lo, hi]. */
uint64_t echo_rand_range(uint64_t *state, uint64_t lo, uint64_t hi);

/* Blocking-style helpers with a deadline for a single socket (which may be
 * non-blocking). They return 0 on success or -errno (-ETIMEDOUT when the
 * deadline passed); echo_recv_some returns the count, 0 at EOF. */
int echo_send_all(int fd, const void *buf, size_t n, int timeout_ms);
int echo_recv_exact(int fd, void *buf, size_t n, int timeout_ms);
ssize_t echo_recv_some(int fd, void *buf, size_t n, int timeout_ms);
/* Expects EOF (read returns 0) within timeout_ms, no further data.
 * Returns 0, -ECONNRESET..., -ETIMEDOUT, or -EPROTO if data came. */
int echo_recv_eof(int fd, int timeout_ms);

/* Sends stream `seed` from offset 0 without reading, until at least `min`
 * bytes went out and then the socket took nothing for stall_ms (the server
 * stopped reading from us and holds echoed data it cannot deliver), or
 * `max` went out, or 10 s passed. Returns the count sent. */
size_t echo_send_until_stalled(int fd, uint64_t seed, size_t min, size_t max, int stall_ms);

/* Bytes in our socket's send queue not yet acknowledged by the peer, and
 * bytes in its receive queue not yet read (-1 on error). */
long echo_outq(int fd);
long echo_inq(int fd);

/* Sends stream `seed` from offset 0 on a socket that is never read, in
 * steps, each time waiting until the server has read everything, until
 * the server holds at least `want_owed` bytes that it has read but could
 * not pass to its kernel (computed from the socket queues), while still
 * reading. Then a FIN from us reaches the server while it owes data.
 * Returns the bytes sent, and in *owed what the server then owes; fails
 * the test if that state is not reached within `max` bytes. */
size_t echo_make_server_owe(int fd, int server_port, uint64_t seed, size_t want_owed, size_t max,
                            size_t *owed);

/* One round trip on a connected socket: sends n bytes of stream `seed`,
 * reads back n bytes and checks them. Returns 0 or a negative errno
 * (-EBADMSG on wrong data). */
int echo_roundtrip(int fd, uint64_t seed, size_t n, int timeout_ms);

/* ------------------------------------------------------------------ */
/* Many streams on an evmux client loop                                */
/* ------------------------------------------------------------------ */

typedef enum echo_result {
    ES_IDLE = 0,      /* not started */
    ES_RUNNING,
    ES_OK,            /* everything echoed back exactly (and EOF if asked) */
    ES_EOF,           /* the server closed before everything came back */
    ES_RESET,         /* ECONNRESET / EPIPE */
    ES_MISMATCH,      /* wrong bytes, or more than was sent */
    ES_ERROR,         /* another socket error */
    ES_CONNECT_FAILED,
    ES_TIMEOUT        /* still running when the group's time was up */
} echo_result;

enum {
    ES_HALF_CLOSE = 1u << 0, /* shutdown(SHUT_WR) once everything is sent */
    ES_EXPECT_EOF = 1u << 1, /* OK only after EOF follows the full echo */
    ES_NO_READ = 1u << 2,    /* do not read (yet); clear it and call echo_stream_update */
    ES_DEFER_READ = 1u << 3, /* read only once everything is sent */
    ES_PINGPONG = 1u << 4,   /* send one message, wait for its echo, repeat */
    ES_KEEP_FD = 1u << 5     /* leave the socket open at the end */
};

typedef struct echo_group echo_group;

typedef struct echo_stream {
    evmux_io io;
    echo_group *group;
    int fd;           /* -1: the group connects it; else a connected socket */
    unsigned mode;    /* ES_* flags */
    uint64_t seed;
    uint64_t total;   /* bytes to send and to get back */
    size_t max_chunk; /* largest write; 0 = 64 KiB */
    /* progress */
    uint64_t sent;
    uint64_t recvd;
    uint64_t hold_at;  /* group barrier: sending pauses here */
    uint64_t msg_end;  /* ES_PINGPONG: end of the message in flight */
    uint64_t roundtrips;
    uint64_t rng;
    int connecting;
    int io_inited;
    int confirmed; /* counted in the group's confirmed */
    int half_closed;
    int got_eof;
    echo_result result;
    int err;        /* errno for ES_RESET / ES_ERROR / ES_CONNECT_FAILED */
    char msg[160];  /* what went wrong */
} echo_stream;

typedef struct echo_group_opts {
    const char *what;       /* name for messages */
    int port;               /* where streams with fd == -1 connect */
    int timeout_ms;         /* guard: then running streams become ES_TIMEOUT */
    size_t max_unconfirmed; /* connect at most this many before earlier ones
                               got their first echo byte; 0 = no limit */
    int barrier;            /* each stream sends a short first message and
                               holds until every stream got its echo */
    void (*on_barrier)(echo_group *g);
    void (*on_tick)(echo_group *g);
    unsigned tick_ms;
    void *user;
} echo_group_opts;

struct echo_group {
    evmux_loop *loop;
    echo_stream *s;
    size_t n;
    const echo_group_opts *o;
    size_t started, confirmed, finished, released;
    uint64_t t0_ms;
    int timed_out;
    evmux_timer guard;
    evmux_timer tick;
};

/* An on_tick for a drain in the middle of the traffic: once the barrier
 * has released the streams and `fraction` of all their bytes have come
 * back, sends `sig` to `pid`, once (opts.user points to this). */
typedef struct echo_signal_midway {
    pid_t pid;
    int sig;
    double fraction;
    int sent;              /* set once the signal went */
    size_t finished_at;    /* streams complete at that moment */
} echo_signal_midway;
void echo_signal_midway_tick(echo_group *g);

/* Runs the streams to completion (or the timeout) on a fresh client loop
 * and frees it. Returns the number of streams that did not end ES_OK. */
size_t echo_group_run(echo_stream *s, size_t n, const echo_group_opts *o);

/* Milliseconds since the group started. */
uint64_t echo_group_elapsed_ms(const echo_group *g);

/* Re-evaluates a stream's interest after the caller changed mode or total
 * from a tick. */
void echo_stream_update(echo_stream *s);

/* Stops sending after what has been sent so far: total becomes sent (with
 * ES_PINGPONG, the end of the message in flight), and the stream completes
 * once that much has come back. */
void echo_stream_finish_sending(echo_stream *s);

/* Fails the test listing the streams that did not end ES_OK. */
void echo_group_check_all_ok(echo_stream *s, size_t n, const char *what);

const char *echo_result_name(echo_result r);

#endif
