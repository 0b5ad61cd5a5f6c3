# SPDX-License-Identifier: MIT
# effattn's version has one source: the EFFATTN_VERSION_MAJOR/MINOR/PATCH
# macros of include/effattn/core/config.hpp. The top-level CMakeLists.txt reads
# them before project() (as fmt does), and the package tests read them to check
# what find_package, FetchContent and pkg-config report. Usable in script mode.
function(effattn_read_version header out_var)
  file(STRINGS "${header}" lines REGEX "^#define EFFATTN_VERSION_(MAJOR|MINOR|PATCH) +[0-9]+")
  set(parts)
  foreach(part MAJOR MINOR PATCH)
    set(value "")
    foreach(line IN LISTS lines)
      if(line MATCHES "^#define EFFATTN_VERSION_${part} +([0-9]+)")
        set(value "${CMAKE_MATCH_1}")
      endif()
    endforeach()
    if(value STREQUAL "")
      message(FATAL_ERROR "effattn: no '#define EFFATTN_VERSION_${part} <number>' in ${header}")
    endif()
    list(APPEND parts "${value}")
  endforeach()
  list(JOIN parts "." version)
  set(${out_var} "${version}" PARENT_SCOPE)
endfunction()
