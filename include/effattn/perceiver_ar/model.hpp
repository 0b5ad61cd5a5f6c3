// SPDX-License-Identifier: MIT
// effattn::perceiver_ar: a complete (inference-only) Perceiver AR network built
// from the two attention operators, effattn::nn layers and the engine.
//
// Data flow per sequence (following the official model with absolute
// position encodings, `use_query_residual=True`, pre-LayerNorm blocks):
//
//   x_j   = Embed[token_j] + sinusoid(position_j)               inputs, [N, W]
//   z_m   = QueryProj(x_{p_m})                                  latent m, [M, W]
//   z     = z + Wo CrossAttn(Wq LN_q(z), Wk LN_kv(x), Wv LN_kv(x))   encoder mask
//   z     = z + Mlp(LN(z))
//   repeat `layers` times (pre-LN transformer block on the latents):
//     z   = z + Wo LatentAttn(Wq LN(z), Wk LN(z), Wv LN(z))         processor mask
//     z   = z + Mlp(LN(z))
//   logits = Head(LN_f(z))                                       [M, vocab]
//
// Latent m predicts the token after position p_m. The MLP uses the exact
// (erf) GELU of effattn::nn (the official default activation is squared
// ReLU; the attention structure, which is what this library is about, does
// not depend on it). An invalid latent (p_m = -1) takes its query from the
// last input row N-1, as the official `jnp.take(..., -1)` does; its outputs are
// finite but meaningless (the official code masks them out of the loss).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "../core/half.hpp"
#include "../nn/layers.hpp"
#include "attention.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace perceiver_ar {

/// Sizes of a Perceiver AR network.
struct ModelConfig {
  index_t vocab = 256;       ///< number of token ids, tokens in [0, vocab)
  index_t width = 512;       ///< channels of inputs and latents (even)
  index_t heads = 8;         ///< heads of every attention (width % heads == 0)
  index_t layers = 6;        ///< latent self-attention blocks
  index_t mlp_hidden = 0;    ///< hidden width of every MLP; 0 means 4 * width
  float ln_eps = 1e-5f;      ///< LayerNorm epsilon
  /// How the cross-attention keys and values of the inputs (the context) are
  /// stored, by Model::forward and by the Decoder's context cache alike:
  /// float32 (exact), or float16 / bfloat16 (half the memory, and decoding,
  /// which streams the context cache once per token, about 1.5x faster; the
  /// attention computes in float on the widened values). See core/half.hpp.
  Storage context_kv = Storage::float32;
};

struct LayerNormWeights {
  nn::Vector w, b;
  void forward(const nn::Matrix& x, nn::Matrix& y, float eps, const Executor& ex) const {
    nn::layer_norm(x, w, b, eps, y, ex);
  }
};

struct AttentionWeights {
  nn::Linear q, k, v, o;
};

/// The initial cross-attention block (queries from latents, keys/values from inputs).
struct CrossAttentionBlock {
  LayerNormWeights ln_q, ln_kv, ln_mlp;
  AttentionWeights attn;
  nn::Mlp mlp;
};

/// A pre-LN transformer block on the latents.
struct LatentBlock {
  LayerNormWeights ln_attn, ln_mlp;
  AttentionWeights attn;
  nn::Mlp mlp;
};

