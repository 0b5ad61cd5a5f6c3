// SPDX-License-Identifier: MIT
// Token merging benchmarks (issue 3):
//  1. tome/match_merge vs tome/attention: bipartite matching (metric = keys
//     averaged over 12 heads, 64 dims) + merge_wavg of the [N, 768] features,
//     against the 12-head attention of the same N tokens, N in {197, 577,
//     1024, 4096}, batch 1. "speedup" here reads: attention time / ToMe time.
//  2. tome/vit_r0 vs tome/vit_tome: ViT-B/16 encoder (effattn::models, 12
//     pre-LN blocks, width 768, 12 heads, MLP 3072, 197 tokens), batch 8, r in
//     {8, 13, 16}; counters images_per_s and tokens_out.
//     tome/vit_tome_step: ToMe's own work in that encoder pass, timed by
//     itself: for every block, the metric (models::key_metric),
//     bipartite_soft_matching and merge_wavg on the inputs the block really
//     had (captured once from a forward pass: its qkv projection, x after the
//     attention residual, the sizes). report.py divides its time by
//     tome/vit_tome's (same params) for the share of the encoder spent in ToMe.
//  3. tome/sd_attn_unmerged vs tome/sd_attn_merged: ToMe for diffusion on a
//     self-attention block over a 64 x 64 latent (4096 tokens, width 320, 8
//     heads): LayerNorm, [merge], qkv, attention, proj, [unmerge], residual;
//     ratio 0.5, sx = sy = 2, top-left destinations.
// Everything runs on Executor{EFFATTN_BENCH_THREADS} (the GEMMs too, through
// nn::linear); Eigen's own threading is not used.
#include <Eigen/Core>
#include <effattn/effattn.hpp>
#include <effattn/models/vit_tome.hpp>
#include <effattn/tome/tome.hpp>
#include <map>
#include <random>
#include <vector>

#include "support/bench_support.hpp"

