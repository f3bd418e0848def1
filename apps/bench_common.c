/* What both of evmux-bench's loads share (evmux_bench.c: streams,
 * bench_udp.c: datagrams): clocks, phase lengths, CPU time, and the
 * payload pattern. */
#include "bench.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* utime + stime of a process from /proc/PID/stat, or -1. */
double process_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and ')': count fields from the last ')'. */
    const char *p = strrchr(buf, ')');
    unsigned long long utime, stime;
    if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                            &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static uint8_t upper(uint8_t c)
{
    return (c >= 'a' && c <= 'z') ? (uint8_t)(c - 'a' + 'A') : c;
}

/* A fixed pattern, the same on every run: a quarter lowercase letters (the
 * bytes the server must change), a quarter bytes >= 0x80 (which it must
 * not touch, whatever the sign of char), the rest anything but MARK_BYTE,
 * so that only --mark puts markers on the wire. */
void make_pattern(uint8_t *payload, uint8_t *expected, size_t n)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x >> 12; /* xorshift64* */
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t r = (x * 0x2545f4914f6cdd1dull) >> 32;
        uint8_t v = (uint8_t)(r >> 8);
        switch (r & 3) {
        case 0: payload[i] = (uint8_t)('a' + v % 26); break;
        case 1: payload[i] = (uint8_t)(0x80 | v); break;
        default: payload[i] = v != MARK_BYTE ? v : (uint8_t)(MARK_BYTE - 1); break;
        }
        expected[i] = upper(payload[i]);
    }
}

uint64_t phase_ns(double s)
{
    uint64_t ms = (uint64_t)(s * 1000.0 + 0.5);
    return (ms > 0 ? ms : 1) * 1000000u;
}

uint64_t ms_until(uint64_t deadline_ns)
{
    uint64_t now = now_ns();
    return deadline_ns > now ? (deadline_ns - now + 999999u) / 1000000u : 0;
}

void bench_timer_at(evmux_loop *loop, evmux_timer *timer, uint64_t deadline_ns)
{
    uint64_t ms = ms_until(deadline_ns);
    evmux_update_time(loop);
    evmux_timer_start(timer, ms, 0);
}

void bench_vsay(const char *fmt, va_list ap)
{
    flockfile(stderr);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
}
