/* Event-loop core benchmark: evmux. Takes --backend select|poll|epoll|uring. */
#include "core_bench.h"

#include "evmux.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>

static evmux_loop *loop;
static evmux_io *watchers;
static int nwatchers;

static void on_read(evmux_io *io, unsigned events)
{
    (void)events;
    core_readable((int)(io - watchers));
}

static int bench_open(const char *backend)
{
    evmux_loop_options opts = {.backend = backend ? backend : "epoll"};
    int rc = evmux_loop_new(&loop, &opts);
    if (rc < 0) {
        fprintf(stderr, "evmux: backend %s: %s\n", opts.backend, evmux_strerror(rc));
        return 2;
    }
    return 0;
}

static const char *bench_backend(void)
{
    return evmux_loop_backend(loop);
}

static int bench_watch(int npipes, const int *fds)
{
    watchers = calloc((size_t)npipes, sizeof *watchers);
    if (watchers == NULL)
        return 1;
    for (int i = 0; i < npipes; i++) {
        evmux_io_init(loop, &watchers[i], fds[2 * i], on_read);
        nwatchers++;
        int rc = evmux_io_start(&watchers[i], EVMUX_READABLE);
        if (rc == -ERANGE) {
            /* select's fd_set ends at FD_SETSIZE; evmux refuses rather
             * than write past it. */
            fprintf(stderr,
                    "evmux: the %s backend cannot watch descriptor %d (>= FD_SETSIZE %d): "
                    "%d pairs need descriptors up to %d; use --pipes 500 or fewer, or "
                    "another backend\n",
                    evmux_loop_backend(loop), fds[2 * i], FD_SETSIZE, npipes,
                    fds[2 * npipes - 1]);
            return 2;
        }
        if (rc < 0) {
            fprintf(stderr, "evmux: evmux_io_start(fd %d): %s\n", fds[2 * i],
                    evmux_strerror(rc));
            return 1;
        }
    }
    return 0;
}

static int bench_rereg(void)
{
    for (int i = 0; i < nwatchers; i++) {
        evmux_io_stop(&watchers[i]);
        int rc = evmux_io_start(&watchers[i], EVMUX_READABLE);
        if (rc < 0) {
            fprintf(stderr, "evmux: restart: %s\n", evmux_strerror(rc));
            return 1;
        }
    }
    return 0;
}

static int bench_run_once(void)
{
    int rc = evmux_run(loop, EVMUX_RUN_NOWAIT);
    if (rc < 0) {
        fprintf(stderr, "evmux: evmux_run: %s\n", evmux_strerror(rc));
        return 1;
    }
    return 0;
}

static void bench_close(void)
{
    for (int i = 0; i < nwatchers; i++)
        evmux_close(&watchers[i].handle, NULL);
    evmux_run(loop, EVMUX_RUN_DEFAULT); /* runs the close callbacks */
    int rc = evmux_loop_free(loop);
    if (rc < 0)
        fprintf(stderr, "evmux: evmux_loop_free: %s\n", evmux_strerror(rc));
    free(watchers);
}

const struct core_lib core_lib = {
    .name = "evmux",
    .open = bench_open,
    .backend = bench_backend,
    .watch = bench_watch,
    .rereg = bench_rereg,
    .run_once = bench_run_once,
    .close = bench_close,
};
