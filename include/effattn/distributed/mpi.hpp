// SPDX-License-Identifier: MIT
// effattn::distributed: attention over keys and values sharded across MPI
// processes (ranks). Optional: this header includes <mpi.h>, so effattn.hpp
// never includes it; link MPI yourself (CMake: the build tree's effattn::mpi,
// or effattn::effattn plus MPI::MPI_CXX). See docs/distributed.md.
//
//  - sharded_attention: each rank holds a contiguous range of key positions
//    (KeyShard); it runs the engine with log-sum-exp over its shard, and ONE
//    MPI_Allreduce with a user-defined, non-commutative operation merges the
//    per-query partials (m, l, o) in rank order: B * H * Nq * (Dv + 2) numbers
//    per call, whatever the context length. perceiver_ar_cross_attention is
//    Perceiver AR's cross-attention into the latents over a sharded prefix.
//  - ring_causal_attention: causal self-attention (prefill) with queries, keys
//    and values sharded by ring_positions (zigzag by default, so every rank
//    does the same causal work); K/V blocks travel the ring with MPI_Isend /
//    MPI_Irecv posted before each step's compute, and a block no rank further
//    down the ring needs is neither sent nor waited for.
//
// The partial results merge through the log-sum-exp, exactly as the engine's
// own split-KV chunks do across threads: with (m, l, o) a partial's max logit,
// sum of exp(logit - m) and unnormalised output,
//
//     m = max(m_a, m_b),  l = l_a e^(m_a - m) + l_b e^(m_b - m),  o = o_a e^(m_a - m) + o_b e^(m_b - m)
//
// and the engine's (out, lse) of a shard is the partial (lse, 1, out). The
// merge order is fixed (rank order for the allreduce, ring-step order for the
// prefill), so results are bit-identical from run to run for a given rank
// count and MPI library, and for any OpenMP thread count per rank; they equal
// the one-process engine within float rounding (bit-identical with one rank).
//
// Every entry point is collective over its communicator. Before any work it
// checks its own arguments and then exchanges a small signature of every
// rank's shapes and options (one MPI_Allgather of 16 integers per rank), so a
// bad argument on one rank, or shapes that do not agree across ranks, throw
// the same effattn::shape_error / parameter_error on ALL ranks instead of
// deadlocking or corrupting a collective. MPI is called from the calling
// thread only (MPI_THREAD_FUNNELED suffices); the engine's OpenMP threads never
// call it.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "../attention/engine.hpp"
#include "../perceiver_ar/masks.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace distributed {

/// A half-open range of sequence positions [begin, end).
struct PositionRange {
  index_t begin = 0;
  index_t end = 0;
  index_t size() const { return end - begin; }
};

/// Where one rank's keys sit in the whole sequence: its k and v hold the keys
/// at positions [begin, begin + k.dim(2)) of a sequence of `total` keys. Across
/// the ranks of a call the shards must tile [0, total) in rank order (rank 0
/// first; a shard may be empty). shard_range gives the balanced split.
struct KeyShard {
  index_t begin = 0;
  index_t total = 0;
};

namespace detail {
using effattn::detail::concat;
using effattn::detail::shape_str;

inline void check_rank_args(const char* op, index_t N, int P, int r) {
  if (N < 0) EFFATTN_THROW(parameter_error(concat(op, ": N must be >= 0, got ", N)));
  if (P < 1) EFFATTN_THROW(parameter_error(concat(op, ": the number of ranks P must be >= 1, got ", P)));
  if (r < 0 || r >= P) EFFATTN_THROW(parameter_error(concat(op, ": rank r must be in [0, P=", P, "), got ", r)));
}
/// Boundary k of the split of N positions into n near-equal pieces (the first
/// N % n pieces one longer): never overflows, whatever N.
inline index_t split_point(index_t N, index_t n, index_t k) { return k * (N / n) + std::min(k, N % n); }
}  // namespace detail

/// The balanced contiguous split of N positions over P ranks: rank r holds
/// [r * (N / P) + min(r, N % P), ...), the first N % P ranks one position more.
/// Throws parameter_error for N < 0, P < 1 or r outside [0, P).
inline PositionRange shard_range(index_t N, int P, int r) {
  detail::check_rank_args("distributed::shard_range", N, P, r);
  return {detail::split_point(N, P, r), detail::split_point(N, P, r + 1)};
}

/// How ring_causal_attention distributes the N positions of a causal prefill.
enum class RingLayout {
  /// 2P near-equal chunks; rank r owns chunks r and 2P-1-r (in that order).
  /// Under a causal mask chunk c costs about c + 1/2 chunk-pairs, so every
  /// rank does the same work: (r + 1/2) + (2P - 1 - r + 1/2) = 2P chunk-pairs.
  zigzag,
  /// P contiguous near-equal blocks: rank r does (2r + 1) / P^2 of the causal
  /// work (2 ranks: 1/4 and 3/4). For comparison; the slowest rank sets the
  /// time.
  contiguous,
};

/// The positions one rank owns in a ring layout, in the order of its local
/// rows: first part[0], then part[1] (part[1] is empty for `contiguous`).
/// Both parts are increasing and part[0] lies before part[1].
struct RingPositions {
  PositionRange part[2];
  index_t size() const { return part[0].size() + part[1].size(); }
  /// Sequence position of local row l (0 <= l < size()).
  index_t position(index_t l) const { return l < part[0].size() ? part[0].begin + l : part[1].begin + (l - part[0].size()); }
};

