// SPDX-License-Identifier: MIT
// ToMe / ToMe for diffusion: the fast paths against obvious dense references on
// odd shapes, documented tie and zero-norm behaviour, thread invariance, and bad
// input (throws, writes nothing).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <effattn/tome/tome.hpp>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <thread>

#include "support/testing.hpp"

namespace tome = effattn::tome;
using effattn::index_t;
using effattn::make_view;

namespace {

/// Dense reference of the official algorithm (float64 cosine scores).
struct RefPlan {
  index_t r = 0;
  std::vector<index_t> unm, src, dst;
  std::vector<double> node_max, second;  // best and second-best per A token (for margins)
  std::vector<index_t> node_idx;
  double min_margin = 1e9;               // smallest decision margin seen
};

RefPlan reference_matching(const std::vector<float>& metric, index_t B, index_t N, index_t C,
                           const std::vector<index_t>& a, const std::vector<index_t>& bset, index_t r, bool prot_a0,
                           bool prot_b0, bool sort_unm) {
  RefPlan p;
  const index_t na = a.size(), nb = bset.size();
  p.r = r;
  const double ninf = -std::numeric_limits<double>::infinity();
  for (index_t b = 0; b < B; ++b) {
    auto unit = [&](index_t t) {
      std::vector<double> v(C);
      double s = 0;
      for (index_t c = 0; c < C; ++c) s += double(metric[(b * N + t) * C + c]) * metric[(b * N + t) * C + c];
      s = std::sqrt(s);
      for (index_t c = 0; c < C; ++c) v[c] = s > 0 ? metric[(b * N + t) * C + c] / s : 0.0;
      return v;
    };
    std::vector<double> nm(na);
    for (index_t i = 0; i < na; ++i) {
      auto ai = unit(a[i]);
      double best = ninf, sec = ninf;
      index_t arg = 0;
      for (index_t j = 0; j < nb; ++j) {
        if ((prot_a0 && i == 0) || (prot_b0 && j == 0)) continue;
        auto bj = unit(bset[j]);
        double s = 0;
        for (index_t c = 0; c < C; ++c) s += ai[c] * bj[c];
        if (s > best) {
          sec = best;
          best = s;
          arg = j;
        } else if (s > sec) {
          sec = s;
        }
      }
      nm[i] = best;
      p.node_max.push_back(best);
      p.node_idx.push_back(arg);
      if (std::isfinite(best) && std::isfinite(sec)) p.min_margin = std::min(p.min_margin, best - sec);
    }
    std::vector<index_t> order(na);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](index_t x, index_t y) { return nm[x] > nm[y]; });
    for (index_t k = 0; k + 1 < na; ++k)
      if (std::isfinite(nm[order[k + 1]]) && k + 1 <= r) p.min_margin = std::min(p.min_margin, nm[order[k]] - nm[order[k + 1]]);
    std::vector<index_t> unm(order.begin() + r, order.end());
    if (sort_unm) std::sort(unm.begin(), unm.end());
    for (index_t k = 0; k < r; ++k) {
      p.src.push_back(order[k]);
      p.dst.push_back(p.node_idx[b * na + order[k]]);
    }
    p.unm.insert(p.unm.end(), unm.begin(), unm.end());
  }
  return p;
}

std::vector<index_t> evens(index_t N) {
  std::vector<index_t> v;
  for (index_t t = 0; t < N; t += 2) v.push_back(t);
  return v;
}
std::vector<index_t> odds(index_t N) {
  std::vector<index_t> v;
  for (index_t t = 1; t < N; t += 2) v.push_back(t);
  return v;
}

/// Naive merge of x by a plan's decisions (independent of the group tables).
std::vector<double> naive_merge(const tome::MergePlan& p, const std::vector<float>& x, index_t C, tome::MergeMode mode) {
  const index_t B = p.batch, N = p.tokens, Np = p.out_tokens();
  std::vector<double> out(B * Np * C);
  if (p.r == 0) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = x[i];
    return out;
  }
  const index_t nu = p.num_unmerged(), nb = p.num_b();
  for (index_t b = 0; b < B; ++b) {
    std::vector<double> dst(nb * C), cnt(nb, 1);
    for (index_t j = 0; j < nb; ++j)
      for (index_t c = 0; c < C; ++c) dst[j * C + c] = x[(b * N + p.b_tok[j]) * C + c];
    for (index_t k = 0; k < p.r; ++k) {
      const index_t j = p.dst_idx[b * p.r + k], t = p.a_tok[p.src_idx[b * p.r + k]];
      cnt[j] += 1;
      for (index_t c = 0; c < C; ++c) {
        const double v = x[(b * N + t) * C + c];
        dst[j * C + c] = mode == tome::MergeMode::amax ? std::max(dst[j * C + c], v) : dst[j * C + c] + v;
      }
    }
    std::vector<std::vector<double>> rows;
    for (index_t k = 0; k < nu; ++k) {
      const index_t t = p.a_tok[p.unm_idx[b * nu + k]];
      rows.emplace_back(x.begin() + (b * N + t) * C, x.begin() + (b * N + t + 1) * C);
    }
    std::vector<std::vector<double>> drows;
    for (index_t j = 0; j < nb; ++j) {
      std::vector<double> r(C);
      for (index_t c = 0; c < C; ++c) r[c] = mode == tome::MergeMode::mean ? dst[j * C + c] / cnt[j] : dst[j * C + c];
      drows.push_back(r);
    }
    std::vector<std::vector<double>> all;
    if (p.distill_layout) {
      all.push_back(rows[0]);
      all.push_back(drows[0]);
      all.insert(all.end(), rows.begin() + 1, rows.end());
      all.insert(all.end(), drows.begin() + 1, drows.end());
    } else {
      all = rows;
      all.insert(all.end(), drows.begin(), drows.end());
    }
    for (index_t g = 0; g < Np; ++g)
      for (index_t c = 0; c < C; ++c) out[(b * Np + g) * C + c] = all[g][c];
  }
  return out;
}

