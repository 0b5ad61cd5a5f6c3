// SPDX-License-Identifier: MIT
// Regressions found by fuzzing (issue 10): the cache checks everything
// before it changes state, empty shapes (H = 0, B = 0, N = 0) read nothing,
// one executor rule, sizes checked before anything is allocated.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <effattn/effattn.hpp>
#include <effattn/selective/selective.hpp>
#include <limits>
#include <string>
#include <vector>

#include "support/testing.hpp"

using namespace effattn;

namespace {

using testing_util::contains;
using testing_util::message_of;

constexpr index_t kHuge = index_t(1) << 62;


/// One sequence of T tokens for a cache with B, H, Hkv, D = Dv.
struct Tokens {
  index_t B, H, Hkv, T, D;
  std::vector<float> q, k, v;
  Tokens(index_t B_, index_t H_, index_t Hkv_, index_t T_, index_t D_, unsigned seed)
      : B(B_), H(H_), Hkv(Hkv_), T(T_), D(D_) {
    q = testing_util::random_vector(static_cast<size_t>(B * H * T * D), seed);
    k = testing_util::random_vector(static_cast<size_t>(B * Hkv * T * D), seed + 1);
    v = testing_util::random_vector(static_cast<size_t>(B * Hkv * T * D), seed + 2);
  }
  ConstView<float, 4> q_at(index_t t) const { return ConstView<float, 4>(q.data() + t * D, {B, H, 1, D}, {H * T * D, T * D, D, 1}); }
  ConstView<float, 4> k_at(index_t t) const { return ConstView<float, 4>(k.data() + t * D, {B, Hkv, 1, D}, {Hkv * T * D, T * D, D, 1}); }
  ConstView<float, 4> v_at(index_t t) const { return ConstView<float, 4>(v.data() + t * D, {B, Hkv, 1, D}, {Hkv * T * D, T * D, D, 1}); }
  ConstView<float, 4> qs(index_t n) const { return ConstView<float, 4>(q.data(), {B, H, n, D}, {H * T * D, T * D, D, 1}); }
  ConstView<float, 4> ks(index_t n) const { return ConstView<float, 4>(k.data(), {B, Hkv, n, D}, {Hkv * T * D, T * D, D, 1}); }
  ConstView<float, 4> vs(index_t n) const { return ConstView<float, 4>(v.data(), {B, Hkv, n, D}, {Hkv * T * D, T * D, D, 1}); }
};

/// Everything a caller can observe of a cache.
struct Snapshot {
  index_t size, seen;
  size_t kv_bytes, total_bytes;
  std::vector<std::vector<index_t>> positions, evicted;
  std::vector<double> f;
  bool operator==(const Snapshot& o) const {
    return size == o.size && seen == o.seen && kv_bytes == o.kv_bytes && total_bytes == o.total_bytes &&
           positions == o.positions && evicted == o.evicted && f == o.f;
  }
};
Snapshot snapshot(const selective::SelectiveKVCache<float>& c) {
  Snapshot s{c.size(), c.tokens_seen(), c.kv_bytes(), c.total_bytes(), {}, {}, {}};
  for (index_t b = 0; b < c.batch(); ++b) {
    s.positions.push_back(c.positions(b));
    s.evicted.push_back(c.last_evicted(b));
    for (index_t slot = 0; slot < c.size(); ++slot)
      for (index_t g = 0; g < c.groups(); ++g) s.f.push_back(c.f(b, slot, g));
  }
  return s;
}

// Executor(-1) used to throw from inside step() after the token was stored
// (and, with a full cache, one evicted). Now it is rejected before any change:
// while the cache grows, when it is full (eviction), and in prefill; the next
// good steps give bit for bit what a cache that never saw the bad call gives.
TEST(SelectiveFuzzRegressions, StepWithNegativeExecutorLeavesCacheUnchanged) {
  selective::SelectiveOptions opt;
  opt.group_selection_heads = {0, 3};
  for (index_t D : {4, 64}) {  // a small step and a bigger one
    const index_t B = 2, H = 4, Hkv = 2, T = 12, budget = 5;
    const Tokens tk(B, H, Hkv, T, D, 7 + static_cast<unsigned>(D));
    selective::SelectiveKVCache<float> cache(B, H, Hkv, D, D, budget, opt), twin(B, H, Hkv, D, D, budget, opt);
    std::vector<float> out(static_cast<size_t>(B * H * D)), out_twin(out.size()), lse(static_cast<size_t>(B * H), 3.0f);
    auto ov = make_view(out.data(), B, H, 1, D);
    for (index_t t = 0; t < T; ++t) {
      const Snapshot before = snapshot(cache);
      std::fill(out.begin(), out.end(), 42.0f);
      const auto msg = message_of([&] {
        cache.step(tk.q_at(t), tk.k_at(t), tk.v_at(t), ov, Executor(-1), make_view(lse.data(), B, H, 1));
      });
      EXPECT_TRUE(contains(msg, "SelectiveKVCache::step: executor num_threads")) << msg;
      EXPECT_TRUE(snapshot(cache) == before) << "step " << t;
      for (float x : out) ASSERT_EQ(x, 42.0f);
      for (float x : lse) ASSERT_EQ(x, 3.0f);
      // Other bad arguments, with a bad executor or not: the same.
      EXPECT_THROW(cache.step(tk.q_at(t), tk.k_at(t), tk.v_at(t), make_view(out.data(), B, H, 1, D - 1)), shape_error);
      EXPECT_THROW(cache.step(tk.q_at(t), tk.k_at(t), tk.v_at(t), ov, {}, make_view(lse.data(), B, H - 1, 1)),
                   shape_error);
      EXPECT_TRUE(snapshot(cache) == before) << "step " << t;
      cache.step(tk.q_at(t), tk.k_at(t), tk.v_at(t), ov, Executor(2));
      twin.step(tk.q_at(t), tk.k_at(t), tk.v_at(t), make_view(out_twin.data(), B, H, 1, D), Executor(1));
      ASSERT_EQ(0, std::memcmp(out.data(), out_twin.data(), out.size() * sizeof(float))) << "step " << t;
      ASSERT_TRUE(snapshot(cache) == snapshot(twin)) << "step " << t;
    }
    EXPECT_EQ(cache.size(), budget);
  }
}

TEST(SelectiveFuzzRegressions, PrefillWithBadArgumentsLeavesCacheAndOutputsUnchanged) {
  const index_t B = 1, H = 2, Hkv = 1, T = 9, D = 8;
  const Tokens tk(B, H, Hkv, T, D, 3);
  selective::SelectiveOptions bad_tile;
  bad_tile.attention.block_q = -3;  // a negative tile: rejected by prefill
  selective::SelectiveKVCache<float> cache(B, H, Hkv, D, D, 4), tiled(B, H, Hkv, D, D, 4, bad_tile);
  std::vector<float> out(static_cast<size_t>(B * H * T * D), 42.0f);
  const auto ov = make_view(out.data(), B, H, T, D);
  auto msg = message_of([&] { cache.prefill(tk.qs(T), tk.ks(T), tk.vs(T), ov, Executor(-1)); });
  EXPECT_TRUE(contains(msg, "SelectiveKVCache::prefill: executor num_threads")) << msg;
  msg = message_of([&] { tiled.prefill(tk.qs(T), tk.ks(T), tk.vs(T), ov); });
  EXPECT_TRUE(contains(msg, "SelectiveKVCache::prefill: block_q")) << msg;
  for (float x : out) ASSERT_EQ(x, 42.0f);
  EXPECT_EQ(cache.size(), 0);
  EXPECT_EQ(cache.tokens_seen(), 0);
  EXPECT_EQ(cache.kv_bytes(), 0u);
  EXPECT_EQ(tiled.kv_bytes(), 0u);
  // Still usable: a good prefill then works.
  cache.prefill(tk.qs(T), tk.ks(T), tk.vs(T), ov);
  EXPECT_EQ(cache.size(), 4);
}

// selective_attention and its reference with Executor(-1) reject it first by
// name, on a small and on a big input, before writing anything.
TEST(SelectiveFuzzRegressions, SelectiveAttentionRejectsNegativeExecutorFirst) {
  for (index_t N : {5, 700}) {
    const index_t B = 1, H = 2, D = 16;
    const Tokens tk(B, H, H, N, D, 11);
    std::vector<float> out(static_cast<size_t>(B * H * N * D), 42.0f);
    std::vector<double> fn(static_cast<size_t>(B * N), 5.0);
    auto msg = message_of([&] {
      selective::selective_attention<float>(tk.qs(N), tk.ks(N), tk.vs(N), make_view(out.data(), B, H, N, D), {}, Executor(-1), {},
                                 make_view(fn.data(), B, 1, N));
    });
    EXPECT_TRUE(contains(msg, "selective_attention: executor num_threads")) << msg;
    // First, even with another bad argument (a wrong out shape).
    msg = message_of([&] {
      selective::selective_attention<float>(tk.qs(N), tk.ks(N), tk.vs(N), make_view(out.data(), B, H, N - 1, D), {}, Executor(-1));
    });
    EXPECT_TRUE(contains(msg, "executor num_threads")) << msg;
    for (float x : out) ASSERT_EQ(x, 42.0f);
    for (double x : fn) ASSERT_EQ(x, 5.0);
  }
}

// H = 0: there is no selection head. The reference used to read head 0 of q
// and k anyway (a null pointer here), the memory profile divided by H / Hkv = 0.
TEST(SelectiveFuzzRegressions, ReferenceWithNoHeadsReadsNothing) {
  std::vector<float> none;
  const index_t B = 2, N = 3;
  const ConstView<float, 4> q(none.data(), {B, 0, N, 4}), k(none.data(), {B, 0, N, 4}), v(none.data(), {B, 0, N, 2});
  const View<float, 4> out(none.data(), {B, 0, N, 2});
  std::vector<double> S(static_cast<size_t>(B * N * N), 7.0), F(S.size(), 7.0);
  EXPECT_NO_THROW(selective::selective_attention_reference<float>(q, k, v, out, {}, {}, make_view(S.data(), B, 1, N, N),
                                                       make_view(F.data(), B, 1, N, N)));
  for (double x : S) EXPECT_EQ(x, 0.0);
  for (double x : F) EXPECT_EQ(x, 0.0);
  std::vector<double> fn(static_cast<size_t>(B * N), 7.0);
  EXPECT_NO_THROW(selective::selective_attention<float>(q, k, v, out, {}, {}, {}, make_view(fn.data(), B, 1, N)));
  for (double x : fn) EXPECT_EQ(x, 0.0);
  // A huge N with no head and no S/F: nothing is allocated.
  const index_t big = index_t(1) << 40;  // N * N overflows, N * D does not
  const ConstView<float, 4> qn(none.data(), {1, 0, big, 4}), kn(none.data(), {1, 0, big, 4}),
      vn(none.data(), {1, 0, big, 2});
  EXPECT_NO_THROW(selective::selective_attention_reference<float>(qn, kn, vn, View<float, 4>(none.data(), {1, 0, big, 2})));
  EXPECT_NO_THROW(selective::selective_attention<float>(qn, kn, vn, View<float, 4>(none.data(), {1, 0, big, 2})));
}

TEST(SelectiveFuzzRegressions, MemoryProfileWithNoHeadsReadsNothing) {
  std::vector<float> none;
  const index_t B = 2, N = 4;
  std::vector<double> m(static_cast<size_t>(B * N), -1.0);
  const std::vector<float> k1(static_cast<size_t>(B * N * 4), 1.0f);
  for (index_t hkv : {0, 1}) {
    std::fill(m.begin(), m.end(), -1.0);
    EXPECT_NO_THROW(selective::selective_memory_profile<float>(ConstView<float, 4>(none.data(), {B, 0, N, 4}),
                                                    ConstView<float, 4>(hkv ? k1.data() : none.data(), {B, hkv, N, 4}),
                                                    make_view(m.data(), B, N)));
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 0; i < N; ++i) EXPECT_EQ(m[static_cast<size_t>(b * N + i)], i + 1.0);
  }
  // No sequence, a huge N: nothing allocated (before: a G * N buffer).
  const index_t big = index_t(1) << 40;
  EXPECT_NO_THROW(selective::selective_memory_profile<float>(ConstView<float, 4>(none.data(), {0, 1, big, 4}),
                                                  ConstView<float, 4>(none.data(), {0, 1, big, 4}),
                                                  View<double, 2>(nullptr, {0, big})));
  // k without heads while q has some is still an error.
  std::vector<float> q(static_cast<size_t>(B * N * 4), 1.0f);
  EXPECT_THROW(selective::selective_memory_profile<float>(make_view<const float>(q.data(), B, 1, N, 4),
                                               ConstView<float, 4>(none.data(), {B, 0, N, 4}), make_view(m.data(), B, N)),
               shape_error);
}

