// SPDX-License-Identifier: MIT
// effattn: views over Eigen tensors (no copies), in either storage order.
#pragma once

#include <array>
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
  index_t s = 1;
  if (row_major) {
    for (int d = R - 1; d >= 0; --d) {
      strides[d] = s;
      s *= shape[d];
    }
  } else {
    for (int d = 0; d < R; ++d) {
      strides[d] = s;
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
template <class T, int R>
Eigen::TensorMap<Eigen::Tensor<T, R, Eigen::RowMajor>> as_tensor_map(const View<T, R>& v) {
  if (!v.is_contiguous())
    EFFATTN_THROW(shape_error(detail::concat("as_tensor_map: the view must be contiguous, got shape ",
                                             detail::shape_str(v.shape()), " strides ",
                                             detail::shape_str(v.strides()))));
  std::array<Eigen::Index, R> dims{};
  for (int d = 0; d < R; ++d) dims[d] = static_cast<Eigen::Index>(v.dim(d));
  return Eigen::TensorMap<Eigen::Tensor<T, R, Eigen::RowMajor>>(v.data(), dims);
}

EFFATTN_NAMESPACE_END
