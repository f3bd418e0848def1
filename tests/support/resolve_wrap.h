/* The C library's resolver, seen by the tests: the test executables that
 * include this (once) link with -Wl,--wrap=getaddrinfo,--wrap=getnameinfo,
 * --wrap=freeaddrinfo (tests/CMakeLists.txt), so every call the library
 * makes comes here first. By default a call goes straight through; the
 * wrappers count the calls and the answers not yet freed, note the thread
 * that made each call, and know a few test names:
 *
 *   held.test    waits at the gate until the test opens it, then answers
 *                as 127.0.0.1 (a lookup running on a pool thread for as
 *                long as the test likes: getaddrinfo cannot be cut short);
 *   slow.test    answers as 127.0.0.1 after RESOLVE_SLOW_MS;
 *   two.test     127.0.0.2, then 127.0.0.1 (two lists of the C library
 *                chained: glibc frees an answer entry by entry);
 *   mixed.test   127.0.0.1, then RESOLVE_UNUSABLE (a multicast address,
 *                which TCP's connect refuses at once with ENETUNREACH);
 *   v6only.test  ::1, as the C library answers it under the hints given
 *                (with AI_ADDRCONFIG, on a host with an IPv4 address
 *                besides 127.0.0.1 and no IPv6 one besides ::1: nothing).
 *
 * getnameinfo of port RESOLVE_HELD_PORT waits at the same gate. */
#ifndef EVMUX_TEST_RESOLVE_WRAP_H
#define EVMUX_TEST_RESOLVE_WRAP_H

#include "check.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define RESOLVE_SLOW_MS 1000
#define RESOLVE_HELD_PORT 9
#define RESOLVE_UNUSABLE "224.0.0.1"

int __real_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res);
void __real_freeaddrinfo(struct addrinfo *res);
int __real_getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                       char *serv, socklen_t servlen, int flags);

static atomic_int resolve_gai_calls;      /* getaddrinfo calls made */
static atomic_int resolve_gni_calls;      /* getnameinfo calls made */
static atomic_int resolve_answers_live;   /* getaddrinfo answers not yet freed */
static atomic_int resolve_held;           /* calls waiting at the gate now */
static atomic_int resolve_held_total;     /* calls that ever waited there */
static _Atomic(pthread_t) resolve_last_thread;

static pthread_mutex_t resolve_gate_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t resolve_gate_cond = PTHREAD_COND_INITIALIZER;
static int resolve_gate_open = 1;

static inline void resolve_gate_close(void)
{
    pthread_mutex_lock(&resolve_gate_mutex);
    resolve_gate_open = 0;
    pthread_mutex_unlock(&resolve_gate_mutex);
}

static inline void resolve_gate_release(void)
{
    pthread_mutex_lock(&resolve_gate_mutex);
    resolve_gate_open = 1;
    pthread_cond_broadcast(&resolve_gate_cond);
    pthread_mutex_unlock(&resolve_gate_mutex);
}

static inline void resolve_gate_pass(void)
{
    atomic_fetch_add(&resolve_held, 1);
    atomic_fetch_add(&resolve_held_total, 1);
    pthread_mutex_lock(&resolve_gate_mutex);
    while (!resolve_gate_open)
        pthread_cond_wait(&resolve_gate_cond, &resolve_gate_mutex);
    pthread_mutex_unlock(&resolve_gate_mutex);
    atomic_fetch_sub(&resolve_held, 1);
}

/* Waits (on the test's thread) until n calls wait at the gate. */
static inline void resolve_wait_held(int n)
{
    for (int i = 0; i < 10000 && atomic_load(&resolve_held) < n; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    CHECK(atomic_load(&resolve_held) >= n);
}

static inline int resolve_chain(const char *first, const char *second, const char *service,
                                const struct addrinfo *hints, struct addrinfo **res)
{
    struct addrinfo *a, *b;
    int rc = __real_getaddrinfo(first, service, hints, &a);
    if (rc != 0)
        return rc;
    rc = __real_getaddrinfo(second, service, hints, &b);
    if (rc != 0) {
        __real_freeaddrinfo(a);
        return rc;
    }
    struct addrinfo *tail = a;
    while (tail->ai_next != NULL)
        tail = tail->ai_next;
    tail->ai_next = b;
    *res = a;
    return 0;
}

int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res)
{
    atomic_fetch_add(&resolve_gai_calls, 1);
    atomic_store(&resolve_last_thread, pthread_self());
    int rc;
    if (node != NULL && strcmp(node, "held.test") == 0) {
        resolve_gate_pass();
        node = "127.0.0.1";
    } else if (node != NULL && strcmp(node, "slow.test") == 0) {
        struct timespec ts = {RESOLVE_SLOW_MS / 1000, (RESOLVE_SLOW_MS % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0)
            ;
        node = "127.0.0.1";
    } else if (node != NULL && strcmp(node, "v6only.test") == 0) {
        node = "::1";
    }
    if (node != NULL && strcmp(node, "two.test") == 0)
        rc = resolve_chain("127.0.0.2", "127.0.0.1", service, hints, res);
    else if (node != NULL && strcmp(node, "mixed.test") == 0)
        rc = resolve_chain("127.0.0.1", RESOLVE_UNUSABLE, service, hints, res);
    else
        rc = __real_getaddrinfo(node, service, hints, res);
    if (rc == 0)
        atomic_fetch_add(&resolve_answers_live, 1);
    return rc;
}

void __wrap_freeaddrinfo(struct addrinfo *res);
void __wrap_freeaddrinfo(struct addrinfo *res)
{
    if (res != NULL)
        atomic_fetch_sub(&resolve_answers_live, 1);
    __real_freeaddrinfo(res);
}

int __wrap_getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                       char *serv, socklen_t servlen, int flags);
int __wrap_getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                       char *serv, socklen_t servlen, int flags)
{
    atomic_fetch_add(&resolve_gni_calls, 1);
    atomic_store(&resolve_last_thread, pthread_self());
    if (sa->sa_family == AF_INET &&
        ((const struct sockaddr_in *)sa)->sin_port == htons(RESOLVE_HELD_PORT))
        resolve_gate_pass();
    return __real_getnameinfo(sa, salen, host, hostlen, serv, servlen, flags);
}

#endif
