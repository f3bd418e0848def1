/* Event-loop core benchmark: the harness shared by the per-library programs.
 *
 * The harness owns the socket pairs, the rounds, the timing, the checks and
 * the output; each library file (core_evmux.c, core_libev.c, ...) only
 * wraps its loop behind struct core_lib and calls core_readable() from its
 * read callback. One executable per library, because Debian's libev also
 * exports libevent's symbols and the two must never share a program. */
#ifndef CORE_BENCH_H
#define CORE_BENCH_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>

/* What the harness needs from a library. Every function returns 0 on
 * success; on failure it prints why to stderr and returns nonzero (2 for a
 * configuration the library cannot run, 1 for anything else). */
struct core_lib {
    const char *name;
    /* Creates the loop. backend is NULL for the library's default. */
    int (*open)(const char *backend);
    /* The backend actually in use, as the library names it. */
    const char *(*backend)(void);
    /* Creates and starts one read watcher on fds[2 * i] for each pair. */
    int (*watch)(int npipes, const int *fds);
    /* Stops every watcher and starts it again (the idiomatic way). */
    int (*rereg)(void);
    /* One loop iteration that never blocks. */
    int (*run_once)(void);
    /* Stops and frees everything. */
    void (*close)(void);
};

extern const struct core_lib core_lib; /* defined by each library file */

/* The round's counters. Global, so a callback reaches them without an
 * extra pointer and every library pays the same for them. */
struct core_state {
    const int *fds;  /* [2i] read end (watched), [2i + 1] write end */
    int npipes;
    long writes_left; /* chained writes still to make this round */
    long fired;       /* bytes written this round (primes + chained) */
    long reads;       /* bytes read this round */
    long callbacks;   /* read callbacks this round */
    long failures;    /* reads or writes that did not move exactly one byte */
};

extern struct core_state core;

/* The body of every library's read callback: take the byte, and while
 * writes remain pass one on to the next pair, so the chain keeps the loop
 * busy. Inline so that no library pays an extra call for the harness. */
static inline void core_readable(int idx)
{
    unsigned char ch;
    core.callbacks++;
    if (recv(core.fds[2 * idx], &ch, 1, 0) == 1)
        core.reads++;
    else
        core.failures++; /* a callback with nothing to read: a spurious event */
    if (core.writes_left > 0) {
        int next = idx + 1 == core.npipes ? 0 : idx + 1;
        if (send(core.fds[2 * next + 1], "e", 1, 0) != 1)
            core.failures++;
        core.writes_left--;
        core.fired++;
    }
}

#endif