/// The positions rank r of P owns for a causal prefill of N positions: its q,
/// k, v and out hold, in local row order, the positions part[0] then part[1].
/// For `zigzag` with chunk bounds c_k = k (N / 2P) + min(k, N % 2P), part[0] =
/// [c_r, c_{r+1}) and part[1] = [c_{2P-1-r}, c_{2P-r}); for `contiguous`,
/// part[0] = shard_range(N, P, r). Throws parameter_error on N < 0, P < 1, r
/// outside [0, P) or an unknown layout.
inline RingPositions ring_positions(index_t N, int P, int r, RingLayout layout = RingLayout::zigzag) {
  const char* op = "distributed::ring_positions";
  detail::check_rank_args(op, N, P, r);
  RingPositions p;
  if (layout == RingLayout::zigzag) {
    const index_t n = 2 * static_cast<index_t>(P);
    p.part[0] = {detail::split_point(N, n, r), detail::split_point(N, n, r + 1)};
    p.part[1] = {detail::split_point(N, n, n - 1 - r), detail::split_point(N, n, n - r)};
  } else if (layout == RingLayout::contiguous) {
    p.part[0] = {detail::split_point(N, P, r), detail::split_point(N, P, r + 1)};
    p.part[1] = {p.part[0].end, p.part[0].end};
  } else {
    EFFATTN_THROW(parameter_error(detail::concat(op, ": unknown layout ", static_cast<int>(layout))));
  }
  return p;
}

