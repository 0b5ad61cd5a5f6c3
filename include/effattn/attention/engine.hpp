// SPDX-License-Identifier: MIT
// effattn: the tiled online-softmax attention engine under every operator.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../core/executor.hpp"
#include "../core/isa.hpp"
#include "../core/quant.hpp"
#include "options.hpp"
#include "policies.hpp"
#include "reference.hpp"

#ifndef EFFATTN_INTERNAL_HEADER_OK
#  define EFFATTN_INTERNAL_HEADER_OK
#endif
#include "detail/kernels.hpp"

EFFATTN_NAMESPACE_BEGIN

namespace detail {
inline namespace EFFATTN_TU_NS {

/// Queries per (batch, head) up to which the row (decode) path runs.
constexpr index_t kRowPathMaxQueries = 4;
/// Keys per split-KV chunk on the row path. Fixed, never derived from the
/// thread count, so that results are bit-identical for any thread count.
constexpr index_t kSplitKeyChunk = 1024;
/// Default key tile: 128 keys (the query tile depends on the level: see
/// kernels_level.hpp).
constexpr index_t kDefaultBlockK = 128;

template <class T, class KV = T>
Problem<T, KV> make_problem(const ConstView<T, 4>& q, const ConstView<KV, 4>& k, const ConstView<KV, 4>& v,
                            const View<T, 4>& out, const View<acc_t<T>, 3>& lse, const AttnDims& d) {
  Problem<T, KV> p{};
  // An empty view may hold any pointer, null included (a valid empty
  // std::vector's data()). The kernels still form row addresses from it, so
  // an empty operand is replaced by a dummy element with zero strides: the
  // addresses stay valid and nothing is ever read or written through them.
  static const T q_dummy{};
  static const KV kv_dummy{};
  static T out_dummy{};
  p.q = q.empty() ? &q_dummy : q.data();
  p.k = k.empty() ? &kv_dummy : k.data();
  p.v = v.empty() ? &kv_dummy : v.data();
  p.out = out.empty() ? &out_dummy : out.data();
  p.lse = d.has_lse ? lse.data() : nullptr;
  for (int i = 0; i < 4; ++i) {
    p.qs[i] = q.empty() ? 0 : q.stride(i);
    p.ks[i] = k.empty() ? 0 : k.stride(i);
    p.vs[i] = v.empty() ? 0 : v.stride(i);
    p.os[i] = out.empty() ? 0 : out.stride(i);
  }
  for (int i = 0; i < 3; ++i) p.ls[i] = d.has_lse ? lse.stride(i) : 0;
  p.B = d.B;
  p.H = d.H;
  p.Hkv = d.Hkv;
  p.Nq = d.Nq;
  p.Nk = d.Nk;
  p.D = d.D;
  p.Dv = d.Dv;
  p.G = d.Hkv > 0 ? d.H / d.Hkv : 1;
  p.scale = static_cast<acc_t<T>>(d.scale);
  return p;
}

/// Writes out = O / l and lse = m + log(l) for one query (0 and -inf when l = 0).
template <class T, class KV, class S>
inline void finalize_row(const Problem<T, KV>& p, index_t b, index_t h, index_t i, const S* o, S m, S l) {
  T* orow = p.out + b * p.os[0] + h * p.os[1] + i * p.os[2];
  // l = 0: no key contributed (every logit -inf): out = 0 exactly, even if
  // an accumulator holds 0 * inf from an infinite value.
  const S inv = l > S(0) ? S(1) / l : S(0);
  for (index_t e = 0; e < p.Dv; ++e) orow[e * p.os[3]] = l > S(0) ? static_cast<T>(o[e] * inv) : T(0);
  if (p.lse)
    p.lse[b * p.ls[0] + h * p.ls[1] + i * p.ls[2]] =
        l > S(0) ? static_cast<acc_t<T>>(m + std::log(l)) : -std::numeric_limits<acc_t<T>>::infinity();
}

/// Writes a tile's transposed accumulators Ot[dim][query] as out = O / l.
template <class T, class KV, class S>
inline void finalize_tile(const Problem<T, KV>& p, index_t b, index_t h, index_t i0, index_t i1, const TileScratch<S>& w) {
  for (index_t i = i0; i < i1; ++i) {
    const index_t c = i - i0;
    const S l = w.l[c];
    const S inv = l > S(0) ? S(1) / l : S(0);
    T* orow = p.out + b * p.os[0] + h * p.os[1] + i * p.os[2];
    for (index_t e = 0; e < p.Dv; ++e) orow[e * p.os[3]] = l > S(0) ? static_cast<T>(w.ot[e * w.ldo + c] * inv) : T(0);
    if (p.lse)
      p.lse[b * p.ls[0] + h * p.ls[1] + i * p.ls[2]] =
          l > S(0) ? static_cast<acc_t<T>>(w.m[c] + std::log(l)) : -std::numeric_limits<acc_t<T>>::infinity();
  }
}

/// The decode path's partial result of one (row, key chunk): the unnormalised
/// output (dvp accumulators), then the running max m and the sum l.
/// merge_partials() combines the chunks of every row in chunk order (so the
/// result never depends on which thread computed which chunk) and writes
/// out = O / l and lse. It reads rows x chunks x Dv numbers, far less than the
/// attention itself: one pass on the calling thread, no second barrier.
template <class T, class KV, class S>
void merge_partials(const Problem<T, KV>& p, const S* part, index_t nch, index_t dvp) {
  const index_t stride = dvp + 2, rows = p.B * p.H * p.Nq;
  std::vector<S> o(static_cast<size_t>(dvp));
  for (index_t row = 0; row < rows; ++row) {
    const index_t i = row % p.Nq, bh = row / p.Nq, h = bh % p.H, b = bh / p.H;
    const S* base = part + row * nch * stride;
    S m = -std::numeric_limits<S>::infinity();
    for (index_t c = 0; c < nch; ++c) m = std::max(m, base[c * stride + dvp]);
    std::fill(o.begin(), o.end(), S(0));
    S l = 0;
    if (m != -std::numeric_limits<S>::infinity()) {
      for (index_t c = 0; c < nch; ++c) {
        const S* pc = base + c * stride;
        if (pc[dvp + 1] == S(0)) continue;
        const S f = std::exp(pc[dvp] - m);
        l += pc[dvp + 1] * f;
        for (index_t e = 0; e < dvp; ++e) o[e] += pc[e] * f;
      }
    }
    finalize_row(p, b, h, i, o.data(), m, l);
  }
}

/// Multiply-adds of an unmasked problem: the size the core's small-work rule
/// (detail::executor_for) judges. The estimate ignores the mask, so a masked
/// problem is judged by its full size.
template <class T, class KV>
double attention_work(const Problem<T, KV>& p) {
  return static_cast<double>(p.B) * static_cast<double>(p.H) * static_cast<double>(p.Nq) *
         static_cast<double>(p.Nk) * static_cast<double>(p.D + p.Dv);
}

}  // namespace EFFATTN_TU_NS
}  // namespace detail
EFFATTN_NAMESPACE_END

