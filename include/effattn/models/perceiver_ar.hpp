// SPDX-License-Identifier: MIT
// effattn::models: a demonstration Perceiver AR network (random weights) built
// from the method's two attention operators (perceiver_ar/attention.hpp),
// effattn::nn layers and the engine, and its cached decoder.
//
//   PerceiverArConfig   sizes (and the context K/V storage)
//   PerceiverArModel    weights, random(), the uncached forward(), and
//                       causal_forward() (the same latent blocks over every
//                       position: an ordinary causal transformer, a baseline)
//   PerceiverArDecoder  cached autoregressive decoding with fixed-size memory
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
//
// Every dense layer runs through nn::linear with the caller's Executor, every
// attention call gets that Executor as it is (the engine applies the core's
// small-work rule itself), so results are bit-identical for any thread count.
//
// Cached decoding. A PerceiverArDecoder keeps, per batch element,
//   - the cross-attention keys and values of the context window
//     ([max_context, W] each: the official `max_context_length_memory`), in
//     the model's config.context_kv storage (float32, or float16 / bfloat16
//     for half the memory and faster steps, or int8 codes with one float
//     scale per (batch, head, token) row, quantized as each token is
//     appended, for about a quarter), and
//   - for every latent layer, the keys and values of the cached latents
//     ([max_latents, W] each: the official `z_index_dim_memory`).
// Each append() adds tokens and produces the logits of ONE new latent at the
// last position (the official `z_index_dim=1` call): its query attends the
// whole window (O(N W)), and in each latent layer it attends the cached
// latents plus itself (O(M W)). So a token costs O(N + layers * M) attention
// work plus O(layers * W^2) for the projections and MLPs, instead of the
// O(N M + layers M^2) of a full recompute.
//
// When the memory is full (max_latents latents cached, or the window cannot
// take the new tokens) the decoder follows the official sampling policy
// (`sample_utils.sample_position`, condition_on='most_recent_only'): instead
// of rotating old latents off, it recomputes the window from scratch with
// max_latents / 2 latents (a full uncached forward pass; the cached
// per-token keys and values of the window are reused, they do not depend on
// the latents), fills the latent caches to half and continues one latent
// per token until they are full again. The window keeps the last
// max_context - max_latents / 2 tokens at a recompute, so that both memories
// fill at the same step (the official code keeps up to max_context tokens
// and rolls the oldest cross-attention entries off one per step; a sampling
// run there never exceeds max_context tokens, where the two agree).
//
// Invariant (tested): after a recompute at window start s (or from the
// start, s = 0), the logits of the c-th cached latent equal those of the
// uncached PerceiverArModel::forward over tokens [s, now) at positions s..
// with M = c latents, to float rounding.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <random>
#include <type_traits>
#include <vector>

#include "../core/half.hpp"
#include "../core/quant.hpp"
#include "../nn/layers.hpp"
#include "../perceiver_ar/attention.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace models {

/// Sizes of a Perceiver AR network.
struct PerceiverArConfig {
  index_t vocab = 256;       ///< number of token ids, tokens in [0, vocab)
  index_t width = 512;       ///< channels of inputs and latents (even)
  index_t heads = 8;         ///< heads of every attention (width % heads == 0)
  index_t layers = 6;        ///< latent self-attention blocks
  index_t mlp_hidden = 0;    ///< hidden width of every MLP; 0 means 4 * width
  float ln_eps = 1e-5f;      ///< LayerNorm epsilon
  /// How the cross-attention keys and values of the inputs (the context) are
  /// stored, by PerceiverArModel::forward and by the decoder's context cache
  /// alike: float32 (exact), or float16 / bfloat16 (half the memory, and
  /// decoding, which streams the context cache once per token, about 1.5x
  /// faster; the attention computes in float on the widened values; see
  /// core/half.hpp), or int8 (core/quant.hpp: each head's key or value row of
  /// W/heads numbers becomes int8 codes and one float scale, every element
  /// within max|row| / 254 of its float; 1 + 4 / (W/heads) bytes per element;
  /// the attention runs on the QuantizedKV views, folding the scales in, on
  /// exactly the values scale * code). A non-finite key or value (only
  /// non-finite weights make one) cannot be quantized: with int8, forward and
  /// the decoder throw parameter_error for it.
  Storage context_kv = Storage::float32;
};

/// Weights and the uncached forward pass of a Perceiver AR network. The
/// members are public (a checkpoint maps onto them); every entry point checks
/// that they have the shapes the config implies.
struct PerceiverArModel {
  struct LayerNormWeights {
    nn::Vector w, b;
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

  PerceiverArConfig config;
  nn::Matrix embedding;  ///< [vocab, width]
  nn::Linear query_proj; ///< the official z_linear: latent query from its input
  CrossAttentionBlock cross;
  std::vector<LatentBlock> latent;  ///< config.layers blocks
  LayerNormWeights ln_final;
  nn::Linear head;       ///< [vocab, width]

  index_t width() const { return config.width; }
  index_t heads() const { return config.heads; }

  /// Random weights (fixed seed), for tests, benchmarks and examples; the
  /// returned config has mlp_hidden resolved. Throws parameter_error for a bad
  /// config, shape_error for sizes whose products overflow.
  static PerceiverArModel random(const PerceiverArConfig& cfg, unsigned seed);

  /// The uncached forward pass. tokens [B, N] (right-padded, ids in
  /// [0, vocab)); valid_length [B] optional (absent: every sequence is N
  /// long); M latents (1 <= M <= N, any value per call). Token j sits at
  /// position position_offset + j (the decoder uses a window of a longer
  /// sequence). Writes logits [B*M, vocab]: row b*M + m predicts the token
  /// after position p_m of sequence b. Every input (the executor first) and
  /// the weights are checked before logits is written.
  ///
  /// Work O(N W^2 + N M W + layers * (M W^2 + M^2 W)); memory: K and V of the
  /// inputs (2 * B * N * W elements of config.context_kv storage) plus
  /// O(B * M * W) and one chunk of activations, never N x N or M x N.
  void forward(ConstView<std::int32_t, 2> tokens, ConstView<index_t, 1> valid_length, index_t M, nn::Matrix& logits,
               index_t position_offset = 0, const Executor& ex = {}) const;

