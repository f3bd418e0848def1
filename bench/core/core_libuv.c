/* Event-loop core benchmark: libuv, with uv_poll_t watchers (libuv's
 * readiness handle; its streams would read for us). libuv has one backend
 * on Linux: epoll. */
#include "core_bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static uv_loop_t loop;
static uv_poll_t *polls;
static int npolls;

static void on_read(uv_poll_t *p, int status, int events)
{
    (void)events;
    if (status < 0)
        core.failures++;
    core_readable((int)(p - polls));
}

static int bench_open(const char *backend)
{
    if (backend != NULL && strcmp(backend, "epoll") != 0) {
        fprintf(stderr, "libuv: only the epoll backend exists on Linux\n");
        return 2;
    }
    int rc = uv_loop_init(&loop);
    if (rc < 0) {
        fprintf(stderr, "libuv: uv_loop_init: %s\n", uv_strerror(rc));
        return 1;
    }
    return 0;
}

static const char *bench_backend(void)
{
    return "epoll";
}

static int bench_watch(int npipes, const int *fds)
{
    polls = calloc((size_t)npipes, sizeof *polls);
    if (polls == NULL)
        return 1;
    for (int i = 0; i < npipes; i++) {
        int rc = uv_poll_init(&loop, &polls[i], fds[2 * i]);
        if (rc == 0) {
            npolls++;
            rc = uv_poll_start(&polls[i], UV_READABLE, on_read);
        }
        if (rc < 0) {
            fprintf(stderr, "libuv: poll on fd %d: %s\n", fds[2 * i], uv_strerror(rc));
            return 1;
        }
    }
    return 0;
}

static int bench_rereg(void)
{
    for (int i = 0; i < npolls; i++) {
        uv_poll_stop(&polls[i]);
        int rc = uv_poll_start(&polls[i], UV_READABLE, on_read);
        if (rc < 0) {
            fprintf(stderr, "libuv: uv_poll_start: %s\n", uv_strerror(rc));
            return 1;
        }
    }
    return 0;
}

static int bench_run_once(void)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    return 0;
}

static void bench_close(void)
{
    for (int i = 0; i < npolls; i++)
        uv_close((uv_handle_t *)&polls[i], NULL);
    uv_run(&loop, UV_RUN_DEFAULT); /* runs the close callbacks */
    int rc = uv_loop_close(&loop);
    if (rc < 0)
        fprintf(stderr, "libuv: uv_loop_close: %s\n", uv_strerror(rc));
    free(polls);
}

const struct core_lib core_lib = {
    .name = "libuv",
    .open = bench_open,
    .backend = bench_backend,
    .watch = bench_watch,
    .rereg = bench_rereg,
    .run_once = bench_run_once,
    .close = bench_close,
};
