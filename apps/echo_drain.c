/* evmux-echo-server: stopping on SIGINT/SIGTERM, without loss.
 *
 * A balancer drains a server by signalling it and sending new clients
 * elsewhere; the clients already on it must finish. So each loop, on the
 * first signal:
 *   1. stops accepting (closes its listener; in handoff mode loop 0 tells
 *      the others, through their handoffs, that no more connections come);
 *   2. finishes at once every connection that is idle (no input for
 *      --drain-idle-ms, nothing owed, no job running, no bytes in the
 *      kernel either way): what is owed, then FIN, then close on the
 *      client's EOF, as before draining existed;
 *   3. goes on serving, both ways, every connection still mid-transfer,
 *      checking every tick whether its input has paused, until
 *      --drain-timeout (DRAINING);
 *   4. then finishes the rest, and gives slow peers SHUTDOWN_GRACE_MS to
 *      take what they are owed and close (FINISHING).
 * A second signal closes everything at once.
 *
 * Loop 0 alone watches the signals and passes each on to loops 1..
 * (their `stop` asyncs): evmux has room for 64 loops per signal, and a
 * signal that came before a loop started watching would be lost to it.
 * Loop 0 also ends last, once every other loop has ended (others_done),
 * so that a second signal always finds a handler. */
#include "echo_server.h"

#include <assert.h>
#include <signal.h>

static void close_everyone(struct shard *sh)
{
    atomic_store(&sh->give_up_work, true); /* running jobs end, unanswered */
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

static bool inbox_open(const struct shard *sh)
{
    return sh->has_inbox && !evmux_is_closing(&sh->inbox.handle);
}

void shard_maybe_finish(struct shard *sh)
{
    if (sh->phase != FINISHING || sh->conns != NULL)
        return;
    if (inbox_open(sh))
        return; /* loop 0 may still hand us a connection */
    struct server *srv = sh->srv;
    if (sh->index == 0) {
        pthread_mutex_lock(&srv->life_mutex);
        bool others_ended = srv->shards_running == 0;
        if (others_ended && sh->lifecycle_open) {
            sh->lifecycle_open = false;
            evmux_close(&sh->others_done.handle, NULL);
        }
        pthread_mutex_unlock(&srv->life_mutex);
        if (!others_ended)
            return; /* the signals stay watched while any loop drains */
    } else if (sh->lifecycle_open) {
        shard_ended(sh);
    }
    close_if_open(&sh->drain_tick.handle);
    close_if_open(&sh->drain_deadline.handle);
    close_if_open(&sh->grace.handle);
    if (sh->index == 0) {
        close_if_open(&sh->sigint.handle);
        close_if_open(&sh->sigterm.handle);
    }
}

static void start_finishing(struct shard *sh)
{
    if (sh->phase == FINISHING)
        return; /* the last goodbye of a drain check can bring us here first */
    sh->phase = FINISHING;
    evmux_timer_stop(&sh->drain_tick);
    evmux_timer_stop(&sh->drain_deadline);
    /* Before the goodbyes, which may close the last connection (and with
     * it the timers). */
    int rc = evmux_timer_start(&sh->grace, SHUTDOWN_GRACE_MS, 0);
    if (rc < 0) { /* nothing would bound the wait for slow peers */
        fprintf(stderr, "evmux-echo-server: loop %u: cannot time the shutdown (%s): closing "
                "every connection now\n", sh->index, evmux_strerror(rc));
        close_everyone(sh);
    }
    for (struct conn *c = sh->conns, *next; c != NULL; c = next) {
        next = c->next; /* goodbye may close c */
        conn_say_goodbye(c);
    }
    shard_maybe_finish(sh);
}

void shard_drain_check(struct shard *sh)
{
    assert(sh->phase == DRAINING);
    uint64_t now = evmux_now(sh->loop);
    /* An open inbox: loop 0 may still hand over a connection it accepted
     * before it stopped accepting, to be served like any other. */
    bool busy = inbox_open(sh);
    for (struct conn *c = sh->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->saying_goodbye)
            continue;
        if (c->peer_done) /* closes itself once all is sent; until then, busy */
            busy |= conn_in_flight(c);
        else if (conn_is_idle(c, now))
            conn_say_goodbye(c);
        else
            busy = true;
    }
    if (!busy)
        start_finishing(sh);
}

