// SPDX-License-Identifier: MIT
// Perceiver AR cross-attention against every perceiver_ar_* golden case
// (tests/data/golden/README.md, section 3).
#include <gtest/gtest.h>

#include <cstdint>
#include <effattn/perceiver_ar/perceiver_ar.hpp>
#include <string>
#include <vector>

#include "support/golden.hpp"
#include "support/testing.hpp"

namespace {

using effattn::index_t;
namespace pa = effattn::perceiver_ar;

class PerceiverArGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(PerceiverArGolden, ReproducesEveryOutput) {
  const golden::Case c(GetParam());
  const auto& p = c.params["params"];
  const index_t B = p["B"], H = p["H"], N = p["N"], M = p["M"], D = p["d"], Dv = p["dv"];
  const double scale = p["scale"];
  auto q = c.array("q").as_float(), k = c.array("k").as_float(), v = c.array("v").as_float();
  ASSERT_EQ(q.size(), static_cast<size_t>(B * H * M * D));
  ASSERT_EQ(k.size(), static_cast<size_t>(B * H * N * D));
  ASSERT_EQ(v.size(), static_cast<size_t>(B * H * N * Dv));

  // Which arrays exist is driven by params.json "files".
  const auto outputs = c.arrays("output");
  ASSERT_FALSE(outputs.empty());
  for (const auto& name : outputs) ASSERT_TRUE(name == "out" || name == "lse") << "unknown output " << name;

  effattn::AttentionOptions opt;
  opt.scale = scale;
  for (int backend = 0; backend < 3; ++backend) {
    for (int threads : {1, 2}) {
      std::vector<float> out(static_cast<size_t>(B * H * M * Dv), -7.0f), lse(static_cast<size_t>(B * H * M), -7.0f);
      auto qv = effattn::make_view<const float>(q.data(), B, H, M, D);
      auto kv = effattn::make_view<const float>(k.data(), B, H, N, D);
      auto vv = effattn::make_view<const float>(v.data(), B, H, N, Dv);
      auto ov = effattn::make_view(out.data(), B, H, M, Dv);
      auto lv = effattn::make_view(lse.data(), B, H, M);
      if (backend == 0) {
        pa::cross_attention<float>(qv, kv, vv, ov, {}, opt, effattn::Executor{threads}, lv);
      } else if (backend == 1) {
        // Explicit valid lengths equal to N take the same path as the default.
        std::vector<index_t> len(static_cast<size_t>(B), N);
        pa::cross_attention<float>(qv, kv, vv, ov, effattn::make_view<const index_t>(len.data(), B), opt,
                                   effattn::Executor{threads}, lv);
      } else {
        pa::cross_attention_reference<float>(qv, kv, vv, ov, {}, opt, lv);
      }
      const std::string what = c.name + " backend " + std::to_string(backend) + " threads " + std::to_string(threads);
      for (const auto& name : outputs) {
        const auto want = c.array(name).as_float();
        if (name == "out") testing_util::expect_close(out, want, c.atol, c.rtol, what + " out");
        if (name == "lse") testing_util::expect_close(lse, want, c.atol, c.rtol, what + " lse");
      }
    }
  }

  // The intermediate mask equals the official encoder mask with L = N, and
  // the engine policy agrees with it element by element.
  if (c.has("mask")) {
    const auto mask = c.array("mask").as_int();
    ASSERT_EQ(mask.size(), static_cast<size_t>(M * N));
    const auto ref = pa::encoder_mask_reference(N, N, M);
    std::vector<index_t> lim(static_cast<size_t>(M));
    pa::cross_key_limits({}, N, effattn::make_view(lim.data(), 1, M));
    const auto bound = effattn::KeyLimitMask{effattn::make_view<const index_t>(lim.data(), 1, M)}.bind(0, 0, M, N);
    const auto causal = effattn::CausalMask{}.bind(0, 0, M, N);
    for (index_t i = 0; i < M; ++i)
      for (index_t j = 0; j < N; ++j) {
        EXPECT_EQ(mask[i * N + j], ref[i * N + j]) << c.name << " mask (" << i << "," << j << ")";
        EXPECT_EQ(mask[i * N + j] != 0, bound.allowed(i, j)) << c.name << " limits (" << i << "," << j << ")";
        EXPECT_EQ(mask[i * N + j] != 0, causal.allowed(i, j)) << c.name << " causal (" << i << "," << j << ")";
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, PerceiverArGolden, ::testing::ValuesIn(golden::cases("perceiver_ar_")),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST(PerceiverArGoldenList, HasTheFourCases) { EXPECT_GE(golden::cases("perceiver_ar_").size(), 4u); }

}  // namespace
