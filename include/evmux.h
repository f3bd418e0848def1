/*
 * evmux: event-driven I/O for C.
 *
 * One thread watches many descriptors through the best interface the kernel
 * offers (epoll, poll or select today), behind one small API.
 *
 * Conventions (see docs/design.md):
 *  - Every function that can fail returns 0 or a negative errno value
 *    (-EINVAL, -ENOMEM, ...); evmux_strerror() names it. There is no global
 *    error state and nothing aborts on bad input.
 *  - The loop is opaque. Handles (evmux_io, evmux_timer) are structs that the
 *    caller allocates, may embed in its own structs, and must keep alive and
 *    unmoved from *_init until the close callback has run.
 *    Every handle begins with an evmux_handle named `handle`, whose `data`
 *    field belongs to the caller.
 *  - A loop belongs to the thread that runs it. No function here is safe to
 *    call from another thread while the loop runs.
 *  - Times are milliseconds on the monotonic clock, measured from the loop's
 *    cached time (evmux_now), which is read once per iteration.
 */
#ifndef EVMUX_H
#define EVMUX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(EVMUX_BUILDING) && defined(__GNUC__)
#define EVMUX_API __attribute__((visibility("default")))
#else
#define EVMUX_API
#endif

#define EVMUX_VERSION_MAJOR 0
#define EVMUX_VERSION_MINOR 1
#define EVMUX_VERSION_PATCH 0

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/* A short description of a negative errno value returned by evmux, or of 0.
 * Never returns NULL; the string is static. */
EVMUX_API const char *evmux_strerror(int err);

/* ------------------------------------------------------------------ */
/* Loop                                                                */
/* ------------------------------------------------------------------ */

typedef struct evmux_loop evmux_loop;

typedef struct evmux_loop_options {
    /* "auto" (or NULL): the EVMUX_BACKEND environment variable if set,
     * else the best backend that starts. A name ("epoll", "poll",
     * "select"): that backend or an error (-ENOSYS if it is not built in,
     * or the error it failed to start with). Unknown names give -EINVAL. */
    const char *backend;
} evmux_loop_options;

typedef enum evmux_run_mode {
    EVMUX_RUN_DEFAULT = 0, /* until no active handle is left, or evmux_stop */
    EVMUX_RUN_ONCE,        /* one iteration; blocks for events if needed */
    EVMUX_RUN_NOWAIT       /* one iteration; never blocks */
} evmux_run_mode;

/* Creates a loop. opts may be NULL (auto backend). On success *out is set
 * and 0 returned. */
EVMUX_API int evmux_loop_new(evmux_loop **out, const evmux_loop_options *opts);

/* Frees a loop. Refuses with -EBUSY while any handle is open (initialised
 * and its close callback not yet run); the loop is then left untouched. */
EVMUX_API int evmux_loop_free(evmux_loop *loop);

/* Runs the loop in the given mode. Returns 0, or a negative errno value if
 * the backend failed (the loop can be freed afterwards). Use
 * evmux_loop_alive() to learn whether work remains. */
EVMUX_API int evmux_run(evmux_loop *loop, evmux_run_mode mode);

/* Makes evmux_run return after the current iteration (at the latest before
 * blocking again). */
EVMUX_API void evmux_stop(evmux_loop *loop);

/* 1 if the loop has active referenced handles or pending close callbacks. */
EVMUX_API int evmux_loop_alive(const evmux_loop *loop);

/* The name of the backend in use: "epoll", "poll" or "select". */
EVMUX_API const char *evmux_loop_backend(const evmux_loop *loop);

/* The cached monotonic time in milliseconds, updated once per iteration. */
EVMUX_API uint64_t evmux_now(const evmux_loop *loop);

/* Reads the clock now and updates the cached time. */
EVMUX_API void evmux_update_time(evmux_loop *loop);

/* Call in the child after fork() before using a loop created in the parent:
 * rebuilds kernel state the two processes would otherwise share (an epoll
 * set). Returns 0 or a negative errno value. */
EVMUX_API int evmux_loop_fork(evmux_loop *loop);

/* Names of the backends compiled into this build, in order of preference,
 * separated by commas: e.g. "epoll,poll,select". */
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
 * an evmux_io. */
EVMUX_API int evmux_close(evmux_handle *handle, evmux_close_cb close_cb);

/* 1 while a handle is closing or closed. */
EVMUX_API int evmux_is_closing(const evmux_handle *handle);

/* 1 while a handle is started (an io watcher with interest, a pending timer). */
EVMUX_API int evmux_is_active(const evmux_handle *handle);

/* An unreferenced handle does not keep evmux_run(EVMUX_RUN_DEFAULT) going
 * on its own. Handles start referenced. */
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
 * time. Level-triggered: a callback repeats while the condition holds. */
EVMUX_API int evmux_io_init(evmux_loop *loop, evmux_io *io, int fd, evmux_io_cb cb);

/* Sets the interest to `events` (EVMUX_READABLE and/or EVMUX_WRITABLE),
 * starting or changing the watcher; 0 stops it.
 * Errors: -EINVAL (bad events, closing handle), -EEXIST (another watcher
 * of this loop is started on the descriptor), -ERANGE (select backend:
 * descriptor >= FD_SETSIZE), -EBADF or -EPERM (the kernel refuses the
 * descriptor, e.g. a regular file under epoll), -ENOMEM. */
EVMUX_API int evmux_io_start(evmux_io *io, unsigned events);

/* Stops the watcher; its callback will not run again until restarted, even
 * for an event already collected. Stop (or close) the watcher before
 * closing its descriptor. */
EVMUX_API int evmux_io_stop(evmux_io *io);

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

EVMUX_API int evmux_timer_init(evmux_loop *loop, evmux_timer *timer, evmux_timer_cb cb);

/* Fires once after timeout_ms (measured from evmux_now), then every
 * repeat_ms if that is not 0. Starting a started timer restarts it. A timer
 * never fires before its deadline; timers with equal deadlines fire in the
 * order they were started. Errors: -EINVAL (closing handle). */
EVMUX_API int evmux_timer_start(evmux_timer *timer, uint64_t timeout_ms, uint64_t repeat_ms);

EVMUX_API int evmux_timer_stop(evmux_timer *timer);

/* Restarts a repeating timer with its repeat interval as the timeout.
 * -EINVAL if the repeat interval is 0. */
EVMUX_API int evmux_timer_again(evmux_timer *timer);

EVMUX_API void evmux_timer_set_repeat(evmux_timer *timer, uint64_t repeat_ms);
EVMUX_API uint64_t evmux_timer_get_repeat(const evmux_timer *timer);

/* Milliseconds until the timer fires (0 if due or stopped). */
EVMUX_API uint64_t evmux_timer_get_due_in(const evmux_timer *timer);

#ifdef __cplusplus
}
#endif

#endif /* EVMUX_H */
