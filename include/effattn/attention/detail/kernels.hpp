// SPDX-License-Identifier: MIT
// effattn internal: the kernels' buffers and problem (the level-independent
// part; the kernels themselves are in kernels_level.hpp).
#pragma once
#ifndef EFFATTN_INTERNAL_HEADER_OK
#  error "effattn/attention/detail/kernels.hpp is internal: include <effattn/attention/engine.hpp> instead."
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>

#include "../../core/simd.hpp"
#include "../../core/view.hpp"
#include "../options.hpp"
#include "../policies.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace detail {
inline namespace EFFATTN_TU_NS {

// ------------------------------------------------------------------ buffers

/// A 64-byte aligned scratch array that never value-initialises (the kernels
/// write before they read).
template <class S>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(index_t n) { resize(n); }
  void resize(index_t n) {
    if (n <= cap_) return;
    void* p = nullptr;
    const size_t bytes = (static_cast<size_t>(n) * sizeof(S) + 63) / 64 * 64;
#if defined(_MSC_VER)
    p = _aligned_malloc(bytes, 64);
#else
    p = std::aligned_alloc(64, bytes);
#endif
    if (!p) throw std::bad_alloc();
    ptr_.reset(static_cast<S*>(p));
    cap_ = n;
  }
  S* data() const { return ptr_.get(); }
  S& operator[](index_t i) const { return ptr_.get()[i]; }

 private:
  struct Free {
    void operator()(S* p) const {
#if defined(_MSC_VER)
      _aligned_free(p);
#else
      std::free(p);
#endif
    }
  };
  std::unique_ptr<S, Free> ptr_;
  index_t cap_ = 0;
};

inline index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }
inline index_t ceil_div(index_t x, index_t m) { return (x + m - 1) / m; }

// ----------------------------------------------------------------- problem

/// Raw pointers and element strides of one attention problem (already
/// checked). KV is the storage type of keys and values: T, a 16-bit type
/// (float16, bfloat16) that the kernels widen to float as they load it, or
/// int8 codes with a float scale per row (dequantized as they are loaded).
template <class T, class KV = T>
struct Problem {
  const T* q;
  const KV *k, *v;
  T* out;
  acc_t<T>* lse;
  index_t qs[4], ks[4], vs[4], os[4], ls[3];
  index_t B, H, Hkv, Nq, Nk, D, Dv, G;
  acc_t<T> scale;
  /// bfloat16 inputs at Isa::avx512_bf16: the tiled path multiplies pairs of
  /// bfloat16 (vdpbf16ps) instead of widening to float (kernels_level.hpp).
  bool dot_bf16 = false;
  /// int8 keys/values (KV = std::int8_t, core/quant.hpp): row (b, hk, j)
  /// stands for ksc[b * kss[0] + hk * kss[1] + j * kss[2]] * k(b, hk, j, :),
  /// and likewise for v.
  const float* ksc = nullptr;
  const float* vsc = nullptr;
  index_t kss[3] = {0, 0, 0}, vss[3] = {0, 0, 0};
};

/// Per-thread scratch of the tiled path. Sizes depend only on the problem and
/// the tile sizes, so it is allocated once per thread and reused. With 16-bit
/// keys/values (widen = true) it also holds one key block and one value block
/// widened to S, which the micro-kernel then reads as it reads float K and V.
///
/// The bfloat16 dot-product path (dot_bf16) keeps its operands as pairs of
/// bfloat16 along the reduced dimension: the query tile qh[d/2][query][2],
/// the probabilities ph[key/2][query][2], the value block
/// vh[key/2][dim][2], and a key block kh[key][D rounded up to even] where the
/// keys cannot be read in place; plus vw for a value block widened to float.
template <class S>
struct TileScratch {
  AlignedBuffer<S> qt, st, ot, m, l, alpha, kw, vw;
  AlignedBuffer<std::uint16_t> qh, ph, vh, kh;
  index_t ldo;  // = block_q
  TileScratch(index_t bq, index_t bk, index_t D, index_t Dv, bool widen = false, bool dot_bf16 = false)
      : qt(D * bq), st(bk * bq), ot(Dv * bq), m(bq), l(bq), alpha(bq), ldo(bq) {
    if (widen) {
      kw.resize(bk * D);
      vw.resize(bk * Dv);
    }
    if (dot_bf16) {
      const index_t dp = (D + 1) / 2, kp = (bk + 1) / 2;
      qh.resize(dp * bq * 2);
      ph.resize(kp * bq * 2);
      vh.resize(kp * Dv * 2);
      kh.resize(bk * dp * 2);
    }
  }
};

template <class S>
struct RowScratch {
  AlignedBuffer<S> q, s, o, kbuf, vbuf;
  RowScratch(index_t chunk, index_t D, index_t dvp)
      : q(round_up(D, 64)), s(round_up(chunk, 64)), o(dvp), kbuf(round_up(D, 64)), vbuf(dvp) {}
};

}  // namespace EFFATTN_TU_NS
}  // namespace detail
EFFATTN_NAMESPACE_END
