# Finds the libraries evmux is compared with, once for all of bench/
# (bench/CMakeLists.txt includes this file before its subdirectories). For
# each of libev, libevent, libuv and liburing it sets
# EVMUX_BENCH_<LIB>_FOUND and, when found, an imported target
# EvmuxBench::<lib>. A missing library only skips its programs.
#
# Debian's libev ships no pkg-config file, hence the fallback to ev.h and
# libev.so. Debian's libev also exports libevent's symbols: a program must
# never link both, so each benchmark program links exactly one of these.

if(PKG_CONFIG_FOUND)
  pkg_check_modules(EVMUX_BENCH_PC_LIBEV QUIET IMPORTED_TARGET libev)
  pkg_check_modules(EVMUX_BENCH_PC_LIBEVENT QUIET IMPORTED_TARGET libevent_core)
  pkg_check_modules(EVMUX_BENCH_PC_LIBUV QUIET IMPORTED_TARGET libuv)
  pkg_check_modules(EVMUX_BENCH_PC_LIBURING QUIET IMPORTED_TARGET liburing)
endif()

# libev
set(EVMUX_BENCH_LIBEV_FOUND FALSE)
if(EVMUX_BENCH_PC_LIBEV_FOUND)
  if(NOT TARGET EvmuxBench::libev)
    add_library(EvmuxBench::libev INTERFACE IMPORTED)
    target_link_libraries(EvmuxBench::libev INTERFACE PkgConfig::EVMUX_BENCH_PC_LIBEV)
  endif()
  set(EVMUX_BENCH_LIBEV_FOUND TRUE)
else()
  find_path(EVMUX_BENCH_EV_INCLUDE_DIR ev.h)
  find_library(EVMUX_BENCH_EV_LIBRARY ev)
  if(EVMUX_BENCH_EV_INCLUDE_DIR AND EVMUX_BENCH_EV_LIBRARY)
    if(NOT TARGET EvmuxBench::libev)
      add_library(EvmuxBench::libev UNKNOWN IMPORTED)
      set_target_properties(EvmuxBench::libev PROPERTIES
        IMPORTED_LOCATION ${EVMUX_BENCH_EV_LIBRARY}
        INTERFACE_INCLUDE_DIRECTORIES ${EVMUX_BENCH_EV_INCLUDE_DIR})
    endif()
    set(EVMUX_BENCH_LIBEV_FOUND TRUE)
  endif()
endif()

# libevent (libevent_core holds the loop; no need for the extras)
set(EVMUX_BENCH_LIBEVENT_FOUND FALSE)
if(EVMUX_BENCH_PC_LIBEVENT_FOUND)
  if(NOT TARGET EvmuxBench::libevent)
    add_library(EvmuxBench::libevent INTERFACE IMPORTED)
    target_link_libraries(EvmuxBench::libevent INTERFACE PkgConfig::EVMUX_BENCH_PC_LIBEVENT)
  endif()
  set(EVMUX_BENCH_LIBEVENT_FOUND TRUE)
endif()

# libuv
set(EVMUX_BENCH_LIBUV_FOUND FALSE)
if(EVMUX_BENCH_PC_LIBUV_FOUND)
  if(NOT TARGET EvmuxBench::libuv)
    add_library(EvmuxBench::libuv INTERFACE IMPORTED)
    target_link_libraries(EvmuxBench::libuv INTERFACE PkgConfig::EVMUX_BENCH_PC_LIBUV)
  endif()
  set(EVMUX_BENCH_LIBUV_FOUND TRUE)
endif()

# liburing
set(EVMUX_BENCH_LIBURING_FOUND FALSE)
if(EVMUX_BENCH_PC_LIBURING_FOUND)
  if(NOT TARGET EvmuxBench::liburing)
    add_library(EvmuxBench::liburing INTERFACE IMPORTED)
    target_link_libraries(EvmuxBench::liburing INTERFACE PkgConfig::EVMUX_BENCH_PC_LIBURING)
  endif()
  set(EVMUX_BENCH_LIBURING_FOUND TRUE)
endif()
