// SPDX-License-Identifier: MIT
// Full attention: the tiled engine against the materialised Eigen-GEMM
// version and the dense reference, causal and not, at N in {256, 1024, 4096,
// 16384}, 8 heads, head_dim 64; plus the machine's own roofs measured in the
// same run (fp32 FMA peak, Eigen sgemm of attention shape) and the decode path.
#include <Eigen/Core>
#include <effattn/effattn.hpp>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#define EFFATTN_INTERNAL_HEADER_OK
#include <effattn/core/simd.hpp>

#include "support/bench_support.hpp"
#include "support/roofs.hpp"

#if defined(_OPENMP)
#  include <omp.h>
#endif

namespace {

using namespace effattn;
namespace eb = effattn_bench;

// ---- machine roofs

/// Eigen sgemm of attention shape: [N x 64] * [64 x N].
void BM_sgemm(benchmark::State& state) {
  const index_t N = state.range(0), K = 64;
  Eigen::setNbThreads(eb::threads());
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Mat a = Mat::Random(N, K), b = Mat::Random(K, N), c(N, N);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  eb::report(state, 2.0 * N * N * K, -1);
}

// ---- attention

struct Inputs {
  index_t B = 1, H = 8, N, D = 64;
  std::vector<float> q, k, v, out;
  Inputs(index_t n, index_t nq)
      : N(n),
        q(eb::random_vector(static_cast<size_t>(B * H * nq * D), 1)),
        k(eb::random_vector(static_cast<size_t>(B * H * n * D), 2)),
        v(eb::random_vector(static_cast<size_t>(B * H * n * D), 3)),
        out(static_cast<size_t>(B * H * nq * D)) {}
};

enum class Impl { engine, materialized, reference };

void BM_attention(benchmark::State& state, Impl impl, index_t N, bool causal, index_t nq) {
  Inputs in(N, nq);
  auto Q = make_view<const float>(in.q.data(), in.B, in.H, nq, in.D);
  auto K = make_view<const float>(in.k.data(), in.B, in.H, N, in.D);
  auto V = make_view<const float>(in.v.data(), in.B, in.H, N, in.D);
  auto O = make_view(in.out.data(), in.B, in.H, nq, in.D);
  const Executor ex(eb::threads());
  eb::reset_peak();
  for (auto _ : state) {
    switch (impl) {
      case Impl::engine:
        if (causal)
          attention<float>(Q, K, V, O, CausalMask{}, NoScore{}, {}, ex);
        else
          attention<float>(Q, K, V, O, NoMask{}, NoScore{}, {}, ex);
        break;
      case Impl::materialized:
        if (causal)
          attention_materialized<float>(Q, K, V, O, CausalMask{}, NoScore{}, {}, ex);
        else
          attention_materialized<float>(Q, K, V, O, NoMask{}, NoScore{}, {}, ex);
        break;
      case Impl::reference:
        if (causal)
          attention_reference<float>(Q, K, V, O, CausalMask{});
        else
          attention_reference<float>(Q, K, V, O);
        break;
    }
    benchmark::DoNotOptimize(in.out.data());
    benchmark::ClobberMemory();
  }
  // Allowed pairs: bottom-right causal lets query i see N - nq + i + 1 keys.
  double pairs = 0;
  for (index_t i = 0; i < nq; ++i) pairs += causal ? static_cast<double>(N - nq + i + 1) : static_cast<double>(N);
  eb::report(state, eb::attention_flops(in.B, in.H, pairs, in.D, in.D), eb::peak_bytes());
  state.counters["threads"] = impl == Impl::reference ? 1 : eb::threads();
}

/// attention<X> with 16-bit queries, keys, values and outputs (X bfloat16 or
/// float16): the AVX512-BF16 dot-product kernel at Isa::avx512_bf16, float
/// widening elsewhere. Its baseline is the float engine on the same shape.
/// Inputs rounded to a 16-bit type X (or copied, for float), with views.
template <class X>
struct Inputs16 {
  Inputs in;
  std::vector<X> q, k, v, out;
  Inputs16(index_t N, index_t nq) : in(N, nq), q(in.q.size()), k(in.k.size()), v(in.v.size()), out(in.out.size()) {
    convert(in.q.data(), q.data(), static_cast<index_t>(q.size()));
    convert(in.k.data(), k.data(), static_cast<index_t>(k.size()));
    convert(in.v.data(), v.data(), static_cast<index_t>(v.size()));
  }
  ConstView<X, 4> Q() const { return make_view<const X>(q.data(), in.B, in.H, static_cast<index_t>(q.size()) / (in.B * in.H * in.D), in.D); }
  ConstView<X, 4> K() const { return make_view<const X>(k.data(), in.B, in.H, in.N, in.D); }
  ConstView<X, 4> V() const { return make_view<const X>(v.data(), in.B, in.H, in.N, in.D); }
  View<X, 4> O() { return make_view(out.data(), in.B, in.H, static_cast<index_t>(out.size()) / (in.B * in.H * in.D), in.D); }
};

template <class X>
void BM_attention16(benchmark::State& state, index_t N, bool causal, index_t nq) {
  Inputs16<X> t(N, nq);
  const Inputs& in = t.in;
  const auto Q = t.Q(), K = t.K(), V = t.V();
  const auto O = t.O();
  const auto& out = t.out;
  const Executor ex(eb::threads());
  eb::reset_peak();
  for (auto _ : state) {
    if (causal)
      attention<X>(Q, K, V, O, CausalMask{}, NoScore{}, {}, ex);
    else
      attention<X>(Q, K, V, O, NoMask{}, NoScore{}, {}, ex);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  double pairs = 0;
  for (index_t i = 0; i < nq; ++i) pairs += causal ? static_cast<double>(N - nq + i + 1) : static_cast<double>(N);
  eb::report(state, eb::attention_flops(in.B, in.H, pairs, in.D, in.D), eb::peak_bytes());
  state.counters["threads"] = eb::threads();
  state.counters["isa"] = static_cast<double>(effattn::detail::tu_level(active_isa()));
}

/// The tile-size sweep behind the defaults (EFFATTN_BENCH_TUNE=1 only; see
/// docs/attention.md, "Tuning"): the engine at N = 4096, non-causal, with
/// explicit block_q x block_k, at the active level, in float (X = float) or
/// bfloat16.
template <class X>
void BM_tune(benchmark::State& state, index_t N, index_t bq, index_t bk) {
  Inputs16<X> t(N, N);
  const Inputs& in = t.in;
  const auto Q = t.Q(), K = t.K(), V = t.V();
  const auto O = t.O();
  const auto& out = t.out;
  const Executor ex(eb::threads());
  AttentionOptions opt;
  opt.block_q = bq;
  opt.block_k = bk;
  eb::reset_peak();
  for (auto _ : state) {
    attention<X>(Q, K, V, O, NoMask{}, NoScore{}, opt, ex);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  eb::report(state, eb::attention_flops(in.B, in.H, static_cast<double>(N) * N, in.D, in.D), eb::peak_bytes());
  state.counters["isa"] = static_cast<double>(effattn::detail::tu_level(active_isa()));
}

// Decoding with float16 keys/values (widened to float on load): half the
// bytes of attention/decode, paired with it as the baseline.
/// The decode benchmarks' loop and counters: one query per head against the
/// N cached keys/values K, V (any storage), `bytes` of cache read per step.
template <class KV, class VV>
void run_decode(benchmark::State& state, Inputs& in, index_t N, const KV& K, const VV& V, double bytes,
                const char* baseline) {
  auto Q = make_view<const float>(in.q.data(), in.B, in.H, 1, in.D);
  auto O = make_view(in.out.data(), in.B, in.H, 1, in.D);
  const Executor ex(eb::threads());
  eb::reset_peak();
  for (auto _ : state) {
    attention<float>(Q, K, V, O, NoMask{}, NoScore{}, {}, ex);
    benchmark::DoNotOptimize(in.out.data());
    benchmark::ClobberMemory();
  }
  eb::report(state, eb::attention_flops(in.B, in.H, static_cast<double>(N), in.D, in.D), eb::peak_bytes());
  state.counters["cache_bytes"] = bytes;
  state.counters["GBps"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = eb::threads();
  state.SetLabel(std::string("baseline=") + baseline);
}

void BM_decode_f16(benchmark::State& state, index_t N) {
  Inputs in(N, 1);
  std::vector<float16> k(in.k.size()), v(in.v.size());
  convert(in.k.data(), k.data(), static_cast<index_t>(k.size()));
  convert(in.v.data(), v.data(), static_cast<index_t>(v.size()));
  run_decode(state, in, N, make_view<const float16>(k.data(), in.B, in.H, N, in.D),
             make_view<const float16>(v.data(), in.B, in.H, N, in.D), 2.0 * static_cast<double>(k.size() + v.size()),
             "attention/decode");
}

// Decoding with int8 keys/values and a float scale per row (core/quant.hpp):
// a quarter of float's bytes plus 4 per row, paired with float16 K/V.
void BM_decode_int8(benchmark::State& state, index_t N) {
  Inputs in(N, 1);
  std::vector<std::int8_t> kc(in.k.size()), vc(in.v.size());
  std::vector<float> ks(static_cast<size_t>(in.B * in.H * N)), vs(ks.size());
  quantize(make_view<const float>(in.k.data(), in.B, in.H, N, in.D), make_view(kc.data(), in.B, in.H, N, in.D),
           make_view(ks.data(), in.B, in.H, N));
  quantize(make_view<const float>(in.v.data(), in.B, in.H, N, in.D), make_view(vc.data(), in.B, in.H, N, in.D),
           make_view(vs.data(), in.B, in.H, N));
  const QuantizedKV K{make_view<const std::int8_t>(kc.data(), in.B, in.H, N, in.D), make_view<const float>(ks.data(), in.B, in.H, N)};
  const QuantizedKV V{make_view<const std::int8_t>(vc.data(), in.B, in.H, N, in.D), make_view<const float>(vs.data(), in.B, in.H, N)};
  run_decode(state, in, N, K, V,
             static_cast<double>(kc.size() + vc.size()) + 4.0 * static_cast<double>(ks.size() + vs.size()),
             "attention/decode_f16");
}

/// The machine's memory roof for the decode figures: a STREAM-style copy of
/// 256 MiB (reads + writes counted), on the benchmark's threads.
void BM_stream_copy(benchmark::State& state) {
  const size_t n = size_t(64) << 20;  // floats
  std::vector<float> a(n, 1.0f), b(n, 0.0f);
  const int t = eb::threads();
  for (auto _ : state) {
#pragma omp parallel for num_threads(t) schedule(static)
    for (long i = 0; i < static_cast<long>(n); ++i) b[static_cast<size_t>(i)] = a[static_cast<size_t>(i)];
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  state.counters["GBps"] = benchmark::Counter(8.0 * static_cast<double>(n) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  const int t = eb::threads();
  benchmark::RegisterBenchmark(eb::name("machine/fma_peak", {{"t", t}}).c_str(), eb::fma_peak)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark(eb::name("machine/sgemm", {{"N", 4096}, {"K", 64}, {"t", t}}).c_str(), BM_sgemm)
      ->Arg(4096)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  std::vector<index_t> sizes = {256, 1024, 4096, 16384};
  if (eb::quick()) sizes = {256};
  for (index_t N : sizes)
    for (int causal : {0, 1}) {
      auto params = [&](std::initializer_list<std::pair<const char*, long long>> extra) {
        std::string s = eb::name("", {{"N", N}, {"H", 8}, {"D", 64}, {"causal", causal}});
        for (auto& p : extra) s += "/" + std::string(p.first) + ":" + std::to_string(p.second);
        return s;
      };
      // The engine: causal runs are compared with the non-causal engine (tile skipping).
      auto* e = benchmark::RegisterBenchmark(("attention/engine" + params({{"t", t}})).c_str(),
                                             [=](benchmark::State& s) {
                                               if (causal) s.SetLabel("baseline=attention/engine/causal:0");
                                               BM_attention(s, Impl::engine, N, causal, N);
                                             });
      e->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
      if (N >= 16384) e->Iterations(1);
      auto* m = benchmark::RegisterBenchmark(("attention/materialized" + params({{"t", t}})).c_str(),
                                             [=](benchmark::State& s) {
                                               s.SetLabel("baseline=attention/engine");
                                               BM_attention(s, Impl::materialized, N, causal, N);
                                             });
      m->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
      if (N >= 4096) m->Iterations(1);
      // bfloat16 and float16 attention against the float engine (same shape).
      if (N >= 1024) {
        auto* bf = benchmark::RegisterBenchmark(("attention/engine_bf16" + params({{"t", t}})).c_str(),
                                                [=](benchmark::State& s) {
                                                  s.SetLabel("baseline=attention/engine");
                                                  BM_attention16<bfloat16>(s, N, causal, N);
                                                });
        bf->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
        if (N >= 16384) bf->Iterations(1);
        auto* hf = benchmark::RegisterBenchmark(("attention/engine_f16" + params({{"t", t}})).c_str(),
                                                [=](benchmark::State& s) {
                                                  s.SetLabel("baseline=attention/engine");
                                                  BM_attention16<float16>(s, N, causal, N);
                                                });
        hf->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
        if (N >= 16384) hf->Iterations(1);
      }
      if (N <= 1024) {
        auto* r = benchmark::RegisterBenchmark(("attention/reference" + params({{"t", 1}})).c_str(),
                                               [=](benchmark::State& s) {
                                                 s.SetLabel("baseline=attention/engine/t:" + std::to_string(t));
                                                 BM_attention(s, Impl::reference, N, causal, N);
                                               });
        r->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
      }
    }
  if (const char* tune = std::getenv("EFFATTN_BENCH_TUNE"); tune && std::string(tune) == "1") {
    for (index_t bq : {32, 64, 96, 128, 192, 256})
      for (index_t bk : {64, 128, 256, 512}) {
        benchmark::RegisterBenchmark(eb::name("attention/tune", {{"N", 4096}, {"bq", bq}, {"bk", bk}, {"t", t}}).c_str(),
                                     [=](benchmark::State& s) { BM_tune<float>(s, 4096, bq, bk); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        benchmark::RegisterBenchmark(eb::name("attention/tune_bf16", {{"N", 4096}, {"bq", bq}, {"bk", bk}, {"t", t}}).c_str(),
                                     [=](benchmark::State& s) { BM_tune<bfloat16>(s, 4096, bq, bk); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
  }
  // Decoding: one query per head against N cached keys (split-KV path).
  for (index_t N : eb::quick() ? std::vector<index_t>{1024} : std::vector<index_t>{1024, 16384, 131072})
    benchmark::RegisterBenchmark(eb::name("attention/decode", {{"N", N}, {"H", 8}, {"D", 64}, {"Nq", 1}, {"t", t}}).c_str(),
                                 [=](benchmark::State& s) { BM_attention(s, Impl::engine, N, false, 1); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  benchmark::RegisterBenchmark(eb::name("machine/stream_copy", {{"MiB", 256}, {"t", t}}).c_str(), BM_stream_copy)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  for (index_t N : eb::quick() ? std::vector<index_t>{1024} : std::vector<index_t>{1024, 16384, 131072})
    benchmark::RegisterBenchmark(eb::name("attention/decode_int8", {{"N", N}, {"H", 8}, {"D", 64}, {"Nq", 1}, {"t", t}}).c_str(),
                                 [=](benchmark::State& s) { BM_decode_int8(s, N); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  for (index_t N : eb::quick() ? std::vector<index_t>{1024} : std::vector<index_t>{1024, 16384, 131072})
    benchmark::RegisterBenchmark(eb::name("attention/decode_f16", {{"N", N}, {"H", 8}, {"D", 64}, {"Nq", 1}, {"t", t}}).c_str(),
                                 [=](benchmark::State& s) { BM_decode_f16(s, N); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  // The instruction-set level every figure of this run is measured at
  // (EFFATTN_ISA or the CPU's best; a -march build runs at least its own).
  benchmark::AddCustomContext("effattn_isa", to_string(effattn::detail::tu_level(active_isa())));
  benchmark::AddCustomContext("effattn_cpu_isa", to_string(supported_isa()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
