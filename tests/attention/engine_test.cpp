// SPDX-License-Identifier: MIT
// The tiled engine against the float64 oracle, for every mask and score
// policy, on a grid of odd shapes (tiles that do not divide N, GQA, Dv != D,
// strided and permuted views), plus thread bit-identity and the decode path.
// The grid and the bit-identity tests run at every instruction-set level the
// host supports (testing_util::isa_levels(), through effattn::set_isa), with
// the same tolerances; bits are compared across threads within a level.
#include <atomic>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <effattn/effattn.hpp>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "support/levels.hpp"
#include "support/testing.hpp"
#include "support/threads.hpp"

using namespace effattn;

namespace {

enum class MaskKind { none, causal, offset, limit, predicate };
enum class ScoreKind { none, bias, functor };
const char* mask_name(MaskKind m) {
  switch (m) {
    case MaskKind::none: return "none";
    case MaskKind::causal: return "causal";
    case MaskKind::offset: return "offset";
    case MaskKind::limit: return "limit";
    default: return "predicate";
  }
}
const char* score_name(ScoreKind s) {
  switch (s) {
    case ScoreKind::none: return "none";
    case ScoreKind::bias: return "bias";
    default: return "functor";
  }
}

struct Shape {
  index_t B, H, Hkv, Nq, Nk, D, Dv;
  MaskKind mask;
  ScoreKind score;
  bool permuted;  // q/k/v stored as [B, N, H, D] and viewed as [B, H, N, D]
};

std::ostream& operator<<(std::ostream& os, const Shape& s) {
  return os << "B" << s.B << "_H" << s.H << "_Hkv" << s.Hkv << "_Nq" << s.Nq << "_Nk" << s.Nk << "_D" << s.D << "_Dv"
            << s.Dv << "_" << mask_name(s.mask) << "_" << score_name(s.score) << (s.permuted ? "_permuted" : "");
}

/// A [B, H, N, D] tensor, stored either contiguously or as [B, N, H, D].
struct Tensor4 {
  std::vector<float> data;
  View<float, 4> view;
  Tensor4(index_t B, index_t H, index_t N, index_t D, bool permuted, unsigned seed) {
    data = testing_util::random_vector(static_cast<size_t>(B * H * N * D) + 1, seed);
    float* p = data.data() + 1;  // deliberately misaligned by one element
    if (permuted)
      view = View<float, 4>(p, {B, H, N, D}, {N * H * D, D, H * D, 1});
    else
      view = View<float, 4>(p, {B, H, N, D});
  }
};

/// Runs one policy combination through a callable taking (mask, score).
template <class F>
void with_policies(const Shape& s, const std::vector<index_t>& limits, const std::vector<float>& bias, F&& f) {
  ConstView<index_t, 2> lim(limits.data(), {s.B, s.Nq});
  ConstView<float, 2> bv(bias.data(), {s.B, s.Nk});
  auto pred = make_predicate_mask([](index_t b, index_t h, index_t i, index_t j) {
    return (i + 2 * j + b + h) % 3 != 0 || j == 0;
  });
  auto fun = make_functor_score([](index_t b, index_t h, index_t i, index_t j) {
    return 0.3 * std::sin(0.1 * static_cast<double>(i - 2 * j) + static_cast<double>(b + h));
  });
  auto with_mask = [&](auto&& mask) {
    switch (s.score) {
      case ScoreKind::none: f(mask, NoScore{}); break;
      case ScoreKind::bias: f(mask, KeyBiasScore{bv}); break;
      default: f(mask, fun); break;
    }
  };
  switch (s.mask) {
    case MaskKind::none: with_mask(NoMask{}); break;
    case MaskKind::causal: with_mask(CausalMask{}); break;
    case MaskKind::offset: with_mask(OffsetCausalMask{-3}); break;
    case MaskKind::limit: with_mask(KeyLimitMask{lim}); break;
    default: with_mask(pred); break;
  }
}

/// Non-decreasing limits in [0, Nk], including zeros (fully masked rows).
std::vector<index_t> make_limits(index_t B, index_t Nq, index_t Nk, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<index_t> l(static_cast<size_t>(B * Nq));
  for (index_t b = 0; b < B; ++b) {
    index_t cur = 0;
    for (index_t i = 0; i < Nq; ++i) {
      if (i > 0 || b > 0) cur = std::min<index_t>(Nk, cur + static_cast<index_t>(g() % 5));
      l[b * Nq + i] = cur;
    }
  }
  return l;
}

class EngineVsOracle : public ::testing::TestWithParam<Shape> {};

TEST_P(EngineVsOracle, MatchesReference) {
  const Shape s = GetParam();
  Tensor4 q(s.B, s.H, s.Nq, s.D, s.permuted, 1), k(s.B, s.Hkv, s.Nk, s.D, s.permuted, 2),
      v(s.B, s.Hkv, s.Nk, s.Dv, s.permuted, 3);
  const auto limits = make_limits(s.B, s.Nq, s.Nk, 4);
  const auto bias = testing_util::random_vector(static_cast<size_t>(s.B * s.Nk), 5, 0.5f);
  const size_t n_out = static_cast<size_t>(s.B * s.H * s.Nq * s.Dv), n_lse = static_cast<size_t>(s.B * s.H * s.Nq);
  std::vector<float> out(n_out, -7.f), ref(n_out, -9.f), lse(n_lse), ref_lse(n_lse);
  std::vector<double> out_d(n_out), lse_d(n_lse);
  with_policies(s, limits, bias, [&](const auto& mask, const auto& score) {
    AttentionOptions opt;
    attention_reference<float>(q.view, k.view, v.view, make_view(ref.data(), s.B, s.H, s.Nq, s.Dv), mask, score, opt,
                               make_view(ref_lse.data(), s.B, s.H, s.Nq));
  });
  for (const Isa level : testing_util::isa_levels()) {
    SCOPED_TRACE(to_string(level));
    testing_util::ScopedIsa at(level);
    std::fill(out.begin(), out.end(), -7.f);
    with_policies(s, limits, bias, [&](const auto& mask, const auto& score) {
      attention<float>(q.view, k.view, v.view, make_view(out.data(), s.B, s.H, s.Nq, s.Dv), mask, score, {},
                       Executor{2}, make_view(lse.data(), s.B, s.H, s.Nq));
    });
    EXPECT_TRUE(testing_util::close(out, ref, 2e-5, 2e-4)) << s;
    EXPECT_TRUE(testing_util::close(lse, ref_lse, 2e-5, 2e-5)) << s;
    for (float x : out) ASSERT_FALSE(std::isnan(x)) << s;
  }
}

std::vector<Shape> grid() {
  const index_t lens[] = {1, 3, 64, 113, 257, 1000};
  const index_t dims[] = {16, 64, 80, 128};
  std::vector<Shape> r;
  int c = 0;
  for (index_t nq : lens)
    for (index_t nk : lens) {
      if (nq * nk > 300000) continue;  // keep the float64 oracle quick; 1000 x 257 stays in
      Shape s{};
      s.B = 1 + c % 2;
      s.H = (c % 3 == 0) ? 4 : 2;
      s.Hkv = (c % 3 == 0) ? 2 : s.H;  // GQA every third case
      s.Nq = nq;
      s.Nk = nk;
      s.D = dims[c % 4];
      s.Dv = (c % 5 == 0) ? 24 : s.D;
      s.mask = static_cast<MaskKind>(c % 5);
      s.score = static_cast<ScoreKind>((c / 5) % 3);
      s.permuted = c % 4 == 1;
      r.push_back(s);
      ++c;
    }
  // Every mask x score pair at least once on a shape with ragged tiles.
  for (int m = 0; m < 5; ++m)
    for (int sc = 0; sc < 3; ++sc) r.push_back(Shape{2, 3, 1, 131, 203, 40, 40, MaskKind(m), ScoreKind(sc), m % 2 == 1});
  // Long keys on the decode path (split-KV over several 1024-key chunks).
  for (int m = 0; m < 5; ++m) r.push_back(Shape{1, 2, 2, 3, 2500, 64, 64, MaskKind(m), ScoreKind(m % 3), false});
  r.push_back(Shape{1, 8, 8, 1000, 1000, 128, 128, MaskKind::causal, ScoreKind::none, false});
  return r;
}

INSTANTIATE_TEST_SUITE_P(Grid, EngineVsOracle, ::testing::ValuesIn(grid()),
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           std::ostringstream os;
                           os << info.param;
                           return os.str();
                         });

