// SPDX-License-Identifier: MIT
// STAR's LIV operators (effattn/star/liv_operators.hpp, issue 14 item 5): each
// class's prefill and decode step against SA-1 (causal softmax attention on
// the engine) at contexts 1k, 4k, 16k and 64k, at one model width.
//
//   star/<class>/phase:prefill/ctx:N/C:512/t:T   forward() of N tokens from a fresh state
//   star/<class>/phase:decode/ctx:N/C:512/t:T    one step() with the state / cache at N tokens
//   machine/star_fma_peak/t:T                    the fp32 FMA roof (as bench_attention's machine/fma_peak)
//   machine/stream_copy, machine/stream_triad    the memory-bandwidth roof (STREAM-style, arrays >> LLC)
//
// <class> is star::class_name(): SA-1..SA-4, Rec-1, Rec-2, GConv-1, GConv-2,
// GMemless, and the differential classes Diff-*. Every run except SA-1's is
// labelled baseline=star/SA-1, so the report prints t(SA-1) / t(class) at the
// same phase and context (the decode speedup the targets name).
//
// Shape: width C = 512 with 8 heads of 64 (SA-*), the shape docs/star.md's
// first timings use; every other hyper-parameter is its class's default
// (Rec: E = 16 / 2, dt rank 32, chunk 512; GConv-1: kernel 3; GConv-2: filter
// MLP 16 wide, 4 bands, l_max 2048; GMemless: hidden 1368). Batch 1, float.
//
// Counters: tokens (N for prefill, 1 for decode), cache_bytes
// (cache_bytes(ctx): the State's payload after ctx tokens), params
// (param_count()), peak_mem_bytes (heap held above the level before the timed
// loop: for prefill the whole forward including its State, for decode what one
// step allocates: temporaries, the cache never grows in the loop), flops where they are well defined
// (the Rec-* prefill, for the roof comparison; see rec_prefill_flops).
// genome.hpp's two baselines are added as context entries
// (star_baseline_<name> = "class:count,..." of their 24 slots) so the report
// can sum the measured per-class costs into per-model LIV costs.
//
// Decode states. SA-* and GConv-2 caches are filled directly (random K/V,
// random cached inputs and the exact filter table of lags 0..ctx), since a
// 64k prefill of SA-1 alone takes tens of seconds; the step reads exactly
// what a prefilled cache would hold, only the values differ. After each timed
// step the length is set back to ctx, so every step attends to ctx + 1 tokens
// (the cache capacity is reserved up front and never grows in the loop).
// Rec-* and GConv-1 have a state of fixed size; it is filled by a real
// prefill of ctx tokens (once per process, outside the timed loop), so decode
// at 64k really continues a 64k-token state. GMemless has no state but its
// token count.
//
// Prefill at 64k runs for SA-1 (one iteration, one repetition: about half a
// minute on two cores) and for the linear-time classes. SA-2..SA-4 stop at 16k
// (each does about SA-1's attention work: another half minute apiece at 64k)
// and the differential classes at 4k (each is exactly two operators of its
// base class, measured at every context), to keep the whole program near 5
// minutes at 3 repetitions on two cores. EFFATTN_BENCH_QUICK=1: context 1k only.
#include <benchmark/benchmark.h>

#include <effattn/effattn.hpp>
#include <effattn/star/genome.hpp>
#include <effattn/star/liv_operators.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#define EFFATTN_INTERNAL_HEADER_OK
#include <effattn/core/simd.hpp>

#include "support/bench_support.hpp"
#include "support/roofs.hpp"

