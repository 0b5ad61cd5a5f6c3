// SPDX-License-Identifier: MIT
// Regressions of the Transfusion model found by fuzzing (issue 10), moved here
// with the model (issue 11): the private run_rows step checks its sizes
// instead of asserting, every entry point checks the executor first, an edited
// model is rejected before it is read, a huge config is rejected before
// allocating, and embed's output may not alias an input.
#include <gtest/gtest.h>

#include <effattn/models/transfusion.hpp>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "support/nn_testing.hpp"
#include "support/testing.hpp"

namespace tf = effattn::transfusion;
namespace nn = effattn::nn;
namespace steps = effattn::models::detail::transfusion;
using effattn::index_t;
using effattn::models::TinyTransfusion;
using effattn::models::TransfusionConfig;
using effattn::models::TransfusionDenoisingCache;
using S = tf::Segment;

namespace {

using testing_util::same;
using testing_util::random_matrix;

using testing_util::expect_throw_with;

constexpr index_t kMax = std::numeric_limits<index_t>::max();



struct Tiny {
  TransfusionConfig cfg;
  TinyTransfusion model;
  tf::Layout layout;
  nn::Matrix x;
  Tiny() {
    cfg.dim = 16;
    cfg.heads = 2;
    cfg.layers = 2;
    cfg.mlp_hidden = 24;
    cfg.patch_dim = 8;
    model = TinyTransfusion::random(cfg, 3);
    layout = tf::make_layout({S::text(5), S::image(2, 3), S::text(2)});
    nn::Matrix text = random_matrix(layout.num_text(), cfg.dim, 4);
    nn::Matrix patches = random_matrix(layout.num_patches(), cfg.patch_dim, 5);
    model.embed(layout, text, patches, {7}, x);
  }
};

TEST(TransfusionModelFuzzRegressions, RunRowsBadSizesThrowInsteadOfAssert) {
  Tiny t;
  const index_t n = t.x.rows();
  std::vector<index_t> pos(t.layout.position), lim(static_cast<size_t>(n));
  for (index_t i = 0; i < n; ++i) lim[static_cast<size_t>(i)] = t.layout.key_limit(i);
  steps::KVStore kv(t.cfg.layers, t.cfg.heads, n, t.cfg.head_dim());
  const steps::KVStore kv0 = kv;
  const nn::Matrix x0 = t.x;
  auto untouched = [&] {
    EXPECT_TRUE(same(t.x, x0));
    EXPECT_EQ(kv.k, kv0.k);
    EXPECT_EQ(kv.v, kv0.v);
  };
  auto short_pos = pos;
  short_pos.pop_back();
  expect_throw_with<effattn::parameter_error>([&] { steps::run_rows(t.model, t.x, 0, short_pos, lim, kv, {}); }, "pos");
  auto bad_lim = lim;
  bad_lim[3] = 1;  // decreasing
  expect_throw_with<effattn::parameter_error>([&] { steps::run_rows(t.model, t.x, 0, pos, bad_lim, kv, {}); }, "limit");
  bad_lim = lim;
  bad_lim.back() = n + 5;  // past the keys
  expect_throw_with<effattn::parameter_error>([&] { steps::run_rows(t.model, t.x, 0, pos, bad_lim, kv, {}); }, "limit");
  expect_throw_with<effattn::parameter_error>([&] { steps::run_rows(t.model, t.x, 1, pos, lim, kv, {}); }, "capacity");
  expect_throw_with<effattn::parameter_error>([&] { steps::run_rows(t.model, t.x, -1, pos, lim, kv, {}); }, "r0");
  expect_throw_with<effattn::shape_error>([&] { steps::run_rows(t.model, t.x, kMax, pos, lim, kv, {}); }, "r0 + n");
  steps::KVStore one(1, t.cfg.heads, n + 4, t.cfg.head_dim());
  expect_throw_with<effattn::parameter_error>([&] { steps::run_rows(t.model, t.x, 4, pos, lim, one, {}); }, "layers");
  steps::KVStore bad = kv;
  bad.k[1].resize(3);
  expect_throw_with<effattn::parameter_error>([&] { steps::run_rows(t.model, t.x, 0, pos, lim, bad, {}); }, "layer 1");
  expect_throw_with<effattn::parameter_error>([&] { steps::run_rows(t.model, t.x, 0, pos, lim, kv, effattn::Executor(-2)); },
                                              "run_rows: executor num_threads");
  untouched();
}

TEST(TransfusionModelFuzzRegressions, ModelEntryPointsCheckExecutorFirst) {
  Tiny t;
  const effattn::Executor bad(-1);
  nn::Matrix eps = nn::Matrix::Constant(2, 2, 9.0f);
  const nn::Matrix eps0 = eps;
  nn::Matrix x = t.x;
  expect_throw_with<effattn::parameter_error>([&] { t.model.forward(t.layout, x, bad); },
                                              "models::TinyTransfusion::forward: executor");
  EXPECT_TRUE(same(x, t.x));
  // k is out of range too: the executor is reported first.
  expect_throw_with<effattn::parameter_error>([&] { t.model.predict_noise(t.layout, t.x, 5, eps, bad); },
                                              "models::TinyTransfusion::predict_noise: executor");
  expect_throw_with<effattn::parameter_error>([&] { TransfusionDenoisingCache c(t.model, t.layout, 0, t.x, bad); },
                                              "models::TransfusionDenoisingCache: executor");
  TransfusionDenoisingCache cache(t.model, t.layout, 0, t.x);
  const nn::Matrix tok = random_matrix(6, t.cfg.patch_dim, 8);
  expect_throw_with<effattn::parameter_error>([&] { cache.predict_noise(tok, 5, eps, bad); },
                                              "models::TransfusionDenoisingCache::predict_noise: executor");
  EXPECT_TRUE(same(eps, eps0));
  // Still usable, and equal to the uncached prediction.
  nn::Matrix e1, e2;
  cache.predict_noise(tok, 5, e1, effattn::Executor(2));
  nn::Matrix patches = tok, text = random_matrix(t.layout.num_text(), t.cfg.dim, 4), xx;
  t.model.embed(t.layout, text, patches, {5}, xx);
  t.model.predict_noise(t.layout, xx, 0, e2, effattn::Executor(1));
  EXPECT_TRUE(testing_util::close(std::vector<float>(e1.data(), e1.data() + e1.size()),
                                  std::vector<float>(e2.data(), e2.data() + e2.size()), 1e-5, 1e-5));
}

TEST(TransfusionModelFuzzRegressions, EditedModelIsRejectedNotReadOutOfBounds) {
  Tiny t;
  auto m = t.model;
  m.blocks.pop_back();
  nn::Matrix x = t.x;
  expect_throw_with<effattn::parameter_error>([&] { m.forward(t.layout, x); }, "blocks");
  expect_throw_with<effattn::parameter_error>([&] { TransfusionDenoisingCache c(m, t.layout, 0, t.x); }, "blocks");
  m = t.model;
  std::mt19937 rng(1);
  m.time_in = nn::Linear::random(t.cfg.dim, 3, rng);
  const nn::Matrix text = random_matrix(t.layout.num_text(), t.cfg.dim, 4);
  const nn::Matrix patches = random_matrix(t.layout.num_patches(), t.cfg.patch_dim, 5);
  nn::Matrix e = nn::Matrix::Constant(1, 1, 9.0f);
  expect_throw_with<effattn::shape_error>([&] { m.embed(t.layout, text, patches, {3}, e); }, "time_in");
  EXPECT_TRUE(e.rows() == 1 && e(0, 0) == 9.0f);
  EXPECT_TRUE(same(x, t.x));
  // A cache made with the model, which is edited afterwards: its next step is
  // rejected before it reads the edited weights or writes eps.
  TinyTransfusion live = t.model;
  TransfusionDenoisingCache cache(live, t.layout, 0, t.x);
  live.blocks[1].mlp.fc1.weight.resize(3, t.cfg.dim);
  expect_throw_with<effattn::shape_error>([&] { cache.predict_noise(random_matrix(6, t.cfg.patch_dim, 8), 5, e); },
                                          "mlp.fc1");
  EXPECT_TRUE(e.rows() == 1 && e(0, 0) == 9.0f);
}

TEST(TransfusionModelFuzzRegressions, ModelHugeConfigThrowsBeforeAllocating) {
  TransfusionConfig c;
  c.patch_dim = (index_t(1) << 31) + 7;  // 2^37 floats of patch_in: rejected, not bad_alloc
  expect_throw_with<effattn::parameter_error>([&] { TinyTransfusion::random(c, 1); }, "max_parameters");
  c = TransfusionConfig{};
  c.dim = index_t(1) << 32;
  c.heads = 2;
  expect_throw_with<effattn::shape_error>([&] { TinyTransfusion::random(c, 1); }, "parameter count");
  c = TransfusionConfig{};
  c.layers = kMax;
  expect_throw_with<effattn::shape_error>([&] { TinyTransfusion::random(c, 1); }, "parameter count");
}

TEST(TransfusionModelFuzzRegressions, EmbedOutputAliasingAnInputThrows) {
  Tiny t;
  nn::Matrix text = random_matrix(t.layout.num_text(), t.cfg.dim, 4);
  const nn::Matrix text0 = text;
  nn::Matrix patches = random_matrix(t.layout.num_patches(), t.cfg.patch_dim, 5);
  expect_throw_with<effattn::shape_error>([&] { t.model.embed(t.layout, text, patches, {7}, text); }, "x must be");
  EXPECT_TRUE(same(text, text0));
}

}  // namespace
