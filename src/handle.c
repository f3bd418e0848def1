/* Handles: what every kind has in common (reference, activity, the
 * asynchronous close), and the kinds' tables that let the core treat a
 * stream, a listener or a timer alike without naming any of them.
 *
 * A kind's table (struct evmux__kind) is registered with a loop by the
 * first handle of that kind made on it. Closing is two-step: close_begin
 * stops the handle at once, inside evmux_close; the close callback runs
 * from the loop after the iteration's callbacks, once close_wait (if the
 * kind has one) says the kernel holds nothing of the handle any more, and
 * right after close_finish has completed the handle's pending requests. A
 * handle whose close waits is queued again by its kind when its last
 * request ends (evmux__close_resume). */
#include "evmux_internal.h"

#include <assert.h>
#include <errno.h>

void evmux__loop_register_kind(evmux_loop *loop, const struct evmux__kind *kind)
{
    assert(kind->number > 0 && kind->number < EVMUX__KIND_LIMIT);
    assert(loop->kinds[kind->number] == NULL || loop->kinds[kind->number] == kind);
    loop->kinds[kind->number] = kind;
}

void evmux__handle_init(evmux_loop *loop, evmux_handle *h, const struct evmux__kind *kind)
{
    evmux__loop_register_kind(loop, kind);
    h->loop = loop;
    h->close_cb = NULL;
    h->next_closing = NULL;
    h->type = kind->number;
    h->flags = EVMUX_FLAG_REF;
    loop->open_handles++;
}

void evmux__handle_make_internal(evmux_handle *h)
{
    if (h->flags & EVMUX_FLAG_INTERNAL)
        return;
    h->flags |= EVMUX_FLAG_INTERNAL;
    h->loop->open_handles--;
}

static const struct evmux__kind *kind_of(const evmux_handle *h)
{
    return h->type < EVMUX__KIND_LIMIT ? h->loop->kinds[h->type] : NULL;
}

void evmux__handle_set_ref(evmux_handle *h, bool ref)
{
    if (ref == ((h->flags & EVMUX_FLAG_REF) != 0))
        return;
    if (h->flags & EVMUX_FLAG_ACTIVE) {
        if (ref)
            h->loop->active_refs++;
        else
            h->loop->active_refs--;
    }
    h->flags ^= EVMUX_FLAG_REF;
}

/* A handle with internal parts (a stream's watcher) is kept running by
 * them, so their reference follows the handle's. */
static void set_ref_deep(evmux_handle *h, bool ref)
{
    evmux__handle_set_ref(h, ref);
    const struct evmux__kind *kind = kind_of(h);
    if (kind != NULL && kind->set_ref != NULL)
        kind->set_ref(h, ref);
}

void evmux_ref(evmux_handle *h)
{
    if (h != NULL && h->loop != NULL)
        set_ref_deep(h, true);
}

void evmux_unref(evmux_handle *h)
{
    if (h != NULL && h->loop != NULL)
        set_ref_deep(h, false);
}

int evmux_is_closing(const evmux_handle *h)
{
    return h != NULL && evmux__closing(h);
}

evmux_loop *evmux_handle_loop(const evmux_handle *h)
{
    return h != NULL ? h->loop : NULL;
}

int evmux_is_active(const evmux_handle *h)
{
    if (h == NULL || h->loop == NULL)
        return 0;
    const struct evmux__kind *kind = kind_of(h);
    if (kind != NULL && kind->is_active != NULL)
        return kind->is_active(h);
    return (h->flags & EVMUX_FLAG_ACTIVE) != 0;
}

static void closing_push(evmux_handle *h)
{
    evmux_loop *loop = h->loop;
    assert((h->flags & EVMUX_FLAG_CLOSING) && !(h->flags & EVMUX_FLAG_CLOSE_WAITING));
    h->next_closing = NULL;
    if (loop->closing_tail != NULL)
        loop->closing_tail->next_closing = h;
    else
        loop->closing_head = h;
    loop->closing_tail = h;
}

int evmux_close(evmux_handle *h, evmux_close_cb close_cb)
{
    if (h == NULL || h->loop == NULL || (h->flags & EVMUX_FLAG_INTERNAL))
        return -EINVAL;
    if (evmux__closing(h))
        return -EALREADY;
    const struct evmux__kind *kind = kind_of(h);
    if (kind == NULL)
        return -EINVAL; /* never initialised */
    kind->close_begin(h);
    h->flags |= EVMUX_FLAG_CLOSING;
    h->close_cb = close_cb;
    closing_push(h);
    return 0;
}

void evmux__close_resume(evmux_handle *h)
{
    if (!(h->flags & EVMUX_FLAG_CLOSE_WAITING))
        return; /* it has not been asked yet: close_wait will say no */
    h->flags &= ~EVMUX_FLAG_CLOSE_WAITING;
    h->loop->closes_waiting--;
    closing_push(h);
}

/* Close callbacks queued by other close callbacks run in the same pass. */
void evmux__run_closing(evmux_loop *loop)
{
    evmux_handle *h;
    while ((h = loop->closing_head) != NULL) {
        loop->closing_head = h->next_closing;
        if (loop->closing_head == NULL)
            loop->closing_tail = NULL;
        h->next_closing = NULL;
        const struct evmux__kind *kind = kind_of(h);
        assert(kind != NULL && (h->flags & EVMUX_FLAG_CLOSING));
        if (kind->close_wait != NULL && kind->close_wait(h)) {
            h->flags |= EVMUX_FLAG_CLOSE_WAITING; /* queued again when the kernel lets go */
            loop->closes_waiting++;
            continue;
        }
        if (kind->close_finish != NULL)
            kind->close_finish(h); /* -ECANCELED requests */
        h->flags = (h->flags & ~EVMUX_FLAG_CLOSING) | EVMUX_FLAG_CLOSED;
        loop->open_handles--;
        if (h->close_cb != NULL)
            h->close_cb(h); /* may free h */
    }
}

void evmux__kinds_pass(evmux_loop *loop, enum evmux__pass pass)
{
    for (unsigned n = 1; n < EVMUX__KIND_LIMIT; n++)
        if (loop->kinds[n] != NULL && loop->kinds[n]->loop_pass != NULL)
            loop->kinds[n]->loop_pass(loop, pass);
}
