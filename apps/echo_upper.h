/* The echo protocol's one transform: ASCII a-z to A-Z, every other byte
 * as it is. evmux-echo-server and every benchmark peer include this file,
 * so the servers compared in bench/ do exactly the same work per byte.
 *
 * Eight bytes at a time (SWAR): in each byte, adding 0x80 - 'a' to its low
 * seven bits sets the top bit if the byte is at least 'a', adding
 * 0x80 - 'z' - 1 sets it if the byte is past 'z'; a byte with its own top
 * bit set is not ASCII. What remains marks a-z, and shifting that top bit
 * down to 0x20 turns the case bit off. No carry crosses a byte, since
 * each sum stays below 0x100. */
#ifndef EVMUX_ECHO_UPPER_H
#define EVMUX_ECHO_UPPER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline void echo_uppercase(char *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, tops = 0x8080808080808080ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        uint64_t low7 = x & ~tops;
        uint64_t from_a = low7 + ones * (0x80 - 'a');
        uint64_t past_z = low7 + ones * (0x80 - 'z' - 1);
        uint64_t lower = from_a & ~past_z & ~x & tops;
        x ^= lower >> 2;
        memcpy(p + i, &x, 8);
    }
    for (; i < n; i++)
        if ((unsigned char)(p[i] - 'a') < 26)
            p[i] = (char)(p[i] - ('a' - 'A'));
}

#endif
