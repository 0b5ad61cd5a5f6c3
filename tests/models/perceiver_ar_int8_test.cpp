// SPDX-License-Identifier: MIT
// Perceiver AR with an int8 context cache (PerceiverArConfig::context_kv =
// Storage::int8; core/quant.hpp's scheme): the decoder's logits equal a
// float64 attention over the dequantized keys/values, the int8
// cross-attention stays within the scheme's bound of float keys/values, the
// cache holds one byte per element plus one float scale per (batch, head,
// token) row, the decoder equals the uncached forward (see
// perceiver_ar_test.cpp's storage suite), results are bit-identical for any
// executor, and bad input throws before anything changes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <effattn/models/perceiver_ar.hpp>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "support/levels.hpp"
#include "support/testing.hpp"
#include "support/threads.hpp"

namespace {

using effattn::index_t;
using effattn::Storage;
using effattn::models::PerceiverArConfig;
using effattn::models::PerceiverArDecoder;
using effattn::models::PerceiverArModel;
using effattn::nn::Matrix;
namespace pd = effattn::models::detail::perceiver_ar;

PerceiverArModel model_of(index_t layers, unsigned seed, index_t width, index_t heads, Storage kv) {
  PerceiverArConfig cfg;
  cfg.context_kv = kv;
  cfg.vocab = 31;
  cfg.width = width;
  cfg.heads = heads;
  cfg.layers = layers;
  cfg.mlp_hidden = 2 * width;
  return PerceiverArModel::random(cfg, seed);
}

std::vector<std::int32_t> random_tokens(index_t B, index_t N, index_t vocab, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<std::int32_t> d(0, static_cast<std::int32_t>(vocab - 1));
  std::vector<std::int32_t> t(static_cast<size_t>(B * N));
  for (auto& x : t) x = d(g);
  return t;
}

std::vector<float> all(const Matrix& m) { return std::vector<float>(m.data(), m.data() + m.size()); }

/// The window of a decoder of a 0-layer model, rebuilt the way the decoder
/// builds it: the keys/values of each append() call's tokens projected by the
/// same input_keys_values call (same rows, same bits), head-major [B, H, w, hd]
/// in float (`exact`) and quantized per (b, head, token) row by
/// effattn::quantize, then dequantized (`deq`, the values int8 attention
/// stands for).
struct Window {
  index_t B, H, hd, len = 0;
  std::vector<std::vector<float>> k, v;  // per (b, h): rows of hd floats
  Window(index_t b, index_t h, index_t d) : B(b), H(h), hd(d), k(static_cast<size_t>(b * h)), v(k.size()) {}

