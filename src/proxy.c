/* The PROXY protocol header (HAProxy's proxy-protocol.txt), versions 1 and 2.
 *
 * A balancer that relays TCP (HAProxy, AWS NLB, nginx's stream module)
 * opens its own connection to the server, so the server's getpeername()
 * names the balancer. With the PROXY protocol the balancer sends, as the
 * first bytes of each connection, a header naming the client; the server
 * strips it and treats what follows as the application's bytes.
 *
 * Version 1 is one line of text, at most 107 bytes with its CRLF:
 *     PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n
 *     PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n
 *     PROXY UNKNOWN\r\n      (or UNKNOWN, a space and anything up to CRLF)
 * Version 2 is binary: a 12-byte signature chosen to look like no other
 * protocol's start, a version-and-command byte (0x20 LOCAL, 0x21 PROXY), a
 * family-and-transport byte, a 16-bit length in network order, then that
 * many bytes: the addresses (12 for IPv4, 36 for IPv6, 216 for two Unix
 * paths), and after them type-length-value records (TLVs).
 *
 * Why the checks are strict. The header decides which address the server
 * believes, so anything that is not exactly a header is refused, as the
 * spec asks: one space between fields, numbers without leading zeros (the
 * spec forbids them because "010" read as octal is another number),
 * addresses inet_pton accepts for the family announced, CRLF and nothing
 * else at the end, only the family bytes the spec defines. Each byte is
 * judged as soon as it arrives, so a client that speaks HTTP or TLS to a
 * PROXY port is refused on its first byte, not held while the server waits
 * for a CRLF that never comes; an IPv6 address, whose shapes are many, is
 * checked for its characters as it arrives and wholly at the space after
 * it. And the parser never asks for more bytes than it will accept: a v1
 * line ends within 107 bytes, a v2 header within EVMUX_PROXY_HEADER_MAX,
 * and a v2 length beyond that is refused from the 16 bytes that carry it,
 * so that a peer cannot make the server hold 64 KiB per connection.
 *
 * TLVs are not checked here: with AF_UNSPEC the spec gives the address
 * block no size, so where they start is a guess, and most servers never
 * read them. evmux_proxy_tlv checks the whole list before it answers.
 */
#include "evmux.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

/* "PROXY UNKNOWN", two IPv6 addresses of 39 characters, two ports of 5
 * digits, the spaces between and CRLF: the spec's longest line. */
#define V1_MAX 107
#define V2_FIXED 16   /* signature, version and command, family, length */
#define V2_UNIX_PATH 108

_Static_assert(EVMUX_PROXY_HEADER_MAX >= V1_MAX, "a v1 line must fit");
_Static_assert(sizeof(((struct sockaddr_un *)0)->sun_path) == V2_UNIX_PATH,
               "v2 carries Linux's 108-byte sun_path");

static const unsigned char v2_signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                               0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* The field checks below take the field's bytes so far, s[0..n), and say
 * whether they are a field (whole: its terminator has arrived) or can
 * still become one (not whole): 0 if so, else -EPROTO. */

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Dotted decimal, four numbers 0..255 without leading zeros. */
static int ipv4_text(const unsigned char *s, size_t n, int whole)
{
    unsigned dots = 0, digits = 0, value = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (digits == 0 || ++dots > 3)
                return -EPROTO;
            digits = value = 0;
        } else if (is_digit(s[i])) {
            if (digits > 0 && value == 0)
                return -EPROTO; /* a leading zero */
            value = value * 10 + (unsigned)(s[i] - '0');
            if (value > 255)
                return -EPROTO;
            digits++;
        } else {
            return -EPROTO;
        }
    }
    return whole && (dots != 3 || digits == 0) ? -EPROTO : 0;
}

/* The shape of IPv6 text: hex groups of at most 4 digits, one "::" at
 * most, and IPv4 dotted decimal only as the last group (the form
 * inet_ntop gives an IPv4-mapped address). Whether the groups add up to
 * 128 bits is left to inet_pton, at the end of the field. */
