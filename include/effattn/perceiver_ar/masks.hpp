// SPDX-License-Identifier: MIT
// effattn::perceiver_ar: where the latents sit and what they may see.
//
// Perceiver AR (Hawthorne et al., ICML 2022) places its M latents on the last
// M *real* positions of a right-padded input of N positions. With L the
// number of real inputs of a sequence (its valid length, 0 <= L <= N), latent
// m (0-based) sits at position
//
//     p_m = max(L - M + m, -1),        -1 meaning "invalid latent"
//
// (the official code's `latent_last_steps`, mask_style 'final_block'). Then
//
//   encoder (cross-attention) mask:  latent m may see input j  iff  j <= p_m
//                                    (and j < L, implied by j <= p_m <= L-1);
//                                    an invalid latent sees nothing;
//   processor (latent self-attention) mask:
//                                    latent i may see latent j iff
//                                    (p_j >= 0 and p_i >= p_j) or i == j:
//                                    a valid latent sees the valid latents up
//                                    to itself, an invalid one only itself
//                                    (the official code forces the diagonal).
//
// The invalid latents are always the first max(0, M - L) ones. Both masks are
// prefix or near-prefix masks, so the engine runs them block-sparse:
// `cross_key_limits` turns the encoder mask into a KeyLimitMask (or plain
// bottom-right CausalMask when every L = N), and LatentCausalMask below is the
// processor mask as an engine policy. The *_reference functions build the
// dense masks literally from the formulas above (the oracle for tests).
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "../attention/policies.hpp"
#include "../core/error.hpp"
#include "../core/view.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace perceiver_ar {

namespace detail {
/// Checks valid_length [B] (absent when its data pointer is null) against N;
/// N < 0 means no upper bound (the latent stack: any L >= M is full).
inline void check_valid_length(const ConstView<index_t, 1>& valid_length, index_t B, index_t N, const char* op) {
  if (valid_length.data() == nullptr && valid_length.dim(0) == 0) return;
  effattn::detail::check_view(valid_length, op, "valid_length", false);
  effattn::detail::check_shape(valid_length, op, "valid_length", "[B]", {B});
  // A broadcast view (stride 0) holds one value, however large B is.
  const index_t distinct = valid_length.stride(0) == 0 && B > 0 ? 1 : B;
  for (index_t b = 0; b < distinct; ++b) {
    const index_t L = valid_length(b);
    if (L < 0 || (N >= 0 && L > N))
      EFFATTN_THROW(parameter_error(N >= 0 ? effattn::detail::concat(op, ": valid_length[", b, "]=", L,
                                                                     " must be in [0, N=", N, "]")
                                           : effattn::detail::concat(op, ": valid_length[", b, "]=", L,
                                                                     " must be >= 0")));
  }
}
inline bool has_valid_length(const ConstView<index_t, 1>& valid_length) { return valid_length.data() != nullptr; }
}  // namespace detail

/// Position of latent m of M for a sequence of valid length L: max(L - M + m, -1).
inline index_t latent_position(index_t L, index_t M, index_t m) {
  const index_t p = L - M + m;
  return p < -1 ? -1 : p;
}

/// Number of invalid (leading) latents: max(0, M - L).
inline index_t invalid_latents(index_t L, index_t M) { return M > L ? M - L : 0; }

/// positions[b, m] = max(valid_length[b] - M + m, -1) for positions [B, M]
/// (M = positions.dim(1)). valid_length [B] with every value in [0, N];
/// absent (a default-constructed view) means L = N for every b.
/// Throws shape_error / parameter_error on bad shapes, M < 1, M > N or a
/// valid length outside [0, N].
inline void latent_positions(ConstView<index_t, 1> valid_length, index_t N, View<index_t, 2> positions) {
  const char* op = "perceiver_ar::latent_positions";
  effattn::detail::check_view(positions, op, "positions", true);
  const index_t B = positions.dim(0), M = positions.dim(1);
  effattn::detail::require(M >= 1, op, "M", "(positions.dim(1), the number of latents) must be >= 1, got ", M);
  effattn::detail::require(M <= N, op, "M", "(the number of latents) must be <= N=", N, ", got ", M);
  detail::check_valid_length(valid_length, B, N, op);
  for (index_t b = 0; b < B; ++b) {
    const index_t L = detail::has_valid_length(valid_length) ? valid_length(b) : N;
    for (index_t m = 0; m < M; ++m) positions(b, m) = latent_position(L, M, m);
  }
}

