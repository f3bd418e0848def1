/* The worker pool: heavy work off the loop's thread (the third claim of the
 * original text, quoted in docs/io-models.md: one heavy handler on the
 * loop's thread stalls every connection).
 *
 * A request has two states. `state` (idle or queued, set by
 * evmux_work_init) says whether it is between evmux_queue_work and its
 * after callback; only the loop's thread touches it, so evmux_queue_work
 * and evmux_cancel_work read it without a lock and without trusting any
 * other field of an idle request (its loop may be gone). `stage` (waiting,
 * running, done) says where a queued request is, under the pool's mutex.
 *
 * Each loop has its own pool, started by the first evmux_queue_work and
 * grown one thread at a time while work waits and no thread is idle, up
 * to the loop's limit. Threads take requests in queue order; a finished
 * request goes on the done list, and an internal evmux_async brings the
 * loop to run the after callbacks, in the order the work finished.
 *
 * One mutex guards the queue, the running list, the done list and each
 * request's stage; the loop's thread alone touches the rest.
 *
 * fork() copies the pool's memory but none of its threads, and a thread
 * may hold the mutex at that instant. A pthread_atfork handler therefore
 * takes every pool's mutex around fork(), so the child starts with
 * consistent lists; evmux_loop_fork then cancels what was running in the
 * parent and lets new threads take the queue. */
#include "evmux_internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

static const struct evmux__kind work_kind;

#define POOL_DEFAULT_THREADS 4

enum work_state { WORK_IDLE = 0, WORK_QUEUED };
enum work_stage { STAGE_WAITING = 0, STAGE_RUNNING, STAGE_DONE };

struct work_list {
    evmux_work *head, *tail;
};

struct evmux_pool {
    evmux_loop *loop;
    pthread_mutex_t mutex;
    pthread_cond_t work_ready;
    struct work_list queue, running, done;
    size_t queued; /* length of queue */
    unsigned threads_max, threads_started, threads_idle;
    bool exiting;
    pthread_t *threads;
    evmux_async done_async;
    struct evmux_pool *registry_prev, *registry_next;
};

static void list_push(struct work_list *list, evmux_work *req)
{
    req->next = NULL;
    req->prev = list->tail;
    if (list->tail != NULL)
        list->tail->next = req;
    else
        list->head = req;
    list->tail = req;
}

static void list_remove(struct work_list *list, evmux_work *req)
{
    if (req->prev != NULL)
        req->prev->next = req->next;
    else
        list->head = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
    else
        list->tail = req->prev;
    req->prev = req->next = NULL;
}

static void list_append_all(struct work_list *to, struct work_list *from)
{
    if (from->head == NULL)
        return;
    if (to->tail != NULL) {
        to->tail->next = from->head;
        from->head->prev = to->tail;
    } else {
        to->head = from->head;
    }
    to->tail = from->tail;
    from->head = from->tail = NULL;
}

/* ---- fork safety: every pool with a mutex, locked around fork() ---- */

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct evmux_pool *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void before_fork(void)
{
    pthread_mutex_lock(&registry_mutex);
    for (struct evmux_pool *p = registry; p != NULL; p = p->registry_next)
        pthread_mutex_lock(&p->mutex);
}

static void after_fork_parent(void)
{
    for (struct evmux_pool *p = registry; p != NULL; p = p->registry_next)
        pthread_mutex_unlock(&p->mutex);
    pthread_mutex_unlock(&registry_mutex);
}

/* The child has one thread: the pools' threads are gone, and so is any
 * waiter on their condition variables. */
static void after_fork_child(void)
{
    for (struct evmux_pool *p = registry; p != NULL; p = p->registry_next) {
        pthread_mutex_unlock(&p->mutex);
        pthread_cond_init(&p->work_ready, NULL);
        p->threads_started = 0;
        p->threads_idle = 0;
    }
    pthread_mutex_unlock(&registry_mutex);
}

static void register_atfork(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

static void registry_add(struct evmux_pool *pool)
{
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&registry_mutex);
    pool->registry_prev = NULL;
    pool->registry_next = registry;
    if (registry != NULL)
        registry->registry_prev = pool;
    registry = pool;
    pthread_mutex_unlock(&registry_mutex);
}

