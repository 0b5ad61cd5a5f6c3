// SPDX-License-Identifier: MIT
// star::Genome: encode/decode, validate() errors, repair() on 100k random
// integer vectors (valid afterwards, idempotent, valid genomes unchanged), the
// baselines, and the analytic parameter / cache counts on hand-computed cases.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <effattn/star/genome.hpp>

namespace star = effattn::star;
using effattn::index_t;
using star::LivClass;

namespace {

std::string error_of(const star::Genome& g) {
  try {
    g.validate();
  } catch (const effattn::parameter_error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

star::Genome slots_of(std::initializer_list<star::SlotGenes> s) { return star::Genome(std::vector<star::SlotGenes>(s)); }

TEST(StarGenome, ClassHelpers) {
  EXPECT_EQ(star::family(LivClass::SA1), star::LivFamily::attention);
  EXPECT_EQ(star::family(LivClass::SA4), star::LivFamily::attention);
  EXPECT_EQ(star::family(LivClass::DiffSA3), star::LivFamily::attention);
  EXPECT_EQ(star::family(LivClass::Rec2), star::LivFamily::recurrence);
  EXPECT_EQ(star::family(LivClass::DiffRec1), star::LivFamily::recurrence);
  EXPECT_EQ(star::family(LivClass::GConv2), star::LivFamily::convolution);
  EXPECT_EQ(star::family(LivClass::DiffGConv2), star::LivFamily::convolution);
  EXPECT_EQ(star::family(LivClass::GMemless), star::LivFamily::memoryless);
  for (int c = 10; c <= 17; ++c) {
    EXPECT_TRUE(star::is_differential(static_cast<LivClass>(c)));
    EXPECT_EQ(static_cast<int>(star::base_class(static_cast<LivClass>(c))), c - 9);
  }
  for (int c = 1; c <= 9; ++c) EXPECT_FALSE(star::is_differential(static_cast<LivClass>(c)));
  EXPECT_STREQ(star::class_name(LivClass::GMemless), "GMemless");
  EXPECT_STREQ(star::class_name(LivClass::DiffGConv2), "Diff-GConv-2");
  EXPECT_STREQ(star::class_name(static_cast<LivClass>(99)), "?");
}

TEST(StarGenome, EncodeDecodeRoundTrip) {
  const auto tpp = star::transformer_pp();
  const auto flat = tpp.encode();
  ASSERT_EQ(flat.size(), 24u * 5u);
  EXPECT_EQ(flat[0], 1);   // SA-1
  EXPECT_EQ(flat[5], 9);   // GMemless
  EXPECT_EQ(flat[6], 2);   // slot 1's own featurizer group
  EXPECT_EQ(star::Genome::decode(flat), tpp);
  EXPECT_EQ(star::Genome::decode(flat, 24), tpp);
  // any values survive the round trip, valid or not
  std::vector<std::int64_t> odd = {-5, 0, 99, std::numeric_limits<std::int64_t>::min(), 7,
                                   3, 1, 2, 2, std::numeric_limits<std::int64_t>::max()};
  const auto g = star::Genome::decode(odd, 2);
  EXPECT_EQ(g.slots(), 2);
  EXPECT_EQ(g[0].cls, -5);
  EXPECT_EQ(g[0].fg_group, std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(g[1].fg_strategy, std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(g.encode(), odd);
  EXPECT_FALSE(g.is_valid());
}

TEST(StarGenome, DecodeRejectsBadLengths) {
  EXPECT_THROW(star::Genome::decode({}), effattn::shape_error);
  EXPECT_THROW(star::Genome::decode({1, 1, 1, 1}), effattn::shape_error);
  EXPECT_THROW(star::Genome::decode(std::vector<std::int64_t>(10, 1), 3), effattn::shape_error);
  EXPECT_THROW(star::Genome::decode(std::vector<std::int64_t>(10, 1), -1), effattn::parameter_error);
  try {
    star::Genome::decode(std::vector<std::int64_t>(11, 1), 2);
    FAIL();
  } catch (const effattn::shape_error& e) {
    EXPECT_TRUE(contains(e.what(), "star::Genome::decode")) << e.what();
    EXPECT_TRUE(contains(e.what(), "for 2 slots (10)")) << e.what();
    EXPECT_TRUE(contains(e.what(), "got 11")) << e.what();
  }
  EXPECT_THROW(star::Genome::uniform(0), effattn::parameter_error);
}

TEST(StarGenome, ValidateNamesSlotAndGene) {
  EXPECT_NO_THROW(star::transformer_pp().validate());
  EXPECT_TRUE(contains(error_of(star::Genome()), "no slots"));

  // rule 1: ranges, every gene
  auto g = star::Genome::uniform(3);
  g[1].cls = 18;
  auto e = error_of(g);
  EXPECT_TRUE(contains(e, "slot 1 gene 1 (class) must be in [1, 17], got 18")) << e;
  g = star::Genome::uniform(3);
  g[2].fs_group = 4;
  e = error_of(g);
  EXPECT_TRUE(contains(e, "slot 2 gene 2 (featurizer-sharing group) must be in [1, 3], got 4")) << e;
  g = star::Genome::uniform(3);
  g[0].fs_strategy = 0;
  e = error_of(g);
  EXPECT_TRUE(contains(e, "slot 0 gene 3 (featurizer-sharing strategy) must be in [1, 3], got 0")) << e;
  g = star::Genome::uniform(3);
  g[0].fg_group = -1;
  EXPECT_TRUE(contains(error_of(g), "slot 0 gene 4 (feature-group-sharing group)"));
  g = star::Genome::uniform(3);
  g[2].fg_strategy = 4;
  EXPECT_TRUE(contains(error_of(g), "slot 2 gene 5 (feature-group-sharing strategy) must be in [1, 3], got 4"));

  // rule 2: feature-group sharing only for attention
  g = star::Genome::uniform(3);
  g[1].cls = static_cast<int>(LivClass::Rec1);
  g[1].fg_strategy = 2;
  e = error_of(g);
  EXPECT_TRUE(contains(e, "slot 1 gene 5 (feature-group-sharing strategy) must be 1 (none) for Rec-1")) << e;
  g[1].cls = static_cast<int>(LivClass::DiffSA2);  // attention family: fine
  EXPECT_EQ(error_of(g), "");

  // rule 3: a featurizer group shares one class and one strategy
  g = slots_of({{1, 2, 2, 1, 1}, {9, 1, 1, 2, 1}, {3, 2, 2, 3, 1}});
  e = error_of(g);
  EXPECT_TRUE(contains(e, "slot 2 gene 1 (class) is SA-3 but shares")) << e;
  EXPECT_TRUE(contains(e, "first sharing slot 0 is SA-1")) << e;
  g = slots_of({{1, 2, 2, 1, 1}, {9, 1, 1, 2, 1}, {1, 2, 3, 3, 1}});
  e = error_of(g);
  EXPECT_TRUE(contains(e, "slot 2 gene 3 (featurizer-sharing strategy) is 3 in group 2")) << e;
  // a non-sharing member of the same group number is no member
  g = slots_of({{1, 2, 2, 1, 1}, {9, 2, 1, 2, 1}, {1, 2, 2, 3, 1}});
  EXPECT_EQ(error_of(g), "");

  // rule 4: likewise for feature groups
  g = slots_of({{1, 1, 1, 3, 2}, {4, 2, 1, 3, 2}, {1, 3, 1, 3, 2}});
  e = error_of(g);
  EXPECT_TRUE(contains(e, "slot 1 gene 1 (class) is SA-4")) << e;
  g = slots_of({{1, 1, 1, 3, 2}, {1, 2, 1, 3, 3}, {1, 3, 1, 3, 2}});
  e = error_of(g);
  EXPECT_TRUE(contains(e, "slot 1 gene 5 (feature-group-sharing strategy) is 3 in group 3")) << e;
  // the error is a parameter_error, i.e. a std::invalid_argument
  EXPECT_THROW(g.validate(), std::invalid_argument);
}

TEST(StarGenome, WrapIntoIsExactForEveryInt64) {
  const std::int64_t mn = std::numeric_limits<std::int64_t>::min(), mx = std::numeric_limits<std::int64_t>::max();
  for (std::int64_t lo : {1, 3}) {
    for (std::int64_t hi : {lo, lo + 1, lo + 16, lo + 23}) {
      for (std::int64_t v : {mn, mn + 1, std::int64_t{-1000}, std::int64_t{-1}, std::int64_t{0}, lo, hi, hi + 1,
                             std::int64_t{1000003}, mx - 1, mx}) {
        const __int128 n = hi - lo + 1;
        __int128 k = (static_cast<__int128>(v) - lo) % n;
        if (k < 0) k += n;
        EXPECT_EQ(star::detail::wrap_into(v, lo, hi), static_cast<std::int64_t>(lo + k)) << v << " " << lo << " " << hi;
      }
    }
  }
}

TEST(StarGenome, RepairOnHundredThousandRandomVectors) {
  std::mt19937_64 rng(14);
  const std::int64_t mn = std::numeric_limits<std::int64_t>::min(), mx = std::numeric_limits<std::int64_t>::max();
  int changed = 0, sharing = 0, fg_sharing = 0;
  for (int t = 0; t < 100000; ++t) {
    // mostly the paper's 24 slots, some short genomes; values from a mix of
    // in-range, near-range, negative, huge and extreme draws
    const index_t slots = t % 10 == 0 ? index_t(1 + rng() % 7) : 24;
    std::vector<std::int64_t> flat(static_cast<size_t>(slots * 5));
    const int mode = t % 4;
    for (auto& v : flat) {
      switch (mode) {
        case 0: v = static_cast<std::int64_t>(rng() % 30) - 3; break;       // near the ranges
        case 1: v = 1 + static_cast<std::int64_t>(rng() % 3); break;        // small: many groups collide
        case 2: v = static_cast<std::int64_t>(rng()); break;                // any int64
        default: {
          const std::int64_t pick[] = {mn, mx, mn + 1, mx - 1, 0, -1, 1, 17, 18, 24, 25};
          v = pick[rng() % 11];
        }
      }
    }
    auto g = star::Genome::decode(flat, slots);
    const bool was_valid = g.is_valid();
    const auto before = g;
    const bool c = g.repair();
    ASSERT_EQ(c, !was_valid) << "t=" << t;
    if (!c) {
      ASSERT_EQ(g, before);
    }
    changed += c;
    ASSERT_TRUE(g.is_valid()) << "t=" << t << ": " << error_of(g);
    ASSERT_NO_THROW(g.validate());
    // idempotent; a valid genome is unchanged
    auto again = g;
    ASSERT_FALSE(again.repair()) << "t=" << t;
    ASSERT_EQ(again, g);
    ASSERT_EQ(star::Genome::decode(g.encode(), slots), g);
    for (index_t i = 0; i < g.slots(); ++i) {
      sharing += g[i].fs_strategy != 1;
      fg_sharing += g[i].fg_strategy != 1;
    }
  }
  EXPECT_GT(changed, 90000);
  EXPECT_GT(sharing, 100000);    // repair keeps sharing where it can
  EXPECT_GT(fg_sharing, 10000);
}

TEST(StarGenome, RepairRules) {
  // out of range wraps: 18 -> 1, 0 -> 17, -1 -> 16
  auto g = slots_of({{18, 1, 1, 1, 1}, {0, 2, 1, 2, 1}, {-1, 3, 1, 3, 1}});
  EXPECT_TRUE(g.repair());
  EXPECT_EQ(g[0].cls, 1);
  EXPECT_EQ(g[1].cls, 17);
  EXPECT_EQ(g[2].cls, 16);
  // non-attention feature-group strategy becomes none
  g = slots_of({{9, 1, 1, 1, 3}, {5, 2, 1, 2, 2}, {1, 3, 1, 3, 2}});
  EXPECT_TRUE(g.repair());
  EXPECT_EQ(g[0].fg_strategy, 1);
  EXPECT_EQ(g[1].fg_strategy, 1);
  EXPECT_EQ(g[2].fg_strategy, 2);
  // the group's first sharing slot decides; disagreeing later slots stop sharing
  g = slots_of({{9, 2, 1, 1, 1}, {1, 2, 2, 1, 2}, {3, 2, 2, 1, 2}, {1, 2, 3, 2, 1}, {1, 2, 2, 1, 3}});
  EXPECT_TRUE(g.repair());
  EXPECT_EQ(g[0].fs_strategy, 1);  // was none already
  EXPECT_EQ(g[1].fs_strategy, 2);  // leader of featurizer group 2 (SA-1, all)
  EXPECT_EQ(g[2].fs_strategy, 1);  // SA-3: other class
  EXPECT_EQ(g[3].fs_strategy, 1);  // other strategy
  EXPECT_EQ(g[4].fs_strategy, 2);  // agrees
  EXPECT_EQ(g[1].fg_strategy, 2);  // leader of feature group 1 (SA-1, kv)
  EXPECT_EQ(g[2].fg_strategy, 1);  // SA-3
  EXPECT_EQ(g[4].fg_strategy, 1);  // qk != kv
  EXPECT_TRUE(g.is_valid());
  EXPECT_FALSE(g.repair());
  // an empty genome stays empty (and invalid)
  star::Genome empty;
  EXPECT_FALSE(empty.repair());
  EXPECT_FALSE(empty.is_valid());
}

TEST(StarGenome, Baselines) {
  for (index_t n : {1, 2, 3, 5, 24, 48}) {
    const auto tpp = star::transformer_pp(n);
    const auto hyb = star::striped_hybrid(n);
    ASSERT_EQ(tpp.slots(), n);
    ASSERT_EQ(hyb.slots(), n);
    EXPECT_NO_THROW(tpp.validate());
    EXPECT_NO_THROW(hyb.validate());
    EXPECT_EQ(tpp.repaired(), tpp);
    EXPECT_EQ(hyb.repaired(), hyb);
  }
  const auto tpp = star::transformer_pp();
  const auto hyb = star::striped_hybrid();
  int sa = 0, mem = 0, rec = 0;
  for (index_t i = 0; i < 24; ++i) {
    EXPECT_EQ(tpp.liv_class(i), i % 2 == 0 ? LivClass::SA1 : LivClass::GMemless);
    EXPECT_EQ(tpp[i].fs_strategy, 1);
    EXPECT_EQ(tpp[i].fg_strategy, 1);
    sa += hyb.liv_class(i) == LivClass::SA1;
    rec += hyb.liv_class(i) == LivClass::Rec1;
    mem += hyb.liv_class(i) == LivClass::GMemless;
  }
  EXPECT_EQ(sa, 6);
  EXPECT_EQ(rec, 6);
  EXPECT_EQ(mem, 12);
  EXPECT_EQ(hyb.liv_class(0), LivClass::SA1);
  EXPECT_EQ(hyb.liv_class(1), LivClass::GMemless);
  EXPECT_EQ(hyb.liv_class(2), LivClass::Rec1);
}

// ------------------------------------------------------------------ costs

// d = 8, H = 2, T = 10, short conv 3, GConv-2 filter MLP 3 features (1 band) -> 3 -> 3 -> 8, float32 cache.
star::CostDims small() {
  star::CostDims d;
  d.width = 8;
  d.heads = 2;
  d.context = 10;
  d.short_conv = 3;
  d.longconv_bands = 1;
  d.longconv_hidden = 3;
  d.cache_element_bytes = 4;
  return d;
}

star::GenomeCost cost_of(std::initializer_list<star::SlotGenes> s, const star::CostDims& d = small()) {
  return star::genome_cost(slots_of(s), d);
}

TEST(StarGenomeCost, EveryClassByHand) {
  // {params including the slot's RMSNorm (8), cache bytes}; final norm adds 8 to the total
  struct Want {
    LivClass c;
    std::int64_t params, cache;
  };
  const Want want[] = {
      {LivClass::SA1, 8 + 4 * 64, 4 * (2 * 10 * 8)},
      // q, k, v: 64 + 8*3 taps; state: 2 rows of q, k, v pre-conv; K/V caches
      {LivClass::SA2, 8 + 3 * (64 + 24) + 64, 4 * (3 * 2 * 8 + 2 * 10 * 8)},
      // x, z: 64 each; a (dt, R = ceil(8/16) = 1): 8 + 8 + 8 bias; B, C: 8E each; A_log 8E + D 8; out 64
      {LivClass::Rec1, 8 + 64 + 64 + 24 + 128 + 128 + 136 + 64, 4 * (8 * 16)},
      {LivClass::Rec2, 8 + 64 + 64 + 24 + 16 + 16 + 24 + 64, 4 * (8 * 2)},
      {LivClass::GConv1, 8 + 3 * 64 + 8 * 3 + 64, 4 * (2 * 8)},
      // filter MLP: 3x3 + 3, 3x3 + 3, 8x3; s1, s2: 3 + 3; D: 8
      {LivClass::GConv2, 8 + 3 * 64 + (12 + 12 + 24 + 6 + 8) + 64, 4 * (10 * 8)},
      // f = ceil(64 / 3) = 22 -> 24
      {LivClass::GMemless, 8 + 3 * 8 * 24, 0},
      {LivClass::DiffSA1, 8 + 2 * 4 * 64, 2 * 4 * (2 * 10 * 8)},
      {LivClass::DiffRec2, 8 + 2 * 272, 2 * 4 * 16},
  };
  for (const auto& w : want) {
    const auto c = cost_of({{static_cast<int>(w.c), 1, 1, 1, 1}});
    EXPECT_EQ(c.params, w.params + 8) << star::class_name(w.c);
    EXPECT_EQ(c.cache_bytes, w.cache) << star::class_name(w.c);
    ASSERT_EQ(c.slots.size(), 1u);
    EXPECT_EQ(c.slots[0].params, w.params) << star::class_name(w.c);
  }
  // GQA: H = 4 heads of 2 channels; SA-3: 1 K/V head (2 channels), SA-4: 2 (4 channels)
  auto d4 = small();
  d4.heads = 4;
  auto c = cost_of({{3, 1, 1, 1, 1}}, d4);
  EXPECT_EQ(c.slots[0].params, 8 + 64 + 16 + 16 + 64);
  EXPECT_EQ(c.cache_bytes, 4 * (2 * 10 * 2));
  c = cost_of({{4, 1, 1, 1, 1}}, d4);
  EXPECT_EQ(c.slots[0].params, 8 + 64 + 32 + 32 + 64);
  EXPECT_EQ(c.cache_bytes, 4 * (2 * 10 * 4));
  // SA-3 needs H % 4 == 0
  EXPECT_THROW(cost_of({{3, 1, 1, 1, 1}}), effattn::parameter_error);
  EXPECT_NO_THROW(cost_of({{4, 1, 1, 1, 1}}));
}

TEST(StarGenomeCost, BaselinesAndModelTerms) {
  auto d = small();
  // Transformer++ of 2 slots: SA-1 (264) + GMemless (584) + final norm (8)
  auto c = star::genome_cost(star::transformer_pp(2), d);
  EXPECT_EQ(c.params, 264 + 584 + 8);
  EXPECT_EQ(c.cache_bytes, 640);
  d.vocab = 100;  // tied embedding: 100 x 8
  d.cache_element_bytes = 2;
  c = star::genome_cost(star::transformer_pp(2), d);
  EXPECT_EQ(c.params, 264 + 584 + 8 + 800);
  EXPECT_EQ(c.cache_bytes, 320);
  // the striped hybrid of 4 slots: SA-1, GMemless, Rec-1, GMemless
  c = star::genome_cost(star::striped_hybrid(4), small());
  EXPECT_EQ(c.params, 264 + 584 + 616 + 584 + 8);
  EXPECT_EQ(c.cache_bytes, 640 + 512);
  // 24 slots, paper-like dims: the hybrid holds 6 K/V caches, Transformer++ 12
  star::CostDims big;
  const auto t = star::genome_cost(star::transformer_pp(), big), h = star::genome_cost(star::striped_hybrid(), big);
  EXPECT_EQ(t.cache_bytes, 12 * 2 * 2048 * 768 * 4);
  EXPECT_EQ(h.cache_bytes, 6 * 2 * 2048 * 768 * 4 + 6 * 768 * 16 * 4);
  EXPECT_LT(h.cache_bytes, t.cache_bytes);
}

TEST(StarGenomeCost, FeaturizerSharing) {
  // three SA-1 in featurizer group 1, strategy all: q, k, v counted once
  auto c = cost_of({{1, 1, 2, 1, 1}, {1, 1, 2, 2, 1}, {1, 1, 2, 3, 1}});
  EXPECT_EQ(c.slots[0].params, 264);
  EXPECT_EQ(c.slots[1].params, 8 + 64);  // norm + out
  EXPECT_EQ(c.slots[2].params, 8 + 64);
  EXPECT_EQ(c.cache_bytes, 3 * 640);     // weights shared, caches not
  // partial: K and V projections only
  c = cost_of({{1, 1, 3, 1, 1}, {1, 1, 3, 2, 1}, {1, 1, 3, 3, 1}});
  EXPECT_EQ(c.slots[1].params, 8 + 64 + 64);
  EXPECT_EQ(c.params, 264 + 2 * 136 + 8);
  // a non-sharing slot with the same group number is not a member
  c = cost_of({{1, 1, 2, 1, 1}, {1, 1, 1, 2, 1}, {1, 1, 2, 3, 1}});
  EXPECT_EQ(c.slots[1].params, 264);
  EXPECT_EQ(c.slots[2].params, 72);
  // two groups are independent
  c = cost_of({{1, 1, 2, 1, 1}, {1, 2, 2, 2, 1}, {1, 1, 2, 3, 1}, {1, 2, 2, 1, 1}});
  EXPECT_EQ(c.params, 264 + 264 + 72 + 72 + 8);
  // recurrence partial: a (dt), B, C shared, x and z private (Rec-2: 24 + 16 + 16)
  c = cost_of({{6, 1, 3, 1, 1}, {6, 1, 3, 2, 1}});
  EXPECT_EQ(c.slots[1].params, 280 - (24 + 16 + 16));
  auto r4 = small();
  r4.rec_dt_rank = 4;  // a: 4*8 + 8*4 + 8
  EXPECT_EQ(star::genome_cost(star::Genome::uniform(1, LivClass::Rec2), r4).slots[0].params, 280 - 24 + 72);
  // convolution partial: the gates B, C; memoryless partial: the gate
  c = cost_of({{7, 1, 3, 1, 1}, {7, 1, 3, 2, 1}});
  EXPECT_EQ(c.slots[1].params, 288 - 128);
  c = cost_of({{9, 1, 3, 1, 1}, {9, 1, 3, 2, 1}});
  EXPECT_EQ(c.slots[1].params, 584 - 192);
  // differential: both halves' featurizers shared (a.q, b.q, ... once each)
  c = cost_of({{10, 1, 2, 1, 1}, {10, 1, 2, 2, 1}});
  EXPECT_EQ(c.slots[1].params, 8 + 2 * 64);
}

TEST(StarGenomeCost, FeatureGroupSharing) {
  // K/V from slot 0: the followers have neither K/V weights nor K/V cache
  auto c = cost_of({{1, 1, 1, 1, 2}, {1, 2, 1, 1, 2}, {1, 3, 1, 1, 2}});
  EXPECT_EQ(c.slots[0].params, 264);
  EXPECT_EQ(c.slots[0].cache_bytes, 640);
  EXPECT_EQ(c.slots[1].params, 8 + 64 + 64);
  EXPECT_EQ(c.slots[1].cache_bytes, 0);
  EXPECT_EQ(c.cache_bytes, 640);
  // Q/K from slot 0: followers keep V (weights and cache)
  c = cost_of({{1, 1, 1, 1, 3}, {1, 2, 1, 1, 3}});
  EXPECT_EQ(c.slots[1].params, 8 + 64 + 64);
  EXPECT_EQ(c.slots[1].cache_bytes, 320);
  // a GMemless between the members changes nothing
  c = cost_of({{1, 1, 1, 2, 2}, {9, 2, 1, 2, 1}, {1, 3, 1, 2, 2}});
  EXPECT_EQ(c.cache_bytes, 640);
  // SA-2 follower: K/V and their conv state come from the leader; q's conv state stays
  c = cost_of({{2, 1, 1, 1, 2}, {2, 2, 1, 1, 2}});
  EXPECT_EQ(c.slots[1].params, 8 + 88 + 64);
  EXPECT_EQ(c.slots[1].cache_bytes, 4 * 16);
  // differential follower: a.k, a.v, b.k, b.v shared
  c = cost_of({{10, 1, 1, 1, 2}, {10, 2, 1, 1, 2}});
  EXPECT_EQ(c.slots[1].params, 8 + 4 * 64);
  EXPECT_EQ(c.slots[1].cache_bytes, 0);
  // both kinds: featurizer group all + K/V group
  c = cost_of({{1, 1, 2, 1, 2}, {1, 1, 2, 1, 2}});
  EXPECT_EQ(c.slots[1].params, 8 + 64);  // q shared by the featurizer group, k/v by the feature group
  EXPECT_EQ(c.cache_bytes, 640);
}

TEST(StarGenomeCost, Errors) {
  auto d = small();
  auto bad = star::transformer_pp(2);
  bad[0].cls = 0;
  EXPECT_THROW(star::genome_cost(bad, d), effattn::parameter_error);
  d.width = 9;  // not a multiple of heads
  EXPECT_THROW(star::genome_cost(star::transformer_pp(2), d), effattn::parameter_error);
  for (auto field : {&star::CostDims::heads, &star::CostDims::short_conv, &star::CostDims::longconv_bands,
                     &star::CostDims::longconv_hidden, &star::CostDims::cache_element_bytes, &star::CostDims::width}) {
    d = small();
    d.*field = 0;
    EXPECT_THROW(star::genome_cost(star::transformer_pp(2), d), effattn::parameter_error);
  }
  for (auto field : {&star::CostDims::context, &star::CostDims::vocab, &star::CostDims::ffn_hidden,
                     &star::CostDims::rec_dt_rank}) {
    d = small();
    d.*field = -1;
    EXPECT_THROW(star::genome_cost(star::transformer_pp(2), d), effattn::parameter_error);
  }
  d = small();
  d.context = index_t(1) << 40;
  d.width = index_t(1) << 24;
  d.heads = 1;
  EXPECT_THROW(star::genome_cost(star::transformer_pp(2), d), effattn::shape_error);  // overflow, not a wrap
  EXPECT_THROW(star::liv_components(static_cast<LivClass>(18), small()), effattn::parameter_error);
}

}  // namespace
