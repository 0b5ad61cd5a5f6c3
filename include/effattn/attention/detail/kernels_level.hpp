// SPDX-License-Identifier: MIT
// effattn internal: micro-kernels, the per-tile online-softmax loop, the row
// (decode) path and the engine's two paths, for one instruction-set level. No
// include guard: included once per level by levels.hpp, inside that level's
// namespace, after core/simd_level.hpp; include nothing here.
#ifndef EFFATTN_LEVEL_BYTES
#  error "effattn/attention/detail/kernels_level.hpp is internal: it is included by levels.hpp"
#endif

// ------------------------------------------------------------ micro-kernels
//
// Both products of attention run on one register-blocked micro-kernel,
//
//     C[r][0:CV*W] (+)= sum_d A(r, d) * Bm[d][0:CV*W],   r < RR,
//
// where A(r, d) = a[r * ars + d * ads] is broadcast from memory with any
// strides, and Bm is a packed tile of vectors. The score tile is kept
// transposed, St[key][query]:
//   QK: A = K (rows = keys, read in place from the caller's memory),
//       Bm = Qt[d][query] (the query tile, packed once and pre-scaled),
//       C = St.
//   PV: A = V^T (rows = value dims, also read in place), Bm = P^T = St,
//       C = Ot[dim][query] (the output accumulators).
// So neither K nor V is ever copied, any element stride costs nothing, and
// the softmax statistics (running max, sum, rescale) are vector operations
// across queries.

template <class S>
struct Blocking {
  static constexpr int W = simd::lanes<S>;
  static constexpr int R = 6;                               // broadcast rows per micro-tile
  static constexpr int C = simd::kRegisters >= 32 ? 4 : 2;  // vectors per micro-tile
  static constexpr int Q = C * W;                           // queries per micro-tile
};

