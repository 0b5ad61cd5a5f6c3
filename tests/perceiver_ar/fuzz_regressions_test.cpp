// SPDX-License-Identifier: MIT
// Regressions found by fuzzing (issue 10): sizes checked before anything is
// allocated, empty shapes with null pointers, one executor rule, every check
// before the first write.
#include <gtest/gtest.h>

#include <cstdint>
#include <effattn/perceiver_ar/perceiver_ar.hpp>
#include <limits>
#include <string>
#include <vector>

#include "support/testing.hpp"

namespace {

using testing_util::contains;
using testing_util::message_of;

using effattn::index_t;
namespace pa = effattn::perceiver_ar;
using effattn::ConstView;
using effattn::View;

constexpr index_t kHuge = index_t(1) << 62;


// q [B,0,M,D] is empty, so the view checks accept a huge B (no element is
// addressed); the B x M key-limit buffer must never be sized from it. An
// overflowing shape throws shape_error; a representable one computes nothing.
TEST(PerceiverArFuzzRegressions, CrossAttentionHugeBatchThrowsShapeError) {
  const float one = 1.0f;
  const index_t zero = 0;
  // B * M * D overflows the index type: shape_error, not length_error.
  const ConstView<float, 4> q(&one, {kHuge, 0, kHuge, 1}, {0, 0, 0, 0});
  const ConstView<float, 4> k(&one, {kHuge, 0, kHuge, 1}, {0, 0, 0, 0});
  View<float, 4> out(nullptr, {kHuge, 0, kHuge, 1}, {0, 0, 0, 0});
  const ConstView<index_t, 1> len(&zero, {kHuge}, {0});  // broadcast: one value for every sequence
  EXPECT_THROW(pa::cross_attention<float>(q, k, k, out, len), effattn::shape_error);
  EXPECT_THROW(pa::cross_attention_reference<float>(q, k, k, out, len), effattn::shape_error);
}

TEST(PerceiverArFuzzRegressions, CrossAttentionHugeBatchWithNoHeadsAllocatesNothing) {
  // B * M = 2^42 fits, but a buffer of that many limits does not: nothing may
  // be allocated for an empty output (before: std::length_error / bad_alloc).
  const float one = 1.0f;
  const index_t three = 3;
  const index_t B = index_t(1) << 40, M = 4, N = 8;
  const ConstView<float, 4> q(&one, {B, 0, M, 2}, {0, 0, 0, 0});
  const ConstView<float, 4> k(&one, {B, 0, N, 2}, {0, 0, 0, 0});
  const View<float, 4> out(nullptr, {B, 0, M, 2}, {0, 0, 0, 0});
  const ConstView<index_t, 1> len(&three, {B}, {0});
  EXPECT_NO_THROW(pa::cross_attention<float>(q, k, k, out, len));
  EXPECT_NO_THROW(pa::cross_attention<float>(q, k, k, out));
  EXPECT_NO_THROW(pa::cross_attention_reference<float>(q, k, k, out, len));
  // A huge M with an empty output: the same.
  const ConstView<float, 4> qm(&one, {1, 0, index_t(1) << 40, 2}, {0, 0, 0, 0});
  const ConstView<float, 4> km(&one, {1, 0, index_t(1) << 41, 2}, {0, 0, 0, 0});
  const View<float, 4> om(nullptr, {1, 0, index_t(1) << 40, 2}, {0, 0, 0, 0});
  const index_t L = 5;
  EXPECT_NO_THROW(pa::cross_attention<float>(qm, km, km, om, effattn::make_view<const index_t>(&L, 1)));
}

TEST(PerceiverArFuzzRegressions, LatentAttentionHugeBatchThrowsShapeError) {
  const float one = 1.0f;
  const ConstView<float, 4> q(&one, {kHuge, 0, 8, 1}, {0, 0, 0, 0});  // B * M overflows
  const View<float, 4> out(nullptr, {kHuge, 0, 8, 1}, {0, 0, 0, 0});
  EXPECT_THROW(pa::latent_attention<float>(q, q, q, out), effattn::shape_error);
  EXPECT_THROW(pa::latent_attention_reference<float>(q, q, q, out), effattn::shape_error);
}

TEST(PerceiverArFuzzRegressions, LatentAttentionHugeBatchWithNoHeadsAllocatesNothing) {
  // Before: B entries allocated before anything was checked (length_error).
  const float one = 1.0f;
  const index_t B = index_t(1) << 61;
  const ConstView<float, 4> q(&one, {B, 0, 1, 1}, {0, 0, 0, 0});
  const View<float, 4> out(nullptr, {B, 0, 1, 1}, {0, 0, 0, 0});
  const index_t L = 0;
  const ConstView<index_t, 1> len(&L, {B}, {0});
  EXPECT_NO_THROW(pa::latent_attention<float>(q, q, q, out));
  EXPECT_NO_THROW(pa::latent_attention<float>(q, q, q, out, len));
  EXPECT_NO_THROW(pa::latent_attention_reference<float>(q, q, q, out, len));
  // A bad (broadcast) valid length is still found.
  const index_t neg = -1;
  EXPECT_THROW(pa::latent_attention<float>(q, q, q, out, ConstView<index_t, 1>(&neg, {B}, {0})),
               effattn::parameter_error);
}

// Empty shapes with the null data pointer of an empty std::vector.
TEST(PerceiverArFuzzRegressions, EmptyShapesWithNullPointers) {
  std::vector<float> none;
  std::vector<index_t> no_len;
  const float* n = none.data();
  float* w = none.data();
  // B = 0.
  EXPECT_NO_THROW(pa::cross_attention<float>(ConstView<float, 4>(n, {0, 2, 3, 4}), ConstView<float, 4>(n, {0, 1, 5, 4}),
                                             ConstView<float, 4>(n, {0, 1, 5, 2}), View<float, 4>(w, {0, 2, 3, 2}),
                                             ConstView<index_t, 1>(no_len.data(), {0})));
  EXPECT_NO_THROW(pa::latent_attention<float>(ConstView<float, 4>(n, {0, 2, 3, 4}), ConstView<float, 4>(n, {0, 1, 3, 4}),
                                              ConstView<float, 4>(n, {0, 1, 3, 2}), View<float, 4>(w, {0, 2, 3, 2}),
                                              ConstView<index_t, 1>(no_len.data(), {0})));
  EXPECT_NO_THROW(pa::cross_attention_reference<float>(
      ConstView<float, 4>(n, {0, 2, 3, 4}), ConstView<float, 4>(n, {0, 1, 5, 4}), ConstView<float, 4>(n, {0, 1, 5, 2}),
      View<float, 4>(w, {0, 2, 3, 2})));
  EXPECT_NO_THROW(pa::latent_attention_reference<float>(
      ConstView<float, 4>(n, {0, 2, 3, 4}), ConstView<float, 4>(n, {0, 1, 3, 4}), ConstView<float, 4>(n, {0, 1, 3, 2}),
      View<float, 4>(w, {0, 2, 3, 2})));
  // H = 0 (and Hkv = 0) with real valid lengths that ask for key limits.
  std::vector<index_t> len{1, 5};
  EXPECT_NO_THROW(pa::cross_attention<float>(ConstView<float, 4>(n, {2, 0, 3, 4}), ConstView<float, 4>(n, {2, 0, 5, 4}),
                                             ConstView<float, 4>(n, {2, 0, 5, 2}), View<float, 4>(w, {2, 0, 3, 2}),
                                             effattn::make_view<const index_t>(len.data(), 2)));
  EXPECT_NO_THROW(pa::latent_attention<float>(ConstView<float, 4>(n, {2, 0, 3, 4}), ConstView<float, 4>(n, {2, 0, 3, 4}),
                                              ConstView<float, 4>(n, {2, 0, 3, 2}), View<float, 4>(w, {2, 0, 3, 2}),
                                              effattn::make_view<const index_t>(len.data(), 2)));
  // Positions and limits of no sequence.
  EXPECT_NO_THROW(pa::latent_positions(ConstView<index_t, 1>(no_len.data(), {0}), 4,
                                       View<index_t, 2>(no_len.data(), {0, 2})));
  EXPECT_NO_THROW(pa::cross_key_limits({}, 4, View<index_t, 2>(no_len.data(), {0, 2})));
  EXPECT_TRUE(pa::encoder_mask_reference(0, 0, 0).empty());
  EXPECT_TRUE(pa::processor_mask_reference(0, 0).empty());
}

TEST(PerceiverArFuzzRegressions, MaskReferencesCheckTheirSizes) {
  EXPECT_THROW(pa::encoder_mask_reference(3, -1, 2), effattn::parameter_error);
  EXPECT_THROW(pa::encoder_mask_reference(3, 4, -2), effattn::parameter_error);
  const index_t huge = testing_util::opaque(kHuge);  // no constant propagated into unreachable loops
  EXPECT_THROW(pa::encoder_mask_reference(3, huge, huge), effattn::shape_error);
  EXPECT_THROW(pa::processor_mask_reference(3, -1), effattn::parameter_error);
  EXPECT_THROW(pa::processor_mask_reference(3, huge), effattn::shape_error);
}

struct Small {
  index_t B = 2, H = 2, N = 7, M = 3, D = 4;
  std::vector<float> q, k, v;
  explicit Small(index_t n = 7, index_t m = 3) : N(n), M(m) {
    q = testing_util::random_vector(static_cast<size_t>(B * H * M * D), 1);
    k = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 2);
    v = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 3);
  }
  ConstView<float, 4> qv() const { return effattn::make_view<const float>(q.data(), B, H, M, D); }
  ConstView<float, 4> kv() const { return effattn::make_view<const float>(k.data(), B, H, N, D); }
  ConstView<float, 4> vv() const { return effattn::make_view<const float>(v.data(), B, H, N, D); }
  ConstView<float, 4> klat() const { return effattn::make_view<const float>(k.data(), B, H, M, D); }
  ConstView<float, 4> vlat() const { return effattn::make_view<const float>(v.data(), B, H, M, D); }
};

