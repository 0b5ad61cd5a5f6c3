// SPDX-License-Identifier: MIT
// Regression tests for the engine and core defects a libFuzzer probe of the
// public API found (issue 10). Each test is named after its defect; the fuzz
// target tests/fuzz/fuzz_engine.cpp keeps probing the same contracts.
#include <gtest/gtest.h>

#include <effattn/effattn.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "support/testing.hpp"

using namespace effattn;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

template <class T>
std::vector<T> ramp(size_t n, double step, double start = -0.5) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<T>(start + step * static_cast<double>(i % 97));
  return v;
}

// --- 1. Decode segfault under clang on AVX-512 -------------------------------
// The kernels kept `vec acc[8]` on the stack while the vector type was
// declared with element alignment; clang then loaded it with an aligned
// 64-byte instruction (a crash in about half the runs, under ASan in every
// run). The register types now have their natural alignment, and only the
// memory accesses use the element-aligned types. The CI leg that builds this
// suite with clang + ASan runs this decode call.
TEST(EngineFuzzRegressions, DecodeAccumulatorsAreVectorAligned) {
  // core/simd_level.hpp asserts the alignment inside every level it is
  // compiled for (where the kernels use the types: GCC states a vector type's
  // alignment under the target options in force, so outside a level's target
  // region a 64-byte type may report less).
  const index_t Nk = 64, D = 16;
  auto q = ramp<float>(D, 0.01), k = ramp<float>(Nk * D, 0.013), v = ramp<float>(Nk * D, 0.017);
  std::vector<float> out(D), ref(D);
  attention<float>(make_view<const float>(q.data(), 1, 1, 1, D), make_view<const float>(k.data(), 1, 1, Nk, D),
                   make_view<const float>(v.data(), 1, 1, Nk, D), make_view(out.data(), 1, 1, 1, D));
  attention_reference<float>(make_view<const float>(q.data(), 1, 1, 1, D), make_view<const float>(k.data(), 1, 1, Nk, D),
                             make_view<const float>(v.data(), 1, 1, Nk, D), make_view(ref.data(), 1, 1, 1, D));
  testing_util::expect_close(out, ref, 1e-5, 1e-5, "float decode");
  auto qd = ramp<double>(D, 0.01), kd = ramp<double>(Nk * D, 0.013), vd = ramp<double>(Nk * D, 0.017);
  std::vector<double> outd(D), refd(D);
  attention<double>(make_view<const double>(qd.data(), 1, 1, 1, D), make_view<const double>(kd.data(), 1, 1, Nk, D),
                    make_view<const double>(vd.data(), 1, 1, Nk, D), make_view(outd.data(), 1, 1, 1, D));
  attention_reference<double>(make_view<const double>(qd.data(), 1, 1, 1, D),
                              make_view<const double>(kd.data(), 1, 1, Nk, D),
                              make_view<const double>(vd.data(), 1, 1, Nk, D), make_view(refd.data(), 1, 1, 1, D));
  testing_util::expect_close(outd, refd, 1e-12, 1e-12, "double decode");
}

// --- 2. Masked keys leaked NaN ----------------------------------------------
// On the tiled path P = 0 for a masked key, but 0 * NaN = NaN in the PV
// product; and a NaN bias was added after the mask. Now the score goes
// first and the mask overwrites it, and a partial block with a non-finite
// value skips the P = 0 entries.

