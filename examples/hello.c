#include <evmux.h>
#include <stdio.h>

static void on_tick(evmux_timer *timer)
{
    int *ticks = timer->handle.data;
    evmux_loop *loop = evmux_handle_loop(&timer->handle);
    printf("tick %d at %llu ms\n", ++*ticks, (unsigned long long)evmux_now(loop));
    if (*ticks == 3)
        evmux_close(&timer->handle, NULL); /* nothing left: evmux_run returns */
}

int main(void)
{
    evmux_loop *loop;
    int rc = evmux_loop_new(&loop, NULL); /* NULL: the best backend */
    if (rc < 0) {
        fprintf(stderr, "evmux_loop_new: %s\n", evmux_strerror(rc));
        return 1;
    }
    int ticks = 0;
    evmux_timer timer;
    evmux_timer_init(loop, &timer, on_tick);
    timer.handle.data = &ticks;
    evmux_timer_start(&timer, 100, 100); /* first after 100 ms, then every 100 ms */

    printf("backend: %s\n", evmux_loop_backend(loop));
    rc = evmux_run(loop, EVMUX_RUN_DEFAULT);
    evmux_loop_free(loop);
    return rc < 0 ? 1 : 0;
}
