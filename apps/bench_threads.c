/* evmux-bench --threads: the team of loops, one per thread; see
 * bench_threads.h for a member's life.
 *
 * The members share one lock-protected record (struct bench_team) and reach
 * each other only through it: a member that changes the team's state (the
 * last one ready, one that stops the run) wakes every other listening
 * member through its evmux_async, and each reads the state back on its own
 * thread. Nothing else crosses threads, so the loads stay single-threaded
 * code.
 *
 * Why nothing can hang: every member says, exactly once, either that it is
 * ready (or has nothing to run) or that the run is over
 * (bench_member_stop_all; a member that returns without having said either
 * says the latter for it). So the gate opens, or the run stops, in bounded
 * time (connecting has a timeout), and each phase after it ends by a timer
 * of its own member. A wake-up is sent only under the lock and only
 * to a member marked listening, and a member unmarks itself under the same
 * lock before it closes its handle, so no send reaches a closed handle.
 *
 * Member 0 runs on the calling thread: --threads 1 starts no thread, and
 * runs as evmux-bench always did. */
#include "bench_threads.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bench_team {
    pthread_mutex_t lock;
    struct bench_member *members;
    unsigned count;
    const struct bench_options *opt;
    bench_load_fn load;
    /* under the lock: */
    unsigned ready;            /* members that said ready */
    bool unusable;             /* one of them has nothing to run */
    bool go;                   /* every member was ready, at go_ns */
    bool stop;                 /* the run is over: members end what they do */
    int status;                /* 1 once a member failed (bench_member_fail) */
    uint64_t go_ns;
    bool window_open;          /* the measured window has started */
    uint64_t window_start_ns, window_end_ns;
    double server_cpu_start, server_cpu_end, client_cpu_start, client_cpu_end;
    /* lock-free: */
    atomic_uint notes;
};

/* ---- waking members ---- */

/* Called with the lock held. */
static void wake_others(struct bench_team *t, const struct bench_member *self)
{
    for (unsigned i = 0; i < t->count; i++) {
        struct bench_member *o = &t->members[i];
        if (o != self && o->listening)
            evmux_async_send(&o->wake);
    }
}

/* Does what the team's state asks of this member, once each: stop wins
 * over go, and a member stopped before its go never starts. */
static void act(struct bench_member *m, bool go, bool stop, uint64_t go_ns)
{
    if (stop) {
        if (!m->stopped) {
            m->stopped = true;
            m->on_stop(m);
        }
    } else if (go && !m->started) {
        m->started = true;
        m->on_go(m, go_ns);
    }
}

static void on_wake(evmux_async *a)
{
    struct bench_member *m = a->handle.data;
    struct bench_team *t = m->team;
    pthread_mutex_lock(&t->lock);
    bool go = t->go, stop = t->stop;
    uint64_t go_ns = t->go_ns;
    pthread_mutex_unlock(&t->lock);
    act(m, go, stop, go_ns);
}

/* ---- a member's calls ---- */

evmux_loop *bench_member_loop_new(struct bench_member *m)
{
    evmux_loop_options lopt = {.backend = m->opt.backend};
    evmux_loop *loop;
    int rc = evmux_loop_new(&loop, &lopt);
    if (rc < 0) {
        bench_member_fail(m, "cannot start the %s backend: %s", m->opt.backend,
                          evmux_strerror(rc));
        return NULL;
    }
    m->res->backend = evmux_loop_backend(loop);
    m->loop = loop;
    return loop;
}

int bench_member_listen(struct bench_member *m, bench_go_cb on_go, bench_stop_cb on_stop)
{
    struct bench_team *t = m->team;
    m->on_go = on_go;
    m->on_stop = on_stop;
    m->wake.handle.data = m;
    int rc = evmux_async_init(m->loop, &m->wake, on_wake);
    if (rc < 0)
        return rc;
    /* Unreferenced: the load's own handles say when its loop is done. */
    evmux_unref(&m->wake.handle);
    pthread_mutex_lock(&t->lock);
    m->listening = true;
    if (t->stop)
        evmux_async_send(&m->wake); /* stopped while this one was setting up */
    pthread_mutex_unlock(&t->lock);
    return 0;
}

