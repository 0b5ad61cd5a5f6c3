// SPDX-License-Identifier: MIT
// Tests of selective attention: golden cases, F properties, the tiled prefill
// against the dense reference, decoding with and without pruning, bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <effattn/effattn.hpp>
#include <effattn/selective/selective.hpp>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/golden.hpp"
#include "support/levels.hpp"
#include "support/testing.hpp"

using namespace effattn;

namespace {

/// q, k, v for one problem, contiguous [B,H,N,D] / [B,Hkv,N,D] / [B,Hkv,N,Dv].
struct Problem {
  index_t B, H, Hkv, N, D, Dv;
  std::vector<float> q, k, v;
  Problem(index_t B_, index_t H_, index_t Hkv_, index_t N_, index_t D_, index_t Dv_, unsigned seed)
      : B(B_), H(H_), Hkv(Hkv_), N(N_), D(D_), Dv(Dv_) {
    q = testing_util::random_vector(static_cast<size_t>(B * H * N * D), seed);
    k = testing_util::random_vector(static_cast<size_t>(B * Hkv * N * D), seed + 1);
    v = testing_util::random_vector(static_cast<size_t>(B * Hkv * N * Dv), seed + 2);
  }
  ConstView<float, 4> qv() const { return make_view(q.data(), B, H, N, D); }
  ConstView<float, 4> kv() const { return make_view(k.data(), B, Hkv, N, D); }
  ConstView<float, 4> vv() const { return make_view(v.data(), B, Hkv, N, Dv); }
  /// Token t of q/k/v as a one-token view (strided into the full arrays).
  ConstView<float, 4> q_at(index_t t) const {
    return ConstView<float, 4>(q.data() + t * D, {B, H, 1, D}, {H * N * D, N * D, D, 1});
  }
  ConstView<float, 4> k_at(index_t t) const {
    return ConstView<float, 4>(k.data() + t * D, {B, Hkv, 1, D}, {Hkv * N * D, N * D, D, 1});
  }
  ConstView<float, 4> v_at(index_t t) const {
    return ConstView<float, 4>(v.data() + t * Dv, {B, Hkv, 1, Dv}, {Hkv * N * Dv, N * Dv, Dv, 1});
  }
  size_t out_size() const { return static_cast<size_t>(B * H * N * Dv); }
};

View<float, 4> out_view(std::vector<float>& o, const Problem& p) { return make_view(o.data(), p.B, p.H, p.N, p.Dv); }

/// Makes the selection head's logits <= 0 everywhere (S == 0, F == 0):
/// positive keys of head hs / G and negative queries of head hs.
void kill_selection(Problem& p, index_t hs) {
  const index_t G = p.H / p.Hkv;
  for (index_t b = 0; b < p.B; ++b)
    for (index_t i = 0; i < p.N; ++i)
      for (index_t e = 0; e < p.D; ++e) {
        float& qe = p.q[static_cast<size_t>(((b * p.H + hs) * p.N + i) * p.D + e)];
        float& ke = p.k[static_cast<size_t>(((b * p.Hkv + hs / G) * p.N + i) * p.D + e)];
        qe = -std::fabs(qe);
        ke = std::fabs(ke);
      }
}

template <class A>
bool bit_equal(const A& a, const A& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0;
}

/// Checks one eviction choice of the cache against reference eviction scores
/// score(j) (the smallest F over the groups, kv_cache.hpp): position 0 is
/// never evicted, and every evicted candidate scores at least as high as every
/// kept one (to `tol`: the cache rounds the same S terms differently), an
/// exact tie going to the older position. Returns whether the choice was
/// decisive: every evicted score above every kept one by more than tol, so
/// that a wrong rule (smallest F first, say) would have failed here.
template <class Score>
bool check_eviction(const std::vector<index_t>& candidates, const std::vector<index_t>& evicted, Score score,
                    double tol) {
  std::vector<index_t> kept;
  for (index_t j : candidates)
    if (j != 0 && std::find(evicted.begin(), evicted.end(), j) == evicted.end()) kept.push_back(j);
  bool decisive = true;
  for (index_t e : evicted) {
    EXPECT_NE(e, 0) << "position 0 evicted";
    EXPECT_NE(std::find(candidates.begin(), candidates.end(), e), candidates.end()) << e << " was not cached";
    for (index_t k : kept) {
      const double se = score(e), sk = score(k);
      EXPECT_GE(se, sk - tol) << "evicted " << e << " (score " << se << ") but kept " << k << " (score " << sk << ")";
      if (se == sk) {
        EXPECT_LT(e, k) << "tie between " << e << " and " << k << ": the older position goes first";
      }
      decisive = decisive && se > sk + tol;
    }
  }
  return decisive;
}

/// A host pool of real threads for Executor::parallel_for: each call splits
/// [0, n) into up to `parts` ranges, starts one std::thread per range (in
/// reverse order of the ranges), joins them, and records what it was given
/// and which threads ran the library's body.
struct ThreadPoolHook {
  int parts = 3;
  std::mutex mu;
  long calls = 0;           // parallel_for calls
  long split_calls = 0;     // calls that got n > 1 and ran more than one range
  long max_threads = 0;     // most distinct threads that ran body in one call
  bool caller_ran = false;  // body ran on the calling thread (it never should)

  Executor executor() {
    Executor ex;
    ex.parallel_for = [this](index_t n, const std::function<void(index_t, index_t)>& body) { run(n, body); };
    return ex;
  }

  void run(index_t n, const std::function<void(index_t, index_t)>& body) {
    const std::thread::id caller = std::this_thread::get_id();
    std::set<std::thread::id> seen;
    std::vector<index_t> starts;
    const index_t chunk = std::max<index_t>(1, (n + parts - 1) / parts);
    for (index_t b = 0; b < n; b += chunk) starts.push_back(b);
    const long ranges = static_cast<long>(starts.size());
    std::vector<std::thread> ts;
    for (auto it = starts.rbegin(); it != starts.rend(); ++it) {
      const index_t b = *it, e = std::min(n, b + chunk);
      ts.emplace_back([&, b, e] {
        body(b, e);
        std::lock_guard<std::mutex> lock(mu);
        seen.insert(std::this_thread::get_id());
        if (std::this_thread::get_id() == caller) caller_ran = true;
      });
    }
    for (auto& t : ts) t.join();
    std::lock_guard<std::mutex> lock(mu);
    ++calls;
    if (n > 1 && ranges > 1) ++split_calls;
    max_threads = std::max(max_threads, static_cast<long>(seen.size()));
  }
};

}  // namespace

// ------------------------------------------------------------------ golden

