// SPDX-License-Identifier: MIT
// effattn: views over Eigen tensors (no copies), in either storage order.
#pragma once

#include <array>
#include <limits>
#include <unsupported/Eigen/CXX11/Tensor>

#include "../core/view.hpp"

EFFATTN_NAMESPACE_BEGIN

/// A view of an Eigen tensor, tensor map or tensor ref with direct access.
/// Works for RowMajor and ColMajor storage: indices are always Eigen's own
/// (t(i0, i1, ...)), and the strides follow the storage order. Use RowMajor
/// tensors when the memory is shared with PyTorch or NumPy.
///
///   Eigen::Tensor<float, 4, Eigen::RowMajor> q(B, H, N, D);
///   effattn::flash_attention<float>(effattn::view(q), ...);
template <class TensorLike>
auto view(TensorLike& t) {
  using Scalar = std::remove_reference_t<decltype(*t.data())>;
  constexpr int R = static_cast<int>(std::remove_reference_t<TensorLike>::NumIndices);
  constexpr bool row_major = (static_cast<int>(std::remove_reference_t<TensorLike>::Layout) == Eigen::RowMajor);
  std::array<index_t, R> shape{}, strides{};
  for (int d = 0; d < R; ++d) shape[d] = static_cast<index_t>(t.dimension(d));
  // Packed strides, as View's contiguous constructor makes them: an extent of
  // 0 counts as 1, so an empty tensor still gets the strides of its storage
  // order. A TensorMap may claim any extents: a stride that would overflow is
  // a shape_error for a tensor with elements, and 0 for an empty one (which
  // addresses nothing).
  bool empty = false;
  for (int d = 0; d < R; ++d) empty = empty || shape[d] == 0;
  index_t s = 1;
  for (int k = 0; k < R; ++k) {
    const int d = row_major ? R - 1 - k : k;
    strides[d] = s;
    if (k + 1 == R || shape[d] <= 1) continue;
    if (s > std::numeric_limits<index_t>::max() / shape[d]) {
      if (!empty)
        EFFATTN_THROW(shape_error(detail::concat("effattn::view: tensor of shape ", detail::shape_str(shape),
                                                 " overflows the index type")));
      s = 0;
    } else {
      s *= shape[d];
    }
  }
  return View<Scalar, R>(t.data(), shape, strides);
}

/// A read-only view of an Eigen tensor.
template <class TensorLike>
auto cview(const TensorLike& t) {
  auto v = view(const_cast<TensorLike&>(t));
  using Scalar = std::remove_const_t<typename decltype(v)::element_type>;
  return ConstView<Scalar, decltype(v)::rank>(v);
}

/// An Eigen RowMajor TensorMap over a contiguous view's memory.
///
/// Throws shape_error for an invalid view (negative extents or strides, a
/// null pointer with elements, an overflowing shape; detail::check_view) or a
/// non-empty view that is not contiguous. An empty view maps to an empty
/// tensor whatever its strides (no element is ever addressed).
template <class T, int R>
Eigen::TensorMap<Eigen::Tensor<T, R, Eigen::RowMajor>> as_tensor_map(const View<T, R>& v) {
  detail::check_view(v, "as_tensor_map", "v", false);
  // A checked non-empty view's extents multiply without overflow, so
  // is_contiguous() is safe; an empty one is taken as it is.
  if (!v.empty() && !v.is_contiguous())
    EFFATTN_THROW(shape_error(detail::concat("as_tensor_map: the view must be contiguous, got shape ",
                                             detail::shape_str(v.shape()), " strides ",
                                             detail::shape_str(v.strides()))));
  std::array<Eigen::Index, R> dims{};
  for (int d = 0; d < R; ++d) dims[d] = static_cast<Eigen::Index>(v.dim(d));
  return Eigen::TensorMap<Eigen::Tensor<T, R, Eigen::RowMajor>>(v.data(), dims);
}

EFFATTN_NAMESPACE_END
