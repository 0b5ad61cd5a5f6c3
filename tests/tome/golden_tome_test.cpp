// SPDX-License-Identifier: MIT
// Golden parity: every tome_* case (official facebookresearch/ToMe outputs)
// but the ViT block ones, tome_block_* (tests/models/vit_tome_test.cpp).
#include <gtest/gtest.h>

#include <effattn/tome/tome.hpp>
#include <random>

#include "support/golden.hpp"
#include "support/testing.hpp"

namespace tome = effattn::tome;
using effattn::index_t;

namespace {

std::vector<index_t> to_index(const std::vector<std::int64_t>& v) { return std::vector<index_t>(v.begin(), v.end()); }

/// Exact comparison of an index array with the plan's.
void expect_indices(const golden::Case& c, const std::string& name, const std::vector<index_t>& got) {
  if (!c.has(name)) return;
  auto want = to_index(c.array(name).as_int());
  EXPECT_EQ(got, want) << c.name << ": " << name;
}

void expect_floats(const golden::Case& c, const std::string& name, const std::vector<float>& got) {
  ASSERT_TRUE(c.has(name)) << c.name << " lacks " << name;
  auto want = c.array(name).as_float();
  testing_util::expect_close(got, want, c.atol, c.rtol, c.name + ": " + name);
}

/// Dense 0/1 arrays compare exactly.
void expect_exact(const golden::Case& c, const std::string& name, const std::vector<float>& got) {
  auto want = c.array(name).as_float();
  ASSERT_EQ(got.size(), want.size()) << c.name << ": " << name;
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << c.name << ": " << name << " index " << i;
}

std::vector<std::string> bsm_cases() { return golden::cases("tome_bsm_"); }

}  // namespace

TEST(TomeGolden, CasesExist) {
  EXPECT_EQ(golden::cases("tome_bsm_").size(), 8u);
  EXPECT_EQ(golden::cases("tome_chain_").size(), 1u);
  EXPECT_EQ(golden::cases("tome_parse_r").size(), 1u);
}

class TomeBsm : public ::testing::TestWithParam<std::string> {};