struct Shape {
  index_t B, N, C, r;
  bool cls, dist;
};

/// An Executor whose hook runs every parallel step it is handed on `parts`
/// std::threads (last range started first) and counts the steps in `calls`.
/// Steps below effattn::executor_for's cutoff never reach the hook, so a
/// count > 0 shows that a step really took the parallel path.
effattn::Executor counting_executor(std::atomic<int>& calls, int parts = 3) {
  effattn::Executor ex;
  ex.parallel_for = [&calls, parts](index_t n, const std::function<void(index_t, index_t)>& body) {
    ++calls;
    std::vector<std::thread> threads;
    for (int i = parts - 1; i >= 0; --i) {
      const index_t b = n * i / parts, e = n * (i + 1) / parts;
      if (b < e) threads.emplace_back(body, b, e);
    }
    for (auto& t : threads) t.join();
  };
  return ex;
}

}  // namespace

TEST(TomeMatching, FastEqualsReferenceOnOddShapes) {
  const std::vector<Shape> shapes = {{1, 1, 3, 1, false, false},  {2, 2, 1, 1, false, false},   {1, 3, 5, 1, true, false},
                                     {3, 4, 7, 1, true, true},    {2, 5, 17, 9, false, false},  {1, 64, 64, 16, true, false},
                                     {2, 65, 40, 20, true, false}, {1, 129, 33, 64, false, false}, {2, 197, 64, 16, true, false},
                                     {1, 300, 80, 100, true, true}, {3, 131, 3, 30, false, false}};
  unsigned seed = 7;
  int matched = 0, verified = 0;  // shapes with r_eff > 0 / with their indices checked
  for (const auto& s : shapes) {
    auto metric = testing_util::random_vector(s.B * s.N * s.C, ++seed);
    tome::MatchOptions opt{s.cls, s.dist};
    auto plan = tome::bipartite_soft_matching(make_view<const float>(metric.data(), s.B, s.N, s.C), s.r, opt);
    const index_t prot = (s.cls ? 1 : 0) + (s.dist ? 1 : 0);
    const index_t r_eff = std::max<index_t>(0, std::min(s.r, (s.N - prot) / 2));
    ASSERT_EQ(plan.r, r_eff) << "N=" << s.N;
    ASSERT_EQ(plan.out_tokens(), s.N - r_eff);
    if (r_eff == 0) continue;
    ++matched;
    auto ref = reference_matching(metric, s.B, s.N, s.C, evens(s.N), odds(s.N), r_eff, s.cls, s.dist, s.cls);
    testing_util::expect_close(plan.node_max, ref.node_max, 1e-5, 1e-5, "node_max");
    if (ref.min_margin > 1e-5) {
      ++verified;
      EXPECT_EQ(plan.node_idx, ref.node_idx) << "N=" << s.N;
      EXPECT_EQ(plan.src_idx, ref.src);
      EXPECT_EQ(plan.dst_idx, ref.dst);
      EXPECT_EQ(plan.unm_idx, ref.unm);
    }
    // Merge modes against the naive scatter-reduce.
    const index_t Cx = 5;
    auto x = testing_util::random_vector(s.B * s.N * Cx, ++seed);
    for (auto mode : {tome::MergeMode::mean, tome::MergeMode::sum, tome::MergeMode::amax}) {
      std::vector<float> out(s.B * plan.out_tokens() * Cx);
      tome::merge<float>(plan, make_view<const float>(x.data(), s.B, s.N, Cx),
                         make_view(out.data(), s.B, plan.out_tokens(), Cx), mode);
      testing_util::expect_close(out, naive_merge(plan, x, Cx, mode), 1e-5, 1e-5, "merge");
    }
    if (s.cls) {
      // The class token stays first (and the distillation token second).
      for (index_t b = 0; b < s.B; ++b) {
        EXPECT_EQ(plan.row_of[b * s.N + 0], 0);
        if (s.dist) {
          EXPECT_EQ(plan.row_of[b * s.N + 1], 1);
        }
      }
    }
  }
  // A near-tie (margin below float resolution) may legitimately flip a
  // decision; it must stay the exception, or the index checks above check nothing.
  ASSERT_EQ(matched, 10);
  ASSERT_GE(verified, matched - 1) << "only " << verified << " of " << matched << " shapes had their indices checked";
}

