/* Signals as loop callbacks.
 *
 * A signal arrives on whatever thread the kernel picks, at any instruction,
 * so the handler may only touch atomics and write a descriptor. It counts
 * the arrival (one counter per signal, for the whole process) and wakes
 * every loop whose mask holds the signal; each loop then compares the
 * counts with the ones it has seen, on its own thread, and calls its
 * handles. Several arrivals between two looks make one call, as with
 * libev: a signal is an event, not a queue.
 *
 * The handler finds the loops in a fixed table of atomic pointers. A loop
 * leaves the table only after no handler is running, so a handler never
 * wakes a freed loop. Installing and restoring dispositions, and the
 * table's free slots, are guarded by a mutex the handler never takes. */
#include "evmux_internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>

static const struct evmux__kind signal_kind;

#define SIGNAL_LOOPS_MAX 64

static atomic_uint arrivals[EVMUX__SIGNAL_LIMIT];
static _Atomic(evmux_loop *) watching_loops[SIGNAL_LOOPS_MAX];
static atomic_int handlers_running;

static pthread_mutex_t signal_mutex = PTHREAD_MUTEX_INITIALIZER;
static unsigned handles_per_signal[EVMUX__SIGNAL_LIMIT]; /* started, in every loop */
static struct sigaction previous_action[EVMUX__SIGNAL_LIMIT];

/* fork() copies the mutex in whatever state another thread left it, and
 * the count of a handler running on a thread the child lacks: take the
 * mutex around fork(), and let the child start from no handler running. */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void before_fork(void)
{
    pthread_mutex_lock(&signal_mutex);
}

static void after_fork_parent(void)
{
    pthread_mutex_unlock(&signal_mutex);
}

static void after_fork_child(void)
{
    atomic_store(&handlers_running, 0);
    pthread_mutex_unlock(&signal_mutex);
}

static void register_atfork(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

static unsigned long long signal_bit(int signum)
{
    return 1ull << (signum - 1);
}

static void on_signal(int signum)
{
    atomic_fetch_add(&handlers_running, 1);
    atomic_fetch_add(&arrivals[signum], 1);
    for (int i = 0; i < SIGNAL_LOOPS_MAX; i++) {
        evmux_loop *loop = atomic_load(&watching_loops[i]);
        if (loop != NULL && (atomic_load(&loop->signal_mask) & signal_bit(signum)))
            evmux__loop_wake(loop); /* an exchange and a write: both safe here */
    }
    atomic_fetch_sub(&handlers_running, 1);
}

static bool catchable(int signum)
{
    return signum >= 1 && signum < EVMUX__SIGNAL_LIMIT && signum < NSIG && signum != SIGKILL &&
           signum != SIGSTOP;
}

/* With signal_mutex held. */
static int take_slot(evmux_loop *loop)
{
    if (loop->signal_slot >= 0)
        return 0;
    for (int i = 0; i < SIGNAL_LOOPS_MAX; i++)
        if (atomic_load(&watching_loops[i]) == NULL) {
            atomic_store(&watching_loops[i], loop);
            loop->signal_slot = i;
            return 0;
        }
    return -ENOSPC;
}

/* With signal_mutex held; once no handle of the loop is left. */
static void release_slot(evmux_loop *loop)
{
    if (loop->signal_slot < 0)
        return;
    atomic_store(&watching_loops[loop->signal_slot], NULL);
    loop->signal_slot = -1;
    /* A handler that read the pointer before the store may still use it. */
    while (atomic_load(&handlers_running) > 0)
        sched_yield();
}

/* With signal_mutex held. */
static int install_handler(int signum)
{
    if (handles_per_signal[signum]++ > 0)
        return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigfillset(&sa.sa_mask); /* one handler at a time per thread */
    sa.sa_flags = SA_RESTART;
    if (sigaction(signum, &sa, &previous_action[signum]) < 0) {
        handles_per_signal[signum]--;
        return -errno;
    }
    return 0;
}

/* With signal_mutex held. */
static void remove_handler(int signum)
{
    if (--handles_per_signal[signum] == 0)
        sigaction(signum, &previous_action[signum], NULL);
}

static bool loop_watches(const evmux_loop *loop, int signum)
{
    for (const evmux_signal *s = loop->signals; s != NULL; s = s->next)
        if (s->signum == signum)
            return true;
    return false;
}

int evmux_signal_init(evmux_loop *loop, evmux_signal *sig)
{
    if (loop == NULL || sig == NULL)
        return -EINVAL;
    evmux__handle_init(loop, &sig->handle, &signal_kind);
    sig->cb = NULL;
    sig->signum = 0;
    sig->prev = sig->next = NULL;
    return 0;
}

int evmux_signal_start(evmux_signal *sig, evmux_signal_cb cb, int signum)
{
    if (sig == NULL || cb == NULL || !catchable(signum) || evmux_is_closing(&sig->handle))
        return -EINVAL;
    if (sig->handle.flags & EVMUX_FLAG_ACTIVE) {
        if (sig->signum == signum) {
            sig->cb = cb;
            return 0;
        }
        evmux_signal_stop(sig);
    }
    evmux_loop *loop = sig->handle.loop;
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&signal_mutex);
    int rc = take_slot(loop);
    if (rc == 0)
        rc = install_handler(signum);
    if (rc < 0 && loop->signals == NULL)
        release_slot(loop);
    pthread_mutex_unlock(&signal_mutex);
    if (rc < 0)
        return rc;

    if (!loop_watches(loop, signum)) {
        /* The bit first: an arrival after it wakes us; one before the
         * count is read belongs to the time before the start. */
        atomic_fetch_or(&loop->signal_mask, signal_bit(signum));
        loop->signal_seen[signum] = atomic_load(&arrivals[signum]);
    }
    sig->cb = cb;
    sig->signum = signum;
    sig->prev = NULL;
    sig->next = loop->signals;
    if (loop->signals != NULL)
        loop->signals->prev = sig;
    loop->signals = sig;
    evmux__handle_activate(&sig->handle);
    return 0;
}