template <class S, int RR, int CV, bool kAccumulate>
EFFATTN_ALWAYS_INLINE void micro_gemm(const S* a, index_t ars, index_t ads, const S* bm, index_t ldb, index_t depth,
                                      S* c, index_t ldc) {
  using V = simd::vec<S>;
  constexpr int W = simd::lanes<S>;
  V acc[RR][CV];
  const S* arow[RR];
#pragma GCC unroll 8
  for (int r = 0; r < RR; ++r) {
    arow[r] = a + r * ars;
#pragma GCC unroll 4
    for (int v = 0; v < CV; ++v) acc[r][v] = kAccumulate ? simd::load(c + r * ldc + v * W) : simd::splat<S>(0);
  }
  for (index_t d = 0; d < depth; ++d) {
    V bv[CV];
#pragma GCC unroll 4
    for (int v = 0; v < CV; ++v) bv[v] = simd::load(bm + d * ldb + v * W);
#pragma GCC unroll 8
    for (int r = 0; r < RR; ++r) {
      const V ab = simd::splat<S>(arow[r][d * ads]);
#pragma GCC unroll 4
      for (int v = 0; v < CV; ++v) acc[r][v] = simd::fmadd(ab, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < CV; ++v) simd::store(c + r * ldc + v * W, acc[r][v]);
}

/// C[0:rows][0:cols] (+)= A(rows x depth) Bm(depth x cols), cols a multiple of
/// Blocking::Q, in micro-tiles of R rows.
template <class S, bool kAccumulate>
inline void tile_gemm(index_t rows, index_t cols, const S* a, index_t ars, index_t ads, const S* bm, index_t ldb,
                      index_t depth, S* c, index_t ldc) {
  constexpr int R = Blocking<S>::R, CV = Blocking<S>::C, Q = Blocking<S>::Q;
  for (index_t c0 = 0; c0 < cols; c0 += Q) {
    index_t r = 0;
    for (; r + R <= rows; r += R)
      micro_gemm<S, R, CV, kAccumulate>(a + r * ars, ars, ads, bm + c0, ldb, depth, c + r * ldc + c0, ldc);
    const S* ar = a + r * ars;
    S* cr = c + r * ldc + c0;
    switch (rows - r) {
      case 0: break;
      case 1: micro_gemm<S, 1, CV, kAccumulate>(ar, ars, ads, bm + c0, ldb, depth, cr, ldc); break;
      case 2: micro_gemm<S, 2, CV, kAccumulate>(ar, ars, ads, bm + c0, ldb, depth, cr, ldc); break;
      case 3: micro_gemm<S, 3, CV, kAccumulate>(ar, ars, ads, bm + c0, ldb, depth, cr, ldc); break;
      case 4: micro_gemm<S, 4, CV, kAccumulate>(ar, ars, ads, bm + c0, ldb, depth, cr, ldc); break;
      default: micro_gemm<S, 5, CV, kAccumulate>(ar, ars, ads, bm + c0, ldb, depth, cr, ldc); break;
    }
  }
}

/// dst[r][c] = S(src[r * rs + c * cs]) for r < rows, c < cols (dst packed,
/// row length cols): widens a block of 16-bit keys or values.
template <class S, class KV>
inline void widen_block(const KV* src, index_t rs, index_t cs, index_t rows, index_t cols, S* dst) {
  constexpr int W = simd::lanes<S>;
  const index_t cfull = cs == 1 ? cols / W * W : 0;
  for (index_t r = 0; r < rows; ++r) {
    const KV* row = src + r * rs;
    S* out = dst + r * cols;
    for (index_t c = 0; c < cfull; c += W) simd::store(out + c, simd::load_as<S>(row + c));
    for (index_t c = cfull; c < cols; ++c) out[c] = static_cast<S>(row[c * cs]);
  }
}

/// dst[r][:] *= scale[r * ss] for the rows of a widened int8 block (the
/// row scales of core/quant.hpp).
template <class S>
inline void scale_rows(S* dst, index_t rows, index_t cols, const float* scale, index_t ss) {
  using V = simd::vec<S>;
  constexpr int W = simd::lanes<S>;
  const index_t cfull = cols / W * W;
  for (index_t r = 0; r < rows; ++r) {
    S* row = dst + r * cols;
    const S f = static_cast<S>(scale[r * ss]);
    const V fv = simd::splat<S>(f);
    for (index_t c = 0; c < cfull; c += W) simd::store(row + c, simd::load(row + c) * fv);
    for (index_t c = cfull; c < cols; ++c) row[c] *= f;
  }
}

/// Packs queries [i0, i0 + nq) of (b, h) transposed and pre-scaled,
/// qt[d * ld + c] = scale * q[i0 + c][d], zero padded to a multiple of the
/// micro-tile width: the B operand of the QK micro-kernel.
template <class T, class KV, class S>
inline void pack_query_tile(const Problem<T, KV>& p, index_t b, index_t h, index_t i0, index_t nq, index_t ld, S* qt) {
  const index_t D = p.D, nqp = round_up(nq, Blocking<S>::Q);
  const T* qb = p.q + b * p.qs[0] + h * p.qs[1];
  for (index_t d = 0; d < D; ++d) std::fill(qt + d * ld + nq, qt + d * ld + nqp, S(0));
  for (index_t i = 0; i < nq; ++i) {
    const T* row = qb + (i0 + i) * p.qs[2];
    for (index_t d = 0; d < D; ++d) qt[d * ld + i] = static_cast<S>(row[d * p.qs[3]]) * p.scale;
  }
}

/// True when the rows x cols block (row stride rs, element stride cs) holds
/// only finite values: x * 0 is 0 for finite x and NaN for inf or NaN.
template <class S>
inline bool block_finite(const S* src, index_t rs, index_t cs, index_t rows, index_t cols) {
  using V = simd::vec<S>;
  constexpr int W = simd::lanes<S>;
  const index_t cfull = cs == 1 ? cols / W * W : 0;
  V accv = simd::splat<S>(0);
  S acc = 0;
  for (index_t r = 0; r < rows; ++r) {
    const S* row = src + r * rs;
    for (index_t c = 0; c < cfull; c += W) accv = accv + simd::load(row + c) * simd::splat<S>(0);
    for (index_t c = cfull; c < cols; ++c) acc += row[c * cs] * S(0);
  }
  acc += simd::reduce_add(accv);
  return acc == S(0);
}

/// Ot[e][c] += sum_j P[j][c] V[j][e] over the entries with P != 0 only, for
/// the nq real queries of a block whose values are not all finite (see
/// attend_tile). Scalar: it runs only on such blocks.
template <class S>
inline void pv_skip_masked(const S* v, index_t vrs, index_t vcs, index_t kn, index_t Dv, const S* st, index_t ld,
                           index_t nq, S* ot) {
  for (index_t e = 0; e < Dv; ++e) {
    S* orow = ot + e * ld;
    for (index_t j = 0; j < kn; ++j) {
      const S x = v[j * vrs + e * vcs];
      const S* prow = st + j * ld;
      for (index_t c = 0; c < nq; ++c)
        if (prow[c] != S(0)) orow[c] += prow[c] * x;
    }
  }
}

/// One key block's scores St[key][query] (kn keys from j0, the queries
/// [i0, i1), nqp of them padded) to probabilities, in place: the score policy,
/// then the mask (which overwrites: a masked logit is exactly -inf whatever
/// the score said of it, even NaN), then the online softmax, vectorised across
/// queries: new running max m, alpha = exp(m_old - m_new), p = exp(s - m_new),
/// l = l * alpha + sum p, and the accumulators Ot rescaled by alpha where it
/// is not 1.
template <class S, class BMask, class BScore, bool kScore>
EFFATTN_ALWAYS_INLINE void softmax_block(index_t i0, index_t i1, index_t j0, index_t kn, index_t nqp, index_t ld,
                                         index_t Dv, BlockKind kind, const BMask& mask, const BScore& score,
                                         TileScratch<S>& w) {
  using V = simd::vec<S>;
  constexpr int W = simd::lanes<S>;
  const index_t nq = i1 - i0, j1 = j0 + kn;
  const S ninf = -std::numeric_limits<S>::infinity();
  const S lowest = std::numeric_limits<S>::lowest();
  S* st = w.st.data();
  S* ot = w.ot.data();
  if constexpr (kScore) {
    if constexpr (has_apply_tile<BScore, S>::value)
      score.apply_tile(i0, i1, j0, j1, st, ld);
    else
      for (index_t i = 0; i < nq; ++i) score.apply(i0 + i, j0, j1, st + i, ld);
  }
  if (kind == BlockKind::partial) {
    if constexpr (has_apply_tile<BMask, S>::value)
      mask.apply_tile(i0, i1, j0, j1, st, ld);
    else
      for (index_t i = 0; i < nq; ++i) mask.apply(i0 + i, j0, j1, st + i, ld);
  }

  bool any_rescale = false;
  for (index_t c = 0; c < nqp; c += W) {
    V mx = simd::splat<S>(ninf);
    for (index_t j = 0; j < kn; ++j) mx = simd::max(mx, simd::load(st + j * ld + c));
    const V mold = simd::load(w.m.data() + c);
    const V mnew = simd::max(mold, mx);
    // A query with no allowed key so far keeps m = -inf; exponentiate against
    // a finite stand-in so that -inf - (-inf) never makes a NaN.
    const V msafe = simd::max(mnew, simd::splat<S>(lowest));
    const V alpha = simd::exp(mold - msafe);
    V sum = simd::splat<S>(0);
    for (index_t j = 0; j < kn; ++j) {
      const V e = simd::exp(simd::load(st + j * ld + c) - msafe);
      simd::store(st + j * ld + c, e);
      sum = sum + e;
    }
    simd::store(w.l.data() + c, simd::load(w.l.data() + c) * alpha + sum);
    simd::store(w.m.data() + c, mnew);
    simd::store(w.alpha.data() + c, alpha);
    for (int t = 0; t < W; ++t) any_rescale |= alpha[t] != S(1);
  }
  if (any_rescale)
    for (index_t e = 0; e < Dv; ++e)
      for (index_t c = 0; c < nqp; c += W)
        simd::store(ot + e * ld + c, simd::load(ot + e * ld + c) * simd::load(w.alpha.data() + c));
}

/// Starts a query tile: Ot = 0, m = -inf, l = 0 over the nqp padded queries.
template <class S>
inline void start_tile(index_t nqp, index_t ld, index_t Dv, TileScratch<S>& w) {
  for (index_t e = 0; e < Dv; ++e) std::fill(w.ot.data() + e * ld, w.ot.data() + e * ld + nqp, S(0));
  std::fill(w.m.data(), w.m.data() + nqp, -std::numeric_limits<S>::infinity());
  std::fill(w.l.data(), w.l.data() + nqp, S(0));
}

/// Attends queries [i0, i1) of (b, h) over the keys [kb, ke) allowed by the
/// bound mask, adding the bound score. Leaves the unnormalised, transposed
/// output Ot[dim][query] and the running max m and sum l per query in `w`.
template <class T, class S, class BMask, class BScore, bool kScore, class KV>
void attend_tile(const Problem<T, KV>& p, index_t b, index_t h, index_t i0, index_t i1, index_t kb, index_t ke,
                 index_t bq, index_t bk, const BMask& mask, const BScore& score, TileScratch<S>& w) {
  static_assert(std::is_same<T, S>::value || is_half_storage<T>::value,
                "the tiled engine computes in the input type, or in float for 16-bit inputs");
  const index_t D = p.D, Dv = p.Dv, hk = h / p.G;
  const index_t nq = i1 - i0, nqp = round_up(nq, Blocking<S>::Q), ld = bq;

  pack_query_tile(p, b, h, i0, nq, ld, w.qt.data());
  start_tile(nqp, ld, Dv, w);

  const KV* kbase = p.k + b * p.ks[0] + hk * p.ks[1];
  const KV* vbase = p.v + b * p.vs[0] + hk * p.vs[1];
  constexpr bool kWiden = !std::is_same<KV, S>::value;
  const index_t kend = std::min(ke, mask.key_end(i0, i1));
  S* st = w.st.data();
  S* ot = w.ot.data();
  for (index_t j0 = kb; j0 < kend; j0 += bk) {
    const index_t j1 = std::min(j0 + bk, kend), kn = j1 - j0;
    const BlockKind kind = mask.classify(i0, i1, j0, j1);
    if (kind == BlockKind::empty) continue;

    // St = K Qt (keys read in place, or widened into a packed block first).
    if constexpr (kWiden) {
      widen_block(kbase + j0 * p.ks[2], p.ks[2], p.ks[3], kn, D, w.kw.data());
      if constexpr (std::is_same<KV, std::int8_t>::value)
        scale_rows(w.kw.data(), kn, D, p.ksc + b * p.kss[0] + hk * p.kss[1] + j0 * p.kss[2], p.kss[2]);
      tile_gemm<S, false>(kn, nqp, w.kw.data(), D, 1, w.qt.data(), ld, D, st, ld);
    } else {
      tile_gemm<S, false>(kn, nqp, kbase + j0 * p.ks[2], p.ks[2], p.ks[3], w.qt.data(), ld, D, st, ld);
    }
    softmax_block<S, BMask, BScore, kScore>(i0, i1, j0, kn, nqp, ld, Dv, kind, mask, score, w);

    // Ot += V^T P^T (values read in place, or widened first). In a partial
    // block a key masked for some query has P = 0 there, and 0 * inf or
    // 0 * NaN would still reach that query through the product: if the block
    // holds a non-finite value (unused cache slots hold anything), such
    // entries are skipped. Full blocks mask nothing and pay no test.
    const S* vblk;
    index_t vrs, vcs;
    if constexpr (kWiden) {
      widen_block(vbase + j0 * p.vs[2], p.vs[2], p.vs[3], kn, Dv, w.vw.data());
      if constexpr (std::is_same<KV, std::int8_t>::value)
        scale_rows(w.vw.data(), kn, Dv, p.vsc + b * p.vss[0] + hk * p.vss[1] + j0 * p.vss[2], p.vss[2]);
      vblk = w.vw.data();
      vrs = Dv;
      vcs = 1;
    } else {
      vblk = vbase + j0 * p.vs[2];
      vrs = p.vs[2];
      vcs = p.vs[3];
    }
    if (kind == BlockKind::partial && !block_finite(vblk, vrs, vcs, kn, Dv))
      pv_skip_masked(vblk, vrs, vcs, kn, Dv, st, ld, nq, ot);
    else
      tile_gemm<S, true>(Dv, nqp, vblk, vcs, vrs, st, ld, kn, ot, ld);
  }
}

// ------------------------------------------------- bfloat16 dot products
//
// attention<bfloat16> at Isa::avx512_bf16. vdpbf16ps multiplies 16 pairs of
// bfloat16 of each operand and adds both products of a pair to one float
// lane, c[i] += a[2i] b[2i] + a[2i+1] b[2i+1]: twice the products of a float
// FMA per instruction. Both products of attention therefore keep their
// reduced dimension in adjacent pairs:
//   QK reduces over d: a key row already holds (k[d], k[d+1]) side by side,
//      so K is read in place (one 32-bit broadcast per pair); the query tile
//      is packed once as qh[d/2][query][2], pre-scaled and rounded.
//   PV reduces over keys: the probabilities are rounded to bfloat16, as bf16
//      flash-attention kernels do, and packed as ph[key/2][query][2]; the
//      value block as vh[key/2][dim][2] (one permute per 16 dims).
// Scores, the softmax statistics (m, l: l sums the unrounded p) and the
// output accumulators stay float. Same micro-tile as float (6 x 64).
#if defined(EFFATTN_LEVEL_BF16) && EFFATTN_LEVEL_BF16

/// The word permutation that interleaves the two halves of a 32-word vector:
/// (x0, x16, x1, x17, ..., x15, x31).
EFFATTN_BF16_FN inline __m512i interleave_halves_index() {
  alignas(64) std::uint16_t idx[32];
  for (int k = 0; k < 32; ++k) idx[k] = static_cast<std::uint16_t>(k % 2 == 0 ? k / 2 : 16 + k / 2);
  return _mm512_load_si512(idx);
}

/// C[r][0:16*CV] (+)= sum_p A(r, pair p) . Bm[p][0:16*CV] over `depth` pairs,
/// where A(r, p) is the pair of bfloat16 at a + r * ars + p * adp (words) and
/// Bm[p] holds 16*CV query pairs (ldb words per pair row).
template <int RR, int CV, bool kAccumulate>
EFFATTN_BF16_FN EFFATTN_ALWAYS_INLINE void micro_gemm_bf16(const std::uint16_t* a, index_t ars, index_t adp,
                                                           const std::uint16_t* bm, index_t ldb, index_t depth,
                                                           float* c, index_t ldc) {
  __m512 acc[RR][CV];
#pragma GCC unroll 8
  for (int r = 0; r < RR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < CV; ++v) acc[r][v] = kAccumulate ? _mm512_loadu_ps(c + r * ldc + v * 16) : _mm512_setzero_ps();
  for (index_t d = 0; d < depth; ++d) {
    __m512bh bv[CV];
#pragma GCC unroll 4
    for (int v = 0; v < CV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(bm + d * ldb + v * 32);
#pragma GCC unroll 8
    for (int r = 0; r < RR; ++r) {
      std::uint32_t pair;
      std::memcpy(&pair, a + r * ars + d * adp, sizeof pair);
      const __m512bh ab = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
#pragma GCC unroll 4
      for (int v = 0; v < CV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], ab, bv[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < CV; ++v) _mm512_storeu_ps(c + r * ldc + v * 16, acc[r][v]);
}

/// tile_gemm for bfloat16 pairs: C[0:rows][0:cols] (+)= A Bm, cols a multiple
/// of Blocking<float>::Q, depth in pairs.
template <bool kAccumulate>
EFFATTN_BF16_FN inline void tile_gemm_bf16(index_t rows, index_t cols, const std::uint16_t* a, index_t ars,
                                           index_t adp, const std::uint16_t* bm, index_t ldb, index_t depth,
                                           float* c, index_t ldc) {
  constexpr int R = Blocking<float>::R, CV = Blocking<float>::C, Q = Blocking<float>::Q;
  static_assert(Q == 16 * CV, "bfloat16 pairs fill float lanes");
  for (index_t c0 = 0; c0 < cols; c0 += Q) {
    const std::uint16_t* b0 = bm + 2 * c0;
    index_t r = 0;
    for (; r + R <= rows; r += R)
      micro_gemm_bf16<R, CV, kAccumulate>(a + r * ars, ars, adp, b0, ldb, depth, c + r * ldc + c0, ldc);
    const std::uint16_t* ar = a + r * ars;
    float* cr = c + r * ldc + c0;
    switch (rows - r) {
      case 0: break;
      case 1: micro_gemm_bf16<1, CV, kAccumulate>(ar, ars, adp, b0, ldb, depth, cr, ldc); break;
      case 2: micro_gemm_bf16<2, CV, kAccumulate>(ar, ars, adp, b0, ldb, depth, cr, ldc); break;
      case 3: micro_gemm_bf16<3, CV, kAccumulate>(ar, ars, adp, b0, ldb, depth, cr, ldc); break;
      case 4: micro_gemm_bf16<4, CV, kAccumulate>(ar, ars, adp, b0, ldb, depth, cr, ldc); break;
      default: micro_gemm_bf16<5, CV, kAccumulate>(ar, ars, adp, b0, ldb, depth, cr, ldc); break;
    }
  }
}

inline const std::uint16_t* bf16_words(const bfloat16* x) { return reinterpret_cast<const std::uint16_t*>(x); }

/// qh[d/2][c][d%2] = bf16(scale * q[i0 + c][d]) for c < nq, d < D; 0 in the
/// padding (queries up to a multiple of the micro-tile, D up to even).
template <class T>
inline void pack_query_tile_bf16(const Problem<T, bfloat16>& p, index_t b, index_t h, index_t i0, index_t nq,
                                 index_t ld, std::uint16_t* qh) {
  const index_t dpairs = (p.D + 1) / 2;
  std::fill(qh, qh + dpairs * 2 * ld, std::uint16_t(0));
  const T* qb = p.q + b * p.qs[0] + h * p.qs[1];
  for (index_t i = 0; i < nq; ++i) {
    const T* row = qb + (i0 + i) * p.qs[2];
    for (index_t d = 0; d < p.D; ++d)
      qh[(d / 2) * 2 * ld + 2 * i + (d & 1)] =
          float_to_bfloat16_bits(static_cast<float>(row[d * p.qs[3]]) * p.scale);
  }
}

/// kh[r][0:2*dpairs] = the kn key rows from k (row stride rs, element stride
/// cs), padded with a zero to an even length: keys that cannot be read in
/// place as pairs.
inline void pack_keys_bf16(const bfloat16* k, index_t rs, index_t cs, index_t kn, index_t D, std::uint16_t* kh) {
  const index_t row = 2 * ((D + 1) / 2);
  for (index_t r = 0; r < kn; ++r) {
    for (index_t d = 0; d < D; ++d) kh[r * row + d] = k[r * rs + d * cs].bits;
    if (row > D) kh[r * row + D] = 0;
  }
}

/// ph[j/2][c][j%2] = bf16(St[j][c]) for the kn keys (a zero key pads an odd
/// kn) and nqp queries: the probabilities as the PV product's pairs.
EFFATTN_BF16_FN inline void pack_probs_bf16(const float* st, index_t ld, index_t kn, index_t nqp, std::uint16_t* ph) {
  const __m512i idx = interleave_halves_index();
  for (index_t jp = 0; jp < (kn + 1) / 2; ++jp) {
    const float* r0 = st + 2 * jp * ld;
    const bool odd = 2 * jp + 1 == kn;
    const float* r1 = r0 + ld;
    std::uint16_t* dst = ph + jp * 2 * ld;
    for (index_t c = 0; c < nqp; c += 16) {
      const __m512 a = _mm512_loadu_ps(r0 + c);
      const __m512 bb = odd ? _mm512_setzero_ps() : _mm512_loadu_ps(r1 + c);
      const __m512i x = (__m512i)_mm512_cvtne2ps_pbh(bb, a);  // words 0-15: a, 16-31: bb
      _mm512_storeu_si512(dst + 2 * c, _mm512_permutexvar_epi16(idx, x));
    }
  }
}

/// vh[j/2][e][j%2] = v[j][e] for the kn value rows (row stride rs, element
/// stride cs; a zero row pads an odd kn): V^T in pairs of keys.
EFFATTN_BF16_FN inline void pack_values_bf16(const bfloat16* v, index_t rs, index_t cs, index_t kn, index_t Dv,
                                             std::uint16_t* vh) {
  const __m512i idx = interleave_halves_index();
  const index_t efull = cs == 1 ? Dv / 16 * 16 : 0;
  for (index_t jp = 0; jp < (kn + 1) / 2; ++jp) {
    const std::uint16_t* r0 = bf16_words(v + 2 * jp * rs);
    const bool odd = 2 * jp + 1 == kn;
    const std::uint16_t* r1 = odd ? nullptr : r0 + rs;
    std::uint16_t* dst = vh + jp * 2 * Dv;
    for (index_t e = 0; e < efull; e += 16) {
      const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + e));
      const __m256i hi = odd ? _mm256_setzero_si256() : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r1 + e));
      const __m512i x = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      _mm512_storeu_si512(dst + 2 * e, _mm512_permutexvar_epi16(idx, x));
    }
    for (index_t e = efull; e < Dv; ++e) {
      dst[2 * e] = r0[e * cs];
      dst[2 * e + 1] = odd ? std::uint16_t(0) : r1[e * cs];
    }
  }
}

/// attend_tile for bfloat16 k, v (q bfloat16, or float rounded as it is
/// packed) on vdpbf16ps (see above): the same blocks, mask, score and online
/// softmax, the two products in pairs.
template <class T, class BMask, class BScore, bool kScore>
EFFATTN_BF16_FN void attend_tile_bf16(const Problem<T, bfloat16>& p, index_t b, index_t h, index_t i0,
                                      index_t i1, index_t kb, index_t ke, index_t bq, index_t bk, const BMask& mask,
                                      const BScore& score, TileScratch<float>& w) {
  const index_t D = p.D, Dv = p.Dv, hk = h / p.G, dpairs = (D + 1) / 2;
  const index_t nq = i1 - i0, nqp = round_up(nq, Blocking<float>::Q), ld = bq;
  pack_query_tile_bf16(p, b, h, i0, nq, ld, w.qh.data());
  start_tile(nqp, ld, Dv, w);

  const bfloat16* kbase = p.k + b * p.ks[0] + hk * p.ks[1];
  const bfloat16* vbase = p.v + b * p.vs[0] + hk * p.vs[1];
  // Key rows are read in place when their pairs are adjacent in memory.
  const bool keys_in_place = p.ks[3] == 1 && D % 2 == 0;
  const index_t kend = std::min(ke, mask.key_end(i0, i1));
  float* st = w.st.data();
  float* ot = w.ot.data();
  for (index_t j0 = kb; j0 < kend; j0 += bk) {
    const index_t j1 = std::min(j0 + bk, kend), kn = j1 - j0;
    const BlockKind kind = mask.classify(i0, i1, j0, j1);
    if (kind == BlockKind::empty) continue;

    if (keys_in_place) {
      tile_gemm_bf16<false>(kn, nqp, bf16_words(kbase + j0 * p.ks[2]), p.ks[2], 2, w.qh.data(), 2 * ld, dpairs, st, ld);
    } else {
      pack_keys_bf16(kbase + j0 * p.ks[2], p.ks[2], p.ks[3], kn, D, w.kh.data());
      tile_gemm_bf16<false>(kn, nqp, w.kh.data(), 2 * dpairs, 2, w.qh.data(), 2 * ld, dpairs, st, ld);
    }
    softmax_block<float, BMask, BScore, kScore>(i0, i1, j0, kn, nqp, ld, Dv, kind, mask, score, w);

    // A partial block whose values hold a non-finite entry skips the p = 0
    // entries, in float (see attend_tile).
    if (kind == BlockKind::partial) {
      widen_block(vbase + j0 * p.vs[2], p.vs[2], p.vs[3], kn, Dv, w.vw.data());
      if (!block_finite(w.vw.data(), Dv, 1, kn, Dv)) {
        pv_skip_masked(w.vw.data(), Dv, 1, kn, Dv, st, ld, nq, ot);
        continue;
      }
    }
    pack_probs_bf16(st, ld, kn, nqp, w.ph.data());
    pack_values_bf16(vbase + j0 * p.vs[2], p.vs[2], p.vs[3], kn, Dv, w.vh.data());
    tile_gemm_bf16<true>(Dv, nqp, w.vh.data(), 2, 2 * Dv, w.ph.data(), 2 * ld, (kn + 1) / 2, ot, ld);
  }
}

#endif  // EFFATTN_LEVEL_BF16

// ---------------------------------------------------------------- row path
//
// For one or a few queries (decoding) a query tile would waste most of its
// lanes, so each query row is handled alone: dot products along D, then
// O += p_j v_j along Dv. This path is memory bound (it reads K and V once),
// so the arithmetic is arranged to keep up with the memory: eight keys' dot
// products run as independent chains and are reduced together, the
// exponentials are vector operations over the chunk's scores, and the output
// accumulators stay in registers while the values stream past.

/// out[r] = the sum of the lanes of acc[r], r < 8, each in a fixed order.
template <class S>
EFFATTN_ALWAYS_INLINE void reduce8(const simd::vec<S> (&acc)[8], S* out) {
#if EFFATTN_LEVEL_AVX && EFFATTN_LEVEL_BYTES == 32
  if constexpr (std::is_same<S, float>::value) {
    const __m256 t0 = _mm256_hadd_ps(acc[0], acc[1]), t1 = _mm256_hadd_ps(acc[2], acc[3]);
    const __m256 t2 = _mm256_hadd_ps(acc[4], acc[5]), t3 = _mm256_hadd_ps(acc[6], acc[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    const __m256 r = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
    _mm256_storeu_ps(out, r);
    return;
  }
#endif
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  if constexpr (std::is_same<S, float>::value) {
    // A transposing tree: halves of pairs (8 -> 4 vectors of two 8-lane
    // partials), then 128-bit quarters (4 -> 2 of four 4-lane partials), then
    // within each quarter; 14 shuffles and 14 adds instead of 8 full
    // reductions.
    __m512 t[4], u[2];
    for (int k = 0; k < 4; ++k)
      t[k] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * k], acc[2 * k + 1], 0x44),
                           _mm512_shuffle_f32x4(acc[2 * k], acc[2 * k + 1], 0xEE));
    for (int k = 0; k < 2; ++k)
      u[k] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * k], t[2 * k + 1], 0x88),
                           _mm512_shuffle_f32x4(t[2 * k], t[2 * k + 1], 0xDD));
    // u[k]'s quarter q holds four partial sums of accumulator 4k + q.
    for (int k = 0; k < 2; ++k) {
      u[k] = _mm512_add_ps(u[k], _mm512_permute_ps(u[k], _MM_SHUFFLE(2, 3, 0, 1)));
      u[k] = _mm512_add_ps(u[k], _mm512_permute_ps(u[k], _MM_SHUFFLE(1, 0, 3, 2)));
    }
    const __m512i pick = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm256_storeu_ps(out, _mm512_castps512_ps256(_mm512_permutex2var_ps(u[0], pick, u[1])));
    return;
  }
