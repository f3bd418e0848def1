#include "evmux.h"

#include <errno.h>
#include <string.h>

/* The errno values evmux itself returns are named in its own words, so that
 * messages read the same on every libc; the rest fall back to strerror().
 * The resolver's values (EVMUX_EAI_*, -3001..-3099) are evmux's own too:
 * strerror() would call them unknown, and gai_strerror() wants libc's
 * codes.
 * A value can come from several functions and from the kernel, so each
 * message says what the value means in general; which case it is belongs
 * to the documentation of the function that returned it. */
const char *evmux_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case EVMUX_EOF: return "end of stream";
    case -ENAMETOOLONG: return "name too long";
    case -ENOTCONN: return "not connected";
    case -EISCONN: return "already connected";
    case -EINVAL: return "invalid argument";
    case -ENOMEM: return "out of memory";
    case -EBUSY: return "resource busy";
    case -EEXIST: return "already exists";
    case -EALREADY: return "already in progress or done";
    case -ERANGE: return "value out of range";
    case -ENOSYS: return "not implemented by this build or kernel";
    case -EBADF: return "bad file descriptor";
    case -EPERM: return "operation not permitted";
    case -ECANCELED: return "operation canceled";
    case -EMFILE: return "too many open files";
    case -ENFILE: return "too many open files in system";
    case -EAGAIN: return "resource temporarily unavailable";
    case -EPIPE: return "broken pipe";
    case -ECONNRESET: return "connection reset by peer";
    case -ECONNREFUSED: return "connection refused";
    case -ETIMEDOUT: return "timed out";
    case -EADDRINUSE: return "address already in use";
    case -EINTR: return "interrupted system call";
    case -ENOENT: return "no such file or directory";
    case -EACCES: return "permission denied";
    case -ECONNABORTED: return "connection aborted";
    case -ENETUNREACH: return "network unreachable";
    case -EHOSTUNREACH: return "host unreachable";
    case -EADDRNOTAVAIL: return "address not available";
    case -EAFNOSUPPORT: return "address family not supported";
    case -ENOTSUP: return "operation not supported";
    case -ENOSPC: return "no space left";
    case -ENOBUFS: return "no buffer space available";
    case -ENOTSOCK: return "not a socket";
    case -EIO: return "input/output error";
    case -EPROTO: return "protocol error";
    case -EMSGSIZE: return "message too long";
    case EVMUX_EAI_AGAIN: return "name resolution failed for now; try again later";
    case EVMUX_EAI_BADFLAGS: return "invalid flags for name resolution";
    case EVMUX_EAI_FAIL: return "name resolution failed for good";
    case EVMUX_EAI_FAMILY: return "address family not supported by the resolver";
    case EVMUX_EAI_MEMORY: return "out of memory resolving a name";
    case EVMUX_EAI_NONAME: return "name or service not known";
    case EVMUX_EAI_SERVICE: return "service not available for the socket type";
    case EVMUX_EAI_SOCKTYPE: return "socket type not supported by the resolver";
    case EVMUX_EAI_NODATA: return "name has no address";
    case EVMUX_EAI_ADDRFAMILY: return "name has no address in the family asked for";
    case EVMUX_EAI_OVERFLOW: return "resolved name too long for its buffer";
    case EVMUX_EAI_IDN_ENCODE: return "name cannot be encoded as an internationalized domain name";
    default: break;
    }
    if (err < 0 && err > -4096) {
        return strerror(-err);
    }
    return "unknown error";
}