void bench_member_ready(struct bench_member *m, bool usable)
{
    struct bench_team *t = m->team;
    pthread_mutex_lock(&t->lock);
    m->arrived = true;
    t->unusable |= !usable;
    if (++t->ready == t->count && !t->stop) {
        if (t->unusable) {
            t->stop = true;
        } else {
            t->go = true;
            t->go_ns = now_ns();
        }
        wake_others(t, m);
    }
    bool go = t->go, stop = t->stop;
    uint64_t go_ns = t->go_ns;
    pthread_mutex_unlock(&t->lock);
    if (usable)
        act(m, go, stop, go_ns);
    else
        m->stopped = true; /* it ends its run itself */
}

bool bench_member_stop_all(struct bench_member *m)
{
    struct bench_team *t = m->team;
    pthread_mutex_lock(&t->lock);
    m->arrived = true;
    bool first = !t->stop;
    if (first) {
        t->stop = true;
        wake_others(t, m);
    }
    pthread_mutex_unlock(&t->lock);
    /* The caller is ending its own run already. */
    m->stopped = true;
    return first;
}

void bench_member_fail(struct bench_member *m, const char *fmt, ...)
{
    struct bench_team *t = m->team;
    pthread_mutex_lock(&t->lock);
    bool first = t->status == 0;
    t->status = 1;
    pthread_mutex_unlock(&t->lock);
    if (first) { /* the others' failures are most likely the same one, or its echo */
        va_list ap;
        va_start(ap, fmt);
        bench_vsay(fmt, ap);
        va_end(ap);
    }
    bench_member_stop_all(m);
}

void bench_member_detach(struct bench_member *m, bool loop_ok)
{
    struct bench_team *t = m->team;
    pthread_mutex_lock(&t->lock);
    bool was_listening = m->listening;
    m->listening = false;
    pthread_mutex_unlock(&t->lock);
    if (was_listening && loop_ok) {
        evmux_close(&m->wake.handle, NULL);
        evmux_run(m->loop, EVMUX_RUN_DEFAULT);
    }
}

uint64_t bench_window_open(struct bench_member *m)
{
    struct bench_team *t = m->team;
    pthread_mutex_lock(&t->lock);
    if (!t->window_open) {
        t->window_open = true;
        if (t->opt->server_pid > 0)
            t->server_cpu_start = process_cpu_s(t->opt->server_pid);
        t->client_cpu_start = self_cpu_s();
        t->window_start_ns = now_ns();
    }
    uint64_t end = t->window_start_ns + phase_ns(t->opt->duration_s);
    pthread_mutex_unlock(&t->lock);
    return end;
}

/* Each close takes the time and CPU again; the last one's stand. */
void bench_window_close(struct bench_member *m)
{
    struct bench_team *t = m->team;
    pthread_mutex_lock(&t->lock);
    t->window_end_ns = now_ns();
    t->client_cpu_end = self_cpu_s();
    if (t->opt->server_pid > 0 && t->server_cpu_start >= 0)
        t->server_cpu_end = process_cpu_s(t->opt->server_pid);
    pthread_mutex_unlock(&t->lock);
}

unsigned bench_next_note(struct bench_member *m)
{
    return atomic_fetch_add(&m->team->notes, 1);
}

/* ---- running the members ---- */

static void run_member(struct bench_member *m)
{
    m->team->load(m);
    pthread_mutex_lock(&m->team->lock);
    bool arrived = m->arrived;
    pthread_mutex_unlock(&m->team->lock);
    if (!arrived) /* it ended without saying why: the others must not wait for it */
        bench_member_stop_all(m);
}

static void *member_thread(void *arg)
{
    run_member(arg);
    return NULL;
}