  /// The same network without its cross-attention: every position is a
  /// latent (query projection of its input, then the latent blocks with plain
  /// causal attention over all N positions, then the head). An ordinary causal
  /// transformer of the same depth and width, O(layers * N^2 W): the baseline
  /// Perceiver AR is measured against. tokens [B, N]; logits [B*N, vocab].
  void causal_forward(ConstView<std::int32_t, 2> tokens, nn::Matrix& logits, const Executor& ex = {}) const;
};

namespace detail {
/// The model's private steps. Their callers (the public entry points above and
/// the decoder) check every input first; the steps check again what is cheap.
namespace perceiver_ar {

using Model = PerceiverArModel;

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

/// Copies one row of W = H * hd channels into head-major storage of any
/// context storage KV: rounded to float / float16 / bfloat16 as
/// scatter_heads does, or (KV = std::int8_t) quantized per head by
/// quantize_rows, head h's codes to dst + h * head_stride and its scale to
/// scale[h * scale_stride] (scale is unused otherwise). int8 throws
/// parameter_error for a non-finite element (quantize_rows).
template <class KV>
void store_heads(const float* row, index_t H, index_t hd, KV* dst, index_t head_stride, float* scale,
                 index_t scale_stride) {
  if constexpr (std::is_same<KV, std::int8_t>::value) {
    for (index_t h = 0; h < H; ++h) quantize_rows(row + h * hd, 1, hd, hd, dst + h * head_stride, hd, scale + h * scale_stride, 1);
  } else {
    (void)scale;
    (void)scale_stride;
    scatter_heads(row, H, hd, dst, head_stride);
  }
}

/// Calls f(KV{}) with KV the element type of a storage (std::int8_t: int8
/// codes, with float row scales beside them).
template <class F>
void with_storage(Storage s, F&& f) {
  switch (s) {
    case Storage::float16: f(float16{}); break;
    case Storage::bfloat16: f(bfloat16{}); break;
    case Storage::int8: f(std::int8_t{}); break;
    default: f(float{}); break;
  }
}

/// The keys or values [B, H, N, hd] of head-major storage (element (b, h, n)
/// at data + ((b * H + h) * cap + n) * hd, scale at scale + (b * H + h) * cap
/// + n) as the attention operand of their storage: a view, or (int8) a
/// QuantizedKV of the codes and their scales.
template <class KV>
auto context_operand(const KV* data, const float* scale, index_t B, index_t H, index_t N, index_t hd, index_t cap) {
  const std::array<index_t, 4> shape{B, H, N, hd}, strides{H * cap * hd, cap * hd, hd, 1};
  if constexpr (std::is_same<KV, std::int8_t>::value) {
    return QuantizedKV{View<const std::int8_t, 4>(data, shape, strides),
                       View<const float, 3>(scale, {B, H, N}, {H * cap, cap, 1})};
  } else {
    (void)scale;
    return ConstView<KV, 4>(data, shape, strides);
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
Model::LayerNormWeights random_ln(index_t W, Rng& rng) {
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  Model::LayerNormWeights l;
  l.w.resize(W);
  l.b.resize(W);
  for (index_t i = 0; i < W; ++i) {
    l.w[i] = 1.0f + u(rng);
    l.b[i] = u(rng);
  }
  return l;
}

template <class Rng>
Model::AttentionWeights random_attn(index_t W, Rng& rng) {
  return Model::AttentionWeights{nn::Linear::random(W, W, rng), nn::Linear::random(W, W, rng),
                                 nn::Linear::random(W, W, rng), nn::Linear::random(W, W, rng)};
}

inline void check_storage(Storage s, const char* op) {
  effattn::detail::require(s == Storage::float32 || s == Storage::float16 || s == Storage::bfloat16 || s == Storage::int8,
                           op, "context_kv", "must be Storage::float32, float16, bfloat16 or int8, got ",
                           static_cast<int>(s));
}

/// The hidden width of the MLPs a config implies.
inline index_t mlp_hidden(const PerceiverArConfig& cfg) { return cfg.mlp_hidden > 0 ? cfg.mlp_hidden : 4 * cfg.width; }

inline void check_config(const PerceiverArConfig& cfg, const char* op) {
  effattn::detail::require(cfg.vocab >= 1, op, "vocab", "must be >= 1, got ", cfg.vocab);
  effattn::detail::require(cfg.width >= 2 && cfg.width % 2 == 0, op, "width", "must be even and >= 2, got ", cfg.width);
  effattn::detail::require(cfg.heads >= 1 && cfg.width % cfg.heads == 0, op, "heads", "must divide width=", cfg.width,
                           ", got ", cfg.heads);
  effattn::detail::require(cfg.layers >= 0, op, "layers", "must be >= 0, got ", cfg.layers);
  effattn::detail::require(cfg.mlp_hidden >= 0, op, "mlp_hidden", "must be >= 0, got ", cfg.mlp_hidden);
  effattn::detail::require(std::isfinite(cfg.ln_eps) && cfg.ln_eps > 0, op, "ln_eps", "must be > 0, got ", cfg.ln_eps);
  check_storage(cfg.context_kv, op);
  effattn::detail::checked_mul(cfg.vocab, cfg.width, op, "vocab * width");
  effattn::detail::checked_mul(cfg.width, cfg.width, op, "width * width");
  if (cfg.mlp_hidden == 0) effattn::detail::checked_mul(index_t(4), cfg.width, op, "4 * width");
  effattn::detail::checked_mul(mlp_hidden(cfg), cfg.width, op, "mlp_hidden * width");
}

/// The config is valid and every weight has the shape it implies (the members
/// are public, so a model may have been edited): parameter_error /
/// shape_error naming `op`. O(layers).
inline void check_model(const Model& m, const char* op) {
  const PerceiverArConfig& c = m.config;
  check_config(c, op);
  const index_t W = c.width, Hd = mlp_hidden(c);
  effattn::detail::require(static_cast<index_t>(m.latent.size()) == c.layers, op, "latent",
                           "must hold config.layers=", c.layers, " blocks, got ", m.latent.size());
  auto shape = [&](bool ok, const char* name, index_t r, index_t cols, index_t got_r, index_t got_c) {
    if (!ok)
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": model weight ", name, " must be [", r, ",", cols,
                                                        "], got [", got_r, ",", got_c, "]")));
  };
  auto linear = [&](const nn::Linear& l, index_t in, index_t out, const char* name) {
    shape(l.weight.rows() == out && l.weight.cols() == in, name, out, in, l.weight.rows(), l.weight.cols());
    if (l.bias.size() != 0 && l.bias.size() != out)
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": model weight ", name, " bias must be [", out,
                                                        "] or empty, got [", l.bias.size(), "]")));
  };
  auto ln = [&](const Model::LayerNormWeights& l, const char* name) {
    if (l.w.size() != W || l.b.size() != W)
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": model LayerNorm ", name, " must be [width]=[", W,
                                                        "], got [", l.w.size(), "] and [", l.b.size(), "]")));
  };
  auto attn = [&](const Model::AttentionWeights& a) {
    linear(a.q, W, W, "attn.q");
    linear(a.k, W, W, "attn.k");
    linear(a.v, W, W, "attn.v");
    linear(a.o, W, W, "attn.o");
  };
  auto mlp = [&](const nn::Mlp& p) {
    linear(p.fc1, W, Hd, "mlp.fc1");
    linear(p.fc2, Hd, W, "mlp.fc2");
  };
  shape(m.embedding.rows() == c.vocab && m.embedding.cols() == W, "embedding", c.vocab, W, m.embedding.rows(),
        m.embedding.cols());
  linear(m.query_proj, W, W, "query_proj");
  ln(m.cross.ln_q, "cross.ln_q");
  ln(m.cross.ln_kv, "cross.ln_kv");
  ln(m.cross.ln_mlp, "cross.ln_mlp");
  attn(m.cross.attn);
  mlp(m.cross.mlp);
  for (const Model::LatentBlock& blk : m.latent) {
    ln(blk.ln_attn, "latent.ln_attn");
    ln(blk.ln_mlp, "latent.ln_mlp");
    attn(blk.attn);
    mlp(blk.mlp);
  }
  ln(m.ln_final, "ln_final");
  linear(m.head, W, c.vocab, "head");
}