  void append(const PerceiverArModel& m, const std::vector<std::int32_t>& tok, index_t n, index_t pos0) {
    pd::input_keys_values(
        m, B * n, [&](index_t r) { return tok[static_cast<size_t>(r)]; }, [&](index_t r) { return pos0 + r % n; },
        [&](index_t r, const float* kr, const float* vr) {
          for (index_t h = 0; h < H; ++h) {
            auto& kk = k[static_cast<size_t>((r / n) * H + h)];
            auto& vv = v[static_cast<size_t>((r / n) * H + h)];
            kk.insert(kk.end(), kr + h * hd, kr + (h + 1) * hd);
            vv.insert(vv.end(), vr + h * hd, vr + (h + 1) * hd);
          }
        },
        effattn::Executor{1});
    len += n;
  }
  /// Keeps the last `keep` tokens.
  void keep_last(index_t keep) {
    for (auto* s : {&k, &v})
      for (auto& x : *s) x.erase(x.begin(), x.end() - keep * hd);
    len = keep;
  }
  /// [B, H, len, hd] of k or v: exact, or quantized then dequantized.
  std::vector<double> tensor(bool keys, bool quantized) const {
    const auto& src = keys ? k : v;
    std::vector<float> f(static_cast<size_t>(B * H * len * hd));
    for (size_t i = 0; i < src.size(); ++i) std::copy(src[i].begin(), src[i].end(), f.begin() + i * len * hd);
    if (quantized) {
      std::vector<std::int8_t> c(f.size());
      std::vector<float> s(static_cast<size_t>(B * H * len));
      effattn::quantize(effattn::make_view<const float>(f.data(), B, H, len, hd), effattn::make_view(c.data(), B, H, len, hd),
                        effattn::make_view(s.data(), B, H, len));
      effattn::dequantize(effattn::QuantizedKV{effattn::make_view<const std::int8_t>(c.data(), B, H, len, hd),
                                               effattn::make_view<const float>(s.data(), B, H, len)},
                          effattn::make_view(f.data(), B, H, len, hd));
    }
    return std::vector<double>(f.begin(), f.end());
  }
};

/// The logits of a 0-layer model's newest latent (the last token, at position
/// pos) over a window of keys/values [B, H, w, hd] (no mask: the newest latent
/// sees the whole window), the cross-attention in float64
/// (attention_reference<double>), the dense layers as the model runs them.
/// `query` and `attn_out` (optional) receive the attention's query and
/// output [B, H, 1, hd].
Matrix latent_logits(const PerceiverArModel& m, const std::vector<std::int32_t>& last_tok, index_t pos,
                     const std::vector<double>& K, const std::vector<double>& V, index_t w,
                     std::vector<double>* query = nullptr, std::vector<double>* attn_out = nullptr) {
  const index_t B = static_cast<index_t>(last_tok.size()), W = m.width(), H = m.heads(), hd = W / H;
  const effattn::Executor ex{1};
  Matrix x(B, W), z, y, q;
  for (index_t b = 0; b < B; ++b) pd::embed_token(m, last_tok[static_cast<size_t>(b)], pos, x.data() + b * W);
  effattn::nn::linear(m.query_proj, x, z, ex);
  pd::layer_norm(m, m.cross.ln_q, z, y, ex);
  effattn::nn::linear(m.cross.attn.q, y, q, ex);
  // [B, W] rows are [B, H, 1, hd] contiguous.
  std::vector<double> qd(q.data(), q.data() + q.size()), od(qd.size());
  effattn::attention_reference<double>(effattn::make_view<const double>(qd.data(), B, H, 1, hd),
                                       effattn::make_view<const double>(K.data(), B, H, w, hd),
                                       effattn::make_view<const double>(V.data(), B, H, w, hd),
                                       effattn::make_view(od.data(), B, H, 1, hd));
  if (query) *query = qd;
  if (attn_out) *attn_out = od;
  Matrix o(B, W), logits;
  for (index_t i = 0; i < o.size(); ++i) o.data()[i] = static_cast<float>(od[static_cast<size_t>(i)]);
  pd::residual_and_mlp(m, z, o, m.cross.attn, m.cross.ln_mlp, m.cross.mlp, ex);
  pd::output_logits(m, z, logits, ex);
  return logits;
}

/// Relative distance max|a - b| / max|b|.
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (float x : b) m = std::max(m, static_cast<double>(std::abs(x)));
  return testing_util::max_abs_diff(a, b) / m;
}