static void registry_remove(struct evmux_pool *pool)
{
    pthread_mutex_lock(&registry_mutex);
    if (pool->registry_prev != NULL)
        pool->registry_prev->registry_next = pool->registry_next;
    else
        registry = pool->registry_next;
    if (pool->registry_next != NULL)
        pool->registry_next->registry_prev = pool->registry_prev;
    pthread_mutex_unlock(&registry_mutex);
}

/* ---- the threads ---- */

static void *worker_main(void *arg)
{
    struct evmux_pool *pool = arg;
#ifdef __linux__
    pthread_setname_np(pthread_self(), "evmux-pool"); /* for ps, top, gdb */
#endif
    pthread_mutex_lock(&pool->mutex);
    for (;;) {
        evmux_work *req = pool->queue.head;
        if (req == NULL) {
            if (pool->exiting)
                break;
            pool->threads_idle++;
            pthread_cond_wait(&pool->work_ready, &pool->mutex);
            pool->threads_idle--;
            continue;
        }
        list_remove(&pool->queue, req);
        pool->queued--;
        req->stage = STAGE_RUNNING;
        list_push(&pool->running, req);
        pthread_mutex_unlock(&pool->mutex);

        req->work_cb(req);

        pthread_mutex_lock(&pool->mutex);
        list_remove(&pool->running, req);
        req->stage = STAGE_DONE;
        req->status = 0;
        list_push(&pool->done, req);
        pthread_mutex_unlock(&pool->mutex);
        /* req may be gone by now; the pool is not: freeing it joins us. */
        evmux_async_send(&pool->done_async);
        pthread_mutex_lock(&pool->mutex);
    }
    pthread_mutex_unlock(&pool->mutex);
    return NULL;
}

/* Called with the mutex held. Pool threads take no signals: those are
 * for the loop's thread (and its signal handling). */
static int start_thread_locked(struct evmux_pool *pool)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&pool->threads[pool->threads_started], NULL, worker_main, pool);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return -rc;
    pool->threads_started++;
    return 0;
}

/* ---- the loop's side ---- */

static void on_work_done(evmux_async *async)
{
    struct evmux_pool *pool = async->handle.data;
    evmux_loop *loop = pool->loop;
    struct work_list done = {NULL, NULL};
    pthread_mutex_lock(&pool->mutex);
    list_append_all(&done, &pool->done);
    pthread_mutex_unlock(&pool->mutex);

    evmux_work *req;
    while ((req = done.head) != NULL) {
        list_remove(&done, req);
        loop->work_outstanding--;
        loop->active_refs--;
        loop->wake_calls++;
        /* Idle before after_cb, which may queue it again (here or on
         * another loop, even one that outlives this) or free it. */
        req->state = WORK_IDLE;
        req->after_cb(req, req->status); /* may free or requeue req */
    }
}

static int pool_create(evmux_loop *loop)
{
    struct evmux_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return -ENOMEM;
    pool->threads_max = loop->pool_threads_max ? loop->pool_threads_max : POOL_DEFAULT_THREADS;
    pool->threads = calloc(pool->threads_max, sizeof *pool->threads);
    if (pool->threads == NULL) {
        free(pool);
        return -ENOMEM;
    }
    int rc = pthread_mutex_init(&pool->mutex, NULL);
    if (rc != 0) {
        free(pool->threads);
        free(pool);
        return -rc;
    }
    rc = pthread_cond_init(&pool->work_ready, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&pool->mutex);
        free(pool->threads);
        free(pool);
        return -rc;
    }
    pool->loop = loop;
    evmux_async_init(loop, &pool->done_async, on_work_done);
    evmux__handle_make_internal(&pool->done_async.handle);
    evmux_unref(&pool->done_async.handle); /* the requests keep the loop alive */
    pool->done_async.handle.data = pool;
    registry_add(pool);
    loop->pool = pool;
    evmux__loop_register_kind(loop, &work_kind);
    return 0;
}

