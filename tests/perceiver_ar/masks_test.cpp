// SPDX-License-Identifier: MIT
// Latent positions and masks: the official test cases of
// google-research/perceiver-ar (perceiver_ar_model_test.py: N = 10 inputs,
// M = 6 latents, 0 / 3 / 6 / 9 padding positions), and the engine policies
// against the dense formulas.
#include <gtest/gtest.h>

#include <cstdint>
#include <effattn/perceiver_ar/perceiver_ar.hpp>
#include <vector>

namespace {

using effattn::index_t;
namespace pa = effattn::perceiver_ar;

struct OfficialCase {
  index_t padding;
  std::vector<index_t> last_steps;
  std::vector<std::vector<int>> encoder, processor;
};

// Expected values transcribed from the official tests' expectations.
std::vector<OfficialCase> official_cases() {
  std::vector<OfficialCase> r;
  r.push_back({0,
               {4, 5, 6, 7, 8, 9},
               {{1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
                {1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
                {1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
                {1, 1, 1, 1, 1, 1, 1, 1, 0, 0},
                {1, 1, 1, 1, 1, 1, 1, 1, 1, 0},
                {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
               {{1, 0, 0, 0, 0, 0},
                {1, 1, 0, 0, 0, 0},
                {1, 1, 1, 0, 0, 0},
                {1, 1, 1, 1, 0, 0},
                {1, 1, 1, 1, 1, 0},
                {1, 1, 1, 1, 1, 1}}});
  r.push_back({3,
               {1, 2, 3, 4, 5, 6},
               {{1, 1, 0, 0, 0, 0, 0, 0, 0, 0},
                {1, 1, 1, 0, 0, 0, 0, 0, 0, 0},
                {1, 1, 1, 1, 0, 0, 0, 0, 0, 0},
                {1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
                {1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
                {1, 1, 1, 1, 1, 1, 1, 0, 0, 0}},
               {{1, 0, 0, 0, 0, 0},
                {1, 1, 0, 0, 0, 0},
                {1, 1, 1, 0, 0, 0},
                {1, 1, 1, 1, 0, 0},
                {1, 1, 1, 1, 1, 0},
                {1, 1, 1, 1, 1, 1}}});
  r.push_back({6,
               {-1, -1, 0, 1, 2, 3},
               {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                {0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                {1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                {1, 1, 0, 0, 0, 0, 0, 0, 0, 0},
                {1, 1, 1, 0, 0, 0, 0, 0, 0, 0},
                {1, 1, 1, 1, 0, 0, 0, 0, 0, 0}},
               {{1, 0, 0, 0, 0, 0},
                {0, 1, 0, 0, 0, 0},
                {0, 0, 1, 0, 0, 0},
                {0, 0, 1, 1, 0, 0},
                {0, 0, 1, 1, 1, 0},
                {0, 0, 1, 1, 1, 1}}});
  r.push_back({9,
               {-1, -1, -1, -1, -1, 0},
               {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                {0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                {0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                {0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                {0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                {1, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
               {{1, 0, 0, 0, 0, 0},
                {0, 1, 0, 0, 0, 0},
                {0, 0, 1, 0, 0, 0},
                {0, 0, 0, 1, 0, 0},
                {0, 0, 0, 0, 1, 0},
                {0, 0, 0, 0, 0, 1}}});
  return r;
}

TEST(PerceiverArMasks, OfficialCasesN10M6) {
  const index_t N = 10, M = 6;
  for (const auto& oc : official_cases()) {
    const index_t L = N - oc.padding;
    SCOPED_TRACE(testing::Message() << "padding " << oc.padding);
    // Latent positions (latent_last_steps, with the -1 convention).
    std::vector<index_t> len{L}, pos(M), lim(M);
    pa::latent_positions(effattn::make_view<const index_t>(len.data(), 1), N, effattn::make_view(pos.data(), 1, M));
    EXPECT_EQ(pos, oc.last_steps);
    // The last latent always predicts the last valid step.
    EXPECT_EQ(pos.back(), L - 1);
    // Dense formulas.
    const auto enc = pa::encoder_mask_reference(L, N, M);
    const auto proc = pa::processor_mask_reference(L, M);
    // The engine policies (what the fast path actually runs).
    pa::cross_key_limits(effattn::make_view<const index_t>(len.data(), 1), N, effattn::make_view(lim.data(), 1, M));
    const effattn::KeyLimitMask km{effattn::make_view<const index_t>(lim.data(), 1, M)};
    km.check("test", 1, 1, M, N);
    const auto kb = km.bind(0, 0, M, N);
    std::vector<index_t> inv{pa::invalid_latents(L, M)};
    const pa::LatentCausalMask lm{effattn::make_view<const index_t>(inv.data(), 1)};
    lm.check("test", 1, 1, M, M);
    const auto lb = lm.bind(0, 0, M, M);
    for (index_t i = 0; i < M; ++i) {
      for (index_t j = 0; j < N; ++j) {
        EXPECT_EQ(enc[i * N + j], oc.encoder[i][j]) << "encoder (" << i << "," << j << ")";
        EXPECT_EQ(kb.allowed(i, j), oc.encoder[i][j] == 1) << "limits (" << i << "," << j << ")";
      }
      for (index_t j = 0; j < M; ++j) {
        EXPECT_EQ(proc[i * M + j], oc.processor[i][j]) << "processor (" << i << "," << j << ")";
        EXPECT_EQ(lb.allowed(i, j), oc.processor[i][j] == 1) << "policy (" << i << "," << j << ")";
      }
    }
  }
}

// Official test_last_latent_predicts_last_valid_step: N in {6, 10}, padding in {0, 3, 5}.
TEST(PerceiverArMasks, LastLatentPredictsLastValidStep) {
  for (index_t N : {6, 10})
    for (index_t pad : {0, 3, 5}) {
      std::vector<index_t> len{N - pad}, pos(6);
      pa::latent_positions(effattn::make_view<const index_t>(len.data(), 1), N, effattn::make_view(pos.data(), 1, 6));
      EXPECT_EQ(pos.back(), N - pad - 1) << "N " << N << " pad " << pad;
    }
}

// The policies' block classification must agree with their own predicate on
// every block of every shape (a wrong 'full' or 'empty' would silently change
// results in the engine).
TEST(PerceiverArMasks, LatentPolicyClassificationIsExact) {
  for (index_t M : {1, 2, 5, 9, 17})
    for (index_t f = 0; f <= M; ++f) {
      std::vector<index_t> inv{f};
      const auto b = pa::LatentCausalMask{effattn::make_view<const index_t>(inv.data(), 1)}.bind(0, 0, M, M);
      for (index_t i0 = 0; i0 < M; ++i0)
        for (index_t i1 = i0 + 1; i1 <= M; ++i1)
          for (index_t j0 = 0; j0 < M; ++j0)
            for (index_t j1 = j0 + 1; j1 <= M; ++j1) {
              bool any = false, all = true;
              for (index_t i = i0; i < i1; ++i)
                for (index_t j = j0; j < j1; ++j) {
                  any = any || b.allowed(i, j);
                  all = all && b.allowed(i, j);
                }
              const auto kind = b.classify(i0, i1, j0, j1);
              if (kind == effattn::BlockKind::empty) {
                EXPECT_FALSE(any) << M << " " << f;
              }
              if (kind == effattn::BlockKind::full) {
                EXPECT_TRUE(all) << M << " " << f;
              }
              // key_end bounds every allowed key of the rows.
              for (index_t i = i0; i < i1; ++i)
                for (index_t j = b.key_end(i0, i1); j < M; ++j) EXPECT_FALSE(b.allowed(i, j));
            }
      // The diagonal is always allowed.
      for (index_t i = 0; i < M; ++i) EXPECT_TRUE(b.allowed(i, i));
      // Policy == dense official processor mask for L = M - f.
      const auto proc = pa::processor_mask_reference(M - f, M);
      for (index_t i = 0; i < M; ++i)
        for (index_t j = 0; j < M; ++j) EXPECT_EQ(b.allowed(i, j), proc[i * M + j] == 1) << M << " " << f;
    }
}

TEST(PerceiverArMasks, PositionsRejectBadInput) {
  std::vector<index_t> pos(6), len{11};
  EXPECT_THROW(pa::latent_positions(effattn::make_view<const index_t>(len.data(), 1), 10,
                                    effattn::make_view(pos.data(), 1, 6)),
               effattn::parameter_error);
  len[0] = -1;
  EXPECT_THROW(pa::latent_positions(effattn::make_view<const index_t>(len.data(), 1), 10,
                                    effattn::make_view(pos.data(), 1, 6)),
               effattn::parameter_error);
  EXPECT_THROW(pa::latent_positions({}, 5, effattn::make_view(pos.data(), 1, 6)), effattn::parameter_error);
  EXPECT_THROW(pa::latent_positions({}, 5, effattn::make_view(pos.data(), 1, 0)), effattn::parameter_error);
  len[0] = 3;
  EXPECT_THROW(pa::latent_positions(effattn::make_view<const index_t>(len.data(), 1), 10,
                                    effattn::make_view(pos.data(), 2, 3)),
               effattn::shape_error);
}

}  // namespace
