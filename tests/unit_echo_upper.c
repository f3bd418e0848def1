/* The echo transform (apps/echo_upper.h), word at a time, against the
 * byte-by-byte definition: every byte value at every position of a word,
 * every length and alignment up to 40 bytes, and bytes around the a-z
 * edges next to each other (where a carry between bytes would show). */
#include "check.h"
#include "echo_upper.h"

#include <stdint.h>

static char reference(char c)
{
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

static void check_range(const char *in, size_t n)
{
    char buf[64];
    memcpy(buf, in, n);
    echo_uppercase(buf, n);
    for (size_t i = 0; i < n; i++)
        CHECK_EQ((unsigned char)buf[i], (unsigned char)reference(in[i]));
}

int main(void)
{
    char in[64];
    /* Each value in each lane, the other lanes holding edge values. */
    static const unsigned char edges[] = {0x00, 0x60, 0x61, 0x7a, 0x7b, 0x7f, 0x80, 0xe1, 0xfa, 0xff};
    for (int v = 0; v < 256; v++)
        for (int lane = 0; lane < 8; lane++)
            for (size_t e = 0; e < sizeof edges; e++) {
                memset(in, (char)edges[e], 8);
                in[lane] = (char)v;
                check_range(in, 8);
            }
    /* Lengths and offsets: the tail loop and unaligned words. */
    uint64_t state = 88172645463325252ull;
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < sizeof in; i++) {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            in[i] = (char)(state % 3 == 0 ? 'a' + state % 26 : state >> 24);
        }
        size_t off = (size_t)round % 8, n = (size_t)round % 41;
        check_range(in + off, n);
    }
    return 0;
}
