// SPDX-License-Identifier: MIT
// effattn: version, ABI namespace and the assertion/throw macros every header uses.
#pragma once

#include <cstddef>

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

// EFFATTN_THROW raises a user-facing error. Builds without exceptions can
// override it (for example with a logging abort).
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
