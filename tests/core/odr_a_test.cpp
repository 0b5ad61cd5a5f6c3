// SPDX-License-Identifier: MIT
// effattn.hpp in two translation units of one program: any non-inline
// definition in a header would break the link (one-definition rule).
#include <effattn/effattn.hpp>
#include <gtest/gtest.h>

int effattn_odr_b();
TEST(Odr, TwoTranslationUnits) { EXPECT_EQ(effattn_odr_b(), static_cast<int>(effattn::detail::attention_query_tile_quantum())); }
