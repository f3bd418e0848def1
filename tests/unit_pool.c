/* The worker pool (evmux_queue_work):
 *  - work_cb runs on a pool thread, after_cb on the loop's thread, each
 *    exactly once per request, never inside evmux_queue_work;
 *  - queued requests keep evmux_run going; the loop stays responsive
 *    (timers fire) while work runs;
 *  - pool_threads bounds the threads, and that many really run at once;
 *  - cancel: a queued request completes with -ECANCELED and its work_cb
 *    never runs; a running one is -EBUSY; an idle one -EINVAL;
 *  - evmux_work_init makes a request idle whatever its memory held; it is
 *    idle again when its after_cb runs, which may queue it again or free
 *    it;
 *  - evmux_loop_free refuses while work is outstanding and joins the
 *    threads afterwards;
 *  - fork: in the child, work that was running completes with
 *    -ECANCELED and queued work runs on new threads. */
#include "unit_util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <dirent.h>
#include <stdio.h>
#include <sys/wait.h>

static evmux_loop *new_loop_with_threads(unsigned threads)
{
    evmux_loop *loop = NULL;
    evmux_loop_options opts = {.backend = NULL, .pool_threads = threads};
    CHECK_OK(evmux_loop_new(&loop, &opts));
    return loop;
}

/* Pool threads of this process: tasks named "evmux-pool" (other threads,
 * such as a sanitizer's, do not count). */
static int pool_thread_count(void)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    CHECK(dir != NULL);
    while ((e = readdir(dir)) != NULL) {
        char path[300], name[64] = "";
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue; /* the thread just ended */
        if (fgets(name, sizeof name, f) && strncmp(name, "evmux-pool", 10) == 0)
            n++;
        fclose(f);
    }
    closedir(dir);
    return n;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- basic: threads, exactly once, order of start ---- */

#define BASIC_REQS 200

struct job {
    evmux_work req;
    int index;
    pthread_t ran_on;
    int work_runs;  /* written by the pool thread, read after after_cb */
    int after_runs;
    int status;
};

static pthread_t loop_thread;
static int in_queue_call;
static int afters_total;

static void job_work(evmux_work *req)
{
    struct job *j = req->data;
    j->ran_on = pthread_self();
    j->work_runs++;
}

static void job_after(evmux_work *req, int status)
{
    struct job *j = req->data;
    CHECK(!in_queue_call);
    CHECK(pthread_equal(pthread_self(), loop_thread));
    j->after_runs++;
    j->status = status;
    afters_total++;
}

static void test_basic(void)
{
    evmux_loop *loop = new_loop_with_threads(3);
    static struct job jobs[BASIC_REQS];
    loop_thread = pthread_self();
    afters_total = 0;
    for (int i = 0; i < BASIC_REQS; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].index = i;
        CHECK_OK(evmux_work_init(&jobs[i].req));
        jobs[i].req.data = &jobs[i];
        in_queue_call = 1;
        CHECK_OK(evmux_queue_work(loop, &jobs[i].req, job_work, job_after));
        in_queue_call = 0;
    }
    /* Not done until its after_cb has run, which needs the loop. */
    CHECK_EQ(evmux_queue_work(loop, &jobs[0].req, job_work, job_after), -EINVAL);
    CHECK_EQ(evmux_queue_work(NULL, &jobs[0].req, job_work, job_after), -EINVAL);
    CHECK_EQ(evmux_queue_work(loop, &jobs[0].req, NULL, job_after), -EINVAL);
    CHECK_EQ(evmux_queue_work(loop, &jobs[0].req, job_work, NULL), -EINVAL);
    CHECK_EQ(evmux_loop_alive(loop), 1);
    CHECK_EQ(evmux_loop_free(loop), -EBUSY);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT)); /* returns once all are done */
    CHECK_EQ(afters_total, BASIC_REQS);
    for (int i = 0; i < BASIC_REQS; i++) {
        CHECK_EQ(jobs[i].work_runs, 1);
        CHECK_EQ(jobs[i].after_runs, 1);
        CHECK_EQ(jobs[i].status, 0);
        CHECK(!pthread_equal(jobs[i].ran_on, loop_thread));
    }
    CHECK(pool_thread_count() >= 1);
    CHECK(pool_thread_count() <= 3);
    unit_loop_finish(loop);
    CHECK_EQ(pool_thread_count(), 0); /* freeing the loop joined the pool */
}

