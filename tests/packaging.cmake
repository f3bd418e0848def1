# Tests of evmux as an installed library: its version, its exported ABI, the
# install tree and programs built against it. Included by tests/CMakeLists.txt.

# unit_api (a unit_*.c, registered above) checks the version against this.
target_compile_definitions(unit_api PRIVATE EVMUX_TEST_PROJECT_VERSION="${PROJECT_VERSION}")

# evmux-echo-server --help names exactly the backends this build has.
set(evmux_compiled_in select)
foreach(backend poll epoll uring)
  string(TOUPPER ${backend} upper)
  if(EVMUX_HAVE_${upper})
    set(evmux_compiled_in "${backend},${evmux_compiled_in}")
  endif()
endforeach()
add_test(NAME echo_server_help COMMAND evmux-echo-server --help)
set_tests_properties(echo_server_help PROPERTIES
  PASS_REGULAR_EXPRESSION "\nBackends compiled in: ${evmux_compiled_in}\n" TIMEOUT 10)
