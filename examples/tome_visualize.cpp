// SPDX-License-Identifier: MIT
// A visualisation of token merging like the ToMe paper's figures: the image is
// cut into P x P patches (one token each), the patch pixels are the metric,
// and a few bipartite merge steps run one after another (the way ToMe merges
// through the layers of a ViT), carrying token sizes and sources. The output
// paints every merged group in its mean colour, with a dark line where two
// neighbouring patches belong to different groups.
//
//   usage: tome_visualize [input] [output] [--patch P] [--steps S] [--r R]
//   defaults: a generated test picture, tome_visualize.png, P = 16, S = 6,
//   R = tokens / 8 per step. The input may be PNG, JPEG, binary PPM/PGM or
//   anything else stb_image reads; the output is PNG, or JPEG for a .jpg name.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <effattn/tome/tome.hpp>
#include <string>
#include <vector>

#include "support/image_io.hpp"

using effattn::index_t;
using effattn::make_view;
namespace tome = effattn::tome;

namespace {

/// A small synthetic scene: sky gradient, sun, hills and a striped house.
image_io::Image test_picture(int w, int h) {
  image_io::Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      float r = 0.35f + 0.3f * y / h, g = 0.55f + 0.3f * y / h, b = 0.95f;
      const float dx = x - 0.75f * w, dy = y - 0.2f * h;
      if (dx * dx + dy * dy < 0.01f * w * w) r = 1.0f, g = 0.85f, b = 0.2f;
      if (y > h * (0.6f + 0.08f * std::sin(x * 6.0f / w))) r = 0.2f, g = 0.6f - 0.2f * y / h, b = 0.2f;
      if (x > w * 0.2f && x < w * 0.45f && y > h * 0.45f && y < h * 0.8f) {
        r = ((y / 6) % 2) ? 0.8f : 0.6f, g = 0.3f, b = 0.25f;
        if (x > w * 0.28f && x < w * 0.34f && y > h * 0.6f) r = 0.3f, g = 0.2f, b = 0.1f;
      }
      unsigned char* p = &im.rgb[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<unsigned char>(255 * r);
      p[1] = static_cast<unsigned char>(255 * g);
      p[2] = static_cast<unsigned char>(255 * b);
    }
  return im;
}

}  // namespace

int main(int argc, char** argv) {
  std::string in, out = "tome_visualize.png";
  index_t P = 16, steps = 6, r = -1;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--patch" || a == "--steps" || a == "--r") && i + 1 < argc) {
      const index_t v = std::atol(argv[++i]);
      (a == "--patch" ? P : a == "--steps" ? steps : r) = v;
    } else {
      pos.push_back(a);
    }
  }
  if (!pos.empty()) in = pos[0];
  if (pos.size() > 1) out = pos[1];
  if (P < 1 || steps < 0) {
    std::fprintf(stderr, "--patch must be >= 1 and --steps >= 0\n");
    return 2;
  }
  image_io::Image im;
  try {
    im = in.empty() ? test_picture(384, 256) : image_io::read_image(in);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  const index_t gw = im.width / P, gh = im.height / P, N = gw * gh, D = P * P * 3;
  if (N < 2) {
    std::fprintf(stderr, "the image must hold at least two %ldx%ld patches\n", long(P), long(P));
    return 1;
  }
  if (r < 0) r = std::max<index_t>(1, N / 8);

  // Tokens: the patches' pixels in [0, 1]. The metric centres them on the
  // image's mean colour, so that cosine similarity compares colour and
  // texture rather than brightness alone.
  std::vector<float> x(N * D), metric(N * D);
  double mean[3] = {0, 0, 0};
  for (index_t t = 0; t < N; ++t)
    for (index_t yy = 0; yy < P; ++yy)
      for (index_t xx = 0; xx < P; ++xx)
        for (index_t c = 0; c < 3; ++c) {
          const index_t px = (t % gw) * P + xx, py = (t / gw) * P + yy;
          const float v = im.rgb[(static_cast<size_t>(py) * im.width + px) * 3 + c] / 255.0f;
          x[t * D + (yy * P + xx) * 3 + c] = v;
          mean[c] += v;
        }
  for (double& m : mean) m /= double(N) * P * P;
  for (index_t i = 0; i < N * D; ++i) metric[i] = x[i] - static_cast<float>(mean[i % 3]);

  // Merge steps: x (mean pixels of each group), sizes and the source map flow
  // from step to step; the metric of a step is the merged, centred pixels.
  std::vector<float> size(N, 1.0f);
  std::vector<index_t> map(N);
  for (index_t t = 0; t < N; ++t) map[t] = t;
  index_t n = N;
  for (index_t s = 0; s < steps; ++s) {
    auto plan = tome::bipartite_soft_matching(make_view<const float>(metric.data(), 1, n, D), r);
    if (plan.is_identity()) break;
    const index_t np = plan.out_tokens();
    std::vector<float> xn(np * D), sn(np), mn(np * D);
    tome::merge_wavg<float>(plan, make_view<const float>(x.data(), 1, n, D), make_view<const float>(size.data(), 1, n),
                            make_view(xn.data(), 1, np, D), make_view(sn.data(), 1, np));
    auto mv = make_view(map.data(), 1, N);
    tome::merge_source_map(plan, mv, mv);
    for (index_t i = 0; i < np * D; ++i) mn[i] = xn[i] - static_cast<float>(mean[i % 3]);
    std::printf("step %ld: %ld -> %ld tokens (largest group %.0f patches)\n", long(s + 1), long(n), long(np),
                *std::max_element(sn.begin(), sn.end()));
    x.swap(xn);
    size.swap(sn);
    metric.swap(mn);
    n = np;
  }

  // Paint: every patch gets its group's mean colour; borders between groups dark.
  std::vector<float> colour(n * 3, 0.0f);
  for (index_t g = 0; g < n; ++g)
    for (index_t k = 0; k < P * P; ++k)
      for (index_t c = 0; c < 3; ++c) colour[g * 3 + c] += x[g * D + k * 3 + c] / float(P * P);
  const int W = static_cast<int>(gw * P), H = static_cast<int>(gh * P);
  std::vector<std::uint8_t> rgb(static_cast<size_t>(W) * H * 3);
  for (int py = 0; py < H; ++py)
    for (int px = 0; px < W; ++px) {
      const index_t t = (py / P) * gw + px / P, g = map[t];
      bool edge = false;
      if (px % P == 0 && px > 0) edge |= map[t - 1] != g;
      if (py % P == 0 && py > 0) edge |= map[t - gw] != g;
      for (int c = 0; c < 3; ++c) {
        const float v = edge ? 0.15f : colour[g * 3 + c];
        rgb[(static_cast<size_t>(py) * W + px) * 3 + c] = static_cast<std::uint8_t>(std::lround(255 * std::min(1.0f, std::max(0.0f, v))));
      }
    }
  try {
    image_io::write_image(out, W, H, rgb);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  std::printf("read %s (%dx%d); %ld patches of %ldx%ld merged into %ld groups; wrote %s (%dx%d)\n",
              in.empty() ? "the test picture" : in.c_str(), im.width, im.height, long(N), long(P), long(P), long(n),
              out.c_str(), W, H);
  return 0;
}
