// SPDX-License-Identifier: MIT
// effattn internal: the kernels compiled once per instruction-set level, and
// EFFATTN_WITH_LEVEL, the switch that runs a statement at the level a call
// chose (core/isa.hpp).
//
// Each level is core/simd_level.hpp + kernels_level.hpp included inside
//   effattn::v0::detail::<this TU's level>::lvl_<level>
// with the EFFATTN_LEVEL_* macros describing the level, and (x86-64, GCC or
// Clang) between pragmas that give every function defined there, lambdas
// included, the level's target attribute: GCC's push_options/target/
// pop_options, Clang's `attribute push(target)`. Masks and scores are defined
// outside with the default target; a target function may inline them.
//
// Which levels: those at or above this translation unit's own level
// (EFFATTN_TU_LEVEL, from its flags): a TU built with -mavx2 -mfma -mf16c (or
// -march=native on an AVX2 host) has only avx2 and avx512, one built for
// AVX-512 has only avx512, and a call that asks for less runs the TU's own
// level. Off x86-64 or without GCC/Clang there is one level, lvl_portable,
// whose width follows the build's flags.
#pragma once
#ifndef EFFATTN_INTERNAL_HEADER_OK
#  error "effattn/attention/detail/levels.hpp is internal: include <effattn/attention/engine.hpp> instead."
#endif

#include "../../core/simd.hpp"
#include "kernels.hpp"

// ---------------------------------------------------------------- portable
#if !EFFATTN_DISPATCH
#  if defined(__AVX512F__)
#    define EFFATTN_LEVEL_BYTES 64
#  elif defined(__AVX__)
#    define EFFATTN_LEVEL_BYTES 32
#  else
#    define EFFATTN_LEVEL_BYTES 16
#  endif
#  if defined(__AVX512F__)
#    define EFFATTN_LEVEL_REGISTERS 32
#  elif defined(__x86_64__) || defined(_M_X64)
#    define EFFATTN_LEVEL_REGISTERS 16
#  else
#    define EFFATTN_LEVEL_REGISTERS 32  // AArch64 NEON has 32
#  endif
#  if defined(__AVX512F__)
#    define EFFATTN_LEVEL_AVX512 1
#  else
#    define EFFATTN_LEVEL_AVX512 0
#  endif
#  if defined(__AVX__)
#    define EFFATTN_LEVEL_AVX 1
#  else
#    define EFFATTN_LEVEL_AVX 0
#  endif
#  if defined(__AVX2__)
#    define EFFATTN_LEVEL_AVX2 1
#  else
#    define EFFATTN_LEVEL_AVX2 0
#  endif
#  if defined(__FMA__)
#    define EFFATTN_LEVEL_FMA 1
#  else
#    define EFFATTN_LEVEL_FMA 0
#  endif
#  if defined(__F16C__)
#    define EFFATTN_LEVEL_F16C 1
#  else
#    define EFFATTN_LEVEL_F16C 0
#  endif
#  define EFFATTN_LEVEL_BF16 0  // (no dispatch: Isa::avx512_bf16 is never active)
#  define EFFATTN_BF16_FN
EFFATTN_NAMESPACE_BEGIN
namespace detail {
inline namespace EFFATTN_TU_NS {
namespace lvl_portable {
#  include "../../core/simd_level.hpp"
#  include "kernels_level.hpp"
}  // namespace lvl_portable
}  // namespace EFFATTN_TU_NS
}  // namespace detail
EFFATTN_NAMESPACE_END
#  define EFFATTN_WITH_LEVEL(level, ...)                          \
    {                                                             \
      (void)(level);                                              \
      namespace lvl = ::effattn::detail::EFFATTN_TU_NS::lvl_portable; \
      __VA_ARGS__;                                                \
    }

#else  // EFFATTN_DISPATCH

// ---------------------------------------------------------------- baseline
#  if EFFATTN_TU_LEVEL <= 0
#    define EFFATTN_LEVEL_BYTES 16
#    define EFFATTN_LEVEL_REGISTERS 16
#    define EFFATTN_LEVEL_AVX 0
#    define EFFATTN_LEVEL_AVX2 0
#    define EFFATTN_LEVEL_FMA 0
#    define EFFATTN_LEVEL_F16C 0
#    define EFFATTN_LEVEL_AVX512 0
EFFATTN_NAMESPACE_BEGIN
namespace detail {
inline namespace EFFATTN_TU_NS {
namespace lvl_baseline {
#    include "../../core/simd_level.hpp"
#    include "kernels_level.hpp"
}  // namespace lvl_baseline
}  // namespace EFFATTN_TU_NS
}  // namespace detail
EFFATTN_NAMESPACE_END
#    undef EFFATTN_LEVEL_BYTES
#    undef EFFATTN_LEVEL_REGISTERS
#    undef EFFATTN_LEVEL_AVX
#    undef EFFATTN_LEVEL_AVX2
#    undef EFFATTN_LEVEL_FMA
#    undef EFFATTN_LEVEL_F16C
#    undef EFFATTN_LEVEL_AVX512
#  endif

