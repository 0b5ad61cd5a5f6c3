// SPDX-License-Identifier: MIT
// Test support: run a test at every instruction-set level (core/isa.hpp).
#pragma once

#include <effattn/effattn.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace testing_util {

/// The levels a test that covers every level runs at: each level up to the
/// CPU's best (effattn::supported_isa()), from this test program's own level
/// up (a program built for AVX2 or AVX-512, e.g. with -march=native, carries
/// only its level and those above: asking for less runs its own). `static`:
/// the answer depends on the translation unit's flags.
/// Isa::avx512_bf16 runs the avx512 kernels for every type but bfloat16:
/// float and double tests leave it out (with_bf16 = false), the bfloat16
/// ones ask for it.
static inline std::vector<effattn::Isa> isa_levels(bool with_bf16 = false) {
  std::vector<effattn::Isa> r;
  const int lo = static_cast<int>(effattn::detail::tu_level(effattn::Isa::baseline));
  int hi = static_cast<int>(effattn::supported_isa());
  if (!with_bf16) hi = std::min(hi, static_cast<int>(effattn::Isa::avx512));
  for (int l = lo; l <= hi; ++l) r.push_back(static_cast<effattn::Isa>(l));
  return r;
}

/// Sets an instruction-set level for a scope and restores the previous one.
struct ScopedIsa {
  effattn::Isa saved;
  explicit ScopedIsa(effattn::Isa isa) : saved(effattn::active_isa()) { effattn::set_isa(isa); }
  ~ScopedIsa() { effattn::set_isa(saved); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;
};

}  // namespace testing_util
