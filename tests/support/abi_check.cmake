# Fails unless the shared library LIB exports exactly the functions listed in
# LIST (src/evmux.sym), naming each difference, so that an accidental export
# or a removed function cannot pass unnoticed. NM is nm from binutils.
# Other exported symbols (variables) are never meant to be there either.
execute_process(COMMAND "${NM}" -D --defined-only "${LIB}"
  OUTPUT_VARIABLE nm_out ERROR_VARIABLE nm_err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} -D --defined-only ${LIB} failed: ${nm_err}")
endif()

set(exported "")
set(not_functions "")
string(REGEX MATCHALL "[^\n]+" nm_lines "${nm_out}")
foreach(line IN LISTS nm_lines)
  # "ADDRESS TYPE NAME[@VERSION]"
  if(line MATCHES "^[0-9a-fA-F]* +([A-Za-z]) +([^ @]+)")
    if(CMAKE_MATCH_1 STREQUAL "T")
      list(APPEND exported ${CMAKE_MATCH_2})
    else()
      list(APPEND not_functions "${CMAKE_MATCH_2} (${CMAKE_MATCH_1})")
    endif()
  endif()
endforeach()

file(STRINGS "${LIST}" listed REGEX "^[A-Za-z_][A-Za-z0-9_]*$")

set(unlisted ${exported})
list(REMOVE_ITEM unlisted ${listed})
set(missing ${listed})
list(REMOVE_ITEM missing ${exported})

list(LENGTH exported n_exported)
if(unlisted OR missing OR not_functions OR n_exported EQUAL 0)
  set(msg "The ABI of ${LIB} differs from ${LIST}:")
  foreach(name IN LISTS unlisted)
    string(APPEND msg "\n  exported but not listed: ${name}")
  endforeach()
  foreach(name IN LISTS missing)
    string(APPEND msg "\n  listed but not exported: ${name}")
  endforeach()
  foreach(name IN LISTS not_functions)
    string(APPEND msg "\n  exported, not a function: ${name}")
  endforeach()
  if(n_exported EQUAL 0)
    string(APPEND msg "\n  no function exported at all")
  endif()
  string(APPEND msg "\nA new public function: add its name to the list (sorted). "
    "A name exported by mistake: drop EVMUX_API from it. A removal: remove it from "
    "the list, and know that programs built against the old library break.")
  message(FATAL_ERROR "${msg}")
endif()
message(STATUS "${LIB} exports the ${n_exported} functions of ${LIST}")
