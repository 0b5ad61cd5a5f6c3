// SPDX-License-Identifier: MIT
// Attention on 16-bit queries, keys, values and outputs (attention<bfloat16>,
// attention<float16>): the engine against the float64 oracle run on the same
// 16-bit values, at every instruction-set level the host supports (the
// AVX512-BF16 dot-product kernel at Isa::avx512_bf16, widening to float
// below it), with an error bound derived from the formats' precision; thread
// bit-identity per level; non-finite values in masked keys; decode rows;
// checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <effattn/effattn.hpp>
#include <sstream>
#include <vector>

#include "support/levels.hpp"
#include "support/testing.hpp"

using namespace effattn;

namespace {

struct Case {
  index_t B, H, Hkv, Nq, Nk, D, Dv;
  int mask;    // 0 none, 1 causal, 2 key limit (a prefix of the keys)
  int layout;  // 0 contiguous; 1 stored [B, N, H, D + 3]; 2 inner stride 2
};

std::string name(const Case& c) {
  std::ostringstream os;
  os << "B" << c.B << "_H" << c.H << "_Hkv" << c.Hkv << "_Nq" << c.Nq << "_Nk" << c.Nk << "_D" << c.D << "_Dv" << c.Dv
     << "_mask" << c.mask << "_layout" << c.layout;
  return os.str();
}

/// A [B, H, N, D] tensor of X in one of the layouts (junk in the gaps).
template <class X>
struct Stored {
  std::vector<X> data;
  View<X, 4> view;
  Stored(const std::vector<float>& src, index_t B, index_t H, index_t N, index_t D, int layout) {
    const index_t ld = layout == 1 ? D + 3 : D, es = layout == 2 ? 2 : 1;
    data.assign(static_cast<size_t>(B * H * N * ld * es) + 1, X(7.0f));
    X* p = data.data() + 1;  // one element off any alignment
    const std::array<index_t, 4> st = layout == 1 ? std::array<index_t, 4>{N * H * ld, ld, H * ld, 1}
                                                  : std::array<index_t, 4>{H * N * D * es, N * D * es, D * es, es};
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < H; ++h)
        for (index_t n = 0; n < N; ++n)
          for (index_t d = 0; d < D; ++d)
            p[b * st[0] + h * st[1] + n * st[2] + d * st[3]] = X(src[static_cast<size_t>(((b * H + h) * N + n) * D + d)]);
    view = View<X, 4>(p, {B, H, N, D}, st);
  }
  ConstView<X, 4> cview() const { return ConstView<X, 4>(view); }
};

/// The values a 16-bit format holds, as doubles, in [B, H, N, D] order.
template <class X>
std::vector<double> widened(const std::vector<float>& x) {
  std::vector<double> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = static_cast<double>(static_cast<float>(X(x[i])));
  return r;
}

/// Unit roundoff of a 16-bit format: 2^-8 for bfloat16 (8 significant bits),
/// 2^-11 for float16 (11).
template <class X>
constexpr double unit_roundoff() {
  return std::is_same<X, bfloat16>::value ? 1.0 / 256 : 1.0 / 2048;
}

template <class X>
double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

