// SPDX-License-Identifier: MIT
// effattn: options and argument checks shared by every attention entry point.
#pragma once

#include <cmath>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/traits.hpp"
#include "../core/view.hpp"

EFFATTN_NAMESPACE_BEGIN

/// Which implementation runs a call.
enum class Backend {
  tiled,      ///< the blocked online-softmax engine (default)
  reference,  ///< the dense oracle: obvious loops, float64 accumulation
};

/// The arithmetic of the tiled path for float inputs.
enum class Precision {
  float32,   ///< float products (default)
  bfloat16,  ///< bfloat16 products where the CPU multiplies them natively (Isa::avx512_bf16):
             ///< q, k, v and the probabilities rounded to bfloat16, scores, softmax
             ///< statistics and accumulators float (see docs/attention.md); float elsewhere
};

/// Options of one attention call.
struct AttentionOptions {
  /// Logit scale; 0 means 1/sqrt(head_dim). Otherwise finite and > 0.
  double scale = 0;
  Backend backend = Backend::tiled;
  /// Query / key tile sizes of the tiled engine, each in [0, 4096]; 0 picks
  /// the default. A query tile is rounded up to a multiple of
  /// the ISA's query quantum (the queries one micro-kernel
  /// column holds, which depends on the instruction set), so the same value
  /// works on every machine.
  index_t block_q = 0;
  index_t block_k = 0;
  /// Products of the tiled path for float queries (every method passes its
  /// AttentionOptions through, so each can run on the bfloat16 kernel). Float
  /// keys/values are rounded into a bfloat16 copy per call (2 bytes per element
  /// of extra memory), bfloat16 ones are read in place. Decoding (at most 4
  /// queries per head, memory bound) and double ignore it; so does a CPU
  /// without AVX512-BF16 (or EFFATTN_ISA below avx512_bf16), which computes
  /// in float.
  Precision compute = Precision::float32;
};

/// The accumulation type of a scalar: float for float (and lower precisions
/// later), double for double.
template <class T>
using acc_t = std::conditional_t<std::is_same<std::remove_cv_t<T>, double>::value, double, float>;

namespace detail {

/// The shapes of one attention problem, after checking.
struct AttnDims {
  index_t B, H, Hkv, Nq, Nk, D, Dv;
  double scale;
  bool has_lse;
};

/// Checks q [B,H,Nq,D], k [B,Hkv,Nk,D], v [B,Hkv,Nk,Dv], out [B,H,Nq,Dv],
/// lse [B,H,Nq] (optional: a null, empty view means absent), the scale, the
/// tile sizes and that the outputs neither overlap themselves nor any input.
template <class T, class KV, class L>
AttnDims check_attention_args(const char* op, const ConstView<T, 4>& q, const ConstView<KV, 4>& k,
                              const ConstView<KV, 4>& v, const View<T, 4>& out, const View<L, 3>& lse,
                              const AttentionOptions& opt, index_t tile_quantum) {
  check_view(q, op, "q", false);
  check_view(k, op, "k", false);
  check_view(v, op, "v", false);
  check_view(out, op, "out", true);
  AttnDims d{};
  d.B = q.dim(0);
  d.H = q.dim(1);
  d.Nq = q.dim(2);
  d.D = q.dim(3);
  d.Hkv = k.dim(1);
  d.Nk = k.dim(2);
  d.Dv = v.dim(3);
  if (d.D < 1) EFFATTN_THROW(shape_error(concat(op, ": q must have head_dim D >= 1, got q ", shape_str(q.shape()))));
  if (d.Dv < 1) EFFATTN_THROW(shape_error(concat(op, ": v must have value dim Dv >= 1, got v ", shape_str(v.shape()))));
  if (d.Hkv < 1 && d.H > 0)
    EFFATTN_THROW(shape_error(concat(op, ": k must have at least one head, got k ", shape_str(k.shape()))));
  check_shape(k, op, "k", "[B,Hkv,Nk,D]", {d.B, d.Hkv, d.Nk, d.D});
  check_shape(v, op, "v", "[B,Hkv,Nk,Dv]", {d.B, d.Hkv, d.Nk, d.Dv});
  if (d.Hkv > 0 && d.H % d.Hkv != 0)
    EFFATTN_THROW(shape_error(concat(op, ": q heads H=", d.H, " must be a multiple of k/v heads Hkv=", d.Hkv,
                                     " (grouped-query attention); q ", shape_str(q.shape()), ", k ",
                                     shape_str(k.shape()))));
  check_shape(out, op, "out", "[B,H,Nq,Dv]", {d.B, d.H, d.Nq, d.Dv});
  check_no_alias(out, "out", q, "q", op);
  check_no_alias(out, "out", k, "k", op);
  check_no_alias(out, "out", v, "v", op);
  // Absent: a null, empty view (the default {}). A null pointer with a
  // non-empty shape is a caller error (check_view says so), not "absent".
  d.has_lse = !(lse.data() == nullptr && lse.empty());
  if (d.has_lse) {
    check_view(lse, op, "lse", true);
    check_shape(lse, op, "lse", "[B,H,Nq]", {d.B, d.H, d.Nq});
    check_no_alias(lse, "lse", q, "q", op);
    check_no_alias(lse, "lse", k, "k", op);
    check_no_alias(lse, "lse", v, "v", op);
    check_no_alias(lse, "lse", out, "out", op);
  }
  if (!std::isfinite(opt.scale) || opt.scale < 0)
    EFFATTN_THROW(parameter_error(concat(op, ": scale must be finite and > 0 (or 0 for 1/sqrt(D)), got ", opt.scale)));
  d.scale = opt.scale == 0 ? 1.0 / std::sqrt(static_cast<double>(d.D)) : opt.scale;
  if (opt.block_q < 0 || opt.block_q > 4096)
    EFFATTN_THROW(parameter_error(concat(op, ": block_q must be in [0, 4096] (rounded up to a multiple of ",
                                         tile_quantum, "), got ", opt.block_q)));
  if (opt.block_k < 0 || opt.block_k > 4096)
    EFFATTN_THROW(parameter_error(concat(op, ": block_k must be in [0, 4096], got ", opt.block_k)));
  if (opt.backend != Backend::tiled && opt.backend != Backend::reference)
    EFFATTN_THROW(parameter_error(concat(op, ": unknown backend ", static_cast<int>(opt.backend))));
  return d;
}

}  // namespace detail
EFFATTN_NAMESPACE_END