int evmux_work_init(evmux_work *req)
{
    if (req == NULL)
        return -EINVAL;
    req->loop = NULL;
    req->work_cb = NULL;
    req->after_cb = NULL;
    req->prev = req->next = NULL;
    req->status = 0;
    req->state = WORK_IDLE;
    req->stage = STAGE_DONE;
    return 0;
}

int evmux_queue_work(evmux_loop *loop, evmux_work *req, evmux_work_cb work_cb,
                     evmux_after_work_cb after_cb)
{
    if (loop == NULL || req == NULL || work_cb == NULL || after_cb == NULL)
        return -EINVAL;
    if (req->state != WORK_IDLE)
        return -EINVAL; /* queued, running, or waiting for after_cb */
    if (loop->pool == NULL) {
        int rc = pool_create(loop);
        if (rc < 0)
            return rc;
    }
    struct evmux_pool *pool = loop->pool;
    pthread_mutex_lock(&pool->mutex);
    /* One more thread while queued work outnumbers the idle threads (an
     * idle thread counts until it wakes, so a burst would otherwise go to
     * one thread). A failure matters only when no thread is left. */
    if (pool->queued + 1 > pool->threads_idle && pool->threads_started < pool->threads_max) {
        int rc = start_thread_locked(pool);
        if (rc < 0 && pool->threads_started == 0) {
            pthread_mutex_unlock(&pool->mutex);
            return rc;
        }
    }
    req->loop = loop;
    req->work_cb = work_cb;
    req->after_cb = after_cb;
    req->status = 0;
    req->state = WORK_QUEUED;
    req->stage = STAGE_WAITING;
    list_push(&pool->queue, req);
    pool->queued++;
    pthread_cond_signal(&pool->work_ready);
    pthread_mutex_unlock(&pool->mutex);

    loop->work_outstanding++;
    loop->active_refs++;
    return 0;
}

int evmux_cancel_work(evmux_work *req)
{
    if (req == NULL || req->state != WORK_QUEUED)
        return -EINVAL; /* idle: not queued, or its after_cb has run */
    struct evmux_pool *pool = req->loop->pool;
    int rc;
    pthread_mutex_lock(&pool->mutex);
    if (req->stage == STAGE_WAITING) {
        list_remove(&pool->queue, req);
        pool->queued--;
        req->stage = STAGE_DONE;
        req->status = -ECANCELED;
        list_push(&pool->done, req);
        evmux_async_send(&pool->done_async); /* after_cb never runs inside this call */
        rc = 0;
    } else {
        rc = -EBUSY; /* running, or done and waiting for after_cb */
    }
    pthread_mutex_unlock(&pool->mutex);
    return rc;
}

static void pool_free(evmux_loop *loop)
{
    struct evmux_pool *pool = loop->pool;
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->mutex);
    pool->exiting = true;
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->mutex);
    for (unsigned i = 0; i < pool->threads_started; i++)
        pthread_join(pool->threads[i], NULL);
    registry_remove(pool);
    evmux__async_close(&pool->done_async);
    pthread_cond_destroy(&pool->work_ready);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->threads);
    free(pool);
    loop->pool = NULL;
}

/* In the child: what ran in the parent never finishes here, so it is
 * cancelled; queued work gets new threads. */
static int pool_after_fork(evmux_loop *loop)
{
    struct evmux_pool *pool = loop->pool;
    if (pool == NULL)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&pool->mutex);
    for (evmux_work *req = pool->running.head; req != NULL; req = req->next) {
        req->stage = STAGE_DONE;
        req->status = -ECANCELED;
    }
    list_append_all(&pool->done, &pool->running);
    if (pool->done.head != NULL)
        evmux_async_send(&pool->done_async);
    for (evmux_work *req = pool->queue.head;
         req != NULL && pool->threads_started < pool->threads_max; req = req->next) {
        rc = start_thread_locked(pool);
        if (rc < 0)
            break;
    }
    pthread_mutex_unlock(&pool->mutex);
    return rc;
}

static const struct evmux__kind work_kind = {
    .number = EVMUX_KIND_WORK,
    .loop_after_fork = pool_after_fork,
    .loop_free = pool_free,
};