// (a), (b) on the decoder: a 0-layer model (its logits depend on the window and
// the newest token only), a prefill, single tokens and seven recomputes (the
// window slides). Every call:
//  - the logits equal those of a float64 cross-attention over the dequantized
//    keys/values of the same window (tight: float rounding of the engine and
//    the layers);
//  - against the float keys/values they differ (the cache is really int8),
//    and the float64 attention outputs of the two differ by at most the
//    scheme's bound: a key element moves by at most max|key row| / 254, so a
//    logit by eps = scale * sum_d |q_d| * max_j (max|k_j| / 254), which moves
//    a softmax average by at most (e^(2 eps) - 1) max|v|; a value element by
//    at most max_j max|v_j| / 254 (core/quant.hpp).
TEST(PerceiverArInt8, DecoderMatchesFloat64OnDequantizedWindow) {
  const index_t B = 2, W = 64, H = 4, hd = W / H, max_ctx = 48, max_lat = 8, pre = 30, steps = 40;
  const PerceiverArModel model = model_of(0, 12, W, H, Storage::int8);
  const auto tok = random_tokens(B, pre + steps, model.config.vocab, 5);
  const index_t total = pre + steps;
  PerceiverArDecoder dec(model, B, max_ctx, max_lat);
  Window win(B, H, hd);
  index_t fed = 0;
  double worst_tight = 0, worst_float = 0, worst_use = 0;
  auto feed = [&](index_t n) {
    std::vector<std::int32_t> chunk, last;
    for (index_t b = 0; b < B; ++b)
      for (index_t j = fed; j < fed + n; ++j) chunk.push_back(tok[static_cast<size_t>(b * total + j)]);
    for (index_t b = 0; b < B; ++b) last.push_back(tok[static_cast<size_t>(b * total + fed + n - 1)]);
    Matrix logits;
    const index_t recomputes = dec.recomputes();
    dec.append(effattn::make_view<const std::int32_t>(chunk.data(), B, n), logits);
    if (dec.recomputes() != recomputes) win.keep_last(dec.window_length() - n);
    win.append(model, chunk, n, fed);
    fed += n;
    ASSERT_EQ(win.len, dec.window_length());
    const auto Kd = win.tensor(true, true), Vd = win.tensor(false, true);
    const auto Kf = win.tensor(true, false), Vf = win.tensor(false, false);
    std::vector<double> q, oq, of;
    const Matrix ref = latent_logits(model, last, fed - 1, Kd, Vd, win.len, &q, &oq);
    const Matrix flt = latent_logits(model, last, fed - 1, Kf, Vf, win.len, nullptr, &of);
    double lmax = 0;
    for (float x : all(ref)) lmax = std::max(lmax, static_cast<double>(std::abs(x)));
    testing_util::expect_close(all(logits), all(ref), 1e-5 * lmax, 0, "after " + std::to_string(fed) + " tokens");
    worst_tight = std::max(worst_tight, rel_diff(all(logits), all(ref)));
    worst_float = std::max(worst_float, rel_diff(all(logits), all(flt)));
    // The scheme's bound on the float64 attention outputs, per (b, h), from
    // the float keys/values' row maxima (plus float64 rounding).
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (index_t bh = 0; bh < B * H; ++bh) {
      double qa = 0, kerr = 0, verr = 0, vmax = 0;
      for (index_t d = 0; d < hd; ++d) qa += std::abs(q[static_cast<size_t>(bh * hd + d)]);
      for (index_t j = 0; j < win.len; ++j) {
        double ka = 0, va = 0;
        for (index_t d = 0; d < hd; ++d) {
          const size_t at = static_cast<size_t>((bh * win.len + j) * hd + d);
          ka = std::max(ka, std::abs(Kf[at]));
          va = std::max(va, std::abs(Vf[at]));
        }
        kerr = std::max(kerr, ka / 254);
        verr = std::max(verr, va / 254);
        vmax = std::max(vmax, va);
      }
      const double bound = std::expm1(2 * scale * qa * kerr) * vmax + verr + 1e-12 * vmax;
      ASSERT_LT(bound, 0.25 * vmax) << "the bound says nothing here";
      for (index_t e = 0; e < hd; ++e) {
        const size_t at = static_cast<size_t>(bh * hd + e);
        ASSERT_LE(std::abs(oq[at] - of[at]), bound) << "(b, h) " << bh << " dim " << e << " after " << fed;
        worst_use = std::max(worst_use, std::abs(oq[at] - of[at]) / bound);
      }
    }
  };
  feed(pre);
  for (index_t i = 0; i < steps; ++i) feed(1);
  // 8 latents fill at step 7; a recompute at step 8 and every 5th after it.
  EXPECT_EQ(dec.recomputes(), 1 + (steps - 8) / 5);
  EXPECT_GT(worst_float, 10 * worst_tight) << "int8 storage must differ from float storage";
  EXPECT_GT(worst_use, 0.0);
  RecordProperty("worst_tight", std::to_string(worst_tight));
  RecordProperty("worst_vs_float", std::to_string(worst_float));
  RecordProperty("worst_bound_use", std::to_string(worst_use));
}