namespace detail {

// ------------------------------------------------------------ MPI plumbing

/// MPI's default error handler aborts; a communicator set to return errors
/// gets a std::runtime_error naming the call instead.
inline void mpi_call(int rc, const char* op, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw std::runtime_error(concat(op, ": ", call, " failed: ", std::string(msg, static_cast<size_t>(len))));
}

inline int comm_size(MPI_Comm comm, const char* op) {
  int p = 0;
  mpi_call(MPI_Comm_size(comm, &p), op, "MPI_Comm_size");
  return p;
}
inline int comm_rank(MPI_Comm comm, const char* op) {
  int r = 0;
  mpi_call(MPI_Comm_rank(comm, &r), op, "MPI_Comm_rank");
  return r;
}

template <class S>
MPI_Datatype mpi_type() {
  static_assert(std::is_same<S, float>::value || std::is_same<S, double>::value, "float or double");
  return std::is_same<S, float>::value ? MPI_FLOAT : MPI_DOUBLE;
}

/// Frees an MPI handle on scope exit (also when an exception leaves).
struct TypeGuard {
  MPI_Datatype t = MPI_DATATYPE_NULL;
  ~TypeGuard() {
    if (t != MPI_DATATYPE_NULL) MPI_Type_free(&t);
  }
};
struct OpGuard {
  MPI_Op o = MPI_OP_NULL;
  ~OpGuard() {
    if (o != MPI_OP_NULL) MPI_Op_free(&o);
  }
};
struct CommGuard {
  MPI_Comm c = MPI_COMM_NULL;
  ~CommGuard() {
    if (c != MPI_COMM_NULL) MPI_Comm_free(&c);
  }
};

// ------------------------------------------------------------ the merge

/// A partial result of one query: [m, l, o_0 .. o_{Dv-1}] (see the top of the
/// file). r = a (earlier: lower rank, earlier ring step) merged with b; r may
/// alias a or b. l = 0 means "no key" (m = -inf, o = 0). A NaN m marks a rank
/// that failed after the checks: it poisons the result instead of hanging the
/// others.
template <class S>
inline void combine(const S* a, const S* b, S* r, index_t dv) {
  const S am = a[0], al = a[1], bm = b[0], bl = b[1];
  if (std::isnan(am) || std::isnan(bm)) {
    std::fill(r, r + dv + 2, std::numeric_limits<S>::quiet_NaN());
    return;
  }
  if (al == S(0) || bl == S(0)) {
    // One side saw no key: the other side is the result, bit for bit (so a
    // single non-empty partial comes out exactly as the engine wrote it).
    const S* src = al == S(0) ? b : a;
    if (src != r) std::copy(src, src + dv + 2, r);
    return;
  }
  const S m = am > bm ? am : bm;
  const S fa = std::exp(am - m), fb = std::exp(bm - m);
  r[0] = m;
  r[1] = al * fa + bl * fb;
  for (index_t e = 0; e < dv; ++e) r[2 + e] = a[2 + e] * fa + b[2 + e] * fb;
}

/// The MPI_User_function of the allreduce: inoutvec = invec (the lower ranks)
/// merged with inoutvec. The datatype is one whole record (Dv + 2 numbers), so
/// MPI never splits a record, and Dv is read from its size (no global state).
template <class S>
void merge_records(void* invec, void* inoutvec, int* len, MPI_Datatype* dt) {
  int bytes = 0;
  MPI_Type_size(*dt, &bytes);
  const index_t w = static_cast<index_t>(bytes) / static_cast<index_t>(sizeof(S));
  const S* a = static_cast<const S*>(invec);
  S* b = static_cast<S*>(inoutvec);
  for (index_t i = 0; i < *len; ++i) combine(a + i * w, b + i * w, b + i * w, w - 2);
}

/// The engine's (out, lse) of one query as a partial record.
template <class S, class T>
inline void pack_record(S* rec, S lse, const T* o, index_t os, index_t dv) {
  const bool none = lse == -std::numeric_limits<S>::infinity();
  rec[0] = lse;
  rec[1] = none ? S(0) : S(1);
  for (index_t e = 0; e < dv; ++e) rec[2 + e] = static_cast<S>(o[e * os]);
}

/// out = o / l and lse = m + log(l) of a merged record, as the engine writes
/// them (0 and -inf for a query no rank had a key for).
template <class S, class T>
inline void finalize_record(const S* rec, T* o, index_t os, index_t dv, acc_t<T>* lse) {
  const S l = rec[1];
  const S inv = l > S(0) ? S(1) / l : S(0);
  for (index_t e = 0; e < dv; ++e) o[e * os] = l > S(0) ? static_cast<T>(rec[2 + e] * inv) : T(0);
  if (lse) *lse = l > S(0) ? static_cast<acc_t<T>>(rec[0] + std::log(l)) : -std::numeric_limits<acc_t<T>>::infinity();
}

// ------------------------------------------------------------ agreement

/// Fields of the signature every rank contributes before the work.
enum Field : int {
  f_op, f_status, f_types, f_B, f_H, f_Hkv, f_Nq, f_D, f_Dv, f_begin, f_n, f_total, f_scale, f_lse, f_backend,
  f_layout, kFields
};
using Signature = std::array<std::int64_t, kFields>;

enum Status : std::int64_t { ok = 0, bad_shape = 1, bad_parameter = 2, bad_other = 3 };

/// Runs `checks` (this rank's own argument checks) and records how they
/// failed, without throwing yet: a throw on one rank alone would leave the
/// others waiting in the next collective.
template <class F>
std::exception_ptr run_local_checks(F&& checks, Signature& sig) {
  sig[f_status] = ok;
  try {
    checks();
  } catch (const shape_error&) {
    sig[f_status] = bad_shape;
    return std::current_exception();
  } catch (const parameter_error&) {
    sig[f_status] = bad_parameter;
    return std::current_exception();
  } catch (const std::exception&) {
    sig[f_status] = bad_other;
    return std::current_exception();
  }
  return nullptr;
}

[[noreturn]] inline void throw_status(std::int64_t status, const std::string& msg) {
  if (status == bad_shape) EFFATTN_THROW(shape_error(msg));
  if (status == bad_parameter) EFFATTN_THROW(parameter_error(msg));
  EFFATTN_THROW(effattn::invalid_argument(msg));
}

/// Exchanges every rank's signature (one MPI_Allgather) and, when some rank
/// failed its own checks, throws on every rank: that rank rethrows its own
/// exception, the others an exception of the same type whose message is the
/// first failing rank's (one MPI_Bcast, only on this error path). Returns the
/// signatures of all ranks, which every rank then validates identically.
inline std::vector<Signature> agree(MPI_Comm comm, const char* op, const Signature& mine, std::exception_ptr err) {
  const int P = comm_size(comm, op), r = comm_rank(comm, op);
  std::vector<Signature> all(static_cast<size_t>(P));
  mpi_call(MPI_Allgather(mine.data(), kFields, MPI_INT64_T, all.data(), kFields, MPI_INT64_T, comm), op,
           "MPI_Allgather");
  int first = -1;
  for (int s = 0; s < P && first < 0; ++s)
    if (all[s][f_status] != ok) first = s;
  if (first < 0) return all;
  std::array<char, 512> msg{};
  if (r == first && err) {
    try {
      std::rethrow_exception(err);
    } catch (const std::exception& e) {
      std::strncpy(msg.data(), e.what(), msg.size() - 1);
    }
  }
  mpi_call(MPI_Bcast(msg.data(), static_cast<int>(msg.size()), MPI_CHAR, first, comm), op, "MPI_Bcast");
  if (err) std::rethrow_exception(err);
  throw_status(all[first][f_status], concat(op, ": rank ", first, " rejected its arguments: ", msg.data()));
}

/// Throws on every rank (all hold the same table) when a field differs from
/// rank 0's.
inline void require_same(const std::vector<Signature>& all, const char* op, std::initializer_list<Field> fields,
                         const char* what_fields) {
  for (size_t s = 1; s < all.size(); ++s)
    for (Field f : fields)
      if (all[s][f] != all[0][f]) {
        const auto show = [&](const Signature& g) {
          return shape_str(std::array<std::int64_t, 7>{g[f_B], g[f_H], g[f_Hkv], g[f_Nq], g[f_D], g[f_Dv], g[f_total]});
        };
        if (f == f_op)
          EFFATTN_THROW(parameter_error(concat(op, ": rank ", s, " is in a different distributed call than rank 0 "
                                                   "(every rank must make the same collective call)")));
        const char* option = f == f_scale     ? "the scale"
                             : f == f_backend ? "the backend"
                             : f == f_layout  ? "the layout"
                             : f == f_types   ? "the element types"
                                              : nullptr;
        if (option)
          EFFATTN_THROW(parameter_error(concat(op, ": ranks disagree on ", option, ": rank ", s, " differs from rank 0")));
        EFFATTN_THROW(shape_error(concat(op, ": ranks disagree on the shapes: ", what_fields, " = ", show(all[s]),
                                         " on rank ", s, " but ", show(all[0]), " on rank 0")));
      }
}

inline std::int64_t scale_bits(double resolved_scale) {
  std::int64_t b = 0;
  static_assert(sizeof(b) == sizeof(resolved_scale), "64-bit double");
  std::memcpy(&b, &resolved_scale, sizeof(b));
  return b;
}

/// The entry points, told apart in the signature.
enum OpId : std::int64_t { op_sharded = 1, op_cross = 2, op_ring = 3 };

template <class T, class KV>
std::int64_t type_code() {
  return static_cast<std::int64_t>(sizeof(T)) * 100 + static_cast<std::int64_t>(sizeof(KV)) +
         (std::is_same<KV, bfloat16>::value ? 1000 : 0);
}

// ------------------------------------------------------------ sharded attention

template <class T, class KV, class Mask, class Score>
void sharded_impl(const char* op, OpId id, MPI_Comm comm, const ConstView<T, 4>& q, const ConstView<KV, 4>& k,
                  const ConstView<KV, 4>& v, const View<T, 4>& out, KeyShard shard, const Mask& mask,
                  const Score& score, const AttentionOptions& opt, const Executor& ex, const View<acc_t<T>, 3>& lse) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "effattn::distributed supports float and double queries");
  using S = acc_t<T>;
  const auto wmask = make_key_window_mask(mask, shard.begin, shard.total);
  const auto wscore = make_key_window_score(score, shard.begin, shard.total);
  Signature sig{};
  effattn::detail::AttnDims d{};
  const std::exception_ptr err = run_local_checks(
      [&] {
        effattn::detail::check_executor(ex, op);
        d = effattn::detail::check_attention_args(op, q, k, v, out, lse, opt,
                                                  effattn::detail::attention_query_tile_quantum());
        wmask.check(op, d.B, d.H, d.Nq, d.Nk);  // the shard lies in [0, total); the mask fits total keys
        wscore.check(op, d.B, d.H, d.Nq, d.Nk);
        // One record per query travels as one element of a derived datatype:
        // MPI counts are int.
        const index_t rows = effattn::detail::checked_product(op, "records B * H * Nq", d.B, d.H, d.Nq);
        if (rows > INT_MAX || d.Dv + 2 > INT_MAX / static_cast<index_t>(sizeof(S)))
          EFFATTN_THROW(shape_error(concat(op, ": B * H * Nq = ", rows, " records of Dv + 2 = ", d.Dv + 2,
                                           " numbers exceed MPI's int counts (q ", shape_str(q.shape()), ")")));
      },
      sig);
  sig[f_op] = id;
  sig[f_types] = type_code<T, KV>();
  sig[f_B] = d.B;
  sig[f_H] = d.H;
  sig[f_Hkv] = d.Hkv;
  sig[f_Nq] = d.Nq;
  sig[f_D] = d.D;
  sig[f_Dv] = d.Dv;
  sig[f_begin] = shard.begin;
  sig[f_n] = d.Nk;
  sig[f_total] = shard.total;
  sig[f_scale] = scale_bits(d.scale);
  sig[f_lse] = d.has_lse;
  sig[f_backend] = static_cast<std::int64_t>(opt.backend);
  const auto all = agree(comm, op, sig, err);
  require_same(all, op, {f_op, f_types, f_B, f_H, f_Hkv, f_Nq, f_D, f_Dv, f_total, f_scale, f_backend},
               "[B,H,Hkv,Nq,D,Dv,total_keys]");
  index_t expect = 0;
  for (size_t s = 0; s < all.size(); ++s) {
    if (all[s][f_begin] != expect)
      EFFATTN_THROW(parameter_error(concat(op, ": the key shards must tile [0, total_keys=", all[0][f_total],
                                           ") in rank order, but rank ", s, " starts at ", all[s][f_begin],
                                           " where rank ", s == 0 ? 0 : s - 1, "'s shard ends at ", expect)));
    expect = all[s][f_begin] + all[s][f_n];
  }
  if (expect != all[0][f_total])
    EFFATTN_THROW(parameter_error(concat(op, ": the key shards must tile [0, total_keys=", all[0][f_total],
                                         ") in rank order, but they end at ", expect)));

  const index_t B = d.B, H = d.H, Nq = d.Nq, Dv = d.Dv, w = Dv + 2, rows = B * H * Nq;
  if (rows == 0) return;  // every rank has no query (the signatures agree)
  std::vector<S> rec(static_cast<size_t>(rows * w));
  std::vector<S> lse_buf;
  View<S, 3> lse_v = lse;
  if (!d.has_lse) {
    lse_buf.resize(static_cast<size_t>(rows));
    lse_v = make_view(lse_buf.data(), B, H, Nq);
  }
  std::exception_ptr late;
  try {
    // Checked above; an empty shard makes every query's partial (-inf, 0, 0).
    effattn::detail::attention_dispatch<T, KV>(q, k, v, out, wmask, wscore, opt, ex, lse_v);
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < Nq; ++i)
          pack_record(rec.data() + ((b * H + h) * Nq + i) * w, static_cast<S>(lse_v(b, h, i)), &out(b, h, i, 0),
                      out.stride(3), Dv);
  } catch (...) {
    // Still join the allreduce (with poison) so the other ranks return.
    late = std::current_exception();
    std::fill(rec.begin(), rec.end(), std::numeric_limits<S>::quiet_NaN());
  }
  TypeGuard type;
  mpi_call(MPI_Type_contiguous(static_cast<int>(w), mpi_type<S>(), &type.t), op, "MPI_Type_contiguous");
  mpi_call(MPI_Type_commit(&type.t), op, "MPI_Type_commit");
  OpGuard merge;
  mpi_call(MPI_Op_create(&merge_records<S>, /*commute=*/0, &merge.o), op, "MPI_Op_create");
  mpi_call(MPI_Allreduce(MPI_IN_PLACE, rec.data(), static_cast<int>(rows), type.t, merge.o, comm), op,
           "MPI_Allreduce");
  if (late) std::rethrow_exception(late);
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < Nq; ++i)
        finalize_record(rec.data() + ((b * H + h) * Nq + i) * w, &out(b, h, i, 0), out.stride(3), Dv,
                        d.has_lse ? &lse(b, h, i) : nullptr);
}