// The kernels, once per instruction-set level (see levels.hpp).
#include "detail/levels.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace detail {
inline namespace EFFATTN_TU_NS {

/// The queries one micro-kernel column holds at a level (8 floats for the
/// baseline, 16 for AVX2, 64 for AVX-512): a block_q is rounded up to a
/// multiple of it. The default is the active level (core/isa.hpp).
inline index_t attention_query_tile_quantum(Isa level) { EFFATTN_WITH_LEVEL(level, return lvl::Blocking<float>::Q); }
inline index_t attention_query_tile_quantum() { return attention_query_tile_quantum(active_isa()); }

/// The query tile of a call at a level: the default for 0, else block_q
/// rounded up to a multiple of the level's micro-tile width (4096 is a
/// multiple of every width).
inline index_t query_tile(index_t block_q, Isa level) { EFFATTN_WITH_LEVEL(level, return lvl::query_tile(block_q)); }

/// The keys or values of p (which = 0: k, 1: v) rounded into a contiguous
/// bfloat16 copy [B, Hkv, Nk, dim], one (b, head) slab per work item.
template <class KV>
void round_to_bf16(const Problem<float, KV>& p, int which, std::vector<bfloat16>& dst, const Executor& ex) {
  const KV* src = which == 0 ? p.k : p.v;
  const index_t* st = which == 0 ? p.ks : p.vs;
  const index_t dim = which == 0 ? p.D : p.Dv;
  dst.resize(static_cast<size_t>(p.B * p.Hkv * p.Nk * dim));
  parallel_items(ex, p.B * p.Hkv, [] { return 0; }, [&](index_t item, int&) {
    const index_t b = item / p.Hkv, h = item % p.Hkv;
    bfloat16* out = dst.data() + item * p.Nk * dim;
    for (index_t n = 0; n < p.Nk; ++n) {
      const KV* row = src + b * st[0] + h * st[1] + n * st[2];
      for (index_t d = 0; d < dim; ++d) out[n * dim + d] = bfloat16(static_cast<float>(row[d * st[3]]));
    }
  });
}

/// p with other keys and values (storage KV2, pointers and strides): every
/// other field (queries, outputs, shapes, scale) as it is.
template <class KV2, class T, class KV>
Problem<T, KV2> rebind_kv(const Problem<T, KV>& p, const KV2* k, const index_t (&ks)[4], const KV2* v,
                          const index_t (&vs)[4]) {
  Problem<T, KV2> r{};
  r.q = p.q;
  r.out = p.out;
  r.lse = p.lse;
  r.k = k;
  r.v = v;
  const bool empty_k = p.Nk == 0 || p.B == 0 || p.Hkv == 0;
  for (int i = 0; i < 4; ++i) {
    r.qs[i] = p.qs[i];
    r.os[i] = p.os[i];
    r.ks[i] = empty_k ? 0 : ks[i];
    r.vs[i] = empty_k ? 0 : vs[i];
  }
  for (int i = 0; i < 3; ++i) r.ls[i] = p.ls[i];
  r.B = p.B;
  r.H = p.H;
  r.Hkv = p.Hkv;
  r.Nq = p.Nq;
  r.Nk = p.Nk;
  r.D = p.D;
  r.Dv = p.Dv;
  r.G = p.G;
  r.scale = p.scale;
  return r;
}

/// The problem of Precision::bfloat16 for float queries (at
/// Isa::avx512_bf16): bfloat16 keys/values as they are, float or float16 ones
/// rounded into kc / vc (contiguous [B, Hkv, Nk, dim]); dot_bf16 set.
template <class KV>
Problem<float, bfloat16> bf16_problem(const Problem<float, KV>& p, std::vector<bfloat16>& kc, std::vector<bfloat16>& vc,
                                      const Executor& ex) {
  Problem<float, bfloat16> pb{};
  if constexpr (std::is_same<KV, bfloat16>::value) {
    pb = p;
  } else {
    round_to_bf16(p, 0, kc, ex);
    round_to_bf16(p, 1, vc, ex);
    static const bfloat16 empty_dummy{};  // (an empty operand: never read, see make_problem)
    const index_t ks[4] = {p.Hkv * p.Nk * p.D, p.Nk * p.D, p.D, 1}, vs[4] = {p.Hkv * p.Nk * p.Dv, p.Nk * p.Dv, p.Dv, 1};
    pb = rebind_kv(p, kc.empty() ? &empty_dummy : kc.data(), ks, vc.empty() ? &empty_dummy : vc.data(), vs);
  }
  pb.dot_bf16 = true;
  return pb;
}

/// Runs a checked problem at a level (read once per call): the decode path for
/// at most kRowPathMaxQueries queries per head, else the tiled path, on the
/// executor the core's one small-work rule gives for its size (a small problem
/// runs on the calling thread; same bits either way).
template <class T, class KV, class Mask, class Score>
void run_attention(const Problem<T, KV>& p, const Mask& mask, const Score& score, const AttentionOptions& opt,
                   const Executor& ex, Isa level) {
  const Executor run_ex = executor_for(ex, attention_work(p));
#if EFFATTN_DISPATCH_BF16
  if (static_cast<int>(level) >= static_cast<int>(Isa::avx512_bf16)) {
    if constexpr (std::is_same<T, bfloat16>::value && std::is_same<KV, bfloat16>::value) {
      Problem<T, KV> pb = p;
      pb.dot_bf16 = true;
      EFFATTN_WITH_LEVEL(level, lvl::run_attention(pb, mask, score, opt, run_ex));
      return;
    }
    // Float queries with Precision::bfloat16 on the tiled path: bfloat16 keys
    // and values as they are, others rounded into a copy.
    if constexpr (std::is_same<T, float>::value && !std::is_same<KV, std::int8_t>::value) {
      if (opt.compute == Precision::bfloat16 && p.Nq > kRowPathMaxQueries) {
        std::vector<bfloat16> kc, vc;
        const Problem<float, bfloat16> pb = bf16_problem(p, kc, vc, run_ex);
        EFFATTN_WITH_LEVEL(level, lvl::run_attention(pb, mask, score, opt, run_ex));
        return;
      }
    }
  }
#endif
  EFFATTN_WITH_LEVEL(level, lvl::run_attention(p, mask, score, opt, run_ex));
}

/// Checks, then runs the reference or the tiled backend (any K/V storage).
/// With int8 keys/values (KV = std::int8_t) kq and vq are their row scales.
template <class T, class KV, class Mask, class Score>
void attention_dispatch(const ConstView<T, 4>& q, const ConstView<KV, 4>& k, const ConstView<KV, 4>& v,
                        const View<T, 4>& out, const Mask& mask, const Score& score, const AttentionOptions& opt,
                        const Executor& ex, const View<acc_t<T>, 3>& lse, const ConstView<float, 3>* kq = nullptr,
                        const ConstView<float, 3>* vq = nullptr) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value || is_half_storage<T>::value,
                "effattn::attention supports float, double, bfloat16 and float16");
  static_assert(std::is_same<KV, T>::value ||
                    (std::is_same<T, float>::value && (is_half_storage<KV>::value || std::is_same<KV, std::int8_t>::value)),
                "effattn::attention: keys/values are T, or float16/bfloat16/int8 with float queries");
  static_assert(is_mask_policy<Mask>::value,
                "effattn::attention: the mask argument is not a mask policy (NoMask, CausalMask, OffsetCausalMask, "
                "KeyLimitMask, PredicateMask, or a type with check() and bind() as in attention/policies.hpp)");
  static_assert(is_score_policy<Score>::value,
                "effattn::attention: the score argument is not a score policy (NoScore, KeyBiasScore, FunctorScore, "
                "or a type with active, check() and bind() as in attention/policies.hpp)");
  const char* op = "attention";
  check_executor(ex, op);
  const Isa level = active_isa();  // once per call
  const auto d = check_attention_args(op, q, k, v, out, lse, opt, attention_query_tile_quantum(level));
  constexpr bool kInt8 = std::is_same<KV, std::int8_t>::value;
  if constexpr (kInt8) {
    check_view(*kq, op, "k.scale", false);
    check_view(*vq, op, "v.scale", false);
    check_shape(*kq, op, "k.scale", "[B,Hkv,Nk]", {d.B, d.Hkv, d.Nk});
    check_shape(*vq, op, "v.scale", "[B,Hkv,Nk]", {d.B, d.Hkv, d.Nk});
    check_no_alias(out, "out", *kq, "k.scale", op);
    check_no_alias(out, "out", *vq, "v.scale", op);
  }
  mask.check(op, d.B, d.H, d.Nq, d.Nk);
  score.check(op, d.B, d.H, d.Nq, d.Nk);
  if (opt.backend == Backend::reference) {
    if constexpr (kInt8) {
      // The oracle on the values the codes stand for (scale * code, in float).
      std::vector<float> kf(static_cast<size_t>(d.B * d.Hkv * d.Nk * d.D)), vf(static_cast<size_t>(d.B * d.Hkv * d.Nk * d.Dv));
      dequantize(QuantizedKV{k, *kq}, make_view(kf.data(), d.B, d.Hkv, d.Nk, d.D));
      dequantize(QuantizedKV{v, *vq}, make_view(vf.data(), d.B, d.Hkv, d.Nk, d.Dv));
      attention_reference<T>(q, make_view<const float>(kf.data(), d.B, d.Hkv, d.Nk, d.D),
                             make_view<const float>(vf.data(), d.B, d.Hkv, d.Nk, d.Dv), out, mask, score, opt, lse);
    } else {
      attention_reference<T>(q, k, v, out, mask, score, opt, lse);
    }
    return;
  }
  if (d.B == 0 || d.H == 0 || d.Nq == 0) return;  // (no product: it could overflow)
  Problem<T, KV> p = make_problem<T, KV>(q, k, v, out, lse, d);
  if constexpr (kInt8) {
    static const float scale_dummy = 0;
    p.ksc = kq->empty() ? &scale_dummy : kq->data();
    p.vsc = vq->empty() ? &scale_dummy : vq->data();
    for (int i = 0; i < 3; ++i) {
      p.kss[i] = kq->empty() ? 0 : kq->stride(i);
      p.vss[i] = vq->empty() ? 0 : vq->stride(i);
    }
  }
  run_attention(p, mask, score, opt, ex, level);
}

}  // namespace EFFATTN_TU_NS
}  // namespace detail