/* ---- concurrency up to the limit, never beyond ---- */

static atomic_int running_now, running_max;

static void overlap_work(evmux_work *req)
{
    (void)req;
    int now = atomic_fetch_add(&running_now, 1) + 1;
    int max = atomic_load(&running_max);
    while (now > max && !atomic_compare_exchange_weak(&running_max, &max, now))
        ;
    /* Wait (bounded) for the others, so that overlap does not depend on
     * how quickly the threads happen to be scheduled. */
    for (int i = 0; i < 2000 && atomic_load(&running_max) < 3; i++)
        sleep_ms(1);
    sleep_ms(2);
    atomic_fetch_sub(&running_now, 1);
}

static void count_after(evmux_work *req, int status)
{
    (void)req;
    CHECK_EQ(status, 0);
    afters_total++;
}

static void nothing_work(evmux_work *req)
{
    (void)req;
}

/* The pool grows to its limit for a burst even when a thread sits idle
 * from earlier work (it counts as idle until it wakes), and not beyond. */
static void test_thread_limit(void)
{
    evmux_loop *loop = new_loop_with_threads(3);
    static evmux_work reqs[12];
    evmux_work first;
    afters_total = 0;
    CHECK_OK(evmux_work_init(&first));
    CHECK_OK(evmux_queue_work(loop, &first, nothing_work, count_after));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(afters_total, 1);
    CHECK_EQ(pool_thread_count(), 1);
    atomic_store(&running_now, 0);
    atomic_store(&running_max, 0);
    afters_total = 0;
    for (int i = 0; i < 12; i++) {
        CHECK_OK(evmux_work_init(&reqs[i]));
        CHECK_OK(evmux_queue_work(loop, &reqs[i], overlap_work, count_after));
    }
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(afters_total, 12);
    CHECK_EQ(atomic_load(&running_max), 3);
    unit_loop_finish(loop);
}

/* ---- start order ---- */

static int started_order[64];
static atomic_int started_count;

static void ordered_work(evmux_work *req)
{
    started_order[atomic_fetch_add(&started_count, 1)] = *(int *)req->data;
}

static void test_start_order(void)
{
    evmux_loop *loop = new_loop_with_threads(1);
    static evmux_work reqs[64];
    static int index[64];
    atomic_store(&started_count, 0);
    afters_total = 0;
    for (int i = 0; i < 64; i++) {
        index[i] = i;
        CHECK_OK(evmux_work_init(&reqs[i]));
        reqs[i].data = &index[i];
        CHECK_OK(evmux_queue_work(loop, &reqs[i], ordered_work, count_after));
    }
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(afters_total, 64);
    for (int i = 0; i < 64; i++)
        CHECK_EQ(started_order[i], i);
    unit_loop_finish(loop);
}

/* ---- evmux_work_init; misuse is refused ---- */

static void free_after(evmux_work *req, int status)
{
    CHECK_EQ(status, 0);
    CHECK_EQ(evmux_cancel_work(req), -EINVAL); /* idle: evmux is done with it */
    afters_total++;
    free(req);
}

