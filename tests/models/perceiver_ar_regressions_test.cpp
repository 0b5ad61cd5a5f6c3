// SPDX-License-Identifier: MIT
// Regressions of the Perceiver AR model found by fuzzing (issue 10), moved
// here with the model (issue 11): one executor rule (a negative thread count
// is rejected first, by name, before any output or state changes), shapes of
// the private steps checked, huge decoder sizes rejected before allocating,
// and (issue 11) edited weights rejected before they are read.
#include <gtest/gtest.h>

#include <cstdint>
#include <effattn/models/perceiver_ar.hpp>
#include <limits>
#include <string>
#include <vector>

#include "support/testing.hpp"

namespace {

using testing_util::contains;
using testing_util::message_of;

using effattn::index_t;
using effattn::models::PerceiverArConfig;
using effattn::models::PerceiverArDecoder;
using effattn::models::PerceiverArModel;
namespace steps = effattn::models::detail::perceiver_ar;
using effattn::nn::Matrix;

constexpr index_t kHuge = index_t(1) << 62;

PerceiverArModel tiny_model() {
  PerceiverArConfig cfg;
  cfg.vocab = 11;
  cfg.width = 8;
  cfg.heads = 2;
  cfg.layers = 1;
  cfg.mlp_hidden = 8;
  return PerceiverArModel::random(cfg, 5);
}

// The model's entry points, its private steps and the decoder reject
// Executor(-1) first, by name, before any output or state changes.
TEST(PerceiverArModelFuzzRegressions, ModelAndDecoderRejectNegativeExecutorFirst) {
  const PerceiverArModel model = tiny_model();
  const effattn::Executor bad(-1);
  std::vector<std::int32_t> tok{1, 2, 3, 4, 5, 6, 7, 8};
  const auto tv = effattn::make_view<const std::int32_t>(tok.data(), 2, 4);
  Matrix logits = Matrix::Constant(3, 3, 7.0f);
  auto msg = message_of([&] { model.forward(tv, {}, 2, logits, 0, bad); });
  EXPECT_TRUE(contains(msg, "models::PerceiverArModel::forward: executor")) << msg;
  msg = message_of([&] { model.causal_forward(tv, logits, bad); });
  EXPECT_TRUE(contains(msg, "models::PerceiverArModel::causal_forward: executor")) << msg;
  Matrix z = Matrix::Constant(4, 8, 1.0f);
  const Matrix z0 = z;
  msg = message_of([&] { steps::latent_stack(model, z, 2, 2, {}, bad); });
  EXPECT_TRUE(contains(msg, "models::PerceiverArModel::latent_stack: executor")) << msg;
  msg = message_of([&] { steps::output_logits(model, z, logits, bad); });
  EXPECT_TRUE(contains(msg, "models::PerceiverArModel::output_logits: executor")) << msg;
  msg = message_of(
      [&] { steps::residual_and_mlp(model, z, z0, model.cross.attn, model.cross.ln_mlp, model.cross.mlp, bad); });
  EXPECT_TRUE(contains(msg, "models::PerceiverArModel::residual_and_mlp: executor")) << msg;
  std::vector<float> kvd(2 * 2 * 4 * 4, 0.5f);
  const auto K = effattn::make_view<const float>(kvd.data(), 2, 2, 4, 4);
  msg = message_of([&] { steps::cross_block(model, z, 2, 2, K, K, {}, bad); });
  EXPECT_TRUE(contains(msg, "models::PerceiverArModel::cross_block: executor")) << msg;
  int stored = 0;
  msg = message_of([&] {
    steps::input_keys_values(
        model, 3, [](index_t) { return 1; }, [](index_t r) { return r; },
        [&](index_t, const float*, const float*) { ++stored; }, bad);
  });
  EXPECT_TRUE(contains(msg, "models::PerceiverArModel::input_keys_values: executor")) << msg;
  EXPECT_EQ(stored, 0);
  EXPECT_TRUE(z.isApprox(z0) && (z.array() == z0.array()).all());
  EXPECT_TRUE((logits.array() == 7.0f).all() && logits.rows() == 3);

  // A latent stack of the wrong shape is a shape_error, not a read past z.
  EXPECT_THROW(steps::latent_stack(model, z, 3, 2, {}, {}), effattn::shape_error);
  EXPECT_THROW(steps::cross_block(model, z, 2, 3, K, K, {}, {}), effattn::shape_error);
  EXPECT_THROW(
      steps::cross_block(model, z, 2, 2, effattn::make_view<const float>(kvd.data(), 2, 2, 4, 3), K, {}, {}),
      effattn::shape_error);

  // The decoder: a small and a big (long window) append.
  for (index_t ctx : {6, 600}) {
    PerceiverArDecoder dec(model, 2, ctx, 2);
    Matrix l1, l2;
    std::vector<std::int32_t> first(static_cast<size_t>(2 * (ctx - 1)), 3);
    dec.append(effattn::make_view<const std::int32_t>(first.data(), 2, ctx - 1), l1);
    const index_t len = dec.length(), lat = dec.cached_latents(), rec = dec.recomputes();
    const std::size_t mem = dec.memory_bytes();
    std::vector<std::int32_t> one{4, 5};
    msg = message_of([&] { dec.append(effattn::make_view<const std::int32_t>(one.data(), 2, 1), l2, bad); });
    EXPECT_TRUE(contains(msg, "models::PerceiverArDecoder::append: executor")) << msg;
    EXPECT_EQ(dec.length(), len);
    EXPECT_EQ(dec.cached_latents(), lat);
    EXPECT_EQ(dec.recomputes(), rec);
    EXPECT_EQ(dec.memory_bytes(), mem);
    EXPECT_EQ(l2.size(), 0);
    // The next good call gives what a decoder that never saw the bad one gives.
    PerceiverArDecoder twin(model, 2, ctx, 2);
    Matrix t1, t2;
    twin.append(effattn::make_view<const std::int32_t>(first.data(), 2, ctx - 1), t1);
    dec.append(effattn::make_view<const std::int32_t>(one.data(), 2, 1), l2, effattn::Executor(2));
    twin.append(effattn::make_view<const std::int32_t>(one.data(), 2, 1), t2, effattn::Executor(1));
    EXPECT_TRUE((l2.array() == t2.array()).all());
  }
}

TEST(PerceiverArModelFuzzRegressions, DecoderHugeSizesThrowShapeError) {
  const PerceiverArModel model = tiny_model();
  EXPECT_THROW(PerceiverArDecoder(model, kHuge, 10, 4), effattn::shape_error);
  EXPECT_THROW(PerceiverArDecoder(model, 1, kHuge, 4), effattn::shape_error);
  EXPECT_THROW(PerceiverArDecoder(model, 1, kHuge, kHuge), effattn::shape_error);
}

// Positions position_offset + j must fit the index type (no signed overflow in
// the sinusoid's position): a shape_error before logits is written.
TEST(PerceiverArModelFuzzRegressions, HugePositionOffsetThrowsShapeError) {
  const PerceiverArModel model = tiny_model();
  std::vector<std::int32_t> tok{1, 2, 3, 4, 5, 6, 7, 8};
  const auto tv = effattn::make_view<const std::int32_t>(tok.data(), 2, 4);
  Matrix logits = Matrix::Constant(1, 1, 7.0f);
  const index_t max = testing_util::opaque(std::numeric_limits<index_t>::max());
  EXPECT_THROW(model.forward(tv, {}, 2, logits, max - 2), effattn::shape_error);
  EXPECT_TRUE(logits.rows() == 1 && logits(0, 0) == 7.0f);
  EXPECT_NO_THROW(model.forward(tv, {}, 2, logits, max - 4));
  EXPECT_EQ(logits.rows(), 4);
}

// The weights are public members: an edited model (a smaller embedding, a
// missing latent block, a wrong layer) is rejected by name before anything
// reads it or writes an output; a decoder rejects a model whose sizes changed
// since it was made, before its state changes.
TEST(PerceiverArModelFuzzRegressions, EditedModelIsRejectedNotReadOutOfBounds) {
  const PerceiverArModel model = tiny_model();
  std::vector<std::int32_t> tok{1, 2, 10, 4, 5, 6, 7, 8};
  const auto tv = effattn::make_view<const std::int32_t>(tok.data(), 2, 4);
  auto rejects = [&](const PerceiverArModel& m, const char* what) {
    Matrix logits = Matrix::Constant(1, 1, 7.0f);
    const std::string msg = message_of([&] { m.forward(tv, {}, 2, logits); });
    EXPECT_TRUE(contains(msg, what)) << msg;
    EXPECT_TRUE(logits.rows() == 1 && logits(0, 0) == 7.0f);
    EXPECT_TRUE(contains(message_of([&] { m.causal_forward(tv, logits); }), what));
    EXPECT_TRUE(contains(message_of([&] { PerceiverArDecoder d(m, 2, 8, 2); }), what));
  };
  PerceiverArModel m = model;
  m.embedding.conservativeResize(4, 8);  // token 10 would be read past it
  rejects(m, "embedding");
  m = model;
  m.latent.clear();
  rejects(m, "latent");
  m = model;
  m.cross.attn.k.weight.resize(8, 4);
  rejects(m, "attn.k");
  m = model;
  m.latent[0].mlp.fc2.bias.resize(3);
  rejects(m, "mlp.fc2");
  m = model;
  m.ln_final.b.resize(5);
  rejects(m, "ln_final");
  m = model;
  m.head.weight.resize(11, 9);
  rejects(m, "head");
  m = model;
  m.config.heads = 3;
  rejects(m, "heads");

  // A decoder whose model changed.
  PerceiverArModel live = model;
  PerceiverArDecoder dec(live, 2, 8, 2);
  std::vector<std::int32_t> one{4, 5};
  Matrix l;
  dec.append(effattn::make_view<const std::int32_t>(one.data(), 2, 1), l);
  const index_t len = dec.length();
  live.config.context_kv = effattn::Storage::float16;
  Matrix l2;
  EXPECT_TRUE(contains(message_of([&] { dec.append(effattn::make_view<const std::int32_t>(one.data(), 2, 1), l2); }),
                       "must keep the width, heads, layers and context_kv"));
  live = model;
  live.latent.push_back(live.latent[0]);
  live.config.layers = 2;
  EXPECT_TRUE(contains(message_of([&] { dec.append(effattn::make_view<const std::int32_t>(one.data(), 2, 1), l2); }),
                       "must keep the width, heads, layers and context_kv"));
  EXPECT_EQ(dec.length(), len);
  EXPECT_EQ(l2.size(), 0);
  live = model;
  dec.append(effattn::make_view<const std::int32_t>(one.data(), 2, 1), l2);
  EXPECT_EQ(dec.length(), len + 1);
}

}  // namespace
