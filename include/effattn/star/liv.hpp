// SPDX-License-Identifier: MIT
// effattn::star: the pieces every LIV operator (STAR, Thomas et al., ICLR 2025,
// arXiv 2411.17800) shares, for inference on the CPU.
//
// The operator contract. Every LIV class `Op` (liv_mlp.hpp, liv_conv.hpp,
// liv_recurrence.hpp, liv_attention.hpp, and Differential<Op> in
// liv_differential.hpp) provides
//
//   using Config = ...;                       // shapes and hyper-parameters
//   struct State { ...; index_t length; };    // cache / recurrent state; length = tokens consumed
//   Op(const Config& cfg, std::uint64_t seed);// weights random from a seed (parameter_error on a bad cfg)
//   index_t width() const;                    // C, the model width
//   State make_state(index_t reserve = 0) const;       // a fresh state (reserve: expected tokens, a hint)
//   void forward(const Matrix& x, Matrix& y, const Executor& ex = {}) const;
//                                             // the sequence forward (prefill) from a fresh state:
//                                             // x [N, C] -> y [N, C], causal
//   void prefill(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const;
//                                             // the same, continuing from s and leaving s after x
//   void step(const Matrix& x, State& s, Matrix& y, const Executor& ex = {}) const;
//                                             // one token: x [1, C] -> y [1, C]
//   index_t param_count() const;              // number of weights (floats)
//   index_t cache_bytes(index_t context) const;// bytes of State after `context` tokens (payload only;
//                                             // parameter_error for context < 0)
//
// Decisions shared by every operator:
// - Batch 1: a sequence is one row-major nn::Matrix [N, C] (rows = tokens). A
//   batch runs as independent calls (or independent States for decoding).
// - Weights use PyTorch's Linear layout [out, in] (nn::Linear), projections
//   have no bias unless a family says otherwise (LLaMA / LFM2 / Mamba
//   convention); Linear::random draws U(-1/sqrt(in), 1/sqrt(in)) from a
//   std::mt19937_64 seeded with the operator's seed.
// - Every projection runs through nn::linear with the caller's Executor, and
//   every elementwise / scan / convolution loop of an operator runs in fixed
//   work items on detail::parallel_items through the core's small-work rule
//   (detail::executor_for), so results are bit-identical for any thread count.
// - step(x, s, y) is prefill with N = 1; chaining step over a sequence equals
//   forward up to the summation order of nn::linear (its <= 4-row GEMV path
//   against its tiled contraction): a few float ulps, no other difference.
// - Checks (before anything is written): executor num_threads >= 0
//   (parameter_error); x [N, C] (shape_error naming the operator, the expected
//   and the actual shape); step needs N = 1; y must not be x; a State must
//   come from an operator of the same shape (shape_error).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../nn/layers.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace star {

using Matrix = nn::Matrix;
using Vector = nn::Vector;

