/* Intrusive doubly-linked lists: a circular chain through a sentinel head,
 * so that insertion and removal need no branch for the ends and a member
 * leaves its list in O(1) without knowing which list it is on. A link that
 * is on no list has NULL pointers (as memset leaves it). */
#ifndef EVMUX_LIST_H
#define EVMUX_LIST_H

#include "evmux.h" /* struct evmux__link, embedded in public structs */

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>

#define EVMUX__CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline void evmux__list_init(struct evmux__link *head)
{
    head->prev = head->next = head;
}

static inline bool evmux__list_empty(const struct evmux__link *head)
{
    return head->next == head;
}

static inline bool evmux__linked(const struct evmux__link *link)
{
    return link->next != NULL;
}

/* Just before `at`, a member or the head (then: at the tail). */
static inline void evmux__list_insert_before(struct evmux__link *at, struct evmux__link *link)
{
    assert(!evmux__linked(link) && evmux__linked(at));
    link->prev = at->prev;
    link->next = at;
    at->prev->next = link;
    at->prev = link;
}

/* At the tail. */
static inline void evmux__list_push(struct evmux__link *head, struct evmux__link *link)
{
    evmux__list_insert_before(head, link);
}

static inline void evmux__list_remove(struct evmux__link *link)
{
    assert(evmux__linked(link));
    link->prev->next = link->next;
    link->next->prev = link->prev;
    link->prev = link->next = NULL;
}

/* The first member, taken off the list; NULL if it is empty. */
static inline struct evmux__link *evmux__list_pop(struct evmux__link *head)
{
    if (evmux__list_empty(head))
        return NULL;
    struct evmux__link *first = head->next;
    evmux__list_remove(first);
    return first;
}

/* Moves every member of `from` to the tail of `to`, in order. */
static inline void evmux__list_splice(struct evmux__link *to, struct evmux__link *from)
{
    if (evmux__list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    evmux__list_init(from);
}

#endif
