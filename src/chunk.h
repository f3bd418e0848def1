/* Chunks: fixed-size buffers for bytes that wait (a stream's write queue,
 * the bytes a stopped reader was sent), kept in lists and reused through a
 * pool, one per loop, so that steady traffic allocates nothing. */
#ifndef EVMUX_CHUNK_H
#define EVMUX_CHUNK_H

#include "evmux_internal.h"

/* A chunk with its header fills 16 KiB: four pages, no malloc slack. */
#define EVMUX__CHUNK_BYTES (16 * 1024 - 3 * sizeof(void *))
/* Chunks kept for reuse per loop (4 MiB): on io_uring every write waits
 * in chunks until the loop submits it, so the pool holds the working set
 * of as many streams as the provided-buffer ring serves (docs/design.md). */
#define EVMUX__CHUNK_POOL_MAX EVMUX__IO_BUFFERS

struct evmux_chunk {
    struct evmux_chunk *next;
    size_t start, end; /* the bytes still held: data[start..end) */
    char data[EVMUX__CHUNK_BYTES];
};

struct evmux__chunk_pool {
    struct evmux_chunk *free;
    size_t len;
};

/* An empty chunk, from the pool or malloc; NULL if out of memory. */
struct evmux_chunk *evmux__chunk_get(struct evmux__chunk_pool *pool);
/* Gives back a whole list (head, NULL-terminated). */
void evmux__chunks_put(struct evmux__chunk_pool *pool, struct evmux_chunk *head);
/* Copies n bytes to the end of the list *head..*tail, filling the last
 * chunk first. On -ENOMEM part of them may have been appended. */
int evmux__chunks_append(struct evmux__chunk_pool *pool, struct evmux_chunk **head, struct evmux_chunk **tail,
                         const char *p, size_t n);
/* Frees the pool's chunks. */
void evmux__chunk_pool_free(struct evmux__chunk_pool *pool);

#endif
