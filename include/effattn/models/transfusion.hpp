// SPDX-License-Identifier: MIT
// effattn::models: a small demonstration Transfusion transformer (random
// weights) over mixed text / image-patch sequences, and cached denoising of
// one image. Built on the Transfusion method (transfusion/layout.hpp,
// block_causal.hpp), effattn::nn layers and the tiled engine.
//
//   TransfusionConfig           sizes
//   TinyTransfusion             weights, random(), embed(), forward(), predict_noise()
//   TransfusionDenoisingCache   the prefix's keys and values computed once per image
//
// The model is deliberately plain (pre-LayerNorm blocks, GELU MLP, rotary
// positions, block-causal self-attention on the tiled engine); it exists to
// run Transfusion's inference loop end to end and to show where the time
// goes, not to reproduce the paper's 7B model:
//
//   embed:   text rows are given embeddings; BOI / EOI are two learnt vectors;
//            a patch is patch_in(tokens) + time_in(sinusoid(t_image))
//   block:   x += proj(attn(LN1 x)),  x += mlp(LN2 x)   (attn: RoPE on q, k)
//   head:    eps_hat = patch_out(LNf x) on the image's rows
//
// Every dense layer runs through nn::linear with the caller's Executor, so
// results are bit-identical for any thread count.
//
// Cached denoising. While image k is denoised, only its patches change. Every
// token before it (through its BOI) attends only to tokens before it, so the
// keys and values of that prefix are the same at every step:
// TransfusionDenoisingCache computes them once, and each step recomputes only
// the image's M rows (all layers), whose queries see the cached prefix plus
// the image itself. Tokens after the image cannot influence it (they are not
// in its key range), so they are skipped. Per step this costs O(M) rows of
// dense layers and O(M (P + M)) attention pairs instead of O(N) and O(N^2 / 2).
#pragma once

#include <cmath>
#include <random>
#include <vector>

#include "../attention/engine.hpp"
#include "../nn/layers.hpp"
#include "../transfusion/block_causal.hpp"
#include "../transfusion/layout.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace models {

/// Sizes of the small Transfusion transformer.
struct TransfusionConfig {
  index_t dim = 64;          ///< model width (even)
  index_t heads = 4;         ///< attention heads; dim / heads must be even (RoPE)
  index_t layers = 2;        ///< transformer blocks
  index_t mlp_hidden = 256;  ///< MLP hidden width
  index_t patch_dim = 32;    ///< values per patch token, p*p*C
  double rope_base = 10000;  ///< rotary base
  float ln_eps = 1e-5f;      ///< LayerNorm epsilon
  index_t head_dim() const { return dim / heads; }
};

/// The small Transfusion-style transformer (batch 1, float). The members are
/// public (a checkpoint maps onto them); every entry point checks that they
/// have the shapes the config implies.
struct TinyTransfusion {
  /// One pre-LayerNorm transformer block.
  struct Block {
    nn::Vector ln1_w, ln1_b, ln2_w, ln2_b;
    nn::Linear qkv;   ///< dim -> 3 dim: columns [0,dim) q, [dim,2dim) k, [2dim,3dim) v; head h = h*hd..
    nn::Linear proj;  ///< dim -> dim
    nn::Mlp mlp;
  };

  TransfusionConfig cfg;
  nn::Linear patch_in;   ///< patch_dim -> dim
  nn::Linear time_in;    ///< dim (sinusoidal features of t) -> dim
  nn::Vector boi, eoi;   ///< marker embeddings [dim]
  std::vector<Block> blocks;
  nn::Vector lnf_w, lnf_b;
  nn::Linear patch_out;  ///< dim -> patch_dim

  /// The most parameters random() creates (2^31): this is a demonstration
  /// model, and a larger count is a corrupt size, rejected before allocating.
  static constexpr index_t max_parameters = index_t(1) << 31;

  /// Random weights (deterministic for a seed). Throws parameter_error for
  /// sizes < 1, an odd dim, heads not dividing dim, an odd head_dim or more
  /// than max_parameters weights; shape_error when the count overflows.
  static TinyTransfusion random(const TransfusionConfig& c, unsigned seed);

