// SPDX-License-Identifier: MIT
// effattn: version, ABI namespace and the assertion/throw macros every header uses.
#pragma once

#include <cstddef>

// The version's single source: CMakeLists.txt reads these three lines
// (cmake/effattnVersion.cmake) for project(), effattnConfigVersion.cmake and
// effattn.pc; tests/package checks that every package reports this version.
#define EFFATTN_VERSION_MAJOR 0
#define EFFATTN_VERSION_MINOR 1
#define EFFATTN_VERSION_PATCH 0

// The inline namespace carries the version so that two effattn builds with
// different ABIs cannot be silently linked together (one-definition rule).
#define EFFATTN_NAMESPACE_BEGIN namespace effattn { inline namespace v0 {
#define EFFATTN_NAMESPACE_END } }

// EFFATTN_ASSERT guards internal invariants (never user input: user input is
// checked with exceptions at every public entry point). Override it before
// including effattn to route failures into your own handler.
#ifndef EFFATTN_ASSERT
#  ifdef NDEBUG
#    define EFFATTN_ASSERT(cond, msg) ((void)0)
#  else
#    include <cassert>
#    define EFFATTN_ASSERT(cond, msg) assert((cond) && (msg))
#  endif
#endif

// effattn needs C++ exceptions: bad input is reported by throwing, and the
// executor carries an exception from a worker thread back to the caller.
// Say so up front rather than with a compiler error deep in a header.
#if (defined(__GNUC__) || defined(__clang__)) && !defined(__cpp_exceptions)
#  error "effattn needs C++ exceptions (it reports bad input by throwing); do not build it with -fno-exceptions"
#endif

// EFFATTN_THROW raises a user-facing error (an effattn::invalid_argument).
// It may be overridden, for example to log before throwing, but it must not
// return: the caller's code after it assumes the input was rejected.
#ifndef EFFATTN_THROW
#  define EFFATTN_THROW(exc) throw exc
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define EFFATTN_RESTRICT __restrict__
#  define EFFATTN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#  define EFFATTN_RESTRICT
#  define EFFATTN_ALWAYS_INLINE inline
#endif

EFFATTN_NAMESPACE_BEGIN
/// Signed index type used for every shape, stride and position.
using index_t = std::ptrdiff_t;
EFFATTN_NAMESPACE_END