TEST(SelectiveGolden, AllCases) {
  const auto names = golden::cases("selective_");
  ASSERT_GE(names.size(), 4u);
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    golden::Case c(name);
    const auto qa = c.array("q"), ka = c.array("k"), va = c.array("v");
    const index_t B = qa.dim(0), H = qa.dim(1), N = qa.dim(2), D = qa.dim(3), Hkv = ka.dim(1), Dv = va.dim(3);
    const auto q = qa.as_float(), k = ka.as_float(), v = va.as_float();
    selective::SelectiveOptions opt;
    opt.attention.scale = c.params["params"]["scale"].get<double>();
    opt.selection_head = c.params["params"]["selection_head"].get<index_t>();
    const auto qv = make_view(q.data(), B, H, N, D);
    const auto kv = make_view(k.data(), B, Hkv, N, D);
    const auto vv = make_view(v.data(), B, Hkv, N, Dv);

    // Dense reference: S, F, out, lse.
    std::vector<float> out(static_cast<size_t>(B * H * N * Dv)), lse(static_cast<size_t>(B * H * N));
    std::vector<double> S(static_cast<size_t>(B * N * N)), F(S.size());
    selective::selective_attention_reference<float>(qv, kv, vv, make_view(out.data(), B, H, N, Dv), opt,
                                         make_view(lse.data(), B, H, N), make_view(S.data(), B, index_t(1), N, N),
                                         make_view(F.data(), B, index_t(1), N, N));
    for (const auto& role : {"intermediate", "output"})
      for (const auto& a : c.arrays(role)) {
        const auto want = c.array(a).data;
        const std::vector<double>* got = nullptr;
        std::vector<double> tmp;
        if (a == "S") {
          got = &S;
        } else if (a == "F") {
          got = &F;
        } else if (a == "out") {
          got = &(tmp = std::vector<double>(out.begin(), out.end()));
        } else if (a == "lse") {
          got = &(tmp = std::vector<double>(lse.begin(), lse.end()));
        }
        ASSERT_NE(got, nullptr) << "unexpected golden array " << a;
        testing_util::expect_close(*got, want, c.atol, c.rtol, "reference " + a);
      }

    // Tiled prefill (small query tiles: several tiles even at N = 37), 1 and 2 threads.
    selective::SelectiveOptions topt = opt;
    topt.attention.block_q = effattn::detail::attention_query_tile_quantum();
    std::vector<float> o1(out.size()), o2(out.size()), l1(lse.size()), l2(lse.size());
    std::vector<double> fn(static_cast<size_t>(B * N)), fn2(fn.size());
    selective::selective_attention<float>(qv, kv, vv, make_view(o1.data(), B, H, N, Dv), topt, Executor{1},
                               make_view(l1.data(), B, H, N), make_view(fn.data(), B, index_t(1), N));
    selective::selective_attention<float>(qv, kv, vv, make_view(o2.data(), B, H, N, Dv), topt, Executor{2},
                               make_view(l2.data(), B, H, N), make_view(fn2.data(), B, index_t(1), N));
    testing_util::expect_close(o1, c.array("out").data, c.atol, c.rtol, "tiled out");
    testing_util::expect_close(l1, c.array("lse").data, c.atol, c.rtol, "tiled lse");
    EXPECT_TRUE(bit_equal(o1, o2) && bit_equal(l1, l2) && bit_equal(fn, fn2)) << "1 vs 2 threads";
    // f_next = F's next row = F[N-1, :] + S[N-1, :].
    const auto Fg = c.array("F").data, Sg = c.array("S").data;
    std::vector<double> want_next(fn.size());
    for (index_t b = 0; b < B; ++b)
      for (index_t j = 0; j < N; ++j)
        want_next[b * N + j] = Fg[(b * N + N - 1) * N + j] + Sg[(b * N + N - 1) * N + j];
    testing_util::expect_close(fn, want_next, 2 * c.atol, c.rtol, "tiled f_next");

    // Decoding token by token without pruning reproduces the golden output.
    selective::SelectiveKVCache<float> cache(B, H, Hkv, D, Dv, N + 1, opt);
    std::vector<float> od(out.size()), ld(lse.size()), step_out(static_cast<size_t>(B * H * Dv)), step_lse(B * H);
    for (index_t t = 0; t < N; ++t) {
      auto at = [&](const std::vector<float>& x, index_t heads, index_t d) {
        return ConstView<float, 4>(x.data() + t * d, {B, heads, 1, d}, {heads * N * d, N * d, d, 1});
      };
      cache.step(at(q, H, D), at(k, Hkv, D), at(v, Hkv, Dv), make_view(step_out.data(), B, H, index_t(1), Dv),
                 Executor{1}, make_view(step_lse.data(), B, H, index_t(1)));
      for (index_t bh = 0; bh < B * H; ++bh) {
        for (index_t e = 0; e < Dv; ++e) od[(bh * N + t) * Dv + e] = step_out[bh * Dv + e];
        ld[bh * N + t] = step_lse[bh];
      }
    }
    testing_util::expect_close(od, c.array("out").data, c.atol, c.rtol, "decode out");
    testing_util::expect_close(ld, c.array("lse").data, c.atol, c.rtol, "decode lse");
  }
}

// ------------------------------------------------------------ F properties

TEST(SelectiveF, Properties) {
  Problem p(2, 3, 3, 41, 16, 16, 11);
  const index_t N = p.N;
  std::vector<float> out(p.out_size());
  std::vector<double> S(static_cast<size_t>(p.B * N * N)), F(S.size());
  selective::SelectiveOptions opt;
  opt.selection_head = 1;
  selective::selective_attention_reference<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), opt, {},
                                       make_view(S.data(), p.B, index_t(1), N, N), make_view(F.data(), p.B, index_t(1), N, N));
  double fmax = 0;
  for (index_t b = 0; b < p.B; ++b)
    for (index_t i = 0; i < N; ++i)
      for (index_t j = 0; j < N; ++j) {
        const double f = F[(b * N + i) * N + j], s = S[(b * N + i) * N + j];
        fmax = std::max(fmax, f);
        EXPECT_GE(s, 0.0);
        if (j == 0 || j >= i) {
          EXPECT_EQ(s, 0.0) << "S[" << i << "," << j << "]";
        }
        if (j == 0 || i == 0 || j >= i - 1) {
          EXPECT_EQ(f, 0.0) << "F[" << i << "," << j << "]";
        }
        if (i > 0) {
          EXPECT_GE(f, F[(b * N + i - 1) * N + j]) << "F must not decrease down column " << j;
        }
      }
  EXPECT_GT(fmax, 1.0) << "the data should actually mask something";
  // The tiled prefill's f_next equals the reference F's next row.
  std::vector<double> fn(static_cast<size_t>(p.B * N));
  opt.attention.block_q = effattn::detail::attention_query_tile_quantum();
  selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), opt, {}, {}, make_view(fn.data(), p.B, index_t(1), N));
  for (index_t b = 0; b < p.B; ++b)
    for (index_t j = 0; j < N; ++j)
      EXPECT_NEAR(fn[b * N + j], F[(b * N + N - 1) * N + j] + S[(b * N + N - 1) * N + j], 1e-5 * (1 + fmax));
}