  /// Number of parameters of a model with these sizes (shape_error on overflow).
  static index_t parameter_count(const TransfusionConfig& c, const char* op = "models::TinyTransfusion") {
    using ::effattn::detail::checked_add;
    using ::effattn::detail::checked_product;
    const index_t d = c.dim;
    const char* w = "parameter count";
    index_t layer = checked_product(op, w, index_t(4), d);                                      // two LayerNorms
    layer = checked_add(layer, checked_product(op, w, index_t(3), d, checked_add(d, index_t(1), op, w)), op, w);  // qkv
    layer = checked_add(layer, checked_product(op, w, d, checked_add(d, index_t(1), op, w)), op, w);  // proj
    layer = checked_add(layer, checked_product(op, w, c.mlp_hidden, checked_add(d, index_t(1), op, w)), op, w);  // fc1
    layer = checked_add(layer, checked_product(op, w, d, checked_add(c.mlp_hidden, index_t(1), op, w)), op, w);  // fc2
    index_t n = checked_product(op, w, c.layers, layer);
    n = checked_add(n, checked_product(op, w, d, checked_add(c.patch_dim, index_t(1), op, w)), op, w);  // patch_in
    n = checked_add(n, checked_product(op, w, d, checked_add(d, index_t(1), op, w)), op, w);            // time_in
    n = checked_add(n, checked_product(op, w, index_t(4), d), op, w);                                    // boi, eoi, lnf
    n = checked_add(n, checked_product(op, w, c.patch_dim, checked_add(d, index_t(1), op, w)), op, w);  // patch_out
    return n;
  }

  /// Embeds a whole sequence into x [N, dim]. `text` [num_text, dim] gives the
  /// text rows in sequence order; `patches` [num_patches, patch_dim] the patch
  /// tokens of all images stacked in sequence order; `timesteps` one per image.
  /// Everything is checked (the executor first) before x is written.
  void embed(const transfusion::Layout& layout, const nn::Matrix& text, const nn::Matrix& patches,
             const std::vector<index_t>& timesteps, nn::Matrix& x, const Executor& ex = {}) const;

  /// Full forward of an embedded sequence x [N, dim] with block-causal
  /// attention (in place: x becomes the final hidden states, before LNf).
  void forward(const transfusion::Layout& layout, nn::Matrix& x, const Executor& ex = {}) const;

  /// Uncached epsilon prediction for image k: the whole embedded sequence x
  /// [N, dim] (from embed()) goes through the model, and the head reads the
  /// image's rows. eps [M_k, patch_dim].
  void predict_noise(const transfusion::Layout& layout, const nn::Matrix& x, index_t k, nn::Matrix& eps,
                     const Executor& ex = {}) const;
};

namespace detail {
/// The model's private steps. Their callers (the public entry points) check
/// every input first; run_rows checks its arguments again (cheap).
namespace transfusion {

using Model = TinyTransfusion;

/// Key/value storage, [layers][H, capacity, hd] contiguous: one entry per
/// layer (a cache), or a single one that every layer reuses in turn (the
/// uncached forward).
struct KVStore {
  index_t layers = 0, heads = 0, capacity = 0, head_dim = 0;
  std::vector<std::vector<float>> k, v;
  KVStore() = default;
  KVStore(index_t L, index_t H, index_t cap, index_t hd) : layers(L), heads(H), capacity(cap), head_dim(hd) {
    k.assign(static_cast<size_t>(L), std::vector<float>(static_cast<size_t>(H * cap * hd)));
    v.assign(static_cast<size_t>(L), std::vector<float>(static_cast<size_t>(H * cap * hd)));
  }
  /// [1, H, rows, hd] view of layer l's first `rows` keys (or values).
  ConstView<float, 4> keys(index_t l, index_t rows) const { return sub(k[static_cast<size_t>(l)].data(), rows); }
  ConstView<float, 4> values(index_t l, index_t rows) const { return sub(v[static_cast<size_t>(l)].data(), rows); }

