// SPDX-License-Identifier: MIT
// effattn: non-owning strided views over caller memory, and their checks.
#pragma once

#include <algorithm>
#include <utility>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <type_traits>

#include "config.hpp"
#include "error.hpp"

EFFATTN_NAMESPACE_BEGIN

/// A non-owning, row-major-indexed view of a rank-`Rank` tensor with element
/// strides. `View<const float, 4>` reads, `View<float, 4>` writes. Nothing is
/// copied: memory owned by PyTorch, NumPy, an arena or an Eigen tensor is used
/// in place. Strides are in elements (not bytes) and must be >= 0; a stride of 0
/// broadcasts an input along that dimension (never allowed for outputs).
template <class T, int Rank>
class View {
  static_assert(Rank >= 1, "effattn::View needs rank >= 1");

 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using extents_type = std::array<index_t, Rank>;
  static constexpr int rank = Rank;

  View() = default;
  /// Contiguous row-major view.
  View(T* data, const extents_type& shape) : data_(data), shape_(shape) {
    // A stride past the index type saturates (never wraps): check_view then
    // rejects such a view, unless it is empty and its strides never matter.
    index_t s = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      strides_[d] = s;
      s = saturating_mul(s, shape_[d] > 0 ? shape_[d] : 1);
    }
  }
  /// Strided view (element strides).
  View(T* data, const extents_type& shape, const extents_type& strides)
      : data_(data), shape_(shape), strides_(strides) {}

  /// A writable view converts to a read-only one.
  template <class U, class = std::enable_if_t<std::is_same<const U, T>::value && !std::is_same<U, T>::value>>
  View(const View<U, Rank>& o) : data_(o.data()), shape_(o.shape()), strides_(o.strides()) {}

  T* data() const { return data_; }
  const extents_type& shape() const { return shape_; }
  const extents_type& strides() const { return strides_; }
  index_t dim(int d) const { return shape_[d]; }
  index_t stride(int d) const { return strides_[d]; }

  /// Number of elements (0 if any extent is 0).
  /// Number of elements (0 if any extent is 0). Meaningful for a checked view
  /// (detail::check_view rejects shapes whose element count overflows).
  index_t size() const {
    if (empty()) return 0;
    index_t n = 1;
    for (auto e : shape_) n *= e;
    return n;
  }
  /// True when some extent is 0 (never overflows, whatever the shape).
  bool empty() const {
    for (auto e : shape_)
      if (e == 0) return true;
    return false;
  }

  /// True when the elements are packed row-major with no gaps (an empty
  /// view holds no element: it is contiguous).
  bool is_contiguous() const {
    if (empty()) return true;
    index_t s = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      if (shape_[d] != 1 && strides_[d] != s) return false;
      s = saturating_mul(s, shape_[d]);
    }
    return true;
  }

  template <class... I>
  T& operator()(I... idx) const {
    static_assert(sizeof...(I) == Rank, "effattn::View: wrong number of indices");
    return data_[offset({static_cast<index_t>(idx)...})];
  }

  /// Offset in elements of the given multi-index.
  index_t offset(const extents_type& ix) const {
    index_t off = 0;
    for (int d = 0; d < Rank; ++d) off += ix[d] * strides_[d];
    return off;
  }

 private:
  static index_t saturating_mul(index_t a, index_t b) {
    return b != 0 && a > std::numeric_limits<index_t>::max() / b ? std::numeric_limits<index_t>::max() : a * b;
  }
  T* data_ = nullptr;
  extents_type shape_{};
  extents_type strides_{};
};

template <class T, int Rank>
using ConstView = View<const T, Rank>;

/// Contiguous row-major view over `data` with the given shape.
template <class T, class... E>
View<T, sizeof...(E)> make_view(T* data, E... extents) {
  return View<T, sizeof...(E)>(data, {static_cast<index_t>(extents)...});
}