#endif
  for (int r = 0; r < 8; ++r) out[r] = simd::reduce_add(acc[r]);
}

/// s[t] *= scale[t * ss] for t < n (int8 rows' scales), in vectors when the
/// scales are contiguous.
template <class S>
inline void scale_scores(S* s, index_t n, const float* scale, index_t ss) {
  constexpr int W = simd::lanes<S>;
  index_t t = 0;
  if (ss == 1)
    for (; t + W <= n; t += W) simd::store(s + t, simd::load(s + t) * simd::load(scale + t));
  for (; t < n; ++t) s[t] *= scale[t * ss];
}

/// o[0 : NV*W] += sum_j p[j] * v_j for the n value rows v_j = vbase + j * vstride
/// (unit element stride), with the accumulators in registers.
template <class S, int NV, class KV>
EFFATTN_ALWAYS_INLINE void pv_rows(const S* pj, index_t n, const KV* vbase, index_t vstride, S* o) {
  using V = simd::vec<S>;
  constexpr int W = simd::lanes<S>;
  V acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = simd::load(o + v * W);
  for (index_t j = 0; j < n; ++j) {
    if (pj[j] == S(0)) continue;  // masked keys: no bytes read
    const V pv = simd::splat<S>(pj[j]);
    const KV* row = vbase + j * vstride;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] = simd::fmadd(pv, simd::load_as<S>(row + v * W), acc[v]);
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) simd::store(o + v * W, acc[v]);
}

