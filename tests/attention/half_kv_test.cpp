// SPDX-License-Identifier: MIT
// Keys and values stored in 16 bits (float16, bfloat16): the engine against
// the oracle on the same 16-bit data, bit-identity with float keys/values
// holding the widened values (tiled and decode paths, unit and odd strides),
// thread bit-identity, accuracy against the unrounded float data, and checks.
#include <gtest/gtest.h>

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
  bool causal;
  int layout;  // 0: contiguous; 1: stored [B, N, Hkv, D + 3] (padded rows); 2: every other element (inner stride 2)
};

std::ostream& operator<<(std::ostream& os, const Case& c) {
  return os << "B" << c.B << "_H" << c.H << "_Hkv" << c.Hkv << "_Nq" << c.Nq << "_Nk" << c.Nk << "_D" << c.D << "_Dv"
            << c.Dv << (c.causal ? "_causal" : "_full") << (c.layout == 1 ? "_padded" : c.layout == 2 ? "_stride2" : "");
}

/// A [B, H, N, D] tensor in storage X: contiguous, stored as [B, N, H, D+3],
/// or contiguous with every element followed by a gap (inner stride 2).
template <class X>
struct Stored {
  std::vector<X> data;
  View<const X, 4> view;
  Stored(const std::vector<float>& src, index_t B, index_t H, index_t N, index_t D, int layout) {
    const index_t ld = layout == 1 ? D + 3 : D, es = layout == 2 ? 2 : 1;
    data.assign(static_cast<size_t>(B * H * N * ld * es) + 1, X(7.0f));  // gaps hold junk
    X* p = data.data() + 1;  // misaligned by one element
    const std::array<index_t, 4> st = layout == 1 ? std::array<index_t, 4>{N * H * ld, ld, H * ld, 1}
                                                  : std::array<index_t, 4>{H * N * D * es, N * D * es, D * es, es};
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < H; ++h)
        for (index_t n = 0; n < N; ++n)
          for (index_t d = 0; d < D; ++d)
            p[b * st[0] + h * st[1] + n * st[2] + d * st[3]] =
                X(src[static_cast<size_t>(((b * H + h) * N + n) * D + d)]);
    view = View<const X, 4>(p, {B, H, N, D}, st);
  }
};

/// The values a 16-bit storage holds, as floats.
template <class X>
std::vector<float> rounded(const std::vector<float>& x) {
  std::vector<float> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = static_cast<float>(X(x[i]));
  return r;
}

template <class X>
void check_case_at(const Case& c) {
  const auto qv = testing_util::random_vector(static_cast<size_t>(c.B * c.H * c.Nq * c.D), 1);
  const auto kv = testing_util::random_vector(static_cast<size_t>(c.B * c.Hkv * c.Nk * c.D), 2);
  const auto vv = testing_util::random_vector(static_cast<size_t>(c.B * c.Hkv * c.Nk * c.Dv), 3);
  Stored<X> kh(kv, c.B, c.Hkv, c.Nk, c.D, c.layout), vh(vv, c.B, c.Hkv, c.Nk, c.Dv, c.layout);
  // float copies of exactly the values the 16-bit storage holds, same layout
  Stored<float> kf(rounded<X>(kv), c.B, c.Hkv, c.Nk, c.D, c.layout), vf(rounded<X>(vv), c.B, c.Hkv, c.Nk, c.Dv, c.layout);
  Stored<float> k32(kv, c.B, c.Hkv, c.Nk, c.D, c.layout), v32(vv, c.B, c.Hkv, c.Nk, c.Dv, c.layout);
  const auto Q = make_view<const float>(qv.data(), c.B, c.H, c.Nq, c.D);
  const size_t no = static_cast<size_t>(c.B * c.H * c.Nq * c.Dv), nl = static_cast<size_t>(c.B * c.H * c.Nq);
  std::vector<float> out(no), out_f(no), out1(no), ref(no), exact(no), lse(nl), lse_f(nl), ref_lse(nl);
  auto O = [&](std::vector<float>& o) { return make_view(o.data(), c.B, c.H, c.Nq, c.Dv); };
  auto L = [&](std::vector<float>& l) { return make_view(l.data(), c.B, c.H, c.Nq); };
  auto run = [&](auto&& mask) {
    attention<float>(Q, kh.view, vh.view, O(out), mask, NoScore{}, {}, Executor{2}, L(lse));
    attention<float>(Q, kh.view, vh.view, O(out1), mask, NoScore{}, {}, Executor{1});
    attention<float>(Q, kf.view, vf.view, O(out_f), mask, NoScore{}, {}, Executor{2}, L(lse_f));
    attention_reference<float>(Q, kh.view, vh.view, O(ref), mask, NoScore{}, {}, L(ref_lse));
    attention_reference<float>(Q, k32.view, v32.view, O(exact), mask);
  };
  if (c.causal)
    run(CausalMask{});
  else
    run(NoMask{});
  // Widening is exact and the kernels run the same operations in the same
  // order, so 16-bit storage gives the bits float storage of the same values gives.
  EXPECT_EQ(0, std::memcmp(out.data(), out_f.data(), no * sizeof(float))) << c;
  EXPECT_EQ(0, std::memcmp(lse.data(), lse_f.data(), nl * sizeof(float))) << c;
  EXPECT_EQ(0, std::memcmp(out.data(), out1.data(), no * sizeof(float))) << c << " (1 vs 2 threads)";
  EXPECT_TRUE(testing_util::close(out, ref, 2e-5, 2e-4)) << c;
  EXPECT_TRUE(testing_util::close(lse, ref_lse, 2e-5, 2e-5)) << c;
  // Against the unrounded float data: the storage's rounding error, no more.
  const double tol = std::is_same<X, float16>::value ? 4e-3 : 3e-2;
  EXPECT_TRUE(testing_util::close(out, exact, tol, tol)) << c;
}