static void test_init_and_misuse(void)
{
    evmux_loop *loop = new_loop_with_threads(1), *other = new_loop_with_threads(1);
    evmux_work req;
    afters_total = 0;
    CHECK_EQ(evmux_work_init(NULL), -EINVAL);
    memset(&req, 0xbe, sizeof req);
    req.data = &afters_total;
    CHECK_OK(evmux_work_init(&req));
    CHECK(req.data == &afters_total); /* the caller's field is left alone */
    CHECK_EQ(evmux_cancel_work(&req), -EINVAL); /* never queued */
    CHECK_OK(evmux_queue_work(loop, &req, nothing_work, count_after));
    CHECK_EQ(evmux_queue_work(loop, &req, nothing_work, count_after), -EINVAL);
    CHECK_EQ(evmux_queue_work(other, &req, nothing_work, count_after), -EINVAL);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(afters_total, 1);
    CHECK_EQ(evmux_cancel_work(&req), -EINVAL); /* completed */

    /* Memory that still says "queued" (stale bytes of a request that
     * lived here): refused until evmux_work_init makes it a fresh one. */
    req.state = 1;
    CHECK_EQ(evmux_queue_work(loop, &req, nothing_work, count_after), -EINVAL);
    CHECK_OK(evmux_work_init(&req));
    CHECK_OK(evmux_queue_work(loop, &req, nothing_work, count_after));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(afters_total, 2);

    /* Done on one loop, it may go to another, even after the first is freed. */
    unit_loop_finish(loop);
    CHECK_OK(evmux_queue_work(other, &req, nothing_work, count_after));
    CHECK_OK(evmux_run(other, EVMUX_RUN_DEFAULT));
    CHECK_EQ(afters_total, 3);

    /* after_cb may free the request (ASan and Valgrind watch this). */
    evmux_work *heap = malloc(sizeof *heap);
    CHECK(heap != NULL);
    CHECK_OK(evmux_work_init(heap));
    CHECK_OK(evmux_queue_work(other, heap, nothing_work, free_after));
    CHECK_OK(evmux_run(other, EVMUX_RUN_DEFAULT));
    CHECK_EQ(afters_total, 4);
    unit_loop_finish(other);

    evmux_loop_options opts = {.pool_threads = 1025};
    evmux_loop *refused = NULL;
    CHECK_EQ(evmux_loop_new(&refused, &opts), -EINVAL);
}

/* ---- cancel ---- */

static atomic_int release_blocker;
static atomic_int blocker_started;
static int cancelled_work_ran;
static int blocker_status = 1, cancelled_status = 1;

static void blocker_work(evmux_work *req)
{
    (void)req;
    atomic_store(&blocker_started, 1);
    while (!atomic_load(&release_blocker))
        sleep_ms(1);
}

static void blocker_after(evmux_work *req, int status)
{
    (void)req;
    blocker_status = status;
}

static void cancelled_work(evmux_work *req)
{
    (void)req;
    cancelled_work_ran++;
}

static void cancelled_after(evmux_work *req, int status)
{
    (void)req;
    CHECK(!in_queue_call);
    cancelled_status = status;
}

static void test_cancel(void)
{
    evmux_loop *loop = new_loop_with_threads(1);
    evmux_work blocker, queued;
    atomic_store(&release_blocker, 0);
    atomic_store(&blocker_started, 0);
    cancelled_work_ran = 0;
    blocker_status = cancelled_status = 1;
    CHECK_OK(evmux_work_init(&blocker));
    CHECK_OK(evmux_work_init(&queued));
    CHECK_EQ(evmux_cancel_work(&queued), -EINVAL); /* idle */
    CHECK_OK(evmux_queue_work(loop, &blocker, blocker_work, blocker_after));
    CHECK_OK(evmux_queue_work(loop, &queued, cancelled_work, cancelled_after));
    while (!atomic_load(&blocker_started))
        sleep_ms(1);
    CHECK_EQ(evmux_cancel_work(&blocker), -EBUSY); /* running */
    in_queue_call = 1;
    CHECK_OK(evmux_cancel_work(&queued));
    in_queue_call = 0;
    CHECK_EQ(evmux_cancel_work(&queued), -EBUSY); /* already done, after_cb pending */
    CHECK_EQ(cancelled_status, 1);                /* not inside the call */
    CHECK_OK(evmux_run(loop, EVMUX_RUN_ONCE));
    CHECK_EQ(cancelled_status, -ECANCELED);
    atomic_store(&release_blocker, 1);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(blocker_status, 0);
    CHECK_EQ(cancelled_work_ran, 0);
    CHECK_EQ(evmux_cancel_work(&queued), -EINVAL); /* completed: not queued */
    unit_loop_finish(loop);
}

/* ---- the loop stays responsive; requeue from after_cb ---- */

static int ticks_before_done;
static int slow_done;

static void slow_work(evmux_work *req)
{
    (void)req;
    sleep_ms(150);
}

static void slow_after(evmux_work *req, int status)
{
    (void)req;
    CHECK_EQ(status, 0);
    slow_done = 1;
}

static void tick_cb(evmux_timer *t)
{
    if (!slow_done)
        ticks_before_done++;
    else
        CHECK_OK(evmux_close(&t->handle, NULL));
}