/// Runs the engine (1 and 2 threads) and the oracle and expects, for every
/// query whose oracle output is finite, a finite output within tolerance, and
/// out = 0, lse = -inf for queries without an allowed key. Returns the number
/// of queries compared (those the oracle leaves finite).
template <class T, class KV, class Mask, class Score>
index_t expect_matches_oracle(index_t B, index_t H, index_t Nq, index_t Nk, index_t D, const std::vector<T>& q,
                              const std::vector<KV>& k, const std::vector<KV>& v, const Mask& mask,
                              const Score& score, const char* what, index_t block_k = 0) {
  std::vector<T> out(B * H * Nq * D, T(7)), ref(B * H * Nq * D);
  std::vector<acc_t<T>> lse(B * H * Nq), lref(B * H * Nq);
  const auto Q = make_view<const T>(q.data(), B, H, Nq, D);
  const auto K = make_view<const KV>(k.data(), B, H, Nk, D);
  const auto V = make_view<const KV>(v.data(), B, H, Nk, D);
  AttentionOptions opt;
  opt.block_k = block_k;
  index_t compared = 0;
  for (int threads : {1, 2}) {
    attention<T>(Q, K, V, make_view(out.data(), B, H, Nq, D), mask, score, opt, Executor(threads),
                 make_view(lse.data(), B, H, Nq));
    attention_reference<T>(Q, K, V, make_view(ref.data(), B, H, Nq, D), mask, score, {},
                           make_view(lref.data(), B, H, Nq));
    compared = 0;
    for (index_t r = 0; r < B * H * Nq; ++r) {
      bool finite = true;
      for (index_t e = 0; e < D; ++e) finite = finite && std::isfinite(ref[r * D + e]);
      if (!finite) continue;  // the query sees a non-finite value: not defined
      ++compared;
      for (index_t e = 0; e < D; ++e) {
        const size_t i = static_cast<size_t>(r * D + e);
        EXPECT_TRUE(std::isfinite(out[i])) << what << ": non-finite output for query row " << r << " (" << threads
                                           << " threads): a masked value leaked";
        EXPECT_NEAR(out[i], ref[i], 1e-4) << what << " row " << r << " dim " << e;
      }
      if (std::isinf(lref[r]))
        EXPECT_EQ(lse[r], lref[r]) << what << ": lse of a query with no allowed key, row " << r;
      else
        EXPECT_NEAR(lse[r], lref[r], 1e-4) << what << " lse row " << r;
    }
  }
  return compared;
}

TEST(EngineFuzzRegressions, MaskedKeyNonFiniteValueNeverReachesQuery) {
  // The reproducer: OffsetCausalMask{-1}, so query 0 sees no key and
  // query i sees keys j < i; the value row of the last key is NaN and of key
  // 3 is inf, neither visible to the queries that must not see them.
  const index_t B = 1, H = 2, N = 9, D = 8;
  auto q = ramp<float>(B * H * N * D, 0.02), k = ramp<float>(B * H * N * D, 0.03);
  auto v = ramp<float>(B * H * N * D, 0.01);
  for (index_t h = 0; h < H; ++h)
    for (index_t e = 0; e < D; ++e) {
      v[((h * N) + N - 1) * D + e] = kNaN;  // key N-1: visible to nobody (j < i <= N-1)
      v[((h * N) + 3) * D + e] = e % 2 ? kInf : -kInf;
    }
  // Queries 0..3 cannot see key 3: they must stay finite; queries 4.. see an
  // infinite value and are not compared (the oracle is not finite there).
  std::vector<float> out(B * H * N * D), lse(B * H * N);
  attention<float>(make_view<const float>(q.data(), B, H, N, D), make_view<const float>(k.data(), B, H, N, D),
                   make_view<const float>(v.data(), B, H, N, D), make_view(out.data(), B, H, N, D),
                   OffsetCausalMask{-1}, NoScore{}, {}, Executor(1), make_view(lse.data(), B, H, N));
  for (index_t h = 0; h < H; ++h) {
    for (index_t e = 0; e < D; ++e) EXPECT_EQ(out[(h * N) * D + e], 0.f) << "query 0 has no key: out must be 0";
    EXPECT_EQ(lse[h * N], -kInf);
    for (index_t i = 1; i <= 3; ++i)
      for (index_t e = 0; e < D; ++e)
        EXPECT_TRUE(std::isfinite(out[(h * N + i) * D + e])) << "query " << i << " sees neither key 3 nor key 8";
  }
  // Only the NaN row (never visible): every query matches the oracle.
  auto v2 = ramp<float>(B * H * N * D, 0.01);
  for (index_t h = 0; h < H; ++h)
    for (index_t e = 0; e < D; ++e) v2[((h * N) + N - 1) * D + e] = kNaN;
  EXPECT_EQ((expect_matches_oracle<float, float>(B, H, N, N, D, q, k, v2, OffsetCausalMask{-1}, NoScore{}, "offset -1")),
            B * H * N);
}

