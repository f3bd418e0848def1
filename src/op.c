/* Requests to the kernel (op.h): the queue for a full ring, owed cancels,
 * results, and fork. The backend only prepares and cancels. */
#include "evmux_internal.h"

#include <assert.h>
#include <errno.h>

#define OP_OF(l_) EVMUX__CONTAINER_OF(l_, struct evmux__op, link)

void evmux__ops_init(evmux_loop *loop)
{
    evmux__list_init(&loop->ops.kernel);
    evmux__list_init(&loop->ops.queued);
    evmux__list_init(&loop->ops.ending);
    loop->ops.cancels_owed = 0;
}

void evmux__op_queue(evmux_loop *loop, struct evmux__op *op)
{
    op->state = EVMUX__OP_QUEUED;
    evmux__list_push(&loop->ops.queued, &op->link);
}

static void send_cancel(evmux_loop *loop, struct evmux__op *op)
{
    if (loop->backend->completion->cancel(loop, op) == 0)
        op->flags |= EVMUX__OP_CANCEL_SENT;
    else
        loop->ops.cancels_owed++;
}

void evmux__op_cancel(evmux_loop *loop, struct evmux__op *op)
{
    switch (op->state) {
    case EVMUX__OP_QUEUED:
        evmux__list_remove(&op->link);
        op->state = EVMUX__OP_ENDING;
        op->flags |= EVMUX__OP_CANCEL;
        evmux__list_push(&loop->ops.ending, &op->link);
        return;
    case EVMUX__OP_KERNEL:
        if (op->flags & EVMUX__OP_CANCEL)
            return; /* once */
        op->flags |= EVMUX__OP_CANCEL;
        send_cancel(loop, op);
        return;
    default:
        return;
    }
}

bool evmux__op_withdraw(struct evmux__op *op)
{
    if (op->state != EVMUX__OP_QUEUED)
        return false;
    evmux__list_remove(&op->link);
    op->state = EVMUX__OP_IDLE;
    return true;
}

void evmux__op_release(evmux_loop *loop, struct evmux__op *op)
{
    evmux__op_cancel(loop, op);
    if (evmux__op_busy(op))
        op->flags |= EVMUX__OP_ORPHAN;
}

bool evmux__ops_prepare(evmux_loop *loop)
{
    struct evmux__ops *ops = &loop->ops;
    if (!evmux__ops_owed(loop))
        return false;
    if (ops->cancels_owed > 0) {
        struct evmux__link *l = ops->kernel.next;
        while (l != &ops->kernel && ops->cancels_owed > 0) {
            struct evmux__op *op = OP_OF(l);
            l = l->next;
            if ((op->flags & (EVMUX__OP_CANCEL | EVMUX__OP_CANCEL_SENT)) != EVMUX__OP_CANCEL)
                continue;
            if (loop->backend->completion->cancel(loop, op) < 0)
                break; /* still no room: the wait makes some */
            op->flags |= EVMUX__OP_CANCEL_SENT;
            ops->cancels_owed--;
        }
    }
    while (!evmux__list_empty(&ops->queued)) {
        struct evmux__op *op = OP_OF(ops->queued.next);
        if (loop->backend->completion->submit(loop, op) < 0)
            break;
        evmux__list_remove(&op->link);
        evmux__op_to_kernel(loop, op);
    }
    return ops->cancels_owed > 0 || !evmux__list_empty(&ops->queued) ||
           !evmux__list_empty(&ops->ending);
}

void evmux__ops_run_completions(evmux_loop *loop)
{
    loop->backend->completion->run_completions(loop);
    /* Requests that end in these callbacks are reported next time, so a
     * callback that keeps cancelling cannot hold the loop here. */
    struct evmux__link ending;
    evmux__list_init(&ending);
    evmux__list_splice(&ending, &loop->ops.ending);
    struct evmux__link *l;
    while ((l = evmux__list_pop(&ending)) != NULL) {
        struct evmux__op *op = OP_OF(l);
        assert(op->state == EVMUX__OP_ENDING && (op->flags & EVMUX__OP_CANCEL));
        op->state = EVMUX__OP_IDLE;
        op->cls->done(op, -ECANCELED, NULL, false);
    }
}

void evmux__ops_flush(evmux_loop *loop)
{
    evmux__ops_prepare(loop);
    loop->backend->completion->flush(loop);
}

void evmux__ops_after_fork(evmux_loop *loop)
{
    struct evmux__ops *ops = &loop->ops;
    /* The parent's ring runs the old requests; this process asks anew,
     * ahead of what was queued already, in the order they were made. */
    struct evmux__link again;
    evmux__list_init(&again);
    struct evmux__link *l;
    while ((l = evmux__list_pop(&ops->kernel)) != NULL) {
        struct evmux__op *op = OP_OF(l);
        if (op->flags & EVMUX__OP_CANCEL) {
            op->state = EVMUX__OP_ENDING;
            evmux__list_push(&ops->ending, l);
        } else {
            op->state = EVMUX__OP_QUEUED;
            op->flags |= EVMUX__OP_INHERITED;
            evmux__list_push(&again, l);
        }
    }
    evmux__list_splice(&again, &ops->queued);
    evmux__list_splice(&ops->queued, &again);
    ops->cancels_owed = 0;
}

bool evmux__ops_busy(const evmux_loop *loop)
{
    const struct evmux__ops *ops = &loop->ops;
    return !evmux__list_empty(&ops->kernel) || !evmux__list_empty(&ops->queued) ||
           !evmux__list_empty(&ops->ending);
}
