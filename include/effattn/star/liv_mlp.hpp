// SPDX-License-Identifier: MIT
// effattn::star: GMemless, STAR's memoryless LIV class 9 (SwiGLU).
//
//   y = W2 (silu(W1 x) * (W3 x)),  W1, W3 [hidden, C], W2 [C, hidden], no biases
//
// (Shazeer 2020, "GLU Variants Improve Transformer"; LLaMA's FeedForward with
// w1 = gate, w3 = up, w2 = down). hidden = 0 picks LLaMA's 2/3 * 4C rounded up
// to a multiple of 8. The operator mixes no tokens: its State holds only the
// token count and cache_bytes is 0. See liv.hpp for the contract.
#pragma once

#include "liv.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

struct SwiGLUConfig {
  index_t width = 0;   ///< C > 0
  index_t hidden = 0;  ///< > 0, or 0 for ceil(8C/3 / 8) * 8
};

class SwiGLU {
 public:
  using Config = SwiGLUConfig;
  struct State {
    index_t length = 0;
  };

  nn::Linear w1, w3, w2;  ///< gate [H, C], up [H, C], down [C, H]; public so weights can be loaded

  SwiGLU(const Config& cfg, std::uint64_t seed) {
    const char* op = "star::SwiGLU";
    effattn::detail::require(cfg.width > 0, op, "width", "must be > 0, got ", cfg.width);
    effattn::detail::require(cfg.hidden >= 0, op, "hidden", "must be >= 0 (0: 8C/3 rounded up to 8), got ",
                             cfg.hidden);
    const index_t C = cfg.width;
    const index_t H = cfg.hidden > 0 ? cfg.hidden
                                     : (effattn::detail::checked_mul<index_t>(8, C, op, "8 * width") / 3 + 7) / 8 * 8;
    std::mt19937_64 rng(seed);
    w1 = nn::Linear::random(C, H, rng, 0, false);
    w3 = nn::Linear::random(C, H, rng, 0, false);
    w2 = nn::Linear::random(H, C, rng, 0, false);
  }

  index_t width() const { return w2.out_features(); }  // (w2: the model may hold w1, w3 elsewhere)
  index_t hidden() const { return w2.in_features(); }
  State make_state(index_t = 0) const { return {}; }
  index_t param_count() const {
    return detail::linear_params(w1) + detail::linear_params(w3) + detail::linear_params(w2);
  }
  index_t cache_bytes(index_t context) const {
    detail::check_context("star::SwiGLU::cache_bytes", context);
    return 0;
  }

  void forward(const Matrix& x, Matrix& y, const Executor& ex = {}) const {
    detail::check_sequence("star::SwiGLU::forward", x, y, width(), ex);
    run(x, y, ex);
  }
  void prefill(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    detail::check_sequence("star::SwiGLU::prefill", x, y, width(), ex);
    run(x, y, ex);
    s.length += x.rows();
  }
  void step(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    detail::check_step("star::SwiGLU::step", x, y, width(), ex);
    run(x, y, ex);
    s.length += 1;
  }

  /// prefill with the featurizers (gate w1, up w3, each [H, C]) passed in
  /// instead of this operator's own, so that a compiled model (model.hpp) can
  /// share them between layers (STAR's featurizer sharing); w2 stays this one's.
  void prefill_with(const nn::Linear& gate, const nn::Linear& up, const Matrix& x, State& s, Matrix& y,
                    const Executor& ex = {}) const {
    const char* op = "star::SwiGLU::prefill_with";
    detail::check_sequence(op, x, y, width(), ex);
    detail::check_weight(op, "gate", gate.weight, hidden(), width());
    detail::check_weight(op, "up", up.weight, hidden(), width());
    run_with(gate, up, x, y, ex);
    s.length += x.rows();
  }

 private:
  void run(const Matrix& x, Matrix& y, const Executor& ex) const { run_with(w1, w3, x, y, ex); }
  void run_with(const nn::Linear& w1, const nn::Linear& w3, const Matrix& x, Matrix& y, const Executor& ex) const {
    Matrix g, u;
    nn::linear(w1, x, g, ex);
    nn::linear(w3, x, u, ex);
    const index_t n = g.size();
    float* gp = g.data();
    const float* up = u.data();
    detail::parallel_chunks(ex, 8.0 * double(n), n, 16384, [&](index_t b, index_t e) {
      for (index_t i = b; i < e; ++i) gp[i] = detail::silu(gp[i]) * up[i];
    });
    nn::linear(w2, g, y, ex);
  }
};

}  // namespace star
EFFATTN_NAMESPACE_END
