/* evmux-echo-server's parts, shared by its files (echo_server.c tells the
 * whole story; each part's file starts with its own).
 *
 * The process (struct server) runs one or more loops, each on its own
 * thread (struct shard). A shard's connections, timers and counters
 * belong to its thread; what threads share is in struct server, read-only
 * after start-up apart from its atomics. */
#ifndef EVMUX_APPS_ECHO_SERVER_H
#define EVMUX_APPS_ECHO_SERVER_H

#include <evmux.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define OWED_HIGH (1024 * 1024)
#define OWED_LOW (256 * 1024)
#define SHUTDOWN_GRACE_MS 5000 /* after draining: how long slow peers get */
#define HEAVY_MARK 0x7f /* each of these bytes costs --work-us of CPU */
#define UDP_OWED_MAX (4 * 1024 * 1024) /* --udp: reply bytes waiting for the socket */
#define MAX_THREADS 256

enum balance { BALANCE_REUSEPORT, BALANCE_HANDOFF };

struct options {
    const char *host;
    unsigned port;
    const char *unix_path;
    const char *backend;
    size_t max_conns; /* 0: no limit; for the whole process */
    unsigned long long work_us;
    unsigned workers; /* pool threads per loop; 0: the work runs on the loop's thread */
    bool udp;
    unsigned threads; /* loops, one per thread */
    enum balance balance;
    bool pin;
    bool proxy_protocol;
    bool log_conns;
    uint64_t drain_idle_ms, drain_timeout_ms;
};

/* Returns -1 to go on, or an exit status (echo_server_args.c). */
int parse_args(int argc, char **argv, struct options *opt);

struct shard;

/* The process: what every loop's thread may read (the options, the
 * address), and what they share through atomics. */
struct server {
    struct options opt;
    struct sockaddr_storage addr; /* where every loop listens (the port known) */
    socklen_t addr_len;
    struct shard *shards;
    unsigned shard_count;
    atomic_size_t open_conns;   /* every loop's, for --max-conns */
    atomic_uint handoff_cursor; /* where the search for the least-loaded loop starts */

    /* Loop 0 alone watches SIGINT and SIGTERM (evmux has room for 64
     * loops per signal) and passes each arrival on to the others through
     * their `stop` asyncs. This mutex orders those sends against the
     * asyncs' closing, and guards what follows. */
    pthread_mutex_t life_mutex;
    unsigned stop_requests;  /* signals that arrived */
    unsigned shards_running; /* loops 1.. whose handles are still open */
};

enum phase {
    SERVING,   /* no signal yet */
    DRAINING,  /* stopped accepting; connections mid-transfer still served */
    FINISHING  /* everything owed goes out, then FIN; bounded by the grace timer */
};

/* One loop and its thread. */
struct shard {
    struct server *srv;
    unsigned index;
    evmux_loop *loop;
    pthread_t thread;
    int cpu; /* --pin: the CPU this loop's thread runs on, else -1 */

    evmux_listener listener; /* reuseport: every shard; handoff: shard 0 only */
    bool listening;
    evmux_handoff inbox; /* handoff mode, shards 1..: from shard 0 */
    bool has_inbox;
    evmux_udp udp; /* --udp: the socket instead of the listener */

    struct conn *conns;
    size_t conn_count;
    atomic_size_t load; /* connections given to this shard and not closed */

    evmux_signal sigint, sigterm; /* loop 0 */
    evmux_async others_done;      /* loop 0: a loop 1.. has ended */
    evmux_async stop;             /* loops 1..: loop 0 saw a signal */
    bool lifecycle_open;          /* others_done or stop, under life_mutex */
    unsigned stops_seen;
    evmux_timer drain_tick, drain_deadline, grace;
    enum phase phase;
    atomic_bool give_up_work; /* a second signal or the grace's end: jobs end now */

    /* Counters, read by the main thread after the shard's thread ended. */
    unsigned long long served, refused, dropped;
};

