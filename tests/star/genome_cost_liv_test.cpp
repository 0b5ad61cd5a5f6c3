// SPDX-License-Identifier: MIT
// star::liv_components against the LIV operators themselves: for every class
// whose operator is built here, the cost model's weights and cache bytes (no
// sharing, no norm) equal the operator's param_count() and cache_bytes().
// (Item 4 checks whole compiled models.)
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include <effattn/star/genome.hpp>
#include <effattn/star/liv_attention.hpp>
#include <effattn/star/liv_conv.hpp>
#include <effattn/star/liv_differential.hpp>
#include <effattn/star/liv_longconv.hpp>
#include <effattn/star/liv_mlp.hpp>
#include <effattn/star/liv_recurrence.hpp>

namespace star = effattn::star;
using effattn::index_t;
using star::LivClass;

namespace {

struct Sum {
  std::int64_t params = 0, cache_bytes = 0;
};

Sum model_of(LivClass c, const star::CostDims& d) {
  Sum s;
  for (const auto& comp : star::liv_components(c, d)) {
    s.params += comp.params;
    s.cache_bytes += comp.cache_elements * d.cache_element_bytes;
  }
  return s;
}

template <class Op>
void expect_matches(LivClass c, const typename Op::Config& cfg, const star::CostDims& d) {
  const Op op(cfg, 5);
  const Sum s = model_of(c, d);
  const std::string what = std::string(star::class_name(c)) + " width " + std::to_string(d.width) + " heads " +
                           std::to_string(d.heads) + " context " + std::to_string(d.context);
  EXPECT_EQ(s.params, op.param_count()) << what;
  EXPECT_EQ(s.cache_bytes, op.cache_bytes(d.context)) << what;
}

TEST(StarGenomeCost, MatchesTheOperators) {
  for (index_t width : {16, 32, 48}) {  // head_dim even (RoPE)
    for (index_t heads : {4, 8}) {
      if (width % heads != 0) continue;
      for (index_t context : {0, 1, 13, 100}) {
        star::CostDims d;
        d.width = width;
        d.heads = heads;
        d.context = context;
        using Att = star::SoftmaxAttention;
        expect_matches<Att>(LivClass::SA1, Att::Config::sa1(width, heads), d);
        expect_matches<Att>(LivClass::SA2, Att::Config::sa2(width, heads), d);
        expect_matches<Att>(LivClass::SA3, Att::Config::sa3(width, heads), d);
        expect_matches<Att>(LivClass::SA4, Att::Config::sa4(width, heads), d);
        expect_matches<star::Recurrence>(LivClass::Rec1, star::Recurrence::Config::rec1(width), d);
        expect_matches<star::Recurrence>(LivClass::Rec2, star::Recurrence::Config::rec2(width), d);
        expect_matches<star::ShortConv>(LivClass::GConv1, star::ShortConv::Config{width, 3, false}, d);
        expect_matches<star::LongConv>(LivClass::GConv2, star::LongConv::Config{width, 16, 4, 2048}, d);
        expect_matches<star::Differential<star::LongConv>>(LivClass::DiffGConv2,
                                                           star::LongConv::Config{width, 16, 4, 2048}, d);
        expect_matches<star::SwiGLU>(LivClass::GMemless, star::SwiGLU::Config{width, 0}, d);
        expect_matches<star::Differential<Att>>(LivClass::DiffSA1, Att::Config::sa1(width, heads), d);
        expect_matches<star::Differential<Att>>(LivClass::DiffSA3, Att::Config::sa3(width, heads), d);
        expect_matches<star::Differential<star::Recurrence>>(LivClass::DiffRec1,
                                                             star::Recurrence::Config::rec1(width), d);
        expect_matches<star::Differential<star::ShortConv>>(LivClass::DiffGConv1,
                                                            star::ShortConv::Config{width, 3, false}, d);
      }
    }
  }
}

}  // namespace