TEST_P(TomeBsm, MatchesOfficial) {
  golden::Case c(GetParam());
  const auto& P = c.params["params"];
  const index_t B = P["B"], N = P["N"], r = P["r"], r_eff = P["r_effective"];
  tome::MatchOptions opt;
  opt.class_token = P["class_token"];
  opt.distill_token = P["distill_token"];
  auto metric_a = c.array("metric");
  auto metric = metric_a.as_float();
  const index_t Cm = metric_a.dim(2);
  auto x = c.array("x").as_float();
  const index_t Cx = c.array("x").dim(2);
  auto size = c.array("size").as_float();
  auto src_a = c.array("source_in");
  auto source_in = src_a.as_float();
  const index_t N0 = src_a.dim(2);
  const bool size_given = P["size_given"];

  for (int threads : {1, 2}) {
    effattn::Executor ex{threads};
    auto plan = tome::bipartite_soft_matching(effattn::make_view<const float>(metric.data(), B, N, Cm), r, opt, ex);
    ASSERT_EQ(plan.r, r_eff);
    const index_t Np = N - r_eff;
    ASSERT_EQ(plan.out_tokens(), Np);
    if (r_eff > 0) {
      expect_indices(c, "unm_idx", plan.unm_idx);
      expect_indices(c, "src_idx", plan.src_idx);
      expect_indices(c, "dst_idx", plan.dst_idx);
      expect_indices(c, "node_idx", plan.node_idx);
      expect_floats(c, "node_max", plan.node_max);
    }
    // merge_wavg (size None = ones when not given; passing ones is the same).
    std::vector<float> xm(static_cast<size_t>(B * Np * Cx)), sm(static_cast<size_t>(B * Np));
    effattn::ConstView<float, 2> sz = size_given ? effattn::make_view<const float>(size.data(), B, N)
                                                 : effattn::ConstView<float, 2>();
    tome::merge_wavg<float>(plan, effattn::make_view<const float>(x.data(), B, N, Cx), sz,
                            effattn::make_view(xm.data(), B, Np, Cx), effattn::make_view(sm.data(), B, Np), ex);
    expect_floats(c, "x_merged", xm);
    expect_floats(c, "size_merged", sm);
    // Plain mean merge.
    std::vector<float> xmean(xm.size());
    tome::merge<float>(plan, effattn::make_view<const float>(x.data(), B, N, Cx),
                       effattn::make_view(xmean.data(), B, Np, Cx), tome::MergeMode::mean, ex);
    expect_floats(c, "x_merged_mean", xmean);
    // Source tracking, dense (given source or identity).
    std::vector<float> so(static_cast<size_t>(B * Np * N0));
    effattn::ConstView<float, 3> sin = P.value("source_given", size_given)
                                           ? effattn::make_view<const float>(source_in.data(), B, N, N0)
                                           : effattn::ConstView<float, 3>();
    tome::merge_source<float>(plan, sin, effattn::make_view(so.data(), B, Np, N0), ex);
    expect_exact(c, "source", so);
    // Unmerge (absent for the distill case: the official pair is inconsistent).
    if (c.has("x_unmerged")) {
      std::vector<float> xu(static_cast<size_t>(B * N * Cx));
      tome::unmerge<float>(plan, effattn::make_view<const float>(xm.data(), B, Np, Cx),
                           effattn::make_view(xu.data(), B, N, Cx), ex);
      expect_floats(c, "x_unmerged", xu);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, TomeBsm, ::testing::ValuesIn(bsm_cases()),
                         [](const auto& info) { return info.param; });

TEST(TomeGolden, Chain) {
  for (const auto& name : golden::cases("tome_chain_")) {
    golden::Case c(name);
    const auto& P = c.params["params"];
    tome::MatchOptions opt;
    opt.class_token = P["class_token"];
    opt.distill_token = P["distill_token"];
    auto xa = c.array("x");
    const index_t B = xa.dim(0), N0 = xa.dim(1), Cx = xa.dim(2);
    auto x = xa.as_float();
    auto size = c.array("size").as_float();
    auto source = c.array("source_in").as_float();
    const auto x_orig = x;
    std::vector<index_t> map;  // compact source map next to the dense one
    index_t N = N0;
    for (const auto& step : P["steps"]) {
      const int s = step["step"];
      const std::string sfx = "_" + std::to_string(s);
      ASSERT_EQ(static_cast<index_t>(step["N_in"]), N);
      auto metric_a = c.array("metric" + sfx);
      auto metric = metric_a.as_float();
      auto plan = tome::bipartite_soft_matching(effattn::make_view<const float>(metric.data(), B, N, metric_a.dim(2)),
                                                step["r"], opt);
      ASSERT_EQ(plan.r, static_cast<index_t>(step["r_effective"]));
      expect_indices(c, "unm_idx" + sfx, plan.unm_idx);
      expect_indices(c, "src_idx" + sfx, plan.src_idx);
      expect_indices(c, "dst_idx" + sfx, plan.dst_idx);
      const index_t Np = plan.out_tokens();
      std::vector<float> xn(static_cast<size_t>(B * Np * Cx)), sn(static_cast<size_t>(B * Np)),
          so(static_cast<size_t>(B * Np * N0));
      tome::merge_wavg<float>(plan, effattn::make_view<const float>(x.data(), B, N, Cx),
                              effattn::make_view<const float>(size.data(), B, N), effattn::make_view(xn.data(), B, Np, Cx),
                              effattn::make_view(sn.data(), B, Np));
      tome::merge_source<float>(plan, effattn::make_view<const float>(source.data(), B, N, N0),
                                effattn::make_view(so.data(), B, Np, N0));
      if (s == 0) {
        // The chain's inputs are a fresh start only when source_in is the identity.
        bool identity = true;
        for (index_t b = 0; b < B; ++b)
          for (index_t i = 0; i < N0; ++i)
            for (index_t j = 0; j < N0; ++j)
              identity &= source[(b * N0 + i) * N0 + j] == (i == j ? 1.0f : 0.0f);
        if (identity) {
          map.resize(static_cast<size_t>(B * N0));
          tome::merge_source_map(plan, {}, effattn::make_view(map.data(), B, N0));
        }
      } else if (!map.empty()) {
        auto mv = effattn::make_view(map.data(), B, N0);
        tome::merge_source_map(plan, mv, mv);
      }
      expect_floats(c, "x" + sfx, xn);
      expect_floats(c, "size" + sfx, sn);
      expect_exact(c, "source" + sfx, so);
      if (!map.empty()) {
        // The compact map agrees with the dense source matrix.
        for (index_t b = 0; b < B; ++b)
          for (index_t t = 0; t < N0; ++t)
            ASSERT_EQ(so[(b * Np + map[b * N0 + t]) * N0 + t], 1.0f) << name << " step " << s << " token " << t;
      }
      x = std::move(xn);
      size = std::move(sn);
      source = std::move(so);
      N = Np;
    }
    // Invariant x_s == (source_s @ x) / size_s when starting from unit sizes.
    bool unit = true;
    for (float v : c.array("size").as_float()) unit &= v == 1.0f;
    if (unit) {
      for (index_t b = 0; b < B; ++b)
        for (index_t g = 0; g < N; ++g)
          for (index_t ch = 0; ch < Cx; ++ch) {
            double acc = 0;
            for (index_t t = 0; t < N0; ++t) acc += source[(b * N + g) * N0 + t] * x_orig[(b * N0 + t) * Cx + ch];
            EXPECT_NEAR(x[(b * N + g) * Cx + ch], acc / size[b * N + g], 1e-5);
          }
    }
  }
}

TEST(TomeGolden, ParseR) {
  golden::Case c("tome_parse_r");
  for (const auto& s : c.params["params"]["settings"]) {
    const int k = s["k"];
    const index_t L = s["num_layers"];
    const std::string kind = s["r_kind"];
    auto run = [&]() -> std::vector<index_t> {
      if (kind == "int") return tome::parse_r(L, s["r"].get<index_t>());
      if (kind == "list") return tome::parse_r(L, s["r"].get<std::vector<index_t>>());
      return tome::parse_r(L, s["r"][0].get<index_t>(), s["r"][1].get<double>());
    };
    if (s.contains("error")) {
      EXPECT_THROW(run(), effattn::parameter_error) << "setting " << k;
      try {
        run();
      } catch (const effattn::parameter_error& e) {
        EXPECT_NE(std::string(e.what()).find("num_layers"), std::string::npos) << e.what();
      }
      continue;
    }
    auto want = to_index(c.array("out_" + std::to_string(k)).as_int());
    EXPECT_EQ(run(), want) << "setting " << k;
  }
}