// A hand-made case: D = N = 4, k_j = e_j and scale 1, so the selection logits
// are C[i][j] = q_i[j]. Only S[2][1] = 2, S[3][1] = 1 and S[3][2] = 3 are
// nonzero. Summing over earlier queries gives F[3] = [0, 2, 0, 0]; summing
// over earlier keys (the wrong axis) would give [0, 0, 1, 4] instead.
TEST(SelectiveF, HandMadeWrongAxis) {
  const float q[4 * 4] = {0.3f, 0.f, 0.f, 0.f,  //
                          0.7f, -0.4f, 0.f, 0.f,  //
                          -0.2f, 2.0f, 0.9f, 0.f,  //
                          0.5f, 1.0f, 3.0f, -1.0f};
  float k[16] = {0}, v[16] = {0};
  for (int j = 0; j < 4; ++j) k[j * 4 + j] = v[j * 4 + j] = 1.0f;  // v_j = e_j: out row = the probabilities
  selective::SelectiveOptions opt;
  opt.attention.scale = 1.0;
  const auto qv = make_view(q, 1, 1, 4, 4), kv = make_view<const float>(k, 1, 1, 4, 4), vv = make_view<const float>(v, 1, 1, 4, 4);
  std::vector<float> ref(16), tiled(16);
  std::vector<double> F(16);
  selective::selective_attention_reference<float>(qv, kv, vv, make_view(ref.data(), 1, 1, 4, 4), opt, {}, {},
                                       make_view(F.data(), 1, 1, 4, 4));
  const std::vector<double> want_f = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0};
  EXPECT_EQ(F, want_f);
  selective::selective_attention<float>(qv, kv, vv, make_view(tiled.data(), 1, 1, 4, 4), opt);
  // Row 3 by hand: softmax([0.5, 1 - 2, 3, -1]); wrong axis: softmax([0.5, 1, 3 - 1, -1 - 4]).
  auto softmax = [](std::vector<double> x) {
    double m = *std::max_element(x.begin(), x.end()), s = 0;
    for (auto& e : x) s += (e = std::exp(e - m));
    for (auto& e : x) e /= s;
    return x;
  };
  const auto want = softmax({0.5, -1.0, 3.0, -1.0}), wrong = softmax({0.5, 1.0, 2.0, -5.0});
  for (int j = 0; j < 4; ++j) {
    EXPECT_NEAR(ref[12 + j], want[j], 1e-6);
    EXPECT_NEAR(tiled[12 + j], want[j], 1e-6);
  }
  double dist = 0;
  for (int j = 0; j < 4; ++j) dist = std::max(dist, std::fabs(want[j] - wrong[j]));
  EXPECT_GT(dist, 0.1) << "the case must tell the axes apart";
  // Rows 0-2 see no masking at all (F = 0 there): plain causal softmax.
  const auto row2 = softmax({-0.2, 2.0, 0.9});
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(tiled[8 + j], row2[j], 1e-6);
}

TEST(SelectiveF, ZeroSelectionIsCausal) {
  Problem p(2, 4, 2, 150, 32, 24, 21);
  kill_selection(p, 0);
  std::vector<float> sel(p.out_size()), causal(p.out_size());
  std::vector<double> fn(static_cast<size_t>(p.B * p.N));
  selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(sel, p), {}, {}, {}, make_view(fn.data(), p.B, index_t(1), p.N));
  flash_attention<float>(p.qv(), p.kv(), p.vv(), out_view(causal, p), {0, true});
  for (double f : fn) ASSERT_EQ(f, 0.0);
  testing_util::expect_close(sel, causal, 1e-6, 1e-6, "S == 0 must be causal attention");
}

// ------------------------------------------------- tiled prefill vs reference

struct Shape {
  index_t B, H, Hkv, N, D, Dv;
  std::vector<index_t> groups;  // group_selection_heads (empty: head `sel`)
  index_t sel;
  bool small_tiles;
};

void PrintTo(const Shape& s, std::ostream* os) {
  *os << "B=" << s.B << " H=" << s.H << " Hkv=" << s.Hkv << " N=" << s.N << " D=" << s.D << " Dv=" << s.Dv
      << " groups=" << s.groups.size() << " sel=" << s.sel << (s.small_tiles ? " small tiles" : "");
}

class SelectiveTiled : public ::testing::TestWithParam<Shape> {};

TEST_P(SelectiveTiled, MatchesReference) {
  const Shape s = GetParam();
  Problem p(s.B, s.H, s.Hkv, s.N, s.D, s.Dv, static_cast<unsigned>(s.N * 7 + s.H));
  selective::SelectiveOptions opt;
  opt.selection_head = s.sel;
  opt.group_selection_heads = s.groups;
  const index_t ng = s.groups.empty() ? 1 : static_cast<index_t>(s.groups.size());
  if (s.small_tiles) {
    opt.attention.block_q = effattn::detail::attention_query_tile_quantum();
    opt.attention.block_k = 16;
  }
  std::vector<float> ref(p.out_size()), got(p.out_size()), got2(p.out_size());
  std::vector<float> lref(static_cast<size_t>(s.B * s.H * s.N)), lgot(lref.size()), lgot2(lref.size());
  std::vector<double> F(static_cast<size_t>(s.B * ng * s.N * s.N)), S(F.size());
  std::vector<double> fn(static_cast<size_t>(s.B * ng * s.N)), fn2(fn.size());
  selective::selective_attention_reference<float>(p.qv(), p.kv(), p.vv(), out_view(ref, p), opt, make_view(lref.data(), s.B, s.H, s.N),
                                       make_view(S.data(), s.B, ng, s.N, s.N), make_view(F.data(), s.B, ng, s.N, s.N));
  // At every instruction-set level the host supports (the same tolerances;
  // bits compared across threads within a level).
  for (const Isa level : testing_util::isa_levels()) {
    SCOPED_TRACE(to_string(level));
    testing_util::ScopedIsa at(level);
    if (s.small_tiles) opt.attention.block_q = effattn::detail::attention_query_tile_quantum();
    selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(got, p), opt, Executor{1},
                                          make_view(lgot.data(), s.B, s.H, s.N), make_view(fn.data(), s.B, ng, s.N));
    testing_util::expect_close(got, ref, 2e-5, 2e-5, "out");
    testing_util::expect_close(lgot, lref, 2e-5, 2e-5, "lse");
    for (index_t bg = 0; bg < s.B * ng; ++bg)
      for (index_t j = 0; j < s.N; ++j) {
        const size_t last = static_cast<size_t>((bg * s.N + s.N - 1) * s.N + j);
        EXPECT_NEAR(fn[bg * s.N + j], F[last] + S[last], 1e-5 * (1 + std::fabs(F[last] + S[last])));
      }
    // Two threads: bit-identical.
    selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(got2, p), opt, Executor{2},
                                          make_view(lgot2.data(), s.B, s.H, s.N), make_view(fn2.data(), s.B, ng, s.N));
    EXPECT_TRUE(bit_equal(got, got2) && bit_equal(lgot, lgot2) && bit_equal(fn, fn2)) << "1 vs 2 threads";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SelectiveTiled,
    ::testing::Values(Shape{1, 1, 1, 1, 8, 8, {}, 0, false}, Shape{1, 2, 1, 2, 8, 8, {}, 1, true},
                      Shape{2, 1, 1, 3, 8, 8, {}, 0, true}, Shape{1, 3, 3, 17, 40, 24, {}, 2, true},
                      Shape{2, 4, 2, 113, 40, 40, {}, 3, true}, Shape{1, 4, 2, 203, 64, 48, {}, 0, false},
                      Shape{1, 4, 4, 203, 16, 16, {0, 3}, 0, true}, Shape{2, 6, 3, 97, 24, 8, {5, 1, 2}, 0, true},
                      Shape{1, 2, 2, 300, 32, 32, {}, 0, false}, Shape{1, 1, 1, 530, 16, 16, {}, 0, false}));