static int ipv6_text(const unsigned char *s, size_t n, int whole)
{
    size_t group = 0; /* where the last group starts */
    unsigned hex = 0, double_colons = 0;
    int dotted = 0;
    if (n > INET6_ADDRSTRLEN - 1)
        return -EPROTO;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == ':') {
            if (dotted)
                return -EPROTO;
            if (i > 0 && s[i - 1] == ':' && ++double_colons > 1)
                return -EPROTO; /* a second "::", or ":::" */
            hex = 0;
            group = i + 1;
        } else if (is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) {
            if (!dotted && ++hex > 4)
                return -EPROTO;
        } else if (c == '.') {
            dotted = 1; /* from here on, ipv4_text judges the group */
        } else {
            return -EPROTO;
        }
    }
    if (dotted && ipv4_text(s + group, n - group, whole) < 0)
        return -EPROTO;
    return 0;
}

/* Decimal 0..65535 without a sign or leading zeros. */
static int port_text(const unsigned char *s, size_t n, int whole, in_port_t *port)
{
    unsigned value = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]) || (i > 0 && value == 0))
            return -EPROTO;
        value = value * 10 + (unsigned)(s[i] - '0');
        if (value > 65535)
            return -EPROTO;
    }
    if (whole && n == 0)
        return -EPROTO;
    *port = htons((uint16_t)value);
    return 0;
}

/* An address of the family the line announced, into *ss once whole. */
static int address_text(const unsigned char *s, size_t n, int whole, int family,
                        struct sockaddr_storage *ss, socklen_t *ss_len)
{
    int rc = family == AF_INET ? ipv4_text(s, n, whole) : ipv6_text(s, n, whole);
    if (rc < 0 || !whole)
        return rc;
    char text[INET6_ADDRSTRLEN]; /* n fits: both checks bound it */
    memcpy(text, s, n);
    text[n] = '\0';
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        *ss_len = sizeof *in;
        return inet_pton(AF_INET, text, &in->sin_addr) == 1 ? 0 : -EPROTO;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    *ss_len = sizeof *in6;
    return inet_pton(AF_INET6, text, &in6->sin6_addr) == 1 ? 0 : -EPROTO;
}

/* Where the field that begins at pos ends: at the first space or CR, or at
 * n when the bytes stop first. */
static size_t field_end(const unsigned char *p, size_t n, size_t pos)
{
    while (pos < n && p[pos] != ' ' && p[pos] != '\r')
        pos++;
    return pos;
}

/* After "PROXY UNKNOWN ": anything printable up to CRLF, which the spec
 * tells receivers to ignore. A lone CR or LF, or a control byte, is not
 * part of a text line. */
static ssize_t v1_unknown_rest(const unsigned char *p, size_t n, size_t pos, ssize_t incomplete)
{
    for (; pos < n; pos++) {
        if (p[pos] == '\r') {
            if (pos + 1 == n)
                return incomplete;
            return p[pos + 1] == '\n' ? (ssize_t)(pos + 2) : -EPROTO;
        }
        if (p[pos] < 0x20 || p[pos] > 0x7e)
            return -EPROTO;
    }
    return incomplete;
}

