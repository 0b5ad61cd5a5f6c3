// SPDX-License-Identifier: MIT
// Transfusion layouts (segments, spans, per-token arrays, positions, batches),
// bad layouts, and patchify / unpatchify.
#include <gtest/gtest.h>

#include <cstdint>
#include <effattn/transfusion/transfusion.hpp>
#include <random>
#include <vector>

#include "support/testing.hpp"

namespace tf = effattn::transfusion;
using effattn::index_t;
using S = tf::Segment;
using TT = tf::TokenType;

namespace {

TEST(TransfusionLayout, FromSegments) {
  // caption(3) [2x3 image] text(2) [1x1 image]
  const auto L = tf::make_layout({S::text(3), S::image(2, 3), S::text(2), S::image(1, 1)});
  ASSERT_EQ(L.length(), 3 + 8 + 2 + 3);
  ASSERT_EQ(L.num_images(), 2);
  EXPECT_EQ(L.num_patches(), 7);
  EXPECT_EQ(L.num_text(), 5);
  const std::vector<TT> want = {TT::text,  TT::text,  TT::text,  TT::boi,   TT::patch, TT::patch,
                                TT::patch, TT::patch, TT::patch, TT::patch, TT::eoi,   TT::text,
                                TT::text,  TT::boi,   TT::patch, TT::eoi};
  EXPECT_EQ(L.type, want);
  EXPECT_EQ(L.images[0].start, 4);
  EXPECT_EQ(L.images[0].length, 6);
  EXPECT_EQ(L.images[0].boi(), 3);
  EXPECT_EQ(L.images[0].eoi(), 10);
  EXPECT_EQ(L.images[1].start, 14);
  // Patch coordinates in raster order over the 2 x 3 grid.
  const std::vector<index_t> rows = {0, 0, 0, 1, 1, 1}, cols = {0, 1, 2, 0, 1, 2};
  for (index_t t = 0; t < 6; ++t) {
    EXPECT_EQ(L.image_id[4 + t], 0);
    EXPECT_EQ(L.patch_row[4 + t], rows[t]);
    EXPECT_EQ(L.patch_col[4 + t], cols[t]);
  }
  EXPECT_EQ(L.image_id[14], 1);
  EXPECT_EQ(L.patch_row[14], 0);
  for (index_t i : {0, 3, 10, 11, 13, 15}) {
    EXPECT_EQ(L.image_id[i], -1);
    EXPECT_EQ(L.patch_row[i], -1);
    EXPECT_EQ(L.patch_col[i], -1);
  }
  for (index_t i = 0; i < L.length(); ++i) EXPECT_EQ(L.position[i], i);
  // The image precedes its caption only when text follows and none precedes.
  EXPECT_FALSE(L.image_precedes_caption(0));
  EXPECT_FALSE(L.image_precedes_caption(1));
  const auto L2 = tf::make_layout({S::image(2, 2), S::text(5)});
  EXPECT_TRUE(L2.image_precedes_caption(0));
  EXPECT_THROW(L2.image_precedes_caption(1), effattn::parameter_error);
}

TEST(TransfusionLayout, SharedPositionsPerImage) {
  const auto L = tf::make_layout({S::text(2), S::image(2, 2), S::text(1), S::image(1, 3)},
                                 tf::PositionMode::shared_per_image);
  // text 0 1 | BOI 2 | patches 3 3 3 3 | EOI 4 | text 5 | BOI 6 | 7 7 7 | EOI 8
  const std::vector<index_t> want = {0, 1, 2, 3, 3, 3, 3, 4, 5, 6, 7, 7, 7, 8};
  EXPECT_EQ(L.position, want);
  // Equivalently: i minus the number of non-first patches at indices <= i.
  index_t nonfirst = 0;
  for (index_t i = 0; i < L.length(); ++i) {
    if (L.type[i] == TT::patch && i != L.images[L.image_id[i]].start) ++nonfirst;
    EXPECT_EQ(L.position[i], i - nonfirst);
  }
}

TEST(TransfusionLayout, SpansAndTokensRoundTrip) {
  std::mt19937 g(5);
  std::uniform_int_distribution<int> n(1, 5), coin(0, 1);
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<S> segs;
    for (int s = 0; s < 6; ++s) segs.push_back(coin(g) ? S::image(n(g), n(g)) : S::text(n(g)));
    const auto L = tf::make_layout(segs);
    std::vector<tf::ImagePlacement> pl;
    for (const auto& im : L.images) pl.push_back({im.start, im.grid_h, im.grid_w});
    const auto L2 = tf::layout_from_spans(L.length(), pl);
    EXPECT_EQ(L2.type, L.type);
    EXPECT_EQ(L2.image_id, L.image_id);
    EXPECT_EQ(L2.patch_row, L.patch_row);
    EXPECT_EQ(L2.patch_col, L.patch_col);
    std::vector<std::int64_t> t(L.length()), id(L.length());
    for (index_t i = 0; i < L.length(); ++i) {
      t[i] = static_cast<std::int64_t>(L.type[i]);
      id[i] = L.image_id[i];
    }
    const auto L3 = tf::layout_from_tokens(effattn::make_view(t.data(), L.length()), effattn::make_view(id.data(), L.length()));
    EXPECT_EQ(L3.type, L.type);
    EXPECT_EQ(L3.image_id, L.image_id);
    for (index_t i = 0; i < L.length(); ++i) EXPECT_EQ(L3.key_limit(i), L.key_limit(i));
  }
}

