// SPDX-License-Identifier: MIT
// The small Transfusion transformer (effattn::models::TinyTransfusion):
// cached denoising equals the uncached forward, tokens after the image do not
// matter, attention is block-causal, results are bit-identical for any
// executor on a shape where the dense layers and the attention really run
// threaded, and bad arguments throw.
#include <gtest/gtest.h>

#include <effattn/models/transfusion.hpp>
#include <effattn/transfusion/transfusion.hpp>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "support/nn_testing.hpp"
#include "support/testing.hpp"
#include "support/threads.hpp"

namespace tf = effattn::transfusion;
namespace nn = effattn::nn;
using effattn::models::TinyTransfusion;
using effattn::models::TransfusionConfig;
using effattn::models::TransfusionDenoisingCache;
using effattn::index_t;
using S = tf::Segment;

namespace {

using testing_util::random_matrix;


std::vector<float> flat(const nn::Matrix& m) { return std::vector<float>(m.data(), m.data() + m.size()); }

struct ModelFixture {
  TransfusionConfig cfg;
  TinyTransfusion model;
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
  s.model = TinyTransfusion::random(s.cfg, seed);
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
    TransfusionDenoisingCache cache(s.model, s.layout, k, x, effattn::Executor{2});
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

// A sequence long enough that every step runs threaded: the qkv, proj and
// MLP layers over 1600 rows (3 row tiles; the MLP's 512 hidden outputs and
// qkv's 384 also 2 column tiles), the block-causal attention over 1600
// tokens, and in the cached step the 1024 image rows. Executor(1),
// Executor(2) and a host pool give the same bits, uncached and cached.
TEST(TransfusionModelTest, BitIdenticalForOneAndTwoThreads) {
  TransfusionConfig cfg;
  cfg.dim = 128;
  cfg.heads = 2;
  cfg.layers = 2;
  cfg.mlp_hidden = 512;
  cfg.patch_dim = 2 * 2 * 8;
  const TinyTransfusion model = TinyTransfusion::random(cfg, 31);
  const tf::Layout layout = tf::make_layout({S::text(300), S::image(32, 32), S::text(274)});
  const index_t N = layout.length();
  ASSERT_EQ(N, 1600);
  auto threaded = [](double work) { return effattn::detail::executor_for(effattn::Executor{2}, work).num_threads == 2; };
  ASSERT_TRUE(threaded(double(N) * cfg.dim * cfg.dim)) << "proj";
  ASSERT_TRUE(threaded(double(cfg.heads) * N * N * cfg.dim / cfg.heads * 2)) << "attention";
  ASSERT_TRUE(threaded(1024.0 * cfg.dim * cfg.dim)) << "cached step proj";
  const nn::Matrix text = random_matrix(layout.num_text(), cfg.dim, 1);
  const nn::Matrix patches = random_matrix(layout.num_patches(), cfg.patch_dim, 2);
  const effattn::Executor pool = testing_util::pool_executor(3);
  const effattn::Executor exs[] = {effattn::Executor{1}, effattn::Executor{2}, pool};
  nn::Matrix x[3], eps[3], cached[3];
  const nn::Matrix tok = random_matrix(layout.images[0].length, cfg.patch_dim, 3);
  for (int i = 0; i < 3; ++i) {
    model.embed(layout, text, patches, {600}, x[i], exs[i]);
    model.predict_noise(layout, x[i], 0, eps[i], exs[i]);
    TransfusionDenoisingCache cache(model, layout, 0, x[i], exs[i]);
    cache.predict_noise(tok, 500, cached[i], exs[i]);
  }
  ASSERT_EQ(eps[0].rows(), 1024);
  for (int i = 1; i < 3; ++i) {
    EXPECT_EQ(flat(x[i]), flat(x[0])) << "embed, executor " << i;
    EXPECT_EQ(flat(eps[i]), flat(eps[0])) << "predict_noise, executor " << i;
    EXPECT_EQ(flat(cached[i]), flat(cached[0])) << "cached predict_noise, executor " << i;
  }
}

TEST(TransfusionModelTest, BadArgumentsThrow) {
  ModelFixture s = make_setup(tf::PositionMode::sequential, 1);
  nn::Matrix x, eps;
  EXPECT_THROW(s.model.embed(s.layout, s.text.topRows(3), s.patches, s.timesteps, x), effattn::shape_error);
  EXPECT_THROW(s.model.embed(s.layout, s.text, s.patches, {1}, x), effattn::parameter_error);
  s.model.embed(s.layout, s.text, s.patches, s.timesteps, x);
  EXPECT_THROW(s.model.predict_noise(s.layout, x, 2, eps), effattn::parameter_error);
  EXPECT_THROW(TransfusionDenoisingCache(s.model, s.layout, -1, x), effattn::parameter_error);
  TransfusionDenoisingCache cache(s.model, s.layout, 1, x);
  EXPECT_THROW(cache.predict_noise(nn::Matrix(3, s.cfg.patch_dim), 10, eps), effattn::shape_error);
  TransfusionConfig bad = s.cfg;
  bad.heads = 5;
  EXPECT_THROW(TinyTransfusion::random(bad, 1), effattn::parameter_error);
  bad.dim = 36;
  bad.heads = 4;  // head_dim 9
  EXPECT_THROW(TinyTransfusion::random(bad, 1), effattn::parameter_error);
}

}  // namespace
