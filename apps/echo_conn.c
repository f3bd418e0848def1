/* evmux-echo-server: one connection, read, uppercased, written back.
 *
 * The stream queues what a slow client has not taken yet; past OWED_HIGH
 * bytes we stop reading from that client until its queue drains to
 * OWED_LOW, so a client that never reads costs bounded memory and nobody
 * else waits for it.
 *
 * A connection lives on one shard (loop) from its accept to its close; the
 * process-wide count (--max-conns) is taken by whoever accepted it and
 * given back here, on close. */
#include "echo_server.h"

#include "echo_upper.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Input handed to the pool: the connection reads nothing more meanwhile.
 * Allocated per heavy request, so that an idle connection pays one pointer. */
struct job {
    evmux_work work;
    struct conn *conn;
    atomic_bool *give_up;
    unsigned long long cpu_us;
    size_t len;
    char bytes[];
};

static void on_read(evmux_stream *s, ssize_t nread, char *buf);

void conn_log(const struct conn *c, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One write per line, so that lines of several loops never mix. */
    fprintf(stderr, "evmux-echo-server: loop %u: %s\n", c->shard->index, line);
}

void conn_peer_text(const struct conn *c, char *text, size_t size)
{
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    if (evmux_stream_peer(&c->stream, &peer, &len) < 0 ||
        evmux_addr_format((struct sockaddr *)&peer, len, text, size) < 0)
        snprintf(text, size, "?");
}

static void conn_freed(evmux_handle *h)
{
    struct conn *c = h->data;
    c->closed = true;
    if (c->job == NULL) /* else the job's after callback frees it */
        free(c);
}

void conn_close(struct conn *c)
{
    struct shard *sh = c->shard;
    if (evmux_is_closing(&c->stream.handle))
        return;
    assert(sh->conn_count > 0 && atomic_load(&sh->load) > 0);
    if (c->prev)
        c->prev->next = c->next;
    else
        sh->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    sh->conn_count--;
    atomic_fetch_sub(&sh->load, 1);
    atomic_fetch_sub(&sh->srv->open_conns, 1);
    if (c->job != NULL)
        evmux_cancel_work(&c->job->work); /* if no thread took it yet */
    if (c->proxy != NULL)
        proxy_wait_end(c);
    evmux_close(&c->stream.handle, conn_freed);
    shard_conn_gone(sh);
}

/* Bytes in the kernel either way: input we have not read yet (our loop
 * may be slower than the client), or replies the client has not read. */
static bool kernel_holds_bytes(const struct conn *c)
{
    int fd = evmux_stream_fd(&c->stream), in = 0, out = 0;
    if (fd < 0)
        return false;
    return (ioctl(fd, SIOCINQ, &in) == 0 && in > 0) || (ioctl(fd, SIOCOUTQ, &out) == 0 && out > 0);
}

bool conn_in_flight(const struct conn *c)
{
    return c->job != NULL || evmux_stream_queued(&c->stream) > 0 || kernel_holds_bytes(c);
}

bool conn_is_idle(const struct conn *c, uint64_t now)
{
    return now - c->last_input_ms >= c->shard->srv->opt.drain_idle_ms && !conn_in_flight(c);
}

/* Everything owed has been sent and our FIN is out. */
static void on_shutdown(evmux_stream *s, int status)
{
    struct conn *c = s->handle.data;
    c->fin_sent = true;
    /* When stopping, wait for the client's EOF before closing, so that
     * closing does not reset the connection under replies in flight. */
    if (status < 0 || c->peer_done)
        conn_close(c);
}

static void send_reply(struct conn *c, char *bytes, size_t len)
{
    evmux_buf reply = {bytes, len};
    if (evmux_stream_write(NULL, &c->stream, &reply, 1, NULL) < 0)
        conn_close(c);
    else if (evmux_stream_over_high(&c->stream))
        evmux_stream_read_stop(&c->stream);
}

/* What is owed goes out, then our FIN; the client's EOF then closes. */
void conn_say_goodbye(struct conn *c)
{
    if (c->saying_goodbye || evmux_is_closing(&c->stream.handle))
        return;
    if (c->job != NULL) {
        c->goodbye_after_job = true; /* its reply is owed too */
        return;
    }
    c->saying_goodbye = true;
    if (c->peer_done)
        return; /* its shutdown is on its way already; on_shutdown closes */
    if (c->proxy != NULL) { /* no header yet: nothing was ever owed */
        conn_close(c);
        return;
    }
    int rc = evmux_stream_read_start(&c->stream, on_read); /* to see its EOF */
    if (rc < 0) /* EVMUX_EOF, or cannot see it: close once our FIN is out */
        c->peer_done = true;
    if (evmux_stream_shutdown(&c->stream, on_shutdown) < 0)
        conn_close(c);
}

static void job_run(evmux_work *w) /* on a pool thread */
{
    struct job *job = (struct job *)w;
    burn_cpu(job->cpu_us, job->give_up);
    echo_uppercase(job->bytes, job->len);
}