TEST(TomeMatching, StridedMetricView) {
  const index_t B = 2, N = 37, C = 9, r = 11;
  auto metric = testing_util::random_vector(B * N * C, 3);
  // The same tensor stored [N, B, C+2] (permuted and padded).
  std::vector<float> store(N * B * (C + 2), 1e30f);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < N; ++t)
      for (index_t c = 0; c < C; ++c) store[(t * B + b) * (C + 2) + c] = metric[(b * N + t) * C + c];
  effattn::ConstView<float, 3> strided(store.data(), {B, N, C}, {C + 2, B * (C + 2), 1});
  auto p1 = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), r, {true, false});
  auto p2 = tome::bipartite_soft_matching(strided, r, {true, false});
  EXPECT_EQ(p1.src_idx, p2.src_idx);
  EXPECT_EQ(p1.dst_idx, p2.dst_idx);
  EXPECT_EQ(p1.unm_idx, p2.unm_idx);
  EXPECT_EQ(p1.node_max, p2.node_max);
  // Strided x and out (channel stride 2) give the same merge, wavg and unmerge.
  const index_t Cx = 6, Np = p1.out_tokens();
  auto x = testing_util::random_vector(B * N * Cx, 4);
  std::vector<float> xs(B * N * Cx * 2, -1.0f);
  for (size_t i = 0; i < x.size(); ++i) xs[2 * i] = x[i];
  effattn::ConstView<float, 3> xv(xs.data(), {B, N, Cx}, {N * Cx * 2, Cx * 2, 2});
  for (auto mode : {tome::MergeMode::mean, tome::MergeMode::sum, tome::MergeMode::amax}) {
    std::vector<float> a(B * Np * Cx), bstore(B * Np * Cx * 2, 7.0f);
    tome::merge<float>(p1, make_view<const float>(x.data(), B, N, Cx), make_view(a.data(), B, Np, Cx), mode);
    tome::merge<float>(p1, xv, effattn::View<float, 3>(bstore.data(), {B, Np, Cx}, {Np * Cx * 2, Cx * 2, 2}), mode);
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(a[i], bstore[2 * i]);
      ASSERT_EQ(bstore[2 * i + 1], 7.0f);  // the gaps are never written
    }
  }
  std::vector<float> sz(B * N, 2.0f), a(B * Np * Cx), as(B * Np), bst(B * Np * Cx * 2), bs(B * Np);
  tome::merge_wavg<float>(p1, make_view<const float>(x.data(), B, N, Cx), make_view<const float>(sz.data(), B, N),
                          make_view(a.data(), B, Np, Cx), make_view(as.data(), B, Np));
  tome::merge_wavg<float>(p1, xv, make_view<const float>(sz.data(), B, N),
                          effattn::View<float, 3>(bst.data(), {B, Np, Cx}, {Np * Cx * 2, Cx * 2, 2}),
                          make_view(bs.data(), B, Np));
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], bst[2 * i]);
  EXPECT_EQ(as, bs);
  std::vector<float> u1(B * N * Cx), u2(B * N * Cx * 2);
  tome::unmerge<float>(p1, make_view<const float>(a.data(), B, Np, Cx), make_view(u1.data(), B, N, Cx));
  tome::unmerge<float>(p1, effattn::ConstView<float, 3>(bst.data(), {B, Np, Cx}, {Np * Cx * 2, Cx * 2, 2}),
                       effattn::View<float, 3>(u2.data(), {B, N, Cx}, {N * Cx * 2, Cx * 2, 2}));
  for (size_t i = 0; i < u1.size(); ++i) ASSERT_EQ(u1[i], u2[2 * i]);
}

TEST(TomeMatching, EmptyAndTinyInputs) {
  std::vector<float> m(8, 1.0f);
  auto p0 = tome::bipartite_soft_matching(make_view<const float>(m.data(), 0, 4, 2), 2);
  EXPECT_EQ(p0.batch, 0);
  EXPECT_EQ(p0.out_tokens(), 2);
  auto pn = tome::bipartite_soft_matching(make_view<const float>(m.data(), 2, 0, 4), 2);
  EXPECT_TRUE(pn.is_identity());
  EXPECT_EQ(pn.out_tokens(), 0);
  auto p1 = tome::bipartite_soft_matching(make_view<const float>(m.data(), 2, 1, 4), 5, {true, false});
  EXPECT_TRUE(p1.is_identity());
  EXPECT_EQ(p1.row_of, (std::vector<index_t>{0, 0}));
  auto p2 = tome::bipartite_soft_matching(make_view<const float>(m.data(), 1, 2, 4), 5);
  EXPECT_EQ(p2.r, 1);
  EXPECT_EQ(p2.out_tokens(), 1);
  EXPECT_EQ(p2.row_of, (std::vector<index_t>{0, 0}));
}