namespace detail {

/// [B, rows, W] row-major storage seen as [B, H, rows, W/H] (heads are column
/// groups): no copy, the engine reads strided views. Used for queries and
/// outputs, which the engine touches once; keys and values, which it streams
/// many times, are stored head-major instead (contiguous rows per head, which
/// the hardware prefetcher follows; a row stride of W is several times slower).
template <class T>
View<T, 4> heads_view(T* data, index_t B, index_t rows, index_t H, index_t W, index_t batch_stride) {
  return View<T, 4>(data, {B, H, rows, W / H}, {batch_stride, W / H, W, 1});
}

/// Copies one row of W = H * hd channels into head-major storage (rounded to
/// the storage type KV): head h goes to dst + h * head_stride.
template <class KV>
void scatter_heads(const float* row, index_t H, index_t hd, KV* dst, index_t head_stride) {
  for (index_t h = 0; h < H; ++h) convert(row + h * hd, dst + h * head_stride, hd);
}

/// Calls f(KV{}) with KV the element type of a storage.
template <class F>
void with_storage(Storage s, F&& f) {
  switch (s) {
    case Storage::float16: f(float16{}); break;
    case Storage::bfloat16: f(bfloat16{}); break;
    default: f(float{}); break;
  }
}

/// x [B*rows, H*hd] (rows of sequence b at b*rows..) into dst [B, H, rows, hd].
inline void to_heads(const nn::Matrix& x, index_t B, index_t rows, index_t H, float* dst) {
  const index_t hd = x.cols() / H;
  for (index_t b = 0; b < B; ++b)
    for (index_t r = 0; r < rows; ++r)
      scatter_heads(x.data() + (b * rows + r) * x.cols(), H, hd, dst + (b * H * rows + r) * hd, rows * hd);
}

template <class Rng>
LayerNormWeights random_ln(index_t W, Rng& rng) {
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  LayerNormWeights l;
  l.w.resize(W);
  l.b.resize(W);
  for (index_t i = 0; i < W; ++i) {
    l.w[i] = 1.0f + u(rng);
    l.b[i] = u(rng);
  }
  return l;
}

template <class Rng>
AttentionWeights random_attn(index_t W, Rng& rng) {
  return AttentionWeights{nn::Linear::random(W, W, rng), nn::Linear::random(W, W, rng),
                          nn::Linear::random(W, W, rng), nn::Linear::random(W, W, rng)};
}

}  // namespace detail

/// Weights and the uncached forward pass of a Perceiver AR network.
struct Model {
  ModelConfig config;
  nn::Matrix embedding;  ///< [vocab, width]
  nn::Linear query_proj; ///< the official z_linear: latent query from its input
  CrossAttentionBlock cross;
  std::vector<LatentBlock> latent;
  LayerNormWeights ln_final;
  nn::Linear head;       ///< [vocab, width]

  index_t width() const { return config.width; }
  index_t heads() const { return config.heads; }

  static void check_storage(Storage s, const char* op) {
    effattn::detail::require(s == Storage::float32 || s == Storage::float16 || s == Storage::bfloat16, op, "context_kv",
            "must be Storage::float32, float16 or bfloat16, got ", static_cast<int>(s));
  }

  /// Random weights (fixed seed), for tests, benchmarks and examples.
  static Model random(const ModelConfig& cfg, unsigned seed) {
    const char* op = "perceiver_ar::Model::random";
    effattn::detail::require(cfg.vocab >= 1, op, "vocab", "must be >= 1, got ", cfg.vocab);
    effattn::detail::require(cfg.width >= 2 && cfg.width % 2 == 0, op, "width", "must be even and >= 2, got ", cfg.width);
    effattn::detail::require(cfg.heads >= 1 && cfg.width % cfg.heads == 0, op, "heads", "must divide width=", cfg.width, ", got ",
            cfg.heads);
    effattn::detail::require(cfg.layers >= 0, op, "layers", "must be >= 0, got ", cfg.layers);
    effattn::detail::require(cfg.mlp_hidden >= 0, op, "mlp_hidden", "must be >= 0, got ", cfg.mlp_hidden);
    effattn::detail::require(std::isfinite(cfg.ln_eps) && cfg.ln_eps > 0, op, "ln_eps", "must be > 0, got ", cfg.ln_eps);
    check_storage(cfg.context_kv, op);
    std::mt19937 rng(seed);
    Model m;
    m.config = cfg;
    const index_t W = cfg.width, Hd = cfg.mlp_hidden > 0 ? cfg.mlp_hidden : 4 * W;
    m.config.mlp_hidden = Hd;
    std::normal_distribution<float> nd(0.0f, 1.0f);
    m.embedding.resize(cfg.vocab, W);
    for (index_t i = 0; i < m.embedding.size(); ++i) m.embedding.data()[i] = nd(rng);
    m.query_proj = nn::Linear::random(W, W, rng);
    m.cross = CrossAttentionBlock{detail::random_ln(W, rng), detail::random_ln(W, rng), detail::random_ln(W, rng),
                                  detail::random_attn(W, rng), nn::Mlp::random(W, Hd, rng)};
    for (index_t l = 0; l < cfg.layers; ++l)
      m.latent.push_back(LatentBlock{detail::random_ln(W, rng), detail::random_ln(W, rng), detail::random_attn(W, rng),
                                     nn::Mlp::random(W, Hd, rng)});
    m.ln_final = detail::random_ln(W, rng);
    m.head = nn::Linear::random(W, cfg.vocab, rng);
    return m;
  }