 private:
  ConstView<float, 4> sub(const float* p, index_t rows) const {
    return ConstView<float, 4>(p, {1, heads, rows, head_dim}, {heads * capacity * head_dim, capacity * head_dim, head_dim, 1});
  }
};

inline void check_config(const TransfusionConfig& c, const char* op) {
  effattn::detail::require(c.dim >= 2 && c.dim % 2 == 0, op, "dim", "must be even and >= 2, got ", c.dim);
  effattn::detail::require(c.heads >= 1 && c.dim % c.heads == 0, op, "heads", "must divide dim=", c.dim, ", got ",
                           c.heads);
  effattn::detail::require(c.head_dim() % 2 == 0, op, "dim/heads",
                           "(head_dim) must be even for rotary positions, got ", c.head_dim());
  effattn::detail::require(c.layers >= 1, op, "layers", "must be >= 1, got ", c.layers);
  effattn::detail::require(c.mlp_hidden >= 1, op, "mlp_hidden", "must be >= 1, got ", c.mlp_hidden);
  effattn::detail::require(c.patch_dim >= 1, op, "patch_dim", "must be >= 1, got ", c.patch_dim);
  effattn::detail::require(std::isfinite(c.rope_base) && c.rope_base > 1, op, "rope_base", "must be > 1, got ",
                           c.rope_base);
  effattn::detail::require(std::isfinite(c.ln_eps) && c.ln_eps > 0, op, "ln_eps", "must be finite and > 0, got ",
                           c.ln_eps);
  const index_t n = Model::parameter_count(c, op);
  effattn::detail::require(n <= Model::max_parameters, op, "config", "has ", n,
                           " parameters, more than max_parameters=", Model::max_parameters);
}

/// Checks the config and that every weight has the shape it implies (the
/// members are public, so a model may have been edited): parameter_error /
/// shape_error naming `op`. O(layers); every entry point calls it first.
inline void check_model(const Model& m, const char* op) {
  const TransfusionConfig& cfg = m.cfg;
  check_config(cfg, op);
  const index_t d = cfg.dim;
  auto linear = [&](const nn::Linear& l, index_t in, index_t out, const char* name) {
    if (l.weight.rows() != out || l.weight.cols() != in || (l.bias.size() != 0 && l.bias.size() != out))
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": model weight ", name, " must be [out,in]=[", out, ",",
                                                        in, "] with bias [out] or none, got [", l.weight.rows(), ",",
                                                        l.weight.cols(), "] and bias [", l.bias.size(), "]")));
  };
  auto vector = [&](const nn::Vector& v, const char* name) {
    if (v.size() != d)
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": model vector ", name, " must be [dim]=[", d, "], got [",
                                                        v.size(), "]")));
  };
  linear(m.patch_in, cfg.patch_dim, d, "patch_in");
  linear(m.time_in, d, d, "time_in");
  linear(m.patch_out, d, cfg.patch_dim, "patch_out");
  vector(m.boi, "boi");
  vector(m.eoi, "eoi");
  vector(m.lnf_w, "lnf_w");
  vector(m.lnf_b, "lnf_b");
  effattn::detail::require(static_cast<index_t>(m.blocks.size()) == cfg.layers, op, "blocks",
                           "must hold cfg.layers=", cfg.layers, " blocks, got ", m.blocks.size());
  for (const Model::Block& b : m.blocks) {
    vector(b.ln1_w, "ln1_w");
    vector(b.ln1_b, "ln1_b");
    vector(b.ln2_w, "ln2_w");
    vector(b.ln2_b, "ln2_b");
    linear(b.qkv, d, 3 * d, "qkv");
    linear(b.proj, d, d, "proj");
    linear(b.mlp.fc1, d, cfg.mlp_hidden, "mlp.fc1");
    linear(b.mlp.fc2, cfg.mlp_hidden, d, "mlp.fc2");
  }
}

/// time_in(sinusoid(t)): [dim] (features cos(t f_i), sin(t f_i), f_i = 10000^(-i/(dim/2))).
/// For a checked model.
inline nn::Vector time_embedding(const Model& m, index_t t, const Executor& ex) {
  const index_t half = m.cfg.dim / 2;
  nn::Matrix f(1, m.cfg.dim), y;
  for (index_t i = 0; i < half; ++i) {
    const double w = std::pow(10000.0, -static_cast<double>(i) / static_cast<double>(half));
    f(0, i) = static_cast<float>(std::cos(static_cast<double>(t) * w));
    f(0, half + i) = static_cast<float>(std::sin(static_cast<double>(t) * w));
  }
  nn::linear(m.time_in, f, y, ex);
  return y.row(0).transpose();
}