TEST(SelectiveTiledMore, StridedInputsAndHook) {
  // q, k, v and out stored as [B, N, H, D] (token-major), read through views.
  const index_t B = 2, H = 4, N = 77, D = 24;
  auto qd = testing_util::random_vector(static_cast<size_t>(B * N * H * D), 5);
  auto kd = testing_util::random_vector(qd.size(), 6), vd = testing_util::random_vector(qd.size(), 7);
  const std::array<index_t, 4> shape{B, H, N, D}, strides{N * H * D, D, H * D, 1};
  ConstView<float, 4> q(qd.data(), shape, strides), k(kd.data(), shape, strides), v(vd.data(), shape, strides);
  std::vector<float> od(qd.size()), ref(qd.size()), hook(qd.size());
  View<float, 4> o(od.data(), shape, strides);
  selective::SelectiveOptions opt;
  opt.attention.block_q = effattn::detail::attention_query_tile_quantum();
  std::vector<float> serial(qd.size());
  selective::selective_attention<float>(q, k, v, View<float, 4>(serial.data(), shape, strides), opt, Executor{1});
  selective::selective_attention<float>(q, k, v, o, opt, Executor{2});
  selective::selective_attention_reference<float>(q, k, v, View<float, 4>(ref.data(), shape, strides), opt);
  testing_util::expect_close(serial, ref, 2e-5, 2e-5, "strided");
  EXPECT_TRUE(bit_equal(serial, od)) << "1 vs 2 threads";
  // A host pool: the ranges run concurrently on std::threads, started in
  // reverse order. The same bits as Executor(1).
  ThreadPoolHook pool;
  selective::selective_attention<float>(q, k, v, View<float, 4>(hook.data(), shape, strides), opt, pool.executor());
  EXPECT_TRUE(bit_equal(serial, hook)) << "host pool vs Executor(1)";
  // The pool really ran the work: every query tile has a parallel loop over
  // its B x H = 8 heads, and the loops were split over several ranges that
  // ran on threads other than the caller's.
  const index_t ntiles = (N + opt.attention.block_q - 1) / opt.attention.block_q;
  EXPECT_GE(pool.split_calls, ntiles) << "the hook must see more than one range";
  EXPECT_GE(pool.max_threads, 2) << "distinct threads that ran work in one call";
  EXPECT_FALSE(pool.caller_ran);
}

TEST(SelectiveTiledMore, DoublePrecision) {
  const index_t B = 1, H = 2, N = 45, D = 8;
  auto qf = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 31);
  auto kf = testing_util::random_vector(qf.size(), 32), vf = testing_util::random_vector(qf.size(), 33);
  std::vector<double> q(qf.begin(), qf.end()), k(kf.begin(), kf.end()), v(vf.begin(), vf.end()), o(q.size()), r(q.size());
  selective::SelectiveOptions opt;
  opt.attention.block_q = effattn::detail::attention_query_tile_quantum();
  selective::selective_attention<double>(make_view<const double>(q.data(), B, H, N, D), make_view<const double>(k.data(), B, H, N, D),
                              make_view<const double>(v.data(), B, H, N, D), make_view(o.data(), B, H, N, D), opt);
  selective::selective_attention_reference<double>(make_view<const double>(q.data(), B, H, N, D),
                                        make_view<const double>(k.data(), B, H, N, D),
                                        make_view<const double>(v.data(), B, H, N, D), make_view(r.data(), B, H, N, D), opt);
  testing_util::expect_close(o, r, 1e-11, 1e-11, "double");
}

// opt.attention.backend = Backend::reference runs the dense oracle: the bits
// of selective_attention_reference, and f_next = F's last row + S's last row
// exactly; the cache then prefills and decodes on the reference engine too.
TEST(SelectiveTiledMore, ReferenceBackend) {
  Problem p(2, 4, 2, 37, 16, 8, 35);
  const index_t B = p.B, H = p.H, N = p.N, ng = 2;
  selective::SelectiveOptions opt;
  opt.group_selection_heads = {1, 2};
  opt.attention.backend = Backend::reference;
  std::vector<float> ref(p.out_size()), got(p.out_size()), tiled(p.out_size());
  std::vector<float> lref(static_cast<size_t>(B * H * N)), lgot(lref.size());
  std::vector<double> S(static_cast<size_t>(B * ng * N * N)), F(S.size()), fn(static_cast<size_t>(B * ng * N));
  selective::selective_attention_reference<float>(p.qv(), p.kv(), p.vv(), out_view(ref, p), opt,
                                                  make_view(lref.data(), B, H, N), make_view(S.data(), B, ng, N, N),
                                                  make_view(F.data(), B, ng, N, N));
  selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(got, p), opt, Executor{2},
                                        make_view(lgot.data(), B, H, N), make_view(fn.data(), B, ng, N));
  EXPECT_TRUE(bit_equal(ref, got) && bit_equal(lref, lgot)) << "reference backend vs selective_attention_reference";
  for (index_t bg = 0; bg < B * ng; ++bg)
    for (index_t j = 0; j < N; ++j) {
      const size_t last = static_cast<size_t>((bg * N + N - 1) * N + j);
      EXPECT_EQ(fn[static_cast<size_t>(bg * N + j)], F[last] + S[last]) << "bg=" << bg << " j=" << j;
    }
  selective::SelectiveOptions topt = opt;
  topt.attention.backend = Backend::tiled;
  selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(tiled, p), topt);
  testing_util::expect_close(tiled, ref, 2e-5, 2e-5, "tiled vs reference backend");

  // The cache on either backend (no pruning: the same tokens stay cached).
  const index_t prompt = 15;
  selective::SelectiveKVCache<float> cr(B, H, p.Hkv, p.D, p.Dv, N, opt), ct(B, H, p.Hkv, p.D, p.Dv, N, topt);
  auto sub = [&](const std::vector<float>& x, index_t heads, index_t d) {
    return ConstView<float, 4>(x.data(), {B, heads, prompt, d}, {heads * N * d, N * d, d, 1});
  };
  std::vector<float> pr(static_cast<size_t>(B * H * prompt * p.Dv)), pt(pr.size());
  cr.prefill(sub(p.q, H, p.D), sub(p.k, p.Hkv, p.D), sub(p.v, p.Hkv, p.Dv), make_view(pr.data(), B, H, prompt, p.Dv));
  ct.prefill(sub(p.q, H, p.D), sub(p.k, p.Hkv, p.D), sub(p.v, p.Hkv, p.Dv), make_view(pt.data(), B, H, prompt, p.Dv));
  testing_util::expect_close(pr, pt, 2e-5, 2e-5, "cache prefill, reference vs tiled backend");
  std::vector<float> sr(static_cast<size_t>(B * H * p.Dv)), st(sr.size());
  for (index_t t = prompt; t < N; ++t) {
    cr.step(p.q_at(t), p.k_at(t), p.v_at(t), make_view(sr.data(), B, H, index_t(1), p.Dv));
    ct.step(p.q_at(t), p.k_at(t), p.v_at(t), make_view(st.data(), B, H, index_t(1), p.Dv));
    testing_util::expect_close(sr, st, 2e-5, 2e-5, "cache step, reference vs tiled backend");
  }

  // An unknown backend is rejected everywhere, before anything is written.
  selective::SelectiveOptions bad;
  bad.attention.backend = static_cast<Backend>(7);
  std::vector<float> untouched(p.out_size(), 42.0f), out = untouched;
  EXPECT_THROW(selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), bad), parameter_error);
  EXPECT_THROW(selective::selective_attention_reference<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), bad),
               parameter_error);
  EXPECT_THROW(selective::SelectiveKVCache<float>(B, H, p.Hkv, p.D, p.Dv, 4, bad), parameter_error);
  EXPECT_EQ(out, untouched);
}

