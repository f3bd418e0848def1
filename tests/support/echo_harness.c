/* Shared helpers for the echo integration tests; see echo_harness.h. */
#include "echo_harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *echo_server_path;
const char *echo_client_path;

static uint64_t g_start_ms;

/* Children still to reap: the watchdog and atexit kill them, so a failed
 * test never leaves a server behind holding ctest's output pipe open. */
#define MAX_CHILDREN 64
static volatile pid_t g_children[MAX_CHILDREN];

static void children_add(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (g_children[i] == 0) {
            g_children[i] = pid;
            return;
        }
    }
    echo_fail("too many child processes");
}

static void children_remove(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (g_children[i] == pid)
            g_children[i] = 0;
}

static void children_kill_all(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        pid_t pid = g_children[i];
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            g_children[i] = 0;
        }
    }
}

static void watchdog_handler(int sig)
{
    static const char msg[] = "[test] watchdog: the test ran out of time (SIGALRM); killing children\n";
    (void)sig;
    ssize_t rc = write(2, msg, sizeof msg - 1);
    (void)rc;
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (g_children[i] > 0)
            kill(g_children[i], SIGKILL);
    _exit(3);
}

uint64_t echo_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void echo_sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void echo_note(const char *fmt, ...)
{
    va_list ap;
    uint64_t t = echo_now_ms() - g_start_ms;
    fprintf(stderr, "[test %3llu.%03llus] ", (unsigned long long)(t / 1000),
            (unsigned long long)(t % 1000));
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void echo_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void echo_init(int argc, char **argv, unsigned seconds)
{
    struct rlimit rl;

    g_start_ms = echo_now_ms();
    setvbuf(stderr, NULL, _IOLBF, 0);
    if (argc < 3) {
        fprintf(stderr, "usage: %s PATH/evmux-echo-server PATH/evmux-echo-client\n", argv[0]);
        exit(2);
    }
    echo_server_path = argv[1];
    echo_client_path = argv[2];
    CHECK(access(echo_server_path, X_OK) == 0);
    CHECK(access(echo_client_path, X_OK) == 0);

    /* Writes to dead peers must give EPIPE here, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    atexit(children_kill_all);

    /* 1000 client sockets plus the loop need more than a default 1024. */
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    signal(SIGALRM, watchdog_handler);
    alarm(seconds);
    echo_note("server %s, backend %s%s", echo_server_path,
              getenv("EVMUX_BACKEND") ? getenv("EVMUX_BACKEND") : "(auto)",
              ECHO_SANITIZED ? ", sanitized build" : "");
}

/* ------------------------------------------------------------------ */
/* Child processes                                                     */
/* ------------------------------------------------------------------ */

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    CHECK(fl >= 0);
    CHECK(fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
}

void echo_spawn(echo_proc *p, char *const argv[], unsigned pipes, long nofile)
{
    echo_spawn_io(p, argv, -1, pipes, nofile);
}

void echo_spawn_io(echo_proc *p, char *const argv[], int stdin_fd, unsigned pipes, long nofile)
{
    echo_spawn_full(p, argv, stdin_fd, -1, pipes, nofile);
}

char *echo_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    size_t len = 0, cap = 4096;
    char *text = malloc(cap);
    CHECK(text != NULL);
    if (f != NULL) {
        size_t n;
        while ((n = fread(text + len, 1, cap - len - 1, f)) > 0) {
            len += n;
            if (cap - len - 1 == 0) {
                cap *= 2;
                text = realloc(text, cap);
                CHECK(text != NULL);
            }
        }
        fclose(f);
    }
    text[len] = '\0';
    return text;
}

void echo_spawn_full(echo_proc *p, char *const argv[], int stdin_fd, int stderr_fd, unsigned pipes,
                     long nofile)
{
    int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
    pid_t parent = getpid();

    memset(p, 0, sizeof *p);
    p->in_fd = p->out_fd = p->err_fd = -1;
    if (stdin_fd >= 0)
        pipes &= ~(unsigned)ECHO_PIPE_IN;
    if (stderr_fd >= 0)
        pipes &= ~(unsigned)ECHO_PIPE_ERR;
    if (pipes & ECHO_PIPE_IN)
        CHECK(pipe2(in, O_CLOEXEC) == 0);
    if (pipes & ECHO_PIPE_OUT)
        CHECK(pipe2(out, O_CLOEXEC) == 0);
    if (pipes & ECHO_PIPE_ERR)
        CHECK(pipe2(err, O_CLOEXEC) == 0);
    fflush(stdout);
    fflush(stderr);

    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* Die with the test, even if it is killed. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        /* The test ignores SIGPIPE; the programs must get the default
         * disposition, or "SIGPIPE never kills it" would be tested for free. */
        for (int sig = 1; sig < NSIG; sig++)
            signal(sig, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        alarm(0);

        if (stdin_fd >= 0) {
            dup2(stdin_fd, 0);
            if (isatty(0)) { /* a pty: make it the controlling terminal */
                setsid();
                ioctl(0, TIOCSCTTY, 0);
            }
        } else if (pipes & ECHO_PIPE_IN) {
            dup2(in[0], 0);
        } else {
            int nul = open("/dev/null", O_RDONLY);
            if (nul >= 0 && nul != 0) {
                dup2(nul, 0);
                close(nul);
            }
        }
        if (pipes & ECHO_PIPE_OUT)
            dup2(out[1], 1);
        if (pipes & ECHO_PIPE_ERR)
            dup2(err[1], 2);
        else if (stderr_fd >= 0)
            dup2(stderr_fd, 2);
        if (nofile > 0) {
            struct rlimit rl;
            getrlimit(RLIMIT_NOFILE, &rl);
            /* Hard limit too: the server raises its soft limit to the hard one. */
            rl.rlim_cur = (rlim_t)nofile;
            rl.rlim_max = rl.rlim_cur;
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                _exit(126);
        }
        /* Only 0-2 cross exec. */
        syscall(SYS_close_range, 3u, ~0u, 0u);
        execv(argv[0], argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }

    children_add(pid);
    p->pid = pid;
    if (pipes & ECHO_PIPE_IN) {
        close(in[0]);
        p->in_fd = in[1];
        set_nonblock(p->in_fd);
    }
    if (pipes & ECHO_PIPE_OUT) {
        close(out[1]);
        p->out_fd = out[0];
        set_nonblock(p->out_fd);
    }
    if (pipes & ECHO_PIPE_ERR) {
        close(err[1]);
        p->err_fd = err[0];
        set_nonblock(p->err_fd);
    }
}

int echo_proc_wait(echo_proc *p, int timeout_ms)
{
    uint64_t deadline = echo_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    if (p->exited)
        return 1;
    for (;;) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->exited = 1;
            p->status = st;
            children_remove(p->pid);
            return 1;
        }
        CHECK(r == 0 || errno == EINTR);
        if (echo_now_ms() >= deadline)
            return 0;
        echo_sleep_ms(2);
    }
}