static ssize_t parse_v1(const unsigned char *p, size_t len, evmux_proxy_header *h)
{
    static const char start[] = "PROXY ";
    size_t n = len < V1_MAX ? len : V1_MAX; /* the line must end within these */
    /* Bytes that stop short of CRLF: more may come, unless 107 are here. */
    ssize_t incomplete = n == V1_MAX ? -EMSGSIZE : -EAGAIN;
    size_t pos = sizeof start - 1;
    if (memcmp(p, start, n < pos ? n : pos) != 0)
        return -EPROTO;
    if (n < pos)
        return incomplete;

    /* The protocol: TCP4, TCP6 or UNKNOWN, checked letter by letter. */
    static const char *const protocols[] = {"TCP4", "TCP6", "UNKNOWN"};
    size_t end = field_end(p, n, pos), word = end - pos;
    int which = -1;
    for (int i = 0; i < 3; i++) {
        size_t plen = strlen(protocols[i]);
        if (word <= plen && memcmp(p + pos, protocols[i], word) == 0 &&
            (end == n || word == plen)) {
            which = i;
            break;
        }
    }
    if (which < 0)
        return -EPROTO;
    if (end == n)
        return incomplete;
    h->version = 1;
    if (which == 2) {
        h->local = 1;
        if (p[end] == ' ')
            return v1_unknown_rest(p, n, end + 1, incomplete);
        /* "PROXY UNKNOWN\r\n" */
        if (end + 1 == n)
            return incomplete;
        return p[end + 1] == '\n' ? (ssize_t)(end + 2) : -EPROTO;
    }
    if (p[end] != ' ')
        return -EPROTO;
    pos = end + 1;

    /* Source and destination addresses, source and destination ports. */
    int family = which == 0 ? AF_INET : AF_INET6;
    in_port_t ports[2] = {0, 0};
    for (int f = 0; f < 4; f++) {
        end = field_end(p, n, pos);
        int whole = end < n, rc;
        if (f < 2)
            rc = address_text(p + pos, end - pos, whole, family,
                              f == 0 ? &h->source : &h->destination,
                              f == 0 ? &h->source_len : &h->destination_len);
        else
            rc = port_text(p + pos, end - pos, whole, &ports[f - 2]);
        if (rc < 0)
            return rc;
        if (!whole)
            return incomplete;
        if (p[end] != (f < 3 ? ' ' : '\r'))
            return -EPROTO;
        pos = end + 1;
    }
    if (pos == n)
        return incomplete;
    if (p[pos] != '\n')
        return -EPROTO;
    if (family == AF_INET) {
        ((struct sockaddr_in *)&h->source)->sin_port = ports[0];
        ((struct sockaddr_in *)&h->destination)->sin_port = ports[1];
    } else {
        ((struct sockaddr_in6 *)&h->source)->sin6_port = ports[0];
        ((struct sockaddr_in6 *)&h->destination)->sin6_port = ports[1];
    }
    h->socktype = SOCK_STREAM;
    return (ssize_t)(pos + 1);
}

/* One of v2's two 108-byte Unix addresses. A path is NUL-terminated
 * within them, or refused: copied with its NUL, it always fits sun_path.
 * One that begins with NUL is Linux's abstract namespace (or, all NUL, an
 * unnamed socket, as a client's usually is); its length does not travel,
 * so trailing NULs are taken for padding. */
static int v2_unix(const unsigned char *s, struct sockaddr_storage *ss, socklen_t *ss_len)
{
    struct sockaddr_un *un = (struct sockaddr_un *)ss;
    size_t n;
    un->sun_family = AF_UNIX;
    if (s[0] != '\0') {
        const unsigned char *nul = memchr(s, '\0', V2_UNIX_PATH);
        if (nul == NULL)
            return -EPROTO;
        n = (size_t)(nul - s) + 1;
    } else {
        for (n = V2_UNIX_PATH; n > 0 && s[n - 1] == '\0'; n--)
            ;
    }
    memcpy(un->sun_path, s, n);
    *ss_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    return 0;
}