TEST(TomeMatching, TiesAreBrokenByPosition) {
  // Every token identical: all similarities are 1. node_idx is the first
  // allowed B position, edges keep ascending A order (stable sort).
  const index_t B = 2, N = 11, C = 4;
  std::vector<float> metric(B * N * C, 0.5f);
  auto p = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), 3);
  EXPECT_EQ(p.src_idx, (std::vector<index_t>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(p.dst_idx, (std::vector<index_t>{0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(p.unm_idx, (std::vector<index_t>{3, 4, 5, 3, 4, 5}));
  auto pc = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), 3, {true, true});
  EXPECT_EQ(pc.src_idx, (std::vector<index_t>{1, 2, 3, 1, 2, 3}));
  EXPECT_EQ(pc.dst_idx, (std::vector<index_t>{1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(pc.unm_idx, (std::vector<index_t>{0, 4, 5, 0, 4, 5}));
}

TEST(TomeMatching, ZeroNormRowsGiveNoNaN) {
  const index_t B = 1, N = 8, C = 3;
  auto metric = testing_util::random_vector(B * N * C, 11);
  for (index_t c = 0; c < C; ++c) metric[2 * C + c] = 0.0f;  // A token 1 (token 2)
  for (index_t c = 0; c < C; ++c) metric[5 * C + c] = 0.0f;  // B token 2 (token 5)
  auto p = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), 4);
  for (float v : p.node_max) EXPECT_FALSE(std::isnan(v));
  EXPECT_EQ(p.node_max[1], 0.0f);  // a zero row is similar to nothing (cosine 0)
  EXPECT_EQ(p.node_idx[1], 0);
  std::vector<float> x(B * N * 2, 1.0f), out(B * p.out_tokens() * 2), sz(B * p.out_tokens());
  tome::merge_wavg<float>(p, make_view<const float>(x.data(), B, N, 2), {}, make_view(out.data(), B, p.out_tokens(), 2),
                          make_view(sz.data(), B, p.out_tokens()));
  for (float v : out) EXPECT_EQ(v, 1.0f);
  // An all-zero metric: every similarity 0, positional tie-break.
  std::vector<float> zeros(B * N * C, 0.0f);
  auto pz = tome::bipartite_soft_matching(make_view<const float>(zeros.data(), B, N, C), 2);
  EXPECT_EQ(pz.src_idx, (std::vector<index_t>{0, 1}));
  for (float v : pz.node_max) EXPECT_EQ(v, 0.0f);
}

TEST(TomeMatching, ThreadCountDoesNotChangeResults) {
  // {N, C, Cx}. The matching is above executor_for's cutoff for every shape;
  // merge, merge_wavg and unmerge only for the last one (B * rows * Cx >= 4e6),
  // below it they run serially whatever the Executor.
  int big_merges = 0;
  for (auto [N, C, Cx] :
       std::vector<std::array<index_t, 3>>{{577, 64, 768}, {1024, 320, 40}, {197, 768, 8}, {4096, 16, 768}}) {
    const index_t B = 3, r = N / 4;
    const bool big_merge = double(B) * (N - r) * Cx >= 4e6;
    big_merges += big_merge ? 1 : 0;
    auto metric = testing_util::random_vector(B * N * C, 21);
    auto x = testing_util::random_vector(B * N * Cx, 22);
    std::vector<float> size(B * N);
    std::mt19937 g(23);
    for (auto& z : size) z = static_cast<float>(1 + g() % 5);
    std::atomic<int> calls{0};
    tome::MergePlan plan0;
    std::vector<float> merged0, wavg0, wsize0, unmerged0;
    int run = 0;
    const effattn::Executor hook = counting_executor(calls);
    for (const auto& ex : {effattn::Executor{1}, effattn::Executor{2}, effattn::Executor{3}, hook}) {
      const bool hooked = static_cast<bool>(ex.parallel_for);
      const int c0 = calls;
      auto p = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), r, {true, false}, ex);
      const int c1 = calls;
      const index_t Np = p.out_tokens();
      std::vector<float> o(B * Np * Cx), w(B * Np * Cx), ws(B * Np), u(B * N * Cx);
      tome::merge<float>(p, make_view<const float>(x.data(), B, N, Cx), make_view(o.data(), B, Np, Cx),
                         tome::MergeMode::mean, ex);
      const int c2 = calls;
      tome::merge_wavg<float>(p, make_view<const float>(x.data(), B, N, Cx), make_view<const float>(size.data(), B, N),
                              make_view(w.data(), B, Np, Cx), make_view(ws.data(), B, Np), ex);
      const int c3 = calls;
      tome::unmerge<float>(p, make_view<const float>(o.data(), B, Np, Cx), make_view(u.data(), B, N, Cx), ex);
      if (hooked) {
        EXPECT_GT(c1, c0) << "matching ran serially, N=" << N;
        if (big_merge) {
          EXPECT_GT(c2, c1) << "merge ran serially, N=" << N;
          EXPECT_GT(c3, c2) << "merge_wavg ran serially, N=" << N;
          EXPECT_GT(calls.load(), c3) << "unmerge ran serially, N=" << N;
        }
      }
      if (run++ == 0) {
        plan0 = p;
        merged0 = o;
        wavg0 = w;
        wsize0 = ws;
        unmerged0 = u;
        continue;
      }
      EXPECT_EQ(p.node_max, plan0.node_max) << "N=" << N << " C=" << C;  // bit-identical
      EXPECT_EQ(p.src_idx, plan0.src_idx);
      EXPECT_TRUE(o == merged0) << "merge, N=" << N << " run " << run;
      EXPECT_TRUE(w == wavg0) << "merge_wavg, N=" << N << " run " << run;
      EXPECT_TRUE(ws == wsize0) << "merge_wavg sizes, N=" << N << " run " << run;
      EXPECT_TRUE(u == unmerged0) << "unmerge, N=" << N << " run " << run;
    }
    EXPECT_EQ(run, 4);
  }
  EXPECT_GE(big_merges, 1);
}

TEST(TomeMatching, ThresholdVariant) {
  const index_t B = 2, N = 21, C = 6;
  auto metric = testing_util::random_vector(B * N * C, 5);
  auto full = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), 100, {true, false});
  const index_t na = full.num_a();
  for (float thr : {-1.0f, -0.2f, 0.0f, 0.3f, 0.6f, 0.95f, 1.0f}) {
    for (index_t max_r : {index_t(0), index_t(3), index_t(100)}) {
      auto p = tome::bipartite_soft_matching_threshold(make_view<const float>(metric.data(), B, N, C), thr, max_r,
                                                       {true, false});
      index_t want = std::min<index_t>(max_r, (N - 1) / 2);
      for (index_t b = 0; b < B; ++b) {
        index_t cnt = 0;
        for (index_t i = 0; i < na; ++i) cnt += full.node_max[b * na + i] >= thr;
        want = std::min(want, cnt);
      }
      EXPECT_EQ(p.r, want) << "thr=" << thr << " max_r=" << max_r;
      for (index_t b = 0; b < B && p.r > 0; ++b)
        for (index_t k = 0; k < p.r; ++k) EXPECT_GE(p.node_max[b * na + p.src_idx[b * p.r + k]], thr);
      if (p.r > 0) {
        auto q = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), p.r, {true, false});
        EXPECT_EQ(p.src_idx, q.src_idx);
        EXPECT_EQ(p.unm_idx, q.unm_idx);
      }
    }
  }
}

