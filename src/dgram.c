/* The datagram pool (dgram.h). */
#include "dgram.h"

#include <stdlib.h>
#include <string.h>

struct evmux__dgram_block {
    struct evmux__dgram_block *next_free;
    size_t size;   /* bytes of mem */
    size_t used;   /* carved so far */
    size_t live;   /* records not yet freed */
    _Alignas(max_align_t) char mem[];
};

#define ALIGN_UP(n) (((n) + _Alignof(max_align_t) - 1) & ~(size_t)(_Alignof(max_align_t) - 1))

static struct evmux__dgram_block *block_new(struct evmux__dgram_pool *pool, size_t size)
{
    struct evmux__dgram_block *b = NULL;
    if (size == EVMUX__DGRAM_BLOCK_BYTES && pool->free != NULL) {
        b = pool->free;
        pool->free = b->next_free;
        pool->free_count--;
    } else {
        b = malloc(sizeof *b + size);
        if (b == NULL)
            return NULL;
        b->size = size;
    }
    b->next_free = NULL;
    b->used = 0;
    b->live = 0;
    return b;
}

static void block_release(struct evmux__dgram_pool *pool, struct evmux__dgram_block *b)
{
    assert(b->live == 0);
    if (b->size != EVMUX__DGRAM_BLOCK_BYTES || pool->free_count >= EVMUX__DGRAM_POOL_MAX) {
        free(b);
        return;
    }
    b->next_free = pool->free;
    pool->free = b;
    pool->free_count++;
}

struct evmux__dgram *evmux__dgram_new(struct evmux__dgram_pool *pool, size_t len,
                                      const struct sockaddr *addr, socklen_t addr_len)
{
    assert(addr_len <= sizeof(struct sockaddr_storage));
    size_t need = ALIGN_UP(sizeof(struct evmux__dgram) + len);
    if (need < len)
        return NULL;
    struct evmux__dgram_block *b = pool->current;
    if (need > EVMUX__DGRAM_BLOCK_BYTES / 2) {
        /* A large one (a Unix socket's) gets a block of its own. */
        b = block_new(pool, need);
        if (b == NULL)
            return NULL;
    } else if (b == NULL || b->size - b->used < need) {
        b = block_new(pool, EVMUX__DGRAM_BLOCK_BYTES);
        if (b == NULL)
            return NULL;
        /* An empty current block starts again from its start (dgram_free),
         * so it always has room: the one left has live records. */
        assert(pool->current == NULL || pool->current->live > 0);
        pool->current = b;
    }
    struct evmux__dgram *d = (struct evmux__dgram *)(void *)(b->mem + b->used);
    b->used += need;
    b->live++;
    memset(d, 0, sizeof *d);
    d->block = b;
    d->iov.iov_base = (char *)(d + 1);
    d->iov.iov_len = len;
    if (addr != NULL && addr_len > 0) {
        memcpy(&d->addr, addr, addr_len);
        d->addr_len = addr_len;
    }
    return d;
}

void evmux__dgram_free(struct evmux__dgram_pool *pool, struct evmux__dgram *d)
{
    assert(!evmux__op_busy(&d->op) && !evmux__linked(&d->link));
    struct evmux__dgram_block *b = d->block;
    assert(b->live > 0);
    if (--b->live > 0)
        return;
    if (b == pool->current)
        b->used = 0; /* empty: carve from its start again */
    else
        block_release(pool, b);
}

void evmux__dgram_pool_free(struct evmux__dgram_pool *pool)
{
    if (pool->current != NULL) {
        assert(pool->current->live == 0);
        free(pool->current);
        pool->current = NULL;
    }
    while (pool->free != NULL) {
        struct evmux__dgram_block *b = pool->free;
        pool->free = b->next_free;
        free(b);
    }
    pool->free_count = 0;
}