/// Patch rows: patch_in(tokens) + time_embedding(t). tokens [M, patch_dim] ->
/// x [M, dim]. For a checked model; checks tokens and x.
inline void embed_patches(const Model& m, const nn::Matrix& tokens, index_t t, nn::Matrix& x, const Executor& ex) {
  const char* op = "models::TinyTransfusion::embed_patches";
  if (&tokens == &x) EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": x must not be tokens")));
  if (tokens.cols() != m.cfg.patch_dim)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": tokens must be [M,patch_dim]=[", tokens.rows(), ",",
                                                      m.cfg.patch_dim, "], got [", tokens.rows(), ",", tokens.cols(),
                                                      "]")));
  nn::linear(m.patch_in, tokens, x, ex);
  x.rowwise() += time_embedding(m, t, ex).transpose();
}

/// Runs every block on rows [r0, r0 + n) of a sequence (x [n, dim], updated
/// in place). Their keys and values go to rows [r0, r0 + n) of `kv`; the
/// queries attend keys [0, r0 + n) of `kv` (rows [0, r0) must already hold
/// the prefix) under the key limits `limit` [n] (absolute, non-decreasing,
/// <= r0 + n). `pos` [n] are the rotary positions. `kv` holds every layer,
/// or (only with r0 = 0) one layer that each layer overwrites in turn.
/// Every size, the limits and the executor (first) are checked before x or
/// kv is written: parameter_error / shape_error.
inline void run_rows(const Model& m, nn::Matrix& x, index_t r0, const std::vector<index_t>& pos,
                     const std::vector<index_t>& limit, KVStore& kv, const Executor& ex) {
  const char* op = "models::TinyTransfusion::run_rows";
  effattn::detail::check_executor(ex, op);
  check_model(m, op);
  const TransfusionConfig& cfg = m.cfg;
  const index_t n = x.rows(), H = cfg.heads, hd = cfg.head_dim(), C = cfg.dim;
  if (x.cols() != C)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": x must be [n,dim]=[", n, ",", C, "], got [", n, ",",
                                                      x.cols(), "]")));
  effattn::detail::require(r0 >= 0, op, "r0", "must be >= 0, got ", r0);
  const index_t nk = effattn::detail::checked_add(r0, n, op, "r0 + n");
  effattn::detail::require(static_cast<index_t>(pos.size()) == n, op, "pos", "must have n=", n, " entries, got ",
                           pos.size());
  effattn::detail::require(static_cast<index_t>(limit.size()) == n, op, "limit", "must have n=", n, " entries, got ",
                           limit.size());
  for (size_t r = 0; r < limit.size(); ++r)
    effattn::detail::require(limit[r] >= 0 && limit[r] <= nk && (r == 0 || limit[r] >= limit[r - 1]), op, "limit",
                             "[", r, "]=", limit[r], " must be in [0, r0 + n=", nk, "] and non-decreasing");
  effattn::detail::require(kv.heads == H && kv.head_dim == hd && kv.capacity >= 0, op, "kv", "must have heads=", H,
                           " head_dim=", hd, ", got heads=", kv.heads, " head_dim=", kv.head_dim,
                           " capacity=", kv.capacity);
  effattn::detail::require(kv.layers == cfg.layers || (kv.layers == 1 && r0 == 0), op, "kv",
                           "must hold every layer (", cfg.layers, "), or one reused layer with r0 = 0; got ",
                           kv.layers, " layers with r0=", r0);
  effattn::detail::require(nk <= kv.capacity, op, "kv", "capacity ", kv.capacity, " is less than r0 + n=", nk);
  const index_t per_layer = effattn::detail::checked_product(op, "kv size", H, kv.capacity, hd);
  effattn::detail::require(static_cast<index_t>(kv.k.size()) == kv.layers &&
                               static_cast<index_t>(kv.v.size()) == kv.layers,
                           op, "kv", "must hold ", kv.layers, " key and value buffers, got ", kv.k.size(), " and ",
                           kv.v.size());
  for (index_t l = 0; l < kv.layers; ++l)
    effattn::detail::require(static_cast<index_t>(kv.k[static_cast<size_t>(l)].size()) == per_layer &&
                                 static_cast<index_t>(kv.v[static_cast<size_t>(l)].size()) == per_layer,
                             op, "kv", "layer ", l, " buffers must hold heads * capacity * head_dim = ", per_layer,
                             " floats");
  if (n == 0) return;
  std::vector<float> q(static_cast<size_t>(H * n * hd)), o(static_cast<size_t>(H * n * hd));
  // Rotary tables for these rows.
  const index_t half = hd / 2;
  std::vector<float> cs(static_cast<size_t>(n * half)), sn(static_cast<size_t>(n * half));
  for (index_t r = 0; r < n; ++r)
    for (index_t e = 0; e < half; ++e) {
      const double a = static_cast<double>(pos[static_cast<size_t>(r)]) *
                       std::pow(cfg.rope_base, -2.0 * static_cast<double>(e) / static_cast<double>(hd));
      cs[static_cast<size_t>(r * half + e)] = static_cast<float>(std::cos(a));
      sn[static_cast<size_t>(r * half + e)] = static_cast<float>(std::sin(a));
    }
  auto rotate = [&](const float* src, float* dst, index_t r) {
    const float* c = cs.data() + r * half;
    const float* s = sn.data() + r * half;
    for (index_t e = 0; e < half; ++e) {
      const float a = src[e], b = src[e + half];
      dst[e] = a * c[e] - b * s[e];
      dst[e + half] = a * s[e] + b * c[e];
    }
  };
  const ConstView<index_t, 2> limv = make_view(limit.data(), 1, n);
  nn::Matrix h, qkv, att, y;
  for (index_t l = 0; l < cfg.layers; ++l) {
    const Model::Block& B = m.blocks[static_cast<size_t>(l)];
    nn::layer_norm(x, B.ln1_w, B.ln1_b, cfg.ln_eps, h, ex);
    nn::linear(B.qkv, h, qkv, ex);
    const index_t kl = kv.layers == 1 ? 0 : l;  // a one-layer store is reused
    float* K = kv.k[static_cast<size_t>(kl)].data();
    float* V = kv.v[static_cast<size_t>(kl)].data();
    for (index_t hh = 0; hh < H; ++hh)
      for (index_t r = 0; r < n; ++r) {
        const float* row = qkv.data() + r * 3 * C + hh * hd;
        rotate(row, q.data() + (hh * n + r) * hd, r);
        rotate(row + C, K + (hh * kv.capacity + r0 + r) * hd, r);
        float* vd = V + (hh * kv.capacity + r0 + r) * hd;
        for (index_t e = 0; e < hd; ++e) vd[e] = row[2 * C + e];
      }
    attention<float>(make_view(static_cast<const float*>(q.data()), 1, H, n, hd), kv.keys(kl, nk), kv.values(kl, nk),
                     make_view(o.data(), 1, H, n, hd), KeyLimitMask{limv}, NoScore{}, AttentionOptions{}, ex);
    nn::merge_heads(o.data(), H, n, hd, att);
    nn::linear(B.proj, att, y, ex);
    x += y;
    nn::layer_norm(x, B.ln2_w, B.ln2_b, cfg.ln_eps, h, ex);
    B.mlp.forward(h, y, ex);
    x += y;
  }
}