TEST(TomeMerge, UnmergeSourceMapAndRestoreOrder) {
  // Three merge steps; the compact source map restores the original order
  // exactly like chained unmerges, and agrees with the dense source matrix.
  const index_t B = 2, N0 = 50, C = 7, Cx = 3;
  auto x0 = testing_util::random_vector(B * N0 * Cx, 41);
  std::vector<float> x = x0;
  std::vector<index_t> map(B * N0);
  std::vector<float> dense;  // [B, N, N0]
  std::vector<tome::MergePlan> plans;
  index_t N = N0;
  unsigned seed = 100;
  for (index_t r : {9, 12, 5}) {
    auto metric = testing_util::random_vector(B * N * C, ++seed);
    auto p = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), r, {true, false});
    const index_t Np = p.out_tokens();
    std::vector<float> xn(B * Np * Cx), dn(B * Np * N0);
    tome::merge<float>(p, make_view<const float>(x.data(), B, N, Cx), make_view(xn.data(), B, Np, Cx));
    if (plans.empty()) {
      tome::merge_source_map(p, {}, make_view(map.data(), B, N0));
      tome::merge_source<float>(p, {}, make_view(dn.data(), B, Np, N0));
    } else {
      auto mv = make_view(map.data(), B, N0);
      tome::merge_source_map(p, mv, mv);
      tome::merge_source<float>(p, make_view<const float>(dense.data(), B, N, N0), make_view(dn.data(), B, Np, N0));
    }
    plans.push_back(p);
    x = xn;
    dense = dn;
    N = Np;
  }
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < N0; ++t) {
      for (index_t g = 0; g < N; ++g)
        EXPECT_EQ(dense[(b * N + g) * N0 + t], g == map[b * N0 + t] ? 1.0f : 0.0f);
    }
  std::vector<float> restored(B * N0 * Cx);
  tome::restore_order<float>(make_view<const index_t>(map.data(), B, N0), make_view<const float>(x.data(), B, N, Cx),
                             make_view(restored.data(), B, N0, Cx));
  std::vector<float> y = x;
  index_t n = N;
  for (auto it = plans.rbegin(); it != plans.rend(); ++it) {
    std::vector<float> u(B * it->tokens * Cx);
    tome::unmerge<float>(*it, make_view<const float>(y.data(), B, n, Cx), make_view(u.data(), B, it->tokens, Cx));
    y = u;
    n = it->tokens;
  }
  EXPECT_EQ(restored, y);
  // unmerge(merge(x)) keeps every unmerged token exactly and gives every member
  // of a merged group the group mean, in every layout (plain, class token,
  // class + distillation token). The expected values come from the plan's index
  // arrays (unm_idx, src_idx, dst_idx) alone, not from row_of or the group
  // tables; unmerge of naive_merge's rows (laid out independently) must agree.
  for (const tome::MatchOptions opt : {tome::MatchOptions{false, false}, tome::MatchOptions{true, false},
                                       tome::MatchOptions{true, true}}) {
    auto metric = testing_util::random_vector(B * N0 * C, 61);
    auto p = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N0, C), 13, opt);
    ASSERT_EQ(p.r, 13);
    const index_t Np = p.out_tokens(), nu = p.num_unmerged(), r = p.r;
    std::vector<double> want(B * N0 * Cx, std::numeric_limits<double>::quiet_NaN());
    std::vector<char> unmerged(B * N0, 0);
    for (index_t b = 0; b < B; ++b) {
      std::vector<std::vector<index_t>> group(p.num_b());  // B token j and the sources merged into it
      for (index_t j = 0; j < p.num_b(); ++j) group[j].push_back(p.b_tok[j]);
      for (index_t k = 0; k < r; ++k) group[p.dst_idx[b * r + k]].push_back(p.a_tok[p.src_idx[b * r + k]]);
      for (const auto& members : group)
        for (index_t c = 0; c < Cx; ++c) {
          double s = 0;
          for (index_t t : members) s += x0[(b * N0 + t) * Cx + c];
          for (index_t t : members) want[(b * N0 + t) * Cx + c] = s / static_cast<double>(members.size());
        }
      for (index_t k = 0; k < nu; ++k) {
        const index_t t = p.a_tok[p.unm_idx[b * nu + k]];
        unmerged[b * N0 + t] = 1;
        for (index_t c = 0; c < Cx; ++c) want[(b * N0 + t) * Cx + c] = x0[(b * N0 + t) * Cx + c];
      }
    }
    for (double v : want) ASSERT_FALSE(std::isnan(v)) << "a token in no group";
    std::vector<float> m(B * Np * Cx), u(B * N0 * Cx), un(B * N0 * Cx);
    tome::merge<float>(p, make_view<const float>(x0.data(), B, N0, Cx), make_view(m.data(), B, Np, Cx));
    tome::unmerge<float>(p, make_view<const float>(m.data(), B, Np, Cx), make_view(u.data(), B, N0, Cx));
    testing_util::expect_close(u, want, 1e-6, 1e-6, "unmerge(merge(x))");
    const auto naive = naive_merge(p, x0, Cx, tome::MergeMode::mean);
    const std::vector<float> nf(naive.begin(), naive.end());
    tome::unmerge<float>(p, make_view<const float>(nf.data(), B, Np, Cx), make_view(un.data(), B, N0, Cx));
    testing_util::expect_close(un, want, 1e-6, 1e-6, "unmerge(naive_merge(x))");
    for (index_t i = 0; i < B * N0; ++i) {
      if (!unmerged[i]) continue;
      for (index_t c = 0; c < Cx; ++c) ASSERT_EQ(u[i * Cx + c], x0[i * Cx + c]) << "unmerged token " << i;
    }
  }
  // An identity plan (r == 0, from the matching or MergePlan::identity) merges
  // nothing: merge(x) == x in every mode and unmerge(merge(x)) == x, bit for bit.
  auto metric = testing_util::random_vector(B * N0 * C, 62);
  const auto id0 = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N0, C), 0, {true, false});
  const auto id1 = tome::MergePlan::identity(B, N0);
  EXPECT_EQ(id1.row_of, id0.row_of);
  EXPECT_EQ(id1.group_ptr, id0.group_ptr);
  EXPECT_EQ(id1.group_tok, id0.group_tok);
  for (const auto* id : {&id0, &id1}) {
    ASSERT_TRUE(id->is_identity());
    ASSERT_EQ(id->out_tokens(), N0);
    for (auto mode : {tome::MergeMode::mean, tome::MergeMode::sum, tome::MergeMode::amax}) {
      std::vector<float> m(B * N0 * Cx, -1.0f), u(B * N0 * Cx, -1.0f);
      tome::merge<float>(*id, make_view<const float>(x0.data(), B, N0, Cx), make_view(m.data(), B, N0, Cx), mode);
      tome::unmerge<float>(*id, make_view<const float>(m.data(), B, N0, Cx), make_view(u.data(), B, N0, Cx));
      EXPECT_EQ(m, x0);
      EXPECT_EQ(u, x0);
    }
  }
}

