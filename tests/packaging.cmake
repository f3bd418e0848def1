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

# Install into a temporary prefix, then build and run programs against it
# with pkg-config, find_package and add_subdirectory. Sanitizer builds are
# left out: their libraries need the sanitizer runtime in every consumer.
# Run alone: its compilers would steal CPU from the timing-sensitive tests.
if(EVMUX_INSTALL AND NOT EVMUX_SANITIZE)
  add_test(NAME install_consumers
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/consumer/install_test.sh ${CMAKE_COMMAND}
            ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR} ${CMAKE_C_COMPILER} ${PROJECT_VERSION}
            ${CMAKE_INSTALL_LIBDIR})
  set_tests_properties(install_consumers PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77 RUN_SERIAL ON)
endif()

# The exported ABI is a checked list (src/evmux.sym).
add_test(NAME abi_exports
  COMMAND ${CMAKE_COMMAND} -DNM=${CMAKE_NM} -DLIB=$<TARGET_FILE:evmux>
          -DLIST=${PROJECT_SOURCE_DIR}/src/evmux.sym
          -P ${CMAKE_CURRENT_SOURCE_DIR}/support/abi_check.cmake)

# CI installs with the README's set-up line, word for word.
add_test(NAME ci_setup_line
  COMMAND ${CMAKE_COMMAND} -DREADME=${PROJECT_SOURCE_DIR}/README.md -DCI=${PROJECT_SOURCE_DIR}/.ci/run
          -P ${CMAKE_CURRENT_SOURCE_DIR}/support/ci_setup_line.cmake)