template <class KA, class VA>
using enable_half_kv_t = std::enable_if_t<is_half_storage<KA>::value &&
                                              std::is_same<std::remove_const_t<KA>, std::remove_const_t<VA>>::value,
                                          int>;

}  // namespace detail

/// Attention of every rank's queries over keys and values sharded across the
/// ranks of `comm` (collective: every rank calls it with its own shard).
///
///   out[b,h,i,:] = sum_j softmax_j(scale <q[b,h,i], k[b,h/G,j]> + score(b,h,i,j)) v[b,h/G,j]
///                  over all `shard.total` keys j of all ranks with allowed(b,h,i,j)
///
/// Shapes on each rank: q [B,H,Nq,D] and out [B,H,Nq,Dv] (the same queries on
/// every rank: decoding, or cross-attention), k [B,Hkv,n,D] and v [B,Hkv,n,Dv]
/// holding the keys at positions [shard.begin, shard.begin + n); n may be 0.
/// `mask` and `score` speak in sequence positions (total keys shard.total), so
/// CausalMask is bottom-right aligned against the whole sequence, a
/// KeyLimitMask's limits and a KeyBiasScore's bias [B, total] are global; the
/// engine runs them through KeyWindowMask / KeyWindowScore and skips the key
/// tiles the mask empties. Every rank gets the whole result in out and, when
/// given, lse [B,H,Nq]. A query no rank has an allowed key for gets 0 and -inf.
///
/// Communication: one MPI_Allgather of 16 integers per rank (the argument
/// agreement) and one MPI_Allreduce of B * H * Nq records of Dv + 2 numbers.
/// Throws shape_error / parameter_error on every rank, before any work, when a
/// rank's arguments are bad, the ranks disagree on B, H, Hkv, Nq, D, Dv,
/// total, the scale or the backend, or the shards do not tile
/// [0, total) in rank order.
template <class T, class Mask = NoMask, class Score = NoScore>
void sharded_attention(MPI_Comm comm, effattn::detail::identity_t<ConstView<T, 4>> q,
                       effattn::detail::identity_t<ConstView<T, 4>> k, effattn::detail::identity_t<ConstView<T, 4>> v,
                       View<T, 4> out, KeyShard shard, const Mask& mask = {}, const Score& score = {},
                       const AttentionOptions& opt = {}, const Executor& ex = {},
                       effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  detail::sharded_impl<T, T>("distributed::sharded_attention", detail::op_sharded, comm, q, k, v, out, shard, mask,
                             score, opt, ex, lse);
}

