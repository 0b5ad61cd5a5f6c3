// SPDX-License-Identifier: MIT
// effattn::star: STAR's softmax-attention LIV classes on the effattn engine.
//
//   SA-1 (class 1): causal multi-head attention, H heads
//   SA-2 (class 2): SA-1 whose q/k/v featurizer (the projection) is followed
//                   by a depthwise causal short convolution (kernel 3) on q, k, v
//   SA-3 (class 3): K/V shared by 4 query heads (grouped-query, Hkv = H / 4)
//   SA-4 (class 4): K/V shared by 2 query heads (Hkv = H / 2)
//
// One class, SoftmaxAttention, configured by AttentionConfig (sa1..sa4 give
// the four). Per token, with hd the head dim and G = H / Hkv:
//
//   q = Wq x [H*hd], k = Wk x [Hkv*hd], v = Wv x [Hkv*hd]     (torch layout, no bias)
//   SA-2: q, k, v = causal_depthwise_conv_L(q), (k), (v)      (tap 0 = oldest, as liv.hpp; no bias)
//   RoPE (rope = true): rotate-half (LLaMA / Hugging Face), position = token index
//                       in the sequence, frequencies theta^(-2i/hd) (angles in
//                       double, cos/sin rounded to float)
//   o_h = softmax(q_h K_{h/G}^T / sqrt(hd)) V_{h/G} over the keys j <= i  (CausalMask)
//   y = Wo [o_1 .. o_H]                                       Wo [C, H*hd]
//
// Heads are contiguous column blocks of q/k/v/o (head h = columns h*hd ..),
// passed to effattn::attention as strided [1, H, N, hd] views (no copies).
// prefill appends the new keys/values to the State's K/V cache (growing by
// doubling from the capacity make_state(reserve) gives) and runs the queries
// on the whole cache with CausalMask, which is bottom-right aligned (query i of
// a chunk of N after a cache of L sees keys j <= L + i); step is the same with
// one query (the engine's decode path). With SA-2 the State also holds the
// last L-1 pre-conv q, k, v rows.
// cache_bytes(n) = 4 * (2 n Hkv hd + (L-1)(H + 2 Hkv) hd) for SA-2, the first
// term alone otherwise (valid rows only, not the reserved capacity).
// See liv.hpp for the contract.
#pragma once

#include "../attention/engine.hpp"
#include "liv.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

namespace detail {
/// Rotate-half RoPE (LLaMA / Hugging Face) on the `nh` heads of hd channels of
/// m [n, nh*hd], row r at position pos0 + r: angles in double, cos/sin rounded
/// to float, each row on its own (so a step equals the prefill bit for bit).
/// SoftmaxAttention and the compiled model (model.hpp) both rotate with it.
inline void apply_rope(Matrix& m, index_t nh, index_t hd, index_t pos0, double theta, const Executor& ex) {
  const index_t n = m.rows(), half = hd / 2, cols = m.cols();
  detail::parallel_chunks(ex, 20.0 * double(n) * double(cols), n, 16, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      float* row = m.data() + r * cols;
      const double pos = static_cast<double>(pos0 + r);
      for (index_t i = 0; i < half; ++i) {
        const double ang = pos * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
        const float c = static_cast<float>(std::cos(ang)), s = static_cast<float>(std::sin(ang));
        for (index_t h = 0; h < nh; ++h) {
          float* x = row + h * hd;
          const float x1 = x[i], x2 = x[i + half];
          x[i] = x1 * c - x2 * s;
          x[i + half] = x2 * c + x1 * s;
        }
      }
    }
  });
}
}  // namespace detail

struct AttentionConfig {
  index_t width = 0;       ///< C > 0
  index_t heads = 1;       ///< H > 0
  index_t kv_heads = 0;    ///< Hkv dividing H, or 0 for H
  index_t head_dim = 0;    ///< hd > 0, or 0 for C / H (H must divide C)
  index_t short_conv = 0;  ///< SA-2: kernel of the q/k/v depthwise conv (> 1), 0 for none
  bool rope = true;        ///< rotary position embedding on q and k (hd even)
  double rope_theta = 10000.0;

  static AttentionConfig sa1(index_t width, index_t heads) { return {width, heads, heads, 0, 0, true, 10000.0}; }
  static AttentionConfig sa2(index_t width, index_t heads) { return {width, heads, heads, 0, 3, true, 10000.0}; }
  /// K/V shared by 4 query heads; throws parameter_error unless 4 divides heads.
  static AttentionConfig sa3(index_t width, index_t heads) { return grouped(width, heads, 4, "sa3"); }
  /// K/V shared by 2 query heads; throws parameter_error unless 2 divides heads.
  static AttentionConfig sa4(index_t width, index_t heads) { return grouped(width, heads, 2, "sa4"); }

