# Fails unless CI installs packages with the README's set-up line, word for
# word, so the line users copy is the one CI proves enough.
file(STRINGS "${README}" lines REGEX "^ *apt-get install ")
list(LENGTH lines n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "${README} should have one apt-get install line, not ${n}")
endif()
string(STRIP "${lines}" line)
file(READ "${CI}" ci)
string(FIND "\n${ci}" "\n${line}\n" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${CI} has no line reading exactly: ${line}")
endif()
message(STATUS "${CI} runs: ${line}")
