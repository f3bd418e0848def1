/* Name resolution: evmux_getaddrinfo and evmux_getnameinfo run the C
 * library's resolver on the loop's worker pool and report on the loop's
 * thread.
 *
 * Why the pool: getaddrinfo(3) and getnameinfo(3) block, for as long as
 * DNS servers take to answer or time out (seconds), and nothing
 * interrupts them once started. So each call runs on a pool thread, and a
 * cancel cannot stop one that is running: it can only stop caring.
 *
 * How: each lookup allocates a job: the copies of what the caller passed
 * (the caller's strings may go away when the call returns), the
 * evmux_work the pool runs, and the answer. The request points at its job
 * and the job at the request, its owner. A cancel lets the job go at
 * once: the pool withdraws it if no thread has taken it, else it runs to
 * its end; either way its after callback, finding no owner, frees the
 * answer and the job. The request meanwhile is owed a report of
 * -ECANCELED, which the loop delivers in its next pass of the kinds (the
 * lookup kind's list of reports owed), never inside the cancel. So the
 * caller has its request back at the next iteration, however long the
 * DNS server takes, and nothing leaks.
 *
 * The same list carries the answers of lookups that need no pool thread:
 * an IP literal with a numeric service (getaddrinfo with AI_NUMERICHOST |
 * AI_NUMERICSERV reads no file, asks no NSS module and no DNS server), or
 * a numeric getnameinfo. Those run on the loop's thread inside the call,
 * and are reported from the loop like the rest.
 *
 * A request is IDLE, POOL (its job is with the pool), or REPORT (on the
 * list of reports owed, with its job holding the answer, or with none
 * after a cancel). The loop's thread alone touches the request and the
 * job's owner; the pool's mutex orders the job's answer before its after
 * callback. A report owed counts in loop->work_outstanding, as a job with
 * the pool does, so evmux_loop_free waits for both. */
#include "resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

enum lookup_state {
    LOOKUP_IDLE = 0,
    LOOKUP_POOL,
    LOOKUP_REPORT,
    LOOKUP_PHASE = 3,       /* the bits above */
    LOOKUP_NAME = 1u << 2   /* a getnameinfo request; else getaddrinfo */
};

struct evmux__lookup_job {
    evmux_work work;
    struct evmux__lookup *owner; /* NULL once the caller has let it go */
    bool is_name;
    int code, err; /* what the call returned; errno for EAI_SYSTEM */
    union {
        struct {
            const char *node, *service; /* in strings[], or NULL */
            struct addrinfo hints;
            bool has_hints;
            struct addrinfo *res;
        } addr;
        struct {
            struct sockaddr_storage sa;
            socklen_t len;
            int flags;
            char host[NI_MAXHOST];
            char service[NI_MAXSERV];
        } name;
    } u;
    char strings[];
};

/* The lookups' part of a loop (loop->kind_data), made by the first one. */
struct lookup_loop {
    struct evmux__link owed;    /* requests owed a report, in order */
    struct evmux__link running; /* ...taken by the pass that runs now */
};

static const struct evmux__kind lookup_kind;

int evmux__eai_error(int code, int err)
{
    switch (code) {
    case 0: return 0;
    case EAI_AGAIN: return EVMUX_EAI_AGAIN;
    case EAI_BADFLAGS: return EVMUX_EAI_BADFLAGS;
    case EAI_FAIL: return EVMUX_EAI_FAIL;
    case EAI_FAMILY: return EVMUX_EAI_FAMILY;
    case EAI_MEMORY: return EVMUX_EAI_MEMORY;
    case EAI_NONAME: return EVMUX_EAI_NONAME;
    case EAI_SERVICE: return EVMUX_EAI_SERVICE;
    case EAI_SOCKTYPE: return EVMUX_EAI_SOCKTYPE;
    case EAI_OVERFLOW: return EVMUX_EAI_OVERFLOW;
    case EAI_SYSTEM: return err > 0 ? -err : -EIO;
#if defined(EAI_NODATA) && EAI_NODATA != EAI_NONAME
    case EAI_NODATA: return EVMUX_EAI_NODATA;
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY: return EVMUX_EAI_ADDRFAMILY;
#endif
#ifdef EAI_IDN_ENCODE
    case EAI_IDN_ENCODE: return EVMUX_EAI_IDN_ENCODE;
#endif
#ifdef EAI_INTR
    case EAI_INTR: return -EINTR;
#endif
#ifdef EAI_CANCELED
    case EAI_CANCELED: return -ECANCELED;
#endif
    default: return EVMUX_EAI_FAIL;
    }
}

