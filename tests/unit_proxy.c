/* evmux_proxy_parse and evmux_proxy_tlv (src/proxy.c):
 *  - each valid header (v1 TCP4, TCP6, UNKNOWN with and without addresses;
 *    v2 PROXY over IPv4, IPv6 and Unix, LOCAL, AF_UNSPEC, with TLVs, at the
 *    longest length accepted) parses to its exact length, with the
 *    addresses and ports encoded, and the application's bytes after it
 *    untouched;
 *  - every shorter prefix of each is -EAGAIN, and every single-byte change
 *    of each gives a documented result, a length within the buffer (each
 *    buffer a heap block of exactly its length, so ASan sees any read past
 *    it);
 *  - refusals come at the first byte that decides them (the test checks
 *    every prefix on both sides of it), with the error documented;
 *  - TLVs: found by type, the first of two, -ENOENT, -EPROTO for a list
 *    that runs past its end wherever the damage is;
 *  - a fuzz loop (seed printed; EVMUX_PROXY_SEED sets it) of random and
 *    mutated buffers: only documented results, > 0 never past len, and a
 *    header accepted is accepted alone and not before its end. */
#include "unit_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/un.h>

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
/* What the application sends after the header: the parser must not care. */
static const unsigned char app_data[] = "GET / HTTP/1.0\r\n\0\xff PROXY TCP4";
#define APP_LEN (sizeof app_data - 1)

/* A heap block of exactly len bytes holding bytes, so that a read past
 * len is an ASan report; the caller frees it. */
static unsigned char *exact_copy(const void *bytes, size_t len)
{
    unsigned char *p = malloc(len ? len : 1);
    CHECK(p != NULL);
    if (len)
        memcpy(p, bytes, len);
    return p;
}

/* Parses exactly len bytes (a heap copy), checking that the result is one
 * of the documented values and that *out is untouched unless it is > 0. */
static ssize_t parse_exact(const void *bytes, size_t len, evmux_proxy_header *out)
{
    evmux_proxy_header h, before;
    memset(&h, 0x5a, sizeof h);
    before = h;
    unsigned char *p = exact_copy(bytes, len);
    ssize_t rc = evmux_proxy_parse(p, len, &h);
    CHECK(rc > 0 || rc == -EAGAIN || rc == -EPROTO || rc == -EMSGSIZE);
    if (rc > 0) {
        CHECK((size_t)rc <= len);
        CHECK(memcmp(p, bytes, len) == 0);
        /* The pointer into the freed copy is useless: re-aim it. */
        if (h.tlvs != NULL) {
            CHECK(h.tlvs >= p + 16 && h.tlvs + h.tlvs_len == p + rc);
            h.tlvs = (const unsigned char *)bytes + (h.tlvs - p);
        }
    } else {
        CHECK(memcmp(&h, &before, sizeof h) == 0);
    }
    free(p);
    if (out)
        *out = h;
    return rc;
}

/* ---- building headers ---- */

struct header {
    unsigned char b[EVMUX_PROXY_HEADER_MAX + 64];
    size_t len;      /* the header's bytes */
    size_t with_app; /* and the application's after them */
};

static void add_app(struct header *h)
{
    memcpy(h->b + h->len, app_data, APP_LEN);
    h->with_app = h->len + APP_LEN;
}

static void v1(struct header *h, const char *line)
{
    h->len = strlen(line);
    CHECK(h->len + APP_LEN <= sizeof h->b);
    memcpy(h->b, line, h->len);
    add_app(h);
}

static void v2(struct header *h, unsigned ver_cmd, unsigned fam, const void *block, size_t n)
{
    CHECK(16 + n + APP_LEN <= sizeof h->b);
    memcpy(h->b, sig, 12);
    h->b[12] = (unsigned char)ver_cmd;
    h->b[13] = (unsigned char)fam;
    h->b[14] = (unsigned char)(n >> 8);
    h->b[15] = (unsigned char)n;
    if (n)
        memcpy(h->b + 16, block, n);
    h->len = 16 + n;
    add_app(h);
}

/* An address block of IPv4 or IPv6 addresses and ports. */
static size_t inet_block(unsigned char *b, int family, const char *src, const char *dst,
                         unsigned sport, unsigned dport)
{
    size_t a = family == AF_INET ? 4 : 16;
    CHECK(inet_pton(family, src, b) == 1);
    CHECK(inet_pton(family, dst, b + a) == 1);
    b[2 * a] = (unsigned char)(sport >> 8);
    b[2 * a + 1] = (unsigned char)sport;
    b[2 * a + 2] = (unsigned char)(dport >> 8);
    b[2 * a + 3] = (unsigned char)dport;
    return 2 * a + 4;
}

/* A TLV at b; value NULL: its n bytes are in place already. */
static size_t tlv(unsigned char *b, unsigned type, const void *value, size_t n)
{
    b[0] = (unsigned char)type;
    b[1] = (unsigned char)(n >> 8);
    b[2] = (unsigned char)n;
    if (value != NULL && n > 0)
        memcpy(b + 3, value, n);
    return 3 + n;
}

/* ---- checking what came out ---- */

static void check_inet(const struct sockaddr_storage *ss, socklen_t len, const char *ip,
                       unsigned port)
{
    struct sockaddr_storage want;
    socklen_t want_len;
    memset(&want, 0, sizeof want);
    CHECK_OK(evmux_addr_ip(ip, port, &want, &want_len));
    CHECK_EQ(len, want_len);
    CHECK_EQ(ss->ss_family, want.ss_family);
    CHECK(memcmp(ss, &want, want_len) == 0); /* family, port, address, zeros */
}

static void check_unix(const struct sockaddr_storage *ss, socklen_t len, const void *name,
                       size_t name_len)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
    CHECK_EQ(un->sun_family, AF_UNIX);
    CHECK_EQ(len, offsetof(struct sockaddr_un, sun_path) + name_len);
    CHECK(memcmp(un->sun_path, name, name_len) == 0);
}

