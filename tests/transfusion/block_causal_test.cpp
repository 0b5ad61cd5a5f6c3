// SPDX-License-Identifier: MIT
// Block-causal mask and attention: key limits against a brute-force dense
// mask, marker semantics, padding, visited tiles, tiled engine against the
// oracle, thread-count invariance.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <effattn/transfusion/transfusion.hpp>
#include <random>
#include <vector>

#include "support/testing.hpp"

namespace tf = effattn::transfusion;
using effattn::index_t;

namespace {

// The rule from the README, straight from the per-token arrays.
bool brute_allowed(const tf::Layout& L, index_t i, index_t j) {
  return j <= i || (L.image_id[i] >= 0 && L.image_id[i] == L.image_id[j]);
}

tf::Layout random_layout(std::mt19937& g, int max_segments, bool image_first, bool image_last) {
  std::uniform_int_distribution<int> nseg(1, max_segments), coin(0, 1), tl(1, 6), gh(1, 3), gw(1, 5);
  std::vector<tf::Segment> s;
  const int n = nseg(g);
  for (int k = 0; k < n; ++k) {
    const bool img = (k == 0 && image_first) || (k == n - 1 && image_last) || coin(g);
    s.push_back(img ? tf::Segment::image(gh(g), gw(g)) : tf::Segment::text(tl(g)));
  }
  return tf::make_layout(s, coin(g) ? tf::PositionMode::sequential : tf::PositionMode::shared_per_image);
}

void expect_mask_matches_rule(const tf::Layout& L, const std::string& what) {
  const auto dense = tf::block_causal_dense_mask(L);
  const auto lim = tf::block_causal_limits(L);
  const index_t N = L.length();
  ASSERT_EQ(dense.size(), static_cast<size_t>(N * N));
  ASSERT_EQ(lim.B, 1);
  ASSERT_EQ(lim.N, N);
  ASSERT_EQ(lim.data.size(), static_cast<size_t>(N));
  for (index_t i = 0; i < N; ++i) {
    if (i > 0) {
      EXPECT_GE(lim(0, i), lim(0, i - 1)) << what;
    }
    for (index_t j = 0; j < N; ++j) {
      const bool want = brute_allowed(L, i, j);
      ASSERT_EQ(dense[i * N + j] != 0, want) << what << " i=" << i << " j=" << j;
      ASSERT_EQ(j < lim(0, i), want) << what << " i=" << i << " j=" << j;
      ASSERT_EQ(L.allowed(i, j), want) << what;
    }
  }
}

TEST(TransfusionMask, RandomLayoutsMatchBruteForce) {
  std::mt19937 g(11);
  for (int trial = 0; trial < 200; ++trial) {
    const auto L = random_layout(g, 8, trial % 3 == 0, trial % 4 == 0);
    expect_mask_matches_rule(L, "trial " + std::to_string(trial));
  }
}

TEST(TransfusionMask, EdgeLayouts) {
  using S = tf::Segment;
  // Adjacent images, image first, image last.
  expect_mask_matches_rule(tf::make_layout({S::image(2, 2), S::image(1, 3), S::image(1, 1)}), "adjacent");
  expect_mask_matches_rule(tf::make_layout({S::image(3, 1), S::text(4)}), "image first");
  expect_mask_matches_rule(tf::make_layout({S::text(2), S::image(2, 3)}), "image last");
  // Text only: plain causal.
  const auto T = tf::make_layout({S::text(17)});
  const auto lt = tf::block_causal_limits(T);
  for (index_t i = 0; i < 17; ++i) EXPECT_EQ(lt(0, i), i + 1);
  // One image only, no markers around it would be needed for the patches: the
  // patches see each other both ways (a fully bidirectional block); BOI sees
  // only itself, EOI everything.
  const auto I = tf::make_layout({S::image(3, 4)});
  const auto li = tf::block_causal_limits(I);
  ASSERT_EQ(I.length(), 14);
  EXPECT_EQ(li(0, 0), 1);
  for (index_t i = 1; i <= 12; ++i) EXPECT_EQ(li(0, i), 13);
  EXPECT_EQ(li(0, 13), 14);
  for (index_t i = 1; i <= 12; ++i)
    for (index_t j = 1; j <= 12; ++j) EXPECT_TRUE(I.allowed(i, j));
}

TEST(TransfusionMask, BoiCannotSeeItsImageEoiCan) {
  using S = tf::Segment;
  const auto L = tf::make_layout({S::text(3), S::image(2, 2), S::text(1), S::image(1, 5), S::text(2)});
  for (const auto& im : L.images) {
    EXPECT_EQ(L.type[im.boi()], tf::TokenType::boi);
    EXPECT_EQ(L.type[im.eoi()], tf::TokenType::eoi);
    for (index_t j = im.start; j < im.end(); ++j) {
      EXPECT_FALSE(L.allowed(im.boi(), j)) << "BOI must not see patch " << j;
      EXPECT_TRUE(L.allowed(im.eoi(), j)) << "EOI must see patch " << j;
      // Every patch sees BOI (before it) but not EOI (after the block).
      EXPECT_TRUE(L.allowed(j, im.boi()));
      EXPECT_FALSE(L.allowed(j, im.eoi()));
    }
    EXPECT_EQ(L.key_limit(im.boi()), im.boi() + 1);
    EXPECT_EQ(L.key_limit(im.eoi()), im.eoi() + 1);
  }
}

TEST(TransfusionMask, PaddedBatch) {
  using S = tf::Segment;
  std::vector<tf::Layout> ls = {tf::make_layout({S::text(2), S::image(2, 2)}),
                                tf::make_layout({S::image(1, 3), S::text(6), S::image(1, 1), S::text(1)}),
                                tf::make_layout({S::text(1)})};
  const auto batch = tf::make_batch(ls, 20);
  ASSERT_EQ(batch.N, 20);
  const auto lim = tf::block_causal_limits(batch);
  const auto dense = tf::block_causal_dense_mask(batch);
  for (index_t b = 0; b < 3; ++b) {
    const index_t len = batch.valid_length(b);
    for (index_t i = 0; i < 20; ++i) {
      if (i >= len) {
        EXPECT_EQ(batch.type(b, i), tf::TokenType::pad);
        EXPECT_EQ(lim(b, i), len) << "padding queries see exactly the valid tokens";
      } else {
        EXPECT_LE(lim(b, i), len) << "no valid query sees padding";
      }
      for (index_t j = 0; j < 20; ++j) {
        const bool want = i < len ? (j < len && brute_allowed(ls[b], i, j)) : j < len;
        EXPECT_EQ(dense[(b * 20 + i) * 20 + j] != 0, want) << b << " " << i << " " << j;
      }
    }
  }
  EXPECT_THROW(tf::make_batch(ls, 5), effattn::parameter_error);
}

// ---------------------------------------------------------------- tiles

// A KeyLimitMask that counts the tiles the engine classifies and records any
// tile that starts at or past the tile's key limit.
struct CountingMask {
  effattn::KeyLimitMask inner;
  std::atomic<long>* visited;
  std::atomic<long>* past_limit;
  struct Bound {
    effattn::KeyLimitMask::Bound b;
    std::atomic<long>* visited;
    std::atomic<long>* past_limit;
    effattn::BlockKind classify(index_t i0, index_t i1, index_t j0, index_t j1) const {
      const auto k = b.classify(i0, i1, j0, j1);
      if (k != effattn::BlockKind::empty) ++*visited;
      if (j0 >= b.key_end(i0, i1)) ++*past_limit;
      return k;
    }
    index_t key_end(index_t i0, index_t i1) const { return b.key_end(i0, i1); }
    template <class S>
    void apply(index_t i, index_t j0, index_t j1, S* s, index_t st) const {
      b.apply(i, j0, j1, s, st);
    }
    bool allowed(index_t i, index_t j) const { return b.allowed(i, j); }
  };
  void check(const char* op, index_t B, index_t H, index_t nq, index_t nk) const { inner.check(op, B, H, nq, nk); }
  Bound bind(index_t b, index_t h, index_t nq, index_t nk) const {
    return Bound{inner.bind(b, h, nq, nk), visited, past_limit};
  }
};

TEST(TransfusionTiles, VisitedTilesAreWhatTheLimitsImply) {
  using S = tf::Segment;
  std::vector<tf::Layout> ls = {
      tf::make_layout({S::text(37), S::image(8, 8), S::text(21), S::image(4, 6), S::text(40)}),
      tf::make_layout({S::image(10, 10), S::text(9), S::image(2, 3)}),
  };
  const auto batch = tf::make_batch(ls);
  const index_t B = 2, H = 3, N = batch.N, D = 16;
  const auto lim = tf::block_causal_limits(batch);
  const auto q = testing_util::random_vector(B * H * N * D, 1), k = testing_util::random_vector(B * H * N * D, 2),
             v = testing_util::random_vector(B * H * N * D, 3);
  const index_t quantum = effattn::detail::attention_query_tile_quantum();
  for (index_t bq : {quantum, 2 * quantum, 4 * quantum})
    for (index_t bk : {16, 37, 64}) {
      std::atomic<long> visited{0}, past{0};
      effattn::AttentionOptions opt;
      opt.block_q = bq;
      opt.block_k = bk;
      std::vector<float> out(q.size()), ref(q.size());
      effattn::attention<float>(effattn::make_view(q.data(), B, H, N, D), effattn::make_view(k.data(), B, H, N, D),
                                effattn::make_view(v.data(), B, H, N, D), effattn::make_view(out.data(), B, H, N, D),
                                CountingMask{lim.mask(), &visited, &past}, effattn::NoScore{}, opt, effattn::Executor{2});
      long expected = 0;
      for (index_t b = 0; b < B; ++b)
        for (index_t i0 = 0; i0 < N; i0 += bq) {
          const index_t i1 = std::min(N, i0 + bq);
          expected += H * ((lim(b, i1 - 1) + bk - 1) / bk);
        }
      EXPECT_EQ(visited.load(), expected) << "bq=" << bq << " bk=" << bk;
      EXPECT_EQ(past.load(), 0) << "a tile past the limit was visited";
      // Independently of the limits: the engine visits exactly the tiles that
      // hold at least one allowed (query, key) pair under the rule itself
      // (brute_allowed on the valid tokens; a padding query sees the valid
      // keys), and that is fewer than full attention's tiles.
      long with_allowed = 0;
      for (index_t b = 0; b < B; ++b) {
        const index_t len = batch.valid_length(b);
        for (index_t i0 = 0; i0 < N; i0 += bq)
          for (index_t j0 = 0; j0 < N; j0 += bk) {
            bool any = false;
            for (index_t i = i0; i < std::min(N, i0 + bq) && !any; ++i)
              for (index_t j = j0; j < std::min(N, j0 + bk) && !any; ++j)
                any = j < len && (i >= len || brute_allowed(ls[static_cast<size_t>(b)], i, j));
            with_allowed += any ? H : 0;
          }
      }
      EXPECT_EQ(visited.load(), with_allowed) << "bq=" << bq << " bk=" << bk;
      long full = 0;
      for (index_t i0 = 0; i0 < N; i0 += bq) full += B * H * ((N + bk - 1) / bk);
      EXPECT_LT(visited.load(), full) << "bq=" << bq << " bk=" << bk;
      // And the counting wrapper computes the same result as the plain mask.
      tf::block_causal_attention<float>(effattn::make_view(q.data(), B, H, N, D),
                                        effattn::make_view(k.data(), B, H, N, D),
                                        effattn::make_view(v.data(), B, H, N, D),
                                        effattn::make_view(ref.data(), B, H, N, D), lim, opt, effattn::Executor{1});
      EXPECT_EQ(out, ref);
    }
}

// ------------------------------------------------------------ attention

struct Shape {
  index_t B, H, Hkv, D, Dv;
  int max_segments;
  unsigned seed;
};

class TransfusionAttention : public ::testing::TestWithParam<Shape> {};

TEST_P(TransfusionAttention, TiledMatchesOracleAndIsThreadInvariant) {
  const Shape s = GetParam();
  std::mt19937 g(s.seed);
  std::vector<tf::Layout> ls;
  for (index_t b = 0; b < s.B; ++b) ls.push_back(random_layout(g, s.max_segments, b % 2 == 0, b % 3 == 0));
  const auto batch = tf::make_batch(ls);
  const index_t N = batch.N, B = s.B, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv;
  const auto lim = tf::block_causal_limits(batch);
  const auto q = testing_util::random_vector(B * H * N * D, s.seed + 1);
  const auto k = testing_util::random_vector(B * Hkv * N * D, s.seed + 2);
  const auto v = testing_util::random_vector(B * Hkv * N * Dv, s.seed + 3);
  auto qv = effattn::make_view(q.data(), B, H, N, D);
  auto kv = effattn::make_view(k.data(), B, Hkv, N, D);
  auto vv = effattn::make_view(v.data(), B, Hkv, N, Dv);
  std::vector<float> ref(B * H * N * Dv), o1(ref.size()), o2(ref.size()), l0(B * H * N), l1(l0.size()), l2(l0.size());
  tf::block_causal_attention_reference<float>(qv, kv, vv, effattn::make_view(ref.data(), B, H, N, Dv), lim.view(), {},
                                              effattn::make_view(l0.data(), B, H, N));
  tf::block_causal_attention<float>(qv, kv, vv, effattn::make_view(o1.data(), B, H, N, Dv), lim, {},
                                    effattn::Executor{1}, effattn::make_view(l1.data(), B, H, N));
  tf::block_causal_attention<float>(qv, kv, vv, effattn::make_view(o2.data(), B, H, N, Dv), lim, {},
                                    effattn::Executor{2}, effattn::make_view(l2.data(), B, H, N));
  testing_util::expect_close(o1, ref, 2e-5, 2e-5, "out vs oracle");
  testing_util::expect_close(l1, l0, 2e-5, 2e-5, "lse vs oracle");
  EXPECT_EQ(o1, o2) << "1 and 2 threads must be bit-identical";
  EXPECT_EQ(l1, l2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, TransfusionAttention,
                         ::testing::Values(Shape{1, 1, 1, 8, 8, 3, 1}, Shape{2, 2, 1, 16, 12, 10, 2},
                                           Shape{3, 4, 2, 40, 40, 25, 3}, Shape{1, 3, 3, 64, 64, 60, 4},
                                           Shape{2, 2, 2, 80, 24, 40, 5}));

TEST(TransfusionAttention, PaddedBatchEqualsEachSequenceAlone) {
  using S = tf::Segment;
  std::vector<tf::Layout> ls = {tf::make_layout({S::text(40), S::image(5, 7), S::text(3)}),
                                tf::make_layout({S::image(4, 4), S::text(150), S::image(2, 9), S::text(30)}),
                                tf::make_layout({S::text(7)})};
  const auto batch = tf::make_batch(ls, 260);
  const index_t B = 3, H = 2, N = batch.N, D = 24;
  const auto lim = tf::block_causal_limits(batch);
  const auto q = testing_util::random_vector(B * H * N * D, 21), k = testing_util::random_vector(B * H * N * D, 22),
             v = testing_util::random_vector(B * H * N * D, 23);
  std::vector<float> out(q.size(), 123.0f);
  tf::block_causal_attention<float>(effattn::make_view(q.data(), B, H, N, D), effattn::make_view(k.data(), B, H, N, D),
                                    effattn::make_view(v.data(), B, H, N, D), effattn::make_view(out.data(), B, H, N, D),
                                    lim, {}, effattn::Executor{2});
  for (float x : out) ASSERT_TRUE(std::isfinite(x)) << "padding rows must stay finite";
  for (index_t b = 0; b < B; ++b) {
    const index_t n = ls[b].length();
    const auto lb = tf::block_causal_limits(ls[b]);
    // The valid part of sample b, as [1, H, n, D] strided views into the batch.
    const std::array<index_t, 4> sh{1, H, n, D}, st{H * N * D, N * D, D, 1};
    const size_t off = static_cast<size_t>(b * H * N * D);
    effattn::ConstView<float, 4> qb(q.data() + off, sh, st), kb(k.data() + off, sh, st), vb(v.data() + off, sh, st);
    std::vector<float> alone(static_cast<size_t>(H * n * D));
    tf::block_causal_attention<float>(qb, kb, vb, effattn::make_view(alone.data(), 1, H, n, D), lb, {},
                                      effattn::Executor{1});
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < n; ++i)
        for (index_t d = 0; d < D; ++d)
          ASSERT_EQ(out[off + (h * N + i) * D + d], alone[(h * n + i) * D + d]) << b << " " << h << " " << i;
  }
}

TEST(TransfusionAttention, StridedInputs) {
  // q, k, v as [B, N, H, D] memory viewed as [B, H, N, D].
  using S = tf::Segment;
  const auto L = tf::make_layout({S::text(5), S::image(3, 5), S::text(30), S::image(6, 6), S::text(3)});
  const auto lim = tf::block_causal_limits(L);
  const index_t B = 1, H = 2, N = L.length(), D = 24;
  const auto q = testing_util::random_vector(B * N * H * D, 7), k = testing_util::random_vector(B * N * H * D, 8),
             v = testing_util::random_vector(B * N * H * D, 9);
  const std::array<index_t, 4> sh{B, H, N, D}, st{N * H * D, D, H * D, 1};
  effattn::ConstView<float, 4> qv(q.data(), sh, st), kv(k.data(), sh, st), vv(v.data(), sh, st);
  std::vector<float> o(B * H * N * D), r(o.size());
  tf::block_causal_attention<float>(qv, kv, vv, effattn::make_view(o.data(), B, H, N, D), lim);
  tf::block_causal_attention_reference<float>(qv, kv, vv, effattn::make_view(r.data(), B, H, N, D), lim.view());
  testing_util::expect_close(o, r, 2e-5, 2e-5, "strided");
}

TEST(TransfusionAttention, BadArgumentsThrow) {
  using S = tf::Segment;
  const auto L = tf::make_layout({S::text(3), S::image(2, 2)});
  const auto lim = tf::block_causal_limits(L);
  const index_t N = L.length();
  std::vector<float> q(N * 8), o(N * 8), k((N + 1) * 8);
  // Nk != Nq.
  EXPECT_THROW(tf::block_causal_attention<float>(effattn::make_view(q.data(), 1, 1, N, 8),
                                                 effattn::make_view(k.data(), 1, 1, N + 1, 8),
                                                 effattn::make_view(k.data(), 1, 1, N + 1, 8),
                                                 effattn::make_view(o.data(), 1, 1, N, 8), lim),
               effattn::shape_error);
  // Limits of the wrong batch size.
  tf::KeyLimits bad = lim;
  bad.B = 2;
  bad.data.resize(2 * N, N);
  EXPECT_THROW(tf::block_causal_attention<float>(effattn::make_view(q.data(), 1, 1, N, 8),
                                                 effattn::make_view(q.data(), 1, 1, N, 8),
                                                 effattn::make_view(q.data(), 1, 1, N, 8),
                                                 effattn::make_view(o.data(), 1, 1, N, 8), bad),
               effattn::shape_error);
  // Decreasing limits are rejected by the engine's policy check.
  tf::KeyLimits dec = lim;
  dec.data[2] = 1;
  EXPECT_THROW(tf::block_causal_attention<float>(effattn::make_view(q.data(), 1, 1, N, 8),
                                                 effattn::make_view(q.data(), 1, 1, N, 8),
                                                 effattn::make_view(q.data(), 1, 1, N, 8),
                                                 effattn::make_view(o.data(), 1, 1, N, 8), dec),
               effattn::parameter_error);
}

}  // namespace
