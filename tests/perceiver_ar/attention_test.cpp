// SPDX-License-Identifier: MIT
// Perceiver AR attention operators: the engine path against the dense oracle
// on odd shapes, reductions (M = N, M = 1), consistency across M, padding,
// threads, and argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <effattn/perceiver_ar/perceiver_ar.hpp>
#include <random>
#include <vector>

#include "support/testing.hpp"

namespace {

using effattn::index_t;
namespace pa = effattn::perceiver_ar;

struct Shape {
  index_t B, H, Hkv, N, M, D, Dv;
};

struct Data {
  Shape s;
  std::vector<float> q, k, v;
  Data(const Shape& sh, unsigned seed) : s(sh) {
    q = testing_util::random_vector(static_cast<size_t>(s.B * s.H * s.M * s.D), seed);
    k = testing_util::random_vector(static_cast<size_t>(s.B * s.Hkv * s.N * s.D), seed + 1);
    v = testing_util::random_vector(static_cast<size_t>(s.B * s.Hkv * s.N * s.Dv), seed + 2);
  }
  effattn::ConstView<float, 4> qv() const { return effattn::make_view<const float>(q.data(), s.B, s.H, s.M, s.D); }
  effattn::ConstView<float, 4> kv() const { return effattn::make_view<const float>(k.data(), s.B, s.Hkv, s.N, s.D); }
  effattn::ConstView<float, 4> vv() const { return effattn::make_view<const float>(v.data(), s.B, s.Hkv, s.N, s.Dv); }
};

std::vector<index_t> random_lengths(index_t B, index_t N, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<index_t> d(0, N);
  std::vector<index_t> r(static_cast<size_t>(B));
  for (auto& x : r) x = d(g);
  return r;
}

bool all_finite(const std::vector<float>& x) {
  for (float f : x)
    if (!std::isfinite(f)) return false;
  return true;
}

// Engine vs oracle on odd shapes, with and without valid lengths, GQA,
// tiles that do not divide M or N, and the reference backend of the engine.
TEST(PerceiverArCrossAttention, MatchesReferenceOnOddShapes) {
  const Shape shapes[] = {{1, 1, 1, 1, 1, 8, 8},     {2, 3, 3, 20, 6, 16, 16},  {1, 4, 2, 113, 37, 40, 24},
                          {3, 2, 1, 203, 203, 64, 64}, {2, 2, 2, 1023, 101, 80, 80}, {1, 2, 2, 300, 1, 33, 17},
                          {2, 4, 4, 257, 130, 64, 64}};
  unsigned seed = 10;
  for (const auto& s : shapes) {
    const Data d(s, seed += 3);
    for (int with_len = 0; with_len < 2; ++with_len) {
      auto len = random_lengths(s.B, s.N, seed);
      if (s.B > 1) len[0] = s.N;  // one full row, one possibly padded
      const effattn::ConstView<index_t, 1> lv =
          with_len ? effattn::make_view<const index_t>(len.data(), s.B) : effattn::ConstView<index_t, 1>{};
      std::vector<float> out(static_cast<size_t>(s.B * s.H * s.M * s.Dv)), ref(out.size()), lse(static_cast<size_t>(s.B * s.H * s.M)),
          lref(lse.size());
      auto ov = effattn::make_view(out.data(), s.B, s.H, s.M, s.Dv);
      auto rv = effattn::make_view(ref.data(), s.B, s.H, s.M, s.Dv);
      pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), ov, lv, {}, effattn::Executor{2},
                                 effattn::make_view(lse.data(), s.B, s.H, s.M));
      pa::cross_attention_reference<float>(d.qv(), d.kv(), d.vv(), rv, lv, {},
                                           effattn::make_view(lref.data(), s.B, s.H, s.M));
      const std::string what = "N=" + std::to_string(s.N) + " M=" + std::to_string(s.M) + " len=" + std::to_string(with_len);
      testing_util::expect_close(out, ref, 2e-5, 2e-5, what + " out");
      testing_util::expect_close(lse, lref, 2e-5, 2e-5, what + " lse");
      EXPECT_TRUE(all_finite(out)) << what;
      // The engine's own reference backend through the same operator.
      effattn::AttentionOptions ro;
      ro.backend = effattn::Backend::reference;
      std::vector<float> out2(out.size());
      pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(out2.data(), s.B, s.H, s.M, s.Dv), lv, ro);
      testing_util::expect_close(out2, ref, 1e-6, 1e-6, what + " reference backend");
    }
  }
}

