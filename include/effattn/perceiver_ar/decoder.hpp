// SPDX-License-Identifier: MIT
// effattn::perceiver_ar: cached autoregressive decoding with fixed-size memory.
//
// A Decoder keeps, per batch element,
//   - the cross-attention keys and values of the context window
//     ([max_context, W] each: the official `max_context_length_memory`), in
//     the model's config.context_kv storage (float32, or float16 / bfloat16
//     for half the memory and faster steps), and
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
// uncached Model::forward over tokens [s, now) at positions s.. with M = c
// latents, to float rounding.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "model.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace perceiver_ar {

/// Cached decoder over a Model (which must outlive it). All batch elements
/// advance together (same number of tokens per call).
class Decoder {
 public:
  /// batch >= 1; max_latents >= 2 and even (the official assertion);
  /// max_context > max_latents / 2 (each call may add at most
  /// max_context - max_latents / 2 tokens).
  /// Memory (memory_bytes()): 2 * batch * max_context * W context elements
  /// (4 or 2 bytes, per config.context_kv), 2 * batch * layers * max_latents
  /// * W floats and batch * max_context token ids.
  Decoder(const Model& model, index_t batch, index_t max_context, index_t max_latents)
      : model_(&model), B_(batch), cap_(max_context), max_lat_(max_latents), storage_(model.config.context_kv) {
    const char* op = "perceiver_ar::Decoder";
    effattn::detail::require(batch >= 1, op, "batch", "must be >= 1, got ", batch);
    effattn::detail::require(max_latents >= 2 && max_latents % 2 == 0, op, "max_latents", "must be even and >= 2, got ", max_latents);
    effattn::detail::require(max_context > max_latents / 2, op, "max_context", "must be > max_latents / 2 = ", max_latents / 2,
            ", got ", max_context);
    Model::check_storage(storage_, op);
    const index_t W = model.width();
    // Every buffer's size in bytes fits the index type (else shape_error, never a wrapped size).
    const index_t L = static_cast<index_t>(model.latent.size());
    const size_t n = static_cast<size_t>(
        effattn::detail::checked_product(op, "context cache bytes batch * max_context * width * 4", B_, cap_, W,
                                         index_t(sizeof(float))) /
        index_t(sizeof(float)));
    effattn::detail::checked_product(op, "latent cache bytes batch * layers * max_latents * width * 4", B_,
                                     L > 0 ? L : index_t(1), max_lat_, W, index_t(sizeof(float)));
    detail::with_storage(storage_, [&](auto kv) {
      using KV = decltype(kv);
      cache<KV>(kc_).assign(n, KV(0.0f));
      cache<KV>(vc_).assign(n, KV(0.0f));
    });
    tok_.assign(static_cast<size_t>(B_ * cap_), 0);
    lk_.assign(model.latent.size(), std::vector<float>(static_cast<size_t>(B_ * max_lat_ * W), 0.0f));
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
      bytes += c->f32.size() * sizeof(float) + c->f16.size() * sizeof(float16) + c->bf16.size() * sizeof(bfloat16);
    for (const auto* layers : {&lk_, &lv_})
      for (const auto& l : *layers) bytes += l.size() * sizeof(float);
    return bytes;
  }