 private:
  static AttentionConfig grouped(index_t width, index_t heads, index_t g, const char* name) {
    effattn::detail::require(heads > 0 && heads % g == 0, "star::AttentionConfig", name,
                             "needs heads to be a positive multiple of ", g, ", got ", heads);
    return {width, heads, heads / g, 0, 0, true, 10000.0};
  }
};

class SoftmaxAttention {
 public:
  using Config = AttentionConfig;
  struct State {
    Matrix k, v;                    ///< [capacity, Hkv*hd]; rows < length hold the cache
    Matrix q_tail, k_tail, v_tail;  ///< SA-2: the last L-1 pre-conv q, k, v rows; else empty
    index_t length = 0;
    index_t capacity() const { return k.rows(); }
  };

  nn::Linear wq, wk, wv, wo;           ///< [H*hd, C], [Hkv*hd, C], [Hkv*hd, C], [C, H*hd]
  Matrix q_conv, k_conv, v_conv;       ///< SA-2: [H*hd, L], [Hkv*hd, L], [Hkv*hd, L]; else empty

  SoftmaxAttention(const Config& cfg, std::uint64_t seed)
      : heads_(cfg.heads), kv_heads_(cfg.kv_heads > 0 ? cfg.kv_heads : cfg.heads), rope_(cfg.rope),
        theta_(cfg.rope_theta) {
    const char* op = "star::SoftmaxAttention";
    effattn::detail::require(cfg.width > 0, op, "width", "must be > 0, got ", cfg.width);
    effattn::detail::require(cfg.heads > 0, op, "heads", "must be > 0, got ", cfg.heads);
    effattn::detail::require(cfg.kv_heads >= 0 && heads_ % kv_heads_ == 0, op, "kv_heads",
                             "must divide heads=", cfg.heads, " (or be 0 for heads), got ", cfg.kv_heads);
    effattn::detail::require(cfg.head_dim > 0 || cfg.width % cfg.heads == 0, op, "heads",
                             "must divide width=", cfg.width, " when head_dim is 0, got ", cfg.heads);
    effattn::detail::require(cfg.head_dim >= 0, op, "head_dim", "must be >= 0, got ", cfg.head_dim);
    effattn::detail::require(cfg.short_conv == 0 || cfg.short_conv > 1, op, "short_conv",
                             "must be 0 (none) or a kernel > 1, got ", cfg.short_conv);
    hd_ = cfg.head_dim > 0 ? cfg.head_dim : cfg.width / cfg.heads;
    effattn::detail::require(!cfg.rope || hd_ % 2 == 0, op, "head_dim", "must be even with rope, got ", hd_);
    effattn::detail::require(!cfg.rope || (std::isfinite(cfg.rope_theta) && cfg.rope_theta > 1), op, "rope_theta",
                             "must be finite and > 1, got ", cfg.rope_theta);
    const index_t C = cfg.width;
    const index_t qd = effattn::detail::checked_mul(heads_, hd_, op, "heads * head_dim");
    const index_t kd = kv_heads_ * hd_;
    effattn::detail::checked_mul(qd, C, op, "heads * head_dim * width");
    std::mt19937_64 rng(seed);
    wq = nn::Linear::random(C, qd, rng, 0, false);
    wk = nn::Linear::random(C, kd, rng, 0, false);
    wv = nn::Linear::random(C, kd, rng, 0, false);
    wo = nn::Linear::random(qd, C, rng, 0, false);
    if (cfg.short_conv > 0) {
      const float s = 1.0f / std::sqrt(static_cast<float>(cfg.short_conv));
      q_conv.resize(qd, cfg.short_conv);
      k_conv.resize(kd, cfg.short_conv);
      v_conv.resize(kd, cfg.short_conv);
      detail::fill_uniform(q_conv, s, rng);
      detail::fill_uniform(k_conv, s, rng);
      detail::fill_uniform(v_conv, s, rng);
    }
  }

  index_t width() const { return wo.out_features(); }
  index_t heads() const { return heads_; }
  index_t kv_heads() const { return kv_heads_; }
  index_t head_dim() const { return hd_; }
  /// The SA-2 conv kernel, 0 without one.
  index_t short_conv() const { return q_conv.cols(); }
  bool rope() const { return rope_; }

