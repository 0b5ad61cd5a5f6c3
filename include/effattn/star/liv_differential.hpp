// SPDX-License-Identifier: MIT
// effattn::star: STAR's differential LIV classes 10-17, y = LIV_a(x) - LIV_b(x),
// as one wrapper over two operators of the same class (any Op of liv.hpp's
// contract: SwiGLU, ShortConv, Recurrence, SoftmaxAttention, or a GConv-2).
//
// Decisions: a and b are two independent operators of the same Config (b's
// seed derived from a's with SplitMix64, so Differential<Op>(cfg, s).a equals
// Op(cfg, s)); no learned mixing weight (the genome's definition, y = a - b;
// Differential Transformer's lambda is not part of STAR's class list);
// parameters and cache are the sum of both (each keeps its own state; nothing
// is shared). The subtraction is per element, so thread counts never change
// the bits. See liv.hpp for the contract.
#pragma once

#include "liv.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

template <class Op>
class Differential {
 public:
  using Config = typename Op::Config;
  using Operator = Op;
  struct State {
    typename Op::State a, b;
    index_t length = 0;
  };

  Op a, b;

  Differential(const Config& cfg, std::uint64_t seed) : a(cfg, seed), b(cfg, detail::derive_seed(seed, 0xD1FF)) {}
  Differential(Op a_op, Op b_op) : a(std::move(a_op)), b(std::move(b_op)) {
    effattn::detail::require(a.width() == b.width(), "star::Differential", "b",
                             "must have the width of a=", a.width(), ", got ", b.width());
  }

  index_t width() const { return a.width(); }
  State make_state(index_t reserve = 0) const {
    State s;
    s.a = a.make_state(reserve);
    s.b = b.make_state(reserve);
    return s;
  }
  index_t param_count() const { return a.param_count() + b.param_count(); }
  index_t cache_bytes(index_t context) const {
    detail::check_context("star::Differential::cache_bytes", context);
    return a.cache_bytes(context) + b.cache_bytes(context);
  }

  void forward(const Matrix& x, Matrix& y, const Executor& ex = {}) const {
    detail::check_sequence("star::Differential::forward", x, y, width(), ex);
    Matrix yb;
    a.forward(x, y, ex);
    b.forward(x, yb, ex);
    y -= yb;
  }
  void prefill(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    detail::check_sequence("star::Differential::prefill", x, y, width(), ex);
    Matrix yb;
    a.prefill(x, s.a, y, ex);
    b.prefill(x, s.b, yb, ex);
    y -= yb;
    s.length += x.rows();
  }
  void step(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const {
    detail::check_step("star::Differential::step", x, y, width(), ex);
    Matrix yb;
    a.step(x, s.a, y, ex);
    b.step(x, s.b, yb, ex);
    y -= yb;
    s.length += 1;
  }
};

}  // namespace star
EFFATTN_NAMESPACE_END