/* ---- the job: the call itself, on a pool thread or the loop's ---- */

static void run_job(evmux_work *work)
{
    struct evmux__lookup_job *job = (struct evmux__lookup_job *)work;
    if (job->is_name) {
        job->code = getnameinfo((const struct sockaddr *)&job->u.name.sa, job->u.name.len,
                                job->u.name.host, sizeof job->u.name.host, job->u.name.service,
                                sizeof job->u.name.service, job->u.name.flags);
    } else {
        job->code = getaddrinfo(job->u.addr.node, job->u.addr.service,
                                job->u.addr.has_hints ? &job->u.addr.hints : NULL,
                                &job->u.addr.res);
        if (job->code != 0)
            job->u.addr.res = NULL;
    }
    job->err = job->code == EAI_SYSTEM ? errno : 0;
}

static void free_job(struct evmux__lookup_job *job)
{
    if (job != NULL && !job->is_name)
        freeaddrinfo(job->u.addr.res);
    free(job);
}

/* ---- reporting ---- */

static unsigned phase(const struct evmux__lookup *l)
{
    return l->state & LOOKUP_PHASE;
}

/* The request is idle before its callback, which may start it again or
 * free it. The job goes after the callback (getnameinfo's strings live in
 * it); an answer given to the caller is the caller's. */
static void deliver(struct evmux__lookup *l, struct evmux__lookup_job *job, int status)
{
    l->state &= LOOKUP_NAME;
    l->job = NULL;
    if (l->state & LOOKUP_NAME) {
        evmux_getnameinfo_req *req = EVMUX__CONTAINER_OF(l, evmux_getnameinfo_req, lookup);
        bool ok = status == 0 && job != NULL;
        req->cb(req, status, ok ? job->u.name.host : NULL, ok ? job->u.name.service : NULL);
        free(job);
        return;
    }
    evmux_getaddrinfo_req *req = EVMUX__CONTAINER_OF(l, evmux_getaddrinfo_req, lookup);
    struct addrinfo *res = NULL;
    if (job != NULL && status == 0) {
        res = job->u.addr.res;
        job->u.addr.res = NULL;
    }
    free_job(job);
    req->cb(req, status, res);
}

static void owe_report(struct evmux__lookup *l, int status)
{
    struct lookup_loop *ll = l->loop->kind_data[EVMUX_KIND_LOOKUP];
    l->status = status;
    l->state = (l->state & LOOKUP_NAME) | LOOKUP_REPORT;
    evmux__list_push(&ll->owed, &l->report);
    l->loop->deferred_owed++;
    l->loop->work_outstanding++;
}

static void lookups_pass(evmux_loop *loop, enum evmux__pass pass)
{
    struct lookup_loop *ll = loop->kind_data[EVMUX_KIND_LOOKUP];
    /* After the wait only: reports owed keep it from blocking, and
     * evmux_run(EVMUX_RUN_ONCE) then returns with them made, instead of
     * making them before a wait that blocks. At the run's exit they wait
     * for the next run. */
    if (pass != EVMUX__PASS_REPORT || evmux__list_empty(&ll->owed))
        return;
    /* Reports owed by these callbacks wait for the next pass. */
    assert(evmux__list_empty(&ll->running)); /* passes do not nest */
    evmux__list_splice(&ll->running, &ll->owed);
    struct evmux__link *link;
    while ((link = evmux__list_pop(&ll->running)) != NULL) {
        loop->deferred_owed--;
        loop->work_outstanding--;
        struct evmux__lookup *l = EVMUX__CONTAINER_OF(link, struct evmux__lookup, report);
        deliver(l, l->job, l->status);
    }
}

