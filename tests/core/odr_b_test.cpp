// SPDX-License-Identifier: MIT
#include <effattn/effattn.hpp>

int effattn_odr_b() { return static_cast<int>(effattn::detail::attention_query_tile_quantum()); }