  State make_state(index_t reserve = 0) const {
    effattn::detail::require(reserve >= 0, "star::SoftmaxAttention::make_state", "reserve", "must be >= 0, got ",
                             reserve);
    State s;
    const index_t kd = kv_heads_ * hd_;
    effattn::detail::checked_mul(reserve, kd, "star::SoftmaxAttention::make_state", "reserve * Hkv * head_dim");
    s.k.resize(reserve, kd);
    s.v.resize(reserve, kd);
    if (short_conv() > 0) {
      const index_t t = short_conv() - 1;
      s.q_tail = Matrix::Zero(t, heads_ * hd_);
      s.k_tail = Matrix::Zero(t, kd);
      s.v_tail = Matrix::Zero(t, kd);
    }
    return s;
  }
  index_t param_count() const {
    return detail::linear_params(wq) + detail::linear_params(wk) + detail::linear_params(wv) +
           detail::linear_params(wo) + q_conv.size() + k_conv.size() + v_conv.size();
  }
  index_t cache_bytes(index_t context) const {
    detail::check_context("star::SoftmaxAttention::cache_bytes", context);
    const index_t kd = kv_heads_ * hd_;
    index_t floats = 2 * context * kd;
    if (short_conv() > 0) floats += (short_conv() - 1) * (heads_ * hd_ + 2 * kd);
    return floats * index_t(sizeof(float));
  }

  void forward(const Matrix& x, Matrix& y, const Executor& ex = {}) const {
    detail::check_sequence("star::SoftmaxAttention::forward", x, y, width(), ex);
    State s = make_state(x.rows());
    run(x, s, y, ex);
  }
  void prefill(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    const char* op = "star::SoftmaxAttention::prefill";
    detail::check_sequence(op, x, y, width(), ex);
    check_state(op, s);
    run(x, s, y, ex);
  }
  void step(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    const char* op = "star::SoftmaxAttention::step";
    detail::check_step(op, x, y, width(), ex);
    check_state(op, s);
    run(x, s, y, ex);
  }

 private:
  index_t heads_, kv_heads_, hd_ = 0;
  bool rope_;
  double theta_;

  void check_state(const char* op, const State& s) const {
    const index_t kd = kv_heads_ * hd_;
    detail::check_state(op, "k", s.k, s.k.rows(), kd);
    detail::check_state(op, "v", s.v, s.k.rows(), kd);
    if (s.length < 0 || s.length > s.k.rows())
      EFFATTN_THROW(shape_error(detail::concat(op, ": state length ", s.length, " must be in [0, capacity=",
                                               s.k.rows(), "]")));
    const index_t t = short_conv() > 0 ? short_conv() - 1 : 0;
    detail::check_state(op, "q_tail", s.q_tail, t, short_conv() > 0 ? heads_ * hd_ : 0);
    detail::check_state(op, "k_tail", s.k_tail, t, short_conv() > 0 ? kd : 0);
    detail::check_state(op, "v_tail", s.v_tail, t, short_conv() > 0 ? kd : 0);
  }

  void run(const Matrix& x, State& s, Matrix& y, const Executor& ex) const {
    const index_t N = x.rows(), qd = heads_ * hd_, kd = kv_heads_ * hd_;
    const index_t L0 = s.length, Nk = L0 + N;
    Matrix q, k, v;
    nn::linear(wq, x, q, ex);
    nn::linear(wk, x, k, ex);
    nn::linear(wv, x, v, ex);
    if (short_conv() > 0) {
      Matrix t;
      const Vector none;
      detail::causal_depthwise_conv(q, q_conv, none, s.q_tail, t, ex);
      q.swap(t);
      detail::causal_depthwise_conv(k, k_conv, none, s.k_tail, t, ex);
      k.swap(t);
      detail::causal_depthwise_conv(v, v_conv, none, s.v_tail, t, ex);
      v.swap(t);
    }
    if (rope_) {
      detail::apply_rope(q, heads_, hd_, L0, theta_, ex);
      detail::apply_rope(k, kv_heads_, hd_, L0, theta_, ex);
    }
    // Append to the cache, growing by doubling.
    if (Nk > s.k.rows()) {
      const index_t cap = std::max(Nk, 2 * s.k.rows());
      s.k.conservativeResize(cap, kd);
      s.v.conservativeResize(cap, kd);
    }
    if (N > 0) {
      s.k.middleRows(L0, N) = k;
      s.v.middleRows(L0, N) = v;
    }
    Matrix o(N, qd);
    const index_t cap = s.k.rows();
    const ConstView<float, 4> Q(q.data(), {1, heads_, N, hd_}, {N * qd, hd_, qd, 1});
    const ConstView<float, 4> K(s.k.data(), {1, kv_heads_, Nk, hd_}, {cap * kd, hd_, kd, 1});
    const ConstView<float, 4> V(s.v.data(), {1, kv_heads_, Nk, hd_}, {cap * kd, hd_, kd, 1});
    const View<float, 4> O(o.data(), {1, heads_, N, hd_}, {N * qd, hd_, qd, 1});
    effattn::attention<float>(Q, K, V, O, CausalMask{}, NoScore{}, AttentionOptions{}, ex);
    nn::linear(wo, o, y, ex);
    s.length = Nk;
  }
};

}  // namespace star
EFFATTN_NAMESPACE_END