/// Attends query i of (b, h) over keys [kb, ke): writes unnormalised o[dvp],
/// and returns m and l.
template <class T, class S, class BMask, class BScore, bool kScore, class KV>
void attend_row(const Problem<T, KV>& p, index_t b, index_t h, index_t i, index_t kb, index_t ke, const BMask& mask,
                const BScore& score, RowScratch<S>& w, S* o, S& m_out, S& l_out) {
  using V = simd::vec<S>;
  constexpr int W = simd::lanes<S>;
  const index_t D = p.D, Dv = p.Dv, dvp = round_up(Dv, W), hk = h / p.G;
  const S ninf = -std::numeric_limits<S>::infinity();
  S* qv = w.q.data();
  const T* qrow = p.q + b * p.qs[0] + h * p.qs[1] + i * p.qs[2];
  for (index_t d = 0; d < D; ++d) qv[d] = static_cast<S>(qrow[d * p.qs[3]]) * static_cast<S>(p.scale);
  for (index_t e = 0; e < dvp; ++e) o[e] = 0;
  m_out = ninf;
  l_out = 0;
  const index_t kend = std::min(ke, mask.key_end(i, i + 1));
  if (kb >= kend || mask.classify(i, i + 1, kb, kend) == BlockKind::empty) return;
  const KV* kbase = p.k + b * p.ks[0] + hk * p.ks[1] + kb * p.ks[2];
  const KV* vbase = p.v + b * p.vs[0] + hk * p.vs[1] + kb * p.vs[2];
  const index_t n = kend - kb;
  S* s = w.s.data();

  // Scores. Unit-stride key rows are read in place (16-bit ones widened as
  // they load), eight keys at a time; other strides are gathered first.
  const index_t dfull = D / W * W;
  index_t j = 0;
  if (p.ks[3] == 1) {
    for (; j + 8 <= n; j += 8) {
      V acc[8];
      const KV* rows[8];
#pragma GCC unroll 8
      for (int r = 0; r < 8; ++r) {
        acc[r] = simd::splat<S>(0);
        rows[r] = kbase + (j + r) * p.ks[2];
      }
      for (index_t d = 0; d < dfull; d += W) {
        const V qd = simd::load(qv + d);
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) acc[r] = simd::fmadd(qd, simd::load_as<S>(rows[r] + d), acc[r]);
      }
      reduce8<S>(acc, s + j);
      for (index_t d = dfull; d < D; ++d)
        for (int r = 0; r < 8; ++r) s[j + r] += qv[d] * static_cast<S>(rows[r][d]);
    }
  }
  S* kb_ = w.kbuf.data();
  for (; j < n; ++j) {
    const KV* krow = kbase + j * p.ks[2];
    for (index_t d = 0; d < D; ++d) kb_[d] = static_cast<S>(krow[d * p.ks[3]]);
    V acc = simd::splat<S>(0);
    for (index_t d = 0; d < dfull; d += W) acc = simd::fmadd(simd::load(qv + d), simd::load(kb_ + d), acc);
    S t = simd::reduce_add(acc);
    for (index_t d = dfull; d < D; ++d) t += qv[d] * kb_[d];
    s[j] = t;
  }
  // int8 keys: the row's scale multiplies its dot product.
  if constexpr (std::is_same<KV, std::int8_t>::value)
    scale_scores(s, n, p.ksc + b * p.kss[0] + hk * p.kss[1] + kb * p.kss[2], p.kss[2]);
  // Score, then mask (which overwrites: see attend_tile).
  if (kScore) score.apply(i, kb, kend, s, 1);
  if (mask.classify(i, i + 1, kb, kend) == BlockKind::partial) mask.apply(i, kb, kend, s, 1);

  // Softmax over the chunk, in vectors (the padding lanes are -inf: exp 0).
  const index_t np = round_up(n, W);
  for (index_t t = n; t < np; ++t) s[t] = ninf;
  V mxv = simd::splat<S>(ninf);
  for (index_t t = 0; t < np; t += W) mxv = simd::max(mxv, simd::load(s + t));
  const S mx = simd::reduce_max(mxv);
  m_out = mx;
  if (mx == ninf) return;
  const V mv = simd::splat<S>(mx);
  V sumv = simd::splat<S>(0);
  for (index_t t = 0; t < np; t += W) {
    const V e = simd::exp(simd::load(s + t) - mv);
    simd::store(s + t, e);
    sumv = sumv + e;
  }
  l_out = simd::reduce_add(sumv);
  // int8 values: o += (p_j * scale_j) * code_j (l keeps the plain p_j).
  if constexpr (std::is_same<KV, std::int8_t>::value)
    scale_scores(s, n, p.vsc + b * p.vss[0] + hk * p.vss[1] + kb * p.vss[2], p.vss[2]);

  // O += P V: registers hold up to 8 vectors of the output; unit-stride value
  // rows stream in place, others are gathered.
  if (p.vs[3] == 1 && Dv % W == 0) {
    for (index_t e0 = 0; e0 < Dv; e0 += 8 * W) {
      const int nv = static_cast<int>(std::min<index_t>(8, (Dv - e0) / W));
      const KV* vb0 = vbase + e0;
      switch (nv) {
        case 1: pv_rows<S, 1>(s, n, vb0, p.vs[2], o + e0); break;
        case 2: pv_rows<S, 2>(s, n, vb0, p.vs[2], o + e0); break;
        case 3: pv_rows<S, 3>(s, n, vb0, p.vs[2], o + e0); break;
        case 4: pv_rows<S, 4>(s, n, vb0, p.vs[2], o + e0); break;
        case 5: pv_rows<S, 5>(s, n, vb0, p.vs[2], o + e0); break;
        case 6: pv_rows<S, 6>(s, n, vb0, p.vs[2], o + e0); break;
        case 7: pv_rows<S, 7>(s, n, vb0, p.vs[2], o + e0); break;
        default: pv_rows<S, 8>(s, n, vb0, p.vs[2], o + e0); break;
      }
    }
    return;
  }
  S* vb = w.vbuf.data();
  for (index_t e = Dv; e < dvp; ++e) vb[e] = 0;
  for (index_t t = 0; t < n; ++t) {
    if (s[t] == S(0)) continue;
    const KV* vrow = vbase + t * p.vs[2];
    for (index_t e = 0; e < Dv; ++e) vb[e] = static_cast<S>(vrow[e * p.vs[3]]);
    const V pv = simd::splat<S>(s[t]);
    for (index_t e = 0; e < dvp; e += W) simd::store(o + e, simd::fmadd(pv, simd::load(vb + e), simd::load(o + e)));
  }
}