// One executor rule: Executor(-1) is rejected first, by name, on a small input
// (which would run serially anyway) and on a big one, and nothing is written.
TEST(PerceiverArFuzzRegressions, AttentionRejectsNegativeExecutorFirst) {
  for (index_t n : {7, 3000}) {
    const Small s(n, n == 7 ? 3 : 1500);
    std::vector<float> out(s.q.size(), 9.0f), lse(static_cast<size_t>(s.B * s.H * s.M), 9.0f);
    const auto ov = effattn::make_view(out.data(), s.B, s.H, s.M, s.D);
    const auto lv = effattn::make_view(lse.data(), s.B, s.H, s.M);
    std::vector<index_t> len{s.N - 1, s.N};
    const auto lenv = effattn::make_view<const index_t>(len.data(), 2);
    const effattn::Executor bad(-1);
    auto msg = message_of([&] { pa::cross_attention<float>(s.qv(), s.kv(), s.vv(), ov, lenv, {}, bad, lv); });
    EXPECT_TRUE(contains(msg, "perceiver_ar::cross_attention: executor num_threads")) << msg;
    msg = message_of([&] { pa::cross_attention<float>(s.qv(), s.kv(), s.vv(), ov, {}, {}, bad, lv); });
    EXPECT_TRUE(contains(msg, "perceiver_ar::cross_attention: executor num_threads")) << msg;
    // Checked before anything else: also with another bad argument present.
    msg = message_of([&] {
      pa::cross_attention<float>(s.qv(), s.kv(), s.vv(), effattn::make_view(out.data(), s.B, s.H, s.M, s.D - 1), lenv,
                                 {}, bad, lv);
    });
    EXPECT_TRUE(contains(msg, "executor num_threads")) << msg;
    msg = message_of([&] { pa::latent_attention<float>(s.qv(), s.klat(), s.vlat(), ov, lenv, {}, bad, lv); });
    EXPECT_TRUE(contains(msg, "perceiver_ar::latent_attention: executor num_threads")) << msg;
    std::vector<effattn::float16> kh(s.k.size()), vh(s.v.size());
    msg = message_of([&] {
      pa::cross_attention<float>(s.qv(), effattn::make_view<const effattn::float16>(kh.data(), s.B, s.H, s.N, s.D),
                                 effattn::make_view<const effattn::float16>(vh.data(), s.B, s.H, s.N, s.D), ov, lenv, {},
                                 bad);
    });
    EXPECT_TRUE(contains(msg, "perceiver_ar::cross_attention: executor num_threads")) << msg;
    for (float x : out) ASSERT_EQ(x, 9.0f);
    for (float x : lse) ASSERT_EQ(x, 9.0f);
  }
}

