/* Printing the results of evmux-bench: a readable summary, or one CSV
 * header plus one line, or one JSON object. The three carry the same
 * fields; a value that was not measured (no --server-pid, no message) is
 * "n/a" in text, empty in CSV and null in JSON. With --threads N > 1, each
 * adds the number of threads and each one's message count (text: a line;
 * CSV: "threads" and "thread_msgs", the counts joined by ';'; JSON:
 * "threads" and the array "thread_msgs"); with one thread, the output is
 * what it was before --threads existed. */
#include "bench.h"

#include <stdbool.h>
#include <stdio.h>

/* Each thread's message count, joined by `sep`. */
static void print_thread_msgs(const struct bench_options *opt, const struct bench_results *r,
                              const char *sep)
{
    for (unsigned i = 0; i < opt->threads; i++)
        printf("%s%llu", i > 0 ? sep : "", (unsigned long long)r->thread_msgs[i]);
}

/* Figures derived once, shared by the three formats. */
struct figures {
    double msgs_per_s, mb_per_s;
    double p50_us, p99_us, p999_us, min_us, mean_us, max_us;
    double server_ns_per_msg, client_ns_per_msg;
    bool have_latency, have_server, have_per_msg;
};

static struct figures compute(const struct bench_options *opt, const struct bench_results *r)
{
    struct figures f = {0};
    double secs = r->duration_s > 0 ? r->duration_s : 0;
    if (secs > 0) {
        f.msgs_per_s = (double)r->messages / secs;
        f.mb_per_s = (double)r->messages * (double)opt->size / secs / 1e6;
    }
    f.have_latency = r->hist.count > 0;
    if (f.have_latency) {
        f.p50_us = (double)hist_quantile(&r->hist, 0.50) / 1e3;
        f.p99_us = (double)hist_quantile(&r->hist, 0.99) / 1e3;
        f.p999_us = (double)hist_quantile(&r->hist, 0.999) / 1e3;
        f.min_us = (double)r->hist.min_ns / 1e3;
        f.max_us = (double)r->hist.max_ns / 1e3;
        f.mean_us = (double)r->hist.sum_ns / (double)r->hist.count / 1e3;
    }
    f.have_server = r->server_cpu_s >= 0;
    f.have_per_msg = r->messages > 0;
    if (f.have_per_msg) {
        f.client_ns_per_msg = r->client_cpu_s * 1e9 / (double)r->messages;
        if (f.have_server)
            f.server_ns_per_msg = r->server_cpu_s * 1e9 / (double)r->messages;
    }
    return f;
}

static void print_text(const struct bench_options *opt, const struct bench_results *r,
                       const struct figures *f)
{
    printf("evmux-bench: %s, backend %s\n", r->target, r->backend);
    printf("  load        %zu connections (+%zu idle), %zu-byte messages, depth %zu%s\n",
           opt->conns, opt->idle, opt->size, opt->depth, opt->mark ? ", marked (0x7F)" : "");
    printf("  connected   %zu + %zu idle in %.3f s, %llu connect failures\n", r->active_ok,
           r->idle_ok, r->connect_s, (unsigned long long)r->connect_failures);
    printf("  measured    %.3f s after %.3g s warmup\n", r->duration_s, opt->warmup_s);
    printf("  messages    %llu  (%.0f msg/s, %.3f MB/s echoed)\n",
           (unsigned long long)r->messages, f->msgs_per_s, f->mb_per_s);
    if (opt->threads > 1) {
        printf("  threads     %u loops, messages per thread: ", opt->threads);
        print_thread_msgs(opt, r, " ");
        putchar('\n');
    }
    if (f->have_latency)
        printf("  latency us  p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (min %.1f, mean %.1f)\n",
               f->p50_us, f->p99_us, f->p999_us, f->max_us, f->min_us, f->mean_us);
    else
        printf("  latency us  n/a (no message completed in the window)\n");
    if (opt->udp)
        printf("  datagrams   %llu sent in the window, %llu lost (%.2f%%)\n",
               (unsigned long long)r->sent, (unsigned long long)r->lost,
               r->sent > 0 ? 100.0 * (double)r->lost / (double)r->sent : 0.0);
    printf("  checked     %llu reply bytes, %llu mismatches, %llu errors\n",
           (unsigned long long)r->bytes_checked, (unsigned long long)r->mismatches,
           (unsigned long long)r->errors);
    if (f->have_server && f->have_per_msg)
        printf("  server cpu  %.3f s  (%.0f ns/msg)\n", r->server_cpu_s, f->server_ns_per_msg);
    else if (f->have_server)
        printf("  server cpu  %.3f s\n", r->server_cpu_s);
    else
        printf("  server cpu  n/a (give --server-pid)\n");
    if (f->have_per_msg)
        printf("  client cpu  %.3f s  (%.0f ns/msg)\n", r->client_cpu_s, f->client_ns_per_msg);
    else
        printf("  client cpu  %.3f s\n", r->client_cpu_s);
}

/* One optional number: "%.*f" or nothing / null. */
static void opt_number(bool have, double v, int decimals, const char *missing)
{
    if (have)
        printf("%.*f", decimals, v);
    else
        fputs(missing, stdout);
}