static void job_done(evmux_work *w, int status)
{
    struct job *job = (struct job *)w;
    struct conn *c = job->conn;
    c->job = NULL;
    if (c->closed) {
        free(job);
        free(c);
        return;
    }
    if (status < 0 && !evmux_is_closing(&c->stream.handle)) {
        conn_close(c); /* its input went unanswered: the stream is broken */
    } else if (status == 0 && !evmux_is_closing(&c->stream.handle)) {
        c->last_input_ms = evmux_now(c->shard->loop); /* it was busy until now */
        send_reply(c, job->bytes, job->len);
        if (c->goodbye_after_job)
            conn_say_goodbye(c);
        else if (!evmux_is_closing(&c->stream.handle) && !evmux_stream_over_high(&c->stream) &&
                 evmux_stream_read_start(&c->stream, on_read) < 0)
            conn_close(c);
    }
    free(job);
}

/* Heavy input goes to the pool; the copy outlives the lent buffer. */
static bool hand_to_pool(struct conn *c, const char *buf, size_t len, unsigned long long cpu_us)
{
    struct job *job = malloc(sizeof *job + len);
    if (job == NULL)
        return false;
    evmux_work_init(&job->work);
    memcpy(job->bytes, buf, len);
    job->len = len;
    job->cpu_us = cpu_us;
    job->conn = c;
    job->give_up = &c->shard->give_up_work;
    if (evmux_queue_work(c->shard->loop, &job->work, job_run, job_done) < 0) {
        free(job);
        return false;
    }
    c->job = job;
    evmux_stream_read_stop(&c->stream);
    return true;
}

void conn_echo(struct conn *c, char *buf, size_t len)
{
    const struct options *opt = &c->shard->srv->opt;
    unsigned long long cpu_us = 0;
    if (opt->work_us > 0)
        cpu_us = opt->work_us * count_marks(buf, len);
    if (cpu_us > 0 && opt->workers > 0) {
        if (!hand_to_pool(c, buf, len, cpu_us))
            conn_close(c); /* out of memory or threads: cannot answer */
        return;
    }
    if (cpu_us > 0)
        burn_cpu(cpu_us, &c->shard->give_up_work);
    echo_uppercase(buf, len);
    send_reply(c, buf, len);
}

static void on_read(evmux_stream *s, ssize_t nread, char *buf)
{
    struct conn *c = s->handle.data;
    if (nread > 0) {
        c->last_input_ms = evmux_now(c->shard->loop);
        if (c->saying_goodbye)
            return; /* input after our goodbye is no longer answered */
        if (c->proxy != NULL)
            proxy_input(c, buf, (size_t)nread);
        else
            conn_echo(c, buf, (size_t)nread);
    } else if (c->proxy != NULL) { /* the client went before its header was whole */
        proxy_refuse(c, nread == EVMUX_EOF ? "closed before its PROXY header was whole"
                                           : "reset before its PROXY header was whole");
    } else if (nread == EVMUX_EOF) {
        c->peer_done = true;
        if (c->fin_sent)
            conn_close(c);
        else if (!c->saying_goodbye && evmux_stream_shutdown(s, on_shutdown) < 0)
            conn_close(c);
        /* else: on_shutdown closes once what is owed has gone out */
    } else {
        conn_close(c); /* reset or other error: nothing more can be delivered */
    }
}

static void on_drained(evmux_stream *s)
{
    struct conn *c = s->handle.data;
    if (!c->peer_done && c->job == NULL && evmux_stream_read_start(s, on_read) < 0)
        conn_close(c);
}

/* fd: a descriptor still ours to close (adopted, not taken by a stream). */
static void refuse(struct shard *sh, struct conn *c, int fd)
{
    sh->refused++;
    atomic_fetch_sub(&sh->load, 1);
    atomic_fetch_sub(&sh->srv->open_conns, 1);
    if (c != NULL)
        evmux_close(&c->stream.handle, conn_freed);
    if (fd >= 0)
        close(fd);
}

void conn_accept(struct shard *sh, evmux_listener *l, int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        refuse(sh, NULL, fd);
        return;
    }
    c->shard = sh;
    c->stream.handle.data = c;
    c->last_input_ms = evmux_now(sh->loop); /* a new client may not have spoken yet */
    evmux_stream_init(sh->loop, &c->stream);
    int rc = l != NULL ? evmux_accept(l, &c->stream) : evmux_stream_open(&c->stream, fd);
    if (rc == 0) {
        evmux_stream_set_nodelay(&c->stream, 1);
        evmux_stream_set_watermarks(&c->stream, OWED_HIGH, OWED_LOW, on_drained);
        if (sh->srv->opt.proxy_protocol)
            rc = proxy_wait_start(c);
    }
    if (rc == 0)
        rc = evmux_stream_read_start(&c->stream, on_read);
    if (rc < 0) {
        /* e.g. select cannot watch descriptors past FD_SETSIZE */
        fprintf(stderr, "evmux-echo-server: cannot serve a new connection: %s\n",
                evmux_strerror(rc));
        if (c->proxy != NULL)
            proxy_wait_end(c);
        /* An adopted descriptor the stream did not take is still ours. */
        refuse(sh, c, l == NULL && evmux_stream_fd(&c->stream) < 0 ? fd : -1);
        return;
    }
    c->next = sh->conns;
    if (sh->conns)
        sh->conns->prev = c;
    sh->conns = c;
    sh->conn_count++;
    sh->served++;
    if (sh->srv->opt.log_conns && c->proxy == NULL) {
        char text[128];
        conn_peer_text(c, text, sizeof text);
        conn_log(c, "connection from %s", text);
    }
    if (sh->phase == FINISHING)
        conn_say_goodbye(c); /* came after the drain ended: the process is leaving */
}
