/* Periodic work and a graceful stop: a repeating timer prints a tick every
 * TICK_MS; SIGINT (Ctrl-C) or SIGTERM, or the optional one-shot time limit,
 * closes every handle, so evmux_run returns on its own and we exit 0.
 * Signal handles run as ordinary loop callbacks: no async-signal-safety
 * rules apply inside them.
 * Run: evmux-example-timers-and-signals [SECONDS]   (stop with Ctrl-C) */
#include <evmux.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#define TICK_MS 200

static evmux_timer ticker, limit;
static evmux_signal sigint, sigterm;
static uint64_t started;
static unsigned ticks;

static void stop(const char *why)
{
    printf("%s: stopping after %u ticks\n", why, ticks);
    evmux_close(&ticker.handle, NULL);
    evmux_close(&limit.handle, NULL);
    evmux_close(&sigint.handle, NULL);
    evmux_close(&sigterm.handle, NULL); /* SIGTERM's default action is back */
}

static void on_tick(evmux_timer *t)
{
    uint64_t now = evmux_now(evmux_handle_loop(&t->handle));
    printf("tick %u at %llu ms\n", ++ticks, (unsigned long long)(now - started));
}

static void on_limit(evmux_timer *t) { (void)t; stop("time is up"); }

static void on_signal(evmux_signal *sig, int signum)
{
    (void)sig;
    stop(signum == SIGINT ? "got SIGINT" : "got SIGTERM");
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* each line at once, even into a pipe */
    evmux_loop *loop;
    int rc = evmux_loop_new(&loop, NULL);
    if (rc < 0) {
        fprintf(stderr, "evmux_loop_new: %s\n", evmux_strerror(rc));
        return 1;
    }
    started = evmux_now(loop);
    evmux_signal_init(loop, &sigint);
    evmux_signal_init(loop, &sigterm);
    evmux_signal_start(&sigint, on_signal, SIGINT);
    evmux_signal_start(&sigterm, on_signal, SIGTERM);
    evmux_timer_init(loop, &ticker, on_tick);
    evmux_timer_start(&ticker, TICK_MS, TICK_MS); /* first after TICK_MS, then every TICK_MS */
    evmux_timer_init(loop, &limit, on_limit);
    if (argc > 1)
        evmux_timer_start(&limit, strtoull(argv[1], NULL, 10) * 1000, 0); /* 0: once */
    rc = evmux_run(loop, EVMUX_RUN_DEFAULT);
    evmux_loop_free(loop);
    return rc < 0 ? 1 : 0;
}
