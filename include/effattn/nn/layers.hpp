// SPDX-License-Identifier: MIT
// effattn::nn: the few dense layers the method examples and golden blocks need
// around attention (Linear, LayerNorm, exact GELU, MLP, head split/merge), on
// row-major Eigen matrices. Weights use PyTorch's Linear layout [out, in], so
// checkpoints map one to one.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/view.hpp"
#include "../attention/engine.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace nn {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vector = Eigen::VectorXf;

struct Linear;
inline void linear(const Linear& l, const Matrix& x, Matrix& y, const Executor& ex = {});

/// A dense layer y = x W^T + b: W [out, in] (torch layout), b [out] or empty.
/// forward() is nn::linear.
struct Linear {
  Matrix weight;
  Vector bias;

  index_t in_features() const { return weight.cols(); }
  index_t out_features() const { return weight.rows(); }

  void forward(const Matrix& x, Matrix& y, const Executor& ex = {}) const { linear(*this, x, y, ex); }

  /// Weights ~ U(-scale, scale) (scale 0: 1/sqrt(in), torch's default bound), bias likewise.
  template <class Rng>
  static Linear random(index_t in, index_t out, Rng& rng, float scale = 0, bool with_bias = true) {
    const char* op = "nn::Linear::random";
    effattn::detail::require(in > 0 && out > 0, op, "in/out", "must be > 0, got in=", in, " out=", out);
    detail::checked_mul(in, out, op, "in * out");
    const float s = scale > 0 ? scale : 1.0f / std::sqrt(static_cast<float>(in));
    std::uniform_real_distribution<float> u(-s, s);
    Linear l;
    l.weight.resize(out, in);
    for (index_t i = 0; i < l.weight.size(); ++i) l.weight.data()[i] = u(rng);
    if (with_bias) {
      l.bias.resize(out);
      for (index_t i = 0; i < out; ++i) l.bias[i] = u(rng);
    }
    return l;
  }
};

}  // namespace nn

namespace detail {

/// nn::linear without its checks, on raw rows: y[r * ldy + 0:N] = x[r * ldx +
/// 0:K] W^T + b for r < M (x and y must not overlap; ldx >= K, ldy >= N). The
/// same bits as nn::linear on the same rows, for callers that project row
/// blocks of a larger matrix in place (star::Recurrence's chunked prefill).
inline void linear_rows(const nn::Linear& l, const float* x, index_t ldx, index_t M, float* y, index_t ldy,
                        const Executor& ex) {
  // Output tiles: kRows x kCols outputs per work item; kGemvRows or fewer
  // rows: one slice of kGemvCols outputs (all rows) per item.
  constexpr index_t kRows = 48, kCols = 256, kGemvRows = 4, kGemvCols = 512;
  const index_t K = l.weight.cols(), N = l.weight.rows();
  if (M == 0 || N == 0) return;
  const bool has_bias = l.bias.size() != 0;
  if (K == 0) {  // an empty sum: the bias, or zeros
    for (index_t r = 0; r < M; ++r)
      for (index_t j = 0; j < N; ++j) y[r * ldy + j] = has_bias ? l.bias[j] : 0.0f;
    return;
  }
  const Executor run_ex = effattn::detail::executor_for(ex, double(M) * double(K) * double(N));
  if (M <= kGemvRows) {
    // Decode: one item per slice of outputs, all rows; y[r, c0:c1] = W[c0:c1, :] x[r, :].
    const index_t items = (N + kGemvCols - 1) / kGemvCols;
    effattn::detail::parallel_items(run_ex, items, [] { return 0; }, [&](index_t item, int&) {
      const index_t c0 = item * kGemvCols, n = std::min(kGemvCols, N - c0);
      for (index_t r = 0; r < M; ++r) {
        Eigen::Map<Eigen::VectorXf> yr(y + r * ldy + c0, n);
        yr.noalias() = l.weight.middleRows(c0, n) * Eigen::Map<const Eigen::VectorXf>(x + r * ldx, K);
        if (has_bias) yr += l.bias.segment(c0, n);
      }
    });
    return;
  }
  // Tiles: W^T packed once per call (in parallel over its panels), then
  // kRows x kCols output tiles, each on one thread (the engine's
  // micro-kernel at the active instruction-set level, kernels_level.hpp).
  EFFATTN_WITH_LEVEL(effattn::active_isa(), {
    constexpr index_t Q = lvl::Blocking<float>::Q;
    const index_t panels = (N + Q - 1) / Q, tile_panels = std::max<index_t>(1, kCols / Q);
    effattn::detail::AlignedBuffer<float> wp(lvl::gemm_packed_size(K, N));
    effattn::detail::parallel_items(effattn::detail::executor_for(ex, 2.0 * double(K) * double(N)), panels,
                                    [] { return 0; },
                                    [&](index_t p, int&) { lvl::gemm_pack_panel(l.weight.data(), K, N, p, wp.data()); });
    const index_t rch = (M + kRows - 1) / kRows, cch = (panels + tile_panels - 1) / tile_panels;
    effattn::detail::parallel_items(
        run_ex, rch * cch, [&] { return effattn::detail::AlignedBuffer<float>(std::min(kRows, M) * Q); },
        [&](index_t item, effattn::detail::AlignedBuffer<float>& tail) {
          const index_t r0 = (item / cch) * kRows, p0 = (item % cch) * tile_panels;
          const index_t m = std::min(kRows, M - r0), p1 = std::min(panels, p0 + tile_panels);
          lvl::gemm_tile(x + r0 * ldx, ldx, K, wp.data(), N, m, p0, p1, y + r0 * ldy, ldy, tail.data());
          if (has_bias) {
            const index_t c0 = p0 * Q, c1 = std::min(N, p1 * Q);
            for (index_t i = 0; i < m; ++i) {
              float* yr = y + (r0 + i) * ldy;
              for (index_t j = c0; j < c1; ++j) yr[j] += l.bias[j];
            }
          }
        });
  });
}

}  // namespace detail