// 16-bit context keys/values (float16, bfloat16): the engine against the
// oracle on the same 16-bit data, with and without valid lengths, decode
// (M = 1) and tiled shapes; bad shapes are still rejected by name.
template <class X>
void cross_attention_16bit() {
  const Shape shapes[] = {{2, 4, 2, 3001, 1, 64, 64}, {1, 2, 2, 257, 37, 40, 24}, {2, 3, 3, 130, 130, 64, 64}};
  unsigned seed = 300;
  for (const auto& s : shapes) {
    const Data d(s, seed += 3);
    std::vector<X> kh(d.k.size()), vh(d.v.size());
    effattn::convert(d.k.data(), kh.data(), static_cast<index_t>(kh.size()));
    effattn::convert(d.v.data(), vh.data(), static_cast<index_t>(vh.size()));
    const auto K = effattn::make_view<const X>(kh.data(), s.B, s.Hkv, s.N, s.D);
    const auto V = effattn::make_view<const X>(vh.data(), s.B, s.Hkv, s.N, s.Dv);
    for (int with_len = 0; with_len < 2; ++with_len) {
      auto len = random_lengths(s.B, s.N, seed);
      const effattn::ConstView<index_t, 1> lv =
          with_len ? effattn::make_view<const index_t>(len.data(), s.B) : effattn::ConstView<index_t, 1>{};
      std::vector<float> out(static_cast<size_t>(s.B * s.H * s.M * s.Dv)), ref(out.size()), full(out.size());
      pa::cross_attention<float>(d.qv(), K, V, effattn::make_view(out.data(), s.B, s.H, s.M, s.Dv), lv, {},
                                 effattn::Executor{2});
      pa::cross_attention_reference<float>(d.qv(), K, V, effattn::make_view(ref.data(), s.B, s.H, s.M, s.Dv), lv);
      pa::cross_attention_reference<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(full.data(), s.B, s.H, s.M, s.Dv), lv);
      const std::string what = "N=" + std::to_string(s.N) + " M=" + std::to_string(s.M) + " len=" + std::to_string(with_len);
      testing_util::expect_close(out, ref, 2e-5, 2e-5, what);
      const double tol = std::is_same<X, effattn::float16>::value ? 4e-3 : 3e-2;
      testing_util::expect_close(out, full, tol, tol, what + " vs float32 keys/values");
    }
  }
  std::vector<float> q(2 * 4 * 8), out(q.size());
  std::vector<X> k(2 * 3 * 8);
  EXPECT_THROW(pa::cross_attention<float>(effattn::make_view<const float>(q.data(), 1, 2, 4, 8),
                                          effattn::make_view<const X>(k.data(), 1, 2, 3, 8),
                                          effattn::make_view<const X>(k.data(), 1, 2, 3, 8),
                                          effattn::make_view(out.data(), 1, 2, 4, 8)),
               effattn::parameter_error);  // M = 4 > N = 3
}

TEST(PerceiverArCrossAttention, Float16KeysValues) { cross_attention_16bit<effattn::float16>(); }
TEST(PerceiverArCrossAttention, Bfloat16KeysValues) { cross_attention_16bit<effattn::bfloat16>(); }

TEST(PerceiverArLatentAttention, MatchesReferenceOnOddShapes) {
  const Shape shapes[] = {{1, 1, 1, 1, 1, 8, 8}, {2, 3, 3, 6, 6, 16, 16}, {3, 4, 2, 113, 113, 40, 24},
                          {2, 2, 1, 203, 203, 64, 64}, {1, 8, 8, 1024, 1024, 64, 64}};
  unsigned seed = 100;
  for (const auto& s : shapes) {
    const Data d(s, seed += 3);  // N == M: keys are the latents
    for (int with_len = 0; with_len < 2; ++with_len) {
      auto len = random_lengths(s.B, s.M + 3, seed);
      const effattn::ConstView<index_t, 1> lv =
          with_len ? effattn::make_view<const index_t>(len.data(), s.B) : effattn::ConstView<index_t, 1>{};
      std::vector<float> out(static_cast<size_t>(s.B * s.H * s.M * s.Dv)), ref(out.size());
      pa::latent_attention<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(out.data(), s.B, s.H, s.M, s.Dv), lv, {},
                                  effattn::Executor{2});
      pa::latent_attention_reference<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(ref.data(), s.B, s.H, s.M, s.Dv),
                                            lv);
      testing_util::expect_close(out, ref, 2e-5, 2e-5, "latent M=" + std::to_string(s.M));
      EXPECT_TRUE(all_finite(out));
    }
  }
}