// The int8 overload of perceiver_ar::cross_attention (what the model's
// forward and the decoder's recompute run) at every instruction-set level:
// M latents, padding, grouped-query heads. It equals the float64 oracle on
// the dequantized keys/values (tight), is bit-identical for 1 and 2 threads,
// and stays within the scheme's bound of the float keys/values.
TEST(PerceiverArInt8, CrossAttentionOnQuantizedKV) {
  const index_t B = 2, H = 4, Hkv = 2, M = 37, N = 700, D = 64;
  const auto qf = testing_util::random_vector(static_cast<size_t>(B * H * M * D), 1);
  const auto kf = testing_util::random_vector(static_cast<size_t>(B * Hkv * N * D), 2);
  const auto vf = testing_util::random_vector(static_cast<size_t>(B * Hkv * N * D), 3);
  std::vector<std::int8_t> kc(kf.size()), vc(vf.size());
  std::vector<float> ks(static_cast<size_t>(B * Hkv * N)), vs(ks.size()), kd(kf.size()), vd(vf.size());
  effattn::quantize(effattn::make_view<const float>(kf.data(), B, Hkv, N, D), effattn::make_view(kc.data(), B, Hkv, N, D),
                    effattn::make_view(ks.data(), B, Hkv, N));
  effattn::quantize(effattn::make_view<const float>(vf.data(), B, Hkv, N, D), effattn::make_view(vc.data(), B, Hkv, N, D),
                    effattn::make_view(vs.data(), B, Hkv, N));
  const effattn::QuantizedKV K{effattn::make_view<const std::int8_t>(kc.data(), B, Hkv, N, D),
                               effattn::make_view<const float>(ks.data(), B, Hkv, N)};
  const effattn::QuantizedKV V{effattn::make_view<const std::int8_t>(vc.data(), B, Hkv, N, D),
                               effattn::make_view<const float>(vs.data(), B, Hkv, N)};
  effattn::dequantize(K, effattn::make_view(kd.data(), B, Hkv, N, D));
  effattn::dequantize(V, effattn::make_view(vd.data(), B, Hkv, N, D));
  const std::vector<index_t> len{N, N - 250};
  const auto L = effattn::make_view<const index_t>(len.data(), B);
  const auto Q = effattn::make_view<const float>(qf.data(), B, H, M, D);
  const size_t no = static_cast<size_t>(B * H * M * D);
  std::vector<float> ref(no), exact(no), out(no), out1(no);
  effattn::perceiver_ar::cross_attention_reference<float>(Q, effattn::make_view<const float>(kd.data(), B, Hkv, N, D),
                                                          effattn::make_view<const float>(vd.data(), B, Hkv, N, D),
                                                          effattn::make_view(ref.data(), B, H, M, D), L);
  effattn::perceiver_ar::cross_attention_reference<float>(Q, effattn::make_view<const float>(kf.data(), B, Hkv, N, D),
                                                          effattn::make_view<const float>(vf.data(), B, Hkv, N, D),
                                                          effattn::make_view(exact.data(), B, H, M, D), L);
  // The scheme's bound against float keys/values (as in DecoderMatches...),
  // per query row, from the scales alone: a key element moves by at most
  // sk / 2 = max|row| / 254.
  double vmax = 0, svmax = 0, skmax = 0;
  for (float x : vf) vmax = std::max(vmax, static_cast<double>(std::abs(x)));
  for (float x : vs) svmax = std::max(svmax, static_cast<double>(x));
  for (float x : ks) skmax = std::max(skmax, static_cast<double>(x));
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (const effattn::Isa level : testing_util::isa_levels()) {
    testing_util::ScopedIsa scoped(level);
    SCOPED_TRACE(effattn::to_string(level));
    effattn::perceiver_ar::cross_attention<float>(Q, K, V, effattn::make_view(out.data(), B, H, M, D), L, {},
                                                  effattn::Executor{2});
    effattn::perceiver_ar::cross_attention<float>(Q, K, V, effattn::make_view(out1.data(), B, H, M, D), L, {},
                                                  effattn::Executor{1});
    EXPECT_EQ(0, std::memcmp(out.data(), out1.data(), no * sizeof(float))) << "1 and 2 threads differ";
    EXPECT_TRUE(testing_util::close(out, ref, 2e-5, 2e-4));
    EXPECT_GT(testing_util::max_abs_diff(out, exact), 1e-4) << "the keys/values are really int8";
    for (index_t r = 0; r < B * H * M; ++r) {
      double qa = 0;
      for (index_t d = 0; d < D; ++d) qa += std::abs(qf[static_cast<size_t>(r * D + d)]);
      const double bound = 1.25 * (std::expm1(2 * scale * qa * skmax / 2) * vmax + svmax / 2) + 1e-5 * vmax;
      for (index_t e = 0; e < D; ++e) {
        const size_t at = static_cast<size_t>(r * D + e);
        ASSERT_LE(std::abs(out[at] - exact[at]), bound) << "row " << r << " dim " << e;
      }
    }
  }
}