/// Runs one case at the active level and checks it against the float64 oracle
/// on the same 16-bit values. The error bound, per output element, with u the
/// format's unit roundoff and vmax the largest |value|:
///   - the scaled query is rounded to the format (the dot-product kernel packs
///     it so): each logit moves by at most du = u * scale * max_j sum_d
///     |q_d k_jd|, which moves a softmax average by at most 2 du vmax;
///   - the probabilities are rounded to the format for the PV product: at
///     most u * vmax (sum_j |dp_j v_j| <= u vmax sum_j p_j, and l sums the
///     unrounded p);
///   - the output is rounded to the format: u |out| <= u vmax;
///   - float accumulation and the vectorised exp: far below these (1e-5 vmax).
/// The test allows 1.25x the sum.
template <class X>
void check_case(const Case& c) {
  SCOPED_TRACE(name(c) + " at " + to_string(active_isa()));
  const auto qf = testing_util::random_vector(static_cast<size_t>(c.B * c.H * c.Nq * c.D), 11);
  const auto kf = testing_util::random_vector(static_cast<size_t>(c.B * c.Hkv * c.Nk * c.D), 12);
  const auto vf = testing_util::random_vector(static_cast<size_t>(c.B * c.Hkv * c.Nk * c.Dv), 13, 3.0f);
  Stored<X> q(qf, c.B, c.H, c.Nq, c.D, c.layout), k(kf, c.B, c.Hkv, c.Nk, c.D, c.layout),
      v(vf, c.B, c.Hkv, c.Nk, c.Dv, c.layout);
  const auto qd = widened<X>(qf), kd = widened<X>(kf), vd = widened<X>(vf);
  const size_t no = static_cast<size_t>(c.B * c.H * c.Nq * c.Dv), nl = static_cast<size_t>(c.B * c.H * c.Nq);
  std::vector<X> out(no, X(9.0f)), out1(no, X(9.0f));
  std::vector<float> lse(nl);
  std::vector<double> ref(no), ref_lse(nl);
  const auto O = make_view(out.data(), c.B, c.H, c.Nq, c.Dv);
  const auto O1 = make_view(out1.data(), c.B, c.H, c.Nq, c.Dv);
  const auto Qd = make_view<const double>(qd.data(), c.B, c.H, c.Nq, c.D);
  const auto Kd = make_view<const double>(kd.data(), c.B, c.Hkv, c.Nk, c.D);
  const auto Vd = make_view<const double>(vd.data(), c.B, c.Hkv, c.Nk, c.Dv);
  const auto Rd = make_view(ref.data(), c.B, c.H, c.Nq, c.Dv);
  auto run = [&](auto&& mask) {
    attention<X>(q.cview(), k.cview(), v.cview(), O, mask, NoScore{}, {}, Executor{2}, make_view(lse.data(), c.B, c.H, c.Nq));
    attention<X>(q.cview(), k.cview(), v.cview(), O1, mask, NoScore{}, {}, Executor{1});
    attention_reference<double>(Qd, Kd, Vd, Rd, mask, NoScore{}, {}, make_view(ref_lse.data(), c.B, c.H, c.Nq));
  };
  // Key limits per query, 0 included (a query with no key: out 0, lse -inf).
  std::vector<index_t> lim(static_cast<size_t>(c.B * c.Nq));
  for (index_t b = 0; b < c.B; ++b)
    for (index_t i = 0; i < c.Nq; ++i) lim[static_cast<size_t>(b * c.Nq + i)] = i * (c.Nk + 1) / c.Nq;
  if (c.mask == 1)
    run(CausalMask{});
  else if (c.mask == 2)
    run(KeyLimitMask{make_view<const index_t>(lim.data(), c.B, c.Nq)});
  else
    run(NoMask{});

  // The bound's terms (see above), per query row.
  const double u = unit_roundoff<X>(), scale = 1.0 / std::sqrt(static_cast<double>(c.D)), vmax = max_abs<X>(vd);
  const index_t G = c.H / c.Hkv;
  std::vector<double> du(nl, 0.0);
  for (index_t b = 0; b < c.B; ++b)
    for (index_t h = 0; h < c.H; ++h)
      for (index_t i = 0; i < c.Nq; ++i)
        for (index_t j = 0; j < c.Nk; ++j) {
          double s = 0;
          for (index_t d = 0; d < c.D; ++d)
            s += std::abs(qd[static_cast<size_t>(((b * c.H + h) * c.Nq + i) * c.D + d)] *
                          kd[static_cast<size_t>(((b * c.Hkv + h / G) * c.Nk + j) * c.D + d)]);
          double& r = du[static_cast<size_t>((b * c.H + h) * c.Nq + i)];
          r = std::max(r, u * scale * s);
        }
  double tol_max = 0;
  for (size_t i = 0; i < no; ++i) {
    const double dr = du[i / static_cast<size_t>(c.Dv)];
    const double tol = 1.25 * (2 * dr * vmax + 2 * u * vmax + 1e-5 * vmax);
    tol_max = std::max(tol_max, tol);
    const double got = static_cast<double>(static_cast<float>(out[i]));
    ASSERT_LE(std::abs(got - ref[i]), tol) << "element " << i << ": " << got << " vs " << ref[i];
    ASSERT_EQ(out[i].bits, out1[i].bits) << "1 and 2 threads differ at element " << i;
  }
  for (size_t i = 0; i < nl; ++i) {
    if (std::isinf(ref_lse[i])) {
      EXPECT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << i;
    } else {
      EXPECT_NEAR(lse[i], ref_lse[i], 1.25 * du[i] + 1e-5 * std::max(1.0, std::abs(ref_lse[i]))) << i;
    }
  }
  // The bound must not be vacuous: it stays well below the outputs' spread.
  EXPECT_LT(tol_max, 0.2 * vmax);
}

