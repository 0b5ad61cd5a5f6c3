# SPDX-License-Identifier: MIT
# Runs one libFuzzer target for a fixed, seeded number of executions on a
# fresh copy of its committed seed corpus. Arguments: FUZZER, CORPUS, WORK, RUNS.
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
                WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "fuzz target ${FUZZER} failed (rc=${rc}); crash inputs are in ${WORK}")
endif()