// Bad input: scales of the wrong shape name the operator and the parameter
// and change nothing; an unknown storage is rejected.
TEST(PerceiverArInt8, CrossAttentionChecksScales) {
  const index_t N = 10, D = 8;
  std::vector<float> q(static_cast<size_t>(2 * 4 * D), 0.5f), out(q.size(), 7.0f), s(static_cast<size_t>(2 * N), 1.0f);
  std::vector<std::int8_t> c(static_cast<size_t>(2 * N * D), 1);
  const effattn::QuantizedKV good{effattn::make_view<const std::int8_t>(c.data(), 1, 2, N, D),
                                  effattn::make_view<const float>(s.data(), 1, 2, N)};
  const effattn::QuantizedKV bad{effattn::make_view<const std::int8_t>(c.data(), 1, 2, N, D),
                                 effattn::make_view<const float>(s.data(), 1, 2, N - 1)};
  const auto Q = effattn::make_view<const float>(q.data(), 1, 2, 4, D);
  const auto O = effattn::make_view(out.data(), 1, 2, 4, D);
  const std::string m1 = testing_util::message_of([&] { effattn::perceiver_ar::cross_attention<float>(Q, bad, good, O); });
  EXPECT_TRUE(testing_util::contains(m1, "perceiver_ar::cross_attention")) << m1;
  EXPECT_TRUE(testing_util::contains(m1, "k.scale")) << m1;
  EXPECT_THROW(effattn::perceiver_ar::cross_attention<float>(Q, good, bad, O), effattn::shape_error);
  // More latents than keys.
  EXPECT_THROW(effattn::perceiver_ar::cross_attention<float>(effattn::make_view<const float>(q.data(), 1, 2, 4, D),
                                                             effattn::QuantizedKV{effattn::make_view<const std::int8_t>(c.data(), 1, 2, 3, D),
                                                                                  effattn::make_view<const float>(s.data(), 1, 2, 3)},
                                                             effattn::QuantizedKV{effattn::make_view<const std::int8_t>(c.data(), 1, 2, 3, D),
                                                                                  effattn::make_view<const float>(s.data(), 1, 2, 3)},
                                                             O),
               effattn::parameter_error);
  for (float x : out) ASSERT_EQ(x, 7.0f);
  effattn::perceiver_ar::cross_attention<float>(Q, good, good, O);
  for (float x : out) ASSERT_FLOAT_EQ(x, 1.0f);  // every value is 1 * 1
}

// The context cache holds one byte per element plus one float per (batch,
// head, token) row: (1 + 4 / hd) / 4 of float's bytes.
TEST(PerceiverArInt8, CacheBytesCountCodesAndScales) {
  const index_t B = 2, cap = 1000, W = 64, H = 4, max_lat = 16, layers = 1;
  const PerceiverArModel m32 = model_of(layers, 4, W, H, Storage::float32), m8 = model_of(layers, 4, W, H, Storage::int8);
  PerceiverArDecoder d32(m32, B, cap, max_lat), d8(m8, B, cap, max_lat);
  EXPECT_EQ(d8.context_storage(), Storage::int8);
  const std::size_t lat = 2 * B * layers * max_lat * W * 4, toks = B * cap * 4;
  const std::size_t codes = 2 * B * cap * W, scales = 2 * B * H * cap * 4;
  EXPECT_EQ(d32.memory_bytes(), 4 * codes + lat + toks);
  EXPECT_EQ(d8.memory_bytes(), codes + scales + lat + toks);
  // Appending keeps it (the staging of new rows is released).
  const auto tok = random_tokens(B, 40, m8.config.vocab, 2);
  Matrix logits;
  d8.append(effattn::make_view<const std::int32_t>(tok.data(), B, 40), logits);
  EXPECT_EQ(d8.memory_bytes(), codes + scales + lat + toks);
  EXPECT_STREQ(effattn::to_string(Storage::int8), "int8");
  EXPECT_EQ(effattn::storage_bytes(Storage::int8), 1);
}

