// SPDX-License-Identifier: MIT
// effattn internal: what the per-level short vectors (core/simd_level.hpp) and
// kernels need, and this translation unit's own level.
#pragma once
#ifndef EFFATTN_INTERNAL_HEADER_OK
#  error "effattn/core/simd.hpp is internal: include <effattn/effattn.hpp> or a public effattn header instead."
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "config.hpp"
#include "half.hpp"
#include "isa.hpp"

// GCC and Clang declare every intrinsic whatever the -m flags (each carries its
// own target attribute), so the levels above the build's flags can use them.
#if EFFATTN_DISPATCH || defined(__AVX512F__) || defined(__AVX__) || defined(__FMA__) || defined(__F16C__)
#  include <immintrin.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define EFFATTN_HAVE_VECTOR_EXT 1
#else
#  define EFFATTN_HAVE_VECTOR_EXT 0
#endif

// AVX-512 note: the plain forms of several AVX-512 intrinsics (max, min,
// cvtph, cvtepu16, slli) pass an _mm512_undefined_* vector as the merge source
// of a masked builtin, and GCC 12's avx512fintrin.h builds that vector as
// `__m512 __Y = __Y;`, which -Wmaybe-uninitialized then reports at every
// inlining site in effattn code. The kernels call the masked forms with an
// all-ones mask (kAll16) and a defined source instead: the same instruction
// (the compiler drops the mask), and no warning.

// This translation unit's own level, from its flags: the lowest level it
// compiles (a lower one could not run where this code runs). The level
// namespaces are nested in a namespace named after it, so two translation
// units built with different flags never share (or mix up, at link time) a
// level's code or its blocking constants.
#if EFFATTN_DISPATCH
#  if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
      defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#    define EFFATTN_TU_LEVEL 2
#    define EFFATTN_TU_NS tu_avx512
#  elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#    define EFFATTN_TU_LEVEL 1
#    define EFFATTN_TU_NS tu_avx2
#  else
#    define EFFATTN_TU_LEVEL 0
#    define EFFATTN_TU_NS tu_baseline
#  endif
#else
#  define EFFATTN_TU_LEVEL 0
#  define EFFATTN_TU_NS tu_portable
#endif