// ------------------------------------------------------------ engine paths

/// Default query tile: 96 queries (a multiple of the micro-tile width with
/// AVX2 and the baseline) or 64 (AVX-512); measured best on the benchmark
/// shapes.
constexpr index_t kDefaultBlockQ =
    Blocking<float>::Q >= 64 ? Blocking<float>::Q : 96 / Blocking<float>::Q * Blocking<float>::Q;

/// The query tile of a call: the default for 0, else block_q rounded up to a
/// multiple of the micro-tile width (4096 is a multiple of every width).
inline index_t query_tile(index_t block_q) {
  return block_q > 0 ? round_up(block_q, Blocking<float>::Q) : kDefaultBlockQ;
}

/// The decode path (at most kRowPathMaxQueries queries per head): one work
/// item per (b, h, i) when the keys fit one kSplitKeyChunk chunk, else per
/// (b, h, i, key chunk) with the partials merged by merge_partials().
template <class T, class KV, class Mask, class Score>
void run_decode(const Problem<T, KV>& p, const Mask& mask, const Score& score, const Executor& ex) {
  using S = acc_t<T>;
  constexpr int W = simd::lanes<S>;
  constexpr bool kScore = Score::active;
  const index_t dvp = round_up(p.Dv, W);
  const index_t nch = std::max<index_t>(1, ceil_div(p.Nk, kSplitKeyChunk));
  const index_t rows = p.B * p.H * p.Nq;
  const index_t chunk = nch == 1 ? std::max<index_t>(p.Nk, 1) : kSplitKeyChunk;
  auto make = [&] { return RowScratch<S>(chunk, p.D, dvp); };
  if (nch == 1) {
    parallel_items(ex, rows, make, [&](index_t item, RowScratch<S>& w) {
      const index_t i = item % p.Nq, bh = item / p.Nq, h = bh % p.H, b = bh / p.H;
      const auto bm = mask.bind(b, h, p.Nq, p.Nk);
      const auto bs = score.bind(b, h);
      S m, l;
      attend_row<T, S, decltype(bm), decltype(bs), kScore>(p, b, h, i, 0, p.Nk, bm, bs, w, w.o.data(), m, l);
      finalize_row(p, b, h, i, w.o.data(), m, l);
    });
    return;
  }
  const index_t stride = dvp + 2;
  std::vector<S> part(static_cast<size_t>(rows * nch * stride));
  parallel_items(ex, rows * nch, make, [&](index_t item, RowScratch<S>& w) {
    const index_t c = item % nch, row = item / nch;
    const index_t i = row % p.Nq, bh = row / p.Nq, h = bh % p.H, b = bh / p.H;
    const auto bm = mask.bind(b, h, p.Nq, p.Nk);
    const auto bs = score.bind(b, h);
    S* dst = part.data() + item * stride;
    attend_row<T, S, decltype(bm), decltype(bs), kScore>(p, b, h, i, c * kSplitKeyChunk,
                                                         std::min(p.Nk, (c + 1) * kSplitKeyChunk), bm, bs, w, dst,
                                                         dst[dvp], dst[dvp + 1]);
  });
  merge_partials(p, part.data(), nch, dvp);
}

