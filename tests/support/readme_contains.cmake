# Fails unless README contains the example file verbatim, so the two cannot drift.
file(READ "${README}" readme)
file(READ "${EXAMPLE}" example)
string(FIND "${readme}" "${example}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${README} does not contain ${EXAMPLE} verbatim")
endif()
message(STATUS "README contains ${EXAMPLE}")
