/* evmux-echo-server: one loop per thread, and how connections reach them.
 *
 * Shard 0 runs on the main thread, shards 1.. on threads of their own;
 * each creates its loop on the thread that runs it (an io_uring ring is
 * tied to the thread that made it). Two ways to spread connections:
 *  - reuseport: every shard has its own listener on the same port, and
 *    the kernel hashes each new connection to one of them. No thread
 *    talks to another, but the hash ignores how busy a loop is.
 *  - handoff: shard 0 alone accepts, takes each connection as a bare
 *    descriptor and gives it to the shard serving the fewest connections
 *    right now, through that shard's evmux_handoff. Long-lived, uneven
 *    connections spread evenly; the price is one cross-thread wake-up per
 *    connection and one accepting thread.
 * --max-conns counts every shard's connections (srv->open_conns); the one
 * who accepts takes the count, and the connection's close gives it back. */
#include "echo_server.h"

#include <assert.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool over_max_conns(struct server *srv)
{
    size_t before = atomic_fetch_add(&srv->open_conns, 1);
    if (srv->opt.max_conns == 0 || before < srv->opt.max_conns)
        return false;
    atomic_fetch_sub(&srv->open_conns, 1);
    return true;
}

/* The shard with the fewest open connections, starting the search after
 * the last pick so that ties go round. */
static struct shard *least_loaded(struct server *srv)
{
    unsigned start = atomic_fetch_add(&srv->handoff_cursor, 1);
    struct shard *best = &srv->shards[start % srv->shard_count];
    size_t best_load = SIZE_MAX;
    for (unsigned k = 0; k < srv->shard_count; k++) {
        struct shard *sh = &srv->shards[(start + k) % srv->shard_count];
        size_t load = atomic_load(&sh->load);
        if (load < best_load) {
            best = sh;
            best_load = load;
        }
    }
    return best;
}

static void hand_off(struct shard *from, evmux_listener *l)
{
    struct shard *to = least_loaded(from->srv);
    atomic_fetch_add(&to->load, 1);
    if (to == from) {
        conn_accept(from, l, -1);
        return;
    }
    int fd, rc = evmux_accept_fd(l, &fd);
    if (rc == 0 && (rc = evmux_handoff_send(&to->inbox, fd, NULL)) < 0)
        close(fd);
    if (rc < 0) {
        fprintf(stderr, "evmux-echo-server: cannot hand a connection to loop %u: %s\n", to->index,
                evmux_strerror(rc));
        from->refused++;
        atomic_fetch_sub(&to->load, 1);
        atomic_fetch_sub(&from->srv->open_conns, 1);
    }
}

static void on_accept(evmux_listener *l, int status)
{
    struct shard *sh = l->handle.data;
    if (status == -EMFILE || status == -ENFILE) {
        fprintf(stderr, "evmux-echo-server: %s with %zu connections; closing new ones until "
                "some end\n", evmux_strerror(status), atomic_load(&sh->srv->open_conns));
        return;
    }
    if (status < 0) {
        fprintf(stderr, "evmux-echo-server: trouble accepting with %zu connections: %s\n",
                atomic_load(&sh->srv->open_conns), evmux_strerror(status));
        return;
    }
    if (over_max_conns(sh->srv)) {
        sh->refused++; /* not taken: the listener closes it */
        return;
    }
    if (sh->srv->opt.balance == BALANCE_HANDOFF && sh->srv->shard_count > 1) {
        hand_off(sh, l);
        return;
    }
    atomic_fetch_add(&sh->load, 1);
    conn_accept(sh, l, -1);
}

/* A connection from loop 0, or (fd -1) its word that no more will come:
 * that comes through the handoff itself, after every connection sent
 * before it, so none is closed unserved with the inbox. */
static void on_handed(evmux_handoff *inbox, int fd, void *data)
{
    (void)data;
    struct shard *sh = inbox->handle.data;
    assert(sh->has_inbox && sh->index > 0);
    if (fd >= 0) {
        conn_accept(sh, NULL, fd);
        return;
    }
    evmux_close(&sh->inbox.handle, NULL); /* nothing is queued behind the word */
    if (sh->phase == DRAINING)
        shard_drain_check(sh);
    else
        shard_maybe_finish(sh); /* SERVING: the stop, on its way, drains */
}

void shards_accept_done(struct server *srv)
{
    for (unsigned k = 1; k < srv->shard_count; k++) {
        int rc = evmux_handoff_send(&srv->shards[k].inbox, -1, NULL);
        if (rc < 0) { /* out of memory: that loop would wait for ever */
            fprintf(stderr, "evmux-echo-server: cannot tell loop %u to stop: %s\n", k,
                    evmux_strerror(rc));
            fflush(stderr);
            _exit(1);
        }
    }
}

