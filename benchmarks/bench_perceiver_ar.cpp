// SPDX-License-Identifier: MIT
// Perceiver AR attention stack against full causal attention of the same
// depth, on the engine, and cached decoding against a full recompute.
//
//   perceiver_ar/stack        one causal cross-attention (M latents -> N inputs)
//                             + L causal self-attentions among the M latents
//   perceiver_ar/full_causal  L causal self-attentions over all N positions
//                             (the baseline of perceiver_ar/stack)
//   perceiver_ar/decode_step  one more token with caches: the new latent
//                             attends N cached inputs, then L x (<= M) cached
//                             latents (baseline: perceiver_ar/stack, the full
//                             recompute of the same stack)
//
// Context keys/values are stored as float (kv:f32) or float16 (kv:f16, the
// engine widens them to float as it loads them; see core/half.hpp): decoding
// streams the whole context cache once per token, so its time is memory
// bandwidth, and 16-bit storage halves the bytes. decode_step also runs on an
// int8 cache (kv:int8, core/quant.hpp: codes plus one float scale per (head,
// token) row, as models::PerceiverArDecoder with context_kv = Storage::int8
// keeps it; the new token's row is quantized when it is appended). Its
// cache_bytes counter is the context cache's size (keys and values, scales
// included). Each decode_step is paired with the stack of the same storage.
//
// Shapes: batch 1, H = 8 heads, head_dim D = 64, M = 1024 latents, L = 6
// layers, N in {4096, 16384, 65536, 131072}. Every layer reuses the same
// q/k/v tensors (the work, not the data, is what is measured). Full causal
// attention at N = 65536 takes minutes and runs once; at N = 131072 it is
// not registered (about 4x longer still) unless EFFATTN_BENCH_FULL_131072=1.
// peak_mem_bytes counts the heap allocated during the timed calls on top of
// the inputs; input_bytes is the size of the inputs themselves.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <effattn/perceiver_ar/perceiver_ar.hpp>
#include <vector>

#include "support/bench_support.hpp"