/// eps_hat = patch_out(LNf(rows)) for final hidden rows [M, dim] -> [M,
/// patch_dim]. For a checked model; checks rows.
inline void head(const Model& m, const nn::Matrix& rows, nn::Matrix& eps, const Executor& ex) {
  const char* op = "models::TinyTransfusion::head";
  if (rows.cols() != m.cfg.dim)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": rows must be [M,dim]=[", rows.rows(), ",", m.cfg.dim,
                                                      "], got [", rows.rows(), ",", rows.cols(), "]")));
  nn::Matrix h;
  nn::layer_norm(rows, m.lnf_w, m.lnf_b, m.cfg.ln_eps, h, ex);
  nn::linear(m.patch_out, h, eps, ex);
}

}  // namespace transfusion
}  // namespace detail

inline TinyTransfusion TinyTransfusion::random(const TransfusionConfig& c, unsigned seed) {
  detail::transfusion::check_config(c, "models::TinyTransfusion::random");
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto vec = [&](float mean, float sd) {
    nn::Vector x(c.dim);
    for (index_t i = 0; i < c.dim; ++i) x[i] = mean + sd * nd(rng);
    return x;
  };
  TinyTransfusion m;
  m.cfg = c;
  m.patch_in = nn::Linear::random(c.patch_dim, c.dim, rng);
  m.time_in = nn::Linear::random(c.dim, c.dim, rng);
  m.boi = vec(0.0f, 1.0f);
  m.eoi = vec(0.0f, 1.0f);
  for (index_t l = 0; l < c.layers; ++l) {
    Block b;
    b.ln1_w = vec(1.0f, 0.1f);
    b.ln1_b = vec(0.0f, 0.1f);
    b.ln2_w = vec(1.0f, 0.1f);
    b.ln2_b = vec(0.0f, 0.1f);
    b.qkv = nn::Linear::random(c.dim, 3 * c.dim, rng);
    b.proj = nn::Linear::random(c.dim, c.dim, rng);
    b.mlp = nn::Mlp::random(c.dim, c.mlp_hidden, rng);
    m.blocks.push_back(std::move(b));
  }
  m.lnf_w = vec(1.0f, 0.1f);
  m.lnf_b = vec(0.0f, 0.1f);
  m.patch_out = nn::Linear::random(c.dim, c.patch_dim, rng);
  return m;
}

