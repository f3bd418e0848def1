/* Event-loop core benchmark: libevent 2. Default backend: libevent's own
 * choice, which is epoll on Linux; --backend epoll|poll|select forces one
 * (by avoiding the others). */
#include "core_bench.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct event_base *base;
static char *events; /* nevents structs of event_get_struct_event_size() */
static size_t event_size;
static int nevents;

static struct event *event_at(int i)
{
    return (struct event *)(events + (size_t)i * event_size);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    core_readable((int)(intptr_t)arg);
}

static int bench_open(const char *backend)
{
    static const char *const methods[] = {"epoll", "poll", "select"};
    struct event_config *cfg = event_config_new();
    if (cfg == NULL)
        return 1;
    /* EVENT_* variables in the environment must not change the run (for
     * instance EVENT_EPOLL_USE_CHANGELIST). */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_IGNORE_ENV);
    if (backend != NULL) {
        bool known = false;
        for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
            if (strcmp(methods[i], backend) == 0)
                known = true;
            else
                event_config_avoid_method(cfg, methods[i]);
        }
        if (!known) {
            fprintf(stderr, "libevent: unknown backend '%s' (epoll, poll or select)\n", backend);
            event_config_free(cfg);
            return 2;
        }
    }
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (base == NULL || (backend != NULL && strcmp(event_base_get_method(base), backend) != 0)) {
        fprintf(stderr, "libevent: cannot create a base with backend %s\n",
                backend ? backend : "auto");
        return 2;
    }
    return 0;
}

static const char *bench_backend(void)
{
    return event_base_get_method(base);
}

static int bench_watch(int npipes, const int *fds)
{
    /* struct event stays opaque: one array sized by the library. */
    event_size = event_get_struct_event_size();
    events = calloc((size_t)npipes, event_size);
    if (events == NULL)
        return 1;
    for (int i = 0; i < npipes; i++) {
        if (event_assign(event_at(i), base, fds[2 * i], EV_READ | EV_PERSIST, on_read,
                         (void *)(intptr_t)i) != 0 ||
            event_add(event_at(i), NULL) != 0) {
            fprintf(stderr, "libevent: cannot add fd %d\n", fds[2 * i]);
            return 1;
        }
        nevents++;
    }
    return 0;
}

static int bench_rereg(void)
{
    for (int i = 0; i < nevents; i++) {
        event_del(event_at(i));
        if (event_add(event_at(i), NULL) != 0) {
            fprintf(stderr, "libevent: event_add failed\n");
            return 1;
        }
    }
    return 0;
}

static int bench_run_once(void)
{
    if (event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK) < 0) {
        fprintf(stderr, "libevent: event_base_loop failed\n");
        return 1;
    }
    return 0;
}

static void bench_close(void)
{
    for (int i = 0; i < nevents; i++)
        event_del(event_at(i));
    event_base_free(base);
    free(events);
}

const struct core_lib core_lib = {
    .name = "libevent",
    .open = bench_open,
    .backend = bench_backend,
    .watch = bench_watch,
    .rereg = bench_rereg,
    .run_once = bench_run_once,
    .close = bench_close,
};