TEST(EngineFuzzRegressions, NaNBiasOnMaskedKeyNeverReachesQuery) {
  // Causal: query i sees keys j <= i. Key 5 of batch 0 has a NaN bias and key
  // 7 of batch 1 a +inf one: the queries before them share their tiles and
  // must match the oracle (the others see the poisoned key: not compared).
  const index_t B = 2, H = 1, N = 11, D = 8;
  auto q = ramp<float>(B * H * N * D, 0.02), k = ramp<float>(B * H * N * D, 0.03), v = ramp<float>(B * H * N * D, 0.01);
  std::vector<float> bias(B * N, 0.25f);
  bias[5] = kNaN;
  bias[N + 7] = kInf;
  const KeyBiasScore score{make_view<const float>(bias.data(), B, N)};
  EXPECT_EQ((expect_matches_oracle<float, float>(B, H, N, N, D, q, k, v, CausalMask{}, score, "causal + NaN bias")),
            5 + 7);
  // The decode (row) path: 3 queries with per-query limits around the key.
  std::vector<index_t> lim3 = {4, 5, 6, 6, 7, 8};
  auto q3 = ramp<float>(B * H * 3 * D, 0.02);
  EXPECT_EQ((expect_matches_oracle<float, float>(B, H, 3, N, D, q3, k, v,
                                                 KeyLimitMask{make_view<const index_t>(lim3.data(), B, 3)}, score,
                                                 "decode + NaN bias")),
            2 + 2);  // limits 4, 5 hide key 5 of batch 0; limits 6, 7 hide key 7 of batch 1
}

TEST(EngineFuzzRegressions, GarbagePastCacheLengthNeverReachesQuery) {
  // A K/V cache whose slots past the valid length hold garbage (NaN, inf).
  // With a predicate mask every block is partial and visited, so the garbage
  // rows sit inside the tiles of queries that must not see them; with
  // per-query limits the last queries see the garbage and the others share
  // their tiles. Tiled path (key tiles that cut the garbage rows), decode
  // path, 16-bit storage and double.
  const index_t B = 1, H = 2, Nq = 37, Nk = 50, D = 16, valid = 29;
  auto q = ramp<float>(B * H * Nq * D, 0.01), k = ramp<float>(B * H * Nk * D, 0.02), v = ramp<float>(B * H * Nk * D, 0.03);
  for (index_t h = 0; h < H; ++h)
    for (index_t j = valid; j < Nk; ++j)
      for (index_t e = 0; e < D; ++e) {
        k[(h * Nk + j) * D + e] = (j + e) % 3 ? kNaN : kInf;
        v[(h * Nk + j) * D + e] = (j + e) % 2 ? kNaN : -kInf;
      }
  const auto pred = make_predicate_mask([&](index_t, index_t, index_t i, index_t j) { return j < valid && j <= i + 3; });
  std::vector<index_t> limit(B * Nq);
  for (index_t i = 0; i < Nq; ++i) limit[i] = i < 30 ? std::min<index_t>(valid, 3 + i) : Nk;  // the last 7 see garbage
  const KeyLimitMask lim{make_view<const index_t>(limit.data(), B, Nq)};
  for (index_t bk : {0, 7, 16}) {
    EXPECT_EQ((expect_matches_oracle<float, float>(B, H, Nq, Nk, D, q, k, v, pred, NoScore{}, "predicate", bk)), H * Nq);
    EXPECT_EQ((expect_matches_oracle<float, float>(B, H, Nq, Nk, D, q, k, v, lim, NoScore{}, "limits", bk)), H * 30);
  }
  std::vector<float16> kh(k.size()), vh(v.size());
  for (size_t i = 0; i < k.size(); ++i) {
    kh[i] = float16(k[i]);
    vh[i] = float16(v[i]);
  }
  EXPECT_EQ((expect_matches_oracle<float, float16>(B, H, Nq, Nk, D, q, kh, vh, lim, NoScore{}, "float16 K/V")), H * 30);
  std::vector<double> qd(q.begin(), q.end()), kd(k.begin(), k.end()), vd(v.begin(), v.end());
  EXPECT_EQ((expect_matches_oracle<double, double>(B, H, Nq, Nk, D, qd, kd, vd, pred, NoScore{}, "double")), H * Nq);
  // Decode: 2 queries, one limited to the valid prefix, one seeing it all.
  std::vector<index_t> lim2 = {valid, Nk};
  auto q2 = ramp<float>(B * H * 2 * D, 0.01);
  EXPECT_EQ((expect_matches_oracle<float, float>(B, H, 2, Nk, D, q2, k, v,
                                                 KeyLimitMask{make_view<const index_t>(lim2.data(), B, 2)}, NoScore{},
                                                 "decode")),
            H);
}