void echo_proc_close_pipes(echo_proc *p)
{
    if (p->in_fd >= 0)
        close(p->in_fd);
    if (p->out_fd >= 0)
        close(p->out_fd);
    if (p->err_fd >= 0)
        close(p->err_fd);
    p->in_fd = p->out_fd = p->err_fd = -1;
}

void echo_proc_kill(echo_proc *p)
{
    if (p->pid > 0 && !p->exited) {
        kill(p->pid, SIGKILL);
        CHECK(echo_proc_wait(p, 10000));
    }
    echo_proc_close_pipes(p);
}

const char *echo_status_str(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "signal %d (%s)%s", WTERMSIG(status), strsignal(WTERMSIG(status)),
                 WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, len, "status 0x%x", status);
    return buf;
}

static void buf_append(char **b, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (nc < *len + n + 1)
            nc *= 2;
        *b = realloc(*b, nc);
        CHECK(*b != NULL);
        *cap = nc;
    }
    memcpy(*b + *len, data, n);
    *len += n;
    (*b)[*len] = '\0';
}

/* stdin_fd < 0: `in` goes through a pipe; else stdin_fd is the input. */
static void run_collect(char *const argv[], int stdin_fd, const void *in, size_t in_len,
                        int timeout_ms, echo_output *o)
{
    echo_proc p;
    size_t in_off = 0, out_cap = 0, err_cap = 0;
    uint64_t deadline = echo_now_ms() + (uint64_t)timeout_ms;
    uint64_t exited_at = 0;
    char buf[65536];

    memset(o, 0, sizeof *o);
    buf_append(&o->out, &o->out_len, &out_cap, "", 0);
    buf_append(&o->err, &o->err_len, &err_cap, "", 0);
    if (stdin_fd >= 0)
        echo_spawn_io(&p, argv, stdin_fd, ECHO_PIPE_OUT | ECHO_PIPE_ERR, 0);
    else
        echo_spawn(&p, argv, ECHO_PIPE_IN | ECHO_PIPE_OUT | ECHO_PIPE_ERR, 0);
    if (stdin_fd < 0 && in_len == 0) {
        close(p.in_fd);
        p.in_fd = -1;
    }

    for (;;) {
        struct pollfd pfd[3];
        int n = 0;
        if (p.in_fd >= 0)
            pfd[n++] = (struct pollfd){ .fd = p.in_fd, .events = POLLOUT };
        if (p.out_fd >= 0)
            pfd[n++] = (struct pollfd){ .fd = p.out_fd, .events = POLLIN };
        if (p.err_fd >= 0)
            pfd[n++] = (struct pollfd){ .fd = p.err_fd, .events = POLLIN };
        if (n > 0)
            poll(pfd, (nfds_t)n, 20);

        if (p.in_fd >= 0) {
            ssize_t w = write(p.in_fd, (const char *)in + in_off, in_len - in_off);
            if (w > 0)
                in_off += (size_t)w;
            /* EPIPE: the program stopped reading its input; that is for
             * the caller's checks to judge, not a harness error. */
            if (in_off == in_len || (w < 0 && errno != EAGAIN && errno != EINTR)) {
                close(p.in_fd);
                p.in_fd = -1;
            }
        }
        for (int which = 0; which < 2; which++) {
            int *fd = which ? &p.err_fd : &p.out_fd;
            while (*fd >= 0) {
                ssize_t r = read(*fd, buf, sizeof buf);
                if (r > 0) {
                    if (which)
                        buf_append(&o->err, &o->err_len, &err_cap, buf, (size_t)r);
                    else
                        buf_append(&o->out, &o->out_len, &out_cap, buf, (size_t)r);
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    close(*fd);
                    *fd = -1;
                } else {
                    break;
                }
            }
        }

        if (!p.exited && echo_proc_wait(&p, 0))
            exited_at = echo_now_ms();
        if (p.exited && p.out_fd < 0 && p.err_fd < 0)
            break;
        /* Exited but someone still holds the pipes: stop waiting soon. */
        if (p.exited && echo_now_ms() - exited_at > 2000)
            break;
        if (!p.exited && echo_now_ms() >= deadline) {
            o->timed_out = 1;
            kill(p.pid, SIGKILL);
            CHECK(echo_proc_wait(&p, 10000));
            exited_at = echo_now_ms();
        }
    }
    o->status = p.status;
    echo_proc_close_pipes(&p);
}

