// SPDX-License-Identifier: MIT
// effattn.hpp in two translation units of one program: any non-inline
// definition in a header would break the link (one-definition rule). On x86-64
// with GCC or Clang the two units are built with different flags (this one as
// the suite is, odr_b_test.cpp with -mavx2 -mfma -mf16c): each carries the
// instruction-set levels at and above its own, in namespaces tagged with its
// own level, so the linker cannot mix their kernels or blocking constants.
#include <effattn/effattn.hpp>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "support/levels.hpp"
#include "support/testing.hpp"

int effattn_odr_b();
int effattn_odr_b_level();
void effattn_odr_b_run(const std::vector<float>& x, std::vector<float>& out, effattn::index_t N, effattn::index_t D);

TEST(Odr, TwoTranslationUnits) {
  using effattn::Isa;
  const effattn::index_t N = 150, D = 32;
  const auto x = testing_util::random_vector(static_cast<size_t>(2 * N * D), 7);
  std::vector<float> a(x.size()), b(x.size());
  for (int l = 0; l <= static_cast<int>(effattn::supported_isa()); ++l) {
    const Isa level = static_cast<Isa>(l);
    SCOPED_TRACE(to_string(level));
    testing_util::ScopedIsa at(level);
    // Each unit runs the level asked for, or its own if that is higher.
    const int la = static_cast<int>(effattn::detail::tu_level(level)), lb = effattn_odr_b_level();
    EXPECT_GE(lb, la);
    EXPECT_EQ(effattn_odr_b(), static_cast<int>(effattn::detail::attention_query_tile_quantum(static_cast<Isa>(lb))));
    EXPECT_EQ(static_cast<int>(effattn::detail::attention_query_tile_quantum()),
              static_cast<int>(effattn::detail::attention_query_tile_quantum(static_cast<Isa>(la))));
    effattn::attention<float>(effattn::make_view<const float>(x.data(), 1, 2, N, D),
                              effattn::make_view<const float>(x.data(), 1, 2, N, D),
                              effattn::make_view<const float>(x.data(), 1, 2, N, D),
                              effattn::make_view(a.data(), 1, 2, N, D), effattn::CausalMask{});
    effattn_odr_b_run(x, b, N, D);
    // The same level in both units runs the same kernels: the same bits.
    if (la == lb) {
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
    }
    EXPECT_TRUE(testing_util::close(a, b, 2e-5, 2e-4));
  }
}