/// Attention with a mask policy and a score policy (see policies.hpp):
///
///   out[b,h,i,:] = sum_j softmax_j(scale * <q[b,h,i,:], k[b,h/G,j,:]> + score(b,h,i,j)) v[b,h/G,j,:]
///                  over the keys j with allowed(b,h,i,j);   G = H / Hkv.
///
/// Shapes (row-major indexing, any element strides >= 0; outputs must not
/// overlap themselves or the inputs):
///   q [B,H,Nq,D], k [B,Hkv,Nk,D], v [B,Hkv,Nk,Dv], out [B,H,Nq,Dv],
///   lse [B,H,Nq] optional (pass {} to skip): natural-log sum-exp of the
///   allowed, scaled, biased logits, for combining partial results.
/// H must be a multiple of Hkv (grouped-query attention); Nq, Nk, B, H may be 0.
/// A query with no allowed key gets out = 0 and lse = -inf (never NaN).
///
/// The tiled backend never allocates Nq x Nk: per thread it keeps one query
/// tile, one key-by-query score tile and the output accumulators. Work is split
/// over batch x heads x query tiles (OpenMP, or the executor's hook); for at
/// most 4 queries per head it splits the keys into fixed 1024-key chunks and
/// merges the partials in order on the calling thread. Results are bit-identical for any thread count.
///
/// Throws effattn::shape_error / parameter_error (std::invalid_argument) on bad
/// shapes, strides, pointers, scale or tile sizes, before writing anything.
template <class T, class Mask = NoMask, class Score = NoScore>
void attention(detail::identity_t<ConstView<T, 4>> q, detail::identity_t<ConstView<T, 4>> k, detail::identity_t<ConstView<T, 4>> v,
               View<T, 4> out, const Mask& mask = {}, const Score& score = {},
               const AttentionOptions& opt = {}, const Executor& ex = {},
               detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  detail::attention_dispatch<T, T>(q, k, v, out, mask, score, opt, ex, lse);
}