namespace {

using namespace effattn;
namespace eb = effattn_bench;
using nn::Matrix;

// ---------------------------------------------------------------- 1. matching + merge vs attention

void BM_attention(benchmark::State& state, index_t N) {
  const index_t H = 12, D = 64;
  auto q = eb::random_vector(H * N * D, 1), k = eb::random_vector(H * N * D, 2), v = eb::random_vector(H * N * D, 3);
  std::vector<float> o(q.size());
  Executor ex{eb::threads()};
  eb::reset_peak();
  for (auto _ : state) {
    attention<float>(make_view<const float>(q.data(), 1, H, N, D), make_view<const float>(k.data(), 1, H, N, D),
                     make_view<const float>(v.data(), 1, H, N, D), make_view(o.data(), 1, H, N, D), NoMask{}, NoScore{},
                     {}, ex);
    benchmark::DoNotOptimize(o.data());
  }
  eb::report(state, eb::attention_flops(1, H, double(N) * N, D, D), eb::peak_bytes());
}

void BM_match_merge(benchmark::State& state, index_t N) {
  const index_t Cm = 64, C = 768, r = N / 4;
  auto metric = eb::random_vector(N * Cm, 4), x = eb::random_vector(N * C, 5);
  std::vector<float> size(N, 1.0f);
  Executor ex{eb::threads()};
  std::vector<float> xo, so;
  eb::reset_peak();
  for (auto _ : state) {
    auto plan = tome::bipartite_soft_matching(make_view<const float>(metric.data(), 1, N, Cm), r, {true, false}, ex);
    const index_t Np = plan.out_tokens();
    xo.resize(Np * C);
    so.resize(Np);
    tome::merge_wavg<float>(plan, make_view<const float>(x.data(), 1, N, C), make_view<const float>(size.data(), 1, N),
                            make_view(xo.data(), 1, Np, C), make_view(so.data(), 1, Np), ex);
    benchmark::DoNotOptimize(xo.data());
  }
  // Matching is an (N/2 x Cm) x (Cm x N/2) product.
  eb::report(state, 2.0 * ((N + 1) / 2) * (N / 2) * Cm, eb::peak_bytes());
  state.SetLabel("baseline=tome/attention");
}

// ---------------------------------------------------------------- 2. ViT-B encoder

constexpr index_t kVitB = 8, kVitN = 197, kVitC = 768, kVitHeads = 12, kVitDepth = 12;

const models::ViTEncoder& vit_b() {
  static const models::ViTEncoder enc = [] {
    std::mt19937 rng(2023);
    return models::ViTEncoder::random(rng, kVitDepth, kVitC, kVitHeads, 3072);
  }();
  return enc;
}

const Matrix& vit_input() {
  static const Matrix x0 = [] {
    auto xin = eb::random_vector(kVitB * kVitN * kVitC, 6);
    return Matrix(Eigen::Map<const Matrix>(xin.data(), kVitB * kVitN, kVitC));
  }();
  return x0;
}

std::vector<index_t> vit_schedule(index_t r) { return r > 0 ? tome::parse_r(kVitDepth, r) : std::vector<index_t>{}; }

void BM_vit(benchmark::State& state, index_t r) {
  const auto& enc = vit_b();
  const Matrix& x0 = vit_input();
  Executor ex{eb::threads()};  // every part of the encoder runs on this executor
  models::ViTWorkspace ws;
  models::ToMeBlockOptions opt;
  const auto schedule = vit_schedule(r);
  Matrix x;
  for (auto _ : state) {
    state.PauseTiming();
    x = x0;
    state.ResumeTiming();
    models::ToMeState st;
    enc.forward(x, kVitB, schedule, st, opt, ws, ex);
    benchmark::DoNotOptimize(x.data());
  }
  state.counters["images_per_s"] = benchmark::Counter(double(kVitB), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens_out"] = double(x.rows() / kVitB);
  if (r > 0) state.SetLabel("baseline=tome/vit_r0");
}

/// What ToMe's step of one block works on, as the block had it in a real
/// encoder pass.
struct TomeStepInput {
  Matrix qkv;               ///< [B*N, 3C] the block's qkv projection (the metric's source)
  Matrix x_attn;            ///< [B*N, C] x after the attention residual (what merge_wavg merges)
  std::vector<float> size;  ///< [B, N] token sizes coming in (empty: all ones)
  index_t tokens = 0, r = 0;
};

/// The ToMe steps of one encoder pass with schedule parse_r(12, r), captured
/// block by block (the qkv projection recomputed from the block input with
/// the block's own LayerNorm and nn::linear, as the block computes it).
const std::vector<TomeStepInput>& tome_steps(index_t r) {
  static std::map<index_t, std::vector<TomeStepInput>> cache;
  auto it = cache.find(r);
  if (it != cache.end()) return it->second;
  const auto& enc = vit_b();
  const auto schedule = vit_schedule(r);
  const Executor ex{eb::threads()};
  const models::ToMeBlockOptions opt;
  models::ViTWorkspace ws;
  models::ToMeState st;
  st.reset(kVitB, kVitN);
  Matrix x = vit_input(), h;
  std::vector<TomeStepInput> steps;
  for (size_t i = 0; i < enc.blocks.size(); ++i) {
    const auto& blk = enc.blocks[i];
    TomeStepInput in;
    in.tokens = st.tokens;
    in.size = st.size;
    in.r = i < schedule.size() ? schedule[i] : 0;
    nn::layer_norm(x, blk.norm1_weight, blk.norm1_bias, blk.eps, h, ex);
    nn::linear(blk.qkv, h, in.qkv, ex);
    models::ToMeBlockTrace trace;
    models::tome_block_forward(blk, x, st, in.r, opt, ws, ex, &trace);
    in.x_attn = std::move(trace.x_attn);
    if (in.r > 0) steps.push_back(std::move(in));
  }
  return cache.emplace(r, std::move(steps)).first->second;
}

/// ToMe's own cost in one encoder pass: metric + matching + merge_wavg of
/// every block, on the block's real inputs and shapes.
void BM_vit_tome_step(benchmark::State& state, index_t r) {
  const auto& steps = tome_steps(r);
  Executor ex{eb::threads()};
  const models::ToMeBlockOptions opt;
  const index_t B = kVitB, C = kVitC, hd = kVitC / kVitHeads;
  std::vector<float> metric, xo, so;
  index_t merged = 0;
  for (auto _ : state) {
    merged = 0;
    for (const auto& s : steps) {
      const index_t N = s.tokens;
      models::key_metric(s.qkv, kVitHeads, metric);
      const auto plan = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, hd), s.r, opt.match, ex);
      const index_t Np = plan.out_tokens();
      xo.resize(static_cast<size_t>(B * Np * C));
      so.resize(static_cast<size_t>(B * Np));
      const ConstView<float, 2> sz = s.size.empty() ? ConstView<float, 2>() : make_view<const float>(s.size.data(), B, N);
      tome::merge_wavg<float>(plan, make_view<const float>(s.x_attn.data(), B, N, C), sz, make_view(xo.data(), B, Np, C),
                              make_view(so.data(), B, Np), ex);
      benchmark::DoNotOptimize(xo.data());
      merged += plan.r;
    }
  }
  state.counters["blocks"] = double(steps.size());
  state.counters["tokens_merged"] = double(merged);  // per image
}