/* One TCP (or Unix) connection (echo_conn.c). */
struct job;
struct proxy_wait;
struct conn {
    evmux_stream stream;
    struct shard *shard;
    struct conn *prev, *next;
    uint64_t last_input_ms; /* or when it came: how long its input has paused */
    bool peer_done;         /* the client sent EOF */
    bool fin_sent;          /* everything owed went out, then our FIN */
    bool closed;            /* the stream's close callback ran; free after the job */
    bool saying_goodbye;    /* shutdown asked: what is owed, then FIN */
    bool goodbye_after_job; /* shutdown began while the job ran */
    struct job *job;        /* with the pool, or NULL */
    struct proxy_wait *proxy; /* --proxy-protocol: until the header is read */
};

/* echo_conn.c: serving one connection. */
/* Takes a connection the shard's listener has waiting, or an adopted
 * descriptor (fd >= 0; from shard 0's handoff). Counts it as served or
 * refused; the process-wide count is already taken (released on close). */
void conn_accept(struct shard *sh, evmux_listener *l, int fd);
void conn_close(struct conn *c);
void conn_say_goodbye(struct conn *c);
/* A job runs, or bytes wait to go either way (in our queue or in the
 * kernel's buffers): the connection is mid-transfer. */
bool conn_in_flight(const struct conn *c);
/* Nothing read for drain_idle_ms and nothing in flight: finished at once
 * when the server stops. */
bool conn_is_idle(const struct conn *c, uint64_t now);
/* The echo itself (also what follows a PROXY header). */
void conn_echo(struct conn *c, char *buf, size_t len);
void conn_log(const struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The peer's address as text ("?" if unknown), for logs. */
void conn_peer_text(const struct conn *c, char *text, size_t size);

/* echo_proxy.c: --proxy-protocol. */
int proxy_wait_start(struct conn *c);
/* Input while the header is awaited: the header is taken, what follows
 * it goes to conn_echo. */
void proxy_input(struct conn *c, const char *buf, size_t len);
void proxy_wait_end(struct conn *c);
/* Closes the connection, logging why (with the client's address). */
void proxy_refuse(struct conn *c, const char *why);

/* echo_drain.c: stopping on SIGINT/SIGTERM. */
int shard_install_signals(struct shard *sh);
/* Once nothing is left to serve (FINISHING, no connections, no inbox):
 * the loop's last handles close, and its run ends. */
void shard_maybe_finish(struct shard *sh);
/* A connection closed: the end of a drain, maybe. */
void shard_conn_gone(struct shard *sh);
/* DRAINING: finish what has paused; FINISHING once nothing is busy. */
void shard_drain_check(struct shard *sh);
/* A loop 1.. is done: its stop async closes, and loop 0 hears of it
 * (loop 0 ends after the last). */
void shard_ended(struct shard *sh);

/* echo_udp.c: --udp. */
int shard_start_udp(struct shard *sh, const struct sockaddr *addr, socklen_t len, unsigned flags);

/* echo_shard.c: a loop's set-up and thread. */
int shard_loop_new(struct shard *sh);
/* Listens (or binds the UDP socket, or opens the inbox) as the balance
 * mode asks. Prints why not and returns non-zero on failure. */
int shard_start(struct shard *sh);
int shard_run(struct shard *sh);
void shard_free(struct shard *sh);
/* Threads 1.. of the server: each creates, starts and runs its shard;
 * returns once every one is listening (0) or one failed (-1). */
int shards_spawn(struct server *srv);
/* --pin: the calling thread on sh's CPU (nothing if it has none). */
void pin_self(const struct shard *sh);
void shards_join(struct server *srv);
/* Handoff mode: shard 0 stopped accepting; tell the others. */
void shards_accept_done(struct server *srv);

/* Burns `us` microseconds of this thread's CPU time (--work-us), or less
 * if *give_up becomes true; and the count of HEAVY_MARK bytes. */
void burn_cpu(unsigned long long us, atomic_bool *give_up);
size_t count_marks(const char *p, size_t n);

#endif
