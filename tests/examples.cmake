# Tests of the programs in examples/ (tests/example_*.c), each given the
# paths of the examples it runs. The examples take the auto backend, so
# EVMUX_BACKEND runs them once per backend, like the echo tests.
# Included by tests/CMakeLists.txt.
function(evmux_example_test name) # ARGN: the examples it runs, e.g. echo-server
  set(paths "")
  foreach(example ${ARGN})
    list(APPEND paths $<TARGET_FILE:evmux-example-${example}>)
  endforeach()
  evmux_test(NAME ${name} SOURCES ${name}.c support/echo_harness.c support/example_harness.c
    ARGS ${paths} TIMEOUT 300)
  foreach(example ${ARGN})
    add_dependencies(${name} evmux-example-${example})
  endforeach()
endfunction()

evmux_example_test(example_echo_server echo-server)
evmux_example_test(example_tcp_client echo-server tcp-client)
evmux_example_test(example_timers_and_signals timers-and-signals)
evmux_example_test(example_worker_pool worker-pool)
evmux_example_test(example_chat_server chat-server)
evmux_example_test(example_udp_echo_server udp-echo-server)
