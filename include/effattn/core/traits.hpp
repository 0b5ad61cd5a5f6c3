// SPDX-License-Identifier: MIT
// effattn: small type helpers shared by every operator.
#pragma once

#include "config.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace detail {

/// T in a non-deduced context: `attention<float>(q, k, v, out)` takes views
/// (or anything convertible to them, e.g. a mutable view for a const one)
/// without asking the compiler to deduce T from each argument.
template <class T>
struct identity {
  using type = T;
};
template <class T>
using identity_t = typename identity<T>::type;

}  // namespace detail
EFFATTN_NAMESPACE_END
