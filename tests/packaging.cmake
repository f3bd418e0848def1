# Tests of evmux as an installed library: its version, its exported ABI, the
# install tree and programs built against it. Included by tests/CMakeLists.txt.

# unit_api (a unit_*.c, registered above) checks the version against this.
target_compile_definitions(unit_api PRIVATE EVMUX_TEST_PROJECT_VERSION="${PROJECT_VERSION}")