/// Checks tokens [B, N] (every id in [0, vocab)).
inline void check_tokens(const Model& m, const ConstView<std::int32_t, 2>& tokens, const char* op) {
  effattn::detail::check_view(tokens, op, "tokens", false);
  // A broadcast dimension (stride 0) holds one distinct row or column.
  const index_t nb = tokens.stride(0) == 0 && tokens.dim(0) > 0 ? 1 : tokens.dim(0);
  const index_t nj = tokens.stride(1) == 0 && tokens.dim(1) > 0 ? 1 : tokens.dim(1);
  for (index_t b = 0; b < nb; ++b)
    for (index_t j = 0; j < nj; ++j) {
      const std::int32_t t = tokens(b, j);
      if (t < 0 || t >= m.config.vocab)
        EFFATTN_THROW(parameter_error(effattn::detail::concat(op, ": tokens[", b, ",", j, "]=", t,
                                                              " must be in [0, vocab=", m.config.vocab, ")")));
    }
}

/// Checks that x is [rows, width].
inline void check_rows(const Model& m, const nn::Matrix& x, index_t rows, const char* op, const char* name) {
  if (x.rows() != rows || x.cols() != m.config.width)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": ", name, " must be [rows,width]=[", rows, ",",
                                                      m.config.width, "], got [", x.rows(), ",", x.cols(), "]")));
}
/// Checks B >= 0, M >= 1 and z [B*M, width].
inline void check_latent_rows(const Model& m, const nn::Matrix& z, index_t B, index_t M, const char* op) {
  effattn::detail::require(B >= 0, op, "B", "must be >= 0, got ", B);
  effattn::detail::require(M >= 1, op, "M", "(the number of latents) must be >= 1, got ", M);
  check_rows(m, z, effattn::detail::checked_mul(B, M, op, "latent rows B * M"), op, "z");
}

/// dst[0:W] = Embed[token] + sinusoid(position) (sin on even, cos on odd
/// channels, wavelengths 2*pi * 10000^(2c/W)). Unchecked: a checked model and
/// a token in range.
inline void embed_token(const Model& m, std::int32_t token, index_t position, float* dst) {
  const index_t W = m.config.width;
  const float* e = m.embedding.data() + static_cast<index_t>(token) * W;
  for (index_t c = 0; c < W / 2; ++c) {
    const double freq = std::exp(-std::log(10000.0) * static_cast<double>(2 * c) / static_cast<double>(W));
    const double a = static_cast<double>(position) * freq;
    dst[2 * c] = e[2 * c] + static_cast<float>(std::sin(a));
    dst[2 * c + 1] = e[2 * c + 1] + static_cast<float>(std::cos(a));
  }
}

inline void layer_norm(const Model& m, const Model::LayerNormWeights& l, const nn::Matrix& x, nn::Matrix& y,
                       const Executor& ex) {
  nn::layer_norm(x, l.w, l.b, m.config.ln_eps, y, ex);
}

/// Keys and values of the cross-attention for inputs: for r in [0, rows),
/// row r is token tok(r) at position pos(r); its key and value rows (W
/// channels each) are handed to store(r, k_row, v_row). Works in chunks of
/// rows, so it never holds more than a chunk of activations besides K and V.
template <class Tok, class Pos, class Store>
void input_keys_values(const Model& m, index_t rows, Tok tok, Pos pos, Store store, const Executor& ex) {
  const char* op = "models::PerceiverArModel::input_keys_values";
  effattn::detail::check_executor(ex, op);
  effattn::detail::require(rows >= 0, op, "rows", "must be >= 0, got ", rows);
  const index_t W = m.config.width;
  constexpr index_t kChunk = 1024;
  nn::Matrix x, y, kc, vc;
  for (index_t r0 = 0; r0 < rows; r0 += kChunk) {
    const index_t n = std::min(kChunk, rows - r0);
    x.resize(n, W);
    for (index_t r = 0; r < n; ++r) embed_token(m, tok(r0 + r), pos(r0 + r), x.data() + r * W);
    layer_norm(m, m.cross.ln_kv, x, y, ex);
    nn::linear(m.cross.attn.k, y, kc, ex);
    nn::linear(m.cross.attn.v, y, vc, ex);
    for (index_t r = 0; r < n; ++r) store(r0 + r, kc.data() + r * W, vc.data() + r * W);
  }
}