// ---------------------------------------------------------------- 3. ToMe for diffusion

struct SdBlock {
  nn::Vector norm_w, norm_b;
  nn::Linear qkv, proj;
  index_t heads = 8;
};

const SdBlock& sd_block() {
  static const SdBlock blk = [] {
    std::mt19937 rng(7);
    SdBlock b;
    b.norm_w = nn::Vector::Ones(320);
    b.norm_b = nn::Vector::Zero(320);
    b.qkv = nn::Linear::random(320, 960, rng, 0, false);  // SD's to_q/to_k/to_v have no bias
    b.proj = nn::Linear::random(320, 320, rng);
    return b;
  }();
  return blk;
}

/// x [N, C] (+)= attn1(LN(x)), merged to N - r tokens around the attention when r > 0.
void sd_forward(const SdBlock& blk, Matrix& x, index_t side, double ratio, Matrix& h, Matrix& hm, Matrix& qkv,
                Matrix& a, Matrix& y, Matrix& yu, const Executor& ex) {
  const index_t N = x.rows(), C = x.cols(), H = blk.heads, hd = C / H;
  nn::layer_norm(x, blk.norm_w, blk.norm_b, 1e-5f, h, ex);
  tome::MergePlan plan;
  const Matrix* in = &h;
  if (ratio > 0) {
    // tomesd: metric = the block input x, merge applied to norm1(x).
    plan = tome::bipartite_soft_matching_random2d(make_view<const float>(x.data(), 1, N, C),
                                                  tome::Grid2d{side, side, 2, 2}, tome::ratio_to_r(N, ratio), {}, ex);
    hm.resize(plan.out_tokens(), C);
    tome::merge<float>(plan, make_view<const float>(h.data(), 1, N, C), make_view(hm.data(), 1, plan.out_tokens(), C),
                       tome::MergeMode::mean, ex);
    in = &hm;
  }
  const index_t n = in->rows();
  effattn::nn::linear(blk.qkv, *in, qkv, ex);  // the encoder's executor-tiled GEMM
  a.resize(n, C);
  const std::array<index_t, 4> shp{1, H, n, hd}, st{n * 3 * C, hd, 3 * C, 1};
  attention<float>(ConstView<float, 4>(qkv.data(), shp, st), ConstView<float, 4>(qkv.data() + C, shp, st),
                   ConstView<float, 4>(qkv.data() + 2 * C, shp, st), View<float, 4>(a.data(), shp, {n * C, hd, C, 1}),
                   NoMask{}, NoScore{}, {}, ex);
  effattn::nn::linear(blk.proj, a, y, ex);
  if (ratio > 0) {
    yu.resize(N, C);
    tome::unmerge<float>(plan, make_view<const float>(y.data(), 1, n, C), make_view(yu.data(), 1, N, C), ex);
    x += yu;
  } else {
    x += y;
  }
}

