// SPDX-License-Identifier: MIT
// Support for effattn's libFuzzer targets (tests/fuzz/fuzz_*.cpp).
//
// Every target follows one contract, the library's:
//   - the fuzz bytes decode into shapes, strides, parameters, options and a
//     thread count (FuzzInput); the harness only ever builds views that lie
//     inside buffers it owns, except for views it marks as "must be
//     rejected" (index or address overflow);
//   - outputs live in Guarded buffers: canary-filled, with guard zones on
//     both sides that must never change;
//   - a call that throws must throw an effattn::invalid_argument (anything
//     else traps) and leave every output byte as it was;
//   - a call that returns must give finite results where the float64
//     reference is finite and match it within a tolerance, and run
//     bit-identically with 1 and 2 threads.
// A violation calls fuzz_fail(), which prints the reason and traps, so
// libFuzzer saves the input as a crash.
#pragma once

#include <effattn/effattn.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

namespace fuzz {

using effattn::index_t;

[[noreturn]] inline void fuzz_fail(const std::string& why) {
  std::fprintf(stderr, "effattn fuzz: contract violated: %s\n", why.c_str());
  std::fflush(stderr);
  __builtin_trap();
}

inline void fuzz_check(bool ok, const std::string& why) {
  if (!ok) fuzz_fail(why);
}

/// Decodes the fuzz bytes. Reads past the end give zeros, so every input
/// (the empty one too) decodes to a valid, small case.
class FuzzInput {
 public:
  FuzzInput(const std::uint8_t* p, size_t n) : p_(p), n_(n) {}
  size_t remaining() const { return n_ - pos_; }

