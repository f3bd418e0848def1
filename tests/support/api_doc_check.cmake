# Fails unless DOC (docs/api.md) has exactly one entry for each function
# HEADER (include/evmux.h) declares with EVMUX_API, and no entry for any
# other function, naming each difference.
#
# The rule, also stated at the top of docs/api.md:
#  - a function of the header is a line that begins with "EVMUX_API" and
#    whose first "(" follows the function's name;
#  - an entry of the reference is a line that begins with "### `NAME()`":
#    a level-3 heading, the name in backticks, followed by "()" inside them.
#    Headings of types and constants have no "()" and are not entries.
file(STRINGS "${HEADER}" header_lines REGEX "^EVMUX_API ")
set(declared "")
foreach(line IN LISTS header_lines)
  if(line MATCHES "^EVMUX_API [^(]*[^A-Za-z0-9_(]([A-Za-z_][A-Za-z0-9_]*)\\(")
    list(APPEND declared ${CMAKE_MATCH_1})
  else()
    message(FATAL_ERROR "${HEADER}: cannot find the function's name in: ${line}")
  endif()
endforeach()

file(STRINGS "${DOC}" doc_lines REGEX "^### `")
set(documented "")
foreach(line IN LISTS doc_lines)
  if(line MATCHES "^### `([A-Za-z_][A-Za-z0-9_]*)\\(\\)`")
    list(APPEND documented ${CMAKE_MATCH_1})
  endif()
endforeach()

set(missing ${declared})
if(documented)
  list(REMOVE_ITEM missing ${documented})
endif()
set(stale ${documented})
if(declared)
  list(REMOVE_ITEM stale ${declared})
endif()
set(twice ${documented})
list(REMOVE_DUPLICATES twice)
set(duplicated "")
foreach(name IN LISTS twice)
  set(copies ${documented})
  list(FILTER copies INCLUDE REGEX "^${name}$")
  list(LENGTH copies n)
  if(n GREATER 1)
    list(APPEND duplicated ${name})
  endif()
endforeach()

list(LENGTH declared n_declared)
if(missing OR stale OR duplicated OR n_declared EQUAL 0)
  set(msg "${DOC} does not match the functions of ${HEADER}:")
  foreach(name IN LISTS missing)
    string(APPEND msg "\n  declared, no entry: ${name} (add a heading \"### `${name}()`\")")
  endforeach()
  foreach(name IN LISTS stale)
    string(APPEND msg "\n  entry, not declared: ${name} (a removed or renamed function?)")
  endforeach()
  foreach(name IN LISTS duplicated)
    string(APPEND msg "\n  more than one entry: ${name}")
  endforeach()
  if(n_declared EQUAL 0)
    string(APPEND msg "\n  no EVMUX_API function found in the header")
  endif()
  message(FATAL_ERROR "${msg}")
endif()
message(STATUS "${DOC} has an entry for each of the ${n_declared} functions of ${HEADER}")