int evmux_signal_stop(evmux_signal *sig)
{
    if (sig == NULL)
        return -EINVAL;
    if (!(sig->handle.flags & EVMUX_FLAG_ACTIVE))
        return 0;
    evmux_loop *loop = sig->handle.loop;
    if (loop->signal_next == sig)
        loop->signal_next = sig->next;
    if (sig->prev != NULL)
        sig->prev->next = sig->next;
    else
        loop->signals = sig->next;
    if (sig->next != NULL)
        sig->next->prev = sig->prev;
    sig->prev = sig->next = NULL;
    evmux__handle_deactivate(&sig->handle);
    if (!loop_watches(loop, sig->signum))
        atomic_fetch_and(&loop->signal_mask, ~signal_bit(sig->signum));

    pthread_mutex_lock(&signal_mutex);
    remove_handler(sig->signum);
    if (loop->signals == NULL)
        release_slot(loop);
    pthread_mutex_unlock(&signal_mutex);
    return 0;
}

void evmux__signals_dispatch(evmux_loop *loop)
{
    unsigned long long mask = atomic_load(&loop->signal_mask), fired = 0;
    for (int signum = 1; mask != 0 && signum < EVMUX__SIGNAL_LIMIT; signum++) {
        if (!(mask & signal_bit(signum)))
            continue;
        mask &= ~signal_bit(signum);
        unsigned now = atomic_load(&arrivals[signum]);
        if (now != loop->signal_seen[signum]) {
            loop->signal_seen[signum] = now;
            fired |= signal_bit(signum);
        }
    }
    if (fired == 0)
        return;
    /* A callback may stop or close any handle: stopping moves signal_next. */
    for (evmux_signal *s = loop->signals; s != NULL; s = loop->signal_next) {
        loop->signal_next = s->next;
        if (fired & signal_bit(s->signum)) {
            loop->wake_calls++;
            s->cb(s, s->signum);
        }
    }
    loop->signal_next = NULL;
}

static void signal_close_begin(evmux_handle *h)
{
    evmux_signal_stop((evmux_signal *)h);
}

static const struct evmux__kind signal_kind = {
    .number = EVMUX_HANDLE_SIGNAL,
    .close_begin = signal_close_begin,
};
