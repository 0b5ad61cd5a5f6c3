// SPDX-License-Identifier: MIT
// Selective attention's tiled prefill with its attention on the bfloat16
// kernel (SelectiveOptions::attention.compute = Precision::bfloat16): the
// selection step keeps its float logits, the attention items run in bfloat16.
#include <gtest/gtest.h>

#include <effattn/effattn.hpp>
#include <vector>

#include "support/bf16_compute.hpp"
#include "support/testing.hpp"

using namespace effattn;

TEST(SelectiveBf16, PrefillAttentionRunsInBfloat16) {
  const index_t B = 1, H = 4, N = 333, D = 64;
  const auto q = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 81);
  const auto k = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 82);
  const auto v = testing_util::random_vector(static_cast<size_t>(B * H * N * D), 83);
  testing_util::check_bf16_compute(
      [&](const AttentionOptions& o, std::vector<float>& out) {
        selective::SelectiveOptions so;
        so.attention = o;
        selective::selective_attention<float>(make_view<const float>(q.data(), B, H, N, D),
                                              make_view<const float>(k.data(), B, H, N, D),
                                              make_view<const float>(v.data(), B, H, N, D),
                                              make_view(out.data(), B, H, N, D), so, Executor{2});
      },
      static_cast<size_t>(B * H * N * D));
}
