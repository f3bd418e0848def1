/* examples/udp-echo-server.c: datagrams of 0 to 65,507 bytes (every byte
 * value) come back to their sender uppercased, one reply each, for two
 * clients at once; it runs until killed; a bad port is refused with exit 1.
 * Run as: example_udp_echo_server PATH/evmux-example-udp-echo-server */
#include "example_harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *server_path;

static int client_to(int port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    return fd;
}

static void test_echo(void)
{
    static const size_t sizes[] = {0, 1, 100, 1472, 8192, 65507};
    static uint8_t sent[65507], want[65507], got[65536];
    echo_proc p;
    int port = example_start_server(&p, server_path);
    int fds[2] = {client_to(port), client_to(port)};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        for (int c = 0; c < 2; c++) {
            echo_payload(i * 2 + (size_t)c, 0, sent, sizes[i]);
            CHECK(send(fds[c], sent, sizes[i], 0) == (ssize_t)sizes[i]);
        }
        for (int c = 0; c < 2; c++) {
            echo_payload(i * 2 + (size_t)c, 0, sent, sizes[i]);
            echo_upper_buf(want, sent, sizes[i]);
            struct pollfd pfd = {.fd = fds[c], .events = POLLIN};
            if (poll(&pfd, 1, 5000) != 1)
                echo_fail("no reply to a %zu-byte datagram", sizes[i]);
            ssize_t n = recv(fds[c], got, sizeof got, 0);
            if (n != (ssize_t)sizes[i] || memcmp(got, want, sizes[i]) != 0)
                echo_fail("a %zu-byte datagram came back as %zd bytes, or changed", sizes[i], n);
        }
    }
    close(fds[0]);
    close(fds[1]);
    echo_sleep_ms(100);
    if (echo_proc_wait(&p, 0))
        echo_fail("the server exited after its clients went");
    echo_proc_kill(&p);
}

static void test_bad_port(void)
{
    char *argv[] = {(char *)server_path, "70000", NULL};
    echo_proc p;
    echo_spawn(&p, argv, ECHO_PIPE_OUT | ECHO_PIPE_ERR, 0);
    example_expect_exit(&p, 1, 10000, "port 70000");
}

int main(int argc, char **argv)
{
    example_init(argc, argv, 1, 120);
    server_path = argv[1];
    RUN_TEST(test_echo);
    RUN_TEST(test_bad_port);
    echo_note("done");
    return 0;
}