// Empty shapes with the null data pointer of an empty std::vector, at every
// selective entry point.
TEST(SelectiveFuzzRegressions, EmptyShapesWithNullPointers) {
  std::vector<float> none;
  std::vector<double> dnone;
  const float* n = none.data();
  for (const auto& sh : std::vector<std::array<index_t, 3>>{{0, 2, 3}, {2, 2, 0}, {0, 0, 0}, {2, 0, 3}}) {
    const index_t B = sh[0], H = sh[1], N = sh[2], Hkv = H > 0 ? 1 : 0;
    SCOPED_TRACE(testing::Message() << "B " << B << " H " << H << " N " << N);
    const ConstView<float, 4> q(n, {B, H, N, 4}), k(n, {B, Hkv, N, 4}), v(n, {B, Hkv, N, 2});
    const View<float, 4> out(none.data(), {B, H, N, 2});
    const View<float, 3> lse(none.data(), {B, H, N});
    EXPECT_NO_THROW(selective::selective_attention<float>(q, k, v, out, {}, Executor(2), lse, View<double, 3>(dnone.data(), {B, 1, N})));
    EXPECT_NO_THROW(selective::selective_attention_reference<float>(q, k, v, out, {}, lse, View<double, 4>(dnone.data(), {B, 1, N, N}),
                                                         View<double, 4>(dnone.data(), {B, 1, N, N})));
    if (B == 0 || N == 0) {
      EXPECT_NO_THROW(selective::selective_memory_profile<float>(q, ConstView<float, 4>(n, {B, 1, N, 4}),
                                                      View<double, 2>(dnone.data(), {B, N})));
    }
  }
  // An empty prompt on a cache.
  selective::SelectiveKVCache<float> cache(1, 2, 1, 4, 2, 3);
  EXPECT_NO_THROW(cache.prefill(ConstView<float, 4>(n, {1, 2, 0, 4}), ConstView<float, 4>(n, {1, 1, 0, 4}),
                                ConstView<float, 4>(n, {1, 1, 0, 2}), View<float, 4>(none.data(), {1, 2, 0, 2})));
  EXPECT_EQ(cache.tokens_seen(), 0);
  EXPECT_EQ(cache.kv_bytes(), 0u);
  EXPECT_TRUE(cache.positions(0).empty());
}

