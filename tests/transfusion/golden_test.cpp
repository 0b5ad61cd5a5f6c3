// SPDX-License-Identifier: MIT
// Transfusion against the golden oracle (tests/data/golden/README.md section 5):
// layouts, the dense mask and block-causal attention (out, lse).
#include <gtest/gtest.h>

#include <cstdint>
#include <effattn/transfusion/transfusion.hpp>
#include <vector>

#include "support/golden.hpp"
#include "support/testing.hpp"

namespace tf = effattn::transfusion;
using effattn::index_t;

namespace {

std::vector<std::string> transfusion_cases() { return golden::cases("transfusion_"); }

TEST(TransfusionGolden, AllCasesListed) {
  // The manifest lists every transfusion case of the README table.
  const auto c = transfusion_cases();
  EXPECT_EQ(c.size(), 4u);
}

class Golden : public ::testing::TestWithParam<std::string> {};

// The layout rebuilt from the per-token arrays and from params.segments both
// give back the arrays exactly, and the mask from the key limits equals mask.npy.
TEST_P(Golden, LayoutAndMask) {
  golden::Case c(GetParam());
  const auto tt = c.array("token_type"), id = c.array("image_id"), mask = c.array("mask");
  const index_t B = tt.dim(0), N = tt.dim(1);
  const auto tti = tt.as_int(), idi = id.as_int();
  std::vector<tf::Layout> layouts;
  for (index_t b = 0; b < B; ++b) {
    auto L = tf::layout_from_tokens(effattn::make_view(tti.data() + b * N, N), effattn::make_view(idi.data() + b * N, N));
    // From the segment list of params.json.
    std::vector<tf::ImagePlacement> pl;
    index_t boi = 0, eoi = 0;
    for (auto& s : c.params["params"]["segments"][b]) {
      const std::string kind = s["kind"];
      if (kind == "image") {
        EXPECT_EQ(s["image_id"].get<index_t>(), static_cast<index_t>(pl.size()));
        pl.push_back({s["start"].get<index_t>(), 1, s["length"].get<index_t>()});
      }
      boi += kind == "boi";
      eoi += kind == "eoi";
    }
    EXPECT_EQ(boi, static_cast<index_t>(pl.size()));
    EXPECT_EQ(eoi, static_cast<index_t>(pl.size()));
    auto L2 = tf::layout_from_spans(N, pl);
    ASSERT_EQ(L.length(), N);
    for (index_t i = 0; i < N; ++i) {
      EXPECT_EQ(static_cast<int>(L.type[i]), tti[b * N + i]) << c.name << " b=" << b << " i=" << i;
      EXPECT_EQ(L.image_id[i], idi[b * N + i]) << c.name << " b=" << b << " i=" << i;
      EXPECT_EQ(L2.type[i], L.type[i]);
      EXPECT_EQ(L2.image_id[i], L.image_id[i]);
    }
    // The rule itself, element by element.
    for (index_t i = 0; i < N; ++i)
      for (index_t j = 0; j < N; ++j)
        EXPECT_EQ(L.allowed(i, j) ? 1 : 0, static_cast<int>(mask.data[(b * N + i) * N + j]))
            << c.name << " b=" << b << " i=" << i << " j=" << j;
    layouts.push_back(L);
  }
  const auto batch = tf::make_batch(layouts);
  const auto dense = tf::block_causal_dense_mask(batch);
  ASSERT_EQ(dense.size(), mask.data.size());
  for (size_t e = 0; e < dense.size(); ++e)
    ASSERT_EQ(static_cast<double>(dense[e]), mask.data[e]) << c.name << " flat index " << e;
  // Every row is a prefix [0, lim(i)).
  const auto lim = tf::block_causal_limits(batch);
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < N; ++i)
      for (index_t j = 0; j < N; ++j)
        EXPECT_EQ(j < lim(b, i), mask.data[(b * N + i) * N + j] != 0);
}

// Block-causal attention (tiled engine, several tilings, and the oracle)
// reproduces out and lse.
TEST_P(Golden, Attention) {
  golden::Case c(GetParam());
  const auto tt = c.array("token_type").as_int(), id = c.array("image_id").as_int();
  const auto qa = c.array("q");
  const index_t B = qa.dim(0), H = qa.dim(1), N = qa.dim(2), D = qa.dim(3);
  std::vector<tf::Layout> layouts;
  for (index_t b = 0; b < B; ++b)
    layouts.push_back(
        tf::layout_from_tokens(effattn::make_view(tt.data() + b * N, N), effattn::make_view(id.data() + b * N, N)));
  const auto lim = tf::block_causal_limits(tf::make_batch(layouts));
  const auto q = qa.as_float(), k = c.array("k").as_float(), v = c.array("v").as_float();
  const auto want_out = c.array("out").data, want_lse = c.array("lse").data;
  const double scale = c.params["params"]["scale"];
  const index_t Dv = c.array("v").dim(3);
  const index_t quantum = effattn::detail::attention_query_tile_quantum();
  for (int variant = 0; variant < 4; ++variant) {
    std::vector<float> out(static_cast<size_t>(B * H * N * Dv), -7.0f), lse(static_cast<size_t>(B * H * N), -7.0f);
    effattn::AttentionOptions opt;
    opt.scale = scale;
    if (variant == 1) {
      opt.block_q = quantum;
      opt.block_k = 3;
    } else if (variant == 2) {
      opt.block_k = 1;
    }
    auto qv = effattn::make_view(static_cast<const float*>(q.data()), B, H, N, D);
    auto kv = effattn::make_view(static_cast<const float*>(k.data()), B, H, N, D);
    auto vv = effattn::make_view(static_cast<const float*>(v.data()), B, H, N, Dv);
    auto ov = effattn::make_view(out.data(), B, H, N, Dv);
    auto lv = effattn::make_view(lse.data(), B, H, N);
    if (variant == 3)
      tf::block_causal_attention_reference<float>(qv, kv, vv, ov, lim.view(), opt, lv);
    else
      tf::block_causal_attention<float>(qv, kv, vv, ov, lim, opt, effattn::Executor{2}, lv);
    testing_util::expect_close(out, want_out, c.atol, c.rtol, c.name + " out, variant " + std::to_string(variant));
    testing_util::expect_close(lse, want_lse, c.atol, c.rtol, c.name + " lse, variant " + std::to_string(variant));
  }
}

INSTANTIATE_TEST_SUITE_P(Transfusion, Golden, ::testing::ValuesIn(transfusion_cases()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