// The same bits whatever the thread count or the thread pool (at each level).
void expect_bit_identical_at(index_t Nq, index_t Nk, bool causal) {
  const index_t B = 2, H = 3, D = 64;
  auto q = testing_util::random_vector(B * H * Nq * D, 11), k = testing_util::random_vector(B * H * Nk * D, 12),
       v = testing_util::random_vector(B * H * Nk * D, 13);
  auto Q = make_view<const float>(q.data(), B, H, Nq, D), K = make_view<const float>(k.data(), B, H, Nk, D),
       V = make_view<const float>(v.data(), B, H, Nk, D);
  std::vector<float> o1(B * H * Nq * D), o2(o1.size()), o3(o1.size()), l1(B * H * Nq), l2(l1.size());
  FlashAttentionOptions fo;
  fo.causal = causal;
  flash_attention<float>(Q, K, V, make_view(o1.data(), B, H, Nq, D), fo, Executor{1}, make_view(l1.data(), B, H, Nq));
  flash_attention<float>(Q, K, V, make_view(o2.data(), B, H, Nq, D), fo, Executor{2}, make_view(l2.data(), B, H, Nq));
  int pool_calls = 0;
  const Executor pool = testing_util::pool_executor(3, &pool_calls);
  flash_attention<float>(Q, K, V, make_view(o3.data(), B, H, Nq, D), fo, pool);
  EXPECT_EQ(0, std::memcmp(o1.data(), o2.data(), o1.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(l1.data(), l2.data(), l1.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(o1.data(), o3.data(), o1.size() * sizeof(float)));
  // Every shape here is above the core's small-work rule, so the pool ran it.
  ASSERT_GE(double(B) * H * Nq * Nk * (2 * D), effattn::detail::kSerialWorkBelow);
  EXPECT_EQ(pool_calls, 1);
}
void expect_bit_identical(index_t Nq, index_t Nk, bool causal) {
  for (const Isa level : testing_util::isa_levels()) {
    SCOPED_TRACE(to_string(level));
    testing_util::ScopedIsa at(level);
    expect_bit_identical_at(Nq, Nk, causal);
  }
}

// The one small-work rule: below it the engine runs on the calling thread and
// never calls a host pool (same bits); at and above it the pool gets the work.
TEST(EngineThreads, SmallWorkRuleDecidesWhoRuns) {
  const index_t B = 1, H = 2, D = 32;
  for (index_t Nq : {1, 4, 64}) {
    // Nk just below and at the cut-off: work = B * H * Nq * Nk * 2D.
    const index_t below = static_cast<index_t>(effattn::detail::kSerialWorkBelow / double(B * H * Nq * 2 * D)) - 1;
    for (index_t Nk : {below, below + 2}) {
      const bool small = double(B) * H * Nq * Nk * 2 * D < effattn::detail::kSerialWorkBelow;
      auto q = testing_util::random_vector(B * H * Nq * D, 1), k = testing_util::random_vector(B * H * Nk * D, 2),
           v = testing_util::random_vector(B * H * Nk * D, 3);
      std::vector<float> o1(B * H * Nq * D), o2(o1.size());
      auto Q = make_view<const float>(q.data(), B, H, Nq, D), K = make_view<const float>(k.data(), B, H, Nk, D),
           V = make_view<const float>(v.data(), B, H, Nk, D);
      Executor pool;
      int calls = 0;
      pool.parallel_for = [&calls](index_t n, const std::function<void(index_t, index_t)>& body) {
        ++calls;
        body(0, n);
      };
      flash_attention<float>(Q, K, V, make_view(o1.data(), B, H, Nq, D), {}, Executor{1});
      flash_attention<float>(Q, K, V, make_view(o2.data(), B, H, Nq, D), {}, pool);
      EXPECT_EQ(calls, small ? 0 : 1) << "Nq=" << Nq << " Nk=" << Nk;
      EXPECT_EQ(0, std::memcmp(o1.data(), o2.data(), o1.size() * sizeof(float)));
    }
  }
}

TEST(EngineThreads, BitIdenticalTiled) { expect_bit_identical(517, 517, true); }
TEST(EngineThreads, BitIdenticalTiledFull) { expect_bit_identical(300, 700, false); }
TEST(EngineThreads, BitIdenticalSplitKV) { expect_bit_identical(1, 5000, false); }
TEST(EngineThreads, BitIdenticalSplitKVCausal) { expect_bit_identical(4, 3000, true); }

TEST(Engine, DoubleMatchesReference) {
  const index_t B = 1, H = 2, N = 77, D = 24;
  auto qf = testing_util::random_vector(B * H * N * D, 21), kf = testing_util::random_vector(B * H * N * D, 22),
       vf = testing_util::random_vector(B * H * N * D, 23);
  std::vector<double> q(qf.begin(), qf.end()), k(kf.begin(), kf.end()), v(vf.begin(), vf.end()), o(q.size()),
      r(q.size());
  auto Q = make_view<const double>(q.data(), B, H, N, D), K = make_view<const double>(k.data(), B, H, N, D),
       V = make_view<const double>(v.data(), B, H, N, D);
  attention<double>(Q, K, V, make_view(o.data(), B, H, N, D), CausalMask{});
  attention_reference<double>(Q, K, V, make_view(r.data(), B, H, N, D), CausalMask{});
  EXPECT_TRUE(testing_util::close(o, r, 1e-12, 1e-11));
}

TEST(Engine, FullyMaskedRowsGiveZeroAndMinusInfLse) {
  // Query i sees keys j <= i - 5: the first five rows see nothing.
  const index_t B = 1, H = 1, N = 40, D = 16;
  auto q = testing_util::random_vector(N * D, 31), k = testing_util::random_vector(N * D, 32),
       v = testing_util::random_vector(N * D, 33);
  for (index_t nq : {N, index_t(3)}) {  // tiled and decode paths
    std::vector<float> o(nq * D, 5.f), l(nq, 5.f);
    attention<float>(make_view<const float>(q.data(), B, H, nq, D), make_view<const float>(k.data(), B, H, N, D),
                     make_view<const float>(v.data(), B, H, N, D), make_view(o.data(), B, H, nq, D),
                     OffsetCausalMask{-5}, NoScore{}, {}, {}, make_view(l.data(), B, H, nq));
    for (index_t i = 0; i < std::min<index_t>(nq, 5); ++i) {
      EXPECT_TRUE(std::isinf(l[i]) && l[i] < 0) << i;
      for (index_t e = 0; e < D; ++e) EXPECT_EQ(o[i * D + e], 0.f);
    }
    for (float x : o) EXPECT_FALSE(std::isnan(x));
  }
}

TEST(Engine, EmptyKeysAndQueries) {
  std::vector<float> q(2 * 16, 1.f), o(2 * 16, 3.f), kv(16, 1.f), l(2, 7.f);
  // Nk = 0: every row is fully masked: out = 0, lse = -inf (both backends).
  for (Backend be : {Backend::tiled, Backend::reference}) {
    std::fill(o.begin(), o.end(), 3.f);
    std::fill(l.begin(), l.end(), 7.f);
    AttentionOptions opt;
    opt.backend = be;
    attention<float>(make_view<const float>(q.data(), 1, 1, 2, 16), make_view<const float>(kv.data(), 1, 1, 0, 16),
                     make_view<const float>(kv.data(), 1, 1, 0, 16), make_view(o.data(), 1, 1, 2, 16), NoMask{},
                     NoScore{}, opt, {}, make_view(l.data(), 1, 1, 2));
    for (float x : o) EXPECT_EQ(x, 0.f);
    for (float x : l) EXPECT_TRUE(std::isinf(x) && x < 0) << x;
  }
  // Nq = 0: nothing to do, nothing written. The views point into buffers
  // filled with sentinels; an lse of [B,H,0] (non-null) is accepted, one of
  // the wrong shape is not.
  for (Backend be : {Backend::tiled, Backend::reference})
    for (index_t nk : {index_t(1), index_t(3000)}) {  // (a long Nk would take the split-KV path)
      SCOPED_TRACE(nk);
      std::vector<float> kl(static_cast<size_t>(nk * 16), 1.f);
      std::fill(o.begin(), o.end(), 3.f);
      std::fill(l.begin(), l.end(), 7.f);
      AttentionOptions opt;
      opt.backend = be;
      auto Q0 = make_view<const float>(q.data(), 1, 1, 0, 16);
      auto K = make_view<const float>(kl.data(), 1, 1, nk, 16);
      EXPECT_NO_THROW(attention<float>(Q0, K, K, make_view(o.data(), 1, 1, 0, 16), CausalMask{}, NoScore{}, opt,
                                       Executor{2}, make_view(l.data(), 1, 1, 0)));
      EXPECT_NO_THROW(attention<float>(Q0, K, K, make_view(o.data(), 1, 1, 0, 16), NoMask{}, NoScore{}, opt));
      for (float x : o) EXPECT_EQ(x, 3.f) << "out written for Nq = 0";
      for (float x : l) EXPECT_EQ(x, 7.f) << "lse written for Nq = 0";
      EXPECT_THROW(attention<float>(Q0, K, K, make_view(o.data(), 1, 1, 0, 16), NoMask{}, NoScore{}, opt, {},
                                    make_view(l.data(), 1, 1, 1)),
                   shape_error);
    }
}

TEST(Engine, NanAndInfInputsDoNotCrashOrLeak) {
  // Batch 1 is poisoned; batch 0 must still equal the oracle.
  const index_t B = 2, H = 2, N = 150, D = 32;
  auto q = testing_util::random_vector(B * H * N * D, 41), k = testing_util::random_vector(B * H * N * D, 42),
       v = testing_util::random_vector(B * H * N * D, 43);
  const size_t half = q.size() / 2;
  q[half + 5] = std::numeric_limits<float>::quiet_NaN();
  k[half + 77] = std::numeric_limits<float>::infinity();
  v[half + 300] = -std::numeric_limits<float>::infinity();
  std::vector<float> o(q.size()), r(q.size());
  for (index_t nq : {N, index_t(2)}) {
    auto Q = View<const float, 4>(q.data(), {B, H, nq, D}, {H * N * D, N * D, D, 1});
    auto K = make_view<const float>(k.data(), B, H, N, D), V = make_view<const float>(v.data(), B, H, N, D);
    auto O = View<float, 4>(o.data(), {B, H, nq, D}, {H * N * D, N * D, D, 1});
    auto R = View<float, 4>(r.data(), {B, H, nq, D}, {H * N * D, N * D, D, 1});
    attention<float>(Q, K, V, O, CausalMask{});
    attention_reference<float>(Q, K, V, R, CausalMask{});
    std::vector<float> o0, r0;
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < nq; ++i)
        for (index_t e = 0; e < D; ++e) {
          o0.push_back(O(0, h, i, e));
          r0.push_back(R(0, h, i, e));
        }
    EXPECT_TRUE(testing_util::close(o0, r0, 2e-5, 2e-4));
  }
}

TEST(Engine, BlockSizeOptionsGiveTheSameResult) {
  const index_t B = 1, H = 2, N = 333, D = 48;
  auto q = testing_util::random_vector(B * H * N * D, 51), k = testing_util::random_vector(B * H * N * D, 52),
       v = testing_util::random_vector(B * H * N * D, 53);
  auto Q = make_view<const float>(q.data(), B, H, N, D), K = make_view<const float>(k.data(), B, H, N, D),
       V = make_view<const float>(v.data(), B, H, N, D);
  std::vector<float> r(q.size());
  attention_reference<float>(Q, K, V, make_view(r.data(), B, H, N, D), CausalMask{});
  const index_t qt = effattn::detail::attention_query_tile_quantum();
  for (index_t bq : {qt, 2 * qt, 4 * qt})
    for (index_t bk : {index_t(1), index_t(7), index_t(64), index_t(500)}) {
      std::vector<float> o(q.size());
      AttentionOptions opt;
      opt.block_q = bq;
      opt.block_k = bk;
      attention<float>(Q, K, V, make_view(o.data(), B, H, N, D), CausalMask{}, NoScore{}, opt);
      EXPECT_TRUE(testing_util::close(o, r, 2e-5, 2e-4)) << "bq=" << bq << " bk=" << bk;
    }
}

TEST(Engine, MaterializedBaselineMatchesReference) {
  const index_t B = 2, H = 2, Nq = 70, Nk = 90, D = 32;
  auto q = testing_util::random_vector(B * H * Nq * D, 61), k = testing_util::random_vector(B * H * Nk * D, 62),
       v = testing_util::random_vector(B * H * Nk * D, 63);
  auto bias = testing_util::random_vector(B * Nk, 64);
  auto Q = make_view<const float>(q.data(), B, H, Nq, D), K = make_view<const float>(k.data(), B, H, Nk, D),
       V = make_view<const float>(v.data(), B, H, Nk, D);
  std::vector<float> o(B * H * Nq * D), r(o.size()), lo(B * H * Nq), lr(lo.size());
  KeyBiasScore sc{make_view<const float>(bias.data(), B, Nk)};
  attention_materialized<float>(Q, K, V, make_view(o.data(), B, H, Nq, D), OffsetCausalMask{-2}, sc, {}, {},
                                make_view(lo.data(), B, H, Nq));
  attention_reference<float>(Q, K, V, make_view(r.data(), B, H, Nq, D), OffsetCausalMask{-2}, sc, {},
                             make_view(lr.data(), B, H, Nq));
  EXPECT_TRUE(testing_util::close(o, r, 2e-5, 2e-4));
  EXPECT_TRUE(testing_util::close(lo, lr, 2e-5, 2e-5));
}

TEST(Engine, ReferenceBackendThroughOptions) {
  // Backend::reference must route to attention_reference: bit-identical to it,
  // out and lse. The tiled engine on the same case is close to it but not
  // bit-identical (float accumulation vs float64), which shows that the
  // bitwise comparison would catch a switch that still ran the tiled engine.
  const index_t B = 2, H = 2, N = 67, D = 24;
  auto q = testing_util::random_vector(B * H * N * D, 71), k = testing_util::random_vector(B * H * N * D, 72),
       v = testing_util::random_vector(B * H * N * D, 73);
  auto Q = make_view<const float>(q.data(), B, H, N, D), K = make_view<const float>(k.data(), B, H, N, D),
       V = make_view<const float>(v.data(), B, H, N, D);
  std::vector<float> a(q.size()), b(q.size()), t(q.size()), la(B * H * N), lb(la.size()), lt(la.size());
  AttentionOptions opt;
  opt.backend = Backend::reference;
  attention<float>(Q, K, V, make_view(a.data(), B, H, N, D), CausalMask{}, NoScore{}, opt, {},
                   make_view(la.data(), B, H, N));
  attention_reference<float>(Q, K, V, make_view(b.data(), B, H, N, D), CausalMask{}, NoScore{}, {},
                             make_view(lb.data(), B, H, N));
  attention<float>(Q, K, V, make_view(t.data(), B, H, N, D), CausalMask{}, NoScore{}, {}, {},
                   make_view(lt.data(), B, H, N));
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << "backend = reference vs the oracle";
  EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
  EXPECT_TRUE(testing_util::close(t, b, 2e-5, 2e-4)) << "tiled vs the oracle";
  EXPECT_NE(0, std::memcmp(t.data(), b.data(), t.size() * sizeof(float)))
      << "the tiled engine matched the oracle bit for bit: this case cannot tell the backends apart";
}

// The classification of prefix masks is exact: empty blocks have no allowed
// element, full blocks have no masked one.
TEST(Policies, PrefixClassificationIsExact) {
  std::vector<index_t> lim = {0, 0, 2, 5, 5, 9, 12, 12};
  KeyLimitMask km{make_view<const index_t>(lim.data(), 1, 8)};
  auto kb = km.bind(0, 0, 8, 12);
  auto cb = OffsetCausalMask{2}.bind(0, 0, 8, 12);
  for (index_t i0 = 0; i0 < 8; ++i0)
    for (index_t i1 = i0 + 1; i1 <= 8; ++i1)
      for (index_t j0 = 0; j0 < 12; ++j0)
        for (index_t j1 = j0 + 1; j1 <= 12; ++j1) {
          auto check = [&](const auto& bm) {
            bool any = false, all = true;
            for (index_t i = i0; i < i1; ++i)
              for (index_t j = j0; j < j1; ++j) {
                any |= bm.allowed(i, j);
                all &= bm.allowed(i, j);
              }
            const BlockKind want = !any ? BlockKind::empty : (all ? BlockKind::full : BlockKind::partial);
            EXPECT_EQ(static_cast<int>(bm.classify(i0, i1, j0, j1)), static_cast<int>(want));
          };
          check(kb);
          check(cb);
        }
}

}  // namespace