  /// dst[0:W] = Embed[token] + sinusoid(position) (sin on even, cos on odd
  /// channels, wavelengths 2*pi * 10000^(2c/W)). Unchecked: token in range.
  void embed(std::int32_t token, index_t position, float* dst) const {
    const index_t W = config.width;
    const float* e = embedding.data() + static_cast<index_t>(token) * W;
    for (index_t c = 0; c < W / 2; ++c) {
      const double freq = std::exp(-std::log(10000.0) * static_cast<double>(2 * c) / static_cast<double>(W));
      const double a = static_cast<double>(position) * freq;
      dst[2 * c] = e[2 * c] + static_cast<float>(std::sin(a));
      dst[2 * c + 1] = e[2 * c + 1] + static_cast<float>(std::cos(a));
    }
  }

  /// Keys and values of the cross-attention for inputs: for r in [0, rows),
  /// row r is token tok(r) at position pos(r); its key and value rows (W
  /// channels each) are handed to store(r, k_row, v_row). Works in chunks of
  /// rows, so it never holds more than a chunk of activations besides K and V.
  template <class Tok, class Pos, class Store>
  void input_keys_values(index_t rows, Tok tok, Pos pos, Store store, const Executor& ex = {}) const {
    const char* op = "perceiver_ar::Model::input_keys_values";
    effattn::detail::check_executor(ex, op);
    effattn::detail::require(rows >= 0, op, "rows", "must be >= 0, got ", rows);
    const index_t W = config.width;
    constexpr index_t kChunk = 1024;
    nn::Matrix x, y, kc, vc;
    for (index_t r0 = 0; r0 < rows; r0 += kChunk) {
      const index_t n = std::min(kChunk, rows - r0);
      x.resize(n, W);
      for (index_t r = 0; r < n; ++r) embed(tok(r0 + r), pos(r0 + r), x.data() + r * W);
      cross.ln_kv.forward(x, y, config.ln_eps, ex);
      cross.attn.k.forward(y, kc);
      cross.attn.v.forward(y, vc);
      for (index_t r = 0; r < n; ++r) store(r0 + r, kc.data() + r * W, vc.data() + r * W);
    }
  }

  /// z [B*M, W] += Wo attn_out [B*M, W]; then z += Mlp(LN(z)).
  void residual_and_mlp(nn::Matrix& z, const nn::Matrix& attn_out, const AttentionWeights& a,
                        const LayerNormWeights& ln_mlp, const nn::Mlp& mlp, const Executor& ex = {}) const {
    const char* op = "perceiver_ar::Model::residual_and_mlp";
    effattn::detail::check_executor(ex, op);
    check_rows(z, z.rows(), op, "z");
    check_rows(attn_out, z.rows(), op, "attn_out");
    nn::Matrix t, y;
    a.o.forward(attn_out, t);
    z += t;
    ln_mlp.forward(z, y, config.ln_eps, ex);
    mlp.forward(y, t, ex);
    z += t;
  }

  /// The initial cross-attention block, in place on z [B*M, W] (latent query
  /// inputs in, the residual stream out). K and V are [B, H, N, W/H] views of
  /// the inputs' projected keys and values (any strides; head-major is
  /// fastest), float or 16-bit. valid_length as in cross_attention.
  template <class KV>
  void cross_block(nn::Matrix& z, index_t B, index_t M, ConstView<KV, 4> K, ConstView<KV, 4> V,
                   ConstView<index_t, 1> valid_length, const Executor& ex) const {
    const char* op = "perceiver_ar::Model::cross_block";
    effattn::detail::check_executor(ex, op);
    const index_t W = config.width, H = config.heads;
    check_latent_rows(z, B, M, op);
    // The attention's checks of K, V and valid_length, before anything is written.
    effattn::detail::check_view(K, op, "K", false);
    effattn::detail::check_view(V, op, "V", false);
    const index_t N = K.dim(2);
    effattn::detail::check_shape(K, op, "K", "[B,H,N,W/H]", {B, H, N, W / H});
    effattn::detail::check_shape(V, op, "V", "[B,H,N,W/H]", {B, H, N, W / H});
    effattn::detail::require(M <= N, op, "M", "(the number of latents) must be <= N=", N, ", got ", M);
    detail::check_valid_length(valid_length, B, N, op);
    nn::Matrix y, q, o(B * M, W);
    cross.ln_q.forward(z, y, config.ln_eps, ex);
    cross.attn.q.forward(y, q);
    cross_attention<float>(detail::heads_view<const float>(q.data(), B, M, H, W, M * W), K, V,
                           detail::heads_view<float>(o.data(), B, M, H, W, M * W), valid_length, {}, ex);
    residual_and_mlp(z, o, cross.attn, cross.ln_mlp, cross.mlp, ex);
  }