// Every check runs before the first write: an lse of the wrong shape, a bad
// tile size or an aliased output leaves out untouched, with the key-limit path
// (valid lengths below N) too; the messages name the Perceiver AR operator.
TEST(PerceiverArFuzzRegressions, EveryCheckBeforeTheFirstWrite) {
  const Small s;
  std::vector<float> out(s.q.size(), 9.0f), lse(64, 9.0f);
  const auto ov = effattn::make_view(out.data(), s.B, s.H, s.M, s.D);
  std::vector<index_t> len{2, 7};
  const auto lenv = effattn::make_view<const index_t>(len.data(), 2);
  auto msg = message_of([&] {
    pa::cross_attention<float>(s.qv(), s.kv(), s.vv(), ov, lenv, {}, {}, effattn::make_view(lse.data(), 2, 2, 4));
  });
  EXPECT_TRUE(contains(msg, "perceiver_ar::cross_attention: lse must be")) << msg;
  effattn::AttentionOptions bad_tile;
  bad_tile.block_q = -3;
  msg = message_of([&] { pa::cross_attention<float>(s.qv(), s.kv(), s.vv(), ov, lenv, bad_tile); });
  EXPECT_TRUE(contains(msg, "perceiver_ar::cross_attention: block_q")) << msg;
  msg = message_of([&] { pa::latent_attention<float>(s.qv(), s.klat(), s.vlat(), ov, lenv, bad_tile); });
  EXPECT_TRUE(contains(msg, "perceiver_ar::latent_attention: block_q")) << msg;
  msg = message_of([&] {
    pa::cross_attention<float>(s.qv(), s.kv(), s.vv(), effattn::make_view(const_cast<float*>(s.k.data()), s.B, s.H, s.M, s.D),
                               lenv);
  });
  EXPECT_TRUE(contains(msg, "must not share memory")) << msg;
  for (float x : out) ASSERT_EQ(x, 9.0f);
  for (float x : lse) ASSERT_EQ(x, 9.0f);
}

// A broadcast (stride 0) token or length view is checked by its one value,
// not element by element over a huge extent.
TEST(PerceiverArFuzzRegressions, BroadcastValidLengthIsCheckedOnce) {
  const index_t B = index_t(1) << 50, bad = 9, good = 4;
  const index_t N = 8;
  std::vector<index_t> pos(1);
  EXPECT_THROW(pa::latent_positions(ConstView<index_t, 1>(&bad, {B}, {0}), N, View<index_t, 2>(pos.data(), {0, 1})),
               effattn::shape_error);  // B mismatch, found at once
  const float one = 1.0f;
  const ConstView<float, 4> q(&one, {B, 0, 2, 1}, {0, 0, 0, 0});
  const ConstView<float, 4> k(&one, {B, 0, N, 1}, {0, 0, 0, 0});
  const View<float, 4> out(nullptr, {B, 0, 2, 1}, {0, 0, 0, 0});
  EXPECT_THROW(pa::cross_attention<float>(q, k, k, out, ConstView<index_t, 1>(&bad, {B}, {0})), effattn::parameter_error);
  EXPECT_NO_THROW(pa::cross_attention<float>(q, k, k, out, ConstView<index_t, 1>(&good, {B}, {0})));
}

}  // namespace
