/* Handing descriptors to another loop's thread (evmux_handoff).
 *
 * A mailbox: any thread appends (descriptor, data) under a mutex and
 * sends the handle's internal evmux_async; the loop's thread takes the
 * whole list in one lock and gives each descriptor to the callback, in
 * the order the sends were made. The async merges a burst of sends into
 * one wake-up, and its exchanges order the sender's writes before the
 * callback's reads, as they do for evmux_async.
 *
 * A send may carry no descriptor (fd -1): a message, delivered in order
 * with the descriptors, e.g. "no more will come" before closing.
 *
 * Ownership of a descriptor moves at a successful send: from then on
 * either the callback gets it or closing the handle closes it, so a
 * connection is never leaked nor closed twice. The mutex and the closing
 * flag it guards let a sender that races with evmux_close learn -EPIPE
 * and keep its descriptor; the queue lives until the close callback, and
 * a sender must not come later than that (the caller orders the two, as
 * for evmux_async_send). */
#include "evmux_internal.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static const struct evmux__kind handoff_kind;

struct handoff_item {
    struct evmux__link link;
    int fd;
    void *data;
};

struct evmux__handoff_queue {
    pthread_mutex_t mutex;
    struct evmux__link items; /* under mutex */
    bool closing;             /* under mutex */
};

static struct handoff_item *pop_item(struct evmux__link *list)
{
    struct evmux__link *link = evmux__list_pop(list);
    return link != NULL ? EVMUX__CONTAINER_OF(link, struct handoff_item, link) : NULL;
}

static void close_items(struct evmux__link *list)
{
    struct handoff_item *item;
    while ((item = pop_item(list)) != NULL) {
        if (item->fd >= 0)
            close(item->fd);
        free(item);
    }
}

/* Takes everything sent so far, in one lock. */
static void take_items(struct evmux__handoff_queue *q, struct evmux__link *into)
{
    evmux__list_init(into);
    pthread_mutex_lock(&q->mutex);
    evmux__list_splice(into, &q->items);
    pthread_mutex_unlock(&q->mutex);
}

static void on_wake(evmux_async *wake)
{
    evmux_handoff *handoff = wake->handle.data;
    struct evmux__link items;
    take_items(handoff->queue, &items);
    struct handoff_item *item;
    while ((item = pop_item(&items)) != NULL) {
        int fd = item->fd;
        void *data = item->data;
        free(item);
        handoff->handle.loop->wake_calls++; /* an event: EVMUX_RUN_ONCE returns after it */
        handoff->cb(handoff, fd, data);
        if (evmux__closing(&handoff->handle)) {
            close_items(&items); /* the callback closed the mailbox: they are ours */
            return;
        }
    }
}

int evmux_handoff_init(evmux_loop *loop, evmux_handoff *handoff, evmux_handoff_cb cb)
{
    if (loop == NULL || handoff == NULL || cb == NULL)
        return -EINVAL;
    struct evmux__handoff_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return -ENOMEM;
    int rc = pthread_mutex_init(&q->mutex, NULL);
    if (rc != 0) {
        free(q);
        return -rc;
    }
    evmux__list_init(&q->items);
    evmux__handle_init(loop, &handoff->handle, &handoff_kind);
    handoff->cb = cb;
    handoff->queue = q;
    evmux_async_init(loop, &handoff->wake, on_wake);
    evmux__handle_make_internal(&handoff->wake.handle);
    evmux_unref(&handoff->wake.handle); /* the handoff's own handle holds the loop */
    handoff->wake.handle.data = handoff;
    evmux__handle_activate(&handoff->handle);
    return 0;
}

int evmux_handoff_send(evmux_handoff *handoff, int fd, void *data)
{
    if (handoff == NULL || fd < -1)
        return -EINVAL;
    struct handoff_item *item = calloc(1, sizeof *item); /* its link unlinked */
    if (item == NULL)
        return -ENOMEM;
    item->fd = fd;
    item->data = data;
    struct evmux__handoff_queue *q = handoff->queue;
    pthread_mutex_lock(&q->mutex);
    if (q->closing) {
        pthread_mutex_unlock(&q->mutex);
        free(item);
        return -EPIPE;
    }
    evmux__list_push(&q->items, &item->link);
    /* Sent under the mutex, so that a close cannot free the async between
     * the append and the send. */
    evmux_async_send(&handoff->wake);
    pthread_mutex_unlock(&q->mutex);
    return 0;
}

static void handoff_close_begin(evmux_handle *h)
{
    evmux_handoff *handoff = (evmux_handoff *)h;
    struct evmux__handoff_queue *q = handoff->queue;
    struct evmux__link unread;
    evmux__list_init(&unread);
    pthread_mutex_lock(&q->mutex);
    assert(!q->closing);
    q->closing = true;
    evmux__list_splice(&unread, &q->items);
    pthread_mutex_unlock(&q->mutex);
    close_items(&unread);
    evmux__async_close(&handoff->wake);
    evmux__handle_deactivate(h);
}

/* Right before the close callback, after which no sender may come. */
static void handoff_close_finish(evmux_handle *h)
{
    evmux_handoff *handoff = (evmux_handoff *)h;
    pthread_mutex_destroy(&handoff->queue->mutex);
    free(handoff->queue);
    handoff->queue = NULL;
}

static const struct evmux__kind handoff_kind = {
    .number = EVMUX_HANDLE_HANDOFF,
    .close_begin = handoff_close_begin,
    .close_finish = handoff_close_finish,
};