  /// The latent self-attention stack, in place on z [B*M, W]: `layers`
  /// pre-LN blocks with the processor mask (valid_length as in
  /// latent_attention; absent means plain causal attention). With M = N and
  /// no cross-attention this is an ordinary causal transformer.
  /// `sink(l, k, v)` (optional) receives each layer's latent keys and values
  /// [B*M, W] (the decoder's caches).
  template <class Sink>
  void latent_stack(nn::Matrix& z, index_t B, index_t M, ConstView<index_t, 1> valid_length, const Executor& ex,
                    Sink&& sink) const {
    const char* op = "perceiver_ar::Model::latent_stack";
    effattn::detail::check_executor(ex, op);
    check_latent_rows(z, B, M, op);
    detail::check_valid_length(valid_length, B, -1, op);
    const index_t W = config.width, H = config.heads, hd = W / H;
    nn::Matrix y, q, k, v, o(B * M, W);
    std::vector<float> kh(static_cast<size_t>(B * M * W)), vh(kh.size());
    for (size_t l = 0; l < latent.size(); ++l) {
      const LatentBlock& blk = latent[l];
      blk.ln_attn.forward(z, y, config.ln_eps, ex);
      blk.attn.q.forward(y, q);
      blk.attn.k.forward(y, k);
      blk.attn.v.forward(y, v);
      sink(static_cast<index_t>(l), k, v);
      detail::to_heads(k, B, M, H, kh.data());
      detail::to_heads(v, B, M, H, vh.data());
      latent_attention<float>(detail::heads_view<const float>(q.data(), B, M, H, W, M * W),
                              make_view<const float>(kh.data(), B, H, M, hd),
                              make_view<const float>(vh.data(), B, H, M, hd),
                              detail::heads_view<float>(o.data(), B, M, H, W, M * W), valid_length, {}, ex);
      residual_and_mlp(z, o, blk.attn, blk.ln_mlp, blk.mlp, ex);
    }
  }
  void latent_stack(nn::Matrix& z, index_t B, index_t M, ConstView<index_t, 1> valid_length,
                    const Executor& ex = {}) const {
    latent_stack(z, B, M, valid_length, ex, [](index_t, const nn::Matrix&, const nn::Matrix&) {});
  }

  /// logits [rows, vocab] = Head(LN_f(z)).
  void output_logits(const nn::Matrix& z, nn::Matrix& logits, const Executor& ex = {}) const {
    const char* op = "perceiver_ar::Model::output_logits";
    effattn::detail::check_executor(ex, op);
    check_rows(z, z.rows(), op, "z");
    nn::Matrix y;
    ln_final.forward(z, y, config.ln_eps, ex);
    head.forward(y, logits);
  }