// M = N: the cross-attention is ordinary causal self-attention.
TEST(PerceiverArCrossAttention, MEqualsNIsCausalSelfAttention) {
  const Shape s{2, 3, 3, 97, 97, 32, 32};
  const Data d(s, 7);
  std::vector<float> out(static_cast<size_t>(s.B * s.H * s.M * s.Dv)), causal(out.size()), lat(out.size());
  pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(out.data(), s.B, s.H, s.M, s.Dv));
  effattn::flash_attention<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(causal.data(), s.B, s.H, s.M, s.Dv),
                                  {0, true});
  pa::latent_attention<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(lat.data(), s.B, s.H, s.M, s.Dv));
  // All three run the engine's causal policy; the oracle with an independent
  // j <= i predicate checks the alignment itself.
  std::vector<float> ref(out.size());
  effattn::attention_reference<float>(
      d.qv(), d.kv(), d.vv(), effattn::make_view(ref.data(), s.B, s.H, s.M, s.Dv),
      effattn::make_predicate_mask([](index_t, index_t, index_t i, index_t j) { return j <= i; }));
  testing_util::expect_close(out, ref, 2e-5, 2e-5, "cross_attention with M = N");
  testing_util::expect_close(lat, ref, 2e-5, 2e-5, "latent_attention");
  EXPECT_EQ(out, causal);
  EXPECT_EQ(lat, causal);
}

// M = 1: the single latent (the last position) sees every input.
TEST(PerceiverArCrossAttention, OneLatentSeesEverything) {
  const Shape s{2, 2, 2, 3001, 1, 64, 48};
  const Data d(s, 9);
  std::vector<float> out(static_cast<size_t>(s.B * s.H * s.Dv)), full(out.size());
  pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(out.data(), s.B, s.H, 1, s.Dv));
  effattn::attention_reference<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(full.data(), s.B, s.H, 1, s.Dv));
  testing_util::expect_close(out, full, 1e-5, 1e-5, "M=1 vs unmasked");
  // With valid lengths, the one latent sees exactly the L real inputs.
  std::vector<index_t> len{1234, 3001};
  std::vector<float> pad(out.size()), trunc(static_cast<size_t>(s.Dv * s.H));
  pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(pad.data(), s.B, s.H, 1, s.Dv),
                             effattn::make_view<const index_t>(len.data(), 2));
  // Batch 0 against unmasked attention over its first 1234 keys (a strided sub-view).
  effattn::ConstView<float, 4> k0(d.k.data(), {1, s.Hkv, 1234, s.D}, {s.Hkv * s.N * s.D, s.N * s.D, s.D, 1});
  effattn::ConstView<float, 4> v0(d.v.data(), {1, s.Hkv, 1234, s.Dv}, {s.Hkv * s.N * s.Dv, s.N * s.Dv, s.Dv, 1});
  effattn::ConstView<float, 4> q0(d.q.data(), {1, s.H, 1, s.D});
  effattn::attention_reference<float>(q0, k0, v0, effattn::make_view(trunc.data(), 1, s.H, 1, s.Dv));
  std::vector<float> pad0(pad.begin(), pad.begin() + s.H * s.Dv);
  testing_util::expect_close(pad0, trunc, 1e-5, 1e-5, "M=1 with L=1234");
  std::vector<float> pad1(pad.begin() + s.H * s.Dv, pad.end()), out1(out.begin() + s.H * s.Dv, out.end());
  EXPECT_EQ(pad1, out1);
}