void BM_sd(benchmark::State& state, double ratio) {
  const index_t side = 64, N = side * side, C = 320;
  const auto& blk = sd_block();
  auto xin = eb::random_vector(N * C, 8);
  const Matrix x0 = Eigen::Map<const Matrix>(xin.data(), N, C);
  Executor ex{eb::threads()};
  Matrix x, h, hm, qkv, a, y, yu;
  for (auto _ : state) {
    state.PauseTiming();
    x = x0;
    state.ResumeTiming();
    sd_forward(blk, x, side, ratio, h, hm, qkv, a, y, yu, ex);
    benchmark::DoNotOptimize(x.data());
  }
  state.counters["tokens_attended"] = double(ratio > 0 ? N - tome::ratio_to_r(N, ratio) : N);
  if (ratio > 0) state.SetLabel("baseline=tome/sd_attn_unmerged");
}

}  // namespace

int main(int argc, char** argv) {
  const int t = eb::threads();
  for (index_t N : {197, 577, 1024, 4096}) {
    if (eb::quick() && N > 577) continue;
    benchmark::RegisterBenchmark(eb::name("tome/attention", {{"N", N}, {"C", 768}, {"H", 12}, {"t", t}}).c_str(),
                                 [N](benchmark::State& s) { BM_attention(s, N); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(eb::name("tome/match_merge", {{"N", N}, {"C", 768}, {"H", 12}, {"t", t}, {"r", N / 4}}).c_str(),
                                 [N](benchmark::State& s) { BM_match_merge(s, N); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark(eb::name("tome/vit_r0", {{"B", kVitB}, {"N", kVitN}, {"C", kVitC}, {"L", kVitDepth}, {"t", t}}).c_str(),
                               [](benchmark::State& s) { BM_vit(s, 0); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->Iterations(eb::quick() ? 1 : 3);
  for (index_t r : {8, 13, 16}) {
    if (eb::quick() && r != 16) continue;
    benchmark::RegisterBenchmark(
        eb::name("tome/vit_tome", {{"B", kVitB}, {"N", kVitN}, {"C", kVitC}, {"L", kVitDepth}, {"t", t}, {"r", r}}).c_str(),
        [r](benchmark::State& s) { BM_vit(s, r); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->Iterations(eb::quick() ? 1 : 3);
    // Same params as tome/vit_tome: report.py pairs them for ToMe's share.
    benchmark::RegisterBenchmark(
        eb::name("tome/vit_tome_step", {{"B", kVitB}, {"N", kVitN}, {"C", kVitC}, {"L", kVitDepth}, {"t", t}, {"r", r}})
            .c_str(),
        [r](benchmark::State& s) { BM_vit_tome_step(s, r); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark(eb::name("tome/sd_attn_unmerged", {{"N", 4096}, {"C", 320}, {"H", 8}, {"t", t}}).c_str(),
                               [](benchmark::State& s) { BM_sd(s, 0.0); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->Iterations(eb::quick() ? 1 : 5);
  benchmark::RegisterBenchmark(
      eb::name("tome/sd_attn_merged", {{"N", 4096}, {"C", 320}, {"H", 8}, {"t", t}, {"ratio_pct", 50}}).c_str(),
      [](benchmark::State& s) { BM_sd(s, 0.5); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->Iterations(eb::quick() ? 1 : 5);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