  /// Checks that x is [rows, width].
  void check_rows(const nn::Matrix& x, index_t rows, const char* op, const char* name) const {
    if (x.rows() != rows || x.cols() != config.width)
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": ", name, " must be [rows,width]=[", rows, ",",
                                                        config.width, "], got [", x.rows(), ",", x.cols(), "]")));
  }
  /// Checks B >= 0, M >= 1 and z [B*M, width].
  void check_latent_rows(const nn::Matrix& z, index_t B, index_t M, const char* op) const {
    effattn::detail::require(B >= 0, op, "B", "must be >= 0, got ", B);
    effattn::detail::require(M >= 1, op, "M", "(the number of latents) must be >= 1, got ", M);
    check_rows(z, effattn::detail::checked_mul(B, M, op, "latent rows B * M"), op, "z");
  }

  /// Checks tokens [B, N] (every id in [0, vocab)).
  void check_tokens(const ConstView<std::int32_t, 2>& tokens, const char* op) const {
    effattn::detail::check_view(tokens, op, "tokens", false);
    // A broadcast dimension (stride 0) holds one distinct row or column.
    const index_t nb = tokens.stride(0) == 0 && tokens.dim(0) > 0 ? 1 : tokens.dim(0);
    const index_t nj = tokens.stride(1) == 0 && tokens.dim(1) > 0 ? 1 : tokens.dim(1);
    for (index_t b = 0; b < nb; ++b)
      for (index_t j = 0; j < nj; ++j) {
        const std::int32_t t = tokens(b, j);
        if (t < 0 || t >= config.vocab)
          EFFATTN_THROW(parameter_error(effattn::detail::concat(op, ": tokens[", b, ",", j, "]=", t,
                                                                " must be in [0, vocab=", config.vocab, ")")));
      }
  }

  /// The uncached forward pass. tokens [B, N] (right-padded, ids in
  /// [0, vocab)); valid_length [B] optional (absent: every sequence is N
  /// long); M latents (1 <= M <= N, any value per call). Token j sits at
  /// position position_offset + j (the decoder uses a window of a longer
  /// sequence). Writes logits [B*M, vocab]: row b*M + m predicts the token
  /// after position p_m of sequence b.
  ///
  /// Work O(N W^2 + N M W + layers * (M W^2 + M^2 W)); memory: K and V of the
  /// inputs (2 * B * N * W elements of config.context_kv storage) plus
  /// O(B * M * W) and one chunk of activations, never N x N or M x N.
  void forward(ConstView<std::int32_t, 2> tokens, ConstView<index_t, 1> valid_length, index_t M, nn::Matrix& logits,
               index_t position_offset = 0, const Executor& ex = {}) const {
    const char* op = "perceiver_ar::Model::forward";
    effattn::detail::check_executor(ex, op);
    check_storage(config.context_kv, op);
    detail::with_storage(config.context_kv, [&](auto kv) {
      forward_impl<decltype(kv)>(tokens, valid_length, M, logits, position_offset, ex, op);
    });
  }

 private:
  template <class KV>
  void forward_impl(ConstView<std::int32_t, 2> tokens, ConstView<index_t, 1> valid_length, index_t M,
                    nn::Matrix& logits, index_t position_offset, const Executor& ex, const char* op) const {
    const index_t B = tokens.dim(0), N = tokens.dim(1), W = config.width, H = config.heads, hd = W / H;
    check_tokens(tokens, op);
    effattn::detail::require(M >= 1, op, "M", "(the number of latents) must be >= 1, got ", M);
    effattn::detail::require(M <= N, op, "M", "(the number of latents) must be <= N=", N, ", got ", M);
    effattn::detail::require(position_offset >= 0, op, "position_offset", "must be >= 0, got ", position_offset);
    detail::check_valid_length(valid_length, B, N, op);
    const index_t kv_elems = effattn::detail::checked_product(op, "input keys B * N * width", B, N, W);
    effattn::detail::checked_product(op, "logits B * M * vocab", B, M, config.vocab);
    effattn::detail::checked_product(op, "latents B * M * width", B, M, W);
    if (B == 0) {
      logits.resize(0, config.vocab);
      return;
    }
    // Keys and values of every input, head-major [B, H, N, W/H].
    std::vector<KV> K(static_cast<size_t>(kv_elems)), V(K.size());
    input_keys_values(
        B * N, [&](index_t r) { return tokens(r / N, r % N); }, [&](index_t r) { return position_offset + r % N; },
        [&](index_t r, const float* k, const float* v) {
          const index_t off = ((r / N) * H * N + r % N) * hd;
          detail::scatter_heads(k, H, hd, K.data() + off, N * hd);
          detail::scatter_heads(v, H, hd, V.data() + off, N * hd);
        },
        ex);
    // Latent queries from the inputs at the latent positions.
    nn::Matrix x(B * M, W), z;
    for (index_t b = 0; b < B; ++b) {
      const index_t L = detail::has_valid_length(valid_length) ? valid_length(b) : N;
      for (index_t m = 0; m < M; ++m) {
        const index_t p = latent_position(L, M, m);
        const index_t j = p >= 0 ? p : N - 1;  // official: index -1 wraps to the last input
        embed(tokens(b, j), position_offset + j, x.data() + (b * M + m) * W);
      }
    }
    query_proj.forward(x, z);
    cross_block(z, B, M, make_view<const KV>(K.data(), B, H, N, hd), make_view<const KV>(V.data(), B, H, N, hd),
                valid_length, ex);
    latent_stack(z, B, M, valid_length, ex);
    output_logits(z, logits, ex);
  }
};

}  // namespace perceiver_ar
EFFATTN_NAMESPACE_END