TEST(TomeMerge, WavgCarriesSizes) {
  const index_t B = 1, N = 9, C = 4;
  auto metric = testing_util::random_vector(B * N * C, 71);
  auto x = testing_util::random_vector(B * N * 2, 72);
  std::vector<float> size = {1, 2, 3, 1, 1, 4, 2, 1, 5};
  auto p = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), 4);
  const index_t Np = p.out_tokens();
  std::vector<float> xo(Np * 2), so(Np);
  tome::merge_wavg<float>(p, make_view<const float>(x.data(), B, N, 2), make_view<const float>(size.data(), B, N),
                          make_view(xo.data(), B, Np, 2), make_view(so.data(), B, Np));
  for (index_t g = 0; g < Np; ++g) {
    double s = 0, a0 = 0, a1 = 0;
    for (const index_t* t = p.group_begin(0, g); t < p.group_end(0, g); ++t) {
      s += size[*t];
      a0 += size[*t] * x[*t * 2];
      a1 += size[*t] * x[*t * 2 + 1];
    }
    EXPECT_FLOAT_EQ(so[g], static_cast<float>(s));
    EXPECT_NEAR(xo[g * 2], a0 / s, 1e-5);
    EXPECT_NEAR(xo[g * 2 + 1], a1 / s, 1e-5);
  }
  EXPECT_FLOAT_EQ(std::accumulate(so.begin(), so.end(), 0.0f), 20.0f);
}

TEST(TomeProportional, EqualsReferenceWithLogSizeBias) {
  struct S {
    index_t B, H, N, D;
  };
  for (auto s : std::vector<S>{{1, 1, 1, 8}, {2, 3, 37, 16}, {1, 2, 113, 64}, {2, 1, 203, 40}}) {
    auto q = testing_util::random_vector(s.B * s.H * s.N * s.D, 1);
    auto k = testing_util::random_vector(s.B * s.H * s.N * s.D, 2);
    auto v = testing_util::random_vector(s.B * s.H * s.N * s.D, 3);
    std::vector<float> size(s.B * s.N);
    std::mt19937 g(4);
    for (auto& z : size) z = static_cast<float>(1 + g() % 7);
    std::vector<float> out(q.size()), ref(q.size());
    auto qv = make_view<const float>(q.data(), s.B, s.H, s.N, s.D);
    auto kv = make_view<const float>(k.data(), s.B, s.H, s.N, s.D);
    auto vv = make_view<const float>(v.data(), s.B, s.H, s.N, s.D);
    tome::proportional_attention(qv, kv, vv, make_view(out.data(), s.B, s.H, s.N, s.D),
                                 make_view<const float>(size.data(), s.B, s.N));
    // Oracle: the dense reference with the bias as a functor.
    auto bias = effattn::make_functor_score(
        [&](index_t b, index_t, index_t, index_t j) { return std::log(double(size[b * s.N + j])); });
    effattn::attention_reference<float>(qv, kv, vv, make_view(ref.data(), s.B, s.H, s.N, s.D), effattn::NoMask{}, bias);
    testing_util::expect_close(out, ref, 2e-5, 2e-5, "proportional attention");
    // Unit sizes = plain attention.
    std::vector<float> ones(s.B * s.N, 1.0f), o1(q.size()), o2(q.size());
    tome::proportional_attention(qv, kv, vv, make_view(o1.data(), s.B, s.H, s.N, s.D),
                                 make_view<const float>(ones.data(), s.B, s.N));
    tome::proportional_attention(qv, kv, vv, make_view(o2.data(), s.B, s.H, s.N, s.D), {});
    testing_util::expect_close(o1, o2, 1e-6, 1e-6, "unit sizes");
  }
}

TEST(TomeSchedule, FormsAndErrors) {
  EXPECT_EQ(tome::schedule_constant(3, 5), (std::vector<index_t>{5, 5, 5}));
  EXPECT_EQ(tome::schedule_constant(1, 5), (std::vector<index_t>{5}));
  EXPECT_EQ(tome::parse_r(12, 8), std::vector<index_t>(12, 8));
  EXPECT_THROW(tome::parse_r(1, 8), effattn::parameter_error);
  EXPECT_THROW(tome::parse_r(1, 8, -0.5), effattn::parameter_error);
  EXPECT_THROW(tome::parse_r(4, -1), effattn::parameter_error);
  EXPECT_THROW(tome::parse_r(4, 3, 1.5), effattn::parameter_error);
  EXPECT_THROW(tome::parse_r(4, std::vector<index_t>{1, -2}), effattn::parameter_error);
  EXPECT_EQ(tome::parse_r(1, std::vector<index_t>{4}), (std::vector<index_t>{4}));
  // r = 16 on ViT-B: the last block is capped at (21 - 1) / 2 = 10.
  EXPECT_EQ(tome::tokens_after_layers(197, std::vector<index_t>(12, 16)).back(), 11);
  EXPECT_EQ(tome::tokens_after_layers(11, {100, 100, 100}, 1), (std::vector<index_t>{6, 4, 3}));
}

