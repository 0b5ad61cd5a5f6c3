// SPDX-License-Identifier: MIT
// ToMe on a ViT-B/16-shaped encoder (random weights from a fixed seed).
//
// 224 x 224 RGB images -> 14 x 14 patches of 16 x 16 x 3 -> linear patch
// embedding (768) + class token + position embedding = 197 tokens -> 12 pre-LN
// blocks (width 768, 12 heads, MLP 3072, exact GELU) with ToMe placed as in the
// official timm patch (merge between attention and MLP, proportional
// attention, class token protected) -> final LayerNorm.
//
// For r = 0, 8, 13, 16 it prints images/s, the tokens left after each block and
// the cosine similarity of the final class token to the r = 0 result. (ToMe's
// own share of the time is measured by bench_tome, tome/vit_tome_step.)
//
// The encoder is the demonstration model effattn::models::ViTEncoder
// (effattn/models/vit_tome.hpp); ToMe itself is effattn::tome.
//
//   usage: vit_tome [--batch B] [--threads T] [--reps R] [--r r1,r2,...] [--inflect f]
//   defaults: batch 8, threads 2, reps 2, r = 0,8,13,16, inflect 0 (constant r)
#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <effattn/models/vit_tome.hpp>
#include <effattn/tome/tome.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using effattn::index_t;
using effattn::nn::Matrix;
namespace models = effattn::models;
namespace tome = effattn::tome;

int main(int argc, char** argv) {
  index_t batch = 8;
  int threads = 2, reps = 2;
  double inflect = 0.0;
  std::vector<index_t> rs = {0, 8, 13, 16};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--batch") batch = std::atol(argv[i + 1]);
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--inflect") inflect = std::atof(argv[i + 1]);
    else if (a == "--r") {
      rs.clear();
      std::stringstream ss(argv[i + 1]);
      std::string tok;
      while (std::getline(ss, tok, ',')) rs.push_back(std::atol(tok.c_str()));
    } else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (batch < 1 || threads < 1 || reps < 1) {
    std::fprintf(stderr, "batch, threads and reps must be >= 1\n");
    return 2;
  }
  // Every part of the encoder (GEMMs, attention, LayerNorm, GELU, matching,
  // merging) runs on this executor; the patch embedding below is a plain Eigen
  // product.
  const effattn::Executor ex{threads};

  const index_t img = 224, patch = 16, grid = img / patch, N = grid * grid + 1, C = 768, depth = 12;
  std::mt19937 rng(2023);
  const auto enc = models::ViTEncoder::random(rng, depth, C, 12, 3072);
  const auto patch_embed = effattn::nn::Linear::random(patch * patch * 3, C, rng);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  Matrix cls(1, C), pos(N, C);
  for (index_t i = 0; i < C; ++i) cls(0, i) = nd(rng);
  for (index_t i = 0; i < pos.size(); ++i) pos.data()[i] = nd(rng);

  // Smooth random images (so that neighbouring patches are similar, as in
  // natural images, which is what ToMe exploits).
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  Matrix patches(batch * grid * grid, patch * patch * 3);
  for (index_t b = 0; b < batch; ++b) {
    float fx = 1 + 3 * u(rng), fy = 1 + 3 * u(rng), ph = 6.28f * u(rng);
    for (index_t py = 0; py < grid; ++py)
      for (index_t px = 0; px < grid; ++px)
        for (index_t y = 0; y < patch; ++y)
          for (index_t x = 0; x < patch; ++x)
            for (index_t c = 0; c < 3; ++c) {
              const float X = float(px * patch + x) / img, Y = float(py * patch + y) / img;
              patches(b * grid * grid + py * grid + px, (y * patch + x) * 3 + c) =
                  0.5f + 0.5f * std::sin(fx * 6.28f * X + ph * float(c + 1)) * std::cos(fy * 6.28f * Y) +
                  0.05f * (u(rng) - 0.5f);
            }
  }
  Matrix emb;
  patch_embed.forward(patches, emb);
  Matrix x0(batch * N, C);
  for (index_t b = 0; b < batch; ++b) {
    x0.row(b * N) = cls.row(0) + pos.row(0);
    for (index_t t = 1; t < N; ++t) x0.row(b * N + t) = emb.row(b * (N - 1) + t - 1) + pos.row(t);
  }

  std::printf("ViT-B/16 shape: %ld tokens, %ld blocks, width %ld, 12 heads, MLP 3072; batch %ld, %d threads\n",
              long(N), long(depth), long(C), long(batch), threads);
  models::ViTWorkspace ws;
  models::ToMeBlockOptions opt;  // proportional attention, class token
  Matrix ref_cls;
  double base_ips = 0, base_cpu = 0;
  for (index_t r : rs) {
    const auto schedule = r > 0 ? tome::parse_r(depth, r, inflect) : tome::schedule_constant(depth, 0);
    Matrix x;
    std::vector<index_t> counts;
    double best = 1e30, cpu_best = 1e30;
    for (int rep = 0; rep < reps; ++rep) {
      x = x0;
      models::ToMeState st;
      const auto t0 = std::chrono::steady_clock::now();
      const std::clock_t c0 = std::clock();
      enc.forward(x, batch, schedule, st, opt, ws, ex, &counts);
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      cpu_best = std::min(cpu_best, double(std::clock() - c0) / CLOCKS_PER_SEC);
      best = std::min(best, t);
    }
    const index_t Nf = x.rows() / batch;
    Matrix cls_out(batch, C);
    for (index_t b = 0; b < batch; ++b) cls_out.row(b) = x.row(b * Nf);  // the class token stays first
    if (ref_cls.size() == 0) ref_cls = cls_out;
    double cos = 0;
    for (index_t b = 0; b < batch; ++b)
      cos += ref_cls.row(b).dot(cls_out.row(b)) / (ref_cls.row(b).norm() * cls_out.row(b).norm());
    cos /= double(batch);
    const double rel = (cls_out - ref_cls).norm() / ref_cls.norm();
    const double ips = double(batch) / best;
    if (base_ips == 0) base_ips = ips;
    if (base_cpu == 0) {
      base_cpu = cpu_best;
      if (batch > 1) {
        // For scale: how different the class tokens of two different images are.
        const double c01 = ref_cls.row(0).dot(ref_cls.row(1)) / (ref_cls.row(0).norm() * ref_cls.row(1).norm());
        std::printf("(class tokens of images 0 and 1 in the first run: cosine %.6f)\n", c01);
      }
    }
    std::printf("\nr = %2ld: %7.2f images/s (%.2fx of the first run; CPU time %.2fx less), class-token cosine vs"
                " first run %.6f (relative L2 difference %.2e)\n",
                long(r), ips, ips / base_ips, base_cpu / cpu_best, cos, rel);
    std::printf("  tokens after each block:");
    for (index_t n : counts) std::printf(" %ld", long(n));
    std::printf("\n");
  }
  return 0;
}
