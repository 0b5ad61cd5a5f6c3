// SPDX-License-Identifier: MIT
// effattn::star: GConv-1, STAR's gated short convolution (LIV class 7), as
// LFM2's short-conv block computes it.
//
//   [B | Cg | u] = in_proj(x)            in_proj [3C, C]: rows 0..C-1 give B,
//                                        C..2C-1 the output gate Cg, 2C..3C-1 u
//   Bx[t, c]     = B[t, c] * u[t, c]
//   z[t, c]      = sum_{k=0}^{L-1} w[c, k] * Bx[t - (L-1) + k, c]   (+ conv_bias[c])
//   y            = out_proj(Cg * z)      out_proj [C, C]
//
// Source: Hugging Face transformers, models/lfm2/modeling_lfm2.py,
// Lfm2ShortConv.slow_forward (read for this port): `BCx = in_proj(x)`,
// `B, C, x = BCx.chunk(3, dim=-2)` (so B first, then C, then x), `Bx = B * x`,
// `conv_out = self.conv(Bx)[..., :seqlen]` with nn.Conv1d(groups=hidden,
// kernel_size=L_cache, padding=L_cache-1), `y = out_proj(C * conv_out)`. A
// Conv1d with padding L-1 cut to the first N outputs gives
// out[t] = sum_k w[k] x[t - (L-1) + k]: tap 0 multiplies the OLDEST input, the
// last tap the current one (its decode path, sum(conv_state * w) over a state
// rolled left with the newest value written last, agrees; so does llama.cpp's
// ggml_ssm_conv). HF's decode cache keeps the last L values; ours keeps the
// last L-1 values of Bx (llama.cpp's convention), which is the same
// computation. conv_bias (LFM2's conv_bias, default False) is off by default;
// with `bias = true` in_proj, out_proj and the conv all get one, as HF does.
// Default kernel L = 3 (LFM2's conv_L_cache). See liv.hpp for the contract.
#pragma once

#include "liv.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

struct ShortConvConfig {
  index_t width = 0;   ///< C > 0
  index_t kernel = 3;  ///< L >= 1 (LFM2: 3)
  bool bias = false;   ///< LFM2's conv_bias: biases on in_proj, out_proj and the conv
};

class ShortConv {
 public:
  using Config = ShortConvConfig;
  /// The last L-1 values of Bx, oldest first ([L-1, C]; zeros before the sequence).
  struct State {
    Matrix tail;
    index_t length = 0;
  };

  nn::Linear in_proj;   ///< [3C, C]: B, C (gate), x
  nn::Linear out_proj;  ///< [C, C]
  Matrix conv_weight;   ///< [C, L] (torch's conv.weight [C, 1, L]); tap 0 = oldest input
  Vector conv_bias;     ///< [C] or empty

  ShortConv(const Config& cfg, std::uint64_t seed) {
    const char* op = "star::ShortConv";
    effattn::detail::require(cfg.width > 0, op, "width", "must be > 0, got ", cfg.width);
    effattn::detail::require(cfg.kernel >= 1, op, "kernel", "must be >= 1, got ", cfg.kernel);
    const index_t C = cfg.width, L = cfg.kernel;
    effattn::detail::checked_mul<index_t>(3 * C, C, op, "3C * C");
    std::mt19937_64 rng(seed);
    in_proj = nn::Linear::random(C, 3 * C, rng, 0, cfg.bias);
    out_proj = nn::Linear::random(C, C, rng, 0, cfg.bias);
    // torch's Conv1d default: U(-1/sqrt(fan_in), ..), fan_in = L for a depthwise conv.
    const float s = 1.0f / std::sqrt(static_cast<float>(L));
    conv_weight.resize(C, L);
    detail::fill_uniform(conv_weight, s, rng);
    if (cfg.bias) {
      Matrix b(1, C);
      detail::fill_uniform(b, s, rng);
      conv_bias = b.row(0).transpose();
    }
  }

  index_t width() const { return out_proj.out_features(); }
  index_t kernel() const { return conv_weight.cols(); }
  State make_state(index_t = 0) const {
    State s;
    s.tail = Matrix::Zero(kernel() - 1, width());
    return s;
  }
  index_t param_count() const {
    return detail::linear_params(in_proj) + detail::linear_params(out_proj) + conv_weight.size() + conv_bias.size();
  }
  /// (L-1) x C floats, whatever the context.
  index_t cache_bytes(index_t context) const {
    detail::check_context("star::ShortConv::cache_bytes", context);
    return (kernel() - 1) * width() * index_t(sizeof(float));
  }

  void forward(const Matrix& x, Matrix& y, const Executor& ex = {}) const {
    detail::check_sequence("star::ShortConv::forward", x, y, width(), ex);
    State s = make_state();
    run(x, s, y, ex);
  }
  void prefill(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    const char* op = "star::ShortConv::prefill";
    detail::check_sequence(op, x, y, width(), ex);
    detail::check_state(op, "tail", s.tail, kernel() - 1, width());
    run(x, s, y, ex);
  }
  void step(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    const char* op = "star::ShortConv::step";
    detail::check_step(op, x, y, width(), ex);
    detail::check_state(op, "tail", s.tail, kernel() - 1, width());
    run(x, s, y, ex);
  }

  /// prefill from the featurizer outputs p = [B | Cg | u] [N, 3C] (what
  /// in_proj gives) instead of x: a compiled model (model.hpp) computes them
  /// with featurizer weights it shares between layers (STAR's featurizer
  /// sharing); everything after in_proj is this operator's.
  void prefill_from(const Matrix& p, State& s, Matrix& y, const Executor& ex = {}) const {
    const char* op = "star::ShortConv::prefill_from";
    effattn::detail::check_executor(ex, op);
    if (p.cols() != 3 * width())
      EFFATTN_THROW(shape_error(detail::concat(op, ": p must be [N,3C]=[", p.rows(), ",", 3 * width(), "], got [",
                                               p.rows(), ",", p.cols(), "]")));
    if (&p == &y) EFFATTN_THROW(shape_error(detail::concat(op, ": y must not be p")));
    detail::check_state(op, "tail", s.tail, kernel() - 1, width());
    mix(p, s, y, ex);
  }

 private:
  void run(const Matrix& x, State& s, Matrix& y, const Executor& ex) const {
    Matrix p;
    nn::linear(in_proj, x, p, ex);  // [N, 3C]
    mix(p, s, y, ex);
  }
  void mix(const Matrix& p, State& s, Matrix& y, const Executor& ex) const {
    const index_t N = p.rows(), C = width();
    Matrix bx(N, C);
    detail::parallel_chunks(ex, double(N) * double(C), N, 64, [&](index_t t0, index_t t1) {
      for (index_t t = t0; t < t1; ++t) {
        const float* pr = p.data() + t * 3 * C;
        float* br = bx.data() + t * C;
        for (index_t c = 0; c < C; ++c) br[c] = pr[c] * pr[2 * C + c];
      }
    });
    Matrix z;
    detail::causal_depthwise_conv(bx, conv_weight, conv_bias, s.tail, z, ex);
    detail::parallel_chunks(ex, double(N) * double(C), N, 64, [&](index_t t0, index_t t1) {
      for (index_t t = t0; t < t1; ++t) {
        const float* pr = p.data() + t * 3 * C + C;
        float* zr = z.data() + t * C;
        for (index_t c = 0; c < C; ++c) zr[c] *= pr[c];
      }
    });
    nn::linear(out_proj, z, y, ex);
    s.length += N;
  }
};

}  // namespace star
EFFATTN_NAMESPACE_END