// Changing M (per call) leaves the outputs of the latent positions shared by
// both calls unchanged: latent m of the M-call is latent m + (M' - M) of the
// M'-call (both sit at N - M + m).
TEST(PerceiverArCrossAttention, ChangingMLeavesSharedLatentsUnchanged) {
  const index_t B = 2, H = 4, N = 517, D = 64, Mbig = 300;
  const Shape sb{B, H, H, N, Mbig, D, D};
  const Data d(sb, 21);  // queries: one per position of the last Mbig
  std::vector<index_t> len{N, 451};
  std::vector<float> big(static_cast<size_t>(B * H * Mbig * D));
  pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(big.data(), B, H, Mbig, D),
                             effattn::make_view<const index_t>(len.data(), B));
  for (index_t M : {1, 7, 96, 97, 200, 299}) {
    // Queries of the small call: the last M latent queries of the big call.
    effattn::ConstView<float, 4> qs(d.q.data() + (Mbig - M) * D, {B, H, M, D}, {H * Mbig * D, Mbig * D, D, 1});
    std::vector<float> small(static_cast<size_t>(B * H * M * D));
    pa::cross_attention<float>(qs, d.kv(), d.vv(), effattn::make_view(small.data(), B, H, M, D),
                               effattn::make_view<const index_t>(len.data(), B));
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < H; ++h)
        for (index_t m = 0; m < M; ++m) {
          // Only latents that are valid in both calls are the same positions.
          if (pa::latent_position(len[b], M, m) < 0) continue;
          for (index_t e = 0; e < D; ++e) {
            const float a = small[((b * H + h) * M + m) * D + e];
            const float c = big[((b * H + h) * Mbig + (Mbig - M + m)) * D + e];
            ASSERT_NEAR(a, c, 1e-5f) << "M=" << M << " b=" << b << " h=" << h << " m=" << m << " e=" << e;
          }
        }
  }
}

// Fully padded sequences (L = 0) and partially filled latents give finite
// outputs: 0 and lse = -inf for latents that see no input, and the latent
// self-attention never has an empty row.
TEST(PerceiverArCrossAttention, PaddedRowsGiveNoNaN) {
  const Shape s{3, 2, 2, 10, 6, 16, 16};
  const Data d(s, 31);
  std::vector<index_t> len{0, 1, 4};
  std::vector<float> out(static_cast<size_t>(s.B * s.H * s.M * s.Dv), 9.0f), lse(static_cast<size_t>(s.B * s.H * s.M));
  pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(out.data(), s.B, s.H, s.M, s.Dv),
                             effattn::make_view<const index_t>(len.data(), s.B), {}, {},
                             effattn::make_view(lse.data(), s.B, s.H, s.M));
  for (index_t b = 0; b < s.B; ++b)
    for (index_t h = 0; h < s.H; ++h)
      for (index_t m = 0; m < s.M; ++m) {
        const bool valid = pa::latent_position(len[b], s.M, m) >= 0;
        const float l = lse[(b * s.H + h) * s.M + m];
        EXPECT_EQ(std::isinf(l) && l < 0, !valid) << b << " " << m;
        for (index_t e = 0; e < s.Dv; ++e) {
          const float o = out[((b * s.H + h) * s.M + m) * s.Dv + e];
          EXPECT_TRUE(std::isfinite(o));
          if (!valid) {
            EXPECT_EQ(o, 0.0f);
          }
        }
      }
  // Latent self-attention over the same layout: finite everywhere, and an
  // invalid latent returns its own value (it sees only itself).
  const Shape ls{3, 2, 2, 6, 6, 16, 16};
  const Data dl(ls, 41);
  std::vector<float> lo(static_cast<size_t>(ls.B * ls.H * ls.M * ls.Dv));
  pa::latent_attention<float>(dl.qv(), dl.kv(), dl.vv(), effattn::make_view(lo.data(), ls.B, ls.H, ls.M, ls.Dv),
                              effattn::make_view<const index_t>(len.data(), ls.B));
  EXPECT_TRUE(all_finite(lo));
  for (index_t b = 0; b < ls.B; ++b)
    for (index_t h = 0; h < ls.H; ++h)
      for (index_t m = 0; m < pa::invalid_latents(len[b], ls.M); ++m)
        for (index_t e = 0; e < ls.Dv; ++e)
          EXPECT_NEAR(lo[((b * ls.H + h) * ls.M + m) * ls.Dv + e], dl.v[((b * ls.Hkv + h) * ls.M + m) * ls.Dv + e], 1e-6);
}