/* Parses h with the application's bytes after it: the header's exact
 * length, then checks common to every valid header. */
static evmux_proxy_header parse_valid(const struct header *h)
{
    evmux_proxy_header out;
    ssize_t rc = parse_exact(h->b, h->with_app, &out);
    if (rc != (ssize_t)h->len) {
        fprintf(stderr, "parse of %.*s...: %zd (%s), header is %zu bytes\n", 20, (const char *)h->b,
                rc, rc < 0 ? evmux_strerror((int)rc) : "", h->len);
        CHECK(!"the header's exact length");
    }
    CHECK(memcmp(h->b + h->len, app_data, APP_LEN) == 0);
    CHECK(out.version == 1 || out.version == 2);
    if (out.local) {
        CHECK_EQ(out.source_len, 0);
        CHECK_EQ(out.destination_len, 0);
        CHECK_EQ(out.socktype, 0);
    }
    /* Alone, without the application's bytes, the same. */
    evmux_proxy_header alone;
    CHECK_EQ(parse_exact(h->b, h->len, &alone), (ssize_t)h->len);
    CHECK(memcmp(&alone, &out, sizeof out) == 0);
    return out;
}

/* ---- the valid headers, for the tests that go through them all ---- */

#define MAX_CASES 24
static struct header cases[MAX_CASES];
static size_t n_cases;

static struct header *new_case(void)
{
    CHECK(n_cases < MAX_CASES);
    return &cases[n_cases++];
}

static const char long6[] = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";