// (d) Bit-identical for 1 thread, 2 OpenMP threads and a host pool: the
// forward pass (tiled int8 cross-attention, 1024-row key/value chunks) and
// the decoder (a prefill, steps whose cross-attention over ~4300 cached rows
// is split into key chunks, and a recompute).
TEST(PerceiverArInt8, BitIdenticalForAnyExecutor) {
  const effattn::Executor pool = testing_util::pool_executor(3);
  const std::vector<effattn::Executor> exs{effattn::Executor{1}, effattn::Executor{2}, pool};
  {
    const index_t B = 2, N = 2048, M = 512;
    PerceiverArConfig cfg;
    cfg.vocab = 300;
    cfg.width = 128;
    cfg.heads = 4;
    cfg.layers = 1;
    cfg.mlp_hidden = 256;
    cfg.context_kv = Storage::int8;
    const PerceiverArModel model = PerceiverArModel::random(cfg, 21);
    ASSERT_EQ(effattn::detail::executor_for(effattn::Executor{2}, double(B) * 4 * M * N * 64).num_threads, 2);
    const auto tok = random_tokens(B, N, cfg.vocab, 77);
    std::vector<index_t> len{N, N - 300};
    Matrix l[3];
    for (int i = 0; i < 3; ++i)
      model.forward(effattn::make_view<const std::int32_t>(tok.data(), B, N), effattn::make_view<const index_t>(len.data(), B),
                    M, l[i], 0, exs[static_cast<size_t>(i)]);
    for (int i = 1; i < 3; ++i) EXPECT_TRUE((l[i].array() == l[0].array()).all()) << "forward, executor " << i;
  }
  const index_t B = 4, N = 4300, pre = 4280, W = 128, H = 4;
  PerceiverArConfig cfg;
  cfg.vocab = 1100;
  cfg.width = W;
  cfg.heads = H;
  cfg.layers = 2;
  cfg.mlp_hidden = 512;
  cfg.context_kv = Storage::int8;
  const PerceiverArModel model = PerceiverArModel::random(cfg, 3);
  ASSERT_EQ(effattn::detail::executor_for(effattn::Executor{2}, double(B) * H * pre * W * 2 / H).num_threads, 2);
  const auto tok = random_tokens(B, N, cfg.vocab, 5);
  std::vector<PerceiverArDecoder> decs;
  for (int i = 0; i < 3; ++i) decs.emplace_back(model, B, 4400, 16);
  auto feed = [&](index_t j0, index_t n) {
    std::vector<std::int32_t> chunk;
    for (index_t b = 0; b < B; ++b)
      for (index_t j = j0; j < j0 + n; ++j) chunk.push_back(tok[static_cast<size_t>(b * N + j)]);
    Matrix l[3];
    for (int i = 0; i < 3; ++i)
      decs[static_cast<size_t>(i)].append(effattn::make_view<const std::int32_t>(chunk.data(), B, n), l[i],
                                          exs[static_cast<size_t>(i)]);
    for (int i = 1; i < 3; ++i) EXPECT_TRUE((l[i].array() == l[0].array()).all()) << "executor " << i << " token " << j0;
  };
  feed(0, pre);
  for (index_t j = pre; j < N; ++j) feed(j, 1);
  EXPECT_EQ(decs[0].recomputes(), 1);
}

