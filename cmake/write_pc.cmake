# Writes evmux.pc at install time (install(CODE) sets the EVMUX_PC_*
# inputs first), so that it names the prefix of `cmake --install --prefix P`
# rather than the one configured. CMAKE_INSTALL_PREFIX is the install-time one.
set(EVMUX_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
foreach(kind LIBDIR INCLUDEDIR)
  if(NOT IS_ABSOLUTE "${EVMUX_PC_${kind}}")
    set(EVMUX_PC_${kind} "\${prefix}/${EVMUX_PC_${kind}}")
  endif()
endforeach()
configure_file("${EVMUX_PC_TEMPLATE}" "${EVMUX_PC_OUTPUT}" @ONLY)