// Sizes that overflow the index type are shape errors at construction, not
// std::length_error / bad_alloc (or a wrapped size) later.
TEST(SelectiveFuzzRegressions, CacheHugeSizesThrowShapeError) {
  EXPECT_THROW(selective::SelectiveKVCache<float>(kHuge, 1, 1, 4, 4, 2), shape_error);
  EXPECT_THROW(selective::SelectiveKVCache<float>(1, 1, 1, kHuge, 4, 2), shape_error);
  EXPECT_THROW(selective::SelectiveKVCache<float>(1, 1, 1, 4, kHuge, 2), shape_error);
  EXPECT_THROW(selective::SelectiveKVCache<float>(index_t(1) << 31, 2, 2, index_t(1) << 31, 4, 2), shape_error);
  // A huge budget alone is fine ("never prune"): storage grows with the tokens.
  selective::SelectiveKVCache<float> unlimited(1, 2, 1, 4, 4, std::numeric_limits<index_t>::max());
  const Tokens tk(1, 2, 1, 3, 4, 5);
  std::vector<float> out(8);
  for (index_t t = 0; t < 3; ++t) unlimited.step(tk.q_at(t), tk.k_at(t), tk.v_at(t), make_view(out.data(), 1, 2, 1, 4));
  EXPECT_EQ(unlimited.size(), 3);
  EXPECT_LE(unlimited.kv_bytes(), 2u * 4 * 4 * sizeof(float) * 2);
}

}  // namespace