TEST(SelectiveTiledMore, LongContextFDoesNotDrift) {
  // F's last row sums ~N ReLU terms; float64 accumulation keeps it at the
  // precision of the terms themselves.
  Problem p(1, 1, 1, 3000, 16, 16, 41);
  std::vector<float> out(p.out_size());
  std::vector<double> fn(static_cast<size_t>(p.N));
  selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), {}, {}, {}, make_view(fn.data(), 1, 1, p.N));
  // Column sums in double from the inputs.
  const double scale = 0.25;
  double worst = 0;
  for (index_t j : {1, 2, 100, 1500}) {
    double want = 0;
    for (index_t i = j + 1; i < p.N; ++i) {
      double c = 0;
      for (index_t e = 0; e < p.D; ++e) c += double(p.q[i * p.D + e]) * double(p.k[j * p.D + e]);
      want += std::max(0.0, c * scale);
    }
    worst = std::max(worst, std::fabs(fn[j] - want) / want);
  }
  EXPECT_LT(worst, 2e-6);
}

// ------------------------------------------------------------------ decoding

TEST(SelectiveDecode, StepsWithoutPruningEqualPrefill) {
  Problem p(2, 4, 2, 70, 32, 16, 51);
  std::vector<float> pre(p.out_size());
  selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(pre, p));
  // (a) from the first token; (b) a 30-token prompt, then steps.
  for (index_t prompt : {index_t(0), index_t(30)}) {
    SCOPED_TRACE(prompt);
    selective::SelectiveKVCache<float> cache(p.B, p.H, p.Hkv, p.D, p.Dv, p.N);
    std::vector<float> got(p.out_size()), step(static_cast<size_t>(p.B * p.H * p.Dv));
    if (prompt > 0) {
      std::vector<float> po(static_cast<size_t>(p.B * p.H * prompt * p.Dv));
      auto sub = [&](const std::vector<float>& x, index_t heads, index_t d) {
        return ConstView<float, 4>(x.data(), {p.B, heads, prompt, d}, {heads * p.N * d, p.N * d, d, 1});
      };
      cache.prefill(sub(p.q, p.H, p.D), sub(p.k, p.Hkv, p.D), sub(p.v, p.Hkv, p.Dv),
                    make_view(po.data(), p.B, p.H, prompt, p.Dv));
      for (index_t bh = 0; bh < p.B * p.H; ++bh)
        for (index_t i = 0; i < prompt; ++i)
          for (index_t e = 0; e < p.Dv; ++e) got[(bh * p.N + i) * p.Dv + e] = po[(bh * prompt + i) * p.Dv + e];
    }
    for (index_t t = prompt; t < p.N; ++t) {
      cache.step(p.q_at(t), p.k_at(t), p.v_at(t), make_view(step.data(), p.B, p.H, index_t(1), p.Dv));
      EXPECT_TRUE(cache.last_evicted(0).empty() && cache.last_evicted(1).empty());
      for (index_t bh = 0; bh < p.B * p.H; ++bh)
        for (index_t e = 0; e < p.Dv; ++e) got[(bh * p.N + t) * p.Dv + e] = step[bh * p.Dv + e];
    }
    EXPECT_EQ(cache.size(), p.N);
    testing_util::expect_close(got, pre, 2e-5, 2e-5, "decode vs prefill");
  }
}

