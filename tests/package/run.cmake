# SPDX-License-Identifier: MIT
# Builds tests/package/consumer against effattn the ways a user can, and runs it:
#   MODE=find_package      configure effattn alone, install it into a scratch prefix, find_package it
#                          (exact version from config.hpp; a newer major version must be refused)
#   MODE=build_tree        configure effattn alone, find_package it with effattn_DIR=<its build dir>
#   MODE=add_subdirectory  add_subdirectory(<source tree>)
#   MODE=fetchcontent      FetchContent_Declare(effattn URL <archive>) of a source archive made here
#                          from the files a release archive holds (offline: a local path)
#   MODE=pkg_config        install into a scratch prefix (configured for another prefix: the .pc
#                          file must be relocatable), then CXX $(pkg-config --cflags effattn) [-fopenmp]
# Every mode checks that the version the package reports is the one in
# include/effattn/core/config.hpp. Inputs: SOURCE_DIR, WORK_DIR, MODE, GENERATOR,
# CXX (the C++ compiler), OPENMP (ON when the parent build found OpenMP).
set(dir ${WORK_DIR}/${MODE})
file(REMOVE_RECURSE ${dir})
file(MAKE_DIRECTORY ${dir})

include(${SOURCE_DIR}/cmake/effattnVersion.cmake)
effattn_read_version(${SOURCE_DIR}/include/effattn/core/config.hpp version)
string(REGEX MATCH "^[0-9]+" major "${version}")
message("effattn: the header says version ${version}")

function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGV}\n${out}\n${err}")
  endif()
  message("${out}")
endfunction()

set(compiler)
if(CXX)
  set(compiler -DCMAKE_CXX_COMPILER=${CXX})
endif()
set(effattn_alone -G ${GENERATOR} ${compiler} -DCMAKE_BUILD_TYPE=Release -DEFFATTN_BUILD_TESTS=OFF
    -DEFFATTN_BUILD_BENCHMARKS=OFF -DEFFATTN_BUILD_EXAMPLES=OFF -DEFFATTN_INSTALL=ON)
set(consumer -S ${SOURCE_DIR}/tests/package/consumer -B ${dir}/consumer-build -G ${GENERATOR} ${compiler}
    -DCMAKE_BUILD_TYPE=Release)

if(MODE STREQUAL "pkg_config")
  find_program(PKG_CONFIG_EXECUTABLE NAMES pkg-config pkgconf)
  if(NOT PKG_CONFIG_EXECUTABLE)
    message("effattn: SKIPPED: pkg-config not found (Debian: apt-get install pkg-config)")
    return()
  endif()
  execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} --exists eigen3 RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message("effattn: SKIPPED: pkg-config does not know eigen3 (no eigen3.pc; Debian: libeigen3-dev ships it)")
    return()
  endif()
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${dir}/effattn-build ${effattn_alone}
      -DCMAKE_INSTALL_PREFIX=${dir}/configured-prefix -DCMAKE_INSTALL_DATADIR=share)
  run(${CMAKE_COMMAND} --install ${dir}/effattn-build --prefix ${dir}/prefix)
  if(EXISTS ${dir}/configured-prefix)
    message(FATAL_ERROR "installed into the configure-time prefix, not --prefix")
  endif()
  set(pkg_path ${dir}/prefix/share/pkgconfig)
  if(DEFINED ENV{PKG_CONFIG_PATH} AND NOT "$ENV{PKG_CONFIG_PATH}" STREQUAL "")
    string(APPEND pkg_path ":$ENV{PKG_CONFIG_PATH}")
  endif()
  set(ENV{PKG_CONFIG_PATH} "${pkg_path}")
  execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} --modversion effattn RESULT_VARIABLE rc
                  OUTPUT_VARIABLE pc_version ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0 OR NOT pc_version STREQUAL version)
    message(FATAL_ERROR "pkg-config --modversion effattn: '${pc_version}' (${rc}), header: ${version}\n${err}")
  endif()
  execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} --cflags effattn RESULT_VARIABLE rc
                  OUTPUT_VARIABLE cflags ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config --cflags effattn failed (${rc}): ${err}")
  endif()
  message("effattn: pkg-config --modversion effattn = ${pc_version}, --cflags effattn = ${cflags}")
  separate_arguments(cflags UNIX_COMMAND "${cflags}")
  set(found_include OFF)
  get_filename_component(want ${dir}/prefix/include REALPATH)
  foreach(flag IN LISTS cflags)
    if(flag MATCHES "^-I(.+)$")
      get_filename_component(include_dir "${CMAKE_MATCH_1}" REALPATH)
      if(include_dir STREQUAL want)
        set(found_include ON)
      endif()
    endif()
  endforeach()
  if(NOT found_include)
    message(FATAL_ERROR "pkg-config --cflags effattn lacks the installed include dir ${want}")
  endif()
  set(openmp)
  if(OPENMP)
    set(openmp -fopenmp)
  endif()
  string(REPLACE "." ";" parts "${version}")
  list(GET parts 0 v_major)
  list(GET parts 1 v_minor)
  list(GET parts 2 v_patch)
  if(NOT CXX)
    set(CXX c++)
  endif()
  run(${CXX} -std=c++17 -O2 ${cflags} ${openmp} -DEFFATTN_CONSUMER_EXPECT_MAJOR=${v_major}
      -DEFFATTN_CONSUMER_EXPECT_MINOR=${v_minor} -DEFFATTN_CONSUMER_EXPECT_PATCH=${v_patch}
      ${SOURCE_DIR}/tests/package/consumer/main.cpp -o ${dir}/consumer)
  run(${dir}/consumer)
  return()