static const char csv_header[] = /* then, with --threads > 1: threads,thread_msgs */
    "conns,idle,size,depth,duration_s,messages,msgs_per_s,mb_per_s,p50_us,p99_us,p999_us,"
    "max_us,connect_failures,errors,mismatches,server_cpu_s,server_ns_per_msg,client_cpu_s,"
    "client_ns_per_msg,min_us,mean_us,bytes_checked,connect_s,warmup_s,backend,mark,udp,sent,"
    "lost";

static void print_csv(const struct bench_options *opt, const struct bench_results *r,
                      const struct figures *f)
{
    fputs(csv_header, stdout);
    fputs(opt->threads > 1 ? ",threads,thread_msgs\n" : "\n", stdout);
    printf("%zu,%zu,%zu,%zu,%.3f,%llu,%.1f,%.3f,", opt->conns, opt->idle, opt->size, opt->depth,
           r->duration_s, (unsigned long long)r->messages, f->msgs_per_s, f->mb_per_s);
    opt_number(f->have_latency, f->p50_us, 1, "");
    putchar(',');
    opt_number(f->have_latency, f->p99_us, 1, "");
    putchar(',');
    opt_number(f->have_latency, f->p999_us, 1, "");
    putchar(',');
    opt_number(f->have_latency, f->max_us, 1, "");
    printf(",%llu,%llu,%llu,", (unsigned long long)r->connect_failures,
           (unsigned long long)r->errors, (unsigned long long)r->mismatches);
    opt_number(f->have_server, r->server_cpu_s, 3, "");
    putchar(',');
    opt_number(f->have_server && f->have_per_msg, f->server_ns_per_msg, 0, "");
    printf(",%.3f,", r->client_cpu_s);
    opt_number(f->have_per_msg, f->client_ns_per_msg, 0, "");
    putchar(',');
    opt_number(f->have_latency, f->min_us, 1, "");
    putchar(',');
    opt_number(f->have_latency, f->mean_us, 1, "");
    printf(",%llu,%.3f,%.3f,%s,%d,%d,%llu,%llu", (unsigned long long)r->bytes_checked,
           r->connect_s, opt->warmup_s, r->backend, opt->mark ? 1 : 0, opt->udp ? 1 : 0,
           (unsigned long long)r->sent, (unsigned long long)r->lost);
    if (opt->threads > 1) {
        printf(",%u,", opt->threads);
        print_thread_msgs(opt, r, ";");
    }
    putchar('\n');
}

static void json_field(const char *name, bool have, double v, int decimals)
{
    printf(",\"%s\":", name);
    opt_number(have, v, decimals, "null");
}

static void print_json(const struct bench_options *opt, const struct bench_results *r,
                       const struct figures *f)
{
    printf("{\"conns\":%zu,\"idle\":%zu,\"size\":%zu,\"depth\":%zu", opt->conns, opt->idle,
           opt->size, opt->depth);
    json_field("duration_s", true, r->duration_s, 3);
    printf(",\"messages\":%llu", (unsigned long long)r->messages);
    json_field("msgs_per_s", true, f->msgs_per_s, 1);
    json_field("mb_per_s", true, f->mb_per_s, 3);
    json_field("p50_us", f->have_latency, f->p50_us, 1);
    json_field("p99_us", f->have_latency, f->p99_us, 1);
    json_field("p999_us", f->have_latency, f->p999_us, 1);
    json_field("max_us", f->have_latency, f->max_us, 1);
    printf(",\"connect_failures\":%llu,\"errors\":%llu,\"mismatches\":%llu",
           (unsigned long long)r->connect_failures, (unsigned long long)r->errors,
           (unsigned long long)r->mismatches);
    json_field("server_cpu_s", f->have_server, r->server_cpu_s, 3);
    json_field("server_ns_per_msg", f->have_server && f->have_per_msg, f->server_ns_per_msg, 0);
    json_field("client_cpu_s", true, r->client_cpu_s, 3);
    json_field("client_ns_per_msg", f->have_per_msg, f->client_ns_per_msg, 0);
    json_field("min_us", f->have_latency, f->min_us, 1);
    json_field("mean_us", f->have_latency, f->mean_us, 1);
    printf(",\"bytes_checked\":%llu", (unsigned long long)r->bytes_checked);
    json_field("connect_s", true, r->connect_s, 3);
    json_field("warmup_s", true, opt->warmup_s, 3);
    /* The backend name is one of a few fixed words: no escaping needed. */
    printf(",\"backend\":\"%s\",\"mark\":%s,\"udp\":%s,\"sent\":%llu,\"lost\":%llu",
           r->backend, opt->mark ? "true" : "false", opt->udp ? "true" : "false",
           (unsigned long long)r->sent, (unsigned long long)r->lost);
    if (opt->threads > 1) {
        printf(",\"threads\":%u,\"thread_msgs\":[", opt->threads);
        print_thread_msgs(opt, r, ",");
        putchar(']');
    }
    puts("}");
}

void bench_report(const struct bench_options *opt, const struct bench_results *r)
{
    struct figures f = compute(opt, r);
    switch (opt->format) {
    case FORMAT_CSV:
        print_csv(opt, r, &f);
        break;
    case FORMAT_JSON:
        print_json(opt, r, &f);
        break;
    default:
        print_text(opt, r, &f);
        break;
    }
    fflush(stdout);
}