  std::uint8_t byte() { return pos_ < n_ ? p_[pos_++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(byte() | (byte() << 8)); }
  std::uint64_t u64() {
    std::uint64_t x = 0;
    for (int i = 0; i < 8; ++i) x |= static_cast<std::uint64_t>(byte()) << (8 * i);
    return x;
  }
  bool flag() { return byte() & 1; }
  /// An integer in [lo, hi] (hi - lo < 2^16 for an even spread).
  index_t range(index_t lo, index_t hi) {
    if (hi <= lo) return lo;
    const std::uint64_t span = static_cast<std::uint64_t>(hi - lo) + 1;
    return lo + static_cast<index_t>(u16() % span);
  }
  /// One of the listed values.
  template <class T, size_t N>
  T pick(const T (&options)[N]) {
    return options[byte() % N];
  }
  /// A "huge" index-type value of the kind that overflows shape products.
  index_t huge() {
    static const index_t options[] = {std::numeric_limits<index_t>::max(),
                                      std::numeric_limits<index_t>::max() - 1,
                                      index_t(1) << 62,
                                      (index_t(1) << 62) + 1,
                                      index_t(1) << 32,
                                      (index_t(1) << 31) + 7,
                                      std::numeric_limits<index_t>::max() / 3,
                                      std::numeric_limits<index_t>::min()};
    return pick(options);
  }
  /// A data value: mostly ordinary normals-ish numbers, sometimes extreme.
  float value() {
    const std::uint8_t kind = byte();
    if (kind < 232) return (static_cast<float>(static_cast<std::int8_t>(byte())) / 32.0f);
    static const float special[] = {0.0f, -0.0f, 1e30f, -1e30f, 1e-30f, 65504.0f, 3.0e38f, -3.0e38f};
    return special[kind % 8];
  }
  /// A possibly non-finite value (for inputs a contract must survive).
  float wild_value() {
    const std::uint8_t kind = byte();
    if (kind < 200) return value();
    static const float special[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                    -std::numeric_limits<float>::infinity(), 1e38f};
    return special[kind % 4];
  }

 private:
  const std::uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

/// A canary-filled buffer of n elements with guard zones on both sides. The
/// payload starts 64 bytes into an aligned block (and optionally one element
/// further, to test unaligned memory).
template <class T>
class Guarded {
 public:
  static constexpr size_t kGuard = 64;  // elements on each side
  explicit Guarded(size_t n, bool misalign = false) : n_(n), off_(kGuard + (misalign ? 1 : 0)), buf_(n + 2 * kGuard + 1) {
    fill_canary();
  }
  T* data() { return buf_.data() + off_; }
  const T* data() const { return buf_.data() + off_; }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return data()[i]; }
  const T& operator[](size_t i) const { return data()[i]; }

  /// Every byte outside the payload still holds the canary.
  bool guards_intact() const {
    for (size_t i = 0; i < buf_.size(); ++i)
      if ((i < off_ || i >= off_ + n_) && !is_canary(buf_[i])) return false;
    return true;
  }
  /// Every byte of the buffer, payload included, still holds the canary.
  bool untouched() const {
    for (const T& x : buf_)
      if (!is_canary(x)) return false;
    return true;
  }
  /// Canary everywhere (before a call whose outputs are checked).
  void fill_canary() {
    for (T& x : buf_) x = canary();
  }

  static T canary() {
    T x;
    std::memset(&x, 0xA5, sizeof(T));
    return x;
  }
  static bool is_canary(const T& x) {
    const T c = canary();
    return std::memcmp(&x, &c, sizeof(T)) == 0;
  }

 private:
  size_t n_, off_;
  std::vector<T> buf_;
};

/// A 4-d layout over a buffer the harness owns: shape, element strides, and
/// the number of elements the buffer must hold.
struct Layout4 {
  std::array<index_t, 4> shape{}, strides{};
  index_t span = 0;
};

/// Contiguous, [B,N,H,D]-permuted, padded rows, or (inputs only) a batch or
/// head broadcast with stride 0. With `free_unit_strides`, each dimension of
/// extent <= 1 may also get a huge stride (2^40: its stride is never used),
/// one more byte per such dimension.
inline Layout4 make_layout(FuzzInput& in, std::array<index_t, 4> s, bool input, bool free_unit_strides = false) {
  Layout4 L;
  L.shape = s;
  const int kind = in.byte() % (input ? 4 : 3);
  const index_t pad = kind == 2 ? in.range(1, 3) : 0;
  L.strides[3] = 1;
  if (kind == 1) {  // [B, N, H, D] in memory
    L.strides[1] = s[3] + pad;
    L.strides[2] = s[1] * L.strides[1];
    L.strides[0] = s[2] * L.strides[2];
  } else {
    L.strides[2] = s[3] + pad;
    L.strides[1] = s[2] * L.strides[2];
    L.strides[0] = s[1] * L.strides[1];
    if (kind == 3) L.strides[in.flag() ? 0 : 1] = 0;  // broadcast
  }
  if (free_unit_strides)
    for (int d = 0; d < 4; ++d)
      if (L.shape[d] <= 1 && in.flag()) L.strides[d] = index_t(1) << 40;
  index_t last = 0;
  bool empty = false;
  for (int d = 0; d < 4; ++d) {
    if (L.shape[d] == 0) empty = true;
    if (L.shape[d] > 1) last += (L.shape[d] - 1) * L.strides[d];
  }
  L.span = empty ? 0 : last + 1;
  return L;
}

/// x stored as T (float, double, or the 16-bit storage types).
template <class T>
T cast_value(float x) {
  return static_cast<T>(x);
}
template <>
inline effattn::float16 cast_value<effattn::float16>(float x) {
  return effattn::float16(x);
}
template <>
inline effattn::bfloat16 cast_value<effattn::bfloat16>(float x) {
  return effattn::bfloat16(x);
}

/// The data pointer of a vector, null when it is empty (as a caller's empty
/// std::vector may give).
template <class T>
T* data_or_null(std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}
template <class T>
const T* data_or_null(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}

/// A small value in [-3.2, 3.2].
inline float small_value(FuzzInput& in) { return static_cast<float>(static_cast<std::int8_t>(in.byte())) / 40.0f; }

/// A key: small, or (wild) sometimes NaN / +-inf. Large finite keys are left
/// out: their float dot products cancel catastrophically, which no tolerance
/// against a float64 oracle can tell from a bug.
inline float key_value(FuzzInput& in, bool wild) {
  if (wild && in.byte() >= 235) {
    static const float special[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                    -std::numeric_limits<float>::infinity()};
    return special[in.byte() % 3];
  }
  return small_value(in);
}
/// A value: small, or (wild) sometimes NaN / +-inf / +-1e30 / 65504 (a float
/// sum of a few hundred of them stays finite).
inline float value_value(FuzzInput& in, bool wild) {
  if (wild && in.byte() >= 225) {
    static const float special[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                    -std::numeric_limits<float>::infinity(), 1e30f, -1e30f, 65504.0f};
    return special[in.byte() % 6];
  }
  return small_value(in);
}

/// Runs f; returns true if it returned, false if it threw an
/// effattn::invalid_argument. Any other exception violates the contract
/// (std::bad_alloc included: a harness only makes shapes it can hold, so a
/// library allocation that fails means a size was not checked first).
template <class F>
bool accepted(F&& f, const char* what) {
  try {
    f();
    return true;
  } catch (const effattn::invalid_argument& e) {
    // The documented errors: a message naming the operator is required.
    fuzz_check(std::strlen(e.what()) > 0, std::string(what) + ": empty exception message");
    return false;
  } catch (const std::exception& e) {
    fuzz_fail(std::string(what) + ": undocumented exception: " + e.what());
  } catch (...) {
    fuzz_fail(std::string(what) + ": non-std exception");
  }
}

/// |got - want| <= atol + rtol * |want| for each element, NaN only where the
/// reference has NaN, infinities equal.
inline void check_close(const float* got, const double* want, size_t n, double atol, double rtol, const char* what) {
  for (size_t i = 0; i < n; ++i) {
    const double g = got[i], w = want[i];
    if (std::isnan(w)) continue;  // the reference itself is undefined here
    if (std::isnan(g)) fuzz_fail(std::string(what) + ": NaN where the reference is " + std::to_string(w) + " at " + std::to_string(i));
    if (std::isinf(w) || std::isinf(g)) {
      if (g != w) fuzz_fail(std::string(what) + ": got " + std::to_string(g) + ", want " + std::to_string(w) + " at " + std::to_string(i));
      continue;
    }
    if (std::fabs(g - w) > atol + rtol * std::fabs(w))
      fuzz_fail(std::string(what) + ": got " + std::to_string(g) + ", want " + std::to_string(w) + " at " +
                std::to_string(i));
  }
}

/// Bitwise equality of two buffers (thread bit-identity).
template <class T>
void check_bit_identical(const T* a, const T* b, size_t n, const char* what) {
  if (n && std::memcmp(a, b, n * sizeof(T)) != 0) fuzz_fail(std::string(what) + ": 1 and 2 threads differ");
}

}  // namespace fuzz