/* The pool's after callback, on the loop's thread. */
static void job_done(evmux_work *work, int status)
{
    struct evmux__lookup_job *job = (struct evmux__lookup_job *)work;
    struct evmux__lookup *l = job->owner;
    if (l == NULL) {
        free_job(job); /* let go by a cancel: nobody wants the answer */
        return;
    }
    /* -ECANCELED: its thread was lost to fork (evmux_loop_fork). */
    deliver(l, job, status < 0 ? status : evmux__eai_error(job->code, job->err));
}

/* ---- starting, cancelling ---- */

static struct lookup_loop *lookup_loop(evmux_loop *loop)
{
    struct lookup_loop *ll = loop->kind_data[EVMUX_KIND_LOOKUP];
    if (ll != NULL)
        return ll;
    ll = calloc(1, sizeof *ll);
    if (ll == NULL)
        return NULL;
    evmux__list_init(&ll->owed);
    evmux__list_init(&ll->running);
    loop->kind_data[EVMUX_KIND_LOOKUP] = ll;
    evmux__loop_register_kind(loop, &lookup_kind);
    return ll;
}

/* Takes job (freed here on an error). on_pool false: nothing to look up,
 * so the call runs now and its answer is owed from the loop. */
static int start(evmux_loop *loop, struct evmux__lookup *l, struct evmux__lookup_job *job,
                 bool is_name, bool on_pool)
{
    l->loop = loop;
    l->job = job;
    l->report.prev = l->report.next = NULL;
    l->status = 0;
    l->state = is_name ? LOOKUP_NAME : 0;
    job->owner = l;
    job->is_name = is_name;
    evmux_work_init(&job->work);
    if (!on_pool) {
        run_job(&job->work);
        owe_report(l, evmux__eai_error(job->code, job->err));
        return 0;
    }
    int rc = evmux_queue_work(loop, &job->work, run_job, job_done);
    if (rc < 0) {
        l->job = NULL;
        free(job);
        return rc;
    }
    l->state |= LOOKUP_POOL;
    return 0;
}

/* The job stays with the pool, which frees it when it is done. */
static void let_go(struct evmux__lookup *l)
{
    l->job->owner = NULL;
    evmux_cancel_work(&l->job->work); /* withdrawn, unless a thread has it */
    l->job = NULL;
}

static int cancel(struct evmux__lookup *l)
{
    switch (phase(l)) {
    case LOOKUP_POOL:
        let_go(l);
        owe_report(l, -ECANCELED);
        return 0;
    case LOOKUP_REPORT:
        if (l->status == -ECANCELED)
            return -EALREADY;
        free_job(l->job);
        l->job = NULL;
        l->status = -ECANCELED;
        return 0;
    default:
        return -EINVAL;
    }
}

void evmux__lookup_abandon(struct evmux__lookup *l)
{
    if (phase(l) == LOOKUP_POOL) {
        let_go(l);
    } else if (phase(l) == LOOKUP_REPORT) {
        evmux__list_remove(&l->report); /* owed, or on the running pass's list */
        l->loop->deferred_owed--;
        l->loop->work_outstanding--;
        free_job(l->job);
        l->job = NULL;
    }
    l->state &= LOOKUP_NAME;
}

static bool is_ip_literal(const char *s)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

