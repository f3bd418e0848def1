/* A program built against an installed evmux (see tests/install_consumers.sh):
 * prints the library's version, then runs one timer once on a loop. */
#include <evmux.h>
#include <stdio.h>
#include <string.h>

static void on_timer(evmux_timer *timer)
{
    int *fired = timer->handle.data;
    ++*fired;
    evmux_close(&timer->handle, NULL);
}

int main(void)
{
    /* Headers and library from the same install. */
    if (strcmp(evmux_version_string(), EVMUX_VERSION_STRING) != 0) {
        fprintf(stderr, "library %s, headers %s\n", evmux_version_string(), EVMUX_VERSION_STRING);
        return 1;
    }
    evmux_loop *loop;
    int rc = evmux_loop_new(&loop, NULL);
    if (rc < 0) {
        fprintf(stderr, "evmux_loop_new: %s\n", evmux_strerror(rc));
        return 1;
    }
    int fired = 0;
    evmux_timer timer;
    evmux_timer_init(loop, &timer, on_timer);
    timer.handle.data = &fired;
    evmux_timer_start(&timer, 1, 0);
    rc = evmux_run(loop, EVMUX_RUN_DEFAULT);
    evmux_loop_free(loop);
    printf("evmux %s backends %s timer fired %d\n", evmux_version_string(),
           evmux_backends_available(), fired);
    return rc == 0 && fired == 1 ? 0 : 1;
}