TEST(TomeDiffusion, PartitionDrawsAndCaps) {
  tome::Grid2d g{7, 5, 2, 2};  // remainder column 6 and row 4
  std::vector<index_t> a, b;
  tome::random2d_partition(g, {}, a, b);
  EXPECT_EQ(b, (std::vector<index_t>{0, 2, 4, 14, 16, 18}));
  EXPECT_EQ(static_cast<index_t>(a.size()), 35 - 6);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  auto draw = tome::random2d_draw(g, 1234);
  EXPECT_EQ(draw, tome::random2d_draw(g, 1234));
  EXPECT_NE(draw, tome::random2d_draw(g, 1235));
  for (index_t v : draw) EXPECT_TRUE(v >= 0 && v < 4);
  tome::random2d_partition(g, make_view<const index_t>(draw.data(), 2, 3), a, b);
  for (index_t i = 0; i < 2; ++i)
    for (index_t j = 0; j < 3; ++j) {
      const index_t o = draw[i * 3 + j];
      const index_t t = (i * 2 + o / 2) * 7 + (j * 2 + o % 2);
      EXPECT_TRUE(std::binary_search(b.begin(), b.end(), t));
    }
  for (index_t t : b) EXPECT_TRUE(t % 7 < 6 && t / 7 < 4);  // remainder never a destination
  // The draw is roughly uniform.
  tome::Grid2d big{64, 64, 2, 2};
  auto d = tome::random2d_draw(big, 9);
  std::vector<int> hist(4, 0);
  for (index_t v : d) ++hist[v];
  for (int h : hist) EXPECT_NEAR(h, 256, 64);
  // r capped at the number of sources; the result matches the generic partition.
  auto metric = testing_util::random_vector(2 * 35 * 6, 12);
  auto p = tome::bipartite_soft_matching_random2d(make_view<const float>(metric.data(), 2, 35, 6), g, 1000);
  EXPECT_EQ(p.r, 29);
  EXPECT_EQ(p.out_tokens(), 6);
  // Against the dense reference, for several r, destination draws and metrics.
  int cases = 0, verified = 0;  // cases / cases with their indices checked (no near-tie)
  for (unsigned seed : {12u, 13u, 14u})
    for (bool rand : {false, true})
      for (index_t r : {1, 13, 29}) {
        auto m = testing_util::random_vector(2 * 35 * 6, seed);
        const auto ri = rand ? make_view<const index_t>(draw.data(), 2, 3) : effattn::ConstView<index_t, 2>();
        auto pr = tome::bipartite_soft_matching_random2d(make_view<const float>(m.data(), 2, 35, 6), g, r, ri);
        ++cases;
        ASSERT_EQ(pr.r, r);
        tome::random2d_partition(g, ri, a, b);
        EXPECT_EQ(pr.a_tok, a);
        EXPECT_EQ(pr.b_tok, b);
        auto ref = reference_matching(m, 2, 35, 6, a, b, r, false, false, false);
        testing_util::expect_close(pr.node_max, ref.node_max, 1e-5, 1e-5, "node_max");
        if (ref.min_margin > 1e-5) {
          ++verified;
          EXPECT_EQ(pr.src_idx, ref.src) << "seed=" << seed << " rand=" << rand << " r=" << r;
          EXPECT_EQ(pr.dst_idx, ref.dst);
          EXPECT_EQ(pr.unm_idx, ref.unm);
        }
      }
  ASSERT_GE(verified, cases - 1) << "only " << verified << " of " << cases << " cases had their indices checked";
}

