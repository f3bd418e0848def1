/*
 * evmux: event-driven I/O for C.
 *
 * One thread watches many descriptors through the best interface the kernel
 * offers (io_uring, epoll, poll or select today), behind one small API.
 *
 * Conventions (see docs/design.md):
 *  - Every function that can fail returns 0 or a negative errno value
 *    (-EINVAL, -ENOMEM, ...); evmux_strerror() names it. There is no global
 *    error state and nothing aborts on bad input. Each function's comment
 *    lists its errors. Every such function returns -EINVAL for a NULL
 *    pointer argument not documented as optional ("NULL" in the lists).
 *  - The other functions tolerate NULL too: an accessor then returns a
 *    neutral value (0; -1 for a descriptor; "" for a name) and a void
 *    function does nothing.
 *  - The loop is opaque. Handles (evmux_io, evmux_timer, evmux_async,
 *    evmux_handoff, evmux_signal, evmux_stream, evmux_listener, evmux_udp)
 *    and requests (evmux_write_req, evmux_connect_req, evmux_udp_send_req,
 *    evmux_work, evmux_getaddrinfo_req, evmux_getnameinfo_req,
 *    evmux_connect_host_req) are structs that the caller allocates, may
 *    embed in its own structs, and must keep alive and unmoved: a handle
 *    from *_init until its close callback has run, a request until its
 *    callback has run.
 *    Every handle begins with an evmux_handle named `handle`, whose `data`
 *    field belongs to the caller.
 *  - A loop belongs to the thread that runs it. Only evmux_async_send,
 *    evmux_handoff_send and evmux_stop may be called from other threads;
 *    every other function belongs to the loop's thread (a work request's
 *    work_cb runs on a pool thread and may call none of them).
 *  - Times are milliseconds on the monotonic clock, counted from the loop's
 *    cached time (evmux_now), which is read after each wait, before the
 *    callbacks run (and again after callbacks, while timers are pending).
 *  - A program behaves the same on every backend: the same callbacks, the
 *    same bytes, the same meaning of the write queue and its watermarks.
 */
#ifndef EVMUX_H
#define EVMUX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "evmux_version.h" /* EVMUX_VERSION_MAJOR, _MINOR, _PATCH, _STRING */