TEST(PerceiverArAttention, BitIdenticalForOneAndTwoThreads) {
  const Shape s{2, 4, 2, 2100, 333, 64, 64};
  const Data d(s, 51);
  std::vector<index_t> len{2100, 1700};
  std::vector<float> a(static_cast<size_t>(s.B * s.H * s.M * s.Dv)), b(a.size()), c(a.size());
  auto lv = effattn::make_view<const index_t>(len.data(), 2);
  pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(a.data(), s.B, s.H, s.M, s.Dv), lv, {},
                             effattn::Executor{1});
  pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), effattn::make_view(b.data(), s.B, s.H, s.M, s.Dv), lv, {},
                             effattn::Executor{2});
  EXPECT_EQ(a, b);
  // One query (the decode path: split-KV chunks) as well.
  effattn::ConstView<float, 4> q1(d.q.data(), {s.B, s.H, 1, s.D}, {s.H * s.M * s.D, s.M * s.D, s.D, 1});
  std::vector<float> o1(static_cast<size_t>(s.B * s.H * s.Dv)), o2(o1.size());
  pa::cross_attention<float>(q1, d.kv(), d.vv(), effattn::make_view(o1.data(), s.B, s.H, 1, s.Dv), lv, {},
                             effattn::Executor{1});
  pa::cross_attention<float>(q1, d.kv(), d.vv(), effattn::make_view(o2.data(), s.B, s.H, 1, s.Dv), lv, {},
                             effattn::Executor{2});
  EXPECT_EQ(o1, o2);
  const Shape ls{2, 4, 2, 333, 333, 64, 64};
  const Data dl(ls, 61);
  std::vector<index_t> ll{333, 100};
  pa::latent_attention<float>(dl.qv(), dl.kv(), dl.vv(), effattn::make_view(a.data(), ls.B, ls.H, ls.M, ls.Dv),
                              effattn::make_view<const index_t>(ll.data(), 2), {}, effattn::Executor{1});
  pa::latent_attention<float>(dl.qv(), dl.kv(), dl.vv(), effattn::make_view(c.data(), ls.B, ls.H, ls.M, ls.Dv),
                              effattn::make_view<const index_t>(ll.data(), 2), {}, effattn::Executor{2});
  EXPECT_EQ(std::vector<float>(a.begin(), a.begin() + ls.B * ls.H * ls.M * ls.Dv),
            std::vector<float>(c.begin(), c.begin() + ls.B * ls.H * ls.M * ls.Dv));
}

