/* The calls added for programs built against an installed evmux: the
 * library's version, which must agree with the generated macros and with
 * the CMake project version, and evmux_handle_loop. */
#include "unit_util.h"

#include <stdio.h>
#include <string.h>

#ifndef EVMUX_TEST_PROJECT_VERSION
#error "the build passes the CMake project version as EVMUX_TEST_PROJECT_VERSION"
#endif

static void test_version_matches_project(void)
{
    char from_macros[32];
    snprintf(from_macros, sizeof from_macros, "%d.%d.%d", EVMUX_VERSION_MAJOR,
             EVMUX_VERSION_MINOR, EVMUX_VERSION_PATCH);

    CHECK(strcmp(EVMUX_VERSION_STRING, EVMUX_TEST_PROJECT_VERSION) == 0);
    CHECK(strcmp(from_macros, EVMUX_TEST_PROJECT_VERSION) == 0);
    CHECK(strcmp(evmux_version_string(), EVMUX_TEST_PROJECT_VERSION) == 0);
    CHECK_EQ(evmux_version(), EVMUX_VERSION_MAJOR * 10000 + EVMUX_VERSION_MINOR * 100 +
                                  EVMUX_VERSION_PATCH);
    CHECK_EQ(evmux_version(), EVMUX_VERSION_NUMBER);
}

static void never_fires(evmux_timer *timer)
{
    (void)timer;
    CHECK(!"the timer is never started");
}

static void test_handle_loop(void)
{
    evmux_loop *loop = unit_loop_new();
    evmux_timer timer;

    CHECK(evmux_handle_loop(NULL) == NULL);
    CHECK_OK(evmux_timer_init(loop, &timer, never_fires));
    CHECK(evmux_handle_loop(&timer.handle) == loop);
    CHECK_OK(evmux_close(&timer.handle, NULL));
    CHECK(evmux_handle_loop(&timer.handle) == loop); /* until its close callback */
    unit_loop_finish(loop);
}

int main(void)
{
    unit_watchdog(10);
    RUN_TEST(test_version_matches_project);
    RUN_TEST(test_handle_loop);
    return 0;
}