/// sharded_attention with keys and values stored as float16 / bfloat16 (float
/// queries and outputs): half the bytes per rank. Same contract.
template <class T, class Mask = NoMask, class Score = NoScore, class KA, class VA, detail::enable_half_kv_t<KA, VA> = 0>
void sharded_attention(MPI_Comm comm, effattn::detail::identity_t<ConstView<T, 4>> q, const View<KA, 4>& k,
                       const View<VA, 4>& v, View<T, 4> out, KeyShard shard, const Mask& mask = {},
                       const Score& score = {}, const AttentionOptions& opt = {}, const Executor& ex = {},
                       effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  using KV = std::remove_const_t<KA>;
  detail::sharded_impl<T, KV>("distributed::sharded_attention", detail::op_sharded, comm, q, ConstView<KV, 4>(k),
                              ConstView<KV, 4>(v), out, shard, mask, score, opt, ex, lse);
}

namespace detail {
template <class T, class KV>
void cross_impl(MPI_Comm comm, const ConstView<T, 4>& q, const ConstView<KV, 4>& k, const ConstView<KV, 4>& v,
                const View<T, 4>& out, KeyShard shard, const ConstView<index_t, 1>& valid_length,
                const AttentionOptions& opt, const Executor& ex, const View<acc_t<T>, 3>& lse) {
  const char* op = "distributed::perceiver_ar_cross_attention";
  const index_t B = q.dim(0), M = q.dim(2), N = shard.total;
  // Perceiver AR's encoder mask in sequence positions (perceiver_ar/masks.hpp):
  // latent m sits at p_m = L - M + m and sees j <= p_m. Without valid lengths
  // that is the bottom-right CausalMask against all N keys; with them, the key
  // limits p_m + 1 of cross_key_limits. The local checks of the latents come
  // first and only fail this rank; sharded_impl makes every rank agree.
  const bool has_vl = perceiver_ar::detail::has_valid_length(valid_length);
  std::vector<index_t> lim;
  bool bad_local = false;
  std::exception_ptr early;
  try {
    effattn::detail::require(M >= 1, op, "M", "(q.dim(2), the number of latents) must be >= 1, got q ",
                             shape_str(q.shape()));
    effattn::detail::require(M <= N, op, "M", "(q.dim(2), the number of latents) must be <= N=shard.total=", N,
                             ", got q ", shape_str(q.shape()));
    if (has_vl) {
      perceiver_ar::detail::check_valid_length(valid_length, B, N, op);
      lim.resize(static_cast<size_t>(effattn::detail::checked_mul(B, M, op, "key limits B * M")));
      perceiver_ar::cross_key_limits(valid_length, N, make_view(lim.data(), B, M));
    }
  } catch (const std::exception&) {
    bad_local = true;
    early = std::current_exception();
  }
  if (bad_local) {
    // Join the agreement as a failed rank, so every rank throws.
    Signature sig{};
    sig[f_op] = op_cross;
    run_local_checks([&] { std::rethrow_exception(early); }, sig);
    agree(comm, op, sig, early);
  }
  if (has_vl)
    sharded_impl<T, KV>(op, op_cross, comm, q, k, v, out, shard,
                        KeyLimitMask{make_view<const index_t>(lim.data(), B, M)}, NoScore{}, opt, ex, lse);
  else
    sharded_impl<T, KV>(op, op_cross, comm, q, k, v, out, shard, CausalMask{}, NoScore{}, opt, ex, lse);
}
}  // namespace detail

