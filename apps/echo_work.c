/* evmux-echo-server: the heavy handler of the original text's third
 * claim (a heavy handler on the loop's thread stalls every client).
 *
 * With --work-us U, each 0x7F byte received costs U microseconds of CPU
 * before its reply. By default that work runs on the loop's thread; with
 * --workers N it runs on the loop's worker pool, while the connection
 * stops reading (so replies stay in order) and every other client goes on
 * being served. */
#include "echo_server.h"

#include <string.h>
#include <time.h>

/* Where burn_cpu's result goes, so the compiler must compute it. */
static _Thread_local volatile unsigned burn_sink;

static unsigned long long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

void burn_cpu(unsigned long long us, atomic_bool *give_up)
{
    if (us == 0)
        return; /* reading the thread's CPU clock is a system call */
    unsigned long long now = thread_cpu_ns(), end = now + us * 1000ull;
    unsigned h = 2166136261u;
    while (now < end && !atomic_load_explicit(give_up, memory_order_relaxed)) {
        for (unsigned i = 0; i < 1024; i++)
            h = (h ^ i) * 16777619u;
        now = thread_cpu_ns(); /* a system call: not after every byte */
    }
    burn_sink = h;
}

size_t count_marks(const char *p, size_t n)
{
    size_t k = 0;
    for (const char *end = p + n; (p = memchr(p, HEAVY_MARK, (size_t)(end - p))) != NULL; p++)
        k++;
    return k;
}
