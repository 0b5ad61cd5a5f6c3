// SPDX-License-Identifier: MIT
// Benchmark support: the machine's fp32 FMA roof, measured in the same run
// as the figures it bounds (bench_attention's machine/fma_peak,
// bench_star's machine/star_fma_peak).
#pragma once

#include <benchmark/benchmark.h>
#include <effattn/effattn.hpp>

#ifndef EFFATTN_INTERNAL_HEADER_OK
#  define EFFATTN_INTERNAL_HEADER_OK
#endif
#include <effattn/core/simd.hpp>

#include "bench_support.hpp"

namespace effattn_bench {

/// A register-only FMA loop on every thread (12 independent accumulators,
/// enough to cover the FMA latency on current x86 cores), at the level the
/// engine runs at (effattn::active_isa(); counters `isa`: 0 baseline, 1 avx2,
/// 2 avx512, 3 avx512_bf16, and `simd_lanes`).
inline void fma_peak(benchmark::State& state) {
  const int t = threads();
  constexpr long kInner = 1 << 22;
  const effattn::Isa level = effattn::active_isa();
  int lanes = 0;
  EFFATTN_WITH_LEVEL(level, lanes = lvl::simd::kFloatLanes);
  for (auto _ : state) {
    float sink = 0;
#pragma omp parallel num_threads(t) reduction(+ : sink)
    {
      EFFATTN_WITH_LEVEL(level, sink += lvl::fma_peak_kernel(kInner));
    }
    benchmark::DoNotOptimize(sink);
  }
  report(state, 2.0 * kInner * 12 * lanes * t, -1);
  state.counters["simd_lanes"] = lanes;  // fp32 lanes of the level the engine runs at, for the plots' captions
  state.counters["isa"] = static_cast<double>(effattn::detail::tu_level(level));
}

}  // namespace effattn_bench