void echo_run(char *const argv[], const void *in, size_t in_len, int timeout_ms, echo_output *o)
{
    run_collect(argv, -1, in, in_len, timeout_ms, o);
}

void echo_run_fd(char *const argv[], int stdin_fd, int timeout_ms, echo_output *o)
{
    run_collect(argv, stdin_fd, NULL, 0, timeout_ms, o);
}

void echo_output_free(echo_output *o)
{
    free(o->out);
    free(o->err);
    memset(o, 0, sizeof *o);
}

/* ------------------------------------------------------------------ */
/* The server under test                                               */
/* ------------------------------------------------------------------ */

size_t echo_proc_read_line(echo_proc *p, char *line, size_t size, const char *what)
{
    char st[96];
    size_t len = 0;
    uint64_t deadline = echo_now_ms() + (ECHO_SANITIZED ? 20000 : 10000);
    for (;;) {
        char c;
        ssize_t r = read(p->out_fd, &c, 1);
        if (r == 1) {
            if (c == '\n')
                break;
            if (len + 1 >= size)
                echo_fail("%s: first stdout line is too long: \"%.*s...\"", what, (int)len, line);
            line[len++] = c;
            continue;
        }
        if (r < 0 && errno != EAGAIN && errno != EINTR)
            echo_fail("%s: reading stdout: %s", what, strerror(errno));
        if (r == 0 || echo_proc_wait(p, 0)) {
            echo_proc_wait(p, 2000);
            echo_fail("%s ended before its first line (got \"%.*s\"; %s)", what, (int)len, line,
                      p->exited ? echo_status_str(p->status, st, sizeof st) : "still running");
        }
        if (echo_now_ms() >= deadline)
            echo_fail("%s: no first line within the deadline (got \"%.*s\")", what, (int)len,
                      line);
        struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
        poll(&pfd, 1, 20);
    }
    line[len] = '\0';
    return len;
}

