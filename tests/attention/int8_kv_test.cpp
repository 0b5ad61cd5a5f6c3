// SPDX-License-Identifier: MIT
// int8 keys and values with a float scale per row (core/quant.hpp): the
// quantizer's contract; the engine against the float64 oracle on the
// dequantized values (tight) on the decode and tiled paths at every level,
// with GQA, masks, odd head dims and strided scales; thread bit-identity; the
// documented error bound against the unquantized float keys/values; checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <effattn/effattn.hpp>
#include <sstream>
#include <vector>

#include "support/levels.hpp"
#include "support/testing.hpp"

using namespace effattn;

namespace {

TEST(Quantize, RowsFollowTheScheme) {
  const index_t rows = 500, D = 37;
  auto x = testing_util::random_vector(static_cast<size_t>(rows * D), 21, 3.0f);
  for (index_t d = 0; d < D; ++d) x[static_cast<size_t>(7 * D + d)] = 0.0f;  // an all-zero row
  x[static_cast<size_t>(9 * D + 4)] = 1e30f;                                 // a huge element
  std::vector<std::int8_t> c(static_cast<size_t>(rows * D));
  std::vector<float> s(static_cast<size_t>(rows));
  quantize_rows(x.data(), rows, D, D, c.data(), D, s.data(), 1);
  for (index_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (index_t d = 0; d < D; ++d) amax = std::max(amax, std::abs(x[static_cast<size_t>(r * D + d)]));
    EXPECT_EQ(s[static_cast<size_t>(r)], amax / 127.0f) << r;
    bool hit = false;
    for (index_t d = 0; d < D; ++d) {
      const std::int8_t q = c[static_cast<size_t>(r * D + d)];
      ASSERT_GE(q, -127);
      hit |= q == 127 || q == -127;
      const double err = std::abs(static_cast<double>(s[static_cast<size_t>(r)]) * q - x[static_cast<size_t>(r * D + d)]);
      ASSERT_LE(err, 0.5 * s[static_cast<size_t>(r)] * (1 + 1e-5) + 1e-30) << r << " " << d;
    }
    if (amax > 0) {
      EXPECT_TRUE(hit) << "row " << r << " never reaches +-127";
    }
  }
  EXPECT_EQ(s[7], 0.0f);
  x[5] = NAN;
  EXPECT_THROW(quantize_rows(x.data(), rows, D, D, c.data(), D, s.data(), 1), parameter_error);
  EXPECT_THROW(quantize_rows(x.data(), 2, D, D - 1, c.data(), D, s.data(), 1), shape_error);
}

struct Case {
  index_t B, H, Hkv, Nq, Nk, D, Dv;
  int mask;       // 0 none, 1 causal
  bool permuted;  // codes stored [B, N, Hkv, D], scales [B, N, Hkv]
};

std::string name(const Case& c) {
  std::ostringstream os;
  os << "B" << c.B << "_H" << c.H << "_Hkv" << c.Hkv << "_Nq" << c.Nq << "_Nk" << c.Nk << "_D" << c.D << "_Dv" << c.Dv
     << "_mask" << c.mask << (c.permuted ? "_permuted" : "");
  return os.str();
}

/// A quantized [B, Hkv, N, D] tensor, contiguous or stored token-major.
struct Quantized {
  std::vector<std::int8_t> codes;
  std::vector<float> scales;
  std::vector<float> dequantized;  // [B, Hkv, N, D], scale * code in float
  QuantizedKV view;
  Quantized(const std::vector<float>& x, index_t B, index_t H, index_t N, index_t D, bool permuted)
      : codes(x.size()), scales(static_cast<size_t>(B * H * N)), dequantized(x.size()) {
    const std::array<index_t, 4> cs = permuted ? std::array<index_t, 4>{N * H * D, D, H * D, 1}
                                               : std::array<index_t, 4>{H * N * D, N * D, D, 1};
    const std::array<index_t, 3> ss = permuted ? std::array<index_t, 3>{N * H, 1, H} : std::array<index_t, 3>{H * N, N, 1};
    View<std::int8_t, 4> cv(codes.data(), {B, H, N, D}, cs);
    View<float, 3> sv(scales.data(), {B, H, N}, ss);
    quantize(make_view<const float>(x.data(), B, H, N, D), cv, sv);
    view = QuantizedKV{View<const std::int8_t, 4>(cv), View<const float, 3>(sv)};
    dequantize(view, make_view(dequantized.data(), B, H, N, D));
  }
};

void check_case(const Case& c) {
  SCOPED_TRACE(name(c) + " at " + to_string(active_isa()));
  const auto qf = testing_util::random_vector(static_cast<size_t>(c.B * c.H * c.Nq * c.D), 31);
  const auto kf = testing_util::random_vector(static_cast<size_t>(c.B * c.Hkv * c.Nk * c.D), 32);
  const auto vf = testing_util::random_vector(static_cast<size_t>(c.B * c.Hkv * c.Nk * c.Dv), 33, 2.0f);
  const Quantized kq(kf, c.B, c.Hkv, c.Nk, c.D, c.permuted), vq(vf, c.B, c.Hkv, c.Nk, c.Dv, c.permuted);
  const auto Q = make_view<const float>(qf.data(), c.B, c.H, c.Nq, c.D);
  const size_t no = static_cast<size_t>(c.B * c.H * c.Nq * c.Dv), nl = static_cast<size_t>(c.B * c.H * c.Nq);
  std::vector<float> out(no), out1(no), lse(nl), ref(no), ref_lse(nl), exact(no), viaref(no);
  auto O = [&](std::vector<float>& o) { return make_view(o.data(), c.B, c.H, c.Nq, c.Dv); };
  const auto Kd = make_view<const float>(kq.dequantized.data(), c.B, c.Hkv, c.Nk, c.D);
  const auto Vd = make_view<const float>(vq.dequantized.data(), c.B, c.Hkv, c.Nk, c.Dv);
  const auto Kf = make_view<const float>(kf.data(), c.B, c.Hkv, c.Nk, c.D);
  const auto Vf = make_view<const float>(vf.data(), c.B, c.Hkv, c.Nk, c.Dv);
  AttentionOptions ref_backend;
  ref_backend.backend = Backend::reference;
  auto run = [&](auto&& mask) {
    attention<float>(Q, kq.view, vq.view, O(out), mask, NoScore{}, {}, Executor{2}, make_view(lse.data(), c.B, c.H, c.Nq));
    attention<float>(Q, kq.view, vq.view, O(out1), mask, NoScore{}, {}, Executor{1});
    attention<float>(Q, kq.view, vq.view, O(viaref), mask, NoScore{}, ref_backend);
    attention_reference<float>(Q, Kd, Vd, O(ref), mask, NoScore{}, {}, make_view(ref_lse.data(), c.B, c.H, c.Nq));
    attention_reference<float>(Q, Kf, Vf, O(exact), mask);
  };
  if (c.mask == 1)
    run(CausalMask{});
  else
    run(NoMask{});
  // Tight: the float attention of the dequantized values, up to summation order.
  EXPECT_TRUE(testing_util::close(out, ref, 2e-5, 2e-4));
  EXPECT_TRUE(testing_util::close(lse, ref_lse, 2e-5, 2e-5));
  EXPECT_EQ(0, std::memcmp(out.data(), out1.data(), no * sizeof(float))) << "1 and 2 threads differ";
  EXPECT_EQ(0, std::memcmp(viaref.data(), ref.data(), no * sizeof(float))) << "Backend::reference is the oracle on the dequantized values";

  // Against the unquantized keys/values. Logits moved by at most eps move a
  // softmax average of values bounded by vmax by at most (e^(2 eps) - 1) vmax;
  // values moved by at most dv move it by at most dv. Two bounds:
  //  - core/quant.hpp's, from the scales alone: each key element moves by at
  //    most sk_j / 2, so logit (i, j) by eps_i = scale * sum_d |q_id| * max_j sk_j / 2,
  //    each value element by at most max_j sv_j / 2;
  //  - the same with this data's actual perturbations (tighter; it must
  //    still say something: below a quarter of vmax).
  // Allowed: 1.25x each (plus float rounding).
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
  double vmax = 0, svmax = 0, skmax = 0, dvmax = 0;
  for (float x : vf) vmax = std::max(vmax, static_cast<double>(std::abs(x)));
  for (float x : vq.scales) svmax = std::max(svmax, static_cast<double>(x));
  for (float x : kq.scales) skmax = std::max(skmax, static_cast<double>(x));
  for (size_t t = 0; t < vf.size(); ++t) dvmax = std::max(dvmax, std::abs(static_cast<double>(vq.dequantized[t]) - vf[t]));
  const index_t G = c.H / c.Hkv;
  double worst_tight = 0;
  for (index_t b = 0; b < c.B; ++b)
    for (index_t h = 0; h < c.H; ++h)
      for (index_t i = 0; i < c.Nq; ++i) {
        const float* qi = qf.data() + ((b * c.H + h) * c.Nq + i) * c.D;
        double qa = 0, eps = 0;
        for (index_t d = 0; d < c.D; ++d) qa += std::abs(qi[d]);
        for (index_t j = 0; j < c.Nk; ++j) {
          const size_t kr = static_cast<size_t>(((b * c.Hkv + h / G) * c.Nk + j) * c.D);
          double dl = 0;
          for (index_t d = 0; d < c.D; ++d) dl += qi[d] * (static_cast<double>(kq.dequantized[kr + d]) - kf[kr + d]);
          eps = std::max(eps, scale * std::abs(dl));
        }
        const double documented = 1.25 * (std::expm1(2 * scale * qa * skmax / 2) * vmax + svmax / 2) + 1e-5 * vmax;
        const double tight = 1.25 * (std::expm1(2 * eps) * vmax + dvmax) + 1e-5 * vmax;
        worst_tight = std::max(worst_tight, tight);
        for (index_t e = 0; e < c.Dv; ++e) {
          const size_t at = static_cast<size_t>(((b * c.H + h) * c.Nq + i) * c.Dv + e);
          ASSERT_LE(std::abs(out[at] - exact[at]), tight) << "query " << i << " dim " << e;
          ASSERT_LE(std::abs(out[at] - exact[at]), documented) << "query " << i << " dim " << e;
        }
      }
  if (c.Nk > 0 && c.Nq > 0) {
    EXPECT_LT(worst_tight, 0.25 * vmax) << "the bound says nothing on this case";
  }
}

TEST(Int8KV, MatchesOracleOnDequantizedValuesAtEveryLevel) {
  const Case cases[] = {
      {1, 2, 2, 1, 1, 64, 64, 0, false},     {1, 8, 2, 1, 3000, 64, 64, 0, false},  // decode, split keys, GQA
      {2, 4, 4, 3, 1500, 80, 48, 1, true},   {1, 2, 1, 4, 777, 7, 9, 0, true},      // odd dims, strided scales
      {1, 2, 2, 64, 64, 64, 64, 1, false},   {1, 4, 2, 113, 257, 33, 17, 0, true},  // tiled
      {2, 2, 1, 257, 300, 128, 128, 1, false}, {1, 1, 1, 5, 0, 16, 16, 0, false},   // no keys
  };
  for (const Isa level : testing_util::isa_levels()) {
    testing_util::ScopedIsa scoped(level);
    for (const Case& c : cases) {
      check_case(c);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

TEST(Int8KV, ChecksScalesBeforeWriting) {
  const index_t N = 10, D = 8;
  std::vector<float> q(static_cast<size_t>(2 * N * D), 0.5f), out(q.size(), 7.0f), s(static_cast<size_t>(2 * N), 1.0f);
  std::vector<std::int8_t> c(q.size(), 1);
  const QuantizedKV good{make_view<const std::int8_t>(c.data(), 1, 2, N, D), make_view<const float>(s.data(), 1, 2, N)};
  const QuantizedKV bad{make_view<const std::int8_t>(c.data(), 1, 2, N, D), make_view<const float>(s.data(), 1, 2, N - 1)};
  try {
    attention<float>(make_view<const float>(q.data(), 1, 2, N, D), bad, good, make_view(out.data(), 1, 2, N, D));
    FAIL() << "a wrong k.scale shape was accepted";
  } catch (const shape_error& e) {
    EXPECT_TRUE(testing_util::contains(e.what(), "attention")) << e.what();
    EXPECT_TRUE(testing_util::contains(e.what(), "k.scale")) << e.what();
  }
  EXPECT_THROW(attention<float>(make_view<const float>(q.data(), 1, 2, N, D), good, bad, make_view(out.data(), 1, 2, N, D)),
               shape_error);
  for (float x : out) ASSERT_EQ(x, 7.0f);
  // Scales written over by the output are rejected too.
  EXPECT_THROW(attention<float>(make_view<const float>(q.data(), 1, 2, N, D), good,
                                QuantizedKV{good.data, make_view<const float>(out.data(), 1, 2, N)},
                                make_view(out.data(), 1, 2, N, D)),
               std::invalid_argument);
  attention<float>(make_view<const float>(q.data(), 1, 2, N, D), good, good, make_view(out.data(), 1, 2, N, D));
  for (float x : out) ASSERT_FLOAT_EQ(x, 1.0f);  // every value is 1 * 1
}

}  // namespace