#ifdef __cplusplus
extern "C" {
#endif

#if defined(EVMUX_BUILDING) && defined(__GNUC__)
#define EVMUX_API __attribute__((visibility("default")))
#else
#define EVMUX_API
#endif

/* The version of the library the program runs with, which may be newer
 * than the headers it was compiled with (EVMUX_VERSION_NUMBER):
 * MAJOR * 10000 + MINOR * 100 + PATCH, e.g. 200 for 0.2.0. */
EVMUX_API unsigned evmux_version(void);
/* The same as text, e.g. "0.2.0". Static; never NULL. */
EVMUX_API const char *evmux_version_string(void);

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/* A short description of a negative errno value, EVMUX_EOF or an
 * EVMUX_EAI_* value, in general terms (which case it is, the function
 * that returned it documents); "success" for 0, "unknown error" for
 * positive values and others outside errno's range. Never returns NULL;
 * the string is static. */
EVMUX_API const char *evmux_strerror(int err);

/* Resolver errors: the EAI_* codes of getaddrinfo(3) and getnameinfo(3),
 * as evmux_getaddrinfo, evmux_getnameinfo and evmux_connect_host report
 * them, so that one int carries errno values and these alike. They lie in
 * -3001..-3099, reserved for them: inside the -4095..-1 window that errors
 * occupy (so `err < 0` and `err > -4096` tests keep working) and far from
 * every errno value (Linux's go to -133, EHWPOISON, and even the kernel's
 * internal ones stop near -530) and from EVMUX_EOF (-4095). The numbers
 * are evmux's own, the same on every C library.
 * EAI_SYSTEM is no constant: it is reported as the negative errno value
 * it stands for. EAI_MEMORY keeps a constant of its own (the resolver ran
 * out of memory on a pool thread), apart from the -ENOMEM a call returns
 * when evmux cannot start a lookup. A code a C library adds that evmux
 * does not know is reported as EVMUX_EAI_FAIL. */
#define EVMUX_EAI_AGAIN (-3001)      /* temporary failure: try again later */
#define EVMUX_EAI_BADFLAGS (-3002)   /* bad flags in hints or for getnameinfo */
#define EVMUX_EAI_FAIL (-3003)       /* non-recoverable failure of the resolver */
#define EVMUX_EAI_FAMILY (-3004)     /* address family not supported */
#define EVMUX_EAI_MEMORY (-3005)     /* the resolver ran out of memory */
#define EVMUX_EAI_NONAME (-3006)     /* name or service not known */
#define EVMUX_EAI_SERVICE (-3007)    /* service not available for the socket type */
#define EVMUX_EAI_SOCKTYPE (-3008)   /* socket type not supported */
#define EVMUX_EAI_NODATA (-3009)     /* the name has no address */
#define EVMUX_EAI_ADDRFAMILY (-3010) /* the name has no address in the family asked */
#define EVMUX_EAI_OVERFLOW (-3011)   /* a result does not fit its buffer */
#define EVMUX_EAI_IDN_ENCODE (-3012) /* the name cannot be encoded for IDN (AI_IDN) */
/* 1 if err is in the range reserved for resolver errors. */
#define EVMUX_IS_EAI(err) ((err) <= -3001 && (err) >= -3099)

/* ------------------------------------------------------------------ */
/* Loop                                                                */
/* ------------------------------------------------------------------ */

typedef struct evmux_loop evmux_loop;

typedef struct evmux_loop_options {
    /* "auto" (or NULL): the EVMUX_BACKEND environment variable if set,
     * else the best backend that starts. A name ("uring", "epoll", "poll",
     * "select"): that backend or an error (-ENOSYS if it is not built in,
     * or the error it failed to start with). Unknown names give -EINVAL. */
    const char *backend;
    /* Threads of the loop's worker pool (evmux_queue_work): at most this
     * many (up to 1024; more is -EINVAL), started as work arrives.
     * 0: the default, 4. */
    unsigned pool_threads;
} evmux_loop_options;

typedef enum evmux_run_mode {
    EVMUX_RUN_DEFAULT = 0, /* until no active handle is left, or evmux_stop */
    EVMUX_RUN_ONCE,        /* one iteration; blocks for events if needed */
    EVMUX_RUN_NOWAIT       /* one iteration; never blocks */
} evmux_run_mode;

/* Creates a loop. opts may be NULL (auto backend). On success *out is set
 * and 0 returned. Errors: -EINVAL (NULL out, pool_threads over 1024, an
 * unknown backend name), -ENOSYS (the backend is not built in, or the
 * kernel lacks it), -ENOMEM, -EMFILE or -ENFILE (out of descriptors), or
 * the error the named backend failed to start with (io_uring: -EPERM
 * where it is forbidden, e.g. by seccomp). */
EVMUX_API int evmux_loop_new(evmux_loop **out, const evmux_loop_options *opts);

/* Frees a loop. Refuses with -EBUSY while any handle is open (initialised
 * and its close callback not yet run), a work request has not completed,
 * a name lookup has not reported (or a pool thread still runs a cancelled
 * one) or the loop is running; the loop is then left untouched. Joins the
 * worker pool's threads. Errors: -EINVAL (NULL), -EBUSY. */
EVMUX_API int evmux_loop_free(evmux_loop *loop);

/* One iteration, on every backend (io_uring, epoll, poll, select): the due
 * timers; reports owed without waiting (a write the kernel took whole) and,
 * on io_uring, the send requests for queued bytes; watcher removals
 * deferred from earlier stops applied; the wait for events (not at all if
 * something is owed now); io callbacks, then on io_uring the results of
 * requests (reads, writes, connects); reports again; in EVMUX_RUN_ONCE the
 * timers that ended the wait; close callbacks. No callback runs inside the
 * call that caused it. */

/* Runs the loop in the given mode. Returns 0, or a negative errno value if
 * the backend failed (the loop can be freed afterwards). Use
 * evmux_loop_alive() to learn whether work remains. Stop a watcher
 * before closing its descriptor: a descriptor closed behind a started
 * watcher's back is not an error of the run, but what the watcher sees
 * differs by kernel interface (select and poll report it ready, epoll and
 * io_uring may never report it again). Errors:
 * -EINVAL (NULL, unknown mode), -EBUSY (already running: from a callback,
 * or on another thread), -EEXIST (io_uring: run on a thread other than the
 * one that created the loop, which the kernel refuses for a ring it has
 * tied to that thread), or the backend's error waiting (e.g. -ENOMEM). */
EVMUX_API int evmux_run(evmux_loop *loop, evmux_run_mode mode);

/* Makes evmux_run return after the current iteration (at the latest before
 * blocking again); called before evmux_run or from another thread while
 * the loop blocks, the next or current run returns. Safe from any thread.
 * NULL: nothing. */
EVMUX_API void evmux_stop(evmux_loop *loop);

/* 1 if evmux_run(EVMUX_RUN_DEFAULT) would go on: active referenced
 * handles, queued work, close callbacks or stream completions not yet
 * run, or closed streams whose kernel requests have not ended; 0
 * otherwise and for NULL. */
EVMUX_API int evmux_loop_alive(const evmux_loop *loop);

/* The name of the backend in use: "uring", "epoll", "poll" or "select";
 * "" for NULL. */
EVMUX_API const char *evmux_loop_backend(const evmux_loop *loop);

/* The cached monotonic time in milliseconds, updated once per iteration;
 * 0 for NULL. */
EVMUX_API uint64_t evmux_now(const evmux_loop *loop);

/* Reads the clock now and updates the cached time. NULL: nothing. */
EVMUX_API void evmux_update_time(evmux_loop *loop);

/* Call in the child after fork() before using a loop created in the parent:
 * rebuilds kernel state the two processes would otherwise share (an epoll
 * set, the wake-up descriptor). The worker pool's threads do not survive
 * fork: queued work runs on new threads, and work that was running in the
 * parent completes in the child with -ECANCELED. Errors: -EINVAL (NULL),
 * or the first error met rebuilding (-EMFILE, -ENFILE, -ENOMEM: out of
 * descriptors or memory; -EAGAIN: no pool thread could start); every part
 * is rebuilt that can be. */
EVMUX_API int evmux_loop_fork(evmux_loop *loop);

/* Names of the backends compiled into this build, in order of preference,
 * separated by commas: e.g. "uring,epoll,poll,select". */
EVMUX_API const char *evmux_backends_available(void);

/* ------------------------------------------------------------------ */
/* Handles                                                             */
/* ------------------------------------------------------------------ */

typedef struct evmux_handle evmux_handle;
typedef void (*evmux_close_cb)(evmux_handle *handle);

/* The part common to every handle. Only `data` is for the caller. */
struct evmux_handle {
    void *data;
    /* private */
    evmux_loop *loop;
    evmux_close_cb close_cb;
    evmux_handle *next_closing;
    unsigned type;
    unsigned flags;
};

/* Closes a handle: stops it at once (its callback will not run again, even
 * for an event already collected in this iteration) and calls close_cb
 * (which may be NULL) from the loop, after the current callbacks, exactly
 * once. The handle's memory may be freed in close_cb, not before. Closing a
 * handle twice returns -EALREADY. Does not close the caller's descriptor of
 * an evmux_io; does close a stream's or listener's socket, at once and
 * exactly once. Requests still pending on a closed stream (writes,
 * shutdown, connect) complete with -ECANCELED, exactly once, before
 * close_cb; a write whose bytes had all been sent completes with 0. Bytes
 * a stream has queued get the chance a readiness backend's write gives
 * them on every backend: the close offers them to the kernel before the
 * socket goes, so a reply written just before the close is delivered as
 * far as the kernel takes it. For a graceful end (every byte),
 * evmux_stream_shutdown first and close in its callback.
 * Errors: -EINVAL (NULL, or a handle never initialised if zeroed),
 * -EALREADY (closing or closed). */
EVMUX_API int evmux_close(evmux_handle *handle, evmux_close_cb close_cb);

/* 1 while a handle is closing or closed; 0 otherwise and for NULL. */
EVMUX_API int evmux_is_closing(const evmux_handle *handle);

/* The loop a handle was initialized on; NULL for NULL. */
EVMUX_API evmux_loop *evmux_handle_loop(const evmux_handle *handle);

/* 1 while a handle is started (an io watcher with interest, a pending
 * timer); 0 otherwise and for NULL. */
EVMUX_API int evmux_is_active(const evmux_handle *handle);

/* An unreferenced handle does not keep evmux_run(EVMUX_RUN_DEFAULT) going
 * on its own. Handles start referenced. NULL: nothing. */
EVMUX_API void evmux_ref(evmux_handle *handle);
EVMUX_API void evmux_unref(evmux_handle *handle);

/* ------------------------------------------------------------------ */
/* Descriptor watchers                                                  */
/* ------------------------------------------------------------------ */

enum {
    EVMUX_READABLE = 1u << 0,
    EVMUX_WRITABLE = 1u << 1
};

typedef struct evmux_io evmux_io;

/* events: the subset of the watched events that fired. An error or hang-up
 * on the descriptor is reported as every watched event, so that the next
 * read() or write() returns the error. */
typedef void (*evmux_io_cb)(evmux_io *io, unsigned events);

struct evmux_io {
    evmux_handle handle;
    /* private */
    int fd;
    unsigned events;         /* interest */
    unsigned pending_events; /* collected, not yet dispatched */
    evmux_io_cb cb;
    evmux_io *next_pending;
};

/* Prepares a watcher for a descriptor (the descriptor should be
 * non-blocking). One watcher per descriptor per loop may be started at a
 * time. Level-triggered: a callback repeats while the condition holds.
 * Errors: -EINVAL (NULL, fd < 0). */
EVMUX_API int evmux_io_init(evmux_loop *loop, evmux_io *io, int fd, evmux_io_cb cb);

/* Sets the interest to `events` (EVMUX_READABLE and/or EVMUX_WRITABLE),
 * starting or changing the watcher; 0 stops it. A descriptor that cannot
 * be waited for (a regular file, a directory, /dev/null) is always ready,
 * on every backend, as poll(2) reports it: its callback runs with its
 * whole interest on every iteration, and the loop does not block while it
 * is started.
 * Errors: -EINVAL (NULL, bad events, closing handle), -EBADF (the
 * descriptor is not open), -EEXIST (another watcher of this loop is
 * started on the descriptor), -ERANGE (beyond what the backend can
 * watch: select, descriptor >= FD_SETSIZE; io_uring, >= 2^29), -ENOSPC (epoll: the user's limit of watches), -EBUSY
 * (io_uring: no submission slot free), -ENOMEM. */
EVMUX_API int evmux_io_start(evmux_io *io, unsigned events);

/* Stops the watcher; its callback will not run again until restarted, even
 * for an event already collected. Stop (or close) the watcher before
 * closing its descriptor; a new descriptor needs a new watcher, even if it
 * has the same number. Stopping a stopped watcher is 0. Errors: -EINVAL
 * (NULL). */
EVMUX_API int evmux_io_stop(evmux_io *io);

/* The watcher's descriptor; -1 for NULL. */
EVMUX_API int evmux_io_fd(const evmux_io *io);

/* ------------------------------------------------------------------ */
/* Timers                                                              */
/* ------------------------------------------------------------------ */

typedef struct evmux_timer evmux_timer;
typedef void (*evmux_timer_cb)(evmux_timer *timer);

struct evmux_timer {
    evmux_handle handle;
    /* private */
    evmux_timer_cb cb;
    uint64_t deadline_ns;
    uint64_t repeat_ms;
    uint64_t start_seq;
    size_t heap_index;
};

/* Errors: -EINVAL (NULL). */
EVMUX_API int evmux_timer_init(evmux_loop *loop, evmux_timer *timer, evmux_timer_cb cb);

/* Fires once after timeout_ms (counted from evmux_now), then every
 * repeat_ms if that is not 0. Starting a started timer restarts it. A timer
 * never fires before its deadline, and fires at it or later: in the first
 * iteration after the callbacks that were running when it fell due (the
 * loop never sleeps past a deadline because a callback ran long), plus up
 * to 65.5 us, since timers with deadlines that close fire in the order
 * they were started, as equal deadlines do. Errors: -EINVAL (NULL, closing
 * handle), -ENOMEM (no memory, or 2^27 timers already started in this
 * loop). */
EVMUX_API int evmux_timer_start(evmux_timer *timer, uint64_t timeout_ms, uint64_t repeat_ms);

/* Stopping a stopped timer is 0. Errors: -EINVAL (NULL). */
EVMUX_API int evmux_timer_stop(evmux_timer *timer);

/* Restarts a repeating timer with its repeat interval as the timeout.
 * Errors: -EINVAL (NULL, repeat interval 0, closing handle), -ENOMEM (as
 * evmux_timer_start). */
EVMUX_API int evmux_timer_again(evmux_timer *timer);

/* The repeat interval, used from the next expiry on. For NULL, set does
 * nothing and get returns 0. */
EVMUX_API void evmux_timer_set_repeat(evmux_timer *timer, uint64_t repeat_ms);
EVMUX_API uint64_t evmux_timer_get_repeat(const evmux_timer *timer);

/* Milliseconds until the timer fires (0 if due or stopped, and for NULL). */
EVMUX_API uint64_t evmux_timer_get_due_in(const evmux_timer *timer);

/* ------------------------------------------------------------------ */
/* Cross-thread wake-ups                                               */
/* ------------------------------------------------------------------ */

typedef struct evmux_async evmux_async;
typedef void (*evmux_async_cb)(evmux_async *async);

#ifdef __cplusplus
typedef int evmux__atomic_int; /* same layout; only the library touches it */
#else
typedef _Atomic int evmux__atomic_int;
#endif

struct evmux_async {
    evmux_handle handle;
    /* private */
    evmux_async_cb cb;
    evmux_async *prev, *next;
    evmux__atomic_int pending;
};

/* Prepares a wake-up handle. It is active (keeps evmux_run going) until
 * closed, unless unreferenced. Errors: -EINVAL (NULL). */
EVMUX_API int evmux_async_init(evmux_loop *loop, evmux_async *async, evmux_async_cb cb);

/* Safe from any thread (and from a signal handler): makes the loop call
 * cb from its own thread soon. Sends that come before the callback runs
 * are merged into one call. Memory written before the send is visible to
 * the callback. Do not send once evmux_close has been called on the handle:
 * the caller orders the two. Errors: -EINVAL (NULL). */
EVMUX_API int evmux_async_send(evmux_async *async);

/* ------------------------------------------------------------------ */
/* Handing descriptors to another loop's thread                        */
/* ------------------------------------------------------------------ */

typedef struct evmux_handoff evmux_handoff;

/* Runs on the receiving loop's thread, once per send, in the order the
 * sends were made. fd is the callback's from then on: adopt it
 * (evmux_stream_open, evmux_udp_open) or close it; -1 for a send that
 * carried no descriptor. data is the sender's. */
typedef void (*evmux_handoff_cb)(evmux_handoff *handoff, int fd, void *data);

struct evmux_handoff {
    evmux_handle handle;
    /* private */
    evmux_handoff_cb cb;
    evmux_async wake;
    struct evmux__handoff_queue *queue;
};

/* Prepares a mailbox for descriptors on loop: any thread may send, and
 * cb receives on loop's thread (e.g. one accepting loop spreading
 * connections over others; docs/threads.md). It is active (keeps
 * evmux_run going) until closed, unless unreferenced. Closing it closes
 * every descriptor sent and not yet given to cb. Errors: -EINVAL (NULL),
 * -ENOMEM. */
EVMUX_API int evmux_handoff_init(evmux_loop *loop, evmux_handoff *handoff, evmux_handoff_cb cb);

/* Safe from any thread: queues fd (with data) for the handoff's callback,
 * and wakes its loop. On 0 the handoff owns fd: the callback gets it, or
 * it is closed with the handle. On an error fd stays the caller's. fd -1
 * sends data alone, in order with the descriptors (e.g. "no more will
 * come": what was sent before it is delivered before it). Do not send
 * once the handle's close callback may have run: the caller orders the
 * two, as for evmux_async_send. Errors: -EINVAL (NULL, fd < -1), -EPIPE
 * (the handle is closing), -ENOMEM. */
EVMUX_API int evmux_handoff_send(evmux_handoff *handoff, int fd, void *data);

/* ------------------------------------------------------------------ */
/* Signals                                                             */
/* ------------------------------------------------------------------ */

typedef struct evmux_signal evmux_signal;
typedef void (*evmux_signal_cb)(evmux_signal *sig, int signum);

struct evmux_signal {
    evmux_handle handle;
    /* private */
    evmux_signal_cb cb;
    int signum;
    evmux_signal *prev, *next; /* the loop's started signal handles */
};

/* Errors: -EINVAL (NULL). */
EVMUX_API int evmux_signal_init(evmux_loop *loop, evmux_signal *sig);

/* Calls cb from the loop's thread, as a normal callback, after signum has
 * arrived in the process; several arrivals before the callback runs make
 * one call. Any number of handles, in any loops, may watch one signal: each
 * is called. While any handle watches signum, evmux's own handler is the
 * signal's disposition; the one before is restored when the last handle
 * stops. Starting a started handle changes its signal and callback.
 * Errors: -EINVAL (NULL, signum not a catchable signal, e.g. SIGKILL;
 * closing handle), -ENOSPC (64 loops already watch signals), or the error
 * of sigaction. */
EVMUX_API int evmux_signal_start(evmux_signal *sig, evmux_signal_cb cb, int signum);

/* Stopping a stopped handle is 0. Errors: -EINVAL (NULL). */
EVMUX_API int evmux_signal_stop(evmux_signal *sig);

/* ------------------------------------------------------------------ */
/* Worker pool: heavy work off the loop's thread                       */
/* ------------------------------------------------------------------ */

typedef struct evmux_work evmux_work;
/* Runs on a pool thread. It may do anything but call into evmux (except
 * evmux_async_send and evmux_stop). */
typedef void (*evmux_work_cb)(evmux_work *req);
/* Runs on the loop's thread after work_cb returned (status 0), or instead
 * of it when the request was cancelled first (-ECANCELED). The request may
 * be freed or queued again here. */
typedef void (*evmux_after_work_cb)(evmux_work *req, int status);

struct evmux_work {
    void *data;
    /* private */
    evmux_loop *loop;
    evmux_work_cb work_cb;
    evmux_after_work_cb after_cb;
    evmux_work *prev, *next;
    int status;
    unsigned state; /* idle or queued (until after_cb): the loop's thread's */
    unsigned stage; /* waiting, running or done: under the pool's mutex */
};

/* Prepares a request, whatever its memory held: call it once before the
 * request's first evmux_queue_work (never while it is queued). Leaves
 * `data` alone. Errors: -EINVAL (NULL). */
EVMUX_API int evmux_work_init(evmux_work *req);

/* Runs work_cb(req) on one of the loop's pool threads, then
 * after_cb(req, status) on the loop's thread, exactly once and never
 * inside this call. req must have been prepared by evmux_work_init. It is
 * queued from this call until its after_cb runs, and idle again by then,
 * so after_cb may queue it again (on any loop) or free it. Requests start
 * in the order they were queued; with several threads they may finish in
 * any order. A queued request keeps evmux_run going. Errors: -EINVAL (NULL;
 * req queued: its after_cb has not yet run, on this or another loop),
 * -EAGAIN or -ENOMEM (no thread could be started; nothing was queued). */
EVMUX_API int evmux_queue_work(evmux_loop *loop, evmux_work *req, evmux_work_cb work_cb,
                               evmux_after_work_cb after_cb);

/* Withdraws a request that no thread has started: its after_cb then runs
 * with -ECANCELED (later, from the loop) and work_cb never does. Errors:
 * -EBUSY (running, done or already cancelled: its after_cb has yet to
 * run), -EINVAL (NULL; idle: not queued, or its after_cb has run). */
EVMUX_API int evmux_cancel_work(evmux_work *req);

/* ------------------------------------------------------------------ */
/* Addresses                                                           */
/* ------------------------------------------------------------------ */

/* Fills *out with an IPv4 or IPv6 literal ("127.0.0.1", "::1") and a port.
 * Names are not resolved here (that would block the loop): see
 * evmux_getaddrinfo and evmux_connect_host. Errors: -EINVAL (NULL, not a
 * literal, port over 65535). */
EVMUX_API int evmux_addr_ip(const char *ip, unsigned port, struct sockaddr_storage *out,
                            socklen_t *out_len);

/* Fills *out with a Unix-domain socket path. A path that does not fit in
 * sun_path is -ENAMETOOLONG, never truncated. Errors: -EINVAL (NULL, empty
 * path), -ENAMETOOLONG. */
EVMUX_API int evmux_addr_unix(const char *path, struct sockaddr_storage *out,
                              socklen_t *out_len);

/* Writes "1.2.3.4:80", "[::1]:80" or the socket path into buf (always
 * terminated). Errors: -EINVAL (NULL, size 0, unknown family), -ENOSPC
 * (buf too small: the text is cut). */
EVMUX_API int evmux_addr_format(const struct sockaddr *addr, socklen_t len, char *buf,
                                size_t size);

/* ------------------------------------------------------------------ */
/* Streams: buffered TCP and Unix-domain connections                    */
/* ------------------------------------------------------------------ */

/* nread of a read callback when the peer has finished sending. It is not
 * an errno value; evmux_strerror names it. */
#define EVMUX_EOF (-4095)

typedef struct evmux_buf {
    const void *base;
    size_t len;
} evmux_buf;

typedef struct evmux_stream evmux_stream;
typedef struct evmux_write_req evmux_write_req;
typedef struct evmux_connect_req evmux_connect_req;
typedef struct evmux_listener evmux_listener;
struct evmux_chunk;
struct evmux__stream_driver;

/* nread > 0: buf holds nread bytes. The buffer belongs to the loop and is
 * lent for the duration of the callback: modify it freely, copy what you
 * keep (evmux_stream_write copies what it cannot send at once, so echoing
 * buf back is safe).
 * nread == EVMUX_EOF: the peer shut down its side; reading has stopped, and
 * the stream can still write.
 * nread < 0 otherwise: a negative errno (-ECONNRESET, ...); reading has
 * stopped; the stream should be closed. buf is NULL in both cases. */
typedef void (*evmux_read_cb)(evmux_stream *stream, ssize_t nread, char *buf);

/* Called exactly once per accepted write: 0 once its bytes are all handed
 * to the kernel, or a negative errno (-EPIPE, -ECONNRESET when the peer is
 * gone; -ECANCELED when the stream was closed first). */
typedef void (*evmux_write_cb)(evmux_write_req *req, int status);

/* The write queue fell to the low watermark after passing the high one;
 * also when a write error emptied it (the next read or write reports the
 * error), so a reader paused on the high watermark always hears back. */
typedef void (*evmux_drain_cb)(evmux_stream *stream);

/* Shutdown done (0), or failed (negative errno; -ECANCELED on close). */
typedef void (*evmux_shutdown_cb)(evmux_stream *stream, int status);

/* Connected (0), or failed: -ECONNREFUSED, -ETIMEDOUT (the timeout passed),
 * -ENOENT (no such Unix socket), -ECANCELED (the stream was closed), ... */
typedef void (*evmux_connect_cb)(evmux_connect_req *req, int status);

/* A connection is waiting (status 0): take it with evmux_accept() inside
 * the callback, or leave it and it is closed when the callback returns.
 * A negative status reports trouble accepting (-EMFILE, -ENFILE: out of
 * descriptors; -ENOBUFS, -ENOMEM: out of memory; the listener copes by
 * itself and keeps going; any other error pauses accepting briefly);
 * nothing is waiting then. */
typedef void (*evmux_accept_cb)(evmux_listener *listener, int status);

struct evmux_write_req {
    void *data;
    /* private */
    evmux_stream *stream;
    evmux_write_cb cb;
    uint64_t end; /* stream offset at which this write is complete */
    evmux_write_req *next;
};

/* Private parts, laid out here only so that callers can embed the structs:
 * a link of the library's intrusive lists, and one request to the kernel
 * (src/op.h). */
struct evmux__link {
    struct evmux__link *prev, *next;
};
struct evmux__op_class;
struct evmux__op {
    struct evmux__link link;
    const struct evmux__op_class *cls;
    int fd;
    unsigned char type, state, flags, generation;
};

struct evmux_stream {
    evmux_handle handle;
    /* private */
    int fd;
    unsigned state;
    const struct evmux__stream_driver *driver; /* chosen when a descriptor is attached */
    evmux_read_cb read_cb;
    evmux_drain_cb drain_cb;
    evmux_shutdown_cb shutdown_cb;
    evmux_connect_req *connect_req;
    struct evmux_chunk *out_head, *out_tail;
    size_t queued;
    size_t high_water, low_water;
    uint64_t accepted; /* bytes taken by evmux_stream_write so far */
    uint64_t sent;     /* bytes handed to the kernel so far */
    evmux_write_req *req_head, *req_tail;
    struct evmux__link deferred; /* on the loop's list of streams with reports owed */
    int error;
    int read_end; /* EOF or error that arrived behind bytes not yet given */
    union {
        evmux_io io; /* the readiness driver's watcher */
        struct {     /* the completion driver's requests */
            struct evmux__op recv, send; /* send: also the wait of a connect */
            struct evmux_chunk *stash;  /* bytes received while not reading */
        } native;
    } driver_state;
};

struct evmux_connect_req {
    void *data;
    /* private */
    evmux_stream *stream;
    evmux_connect_cb cb;
    evmux_timer timeout;
};

struct evmux_listener {
    evmux_handle handle;
    /* private */
    union {
        evmux_io io;             /* readiness backends: the watcher */
        struct evmux__op accept; /* io_uring: a multishot accept */
    } wait;
    evmux_timer retry;
    evmux_accept_cb cb;
    int fd;
    int pending_fd;
    int reserve_fd;
    unsigned state;
    char *unix_path; /* removed on close */
};

/* Prepares a stream; then evmux_accept, evmux_connect or evmux_stream_open
 * gives it a descriptor. Errors: -EINVAL (NULL). */
EVMUX_API int evmux_stream_init(evmux_loop *loop, evmux_stream *stream);

/* Adopts a byte-stream descriptor, made non-blocking: a connected socket,
 * a pipe, a terminal or a regular file (which is always ready, and reads
 * to its end, then EVMUX_EOF). Pipes, terminals and files are read and
 * written with read() and write(); writing to a pipe nobody reads is
 * -EPIPE, never SIGPIPE. A terminal is first opened again under the same
 * number, so that the file description the shell shares stays blocking;
 * a pipe made non-blocking here is made blocking again when the stream
 * closes it. The stream owns fd from now on and closes it exactly once, in
 * evmux_close; on an error it stays the caller's. Errors: -EINVAL (NULL,
 * fd < 0, closing stream), -EISCONN (the stream has a descriptor or is
 * connecting), -EBADF (fd not open), -ERANGE (select backend: fd >=
 * FD_SETSIZE), -EBUSY (io_uring: the stream had a socket whose requests
 * to the kernel have not ended yet, and fd is not a socket: try again from
 * a later callback). */
EVMUX_API int evmux_stream_open(evmux_stream *stream, int fd);

/* The socket, or -1 before one is attached, after close, and for NULL. */
EVMUX_API int evmux_stream_fd(const evmux_stream *stream);

/* Starts calling cb with what arrives. Errors: -EINVAL (NULL, closing
 * stream), -ENOTCONN (no connected socket, e.g. still connecting),
 * EVMUX_EOF (the peer has already finished sending), or an error of
 * watching the socket (as evmux_io_start: -ENOMEM, ...; reading is then
 * off). */
EVMUX_API int evmux_stream_read_start(evmux_stream *stream, evmux_read_cb cb);

/* Stops reading (also when not reading). Errors: -EINVAL (NULL), or an
 * error of changing the socket's watch for queued writes (as
 * evmux_io_start; reading stops all the same). */
EVMUX_API int evmux_stream_read_stop(evmux_stream *stream);

/* Writes nbufs buffers, in order after every earlier write. On a readiness
 * backend what the kernel takes at once is sent at once (no extra loop
 * iteration) and the rest is copied into the stream's queue; on io_uring
 * everything is queued and the loop submits the send just before it next
 * waits (one system call for all streams), except that a write taking the
 * queue past the high watermark offers it to the kernel at once, so the
 * watermark means the same on every backend. Either way the caller may
 * reuse its buffers as soon as this returns. req may be NULL when cb is
 * NULL; a req passed with a NULL cb is still the stream's until its bytes
 * are sent. A negative return queues nothing of this write, though bytes
 * the kernel took before the error (a multi-buffer write on a readiness
 * backend) are gone to the peer. On 0, cb runs exactly once, later, from
 * the loop; on a negative return it never runs:
 * -EPIPE (after shutdown), -ENOTCONN (no socket yet), the stream's write
 * error (met now or earlier: -EPIPE, -ECONNRESET, ...), -EINVAL (NULL
 * stream, NULL bufs with nbufs > 0, NULL req with a cb, closing stream,
 * lengths that overflow size_t), -ENOMEM. */
EVMUX_API int evmux_stream_write(evmux_write_req *req, evmux_stream *stream, const evmux_buf bufs[],
                                 size_t nbufs, evmux_write_cb cb);

/* Bytes accepted by evmux_stream_write and not yet taken by the kernel
 * (on io_uring, also bytes waiting for the loop's next submission); 0 for
 * NULL. */
EVMUX_API size_t evmux_stream_queued(const evmux_stream *stream);

/* When the queue passes `high`, a server should stop reading from the
 * peer (evmux_stream_read_stop); drain_cb runs once it falls to `low`.
 * The queue measured is, on every backend, the bytes the kernel was
 * offered and did not take: a peer that reads keeps a stream under `high`
 * even when one burst of writes is larger than `high`.
 * Requires low < high. Writes beyond `high` are still accepted. drain_cb
 * may be NULL. Errors: -EINVAL (NULL stream, high 0, low >= high). */
EVMUX_API int evmux_stream_set_watermarks(evmux_stream *stream, size_t high, size_t low,
                                          evmux_drain_cb drain_cb);

/* 1 while the queue is above the high watermark (and has not drained); 0
 * otherwise and for NULL. */
EVMUX_API int evmux_stream_over_high(const evmux_stream *stream);

/* Half-close: once every queued byte is sent, shuts down our sending side
 * (the peer reads EOF) and calls cb (which may be NULL). Reading goes on.
 * Errors: -EINVAL (NULL stream, closing stream), -ENOTCONN (no socket),
 * -ENOTSUP (a pipe, terminal or file: no half-close), -EALREADY (shutdown
 * already asked for), the stream's write error. */
EVMUX_API int evmux_stream_shutdown(evmux_stream *stream, evmux_shutdown_cb cb);

/* TCP options. idle_s: seconds of silence before the first keepalive
 * probe (0: the system default). Errors: -EINVAL (NULL), -ENOTCONN (no
 * socket), -ENOTSUP (a Unix-domain stream, pipe, terminal or file), or the
 * error of setsockopt. */
EVMUX_API int evmux_stream_set_nodelay(evmux_stream *stream, int on);
EVMUX_API int evmux_stream_set_keepalive(evmux_stream *stream, int on, unsigned idle_s);

/* The peer's address. Errors: -EINVAL (NULL), -ENOTCONN (no connected
 * socket, e.g. still connecting), or the error of getpeername (-ENOTSOCK
 * for a pipe, terminal or file). */
EVMUX_API int evmux_stream_peer(const evmux_stream *stream, struct sockaddr_storage *out,
                                socklen_t *out_len);

/* Connects stream (initialised, without a socket) to addr without
 * blocking. timeout_ms 0: no timeout but the kernel's. cb runs exactly
 * once; req may be freed in it. Writes and a shutdown made while
 * connecting go out once connected, or fail with the connect error. After
 * a failure the stream has no socket and may connect again. A refusal the
 * kernel gives at once (a Unix path nobody listens on: -ENOENT) still goes
 * to cb, and writes made before cb runs are accepted and fail with it, as
 * for any failed connect; after cb, writes are -ENOTCONN. Errors (cb then never runs):
 * -EINVAL (NULL, closing stream), -EISCONN (the stream has a socket),
 * -EALREADY (already connecting), -ERANGE (select backend: descriptor >=
 * FD_SETSIZE), or the error of socket() (-EAFNOSUPPORT, -EMFILE, ...) or of
 * watching it (as evmux_io_start). */
EVMUX_API int evmux_connect(evmux_connect_req *req, evmux_stream *stream, const struct sockaddr *addr,
                            socklen_t addr_len, uint64_t timeout_ms, evmux_connect_cb cb);

enum {
    EVMUX_LISTEN_REUSEPORT = 1u << 0, /* SO_REUSEPORT: several listeners share a port */
    EVMUX_LISTEN_IPV6_ONLY = 1u << 1  /* an IPv6 listener that does not take IPv4 */
};

typedef struct evmux_listen_options {
    int backlog;    /* 0: SOMAXCONN */
    unsigned flags; /* EVMUX_LISTEN_* */
} evmux_listen_options;

/* Binds and listens on addr (TCP over IPv4 or IPv6, or a Unix path; a
 * stale Unix socket file nobody listens on is replaced), then calls cb for
 * each connection. opts may be NULL. Out of descriptors, the listener
 * neither spins nor stops: it keeps a reserve descriptor to accept and
 * close the surplus, or pauses briefly when even that fails. Errors:
 * -EINVAL (NULL, REUSEPORT on a Unix path, a bad addr_len),
 * -EAFNOSUPPORT (another family), -ENOTSUP (no SO_REUSEPORT here),
 * -ERANGE (select backend: descriptor >= FD_SETSIZE), -ENOMEM, or the
 * error of socket, bind or listen (-EADDRINUSE, -EACCES, -EADDRNOTAVAIL,
 * -ENOENT: no such directory, -EMFILE, ...) or of watching the socket (as
 * evmux_io_start). */
EVMUX_API int evmux_listen(evmux_loop *loop, evmux_listener *listener, const struct sockaddr *addr,
                           socklen_t addr_len, const evmux_listen_options *opts,
                           evmux_accept_cb cb);

/* The bound address (to learn the port picked for port 0). Errors:
 * -EINVAL (NULL, closed listener), or the error of getsockname. */
EVMUX_API int evmux_listener_address(const evmux_listener *listener, struct sockaddr_storage *out,
                                     socklen_t *out_len);

/* Inside the accept callback: gives the waiting connection to client
 * (initialised by evmux_stream_init). Errors: -EINVAL (NULL, client
 * closing or not a stream), -EAGAIN (none is waiting: outside the callback, or taken),
 * -EISCONN (client has a socket), -ERANGE (select backend: descriptor >=
 * FD_SETSIZE). */
EVMUX_API int evmux_accept(evmux_listener *listener, evmux_stream *client);

/* Inside the accept callback: takes the waiting connection as a bare
 * descriptor (non-blocking, close-on-exec), which is the caller's from
 * then on: e.g. for evmux_handoff_send to another loop's thread.
 * Errors: -EINVAL (NULL), -EAGAIN (none is waiting: outside the callback,
 * or taken). */
EVMUX_API int evmux_accept_fd(evmux_listener *listener, int *fd);

/* ------------------------------------------------------------------ */
/* Datagrams: UDP (and Unix-domain datagram sockets)                   */
/* ------------------------------------------------------------------ */

typedef struct evmux_udp evmux_udp;
typedef struct evmux_udp_send_req evmux_udp_send_req;

enum {
    EVMUX_UDP_REUSEPORT = 1u << 0, /* SO_REUSEPORT: several sockets share a port */
    EVMUX_UDP_IPV6_ONLY = 1u << 1, /* an IPv6 socket that does not take IPv4 */
    EVMUX_UDP_REUSEADDR = 1u << 2  /* SO_REUSEADDR: e.g. several multicast receivers */
};

/* flags of a receive callback */
enum {
    /* The datagram was longer than the receive size (evmux_udp_set_recv_size)
     * and nread bytes of it are given; the rest is gone. */
    EVMUX_UDP_TRUNCATED = 1u << 0
};

/* nread >= 0: one whole datagram of nread bytes (0 is a datagram too) in
 * buf, from `from` (from_len bytes; from_len is 0 for a sender without an
 * address, e.g. an unnamed Unix socket). buf and from belong to the loop
 * and are lent for the duration of the callback, as a stream's read buffer
 * is: modify freely, copy what you keep (evmux_udp_send copies, so
 * replying from buf is safe).
 * nread < 0: a negative errno value the socket reported (on a connected
 * socket, -ECONNREFUSED after a datagram met a closed port); buf and from
 * are NULL, and receiving goes on; except for -EINVAL, -EOPNOTSUPP,
 * -EBADF and -EFAULT (io_uring: the kernel refuses to receive this way,
 * e.g. no multishot recvmsg before Linux 6.0), after which the handle no
 * longer receives. */
typedef void (*evmux_udp_recv_cb)(evmux_udp *udp, ssize_t nread, char *buf,
                                  const struct sockaddr *from, socklen_t from_len, unsigned flags);

/* Called exactly once per accepted send: 0 once the kernel took the
 * datagram, or a negative errno value (-EMSGSIZE: too large for the
 * socket; -ECONNREFUSED: a connected socket's peer port was found closed;
 * -ENETUNREACH, -EACCES: broadcast without evmux_udp_set_broadcast, ...;
 * -ECANCELED: the handle was closed first). */
typedef void (*evmux_udp_send_cb)(evmux_udp_send_req *req, int status);

struct evmux_udp_send_req {
    void *data;
    /* private */
    evmux_udp *udp;
    evmux_udp_send_cb cb;
    struct evmux__link link; /* on its handle's list of callbacks owed */
    int status;
};

struct evmux__udp_driver;

struct evmux_udp {
    evmux_handle handle;
    /* private */
    int fd;
    unsigned state;
    const struct evmux__udp_driver *driver; /* chosen when the socket is made */
    evmux_udp_recv_cb recv_cb;
    size_t recv_size;            /* the longest datagram given whole */
    struct evmux__link queue;    /* datagrams not yet taken by the kernel, in order */
    struct evmux__link stash;    /* datagrams received while not receiving */
    struct evmux__link reports;  /* sends done, callbacks owed, in order */
    struct evmux__link deferred; /* on the loop's list of handles with work owed */
    struct evmux__link inflight; /* io_uring: datagrams whose send the kernel has */
    size_t queued_bytes, queued_count;
    union {
        evmux_io io; /* readiness backends: the watcher */
        struct {     /* io_uring: a multishot recvmsg, a wait for room */
            struct evmux__op recv, writable;
        } native;
    } driver_state;
};

/* Prepares a handle without a socket; evmux_udp_bind, evmux_udp_open,
 * evmux_udp_connect or the first evmux_udp_send makes one. Errors:
 * -EINVAL (NULL), -ENOMEM. */
EVMUX_API int evmux_udp_init(evmux_loop *loop, evmux_udp *udp);

/* Makes a socket for addr's family and binds it to addr (port 0: the
 * kernel picks one; evmux_udp_address tells). flags: EVMUX_UDP_*.
 * Errors: -EINVAL (NULL, closing handle, bad addr_len, IPV6_ONLY on IPv4),
 * -EAFNOSUPPORT (not IPv4 or IPv6), -EISCONN (the handle has a socket),
 * -ENOTSUP (no SO_REUSEPORT here), -ERANGE (select backend: descriptor >=
 * FD_SETSIZE), or the error of socket or bind (-EADDRINUSE, -EACCES,
 * -EADDRNOTAVAIL, -EMFILE, ...). */
EVMUX_API int evmux_udp_bind(evmux_udp *udp, const struct sockaddr *addr, socklen_t addr_len,
                             unsigned flags);

/* Adopts a datagram socket (UDP, or a Unix-domain SOCK_DGRAM socket, e.g.
 * one end of a socketpair), bound or connected or neither, made
 * non-blocking. The handle owns fd from now on and closes it in
 * evmux_close; on an error it stays the caller's. Errors: -EINVAL (NULL,
 * fd < 0, closing handle), -EISCONN (the handle has a socket), -EBADF,
 * -ENOTSOCK, -EPROTOTYPE (not a datagram socket), -ERANGE (select backend:
 * fd >= FD_SETSIZE). */
EVMUX_API int evmux_udp_open(evmux_udp *udp, int fd);

/* Connected mode: datagrams go to addr without naming it (send with a
 * NULL address), only addr's datagrams arrive, and an ICMP error about
 * them is reported (-ECONNREFUSED). Without a socket one is made for
 * addr's family (bound by the kernel to a free port). Connecting again
 * changes the peer. Errors: -EINVAL (NULL, closing handle, bad addr_len),
 * -EAFNOSUPPORT, or the error of socket or connect. */
EVMUX_API int evmux_udp_connect(evmux_udp *udp, const struct sockaddr *addr, socklen_t addr_len);

/* Leaves connected mode. Errors: -EINVAL (NULL), -ENOTCONN (not
 * connected), or the error of connect(AF_UNSPEC). */
EVMUX_API int evmux_udp_disconnect(evmux_udp *udp);

/* The socket's own address, and a connected socket's peer. Errors:
 * -EINVAL (NULL), -EBADF (no socket), -ENOTCONN (peer: not connected), or
 * the error of getsockname / getpeername. */
EVMUX_API int evmux_udp_address(const evmux_udp *udp, struct sockaddr_storage *out,
                                socklen_t *out_len);
EVMUX_API int evmux_udp_peer(const evmux_udp *udp, struct sockaddr_storage *out,
                             socklen_t *out_len);

/* Sends the nbufs buffers as one datagram to addr (NULL, addr_len 0, on a
 * connected handle). The bytes are copied when the kernel does not take
 * them at once, so the caller may reuse its buffers as soon as this
 * returns. On a readiness backend the kernel is tried at once unless
 * datagrams are queued already (their order is kept); on io_uring every
 * datagram is queued and the loop's next submission, before it waits,
 * carries all of them in one system call. Without a socket, one is made
 * for addr's family. req may be NULL when cb is NULL. On 0, cb runs
 * exactly once, later, from the loop; on a negative return it never runs
 * and nothing was sent: -EINVAL (NULL udp, NULL bufs with nbufs > 0, NULL
 * req with a cb, closing handle, lengths that overflow), -EDESTADDRREQ
 * (no address and not connected), -EISCONN (an address on a connected
 * handle), -EAFNOSUPPORT, -ENOMEM, or the error of making the socket.
 * Errors of the datagram itself (-EMSGSIZE, ...) go to cb. */
EVMUX_API int evmux_udp_send(evmux_udp_send_req *req, evmux_udp *udp, const evmux_buf bufs[],
                             size_t nbufs, const struct sockaddr *addr, socklen_t addr_len,
                             evmux_udp_send_cb cb);

/* Sends one datagram now or not at all: the bytes sent, or -EAGAIN when
 * the kernel has no room or datagrams are queued (to keep their order),
 * or the error of sending (-EMSGSIZE, -ECONNREFUSED, ...), or the
 * argument errors of evmux_udp_send, or -EINVAL for more than 64 buffers.
 * No callback. */
EVMUX_API ssize_t evmux_udp_try_send(evmux_udp *udp, const evmux_buf bufs[], size_t nbufs,
                                     const struct sockaddr *addr, socklen_t addr_len);

/* Starts calling cb for every datagram that arrives. Datagrams that
 * arrived after a stop, which the kernel had already handed over, come
 * first, in order. Starting again changes the callback. Errors: -EINVAL
 * (NULL, closing handle), -EBADF (no socket: bind, open, connect or send
 * first), or an error of watching the socket (as evmux_io_start) or
 * -ENOMEM. */
EVMUX_API int evmux_udp_recv_start(evmux_udp *udp, evmux_udp_recv_cb cb);

/* Stops receiving (also when not receiving); the callback is not called
 * again until a start. Errors: -EINVAL (NULL), or the error of changing
 * the socket's watch (as evmux_io_start; the handle then still
 * receives). */
EVMUX_API int evmux_udp_recv_stop(evmux_udp *udp);

/* The longest datagram a receive callback gets whole, from 1 to 65536
 * (the default: any UDP datagram); longer ones are cut to it and flagged
 * EVMUX_UDP_TRUNCATED. Errors: -EINVAL (NULL, 0, over 65536). */
EVMUX_API int evmux_udp_set_recv_size(evmux_udp *udp, size_t size);

/* Bytes, and datagrams, accepted by evmux_udp_send and not yet taken by
 * the kernel (on io_uring, also those waiting for the loop's next
 * submission); 0 for NULL. */
EVMUX_API size_t evmux_udp_queued(const evmux_udp *udp);
EVMUX_API size_t evmux_udp_queued_count(const evmux_udp *udp);

/* The socket, or -1 without one, after close, and for NULL. */
EVMUX_API int evmux_udp_fd(const evmux_udp *udp);

/* Socket options. Each needs a socket (-EBADF without one) and returns 0,
 * -EINVAL (NULL, a value out of range, a multicast address that is not
 * one), -ENOTSUP (not available for the socket's family, e.g. on a Unix
 * socket), -ENODEV (no interface of that name), or the error of
 * setsockopt. TTLs are 1 to 255. Multicast interfaces are named as the
 * system names them ("lo", "eth0"); NULL lets the kernel choose. Groups
 * and sources are IPv4 or IPv6 literals of the socket's family. On an IPv6
 * socket that takes IPv4 too (bound without EVMUX_UDP_IPV6_ONLY), the
 * TTLs, loop and interface are set for both. */
EVMUX_API int evmux_udp_set_broadcast(evmux_udp *udp, int on);
EVMUX_API int evmux_udp_set_ttl(evmux_udp *udp, int ttl);
EVMUX_API int evmux_udp_set_multicast_ttl(evmux_udp *udp, int ttl);
EVMUX_API int evmux_udp_set_multicast_loop(evmux_udp *udp, int on);
EVMUX_API int evmux_udp_set_multicast_interface(evmux_udp *udp, const char *interface_name);
/* Joins (join != 0) or leaves an any-source group. */
EVMUX_API int evmux_udp_set_membership(evmux_udp *udp, const char *group,
                                       const char *interface_name, int join);
/* Joins or leaves a source-specific group: only `source`'s datagrams. */
EVMUX_API int evmux_udp_set_source_membership(evmux_udp *udp, const char *group,
                                              const char *interface_name, const char *source,
                                              int join);

/* Segmentation offload (Linux UDP_SEGMENT): a send of more than
 * segment_size bytes leaves as datagrams of segment_size bytes (the last
 * may be shorter), split by the kernel (or the network card) after one
 * pass through the stack. 0 turns it off. It pays for many equal
 * datagrams to one peer, e.g. a QUIC sender. Errors as above, -ENOTSUP
 * where the kernel lacks it. */
EVMUX_API int evmux_udp_set_gso(evmux_udp *udp, unsigned segment_size);
/* Receive offload (Linux UDP_GRO): the kernel may hand over several
 * datagrams of one sender in one piece; evmux splits them again, so the
 * callback still gets one datagram per call. It pays for bursts of
 * equal datagrams from one peer. Errors as above, -ENOTSUP where the
 * kernel lacks it. */
EVMUX_API int evmux_udp_set_gro(evmux_udp *udp, int on);

/* ------------------------------------------------------------------ */
/* Name resolution: getaddrinfo and getnameinfo on the worker pool      */
/* ------------------------------------------------------------------ */

/* The C library's resolver blocks (DNS, /etc/hosts, NSS modules), so
 * these run it on the loop's worker pool (evmux_queue_work) and report on
 * the loop's thread: the callback runs exactly once, never inside the
 * call that started the lookup or the one that cancelled it. A request is
 * the caller's memory, kept valid and unmoved from the start until its
 * callback runs; in the callback it is idle again and may be freed or
 * started again. What a lookup needs on the pool thread (the copies of
 * the node, service and hints, the work request, the answer) is the
 * library's, allocated per lookup, so that a cancelled lookup gives the
 * request back at once even though getaddrinfo(3) cannot be interrupted.
 * Include <netdb.h> for struct addrinfo and the AI_* and NI_* flags. A
 * pending lookup keeps evmux_run going, and evmux_loop_free refuses with
 * -EBUSY until its callback has run (and its pool thread has finished). */

struct addrinfo;
typedef struct evmux_getaddrinfo_req evmux_getaddrinfo_req;
typedef struct evmux_getnameinfo_req evmux_getnameinfo_req;
typedef struct evmux_connect_host_req evmux_connect_host_req;
struct evmux__lookup_job;

/* status 0: res is the answer (never NULL), the caller's from now on, to
 * be freed with evmux_freeaddrinfo. status < 0: res is NULL, and status is
 * an EVMUX_EAI_* value, a negative errno value (EAI_SYSTEM), or
 * -ECANCELED (cancelled, or its pool thread lost to fork). */
typedef void (*evmux_getaddrinfo_cb)(evmux_getaddrinfo_req *req, int status, struct addrinfo *res);

/* status 0: host and service hold the answer (as getnameinfo(3) writes
 * them, at most NI_MAXHOST and NI_MAXSERV bytes with the terminating
 * null), valid during the callback only: copy what you keep. status < 0:
 * both are NULL; the values are as for evmux_getaddrinfo_cb. */
typedef void (*evmux_getnameinfo_cb)(evmux_getnameinfo_req *req, int status, const char *host,
                                     const char *service);

/* The private part both kinds of lookup share. */
struct evmux__lookup {
    evmux_loop *loop;
    struct evmux__lookup_job *job; /* with the pool, or holding an answer owed */
    struct evmux__link report;     /* on the loop's list of reports owed */
    int status;                    /* of the report owed */
    unsigned state;
};

struct evmux_getaddrinfo_req {
    void *data;
    /* private */
    struct evmux__lookup lookup;
    evmux_getaddrinfo_cb cb;
};

struct evmux_getnameinfo_req {
    void *data;
    /* private */
    struct evmux__lookup lookup;
    evmux_getnameinfo_cb cb;
};

/* Resolves node and service as getaddrinfo(3) does, on a pool thread, and
 * calls cb with the answer from the loop. node or service may be NULL,
 * not both; hints may be NULL (then AF_UNSPEC, any socket type, the C
 * library's default flags), and only its ai_flags, ai_family, ai_socktype
 * and ai_protocol are read. node, service and hints are copied: they may
 * go away when this returns. With hints given, an IP literal node (or
 * NULL) with a numeric service (or NULL) and no AI_CANONNAME, which the C
 * library converts without looking anything up, is converted on the
 * loop's thread with no pool thread involved; its callback still runs
 * from the loop, like any other. req must not be in flight. Errors (cb then never runs): -EINVAL
 * (NULL loop, req or cb; node and service both NULL), -ENOMEM, or the
 * error of evmux_queue_work (-EAGAIN: no pool thread could start). */
EVMUX_API int evmux_getaddrinfo(evmux_loop *loop, evmux_getaddrinfo_req *req,
                                evmux_getaddrinfo_cb cb, const char *node, const char *service,
                                const struct addrinfo *hints);

/* Cancels a lookup whose callback has not run yet: its callback then
 * runs with -ECANCELED, from the loop (never inside this call), at the
 * latest in the next iteration, whether or not a pool thread has started
 * it. One that no thread has started never runs; one that is running
 * cannot be interrupted, so it runs to its end on its thread, and the
 * library then frees its answer. Errors: -EINVAL (NULL; idle: never
 * started, or its callback has run; a request never started must be
 * zeroed for this to tell), -EALREADY (cancelled already). */
EVMUX_API int evmux_getaddrinfo_cancel(evmux_getaddrinfo_req *req);

/* Frees an answer of evmux_getaddrinfo (all of the list). NULL: nothing. */
EVMUX_API void evmux_freeaddrinfo(struct addrinfo *res);

/* Translates addr (addr_len bytes, copied) into a host and a service name
 * as getnameinfo(3) does with flags (NI_*), on a pool thread, and calls cb
 * from the loop. NI_NUMERICHOST | NI_NUMERICSERV without NI_NAMEREQD looks
 * nothing up: that is done on the loop's thread, reported from the loop.
 * req must not be in flight. Errors (cb then never runs): -EINVAL (NULL
 * loop, req, cb or addr; addr_len 0 or larger than struct
 * sockaddr_storage), -ENOMEM, or the error of evmux_queue_work. */
EVMUX_API int evmux_getnameinfo(evmux_loop *loop, evmux_getnameinfo_req *req,
                                evmux_getnameinfo_cb cb, const struct sockaddr *addr,
                                socklen_t addr_len, int flags);

/* As evmux_getaddrinfo_cancel. */
EVMUX_API int evmux_getnameinfo_cancel(evmux_getnameinfo_req *req);

/* ------------------------------------------------------------------ */
/* Connecting to a host name                                           */
/* ------------------------------------------------------------------ */

/* 0: connected, the stream is open. Otherwise the stream has no socket
 * (it may connect again): an EVMUX_EAI_* value (the name did not
 * resolve), -ETIMEDOUT (the overall timeout passed), -ECANCELED (the
 * stream was closed, or the request cancelled), or the error of the last
 * address tried (-ECONNREFUSED, ...). */
typedef void (*evmux_connect_host_cb)(evmux_connect_host_req *req, int status);

struct evmux_connect_host_req {
    void *data;
    /* private */
    evmux_stream *stream;
    evmux_connect_host_cb cb;
    evmux_connect_req connect;      /* the attempt; its timer times the lookup too */
    evmux_getaddrinfo_req resolve;
    struct addrinfo *addrs, *next;  /* the answer, and the next address to try */
    uint64_t deadline;              /* the loop's clock (ns) when the timeout passes; 0: none */
    int error;                      /* reported if no address connects */
    unsigned state;
};

/* Connects stream (initialised, without a socket) to port on host, a name
 * or an IP literal ("localhost", "::1", "[::1]", "192.0.2.7"). A name is
 * resolved on the worker pool (evmux_getaddrinfo: AF_UNSPEC, SOCK_STREAM,
 * without AI_ADDRCONFIG, which counts no loopback address and so drops
 * ::1 on a host whose only other address is IPv4), then each
 * address is tried in the order getaddrinfo gives them (IPv6 and IPv4 as
 * its RFC 6724 sorting puts them) with evmux_connect, until one connects.
 * An address this host cannot use at all (-EAFNOSUPPORT, -ENETUNREACH,
 * -EADDRNOTAVAIL) fails at once, and its error does not hide an earlier
 * address's. An IP literal takes no pool thread and is the only address
 * tried. timeout_ms bounds the whole (lookup and every attempt, each
 * attempt getting what is left); 0: no timeout but the kernel's. cb runs
 * exactly once, from the loop, never inside this call; req may be freed
 * in it. As with evmux_connect, writes and a shutdown made before cb go
 * out once connected, or fail with cb's error. Closing the stream before
 * cb runs makes it run with -ECANCELED, before the close callback. Errors
 * (cb then never runs): -EINVAL (NULL, empty host, port over 65535,
 * closing stream), -EISCONN (the stream has a socket), -EALREADY
 * (connecting already), -ENOMEM, the error of evmux_queue_work (a name),
 * or, for an IP literal, the error of evmux_connect (-EAFNOSUPPORT, ...). */
EVMUX_API int evmux_connect_host(evmux_connect_host_req *req, evmux_stream *stream,
                                 const char *host, unsigned port, uint64_t timeout_ms,
                                 evmux_connect_host_cb cb);

/* Stops a connect_host whose callback has not run: the lookup is
 * cancelled (or the attempt's socket closed), the stream is left without
 * a socket, and cb runs with -ECANCELED from the loop, never inside this
 * call. Errors: -EINVAL (NULL; idle: never started, or its callback has
 * run; a request never started must be zeroed for this to tell),
 * -EALREADY (cancelled already). */
EVMUX_API int evmux_connect_host_cancel(evmux_connect_host_req *req);

/* ------------------------------------------------------------------ */
/* PROXY protocol: the client's address from a balancer's header       */
/* ------------------------------------------------------------------ */

/* Behind a TCP balancer (HAProxy, AWS NLB, nginx) a server's peer is the
 * balancer; with the PROXY protocol (HAProxy's proxy-protocol.txt) the
 * balancer sends a header naming the real client as the first bytes of
 * each connection. evmux_proxy_parse reads it from the bytes received so
 * far; it touches no loop, allocates nothing, never reads past len, and
 * may be called from any thread. docs/proxy.md shows it in a server. Only
 * accept the header from balancers you trust: it is a claim, and anyone
 * who can connect can make it. */

/* The longest header evmux_proxy_parse accepts: v2's 16 fixed bytes and a
 * block of at most 1024 bytes of addresses and TLVs. A v1 line ends within
 * 107 bytes; a v2 length may claim 65535, and waiting for that many would
 * let any peer make the server buffer 64 KiB per connection. 1024 holds
 * the largest address block (216 bytes, Unix paths) and the TLVs balancers
 * send (ALPN, the authority of up to 255 bytes, a unique ID of up to 128,
 * the TLS details, a cloud's endpoint ID) with room to spare. A buffer of
 * this size always holds a whole header. */
enum { EVMUX_PROXY_HEADER_MAX = 16 + 1024 };

/* The TLV types the spec registers, for evmux_proxy_tlv. The value of
 * EVMUX_PROXY_TLV_SSL is a byte of flags, 4 bytes of verification result,
 * then TLVs of its own. Types 0xE0..0xEF are for applications (AWS sends
 * its endpoint ID as 0xEA). */
enum {
    EVMUX_PROXY_TLV_ALPN = 0x01,
    EVMUX_PROXY_TLV_AUTHORITY = 0x02,
    EVMUX_PROXY_TLV_CRC32C = 0x03,
    EVMUX_PROXY_TLV_NOOP = 0x04,
    EVMUX_PROXY_TLV_UNIQUE_ID = 0x05,
    EVMUX_PROXY_TLV_SSL = 0x20,
    EVMUX_PROXY_TLV_NETNS = 0x30,
};

typedef struct evmux_proxy_header {
    int version;  /* 1 or 2 */
    int local;    /* 1: no addresses carried (v1 UNKNOWN, v2 LOCAL or AF_UNSPEC):
                   * use the connection's own */
    int socktype; /* SOCK_STREAM (v1; v2 STREAM) or SOCK_DGRAM (v2 DGRAM); 0 when local */
    /* AF_INET, AF_INET6 or AF_UNIX (v2 only) addresses, ports in network
     * order, as getpeername() and getsockname() would give them on the
     * balancer. A Unix path is NUL-terminated; an abstract name (first
     * byte NUL) loses its trailing NULs, taken for padding; all NUL is an
     * unnamed socket (length: the family alone). Lengths 0 when local. */
    struct sockaddr_storage source, destination;
    socklen_t source_len, destination_len;
    /* v2: the bytes after the addresses, within the header's declared
     * length, pointing into the buffer parsed (valid as long as it is);
     * NULL and 0 when there are none, and for v1. Read them with
     * evmux_proxy_tlv, which checks them: the parser does not. */
    const unsigned char *tlvs;
    size_t tlvs_len;
} evmux_proxy_header;

/* Parses the PROXY header at the start of the len bytes at buf: version 1
 * (text) or 2 (binary), whichever the first byte announces. Returns the
 * header's length (> 0), *out filled: the application's bytes follow it
 * at buf + that length, untouched. -EAGAIN: the bytes are a correct
 * beginning of a header; call again with more (a whole header never
 * needs more than EVMUX_PROXY_HEADER_MAX bytes). Errors (*out untouched):
 * -EPROTO (not a PROXY header, or a malformed one: decided as soon as the
 * bytes allow, so "GET /" or a TLS hello is refused on its first byte),
 * -EMSGSIZE (too long: a v1 line without CRLF in its first 107 bytes, a
 * v2 length over EVMUX_PROXY_HEADER_MAX in all), -EINVAL (NULL out; NULL
 * buf with len > 0). v1 must be exactly "PROXY TCP4 " or "PROXY TCP6 "
 * and source, destination, source port, destination port, single spaces
 * between, then CRLF: addresses inet_pton takes for the family, ports
 * 0..65535 in decimal, no sign, no leading zeros (the spec forbids them,
 * for IPv4 numbers too); or "PROXY UNKNOWN" and CRLF, or a space and
 * printable text up to CRLF (ignored). v2 must have version 2, command
 * LOCAL or PROXY, a family and transport the spec defines (AF_UNSPEC,
 * or stream or datagram over IPv4, IPv6 or Unix) and, for PROXY, a
 * length that holds its addresses; a Unix path must end with a NUL
 * within its 108 bytes. */
EVMUX_API ssize_t evmux_proxy_parse(const void *buf, size_t len, evmux_proxy_header *out);

/* Finds the first TLV of the given type (0..255) among h's: 0 and *value
 * (inside h->tlvs) and *value_len set. The whole list is checked first.
 * Errors: -ENOENT (no such TLV; a header without TLVs), -EPROTO (the list
 * is malformed: a TLV runs past its end), -EINVAL (NULL h, value or
 * value_len; type over 255; h->tlvs NULL with h->tlvs_len > 0). */
EVMUX_API int evmux_proxy_tlv(const evmux_proxy_header *h, unsigned type, const void **value,
                              size_t *value_len);

#ifdef __cplusplus
}
#endif

#endif /* EVMUX_H */