/// The decode cases (the widening loads of the row path) at every
/// instruction-set level the host supports; the tiled ones at the active level.
template <class X>
void check_case(const Case& c) {
  if (c.Nq > 4) return check_case_at<X>(c);
  for (const Isa level : testing_util::isa_levels()) {
    SCOPED_TRACE(to_string(level));
    testing_util::ScopedIsa at(level);
    check_case_at<X>(c);
  }
}

class HalfKV : public ::testing::TestWithParam<Case> {};

TEST_P(HalfKV, Float16) { check_case<float16>(GetParam()); }
TEST_P(HalfKV, Bfloat16) { check_case<bfloat16>(GetParam()); }

std::vector<Case> cases() {
  std::vector<Case> v;
  for (int layout : {0, 1, 2})
    for (bool causal : {false, true}) {
      v.push_back({2, 4, 2, 1, 3000, 64, 64, causal, layout});    // decode, split-KV chunks, GQA
      v.push_back({1, 3, 3, 4, 1029, 24, 40, causal, layout});    // decode, D not a vector multiple
      v.push_back({1, 2, 1, 113, 257, 64, 64, causal, layout});   // tiled, tails everywhere
      v.push_back({2, 2, 2, 200, 131, 80, 16, causal, layout});   // tiled, Dv != D
      v.push_back({1, 1, 1, 5, 1, 7, 5, causal, layout});         // tiny odd head dims
    }
  return v;
}

INSTANTIATE_TEST_SUITE_P(Shapes, HalfKV, ::testing::ValuesIn(cases()), [](const ::testing::TestParamInfo<Case>& i) {
  std::ostringstream os;
  os << i.param;
  return os.str();
});

TEST(HalfKVErrors, ShapesAreCheckedAndNamed) {
  std::vector<float> q(2 * 8), out(2 * 8);
  std::vector<float16> k(2 * 3 * 8), v(2 * 3 * 8);
  auto Q = make_view<const float>(q.data(), 1, 2, 1, 8);
  auto O = make_view(out.data(), 1, 2, 1, 8);
  try {
    attention<float>(Q, make_view<const float16>(k.data(), 1, 2, 3, 8), make_view<const float16>(v.data(), 1, 2, 2, 8), O);
    FAIL() << "mismatched k/v lengths must throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("attention"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[1,2,2,8]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(attention<float>(Q, make_view<const float16>(k.data(), 1, 2, 3, 7), make_view<const float16>(v.data(), 1, 2, 3, 8), O),
               shape_error);
  EXPECT_THROW(attention<float>(Q, make_view<const float16>(nullptr, 1, 2, 3, 8), make_view<const float16>(v.data(), 1, 2, 3, 8), O),
               std::invalid_argument);
  for (float x : out) EXPECT_EQ(x, 0.0f);  // nothing written on error
}

TEST(HalfKV, NonFiniteStorageStaysContained) {
  // An overflowing key (inf in float16) must not turn other queries into NaN
  // or crash; the row that meets it follows IEEE arithmetic.
  const index_t N = 40, D = 8;
  auto qv = testing_util::random_vector(2 * D, 4), kv = testing_util::random_vector(N * D, 5),
       vv = testing_util::random_vector(N * D, 6);
  std::vector<float16> kh(kv.size()), vh(vv.size());
  convert(kv.data(), kh.data(), static_cast<index_t>(kv.size()));
  convert(vv.data(), vh.data(), static_cast<index_t>(vv.size()));
  vh[(N - 1) * D] = float16(1e9f);  // inf in the last key's value
  std::vector<float> out(2 * D);
  attention<float>(make_view<const float>(qv.data(), 1, 1, 2, D), make_view<const float16>(kh.data(), 1, 1, N, D),
                   make_view<const float16>(vh.data(), 1, 1, N, D), make_view(out.data(), 1, 1, 2, D), CausalMask{});
  for (index_t e = 0; e < D; ++e) EXPECT_TRUE(std::isfinite(out[e])) << e;  // query 0 does not see the last key
}

}  // namespace