void echo_server_start(echo_server *s, const echo_server_opts *opts)
{
    char *argv[64];
    int argc = 0;

    memset(s, 0, sizeof *s);
    argv[argc++] = (char *)echo_server_path;
    argv[argc++] = "--port";
    argv[argc++] = "0";
    if (opts && opts->args)
        for (const char *const *a = opts->args; *a; a++) {
            CHECK(argc < 62);
            argv[argc++] = (char *)*a;
        }
    argv[argc] = NULL;

    /* stdout piped (for the port); stderr stays ours so the server's
     * messages land in the test log. */
    int err_fd = -1;
    if (opts && opts->stderr_file) {
        err_fd = open(opts->stderr_file, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
        if (err_fd < 0)
            echo_fail("cannot open %s: %s", opts->stderr_file, strerror(errno));
    }
    echo_spawn_full(&s->proc, argv, -1, err_fd, ECHO_PIPE_OUT, opts ? opts->nofile : 0);
    if (err_fd >= 0)
        close(err_fd);

    size_t len = echo_proc_read_line(&s->proc, s->line, sizeof s->line, "the server");

    /* Exactly: listening on HOST:PORT (backend NAME) */
    char host[64] = "", name[32] = "", rebuilt[256];
    int port = 0, end = 0;
    if (sscanf(s->line, "listening on %63[^:]:%d (backend %31[^)])%n", host, &port, name, &end) != 3 ||
        (size_t)end != len)
        echo_fail("malformed listening line: \"%s\"", s->line);
    snprintf(rebuilt, sizeof rebuilt, "listening on %s:%d (backend %s)", host, port, name);
    if (strcmp(rebuilt, s->line) != 0)
        echo_fail("malformed listening line: \"%s\" (expected the form \"%s\")", s->line, rebuilt);
    if (strcmp(host, "127.0.0.1") != 0)
        echo_fail("listening line names host \"%s\", expected 127.0.0.1: \"%s\"", host, s->line);
    if (port <= 0 || port > 65535)
        echo_fail("listening line has a bad port: \"%s\"", s->line);

    const char *want = opts && opts->backend ? opts->backend : getenv("EVMUX_BACKEND");
    if (want && *want && strcmp(want, "auto") != 0 && strcmp(want, name) != 0)
        echo_fail("server uses backend \"%s\", expected \"%s\" (line \"%s\")", name, want, s->line);
    s->port = port;
    snprintf(s->backend, sizeof s->backend, "%s", name);
}

int echo_server_alive(echo_server *s)
{
    return !echo_proc_wait(&s->proc, 0);
}

void echo_server_check_alive(echo_server *s, const char *when)
{
    char st[96];
    if (!echo_server_alive(s))
        echo_fail("server died %s: %s", when, echo_status_str(s->proc.status, st, sizeof st));
}

int echo_server_stop(echo_server *s, int sig, int timeout_ms)
{
    char st[96];
    if (!s->proc.exited) {
        if (echo_proc_wait(&s->proc, 0))
            echo_fail("server had already exited before signal %d: %s", sig,
                      echo_status_str(s->proc.status, st, sizeof st));
        CHECK(kill(s->proc.pid, sig) == 0);
        if (!echo_proc_wait(&s->proc, timeout_ms))
            echo_fail("server did not exit within %d ms of signal %d (%s)", timeout_ms, sig,
                      strsignal(sig));
    }
    return s->proc.status;
}

void echo_server_stop_ok(echo_server *s)
{
    char st[96];
    int status = echo_server_stop(s, SIGTERM, 10000);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        echo_fail("server exit after SIGTERM: %s, expected exit 0",
                  echo_status_str(status, st, sizeof st));
    echo_proc_close_pipes(&s->proc);
}

void echo_server_expect_exit0(echo_server *s, const char *what, int timeout_ms)
{
    char st[96];
    if (!echo_proc_wait(&s->proc, timeout_ms))
        echo_fail("%s: server still running %d ms after the signal", what, timeout_ms);
    if (!WIFEXITED(s->proc.status) || WEXITSTATUS(s->proc.status) != 0)
        echo_fail("%s: server %s, expected exit 0", what,
                  echo_status_str(s->proc.status, st, sizeof st));
    echo_proc_close_pipes(&s->proc);
}

size_t echo_server_extra_stdout(echo_server *s, char *buf, size_t len)
{
    size_t got = 0;
    while (s->proc.out_fd >= 0 && got < len) {
        ssize_t r = read(s->proc.out_fd, buf + got, len - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

/* ------------------------------------------------------------------ */
/* /proc                                                               */
/* ------------------------------------------------------------------ */

long echo_proc_rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

double echo_proc_cpu_s(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name, which may contain spaces: from the
     * last ')'. utime and stime are fields 14 and 15. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long ut = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stime) != 2)
        return -1;
    return (double)(ut + stime) / (double)sysconf(_SC_CLK_TCK);
}

int echo_proc_fd_count(pid_t pid)
{
    char path[64];
    int n = 0;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int echo_wait_fd_count(pid_t pid, int want, int timeout_ms)
{
    uint64_t deadline = echo_now_ms() + (uint64_t)timeout_ms;
    int n;
    for (;;) {
        n = echo_proc_fd_count(pid);
        if (n <= want || echo_now_ms() >= deadline)
            return n;
        echo_sleep_ms(10);
    }
}

int echo_server_queues(int server_port, int client_port, long *txq_out, long *rxq_out)
{
    char line[512];
    int found = -1;
    FILE *f = fopen("/proc/net/tcp", "re");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        unsigned la, lp, ra, rp, st;
        unsigned long txq, rxq;
        if (sscanf(line, " %*d: %8X:%4X %8X:%4X %2X %8lX:%8lX", &la, &lp, &ra, &rp, &st, &txq,
                   &rxq) != 7)
            continue;
        if ((int)lp == server_port && (int)rp == client_port) {
            *txq_out = (long)txq;
            *rxq_out = (long)rxq;
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

long echo_server_rx_queue(int server_port, int client_port)
{
    long txq, rxq;
    if (echo_server_queues(server_port, client_port, &txq, &rxq) != 0)
        return -1;
    return rxq;
}

/* ------------------------------------------------------------------ */
/* Sockets and data                                                    */
/* ------------------------------------------------------------------ */

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int echo_connect(int port, int wait_ms)
{
    struct sockaddr_in a = loopback(port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (wait_ms <= 0)
        return fd;
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    int r;
    do
        r = poll(&pfd, 1, wait_ms);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
        close(fd);
        return -ETIMEDOUT;
    }
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
        close(fd);
        return -err;
    }
    return fd;
}

int echo_local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &l) == 0);
    return ntohs(a.sin_port);
}

int echo_unused_port(void)
{
    struct sockaddr_in a = loopback(0);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    int port = echo_local_port(fd);
    close(fd);
    return port;
}

void echo_close_reset(int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static inline uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void echo_payload(uint64_t seed, uint64_t off, uint8_t *buf, size_t n)
{
    size_t i = 0;
    uint64_t key = mix64(seed ^ 0x5EED5EED5EED5EEDull);
    /* First 256 bytes: 167 is odd, so pos*167 ^ k is a permutation mod 256. */
    for (; i < n && off + i < 256; i++)
        buf[i] = (uint8_t)(((off + i) * 167u) ^ (uint8_t)key);
    while (i < n) {
        uint64_t pos = off + i;
        uint64_t w = mix64(key ^ (pos >> 3));
        for (unsigned b = (unsigned)(pos & 7); b < 8 && i < n; b++, i++)
            buf[i] = (uint8_t)(w >> (8 * b));
    }
}

void echo_upper_buf(uint8_t *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = echo_upper(src[i]);
}

uint64_t echo_rand(uint64_t *state)
{
    uint64_t x = *state;
    if (x == 0)
        x = 0x2545F4914F6CDD1Dull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint64_t echo_rand_range(uint64_t *state, uint64_t lo, uint64_t hi)
{
    return lo + echo_rand(state) % (hi - lo + 1);
}

static int wait_fd(int fd, short ev, uint64_t deadline)
{
    for (;;) {
        uint64_t now = echo_now_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        struct pollfd pfd = { .fd = fd, .events = ev };
        int r = poll(&pfd, 1, (int)(deadline - now));
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

int echo_send_all(int fd, const void *buf, size_t n, int timeout_ms)
{
    uint64_t deadline = echo_now_ms() + (uint64_t)timeout_ms;
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(fd, (const char *)buf + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        int r = wait_fd(fd, POLLOUT, deadline);
        if (r)
            return r;
    }
    return 0;
}

ssize_t echo_recv_some(int fd, void *buf, size_t n, int timeout_ms)
{
    uint64_t deadline = echo_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
        if (r >= 0)
            return r;
        if (errno != EAGAIN && errno != EINTR)
            return -errno;
        int w = wait_fd(fd, POLLIN, deadline);
        if (w)
            return w;
    }
}

int echo_recv_exact(int fd, void *buf, size_t n, int timeout_ms)
{
    uint64_t deadline = echo_now_ms() + (uint64_t)timeout_ms;
    size_t off = 0;
    while (off < n) {
        uint64_t now = echo_now_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        ssize_t r = echo_recv_some(fd, (char *)buf + off, n - off, (int)(deadline - now));
        if (r == 0)
            return -ENODATA; /* EOF too early */
        if (r < 0)
            return (int)r;
        off += (size_t)r;
    }
    return 0;
}

int echo_recv_eof(int fd, int timeout_ms)
{
    char c[256];
    ssize_t r = echo_recv_some(fd, c, sizeof c, timeout_ms);
    if (r == 0)
        return 0;
    if (r > 0)
        return -EPROTO;
    return (int)r;
}

size_t echo_send_until_stalled(int fd, uint64_t seed, size_t min, size_t max, int stall_ms)
{
    static uint8_t chunk[65536];
    size_t sent = 0;
    uint64_t deadline = echo_now_ms() + 10000;
    while (sent < max && echo_now_ms() < deadline) {
        size_t n = max - sent < sizeof chunk ? max - sent : sizeof chunk;
        echo_payload(seed, sent, chunk, n);
        ssize_t w = send(fd, chunk, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            sent += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            echo_fail("echo_send_until_stalled: send after %zu bytes: %s", sent, strerror(errno));
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        if (poll(&pfd, 1, stall_ms) == 0 && sent >= min)
            break;
    }
    return sent;
}

long echo_outq(int fd)
{
    int q = 0;
    if (ioctl(fd, SIOCOUTQ, &q) != 0)
        return -1;
    return q;
}

long echo_inq(int fd)
{
    int q = 0;
    if (ioctl(fd, SIOCINQ, &q) != 0)
        return -1;
    return q;
}

size_t echo_make_server_owe(int fd, int server_port, uint64_t seed, size_t want_owed, size_t max,
                            size_t *owed)
{
    static uint8_t chunk[65536];
    int lport = echo_local_port(fd);
    size_t sent = 0;
    while (sent < max) {
        size_t n = max - sent < sizeof chunk ? max - sent : sizeof chunk;
        echo_payload(seed, sent, chunk, n);
        int rc = echo_send_all(fd, chunk, n, 5000);
        if (rc != 0)
            echo_fail("make_server_owe: could not send after %zu bytes: %s", sent, strerror(-rc));
        sent += n;
        /* Wait until the server has read all of it. */
        uint64_t deadline = echo_now_ms() + 2000;
        long txq = 0, rxq = 0;
        for (;;) {
            if (echo_server_queues(server_port, lport, &txq, &rxq) != 0)
                echo_fail("make_server_owe: the server's socket is not in /proc/net/tcp");
            if (echo_outq(fd) == 0 && rxq == 0)
                break;
            if (echo_now_ms() >= deadline)
                echo_fail("make_server_owe: the server stopped reading after %zu bytes while it "
                          "owed less than %zu (our unacked %ld, its unread %ld)",
                          sent, want_owed, echo_outq(fd), rxq);
            echo_sleep_ms(1);
        }
        /* Read by the server, minus what sits in its send queue or ours. */
        long delivered = txq + echo_inq(fd);
        if ((long)sent - delivered >= (long)want_owed) {
            *owed = sent - (size_t)delivered;
            return sent;
        }
    }
    echo_fail("make_server_owe: the server still owed less than %zu bytes after %zu", want_owed,
              max);
}

int echo_roundtrip(int fd, uint64_t seed, size_t n, int timeout_ms)
{
    uint64_t deadline = echo_now_ms() + (uint64_t)timeout_ms;
    uint8_t *out = malloc(n), *want = malloc(n), *in = malloc(n);
    size_t sent = 0, got = 0;
    int rc = 0;
    CHECK(out && want && in);
    echo_payload(seed, 0, out, n);
    echo_upper_buf(want, out, n);
    /* Send and read interleaved, so a large message cannot deadlock. */
    while (got < n) {
        if (sent < n) {
            ssize_t w = send(fd, out + sent, n - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                rc = -errno;
                break;
            }
        }
        ssize_t r = recv(fd, in + got, n - got, MSG_DONTWAIT);
        if (r > 0) {
            if (memcmp(in + got, want + got, (size_t)r) != 0) {
                rc = -EBADMSG;
                break;
            }
            got += (size_t)r;
            continue;
        }
        if (r == 0) {
            rc = -ENODATA;
            break;
        }
        if (errno != EAGAIN && errno != EINTR) {
            rc = -errno;
            break;
        }
        uint64_t now = echo_now_ms();
        if (now >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        struct pollfd pfd = { .fd = fd, .events = (short)(POLLIN | (sent < n ? POLLOUT : 0)) };
        poll(&pfd, 1, (int)(deadline - now));
    }
    free(out);
    free(want);
    free(in);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Many streams on an evmux client loop                                */
/* ------------------------------------------------------------------ */

#define SCRATCH (256u * 1024u)
static uint8_t g_wbuf[SCRATCH], g_rbuf[SCRATCH], g_ebuf[SCRATCH];

const char *echo_result_name(echo_result r)
{
    switch (r) {
    case ES_IDLE: return "idle";
    case ES_RUNNING: return "running";
    case ES_OK: return "ok";
    case ES_EOF: return "eof";
    case ES_RESET: return "reset";
    case ES_MISMATCH: return "mismatch";
    case ES_ERROR: return "error";
    case ES_CONNECT_FAILED: return "connect-failed";
    case ES_TIMEOUT: return "timeout";
    }
    return "?";
}

uint64_t echo_group_elapsed_ms(const echo_group *g)
{
    return echo_now_ms() - g->t0_ms;
}

static void group_maybe_start(echo_group *g);
static void group_maybe_release(echo_group *g);
static void group_done(echo_group *g);

static void stream_confirm(echo_stream *s)
{
    if (!s->confirmed) {
        s->confirmed = 1;
        s->group->confirmed++;
    }
}

static void stream_finish(echo_stream *s, echo_result r, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void stream_finish(echo_stream *s, echo_result r, int err, const char *fmt, ...)
{
    echo_group *g = s->group;
    if (s->result != ES_RUNNING && s->result != ES_IDLE)
        return;
    s->result = r;
    s->err = err;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->msg, sizeof s->msg, fmt, ap);
        va_end(ap);
    }
    if (s->io_inited) {
        /* Closing stops the watcher at once; the descriptor is ours. */
        CHECK_OK(evmux_close(&s->io.handle, NULL));
        s->io_inited = 0;
    }
    if (s->fd >= 0 && !(s->mode & ES_KEEP_FD)) {
        close(s->fd);
        s->fd = -1;
    }
    stream_confirm(s);
    g->finished++;
    if (g->finished == g->n) {
        group_done(g);
        return;
    }
    group_maybe_release(g);
    group_maybe_start(g);
}

static int stream_can_read(const echo_stream *s)
{
    if (s->connecting || (s->mode & ES_NO_READ))
        return 0;
    if ((s->mode & ES_DEFER_READ) && s->sent < s->total)
        return 0;
    return 1;
}

static size_t pick_size(uint64_t *rng, size_t maxc)
{
    uint64_t r = echo_rand(rng) % 100;
    size_t hi;
    if (r < 10)
        hi = 16;
    else if (r < 55)
        hi = 4096;
    else
        hi = maxc;
    if (hi > maxc)
        hi = maxc;
    return (size_t)echo_rand_range(rng, 1, hi);
}

/* How far the stream may send right now. */
static uint64_t stream_send_limit(echo_stream *s)
{
    uint64_t lim = s->total;
    if (s->connecting)
        return s->sent;
    if (s->hold_at && s->hold_at < lim)
        lim = s->hold_at;
    if (s->mode & ES_PINGPONG) {
        if (s->msg_end <= s->sent) {
            if (s->recvd < s->sent)
                return s->sent; /* wait for the echo of the last message */
            size_t maxc = s->max_chunk ? s->max_chunk : 65536;
            s->msg_end = s->sent + pick_size(&s->rng, maxc);
            if (s->msg_end > s->total)
                s->msg_end = s->total;
        }
        if (s->msg_end < lim)
            lim = s->msg_end;
    }
    return lim;
}

static void stream_set_interest(echo_stream *s)
{
    unsigned ev = 0;
    if (s->connecting)
        ev = EVMUX_WRITABLE;
    else {
        if (stream_can_read(s))
            ev |= EVMUX_READABLE;
        if (stream_send_limit(s) > s->sent)
            ev |= EVMUX_WRITABLE;
    }
    int rc = evmux_io_start(&s->io, ev);
    if (rc != 0)
        echo_fail("%s: evmux_io_start(fd %d, %u): %s", s->group->o->what, s->fd, ev,
                  evmux_strerror(rc));
}

/* Returns 1 if the stream is finished (and must not be touched). */
static int stream_check_done(echo_stream *s)
{
    if (s->sent == s->total && !s->half_closed && (s->mode & ES_HALF_CLOSE)) {
        if (shutdown(s->fd, SHUT_WR) != 0) {
            stream_finish(s, ES_ERROR, errno, "shutdown: %s", strerror(errno));
            return 1;
        }
        s->half_closed = 1;
    }
    if (s->sent == s->total && s->recvd == s->total &&
        (!(s->mode & ES_EXPECT_EOF) || s->got_eof)) {
        stream_finish(s, ES_OK, 0, NULL);
        return 1;
    }
    return 0;
}

static int stream_read(echo_stream *s)
{
    for (int budget = 0; budget < 16; budget++) {
        size_t want = echo_rand(&s->rng) % 20 == 0 ? (size_t)echo_rand_range(&s->rng, 1, 64)
                                                   : (size_t)echo_rand_range(&s->rng, 1, 65536);
        ssize_t r = recv(s->fd, g_rbuf, want, MSG_DONTWAIT);
        if (r > 0) {
            if (s->recvd + (uint64_t)r > s->sent) {
                stream_finish(s, ES_MISMATCH, 0,
                              "received %llu bytes but only %llu were sent",
                              (unsigned long long)(s->recvd + (uint64_t)r),
                              (unsigned long long)s->sent);
                return 1;
            }
            echo_payload(s->seed, s->recvd, g_ebuf, (size_t)r);
            echo_upper_buf(g_ebuf, g_ebuf, (size_t)r);
            if (memcmp(g_rbuf, g_ebuf, (size_t)r) != 0) {
                size_t i = 0;
                while (g_rbuf[i] == g_ebuf[i])
                    i++;
                uint8_t orig;
                echo_payload(s->seed, s->recvd + i, &orig, 1);
                stream_finish(s, ES_MISMATCH, 0,
                              "wrong byte at offset %llu: got 0x%02x, expected 0x%02x (sent 0x%02x)",
                              (unsigned long long)(s->recvd + i), g_rbuf[i], g_ebuf[i], orig);
                return 1;
            }
            uint64_t before = s->recvd;
            s->recvd += (uint64_t)r;
            if ((s->mode & ES_PINGPONG) && before < s->msg_end && s->recvd >= s->msg_end)
                s->roundtrips++;
            if (!s->confirmed && s->recvd >= (s->hold_at ? s->hold_at : 1)) {
                stream_confirm(s);
                group_maybe_release(s->group);
                group_maybe_start(s->group);
            }
            continue;
        }
        if (r == 0) {
            s->got_eof = 1;
            if (s->sent == s->total && s->recvd == s->total && (s->mode & ES_EXPECT_EOF))
                return stream_check_done(s);
            stream_finish(s, ES_EOF, 0, "EOF after %llu of %llu bytes echoed (%llu sent)",
                          (unsigned long long)s->recvd, (unsigned long long)s->total,
                          (unsigned long long)s->sent);
            return 1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        int e = errno;
        stream_finish(s, (e == ECONNRESET || e == EPIPE) ? ES_RESET : ES_ERROR, e,
                      "recv after %llu of %llu bytes echoed: %s", (unsigned long long)s->recvd,
                      (unsigned long long)s->total, strerror(e));
        return 1;
    }
    return 0;
}

static int stream_write(echo_stream *s)
{
    size_t maxc = s->max_chunk ? s->max_chunk : 65536;
    if (maxc > SCRATCH)
        maxc = SCRATCH;
    for (int budget = 0; budget < 16; budget++) {
        uint64_t lim = stream_send_limit(s);
        if (s->sent >= lim)
            break;
        size_t n = pick_size(&s->rng, maxc);
        if (n > lim - s->sent)
            n = (size_t)(lim - s->sent);
        echo_payload(s->seed, s->sent, g_wbuf, n);
        ssize_t w = send(s->fd, g_wbuf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            s->sent += (uint64_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        int e = w < 0 ? errno : EIO;
        stream_finish(s, (e == ECONNRESET || e == EPIPE) ? ES_RESET : ES_ERROR, e,
                      "send after %llu of %llu bytes: %s", (unsigned long long)s->sent,
                      (unsigned long long)s->total, strerror(e));
        return 1;
    }
    return stream_check_done(s);
}

static void stream_cb(evmux_io *io, unsigned events)
{
    echo_stream *s = (echo_stream *)io->handle.data;
    if (s->connecting) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            stream_finish(s, ES_CONNECT_FAILED, err, "connect: %s", strerror(err));
            return;
        }
        s->connecting = 0;
    }
    if ((events & EVMUX_READABLE) && stream_can_read(s) && stream_read(s))
        return;
    if ((events & EVMUX_WRITABLE) && stream_write(s))
        return;
    if (stream_check_done(s))
        return;
    stream_set_interest(s);
}

static void stream_start(echo_group *g, echo_stream *s)
{
    s->group = g;
    s->result = ES_RUNNING;
    if (s->rng == 0)
        s->rng = s->seed * 2654435761u + 1;
    if (g->o->barrier && s->hold_at == 0 && !g->released)
        s->hold_at = echo_rand_range(&s->rng, 1, s->total < 64 ? s->total : 64);
    if (s->fd < 0) {
        int fd = echo_connect(g->o->port, 0);
        if (fd < 0) {
            stream_finish(s, ES_CONNECT_FAILED, -fd, "connect: %s", strerror(-fd));
            return;
        }
        s->fd = fd;
        s->connecting = 1;
    }
    int rc = evmux_io_init(g->loop, &s->io, s->fd, stream_cb);
    if (rc != 0)
        echo_fail("%s: evmux_io_init: %s", g->o->what, evmux_strerror(rc));
    s->io.handle.data = s;
    s->io_inited = 1;
    stream_set_interest(s);
}

static void group_maybe_start(echo_group *g)
{
    while (g->started < g->n && !g->timed_out &&
           (g->o->max_unconfirmed == 0 || g->started - g->confirmed < g->o->max_unconfirmed)) {
        echo_stream *s = &g->s[g->started++];
        stream_start(g, s);
    }
}

static void group_maybe_release(echo_group *g)
{
    if (!g->o->barrier || g->released || g->confirmed < g->n)
        return;
    g->released = 1;
    if (g->o->on_barrier)
        g->o->on_barrier(g);
    for (size_t i = 0; i < g->n; i++) {
        echo_stream *s = &g->s[i];
        s->hold_at = 0;
        if (s->result == ES_RUNNING)
            stream_set_interest(s);
    }
}

static void group_done(echo_group *g)
{
    if (!evmux_is_closing(&g->guard.handle))
        CHECK_OK(evmux_close(&g->guard.handle, NULL));
    if (g->o->on_tick && !evmux_is_closing(&g->tick.handle))
        CHECK_OK(evmux_close(&g->tick.handle, NULL));
}

static void group_guard_cb(evmux_timer *t)
{
    echo_group *g = (echo_group *)t->handle.data;
    g->timed_out = 1;
    for (size_t i = 0; i < g->n && g->finished < g->n; i++) {
        echo_stream *s = &g->s[i];
        if (s->result == ES_IDLE) {
            s->group = g;
            stream_finish(s, ES_TIMEOUT, 0, "never started (connections throttled)");
        } else if (s->result == ES_RUNNING) {
            stream_finish(s, ES_TIMEOUT, 0,
                          "%s after %llu ms: sent %llu, echoed %llu of %llu",
                          s->connecting ? "still connecting" : "unfinished",
                          (unsigned long long)echo_group_elapsed_ms(g),
                          (unsigned long long)s->sent, (unsigned long long)s->recvd,
                          (unsigned long long)s->total);
        }
    }
}

static void group_tick_cb(evmux_timer *t)
{
    echo_group *g = (echo_group *)t->handle.data;
    g->o->on_tick(g);
}

void echo_stream_update(echo_stream *s)
{
    if (s->result != ES_RUNNING)
        return;
    if (stream_check_done(s))
        return;
    stream_set_interest(s);
}

void echo_stream_finish_sending(echo_stream *s)
{
    if (s->result != ES_RUNNING)
        return;
    s->total = (s->mode & ES_PINGPONG) && s->msg_end > s->sent ? s->msg_end : s->sent;
    echo_stream_update(s);
}

size_t echo_group_run(echo_stream *s, size_t n, const echo_group_opts *o)
{
    echo_group g;
    evmux_loop_options lo = { .backend = "epoll" };
    size_t bad = 0;

    memset(&g, 0, sizeof g);
    g.s = s;
    g.n = n;
    g.o = o;
    g.t0_ms = echo_now_ms();
    /* The client side always runs on epoll (poll as a fallback): what is
     * under test is the server's backend, not ours. */
    if (evmux_loop_new(&g.loop, &lo) != 0) {
        lo.backend = "poll";
        CHECK_OK(evmux_loop_new(&g.loop, &lo));
    }
    for (size_t i = 0; i < n; i++) {
        s[i].group = &g;
        s[i].result = ES_IDLE;
        s[i].sent = s[i].recvd = 0;
        s[i].confirmed = s[i].connecting = s[i].io_inited = 0;
        s[i].half_closed = s[i].got_eof = 0;
        s[i].msg_end = s[i].hold_at = s[i].roundtrips = 0;
    }
    CHECK_OK(evmux_timer_init(g.loop, &g.guard, group_guard_cb));
    g.guard.handle.data = &g;
    CHECK_OK(evmux_timer_start(&g.guard, (uint64_t)o->timeout_ms, 0));
    if (o->on_tick) {
        CHECK_OK(evmux_timer_init(g.loop, &g.tick, group_tick_cb));
        g.tick.handle.data = &g;
        CHECK_OK(evmux_timer_start(&g.tick, o->tick_ms, o->tick_ms));
    }
    if (n == 0)
        group_done(&g);
    else
        group_maybe_start(&g);

    int rc = evmux_run(g.loop, EVMUX_RUN_DEFAULT);
    if (rc != 0)
        echo_fail("%s: client loop failed: %s", o->what, evmux_strerror(rc));
    if (g.finished != n)
        echo_fail("%s: client loop ended with %zu of %zu streams unfinished", o->what,
                  n - g.finished, n);
    CHECK_OK(evmux_loop_free(g.loop));
    for (size_t i = 0; i < n; i++) {
        s[i].group = NULL;
        if (s[i].result != ES_OK)
            bad++;
    }
    return bad;
}

void echo_group_check_all_ok(echo_stream *s, size_t n, const char *what)
{
    size_t bad = 0, shown = 0;
    size_t counts[ES_TIMEOUT + 1] = { 0 };
    for (size_t i = 0; i < n; i++) {
        counts[s[i].result]++;
        if (s[i].result == ES_OK)
            continue;
        bad++;
        if (shown++ < 10)
            fprintf(stderr, "  %s: stream %zu: %s: %s\n", what, i, echo_result_name(s[i].result),
                    s[i].msg);
    }
    if (bad) {
        fprintf(stderr, "  %s: results:", what);
        for (int r = 0; r <= ES_TIMEOUT; r++)
            if (counts[r])
                fprintf(stderr, " %s=%zu", echo_result_name((echo_result)r), counts[r]);
        fputc('\n', stderr);
        echo_fail("%s: %zu of %zu streams did not get their exact echo", what, bad, n);
    }
}

void echo_signal_midway_tick(echo_group *g)
{
    echo_signal_midway *m = g->o->user;
    if (m->sent || !g->released)
        return;
    uint64_t echoed = 0, total = 0;
    for (size_t i = 0; i < g->n; i++) {
        echoed += g->s[i].recvd;
        total += g->s[i].total;
    }
    if ((double)echoed < m->fraction * (double)total)
        return;
    m->finished_at = g->finished;
    CHECK(kill(m->pid, m->sig) == 0);
    m->sent = 1;
    echo_note("%s: signal %d after %llu of %llu bytes echoed, %zu streams complete", g->o->what,
              m->sig, (unsigned long long)echoed, (unsigned long long)total, g->finished);
}