/// z [B*M, W] += Wo attn_out [B*M, W]; then z += Mlp(LN(z)).
inline void residual_and_mlp(const Model& m, nn::Matrix& z, const nn::Matrix& attn_out,
                             const Model::AttentionWeights& a, const Model::LayerNormWeights& ln_mlp,
                             const nn::Mlp& mlp, const Executor& ex) {
  const char* op = "models::PerceiverArModel::residual_and_mlp";
  effattn::detail::check_executor(ex, op);
  check_rows(m, z, z.rows(), op, "z");
  check_rows(m, attn_out, z.rows(), op, "attn_out");
  nn::Matrix t, y;
  nn::linear(a.o, attn_out, t, ex);
  z += t;
  layer_norm(m, ln_mlp, z, y, ex);
  mlp.forward(y, t, ex);
  z += t;
}

/// The initial cross-attention block, in place on z [B*M, W] (latent query
/// inputs in, the residual stream out). K and V are [B, H, N, W/H] views of
/// the inputs' projected keys and values (any strides; head-major is
/// fastest), float or 16-bit, or QuantizedKV (int8 codes [B, H, N, W/H] and
/// scales [B, H, N]). valid_length as in cross_attention.
template <class KOp>
void cross_block(const Model& m, nn::Matrix& z, index_t B, index_t M, const KOp& K, const KOp& V,
                 ConstView<index_t, 1> valid_length, const Executor& ex) {
  const char* op = "models::PerceiverArModel::cross_block";
  effattn::detail::check_executor(ex, op);
  const index_t W = m.config.width, H = m.config.heads;
  check_latent_rows(m, z, B, M, op);
  // The attention's checks of K, V and valid_length, before anything is written.
  const auto& Ke = effattn::perceiver_ar::detail::kv_elements(K);
  const auto& Ve = effattn::perceiver_ar::detail::kv_elements(V);
  effattn::detail::check_view(Ke, op, "K", false);
  effattn::detail::check_view(Ve, op, "V", false);
  const index_t N = Ke.dim(2);
  effattn::detail::check_shape(Ke, op, "K", "[B,H,N,W/H]", {B, H, N, W / H});
  effattn::detail::check_shape(Ve, op, "V", "[B,H,N,W/H]", {B, H, N, W / H});
  if constexpr (std::is_same<KOp, QuantizedKV>::value) {
    effattn::detail::check_view(K.scale, op, "K.scale", false);
    effattn::detail::check_view(V.scale, op, "V.scale", false);
    effattn::detail::check_shape(K.scale, op, "K.scale", "[B,H,N]", {B, H, N});
    effattn::detail::check_shape(V.scale, op, "V.scale", "[B,H,N]", {B, H, N});
  }
  effattn::detail::require(M <= N, op, "M", "(the number of latents) must be <= N=", N, ", got ", M);
  effattn::perceiver_ar::detail::check_valid_length(valid_length, B, N, op);
  nn::Matrix y, q, o(B * M, W);
  layer_norm(m, m.cross.ln_q, z, y, ex);
  nn::linear(m.cross.attn.q, y, q, ex);
  effattn::perceiver_ar::cross_attention<float>(heads_view<const float>(q.data(), B, M, H, W, M * W), K, V,
                                                heads_view<float>(o.data(), B, M, H, W, M * W), valid_length, {}, ex);
  residual_and_mlp(m, z, o, m.cross.attn, m.cross.ln_mlp, m.cross.mlp, ex);
}

/// The latent self-attention stack, in place on z [B*M, W]: `layers`
/// pre-LN blocks with the processor mask (valid_length as in
/// latent_attention; absent means plain causal attention). With M = N and
/// no cross-attention this is an ordinary causal transformer.
/// `sink(l, k, v)` receives each layer's latent keys and values [B*M, W]
/// (the decoder's caches).
template <class Sink>
void latent_stack(const Model& m, nn::Matrix& z, index_t B, index_t M, ConstView<index_t, 1> valid_length,
                  const Executor& ex, Sink&& sink) {
  const char* op = "models::PerceiverArModel::latent_stack";
  effattn::detail::check_executor(ex, op);
  check_latent_rows(m, z, B, M, op);
  effattn::perceiver_ar::detail::check_valid_length(valid_length, B, -1, op);
  const index_t W = m.config.width, H = m.config.heads, hd = W / H;
  nn::Matrix y, q, k, v, o(B * M, W);
  std::vector<float> kh(static_cast<size_t>(B * M * W)), vh(kh.size());
  for (size_t l = 0; l < m.latent.size(); ++l) {
    const Model::LatentBlock& blk = m.latent[l];
    layer_norm(m, blk.ln_attn, z, y, ex);
    nn::linear(blk.attn.q, y, q, ex);
    nn::linear(blk.attn.k, y, k, ex);
    nn::linear(blk.attn.v, y, v, ex);
    sink(static_cast<index_t>(l), k, v);
    to_heads(k, B, M, H, kh.data());
    to_heads(v, B, M, H, vh.data());
    effattn::perceiver_ar::latent_attention<float>(heads_view<const float>(q.data(), B, M, H, W, M * W),
                                                   make_view<const float>(kh.data(), B, H, M, hd),
                                                   make_view<const float>(vh.data(), B, H, M, hd),
                                                   heads_view<float>(o.data(), B, M, H, W, M * W), valid_length, {},
                                                   ex);
    residual_and_mlp(m, z, o, blk.attn, blk.ln_mlp, blk.mlp, ex);
  }
}
inline void latent_stack(const Model& m, nn::Matrix& z, index_t B, index_t M, ConstView<index_t, 1> valid_length,
                         const Executor& ex) {
  latent_stack(m, z, B, M, valid_length, ex, [](index_t, const nn::Matrix&, const nn::Matrix&) {});
}

/// logits [rows, vocab] = Head(LN_f(z)).
inline void output_logits(const Model& m, const nn::Matrix& z, nn::Matrix& logits, const Executor& ex) {
  const char* op = "models::PerceiverArModel::output_logits";
  effattn::detail::check_executor(ex, op);
  check_rows(m, z, z.rows(), op, "z");
  nn::Matrix y;
  layer_norm(m, m.ln_final, z, y, ex);
  nn::linear(m.head, y, logits, ex);
}