TEST(EngineFuzzRegressions, MaterializedBaselineKeepsTheSameContract) {
  const index_t B = 1, H = 1, N = 9, D = 4;
  auto q = ramp<float>(N * D, 0.02), k = ramp<float>(N * D, 0.03), v = ramp<float>(N * D, 0.01);
  for (index_t e = 0; e < D; ++e) v[(N - 1) * D + e] = kNaN;
  std::vector<float> bias(N, 0.f);
  bias[N - 1] = kNaN;
  std::vector<float> out(N * D), ref(N * D), lse(N);
  const auto Q = make_view<const float>(q.data(), B, H, N, D), K = make_view<const float>(k.data(), B, H, N, D),
             V = make_view<const float>(v.data(), B, H, N, D);
  const KeyBiasScore score{make_view<const float>(bias.data(), B, N)};
  attention_materialized<float>(Q, K, V, make_view(out.data(), B, H, N, D), OffsetCausalMask{-1}, score, {}, Executor(1),
                                make_view(lse.data(), B, H, N));
  attention_reference<float>(Q, K, V, make_view(ref.data(), B, H, N, D), OffsetCausalMask{-1}, score);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-5) << i;
  EXPECT_EQ(lse[0], -kInf);
  EXPECT_THROW(attention_materialized<float>(Q, K, V, make_view(out.data(), B, H, N, D), NoMask{}, NoScore{}, {},
                                             Executor(-1)),
               parameter_error);
  // Found by fuzz_engine: in double, Eigen's vectorised exp gives exp(-inf) a
  // tiny positive value, so an infinite value of a masked key reached the
  // queries (bottom-right causal with Nq > Nk: queries 0..3 see no key).
  const index_t Nq = 17, Nk = 13;
  auto qd = ramp<double>(Nq * D, 0.02), kd = ramp<double>(Nk * D, 0.03), vd = ramp<double>(Nk * D, 0.01);
  for (index_t e = 0; e < D; ++e) vd[10 * D + e] = e % 2 ? kInf : -kInf;  // key 10: seen by queries >= 14 only
  std::vector<double> od(Nq * D), rd(Nq * D);
  const auto Qd = make_view<const double>(qd.data(), B, H, Nq, D), Kd = make_view<const double>(kd.data(), B, H, Nk, D),
             Vd = make_view<const double>(vd.data(), B, H, Nk, D);
  attention_materialized<double>(Qd, Kd, Vd, make_view(od.data(), B, H, Nq, D), CausalMask{});
  attention_reference<double>(Qd, Kd, Vd, make_view(rd.data(), B, H, Nq, D), CausalMask{});
  for (index_t i = 0; i < 14; ++i)
    for (index_t e = 0; e < D; ++e) ASSERT_NEAR(od[i * D + e], rd[i * D + e], 1e-12) << "query " << i;
}

TEST(EngineFuzzRegressions, QueryWhoseOnlyLogitIsMinusInfGetsZero) {
  // Found by fuzz_perceiver_ar: query 0's only allowed key has logit -inf
  // (k = -inf) and value -inf; with one-key tiles the accumulator held
  // 0 * inf = NaN and the engine wrote NaN * 0. Out is 0 (no key
  // contributed), as the oracle says, on every tile size.
  std::vector<float> q(8, 0.825f), k(8, 0.5f), v(8, 1.0f), out(8), ref(8), lse(8);
  k[0] = -kInf;
  v[0] = -kInf;
  const auto Q = make_view<const float>(q.data(), 1, 1, 8, 1), K = make_view<const float>(k.data(), 1, 1, 8, 1),
             V = make_view<const float>(v.data(), 1, 1, 8, 1);
  attention_reference<float>(Q, K, V, make_view(ref.data(), 1, 1, 8, 1), CausalMask{});
  ASSERT_EQ(ref[0], 0.f);
  for (index_t bk : {1, 2, 0}) {
    AttentionOptions o;
    o.block_k = bk;
    attention<float>(Q, K, V, make_view(out.data(), 1, 1, 8, 1), CausalMask{}, NoScore{}, o, Executor(1),
                     make_view(lse.data(), 1, 1, 8));
    EXPECT_EQ(out[0], 0.f) << "block_k " << bk;
    EXPECT_EQ(lse[0], -kInf) << "block_k " << bk;
  }
}

// --- 3. Integer overflows in shape arithmetic --------------------------------

