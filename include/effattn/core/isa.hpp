// SPDX-License-Identifier: MIT
// effattn: the instruction-set level the kernels run at.
//
// On x86-64 with GCC or Clang the engine's kernels are compiled for several
// levels in every program, whatever -march the program is built with, and the
// best level the CPU supports is chosen once, at first use, from cpuid:
//
//   Isa::baseline  x86-64 (SSE2): 4 float lanes
//   Isa::avx2      AVX2 + FMA + F16C: 8 float lanes
//   Isa::avx512    AVX-512 F/BW/VL/DQ (+ AVX2, FMA, F16C): 16 float lanes
//   Isa::avx512_bf16  the same + AVX512-BF16: bfloat16 attention
//                  (attention<bfloat16>) multiplies pairs of bfloat16 with
//                  vdpbf16ps; every float kernel is the avx512 one
//
// A lower level can be forced for tests and benchmarks, with the environment
// variable EFFATTN_ISA=baseline|avx2|avx512|avx512_bf16 (read once, at first use; a level
// above the CPU's is lowered to the CPU's) or with set_isa() (which rejects a
// level the CPU lacks). A translation unit built with flags that already imply
// a level (say -mavx2 -mfma -mf16c, or -march=native) carries only the levels
// at and above its own, and runs its own level when a lower one is asked for.
// Elsewhere (other architectures, other compilers) there is one level, whose
// vector width follows the build's flags as before; it reports Isa::baseline.
// Results are bit-identical for any thread count at a given level, not across
// levels (the vector width changes the summation order).
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "config.hpp"
#include "error.hpp"

// EFFATTN_DISPATCH is 1 where the kernels are compiled for several levels and
// chosen at run time. Defining EFFATTN_NO_DISPATCH (for every translation unit
// of a program) keeps the single portable level there too.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(EFFATTN_NO_DISPATCH)
#  include <cpuid.h>
#  define EFFATTN_DISPATCH 1
#else
#  define EFFATTN_DISPATCH 0
#endif

// EFFATTN_DISPATCH_BF16 is 1 where the compiler can build AVX512-BF16 code
// under a target attribute (GCC >= 10, Clang >= 9): only then is
// Isa::avx512_bf16 a level this program can run.
#if EFFATTN_DISPATCH && ((defined(__clang__) && __clang_major__ >= 9) || \
                         (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10))
#  define EFFATTN_DISPATCH_BF16 1
#else
#  define EFFATTN_DISPATCH_BF16 0
#endif

EFFATTN_NAMESPACE_BEGIN

/// An instruction-set level of the kernels, in increasing order.
enum class Isa : int {
  baseline = 0,  ///< x86-64 baseline (SSE2), or the portable path off x86
  avx2 = 1,      ///< AVX2 + FMA + F16C
  avx512 = 2,    ///< AVX-512 F, BW, VL, DQ
  avx512_bf16 = 3,  ///< avx512 + AVX512-BF16 (vdpbf16ps) for bfloat16 attention
};

/// The highest level effattn knows.
constexpr Isa kTopIsa = Isa::avx512_bf16;

inline const char* to_string(Isa isa) {
  switch (isa) {
    case Isa::baseline: return "baseline";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::avx512_bf16: return "avx512_bf16";
  }
  return "unknown";
}

namespace detail {

/// The best level this CPU (and OS: AVX state saved) runs, from cpuid.
inline Isa cpu_isa() {
#if EFFATTN_DISPATCH
  __builtin_cpu_init();
  unsigned a = 0, b = 0, c = 0, d = 0;
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
#  if EFFATTN_DISPATCH_BF16
    // cpuid leaf 7, sub-leaf 1, EAX bit 5: AVX512_BF16 (the OS saves its
    // state with the other AVX-512 registers).
    if (__get_cpuid_max(0, nullptr) >= 7 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5)) != 0)
      return Isa::avx512_bf16;
#  endif
    return Isa::avx512;
  }
  return avx2 ? Isa::avx2 : Isa::baseline;
#else
  return Isa::baseline;
#endif
}

inline Isa supported_isa_cached() {
  static const Isa s = cpu_isa();
  return s;
}

/// Parses a level name; false for anything else.
inline bool parse_isa(const char* s, Isa& out) {
  for (Isa i : {Isa::baseline, Isa::avx2, Isa::avx512, Isa::avx512_bf16})
    if (std::strcmp(s, to_string(i)) == 0) {
      out = i;
      return true;
    }
  return false;
}

/// The default level: EFFATTN_ISA if set (lowered to the CPU's), else the CPU's.
inline Isa default_isa() {
  const Isa cpu = supported_isa_cached();
  const char* env = std::getenv("EFFATTN_ISA");
  if (env == nullptr || *env == '\0') return cpu;
  Isa want;
  if (!parse_isa(env, want))
    EFFATTN_THROW(parameter_error(concat("effattn: EFFATTN_ISA='", env, "' is not one of baseline, avx2, avx512, avx512_bf16")));
  return static_cast<int>(want) < static_cast<int>(cpu) ? want : cpu;
}

/// The active level, shared by every translation unit (an inline function's
/// static). Initialised at first use (EFFATTN_ISA is read then, once).
inline std::atomic<int>& isa_state() {
  static std::atomic<int> s{static_cast<int>(default_isa())};
  return s;
}

}  // namespace detail

/// The best level the kernels can run at on this CPU (Isa::baseline where
/// there is no run-time dispatch).
inline Isa supported_isa() { return detail::supported_isa_cached(); }

/// The level the next call runs at (each call reads it once): EFFATTN_ISA or
/// set_isa() where given, else supported_isa(). Throws parameter_error at the
/// first use if EFFATTN_ISA holds an unknown name.
inline Isa active_isa() { return static_cast<Isa>(detail::isa_state().load(std::memory_order_relaxed)); }

/// Forces a level for the calls that start after it (tests, benchmarks).
/// Throws parameter_error (a std::invalid_argument) for a level above
/// supported_isa() or not a level at all.
inline void set_isa(Isa isa) {
  const int v = static_cast<int>(isa);
  if (v < 0 || v > static_cast<int>(kTopIsa))
    EFFATTN_THROW(parameter_error(detail::concat("effattn::set_isa: ", v, " is not an effattn::Isa level")));
  if (v > static_cast<int>(supported_isa()))
    EFFATTN_THROW(parameter_error(detail::concat("effattn::set_isa: this CPU does not support ", to_string(isa),
                                         " (the best level it supports is ", to_string(supported_isa()), ")")));
  detail::isa_state().store(v, std::memory_order_relaxed);
}

/// Back to the default level (EFFATTN_ISA if set, else supported_isa()).
inline void reset_isa() { detail::isa_state().store(static_cast<int>(detail::default_isa()), std::memory_order_relaxed); }

EFFATTN_NAMESPACE_END