/// Perceiver AR's cross-attention into the M latents (perceiver_ar::
/// cross_attention) over an input prefix whose keys and values are sharded
/// across the ranks of `comm`: latent m, at position p_m = L_b - M + m, sees
/// the keys j <= p_m of all ranks. q [B,H,M,D] (the latents' queries, the same
/// on every rank), k [B,Hkv,n,D], v [B,Hkv,n,Dv] (positions [shard.begin,
/// shard.begin + n) of N = shard.total), out [B,H,M,Dv]; valid_length [B]
/// optional, as in perceiver_ar::cross_attention. Collective; communication and
/// checks as sharded_attention (1 <= M <= N, valid lengths in [0, N]).
template <class T>
void perceiver_ar_cross_attention(MPI_Comm comm, effattn::detail::identity_t<ConstView<T, 4>> q,
                                  effattn::detail::identity_t<ConstView<T, 4>> k,
                                  effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out, KeyShard shard,
                                  ConstView<index_t, 1> valid_length = {}, const AttentionOptions& opt = {},
                                  const Executor& ex = {}, effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  detail::cross_impl<T, T>(comm, q, k, v, out, shard, valid_length, opt, ex, lse);
}

/// The same with 16-bit keys and values (float16 / bfloat16).
template <class T, class KA, class VA, detail::enable_half_kv_t<KA, VA> = 0>
void perceiver_ar_cross_attention(MPI_Comm comm, effattn::detail::identity_t<ConstView<T, 4>> q, const View<KA, 4>& k,
                                  const View<VA, 4>& v, View<T, 4> out, KeyShard shard,
                                  ConstView<index_t, 1> valid_length = {}, const AttentionOptions& opt = {},
                                  const Executor& ex = {}, effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  using KV = std::remove_const_t<KA>;
  detail::cross_impl<T, KV>(comm, q, ConstView<KV, 4>(k), ConstView<KV, 4>(v), out, shard, valid_length, opt, ex, lse);
}

// ------------------------------------------------------------ ring prefill