template <class KV>
void forward_impl(const Model& m, ConstView<std::int32_t, 2> tokens, ConstView<index_t, 1> valid_length, index_t M,
                  nn::Matrix& logits, index_t position_offset, const Executor& ex, const char* op) {
  const index_t B = tokens.dim(0), N = tokens.dim(1), W = m.config.width, H = m.config.heads, hd = W / H;
  check_tokens(m, tokens, op);
  effattn::detail::require(M >= 1, op, "M", "(the number of latents) must be >= 1, got ", M);
  effattn::detail::require(M <= N, op, "M", "(the number of latents) must be <= N=", N, ", got ", M);
  effattn::detail::require(position_offset >= 0, op, "position_offset", "must be >= 0, got ", position_offset);
  effattn::detail::checked_add(position_offset, N, op, "position_offset + N");
  effattn::perceiver_ar::detail::check_valid_length(valid_length, B, N, op);
  const index_t kv_elems = effattn::detail::checked_product(op, "input keys B * N * width", B, N, W);
  effattn::detail::checked_product(op, "logits B * M * vocab", B, M, m.config.vocab);
  effattn::detail::checked_product(op, "latents B * M * width", B, M, W);
  if (B == 0) {
    logits.resize(0, m.config.vocab);
    return;
  }
  // Keys and values of every input, head-major [B, H, N, W/H] (int8: and
  // their scales [B, H, N], each row quantized as the decoder quantizes it).
  constexpr bool kInt8 = std::is_same<KV, std::int8_t>::value;
  std::vector<KV> K(static_cast<size_t>(kv_elems)), V(K.size());
  std::vector<float> Ks(kInt8 ? static_cast<size_t>(B * H * N) : 0), Vs(Ks.size());
  input_keys_values(
      m, B * N, [&](index_t r) { return tokens(r / N, r % N); }, [&](index_t r) { return position_offset + r % N; },
      [&](index_t r, const float* k, const float* v) {
        const index_t row = (r / N) * H * N + r % N;
        store_heads(k, H, hd, K.data() + row * hd, N * hd, kInt8 ? Ks.data() + row : nullptr, N);
        store_heads(v, H, hd, V.data() + row * hd, N * hd, kInt8 ? Vs.data() + row : nullptr, N);
      },
      ex);
  // Latent queries from the inputs at the latent positions.
  nn::Matrix x(B * M, W), z;
  const bool has_len = effattn::perceiver_ar::detail::has_valid_length(valid_length);
  for (index_t b = 0; b < B; ++b) {
    const index_t L = has_len ? valid_length(b) : N;
    for (index_t i = 0; i < M; ++i) {
      const index_t p = effattn::perceiver_ar::latent_position(L, M, i);
      const index_t j = p >= 0 ? p : N - 1;  // official: index -1 wraps to the last input
      embed_token(m, tokens(b, j), position_offset + j, x.data() + (b * M + i) * W);
    }
  }
  nn::linear(m.query_proj, x, z, ex);
  cross_block(m, z, B, M, context_operand<KV>(K.data(), Ks.data(), B, H, N, hd, N),
              context_operand<KV>(V.data(), Vs.data(), B, H, N, hd, N), valid_length, ex);
  latent_stack(m, z, B, M, valid_length, ex);
  output_logits(m, z, logits, ex);
}

}  // namespace perceiver_ar
}  // namespace detail

inline PerceiverArModel PerceiverArModel::random(const PerceiverArConfig& cfg, unsigned seed) {
  namespace pd = detail::perceiver_ar;
  pd::check_config(cfg, "models::PerceiverArModel::random");
  std::mt19937 rng(seed);
  PerceiverArModel m;
  m.config = cfg;
  const index_t W = cfg.width, Hd = pd::mlp_hidden(cfg);
  m.config.mlp_hidden = Hd;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  m.embedding.resize(cfg.vocab, W);
  for (index_t i = 0; i < m.embedding.size(); ++i) m.embedding.data()[i] = nd(rng);
  m.query_proj = nn::Linear::random(W, W, rng);
  m.cross = CrossAttentionBlock{pd::random_ln(W, rng), pd::random_ln(W, rng), pd::random_ln(W, rng),
                                pd::random_attn(W, rng), nn::Mlp::random(W, Hd, rng)};
  for (index_t l = 0; l < cfg.layers; ++l)
    m.latent.push_back(LatentBlock{pd::random_ln(W, rng), pd::random_ln(W, rng), pd::random_attn(W, rng),
                                   nn::Mlp::random(W, Hd, rng)});
  m.ln_final = pd::random_ln(W, rng);
  m.head = nn::Linear::random(W, cfg.vocab, rng);
  return m;
}

inline void PerceiverArModel::forward(ConstView<std::int32_t, 2> tokens, ConstView<index_t, 1> valid_length, index_t M,
                                      nn::Matrix& logits, index_t position_offset, const Executor& ex) const {
  namespace pd = detail::perceiver_ar;
  const char* op = "models::PerceiverArModel::forward";
  effattn::detail::check_executor(ex, op);
  pd::check_model(*this, op);
  pd::with_storage(config.context_kv, [&](auto kv) {
    pd::forward_impl<decltype(kv)>(*this, tokens, valid_length, M, logits, position_offset, ex, op);
  });
}

inline void PerceiverArModel::causal_forward(ConstView<std::int32_t, 2> tokens, nn::Matrix& logits,
                                             const Executor& ex) const {
  namespace pd = detail::perceiver_ar;
  const char* op = "models::PerceiverArModel::causal_forward";
  effattn::detail::check_executor(ex, op);
  pd::check_model(*this, op);
  pd::check_tokens(*this, tokens, op);
  const index_t B = tokens.dim(0), N = tokens.dim(1), W = config.width;
  const index_t rows = effattn::detail::checked_mul(B, N, op, "rows B * N");
  effattn::detail::checked_mul(rows, W, op, "activations B * N * width");
  effattn::detail::checked_mul(rows, config.vocab, op, "logits B * N * vocab");
  if (rows == 0) {
    logits.resize(0, config.vocab);
    return;
  }
  nn::Matrix x(rows, W), z;
  for (index_t b = 0; b < B; ++b)
    for (index_t j = 0; j < N; ++j) pd::embed_token(*this, tokens(b, j), j, x.data() + (b * N + j) * W);
  nn::linear(query_proj, x, z, ex);
  pd::latent_stack(*this, z, B, N, {}, ex);
  pd::output_logits(*this, z, logits, ex);
}