static ssize_t parse_v2(const unsigned char *p, size_t len, evmux_proxy_header *h)
{
    size_t sig = sizeof v2_signature;
    if (memcmp(p, v2_signature, len < sig ? len : sig) != 0)
        return -EPROTO;
    if (len <= sig)
        return -EAGAIN;
    unsigned command = p[12];
    if (command != 0x20 && command != 0x21) /* version 2; LOCAL or PROXY */
        return -EPROTO;
    if (len <= 13)
        return -EAGAIN;
    /* The family and transport pairs the spec defines; it tells receivers
     * to refuse the others, whatever the command. */
    unsigned family = p[13];
    size_t addresses;
    switch (family) {
    case 0x00: addresses = 0; break;                 /* UNSPEC */
    case 0x11: case 0x12: addresses = 12; break;      /* TCP, UDP over IPv4 */
    case 0x21: case 0x22: addresses = 36; break;      /* over IPv6 */
    case 0x31: case 0x32: addresses = 2 * V2_UNIX_PATH; break; /* Unix */
    default: return -EPROTO;
    }
    if (len <= 14)
        return -EAGAIN;
    /* The length's high byte alone can say it is too long. */
    if (V2_FIXED + ((size_t)p[14] << 8) > EVMUX_PROXY_HEADER_MAX)
        return -EMSGSIZE;
    if (len < V2_FIXED)
        return -EAGAIN;
    size_t block = (size_t)p[14] << 8 | p[15];
    if (V2_FIXED + block > EVMUX_PROXY_HEADER_MAX)
        return -EMSGSIZE;
    /* LOCAL: the balancer's own connection (a health check); the spec says
     * to use the real endpoints and ignore the family, so only PROXY needs
     * its addresses. PROXY over UNSPEC carries none we could read. */
    int local = command == 0x20 || family == 0x00;
    if (!local && block < addresses)
        return -EPROTO;
    if (len < V2_FIXED + block)
        return -EAGAIN;

    const unsigned char *a = p + V2_FIXED;
    h->version = 2;
    h->local = local;
    if (!local) {
        h->socktype = (family & 0x0f) == 1 ? SOCK_STREAM : SOCK_DGRAM;
        if (family >> 4 == 1) {
            struct sockaddr_in *s = (struct sockaddr_in *)&h->source;
            struct sockaddr_in *d = (struct sockaddr_in *)&h->destination;
            s->sin_family = d->sin_family = AF_INET;
            memcpy(&s->sin_addr, a, 4);
            memcpy(&d->sin_addr, a + 4, 4);
            memcpy(&s->sin_port, a + 8, 2);
            memcpy(&d->sin_port, a + 10, 2);
            h->source_len = h->destination_len = sizeof *s;
        } else if (family >> 4 == 2) {
            struct sockaddr_in6 *s = (struct sockaddr_in6 *)&h->source;
            struct sockaddr_in6 *d = (struct sockaddr_in6 *)&h->destination;
            s->sin6_family = d->sin6_family = AF_INET6;
            memcpy(&s->sin6_addr, a, 16);
            memcpy(&d->sin6_addr, a + 16, 16);
            memcpy(&s->sin6_port, a + 32, 2);
            memcpy(&d->sin6_port, a + 34, 2);
            h->source_len = h->destination_len = sizeof *s;
        } else if (v2_unix(a, &h->source, &h->source_len) < 0 ||
                   v2_unix(a + V2_UNIX_PATH, &h->destination, &h->destination_len) < 0) {
            return -EPROTO;
        }
    }
    /* TLVs follow the address block the family names (none for UNSPEC); a
     * LOCAL header too short for its family's addresses has none. */
    if (block > addresses) {
        h->tlvs = a + addresses;
        h->tlvs_len = block - addresses;
    }
    return (ssize_t)(V2_FIXED + block);
}

ssize_t evmux_proxy_parse(const void *buf, size_t len, evmux_proxy_header *out)
{
    if ((buf == NULL && len > 0) || out == NULL)
        return -EINVAL;
    if (len == 0)
        return -EAGAIN;
    /* Filled here and copied out only whole, so that *out is left as it
     * was by every error and by -EAGAIN. */
    evmux_proxy_header h;
    memset(&h, 0, sizeof h);
    const unsigned char *p = buf;
    ssize_t rc;
    if (p[0] == 'P')
        rc = parse_v1(p, len, &h);
    else if (p[0] == v2_signature[0])
        rc = parse_v2(p, len, &h);
    else
        rc = -EPROTO;
    if (rc > 0)
        *out = h;
    return rc;
}

int evmux_proxy_tlv(const evmux_proxy_header *h, unsigned type, const void **value,
                    size_t *value_len)
{
    if (h == NULL || value == NULL || value_len == NULL || type > 0xff ||
        (h->tlvs == NULL && h->tlvs_len > 0))
        return -EINVAL;
    /* The whole list is checked before any answer, so that whether a type
     * is found never depends on where the damage is. */
    const unsigned char *t = h->tlvs, *found = NULL;
    size_t found_len = 0;
    for (size_t i = 0; i < h->tlvs_len;) {
        if (h->tlvs_len - i < 3)
            return -EPROTO;
        size_t n = (size_t)t[i + 1] << 8 | t[i + 2];
        if (n > h->tlvs_len - i - 3)
            return -EPROTO;
        if (found == NULL && t[i] == type) {
            found = t + i + 3;
            found_len = n;
        }
        i += 3 + n;
    }
    if (found == NULL)
        return -ENOENT;
    *value = found;
    *value_len = found_len;
    return 0;
}
