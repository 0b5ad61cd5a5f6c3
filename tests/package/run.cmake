# SPDX-License-Identifier: MIT
# Builds the consumer project against effattn, either through an installed
# package (MODE=find_package: configure effattn alone, install it into a
# scratch prefix, then find_package it) or through add_subdirectory, and runs it.
set(dir ${WORK_DIR}/${MODE})
file(REMOVE_RECURSE ${dir})
file(MAKE_DIRECTORY ${dir})

function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGV}\n${out}\n${err}")
  endif()
  message("${out}")
endfunction()

if(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${dir}/effattn-build -G ${GENERATOR} -DCMAKE_BUILD_TYPE=Release
      -DEFFATTN_BUILD_TESTS=OFF -DEFFATTN_BUILD_BENCHMARKS=OFF -DEFFATTN_BUILD_EXAMPLES=OFF -DEFFATTN_INSTALL=ON
      -DCMAKE_INSTALL_PREFIX=${dir}/prefix)
  run(${CMAKE_COMMAND} --install ${dir}/effattn-build)
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/package/consumer -B ${dir}/consumer-build -G ${GENERATOR}
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=${dir}/prefix -DEFFATTN_CONSUMER_MODE=find_package)
else()
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/package/consumer -B ${dir}/consumer-build -G ${GENERATOR}
      -DCMAKE_BUILD_TYPE=Release -DEFFATTN_CONSUMER_MODE=add_subdirectory -DEFFATTN_SOURCE_DIR=${SOURCE_DIR})
endif()
run(${CMAKE_COMMAND} --build ${dir}/consumer-build)
run(${dir}/consumer-build/consumer)
