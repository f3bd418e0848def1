/* evmux-echo-server: stopping on SIGINT/SIGTERM, without loss.
 *
 * A balancer drains a server by signalling it and sending new clients
 * elsewhere; the clients already on it must finish. So each loop, on the
 * first signal:
 *   1. stops accepting (closes its listener; in handoff mode shard 0 tells
 *      the others that no more connections will come);
 *   2. finishes at once every connection that is idle (no input for
 *      --drain-idle-ms, nothing owed, no job running): what is owed, then
 *      FIN, then close on the client's EOF, as before draining existed;
 *   3. goes on serving, both ways, every connection still mid-transfer,
 *      checking every tick whether its input has paused, until
 *      --drain-timeout (DRAINING);
 *   4. then finishes the rest, and gives slow peers SHUTDOWN_GRACE_MS to
 *      take what they are owed and close (FINISHING).
 * A second signal closes everything at once. Each loop sees every signal
 * (evmux wakes every loop that watches it), so the loops stop
 * independently; the process exits once every loop's thread has ended. */
#include "echo_server.h"

#include <signal.h>

static void close_everyone(struct shard *sh)
{
    atomic_store(&sh->srv->give_up_work, true); /* running jobs end, unanswered */
    while (sh->conns != NULL)
        conn_close(sh->conns);
}

static void on_grace_over(evmux_timer *t)
{
    close_everyone(t->handle.data);
}

static void close_if_open(evmux_handle *h)
{
    if (!evmux_is_closing(h))
        evmux_close(h, NULL);
}

/* Once nothing is left to serve, the loop ends: its last handles go. */
void shard_maybe_finish(struct shard *sh)
{
    if (sh->phase == SERVING || sh->conns != NULL)
        return;
    if (sh->has_inbox && !evmux_is_closing(&sh->inbox.handle))
        return; /* shard 0 may still hand us a connection */
    close_if_open(&sh->drain_tick.handle);
    close_if_open(&sh->drain_deadline.handle);
    close_if_open(&sh->grace.handle);
    close_if_open(&sh->sigint.handle);
    close_if_open(&sh->sigterm.handle);
}

static void start_finishing(struct shard *sh)
{
    sh->phase = FINISHING;
    evmux_timer_stop(&sh->drain_tick);
    evmux_timer_stop(&sh->drain_deadline);
    for (struct conn *c = sh->conns, *next; c != NULL; c = next) {
        next = c->next; /* goodbye may close c */
        conn_say_goodbye(c);
    }
    int rc = evmux_timer_start(&sh->grace, SHUTDOWN_GRACE_MS, 0);
    if (rc < 0) { /* nothing would bound the wait for slow peers */
        fprintf(stderr, "evmux-echo-server: cannot time the shutdown (%s): closing every connection now\n",
                evmux_strerror(rc));
        close_everyone(sh);
    }
    shard_maybe_finish(sh);
}

/* Finishes the connections whose input has paused; FINISHING once none is
 * left mid-transfer. */
static void drain_check(struct shard *sh)
{
    uint64_t now = evmux_now(sh->loop);
    bool busy = false;
    for (struct conn *c = sh->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->saying_goodbye || c->peer_done)
            continue; /* finishing already */
        if (conn_is_idle(c, now))
            conn_say_goodbye(c);
        else
            busy = true;
    }
    if (!busy)
        start_finishing(sh);
}

static void on_drain_tick(evmux_timer *t)
{
    drain_check(t->handle.data);
}

static void on_drain_deadline(evmux_timer *t)
{
    struct shard *sh = t->handle.data;
    fprintf(stderr, "evmux-echo-server: loop %u: --drain-timeout reached with %zu connections\n",
            sh->index, sh->conn_count);
    start_finishing(sh);
}

void shard_begin_shutdown(struct shard *sh)
{
    sh->phase = DRAINING;
    if (sh->udp_mode) {
        /* Replies queued go out as far as the socket takes them. */
        evmux_close(&sh->udp.handle, NULL);
        sh->phase = FINISHING;
        shard_maybe_finish(sh);
        return;
    }
    if (sh->listening) {
        evmux_close(&sh->listener.handle, NULL);
        sh->listening = false;
        if (sh->index == 0 && sh->srv->opt.balance == BALANCE_HANDOFF)
            shards_accept_done(sh->srv);
    }
    uint64_t tick = sh->srv->opt.drain_idle_ms / 4;
    tick = tick < 10 ? 10 : tick > 100 ? 100 : tick;
    int rc = evmux_timer_start(&sh->drain_tick, tick, tick);
    if (rc == 0)
        rc = evmux_timer_start(&sh->drain_deadline, sh->srv->opt.drain_timeout_ms, 0);
    if (rc < 0) {
        fprintf(stderr, "evmux-echo-server: cannot time the drain (%s): finishing now\n",
                evmux_strerror(rc));
        start_finishing(sh);
        return;
    }
    drain_check(sh);
}

static void on_stop_signal(evmux_signal *sig, int signum)
{
    (void)signum;
    struct shard *sh = sig->handle.data;
    if (sh->phase == SERVING)
        shard_begin_shutdown(sh);
    else
        close_everyone(sh); /* a second signal: stop waiting */
}

int shard_install_signals(struct shard *sh)
{
    evmux_timer *timers[] = {&sh->drain_tick, &sh->drain_deadline, &sh->grace};
    evmux_timer_cb cbs[] = {on_drain_tick, on_drain_deadline, on_grace_over};
    for (int i = 0; i < 3; i++) {
        evmux_timer_init(sh->loop, timers[i], cbs[i]);
        timers[i]->handle.data = sh;
        evmux_unref(&timers[i]->handle); /* connections keep the loop going, not these */
    }
    evmux_signal_init(sh->loop, &sh->sigint);
    evmux_signal_init(sh->loop, &sh->sigterm);
    sh->sigint.handle.data = sh->sigterm.handle.data = sh;
    /* Only the listener, the inbox and connections keep the loop running. */
    evmux_unref(&sh->sigint.handle);
    evmux_unref(&sh->sigterm.handle);
    int rc = evmux_signal_start(&sh->sigint, on_stop_signal, SIGINT);
    if (rc == 0)
        rc = evmux_signal_start(&sh->sigterm, on_stop_signal, SIGTERM);
    return rc;
}
