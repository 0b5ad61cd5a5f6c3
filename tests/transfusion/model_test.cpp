// SPDX-License-Identifier: MIT
// The small Transfusion transformer: cached denoising equals the uncached
// forward, tokens after the image do not matter, attention is block-causal.
#include <gtest/gtest.h>

#include <effattn/transfusion/transfusion.hpp>
#include <random>
#include <vector>

#include "support/testing.hpp"

namespace tf = effattn::transfusion;
namespace nn = effattn::nn;
using effattn::index_t;
using S = tf::Segment;

namespace {

nn::Matrix random_matrix(index_t r, index_t c, unsigned seed) {
  const auto v = testing_util::random_vector(static_cast<size_t>(r * c), seed);
  nn::Matrix m(r, c);
  std::copy(v.begin(), v.end(), m.data());
  return m;
}

std::vector<float> flat(const nn::Matrix& m) { return std::vector<float>(m.data(), m.data() + m.size()); }

struct ModelFixture {
  tf::ModelConfig cfg;
  tf::TinyTransfusion model;
  tf::Layout layout;
  nn::Matrix text, patches;
  std::vector<index_t> timesteps;
};

ModelFixture make_setup(tf::PositionMode mode, unsigned seed) {
  ModelFixture s;
  s.cfg.dim = 48;
  s.cfg.heads = 3;
  s.cfg.layers = 3;
  s.cfg.mlp_hidden = 96;
  s.cfg.patch_dim = 2 * 2 * 4;  // p = 2, C = 4
  s.model = tf::TinyTransfusion::random(s.cfg, seed);
  // caption, image 0 (4 x 4 latent grid of patches), text, image 1 (3 x 5), text
  s.layout = tf::make_layout({S::text(23), S::image(4, 4), S::text(50), S::image(3, 5), S::text(9)}, mode);
  s.text = random_matrix(s.layout.num_text(), s.cfg.dim, seed + 1);
  s.patches = random_matrix(s.layout.num_patches(), s.cfg.patch_dim, seed + 2);
  s.timesteps = {0, 640};  // image 0 already generated (clean), image 1 being denoised
  return s;
}

// Replaces image k's rows of the stacked patch matrix.
void set_image(const tf::Layout& L, nn::Matrix& patches, index_t k, const nn::Matrix& tok) {
  index_t row = 0;
  for (index_t i = 0; i < k; ++i) row += L.images[i].length;
  patches.middleRows(row, L.images[k].length) = tok;
}

class TransfusionModel : public ::testing::TestWithParam<tf::PositionMode> {};

TEST_P(TransfusionModel, CachedDenoisingEqualsUncached) {
  ModelFixture s = make_setup(GetParam(), 42);
  const tf::CosineSchedule sched;
  for (index_t k : {0, 1}) {
    const auto& im = s.layout.images[k];
    nn::Matrix x;
    s.model.embed(s.layout, s.text, s.patches, s.timesteps, x);
    tf::DenoisingCache cache(s.model, s.layout, k, x, effattn::Executor{2});
    EXPECT_EQ(cache.prefix_length(), im.start);
    EXPECT_EQ(cache.image_length(), im.length);
    nn::Matrix tok = random_matrix(im.length, s.cfg.patch_dim, 7 + static_cast<unsigned>(k));
    nn::Matrix patches = s.patches;
    std::vector<index_t> ts = s.timesteps;
    index_t t = 900;
    for (int step = 0; step < 4; ++step, t -= 150) {
      nn::Matrix eps_c, eps_u, xf;
      cache.predict_noise(tok, t, eps_c, effattn::Executor{2});
      set_image(s.layout, patches, k, tok);
      ts[k] = t;
      s.model.embed(s.layout, s.text, patches, ts, xf);
      s.model.predict_noise(s.layout, xf, k, eps_u, effattn::Executor{1});
      ASSERT_EQ(eps_c.rows(), im.length);
      ASSERT_EQ(eps_c.cols(), s.cfg.patch_dim);
      testing_util::expect_close(flat(eps_c), flat(eps_u), 1e-5, 1e-5,
                                 "image " + std::to_string(k) + " step " + std::to_string(step));
      // Next step's tokens.
      nn::Matrix next(tok.rows(), tok.cols());
      tf::ddpm_step<float>(sched, effattn::make_view(static_cast<const float*>(tok.data()), tok.rows(), tok.cols()),
                           effattn::make_view(static_cast<const float*>(eps_c.data()), tok.rows(), tok.cols()), t, {},
                           effattn::make_view(next.data(), tok.rows(), tok.cols()));
      tok = next;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Positions, TransfusionModel,
                         ::testing::Values(tf::PositionMode::sequential, tf::PositionMode::shared_per_image));

TEST(TransfusionModelTest, LaterTokensDoNotChangeTheImageAndEarlierOnesDo) {
  ModelFixture s = make_setup(tf::PositionMode::sequential, 3);
  nn::Matrix x;
  s.model.embed(s.layout, s.text, s.patches, s.timesteps, x);
  nn::Matrix e0, e1, e2;
  s.model.predict_noise(s.layout, x, 0, e0);
  // Change the text after image 0 (and image 1): image 0's prediction is unchanged.
  nn::Matrix x2 = x;
  x2.bottomRows(x.rows() - s.layout.images[0].eoi()).setRandom();
  s.model.predict_noise(s.layout, x2, 0, e1);
  EXPECT_EQ(flat(e0), flat(e1));
  // Changing the last patch of image 0 changes the prediction of its first patch
  // (bidirectional within the image).
  nn::Matrix x3 = x;
  // (not a constant shift: LayerNorm would remove it)
  x3.row(s.layout.images[0].end() - 1) += random_matrix(1, s.cfg.dim, 99);
  s.model.predict_noise(s.layout, x3, 0, e2);
  EXPECT_GT((e2.row(0) - e0.row(0)).cwiseAbs().maxCoeff(), 1e-4f);
}

TEST(TransfusionModelTest, ThreadCountInvariant) {
  ModelFixture s = make_setup(tf::PositionMode::sequential, 9);
  nn::Matrix x;
  s.model.embed(s.layout, s.text, s.patches, s.timesteps, x);
  nn::Matrix a, b;
  s.model.predict_noise(s.layout, x, 1, a, effattn::Executor{1});
  s.model.predict_noise(s.layout, x, 1, b, effattn::Executor{2});
  EXPECT_EQ(flat(a), flat(b));
}

TEST(TransfusionModelTest, BadArgumentsThrow) {
  ModelFixture s = make_setup(tf::PositionMode::sequential, 1);
  nn::Matrix x, eps;
  EXPECT_THROW(s.model.embed(s.layout, s.text.topRows(3), s.patches, s.timesteps, x), effattn::shape_error);
  EXPECT_THROW(s.model.embed(s.layout, s.text, s.patches, {1}, x), effattn::parameter_error);
  s.model.embed(s.layout, s.text, s.patches, s.timesteps, x);
  EXPECT_THROW(s.model.predict_noise(s.layout, x, 2, eps), effattn::parameter_error);
  EXPECT_THROW(tf::DenoisingCache(s.model, s.layout, -1, x), effattn::parameter_error);
  tf::DenoisingCache cache(s.model, s.layout, 1, x);
  EXPECT_THROW(cache.predict_noise(nn::Matrix(3, s.cfg.patch_dim), 10, eps), effattn::shape_error);
  tf::ModelConfig bad = s.cfg;
  bad.heads = 5;
  EXPECT_THROW(tf::TinyTransfusion::random(bad, 1), effattn::parameter_error);
  bad.dim = 36;
  bad.heads = 4;  // head_dim 9
  EXPECT_THROW(tf::TinyTransfusion::random(bad, 1), effattn::parameter_error);
}

}  // namespace
