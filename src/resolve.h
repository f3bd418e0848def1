/* What resolve.c offers the rest of the library (connect_host.c) and the
 * tests: the translation of the resolver's codes, and letting a lookup go
 * without a report. */
#ifndef EVMUX_RESOLVE_H
#define EVMUX_RESOLVE_H

#include "evmux_internal.h"

/* The value evmux reports for what getaddrinfo(3) or getnameinfo(3)
 * returned: 0 for 0, an EVMUX_EAI_* value, -err for EAI_SYSTEM (err is
 * the errno the call left; -EIO if it left none). */
int evmux__eai_error(int code, int err);

/* Forgets a lookup whose callback has not run, without running it: a job
 * still with the pool finishes there and frees what it made. The request
 * is idle on return. Nothing if it is idle already. */
void evmux__lookup_abandon(struct evmux__lookup *lookup);

#endif