namespace {

using namespace effattn;
namespace eb = effattn_bench;
namespace st = effattn::star;
using st::Matrix;

constexpr index_t kWidth = 512, kHeads = 8;

// ---------------------------------------------------------------- machine roofs

/// STREAM-style bandwidth (McCalpin's copy a = b and triad a = b + s c) on
/// eb::threads() threads, each thread on its own contiguous part (first
/// touched by that thread), arrays of 32 Mi floats (128 MiB each), far above
/// any last-level cache. bytes counts what STREAM counts: 2 (copy) or 3
/// (triad) arrays per pass; write-allocate reads are not counted.
void BM_stream(benchmark::State& state, bool triad) {
  const int t = eb::threads();
  const index_t n = index_t(1) << 25;
  std::unique_ptr<float[]> a(new float[size_t(n)]), b(new float[size_t(n)]), c(new float[size_t(n)]);
#pragma omp parallel for num_threads(t) schedule(static)
  for (index_t i = 0; i < n; ++i) {
    a[size_t(i)] = 0.0f;
    b[size_t(i)] = 1.0f;
    c[size_t(i)] = 2.0f;
  }
  float* EFFATTN_RESTRICT pa = a.get();
  const float* EFFATTN_RESTRICT pb = b.get();
  const float* EFFATTN_RESTRICT pc = c.get();
  const float s = 3.0f;
  for (auto _ : state) {
    if (triad) {
#pragma omp parallel for num_threads(t) schedule(static)
      for (index_t i = 0; i < n; ++i) pa[i] = pb[i] + s * pc[i];
    } else {
#pragma omp parallel for num_threads(t) schedule(static)
      for (index_t i = 0; i < n; ++i) pa[i] = pb[i];
    }
    benchmark::DoNotOptimize(pa);
    benchmark::ClobberMemory();
  }
  const double bytes = double(triad ? 3 : 2) * double(n) * sizeof(float);
  state.counters["bytes"] = bytes;
  state.counters["GBps"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// ---------------------------------------------------------------- operators

/// Cheap deterministic fill (splitmix64 -> U(-1, 1)): a 64k SA-1 cache is 32 Mi
/// floats per K and V, too many for std::normal_distribution on every call.
void fill_random(float* p, index_t n, std::uint64_t seed) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + 1;
  for (index_t i = 0; i < n; ++i) {
    z += 0x9E3779B97F4A7C15ull;
    std::uint64_t x = z;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    p[i] = static_cast<float>(static_cast<double>(x >> 40) * (2.0 / 16777216.0) - 1.0);
  }
}

Matrix random_tokens(index_t n, std::uint64_t seed) {
  Matrix x(n, kWidth);
  fill_random(x.data(), x.size(), seed);
  return x;
}

st::SoftmaxAttention make_sa(int cls, std::uint64_t seed) {
  switch (cls) {
    case 2: return st::SoftmaxAttention(st::AttentionConfig::sa2(kWidth, kHeads), seed);
    case 3: return st::SoftmaxAttention(st::AttentionConfig::sa3(kWidth, kHeads), seed);
    case 4: return st::SoftmaxAttention(st::AttentionConfig::sa4(kWidth, kHeads), seed);
    default: return st::SoftmaxAttention(st::AttentionConfig::sa1(kWidth, kHeads), seed);
  }
}

// Decode state preparation, per operator type: a State "at ctx tokens" with
// room for one more token, so the timed step never reallocates.

/// SA-*: random K/V rows 0..ctx-1 (capacity ctx + 1); SA-2's conv tails random.
void prepare(const st::SoftmaxAttention& op, st::SoftmaxAttention::State& s, index_t ctx, std::uint64_t seed) {
  s = op.make_state(ctx + 1);
  fill_random(s.k.data(), ctx * s.k.cols(), seed);
  fill_random(s.v.data(), ctx * s.v.cols(), seed + 1);
  fill_random(s.q_tail.data(), s.q_tail.size(), seed + 2);
  fill_random(s.k_tail.data(), s.k_tail.size(), seed + 3);
  fill_random(s.v_tail.data(), s.v_tail.size(), seed + 4);
  s.length = ctx;
}

/// GConv-2: random cached inputs, and the operator's own filter table for
/// lags 0..ctx (what a prefill of ctx tokens followed by this step builds).
void prepare(const st::LongConv& op, st::LongConv::State& s, index_t ctx, std::uint64_t seed) {
  s = op.make_state(ctx + 1);
  fill_random(s.inputs.data(), ctx * op.width(), seed);
  Matrix h;
  op.filter(0, ctx + 1, h, Executor(eb::threads()));
  s.filter.topRows(ctx + 1) = h;
  s.filter_rows = ctx + 1;
  s.length = ctx;
}

/// Fixed-size states (Rec-*, GConv-1): a real prefill of ctx tokens, once per
/// (operator, ctx) and process (Google Benchmark calls a benchmark function
/// once per repetition; a 64k Rec-1 prefill takes about a second).
template <class Op>
void prepare(const Op& op, typename Op::State& s, index_t ctx, std::uint64_t seed) {
  static std::map<std::pair<const void*, index_t>, typename Op::State> done;
  const auto key = std::make_pair(static_cast<const void*>(&op), ctx);
  auto it = done.find(key);
  if (it == done.end()) {
    typename Op::State f = op.make_state(ctx + 1);
    const Matrix x = random_tokens(ctx, seed);
    Matrix y;
    op.prefill(x, f, y, Executor(eb::threads()));
    it = done.emplace(key, std::move(f)).first;
  }
  s = it->second;
}

/// GMemless has no state but its token count.
void prepare(const st::SwiGLU&, st::SwiGLU::State& s, index_t ctx, std::uint64_t) { s.length = ctx; }

template <class Op>
void prepare(const st::Differential<Op>& op, typename st::Differential<Op>::State& s, index_t ctx, std::uint64_t seed) {
  prepare(op.a, s.a, ctx, seed);
  prepare(op.b, s.b, ctx, seed + 17);
  s.length = ctx;
}

/// After a timed step: back to ctx tokens, so the next step sees the same
/// context (caches that grow with the context; fixed states just keep going).
void rewind(st::SoftmaxAttention::State& s, index_t ctx) { s.length = ctx; }
void rewind(st::LongConv::State& s, index_t ctx) { s.length = ctx; }
template <class S>
void rewind(S&, index_t) {}
template <class Op>
void rewind_diff(typename st::Differential<Op>::State& s, index_t ctx) {
  rewind(s.a, ctx);
  rewind(s.b, ctx);
  s.length = ctx;
}
template <class Op>
void rewind_any(const Op&, typename Op::State& s, index_t ctx) {
  rewind(s, ctx);
}
template <class Op>
void rewind_any(const st::Differential<Op>&, typename st::Differential<Op>::State& s, index_t ctx) {
  rewind_diff<Op>(s, ctx);
}

/// FLOPs of one Rec prefill of n tokens (multiply and add counted apart, exp
/// and the activations as one each): the projections 2 n (2C C + (R+2E) C +
/// C R + C C), and per token and channel silu(u') 1, softplus 1, dt u 1,
/// silu(z) 1, D u and the gate 3, and per (channel, state) dt nA 1, exp 1,
/// b u 1, a h + b u 2, acc + Cc h 2 = 7.
double rec_prefill_flops(const st::Recurrence& r, index_t n) {
  const double C = double(r.width()), E = double(r.expansion()), R = double(r.dt_rank());
  const double proj = 2.0 * (2 * C * C + (R + 2 * E) * C + C * R + C * C);
  return double(n) * (proj + 7.0 * C + 7.0 * C * E);
}

template <class Op>
double prefill_flops(const Op&, index_t) {
  return 0;
}
double prefill_flops(const st::Recurrence& r, index_t n) { return rec_prefill_flops(r, n); }

template <class Op>
void set_counters(benchmark::State& state, const Op& op, index_t ctx, index_t tokens, double flops, long long peak) {
  eb::report(state, flops, peak);
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["cache_bytes"] = static_cast<double>(op.cache_bytes(ctx));
  state.counters["params"] = static_cast<double>(op.param_count());
  state.counters["threads"] = eb::threads();
}

template <class Op>
void BM_prefill(benchmark::State& state, const Op& op, index_t n, bool baseline) {
  const Executor ex(eb::threads());
  const Matrix x = random_tokens(n, 7);
  Matrix y;
  eb::reset_peak();
  for (auto _ : state) {
    op.forward(x, y, ex);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, op, n, n, prefill_flops(op, n), eb::peak_bytes());
  if (baseline) state.SetLabel("baseline=star/SA-1");
}

template <class Op>
void BM_decode(benchmark::State& state, const Op& op, index_t ctx, bool baseline) {
  const Executor ex(eb::threads());
  typename Op::State s;
  prepare(op, s, ctx, 11);
  // A few distinct next tokens, cycled (a step's cost does not depend on them).
  const Matrix xs = random_tokens(16, 13);
  Matrix x(1, kWidth), y;
  index_t i = 0;
  eb::reset_peak();
  for (auto _ : state) {
    x = xs.row(i++ % xs.rows());
    op.step(x, s, y, ex);
    rewind_any(op, s, ctx);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, op, ctx, 1, 0, eb::peak_bytes());
  if (baseline) state.SetLabel("baseline=star/SA-1");
}

/// Registers one class's prefill and decode runs at `contexts` (prefill only
/// up to max_prefill).
template <class Op>
void register_class(const char* cls, std::shared_ptr<const Op> op, const std::vector<index_t>& contexts,
                    index_t max_prefill) {
  const int t = eb::threads();
  const bool baseline = std::string(cls) != "SA-1";
  auto run_name = [&](const char* phase, index_t ctx) {
    return std::string("star/") + cls + "/phase:" + phase + eb::name("", {{"ctx", ctx}, {"C", kWidth}, {"t", t}});
  };
  for (index_t ctx : contexts) {
    if (ctx > max_prefill) continue;
    auto* b = benchmark::RegisterBenchmark(run_name("prefill", ctx).c_str(), [=](benchmark::State& s) {
      BM_prefill(s, *op, ctx, baseline);
    });
    b->Unit(benchmark::kMillisecond)->UseRealTime();
    // Long prefills: a fixed small number of iterations instead of Google
    // Benchmark's estimate (which would first run them once more).
    if (ctx >= 65536 && std::string(cls) == "SA-1")
      b->Iterations(1)->Repetitions(1);
    else if (ctx >= 16384)
      b->Iterations(1);
    else
      b->MinTime(0.2);  // short prefills: 0.2 s per repetition (Google Benchmark's 0.5 s default x ~60 runs
                        // would be most of the program's time)
  }
  for (index_t ctx : contexts) {
    auto* b = benchmark::RegisterBenchmark(run_name("decode", ctx).c_str(), [=](benchmark::State& s) {
      BM_decode(s, *op, ctx, baseline);
    });
    // 0.2 s per repetition is hundreds of steps even for SA-1 at 64k (~10 ms each).
    b->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(0.2);
  }
}

void register_all() {
  const int t = eb::threads();
  benchmark::RegisterBenchmark(eb::name("machine/star_fma_peak", {{"t", t}}).c_str(), eb::fma_peak)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark(eb::name("machine/stream_copy", {{"MiB", 128}, {"t", t}}).c_str(),
                               [](benchmark::State& s) { BM_stream(s, false); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark(eb::name("machine/stream_triad", {{"MiB", 128}, {"t", t}}).c_str(),
                               [](benchmark::State& s) { BM_stream(s, true); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();

  const bool quick = eb::quick();
  const std::vector<index_t> all = quick ? std::vector<index_t>{1024} : std::vector<index_t>{1024, 4096, 16384, 65536};
  const index_t big = quick ? 1024 : 65536, mid = quick ? 1024 : 16384, small = quick ? 1024 : 4096;
  using SA = st::SoftmaxAttention;
  // Seeds: one per class; weights do not change the cost.
  for (int c = 1; c <= 4; ++c) {
    register_class<SA>(st::class_name(static_cast<st::LivClass>(c)), std::make_shared<const SA>(make_sa(c, 100 + c)),
                       all, c == 1 ? big : mid);
  }
  register_class<st::Recurrence>("Rec-1", std::make_shared<const st::Recurrence>(st::RecurrenceConfig::rec1(kWidth), 105),
                                 all, big);
  register_class<st::Recurrence>("Rec-2", std::make_shared<const st::Recurrence>(st::RecurrenceConfig::rec2(kWidth), 106),
                                 all, big);
  register_class<st::ShortConv>("GConv-1", std::make_shared<const st::ShortConv>(st::ShortConvConfig{kWidth}, 107), all,
                                big);
  st::LongConvConfig lc;
  lc.width = kWidth;
  register_class<st::LongConv>("GConv-2", std::make_shared<const st::LongConv>(lc, 108), all, big);
  register_class<st::SwiGLU>("GMemless", std::make_shared<const st::SwiGLU>(st::SwiGLUConfig{kWidth}, 109), all, big);
  // Differential classes 10-17: two operators of the base class each.
  for (int c = 1; c <= 4; ++c) {
    using D = st::Differential<SA>;
    register_class<D>(st::class_name(static_cast<st::LivClass>(9 + c)),
                      std::make_shared<const D>(make_sa(c, 110 + c), make_sa(c, 120 + c)), all, small);
  }
  register_class<st::Differential<st::Recurrence>>(
      "Diff-Rec-1", std::make_shared<const st::Differential<st::Recurrence>>(st::RecurrenceConfig::rec1(kWidth), 114),
      all, small);
  register_class<st::Differential<st::Recurrence>>(
      "Diff-Rec-2", std::make_shared<const st::Differential<st::Recurrence>>(st::RecurrenceConfig::rec2(kWidth), 115),
      all, small);
  register_class<st::Differential<st::ShortConv>>(
      "Diff-GConv-1", std::make_shared<const st::Differential<st::ShortConv>>(st::ShortConvConfig{kWidth}, 116), all,
      small);
  register_class<st::Differential<st::LongConv>>(
      "Diff-GConv-2", std::make_shared<const st::Differential<st::LongConv>>(lc, 117), all, small);
}

/// "SA-1:12,GMemless:12": the classes of a genome's slots and their counts.
std::string class_counts(const st::Genome& g) {
  std::map<int, int> n;
  for (index_t i = 0; i < g.slots(); ++i) ++n[static_cast<int>(g.liv_class(i))];
  std::string s;
  for (auto& [c, k] : n) s += (s.empty() ? "" : ",") + std::string(st::class_name(static_cast<st::LivClass>(c))) + ":" +
                              std::to_string(k);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("effattn_isa", to_string(effattn::detail::tu_level(active_isa())));
  benchmark::AddCustomContext("effattn_cpu_isa", to_string(supported_isa()));
  benchmark::AddCustomContext("star_width", std::to_string(kWidth));
  benchmark::AddCustomContext("star_heads", std::to_string(kHeads));
  benchmark::AddCustomContext("star_baseline_Transformer++", class_counts(st::transformer_pp()));
  benchmark::AddCustomContext("star_baseline_striped_hybrid", class_counts(st::striped_hybrid()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