endif()

if(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${dir}/effattn-build ${effattn_alone} -DCMAKE_INSTALL_PREFIX=${dir}/prefix
      -DCMAKE_INSTALL_DATADIR=share)
  run(${CMAKE_COMMAND} --install ${dir}/effattn-build)
  # effattnConfigVersion.cmake (SameMajorVersion) refuses the next major version.
  math(EXPR next_major "${major} + 1")
  execute_process(COMMAND ${CMAKE_COMMAND} ${consumer} -DCMAKE_PREFIX_PATH=${dir}/prefix
                          -DEFFATTN_CONSUMER_MODE=find_package -DEFFATTN_FIND_VERSION=${next_major}.0
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT err MATCHES "compatible with requested version")
    message(FATAL_ERROR "find_package(effattn ${next_major}.0) should fail on version ${version}:\n${out}\n${err}")
  endif()
  file(REMOVE_RECURSE ${dir}/consumer-build)
  run(${CMAKE_COMMAND} ${consumer} -DCMAKE_PREFIX_PATH=${dir}/prefix -DEFFATTN_CONSUMER_MODE=find_package
      -DEFFATTN_FIND_VERSION=${version} -DEFFATTN_FIND_EXACT=ON
      -DEFFATTN_EXPECT_CONFIG=${dir}/prefix/share/cmake/effattn/effattnConfig.cmake)
elseif(MODE STREQUAL "build_tree")
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${dir}/effattn-build ${effattn_alone})
  run(${CMAKE_COMMAND} ${consumer} -Deffattn_DIR=${dir}/effattn-build -DEFFATTN_CONSUMER_MODE=find_package
      -DEFFATTN_FIND_VERSION=${version} -DEFFATTN_FIND_EXACT=ON
      -DEFFATTN_EXPECT_CONFIG=${dir}/effattn-build/effattnConfig.cmake)
elseif(MODE STREQUAL "add_subdirectory")
  run(${CMAKE_COMMAND} ${consumer} -DEFFATTN_CONSUMER_MODE=add_subdirectory -DEFFATTN_SOURCE_DIR=${SOURCE_DIR})
elseif(MODE STREQUAL "fetchcontent")
  # What a release archive holds; building effattn as a subproject needs no more.
  set(stage ${dir}/effattn-${version})
  file(MAKE_DIRECTORY ${stage})
  file(COPY ${SOURCE_DIR}/CMakeLists.txt ${SOURCE_DIR}/LICENSE ${SOURCE_DIR}/README.md ${SOURCE_DIR}/cmake
            ${SOURCE_DIR}/include DESTINATION ${stage})
  set(archive ${dir}/effattn-${version}.tar.gz)
  execute_process(COMMAND ${CMAKE_COMMAND} -E tar czf ${archive} effattn-${version} WORKING_DIRECTORY ${dir}
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "could not pack ${archive}")
  endif()
  file(REMOVE_RECURSE ${stage})
  file(SHA256 ${archive} sha256)
  run(${CMAKE_COMMAND} ${consumer} -DEFFATTN_CONSUMER_MODE=fetchcontent -DEFFATTN_URL=${archive}
      -DEFFATTN_URL_SHA256=${sha256})
else()
  message(FATAL_ERROR "unknown MODE '${MODE}'")
endif()
run(${CMAKE_COMMAND} --build ${dir}/consumer-build)
run(${dir}/consumer-build/consumer)