inline void TinyTransfusion::embed(const transfusion::Layout& layout, const nn::Matrix& text,
                                   const nn::Matrix& patches, const std::vector<index_t>& timesteps, nn::Matrix& x,
                                   const Executor& ex) const {
  const char* op = "models::TinyTransfusion::embed";
  effattn::detail::check_executor(ex, op);
  detail::transfusion::check_model(*this, op);
  effattn::transfusion::detail::check_layout(layout, op);
  if (&x == &text || &x == &patches)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": x must be neither text nor patches")));
  if (text.rows() != layout.num_text() || (text.rows() > 0 && text.cols() != cfg.dim))
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": text must be [num_text,dim]=[", layout.num_text(), ",",
                                                      cfg.dim, "], got [", text.rows(), ",", text.cols(), "]")));
  if (patches.rows() != layout.num_patches() || (patches.rows() > 0 && patches.cols() != cfg.patch_dim))
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": patches must be [num_patches,patch_dim]=[",
                                                      layout.num_patches(), ",", cfg.patch_dim, "], got [",
                                                      patches.rows(), ",", patches.cols(), "]")));
  effattn::detail::require(static_cast<index_t>(timesteps.size()) == layout.num_images(), op, "timesteps",
                           "must have one entry per image (", layout.num_images(), "), got ", timesteps.size());
  x.resize(layout.length(), cfg.dim);
  index_t ti = 0, pi = 0;
  nn::Matrix tok, emb;
  for (index_t i = 0; i < layout.length(); ++i) {
    switch (layout.type[static_cast<size_t>(i)]) {
      case transfusion::TokenType::text: x.row(i) = text.row(ti++); break;
      case transfusion::TokenType::boi: x.row(i) = boi.transpose(); break;
      case transfusion::TokenType::eoi: x.row(i) = eoi.transpose(); break;
      default: break;
    }
  }
  for (index_t k = 0; k < layout.num_images(); ++k) {
    const transfusion::ImageSpan& im = layout.images[static_cast<size_t>(k)];
    tok = patches.middleRows(pi, im.length);
    detail::transfusion::embed_patches(*this, tok, timesteps[static_cast<size_t>(k)], emb, ex);
    x.middleRows(im.start, im.length) = emb;
    pi += im.length;
  }
}

inline void TinyTransfusion::forward(const transfusion::Layout& layout, nn::Matrix& x, const Executor& ex) const {
  const char* op = "models::TinyTransfusion::forward";
  effattn::detail::check_executor(ex, op);
  detail::transfusion::check_model(*this, op);
  effattn::transfusion::detail::check_layout(layout, op);
  if (x.rows() != layout.length() || x.cols() != cfg.dim)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": x must be [N,dim]=[", layout.length(), ",", cfg.dim,
                                                      "], got [", x.rows(), ",", x.cols(), "]")));
  const index_t N = layout.length();
  if (N == 0) return;
  std::vector<index_t> lim(static_cast<size_t>(N));
  for (index_t i = 0; i < N; ++i) lim[static_cast<size_t>(i)] = layout.key_limit(i);
  // One layer's keys and values are live at a time: one store for all layers.
  detail::transfusion::KVStore kv(1, cfg.heads, N, cfg.head_dim());
  detail::transfusion::run_rows(*this, x, 0, layout.position, lim, kv, ex);
}