TEST(TransfusionLayout, BadLayoutsThrow) {
  // Zero-size images and empty text runs.
  EXPECT_THROW(tf::make_layout({S::text(2), S::image(0, 3)}), effattn::parameter_error);
  EXPECT_THROW(tf::make_layout({S::image(2, 0)}), effattn::parameter_error);
  EXPECT_THROW(tf::make_layout({S::text(0)}), effattn::parameter_error);
  EXPECT_THROW(tf::layout_from_spans(10, {{3, 0, 2}}), effattn::parameter_error);
  // Out of range: BOI before 0, EOI at or past N.
  EXPECT_THROW(tf::layout_from_spans(10, {{0, 1, 3}}), effattn::parameter_error);
  EXPECT_THROW(tf::layout_from_spans(10, {{5, 1, 5}}), effattn::parameter_error);
  EXPECT_THROW(tf::layout_from_spans(10, {{-2, 1, 1}}), effattn::parameter_error);
  EXPECT_NO_THROW(tf::layout_from_spans(10, {{5, 1, 4}}));
  // Overlapping spans (patches, or markers) and out-of-order spans.
  EXPECT_THROW(tf::layout_from_spans(20, {{1, 1, 5}, {4, 1, 2}}), effattn::parameter_error);
  EXPECT_THROW(tf::layout_from_spans(20, {{1, 1, 5}, {7, 1, 2}}), effattn::parameter_error);  // BOI on EOI
  EXPECT_NO_THROW(tf::layout_from_spans(20, {{1, 1, 5}, {8, 1, 2}}));                          // adjacent
  EXPECT_THROW(tf::layout_from_spans(20, {{8, 1, 2}, {1, 1, 5}}), effattn::parameter_error);
  EXPECT_THROW(tf::layout_from_spans(-1, {}), effattn::parameter_error);
  // Bad per-token arrays.
  auto from = [](std::vector<std::int64_t> t, std::vector<std::int64_t> id) {
    return tf::layout_from_tokens(effattn::make_view(t.data(), static_cast<index_t>(t.size())),
                                  effattn::make_view(id.data(), static_cast<index_t>(id.size())));
  };
  EXPECT_NO_THROW(from({0, 1, 3, 3, 2, 0}, {-1, -1, 0, 0, -1, -1}));
  EXPECT_THROW(from({0, 1, 2, 0}, {-1, -1, -1, -1}), effattn::parameter_error);        // zero-size image
  EXPECT_THROW(from({0, 3, 3, 2}, {-1, 0, 0, -1}), effattn::parameter_error);          // no BOI
  EXPECT_THROW(from({1, 3, 3, 0}, {-1, 0, 0, -1}), effattn::parameter_error);          // no EOI
  EXPECT_THROW(from({1, 3, 3, 2}, {-1, 1, 1, -1}), effattn::parameter_error);          // ids not 0, 1, ...
  EXPECT_THROW(from({1, 3, 3, 2}, {-1, 0, -1, -1}), effattn::parameter_error);         // patch without id
  EXPECT_THROW(from({0, 0}, {-1, 0}), effattn::parameter_error);                       // text with an id
  EXPECT_THROW(from({0, 5}, {-1, -1}), effattn::parameter_error);                      // unknown code
  EXPECT_THROW(from({1, 3, 3, 2}, {-1, 0, 0}), effattn::shape_error);                  // length mismatch
  EXPECT_THROW(from({2, 0}, {-1, -1}), effattn::parameter_error);                      // stray EOI
  // p not dividing the latent.
  EXPECT_THROW(S::latent_image(32, 30, 4), effattn::parameter_error);
  EXPECT_THROW(S::latent_image(30, 32, 4), effattn::parameter_error);
  EXPECT_THROW(S::latent_image(32, 32, 0), effattn::parameter_error);
  EXPECT_EQ(S::latent_image(32, 32, 2).grid_h, 16);
}