// Pruned decoding equals dense selective attention in which query t also gets
// -inf on exactly the tokens evicted up to (and at) step t. Every eviction is
// checked against the reference F (S, hence F, does not depend on pruning):
// the victim is the cached token with the largest min over groups of F.
TEST(SelectiveDecode, PrunedEqualsDenseWithEvictedMasked) {
  for (auto groups : {std::vector<index_t>{}, std::vector<index_t>{1, 2}}) {
    SCOPED_TRACE(groups.size());
    Problem p(2, 4, 2, 60, 16, 16, 61);
    const index_t N = p.N, K = 7, prompt = 12;
    selective::SelectiveOptions opt;
    opt.group_selection_heads = groups;
    const index_t ng = groups.empty() ? 1 : 2;
    // Reference F[b][g][i][j] = sum_{i' < i} S[b][g][i'][j]: what the cache
    // holds for token j just before query i.
    std::vector<double> F(static_cast<size_t>(p.B * ng * N * N));
    std::vector<float> scratch(p.out_size()), want(p.out_size());
    selective::selective_attention_reference<float>(p.qv(), p.kv(), p.vv(), out_view(scratch, p), opt, {}, {},
                                         make_view(F.data(), p.B, ng, N, N));
    auto f_ref = [&](index_t b, index_t g, index_t i, index_t j) {
      return F[static_cast<size_t>(((b * ng + g) * N + i) * N + j)];
    };
    // Eviction score of token j before query i (kv_cache.hpp): min over groups.
    auto evict_score = [&](index_t b, index_t i, index_t j) {
      double sc = f_ref(b, 0, i, j);
      for (index_t g = 1; g < ng; ++g) sc = std::min(sc, f_ref(b, g, i, j));
      return sc;
    };
    const double tol = 1e-4;  // cache (float S terms) vs reference (float64)
    // The cache's running F of every cached token against the reference, before query i.
    auto expect_f = [&](const selective::SelectiveKVCache<float>& c, index_t i) {
      for (index_t b = 0; b < p.B; ++b) {
        const auto pos = c.positions(b);
        for (index_t s = 0; s < c.size(); ++s)
          for (index_t g = 0; g < ng; ++g) {
            const double want_f = f_ref(b, g, i, pos[static_cast<size_t>(s)]);
            ASSERT_NEAR(c.f(b, s, g), want_f, tol * (1 + want_f))
                << "b=" << b << " slot=" << s << " g=" << g << " i=" << i;
          }
      }
    };
    index_t decisive = 0, choices = 0;

    selective::SelectiveKVCache<float> cache(p.B, p.H, p.Hkv, p.D, p.Dv, K, opt);
    // evicted_at[b][j] = the step whose query first can no longer see j.
    std::vector<std::vector<index_t>> evicted_at(p.B, std::vector<index_t>(N, N + 1));
    std::vector<float> got(p.out_size());
    std::vector<float> po(static_cast<size_t>(p.B * p.H * prompt * p.Dv)), step(static_cast<size_t>(p.B * p.H * p.Dv));
    auto sub = [&](const std::vector<float>& x, index_t heads, index_t d) {
      return ConstView<float, 4>(x.data(), {p.B, heads, prompt, d}, {heads * N * d, N * d, d, 1});
    };
    cache.prefill(sub(p.q, p.H, p.D), sub(p.k, p.Hkv, p.D), sub(p.v, p.Hkv, p.Dv), make_view(po.data(), p.B, p.H, prompt, p.Dv));
    for (index_t b = 0; b < p.B; ++b) {
      EXPECT_EQ(static_cast<index_t>(cache.last_evicted(b).size()), prompt - K);
      for (index_t j : cache.last_evicted(b)) evicted_at[b][j] = prompt;
      // The expected evicted set: the prompt - K largest scores of positions
      // 1 .. prompt-1 (ties: oldest first), exact where the cut is decisive.
      auto score = [&](index_t j) { return evict_score(b, prompt, j); };
      std::vector<index_t> order(static_cast<size_t>(prompt - 1));
      for (index_t j = 1; j < prompt; ++j) order[static_cast<size_t>(j - 1)] = j;
      std::stable_sort(order.begin(), order.end(), [&](index_t x, index_t y) {
        return score(x) != score(y) ? score(x) > score(y) : x < y;
      });
      std::vector<index_t> want_ev(order.begin(), order.begin() + (prompt - K)), got_ev = cache.last_evicted(b);
      std::sort(want_ev.begin(), want_ev.end());
      std::sort(got_ev.begin(), got_ev.end());
      EXPECT_GT(score(order[static_cast<size_t>(prompt - K - 1)]), score(order[static_cast<size_t>(prompt - K)]) + tol)
          << "the prefill cut is not decisive for this data: pick another seed";
      EXPECT_EQ(got_ev, want_ev) << "b=" << b;
      std::vector<index_t> all(static_cast<size_t>(prompt));
      for (index_t j = 0; j < prompt; ++j) all[static_cast<size_t>(j)] = j;
      decisive += check_eviction(all, cache.last_evicted(b), score, tol);
      ++choices;
    }
    expect_f(cache, prompt);
    for (index_t bh = 0; bh < p.B * p.H; ++bh)
      for (index_t i = 0; i < prompt; ++i)
        for (index_t e = 0; e < p.Dv; ++e) got[(bh * N + i) * p.Dv + e] = po[(bh * prompt + i) * p.Dv + e];
    for (index_t t = prompt; t < N; ++t) {
      std::vector<std::vector<index_t>> before(static_cast<size_t>(p.B));
      for (index_t b = 0; b < p.B; ++b) before[static_cast<size_t>(b)] = cache.positions(b);
      cache.step(p.q_at(t), p.k_at(t), p.v_at(t), make_view(step.data(), p.B, p.H, index_t(1), p.Dv), Executor{2});
      ASSERT_EQ(cache.size(), K);
      for (index_t b = 0; b < p.B; ++b) {
        ASSERT_EQ(cache.last_evicted(b).size(), 1u);
        const index_t j = cache.last_evicted(b)[0];
        EXPECT_NE(j, 0);
        EXPECT_EQ(evicted_at[b][j], N + 1) << "evicted twice";
        evicted_at[b][j] = t;
        // The victim has the largest score before query t among the cached tokens.
        const auto& cand = before[static_cast<size_t>(b)];
        decisive += check_eviction(cand, cache.last_evicted(b), [&](index_t x) { return evict_score(b, t, x); }, tol);
        ++choices;
        // The cache now holds the others and t.
        std::vector<index_t> want_pos;
        for (index_t x : cand)
          if (x != j) want_pos.push_back(x);
        want_pos.push_back(t);
        auto pos = cache.positions(b);
        std::sort(want_pos.begin(), want_pos.end());
        std::sort(pos.begin(), pos.end());
        EXPECT_EQ(pos, want_pos) << "b=" << b << " t=" << t;
      }
      if (t + 1 < N) expect_f(cache, t + 1);
      for (index_t bh = 0; bh < p.B * p.H; ++bh)
        for (index_t e = 0; e < p.Dv; ++e) got[(bh * N + t) * p.Dv + e] = step[bh * p.Dv + e];
    }
    // Most choices were clear-cut (otherwise the checks above prove little).
    EXPECT_GE(decisive * 4, choices * 3) << decisive << " of " << choices << " eviction choices were decisive";

    // Dense oracle: F from the reference, the evicted set as a mask.
    const index_t hpg = p.H / ng;
    auto mask = make_predicate_mask([&](index_t b, index_t, index_t i, index_t j) { return j <= i && i < evicted_at[b][j]; });
    auto score = make_functor_score([&](index_t b, index_t h, index_t i, index_t j) {
      return -F[static_cast<size_t>(((b * ng + h / hpg) * N + i) * N + j)];
    });
    attention_reference<float>(p.qv(), p.kv(), p.vv(), out_view(want, p), mask, score);
    testing_util::expect_close(got, want, 2e-5, 2e-5, "pruned decode vs dense with evicted masked");
    // Pruning changed something (otherwise the test would be vacuous).
    EXPECT_GT(testing_util::max_abs_diff(want, scratch), 1e-3);
  }
}

// With S == 0 every F is 0: the tie rule (oldest first) makes the cache a
// sliding window plus the first token, which is never evicted.
TEST(SelectiveDecode, FirstTokenNeverEvictedAndTieRule) {
  Problem p(1, 2, 1, 40, 8, 8, 71);
  kill_selection(p, 0);
  for (index_t K : {index_t(2), index_t(5)}) {
    selective::SelectiveKVCache<float> cache(p.B, p.H, p.Hkv, p.D, p.Dv, K);
    std::vector<float> step(static_cast<size_t>(p.H * p.Dv));
    for (index_t t = 0; t < p.N; ++t) {
      cache.step(p.q_at(t), p.k_at(t), p.v_at(t), make_view(step.data(), p.B, p.H, index_t(1), p.Dv));
      auto pos = cache.positions(0);
      std::sort(pos.begin(), pos.end());
      std::vector<index_t> want{0};
      for (index_t j = std::max<index_t>(1, t - K + 2); j <= t; ++j) want.push_back(j);
      ASSERT_EQ(pos, want) << "K=" << K << " t=" << t;
    }
  }
  // The same rule in prefill: the prompt's oldest tokens after token 0 go.
  {
    const index_t K = 5, P = 12;
    selective::SelectiveKVCache<float> cache(p.B, p.H, p.Hkv, p.D, p.Dv, K);
    std::vector<float> po(static_cast<size_t>(p.H * P * p.Dv));
    auto sub = [&](const std::vector<float>& x, index_t heads, index_t d) {
      return ConstView<float, 4>(x.data(), {p.B, heads, P, d}, {heads * p.N * d, p.N * d, d, 1});
    };
    cache.prefill(sub(p.q, p.H, p.D), sub(p.k, p.Hkv, p.D), sub(p.v, p.Hkv, p.Dv),
                  make_view(po.data(), p.B, p.H, P, p.Dv));
    auto evicted = cache.last_evicted(0), pos = cache.positions(0);
    std::sort(evicted.begin(), evicted.end());
    std::sort(pos.begin(), pos.end());
    EXPECT_EQ(evicted, (std::vector<index_t>{1, 2, 3, 4, 5, 6, 7}));
    EXPECT_EQ(pos, (std::vector<index_t>{0, 8, 9, 10, 11}));
  }
  // With real selection data token 0 (F == 0 always) is never evicted either.
  Problem r(2, 2, 2, 80, 8, 8, 72);
  selective::SelectiveKVCache<float> cache(r.B, r.H, r.Hkv, r.D, r.Dv, 3);
  std::vector<float> step(static_cast<size_t>(r.B * r.H * r.Dv));
  for (index_t t = 0; t < r.N; ++t) {
    cache.step(r.q_at(t), r.k_at(t), r.v_at(t), make_view(step.data(), r.B, r.H, index_t(1), r.Dv));
    for (index_t b = 0; b < r.B; ++b) {
      const auto pos = cache.positions(b);
      EXPECT_NE(std::find(pos.begin(), pos.end(), 0), pos.end());
      EXPECT_NE(std::find(pos.begin(), pos.end(), t), pos.end());
    }
  }
}

