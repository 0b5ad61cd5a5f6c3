// SPDX-License-Identifier: MIT
// effattn: the exceptions thrown at public entry points.
#pragma once

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

/// Throws parameter_error("<op>: <param> <what>") unless cond holds.
template <class... Parts>
inline void require(bool cond, const char* op, const char* param, const Parts&... what) {
  if (!cond) EFFATTN_THROW(parameter_error(detail::concat(op, ": ", param, " ", what...)));
}

EFFATTN_NAMESPACE_END