std::vector<Case> grid() {
  std::vector<Case> cs;
  const index_t lens[] = {1, 3, 64, 113, 257};
  int n = 0;
  for (index_t nq : lens)
    for (index_t nk : lens) {
      const index_t D = (n % 4 == 0) ? 16 : (n % 4 == 1) ? 64 : (n % 4 == 2) ? 80 : 128;
      cs.push_back({1, 2, n % 2 ? 1 : 2, nq, nk, D, n % 3 ? D : 48, n % 3, n % 3 == 0 ? n % 2 : 0});
      ++n;
    }
  // Odd head dims (no pairs in place), odd key counts, every layout, GQA, B > 1.
  cs.push_back({2, 4, 2, 100, 131, 7, 9, 1, 0});
  cs.push_back({1, 3, 1, 70, 301, 33, 17, 0, 1});
  cs.push_back({1, 2, 2, 129, 129, 64, 64, 1, 2});
  cs.push_back({1, 1, 1, 1000, 1000, 64, 64, 1, 0});
  cs.push_back({1, 2, 1, 4, 3000, 64, 64, 0, 0});  // decode rows, split keys
  cs.push_back({1, 2, 2, 2, 777, 80, 40, 2, 2});
  return cs;
}

template <class X>
void run_grid() {
  for (const Isa level : testing_util::isa_levels(true)) {
    testing_util::ScopedIsa scoped(level);
    for (const Case& c : grid()) {
      check_case<X>(c);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

TEST(Bf16Attention, MatchesOracleAtEveryLevel) { run_grid<bfloat16>(); }
TEST(F16Attention, MatchesOracleAtEveryLevel) { run_grid<float16>(); }

/// The dot-product kernel runs where the CPU has it: at Isa::avx512_bf16 the
/// probabilities are rounded to bfloat16, so the result is not the widened
/// path's (which keeps them float), on a case where that rounding shows.
TEST(Bf16Attention, DotProductKernelRunsAtItsLevel) {
  if (supported_isa() != Isa::avx512_bf16) GTEST_SKIP() << "this CPU has no AVX512-BF16 (" << to_string(supported_isa()) << ")";
  const index_t N = 300, D = 64;
  const auto qf = testing_util::random_vector(static_cast<size_t>(N * D), 1, 2.0f);
  const auto kf = testing_util::random_vector(static_cast<size_t>(N * D), 2, 2.0f);
  const auto vf = testing_util::random_vector(static_cast<size_t>(N * D), 3);
  Stored<bfloat16> q(qf, 1, 1, N, D, 0), k(kf, 1, 1, N, D, 0), v(vf, 1, 1, N, D, 0);
  std::vector<bfloat16> a(static_cast<size_t>(N * D)), b(a.size());
  {
    testing_util::ScopedIsa s(Isa::avx512_bf16);
    attention<bfloat16>(q.cview(), k.cview(), v.cview(), make_view(a.data(), 1, 1, N, D));
  }
  {
    testing_util::ScopedIsa s(Isa::avx512);
    attention<bfloat16>(q.cview(), k.cview(), v.cview(), make_view(b.data(), 1, 1, N, D));
  }
  size_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += a[i].bits != b[i].bits;
  EXPECT_GT(differ, a.size() / 100);
}

/// A masked key's non-finite value never reaches a query (partial blocks of
/// a causal mask over a cache whose unused rows hold inf and NaN).
TEST(Bf16Attention, NonFiniteValuesOfMaskedKeysStayOut) {
  const index_t Nq = 70, Nk = 200, D = 64, valid = 150;
  for (const Isa level : testing_util::isa_levels(true)) {
    testing_util::ScopedIsa scoped(level);
    auto qf = testing_util::random_vector(static_cast<size_t>(Nq * D), 4);
    auto kf = testing_util::random_vector(static_cast<size_t>(Nk * D), 5);
    auto vf = testing_util::random_vector(static_cast<size_t>(Nk * D), 6);
    for (index_t j = valid; j < Nk; ++j)
      for (index_t d = 0; d < D; ++d) vf[static_cast<size_t>(j * D + d)] = (j + d) % 2 ? INFINITY : NAN;
    Stored<bfloat16> q(qf, 1, 1, Nq, D, 0), k(kf, 1, 1, Nk, D, 0), v(vf, 1, 1, Nk, D, 0);
    std::vector<bfloat16> out(static_cast<size_t>(Nq * D));
    const std::vector<index_t> lim(static_cast<size_t>(Nq), valid);
    attention<bfloat16>(q.cview(), k.cview(), v.cview(), make_view(out.data(), 1, 1, Nq, D),
                        KeyLimitMask{make_view<const index_t>(lim.data(), 1, Nq)});
    for (size_t i = 0; i < out.size(); ++i) ASSERT_TRUE(std::isfinite(static_cast<float>(out[i]))) << to_string(level) << " " << i;
    // and as the prefix of a causal mask: query i sees keys <= i + valid - Nq
    attention<bfloat16>(q.cview(), ConstView<bfloat16, 4>(View<bfloat16, 4>(k.view.data(), {1, 1, valid, D}, k.view.strides())),
                        ConstView<bfloat16, 4>(View<bfloat16, 4>(v.view.data(), {1, 1, valid, D}, v.view.strides())),
                        make_view(out.data(), 1, 1, Nq, D), CausalMask{});
    for (size_t i = 0; i < out.size(); ++i) ASSERT_TRUE(std::isfinite(static_cast<float>(out[i]))) << to_string(level) << " " << i;
  }
}

TEST(Bf16Attention, ChecksShapesBeforeWriting) {
  std::vector<bfloat16> q(2 * 8 * 16), k(2 * 8 * 16), v(2 * 8 * 16), out(2 * 8 * 16, bfloat16(5.0f));
  try {
    attention<bfloat16>(make_view<const bfloat16>(q.data(), 1, 2, 8, 16), make_view<const bfloat16>(k.data(), 1, 2, 8, 16),
                        make_view<const bfloat16>(v.data(), 1, 2, 8, 16), make_view(out.data(), 1, 2, 8, 8));
    FAIL() << "a wrong out shape was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(testing_util::contains(e.what(), "attention")) << e.what();
    EXPECT_TRUE(testing_util::contains(e.what(), "out")) << e.what();
  }
  for (const auto& x : out) EXPECT_EQ(static_cast<float>(x), 5.0f);
}

}  // namespace

namespace {

/// Float inputs with AttentionOptions::compute = Precision::bfloat16: at
/// Isa::avx512_bf16 the tiled path runs the bfloat16 kernel on rounded
/// copies (so it differs from float), within the bound of q, k and v rounded
/// to bfloat16 plus the probabilities' rounding; float keys/values, bfloat16
/// keys/values in place, and decode rows (which ignore it); below that level
/// it computes in float, bit-identical to the default.
TEST(Bf16Compute, FloatInputsOnTheBf16Kernel) {
  const index_t B = 1, H = 4, Hkv = 2, Nq = 150, Nk = 333, D = 64;
  const auto qf = testing_util::random_vector(static_cast<size_t>(B * H * Nq * D), 41);
  const auto kf = testing_util::random_vector(static_cast<size_t>(B * Hkv * Nk * D), 42);
  const auto vf = testing_util::random_vector(static_cast<size_t>(B * Hkv * Nk * D), 43);
  std::vector<bfloat16> kb(kf.size()), vb(vf.size());
  convert(kf.data(), kb.data(), static_cast<index_t>(kb.size()));
  convert(vf.data(), vb.data(), static_cast<index_t>(vb.size()));
  const auto Q = make_view<const float>(qf.data(), B, H, Nq, D);
  const auto K = make_view<const float>(kf.data(), B, Hkv, Nk, D), V = make_view<const float>(vf.data(), B, Hkv, Nk, D);
  const auto Kb = make_view<const bfloat16>(kb.data(), B, Hkv, Nk, D), Vb = make_view<const bfloat16>(vb.data(), B, Hkv, Nk, D);
  const size_t no = static_cast<size_t>(B * H * Nq * D);
  std::vector<float> plain(no), bf(no), bf1(no), bfkv(no), ref(no);
  auto O = [&](std::vector<float>& o) { return make_view(o.data(), B, H, Nq, D); };
  AttentionOptions ob;
  ob.compute = Precision::bfloat16;
  attention_reference<float>(Q, K, V, O(ref), CausalMask{});
  double vmax = 0, qk = 0;
  for (float x : vf) vmax = std::max(vmax, static_cast<double>(std::abs(x)));
  for (index_t h = 0; h < H; ++h)
    for (index_t i = 0; i < Nq; ++i)
      for (index_t j = 0; j < Nk; ++j) {
        double a = 0;
        for (index_t d = 0; d < D; ++d)
          a += std::abs(qf[static_cast<size_t>((h * Nq + i) * D + d)] * kf[static_cast<size_t>(((h / 2) * Nk + j) * D + d)]);
        qk = std::max(qk, a);
      }
  const double u = 1.0 / 256, scale = 1.0 / std::sqrt(static_cast<double>(D));
  // q and k each rounded (2u relative in every product), then v and p.
  const double eps = 2 * u * scale * qk;
  const double tol = 1.25 * (std::expm1(2 * eps) * vmax + 2 * u * vmax) + 1e-5 * vmax;
  ASSERT_LT(tol, 0.5 * vmax);
  for (const Isa level : testing_util::isa_levels(true)) {
    testing_util::ScopedIsa scoped(level);
    SCOPED_TRACE(to_string(level));
    attention<float>(Q, K, V, O(plain), CausalMask{});
    attention<float>(Q, K, V, O(bf), CausalMask{}, NoScore{}, ob, Executor{2});
    attention<float>(Q, K, V, O(bf1), CausalMask{}, NoScore{}, ob, Executor{1});
    attention<float>(Q, Kb, Vb, O(bfkv), CausalMask{}, NoScore{}, ob);
    EXPECT_EQ(0, std::memcmp(bf.data(), bf1.data(), no * sizeof(float))) << "1 and 2 threads differ";
    // Rounding float K/V into a copy is what bfloat16 storage holds already
    // (below avx512_bf16 float K/V are not rounded, bfloat16 ones are widened).
    if (level == Isa::avx512_bf16) {
      EXPECT_EQ(0, std::memcmp(bf.data(), bfkv.data(), no * sizeof(float)));
    }
    size_t differ = 0;
    for (size_t i = 0; i < no; ++i) {
      ASSERT_LE(std::abs(bf[i] - ref[i]), tol) << i;
      differ += bf[i] != plain[i];
    }
    if (level == Isa::avx512_bf16) {
      EXPECT_GT(differ, no / 10) << "the bfloat16 kernel did not run";
    } else {
      EXPECT_EQ(differ, 0u) << "below avx512_bf16 the option computes in float";
    }
  }
  // Decode rows ignore it.
  std::vector<float> d0(static_cast<size_t>(B * H * D)), d1(d0.size());
  const auto Q1 = make_view<const float>(qf.data(), B, H, 1, D);
  attention<float>(Q1, K, V, make_view(d0.data(), B, H, 1, D));
  attention<float>(Q1, K, V, make_view(d1.data(), B, H, 1, D), NoMask{}, NoScore{}, ob);
  EXPECT_EQ(0, std::memcmp(d0.data(), d1.data(), d0.size() * sizeof(float)));
}

}  // namespace
