// SPDX-License-Identifier: MIT
// effattn: 16-bit storage types for keys and values (IEEE binary16 and
// bfloat16), and their conversions.
//
// Decoding reads the whole key/value cache once per token and does two
// multiply-adds per element it reads, so its speed is the memory bandwidth.
// Keys and values stored in 16 bits halve those bytes; the engine widens them
// to float as it loads them and computes and accumulates in float (queries,
// outputs, scores and softmax statistics stay float). See docs/attention.md.
//
// float16:  1 sign, 5 exponent, 10 mantissa bits: relative rounding error
//           2^-11 (4.9e-4), largest finite 65504 (larger values become inf).
// bfloat16: 1 sign, 8 exponent, 7 mantissa bits: relative error 2^-8
//           (3.9e-3), the range of float.
// Both round to nearest, ties to even; NaN stays NaN, inf stays inf.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "config.hpp"
#include "isa.hpp"

#if EFFATTN_DISPATCH || defined(__F16C__)
#  include <immintrin.h>
#endif

EFFATTN_NAMESPACE_BEGIN

namespace detail {

inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

/// float -> binary16 bits, round to nearest even (portable; the F16C
/// instruction gives the same bits for every non-NaN input).
inline std::uint16_t float_to_half_bits(float f) {
  std::uint32_t u = float_bits(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  if (u >= 0x47800000u)  // |f| >= 65536 (overflows after rounding), inf or NaN
    return static_cast<std::uint16_t>(sign | (u > 0x7f800000u ? 0x7e00u | ((u >> 13) & 0x3ffu) : 0x7c00u));
  if (u < 0x38800000u) {
    // |f| < 2^-14: a subnormal half (or zero). Adding 0.5 puts the half's
    // mantissa bits (units of 2^-24) at the bottom of the float's mantissa,
    // rounded to nearest even by the float addition itself.
    const float r = bits_float(u) + 0.5f;
    return static_cast<std::uint16_t>(sign | (float_bits(r) - 0x3f000000u));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to
  // nearest even; a carry may roll into the exponent (up to inf), as it should.
  const std::uint32_t odd = (u >> 13) & 1u;
  u += 0xc8000fffu + odd;  // (15 - 127) << 23, plus the rounding bias
  return static_cast<std::uint16_t>(sign | (u >> 13));
}

/// binary16 bits -> float (exact).
inline float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t em = h & 0x7fffu;
  if (em >= 0x7c00u) return bits_float(sign | 0x7f800000u | ((em & 0x3ffu) << 13));  // inf, NaN
  if (em >= 0x0400u) return bits_float(sign | ((em << 13) + 0x38000000u));          // normal
  const float sub = static_cast<float>(em) * 5.9604644775390625e-8f;                   // em * 2^-24, exact
  return bits_float(sign | float_bits(sub));
}

/// float -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN.
inline std::uint16_t float_to_bfloat16_bits(float f) {
  const std::uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float bfloat16_bits_to_float(std::uint16_t h) { return bits_float(static_cast<std::uint32_t>(h) << 16); }

}  // namespace detail

/// IEEE binary16, a storage type: construct from float (rounded), convert to
/// float (exact). No arithmetic: compute in float.
struct float16 {
  std::uint16_t bits = 0;
  float16() = default;
  explicit float16(float f) : bits(detail::float_to_half_bits(f)) {}
  explicit operator float() const { return detail::half_bits_to_float(bits); }
  explicit operator double() const { return detail::half_bits_to_float(bits); }
  static float16 from_bits(std::uint16_t b) {
    float16 h;
    h.bits = b;
    return h;
  }
};

/// bfloat16 (the upper half of a float), a storage type like float16.
struct bfloat16 {
  std::uint16_t bits = 0;
  bfloat16() = default;
  explicit bfloat16(float f) : bits(detail::float_to_bfloat16_bits(f)) {}
  explicit operator float() const { return detail::bfloat16_bits_to_float(bits); }
  explicit operator double() const { return detail::bfloat16_bits_to_float(bits); }
  static bfloat16 from_bits(std::uint16_t b) {
    bfloat16 h;
    h.bits = b;
    return h;
  }
};

static_assert(sizeof(float16) == 2 && sizeof(bfloat16) == 2, "effattn: 16-bit types must be 2 bytes");
static_assert(std::is_trivially_copyable<float16>::value && std::is_trivially_copyable<bfloat16>::value,
              "effattn: 16-bit types must be trivially copyable");

/// True for the 16-bit storage types (float16, bfloat16, const or not).
template <class T>
struct is_half_storage
    : std::integral_constant<bool, std::is_same<std::remove_cv_t<T>, float16>::value ||
                                       std::is_same<std::remove_cv_t<T>, bfloat16>::value> {};

/// How a cache or buffer of keys/values is stored.
enum class Storage {
  float32,   ///< float (exact)
  float16,   ///< effattn::float16
  bfloat16,  ///< effattn::bfloat16
  int8,      ///< int8 codes plus one float scale per (batch, head, token) row
             ///< (core/quant.hpp's QuantizedKV); where a method offers it
};

inline const char* to_string(Storage s) {
  switch (s) {
    case Storage::float32: return "float32";
    case Storage::float16: return "float16";
    case Storage::bfloat16: return "bfloat16";
    case Storage::int8: return "int8";
  }
  return "unknown";
}

/// Bytes per element of a storage (int8: the code's byte; its row scales
/// add 4 bytes per row of D elements on top).
inline int storage_bytes(Storage s) { return s == Storage::float32 ? 4 : s == Storage::int8 ? 1 : 2; }

namespace detail {
#if EFFATTN_DISPATCH
/// float -> float16 with F16C, 8 at a time; returns how many it converted.
/// Same bits as float_to_half_bits for every non-NaN input.
__attribute__((target("avx,f16c"))) inline std::ptrdiff_t convert_f16c(const float* src, float16* dst,
                                                                      std::ptrdiff_t n) {
  std::ptrdiff_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  return i;
}
#endif
}  // namespace detail

/// dst[i] = T(src[i]) for i < n: rounds floats into 16-bit storage (or
/// copies, for float). Vectorised with F16C where the active instruction-set
/// level has it (core/isa.hpp) or the build targets it.
inline void convert(const float* src, float* dst, std::ptrdiff_t n) {
  if (n > 0) std::memmove(dst, src, sizeof(float) * static_cast<std::size_t>(n));
}
inline void convert(const float* src, float16* dst, std::ptrdiff_t n) {
  std::ptrdiff_t i = 0;
#if EFFATTN_DISPATCH
  if (active_isa() != Isa::baseline) i = detail::convert_f16c(src, dst, n);
#elif defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  for (; i < n; ++i) dst[i] = float16(src[i]);
}
inline void convert(const float* src, bfloat16* dst, std::ptrdiff_t n) {
  for (std::ptrdiff_t i = 0; i < n; ++i) dst[i] = bfloat16(src[i]);
}
/// dst[i] = float(src[i]) (exact).
template <class H, std::enable_if_t<is_half_storage<H>::value, int> = 0>
inline void convert(const H* src, float* dst, std::ptrdiff_t n) {
  for (std::ptrdiff_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

EFFATTN_NAMESPACE_END