TEST(TomeBadInput, ThrowsAndWritesNothing) {
  const index_t B = 2, N = 12, C = 4;
  auto metric = testing_util::random_vector(B * N * C, 1);
  auto mv = make_view<const float>(metric.data(), B, N, C);
  EXPECT_THROW(tome::bipartite_soft_matching(mv, -1), effattn::parameter_error);
  EXPECT_THROW(tome::bipartite_soft_matching(mv, 2, {false, true}), effattn::parameter_error);
  EXPECT_THROW(tome::bipartite_soft_matching_threshold(mv, 1.5f, 3), effattn::parameter_error);
  EXPECT_THROW(tome::bipartite_soft_matching_threshold(mv, 0.5f, -3), effattn::parameter_error);
  auto bad = metric;
  bad[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(tome::bipartite_soft_matching(make_view<const float>(bad.data(), B, N, C), 2), effattn::parameter_error);

  auto p = tome::bipartite_soft_matching(mv, 3, {true, false});
  const index_t Np = p.out_tokens();
  const float sentinel = 12345.0f;
  std::vector<float> x(B * (N + 1) * 3, 1.0f), out(B * Np * 3, sentinel), so(B * Np, sentinel);
  // x with the wrong token count.
  EXPECT_THROW(tome::merge<float>(p, make_view<const float>(x.data(), B, N + 1, 3), make_view(out.data(), B, Np, 3)),
               effattn::shape_error);
  EXPECT_THROW(tome::merge_wavg<float>(p, make_view<const float>(x.data(), B, N + 1, 3), {},
                                       make_view(out.data(), B, Np, 3), make_view(so.data(), B, Np)),
               effattn::shape_error);
  // out with the wrong shape.
  EXPECT_THROW(tome::merge<float>(p, make_view<const float>(x.data(), B, N, 3), make_view(out.data(), B, Np - 1, 3)),
               effattn::shape_error);
  // sizes <= 0.
  std::vector<float> size(B * N, 1.0f);
  size[7] = 0.0f;
  EXPECT_THROW(tome::merge_wavg<float>(p, make_view<const float>(x.data(), B, N, 3),
                                       make_view<const float>(size.data(), B, N), make_view(out.data(), B, Np, 3),
                                       make_view(so.data(), B, Np)),
               effattn::parameter_error);
  size[7] = -2.0f;
  EXPECT_THROW(tome::log_size(make_view<const float>(size.data(), B, N), make_view(out.data(), B, N)),
               effattn::parameter_error);
  // unmerge input with the wrong token count.
  std::vector<float> un(B * N * 3, sentinel);
  EXPECT_THROW(tome::unmerge<float>(p, make_view<const float>(x.data(), B, Np + 1, 3), make_view(un.data(), B, N, 3)),
               effattn::shape_error);
  // Output aliasing the input.
  EXPECT_THROW(tome::merge<float>(p, make_view<const float>(x.data(), B, N, 3), make_view(x.data() + 1, B, Np, 3)),
               effattn::shape_error);
  // The messages name the operation, the argument and both shapes.
  auto shape_message = [](auto&& f) {
    try {
      f();
    } catch (const effattn::shape_error& e) {
      return std::string(e.what());
    }
    return std::string("no shape_error");
  };
  auto has = [](const std::string& msg, const std::string& part) { return msg.find(part) != std::string::npos; };
  std::string msg = shape_message(
      [&] { tome::merge<float>(p, make_view<const float>(x.data(), B, N + 1, 3), make_view(out.data(), B, Np, 3)); });
  EXPECT_TRUE(has(msg, "tome::merge: x must be [plan.batch,plan.tokens,C]=[2,12,3], got [2,13,3]")) << msg;
  msg = shape_message([&] {
    tome::merge_source<float>(p, make_view<const float>(x.data(), B, N + 1, 3), make_view(out.data(), B, Np, 3));
  });
  EXPECT_TRUE(has(msg, "tome::merge_source: source must be") && has(msg, "got [2,13,3]")) << msg;
  msg = shape_message([&] {
    tome::merge_source<float>(p, make_view<const float>(x.data(), B, N, 3), make_view(out.data(), B, Np - 1, 3));
  });
  EXPECT_TRUE(has(msg, "tome::merge_source: out must be [B,N',C]=[2,9,3], got [2,8,3]")) << msg;
  msg = shape_message([&] {
    tome::merge_source<float>(p, make_view<const float>(x.data(), B, N, 3), make_view(x.data() + 1, B, Np, 3));
  });
  EXPECT_TRUE(has(msg, "tome::merge_source: output out must not share memory with input source")) << msg;
  msg = shape_message([&] {
    tome::unmerge<float>(p, make_view<const float>(x.data(), B, Np + 1, 3), make_view(un.data(), B, N, 3));
  });
  EXPECT_TRUE(has(msg, "tome::unmerge: y must be [B,N',C]=[2,9,3], got [2,10,3]")) << msg;
  std::vector<index_t> map3(3 * N, 0), mo3(3 * N, -7);
  msg = shape_message([&] {
    tome::merge_source_map(p, make_view<const index_t>(map3.data(), 3, N), make_view(mo3.data(), 3, N));
  });
  EXPECT_TRUE(has(msg, "tome::merge_source_map: map_in must be [plan.batch,N0]=[2,12], got [3,12]")) << msg;
  msg = shape_message([&] {
    tome::restore_order<float>(make_view<const index_t>(map3.data(), 3, N), make_view<const float>(x.data(), B, Np, 3),
                               make_view(un.data(), B, N, 3));
  });
  EXPECT_TRUE(has(msg, "tome::restore_order: map must be [y.dim(0),N0]=[2,12], got [3,12]")) << msg;
  for (index_t v : mo3) ASSERT_EQ(v, -7);
  for (float v : out) ASSERT_EQ(v, sentinel);
  for (float v : so) ASSERT_EQ(v, sentinel);
  for (float v : un) ASSERT_EQ(v, sentinel);
  for (float v : x) ASSERT_EQ(v, 1.0f);

  // ToMe for diffusion: grid and strides.
  EXPECT_THROW(tome::bipartite_soft_matching_random2d(mv, tome::Grid2d{5, 2, 2, 2}, 3), effattn::shape_error);
  EXPECT_THROW(tome::bipartite_soft_matching_random2d(mv, tome::Grid2d{4, 3, 0, 2}, 3), effattn::parameter_error);
  EXPECT_THROW(tome::bipartite_soft_matching_random2d(mv, tome::Grid2d{4, 3, 2, -1}, 3), effattn::parameter_error);
  EXPECT_THROW(tome::bipartite_soft_matching_random2d(mv, tome::Grid2d{4, 3, 5, 1}, 3), effattn::parameter_error);
  EXPECT_THROW(tome::bipartite_soft_matching_random2d(mv, tome::Grid2d{4, 3, 2, 2}, -1), effattn::parameter_error);
  std::vector<index_t> ri = {0, 4};
  EXPECT_THROW(tome::bipartite_soft_matching_random2d(mv, tome::Grid2d{4, 3, 2, 2}, 3,
                                                      make_view<const index_t>(ri.data(), 1, 2)),
               effattn::parameter_error);
  EXPECT_THROW(tome::bipartite_soft_matching_random2d(mv, tome::Grid2d{4, 3, 2, 2}, 3,
                                                      make_view<const index_t>(ri.data(), 2, 1)),
               effattn::shape_error);
  // Explicit partitions must cover every token once.
  EXPECT_THROW(tome::bipartite_soft_matching_partition(mv, {0, 1, 2}, {3}, 1), effattn::shape_error);
  std::vector<index_t> a(11), b = {0};
  std::iota(a.begin(), a.end(), 0);
  EXPECT_THROW(tome::bipartite_soft_matching_partition(mv, a, b, 1), effattn::parameter_error);
  // A source map with a row out of range.
  std::vector<index_t> map(B * N, 0), mo(B * N, -7);
  map[3] = N;
  EXPECT_THROW(tome::merge_source_map(p, make_view<const index_t>(map.data(), B, N), make_view(mo.data(), B, N)),
               effattn::parameter_error);
  for (index_t v : mo) ASSERT_EQ(v, -7);
}

TEST(TomeMerge, DoublePrecisionTensors) {
  const index_t B = 2, N = 15, C = 5, Cx = 3;
  auto metric = testing_util::random_vector(B * N * C, 81);
  auto xf = testing_util::random_vector(B * N * Cx, 82);
  std::vector<double> x(xf.begin(), xf.end()), size(B * N, 1.0);
  auto p = tome::bipartite_soft_matching(make_view<const float>(metric.data(), B, N, C), 4, {true, false});
  const index_t Np = p.out_tokens();
  std::vector<double> m(B * Np * Cx), w(B * Np * Cx), s(B * Np), u(B * N * Cx), src(B * Np * N);
  tome::merge<double>(p, make_view<const double>(x.data(), B, N, Cx), make_view(m.data(), B, Np, Cx));
  tome::merge_wavg<double>(p, make_view<const double>(x.data(), B, N, Cx), make_view<const double>(size.data(), B, N),
                           make_view(w.data(), B, Np, Cx), make_view(s.data(), B, Np));
  tome::unmerge<double>(p, make_view<const double>(m.data(), B, Np, Cx), make_view(u.data(), B, N, Cx));
  tome::merge_source<double>(p, {}, make_view(src.data(), B, Np, N));
  const auto want = naive_merge(p, xf, Cx, tome::MergeMode::mean);
  testing_util::expect_close(m, want, 1e-12, 1e-6, "merge<double>");
  testing_util::expect_close(w, want, 1e-12, 1e-6, "merge_wavg<double> with unit sizes");
  for (index_t b = 0; b < B; ++b)
    for (index_t g = 0; g < Np; ++g) {
      double cnt = 0;
      for (index_t t = 0; t < N; ++t) cnt += src[(b * Np + g) * N + t];
      EXPECT_EQ(cnt, s[b * Np + g]);
    }
}