static bool is_number(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

int evmux_getaddrinfo(evmux_loop *loop, evmux_getaddrinfo_req *req, evmux_getaddrinfo_cb cb,
                      const char *node, const char *service, const struct addrinfo *hints)
{
    if (loop == NULL || req == NULL || cb == NULL || (node == NULL && service == NULL))
        return -EINVAL;
    if (lookup_loop(loop) == NULL)
        return -ENOMEM;
    size_t node_len = node != NULL ? strlen(node) + 1 : 0;
    size_t service_len = service != NULL ? strlen(service) + 1 : 0;
    if (node_len > SIZE_MAX / 2 || service_len > SIZE_MAX / 2)
        return -ENOMEM;
    struct evmux__lookup_job *job = calloc(1, sizeof *job + node_len + service_len);
    if (job == NULL)
        return -ENOMEM;
    char *p = job->strings;
    if (node != NULL) {
        job->u.addr.node = memcpy(p, node, node_len);
        p += node_len;
    }
    if (service != NULL)
        job->u.addr.service = memcpy(p, service, service_len);
    if (hints != NULL) {
        /* Only these four; POSIX wants the rest zero, and a caller's
         * stack struct may hold anything there. */
        job->u.addr.hints.ai_flags = hints->ai_flags;
        job->u.addr.hints.ai_family = hints->ai_family;
        job->u.addr.hints.ai_socktype = hints->ai_socktype;
        job->u.addr.hints.ai_protocol = hints->ai_protocol;
        job->u.addr.has_hints = true;
    }
    /* Without hints the defaults are the C library's own (glibc's differ
     * from POSIX's), so only given hints take the loop's thread. */
    bool numeric = hints != NULL && !(hints->ai_flags & AI_CANONNAME) &&
                   (node == NULL || is_ip_literal(node)) &&
                   (service == NULL || is_number(service));
    if (numeric)
        job->u.addr.hints.ai_flags |= (node != NULL ? AI_NUMERICHOST : 0) |
                                      (service != NULL ? AI_NUMERICSERV : 0);
    req->cb = cb;
    return start(loop, &req->lookup, job, false, !numeric);
}

int evmux_getaddrinfo_cancel(evmux_getaddrinfo_req *req)
{
    if (req == NULL)
        return -EINVAL;
    return cancel(&req->lookup);
}

void evmux_freeaddrinfo(struct addrinfo *res)
{
    if (res != NULL)
        freeaddrinfo(res);
}

int evmux_getnameinfo(evmux_loop *loop, evmux_getnameinfo_req *req, evmux_getnameinfo_cb cb,
                      const struct sockaddr *addr, socklen_t addr_len, int flags)
{
    if (loop == NULL || req == NULL || cb == NULL || addr == NULL || addr_len == 0 ||
        addr_len > sizeof(struct sockaddr_storage))
        return -EINVAL;
    if (lookup_loop(loop) == NULL)
        return -ENOMEM;
    struct evmux__lookup_job *job = calloc(1, sizeof *job);
    if (job == NULL)
        return -ENOMEM;
    memcpy(&job->u.name.sa, addr, addr_len);
    job->u.name.len = addr_len;
    job->u.name.flags = flags;
    bool numeric = (flags & (NI_NUMERICHOST | NI_NUMERICSERV | NI_NAMEREQD)) ==
                   (NI_NUMERICHOST | NI_NUMERICSERV);
    req->cb = cb;
    return start(loop, &req->lookup, job, true, !numeric);
}

int evmux_getnameinfo_cancel(evmux_getnameinfo_req *req)
{
    if (req == NULL)
        return -EINVAL;
    return cancel(&req->lookup);
}

/* Only reached with nothing owed: evmux_loop_free waits for reports. */
static void lookups_free(evmux_loop *loop)
{
    struct lookup_loop *ll = loop->kind_data[EVMUX_KIND_LOOKUP];
    assert(ll == NULL || (evmux__list_empty(&ll->owed) && evmux__list_empty(&ll->running)));
    free(ll);
    loop->kind_data[EVMUX_KIND_LOOKUP] = NULL;
}

static const struct evmux__kind lookup_kind = {
    .number = EVMUX_KIND_LOOKUP,
    .loop_free = lookups_free,
    .loop_pass = lookups_pass,
};