/// The tiled path: one work item per (b, h, query tile), each running every
/// key block of its tile through attend_tile and writing it with finalize_tile.
template <class T, class KV, class Mask, class Score>
void run_tiles(const Problem<T, KV>& p, const Mask& mask, const Score& score, const AttentionOptions& opt,
               const Executor& ex) {
  using S = acc_t<T>;
  constexpr bool kScore = Score::active;
  const index_t bq = query_tile(opt.block_q);
  const index_t bk = opt.block_k > 0 ? opt.block_k : kDefaultBlockK;
  const index_t nqt = ceil_div(p.Nq, bq);
  auto make = [&] { return TileScratch<S>(bq, bk, p.D, p.Dv, !std::is_same<KV, S>::value, p.dot_bf16); };
  parallel_items(ex, p.B * p.H * nqt, make, [&](index_t item, TileScratch<S>& w) {
    // Heaviest tiles first (the last query tiles of a causal mask), so the
    // dynamic schedule ends balanced.
    const index_t qt = nqt - 1 - item % nqt, bh = item / nqt, h = bh % p.H, b = bh / p.H;
    const index_t i0 = qt * bq, i1 = std::min(p.Nq, i0 + bq);
    const auto bm = mask.bind(b, h, p.Nq, p.Nk);
    const auto bs = score.bind(b, h);
#if defined(EFFATTN_LEVEL_BF16) && EFFATTN_LEVEL_BF16
    if constexpr ((std::is_same<T, bfloat16>::value || std::is_same<T, float>::value) &&
                  std::is_same<KV, bfloat16>::value)
      if (p.dot_bf16) {
        attend_tile_bf16<T, decltype(bm), decltype(bs), kScore>(p, b, h, i0, i1, 0, p.Nk, bq, bk, bm, bs, w);
        finalize_tile(p, b, h, i0, i1, w);
        return;
      }
#endif
    attend_tile<T, S, decltype(bm), decltype(bs), kScore>(p, b, h, i0, i1, 0, p.Nk, bq, bk, bm, bs, w);
    finalize_tile(p, b, h, i0, i1, w);
  });
}

