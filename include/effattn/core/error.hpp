// SPDX-License-Identifier: MIT
// effattn: the exceptions thrown at public entry points.
#pragma once

#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

#include "config.hpp"

EFFATTN_NAMESPACE_BEGIN

/// Base of every effattn input error. Derives from std::invalid_argument, so a
/// caller can catch either. The message always names the operator and the
/// parameter, and for shapes the expected and the actual shape.
class invalid_argument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A tensor has the wrong rank, extents, strides or a null pointer.
class shape_error : public invalid_argument {
 public:
  using invalid_argument::invalid_argument;
};

/// A scalar parameter or option is out of its documented range.
class parameter_error : public invalid_argument {
 public:
  using invalid_argument::invalid_argument;
};

namespace detail {
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

template <class Container>
std::string shape_str(const Container& c) {
  std::ostringstream os;
  os << '[';
  bool first = true;
  for (auto x : c) {
    if (!first) os << ',';
    os << x;
    first = false;
  }
  os << ']';
  return os.str();
}
}  // namespace detail

namespace detail {
/// a * b for shape arithmetic (extents, element counts, offsets); throws
/// shape_error("<op>: <what> ... overflows the index type") instead of wrapping.
/// Every product of user-given extents goes through here or checked_add.
template <class I>
inline I checked_mul(I a, I b, const char* op, const char* what) {
  I r{};
#if defined(__GNUC__) || defined(__clang__)
  const bool overflow = __builtin_mul_overflow(a, b, &r);
#else
  const bool overflow = a != 0 && (r = a * b, r / a != b);
#endif
  if (overflow)
    EFFATTN_THROW(shape_error(concat(op, ": ", what, " = ", a, " * ", b, " overflows the index type")));
  return r;
}
/// a + b for shape arithmetic; throws shape_error on overflow (see checked_mul).
template <class I>
inline I checked_add(I a, I b, const char* op, const char* what) {
  I r{};
#if defined(__GNUC__) || defined(__clang__)
  const bool overflow = __builtin_add_overflow(a, b, &r);
#else
  const bool overflow = (b > 0 && a > std::numeric_limits<I>::max() - b) || (b < 0 && a < std::numeric_limits<I>::min() - b);
  r = overflow ? I{} : a + b;
#endif
  if (overflow)
    EFFATTN_THROW(shape_error(concat(op, ": ", what, " = ", a, " + ", b, " overflows the index type")));
  return r;
}
/// The product of several extents, checked (see checked_mul).
template <class I, class... More>
inline I checked_product(const char* op, const char* what, I first, More... more) {
  I r = first;
  ((r = checked_mul(r, static_cast<I>(more), op, what)), ...);
  return r;
}

/// Throws parameter_error("<op>: <param> <what>") unless cond holds.
template <class... Parts>
inline void require(bool cond, const char* op, const char* param, const Parts&... what) {
  if (!cond) EFFATTN_THROW(parameter_error(concat(op, ": ", param, " ", what...)));
}

}  // namespace detail

EFFATTN_NAMESPACE_END