namespace nn {

/// y = x W^T + b, x [rows, in], y resized to [rows, out] (y must not be x).
///
/// The effattn dense layer: every model of the library runs its projections
/// here. Above 4 rows, W^T is packed once per call and the output is cut into
/// 48 x 256 tiles, each computed on one thread by the attention engine's
/// register-blocked micro-kernel at the active instruction-set level
/// (kernels_level.hpp, "dense layers"); every output sums over the inputs in
/// blocks of 128, in order, wherever its tile runs. For at most 4 rows (a
/// decode step) it runs matrix-vector products over 512-output slices of W,
/// so W is never packed. The result is bit-identical for any Executor (not
/// across instruction-set levels), and the work runs where the Executor says:
/// OpenMP threads up to ex.num_threads, the host's pool hook, or the calling
/// thread for a small layer (detail::executor_for). Eigen's own threading (a
/// process-wide setting) is never used.
/// Throws (before writing y) parameter_error for an executor with
/// num_threads < 0, shape_error for x not [rows, in], a bias not [out] or
/// empty, or y being x.
inline void linear(const Linear& l, const Matrix& x, Matrix& y, const Executor& ex) {
  const char* op = "nn::linear";
  effattn::detail::check_executor(ex, op);
  const index_t M = x.rows(), K = l.weight.cols(), N = l.weight.rows();
  if (x.cols() != K)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": x must be [rows,in]=[", M, ",", K, "], got [", M, ",",
                                                      x.cols(), "]")));
  if (l.bias.size() != 0 && l.bias.size() != N)
    EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": bias must be [out]=[", N, "] or empty, got [",
                                                      l.bias.size(), "]")));
  if (&x == &y) EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": y must not be x")));
  effattn::detail::checked_mul(M, N, op, "y size rows * out");  // x may be [huge, 0]
  y.resize(M, N);
  effattn::detail::linear_rows(l, x.data(), K, M, y.data(), N, ex);
}

/// y = (x - mean) / sqrt(var + eps) * w + b per row, biased variance (torch's
/// LayerNorm, statistics in double). x [rows, C], w and b [C]. y may be x.
/// Rows run in parallel chunks on `ex`; each row's arithmetic is fixed, so
/// the result is bit-identical for any thread count. Throws (before writing
/// y) parameter_error for an executor with num_threads < 0 (checked first) or
/// a bad eps, shape_error for w or b not [C].
inline void layer_norm(const Matrix& x, const Vector& w, const Vector& b, float eps, Matrix& y,
                       const Executor& ex = {}) {
  const char* op = "nn::layer_norm";
  detail::check_executor(ex, op);
  if (w.size() != x.cols() || b.size() != x.cols())
    EFFATTN_THROW(shape_error(detail::concat(op, ": weight and bias must be [C]=[", x.cols(), "], got [", w.size(),
                                             "] and [", b.size(), "]")));
  effattn::detail::require(std::isfinite(eps) && eps > 0, op, "eps", "must be finite and > 0, got ", eps);
  if (&y != &x) y.resize(x.rows(), x.cols());
  const index_t C = x.cols(), R = x.rows();
  if (R == 0 || C == 0) return;  // nothing to normalise, however many empty rows
  constexpr index_t kChunk = 16;
  detail::parallel_items(effattn::detail::executor_for(ex, 4.0 * R * C), (R + kChunk - 1) / kChunk, [] { return 0; },
                         [&](index_t item, int&) {
                           for (index_t r = item * kChunk; r < std::min(R, (item + 1) * kChunk); ++r) {
                             const float* xr = x.data() + r * C;
                             float* yr = y.data() + r * C;
                             double mean = 0, var = 0;
                             for (index_t c = 0; c < C; ++c) mean += xr[c];
                             mean /= static_cast<double>(C);
                             for (index_t c = 0; c < C; ++c) {
                               const double d = xr[c] - mean;
                               var += d * d;
                             }
                             var /= static_cast<double>(C);
                             const double inv = 1.0 / std::sqrt(var + eps);
                             for (index_t c = 0; c < C; ++c)
                               yr[c] = static_cast<float>((xr[c] - mean) * inv) * w[c] + b[c];
                           }
                         });
}

/// Exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), in place, in
/// parallel chunks on `ex`. Throws parameter_error (before touching x) for an
/// executor with num_threads < 0.
inline void gelu_erf(Matrix& x, const Executor& ex = {}) {
  detail::check_executor(ex, "nn::gelu_erf");
  const index_t n = x.size();
  constexpr index_t kChunk = 16384;
  float* p = x.data();
  detail::parallel_items(effattn::detail::executor_for(ex, 20.0 * n), (n + kChunk - 1) / kChunk, [] { return 0; },
                         [&](index_t item, int&) {
                           for (index_t i = item * kChunk; i < std::min(n, (item + 1) * kChunk); ++i)
                             p[i] = 0.5f * p[i] * (1.0f + std::erf(p[i] * 0.70710678118654752f));
                         });
}

/// y = fc2(gelu(fc1(x))); the GELU runs on `ex`. Every shape and the
/// executor are checked before y is written.
struct Mlp {
  Linear fc1, fc2;
  void forward(const Matrix& x, Matrix& y, const Executor& ex = {}) const {
    const char* op = "nn::Mlp::forward";
    detail::check_executor(ex, op);
    if (x.cols() != fc1.weight.cols())
      EFFATTN_THROW(shape_error(detail::concat(op, ": x must be [rows,in]=[", x.rows(), ",", fc1.weight.cols(),
                                               "], got [", x.rows(), ",", x.cols(), "]")));
    if (fc2.weight.cols() != fc1.weight.rows())
      EFFATTN_THROW(shape_error(detail::concat(op, ": fc2 must take fc1's ", fc1.weight.rows(), " outputs, got in=",
                                               fc2.weight.cols())));
    if ((fc1.bias.size() != 0 && fc1.bias.size() != fc1.weight.rows()) ||
        (fc2.bias.size() != 0 && fc2.bias.size() != fc2.weight.rows()))
      EFFATTN_THROW(shape_error(detail::concat(op, ": biases must be [out] or empty, got fc1 ", fc1.bias.size(),
                                               " for ", fc1.weight.rows(), " outputs and fc2 ", fc2.bias.size(), " for ",
                                               fc2.weight.rows())));
    Matrix h;
    linear(fc1, x, h, ex);
    gelu_erf(h, ex);
    linear(fc2, h, y, ex);
  }
  template <class Rng>
  static Mlp random(index_t width, index_t hidden, Rng& rng) {
    return Mlp{Linear::random(width, hidden, rng), Linear::random(hidden, width, rng)};
  }
};

/// x [N, H*hd] (heads concatenated along columns, head h = columns h*hd..) into
/// dst [H, N, hd], contiguous.
inline void split_heads(const Matrix& x, index_t H, float* dst) {
  effattn::detail::require(H > 0 && x.cols() % H == 0, "nn::split_heads", "H", "must divide the width ", x.cols(), ", got ", H);
  const index_t N = x.rows(), hd = x.cols() / H;
  for (index_t h = 0; h < H; ++h)
    for (index_t n = 0; n < N; ++n)
      for (index_t e = 0; e < hd; ++e) dst[(h * N + n) * hd + e] = x(n, h * hd + e);
}

/// The inverse of split_heads: src [H, N, hd] into y [N, H*hd].
inline void merge_heads(const float* src, index_t H, index_t N, index_t hd, Matrix& y) {
  const char* op = "nn::merge_heads";
  effattn::detail::require(H > 0 && N >= 0 && hd > 0, op, "shape", "must be positive, got H=", H, " N=", N, " hd=", hd);
  detail::checked_product(op, "N * H * hd", N, H, hd);
  y.resize(N, H * hd);
  for (index_t h = 0; h < H; ++h)
    for (index_t n = 0; n < N; ++n)
      for (index_t e = 0; e < hd; ++e) y(n, h * hd + e) = src[(h * N + n) * hd + e];
}

}  // namespace nn
EFFATTN_NAMESPACE_END