void shard_conn_gone(struct shard *sh)
{
    /* The last connection of a drain: finish now, not at the next tick,
     * whose timer alone would not keep the loop running. */
    if (sh->phase == DRAINING && sh->conns == NULL && !inbox_open(sh))
        start_finishing(sh);
    else
        shard_maybe_finish(sh);
}

static void on_drain_tick(evmux_timer *t)
{
    shard_drain_check(t->handle.data);
}

static void on_drain_deadline(evmux_timer *t)
{
    struct shard *sh = t->handle.data;
    fprintf(stderr, "evmux-echo-server: loop %u: --drain-timeout reached with %zu connections\n",
            sh->index, sh->conn_count);
    start_finishing(sh);
}

static void begin_shutdown(struct shard *sh)
{
    assert(sh->phase == SERVING);
    sh->phase = DRAINING;
    if (sh->srv->opt.udp) {
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
        fprintf(stderr, "evmux-echo-server: loop %u: cannot time the drain (%s): finishing now\n",
                sh->index, evmux_strerror(rc));
        start_finishing(sh);
        return;
    }
    shard_drain_check(sh);
}

/* Catches up with the signals loop 0 has counted: the first drains, any
 * later one ends everything at once. */
static void take_stops(struct shard *sh)
{
    pthread_mutex_lock(&sh->srv->life_mutex);
    unsigned requests = sh->srv->stop_requests;
    pthread_mutex_unlock(&sh->srv->life_mutex);
    for (; sh->stops_seen < requests; sh->stops_seen++) {
        if (sh->phase == SERVING)
            begin_shutdown(sh);
        else
            close_everyone(sh);
    }
}

static void on_stop(evmux_async *a)
{
    take_stops(a->handle.data);
}

static void on_stop_signal(evmux_signal *sig, int signum)
{
    (void)signum;
    struct shard *sh = sig->handle.data;
    struct server *srv = sh->srv;
    pthread_mutex_lock(&srv->life_mutex);
    srv->stop_requests++;
    for (unsigned k = 1; k < srv->shard_count; k++)
        if (srv->shards[k].lifecycle_open)
            evmux_async_send(&srv->shards[k].stop);
    pthread_mutex_unlock(&srv->life_mutex);
    take_stops(sh);
}

static void on_others_done(evmux_async *a)
{
    shard_maybe_finish(a->handle.data);
}

void shard_ended(struct shard *sh)
{
    struct server *srv = sh->srv;
    struct shard *first = &srv->shards[0];
    pthread_mutex_lock(&srv->life_mutex);
    sh->lifecycle_open = false;
    evmux_close(&sh->stop.handle, NULL);
    assert(srv->shards_running > 0);
    srv->shards_running--;
    if (first->lifecycle_open)
        evmux_async_send(&first->others_done);
    pthread_mutex_unlock(&srv->life_mutex);
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
    atomic_init(&sh->give_up_work, false);
    struct server *srv = sh->srv;
    if (sh->index > 0) {
        /* Referenced: the loop runs until shard_ended closes it, so that
         * its end always goes through shard_maybe_finish. */
        evmux_async_init(sh->loop, &sh->stop, on_stop);
        sh->stop.handle.data = sh;
        pthread_mutex_lock(&srv->life_mutex);
        sh->lifecycle_open = true;
        pthread_mutex_unlock(&srv->life_mutex);
        /* A signal may have come before this loop existed. */
        evmux_async_send(&sh->stop);
        return 0;
    }
    if (srv->shard_count > 1) {
        /* Referenced: loop 0 runs until every other loop has ended. */
        evmux_async_init(sh->loop, &sh->others_done, on_others_done);
        sh->others_done.handle.data = sh;
        sh->lifecycle_open = true;
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