/* The team's results as if from one run. Latencies merge as histograms,
 * never as averaged percentiles. */
static void merge(const struct bench_team *t, struct bench_results *out)
{
    const struct bench_options *opt = t->opt;
    const struct bench_results *first = t->members[0].res;
    memcpy(out->target, first->target, sizeof out->target);
    for (unsigned i = 0; i < t->count; i++) {
        const struct bench_results *r = t->members[i].res;
        if (out->backend == NULL)
            out->backend = r->backend;
        out->active_ok += r->active_ok;
        out->idle_ok += r->idle_ok;
        out->connect_failures += r->connect_failures;
        out->errors += r->errors;
        out->mismatches += r->mismatches;
        out->messages += r->messages;
        out->sent += r->sent;
        out->lost += r->lost;
        out->bytes_checked += r->bytes_checked;
        out->late += r->late;
        if (r->connect_s > out->connect_s) /* connected: when the slowest was */
            out->connect_s = r->connect_s;
        hist_merge(&out->hist, &r->hist);
        if (out->resolve_error == 0)
            out->resolve_error = r->resolve_error;
        if (out->first_connect_error == 0)
            out->first_connect_error = r->first_connect_error;
        if (out->send_error == 0)
            out->send_error = r->send_error;
        out->no_connection |= r->no_connection;
        out->thread_msgs[i] = r->messages;
    }
    if (t->window_open && t->window_end_ns > t->window_start_ns) {
        out->duration_s = (double)(t->window_end_ns - t->window_start_ns) / 1e9;
        out->client_cpu_s = t->client_cpu_end - t->client_cpu_start;
        if (opt->server_pid > 0 && t->server_cpu_start >= 0 && t->server_cpu_end >= 0)
            out->server_cpu_s = t->server_cpu_end - t->server_cpu_start;
    }
}

int bench_threads_run(const struct bench_options *opt, bench_load_fn load,
                      struct bench_results *merged)
{
    unsigned n = opt->threads;
    struct bench_team team = {.count = n, .opt = opt, .load = load, .server_cpu_start = -1,
                              .server_cpu_end = -1};
    struct bench_member *members = calloc(n, sizeof *members);
    struct bench_results *results = calloc(n, sizeof *results);
    pthread_t *threads = calloc(n, sizeof *threads);
    if (!members || !results || !threads) {
        fprintf(stderr, PROG ": out of memory for %u threads\n", n);
        free(members), free(results), free(threads);
        return 1;
    }
    pthread_mutex_init(&team.lock, NULL);
    team.members = members;
    for (unsigned i = 0; i < n; i++) {
        struct bench_member *m = &members[i];
        m->team = &team;
        m->index = i;
        m->count = n;
        m->opt = *opt;
        m->all = opt;
        /* Connection i (active, or idle) runs on loop i % n. */
        m->opt.conns = (opt->conns + n - 1 - i) / n;
        m->opt.idle = (opt->idle + n - 1 - i) / n;
        m->res = &results[i];
        hist_reset(&m->res->hist);
        m->res->server_cpu_s = -1;
        memcpy(m->res->target, merged->target, sizeof m->res->target);
    }

    unsigned started = 1;
    for (; started < n; started++) {
        int rc = pthread_create(&threads[started], NULL, member_thread, &members[started]);
        if (rc != 0) {
            /* The members never started are never ready: stop the run. */
            bench_member_fail(&members[started], "cannot start thread %u of %u: %s",
                              started + 1, n, strerror(rc));
            break;
        }
    }
    run_member(&members[0]);
    for (unsigned i = 1; i < started; i++)
        pthread_join(threads[i], NULL);

    memset(merged, 0, sizeof *merged); /* the target comes back from member 0 */
    hist_reset(&merged->hist);
    merged->server_cpu_s = -1;
    merge(&team, merged);
    int status = team.status;
    pthread_mutex_destroy(&team.lock);
    free(members), free(results), free(threads);
    return status;
}