namespace detail {

/// Largest element offset a view can address, or -1 if empty. Throws on overflow.
template <class T, int R>
index_t max_offset(const View<T, R>& v, const char* op, const char* name) {
  if (v.empty()) return -1;
  index_t off = 0;
  for (int d = 0; d < R; ++d) {
    const index_t e = v.dim(d) - 1, s = v.stride(d);
    if (e > 0 && s > (std::numeric_limits<index_t>::max() - off) / e)
      EFFATTN_THROW(shape_error(concat(op, ": ", name, " shape ", shape_str(v.shape()), " with strides ",
                                       shape_str(v.strides()), " overflows the index type")));
    off += e * s;
  }
  return off;
}

/// One past the last byte of the element at offset `last` from p, in
/// end_byte; false when that wraps the address space.
template <class T>
bool byte_end(T* p, index_t last, std::uintptr_t& end_byte) {
  const auto base = reinterpret_cast<std::uintptr_t>(p);
  std::uintptr_t bytes = 0;
#if defined(__GNUC__) || defined(__clang__)
  return !__builtin_mul_overflow(static_cast<std::uintptr_t>(last), sizeof(T), &bytes) &&
         !__builtin_add_overflow(bytes, sizeof(T), &bytes) && !__builtin_add_overflow(base, bytes, &end_byte);
#else
  const auto mx = std::numeric_limits<std::uintptr_t>::max();
  if (static_cast<std::uintptr_t>(last) > (mx - sizeof(T)) / sizeof(T)) return false;
  bytes = (static_cast<std::uintptr_t>(last) + 1) * sizeof(T);
  if (base > mx - bytes) return false;
  end_byte = base + bytes;
  return true;
#endif
}

/// Checks a view's pointer, extents and strides; `writable` also demands that no
/// two elements share an address (so a write never clobbers another element).
template <class T, int R>
void check_view(const View<T, R>& v, const char* op, const char* name, bool writable) {
  for (int d = 0; d < R; ++d) {
    if (v.dim(d) < 0)
      EFFATTN_THROW(shape_error(concat(op, ": ", name, " has a negative extent: shape ", shape_str(v.shape()))));
    if (v.stride(d) < 0)
      EFFATTN_THROW(shape_error(concat(op, ": ", name, " has a negative stride: strides ", shape_str(v.strides()),
                                       " for shape ", shape_str(v.shape()))));
  }
  // An empty view holds no element: any pointer and any other extent will do
  // (whatever the order of its extents). Otherwise the element count itself
  // must not overflow.
  if (v.empty()) return;
  index_t n = 1;
  for (int d = 0; d < R; ++d) {
    if (n > std::numeric_limits<index_t>::max() / v.dim(d))
      EFFATTN_THROW(shape_error(concat(op, ": ", name, " shape ", shape_str(v.shape()), " overflows the index type")));
    n *= v.dim(d);
  }
  if (v.data() == nullptr)
    EFFATTN_THROW(shape_error(concat(op, ": ", name, " is a null pointer with shape ", shape_str(v.shape()))));
  const index_t last = max_offset(v, op, name);
  // The addressed bytes must not run past the end of the address space (a
  // huge stride that fits the index type can still wrap the pointer).
  std::uintptr_t end_byte = 0;
  if (!byte_end(v.data(), last, end_byte))
    EFFATTN_THROW(shape_error(concat(op, ": ", name, " shape ", shape_str(v.shape()), " with strides ",
                                     shape_str(v.strides()), " addresses past the end of memory")));
  if (!writable) return;
  // Non-overlap: order the non-trivial dimensions by stride; each stride must
  // step past the largest offset the smaller ones reach (no overflow: that
  // offset is bounded by max_offset, checked above).
  std::array<int, R> order{};
  int m = 0;
  for (int d = 0; d < R; ++d)
    if (v.dim(d) > 1) order[m++] = d;
  for (int a = 1; a < m; ++a)  // insertion sort: R is tiny
    for (int b = a; b > 0 && v.stride(order[b]) < v.stride(order[b - 1]); --b) std::swap(order[b], order[b - 1]);
  index_t reach = 0;
  for (int k = 0; k < m; ++k) {
    const int d = order[k];
    if (v.stride(d) <= reach)
      EFFATTN_THROW(shape_error(concat(op, ": output ", name, " has overlapping elements: shape ",
                                       shape_str(v.shape()), " strides ", shape_str(v.strides()))));
    reach += (v.dim(d) - 1) * v.stride(d);
  }
}

/// Demands an exact shape. `names` are the symbolic extents for the message,
/// e.g. check_shape(k, "flash_attention", "k", "[B,Hkv,Nk,D]", {2,4,128,64}).
template <class T, int R>
void check_shape(const View<T, R>& v, const char* op, const char* name, const char* names,
                 const std::array<index_t, R>& expected) {
  if (v.shape() != expected)
    EFFATTN_THROW(shape_error(concat(op, ": ", name, " must be ", names, "=", shape_str(expected), ", got ",
                                     shape_str(v.shape()))));
}

/// True when the byte ranges spanned by two views intersect.
template <class A, int RA, class B, int RB>
bool ranges_overlap(const View<A, RA>& a, const View<B, RB>& b) {
  if (a.empty() || b.empty()) return false;
  // Both views passed check_view, so their byte ranges end inside the address
  // space; a range that would not is taken to reach its end (conservative).
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data());
  const auto b0 = reinterpret_cast<std::uintptr_t>(b.data());
  std::uintptr_t a1 = 0, b1 = 0;
  if (!byte_end(a.data(), max_offset(a, "", ""), a1)) a1 = std::numeric_limits<std::uintptr_t>::max();
  if (!byte_end(b.data(), max_offset(b, "", ""), b1)) b1 = std::numeric_limits<std::uintptr_t>::max();
  return a0 < b1 && b0 < a1;
}

/// Throws if the output `out` shares memory with the input `in`.
template <class A, int RA, class B, int RB>
void check_no_alias(const View<A, RA>& out, const char* out_name, const View<B, RB>& in, const char* in_name,
                    const char* op) {
  if (ranges_overlap(out, in))
    EFFATTN_THROW(shape_error(concat(op, ": output ", out_name, " must not share memory with input ", in_name)));
}

}  // namespace detail
EFFATTN_NAMESPACE_END