// (e) Bad input. A non-finite key or value cannot be quantized (only
// non-finite weights make one): forward and append throw parameter_error, and
// the decoder is left as it was (also when the append would have recomputed
// the window); with the weights restored it goes on exactly as a decoder that
// never saw the failed call. A decoder made for int8 rejects a model switched
// to another storage.
TEST(PerceiverArInt8, NonFiniteKeysThrowAndChangeNothing) {
  const index_t B = 2, W = 32, H = 2;
  PerceiverArModel model = model_of(1, 9, W, H, Storage::int8);
  const auto tok = random_tokens(B, 60, model.config.vocab, 3);
  auto chunk_of = [&](index_t j0, index_t n) {
    std::vector<std::int32_t> c;
    for (index_t b = 0; b < B; ++b)
      for (index_t j = j0; j < j0 + n; ++j) c.push_back(tok[static_cast<size_t>(b * 60 + j)]);
    return c;
  };
  PerceiverArDecoder dec(model, B, 20, 4), clean(model, B, 20, 4);
  Matrix la, lb;
  index_t fed = 0;
  auto both = [&](index_t n) {
    const auto c = chunk_of(fed, n);
    dec.append(effattn::make_view<const std::int32_t>(c.data(), B, n), la);
    clean.append(effattn::make_view<const std::int32_t>(c.data(), B, n), lb);
    fed += n;
    EXPECT_EQ(all(la), all(lb)) << "after " << fed;
  };
  both(10);
  const float saved = model.cross.attn.k.weight(0, 0);
  for (int pass = 0; pass < 8; ++pass) {
    // Poison the key projection; the next append throws and changes nothing.
    model.cross.attn.k.weight(0, 0) = std::numeric_limits<float>::quiet_NaN();
    const auto c = chunk_of(fed, 1);
    Matrix untouched = Matrix::Constant(1, 1, 5.0f);
    const index_t len = dec.length(), wlen = dec.window_length(), lat = dec.cached_latents(), rec = dec.recomputes();
    const std::string msg = testing_util::message_of(
        [&] { dec.append(effattn::make_view<const std::int32_t>(c.data(), B, 1), untouched); });
    EXPECT_TRUE(testing_util::contains(msg, "non-finite")) << msg;
    EXPECT_EQ(dec.length(), len);
    EXPECT_EQ(dec.window_length(), wlen);
    EXPECT_EQ(dec.cached_latents(), lat);
    EXPECT_EQ(dec.recomputes(), rec);
    EXPECT_TRUE(untouched.rows() == 1 && untouched(0, 0) == 5.0f);
    Matrix fl;
    EXPECT_THROW(model.forward(effattn::make_view<const std::int32_t>(tok.data(), B, 12), {}, 3, fl),
                 effattn::parameter_error);
    model.cross.attn.k.weight(0, 0) = saved;
    both(1);  // passes through recomputes (max_latents 4)
  }
  EXPECT_GE(dec.recomputes(), 2);
  PerceiverArModel other = model;
  PerceiverArDecoder d8(other, B, 20, 4);
  other.config.context_kv = Storage::float16;
  const auto c = chunk_of(0, 2);
  testing_util::expect_throw_with<effattn::parameter_error>(
      [&] { d8.append(effattn::make_view<const std::int32_t>(c.data(), B, 2), la); }, "context_kv");
  other.config.context_kv = static_cast<Storage>(9);
  EXPECT_THROW(PerceiverArModel::random(other.config, 1), effattn::parameter_error);
}

// The uncached forward with int8 context storage: the logits move from the
// float32 ones by about what bfloat16 storage moves them (each element is
// rounded to within max|row| / 254, bfloat16 to within |x| / 256), so within
// the bfloat16 test's tolerance (perceiver_ar_test.cpp), and they do move.
TEST(PerceiverArInt8, ForwardCloseToFloatStorage) {
  const index_t B = 2, N = 90, M = 16;
  const auto tok = random_tokens(B, N, 31, 8);
  const auto tv = effattn::make_view<const std::int32_t>(tok.data(), B, N);
  Matrix l32, l8, lbf;
  model_of(2, 4, 64, 4, Storage::float32).forward(tv, {}, M, l32);
  model_of(2, 4, 64, 4, Storage::int8).forward(tv, {}, M, l8);
  model_of(2, 4, 64, 4, Storage::bfloat16).forward(tv, {}, M, lbf);
  EXPECT_TRUE(testing_util::close(all(l8), all(l32), 2e-2, 2e-2));
  EXPECT_GT(testing_util::max_abs_diff(all(l8), all(l32)), 0.0);
  RecordProperty("int8_vs_f32", std::to_string(testing_util::max_abs_diff(all(l8), all(l32))));
  RecordProperty("bf16_vs_f32", std::to_string(testing_util::max_abs_diff(all(lbf), all(l32))));
}

}  // namespace
