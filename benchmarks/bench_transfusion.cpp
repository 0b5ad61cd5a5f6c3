// SPDX-License-Identifier: MIT
// Transfusion: block-causal attention over mixed text / image sequences, and
// cached vs uncached denoising of one image.
//
//   transfusion/block_causal   the engine with the block-causal key limits
//                              (baseline: transfusion/causal)
//   transfusion/causal         the engine's plain causal attention, same N
//   transfusion/full           the engine's full attention, same N
//                              (labelled baseline=transfusion/block_causal:
//                              its "speedup" is t_block_causal / t_full)
//   transfusion/materialized   effattn::attention_materialized with the same
//                              KeyLimitMask: all N x N scores, mask, softmax,
//                              GEMM with V (baseline=transfusion/block_causal)
//
// Layouts: N = 4096 with 4 images of 16 x 16 = 256 patches (BOI, patches,
// EOI) and text runs before each image and at the end; N = 16384 with 16
// such images. Batch 1, 8 heads, head_dim 64.
//
//   transfusion_denoise/uncached  one denoising step recomputing the whole
//                                 sequence through the small transformer
//   transfusion_denoise/cached    the same step with the model's
//                                 TransfusionDenoisingCache: only the image's
//                                 256 rows (baseline: uncached)
//
// Denoising layout: a 4096-token prefix (text and 3 clean 256-patch images,
// ending with the BOI of the image being denoised), the image (256 patches,
// a 32 x 32 x 8 latent with p = 2) and its EOI: 4353 tokens. Model
// (effattn::models::TinyTransfusion): width 512, 8 heads, 2 layers, MLP 2048.
// Its dense layers (nn::linear) and attention calls run on the same
// Executor(threads).
#include <benchmark/benchmark.h>

#include <effattn/attention/materialized.hpp>
#include <effattn/models/transfusion.hpp>
#include <effattn/transfusion/transfusion.hpp>
#include <vector>

#include "support/bench_support.hpp"