  /// Appends tokens [batch, n] (1 <= n <= max_append(), ids in [0, vocab))
  /// at positions length().. and writes logits [batch, vocab]: the prediction
  /// of the token after the last one appended. Throws shape_error /
  /// parameter_error before changing any state.
  void append(ConstView<std::int32_t, 2> tokens, nn::Matrix& logits, const Executor& ex = {}) {
    const char* op = "perceiver_ar::Decoder::append";
    effattn::detail::check_executor(ex, op);
    effattn::detail::check_view(tokens, op, "tokens", false);
    const index_t n = tokens.dim(1);
    if (tokens.dim(0) != B_)
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": tokens must be [batch,n] with batch=", B_, ", got ",
                                                        effattn::detail::shape_str(tokens.shape()))));
    effattn::detail::require(n >= 1 && n <= max_append(), op, "n", "(tokens.dim(1)) must be in [1, max_context - max_latents/2 = ",
            max_append(), "], got ", n);
    model_->check_tokens(tokens, op);
    if (nlat_ == max_lat_ || wlen_ + n > cap_)
      recompute(tokens, logits, ex);
    else
      step(tokens, logits, ex);
  }

 private:
  index_t W() const { return model_->width(); }

  /// Context keys or values in each storage; only the decoder's is non-empty.
  struct ContextStore {
    std::vector<float> f32;
    std::vector<float16> f16;
    std::vector<bfloat16> bf16;
  };
  template <class KV>
  static std::vector<KV>& cache(ContextStore& c) {
    if constexpr (std::is_same<KV, float16>::value) return c.f16;
    else if constexpr (std::is_same<KV, bfloat16>::value) return c.bf16;
    else return c.f32;
  }
  template <class KV>
  static const std::vector<KV>& cache(const ContextStore& c) {
    return cache<KV>(const_cast<ContextStore&>(c));
  }

  index_t H() const { return model_->heads(); }
  index_t hd() const { return W() / H(); }

  /// Projects the new tokens into the window rows [wlen_, wlen_ + n).
  void add_tokens(const ConstView<std::int32_t, 2>& tokens, const Executor& ex) {
    const index_t n = tokens.dim(1), w0 = wlen_, p0 = len_, h = H(), d = hd();
    for (index_t b = 0; b < B_; ++b)
      for (index_t j = 0; j < n; ++j) tok_[b * cap_ + w0 + j] = tokens(b, j);
    detail::with_storage(storage_, [&](auto kv) {
      using KV = decltype(kv);
      KV* kc = cache<KV>(kc_).data();
      KV* vc = cache<KV>(vc_).data();
      model_->input_keys_values(
          B_ * n, [&](index_t r) { return tokens(r / n, r % n); }, [&](index_t r) { return p0 + r % n; },
          [&](index_t r, const float* k, const float* v) {
            const index_t off = ((r / n) * h * cap_ + w0 + r % n) * d;
            detail::scatter_heads(k, h, d, kc + off, cap_ * d);
            detail::scatter_heads(v, h, d, vc + off, cap_ * d);
          },
          ex);
    });
    wlen_ += n;
    len_ += n;
  }

  /// The first `rows` rows of a head-major cache [B, H, cap, hd] as [B, H, rows, hd].
  template <class X>
  ConstView<X, 4> cache_view(const std::vector<X>& c, index_t cap, index_t rows) const {
    return ConstView<X, 4>(c.data(), {B_, H(), rows, hd()}, {H() * cap * hd(), cap * hd(), hd(), 1});
  }
  /// Calls f(K, V) with views of the window's keys and values in their storage.
  template <class F>
  void with_window(F&& f) const {
    detail::with_storage(storage_, [&](auto kv) {
      using KV = decltype(kv);
      f(cache_view(cache<KV>(kc_), cap_, wlen_), cache_view(cache<KV>(vc_), cap_, wlen_));
    });
  }

  /// Stores latent key/value rows (W channels) at cache row `row` of sequence b.
  void store_latent(index_t l, index_t b, index_t row, const float* k, const float* v) {
    const index_t off = (b * H() * max_lat_ + row) * hd();
    detail::scatter_heads(k, H(), hd(), lk_[l].data() + off, max_lat_ * hd());
    detail::scatter_heads(v, H(), hd(), lv_[l].data() + off, max_lat_ * hd());
  }

  /// One new latent at the last position, attending the caches.
  void step(const ConstView<std::int32_t, 2>& tokens, nn::Matrix& logits, const Executor& ex) {
    const Model& md = *model_;
    const index_t w = W(), nh = H(), pos = len_ + tokens.dim(1) - 1;
    add_tokens(tokens, ex);
    nn::Matrix x(B_, w), z, y, q, k, v, o(B_, w);
    for (index_t b = 0; b < B_; ++b) md.embed(tok_[b * cap_ + wlen_ - 1], pos, x.data() + b * w);
    md.query_proj.forward(x, z);
    // Cross-attention: the newest latent sees the whole window (no mask).
    md.cross.ln_q.forward(z, y, md.config.ln_eps, ex);
    md.cross.attn.q.forward(y, q);
    with_window([&](const auto& K, const auto& V) {
      attention<float>(detail::heads_view<const float>(q.data(), B_, 1, nh, w, w), K, V,
                       detail::heads_view<float>(o.data(), B_, 1, nh, w, w), NoMask{}, NoScore{}, {},
                       effattn::detail::executor_for(ex, 4.0 * B_ * wlen_ * w));
    });
    md.residual_and_mlp(z, o, md.cross.attn, md.cross.ln_mlp, md.cross.mlp, ex);
    // Latent layers: append this latent's key/value, attend all cached latents.
    for (size_t l = 0; l < md.latent.size(); ++l) {
      const LatentBlock& blk = md.latent[l];
      blk.ln_attn.forward(z, y, md.config.ln_eps, ex);
      blk.attn.q.forward(y, q);
      blk.attn.k.forward(y, k);
      blk.attn.v.forward(y, v);
      for (index_t b = 0; b < B_; ++b) store_latent(l, b, nlat_, k.data() + b * w, v.data() + b * w);
      attention<float>(detail::heads_view<const float>(q.data(), B_, 1, nh, w, w), cache_view(lk_[l], max_lat_, nlat_ + 1),
                       cache_view(lv_[l], max_lat_, nlat_ + 1),
                       detail::heads_view<float>(o.data(), B_, 1, nh, w, w), NoMask{}, NoScore{}, {},
                       effattn::detail::executor_for(ex, 4.0 * B_ * (nlat_ + 1) * w));
      md.residual_and_mlp(z, o, blk.attn, blk.ln_mlp, blk.mlp, ex);
    }
    ++nlat_;
    md.output_logits(z, logits, ex);
  }

  /// The memory is full: keep the last max_append() tokens of the window,
  /// add the new ones, and recompute max_latents / 2 latents uncached.
  void recompute(const ConstView<std::int32_t, 2>& tokens, nn::Matrix& logits, const Executor& ex) {
    const Model& md = *model_;
    const index_t w = W(), n = tokens.dim(1);
    const index_t keep = std::min(wlen_ + n, max_append());
    const index_t drop = wlen_ + n - keep;  // <= wlen_ because n <= max_append()
    if (drop > 0) {
      const index_t rest = wlen_ - drop, d = hd();
      detail::with_storage(storage_, [&](auto kv) {
        using KV = decltype(kv);
        for (index_t b = 0; b < B_; ++b)
          for (index_t h = 0; h < H(); ++h) {
            KV* kb = cache<KV>(kc_).data() + (b * H() + h) * cap_ * d;
            KV* vb = cache<KV>(vc_).data() + (b * H() + h) * cap_ * d;
            std::memmove(kb, kb + drop * d, sizeof(KV) * rest * d);
            std::memmove(vb, vb + drop * d, sizeof(KV) * rest * d);
          }
      });
      for (index_t b = 0; b < B_; ++b)
        std::memmove(tok_.data() + b * cap_, tok_.data() + b * cap_ + drop, sizeof(std::int32_t) * rest);
      wlen_ = rest;
    }
    add_tokens(tokens, ex);
    const index_t M = std::min(max_lat_ / 2, wlen_), start = window_start();
    nn::Matrix x(B_ * M, w), z;
    for (index_t b = 0; b < B_; ++b)
      for (index_t m = 0; m < M; ++m) {
        const index_t j = wlen_ - M + m;
        md.embed(tok_[b * cap_ + j], start + j, x.data() + (b * M + m) * w);
      }
    md.query_proj.forward(x, z);
    with_window([&](const auto& K, const auto& V) { md.cross_block(z, B_, M, K, V, {}, ex); });
    md.latent_stack(z, B_, M, {}, ex, [&](index_t l, const nn::Matrix& k, const nn::Matrix& v) {
      for (index_t b = 0; b < B_; ++b)
        for (index_t m = 0; m < M; ++m) store_latent(l, b, m, k.data() + (b * M + m) * w, v.data() + (b * M + m) * w);
    });
    nlat_ = M;
    ++recomputes_;
    nn::Matrix last(B_, w);
    for (index_t b = 0; b < B_; ++b) last.row(b) = z.row(b * M + M - 1);
    md.output_logits(last, logits, ex);
  }

  const Model* model_;
  index_t B_, cap_, max_lat_;
  Storage storage_;
  ContextStore kc_, vc_;                        // [B, H, cap, W/H] window keys / values (head-major)
  std::vector<std::int32_t> tok_;               // [B, cap] window tokens
  std::vector<std::vector<float>> lk_, lv_;     // per layer [B, H, max_lat, W/H]
  index_t len_ = 0, wlen_ = 0, nlat_ = 0, recomputes_ = 0;
};

}  // namespace perceiver_ar
EFFATTN_NAMESPACE_END