namespace {

// A NaN selection logit (0 * inf) masks nothing: ReLU(NaN) = 0 in the
// reference and in the cache, and now in the tiled prefill too (it used to
// carry NaN into F, and from there into every head of the group).
TEST(SelectiveFuzzRegressions, NaNSelectionLogitMasksNothingInPrefill) {
  const index_t B = 1, H = 2, Hkv = 2, N = 5, D = 2;
  std::vector<float> q = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 21);
  std::vector<float> k = testing_util::random_vector(static_cast<size_t>(B * Hkv * N * D), 22);
  std::vector<float> v = testing_util::random_vector(static_cast<size_t>(B * Hkv * N * D), 23);
  for (index_t i = 0; i < N; ++i) q[static_cast<size_t>(i * D)] = 0.0f;       // head 0, component 0
  k[static_cast<size_t>(1 * D)] = std::numeric_limits<float>::infinity();     // head 0, key 1: 0 * inf = NaN
  const auto Q = make_view<const float>(q.data(), B, H, N, D), K = make_view<const float>(k.data(), B, Hkv, N, D),
             V = make_view<const float>(v.data(), B, Hkv, N, D);
  std::vector<float> out(q.size()), ref(q.size());
  std::vector<double> fn(static_cast<size_t>(N)), S(static_cast<size_t>(N * N)), F(S.size());
  selective::selective_attention<float>(Q, K, V, make_view(out.data(), B, H, N, D), {}, Executor(1), {}, make_view(fn.data(), B, 1, N));
  selective::selective_attention_reference<float>(Q, K, V, make_view(ref.data(), B, H, N, D), {}, {}, make_view(S.data(), B, 1, N, N),
                                       make_view(F.data(), B, 1, N, N));
  for (index_t j = 0; j < N; ++j) {
    EXPECT_FALSE(std::isnan(fn[static_cast<size_t>(j)])) << "f_next[" << j << "]";
    EXPECT_NEAR(fn[static_cast<size_t>(j)], F[static_cast<size_t>((N - 1) * N + j)] + S[static_cast<size_t>((N - 1) * N + j)],
                1e-5);
  }
  // Head 1 (finite inputs) subtracts F, which must stay finite.
  for (index_t i = 0; i < N; ++i)
    for (index_t e = 0; e < D; ++e) {
      const size_t o = static_cast<size_t>(((1 * N) + i) * D + e);
      EXPECT_TRUE(std::isfinite(out[o])) << "head 1, query " << i;
      EXPECT_NEAR(out[o], ref[o], 1e-4) << "head 1, query " << i;
    }
  // The cache, step by step, agrees.
  selective::SelectiveKVCache<float> cache(B, H, Hkv, D, D, N);
  std::vector<float> so(static_cast<size_t>(H * D));
  for (index_t t = 0; t < N; ++t) {
    auto at = [&](const std::vector<float>& x, index_t h) {
      return ConstView<float, 4>(x.data() + t * D, {B, h, 1, D}, {h * N * D, N * D, D, 1});
    };
    cache.step(at(q, H), at(k, Hkv), at(v, Hkv), make_view(so.data(), B, H, 1, D));
    for (index_t e = 0; e < D; ++e) EXPECT_NEAR(so[static_cast<size_t>(D + e)], ref[static_cast<size_t>((N + t) * D + e)], 1e-4);
  }
}

}  // namespace