// -------------------------------------------------------------------- avx2
#  if EFFATTN_TU_LEVEL <= 1
#    define EFFATTN_LEVEL_BYTES 32
#    define EFFATTN_LEVEL_REGISTERS 16
#    define EFFATTN_LEVEL_AVX 1
#    define EFFATTN_LEVEL_AVX2 1
#    define EFFATTN_LEVEL_FMA 1
#    define EFFATTN_LEVEL_F16C 1
#    define EFFATTN_LEVEL_AVX512 0
#    if defined(__clang__)
#      pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#    else
#      pragma GCC push_options
#      pragma GCC target("avx2,fma,f16c")
#    endif
EFFATTN_NAMESPACE_BEGIN
namespace detail {
inline namespace EFFATTN_TU_NS {
namespace lvl_avx2 {
#    include "../../core/simd_level.hpp"
#    include "kernels_level.hpp"
}  // namespace lvl_avx2
}  // namespace EFFATTN_TU_NS
}  // namespace detail
EFFATTN_NAMESPACE_END
#    if defined(__clang__)
#      pragma clang attribute pop
#    else
#      pragma GCC pop_options
#    endif
#    undef EFFATTN_LEVEL_BYTES
#    undef EFFATTN_LEVEL_REGISTERS
#    undef EFFATTN_LEVEL_AVX
#    undef EFFATTN_LEVEL_AVX2
#    undef EFFATTN_LEVEL_FMA
#    undef EFFATTN_LEVEL_F16C
#    undef EFFATTN_LEVEL_AVX512
#  endif

// ------------------------------------------------------------------ avx512
#  define EFFATTN_LEVEL_BYTES 64
#  define EFFATTN_LEVEL_REGISTERS 32
#  define EFFATTN_LEVEL_AVX 1
#  define EFFATTN_LEVEL_AVX2 1
#  define EFFATTN_LEVEL_FMA 1
#  define EFFATTN_LEVEL_F16C 1
#  define EFFATTN_LEVEL_AVX512 1
// The AVX512-BF16 kernels (bfloat16 attention at Isa::avx512_bf16) live in
// this level, each function with the extra feature in its own target
// attribute, so nothing else here may use it.
#  define EFFATTN_LEVEL_BF16 EFFATTN_DISPATCH_BF16
#  define EFFATTN_BF16_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,avx512bf16")))
#  if defined(__clang__)
#    pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), \
                                 apply_to = function)
#  else
#    pragma GCC push_options
#    pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#  endif
EFFATTN_NAMESPACE_BEGIN
namespace detail {
inline namespace EFFATTN_TU_NS {
namespace lvl_avx512 {
#  include "../../core/simd_level.hpp"
#  include "kernels_level.hpp"
}  // namespace lvl_avx512
}  // namespace EFFATTN_TU_NS
}  // namespace detail
EFFATTN_NAMESPACE_END
#  if defined(__clang__)
#    pragma clang attribute pop
#  else
#    pragma GCC pop_options
#  endif

#  if EFFATTN_TU_LEVEL <= 0
#    define EFFATTN_LEVEL_CASE_BASELINE_(...)                                          \
      case ::effattn::Isa::baseline: {                                                 \
        namespace lvl = ::effattn::detail::EFFATTN_TU_NS::lvl_baseline;                \
        __VA_ARGS__;                                                                   \
      } break;
#  else
#    define EFFATTN_LEVEL_CASE_BASELINE_(...)
#  endif
#  if EFFATTN_TU_LEVEL <= 1
#    define EFFATTN_LEVEL_CASE_AVX2_(...)                                              \
      case ::effattn::Isa::avx2: {                                                     \
        namespace lvl = ::effattn::detail::EFFATTN_TU_NS::lvl_avx2;                    \
        __VA_ARGS__;                                                                   \
      } break;
#  else
#    define EFFATTN_LEVEL_CASE_AVX2_(...)
#  endif
/// Runs the statement(s) with `lvl` naming the namespace of `level` (an
/// effattn::Isa), raised to this translation unit's own level if below it.
#  define EFFATTN_WITH_LEVEL(level, ...)                                               \
    switch (::effattn::detail::EFFATTN_TU_NS::tu_level(level)) {                       \
      EFFATTN_LEVEL_CASE_BASELINE_(__VA_ARGS__)                                        \
      EFFATTN_LEVEL_CASE_AVX2_(__VA_ARGS__)                                            \
      default: {                                                                       \
        namespace lvl = ::effattn::detail::EFFATTN_TU_NS::lvl_avx512;                  \
        __VA_ARGS__;                                                                   \
      } break;                                                                         \
    }
#endif  // EFFATTN_DISPATCH

#undef EFFATTN_LEVEL_BYTES
#undef EFFATTN_LEVEL_REGISTERS
#undef EFFATTN_LEVEL_AVX
#undef EFFATTN_LEVEL_AVX2
#undef EFFATTN_LEVEL_FMA
#undef EFFATTN_LEVEL_F16C
#undef EFFATTN_LEVEL_AVX512
#undef EFFATTN_LEVEL_BF16
#undef EFFATTN_BF16_FN

EFFATTN_NAMESPACE_BEGIN
namespace detail {
inline namespace EFFATTN_TU_NS {
/// The level a call runs in this translation unit: the level asked for, or
/// the unit's own level if that is higher (the lower levels are not compiled
/// here; code built for the unit's level runs wherever the unit runs).
inline Isa tu_level(Isa level) {
  return static_cast<int>(level) < EFFATTN_TU_LEVEL ? static_cast<Isa>(EFFATTN_TU_LEVEL) : level;
}
}  // namespace EFFATTN_TU_NS
}  // namespace detail
EFFATTN_NAMESPACE_END