static void test_v1_tcp4(void)
{
    struct header *h = new_case();
    v1(h, "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
    evmux_proxy_header out = parse_valid(h);
    CHECK_EQ(out.version, 1);
    CHECK_EQ(out.local, 0);
    CHECK_EQ(out.socktype, SOCK_STREAM);
    check_inet(&out.source, out.source_len, "192.0.2.1", 56324);
    check_inet(&out.destination, out.destination_len, "198.51.100.7", 443);
    CHECK(out.tlvs == NULL && out.tlvs_len == 0);

    /* The spec's longest TCP4 line, and the smallest numbers. */
    h = new_case();
    v1(h, "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n");
    CHECK_EQ(h->len, 56);
    out = parse_valid(h);
    check_inet(&out.source, out.source_len, "255.255.255.255", 65535);
    check_inet(&out.destination, out.destination_len, "255.255.255.255", 65535);
    h = new_case();
    v1(h, "PROXY TCP4 0.0.0.0 10.0.0.1 0 1\r\n");
    out = parse_valid(h);
    check_inet(&out.source, out.source_len, "0.0.0.0", 0);
    check_inet(&out.destination, out.destination_len, "10.0.0.1", 1);
}

static void test_v1_tcp6(void)
{
    struct header *h = new_case();
    v1(h, "PROXY TCP6 2001:db8::1 ::ffff:192.0.2.7 1 65535\r\n");
    evmux_proxy_header out = parse_valid(h);
    CHECK_EQ(out.version, 1);
    CHECK_EQ(out.local, 0);
    CHECK_EQ(out.socktype, SOCK_STREAM);
    check_inet(&out.source, out.source_len, "2001:db8::1", 1);
    check_inet(&out.destination, out.destination_len, "::ffff:192.0.2.7", 65535);

    /* The spec's longest TCP6 line (104 bytes), upper-case digits too. */
    char line[160];
    snprintf(line, sizeof line, "PROXY TCP6 %s FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:fffe 65535 65535\r\n", long6);
    h = new_case();
    v1(h, line);
    CHECK_EQ(h->len, 104);
    out = parse_valid(h);
    check_inet(&out.source, out.source_len, long6, 65535);
    check_inet(&out.destination, out.destination_len, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
    h = new_case();
    v1(h, "PROXY TCP6 :: ::1 80 8080\r\n");
    out = parse_valid(h);
    check_inet(&out.source, out.source_len, "::", 80);
    check_inet(&out.destination, out.destination_len, "::1", 8080);
}

static void test_v1_unknown(void)
{
    struct header *h = new_case();
    v1(h, "PROXY UNKNOWN\r\n");
    evmux_proxy_header out = parse_valid(h);
    CHECK_EQ(out.version, 1);
    CHECK_EQ(out.local, 1);
    CHECK(out.tlvs == NULL);

    /* The spec's worst case: 107 bytes, the longest line there is. */
    char line[160];
    snprintf(line, sizeof line, "PROXY UNKNOWN %s %s 65535 65535\r\n", long6, long6);
    h = new_case();
    v1(h, line);
    CHECK_EQ(h->len, 107);
    out = parse_valid(h);
    CHECK_EQ(out.local, 1);
    CHECK_EQ(out.version, 1);

    /* Whatever follows UNKNOWN is ignored, even if not addresses. */
    h = new_case();
    v1(h, "PROXY UNKNOWN anything at all, 1.2.3 ~\r\n");
    out = parse_valid(h);
    CHECK_EQ(out.local, 1);
}

static void test_v2_ipv4(void)
{
    unsigned char block[64];
    size_t n = inet_block(block, AF_INET, "203.0.113.9", "10.1.2.3", 40000, 8081);
    struct header *h = new_case();
    v2(h, 0x21, 0x11, block, n);
    evmux_proxy_header out = parse_valid(h);
    CHECK_EQ(out.version, 2);
    CHECK_EQ(out.local, 0);
    CHECK_EQ(out.socktype, SOCK_STREAM);
    check_inet(&out.source, out.source_len, "203.0.113.9", 40000);
    check_inet(&out.destination, out.destination_len, "10.1.2.3", 8081);
    CHECK(out.tlvs == NULL && out.tlvs_len == 0);

    /* UDP over IPv4. */
    n = inet_block(block, AF_INET, "255.255.255.255", "0.0.0.0", 65535, 0);
    h = new_case();
    v2(h, 0x21, 0x12, block, n);
    out = parse_valid(h);
    CHECK_EQ(out.socktype, SOCK_DGRAM);
    check_inet(&out.source, out.source_len, "255.255.255.255", 65535);
    check_inet(&out.destination, out.destination_len, "0.0.0.0", 0);
}

static void test_v2_ipv6(void)
{
    unsigned char block[64];
    size_t n = inet_block(block, AF_INET6, "2001:db8::42", "fe80::1:2", 1, 65535);
    struct header *h = new_case();
    v2(h, 0x21, 0x21, block, n);
    evmux_proxy_header out = parse_valid(h);
    CHECK_EQ(out.version, 2);
    CHECK_EQ(out.local, 0);
    CHECK_EQ(out.socktype, SOCK_STREAM);
    check_inet(&out.source, out.source_len, "2001:db8::42", 1);
    check_inet(&out.destination, out.destination_len, "fe80::1:2", 65535);

    h = new_case();
    v2(h, 0x21, 0x22, block, n);
    out = parse_valid(h);
    CHECK_EQ(out.socktype, SOCK_DGRAM);
    check_inet(&out.source, out.source_len, "2001:db8::42", 1);
}

static void test_v2_unix(void)
{
    unsigned char block[216];
    memset(block, 0, sizeof block);
    strcpy((char *)block, "/run/client.sock");
    strcpy((char *)block + 108, "/run/haproxy.sock");
    struct header *h = new_case();
    v2(h, 0x21, 0x31, block, sizeof block);
    evmux_proxy_header out = parse_valid(h);
    CHECK_EQ(out.version, 2);
    CHECK_EQ(out.local, 0);
    CHECK_EQ(out.socktype, SOCK_STREAM);
    check_unix(&out.source, out.source_len, "/run/client.sock", sizeof "/run/client.sock");
    check_unix(&out.destination, out.destination_len, "/run/haproxy.sock",
               sizeof "/run/haproxy.sock");

    /* Unnamed source (a client's usual), abstract destination; datagrams. */
    memset(block, 0, sizeof block);
    memcpy(block + 108, "\0evmux-abstract", 15);
    h = new_case();
    v2(h, 0x21, 0x32, block, sizeof block);
    out = parse_valid(h);
    CHECK_EQ(out.socktype, SOCK_DGRAM);
    check_unix(&out.source, out.source_len, "", 0);
    check_unix(&out.destination, out.destination_len, "\0evmux-abstract", 15);

    /* The longest path that keeps its NUL: 107 bytes, the whole sun_path. */
    memset(block, 'p', sizeof block);
    block[107] = '\0';
    block[108] = '/';
    block[109] = '\0';
    h = new_case();
    v2(h, 0x21, 0x31, block, sizeof block);
    out = parse_valid(h);
    CHECK_EQ(out.source_len, sizeof(struct sockaddr_un));
    check_unix(&out.source, out.source_len, block, 108);
    check_unix(&out.destination, out.destination_len, "/", 2);

    /* A path with no NUL in its 108 bytes cannot be NUL-terminated in
     * sun_path: refused. */
    block[107] = 'p';
    struct header bad;
    v2(&bad, 0x21, 0x31, block, sizeof block);
    CHECK_EQ(parse_exact(bad.b, bad.with_app, NULL), -EPROTO);
    block[107] = '\0';
    block[109] = '/';
    memset(block + 108, 'q', 108);
    v2(&bad, 0x21, 0x31, block, sizeof block);
    CHECK_EQ(parse_exact(bad.b, bad.with_app, NULL), -EPROTO);
}

static void test_v2_local(void)
{
    /* A health check: no addresses, length 0. */
    struct header *h = new_case();
    v2(h, 0x20, 0x00, NULL, 0);
    evmux_proxy_header out = parse_valid(h);
    CHECK_EQ(out.version, 2);
    CHECK_EQ(out.local, 1);
    CHECK(out.tlvs == NULL && out.tlvs_len == 0);

    /* LOCAL with a family and its addresses: the family is ignored, the
     * addresses skipped, not reported. */
    unsigned char block[64];
    size_t n = inet_block(block, AF_INET, "192.0.2.1", "192.0.2.2", 1, 2);
    h = new_case();
    v2(h, 0x20, 0x11, block, n);
    out = parse_valid(h);
    CHECK_EQ(out.local, 1);
    CHECK(out.tlvs == NULL);

    /* LOCAL, IPv6 family, but no room for the addresses: still a header. */
    h = new_case();
    v2(h, 0x20, 0x21, block, 5);
    out = parse_valid(h);
    CHECK_EQ(out.local, 1);
    CHECK(out.tlvs == NULL && out.tlvs_len == 0);

    /* PROXY over AF_UNSPEC: nothing we could read, so local too. */
    h = new_case();
    v2(h, 0x21, 0x00, NULL, 0);
    out = parse_valid(h);
    CHECK_EQ(out.local, 1);
}

static void test_v2_tlvs(void)
{
    unsigned char block[256];
    size_t n = inet_block(block, AF_INET6, "2001:db8::7", "2001:db8::8", 50000, 443);
    size_t addresses = n;
    n += tlv(block + n, EVMUX_PROXY_TLV_ALPN, "h2", 2);
    n += tlv(block + n, EVMUX_PROXY_TLV_NOOP, NULL, 0);
    n += tlv(block + n, EVMUX_PROXY_TLV_AUTHORITY, "example.com", 11);
    n += tlv(block + n, 0xEA, "\x01vpce-0123", 10);
    n += tlv(block + n, EVMUX_PROXY_TLV_ALPN, "http/1.1", 8); /* a second: not the one found */
    struct header *h = new_case();
    v2(h, 0x21, 0x21, block, n);
    evmux_proxy_header out = parse_valid(h);
    check_inet(&out.source, out.source_len, "2001:db8::7", 50000);
    CHECK(out.tlvs == h->b + 16 + addresses);
    CHECK_EQ(out.tlvs_len, n - addresses);

    const void *v;
    size_t vlen;
    CHECK_OK(evmux_proxy_tlv(&out, EVMUX_PROXY_TLV_ALPN, &v, &vlen));
    CHECK(vlen == 2 && memcmp(v, "h2", 2) == 0);
    CHECK_OK(evmux_proxy_tlv(&out, EVMUX_PROXY_TLV_AUTHORITY, &v, &vlen));
    CHECK(vlen == 11 && memcmp(v, "example.com", 11) == 0);
    CHECK_OK(evmux_proxy_tlv(&out, 0xEA, &v, &vlen));
    CHECK(vlen == 10 && memcmp(v, "\x01vpce-0123", 10) == 0);
    CHECK_OK(evmux_proxy_tlv(&out, EVMUX_PROXY_TLV_NOOP, &v, &vlen));
    CHECK_EQ(vlen, 0);
    CHECK((const unsigned char *)v >= out.tlvs && (const unsigned char *)v <= out.tlvs + out.tlvs_len);
    v = "untouched";
    vlen = 99;
    CHECK_EQ(evmux_proxy_tlv(&out, EVMUX_PROXY_TLV_UNIQUE_ID, &v, &vlen), -ENOENT);
    CHECK(strcmp(v, "untouched") == 0 && vlen == 99);
    CHECK_EQ(evmux_proxy_tlv(&out, EVMUX_PROXY_TLV_SSL, &v, &vlen), -ENOENT);

    /* Bad arguments. */
    CHECK_EQ(evmux_proxy_tlv(NULL, 1, &v, &vlen), -EINVAL);
    CHECK_EQ(evmux_proxy_tlv(&out, 1, NULL, &vlen), -EINVAL);
    CHECK_EQ(evmux_proxy_tlv(&out, 1, &v, NULL), -EINVAL);
    CHECK_EQ(evmux_proxy_tlv(&out, 256, &v, &vlen), -EINVAL);
    CHECK_EQ(evmux_proxy_tlv(&out, 0x101, &v, &vlen), -EINVAL); /* not 0x01 */
    evmux_proxy_header odd = out;
    odd.tlvs = NULL;
    CHECK_EQ(evmux_proxy_tlv(&odd, 1, &v, &vlen), -EINVAL);

    /* A TLV that runs past the list: the parser takes the header (TLVs
     * are not its business), evmux_proxy_tlv refuses the list whatever
     * type is asked, also one found before the damage. */
    size_t good = n;
    n += tlv(block + n, EVMUX_PROXY_TLV_UNIQUE_ID, "0123456789", 10);
    block[good + 2] = 11; /* claims one byte more than there is */
    struct header bad;
    v2(&bad, 0x21, 0x21, block, n);
    CHECK_EQ(parse_exact(bad.b, bad.with_app, &out), (ssize_t)bad.len);
    CHECK_EQ(evmux_proxy_tlv(&out, EVMUX_PROXY_TLV_UNIQUE_ID, &v, &vlen), -EPROTO);
    CHECK_EQ(evmux_proxy_tlv(&out, EVMUX_PROXY_TLV_ALPN, &v, &vlen), -EPROTO);
    CHECK_EQ(evmux_proxy_tlv(&out, 0x77, &v, &vlen), -EPROTO);
    /* Exactly right, it is found. */
    block[good + 2] = 10;
    v2(&bad, 0x21, 0x21, block, n);
    CHECK_EQ(parse_exact(bad.b, bad.with_app, &out), (ssize_t)bad.len);
    CHECK_OK(evmux_proxy_tlv(&out, EVMUX_PROXY_TLV_UNIQUE_ID, &v, &vlen));
    CHECK(vlen == 10 && memcmp(v, "0123456789", 10) == 0);
    /* A fragment shorter than a TLV's 3 bytes at the end: malformed. */
    for (size_t frag = 1; frag <= 2; frag++) {
        v2(&bad, 0x21, 0x21, block, n + frag);
        CHECK_EQ(parse_exact(bad.b, bad.with_app, &out), (ssize_t)bad.len);
        CHECK_EQ(evmux_proxy_tlv(&out, EVMUX_PROXY_TLV_ALPN, &v, &vlen), -EPROTO);
    }

    /* A v1 header, or v2 without TLVs, has none. */
    evmux_proxy_header one;
    CHECK_EQ(parse_exact("PROXY UNKNOWN\r\n", 15, &one), 15);
    CHECK_EQ(evmux_proxy_tlv(&one, EVMUX_PROXY_TLV_ALPN, &v, &vlen), -ENOENT);

    /* TLVs on LOCAL over AF_UNSPEC start right after the fixed bytes. */
    n = tlv(block, EVMUX_PROXY_TLV_CRC32C, "\0\0\0\0", 4);
    h = new_case();
    v2(h, 0x20, 0x00, block, n);
    out = parse_valid(h);
    CHECK_EQ(out.local, 1);
    CHECK(out.tlvs == h->b + 16 && out.tlvs_len == n);
    CHECK_OK(evmux_proxy_tlv(&out, EVMUX_PROXY_TLV_CRC32C, &v, &vlen));
    CHECK_EQ(vlen, 4);
}

/* The longest header accepted, and one byte more. */
static void test_v2_longest(void)
{
    static unsigned char block[EVMUX_PROXY_HEADER_MAX];
    size_t max_block = EVMUX_PROXY_HEADER_MAX - 16;
    size_t n = inet_block(block, AF_INET, "192.0.2.1", "192.0.2.2", 1, 2);
    memset(block + n, 0xcc, max_block - n);
    tlv(block + n, EVMUX_PROXY_TLV_NOOP, NULL, max_block - n - 3);
    struct header *h = new_case();
    v2(h, 0x21, 0x11, block, max_block);
    evmux_proxy_header out = parse_valid(h);
    CHECK_EQ(h->len, EVMUX_PROXY_HEADER_MAX);
    CHECK_EQ(out.tlvs_len, max_block - n);
    const void *v;
    size_t vlen;
    CHECK_OK(evmux_proxy_tlv(&out, EVMUX_PROXY_TLV_NOOP, &v, &vlen));
    CHECK_EQ(vlen, max_block - n - 3);

    /* One byte more is refused as soon as the length is known. */
    struct header big;
    block[max_block] = 0;
    v2(&big, 0x21, 0x11, block, max_block + 1);
    for (size_t len = 0; len <= big.with_app; len++)
        CHECK_EQ(parse_exact(big.b, len, NULL), len < 16 ? -EAGAIN : -EMSGSIZE);
}

/* Every prefix of every valid header is a correct beginning. */
static void test_truncations(void)
{
    for (size_t c = 0; c < n_cases; c++)
        for (size_t len = 0; len < cases[c].len; len++) {
            ssize_t rc = parse_exact(cases[c].b, len, NULL);
            if (rc != -EAGAIN) {
                fprintf(stderr, "case %zu, %zu of %zu bytes: %zd\n", c, len, cases[c].len, rc);
                CHECK(!"-EAGAIN for a prefix");
            }
        }
}

/* A result > 0 must be a header on its own: the same with exactly its
 * bytes, and never before its end (every shorter prefix -EAGAIN would
 * cost too much here; the one just short is checked). */
static void check_accepted(const unsigned char *p, size_t len, ssize_t rc,
                           const evmux_proxy_header *out)
{
    CHECK(rc > 0 && (size_t)rc <= len);
    CHECK(rc <= EVMUX_PROXY_HEADER_MAX);
    CHECK(out->version == 1 || out->version == 2);
    if (out->version == 1)
        CHECK(rc <= 107 && out->tlvs == NULL);
    if (out->local) {
        CHECK(out->source_len == 0 && out->destination_len == 0 && out->socktype == 0);
    } else {
        CHECK(out->socktype == SOCK_STREAM || out->socktype == SOCK_DGRAM);
        CHECK(out->source.ss_family == out->destination.ss_family);
        CHECK(out->source_len > 0 && out->source_len <= sizeof(struct sockaddr_storage));
        CHECK(out->destination_len > 0);
    }
    if (out->tlvs)
        CHECK(out->tlvs > p && out->tlvs + out->tlvs_len == p + rc && out->tlvs_len > 0);
    else
        CHECK_EQ(out->tlvs_len, 0);
    evmux_proxy_header again;
    CHECK_EQ(parse_exact(p, (size_t)rc, &again), rc);
    CHECK_EQ(parse_exact(p, (size_t)rc - 1, NULL), -EAGAIN);
}

/* Every single byte of every valid header replaced by every other value. */
static void test_corruptions(void)
{
    unsigned long accepted = 0, refused = 0;
    for (size_t c = 0; c < n_cases; c++) {
        size_t len = cases[c].with_app;
        unsigned char *p = exact_copy(cases[c].b, len);
        for (size_t i = 0; i < cases[c].len; i++) {
            unsigned char orig = p[i];
            for (unsigned v = 0; v < 256; v++) {
                if (v == orig)
                    continue;
                p[i] = (unsigned char)v;
                evmux_proxy_header out;
                ssize_t rc = evmux_proxy_parse(p, len, &out);
                CHECK(rc > 0 || rc == -EAGAIN || rc == -EPROTO || rc == -EMSGSIZE);
                if (rc > 0) {
                    accepted++;
                    /* Each accepted change: a few of them, fully checked. */
                    if ((i + v) % 17 == 0)
                        check_accepted(p, len, rc, &out);
                    else
                        CHECK((size_t)rc <= len);
                } else {
                    refused++;
                }
            }
            p[i] = orig;
        }
        CHECK(memcmp(p, cases[c].b, len) == 0);
        free(p);
    }
    /* Both kinds occur, or the loop tested nothing. */
    CHECK(accepted > 0 && refused > 0);
}

/* p[0..n) is refused with err exactly from byte `at` on: every prefix up
 * to `at` bytes is -EAGAIN, every longer one err. */
static void check_refused_at(const void *p, size_t n, size_t at, ssize_t err)
{
    CHECK(at < n);
    for (size_t len = 0; len <= n; len++) {
        ssize_t want = len <= at ? -EAGAIN : err;
        ssize_t rc = parse_exact(p, len, NULL);
        if (rc != want) {
            fprintf(stderr, "\"%.*s\": %zu bytes: %zd, want %zd\n", (int)n, (const char *)p, len,
                    rc, want);
            CHECK(!"refused at the deciding byte");
        }
    }
}


/* line is refused with err at the byte after its first strlen(ok) bytes,
 * which are a correct beginning. */
static void refused_after(const char *line, const char *ok, ssize_t err)
{
    size_t at = strlen(ok);
    CHECK(strncmp(line, ok, at) == 0);
    check_refused_at(line, strlen(line), at, err);
}

static void test_refuse_other_protocols(void)
{
    /* Their first byte is enough. */
    check_refused_at("GET / HTTP/1.0\r\n", 16, 0, -EPROTO);
    check_refused_at("\x16\x03\x01\x02\x00", 5, 0, -EPROTO); /* a TLS ClientHello */
    check_refused_at("SSH-2.0-x\r\n", 11, 0, -EPROTO);
    check_refused_at("proxy TCP4 ", 11, 0, -EPROTO);
    check_refused_at("\0\0\0\0", 4, 0, -EPROTO);
    /* Beginnings of the two signatures, then not. */
    check_refused_at("\r\n\r\nQUIT\n", 9, 4, -EPROTO);
    check_refused_at("\r\n\r\n\0\r\nQUIX\n\x21", 13, 10, -EPROTO); /* the signature reads "...QUIT\n" */
    refused_after("PROXY\r\n", "PROXY", -EPROTO);
    refused_after("PROXY  TCP4", "PROXY ", -EPROTO);
    refused_after("PROXYTCP4", "PROXY", -EPROTO);
}

static void test_refuse_v1_protocol(void)
{
    refused_after("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP", -EPROTO);
    refused_after("PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4", -EPROTO);
    refused_after("PROXY TCP 1.2.3.4", "PROXY TCP", -EPROTO);
    refused_after("PROXY tcp4 1.2.3.4", "PROXY ", -EPROTO);
    refused_after("PROXY UDP4 1.2.3.4", "PROXY U", -EPROTO); /* U as in UNKNOWN */
    refused_after("PROXY UNKNOWNX\r\n", "PROXY UNKNOWN", -EPROTO);
    refused_after("PROXY UNKNOW\r\n", "PROXY UNKNOW", -EPROTO);
    refused_after("PROXY TCP4\r\n", "PROXY TCP4", -EPROTO);
}

static void test_refuse_v1_addresses(void)
{
    /* IPv4: checked digit by digit. */
    refused_after("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.25", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.1000 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.100", -EPROTO);
    /* Leading zeros: the spec forbids them (octal or decimal?). */
    refused_after("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 0", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.00.8 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.0", -EPROTO);
    refused_after("PROXY TCP4 1.2..3 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.", -EPROTO);
    refused_after("PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n", "PROXY TCP4 ", -EPROTO);
    refused_after("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "PROXY TCP4 ", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4\r\n", "PROXY TCP4 1.2.3.4", -EPROTO);
    refused_after("PROXY TCP4  1.2.3.4", "PROXY TCP4 ", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4  5.6.7.8", "PROXY TCP4 1.2.3.4 ", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8.", "PROXY TCP4 1.2.3.4 5.6.7.8", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4\t5.6.7.8", "PROXY TCP4 1.2.3.4", -EPROTO);
    /* IPv6: its shape as it arrives, inet_pton at the space after it. */
    refused_after("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "PROXY TCP6 1.2.3.4", -EPROTO);
    refused_after("PROXY TCP6 1:::2 ::1 1 2\r\n", "PROXY TCP6 1::", -EPROTO);
    refused_after("PROXY TCP6 1::2::3 ::1 1 2\r\n", "PROXY TCP6 1::2:", -EPROTO);
    refused_after("PROXY TCP6 12345::1 ::1 1 2\r\n", "PROXY TCP6 1234", -EPROTO);
    refused_after("PROXY TCP6 ::g ::1 1 2\r\n", "PROXY TCP6 ::", -EPROTO);
    refused_after("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "PROXY TCP6 1:2:3:4:5:6:7:8:9", -EPROTO);
    refused_after("PROXY TCP6 ::1.2.3.4:5 ::1 1 2\r\n", "PROXY TCP6 ::1.2.3.4", -EPROTO);
    refused_after("PROXY TCP6 ::1.2.3.04 ::1 1 2\r\n", "PROXY TCP6 ::1.2.3.0", -EPROTO);
    refused_after("PROXY TCP6 ::1%eth0 ::1 1 2\r\n", "PROXY TCP6 ::1", -EPROTO);
    refused_after("PROXY TCP6 [::1] ::1 1 2\r\n", "PROXY TCP6 ", -EPROTO);
    refused_after("PROXY TCP6 ::1 ::1:: 1 2\r\n", "PROXY TCP6 ::1 ::1:", -EPROTO);
    refused_after("PROXY TCP6 ::1 1.2.3.4 1 2\r\n", "PROXY TCP6 ::1 1.2.3.4", -EPROTO);
}

static void test_refuse_v1_ports(void)
{
    /* 0..65535 decided digit by digit; no sign, no leading zero. */
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 6553", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 6553", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 100000 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 10000", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 9999", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 ", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 ", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 ", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 0", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 0", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 0x50 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 0", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 ", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 ", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2", -EPROTO);
    /* Ports at the edges of the range are fine ("0" is no leading zero). */
    CHECK_EQ(parse_exact("PROXY TCP4 1.2.3.4 5.6.7.8 65535 0\r\n", 36, NULL), 36);
}

static void test_refuse_v1_line_end(void)
{
    /* CRLF and nothing else: no lone LF, no CR without LF. */
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", -EPROTO);
    refused_after("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", -EPROTO);
    refused_after("PROXY UNKNOWN\n", "PROXY UNKNOWN", -EPROTO);
    refused_after("PROXY UNKNOWN\rX", "PROXY UNKNOWN\r", -EPROTO);
    /* After UNKNOWN anything is ignored, but it is still one text line. */
    refused_after("PROXY UNKNOWN abc\ndef\r\n", "PROXY UNKNOWN abc", -EPROTO);
    refused_after("PROXY UNKNOWN abc\rdef\r\n", "PROXY UNKNOWN abc\r", -EPROTO);
    refused_after("PROXY UNKNOWN ab\x01", "PROXY UNKNOWN ab", -EPROTO);
    refused_after("PROXY UNKNOWN ab\x80", "PROXY UNKNOWN ab", -EPROTO);
    refused_after("PROXY UNKNOWN ab\x7f", "PROXY UNKNOWN ab", -EPROTO);
    CHECK_EQ(parse_exact("PROXY UNKNOWN \r\n", 16, NULL), 16);

    /* No CRLF within 107 bytes: too long, decided at the 107th. */
    char line[200];
    memset(line, 'x', sizeof line);
    memcpy(line, "PROXY UNKNOWN ", 14);
    check_refused_at(line, sizeof line, 106, -EMSGSIZE);
    /* CRLF one byte too late: CR is the 107th byte. */
    line[106] = '\r';
    line[107] = '\n';
    check_refused_at(line, 108, 106, -EMSGSIZE);
    /* One byte earlier it fits: 107 bytes. */
    line[105] = '\r';
    line[106] = '\n';
    CHECK_EQ(parse_exact(line, 107, NULL), 107);
    CHECK_EQ(parse_exact(line, sizeof line, NULL), 107);
    /* A TCP6 line whose every field is right so far but that cannot end
     * within 107 bytes (IPv4-mapped addresses of 45 characters). */
    const char *mapped = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
    snprintf(line, sizeof line, "PROXY TCP6 %s %s 65535 65535\r\n", mapped, mapped);
    check_refused_at(line, strlen(line), 106, -EMSGSIZE);
}

/* A v2 header's first 16 bytes. */
static void v2_start(unsigned char *b, unsigned ver_cmd, unsigned fam, unsigned len)
{
    memcpy(b, sig, 12);
    b[12] = (unsigned char)ver_cmd;
    b[13] = (unsigned char)fam;
    b[14] = (unsigned char)(len >> 8);
    b[15] = (unsigned char)len;
}

static void test_refuse_v2(void)
{
    unsigned char b[EVMUX_PROXY_HEADER_MAX + 300];
    memset(b, 0, sizeof b);
    /* Version 2 only; LOCAL (0) or PROXY (1) only. */
    static const unsigned bad_ver_cmd[] = {0x00, 0x01, 0x10, 0x11, 0x22, 0x2f, 0x30, 0x31, 0xff};
    for (size_t i = 0; i < COUNT(bad_ver_cmd); i++) {
        v2_start(b, bad_ver_cmd[i], 0x11, 12);
        check_refused_at(b, 16 + 12, 12, -EPROTO);
    }
    /* The seven family and transport bytes the spec defines, no other,
     * whatever the command. */
    static const unsigned bad_fam[] = {0x01, 0x02, 0x03, 0x10, 0x13, 0x20, 0x23, 0x30,
                                       0x33, 0x41, 0x44, 0xf1, 0xff};
    for (size_t i = 0; i < COUNT(bad_fam); i++) {
        v2_start(b, 0x21, bad_fam[i], 216);
        check_refused_at(b, 16 + 216, 13, -EPROTO);
        v2_start(b, 0x20, bad_fam[i], 0);
        check_refused_at(b, 16, 13, -EPROTO);
    }
    /* PROXY needs its addresses within the length: refused as soon as the
     * length is known, one byte short; the exact size is fine. */
    static const struct {
        unsigned fam, size;
    } sizes[] = {{0x11, 12}, {0x12, 12}, {0x21, 36}, {0x22, 36}, {0x31, 216}, {0x32, 216}};
    for (size_t i = 0; i < COUNT(sizes); i++) {
        v2_start(b, 0x21, sizes[i].fam, sizes[i].size - 1);
        check_refused_at(b, 16 + sizes[i].size - 1, 15, -EPROTO);
        v2_start(b, 0x21, sizes[i].fam, 0);
        check_refused_at(b, 16, 15, -EPROTO);
        v2_start(b, 0x21, sizes[i].fam, sizes[i].size);
        memset(b + 16, 0, sizes[i].size);
        CHECK_EQ(parse_exact(b, 16 + sizes[i].size, NULL), (ssize_t)(16 + sizes[i].size));
    }
    /* Lengths over the cap: at the high byte when it alone says so. */
    v2_start(b, 0x21, 0x11, 65535);
    check_refused_at(b, 16 + 64, 14, -EMSGSIZE);
    v2_start(b, 0x20, 0x00, 0x0500);
    check_refused_at(b, 16 + 64, 14, -EMSGSIZE);
    v2_start(b, 0x21, 0x11, EVMUX_PROXY_HEADER_MAX - 16 + 1);
    check_refused_at(b, EVMUX_PROXY_HEADER_MAX + 1, 15, -EMSGSIZE);
    /* At the cap: -EAGAIN until the last byte is there. */
    v2_start(b, 0x21, 0x11, EVMUX_PROXY_HEADER_MAX - 16);
    for (size_t len = 0; len < EVMUX_PROXY_HEADER_MAX; len++)
        CHECK_EQ(parse_exact(b, len, NULL), -EAGAIN);
    CHECK_EQ(parse_exact(b, EVMUX_PROXY_HEADER_MAX, NULL), EVMUX_PROXY_HEADER_MAX);
}

static void test_arguments(void)
{
    evmux_proxy_header h;
    memset(&h, 0x5a, sizeof h);
    evmux_proxy_header before = h;
    CHECK_EQ(evmux_proxy_parse(NULL, 5, &h), -EINVAL);
    CHECK_EQ(evmux_proxy_parse("PROXY UNKNOWN\r\n", 15, NULL), -EINVAL);
    CHECK_EQ(evmux_proxy_parse(NULL, 0, NULL), -EINVAL);
    CHECK_EQ(evmux_proxy_parse(NULL, 0, &h), -EAGAIN); /* nothing yet */
    CHECK_EQ(evmux_proxy_parse("GET", 3, &h), -EPROTO);
    CHECK(memcmp(&h, &before, sizeof h) == 0);
    /* A second header right after the first is the application's. */
    const char two[] = "PROXY UNKNOWN\r\nPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
    CHECK_EQ(evmux_proxy_parse(two, sizeof two - 1, &h), 15);
    CHECK_EQ(h.local, 1);
}

static void build_cases(void)
{
    if (n_cases > 0)
        return;
    test_v1_tcp4();
    test_v1_tcp6();
    test_v1_unknown();
    test_v2_ipv4();
    test_v2_ipv6();
    test_v2_unix();
    test_v2_local();
    test_v2_tlvs();
    test_v2_longest();
}

/* ---- fuzzing ---- */

static size_t random_start(unsigned char *b, uint32_t *st)
{
    static const char *const text[] = {"PROXY ", "PROXY TCP4 ", "PROXY TCP6 ", "PROXY UNKNOWN",
                                       "PROXY TCP4 1.2.3.4 ", "PROXY TCP6 ::1 ::2 "};
    unsigned k = unit_rand(st) % (COUNT(text) + 2);
    if (k < COUNT(text)) {
        memcpy(b, text[k], strlen(text[k]));
        return strlen(text[k]);
    }
    memcpy(b, sig, 12);
    if (k == COUNT(text))
        return 12;
    static const unsigned char fams[] = {0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32};
    b[12] = (unsigned char)(0x20 + unit_rand(st) % 2);
    b[13] = fams[unit_rand(st) % COUNT(fams)];
    unsigned len = unit_rand(st) % 8 == 0 ? unit_rand(st) % 65536 : unit_rand(st) % 300;
    b[14] = (unsigned char)(len >> 8);
    b[15] = (unsigned char)len;
    return 16;
}

static void test_fuzz(void)
{
    build_cases();
    const char *env = getenv("EVMUX_PROXY_SEED");
    uint32_t seed = env && *env ? (uint32_t)strtoul(env, NULL, 0)
                                : (uint32_t)(unit_mono_ns() ^ ((uint64_t)getpid() << 16));
    if (seed == 0)
        seed = 1; /* xorshift stays at 0 */
    fprintf(stderr, "   seed %u (EVMUX_PROXY_SEED=%u repeats this run)\n", seed, seed);
    uint32_t st = seed;
    static const char alphabet[] = "0123456789abcdefABCDEF.: \r\n+-xP";
    static unsigned char b[EVMUX_PROXY_HEADER_MAX + 256];
    unsigned long results[4] = {0, 0, 0, 0}; /* > 0, -EAGAIN, -EPROTO, -EMSGSIZE */
    for (int iter = 0; iter < 200000; iter++) {
        size_t len = 0, cap = sizeof b;
        switch (unit_rand(&st) % 4) {
        case 0: /* random bytes, after a start that gets past the first byte */
            len = random_start(b, &st);
            for (size_t n = unit_rand(&st) % 128; n > 0 && len < cap; n--)
                b[len++] = (unsigned char)unit_rand(&st);
            break;
        case 1: /* the characters a text line has, in any order */
            len = random_start(b, &st);
            for (size_t n = unit_rand(&st) % 110; n > 0 && len < cap; n--)
                b[len++] = (unsigned char)alphabet[unit_rand(&st) % (sizeof alphabet - 1)];
            break;
        default: { /* a valid header, changed here and there, cut or not */
            const struct header *h = &cases[unit_rand(&st) % n_cases];
            memcpy(b, h->b, h->with_app);
            len = h->with_app;
            for (unsigned n = 1 + unit_rand(&st) % 4; n > 0; n--) {
                size_t at = unit_rand(&st) % len;
                switch (unit_rand(&st) % 4) {
                case 0: /* insert */
                    if (len < cap) {
                        memmove(b + at + 1, b + at, len - at);
                        b[at] = (unsigned char)unit_rand(&st);
                        len++;
                    }
                    break;
                case 1: /* delete */
                    if (len > 1) {
                        memmove(b + at, b + at + 1, len - at - 1);
                        len--;
                    }
                    break;
                case 2: /* a character of the line's own */
                    b[at] = (unsigned char)alphabet[unit_rand(&st) % (sizeof alphabet - 1)];
                    break;
                default:
                    b[at] = (unsigned char)unit_rand(&st);
                }
            }
            if (unit_rand(&st) % 2)
                len = unit_rand(&st) % (len + 1);
        }
        }
        unsigned char *p = exact_copy(b, len);
        evmux_proxy_header out;
        ssize_t rc = evmux_proxy_parse(p, len, &out);
        if (rc > 0) {
            results[0]++;
            check_accepted(p, len, rc, &out);
            const void *v;
            size_t vlen;
            int t = evmux_proxy_tlv(&out, unit_rand(&st) % 256, &v, &vlen);
            CHECK(t == 0 || t == -ENOENT || t == -EPROTO);
            if (t == 0)
                CHECK((const unsigned char *)v >= out.tlvs &&
                      (const unsigned char *)v + vlen <= out.tlvs + out.tlvs_len);
        } else if (rc == -EAGAIN) {
            results[1]++;
            /* Never asks for more than the cap, nor v1 for more than 107. */
            CHECK(len < EVMUX_PROXY_HEADER_MAX);
            CHECK(len == 0 || p[0] != 'P' || len < 107);
        } else if (rc == -EPROTO) {
            results[2]++;
        } else {
            CHECK_EQ(rc, -EMSGSIZE);
            results[3]++;
        }
        free(p);
    }
    fprintf(stderr, "   accepted %lu, -EAGAIN %lu, -EPROTO %lu, -EMSGSIZE %lu\n", results[0],
            results[1], results[2], results[3]);
    for (int i = 0; i < 4; i++)
        CHECK(results[i] > 0); /* every outcome was reached */
}

int main(int argc, char **argv)
{
    unit_args(argc, argv);
    RUN_TEST(test_v1_tcp4);
    RUN_TEST(test_v1_tcp6);
    RUN_TEST(test_v1_unknown);
    RUN_TEST(test_v2_ipv4);
    RUN_TEST(test_v2_ipv6);
    RUN_TEST(test_v2_unix);
    RUN_TEST(test_v2_local);
    RUN_TEST(test_v2_tlvs);
    RUN_TEST(test_v2_longest);
    build_cases(); /* for the ones below, when the ones above were not run */
    RUN_TEST(test_truncations);
    RUN_TEST(test_corruptions);
    RUN_TEST(test_refuse_other_protocols);
    RUN_TEST(test_refuse_v1_protocol);
    RUN_TEST(test_refuse_v1_addresses);
    RUN_TEST(test_refuse_v1_ports);
    RUN_TEST(test_refuse_v1_line_end);
    RUN_TEST(test_refuse_v2);
    RUN_TEST(test_arguments);
    RUN_TEST(test_fuzz);
    return unit_end();
}