/// Cached decoder over a PerceiverArModel (which must outlive it, and keep
/// the sizes it had when the decoder was made). All batch elements advance
/// together (same number of tokens per call).
class PerceiverArDecoder {
 public:
  /// batch >= 1; max_latents >= 2 and even (the official assertion);
  /// max_context > max_latents / 2 (each call may add at most
  /// max_context - max_latents / 2 tokens).
  /// Memory (memory_bytes()): 2 * batch * max_context * W context elements
  /// (4, 2 or 1 bytes, per config.context_kv; int8 adds 2 * batch * heads *
  /// max_context float scales), 2 * batch * layers * max_latents * W floats
  /// and batch * max_context token ids.
  PerceiverArDecoder(const PerceiverArModel& model, index_t batch, index_t max_context, index_t max_latents)
      : model_(&model), B_(batch), cap_(max_context), max_lat_(max_latents), storage_(model.config.context_kv) {
    namespace pd = detail::perceiver_ar;
    const char* op = "models::PerceiverArDecoder";
    pd::check_model(model, op);
    effattn::detail::require(batch >= 1, op, "batch", "must be >= 1, got ", batch);
    effattn::detail::require(max_latents >= 2 && max_latents % 2 == 0, op, "max_latents",
                             "must be even and >= 2, got ", max_latents);
    effattn::detail::require(max_context > max_latents / 2, op, "max_context", "must be > max_latents / 2 = ",
                             max_latents / 2, ", got ", max_context);
    W_ = model.width();
    H_ = model.heads();
    L_ = static_cast<index_t>(model.latent.size());
    // Every buffer's size in bytes fits the index type (else shape_error, never a wrapped size).
    const size_t n = static_cast<size_t>(
        effattn::detail::checked_product(op, "context cache bytes batch * max_context * width * 4", B_, cap_, W_,
                                         index_t(sizeof(float))) /
        index_t(sizeof(float)));
    effattn::detail::checked_product(op, "latent cache bytes batch * layers * max_latents * width * 4", B_,
                                     L_ > 0 ? L_ : index_t(1), max_lat_, W_, index_t(sizeof(float)));
    pd::with_storage(storage_, [&](auto kv) {
      using KV = decltype(kv);
      cache<KV>(kc_).assign(n, KV(0.0f));
      cache<KV>(vc_).assign(n, KV(0.0f));
    });
    if (storage_ == Storage::int8) {
      kc_.scale.assign(n / static_cast<size_t>(hd()), 0.0f);
      vc_.scale.assign(kc_.scale.size(), 0.0f);
    }
    tok_.assign(static_cast<size_t>(B_ * cap_), 0);
    lk_.assign(static_cast<size_t>(L_), std::vector<float>(static_cast<size_t>(B_ * max_lat_ * W_), 0.0f));
    lv_ = lk_;
  }

  index_t batch() const { return B_; }
  index_t max_context() const { return cap_; }
  index_t max_latents() const { return max_lat_; }
  /// The most tokens one append() call may add.
  index_t max_append() const { return cap_ - max_lat_ / 2; }
  /// Tokens fed so far (the absolute position of the next token).
  index_t length() const { return len_; }
  /// Absolute position of the first token in the cross-attention window.
  index_t window_start() const { return len_ - wlen_; }
  index_t window_length() const { return wlen_; }
  /// Latents in the latent caches (the c of the invariant above).
  index_t cached_latents() const { return nlat_; }
  /// How many times the memory was full and the window recomputed.
  index_t recomputes() const { return recomputes_; }
  /// Forgets everything (keeps the allocations).
  void clear() { len_ = wlen_ = nlat_ = recomputes_ = 0; }
  /// How the context keys/values are stored (the model's config.context_kv
  /// when the decoder was made).
  Storage context_storage() const { return storage_; }
  /// Bytes of the caches (context keys/values, latent keys/values, tokens).
  std::size_t memory_bytes() const {
    std::size_t bytes = tok_.size() * sizeof(std::int32_t);
    for (const ContextStore* c : {&kc_, &vc_})
      bytes += c->f32.size() * sizeof(float) + c->f16.size() * sizeof(float16) + c->bf16.size() * sizeof(bfloat16) +
               c->i8.size() * sizeof(std::int8_t) + c->scale.size() * sizeof(float);
    for (const auto* layers : {&lk_, &lv_})
      for (const auto& l : *layers) bytes += l.size() * sizeof(float);
    return bytes;
  }