int shard_loop_new(struct shard *sh)
{
    const struct options *opt = &sh->srv->opt;
    evmux_loop_options lopt = {.backend = opt->backend, .pool_threads = opt->workers};
    int rc = evmux_loop_new(&sh->loop, &lopt);
    if (rc < 0)
        fprintf(stderr, "evmux-echo-server: cannot start the %s backend: %s\n", opt->backend,
                evmux_strerror(rc));
    return rc;
}

static int open_inbox(struct shard *sh)
{
    int rc = evmux_handoff_init(sh->loop, &sh->inbox, on_handed);
    if (rc < 0)
        return rc;
    sh->inbox.handle.data = sh;
    sh->has_inbox = true;
    return 0;
}

int shard_start(struct shard *sh)
{
    struct server *srv = sh->srv;
    const struct options *opt = &srv->opt;
    bool several = srv->shard_count > 1;
    int rc = shard_install_signals(sh);
    if (rc < 0) {
        fprintf(stderr, "evmux-echo-server: cannot handle signals: %s\n", evmux_strerror(rc));
        return 1;
    }
    struct sockaddr_storage addr = srv->addr;
    if (opt->udp) {
        rc = shard_start_udp(sh, (struct sockaddr *)&addr, srv->addr_len,
                             several ? EVMUX_UDP_REUSEPORT : 0);
    } else if (several && opt->balance == BALANCE_HANDOFF && sh->index > 0) {
        rc = open_inbox(sh);
    } else {
        evmux_listen_options lo = {
            .flags = several && opt->balance == BALANCE_REUSEPORT ? EVMUX_LISTEN_REUSEPORT : 0};
        sh->listener.handle.data = sh;
        rc = evmux_listen(sh->loop, &sh->listener, (struct sockaddr *)&addr, srv->addr_len, &lo,
                          on_accept);
        sh->listening = rc == 0;
    }
    if (rc < 0) {
        fprintf(stderr, "evmux-echo-server: loop %u cannot listen on %s: %s\n", sh->index,
                opt->unix_path ? opt->unix_path : opt->host, evmux_strerror(rc));
        return 1;
    }
    if (sh->index == 0) { /* the port picked for port 0 is everyone's */
        socklen_t len = sizeof srv->addr;
        rc = opt->udp ? evmux_udp_address(&sh->udp, &srv->addr, &len)
                      : evmux_listener_address(&sh->listener, &srv->addr, &len);
        if (rc == 0)
            srv->addr_len = len;
    }
    return 0;
}

int shard_run(struct shard *sh)
{
    int rc = evmux_run(sh->loop, EVMUX_RUN_DEFAULT);
    if (rc < 0) {
        /* The backend failed: this loop's clients are lost, and the other
         * loops could wait for it for ever. End the process, saying so. */
        fprintf(stderr, "evmux-echo-server: loop %u failed: %s\n", sh->index, evmux_strerror(rc));
        fflush(stderr);
        _exit(1);
    }
    return rc;
}

void shard_free(struct shard *sh)
{
    if (sh->loop != NULL && evmux_loop_free(sh->loop) < 0)
        fprintf(stderr, "evmux-echo-server: loop %u: handles left open at exit\n", sh->index);
    sh->loop = NULL;
}

/* ---- threads 1.. ---- */

static pthread_mutex_t start_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cond = PTHREAD_COND_INITIALIZER;
static unsigned started, start_failed;

static void report_started(bool ok)
{
    pthread_mutex_lock(&start_mutex);
    started++;
    if (!ok)
        start_failed++;
    pthread_cond_signal(&start_cond);
    pthread_mutex_unlock(&start_mutex);
}

void pin_self(const struct shard *sh)
{
    if (sh->cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(sh->cpu, &set);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (rc != 0)
        fprintf(stderr, "evmux-echo-server: loop %u: cannot pin to CPU %d: %s\n", sh->index,
                sh->cpu, strerror(rc));
}

static void *shard_main(void *arg)
{
    struct shard *sh = arg;
    pin_self(sh);
    if (shard_loop_new(sh) < 0) {
        report_started(false);
        return NULL;
    }
    if (shard_start(sh) != 0) {
        report_started(false);
        return NULL; /* the process exits: its loop is not worth tidying */
    }
    report_started(true);
    shard_run(sh);
    shard_free(sh);
    return NULL;
}

int shards_spawn(struct server *srv)
{
    for (unsigned k = 1; k < srv->shard_count; k++) {
        int rc = pthread_create(&srv->shards[k].thread, NULL, shard_main, &srv->shards[k]);
        if (rc != 0) {
            fprintf(stderr, "evmux-echo-server: cannot start thread %u: %s\n", k, strerror(rc));
            return -1; /* the process exits */
        }
    }
    pthread_mutex_lock(&start_mutex);
    while (started < srv->shard_count - 1)
        pthread_cond_wait(&start_cond, &start_mutex);
    unsigned failed = start_failed;
    pthread_mutex_unlock(&start_mutex);
    return failed == 0 ? 0 : -1;
}

void shards_join(struct server *srv)
{
    for (unsigned k = 1; k < srv->shard_count; k++)
        pthread_join(srv->shards[k].thread, NULL);
}
