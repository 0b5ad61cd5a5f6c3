// SPDX-License-Identifier: MIT
// Selective attention: the tiled prefill against plain causal attention, and
// decoding with a pruned KV cache against the full cache.
//
//   selective/prefill       selective_attention() (selection head 0, F carried
//                           across query tiles), baseline selective/causal
//   selective/causal        the engine's causal flash_attention on the same data
//   selective/decode        one decoding step (eviction, attention over the
//                           cache, F update) of a cache with budget K at
//                           context N; baseline selective/decode_full
//   selective/decode_full   the same step with the full cache (K = N)
//
// Shapes: batch 1, H = 8 heads (Hkv = 8), head_dim D = 64; prefill at
// N in {1024, 4096, 16384}; decoding at N = 2048 with K in {N, 1024, 512, 256,
// N/16, N/25, N/47}. The decode cache is filled by a prefill of N tokens and
// then stepped; with K = N every step evicts one token, so the cache stays at
// N tokens (the full context) for the whole measurement. Counters:
// kv_bytes (the cache's K/V storage), kv_reduction (full / this), budget.
#include <benchmark/benchmark.h>

#include <effattn/effattn.hpp>
#include <effattn/selective/selective.hpp>
#include <vector>

#include "support/bench_support.hpp"

namespace {

using effattn::index_t;
using effattn_bench::name;

constexpr index_t kH = 8, kD = 64;

double causal_pairs(double N) { return N * (N + 1) / 2; }

std::string shape_name(const char* method, index_t N, int t) {
  return name(std::string("selective/") + method, {{"N", N}, {"H", kH}, {"D", kD}, {"t", t}});
}

void bm_prefill(benchmark::State& state, index_t N, bool selective) {
  const effattn::Executor ex(effattn_bench::threads());
  const size_t n = static_cast<size_t>(kH * N * kD);
  auto q = effattn_bench::random_vector(n, 1), k = effattn_bench::random_vector(n, 2), v = effattn_bench::random_vector(n, 3);
  std::vector<float> out(n);
  const auto qv = effattn::make_view<const float>(q.data(), 1, kH, N, kD);
  const auto kv = effattn::make_view<const float>(k.data(), 1, kH, N, kD);
  const auto vv = effattn::make_view<const float>(v.data(), 1, kH, N, kD);
  const auto ov = effattn::make_view(out.data(), 1, kH, N, kD);
  effattn_bench::reset_peak();
  for (auto _ : state) {
    if (selective)
      effattn::selective::selective_attention<float>(qv, kv, vv, ov, {}, ex);
    else
      effattn::flash_attention<float>(qv, kv, vv, ov, {0, true}, ex);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  effattn_bench::report(state, effattn_bench::attention_flops(1, kH, causal_pairs(double(N)), kD, kD),
                        effattn_bench::peak_bytes());
  if (selective) state.SetLabel("baseline=selective/causal");
}

void bm_decode(benchmark::State& state, index_t N, index_t K, bool full) {
  const effattn::Executor ex(effattn_bench::threads());
  // N prompt tokens plus enough distinct next tokens for the iterations (reused cyclically).
  const index_t steps = 512;
  auto q = effattn_bench::random_vector(static_cast<size_t>(kH * N * kD), 11);
  auto k = effattn_bench::random_vector(q.size(), 12), v = effattn_bench::random_vector(q.size(), 13);
  auto qs = effattn_bench::random_vector(static_cast<size_t>(steps * kH * kD), 14);
  auto ks = effattn_bench::random_vector(qs.size(), 15), vs = effattn_bench::random_vector(qs.size(), 16);
  std::vector<float> out(static_cast<size_t>(kH * N * kD)), o1(static_cast<size_t>(kH * kD));
  effattn::selective::SelectiveKVCache<float> cache(1, kH, kH, kD, kD, K);
  cache.prefill(effattn::make_view<const float>(q.data(), 1, kH, N, kD), effattn::make_view<const float>(k.data(), 1, kH, N, kD),
                effattn::make_view<const float>(v.data(), 1, kH, N, kD), effattn::make_view(out.data(), 1, kH, N, kD), ex);
  index_t s = 0;
  for (auto _ : state) {
    const index_t off = (s++ % steps) * kH * kD;
    cache.step(effattn::make_view<const float>(qs.data() + off, 1, kH, 1, kD),
               effattn::make_view<const float>(ks.data() + off, 1, kH, 1, kD),
               effattn::make_view<const float>(vs.data() + off, 1, kH, 1, kD), effattn::make_view(o1.data(), 1, kH, 1, kD),
               ex);
    benchmark::DoNotOptimize(o1.data());
  }
  const double full_bytes = 2.0 * kH * N * kD * sizeof(float);
  state.counters["kv_bytes"] = static_cast<double>(cache.kv_bytes());
  state.counters["kv_reduction"] = full_bytes / static_cast<double>(cache.kv_bytes());
  state.counters["budget"] = static_cast<double>(K);
  effattn_bench::report(state, effattn_bench::attention_flops(1, kH, double(cache.size()), kD, kD), -1);
  if (!full) state.SetLabel("baseline=selective/decode_full");
}

const bool registered = [] {
  const int t = effattn_bench::threads();
  std::vector<index_t> sizes = {1024, 4096, 16384};
  if (effattn_bench::quick()) sizes = {1024};
  for (index_t N : sizes) {
    auto* c = benchmark::RegisterBenchmark(shape_name("causal", N, t).c_str(),
                                           [N](benchmark::State& s) { bm_prefill(s, N, false); });
    auto* p = benchmark::RegisterBenchmark(shape_name("prefill", N, t).c_str(),
                                           [N](benchmark::State& s) { bm_prefill(s, N, true); });
    for (auto* b : {c, p}) {
      b->Unit(benchmark::kMillisecond)->UseRealTime();
      if (N >= 16384) b->Iterations(2)->Repetitions(1);
    }
  }
  const index_t N = 2048;
  benchmark::RegisterBenchmark(name("selective/decode_full", {{"N", N}, {"H", kH}, {"D", kD}, {"t", t}}).c_str(),
                               [N](benchmark::State& s) { bm_decode(s, N, N, true); })
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  for (index_t K : {index_t(1024), index_t(512), index_t(256), N / 16, N / 25, N / 47})
    benchmark::RegisterBenchmark(name("selective/decode", {{"N", N}, {"K", K}, {"H", kH}, {"D", kD}, {"t", t}}).c_str(),
                                 [N, K](benchmark::State& s) { bm_decode(s, N, K, false); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