  /// Appends tokens [batch, n] (1 <= n <= max_append(), ids in [0, vocab))
  /// at positions length().. and writes logits [batch, vocab]: the prediction
  /// of the token after the last one appended. Throws shape_error /
  /// parameter_error (the executor first; then the model, which must still
  /// have the sizes and context storage it had when the decoder was made, and
  /// the tokens; with int8 storage, a non-finite new key or value) before
  /// changing any state or the logits.
  void append(ConstView<std::int32_t, 2> tokens, nn::Matrix& logits, const Executor& ex = {}) {
    namespace pd = detail::perceiver_ar;
    const char* op = "models::PerceiverArDecoder::append";
    effattn::detail::check_executor(ex, op);
    pd::check_model(*model_, op);
    effattn::detail::require(model_->width() == W_ && model_->heads() == H_ &&
                                 static_cast<index_t>(model_->latent.size()) == L_ &&
                                 model_->config.context_kv == storage_,
                             op, "model", "must keep the width, heads, layers and context_kv it had when the decoder "
                             "was made (", W_, ", ", H_, ", ", L_, ", ", to_string(storage_), "), got ",
                             model_->width(), ", ", model_->heads(), ", ", model_->latent.size(), ", ",
                             static_cast<int>(model_->config.context_kv));
    effattn::detail::check_view(tokens, op, "tokens", false);
    const index_t n = tokens.dim(1);
    if (tokens.dim(0) != B_)
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": tokens must be [batch,n] with batch=", B_, ", got ",
                                                        effattn::detail::shape_str(tokens.shape()))));
    effattn::detail::require(n >= 1 && n <= max_append(), op, "n",
                             "(tokens.dim(1)) must be in [1, max_context - max_latents/2 = ", max_append(), "], got ", n);
    pd::check_tokens(*model_, tokens, op);
    if (nlat_ == max_lat_ || wlen_ + n > cap_)
      recompute(tokens, logits, ex);
    else
      step(tokens, logits, ex);
  }

 private:
  using Model = PerceiverArModel;

  /// Context keys or values in each storage; only the decoder's is non-empty
  /// (int8: the codes i8 [B, H, cap, hd] and their scales [B, H, cap]).
  struct ContextStore {
    std::vector<float> f32;
    std::vector<float16> f16;
    std::vector<bfloat16> bf16;
    std::vector<std::int8_t> i8;
    std::vector<float> scale;
  };
  template <class KV>
  static std::vector<KV>& cache(ContextStore& c) {
    if constexpr (std::is_same<KV, float16>::value) return c.f16;
    else if constexpr (std::is_same<KV, bfloat16>::value) return c.bf16;
    else if constexpr (std::is_same<KV, std::int8_t>::value) return c.i8;
    else return c.f32;
  }
  template <class KV>
  static const std::vector<KV>& cache(const ContextStore& c) {
    return cache<KV>(const_cast<ContextStore&>(c));
  }

  index_t hd() const { return W_ / H_; }

  /// Projects tokens [B, n] at positions len_.. into `dst`, head-major with
  /// row stride `cap` per head (dst rows [w0, w0 + n) of each head).
  template <class KV>
  void project_tokens(const ConstView<std::int32_t, 2>& tokens, ContextStore& kdst, ContextStore& vdst, index_t cap,
                      index_t w0, const Executor& ex) const {
    namespace pd = detail::perceiver_ar;
    constexpr bool kInt8 = std::is_same<KV, std::int8_t>::value;
    const index_t n = tokens.dim(1), p0 = len_, h = H_, d = hd();
    KV* kc = cache<KV>(kdst).data();
    KV* vc = cache<KV>(vdst).data();
    float* ks = kdst.scale.data();
    float* vs = vdst.scale.data();
    pd::input_keys_values(
        *model_, B_ * n, [&](index_t r) { return tokens(r / n, r % n); }, [&](index_t r) { return p0 + r % n; },
        [&](index_t r, const float* k, const float* v) {
          const index_t row = (r / n) * h * cap + w0 + r % n;
          pd::store_heads(k, h, d, kc + row * d, cap * d, kInt8 ? ks + row : nullptr, cap);
          pd::store_heads(v, h, d, vc + row * d, cap * d, kInt8 ? vs + row : nullptr, cap);
        },
        ex);
  }

  /// int8 storage: quantizes the new tokens' keys and values into the staging
  /// stores ([B, H, n, hd] codes, [B, H, n] scales). quantize_rows throws for
  /// a non-finite key or value (only non-finite weights make one), and this
  /// runs before recompute() drops any row, so a throwing append() leaves the
  /// decoder as it was.
  void stage_int8(const ConstView<std::int32_t, 2>& tokens, const Executor& ex) {
    const size_t rows = static_cast<size_t>(B_ * H_ * tokens.dim(1));
    for (ContextStore* st : {&ks_, &vs_}) {
      st->i8.resize(rows * static_cast<size_t>(hd()));
      st->scale.resize(rows);
    }
    project_tokens<std::int8_t>(tokens, ks_, vs_, tokens.dim(1), 0, ex);
  }

  /// Appends tokens [B, n] to the window rows [wlen_, wlen_ + n): projects
  /// them into the cache, or (int8, staged = true) copies the codes and
  /// scales stage_int8 made.
  void add_tokens(const ConstView<std::int32_t, 2>& tokens, const Executor& ex, bool staged = false) {
    namespace pd = detail::perceiver_ar;
    const index_t n = tokens.dim(1), w0 = wlen_, d = hd();
    if (storage_ == Storage::int8) {
      if (!staged) stage_int8(tokens, ex);
      for (index_t bh = 0; bh < B_ * H_; ++bh) {
        const index_t src = bh * n, dst = bh * cap_ + w0;
        std::memcpy(kc_.i8.data() + dst * d, ks_.i8.data() + src * d, static_cast<size_t>(n * d));
        std::memcpy(vc_.i8.data() + dst * d, vs_.i8.data() + src * d, static_cast<size_t>(n * d));
        std::memcpy(kc_.scale.data() + dst, ks_.scale.data() + src, sizeof(float) * static_cast<size_t>(n));
        std::memcpy(vc_.scale.data() + dst, vs_.scale.data() + src, sizeof(float) * static_cast<size_t>(n));
      }
      ks_ = ContextStore{};  // (released: memory_bytes() counts the caches only)
      vs_ = ContextStore{};
    } else {
      pd::with_storage(storage_, [&](auto kv) { project_tokens<decltype(kv)>(tokens, kc_, vc_, cap_, w0, ex); });
    }
    for (index_t b = 0; b < B_; ++b)
      for (index_t j = 0; j < n; ++j) tok_[b * cap_ + w0 + j] = tokens(b, j);
    wlen_ += n;
    len_ += n;
  }

  /// The first `rows` rows of a head-major cache [B, H, cap, hd] as [B, H, rows, hd].
  template <class X>
  ConstView<X, 4> cache_view(const std::vector<X>& c, index_t cap, index_t rows) const {
    return ConstView<X, 4>(c.data(), {B_, H_, rows, hd()}, {H_ * cap * hd(), cap * hd(), hd(), 1});
  }
  /// Calls f(K, V) with the window's keys and values as attention operands of
  /// their storage: views, or QuantizedKV views of the int8 codes and scales
  /// (the engine dequantizes as it reads; no copy).
  template <class F>
  void with_window(F&& f) const {
    namespace pd = detail::perceiver_ar;
    pd::with_storage(storage_, [&](auto kv) {
      using KV = decltype(kv);
      f(pd::context_operand<KV>(cache<KV>(kc_).data(), kc_.scale.data(), B_, H_, wlen_, hd(), cap_),
        pd::context_operand<KV>(cache<KV>(vc_).data(), vc_.scale.data(), B_, H_, wlen_, hd(), cap_));
    });
  }

  /// Stores latent key/value rows (W channels) at cache row `row` of sequence b.
  void store_latent(index_t l, index_t b, index_t row, const float* k, const float* v) {
    const index_t off = (b * H_ * max_lat_ + row) * hd();
    detail::perceiver_ar::scatter_heads(k, H_, hd(), lk_[static_cast<size_t>(l)].data() + off, max_lat_ * hd());
    detail::perceiver_ar::scatter_heads(v, H_, hd(), lv_[static_cast<size_t>(l)].data() + off, max_lat_ * hd());
  }

  /// One new latent at the last position, attending the caches.
  void step(const ConstView<std::int32_t, 2>& tokens, nn::Matrix& logits, const Executor& ex) {
    namespace pd = detail::perceiver_ar;
    const Model& md = *model_;
    const index_t w = W_, nh = H_, pos = len_ + tokens.dim(1) - 1;
    add_tokens(tokens, ex);
    nn::Matrix x(B_, w), z, y, q, k, v, o(B_, w);
    for (index_t b = 0; b < B_; ++b) pd::embed_token(md, tok_[b * cap_ + wlen_ - 1], pos, x.data() + b * w);
    nn::linear(md.query_proj, x, z, ex);
    // Cross-attention: the newest latent sees the whole window (no mask).
    pd::layer_norm(md, md.cross.ln_q, z, y, ex);
    nn::linear(md.cross.attn.q, y, q, ex);
    with_window([&](const auto& K, const auto& V) {
      attention<float>(pd::heads_view<const float>(q.data(), B_, 1, nh, w, w), K, V,
                       pd::heads_view<float>(o.data(), B_, 1, nh, w, w), NoMask{}, NoScore{}, {}, ex);
    });
    pd::residual_and_mlp(md, z, o, md.cross.attn, md.cross.ln_mlp, md.cross.mlp, ex);
    // Latent layers: append this latent's key/value, attend all cached latents.
    for (size_t l = 0; l < md.latent.size(); ++l) {
      const Model::LatentBlock& blk = md.latent[l];
      pd::layer_norm(md, blk.ln_attn, z, y, ex);
      nn::linear(blk.attn.q, y, q, ex);
      nn::linear(blk.attn.k, y, k, ex);
      nn::linear(blk.attn.v, y, v, ex);
      for (index_t b = 0; b < B_; ++b)
        store_latent(static_cast<index_t>(l), b, nlat_, k.data() + b * w, v.data() + b * w);
      attention<float>(pd::heads_view<const float>(q.data(), B_, 1, nh, w, w), cache_view(lk_[l], max_lat_, nlat_ + 1),
                       cache_view(lv_[l], max_lat_, nlat_ + 1), pd::heads_view<float>(o.data(), B_, 1, nh, w, w),
                       NoMask{}, NoScore{}, {}, ex);
      pd::residual_and_mlp(md, z, o, blk.attn, blk.ln_mlp, blk.mlp, ex);
    }
    ++nlat_;
    pd::output_logits(md, z, logits, ex);
  }

  /// The memory is full: keep the last max_append() tokens of the window,
  /// add the new ones, and recompute max_latents / 2 latents uncached.
  void recompute(const ConstView<std::int32_t, 2>& tokens, nn::Matrix& logits, const Executor& ex) {
    namespace pd = detail::perceiver_ar;
    const Model& md = *model_;
    const index_t w = W_, n = tokens.dim(1);
    const index_t keep = std::min(wlen_ + n, max_append());
    const index_t drop = wlen_ + n - keep;  // <= wlen_ because n <= max_append()
    const bool staged = storage_ == Storage::int8;
    if (staged) stage_int8(tokens, ex);  // (may throw: nothing is dropped yet)
    if (drop > 0) {
      const index_t rest = wlen_ - drop, d = hd();
      pd::with_storage(storage_, [&](auto kv) {
        using KV = decltype(kv);
        for (index_t b = 0; b < B_; ++b)
          for (index_t h = 0; h < H_; ++h) {
            KV* kb = cache<KV>(kc_).data() + (b * H_ + h) * cap_ * d;
            KV* vb = cache<KV>(vc_).data() + (b * H_ + h) * cap_ * d;
            std::memmove(kb, kb + drop * d, sizeof(KV) * rest * d);
            std::memmove(vb, vb + drop * d, sizeof(KV) * rest * d);
          }
      });
      if (staged)
        for (index_t bh = 0; bh < B_ * H_; ++bh)
          for (std::vector<float>* sc : {&kc_.scale, &vc_.scale}) {
            float* s = sc->data() + bh * cap_;
            std::memmove(s, s + drop, sizeof(float) * rest);
          }
      for (index_t b = 0; b < B_; ++b)
        std::memmove(tok_.data() + b * cap_, tok_.data() + b * cap_ + drop, sizeof(std::int32_t) * rest);
      wlen_ = rest;
    }
    add_tokens(tokens, ex, staged);
    const index_t M = std::min(max_lat_ / 2, wlen_), start = window_start();
    nn::Matrix x(B_ * M, w), z;
    for (index_t b = 0; b < B_; ++b)
      for (index_t m = 0; m < M; ++m) {
        const index_t j = wlen_ - M + m;
        pd::embed_token(md, tok_[b * cap_ + j], start + j, x.data() + (b * M + m) * w);
      }
    nn::linear(md.query_proj, x, z, ex);
    with_window([&](const auto& K, const auto& V) { pd::cross_block(md, z, B_, M, K, V, {}, ex); });
    pd::latent_stack(md, z, B_, M, {}, ex, [&](index_t l, const nn::Matrix& k, const nn::Matrix& v) {
      for (index_t b = 0; b < B_; ++b)
        for (index_t m = 0; m < M; ++m) store_latent(l, b, m, k.data() + (b * M + m) * w, v.data() + (b * M + m) * w);
    });
    nlat_ = M;
    ++recomputes_;
    nn::Matrix last(B_, w);
    for (index_t b = 0; b < B_; ++b) last.row(b) = z.row(b * M + M - 1);
    pd::output_logits(md, last, logits, ex);
  }

  const Model* model_;
  index_t B_, cap_, max_lat_;
  Storage storage_;
  index_t W_ = 0, H_ = 1, L_ = 0;               // the model's width, heads and layers when the decoder was made
  ContextStore kc_, vc_;                        // [B, H, cap, W/H] window keys / values (head-major)
  ContextStore ks_, vs_;                        // int8: the new tokens' codes and scales before they are appended
  std::vector<std::int32_t> tok_;               // [B, cap] window tokens
  std::vector<std::vector<float>> lk_, lv_;     // per layer [B, H, max_lat, W/H]
  index_t len_ = 0, wlen_ = 0, nlat_ = 0, recomputes_ = 0;
};

}  // namespace models
EFFATTN_NAMESPACE_END