namespace {

using effattn::index_t;
namespace tf = effattn::transfusion;
namespace eb = effattn_bench;

constexpr index_t kH = 8, kD = 64, kImageSide = 16;

/// N tokens: `images` images of 16 x 16 patches, text before each and at the end.
tf::Layout attention_layout(index_t N, index_t images) {
  const index_t per_image = kImageSide * kImageSide + 2;
  const index_t text = N - images * per_image, runs = images + 1;
  std::vector<tf::Segment> s;
  for (index_t r = 0; r < runs; ++r) {
    const index_t len = text / runs + (r < text % runs ? 1 : 0);
    s.push_back(tf::Segment::text(len));
    if (r < images) s.push_back(tf::Segment::image(kImageSide, kImageSide));
  }
  tf::Layout L = tf::make_layout(s);
  if (L.length() != N) std::abort();
  return L;
}

double allowed_pairs(const tf::KeyLimits& lim) {
  double p = 0;
  for (index_t i = 0; i < lim.N; ++i) p += static_cast<double>(lim(0, i));
  return p;
}

enum class Impl { block_causal, causal, full, materialized };

void bm_attention(benchmark::State& state, Impl impl, index_t N, index_t images) {
  const tf::Layout L = attention_layout(N, images);
  const tf::KeyLimits lim = tf::block_causal_limits(L);
  const auto q = eb::random_vector(static_cast<size_t>(kH * N * kD), 1);
  const auto k = eb::random_vector(static_cast<size_t>(kH * N * kD), 2);
  const auto v = eb::random_vector(static_cast<size_t>(kH * N * kD), 3);
  std::vector<float> out(q.size());
  auto Q = effattn::make_view<const float>(q.data(), 1, kH, N, kD);
  auto K = effattn::make_view<const float>(k.data(), 1, kH, N, kD);
  auto V = effattn::make_view<const float>(v.data(), 1, kH, N, kD);
  auto O = effattn::make_view(out.data(), 1, kH, N, kD);
  const effattn::Executor ex{eb::threads()};
  if (impl != Impl::causal) state.SetLabel(impl == Impl::block_causal ? "baseline=transfusion/causal"
                                                                      : "baseline=transfusion/block_causal");
  eb::reset_peak();
  for (auto _ : state) {
    switch (impl) {
      case Impl::block_causal: tf::block_causal_attention<float>(Q, K, V, O, lim, {}, ex); break;
      case Impl::causal: effattn::attention<float>(Q, K, V, O, effattn::CausalMask{}, effattn::NoScore{}, {}, ex); break;
      case Impl::full: effattn::attention<float>(Q, K, V, O, effattn::NoMask{}, effattn::NoScore{}, {}, ex); break;
      case Impl::materialized:
        effattn::attention_materialized<float>(Q, K, V, O, lim.mask(), effattn::NoScore{}, {}, ex);
        break;
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double pairs = impl == Impl::causal ? static_cast<double>(N) * (N + 1) / 2
                       : impl == Impl::full ? static_cast<double>(N) * N
                                            : allowed_pairs(lim);
  eb::report(state, eb::attention_flops(1, kH, pairs, kD, kD), eb::peak_bytes());
  state.counters["images"] = static_cast<double>(images);
}

// ---------------------------------------------------------------- denoising

constexpr index_t kPrefix = 4096, kDim = 512, kHeads = 8, kLayers = 2, kHidden = 2048, kPatchDim = 2 * 2 * 8;

struct DenoiseSetup {
  effattn::models::TinyTransfusion model;
  tf::Layout layout;
  effattn::nn::Matrix x;       // embedded sequence
  effattn::nn::Matrix text, patches;
  std::vector<index_t> timesteps;
  effattn::nn::Matrix tokens;  // the image being denoised [256, 32]
  DenoiseSetup() {
    effattn::models::TransfusionConfig c;
    c.dim = kDim;
    c.heads = kHeads;
    c.layers = kLayers;
    c.mlp_hidden = kHidden;
    c.patch_dim = kPatchDim;
    model = effattn::models::TinyTransfusion::random(c, 5);
    // 3 clean images in the prefix, text before each; the 4th image starts at kPrefix.
    const index_t per_image = kImageSide * kImageSide + 2;
    const index_t ntext = kPrefix - 3 * per_image - 1;
    std::vector<tf::Segment> s;
    for (index_t r = 0; r < 4; ++r) {
      s.push_back(tf::Segment::text(ntext / 4 + (r < ntext % 4 ? 1 : 0)));
      s.push_back(tf::Segment::latent_image(32, 32, 2));
    }
    layout = tf::make_layout(s);
    if (layout.images[3].start != kPrefix) std::abort();
    auto rnd = [](index_t r, index_t cols, unsigned seed) {
      const auto v = eb::random_vector(static_cast<size_t>(r * cols), seed);
      effattn::nn::Matrix m(r, cols);
      std::copy(v.begin(), v.end(), m.data());
      return m;
    };
    text = rnd(layout.num_text(), kDim, 11);
    patches = rnd(layout.num_patches(), kPatchDim, 12);
    timesteps = {0, 0, 0, 700};
    tokens = patches.bottomRows(256);
    model.embed(layout, text, patches, timesteps, x, effattn::Executor{eb::threads()});
  }
};

void bm_denoise(benchmark::State& state, bool cached) {
  DenoiseSetup s;
  const effattn::Executor ex{eb::threads()};
  effattn::nn::Matrix eps, xf;
  if (cached) {
    state.SetLabel("baseline=transfusion_denoise/uncached");
    effattn::models::TransfusionDenoisingCache cache(s.model, s.layout, 3, s.x, ex);
    eb::reset_peak();
    for (auto _ : state) {
      cache.predict_noise(s.tokens, 700, eps, ex);
      benchmark::DoNotOptimize(eps.data());
    }
  } else {
    eb::reset_peak();
    for (auto _ : state) {
      // A full step: re-embed the sequence with the image's current tokens, run every row.
      s.model.embed(s.layout, s.text, s.patches, s.timesteps, xf, ex);
      s.model.predict_noise(s.layout, xf, 3, eps, ex);
      benchmark::DoNotOptimize(eps.data());
    }
  }
  eb::report(state, -1, eb::peak_bytes());
}

void register_all() {
  const int t = eb::threads();
  std::vector<std::pair<index_t, index_t>> sizes = {{4096, 4}, {16384, 16}};
  if (eb::quick()) sizes = {{4096, 4}};
  for (auto [N, images] : sizes) {
    auto nm = [&](const char* method) {
      return eb::name(std::string("transfusion/") + method, {{"N", N}, {"H", kH}, {"D", kD}, {"t", t}});
    };
    for (auto [impl, method] : {std::pair<Impl, const char*>{Impl::block_causal, "block_causal"},
                                {Impl::causal, "causal"},
                                {Impl::full, "full"},
                                {Impl::materialized, "materialized"}}) {
      auto* b = benchmark::RegisterBenchmark(nm(method).c_str(),
                                             [=](benchmark::State& s) { bm_attention(s, impl, N, images); });
      b->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
      if (N >= 16384) {
        b->Iterations(impl == Impl::materialized || impl == Impl::full ? 1 : 2);
        if (impl == Impl::materialized || impl == Impl::full) b->Repetitions(1);  // about a minute each
      }
    }
  }
  for (bool cached : {false, true}) {
    auto* b = benchmark::RegisterBenchmark(
        eb::name(cached ? "transfusion_denoise/cached" : "transfusion_denoise/uncached",
                 {{"P", kPrefix}, {"M", 256}, {"dim", kDim}, {"L", kLayers}, {"H", kHeads}, {"t", t}})
            .c_str(),
        [=](benchmark::State& s) { bm_denoise(s, cached); });
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