/// The decode path for at most kRowPathMaxQueries queries per head, else the
/// tiled path, on the executor given.
template <class T, class KV, class Mask, class Score>
void run_attention(const Problem<T, KV>& p, const Mask& mask, const Score& score, const AttentionOptions& opt,
                   const Executor& ex) {
  if (p.Nq <= kRowPathMaxQueries)
    run_decode(p, mask, score, ex);
  else
    run_tiles(p, mask, score, opt, ex);
}

/// One attention item of the ordered tile pipeline (tile_pipeline.hpp): the
/// queries [i0, i1) of (b, h) over all keys, written out.
template <class T, class S, class BMask, class BScore, bool kScore, class KV>
void attend_tile_item(const Problem<T, KV>& p, index_t b, index_t h, index_t i0, index_t i1, index_t bq, index_t bk,
                      const BMask& mask, const BScore& score, TileScratch<S>& w) {
#if defined(EFFATTN_LEVEL_BF16) && EFFATTN_LEVEL_BF16
  if constexpr ((std::is_same<T, bfloat16>::value || std::is_same<T, float>::value) &&
                std::is_same<KV, bfloat16>::value)
    if (p.dot_bf16) {
      attend_tile_bf16<T, BMask, BScore, kScore>(p, b, h, i0, i1, 0, p.Nk, bq, bk, mask, score, w);
      finalize_tile(p, b, h, i0, i1, w);
      return;
    }
#endif
  attend_tile<T, S, BMask, BScore, kScore>(p, b, h, i0, i1, 0, p.Nk, bq, bk, mask, score, w);
  finalize_tile(p, b, h, i0, i1, w);
}

/// Sc[key][query] = <k[key], scale * q[query]> for the keys [j0, j0 + kn) of
/// k-head hk and the queries [i0, i1) of (b, h): the engine's score tile
/// (ld = bq; qt holds D x bq), for methods that need the logits themselves
/// (selective attention's selection step).
template <class T, class S>
void score_tile(const Problem<T>& p, index_t b, index_t h, index_t i0, index_t i1, index_t j0, index_t kn, index_t bq,
                S* qt, S* sc) {
  const index_t nq = i1 - i0, nqp = round_up(nq, Blocking<S>::Q), hk = h / p.G;
  const T* kb = p.k + b * p.ks[0] + hk * p.ks[1] + j0 * p.ks[2];
  pack_query_tile(p, b, h, i0, nq, bq, qt);
  tile_gemm<S, false>(kn, nqp, kb, p.ks[2], p.ks[3], qt, bq, p.D, sc, bq);
}