TEST(EngineFuzzRegressions, OffsetCausalMaskHugeOffsetSeesEveryKey) {
  const index_t N = 7, D = 4;
  auto q = ramp<float>(N * D, 0.02), k = ramp<float>(N * D, 0.03), v = ramp<float>(N * D, 0.01);
  std::vector<float> out(N * D), full(N * D), none(N * D);
  const auto Q = make_view<const float>(q.data(), 1, 1, N, D), K = make_view<const float>(k.data(), 1, 1, N, D),
             V = make_view<const float>(v.data(), 1, 1, N, D);
  attention<float>(Q, K, V, make_view(full.data(), 1, 1, N, D));
  for (index_t off : {std::numeric_limits<index_t>::max(), std::numeric_limits<index_t>::max() - 1, index_t(N)}) {
    attention<float>(Q, K, V, make_view(out.data(), 1, 1, N, D), OffsetCausalMask{off});
    EXPECT_EQ(out, full) << "offset " << off;
    const auto bm = OffsetCausalMask{off}.bind(0, 0, N, N);
    EXPECT_TRUE(bm.allowed(N - 1, N - 1) && bm.allowed(0, N - 1));
  }
  for (index_t off : {std::numeric_limits<index_t>::min(), -index_t(N) - 1}) {
    std::vector<float> lse(N);
    attention<float>(Q, K, V, make_view(out.data(), 1, 1, N, D), OffsetCausalMask{off}, NoScore{}, {}, {},
                     make_view(lse.data(), 1, 1, N));
    for (float x : out) EXPECT_EQ(x, 0.f);
    for (float x : lse) EXPECT_EQ(x, -kInf);
  }
}

TEST(EngineFuzzRegressions, HugeStrideDoesNotOverflowTheOverlapCheck) {
  const index_t D = 8;
  std::vector<float> q(D, 0.1f), k(D, 0.2f), v(D, 0.3f), out(2 * D, 5.f);
  const index_t huge = index_t(1) << 62;
  // Size-1 dimensions may carry any stride: accepted, and the result is right.
  View<float, 4> o1(out.data(), {1, 1, 1, D}, {huge, huge, huge, 1});
  attention<float>(make_view<const float>(q.data(), 1, 1, 1, D), make_view<const float>(k.data(), 1, 1, 1, D),
                   make_view<const float>(v.data(), 1, 1, 1, D), o1);
  for (index_t e = 0; e < D; ++e) EXPECT_FLOAT_EQ(out[e], 0.3f);
  // Extent 2 with stride 2^62 floats runs past the end of memory: rejected
  // with a shape_error (it used to overflow stride x extent in the check).
  const std::vector<float> before = out;
  View<float, 4> o2(out.data(), {1, 1, 2, D}, {2 * D, 2 * D, huge, 1});
  std::vector<float> q2(2 * D, 0.1f);
  try {
    attention<float>(make_view<const float>(q2.data(), 1, 1, 2, D), make_view<const float>(k.data(), 1, 1, 1, D),
                     make_view<const float>(v.data(), 1, 1, 1, D), o2);
    ADD_FAILURE() << "no exception";
  } catch (const shape_error& e) {
    EXPECT_NE(std::string(e.what()).find("attention: out"), std::string::npos) << e.what();
  }
  EXPECT_EQ(out, before);
  // The largest offset the index type holds (INT64_MAX) in an input view.
  View<const float, 4> k2(k.data(), {1, 1, 2, D}, {0, 0, std::numeric_limits<index_t>::max() - D + 1, 1});
  EXPECT_THROW(attention<float>(make_view<const float>(q.data(), 1, 1, 1, D), k2,
                                make_view<const float>(v.data(), 1, 1, 2, D), make_view(out.data(), 1, 1, 1, D)),
               shape_error);
  EXPECT_EQ(out, before);
}

TEST(EngineFuzzRegressions, CheckedShapeArithmeticThrowsShapeError) {
  const index_t mx = std::numeric_limits<index_t>::max();
  EXPECT_EQ(detail::checked_mul<index_t>(3, 5, "op", "x"), 15);
  EXPECT_THROW(detail::checked_mul<index_t>(mx / 2 + 1, 2, "op", "x"), shape_error);
  EXPECT_THROW(detail::checked_add<index_t>(mx, 1, "op", "x"), shape_error);
  EXPECT_THROW(detail::checked_product<index_t>("op", "w * h", (index_t(1) << 62) + 1, 4), shape_error);
  try {
    detail::checked_product<index_t>("tome::thing", "w * h", index_t(1) << 40, index_t(1) << 40);
    ADD_FAILURE() << "no exception";
  } catch (const shape_error& e) {
    EXPECT_NE(std::string(e.what()).find("tome::thing: w * h"), std::string::npos) << e.what();
  }
  // A shape whose element count overflows is rejected by every entry point.
  std::vector<float> buf(16, 1.f);
  View<const float, 4> q(buf.data(), {index_t(1) << 32, index_t(1) << 32, 1, 4}, {0, 0, 0, 1});
  EXPECT_THROW(attention<float>(q, q, q, make_view(buf.data(), 1, 1, 1, 4)), shape_error);
  // empty() never overflows, whatever the extents.
  View<const float, 3> e(nullptr, {mx, 0, mx});
  EXPECT_TRUE(e.empty());
  EXPECT_EQ(e.size(), 0);
}