TEST(SelectiveDecode, BudgetAtLeastNIsNoPruning) {
  Problem p(1, 3, 3, 50, 16, 16, 81);
  std::vector<std::vector<float>> outs;
  for (index_t K : {p.N, 10 * p.N, index_t(1) << 40}) {
    selective::SelectiveKVCache<float> cache(p.B, p.H, p.Hkv, p.D, p.Dv, K);
    std::vector<float> all(p.out_size()), step(static_cast<size_t>(p.H * p.Dv));
    for (index_t t = 0; t < p.N; ++t) {
      cache.step(p.q_at(t), p.k_at(t), p.v_at(t), make_view(step.data(), p.B, p.H, index_t(1), p.Dv));
      EXPECT_TRUE(cache.last_evicted(0).empty());
      for (index_t h = 0; h < p.H; ++h)
        for (index_t e = 0; e < p.Dv; ++e) all[(h * p.N + t) * p.Dv + e] = step[h * p.Dv + e];
    }
    EXPECT_EQ(cache.size(), p.N);
    EXPECT_LE(cache.kv_bytes(), static_cast<size_t>(2 * p.N * p.Hkv * (p.D + p.Dv) * sizeof(float)));
    outs.push_back(all);
  }
  EXPECT_TRUE(bit_equal(outs[0], outs[1]) && bit_equal(outs[0], outs[2]));
  std::vector<float> ref(p.out_size());
  selective::selective_attention_reference<float>(p.qv(), p.kv(), p.vv(), out_view(ref, p));
  testing_util::expect_close(outs[0], ref, 2e-5, 2e-5, "no pruning vs reference");
}

TEST(SelectiveDecode, MemoryIsBoundedAndThreadsBitIdentical) {
  // A small budget: memory stays bounded, and a host pool gives the bits of
  // Executor(1) (steps this small run on the calling thread anyway: the
  // engine's small-work rule, effattn::detail::executor_for).
  {
    Problem p(2, 4, 2, 120, 16, 16, 91);
    const index_t K = 9;
    selective::SelectiveKVCache<float> c1(p.B, p.H, p.Hkv, p.D, p.Dv, K), c2(p.B, p.H, p.Hkv, p.D, p.Dv, K);
    std::vector<float> s1(static_cast<size_t>(p.B * p.H * p.Dv)), s2(s1.size());
    ThreadPoolHook pool;
    pool.parts = 2;
    const Executor parallel = pool.executor();
    for (index_t t = 0; t < p.N; ++t) {
      c1.step(p.q_at(t), p.k_at(t), p.v_at(t), make_view(s1.data(), p.B, p.H, index_t(1), p.Dv), Executor{1});
      c2.step(p.q_at(t), p.k_at(t), p.v_at(t), make_view(s2.data(), p.B, p.H, index_t(1), p.Dv), parallel);
      ASSERT_TRUE(bit_equal(s1, s2)) << "t=" << t;
    }
    EXPECT_FALSE(pool.caller_ran);
    EXPECT_EQ(c1.kv_bytes(), static_cast<size_t>(p.B * p.Hkv * K * (p.D + p.Dv) * sizeof(float)));
    EXPECT_EQ(c1.tokens_seen(), p.N);
  }
  // A budget large enough that the later steps pass the small-work cut-off:
  // those steps hand their query rows to the pool, split over two ranges that
  // run on two threads (never the caller's), with the bits of Executor(1).
  {
    Problem p(1, 4, 4, 420, 64, 64, 92);
    const index_t K = 400;
    selective::SelectiveKVCache<float> c1(p.B, p.H, p.Hkv, p.D, p.Dv, K), c2(p.B, p.H, p.Hkv, p.D, p.Dv, K);
    std::vector<float> s1(static_cast<size_t>(p.B * p.H * p.Dv)), s2(s1.size());
    ThreadPoolHook pool;
    pool.parts = 2;
    const Executor parallel = pool.executor();
    for (index_t t = 0; t < p.N; ++t) {
      c1.step(p.q_at(t), p.k_at(t), p.v_at(t), make_view(s1.data(), p.B, p.H, index_t(1), p.Dv), Executor{1});
      c2.step(p.q_at(t), p.k_at(t), p.v_at(t), make_view(s2.data(), p.B, p.H, index_t(1), p.Dv), parallel);
      ASSERT_TRUE(bit_equal(s1, s2)) << "t=" << t;
    }
    EXPECT_GT(pool.calls, 0) << "the large steps must reach the pool";
    EXPECT_LT(pool.calls, p.N) << "the small first steps run on the calling thread";
    EXPECT_EQ(pool.split_calls, pool.calls) << "every call must split its rows over more than one range";
    EXPECT_EQ(pool.max_threads, 2);
    EXPECT_FALSE(pool.caller_ran);
    EXPECT_EQ(c1.size(), K);
  }
}

TEST(SelectiveDecode, DoubleCache) {
  const index_t H = 2, N = 20, D = 8;
  auto qf = testing_util::random_vector(static_cast<size_t>(H * N * D), 101);
  auto kf = testing_util::random_vector(qf.size(), 102), vf = testing_util::random_vector(qf.size(), 103);
  std::vector<double> q(qf.begin(), qf.end()), k(kf.begin(), kf.end()), v(vf.begin(), vf.end()), ref(q.size()), got(q.size());
  selective::selective_attention_reference<double>(make_view<const double>(q.data(), 1, H, N, D), make_view<const double>(k.data(), 1, H, N, D),
                                        make_view<const double>(v.data(), 1, H, N, D), make_view(ref.data(), 1, H, N, D));
  selective::SelectiveKVCache<double> cache(1, H, H, D, D, N);
  std::vector<double> step(static_cast<size_t>(H * D));
  for (index_t t = 0; t < N; ++t) {
    auto at = [&](const std::vector<double>& x) {
      return ConstView<double, 4>(x.data() + t * D, {1, H, 1, D}, {H * N * D, N * D, D, 1});
    };
    cache.step(at(q), at(k), at(v), make_view(step.data(), 1, H, 1, D));
    for (index_t h = 0; h < H; ++h)
      for (index_t e = 0; e < D; ++e) got[(h * N + t) * D + e] = step[h * D + e];
  }
  testing_util::expect_close(got, ref, 1e-11, 1e-11, "double decode");
}