TEST(TransfusionLayout, ErrorMessagesNameOperatorAndParameter) {
  try {
    tf::layout_from_spans(10, {{1, 1, 5}, {4, 1, 2}});
    FAIL();
  } catch (const effattn::parameter_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("transfusion::layout_from_spans"), std::string::npos) << m;
    EXPECT_NE(m.find("images"), std::string::npos) << m;
    EXPECT_NE(m.find("overlaps"), std::string::npos) << m;
  }
  try {
    std::vector<float> a(30 * 32 * 3), b(a.size());
    tf::patchify<float>(effattn::make_view(a.data(), 30, 32, 3), 4, effattn::make_view(b.data(), 56, 48));
    FAIL();
  } catch (const effattn::parameter_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("transfusion::patchify"), std::string::npos) << m;
    EXPECT_NE(m.find("H=30"), std::string::npos) << m;
  }
}

// ---------------------------------------------------------------- patchify

TEST(TransfusionPatchify, RoundTripIsExact) {
  for (auto [H, W, C, p] : std::vector<std::array<index_t, 4>>{{32, 32, 8, 2}, {6, 9, 3, 3}, {4, 4, 1, 4}, {5, 7, 2, 1}}) {
    const auto lat = testing_util::random_vector(H * W * C, static_cast<unsigned>(H * 100 + W));
    const index_t M = tf::num_patches(H, W, p);
    std::vector<float> tok(M * p * p * C, -1.0f), back(lat.size(), -1.0f);
    tf::patchify<float>(effattn::make_view(lat.data(), H, W, C), p, effattn::make_view(tok.data(), M, p * p * C));
    tf::unpatchify<float>(effattn::make_view(static_cast<const float*>(tok.data()), M, p * p * C), p,
                          effattn::make_view(back.data(), H, W, C));
    EXPECT_EQ(back, lat) << H << "x" << W << "x" << C << " p=" << p;
    // The documented layout: token r*(W/p)+c, value (dy*p+dx)*C+ch.
    const index_t gw = W / p;
    for (index_t r = 0; r < H / p; ++r)
      for (index_t c = 0; c < gw; ++c)
        for (index_t dy = 0; dy < p; ++dy)
          for (index_t dx = 0; dx < p; ++dx)
            for (index_t ch = 0; ch < C; ++ch)
              ASSERT_EQ(tok[(r * gw + c) * p * p * C + (dy * p + dx) * C + ch],
                        lat[((r * p + dy) * W + c * p + dx) * C + ch]);
  }
  EXPECT_EQ(tf::num_patches(32, 32, 2), 256);
}

TEST(TransfusionPatchify, StridedLatent) {
  // A channels-first [C, H, W] buffer viewed as [H, W, C].
  const index_t H = 4, W = 6, C = 3, p = 2, M = 6;
  const auto buf = testing_util::random_vector(C * H * W, 3);
  effattn::ConstView<float, 3> lat(buf.data(), {H, W, C}, {W, 1, H * W});
  std::vector<float> tok(M * p * p * C);
  tf::patchify<float>(lat, p, effattn::make_view(tok.data(), M, p * p * C));
  for (index_t t = 0; t < M; ++t)
    for (index_t e = 0; e < p * p * C; ++e) {
      const index_t dy = e / (p * C), dx = (e / C) % p, ch = e % C;
      EXPECT_EQ(tok[t * p * p * C + e], lat((t / 3) * p + dy, (t % 3) * p + dx, ch));
    }
}

TEST(TransfusionPatchify, BadShapesThrow) {
  std::vector<float> lat(8 * 6 * 2), tok(12 * 8);
  // p does not divide H (or W).
  EXPECT_THROW(tf::patchify<float>(effattn::make_view(lat.data(), 6, 8, 2), 4, effattn::make_view(tok.data(), 12, 32)),
               effattn::parameter_error);
  EXPECT_THROW(tf::patchify<float>(effattn::make_view(lat.data(), 8, 6, 2), 4, effattn::make_view(tok.data(), 12, 32)),
               effattn::parameter_error);
  EXPECT_THROW(tf::unpatchify<float>(effattn::make_view(static_cast<const float*>(tok.data()), 12, 8), 4,
                                     effattn::make_view(lat.data(), 8, 6, 2)),
               effattn::parameter_error);
  EXPECT_THROW(tf::num_patches(7, 8, 2), effattn::parameter_error);
  // Wrong token shape.
  EXPECT_THROW(tf::patchify<float>(effattn::make_view(lat.data(), 8, 6, 2), 2, effattn::make_view(tok.data(), 11, 8)),
               effattn::shape_error);
  // Output aliasing the input.
  EXPECT_THROW(tf::patchify<float>(effattn::make_view(lat.data(), 8, 6, 2), 2, effattn::make_view(lat.data(), 12, 8)),
               effattn::shape_error);
}

}  // namespace