namespace detail {

/// True when some query position of `qp` may see some key position of `kp`
/// under the causal mask (key <= query): the block is needed at all.
inline bool causal_needs(const RingPositions& qp, const RingPositions& kp) {
  if (qp.size() == 0 || kp.size() == 0) return false;
  const index_t qmax = qp.part[1].size() > 0 ? qp.part[1].end - 1 : qp.part[0].end - 1;
  const index_t kmin = kp.part[0].size() > 0 ? kp.part[0].begin : kp.part[1].begin;
  return kmin <= qmax;
}

/// The ring's schedule, the same function on every rank: at step s rank r
/// holds the block of rank t = (r - s) mod P, which travels r -> r+1 -> ...
/// Block t is present at rank r at step s (received, or own for s = 0) iff
/// some rank from r to the end of its trip, (t + P - 1) mod P, needs it; so a
/// block is forwarded only while a rank further down still needs it, and the
/// send of rank r at step s pairs with the receive of rank r+1 at step s+1.
struct RingSchedule {
  int P;
  std::vector<RingPositions> pos;
  bool needs(int t, int r) const { return causal_needs(pos[r], pos[t]); }
  int block(int r, int s) const { return ((r - s) % P + P) % P; }
  bool present(int r, int s) const {
    const int t = block(r, s);
    if (s == 0) return true;
    for (int k = s; k < P; ++k)
      if (needs(t, (t + k) % P)) return true;
    return false;
  }
  bool sends(int r, int s) const { return s + 1 < P && present((r + 1) % P, s + 1); }
  bool receives(int r, int s) const { return s + 1 < P && present(r, s + 1); }
  bool computes(int r, int s) const { return needs(block(r, s), r); }
};

template <class T>
void ring_impl(MPI_Comm comm, const ConstView<T, 4>& q, const ConstView<T, 4>& k, const ConstView<T, 4>& v,
               const View<T, 4>& out, index_t N, RingLayout layout, const AttentionOptions& opt, const Executor& ex,
               const View<acc_t<T>, 3>& lse) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "effattn::distributed supports float and double");
  const char* op = "distributed::ring_causal_attention";
  const int P = comm_size(comm, op), r = comm_rank(comm, op);
  Signature sig{};
  effattn::detail::AttnDims d{};
  RingSchedule sched{P, {}};
  const std::exception_ptr err = run_local_checks(
      [&] {
        effattn::detail::check_executor(ex, op);
        d = effattn::detail::check_attention_args(op, q, k, v, out, lse, opt,
                                                  effattn::detail::attention_query_tile_quantum());
        if (d.Nq != d.Nk)
          EFFATTN_THROW(shape_error(concat(op, ": q and k must hold the same positions (this rank's), got q ",
                                           shape_str(q.shape()), " k ", shape_str(k.shape()))));
        sched.pos.reserve(static_cast<size_t>(P));
        for (int s = 0; s < P; ++s) sched.pos.push_back(ring_positions(N, P, s, layout));
        const index_t mine = sched.pos[r].size();
        if (d.Nq != mine)
          EFFATTN_THROW(shape_error(concat(op, ": rank ", r, " of ", P, " owns ", mine, " of the N=", N,
                                           " positions (ring_positions), but q is ", shape_str(q.shape()))));
        // Blocks travel as MPI_FLOAT / MPI_DOUBLE counts (int); the step's
        // limits B x n are not needed (one row serves every batch element).
        for (int s = 0; s < P; ++s) {
          const index_t n = sched.pos[s].size();
          const index_t c = effattn::detail::checked_product(op, "K/V block B * Hkv * n * (D + Dv)", d.B, d.Hkv, n,
                                                             d.D + d.Dv);
          if (c > INT_MAX)
            EFFATTN_THROW(shape_error(concat(op, ": a K/V block of B * Hkv * n * (D + Dv) = ", c,
                                             " numbers exceeds MPI's int counts (rank ", s, ", n=", n, ")")));
        }
        effattn::detail::checked_product(op, "records B * H * n * (Dv + 2)", d.B, d.H, d.Nq, d.Dv + 2);
      },
      sig);
  sig[f_op] = op_ring;
  sig[f_types] = type_code<T, T>();
  sig[f_B] = d.B;
  sig[f_H] = d.H;
  sig[f_Hkv] = d.Hkv;
  sig[f_Nq] = d.Nq;
  sig[f_D] = d.D;
  sig[f_Dv] = d.Dv;
  sig[f_n] = d.Nq;
  sig[f_total] = N;
  sig[f_scale] = scale_bits(d.scale);
  sig[f_lse] = d.has_lse;
  sig[f_backend] = static_cast<std::int64_t>(opt.backend);
  sig[f_layout] = static_cast<std::int64_t>(layout);
  const auto all = agree(comm, op, sig, err);
  // Nq is each rank's own share; the ranks agreed on N and the layout, and
  // each checked its share against ring_positions.
  require_same(all, op, {f_op, f_types, f_B, f_H, f_Hkv, f_D, f_Dv, f_total, f_scale, f_backend, f_layout},
               "[B,H,Hkv,n,D,Dv,N]");

  using S = T;  // acc_t<T> is T for float and double
  const index_t B = d.B, H = d.H, Hkv = d.Hkv, n = d.Nq, D = d.D, Dv = d.Dv, w = Dv + 2;
  const index_t rows = B * H * n;
  // A private communicator: the ring's point-to-point messages can never
  // match a receive the caller has posted on `comm`.
  CommGuard ring;
  mpi_call(MPI_Comm_dup(comm, &ring.c), op, "MPI_Comm_dup");
  const int next = (r + 1) % P, prev = (r - 1 + P) % P;
  const auto block_count = [&](int t) { return B * Hkv * sched.pos[t].size() * (D + Dv); };
  index_t maxc = 0;
  for (int t = 0; t < P; ++t) maxc = std::max(maxc, block_count(t));

  // Two packed K/V buffers ([B,Hkv,n_t,D] keys, then [B,Hkv,n_t,Dv] values):
  // one is sent and computed on while the next block arrives in the other.
  std::vector<T> buf[2];
  const bool ring_used = P > 1 && (sched.sends(r, 0) || sched.receives(r, 0));
  if (ring_used) {
    buf[0].resize(static_cast<size_t>(maxc));
    buf[1].resize(static_cast<size_t>(maxc));
  }
  if (sched.sends(r, 0)) {
    T* p = buf[0].data();
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < Hkv; ++h)
        for (index_t j = 0; j < n; ++j)
          for (index_t e = 0; e < D; ++e) *p++ = k(b, h, j, e);
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < Hkv; ++h)
        for (index_t j = 0; j < n; ++j)
          for (index_t e = 0; e < Dv; ++e) *p++ = v(b, h, j, e);
  }

  // acc: the merged partial of every query row so far (l = 0: no key yet);
  // part / part_lse: one step's engine result; limit: per local query, how
  // many keys of the step's block it may see (a KeyLimitMask, non-decreasing
  // because the local rows' positions increase).
  std::vector<S> acc(static_cast<size_t>(rows * w), S(0));
  for (index_t row = 0; row < rows; ++row) acc[row * w] = -std::numeric_limits<S>::infinity();
  std::vector<T> part(static_cast<size_t>(rows * Dv));
  std::vector<S> part_lse(static_cast<size_t>(rows));
  std::vector<index_t> limit(static_cast<size_t>(n));
  std::exception_ptr late;
  int cur = 0;
  for (int s = 0; s < P; ++s) {
    const int t = sched.block(r, s);
    const RingPositions& kp = sched.pos[t];
    const index_t nk = kp.size();
    MPI_Request req[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    if (sched.receives(r, s))
      mpi_call(MPI_Irecv(buf[1 - cur].data(), static_cast<int>(block_count(sched.block(r, s + 1))), mpi_type<T>(),
                         prev, s + 1, ring.c, &req[0]),
               op, "MPI_Irecv");
    if (sched.sends(r, s))
      mpi_call(MPI_Isend(buf[cur].data(), static_cast<int>(block_count(t)), mpi_type<T>(), next, s + 1, ring.c,
                         &req[1]),
               op, "MPI_Isend");
    if (sched.computes(r, s) && !late) {
      try {
        ConstView<T, 4> kb = k, vb = v;
        if (s > 0) {
          kb = make_view<const T>(buf[cur].data(), B, Hkv, nk, D);
          vb = make_view<const T>(buf[cur].data() + B * Hkv * nk * D, B, Hkv, nk, Dv);
        }
        for (index_t i = 0; i < n; ++i) {
          const index_t p = sched.pos[r].position(i) + 1;  // keys at positions < p
          limit[i] = effattn::detail::clamp_index(p - kp.part[0].begin, 0, kp.part[0].size()) +
                     effattn::detail::clamp_index(p - kp.part[1].begin, 0, kp.part[1].size());
        }
        // One limit row serves every batch element (stride 0).
        const KeyLimitMask mask{ConstView<index_t, 2>(limit.data(), {B, n}, {0, 1})};
        effattn::detail::attention_dispatch<T, T>(q, kb, vb, make_view(part.data(), B, H, n, Dv), mask, NoScore{},
                                                  opt, ex, make_view(part_lse.data(), B, H, n));
        std::vector<S> rec(static_cast<size_t>(w));
        for (index_t row = 0; row < rows; ++row) {
          pack_record(rec.data(), part_lse[row], part.data() + row * Dv, 1, Dv);
          combine(acc.data() + row * w, rec.data(), acc.data() + row * w, Dv);  // earlier steps first
        }
      } catch (...) {
        // Keep passing blocks (the other ranks need them), compute nothing more.
        late = std::current_exception();
      }
    }
    mpi_call(MPI_Waitall(2, req, MPI_STATUSES_IGNORE), op, "MPI_Waitall");
    cur = 1 - cur;
  }
  if (late) std::rethrow_exception(late);
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < n; ++i)
        finalize_record(acc.data() + ((b * H + h) * n + i) * w, &out(b, h, i, 0), out.stride(3), Dv,
                        d.has_lse ? &lse(b, h, i) : nullptr);
}

}  // namespace detail

