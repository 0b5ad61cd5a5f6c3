// SPDX-License-Identifier: MIT
// Benchmark support shared by every benchmarks/bench_*.cpp program.
//
// Naming convention (benchmarks/report.py relies on it): every benchmark is
// registered as "<section>/<method>/key:value/key:value/...", and a run that
// should be compared with another sets the label "baseline=<section>/<method>";
// the report pairs it with the run of that method whose params are a subset
// (equal values) of this run's params, and prints speedup = t_baseline / t_this.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace effattn_bench {

// Heap accounting (support/memory.cpp interposes malloc).
bool memory_tracking();
/// Starts a new peak measurement from the current heap level.
void reset_peak();
/// Peak bytes held above the level at the last reset_peak() (but at least 0).
long long peak_bytes();
long long current_bytes();

/// OpenMP threads for the operators: EFFATTN_BENCH_THREADS, default 2.
inline int threads() {
  const char* e = std::getenv("EFFATTN_BENCH_THREADS");
  int t = e ? std::atoi(e) : 2;
  return t > 0 ? t : 2;
}

/// Quick mode (EFFATTN_BENCH_QUICK=1): only the smallest shapes, for smoke runs.
inline bool quick() {
  const char* e = std::getenv("EFFATTN_BENCH_QUICK");
  return e && e[0] == '1';
}

/// FLOPs of attention counting allowed (unmasked) work only: per allowed
/// (query, key) pair, 2*D for q.k and 2*Dv for p*v.
inline double attention_flops(double B, double H, double allowed_pairs, double D, double Dv) {
  return 2.0 * (D + Dv) * B * H * allowed_pairs;
}

/// Sets the standard counters: flops (per iteration), GFLOPs (rate over real
/// time) and peak_mem_bytes (omit with peak < 0).
inline void report(benchmark::State& state, double flops_per_iter, long long peak) {
  if (flops_per_iter > 0) {
    state.counters["flops"] = flops_per_iter;
    state.counters["GFLOPs"] = benchmark::Counter(flops_per_iter / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  }
  if (peak >= 0) state.counters["peak_mem_bytes"] = static_cast<double>(peak);
}

/// name = prefix + "/k:v" for each pair.
inline std::string name(const std::string& prefix, std::initializer_list<std::pair<const char*, long long>> kv) {
  std::string s = prefix;
  for (auto& p : kv) s += "/" + std::string(p.first) + ":" + std::to_string(p.second);
  return s;
}

inline std::vector<float> random_vector(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

}  // namespace effattn_bench