static void test_loop_stays_responsive(void)
{
    evmux_loop *loop = new_loop_with_threads(0);
    evmux_work slow;
    evmux_timer tick;
    ticks_before_done = slow_done = 0;
    CHECK_OK(evmux_timer_init(loop, &tick, tick_cb));
    CHECK_OK(evmux_timer_start(&tick, 5, 5));
    CHECK_OK(evmux_work_init(&slow));
    CHECK_OK(evmux_queue_work(loop, &slow, slow_work, slow_after));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(slow_done, 1);
    /* 150 ms of work, a 5 ms timer: had the work blocked the loop, no tick
     * would have come before it finished. */
    CHECK(ticks_before_done >= 2);
    unit_loop_finish(loop);
}

static evmux_loop *chain_loop;
static int chain_left;
static int chain_works;

static void chain_work(evmux_work *req)
{
    (void)req;
    chain_works++; /* one request at a time, handed over through the pool */
}

static void chain_after(evmux_work *req, int status)
{
    CHECK_EQ(status, 0);
    CHECK_EQ(evmux_cancel_work(req), -EINVAL); /* idle again already */
    if (--chain_left > 0)
        CHECK_OK(evmux_queue_work(chain_loop, req, chain_work, chain_after));
}

static void test_requeue_from_after(void)
{
    evmux_loop *loop = new_loop_with_threads(2);
    evmux_work req;
    chain_loop = loop;
    chain_left = 50;
    chain_works = 0;
    CHECK_OK(evmux_work_init(&req));
    CHECK_OK(evmux_queue_work(loop, &req, chain_work, chain_after));
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(chain_left, 0);
    CHECK_EQ(chain_works, 50);
    unit_loop_finish(loop);
}

/* ---- fork ---- */

static int fork_blocker_status = 1, fork_queued_status = 1;
static atomic_int fork_queued_ran;

static void fork_blocker_after(evmux_work *req, int status)
{
    (void)req;
    fork_blocker_status = status;
}

static void fork_queued_work(evmux_work *req)
{
    (void)req;
    atomic_fetch_add(&fork_queued_ran, 1);
}

static void fork_queued_after(evmux_work *req, int status)
{
    (void)req;
    fork_queued_status = status;
}

/* ThreadSanitizer cannot follow a child that starts threads after a
 * threaded fork (it reuses the dead threads' ids and aborts), so this test
 * runs in the plain and AddressSanitizer builds only. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* One thread, busy in the parent; a second request waits behind it. */
static void test_fork(void)
{
#ifdef UNDER_TSAN
    UNIT_SKIP("not under ThreadSanitizer: threads after fork");
#endif
    evmux_loop *loop = new_loop_with_threads(1);
    evmux_work blocker, queued;
    atomic_store(&release_blocker, 0);
    atomic_store(&blocker_started, 0);
    atomic_store(&fork_queued_ran, 0);
    CHECK_OK(evmux_work_init(&blocker));
    CHECK_OK(evmux_work_init(&queued));
    CHECK_OK(evmux_queue_work(loop, &blocker, blocker_work, fork_blocker_after));
    CHECK_OK(evmux_queue_work(loop, &queued, fork_queued_work, fork_queued_after));
    while (!atomic_load(&blocker_started))
        sleep_ms(1);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        CHECK_OK(evmux_loop_fork(loop));
        CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
        CHECK_EQ(fork_blocker_status, -ECANCELED); /* its thread stayed behind */
        CHECK_EQ(fork_queued_status, 0);
        CHECK_EQ(atomic_load(&fork_queued_ran), 1);
        CHECK_OK(evmux_loop_free(loop));
        _exit(0);
    }
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    atomic_store(&release_blocker, 1);
    CHECK_OK(evmux_run(loop, EVMUX_RUN_DEFAULT));
    CHECK_EQ(fork_blocker_status, 0);
    CHECK_EQ(fork_queued_status, 0);
    CHECK_EQ(atomic_load(&fork_queued_ran), 1);
    unit_loop_finish(loop);
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    unit_watchdog(60);
    RUN_TEST(test_basic);
    RUN_TEST(test_thread_limit);
    RUN_TEST(test_start_order);
    RUN_TEST(test_init_and_misuse);
    RUN_TEST(test_cancel);
    RUN_TEST(test_loop_stays_responsive);
    RUN_TEST(test_requeue_from_after);
    RUN_TEST(test_fork);
    return unit_end();
}
