/* The library's own version: a program linked against a shared libevmux may
 * run with a newer one than the headers it was compiled with. */
#include "evmux.h"

unsigned evmux_version(void)
{
    return EVMUX_VERSION_NUMBER;
}

const char *evmux_version_string(void)
{
    return EVMUX_VERSION_STRING;
}
