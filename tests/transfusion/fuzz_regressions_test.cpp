// SPDX-License-Identifier: MIT
// Regressions found by fuzzing the Transfusion entry points (issue 10): shape
// products that overflowed, huge sizes that reached an allocation, empty views
// whose null data pointer was offset, an executor checked late (or under
// another name), user input guarded by EFFATTN_ASSERT, and hand-built layouts,
// batches, limits or schedules read out of bounds (the model's cases moved
// with it to tests/models/transfusion_regressions_test.cpp). Each test is named
// after its defect; a throwing call must leave its outputs untouched.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <effattn/transfusion/transfusion.hpp>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "support/testing.hpp"

namespace tf = effattn::transfusion;
using effattn::index_t;
using S = tf::Segment;

namespace {

using testing_util::expect_throw_with;

constexpr index_t kMax = std::numeric_limits<index_t>::max();
constexpr index_t kMin = std::numeric_limits<index_t>::min();


// ---------------------------------------------------------------- layouts

TEST(TransfusionFuzzRegressions, MakeLayoutGridAreaOverflowThrows) {
  expect_throw_with<effattn::shape_error>([] { tf::make_layout({S::image(index_t(1) << 32, index_t(1) << 32)}); },
                                          "grid_h * grid_w");
  expect_throw_with<effattn::shape_error>([] { tf::make_layout({S::text(3), S::image(kMax, 2)}); }, "overflows");
}

TEST(TransfusionFuzzRegressions, MakeLayoutRunningLengthOverflowThrows) {
  // grid area fits, + 2 markers does not.
  expect_throw_with<effattn::shape_error>([] { tf::make_layout({S::image(1, kMax - 1)}); }, "overflows");
  // Each segment fits, their sum does not (the cap is checked after every
  // segment, so the running sum can never wrap).
  expect_throw_with<effattn::parameter_error>([] { tf::make_layout({S::text(kMax), S::text(kMax)}); },
                                              "max_sequence_length");
}

TEST(TransfusionFuzzRegressions, MakeLayoutHugeLengthThrowsBeforeAllocating) {
  // 2^32 tokens fit the index type, but the per-token arrays would need
  // ~140 GB: a parameter_error, never bad_alloc.
  expect_throw_with<effattn::parameter_error>([] { tf::make_layout({S::text(index_t(1) << 32)}); },
                                              "max_sequence_length");
  expect_throw_with<effattn::parameter_error>([] { tf::make_layout({S::image(index_t(1) << 16, index_t(1) << 16)}); },
                                              "max_sequence_length");
  // The bound itself is inclusive and far below any overflow.
  EXPECT_LT(tf::max_sequence_length, kMax / 4);
}

TEST(TransfusionFuzzRegressions, LayoutFromSpansGridAreaOverflowThrows) {
  expect_throw_with<effattn::shape_error>(
      [] { tf::layout_from_spans(100, {{1, index_t(1) << 32, index_t(1) << 32}}); }, "grid_h * grid_w");
}

TEST(TransfusionFuzzRegressions, LayoutFromSpansStartPlusLengthOverflowThrows) {
  // start + length used to wrap to a negative EOI that passed the range test.
  expect_throw_with<effattn::parameter_error>([] { tf::layout_from_spans(100, {{kMax - 1, 1, 4}}); }, "images");
  expect_throw_with<effattn::parameter_error>([] { tf::layout_from_spans(100, {{50, 1, kMax}}); }, "out of range");
  // start - 1 for the most negative start was signed overflow.
  expect_throw_with<effattn::parameter_error>([] { tf::layout_from_spans(100, {{kMin, 1, 1}}); }, "images");
}

TEST(TransfusionFuzzRegressions, LayoutFromSpansHugeNThrowsBeforeAllocating) {
  volatile index_t huge = index_t(1) << 40;  // opaque: GCC would warn about the (unreached) fill loop
  expect_throw_with<effattn::parameter_error>([&] { tf::layout_from_spans(huge, {}); }, "max_sequence_length");
  expect_throw_with<effattn::parameter_error>([] { tf::layout_from_spans(kMax, {{1, 1, 1}}); }, "N");
}

TEST(TransfusionFuzzRegressions, LayoutFromTokensBroadcastHugeNThrows) {
  // A broadcast (stride 0) view of one element may claim any extent; the
  // scan over it must not start.
  const std::int64_t text = 0, none = -1;
  const effattn::ConstView<std::int64_t, 1> type(&text, {index_t(1) << 40}, {0});
  const effattn::ConstView<std::int64_t, 1> id(&none, {index_t(1) << 40}, {0});
  expect_throw_with<effattn::parameter_error>([&] { tf::layout_from_tokens(type, id); }, "max_sequence_length");
}

TEST(TransfusionFuzzRegressions, LayoutFromTokensEmptyNullViews) {
  std::vector<std::int64_t> none;  // data() is null
  const auto L = tf::layout_from_tokens(effattn::make_view<const std::int64_t>(none.data(), 0),
                                        effattn::make_view<const std::int64_t>(none.data(), 0));
  EXPECT_EQ(L.length(), 0);
  EXPECT_EQ(tf::block_causal_limits(L).data.size(), 0u);
  EXPECT_TRUE(tf::block_causal_dense_mask(L).empty());
}

TEST(TransfusionFuzzRegressions, LayoutFromTokensEoiWithImageIdThrows) {
  // An EOI carrying an image id (not -1) was accepted and silently dropped.
  const std::vector<std::int64_t> type = {0, 1, 3, 3, 2, 0}, id = {-1, -1, 0, 0, 0, -1};
  expect_throw_with<effattn::parameter_error>(
      [&] {
        tf::layout_from_tokens(effattn::make_view<const std::int64_t>(type.data(), 6),
                               effattn::make_view<const std::int64_t>(id.data(), 6));
      },
      "must be -1 for the EOI of image 0");
}

TEST(TransfusionFuzzRegressions, MakeBatchHugePadToThrows) {
  expect_throw_with<effattn::parameter_error>([] { tf::make_batch({}, index_t(1) << 40); }, "pad_to");
  expect_throw_with<effattn::parameter_error>([] { tf::make_batch({}, kMax); }, "pad_to");
}

TEST(TransfusionFuzzRegressions, BlockCausalLimitsBatchShorterThanLayoutThrows) {
  // A hand-built batch whose N is shorter than a layout wrote past the limits.
  tf::BatchLayout b;
  b.items = {tf::make_layout({S::text(5), S::image(2, 2)})};
  b.N = 3;
  expect_throw_with<effattn::parameter_error>([&] { tf::block_causal_limits(b); }, "batch.N");
  b.N = -1;
  expect_throw_with<effattn::parameter_error>([&] { tf::block_causal_limits(b); }, "batch.N");
  expect_throw_with<effattn::parameter_error>([&] { tf::block_causal_dense_mask(b); }, "batch.N");
  b.N = index_t(1) << 40;
  expect_throw_with<effattn::parameter_error>([&] { tf::block_causal_limits(b); }, "batch.N");
}

TEST(TransfusionFuzzRegressions, InconsistentLayoutIsRejectedNotReadOutOfBounds) {
  const auto good = tf::make_layout({S::text(2), S::image(2, 3), S::text(1)});
  auto L = good;
  L.image_id.pop_back();  // per-token arrays of different lengths
  expect_throw_with<effattn::parameter_error>([&] { tf::block_causal_limits(L); }, "per-token arrays");
  L = good;
  L.images[0].length = 100;  // span past the end
  expect_throw_with<effattn::parameter_error>([&] { tf::block_causal_limits(L); }, "image 0");
  L = good;
  L.image_id[0] = 7;  // an image that does not exist
  expect_throw_with<effattn::parameter_error>([&] { tf::block_causal_dense_mask(L); }, "image_id 7");
  L = good;
  L.type[4] = tf::TokenType::text;  // a text token inside the image
  L.image_id[4] = -1;
  expect_throw_with<effattn::parameter_error>([&] { tf::make_batch({L}); }, "layouts[0]");
  L = good;
  L.type[0] = static_cast<tf::TokenType>(9);
  std::mt19937_64 rng(1);
  expect_throw_with<effattn::parameter_error>([&] { tf::sample_timesteps(L, tf::CosineSchedule(), rng); }, "type 9");
  L = good;
  L.images[0].start = kMin;  // boi() would overflow
  expect_throw_with<effattn::parameter_error>([&] { tf::block_causal_limits(L); }, "image 0");
  EXPECT_NO_THROW(tf::block_causal_limits(good));
}

TEST(TransfusionFuzzRegressions, BlockCausalDenseMaskOverflowThrowsBeforeAllocating) {
  // 4 * N * N overflows for N = max_sequence_length: rejected before the
  // (4 * 2^31 entry) limits are allocated.
  const auto b = tf::make_batch({tf::Layout{}, tf::Layout{}, tf::Layout{}, tf::Layout{}}, tf::max_sequence_length);
  expect_throw_with<effattn::shape_error>([&] { tf::block_causal_dense_mask(b); }, "B * N * N");
}

// ---------------------------------------------------------------- patchify

TEST(TransfusionFuzzRegressions, PatchifyEmptyLatentHugePatchOverflowThrows) {
  // An empty latent accepts any p that divides 0, then p * p * C overflowed.
  std::vector<float> none;
  const auto latent = effattn::make_view<const float>(none.data(), 0, 0, 3);
  const auto tokens = effattn::make_view(none.data(), 0, 0);
  expect_throw_with<effattn::shape_error>([&] { tf::patchify<float>(latent, index_t(1) << 32, tokens); }, "p * p * C");
  expect_throw_with<effattn::shape_error>(
      [&] {
        tf::unpatchify<float>(effattn::make_view<const float>(none.data(), 0, 0), index_t(1) << 32,
                              effattn::make_view(none.data(), 0, 0, 3));
      },
      "p * p * C");
  // A p that fits is fine: tokens [0, p*p*C].
  EXPECT_NO_THROW(tf::patchify<float>(latent, 4, effattn::make_view(none.data(), 0, 48)));
  EXPECT_THROW(tf::num_patches(kMax, kMax, 1), effattn::shape_error);
  EXPECT_THROW(tf::num_patches(-4, 4, 2), effattn::parameter_error);
}

TEST(TransfusionFuzzRegressions, PatchifyEmptyLatentDoesNotLoopOrOffset) {
  // [2^31, 2^31, 0]: no element, 2^62 grid cells. It used to loop over every
  // cell (and offset a null pointer); now it returns at once.
  std::vector<float> none;
  const index_t big = index_t(1) << 31;
  EXPECT_NO_THROW(tf::patchify<float>(effattn::make_view<const float>(none.data(), big, big, 0), 1,
                                      effattn::make_view(none.data(), big * big, 0)));
  EXPECT_NO_THROW(tf::unpatchify<float>(effattn::make_view<const float>(none.data(), big * big, 0), 1,
                                        effattn::make_view(none.data(), big, big, 0)));
}

// ---------------------------------------------------------------- diffusion

TEST(TransfusionFuzzRegressions, CosineScheduleHugeStepsThrows) {
  // T + 1 overflowed (T = max) or reached a huge allocation.
  expect_throw_with<effattn::parameter_error>([] { tf::CosineSchedule s(kMax); }, "max_steps");
  expect_throw_with<effattn::parameter_error>([] { tf::CosineSchedule s(index_t(1) << 40); }, "max_steps");
  EXPECT_NO_THROW(tf::CosineSchedule s(tf::CosineSchedule::max_steps));
}

TEST(TransfusionFuzzRegressions, CosineScheduleEditedStepsAreCheckedAgainstItsTables) {
  tf::CosineSchedule s(10);
  s.T = 1000;  // tables still hold 11 entries
  expect_throw_with<effattn::parameter_error>([&] { (void)s.abar(500); }, "tables");
  std::vector<float> x(6, 1.0f), e(6, 0.5f), out(6, 7.0f);
  EXPECT_THROW(tf::add_noise<float>(s, effattn::make_view<const float>(x.data(), 2, 3),
                                    effattn::make_view<const float>(e.data(), 2, 3), 500, effattn::make_view(out.data(), 2, 3)),
               effattn::parameter_error);
  EXPECT_EQ(out, std::vector<float>(6, 7.0f));
}

TEST(TransfusionFuzzRegressions, DiffusionEmptyViewsDoNotOffsetNullData) {
  const tf::CosineSchedule sched(50);
  std::vector<float> none;
  // [P, 0] views with null data: add_noise_per_image used to offset the null
  // pointer per image.
  const auto L = tf::make_layout({S::text(1), S::image(2, 2), S::image(1, 3)});
  const auto e0 = effattn::make_view<const float>(none.data(), L.num_patches(), 0);
  EXPECT_NO_THROW(tf::add_noise_per_image<float>(sched, L, e0, e0, {3, 4}, effattn::make_view(none.data(), L.num_patches(), 0)));
  // [huge, 0]: nothing to write, no loop over the rows.
  const index_t big = index_t(1) << 40;
  const auto h0 = effattn::make_view<const float>(none.data(), big, 0);
  const auto o0 = effattn::make_view(none.data(), big, 0);
  EXPECT_NO_THROW(tf::add_noise<float>(sched, h0, h0, 5, o0));
  EXPECT_NO_THROW(tf::ddpm_step<float>(sched, h0, h0, 5, {}, o0));
  EXPECT_NO_THROW(tf::ddpm_step<float>(sched, h0, h0, 5, h0, o0));
  EXPECT_NO_THROW(tf::predict_x0<float>(sched, h0, h0, 5, o0));
}

TEST(TransfusionFuzzRegressions, DdpmStepNullNoiseWithShapeThrows) {
  // A null z with a non-empty shape was silently taken as "no noise".
  const tf::CosineSchedule sched(50);
  std::vector<float> x(6, 1.0f), e(6, 0.5f), out(6, 7.0f);
  const effattn::ConstView<float, 2> z(nullptr, {2, 3});
  expect_throw_with<effattn::shape_error>(
      [&] {
        tf::ddpm_step<float>(sched, effattn::make_view<const float>(x.data(), 2, 3),
                             effattn::make_view<const float>(e.data(), 2, 3), 5, z, effattn::make_view(out.data(), 2, 3));
      },
      "null pointer");
  EXPECT_EQ(out, std::vector<float>(6, 7.0f));
}

// ---------------------------------------------------------------- attention

TEST(TransfusionFuzzRegressions, BlockCausalAttentionChecksExecutorFirst) {
  for (index_t N : {index_t(4), index_t(512)}) {  // small, and big enough for the parallel path
    const index_t H = 2, D = 64;
    const auto L = tf::make_layout({S::text(1), S::image(1, N - 3)});
    const auto lim = tf::block_causal_limits(L);
    const auto q = testing_util::random_vector(static_cast<size_t>(H * N * D), 1);
    std::vector<float> out(q.size(), 3.0f);
    const auto Q = effattn::make_view<const float>(q.data(), 1, H, N, D);
    expect_throw_with<effattn::parameter_error>(
        [&] { tf::block_causal_attention<float>(Q, Q, Q, effattn::make_view(out.data(), 1, H, N, D), lim, {}, effattn::Executor(-1)); },
        "transfusion::block_causal_attention: executor num_threads");
    // First, before any other check: also with a wrong limit shape.
    expect_throw_with<effattn::parameter_error>(
        [&] {
          tf::block_causal_attention<float>(Q, Q, Q, effattn::make_view(out.data(), 1, H, N, D), tf::KeyLimits{},
                                            {}, effattn::Executor(-1));
        },
        "transfusion::block_causal_attention: executor num_threads");
    EXPECT_EQ(out, std::vector<float>(q.size(), 3.0f));
  }
}

TEST(TransfusionFuzzRegressions, BlockCausalAttentionKeyLimitsSizeMismatchThrows) {
  tf::KeyLimits lim;
  lim.B = 1;
  lim.N = 4;
  lim.data = {1, 2};  // the view over it would read 2 absent entries
  std::vector<float> q(4 * 8, 1.0f), out(q.size(), 3.0f);
  const auto Q = effattn::make_view<const float>(q.data(), 1, 1, 4, 8);
  expect_throw_with<effattn::parameter_error>(
      [&] { tf::block_causal_attention<float>(Q, Q, Q, effattn::make_view(out.data(), 1, 1, 4, 8), lim); }, "limits");
  lim.B = index_t(1) << 40;
  lim.N = index_t(1) << 40;
  expect_throw_with<effattn::shape_error>(
      [&] { tf::block_causal_attention<float>(Q, Q, Q, effattn::make_view(out.data(), 1, 1, 4, 8), lim); }, "B * N");
  EXPECT_EQ(out, std::vector<float>(q.size(), 3.0f));
}

TEST(TransfusionFuzzRegressions, BlockCausalAttentionEmptyNullViews) {
  std::vector<float> none;
  std::vector<index_t> nolim;
  const auto e = effattn::make_view<const float>(none.data(), 1, 2, 0, 8);
  EXPECT_NO_THROW(tf::block_causal_attention<float>(e, e, e, effattn::make_view(none.data(), 1, 2, 0, 8),
                                                    effattn::make_view<const index_t>(nolim.data(), 1, 0)));
  EXPECT_NO_THROW(tf::block_causal_attention<float>(e, e, e, effattn::make_view(none.data(), 1, 2, 0, 8),
                                                    tf::block_causal_limits(tf::Layout{})));
}

}  // namespace
