// SPDX-License-Identifier: MIT
// Every bad input throws effattn's documented exception (an
// std::invalid_argument naming the operator and the parameter) before any
// output is written.
#include <gtest/gtest.h>

#include <effattn/effattn.hpp>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

using namespace effattn;

namespace {

struct Buffers {
  index_t B = 2, H = 4, Hkv = 2, Nq = 5, Nk = 7, D = 8;
  std::vector<float> q, k, v, out, lse;
  Buffers()
      : q(B * H * Nq * D, 0.5f), k(B * Hkv * Nk * D, 0.25f), v(B * Hkv * Nk * D, 1.f), out(B * H * Nq * D, 42.f),
        lse(B * H * Nq, 42.f) {}
  ConstView<float, 4> Q() const { return make_view<const float>(q.data(), B, H, Nq, D); }
  ConstView<float, 4> K() const { return make_view<const float>(k.data(), B, Hkv, Nk, D); }
  ConstView<float, 4> V() const { return make_view<const float>(v.data(), B, Hkv, Nk, D); }
  View<float, 4> O() { return make_view(out.data(), B, H, Nq, D); }
  View<float, 3> L() { return make_view(lse.data(), B, H, Nq); }
  bool untouched() const {
    for (float x : out)
      if (x != 42.f) return false;
    for (float x : lse)
      if (x != 42.f) return false;
    return true;
  }
};

/// Expects exception E whose message contains every fragment, and no write.
template <class E, class F>
void expect_throw(Buffers& b, F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    static_assert(std::is_base_of<std::invalid_argument, E>::value, "every effattn error is a std::invalid_argument");
    const std::string msg = e.what();
    for (const char* frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << "message: " << msg << " lacks " << frag;
  }
  EXPECT_TRUE(b.untouched());
}

TEST(Errors, ShapeMismatches) {
  Buffers b;
  expect_throw<shape_error>(b, [&] {
    attention<float>(b.Q(), make_view<const float>(b.k.data(), b.B, b.Hkv, b.Nk, 4), b.V(), b.O());
  }, {"attention", "k must be [B,Hkv,Nk,D]=[2,2,7,8], got [2,2,7,4]"});
  expect_throw<shape_error>(b, [&] {
    attention<float>(b.Q(), b.K(), make_view<const float>(b.v.data(), b.B, b.Hkv, b.Nk - 1, b.D), b.O());
  }, {"attention", "v must be [B,Hkv,Nk,Dv]", "got [2,2,6,8]"});
  expect_throw<shape_error>(b, [&] {
    attention<float>(b.Q(), b.K(), b.V(), make_view(b.out.data(), b.B, b.H, b.Nq - 1, b.D));
  }, {"out must be [B,H,Nq,Dv]=[2,4,5,8]"});
  expect_throw<shape_error>(b, [&] {
    attention<float>(b.Q(), b.K(), b.V(), b.O(), NoMask{}, NoScore{}, {}, {}, make_view(b.lse.data(), b.B, b.H, 4));
  }, {"lse must be [B,H,Nq]"});
  expect_throw<shape_error>(b, [&] {
    attention<float>(make_view<const float>(b.q.data(), b.B, 3, b.Nq, b.D), b.K(), b.V(),
                     make_view(b.out.data(), b.B, 3, b.Nq, b.D));
  }, {"H=3", "multiple of k/v heads Hkv=2"});
  expect_throw<shape_error>(b, [&] {
    attention<float>(make_view<const float>(b.q.data(), b.B, b.H, b.Nq, 0), make_view<const float>(b.k.data(), b.B, b.Hkv, b.Nk, 0),
                     b.V(), b.O());
  }, {"head_dim"});
}

TEST(Errors, PointersAndStrides) {
  Buffers b;
  expect_throw<shape_error>(b, [&] {
    attention<float>(View<const float, 4>(nullptr, {b.B, b.H, b.Nq, b.D}), b.K(), b.V(), b.O());
  }, {"q is a null pointer"});
  expect_throw<shape_error>(b, [&] {
    attention<float>(b.Q(), View<const float, 4>(b.k.data(), {b.B, b.Hkv, b.Nk, b.D}, {-1, 1, 1, 1}), b.V(), b.O());
  }, {"k has a negative stride"});
  expect_throw<shape_error>(b, [&] {
    attention<float>(b.Q(), b.K(), b.V(), View<float, 4>(b.out.data(), {b.B, b.H, b.Nq, b.D}, {0, 0, b.D, 1}));
  }, {"output out has overlapping elements"});
  expect_throw<shape_error>(b, [&] {
    attention<float>(b.Q(), b.K(), b.V(), View<float, 4>(b.out.data(), {b.B, b.H, -1, b.D}));
  }, {"negative extent"});
  // Broadcast (stride 0) inputs are fine.
  std::vector<float> o2(b.out.size());
  EXPECT_NO_THROW(attention<float>(View<const float, 4>(b.q.data(), {b.B, b.H, b.Nq, b.D}, {0, 0, b.D, 1}), b.K(), b.V(),
                                   make_view(o2.data(), b.B, b.H, b.Nq, b.D)));
}

TEST(Errors, OutputAliasingAnInput) {
  Buffers b;
  std::vector<float> buf(b.q.size() * 2, 1.f);
  auto qv = make_view<const float>(buf.data(), b.B, b.H, b.Nq, b.D);
  try {
    attention<float>(qv, b.K(), b.V(), make_view(buf.data() + 3, b.B, b.H, b.Nq, b.D));
    ADD_FAILURE() << "no exception";
  } catch (const shape_error& e) {
    EXPECT_NE(std::string(e.what()).find("out must not share memory with input q"), std::string::npos) << e.what();
  }
  for (float x : buf) EXPECT_EQ(x, 1.f);
}

TEST(Errors, Parameters) {
  Buffers b;
  for (double s : {-1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    AttentionOptions opt;
    opt.scale = s;
    expect_throw<parameter_error>(b, [&] { attention<float>(b.Q(), b.K(), b.V(), b.O(), NoMask{}, NoScore{}, opt); },
                                  {"attention", "scale must be finite and > 0"});
  }
  AttentionOptions opt;
  opt.block_q = 4097;
  expect_throw<parameter_error>(b, [&] { attention<float>(b.Q(), b.K(), b.V(), b.O(), NoMask{}, NoScore{}, opt); },
                                {"block_q must be in [0, 4096]"});
  opt.block_q = -1;
  expect_throw<parameter_error>(b, [&] { attention<float>(b.Q(), b.K(), b.V(), b.O(), NoMask{}, NoScore{}, opt); },
                                {"block_q must be in [0, 4096]"});
  opt = {};
  opt.block_k = -3;
  expect_throw<parameter_error>(b, [&] { attention<float>(b.Q(), b.K(), b.V(), b.O(), NoMask{}, NoScore{}, opt); },
                                {"block_k"});
  expect_throw<parameter_error>(b, [&] { attention<float>(b.Q(), b.K(), b.V(), b.O(), NoMask{}, NoScore{}, {}, Executor{-2}); },
                                {"num_threads"});
}

TEST(Errors, PolicyParameters) {
  Buffers b;
  std::vector<index_t> lim(b.B * b.Nq, 3);
  expect_throw<shape_error>(b, [&] {
    attention<float>(b.Q(), b.K(), b.V(), b.O(), KeyLimitMask{make_view<const index_t>(lim.data(), b.B, b.Nq - 1)});
  }, {"limit must be [B,Nq]"});
  lim[3] = b.Nk + 1;
  expect_throw<parameter_error>(b, [&] {
    attention<float>(b.Q(), b.K(), b.V(), b.O(), KeyLimitMask{make_view<const index_t>(lim.data(), b.B, b.Nq)});
  }, {"limit[0,3]=8 must be in [0, Nk=7]"});
  lim[3] = 1;
  expect_throw<parameter_error>(b, [&] {
    attention<float>(b.Q(), b.K(), b.V(), b.O(), KeyLimitMask{make_view<const index_t>(lim.data(), b.B, b.Nq)});
  }, {"non-decreasing"});
  std::vector<float> bias(b.B * b.Nk);
  expect_throw<shape_error>(b, [&] {
    attention<float>(b.Q(), b.K(), b.V(), b.O(), NoMask{}, KeyBiasScore{make_view<const float>(bias.data(), b.B, b.Nk + 1)});
  }, {"bias must be [B,Nk]"});
}

TEST(Errors, ExceptionsAreInvalidArgument) {
  Buffers b;
  EXPECT_THROW(attention<float>(b.Q(), b.Q(), b.V(), b.O()), std::invalid_argument);
  EXPECT_THROW(attention_reference<float>(b.Q(), b.Q(), b.V(), b.O()), std::invalid_argument);
  EXPECT_THROW(attention_materialized<float>(b.Q(), b.Q(), b.V(), b.O()), std::invalid_argument);
  EXPECT_TRUE(b.untouched());
}

TEST(Errors, ExceptionInsideParallelRegionIsRethrown) {
  Buffers b;
  auto bad = make_functor_score([](index_t, index_t, index_t i, index_t) -> double {
    if (i == 3) throw std::runtime_error("score failed");
    return 0.0;
  });
  EXPECT_THROW(attention<float>(b.Q(), b.K(), b.V(), b.O(), NoMask{}, bad, {}, Executor{2}), std::runtime_error);
}

}  // namespace

namespace {

TEST(Options, BlockQIsRoundedUpToTheTileQuantum) {
  // Any block_q in [1, 4096] works on every machine: it is rounded up to the
  // micro-tile width, so quantum + 1 runs exactly as 2 * quantum does.
  const index_t B = 1, H = 2, N = 300, D = 16, Q = effattn::detail::attention_query_tile_quantum();
  std::vector<float> q(B * H * N * D), k(q.size()), v(q.size());
  for (size_t i = 0; i < q.size(); ++i) {
    q[i] = static_cast<float>((i * 7) % 13) / 13.0f - 0.5f;
    k[i] = static_cast<float>((i * 5) % 11) / 11.0f - 0.5f;
    v[i] = static_cast<float>((i * 3) % 17) / 17.0f;
  }
  const auto Qv = make_view<const float>(q.data(), B, H, N, D), Kv = make_view<const float>(k.data(), B, H, N, D),
             Vv = make_view<const float>(v.data(), B, H, N, D);
  std::vector<float> odd(q.size()), even(q.size()), def(q.size());
  AttentionOptions o;
  o.block_q = Q + 1;
  attention<float>(Qv, Kv, Vv, make_view(odd.data(), B, H, N, D), CausalMask{}, NoScore{}, o);
  o.block_q = 2 * Q;
  attention<float>(Qv, Kv, Vv, make_view(even.data(), B, H, N, D), CausalMask{}, NoScore{}, o);
  EXPECT_EQ(odd, even);
  o.block_q = 1;  // one micro-tile column
  attention<float>(Qv, Kv, Vv, make_view(def.data(), B, H, N, D), CausalMask{}, NoScore{}, o);
  o.block_q = Q;
  attention<float>(Qv, Kv, Vv, make_view(even.data(), B, H, N, D), CausalMask{}, NoScore{}, o);
  EXPECT_EQ(def, even);
}

// attention() static_asserts that its mask and score arguments are policies.
static_assert(is_mask_policy<NoMask>::value && is_mask_policy<CausalMask>::value &&
                  is_mask_policy<OffsetCausalMask>::value && is_mask_policy<KeyLimitMask>::value,
              "the library's masks are mask policies");
static_assert(is_score_policy<NoScore>::value && is_score_policy<KeyBiasScore>::value, "scores are score policies");
static_assert(!is_mask_policy<int>::value && !is_mask_policy<NoScore>::value && !is_mask_policy<KeyBiasScore>::value,
              "a score or a number is not a mask policy");
static_assert(!is_score_policy<NoMask>::value && !is_score_policy<double>::value,
              "a mask or a number is not a score policy");

}  // namespace