/// The same attention with keys and values stored in 16 bits (effattn::float16
/// or effattn::bfloat16, see core/half.hpp) and float queries and outputs:
///
///   std::vector<effattn::float16> kc = ..., vc = ...;   // a half-size cache
///   effattn::attention<float>(q, effattn::make_view<const effattn::float16>(kc.data(), B, H, N, D),
///                             effattn::make_view<const effattn::float16>(vc.data(), B, H, N, D), out);
///
/// Keys and values are widened to float exactly as they are loaded; scores,
/// softmax and accumulation are float, so the result equals float attention
/// on the widened keys/values up to summation order. Decoding (a few queries
/// over a long cache) reads half the bytes and runs up to twice as fast; the
/// tiled path widens one key/value block per tile (a few per cent slower than
/// float). Same shapes, masks, scores, options and checks as above.
template <class T, class Mask = NoMask, class Score = NoScore, class KA, class VA,
          std::enable_if_t<is_half_storage<KA>::value && std::is_same<std::remove_const_t<KA>, std::remove_const_t<VA>>::value,
                           int> = 0>
void attention(detail::identity_t<ConstView<T, 4>> q, const View<KA, 4>& k, const View<VA, 4>& v, View<T, 4> out,
               const Mask& mask = {}, const Score& score = {}, const AttentionOptions& opt = {},
               const Executor& ex = {}, detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  using KV = std::remove_const_t<KA>;
  detail::attention_dispatch<T, KV>(q, ConstView<KV, 4>(k), ConstView<KV, 4>(v), out, mask, score, opt, ex, lse);
}