/// The machine roof of this level, for the benchmarks: `inner` rounds of 12
/// independent vector FMA chains (enough to cover the FMA latency of current
/// x86 cores), 2 * 12 * lanes * inner flops; returns a lane sum so that
/// nothing is optimised away.
inline float fma_peak_kernel(long inner) {
  constexpr int kAcc = 12;
  simd::vf acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = simd::broadcast(0.001f * static_cast<float>(i));
  const simd::vf a = simd::broadcast(0.99999f), b = simd::broadcast(1e-6f);
  for (long it = 0; it < inner; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kAcc; ++i) acc[i] = simd::fmadd(acc[i], a, b);
  }
  float sink = 0;
  for (int i = 0; i < kAcc; ++i) sink += acc[i][0];
  return sink;
}

// ------------------------------------------------------------ dense layers
//
// nn::linear's y = x W^T (x [M, K] and W [N, K] row-major, torch's layout) on
// the same micro-kernel: A = x (rows = tokens, broadcast in place, ads = 1),
// Bm = W^T packed once per call in panels of Q = Blocking<float>::Q outputs,
//
//     wp[(p * K + k) * Q + j] = W[p * Q + j][k]   (0 past the last output),
//
// C = y. Every output's sum runs over k in blocks of kGemmDepth, in order,
// one FMA chain, whatever tile it falls in: the split of the work among
// threads never changes a bit. A block of W^T (kGemmDepth x Q floats, 32 KiB
// at AVX-512) stays in L1 while the tile's rows stream past it.

constexpr index_t kGemmDepth = 128;

/// Floats of the packed W^T of a [N, K] weight.
inline index_t gemm_packed_size(index_t K, index_t N) { return ceil_div(N, Blocking<float>::Q) * K * Blocking<float>::Q; }

/// dst[i * ldd + j] = src[j * lds + i] for a T x T block, T = 16 at
/// AVX-512 and 8 at AVX(2) (register transposes: unpack, then lane
/// shuffles), false elsewhere (the caller copies element by element).
EFFATTN_ALWAYS_INLINE bool transpose_block(const float* src, index_t lds, float* dst, index_t ldd) {
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; ++i) {  // per 128-bit lane: a0 b0 a1 b1 / a2 b2 a3 b3
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {  // r[4g + c], lane L: column 4L + c of rows 4g..4g+3
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int c = 0; c < 4; ++c) {  // gather lane L of the four row groups: column 4L + c
    const __m512 u0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44), u1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
    const __m512 v0 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
    const __m512 v1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
    _mm512_storeu_ps(dst + (0 + c) * ldd, _mm512_shuffle_f32x4(u0, v0, 0x88));
    _mm512_storeu_ps(dst + (4 + c) * ldd, _mm512_shuffle_f32x4(u0, v0, 0xDD));
    _mm512_storeu_ps(dst + (8 + c) * ldd, _mm512_shuffle_f32x4(u1, v1, 0x88));
    _mm512_storeu_ps(dst + (12 + c) * ldd, _mm512_shuffle_f32x4(u1, v1, 0xDD));
  }
  return true;
#elif EFFATTN_LEVEL_AVX && EFFATTN_LEVEL_BYTES == 32
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 2; ++g) {  // r[4g + c], lane L: column 4L + c of rows 4g..4g+3
    r[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int c = 0; c < 4; ++c) {
    _mm256_storeu_ps(dst + c * ldd, _mm256_permute2f128_ps(r[c], r[4 + c], 0x20));
    _mm256_storeu_ps(dst + (4 + c) * ldd, _mm256_permute2f128_ps(r[c], r[4 + c], 0x31));
  }
  return true;
#else
  (void)src, (void)lds, (void)dst, (void)ldd;
  return false;
#endif
}

/// Packs panel p (outputs [p Q, p Q + Q)) of W [N, K] into wp (see above):
/// whole T x T blocks by register transposes, the edges element by element.
inline void gemm_pack_panel(const float* w, index_t K, index_t N, index_t p, float* wp) {
#if EFFATTN_LEVEL_AVX512 && EFFATTN_LEVEL_BYTES == 64
  constexpr index_t T = 16;
#else
  constexpr index_t T = 8;
#endif
  constexpr index_t Q = Blocking<float>::Q;
  float* dst = wp + p * K * Q;
  const index_t j0 = p * Q, nj = std::min(Q, N - j0);
  const index_t jfull = Q % T == 0 ? nj / T * T : 0, kfull = K / T * T;
  for (index_t k0 = 0; k0 < kfull; k0 += T) {
    index_t j = 0;
    for (; j < jfull; j += T)
      if (!transpose_block(w + (j0 + j) * K + k0, K, dst + k0 * Q + j, Q)) break;
    for (; j < nj; ++j)
      for (index_t i = 0; i < T; ++i) dst[(k0 + i) * Q + j] = w[(j0 + j) * K + k0 + i];
  }
  for (index_t j = 0; j < nj; ++j)
    for (index_t k = kfull; k < K; ++k) dst[k * Q + j] = w[(j0 + j) * K + k];
  for (index_t k = 0; k < K; ++k)
    for (index_t j = nj; j < Q; ++j) dst[k * Q + j] = 0.0f;
}

/// y[0:m, p0 Q : min(N, p1 Q)] = x[0:m, 0:K] W^T over the panels [p0, p1) of
/// wp, rows of x and y ldx and ldy floats apart. The last panel of a layer
/// whose N is not a multiple of Q goes through `tail` (m x Q floats) so that
/// nothing past y's row is written.
inline void gemm_tile(const float* x, index_t ldx, index_t K, const float* wp, index_t N, index_t m, index_t p0,
                      index_t p1, float* y, index_t ldy, float* tail) {
  constexpr index_t Q = Blocking<float>::Q;
  for (index_t k0 = 0; k0 < K; k0 += kGemmDepth) {
    const index_t kc = std::min(kGemmDepth, K - k0);
    for (index_t p = p0; p < p1; ++p) {
      const float* bm = wp + (p * K + k0) * Q;
      const bool full = (p + 1) * Q <= N;
      float* c = full ? y + p * Q : tail;
      const index_t ldc = full ? ldy : Q;
      if (k0 == 0)
        tile_gemm<float, false>(m, Q, x + k0, ldx, 1, bm, Q, kc, c, ldc);
      else
        tile_gemm<float, true>(m, Q, x + k0, ldx, 1, bm, Q, kc, c, ldc);
    }
  }
  if ((p1 * Q > N) && p1 > p0) {  // the ragged last panel: copy its columns
    const index_t j0 = (p1 - 1) * Q, nj = N - j0;
    for (index_t i = 0; i < m; ++i) std::copy(tail + i * Q, tail + i * Q + nj, y + i * ldy + j0);
  }
}