namespace {

// ---- instruction-set levels (core/isa.hpp)

TEST(Isa, SetActiveAndRejectHigher) {
  const Isa saved = active_isa();
  EXPECT_LE(static_cast<int>(active_isa()), static_cast<int>(supported_isa()));
  for (const Isa level : testing_util::isa_levels(true)) {
    set_isa(level);
    EXPECT_EQ(active_isa(), level);
  }
  if (supported_isa() != kTopIsa) {
    const Isa above = static_cast<Isa>(static_cast<int>(supported_isa()) + 1);
    EXPECT_THROW(set_isa(above), parameter_error);
    try {
      set_isa(above);
    } catch (const std::invalid_argument& e) {
      EXPECT_TRUE(testing_util::contains(e.what(), "does not support")) << e.what();
    }
  }
  EXPECT_THROW(set_isa(static_cast<Isa>(7)), parameter_error);
  set_isa(saved);
  EXPECT_EQ(active_isa(), saved);
}

TEST(Isa, QuantumPerLevel) {
#if EFFATTN_DISPATCH
  // Each level's own blocking: 2 x 4 floats, 2 x 8, 4 x 16 queries per
  // micro-tile (avx512_bf16 runs the avx512 kernels, bfloat16 pairs included).
  const index_t want[] = {8, 16, 64, 64};
  for (const Isa level : testing_util::isa_levels(true))
    EXPECT_EQ(effattn::detail::attention_query_tile_quantum(level), want[static_cast<int>(level)]) << to_string(level);
  EXPECT_EQ(supported_isa(), effattn::detail::cpu_isa());
#else
  EXPECT_EQ(supported_isa(), Isa::baseline);
#endif
  EXPECT_STREQ(to_string(Isa::avx2), "avx2");
}

#ifndef _WIN32
TEST(Isa, EnvironmentNamesALevel) {
  // EFFATTN_ISA is read once, at the first use; default_isa() is that reading.
  const char* old = std::getenv("EFFATTN_ISA");
  const std::string saved = old ? old : "";
  ::setenv("EFFATTN_ISA", "baseline", 1);
  EXPECT_EQ(effattn::detail::default_isa(), Isa::baseline);
  ::setenv("EFFATTN_ISA", "avx512_bf16", 1);  // lowered to the CPU's best
  EXPECT_EQ(effattn::detail::default_isa(), supported_isa());
  if (static_cast<int>(supported_isa()) >= static_cast<int>(Isa::avx512)) {
    ::setenv("EFFATTN_ISA", "avx512", 1);
    EXPECT_EQ(effattn::detail::default_isa(), Isa::avx512);
  }
  ::setenv("EFFATTN_ISA", "sse9", 1);
  try {
    (void)effattn::detail::default_isa();
    ADD_FAILURE() << "EFFATTN_ISA=sse9 accepted";
  } catch (const parameter_error& e) {
    EXPECT_TRUE(testing_util::contains(e.what(), "EFFATTN_ISA='sse9'")) << e.what();
  }
  if (old)
    ::setenv("EFFATTN_ISA", saved.c_str(), 1);
  else
    ::unsetenv("EFFATTN_ISA");
}
#endif

}  // namespace