// --- 5. Empty views with null pointers ---------------------------------------

TEST(EngineFuzzRegressions, EmptyViewsWithNullPointersAreNeverOffset) {
  // Nk = 0 with the null data() of empty vectors: every query has no key.
  const index_t B = 2, H = 3, Nq = 6, D = 5;
  std::vector<float> q(B * H * Nq * D, 0.5f), none, out(B * H * Nq * D, 9.f), lse(B * H * Nq, 9.f);
  const auto K = make_view<const float>(none.data(), B, H, 0, D);
  for (index_t nq : {Nq, index_t(2)}) {  // tiled and decode paths
    attention<float>(make_view<const float>(q.data(), B, H, nq, D), K, K, make_view(out.data(), B, H, nq, D),
                     CausalMask{}, KeyBiasScore{make_view<const float>(none.data(), B, 0)}, {}, Executor(2),
                     make_view(lse.data(), B, H, nq));
    for (index_t i = 0; i < B * H * nq * D; ++i) EXPECT_EQ(out[i], 0.f);
    for (index_t i = 0; i < B * H * nq; ++i) EXPECT_EQ(lse[i], -kInf);
  }
  std::vector<float16> none16;
  attention<float>(make_view<const float>(q.data(), B, H, Nq, D), make_view<const float16>(none16.data(), B, H, 0, D),
                   make_view<const float16>(none16.data(), B, H, 0, D), make_view(out.data(), B, H, Nq, D));
  // B = 0 or Nq = 0: everything may be null, nothing is written.
  attention<float>(make_view<const float>(none.data(), 0, H, Nq, D), make_view<const float>(none.data(), 0, H, 4, D),
                   make_view<const float>(none.data(), 0, H, 4, D), make_view(none.data(), 0, H, Nq, D));
  std::vector<index_t> nolimit;
  attention<float>(make_view<const float>(none.data(), B, H, 0, D), make_view<const float>(q.data(), B, H, 1, D),
                   make_view<const float>(q.data(), B, H, 1, D), make_view(none.data(), B, H, 0, D),
                   KeyLimitMask{make_view<const index_t>(nolimit.data(), B, 0)});
  attention_reference<float>(make_view<const float>(none.data(), B, H, 0, D), make_view<const float>(q.data(), B, H, 1, D),
                             make_view<const float>(q.data(), B, H, 1, D), make_view(none.data(), B, H, 0, D),
                             KeyLimitMask{make_view<const index_t>(nolimit.data(), B, 0)});
  attention_materialized<float>(make_view<const float>(q.data(), B, H, Nq, D), K, K, make_view(out.data(), B, H, Nq, D));
  for (index_t i = 0; i < B * H * Nq * D; ++i) EXPECT_EQ(out[i], 0.f);
}

// --- 6. One thread-count rule --------------------------------------------------

TEST(EngineFuzzRegressions, NegativeThreadCountRejectedWhateverTheSize) {
  for (index_t N : {index_t(1), index_t(3), index_t(300)}) {
    const index_t D = 8;
    std::vector<float> q(N * D, 0.1f), out(N * D, 4.f);
    const auto Q = make_view<const float>(q.data(), 1, 1, N, D);
    EXPECT_THROW(attention<float>(Q, Q, Q, make_view(out.data(), 1, 1, N, D), NoMask{}, NoScore{}, {}, Executor(-1)),
                 parameter_error);
    for (float x : out) EXPECT_EQ(x, 4.f);
  }
  // executor_for never hides an invalid executor behind a serial one.
  EXPECT_EQ(effattn::detail::executor_for(Executor(-1), 1.0).num_threads, -1);
  EXPECT_EQ(effattn::detail::executor_for(Executor(2), 1.0).num_threads, 1);
  EXPECT_THROW(detail::check_executor(Executor(-3), "some_op"), parameter_error);
}

}  // namespace