/// The same attention with int8 keys and values, one float scale per
/// (batch, head, token) row (core/quant.hpp: quantize / quantize_rows make
/// them), and float queries and outputs:
///
///   effattn::QuantizedKV kc{make_view<const std::int8_t>(codes_k, B, Hkv, N, D), make_view<const float>(scale_k, B, Hkv, N)};
///   effattn::attention<float>(q, kc, vc, out, effattn::CausalMask{});
///
/// The result is float attention over the dequantized values scale * code
/// (up to summation order): decoding folds each key's scale into its dot
/// product and each value's into its probability, the tiled path dequantizes
/// one block per tile. A quarter of float's bytes (plus 4 per row): decoding,
/// which streams the cache, runs correspondingly faster. Same shapes, masks,
/// scores, options and checks as above; k.scale and v.scale must be [B,Hkv,Nk].
template <class T, class Mask = NoMask, class Score = NoScore>
void attention(detail::identity_t<ConstView<T, 4>> q, const QuantizedKV& k, const QuantizedKV& v, View<T, 4> out,
               const Mask& mask = {}, const Score& score = {}, const AttentionOptions& opt = {},
               const Executor& ex = {}, detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  const ConstView<float, 3> ks(k.scale), vs(v.scale);
  detail::attention_dispatch<T, std::int8_t>(q, ConstView<std::int8_t, 4>(k.data), ConstView<std::int8_t, 4>(v.data), out,
                                             mask, score, opt, ex, lse, &ks, &vs);
}

/// Options of flash_attention: plain full or causal attention.
struct FlashAttentionOptions {
  double scale = 0;     ///< 0 means 1/sqrt(D)
  bool causal = false;  ///< bottom-right aligned: query i sees keys j <= i + Nk - Nq
};

/// Full (or causal) attention on the tiled engine; see attention() for shapes.
template <class T>
void flash_attention(detail::identity_t<ConstView<T, 4>> q, detail::identity_t<ConstView<T, 4>> k, detail::identity_t<ConstView<T, 4>> v,
                     View<T, 4> out, const FlashAttentionOptions& fo = {},
                     const Executor& ex = {}, detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  AttentionOptions o;
  o.scale = fo.scale;
  if (fo.causal)
    attention<T>(q, k, v, out, CausalMask{}, NoScore{}, o, ex, lse);
  else
    attention<T>(q, k, v, out, NoMask{}, NoScore{}, o, ex, lse);
}

EFFATTN_NAMESPACE_END