// ------------------------------------------------------------ memory measure

TEST(SelectiveMemory, Requirement) {
  const double row[5] = {0.0, 0.25, 1.0, 7.0, -0.0};
  EXPECT_DOUBLE_EQ(selective::selective_memory_requirement(make_view(row, 5)), 5 - (0.25 + 1 + 1));
  EXPECT_DOUBLE_EQ(selective::selective_memory_requirement(make_view(row, 5), 2.0), 5 - (0.125 + 0.5 + 1));
  EXPECT_THROW(selective::selective_memory_requirement(make_view(row, 5), 0.0), parameter_error);

  Problem p(1, 2, 1, 30, 8, 8, 111);
  std::vector<double> m(static_cast<size_t>(p.N)), F(static_cast<size_t>(p.N * p.N));
  std::vector<float> out(p.out_size());
  selective::selective_memory_profile<float>(p.qv(), p.kv(), make_view(m.data(), 1, p.N));
  selective::selective_attention_reference<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), {}, {}, {}, make_view(F.data(), 1, 1, p.N, p.N));
  for (index_t i = 0; i < p.N; ++i) {
    const double want = selective::selective_memory_requirement(ConstView<double, 1>(F.data() + i * p.N, {i + 1}));
    EXPECT_NEAR(m[i], want, 1e-9);
    EXPECT_LE(m[i], i + 1.0);
    EXPECT_GE(m[i], 1.0);  // token 0 and the query itself are never masked
  }
}

// ------------------------------------------------------------------ bad input

TEST(SelectiveErrors, Throws) {
  Problem p(1, 4, 2, 10, 8, 8, 121);
  std::vector<float> out(p.out_size(), 42.0f);
  const auto untouched = out;
  selective::SelectiveOptions bad;
  bad.selection_head = 4;
  EXPECT_THROW(selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), bad), parameter_error);
  EXPECT_THROW(selective::selective_attention_reference<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), bad), parameter_error);
  bad.selection_head = -1;
  EXPECT_THROW(selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), bad), parameter_error);
  selective::SelectiveOptions groups;
  groups.group_selection_heads = {0, 1, 2};  // 3 does not divide H = 4
  EXPECT_THROW(selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), groups), parameter_error);
  groups.group_selection_heads = {0, 7};
  EXPECT_THROW(selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), groups), parameter_error);
  // Mismatched shapes: k with fewer tokens, v with another D, out with another N.
  EXPECT_THROW(selective::selective_attention<float>(p.qv(), make_view(p.k.data(), 1, 2, 9, 8), p.vv(), out_view(out, p)), shape_error);
  EXPECT_THROW(selective::selective_attention<float>(p.qv(), p.kv(), make_view(p.v.data(), 1, 2, 10, 7), out_view(out, p)), shape_error);
  EXPECT_THROW(selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), make_view(out.data(), 1, 4, 9, 8)), shape_error);
  std::vector<double> fn(5);
  EXPECT_THROW(selective::selective_attention<float>(p.qv(), p.kv(), p.vv(), out_view(out, p), {}, {}, {}, make_view(fn.data(), 1, 1, 5)),
               shape_error);
  EXPECT_EQ(out, untouched) << "nothing may be written before a throw";

  // The cache.
  EXPECT_THROW(selective::SelectiveKVCache<float>(1, 4, 2, 8, 8, 1), parameter_error);
  EXPECT_THROW(selective::SelectiveKVCache<float>(1, 4, 2, 8, 8, 0), parameter_error);
  selective::SelectiveOptions sel5;
  sel5.selection_head = 5;
  EXPECT_THROW(selective::SelectiveKVCache<float>(1, 4, 2, 8, 8, 4, sel5), parameter_error);
  EXPECT_THROW(selective::SelectiveKVCache<float>(1, 4, 3, 8, 8, 4), parameter_error);
  selective::SelectiveKVCache<float> cache(1, 4, 2, 8, 8, 4);
  std::vector<float> step(32, 42.0f);
  const auto step0 = step;
  EXPECT_THROW(cache.step(p.q_at(0), p.k_at(0), make_view(p.v.data(), 1, 2, 1, 7), make_view(step.data(), 1, 4, 1, 8)),
               shape_error);
  EXPECT_THROW(cache.step(p.q_at(0), make_view(p.k.data(), 1, 2, 2, 8), p.v_at(0), make_view(step.data(), 1, 4, 1, 8)),
               shape_error);
  EXPECT_THROW(cache.step(p.q_at(0), p.k_at(0), p.v_at(0), make_view(step.data(), 1, 3, 1, 8)), shape_error);
  // The messages name the operator, the parameter and the shapes.
  auto expect_message = [](auto&& f, std::initializer_list<const char*> fragments) {
    try {
      f();
      ADD_FAILURE() << "no exception";
    } catch (const shape_error& e) {
      const std::string msg = e.what();
      for (const char* frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << msg << " lacks " << frag;
    }
  };
  expect_message(
      [&] { cache.step(p.q_at(0), p.k_at(0), make_view(p.v.data(), 1, 2, 1, 7), make_view(step.data(), 1, 4, 1, 8)); },
      {"SelectiveKVCache::step", "v must be [B,Hkv,N,Dv]=[1,2,1,8], got [1,2,1,7]"});
  expect_message([&] { cache.step(p.q_at(0), p.k_at(0), p.v_at(0), make_view(step.data(), 1, 3, 1, 8)); },
                 {"SelectiveKVCache::step", "out must be", "[1,4,1,8], got [1,3,1,8]"});
  std::vector<float> lse(8);
  auto step_lse = [&](View<float, 3> l) {
    cache.step(p.q_at(0), p.k_at(0), p.v_at(0), make_view(step.data(), 1, 4, 1, 8), {}, l);
  };
  expect_message([&] { step_lse(make_view(lse.data(), 1, 4, 2)); },
                 {"SelectiveKVCache::step", "lse must be", "[1,4,1], got [1,4,2]"});
  expect_message([&] { step_lse(make_view(step.data(), 1, 4, 1)); },
                 {"SelectiveKVCache::step", "lse must not share memory with input out"});
  expect_message([&] { cache.step(p.q_at(0), p.k_at(0), p.v_at(0), make_view(p.q.data(), 1, 4, 1, 8)); },
                 {"SelectiveKVCache::step", "out must not share memory with input q"});
  EXPECT_EQ(step, step0);
  EXPECT_EQ(lse, std::vector<float>(8));
  EXPECT_EQ(cache.tokens_seen(), 0);
  cache.step(p.q_at(0), p.k_at(0), p.v_at(0), make_view(step.data(), 1, 4, 1, 8));
  std::vector<float> po(p.out_size());
  EXPECT_THROW(cache.prefill(p.qv(), p.kv(), p.vv(), out_view(po, p)), parameter_error);  // not empty
  EXPECT_THROW(cache.positions(1), parameter_error);
}
