# SPDX-License-Identifier: MIT
# Runs one libFuzzer target for a fixed, seeded number of executions on a
# fresh copy of its committed seed corpus, and prints libFuzzer's final
# statistics (executions, time, coverage). Arguments: FUZZER, CORPUS, WORK, RUNS.
# The whole libFuzzer log stays in WORK/fuzz.log, crash inputs in WORK.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus)
if(EXISTS ${CORPUS})
  file(GLOB seeds ${CORPUS}/*)
  if(seeds)
    file(COPY ${seeds} DESTINATION ${WORK}/corpus)
  endif()
endif()
execute_process(COMMAND ${FUZZER} -seed=1 -runs=${RUNS} -max_len=512 -timeout=60 -rss_limit_mb=4096
                        -print_final_stats=1 -artifact_prefix=${WORK}/ ${WORK}/corpus
                WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc OUTPUT_FILE ${WORK}/fuzz.log ERROR_FILE ${WORK}/fuzz.log)
file(STRINGS ${WORK}/fuzz.log summary REGEX "^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[ \t]+DONE)")
get_filename_component(name ${FUZZER} NAME)
foreach(line IN LISTS summary)
  message("${name}: ${line}")
endforeach()
if(NOT rc EQUAL 0)
  file(READ ${WORK}/fuzz.log log)
  string(LENGTH "${log}" n)
  if(n GREATER 6000)
    math(EXPR from "${n} - 6000")
    string(SUBSTRING "${log}" ${from} 6000 log)
  endif()
  message("${log}")
  message(FATAL_ERROR "fuzz target ${FUZZER} failed (rc=${rc}); crash inputs and fuzz.log are in ${WORK}")
endif()
