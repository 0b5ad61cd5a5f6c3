// SPDX-License-Identifier: MIT
// Golden parity: every tomesd_* case (official dbolya/tomesd outputs), in the
// canonical ascending partition order and, through an explicit partition, in
// the torch 1.13.1 CPU order.
#include <gtest/gtest.h>

#include <effattn/tome/tome.hpp>

#include "support/golden.hpp"
#include "support/testing.hpp"

namespace tome = effattn::tome;
using effattn::index_t;

namespace {

std::vector<index_t> ints(const golden::Case& c, const std::string& n) {
  auto v = c.array(n).as_int();
  return std::vector<index_t>(v.begin(), v.end());
}

class Tomesd : public ::testing::TestWithParam<std::string> {};

TEST_P(Tomesd, MatchesOfficial) {
  golden::Case c(GetParam());
  const auto& P = c.params["params"];
  const index_t B = P["B"], N = P["N"], r = P["r"], r_eff = P["r_effective"];
  tome::Grid2d g;
  g.w = P["w"];
  g.h = P["h"];
  g.sx = P["sx"];
  g.sy = P["sy"];
  ASSERT_EQ(g.num_dst(), static_cast<index_t>(P["num_dst"]));
  auto ma = c.array("metric");
  auto metric = ma.as_float();
  auto x = c.array("x").as_float();
  const index_t Cm = ma.dim(2), Cx = c.array("x").dim(2);
  auto rand_idx = ints(c, "rand_idx");
  const bool no_rand = P["no_rand"];
  const auto mview = effattn::make_view<const float>(metric.data(), B, N, Cm);
  const auto rview = effattn::make_view<const index_t>(rand_idx.data(), g.cells_y(), g.cells_x());

  struct Variant {
    std::string sfx;
    tome::MergePlan plan;
  };
  std::vector<Variant> variants;
  for (int threads : {1, 2}) {
    effattn::Executor ex{threads};
    // Canonical order; no_rand cases also through the top-left default.
    variants.push_back({"", tome::bipartite_soft_matching_random2d(mview, g, r, rview, ex)});
    if (no_rand) variants.push_back({"", tome::bipartite_soft_matching_random2d(mview, g, r, {}, ex)});
    if (c.has("a_idx_torchcpu"))
      variants.push_back({"_torchcpu", tome::bipartite_soft_matching_partition(
                                           mview, ints(c, "a_idx_torchcpu"), ints(c, "b_idx_torchcpu"), r, false, ex)});
  }
  for (auto& v : variants) {
    const auto& plan = v.plan;
    ASSERT_EQ(plan.r, r_eff);
    const index_t Np = N - r_eff;
    if (r_eff > 0) {
      EXPECT_EQ(plan.a_tok, ints(c, "a_idx" + v.sfx));
      EXPECT_EQ(plan.b_tok, ints(c, "b_idx" + v.sfx));
      EXPECT_EQ(plan.unm_idx, ints(c, "unm_idx" + v.sfx));
      EXPECT_EQ(plan.src_idx, ints(c, "src_idx" + v.sfx));
      EXPECT_EQ(plan.dst_idx, ints(c, "dst_idx" + v.sfx));
      // Order-free decisions as raster tokens.
      auto unm_tok = ints(c, "unm_tok"), src_tok = ints(c, "src_tok"), dst_tok = ints(c, "dst_tok");
      for (index_t b = 0; b < B; ++b) {
        for (index_t k = 0; k < plan.num_unmerged(); ++k)
          EXPECT_EQ(plan.a_tok[plan.unm_idx[b * plan.num_unmerged() + k]], unm_tok[b * plan.num_unmerged() + k]);
        for (index_t k = 0; k < r_eff; ++k) {
          EXPECT_EQ(plan.a_tok[plan.src_idx[b * r_eff + k]], src_tok[b * r_eff + k]);
          EXPECT_EQ(plan.b_tok[plan.dst_idx[b * r_eff + k]], dst_tok[b * r_eff + k]);
        }
      }
    }
    std::vector<float> merged(static_cast<size_t>(B * Np * Cx)), unmerged(static_cast<size_t>(B * N * Cx));
    tome::merge<float>(plan, effattn::make_view<const float>(x.data(), B, N, Cx),
                       effattn::make_view(merged.data(), B, Np, Cx), tome::MergeMode::mean);
    tome::unmerge<float>(plan, effattn::make_view<const float>(merged.data(), B, Np, Cx),
                         effattn::make_view(unmerged.data(), B, N, Cx));
    testing_util::expect_close(merged, c.array("merged" + v.sfx).as_float(), c.atol, c.rtol, c.name + " merged" + v.sfx);
    testing_util::expect_close(unmerged, c.array("unmerged" + v.sfx).as_float(), c.atol, c.rtol,
                               c.name + " unmerged" + v.sfx);
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, Tomesd, ::testing::ValuesIn(golden::cases("tomesd_")),
                         [](const auto& info) { return info.param; });

TEST(TomesdGolden, CasesExist) { EXPECT_EQ(golden::cases("tomesd_").size(), 6u); }

}  // namespace