inline void TinyTransfusion::predict_noise(const transfusion::Layout& layout, const nn::Matrix& x, index_t k,
                                           nn::Matrix& eps, const Executor& ex) const {
  const char* op = "models::TinyTransfusion::predict_noise";
  effattn::detail::check_executor(ex, op);
  detail::transfusion::check_model(*this, op);
  effattn::transfusion::detail::check_layout(layout, op);
  effattn::detail::require(k >= 0 && k < layout.num_images(), op, "k", "must be in [0, ", layout.num_images(),
                           "), got ", k);
  if (x.rows() != layout.length() || x.cols() != cfg.dim)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": x must be [N,dim]=[", layout.length(), ",", cfg.dim,
                                                      "], got [", x.rows(), ",", x.cols(), "]")));
  nn::Matrix hx = x;
  forward(layout, hx, ex);
  const transfusion::ImageSpan& im = layout.images[static_cast<size_t>(k)];
  detail::transfusion::head(*this, hx.middleRows(im.start, im.length), eps, ex);
}

/// Cached denoising of image k of a layout (see the top of this file).
///
///   TransfusionDenoisingCache cache(model, layout, k, x);   // x: embedded sequence [>= start_k rows, dim]
///   for each step: cache.predict_noise(tokens_t /*[M, patch_dim]*/, t, eps);  ddpm_step(...)
///
/// The constructor runs the prefix [0, start_k) (everything up to and
/// including image k's BOI) once and keeps every layer's keys and values. Each
/// predict_noise recomputes only the M image rows; its result equals
/// TinyTransfusion::predict_noise on the full sequence with the same image
/// tokens and timestep (to float rounding). The model must outlive the cache.
class TransfusionDenoisingCache {
 public:
  TransfusionDenoisingCache(const TinyTransfusion& model, const transfusion::Layout& layout, index_t k,
                            const nn::Matrix& x, const Executor& ex = {})
      : model_(&model) {
    const char* op = "models::TransfusionDenoisingCache";
    effattn::detail::check_executor(ex, op);
    detail::transfusion::check_model(model, op);
    effattn::transfusion::detail::check_layout(layout, op);
    effattn::detail::require(k >= 0 && k < layout.num_images(), op, "k", "must be in [0, ", layout.num_images(),
                             "), got ", k);
    const transfusion::ImageSpan& im = layout.images[static_cast<size_t>(k)];
    prefix_ = im.start;
    M_ = im.length;
    if (x.rows() < prefix_ || x.cols() != model.cfg.dim)
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": x must be [N,dim] with N >= ", prefix_, " and dim=",
                                                        model.cfg.dim, ", got [", x.rows(), ",", x.cols(), "]")));
    kv_ = detail::transfusion::KVStore(model.cfg.layers, model.cfg.heads, prefix_ + M_, model.cfg.head_dim());
    nn::Matrix px = x.topRows(prefix_);
    std::vector<index_t> pos(layout.position.begin(), layout.position.begin() + prefix_);
    std::vector<index_t> lim(static_cast<size_t>(prefix_));
    for (index_t i = 0; i < prefix_; ++i) lim[static_cast<size_t>(i)] = layout.key_limit(i);
    detail::transfusion::run_rows(model, px, 0, pos, lim, kv_, ex);
    img_pos_.assign(layout.position.begin() + im.start, layout.position.begin() + im.end());
    img_lim_.assign(static_cast<size_t>(M_), im.end());
  }

  index_t prefix_length() const { return prefix_; }
  index_t image_length() const { return M_; }

  /// eps_hat [M, patch_dim] for the image's current tokens [M, patch_dim] at
  /// timestep t. Everything (the executor first, then the model, which may
  /// have been edited, and the tokens) is checked before eps or the cache
  /// changes.
  void predict_noise(const nn::Matrix& tokens, index_t t, nn::Matrix& eps, const Executor& ex = {}) {
    const char* op = "models::TransfusionDenoisingCache::predict_noise";
    effattn::detail::check_executor(ex, op);
    detail::transfusion::check_model(*model_, op);
    if (tokens.rows() != M_ || tokens.cols() != model_->cfg.patch_dim)
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": tokens must be [M,patch_dim]=[", M_, ",",
                                                        model_->cfg.patch_dim, "], got [", tokens.rows(), ",",
                                                        tokens.cols(), "]")));
    nn::Matrix x;
    detail::transfusion::embed_patches(*model_, tokens, t, x, ex);
    detail::transfusion::run_rows(*model_, x, prefix_, img_pos_, img_lim_, kv_, ex);
    detail::transfusion::head(*model_, x, eps, ex);
  }

 private:
  const TinyTransfusion* model_;
  index_t prefix_ = 0, M_ = 0;
  detail::transfusion::KVStore kv_;
  std::vector<index_t> img_pos_, img_lim_;
};

}  // namespace models
EFFATTN_NAMESPACE_END
