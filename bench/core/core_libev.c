/* Event-loop core benchmark: libev. Default backend: libev's own choice
 * (EVFLAG_AUTO), which is epoll on Linux; --backend epoll|poll|select
 * forces one. */
#include "core_bench.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct ev_loop *loop;
static ev_io *watchers;
static int nwatchers;

static void on_read(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)revents;
    core_readable((int)(w - watchers));
}

static int bench_open(const char *backend)
{
    unsigned flags;
    if (backend == NULL)
        flags = EVFLAG_AUTO;
    else if (strcmp(backend, "epoll") == 0)
        flags = EVBACKEND_EPOLL;
    else if (strcmp(backend, "poll") == 0)
        flags = EVBACKEND_POLL;
    else if (strcmp(backend, "select") == 0)
        flags = EVBACKEND_SELECT;
    else {
        fprintf(stderr, "libev: unknown backend '%s' (epoll, poll or select)\n", backend);
        return 2;
    }
    /* EVFLAG_NOENV: LIBEV_FLAGS in the environment must not change the run. */
    loop = ev_loop_new(flags | EVFLAG_NOENV);
    if (loop == NULL) {
        fprintf(stderr, "libev: cannot create a loop with backend %s\n",
                backend ? backend : "auto");
        return 2;
    }
    return 0;
}

static const char *bench_backend(void)
{
    switch (ev_backend(loop)) {
    case EVBACKEND_EPOLL: return "epoll";
    case EVBACKEND_POLL: return "poll";
    case EVBACKEND_SELECT: return "select";
    case EVBACKEND_LINUXAIO: return "linuxaio";
    case EVBACKEND_IOURING: return "io_uring";
    default: return "other";
    }
}

static int bench_watch(int npipes, const int *fds)
{
    watchers = calloc((size_t)npipes, sizeof *watchers);
    if (watchers == NULL)
        return 1;
    for (int i = 0; i < npipes; i++) {
        ev_io_init(&watchers[i], on_read, fds[2 * i], EV_READ);
        ev_io_start(loop, &watchers[i]);
    }
    nwatchers = npipes;
    return 0;
}

static int bench_rereg(void)
{
    for (int i = 0; i < nwatchers; i++) {
        ev_io_stop(loop, &watchers[i]);
        ev_io_start(loop, &watchers[i]);
    }
    return 0;
}

static int bench_run_once(void)
{
    ev_run(loop, EVRUN_NOWAIT);
    return 0;
}

static void bench_close(void)
{
    for (int i = 0; i < nwatchers; i++)
        ev_io_stop(loop, &watchers[i]);
    ev_loop_destroy(loop);
    free(watchers);
}

const struct core_lib core_lib = {
    .name = "libev",
    .open = bench_open,
    .backend = bench_backend,
    .watch = bench_watch,
    .rereg = bench_rereg,
    .run_once = bench_run_once,
    .close = bench_close,
};