/// Causal self-attention (a prefill) over N positions whose queries, keys and
/// values are sharded across the ranks of `comm` by ring_positions(N, P, rank,
/// layout): query position i sees the key positions j <= i of every rank.
/// Collective.
///
/// Shapes on rank r with n = ring_positions(N, P, r, layout).size() local
/// rows (positions part[0] then part[1]): q [B,H,n,D], k [B,Hkv,n,D],
/// v [B,Hkv,n,Dv], out [B,H,n,Dv], optional lse [B,H,n].
///
/// Ring pass-KV: at step s = 0 .. P-1 a rank computes against the K/V block of
/// rank (r - s) mod P with the engine (a KeyLimitMask from the positions, so
/// key tiles the causal mask empties are skipped) while the next block arrives
/// from rank r-1 and the current one leaves for rank r+1 (MPI_Irecv and
/// MPI_Isend posted before the compute, waited for after it). A block the mask
/// empties for this rank is not computed; a block no later rank on the ring
/// needs is not sent, so nobody waits for it (with the contiguous layout rank 0
/// receives nothing). Step results merge through the log-sum-exp in step order.
/// Peak extra memory per rank: two K/V blocks plus B * H * n * (2 Dv + 3)
/// numbers; no rank ever holds more than one other rank's block.
///
/// Throws shape_error / parameter_error on every rank before any message when a
/// rank's arguments are bad (n must match ring_positions), or the ranks
/// disagree on B, H, Hkv, D, Dv, N, the layout, the scale or the backend.
template <class T>
void ring_causal_attention(MPI_Comm comm, effattn::detail::identity_t<ConstView<T, 4>> q,
                           effattn::detail::identity_t<ConstView<T, 4>> k,
                           effattn::detail::identity_t<ConstView<T, 4>> v, View<T, 4> out, index_t N,
                           RingLayout layout = RingLayout::zigzag, const AttentionOptions& opt = {},
                           const Executor& ex = {}, effattn::detail::identity_t<View<acc_t<T>, 3>> lse = {}) {
  detail::ring_impl<T>(comm, q, k, v, out, N, layout, opt, ex, lse);
}

}  // namespace distributed
EFFATTN_NAMESPACE_END
