/* The chunk pool (chunk.h). */
#include "chunk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct evmux_chunk *evmux__chunk_get(evmux_loop *loop)
{
    struct evmux_chunk *c = loop->chunk_pool;
    if (c != NULL) {
        loop->chunk_pool = c->next;
        loop->chunk_pool_len--;
    } else {
        c = malloc(sizeof *c);
        if (c == NULL)
            return NULL;
    }
    c->next = NULL;
    c->start = c->end = 0;
    return c;
}

void evmux__chunks_put(evmux_loop *loop, struct evmux_chunk *head)
{
    while (head != NULL) {
        struct evmux_chunk *c = head;
        head = c->next;
        if (loop->chunk_pool_len >= EVMUX__CHUNK_POOL_MAX) {
            free(c);
            continue;
        }
        c->next = loop->chunk_pool;
        loop->chunk_pool = c;
        loop->chunk_pool_len++;
    }
}

int evmux__chunks_append(evmux_loop *loop, struct evmux_chunk **head, struct evmux_chunk **tail,
                         const char *p, size_t n)
{
    while (n > 0) {
        struct evmux_chunk *c = *tail;
        if (c == NULL || c->end == EVMUX__CHUNK_BYTES) {
            c = evmux__chunk_get(loop);
            if (c == NULL)
                return -ENOMEM;
            if (*tail != NULL)
                (*tail)->next = c;
            else
                *head = c;
            *tail = c;
        }
        size_t k = EVMUX__CHUNK_BYTES - c->end < n ? EVMUX__CHUNK_BYTES - c->end : n;
        memcpy(c->data + c->end, p, k);
        c->end += k;
        p += k;
        n -= k;
    }
    return 0;
}

void evmux__chunk_pool_free(evmux_loop *loop)
{
    while (loop->chunk_pool != NULL) {
        struct evmux_chunk *c = loop->chunk_pool;
        loop->chunk_pool = c->next;
        free(c);
    }
    loop->chunk_pool_len = 0;
}
