// SPDX-License-Identifier: MIT
// effattn: keys and values quantized to int8, for decoding from a cache.
//
// Scheme: symmetric int8 with one float scale per (batch, head, token) row of
// D (or Dv) numbers, as llama.cpp's q8_0 does per block of 32 and ONNX
// Runtime's int8 KV cache per head:
//
//   scale = max_d |x[d]| / 127,   c[d] = round_to_nearest_even(x[d] / scale) in [-127, 127],
//   x[d] ~ scale * c[d]           (an all-zero row: scale 0, c 0).
//
// The error of each element is at most scale / 2 = max|x| / 254 (0.39% of the
// row's largest magnitude): about bfloat16's precision relative to the row's
// largest element, at half the bytes (one byte per element plus 4 bytes per
// row: 68 bytes per 64-dim row against 128 for float16, 256 for float).
// Quantize a row when it is appended to the cache (quantize_rows); the
// engine dequantizes as it reads (see attention() in attention/engine.hpp:
// the decode rows fold the scale into the dot product and the probability,
// the tiled path widens a block at a time), so attention runs on exactly the
// values scale * c, computed in float.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "config.hpp"
#include "error.hpp"
#include "view.hpp"

EFFATTN_NAMESPACE_BEGIN

/// Keys or values stored as int8 codes with one float scale per row:
/// element (b, h, n, d) is scale(b, h, n) * data(b, h, n, d).
/// data is [B, Hkv, N, D], scale [B, Hkv, N]; any strides, as other views.
struct QuantizedKV {
  View<const std::int8_t, 4> data;
  View<const float, 3> scale;
};

/// Quantizes `rows` rows of `dim` floats (row stride `ld` >= dim) into codes
/// (row stride `ldq` >= dim) and one scale per row (stride `ls`), by the
/// scheme above. A non-finite input element throws parameter_error (its row
/// would have no meaningful scale) before that row is written; rows before it
/// are written.
inline void quantize_rows(const float* x, index_t rows, index_t dim, index_t ld, std::int8_t* codes, index_t ldq,
                          float* scale, index_t ls) {
  if (rows < 0 || dim < 1 || ld < dim || ldq < dim || ls < 1)
    EFFATTN_THROW(shape_error(detail::concat("quantize_rows: need rows >= 0, dim >= 1, ld >= dim, ldq >= dim, ls >= 1; got rows=",
                                             rows, " dim=", dim, " ld=", ld, " ldq=", ldq, " ls=", ls)));
  if (rows > 0 && (x == nullptr || codes == nullptr || scale == nullptr))
    EFFATTN_THROW(parameter_error("quantize_rows: x, codes and scale must not be null"));
  for (index_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    float amax = 0;
    for (index_t d = 0; d < dim; ++d) {
      if (!std::isfinite(xr[d]))
        EFFATTN_THROW(parameter_error(detail::concat("quantize_rows: row ", r, " holds a non-finite value at ", d,
                                                     " (int8 keys/values need finite inputs)")));
      amax = std::max(amax, std::abs(xr[d]));
    }
    const float s = amax / 127.0f;
    scale[r * ls] = s;
    std::int8_t* cr = codes + r * ldq;
    if (s == 0.0f) {
      std::fill(cr, cr + dim, std::int8_t(0));
      continue;
    }
    const float inv = 127.0f / amax;
    for (index_t d = 0; d < dim; ++d) {
      // |x * inv| <= 127 up to rounding; the clamp keeps an inexact product in range.
      const float c = std::nearbyint(xr[d] * inv);
      cr[d] = static_cast<std::int8_t>(std::min(127.0f, std::max(-127.0f, c)));
    }
  }
}

/// Quantizes a [B, H, N, D] float tensor into int8 codes of the same shape and
/// scales [B, H, N] (any strides; outputs must not overlap the input).
inline void quantize(const ConstView<float, 4>& x, const View<std::int8_t, 4>& codes, const View<float, 3>& scale) {
  const char* op = "quantize";
  detail::check_view(x, op, "x", false);
  detail::check_view(codes, op, "codes", true);
  detail::check_view(scale, op, "scale", true);
  const index_t B = x.dim(0), H = x.dim(1), N = x.dim(2), D = x.dim(3);
  detail::check_shape(codes, op, "codes", "[B,H,N,D] as x", {B, H, N, D});
  detail::check_shape(scale, op, "scale", "[B,H,N]", {B, H, N});
  if (D < 1 && B * H * N > 0) EFFATTN_THROW(shape_error(detail::concat(op, ": x must have D >= 1, got x ", detail::shape_str(x.shape()))));
  // Row by row through a contiguous copy: any strides in and out.
  std::vector<float> row(static_cast<size_t>(std::max<index_t>(D, 1)));
  std::vector<std::int8_t> c(row.size());
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t n = 0; n < N; ++n) {
        for (index_t d = 0; d < D; ++d) row[static_cast<size_t>(d)] = x(b, h, n, d);
        float s = 0;
        quantize_rows(row.data(), 1, D, D, c.data(), D, &s, 1);
        for (index_t d = 0; d < D; ++d) codes(b, h, n, d) = c[static_cast<size_t>(d)];
        scale(b, h, n) = s;
      }
}

/// The float values a quantized tensor stands for, scale * code (computed in
/// float, as the engine computes them): for tests and inspection.
inline void dequantize(const QuantizedKV& q, const View<float, 4>& out) {
  const char* op = "dequantize";
  detail::check_view(q.data, op, "data", false);
  detail::check_view(q.scale, op, "scale", false);
  detail::check_view(out, op, "out", true);
  const index_t B = q.data.dim(0), H = q.data.dim(1), N = q.data.dim(2), D = q.data.dim(3);
  detail::check_shape(q.scale, op, "scale", "[B,H,N]", {B, H, N});
  detail::check_shape(out, op, "out", "[B,H,N,D] as data", {B, H, N, D});
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t n = 0; n < N; ++n) {
        const float s = q.scale(b, h, n);
        for (index_t d = 0; d < D; ++d) out(b, h, n, d) = s * static_cast<float>(q.data(b, h, n, d));
      }
}

EFFATTN_NAMESPACE_END