TEST(PerceiverArAttention, BadInputThrowsBeforeWriting) {
  const index_t B = 2, H = 2, N = 10, D = 8;
  std::vector<float> q(static_cast<size_t>(B * H * 12 * D), 1.0f), k(static_cast<size_t>(B * H * 11 * D), 1.0f),
      v(k.size(), 1.0f), out(static_cast<size_t>(B * H * 12 * D), 5.0f);
  auto kv = effattn::make_view<const float>(k.data(), B, H, N, D);
  auto vv = effattn::make_view<const float>(v.data(), B, H, N, D);
  auto untouched = [&] {
    for (float x : out)
      if (x != 5.0f) return false;
    return true;
  };
  // M > N.
  EXPECT_THROW(pa::cross_attention<float>(effattn::make_view<const float>(q.data(), B, H, 11, D), kv, vv,
                                          effattn::make_view(out.data(), B, H, 11, D)),
               effattn::parameter_error);
  // M < 1.
  EXPECT_THROW(pa::cross_attention<float>(effattn::make_view<const float>(q.data(), B, H, 0, D), kv, vv,
                                          effattn::make_view(out.data(), B, H, 0, D)),
               effattn::parameter_error);
  // Valid length > N, and < 0.
  std::vector<index_t> len{10, 11};
  EXPECT_THROW(pa::cross_attention<float>(effattn::make_view<const float>(q.data(), B, H, 6, D), kv, vv,
                                          effattn::make_view(out.data(), B, H, 6, D),
                                          effattn::make_view<const index_t>(len.data(), B)),
               effattn::parameter_error);
  len[1] = -1;
  EXPECT_THROW(pa::cross_attention<float>(effattn::make_view<const float>(q.data(), B, H, 6, D), kv, vv,
                                          effattn::make_view(out.data(), B, H, 6, D),
                                          effattn::make_view<const index_t>(len.data(), B)),
               effattn::parameter_error);
  // Valid lengths of the wrong batch size.
  EXPECT_THROW(pa::cross_attention<float>(effattn::make_view<const float>(q.data(), B, H, 6, D), kv, vv,
                                          effattn::make_view(out.data(), B, H, 6, D),
                                          effattn::make_view<const index_t>(len.data(), 1)),
               effattn::shape_error);
  // Mismatched K / V lengths.
  EXPECT_THROW(pa::cross_attention<float>(effattn::make_view<const float>(q.data(), B, H, 6, D), kv,
                                          effattn::make_view<const float>(v.data(), B, H, 11, D),
                                          effattn::make_view(out.data(), B, H, 6, D)),
               effattn::shape_error);
  // Wrong output shape, wrong head dim.
  EXPECT_THROW(pa::cross_attention<float>(effattn::make_view<const float>(q.data(), B, H, 6, D), kv, vv,
                                          effattn::make_view(out.data(), B, H, 5, D)),
               effattn::shape_error);
  EXPECT_THROW(pa::cross_attention<float>(effattn::make_view<const float>(q.data(), B, H, 6, D - 1), kv, vv,
                                          effattn::make_view(out.data(), B, H, 6, D)),
               effattn::shape_error);
  // Latent attention: keys must be the M latents; mismatched K/V; M < 1.
  EXPECT_THROW(pa::latent_attention<float>(effattn::make_view<const float>(q.data(), B, H, 6, D), kv, vv,
                                           effattn::make_view(out.data(), B, H, 6, D)),
               effattn::shape_error);
  EXPECT_THROW(pa::latent_attention<float>(effattn::make_view<const float>(q.data(), B, H, 6, D),
                                           effattn::make_view<const float>(k.data(), B, H, 6, D),
                                           effattn::make_view<const float>(v.data(), B, H, 5, D),
                                           effattn::make_view(out.data(), B, H, 6, D)),
               effattn::shape_error);
  EXPECT_THROW(pa::latent_attention<float>(effattn::make_view<const float>(q.data(), B, H, 0, D),
                                           effattn::make_view<const float>(k.data(), B, H, 0, D),
                                           effattn::make_view<const float>(v.data(), B, H, 0, D),
                                           effattn::make_view(out.data(), B, H, 0, D)),
               effattn::parameter_error);
  // The error message names the operator and the parameter.
  try {
    pa::cross_attention<float>(effattn::make_view<const float>(q.data(), B, H, 11, D), kv, vv,
                               effattn::make_view(out.data(), B, H, 11, D));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("perceiver_ar::cross_attention"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("M"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(untouched());
}

}  // namespace

namespace {
// valid_length is absent only as a default-constructed view; a null pointer
// with a shape, or a negative length, is an error for both operators alike.
TEST(PerceiverArAttention, ValidLengthRulesAreTheSameForBothOperators) {
  const Shape s{2, 2, 2, 8, 8, 8, 8};
  const Data d(s, 77);
  std::vector<float> out(static_cast<size_t>(s.B * s.H * s.M * s.Dv), -3.0f);
  auto ov = effattn::make_view(out.data(), s.B, s.H, s.M, s.Dv);
  const effattn::ConstView<index_t, 1> null_with_shape(nullptr, {s.B});
  EXPECT_THROW(pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), ov, null_with_shape), std::invalid_argument);
  EXPECT_THROW(pa::latent_attention<float>(d.qv(), d.kv(), d.vv(), ov, null_with_shape), std::invalid_argument);
  std::vector<index_t> neg{3, -1};
  EXPECT_THROW(pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), ov, effattn::make_view<const index_t>(neg.data(), 2)),
               effattn::parameter_error);
  EXPECT_THROW(pa::latent_attention<float>(d.qv(), d.kv(), d.vv(), ov, effattn::make_view<const index_t>(neg.data(), 2)),
               effattn::parameter_error);
  for (float x : out) EXPECT_EQ(x, -3.0f);
  std::vector<index_t> big{100, 8};  // > M is fine for the latent stack (every latent valid), not for N
  EXPECT_NO_THROW(pa::latent_attention<float>(d.qv(), d.kv(), d.vv(), ov, effattn::make_view<const index_t>(big.data(), 2)));
  EXPECT_THROW(pa::cross_attention<float>(d.qv(), d.kv(), d.vv(), ov, effattn::make_view<const index_t>(big.data(), 2)),
               effattn::parameter_error);
}

TEST(PerceiverArAttention, ExecutorForSmallWorkIsSerial) {
  const effattn::Executor ex{2};
  EXPECT_EQ(effattn::detail::executor_for(ex, 1e3).num_threads, 1);
  EXPECT_EQ(effattn::detail::executor_for(ex, 1e9).num_threads, 2);
}
}  // namespace