namespace {

using effattn::index_t;
namespace pa = effattn::perceiver_ar;
using effattn_bench::name;

constexpr index_t kH = 8, kD = 64, kM = 1024, kL = 6;

/// Allowed (query, key) pairs of the cross-attention: latent m sees N - M + m + 1 inputs.
double cross_pairs(double N, double M) { return M * (N - M) + M * (M + 1) / 2; }
double causal_pairs(double N) { return N * (N + 1) / 2; }

/// Random context keys/values in storage KV.
template <class KV>
std::vector<KV> random_kv(size_t n, unsigned seed) {
  const auto f = effattn_bench::random_vector(n, seed);
  std::vector<KV> r(n);
  effattn::convert(f.data(), r.data(), static_cast<index_t>(n));
  return r;
}

template <class KV>
const char* kv_tag() {
  return std::is_same<KV, float>::value                ? "f32"
         : std::is_same<KV, effattn::float16>::value   ? "f16"
         : std::is_same<KV, effattn::bfloat16>::value  ? "bf16"
                                                       : "int8";
}

/// Context keys or values [1, H, N, D] in storage KV (std::int8_t: codes and
/// one scale per row), and how a new row is appended.
template <class KV>
struct ContextKV {
  std::vector<KV> data;
  std::vector<float> scale;  // int8 only: [1, H, N]
  index_t N;
  ContextKV(index_t n, unsigned seed) : N(n) {
    const auto f = effattn_bench::random_vector(static_cast<size_t>(kH * N * kD), seed);
    data.resize(f.size());
    if constexpr (std::is_same<KV, std::int8_t>::value) {
      scale.resize(static_cast<size_t>(kH * N));
      effattn::quantize_rows(f.data(), kH * N, kD, kD, data.data(), kD, scale.data(), 1);
    } else {
      effattn::convert(f.data(), data.data(), static_cast<index_t>(f.size()));
    }
  }
  /// Writes a float row of D numbers as row n of head h.
  void put(index_t h, index_t n, const float* row) {
    if constexpr (std::is_same<KV, std::int8_t>::value)
      effattn::quantize_rows(row, 1, kD, kD, data.data() + (h * N + n) * kD, kD, scale.data() + h * N + n, 1);
    else
      effattn::convert(row, data.data() + (h * N + n) * kD, kD);
  }
  /// The attention operand: a view, or a QuantizedKV.
  auto operand() const {
    if constexpr (std::is_same<KV, std::int8_t>::value)
      return effattn::QuantizedKV{effattn::make_view<const std::int8_t>(data.data(), 1, kH, N, kD),
                                  effattn::make_view<const float>(scale.data(), 1, kH, N)};
    else
      return effattn::make_view<const KV>(data.data(), 1, kH, N, kD);
  }
  double bytes() const { return static_cast<double>(sizeof(KV) * data.size() + sizeof(float) * scale.size()); }
};

/// KV = bfloat16 also sets AttentionOptions::compute = Precision::bfloat16
/// (the bfloat16 kernel on an AVX512-BF16 CPU, float elsewhere).
template <class KV>
void bm_stack(benchmark::State& state, index_t N) {
  const effattn::Executor ex{effattn_bench::threads()};
  effattn::AttentionOptions ao;
  if (std::is_same<KV, effattn::bfloat16>::value) ao.compute = effattn::Precision::bfloat16;
  auto q = effattn_bench::random_vector(static_cast<size_t>(kH * kM * kD), 1);
  auto k = random_kv<KV>(static_cast<size_t>(kH * N * kD), 2);
  auto v = random_kv<KV>(static_cast<size_t>(kH * N * kD), 3);
  auto lq = effattn_bench::random_vector(static_cast<size_t>(kH * kM * kD), 4);
  auto lk = effattn_bench::random_vector(static_cast<size_t>(kH * kM * kD), 5);
  auto lv = effattn_bench::random_vector(static_cast<size_t>(kH * kM * kD), 6);
  std::vector<float> out(static_cast<size_t>(kH * kM * kD)), lout(out.size());
  const double input_bytes = 4.0 * (q.size() + lq.size() + lk.size() + lv.size() + 2 * out.size()) +
                             static_cast<double>(sizeof(KV)) * (k.size() + v.size());
  effattn_bench::reset_peak();
  for (auto _ : state) {
    pa::cross_attention<float>(effattn::make_view<const float>(q.data(), 1, kH, kM, kD),
                               effattn::make_view<const KV>(k.data(), 1, kH, N, kD),
                               effattn::make_view<const KV>(v.data(), 1, kH, N, kD),
                               effattn::make_view(out.data(), 1, kH, kM, kD), {}, ao, ex);
    for (index_t l = 0; l < kL; ++l)
      pa::latent_attention<float>(effattn::make_view<const float>(lq.data(), 1, kH, kM, kD),
                                  effattn::make_view<const float>(lk.data(), 1, kH, kM, kD),
                                  effattn::make_view<const float>(lv.data(), 1, kH, kM, kD),
                                  effattn::make_view(lout.data(), 1, kH, kM, kD), {}, ao, ex);
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(lout.data());
    benchmark::ClobberMemory();
  }
  const double pairs = cross_pairs(N, kM) + kL * causal_pairs(kM);
  effattn_bench::report(state, effattn_bench::attention_flops(1, kH, pairs, kD, kD), effattn_bench::peak_bytes());
  state.counters["input_bytes"] = input_bytes;
  state.SetLabel("baseline=perceiver_ar/full_causal");
}

void bm_full_causal(benchmark::State& state, index_t N) {
  const effattn::Executor ex{effattn_bench::threads()};
  auto q = effattn_bench::random_vector(static_cast<size_t>(kH * N * kD), 1);
  auto k = effattn_bench::random_vector(static_cast<size_t>(kH * N * kD), 2);
  auto v = effattn_bench::random_vector(static_cast<size_t>(kH * N * kD), 3);
  std::vector<float> out(q.size());
  const double input_bytes = 4.0 * (q.size() + k.size() + v.size() + out.size());
  effattn_bench::reset_peak();
  for (auto _ : state) {
    for (index_t l = 0; l < kL; ++l)
      effattn::flash_attention<float>(effattn::make_view<const float>(q.data(), 1, kH, N, kD),
                                      effattn::make_view<const float>(k.data(), 1, kH, N, kD),
                                      effattn::make_view<const float>(v.data(), 1, kH, N, kD),
                                      effattn::make_view(out.data(), 1, kH, N, kD), {0, true}, ex);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  effattn_bench::report(state, effattn_bench::attention_flops(1, kH, kL * causal_pairs(N), kD, kD),
                        effattn_bench::peak_bytes());
  state.counters["input_bytes"] = input_bytes;
}

// One decoding step with the caches of a context of N tokens and M cached
// latents per layer: the new latent's query attends all N cached inputs (no
// mask: it is the last position), then in each of the L layers it attends the
// M cached latents (itself included), with the caller's executor as
// effattn::models::PerceiverArDecoder passes it (the engine runs a step too
// small for a fork/join on the calling thread itself). Appending one key/value
// row per cache is a copy of H * D floats and is included.
template <class KV>
void bm_decode_step(benchmark::State& state, index_t N) {
  const effattn::Executor ex{effattn_bench::threads()};
  auto q = effattn_bench::random_vector(static_cast<size_t>(kH * kD), 1);
  ContextKV<KV> k(N, 2), v(N, 3);
  auto newkv = effattn_bench::random_vector(static_cast<size_t>(kH * kD), 7);
  std::vector<std::vector<float>> lk, lv;
  for (index_t l = 0; l < kL; ++l) {
    lk.push_back(effattn_bench::random_vector(static_cast<size_t>(kH * kM * kD), 10 + l));
    lv.push_back(effattn_bench::random_vector(static_cast<size_t>(kH * kM * kD), 20 + l));
  }
  std::vector<float> out(static_cast<size_t>(kH * kD));
  effattn_bench::reset_peak();
  for (auto _ : state) {
    // The new token's key/value goes to the last cache row of each head
    // (rounded or quantized as it is stored).
    for (index_t h = 0; h < kH; ++h) {
      k.put(h, N - 1, newkv.data() + h * kD);
      v.put(h, N - 1, newkv.data() + h * kD);
    }
    pa::cross_attention<float>(effattn::make_view<const float>(q.data(), 1, kH, 1, kD), k.operand(), v.operand(),
                               effattn::make_view(out.data(), 1, kH, 1, kD), {}, {}, ex);
    for (index_t l = 0; l < kL; ++l) {
      for (index_t h = 0; h < kH; ++h)
        for (index_t e = 0; e < kD; ++e) {
          lk[l][(h * kM + kM - 1) * kD + e] = out[h * kD + e];
          lv[l][(h * kM + kM - 1) * kD + e] = out[h * kD + e];
        }
      effattn::attention<float>(effattn::make_view<const float>(out.data(), 1, kH, 1, kD),
                                effattn::make_view<const float>(lk[l].data(), 1, kH, kM, kD),
                                effattn::make_view<const float>(lv[l].data(), 1, kH, kM, kD),
                                effattn::make_view(q.data(), 1, kH, 1, kD), effattn::NoMask{}, effattn::NoScore{}, {}, ex);
      std::swap(out, q);  // the layer's output feeds the next layer's query
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  effattn_bench::report(state, effattn_bench::attention_flops(1, kH, N + kL * kM, kD, kD), effattn_bench::peak_bytes());
  state.counters["cache_bytes"] = k.bytes() + v.bytes();
  state.SetLabel("baseline=perceiver_ar/stack");
}

int register_all() {
  const int t = effattn_bench::threads();
  std::vector<index_t> sizes = {4096, 16384, 65536, 131072};
  if (effattn_bench::quick()) sizes = {4096};
  auto stack = [&](auto kv) {
    using KV = decltype(kv);
    for (index_t N : sizes) {
      auto* b = benchmark::RegisterBenchmark(
          (name("perceiver_ar/stack", {{"N", N}, {"M", kM}, {"L", kL}, {"H", kH}, {"D", kD}, {"t", t}}) + "/kv:" +
           kv_tag<KV>()).c_str(),
          [N](benchmark::State& s) { bm_stack<KV>(s, N); });
      b->Unit(benchmark::kMillisecond)->UseRealTime();
      if (N >= 65536) b->Iterations(2)->Repetitions(1);
    }
  };
  stack(float{});
  stack(effattn::float16{});
  stack(effattn::bfloat16{});  // with compute = bfloat16
  const bool full_131072 = std::getenv("EFFATTN_BENCH_FULL_131072") && std::getenv("EFFATTN_BENCH_FULL_131072")[0] == '1';
  for (index_t N : sizes) {
    if (N == 131072 && !full_131072) continue;
    auto* b = benchmark::RegisterBenchmark(name("perceiver_ar/full_causal", {{"N", N}, {"L", kL}, {"H", kH}, {"D", kD}, {"t", t}}).c_str(),
                                           [N](benchmark::State& s) { bm_full_causal(s, N); });
    b->Unit(benchmark::kMillisecond)->UseRealTime();
    if (N >= 65536) b->Iterations(1)->Repetitions(1);
  }
  auto decode = [&](auto kv) {
    using KV = decltype(kv);
    for (index_t N : sizes) {
      auto* b = benchmark::RegisterBenchmark(
          (name("perceiver_ar/decode_step", {{"N", N}, {"M", kM}, {"L", kL}, {"H", kH}, {"D", kD}, {"t", t}}) +
           "/kv:" + kv_tag<KV>()).c_str(),
          [N](benchmark::State& s) { bm_decode_step<KV>(s, N); });
      b->Unit(benchmark::kMillisecond)->UseRealTime();
    }
  };
  decode(float{});
  decode(effattn::float16{});
  decode(std::int8_t{});
  return 0;
}
[[maybe_unused]] const int registered = register_all();

}  // namespace

BENCHMARK_MAIN();