namespace detail {

using effattn::detail::concat;

/// SplitMix64: derives independent seeds for the parts of one operator.
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t k) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (k + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline index_t linear_params(const nn::Linear& l) { return l.weight.size() + l.bias.size(); }

/// x * sigmoid(x), torch's SiLU.
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
/// exp(x) in float without a library call, so that loops over it vectorise
/// (Cephes' expf: x = n ln2 + r with ln2 split in two, a degree-6 polynomial
/// for e^r, 2^n from the exponent bits). Relative error within 2 float ulps
/// of std::exp on [-87, 88]; x is clamped to [-87.3, 88.3] (e^-87.3 ~ 1e-38:
/// a tiny positive number, never 0 or a denormal).
inline float exp_fast(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  // n = round(x / ln2). GCC 12 vectorises neither std::floor (without
  // -fno-trapping-math) nor an integer conversion of a rounded value here, so
  // the 1.5 * 2^23 trick rounds; -ffast-math would fold it to nothing, and
  // there std::floor vectorises.
  const float t = x * 1.44269504088896341f;
#if defined(__FAST_MATH__)
  const float n = std::floor(t + 0.5f);
#else
  const float n = (t + 12582912.0f) - 12582912.0f;
#endif
  const std::int32_t ni = static_cast<std::int32_t>(n);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * (r * r) + r + 1.0f;
  const std::int32_t bits = (ni + 127) * (1 << 23);
#if defined(__GNUC__) || defined(__clang__)
  return e * __builtin_bit_cast(float, bits);  // (memcpy or a union stop GCC 12 vectorising)
#else
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return e * scale;
#endif
}

/// log(1 + t) for t in [0, 1] without a library call (vectorisable): Cephes'
/// logf polynomial on f = t (t < sqrt 2 - 1, an exact argument, so small t
/// keep their relative precision) or on f = (1 + t) / 2 - 1 plus ln 2.
/// Within 4 float ulps (relative error 2.4e-7) of log1p on [0, 1] (tested).
inline float log1p_unit(float t) {
  const bool hi = t >= 0.41421356f;
  const float f = hi ? (1.0f + t) * 0.5f - 1.0f : t;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float y = p * f * z - 0.5f * z + f;
  if (hi) y += 0.693147180559945f;
  return y;
}

/// torch.nn.functional.softplus (beta 1, threshold 20), as
/// max(x, 0) + log1p(exp(-|x|)) with exp_fast and log1p_unit, so loops over it
/// vectorise: within 4 float ulps of log1p(exp(x)) (tested); x > 20 gives
/// x, as torch's threshold does.
inline float softplus(float x) {
  const float e = exp_fast(-std::fabs(x));
  return x > 20.0f ? x : std::max(x, 0.0f) + log1p_unit(e);
}

/// The checks of a sequence call: executor, x [N, C], y not x.
inline void check_sequence(const char* op, const Matrix& x, const Matrix& y, index_t C, const Executor& ex) {
  effattn::detail::check_executor(ex, op);
  if (x.cols() != C)
    EFFATTN_THROW(shape_error(concat(op, ": x must be [N,C]=[", x.rows(), ",", C, "], got [", x.rows(), ",",
                                     x.cols(), "]")));
  if (&x == &y) EFFATTN_THROW(shape_error(concat(op, ": y must not be x")));
}

/// The checks of step: a sequence call with N = 1.
inline void check_step(const char* op, const Matrix& x, const Matrix& y, index_t C, const Executor& ex) {
  check_sequence(op, x, y, C, ex);
  if (x.rows() != 1)
    EFFATTN_THROW(shape_error(concat(op, ": x must be one token [1,C]=[1,", C, "], got [", x.rows(), ",", x.cols(),
                                     "]")));
}

/// cache_bytes' argument: a token count >= 0.
inline void check_context(const char* op, index_t context) {
  effattn::detail::require(context >= 0, op, "context", "must be >= 0, got ", context);
}

/// A State part must have the shape its operator gives it.
inline void check_state(const char* op, const char* what, const Matrix& m, index_t rows, index_t cols) {
  if (m.rows() != rows || m.cols() != cols)
    EFFATTN_THROW(shape_error(concat(op, ": state ", what, " must be [", rows, ",", cols, "], got [", m.rows(), ",",
                                     m.cols(), "] (a State from another operator?)")));
}

/// A projection's bias is [out] or empty.
inline bool bias_fits(const nn::Linear& l) { return l.bias.size() == 0 || l.bias.size() == l.weight.rows(); }

/// A weight passed in (the *_with entry points) must have its operator's shape.
inline void check_weight(const char* op, const char* what, const Matrix& m, index_t rows, index_t cols) {
  if (m.rows() != rows || m.cols() != cols)
    EFFATTN_THROW(shape_error(concat(op, ": ", what, " must be [", rows, ",", cols, "], got [", m.rows(), ",",
                                     m.cols(), "]")));
}

/// Runs fn(begin, end) over [0, n) in fixed chunks of `chunk` (the split never
/// depends on the thread count) on the executor the small-work rule gives for
/// `work` element operations.
template <class Fn>
void parallel_chunks(const Executor& ex, double work, index_t n, index_t chunk, Fn&& fn) {
  if (n <= 0) return;
  const index_t items = (n + chunk - 1) / chunk;
  effattn::detail::parallel_items(effattn::detail::executor_for(ex, work), items, [] { return 0; },
                                  [&](index_t item, int&) {
                                    const index_t b = item * chunk;
                                    fn(b, std::min(n, b + chunk));
                                  });
}

/// Uniform U(-s, s) weights into m (row by row).
template <class Rng>
void fill_uniform(Matrix& m, float s, Rng& rng) {
  std::uniform_real_distribution<float> u(-s, s);
  for (index_t i = 0; i < m.size(); ++i) m.data()[i] = u(rng);
}

/// Causal depthwise convolution over time (torch Conv1d(D, D, L, groups=D,
/// padding=L-1) cut to the first N outputs, as Hugging Face's Lfm2ShortConv and
/// llama.cpp's ggml_ssm_conv compute it):
///
///   y[t, d] = bias[d] + sum_{k=0}^{L-1} w[d, k] * x[t - (L-1) + k, d]
///
/// tap 0 multiplies the OLDEST input, tap L-1 the current one. Inputs before
/// the sequence come from `tail` [L-1, D] (the last L-1 inputs of the previous
/// call, oldest first; zeros for a fresh state), which is then replaced by the
/// last L-1 rows of [tail; x]. w [D, L] (torch's [D, 1, L] without the middle
/// axis), bias [D] or empty. The sum runs k = 0..L-1 in float, per (t, d),
/// the same for any N, so a step equals the prefill bit for bit.
inline void causal_depthwise_conv(const Matrix& x, const Matrix& w, const Vector& bias, Matrix& tail, Matrix& y,
                                  const Executor& ex) {
  const index_t N = x.rows(), D = x.cols(), L = w.cols();
  y.resize(N, D);
  const bool has_bias = bias.size() != 0;
  parallel_chunks(ex, double(N) * double(D) * double(L), N, 64, [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      float* yr = y.data() + t * D;
      for (index_t d = 0; d < D; ++d) yr[d] = has_bias ? bias[d] : 0.0f;
      for (index_t k = 0; k < L; ++k) {
        const index_t src = t - (L - 1) + k;  // < 0: from the tail
        const float* xr = src >= 0 ? x.data() + src * D : tail.data() + (src + L - 1) * D;
        const float* wk = w.data() + k;  // w(d, k) = wk[d * L]
        for (index_t d = 0; d < D; ++d) yr[d] += wk[d * L] * xr[d];
      }
    }
  });
  // New tail: the last L-1 rows of [tail; x].
  if (L > 1) {
    Matrix nt(L - 1, D);
    for (index_t r = 0; r < L - 1; ++r) {
      const index_t src = N - (L - 1) + r;
      const float* from = src >= 0 ? x.data() + src * D : tail.data() + (src + L - 1) * D;
      std::copy(from, from + D, nt.data() + r * D);
    }
    tail.swap(nt);
  }
}

}  // namespace detail
}  // namespace star
EFFATTN_NAMESPACE_END
