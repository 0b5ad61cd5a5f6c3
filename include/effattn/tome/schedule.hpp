// SPDX-License-Identifier: MIT
// effattn::tome: per-layer merge schedules (official `tome/utils.py` parse_r).
#pragma once

#include <cmath>
#include <vector>

#include "../core/error.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace tome {

/// The most layers a schedule may have (one entry per transformer block): a
/// larger count is a caller error (parameter_error), never an allocation of
/// that size.
constexpr index_t kMaxScheduleLayers = index_t(1) << 20;

/// The largest r of an (r, inflect) schedule: the official formula runs in
/// double precision, exact up to 2^53.
constexpr index_t kMaxScheduleR = index_t(1) << 53;

namespace detail {
inline void check_layers(index_t num_layers, index_t min_layers, const char* op) {
  effattn::detail::require(num_layers >= min_layers && num_layers <= kMaxScheduleLayers, op, "num_layers", "must be in [", min_layers,
          ", ", kMaxScheduleLayers, "], got ", num_layers);
}
}  // namespace detail

/// The official (r, inflection) schedule: r tokens per layer on average, the
/// per-layer amount trending up (inflect = +1), down (-1, the paper's
/// "decreasing schedule") or constant (0):
///   min = int(r * (1 - inflect)), max = 2 r - min,
///   step = (max - min) / (num_layers - 1)  (double),
///   out[i] = int(min + step * i)            (truncation toward zero).
/// A constant r is inflect = 0. The official code divides by zero for
/// num_layers == 1; this port throws parameter_error instead (use a list, or
/// schedule_constant, for a single layer). Requires 2 <= num_layers <=
/// kMaxScheduleLayers, 0 <= r <= kMaxScheduleR and a finite inflect in [-1, 1].
inline std::vector<index_t> parse_r(index_t num_layers, index_t r, double inflect = 0.0) {
  const char* op = "tome::parse_r";
  effattn::detail::require(num_layers >= 2, op, "num_layers",
          "must be >= 2 for an (r, inflect) schedule (the official code divides by num_layers - 1 = 0); got ",
          num_layers, ". Use schedule_constant() or an explicit list for one layer");
  detail::check_layers(num_layers, 2, op);
  effattn::detail::require(r >= 0 && r <= kMaxScheduleR, op, "r", "must be in [0, 2^53], got ", r);
  effattn::detail::require(std::isfinite(inflect) && inflect >= -1.0 && inflect <= 1.0, op, "inflect", "must be in [-1, 1], got ",
          inflect);
  const index_t min_val = static_cast<index_t>(static_cast<double>(r) * (1.0 - inflect));
  const index_t max_val = 2 * r - min_val;
  const double step = static_cast<double>(max_val - min_val) / static_cast<double>(num_layers - 1);
  std::vector<index_t> out(static_cast<size_t>(num_layers));
  for (index_t i = 0; i < num_layers; ++i)
    out[static_cast<size_t>(i)] = static_cast<index_t>(static_cast<double>(min_val) + step * static_cast<double>(i));
  return out;
}

/// An explicit per-layer list (official parse_r with a list): padded with zeros
/// up to num_layers and, as in the official code, never truncated (a longer
/// list is returned whole; the extra entries are never used by a model with
/// num_layers blocks). Entries must be >= 0; 0 <= num_layers <= kMaxScheduleLayers.
inline std::vector<index_t> parse_r(index_t num_layers, const std::vector<index_t>& list) {
  const char* op = "tome::parse_r";
  detail::check_layers(num_layers, 0, op);
  for (size_t i = 0; i < list.size(); ++i) effattn::detail::require(list[i] >= 0, op, "list", "entries must be >= 0, got ", list[i], " at ", i);
  std::vector<index_t> out = list;
  if (static_cast<index_t>(out.size()) < num_layers) out.resize(static_cast<size_t>(num_layers), 0);
  return out;
}

/// Constant r for every layer (valid for any 0 <= num_layers <= kMaxScheduleLayers, including 1).
inline std::vector<index_t> schedule_constant(index_t num_layers, index_t r) {
  const char* op = "tome::schedule_constant";
  detail::check_layers(num_layers, 0, op);
  effattn::detail::require(r >= 0, op, "r", "must be >= 0, got ", r);
  return std::vector<index_t>(static_cast<size_t>(num_layers), r);
}

/// Tokens left after each layer for a schedule, with the official per-layer
/// caps: r_eff = min(r, (n - protected) / 2). tokens >= 0, protected_tokens in
/// {0, 1, 2}.
inline std::vector<index_t> tokens_after_layers(index_t tokens, const std::vector<index_t>& schedule,
                                                index_t protected_tokens = 1) {
  const char* op = "tome::tokens_after_layers";
  effattn::detail::require(tokens >= 0, op, "tokens", "must be >= 0, got ", tokens);
  effattn::detail::require(protected_tokens >= 0 && protected_tokens <= 2, op, "protected_tokens", "must be 0, 1 or 2, got ",
          protected_tokens);
  std::vector<index_t> out;
  index_t n = tokens;
  for (index_t r : schedule) {
    effattn::detail::require(r >= 0, op, "schedule", "entries must be >= 0, got ", r);
    const index_t cap = n - protected_tokens > 0 ? (n - protected_tokens) / 2 : 0;
    n -= r < cap ? r : cap;
    out.push_back(n);
  }
  return out;
}

}  // namespace tome
EFFATTN_NAMESPACE_END
