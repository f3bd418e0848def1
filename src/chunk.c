/* The chunk pool (chunk.h). */
#include "chunk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct evmux_chunk *evmux__chunk_get(struct evmux__chunk_pool *pool)
{
    struct evmux_chunk *c = pool->free;
    if (c != NULL) {
        pool->free = c->next;
        pool->len--;
    } else {
        c = malloc(sizeof *c);
        if (c == NULL)
            return NULL;
    }
    c->next = NULL;
    c->start = c->end = 0;
    return c;
}

void evmux__chunks_put(struct evmux__chunk_pool *pool, struct evmux_chunk *head)
{
    while (head != NULL) {
        struct evmux_chunk *c = head;
        head = c->next;
        if (pool->len >= EVMUX__CHUNK_POOL_MAX) {
            free(c);
            continue;
        }
        c->next = pool->free;
        pool->free = c;
        pool->len++;
    }
}

int evmux__chunks_append(struct evmux__chunk_pool *pool, struct evmux_chunk **head, struct evmux_chunk **tail,
                         const char *p, size_t n)
{
    while (n > 0) {
        struct evmux_chunk *c = *tail;
        if (c == NULL || c->end == EVMUX__CHUNK_BYTES) {
            c = evmux__chunk_get(pool);
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

void evmux__chunk_pool_free(struct evmux__chunk_pool *pool)
{
    while (pool->free != NULL) {
        struct evmux_chunk *c = pool->free;
        pool->free = c->next;
        free(c);
    }
    pool->len = 0;
}