/// The encoder mask as per-latent key limits: limit[b, m] = p_m + 1 (0 for an
/// invalid latent), so latent m sees the keys j < limit. Non-decreasing in m,
/// within [0, N]: exactly what KeyLimitMask wants. limit [B, M].
inline void cross_key_limits(ConstView<index_t, 1> valid_length, index_t N, View<index_t, 2> limit) {
  latent_positions(valid_length, N, limit);
  for (index_t b = 0; b < limit.dim(0); ++b)
    for (index_t m = 0; m < limit.dim(1); ++m) limit(b, m) += 1;
}

/// The processor mask as an engine mask policy over M latent queries and the
/// same M latent keys (Nq == Nk == M): per batch element b, with
/// f = invalid[b] invalid leading latents, query i sees keys
/// [start(i), i] where start(i) = i for i < f (only itself) and f otherwise.
/// `invalid` [B] (values in [0, M]); absent means no invalid latent, which is
/// plain causal attention.
struct LatentCausalMask {
  ConstView<index_t, 1> invalid;

  struct Bound {
    index_t f, nk;
    index_t start(index_t i) const { return i < f ? i : f; }
    index_t end(index_t i) const { return i + 1 < nk ? i + 1 : nk; }
    BlockKind classify(index_t i0, index_t i1, index_t j0, index_t j1) const {
      // start and end are non-decreasing in i, so the extreme rows decide.
      if (j0 >= end(i1 - 1) || j1 <= start(i0)) return BlockKind::empty;
      if (start(i1 - 1) <= j0 && j1 <= end(i0)) return BlockKind::full;
      return BlockKind::partial;
    }
    index_t key_end(index_t, index_t i1) const { return end(i1 - 1); }
    template <class S>
    void apply(index_t i, index_t j0, index_t j1, S* s, index_t st) const {
      const S ninf = -std::numeric_limits<S>::infinity();
      const index_t a = start(i), e = end(i);
      for (index_t j = j0; j < j1; ++j)
        if (j < a || j >= e) s[(j - j0) * st] = ninf;
    }
    bool allowed(index_t i, index_t j) const { return j >= start(i) && j < end(i); }
  };

  void check(const char* op, index_t B, index_t, index_t nq, index_t nk) const {
    if (nq != nk)
      EFFATTN_THROW(shape_error(effattn::detail::concat(op, ": LatentCausalMask needs as many keys as queries (M), got Nq=",
                                                        nq, " Nk=", nk)));
    if (invalid.data() == nullptr) return;
    effattn::detail::check_view(invalid, op, "invalid", false);
    effattn::detail::check_shape(invalid, op, "invalid", "[B]", {B});
    for (index_t b = 0; b < B; ++b)
      if (invalid(b) < 0 || invalid(b) > nq)
        EFFATTN_THROW(parameter_error(effattn::detail::concat(op, ": invalid[", b, "]=", invalid(b),
                                                              " must be in [0, M=", nq, "]")));
  }
  Bound bind(index_t b, index_t, index_t, index_t nk) const {
    Bound r;
    r.f = invalid.data() ? invalid(b) : 0;
    r.nk = nk;
    return r;
  }
};

/// Dense encoder mask, literally (p_m >= j) * (j < L): mask [M * N] row-major,
/// 1 = allowed. The oracle for tests (allocates M x N).
inline std::vector<std::uint8_t> encoder_mask_reference(index_t L, index_t N, index_t M) {
  const char* op = "perceiver_ar::encoder_mask_reference";
  effattn::detail::require(N >= 0 && M >= 0, op, "N, M", "must be >= 0, got N=", N, " M=", M);
  std::vector<std::uint8_t> mask(static_cast<size_t>(effattn::detail::checked_mul(M, N, op, "M * N")));
  for (index_t m = 0; m < M; ++m) {
    const index_t p = latent_position(L, M, m);
    for (index_t j = 0; j < N; ++j) mask[m * N + j] = (p >= j && j < L) ? 1 : 0;
  }
  return mask;
}

/// Dense processor mask, literally ((p_i >= p_j) and p_j >= 0) or i == j:
/// mask [M * M] row-major, 1 = allowed. The oracle for tests.
inline std::vector<std::uint8_t> processor_mask_reference(index_t L, index_t M) {
  const char* op = "perceiver_ar::processor_mask_reference";
  effattn::detail::require(M >= 0, op, "M", "must be >= 0, got ", M);
  std::vector<std::uint8_t> mask(static_cast<size_t>(effattn::detail::checked_mul(M, M, op, "M * M")));
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < M; ++j) {
      const index_t pi = latent_position(L, M, i), pj = latent_position(L, M, j);
      mask[i * M + j] = ((pi >= pj && pj >= 0) || i == j) ? 1 : 0;
    }
  return mask;
}

}  // namespace perceiver_ar
EFFATTN_NAMESPACE_END
