// SPDX-License-Identifier: MIT
// libFuzzer target: Transfusion's public entry points (and effattn::nn).
//
// The first byte picks a case:
//  0 make_layout from segments (small, zero, negative and huge lengths and
//    grids): accepted iff an independent int128 model says so; an accepted
//    layout must equal the model token by token (types, image ids, patch
//    coordinates, both position modes), pass detail::check_layout, and its
//    dense mask / key limits (also padded in a batch) must equal the rule
//    allowed(i, j) = j <= i or same image;
//  1 layout_from_spans (starts and grids small, negative or huge);
//  2 layout_from_tokens from int64 arrays (valid layouts, mutated, strided,
//    broadcast, huge broadcast extents, null empty views);
//  3 block_causal_attention on a padded batch with random strides (contiguous,
//    [B,N,H,D], padded, broadcast inputs), GQA, tile sizes, lse or not, thread
//    counts -1, 0, 1, 2, sometimes non-finite values or wrong shapes; accepted
//    ordinary calls match attention_reference<double> with the equivalent
//    PredicateMask, 1 and 2 threads are bit-identical; B = 0 next to a huge N;
//  4 patchify / unpatchify (strided, channels-first and broadcast latents,
//    huge p next to an empty latent): exact against the formula, bit-exact
//    round trip;
//  5 ddpm_step / add_noise / predict_x0 against float64 formulas (absent,
//    present, null-with-shape z; aliasing outputs; bad t, T, variance);
//  6 nn::Linear / layer_norm / gelu_erf / Mlp against float64 loops.
// Rejections must be effattn::invalid_argument and leave every output byte
// (Guarded canaries, guard zones, matrices) untouched.
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <effattn/interop/eigen.hpp>

#include "fuzz_support.hpp"

using namespace effattn;
namespace tf = effattn::transfusion;
using fuzz::FuzzInput;
using fuzz::Guarded;
using fuzz::fuzz_check;
using fuzz::fuzz_fail;

namespace {

using i128 = __int128;
constexpr index_t kIndexMax = std::numeric_limits<index_t>::max();

bool fits(i128 x) { return x >= std::numeric_limits<index_t>::min() && x <= kIndexMax; }

/// A small size, sometimes 0, negative or huge.
index_t size_or_wild(FuzzInput& in, index_t lo, index_t hi) {
  const std::uint8_t k = in.byte();
  if (k < 220) return in.range(lo, hi);
  if (k < 235) return 0;
  if (k < 245) return -static_cast<index_t>(in.range(1, 3));
  return in.huge();
}

template <int R>
void for_each_index(const std::array<index_t, R>& shape, const std::function<void(const std::array<index_t, R>&)>& f) {
  for (int d = 0; d < R; ++d)
    if (shape[d] <= 0) return;
  std::array<index_t, R> ix{};
  while (true) {
    f(ix);
    int d = R - 1;
    while (d >= 0 && ++ix[d] == shape[d]) ix[d--] = 0;
    if (d < 0) return;
  }
}

// ---------------------------------------------------------------- tensors

/// An input tensor in a buffer the harness owns: contiguous, storage order
/// permuted (dims 1 and 2 swapped), padded rows, or broadcast (stride 0) on
/// one dimension. An empty one has null data half of the time.
template <int R>
struct In {
  std::vector<float> buf;
  std::array<index_t, R> shape{}, strides{};
  bool ordinary = true;  // every value finite and moderate
  ConstView<float, R> view() const {
    bool empty = false;
    for (auto e : shape) empty = empty || e == 0;
    return ConstView<float, R>(buf.empty() && empty ? nullptr : buf.data(), shape, strides);
  }
  double at(const std::array<index_t, R>& ix) const {
    index_t off = 0;
    for (int d = 0; d < R; ++d) off += ix[d] * strides[d];
    return buf[static_cast<size_t>(off)];
  }
};

template <int R>
In<R> make_in(FuzzInput& in, const std::array<index_t, R>& shape, bool wild) {
  In<R> t;
  t.shape = shape;
  const int kind = in.byte() % 4;
  std::array<int, R> order{};  // storage order, outermost first
  for (int d = 0; d < R; ++d) order[d] = d;
  if (kind == 1 && R >= 3) std::swap(order[1], order[2]);
  const index_t pad = kind == 2 ? in.range(1, 3) : 0;
  const int bdim = kind == 3 ? static_cast<int>(in.byte() % R) : -1;
  index_t s = 1;
  for (int k = R - 1; k >= 0; --k) {
    const int d = order[k];
    if (d == bdim) {
      t.strides[d] = 0;
      continue;
    }
    t.strides[d] = s;
    if (k > 0) s *= std::max<index_t>(shape[d], 1) + (k == R - 1 ? pad : 0);  // (never the unused last product)
  }
  bool empty = false;
  for (int d = 0; d < R; ++d) empty = empty || shape[d] == 0;
  if (empty) {
    if (in.flag()) t.buf.assign(1, 0.0f);  // a valid pointer for an empty view, or null
    return t;
  }
  index_t last = 0;  // small: a non-empty tensor has small extents
  for (int d = 0; d < R; ++d)
    if (shape[d] > 1) last += (shape[d] - 1) * t.strides[d];
  t.buf.resize(static_cast<size_t>(last + 1));
  for (auto& x : t.buf) {
    x = wild ? in.wild_value() : in.value();
    if (!std::isfinite(x) || std::fabs(x) > 1e3f) t.ordinary = false;
  }
  return t;
}

/// An output tensor in a Guarded buffer: contiguous or with padded rows
/// (never broadcast). Empty: null data half of the time.
template <int R>
struct Out {
  std::array<index_t, R> shape{}, strides{};
  Guarded<float> g;
  bool null_data = false;
  explicit Out(size_t n) : g(n) {}
  View<float, R> view() { return View<float, R>(null_data ? nullptr : g.data(), shape, strides); }
  bool empty() const {
    for (auto e : shape)
      if (e == 0) return true;
    return false;
  }
  std::vector<float> values() const {
    std::vector<float> r;
    for_each_index<R>(shape, [&](const std::array<index_t, R>& ix) {
      index_t off = 0;
      for (int d = 0; d < R; ++d) off += ix[d] * strides[d];
      r.push_back(g[static_cast<size_t>(off)]);
    });
    return r;
  }
  /// Padding and guard zones still hold the canary after an accepted call.
  void check_gaps(const char* what) const {
    fuzz_check(g.guards_intact(), std::string(what) + ": guard zone written");
    std::vector<char> hit(g.size(), 0);
    for_each_index<R>(shape, [&](const std::array<index_t, R>& ix) {
      index_t off = 0;
      for (int d = 0; d < R; ++d) off += ix[d] * strides[d];
      hit[static_cast<size_t>(off)] = 1;
    });
    for (size_t i = 0; i < g.size(); ++i)
      if (!hit[i]) fuzz_check(Guarded<float>::is_canary(g[i]), std::string(what) + ": padding written");
  }
};

template <int R>
Out<R> make_out(FuzzInput& in, const std::array<index_t, R>& shape) {
  const index_t pad = in.flag() ? in.range(1, 2) : 0;
  std::array<index_t, R> strides{};
  index_t s = 1;
  bool empty = false;
  for (int d = R - 1; d >= 0; --d) {
    strides[d] = s;
    if (d > 0) s *= std::max<index_t>(shape[d], 1) + (d == R - 1 ? pad : 0);  // a huge empty extent: never overflows
    empty = empty || shape[d] == 0;
  }
  Out<R> o(empty ? 0 : static_cast<size_t>(s * shape[0]));
  o.shape = shape;
  o.strides = strides;
  o.null_data = empty && in.flag();
  return o;
}

/// Runs f; checks that it was accepted exactly when `expect` says so (when
/// expect is known), and returns whether it was.
template <class F>
bool run_expect(F&& f, int expect, const char* what) {
  const bool ok = fuzz::accepted(f, what);
  if (expect >= 0 && ok != (expect == 1))
    fuzz_fail(std::string(what) + (ok ? ": accepted an invalid input" : ": rejected a valid input"));
  return ok;
}

// ---------------------------------------------------------------- layouts

/// The independent model of a layout: per-token type and image id.
struct Model {
  std::vector<int> type;
  std::vector<index_t> image, row, col;
  std::vector<std::array<index_t, 3>> images;  // start, gh, gw
};

void check_layout_against(const tf::Layout& L, const Model& m, tf::PositionMode mode, const char* what) {
  const index_t N = static_cast<index_t>(m.type.size());
  fuzz_check(L.length() == N, std::string(what) + ": wrong length");
  fuzz_check(L.num_images() == static_cast<index_t>(m.images.size()), std::string(what) + ": wrong image count");
  tf::detail::check_layout(L, what);  // a constructor's layout is consistent (throws: fuzz traps)
  index_t pos = 0, patches = 0;
  for (index_t i = 0; i < N; ++i) {
    const size_t u = static_cast<size_t>(i);
    fuzz_check(static_cast<int>(L.type[u]) == m.type[u] && L.image_id[u] == m.image[u] && L.patch_row[u] == m.row[u] &&
                   L.patch_col[u] == m.col[u],
               std::string(what) + ": token differs from the model at " + std::to_string(i));
    const bool later_patch = m.image[u] >= 0 && i != m.images[static_cast<size_t>(m.image[u])][0];
    index_t want = i;
    if (mode == tf::PositionMode::shared_per_image) {
      patches += later_patch;
      want = i - patches;
    }
    fuzz_check(L.position[u] == want, std::string(what) + ": position differs at " + std::to_string(i));
    (void)pos;
  }
  // Mask and limits against the rule.
  const auto mask = tf::block_causal_dense_mask(L);
  const auto lim = tf::block_causal_limits(L);
  fuzz_check(mask.size() == static_cast<size_t>(N * N) && lim.B == 1 && lim.N == N, std::string(what) + ": mask size");
  for (index_t i = 0; i < N; ++i)
    for (index_t j = 0; j < N; ++j) {
      const bool allowed = j <= i || (m.image[static_cast<size_t>(i)] >= 0 && m.image[static_cast<size_t>(i)] == m.image[static_cast<size_t>(j)]);
      fuzz_check(mask[static_cast<size_t>(i * N + j)] == allowed && (j < lim(0, i)) == allowed,
                 std::string(what) + ": mask differs from the rule");
    }
}

void add_image(Model& m, index_t gh, index_t gw) {
  m.type.push_back(1), m.image.push_back(-1), m.row.push_back(-1), m.col.push_back(-1);
  m.images.push_back({static_cast<index_t>(m.type.size()), gh, gw});
  for (index_t r = 0; r < gh; ++r)
    for (index_t c = 0; c < gw; ++c)
      m.type.push_back(3), m.image.push_back(static_cast<index_t>(m.images.size()) - 1), m.row.push_back(r),
          m.col.push_back(c);
  m.type.push_back(2), m.image.push_back(-1), m.row.push_back(-1), m.col.push_back(-1);
}

void add_text(Model& m, index_t n) {
  for (index_t i = 0; i < n; ++i) m.type.push_back(0), m.image.push_back(-1), m.row.push_back(-1), m.col.push_back(-1);
}

void fuzz_segments(FuzzInput& in) {
  const tf::PositionMode mode = in.flag() ? tf::PositionMode::shared_per_image : tf::PositionMode::sequential;
  const index_t n = in.range(0, 5);
  std::vector<tf::Segment> segs;
  bool valid = true;
  i128 total = 0;  // saturates just past the cap (no i128 overflow either)
  for (index_t s = 0; s < n; ++s) {
    i128 add = 0;
    if (in.byte() % 3 == 0) {
      segs.push_back(tf::Segment::image(size_or_wild(in, 1, 3), size_or_wild(in, 1, 3)));
      const auto& g = segs.back();
      if (g.grid_h < 1 || g.grid_w < 1) valid = false;
      add = static_cast<i128>(g.grid_h) * g.grid_w + 2;
    } else {
      segs.push_back(tf::Segment::text(size_or_wild(in, 1, 6)));
      if (segs.back().length < 1) valid = false;
      add = segs.back().length;
    }
    if (valid) total = std::min<i128>(total + add, static_cast<i128>(tf::max_sequence_length) + 1);
  }
  valid = valid && total <= tf::max_sequence_length;
  tf::Layout L;
  if (!run_expect([&] { L = tf::make_layout(segs, mode); }, valid ? 1 : 0, "make_layout")) return;
  Model m;
  for (const auto& g : segs) {
    if (g.kind == tf::Segment::Kind::text)
      add_text(m, g.length);
    else
      add_image(m, g.grid_h, g.grid_w);
  }
  check_layout_against(L, m, mode, "make_layout");

  // The same layout through spans and tokens.
  std::vector<tf::ImagePlacement> pl;
  for (const auto& im : m.images) pl.push_back({im[0], im[1], im[2]});
  const tf::Layout S = tf::layout_from_spans(L.length(), pl, mode);
  check_layout_against(S, m, mode, "layout_from_spans");

  // Padded into a batch with an empty layout: limits and mask follow the
  // padding convention.
  const index_t pad_to = in.flag() ? L.length() + in.range(0, 3) : (in.byte() < 16 ? in.huge() : 0);
  const bool pad_ok = pad_to >= 0 && pad_to <= tf::max_sequence_length && (pad_to == 0 || pad_to >= L.length());
  tf::BatchLayout batch;
  if (!run_expect([&] { batch = tf::make_batch({L, tf::Layout{}}, pad_to); }, pad_ok ? 1 : 0, "make_batch")) return;
  const auto lim = tf::block_causal_limits(batch);
  const auto mask = tf::block_causal_dense_mask(batch);
  const index_t N = batch.N;
  for (index_t b = 0; b < 2; ++b)
    for (index_t i = 0; i < N; ++i) {
      const index_t valid_len = b == 0 ? L.length() : 0;
      for (index_t j = 0; j < N; ++j) {
        bool allowed;
        if (i >= valid_len || j >= valid_len)
          allowed = j < valid_len;
        else
          allowed = j <= i || (m.image[static_cast<size_t>(i)] >= 0 && m.image[static_cast<size_t>(i)] == m.image[static_cast<size_t>(j)]);
        fuzz_check(mask[static_cast<size_t>((b * N + i) * N + j)] == allowed && (j < lim(b, i)) == allowed,
                   "batch mask differs from the rule");
      }
    }
}

void fuzz_spans(FuzzInput& in) {
  const tf::PositionMode mode = in.flag() ? tf::PositionMode::shared_per_image : tf::PositionMode::sequential;
  const index_t N = in.byte() < 20 ? (in.flag() ? in.huge() : -in.range(1, 3)) : in.range(0, 30);
  const index_t n = in.range(0, 4);
  std::vector<tf::ImagePlacement> pl;
  bool valid = N >= 0 && N <= tf::max_sequence_length;
  i128 prev_eoi = -1;
  for (index_t k = 0; k < n; ++k) {
    tf::ImagePlacement p;
    p.start = in.byte() < 20 ? (in.flag() ? in.huge() : -in.range(0, 2)) : in.range(0, 30);
    p.grid_h = size_or_wild(in, 1, 3);
    p.grid_w = size_or_wild(in, 1, 3);
    pl.push_back(p);
    if (p.grid_h < 1 || p.grid_w < 1) {
      valid = false;
      continue;
    }
    const i128 len = static_cast<i128>(p.grid_h) * p.grid_w, boi = static_cast<i128>(p.start) - 1, eoi = p.start + len;
    if (boi < 0 || eoi >= N || boi <= prev_eoi) valid = false;
    prev_eoi = eoi;
  }
  tf::Layout L;
  if (!run_expect([&] { L = tf::layout_from_spans(N, pl, mode); }, valid ? 1 : 0, "layout_from_spans")) return;
  Model m;
  index_t i = 0;
  for (const auto& p : pl) {
    add_text(m, p.start - 1 - i);
    add_image(m, p.grid_h, p.grid_w);
    m.images.back()[0] = p.start;
    i = p.start + p.grid_h * p.grid_w + 1;
  }
  add_text(m, N - i);
  check_layout_against(L, m, mode, "layout_from_spans");
}

/// The documented rule of layout_from_tokens, written out.
bool tokens_valid(const std::vector<std::int64_t>& t, const std::vector<std::int64_t>& id) {
  const size_t N = t.size();
  std::int64_t k = 0;
  for (size_t i = 0; i < N;) {
    if (t[i] == 0) {
      if (id[i] != -1) return false;
      ++i;
      continue;
    }
    if (t[i] != 1 || id[i] != -1) return false;
    size_t e = i + 1;
    while (e < N && t[e] == 3 && id[e] == k) ++e;
    if (e == i + 1 || e >= N || t[e] != 2 || id[e] != -1) return false;
    ++k;
    i = e + 1;
  }
  return true;
}

void fuzz_tokens(FuzzInput& in) {
  const tf::PositionMode mode = in.flag() ? tf::PositionMode::shared_per_image : tf::PositionMode::sequential;
  // A valid sequence, then a few mutations.
  std::vector<std::int64_t> t, id;
  const index_t parts = in.range(0, 5);
  std::int64_t k = 0;
  for (index_t p = 0; p < parts; ++p) {
    if (in.flag()) {
      t.push_back(1), id.push_back(-1);
      const index_t len = in.range(1, 4);
      for (index_t j = 0; j < len; ++j) t.push_back(3), id.push_back(k);
      t.push_back(2), id.push_back(-1);
      ++k;
    } else {
      t.push_back(0), id.push_back(-1);
    }
  }
  const index_t muts = in.byte() < 128 ? 0 : in.range(1, 3);
  for (index_t j = 0; j < muts && !t.empty(); ++j) {
    const size_t at = static_cast<size_t>(in.range(0, static_cast<index_t>(t.size()) - 1));
    if (in.flag())
      t[at] = static_cast<std::int64_t>(in.range(0, 6)) - 1;
    else
      id[at] = static_cast<std::int64_t>(in.range(0, 4)) - 1;
  }
  const index_t N = static_cast<index_t>(t.size());
  const int kind = in.byte() % 4;
  if (kind == 3) {
    // Broadcast: one token repeated, N small or huge (must be rejected).
    const std::int64_t tt = static_cast<std::int64_t>(in.range(0, 4)) - 1, ii = -1;
    const index_t n = in.flag() ? in.huge() : in.range(0, 8);
    const ConstView<std::int64_t, 1> tv(&tt, {n}, {0}), iv(&ii, {n}, {0});
    const bool valid = n >= 0 && n <= tf::max_sequence_length && (n == 0 || tt == 0);
    // A huge valid broadcast is rejected by the length cap; a huge invalid one
    // must be rejected too (it is: by the cap or at its first token).
    tf::Layout L;
    if (run_expect([&] { L = tf::layout_from_tokens(tv, iv, mode); }, valid ? 1 : 0, "layout_from_tokens broadcast"))
      fuzz_check(L.length() == n && L.num_images() == 0, "layout_from_tokens broadcast: wrong layout");
    return;
  }
  // Contiguous, strided (every other element) or null empty views.
  const index_t stride = kind == 1 ? 2 : 1;
  std::vector<std::int64_t> tb(static_cast<size_t>(N * stride), 99), ib(static_cast<size_t>(N * stride), 99);
  for (index_t i = 0; i < N; ++i) tb[static_cast<size_t>(i * stride)] = t[static_cast<size_t>(i)], ib[static_cast<size_t>(i * stride)] = id[static_cast<size_t>(i)];
  const ConstView<std::int64_t, 1> tv(N == 0 && kind == 2 ? nullptr : tb.data(), {N}, {stride});
  const ConstView<std::int64_t, 1> iv(N == 0 && kind == 2 ? nullptr : ib.data(), {N}, {stride});
  tf::Layout L;
  if (!run_expect([&] { L = tf::layout_from_tokens(tv, iv, mode); }, tokens_valid(t, id) ? 1 : 0, "layout_from_tokens"))
    return;
  Model m;
  for (index_t i = 0; i < N; ++i) {
    const size_t u = static_cast<size_t>(i);
    m.type.push_back(static_cast<int>(t[u]));
    m.image.push_back(id[u]);
    if (t[u] == 3) {
      if (t[u - 1] == 1) m.images.push_back({i, 1, 0});
      m.row.push_back(0);
      m.col.push_back(i - m.images.back()[0]);
      ++m.images.back()[2];
    } else {
      m.row.push_back(-1);
      m.col.push_back(-1);
    }
  }
  check_layout_against(L, m, mode, "layout_from_tokens");
}

// ---------------------------------------------------------------- attention

tf::Layout random_layout(FuzzInput& in, index_t max_parts) {
  std::vector<tf::Segment> segs;
  const index_t parts = in.range(0, max_parts);
  for (index_t p = 0; p < parts; ++p)
    segs.push_back(in.flag() ? tf::Segment::image(in.range(1, 3), in.range(1, 2)) : tf::Segment::text(in.range(1, 3)));
  return tf::make_layout(segs, in.flag() ? tf::PositionMode::shared_per_image : tf::PositionMode::sequential);
}

void fuzz_attention(FuzzInput& in) {
  static const int kThreads[] = {-1, 0, 1, 2};
  const int threads = in.pick(kThreads);
  static const index_t kH[] = {1, 2, 4};
  const index_t H = in.pick(kH);
  const index_t Hkv = H / (in.flag() ? 1 : H);
  const index_t D = in.range(1, 8), Dv = in.byte() < 8 ? 0 : in.range(1, 8);
  const bool wild = in.byte() < 40;
  const bool want_lse = in.flag();
  const index_t quantum = effattn::detail::attention_query_tile_quantum();
  static const index_t kBk[] = {0, 1, 3, 16};
  AttentionOptions opt;
  opt.block_q = quantum * in.range(0, 2);
  opt.block_k = in.pick(kBk);
  opt.scale = in.byte() < 32 ? 0.25 * static_cast<double>(in.range(1, 8)) : 0.0;

  // B = 0 next to a huge N: nothing to compute, nothing to loop over.
  if (in.byte() < 10) {
    const index_t N = std::abs(in.huge() / 2) + 1;
    const ConstView<float, 4> q(nullptr, {0, H, N, D}, {0, 0, 0, 0}), k(nullptr, {0, Hkv, N, D}, {0, 0, 0, 0});
    const View<float, 4> out(nullptr, {0, H, N, D}, {0, 0, 0, 0});
    const ConstView<index_t, 2> lim(nullptr, {0, N}, {0, 0});
    run_expect([&] { tf::block_causal_attention<float>(q, k, k, out, lim, opt, Executor(threads)); }, threads >= 0,
               "block_causal_attention B=0 huge N");
    return;
  }

  const index_t B = in.range(0, 2);
  std::vector<tf::Layout> layouts;
  for (index_t b = 0; b < B; ++b) layouts.push_back(random_layout(in, 3));
  index_t longest = 0;
  for (const auto& L : layouts) longest = std::max(longest, L.length());
  const tf::BatchLayout batch = tf::make_batch(layouts, in.flag() ? longest + in.range(0, 3) : 0);
  const index_t N = batch.N;
  const tf::KeyLimits lim = tf::block_causal_limits(batch);

  // Occasionally a wrong shape that must be rejected.
  const int wrong = in.byte() < 24 ? 1 + in.byte() % 3 : 0;
  const In<4> q = make_in<4>(in, {B, H, N, D}, wild);
  const In<4> k = make_in<4>(in, {B, Hkv, N + (wrong == 1 ? 1 : 0), D}, wild);
  const In<4> v = make_in<4>(in, {B, Hkv, N + (wrong == 1 ? 1 : 0), Dv}, wild);
  Out<4> out = make_out<4>(in, {B, H, N, Dv});
  Out<3> lse = make_out<3>(in, {B, H, N});
  if (!want_lse) lse.null_data = true, lse.shape = {0, 0, 0};
  std::vector<index_t> lim_buf = lim.data;
  index_t lim_N = N;
  if (wrong == 2) lim_buf.push_back(0), lim_N = N + (B > 0 ? 1 : 0), lim_buf.resize(static_cast<size_t>(B * lim_N), N);
  const ConstView<index_t, 2> limv(lim_buf.empty() ? nullptr : lim_buf.data(), {B, lim_N}, {lim_N, 1});
  const bool shapes_ok = wrong == 0 || (wrong == 2 && B == 0) || wrong == 3;
  const bool valid = threads >= 0 && shapes_ok && Dv >= 1;

  auto call = [&](Out<4>& o, Out<3>& l, int th) {
    return fuzz::accepted(
        [&] {
          tf::block_causal_attention<float>(q.view(), k.view(), v.view(), o.view(), limv, opt, Executor(th),
                                            want_lse ? l.view() : View<float, 3>{});
        },
        "block_causal_attention");
  };
  const bool ok = call(out, lse, threads);
  if (ok != valid) fuzz_fail(ok ? "block_causal_attention: accepted an invalid input" : "block_causal_attention: rejected a valid input");
  if (!ok) {
    fuzz_check(out.g.untouched() && lse.g.untouched(), "block_causal_attention: rejected call wrote an output");
    return;
  }
  out.check_gaps("block_causal_attention out");
  lse.check_gaps("block_causal_attention lse");

  // 1 and 2 threads bit-identical (same layouts).
  {
    Out<4> o1 = out, o2 = out;
    Out<3> l1 = lse, l2 = lse;
    o1.g.fill_canary(), o2.g.fill_canary(), l1.g.fill_canary(), l2.g.fill_canary();
    fuzz_check(call(o1, l1, 1) && call(o2, l2, 2), "block_causal_attention: 1/2-thread run rejected");
    const auto a = o1.values(), b = o2.values();
    fuzz::check_bit_identical(a.data(), b.data(), a.size(), "block_causal_attention out");
    if (want_lse) {
      const auto la = l1.values(), lb = l2.values();
      fuzz::check_bit_identical(la.data(), lb.data(), la.size(), "block_causal_attention lse");
    }
    const auto c = out.values();
    fuzz::check_bit_identical(a.data(), c.data(), a.size(), "block_causal_attention vs first run");
  }
  if (!(q.ordinary && k.ordinary && v.ordinary) || out.empty()) return;

  // Float64 oracle with the rule written as a predicate.
  auto to_double = [](const In<4>& t) {
    std::vector<double> r;
    for_each_index<4>(t.shape, [&](const std::array<index_t, 4>& ix) { r.push_back(t.at(ix)); });
    return r;
  };
  const auto qd = to_double(q), kd = to_double(k), vd = to_double(v);
  std::vector<double> od(static_cast<size_t>(B * H * N * Dv)), ld(static_cast<size_t>(B * H * N));
  auto rule = [&](index_t b, index_t, index_t i, index_t j) {
    const index_t valid_len = batch.valid_length(b);
    if (i >= valid_len) return j < valid_len;
    if (j >= valid_len) return false;
    const index_t a = batch.image_id(b, i);
    return j <= i || (a >= 0 && a == batch.image_id(b, j));
  };
  AttentionOptions ro;
  ro.scale = opt.scale;
  attention_reference<double>(make_view<const double>(qd.data(), B, H, N, D), make_view<const double>(kd.data(), B, Hkv, N, D),
                              make_view<const double>(vd.data(), B, Hkv, N, Dv), make_view(od.data(), B, H, N, Dv),
                              make_predicate_mask(rule), NoScore{}, ro, make_view(ld.data(), B, H, N));
  const auto got = out.values();
  fuzz::check_close(got.data(), od.data(), od.size(), 1e-4, 1e-3, "block_causal_attention vs reference");
  if (want_lse) {
    const auto gl = lse.values();
    fuzz::check_close(gl.data(), ld.data(), ld.size(), 1e-4, 1e-4, "block_causal_attention lse vs reference");
  }
}

// ---------------------------------------------------------------- patchify

void fuzz_patchify(FuzzInput& in) {
  const bool empty_huge = in.byte() < 16;
  index_t H = in.range(0, 6), W = in.range(0, 6), C = in.range(0, 3);
  index_t p = in.byte() < 12 ? in.huge() : in.range(-1, 4);
  if (empty_huge) {
    // Zero next to huge extents, or a huge p on an empty latent.
    const int which = in.byte() % 3;
    if (which == 0) H = 0, W = std::abs(in.huge() / 2) + 1;
    if (which == 1) C = 0, H = index_t(1) << 31, W = index_t(1) << 31, p = in.flag() ? 1 : index_t(1) << 31;
    if (which == 2) H = 0, W = 0, p = in.huge();
  }
  // Expected token shape (int128), as documented: p >= 1 divides H and W, and
  // p * p * C fits the index type (evaluated left to right).
  int expect = 1;
  if (p < 1 || H % p != 0 || W % p != 0) expect = 0;
  i128 M = 0, width = 0;
  if (expect) {
    M = static_cast<i128>(H / p) * (W / p);
    const i128 pp = static_cast<i128>(p) * p;
    if (!fits(M) || !fits(pp)) expect = 0;
    width = expect ? pp * C : 0;  // pp < 2^63, C < 4: no i128 overflow
    if (!fits(width)) expect = 0;
  }
  In<3> latent;
  latent.shape = {H, W, C};
  const bool huge_case = empty_huge;
  if (huge_case) {
    latent.strides = {0, 0, 0};
  } else {
    const int kind = in.byte() % 4;  // HWC, channels-first CHW, padded, broadcast
    if (kind == 1)
      latent.strides = {W, 1, std::max<index_t>(H, 1) * std::max<index_t>(W, 1)};
    else if (kind == 2)
      latent.strides = {std::max<index_t>(W, 1) * (C + 1), C + 1, 1};
    else
      latent.strides = {std::max<index_t>(W, 1) * std::max<index_t>(C, 1), std::max<index_t>(C, 1), 1};
    if (kind == 3) latent.strides[in.byte() % 3] = 0;
    if (H * W * C > 0) {
      index_t last = 0;
      for (int d = 0; d < 3; ++d) last += (latent.shape[d] - 1) * latent.strides[d];
      latent.buf.resize(static_cast<size_t>(last + 1));
      for (auto& x : latent.buf) x = in.wild_value();
    } else if (in.flag()) {
      latent.buf.assign(1, 0.0f);
    }
  }
  // Tokens: the right shape when expected (else [1, 1] or [0, 0]).
  const std::array<index_t, 2> tshape = expect ? std::array<index_t, 2>{static_cast<index_t>(M), static_cast<index_t>(width)}
                                               : std::array<index_t, 2>{in.range(0, 1), in.range(0, 1)};
  const bool tokens_empty = tshape[0] == 0 || tshape[1] == 0;
  if (!tokens_empty && tshape[0] * tshape[1] > 4096) return;  // cannot happen for the small sizes
  Out<2> tokens = tokens_empty ? Out<2>(0) : make_out<2>(in, tshape);
  if (tokens_empty) tokens.shape = tshape, tokens.strides = {0, 0}, tokens.null_data = in.flag();
  if (!run_expect([&] { tf::patchify<float>(latent.view(), p, tokens.view()); }, expect, "patchify")) {
    fuzz_check(tokens.g.untouched(), "patchify: rejected call wrote tokens");
    return;
  }
  tokens.check_gaps("patchify tokens");
  if (tokens_empty) return;
  // Against the formula (pure copies: bit-exact).
  const auto got = tokens.values();
  const index_t gw = W / p;
  for (index_t t = 0; t < tshape[0]; ++t)
    for (index_t dy = 0; dy < p; ++dy)
      for (index_t dx = 0; dx < p; ++dx)
        for (index_t ch = 0; ch < C; ++ch) {
          const float want = static_cast<float>(latent.at({(t / gw) * p + dy, (t % gw) * p + dx, ch}));
          const float g = got[static_cast<size_t>(t * tshape[1] + (dy * p + dx) * C + ch)];
          fuzz_check(std::memcmp(&want, &g, sizeof(float)) == 0, "patchify differs from the formula");
        }
  // Round trip into a fresh (possibly padded) latent.
  Out<3> back = make_out<3>(in, {H, W, C});
  const ConstView<float, 2> tv(tokens.g.data(), tokens.shape, tokens.strides);
  fuzz_check(fuzz::accepted([&] { tf::unpatchify<float>(tv, p, back.view()); }, "unpatchify"), "unpatchify rejected a round trip");
  back.check_gaps("unpatchify latent");
  const auto rb = back.values();
  size_t i = 0;
  for_each_index<3>(latent.shape, [&](const std::array<index_t, 3>& ix) {
    const float want = static_cast<float>(latent.at(ix));
    fuzz_check(std::memcmp(&want, &rb[i++], sizeof(float)) == 0, "patchify / unpatchify round trip is not exact");
  });
  // unpatchify into a latent that overlaps the tokens must be rejected.
  const View<float, 3> alias(tokens.g.data(), {H, W, C}, {W * C, C, 1});
  if (H * W * C <= static_cast<index_t>(tokens.g.size())) {
    const std::vector<float> before = tokens.values();
    fuzz_check(!fuzz::accepted([&] { tf::unpatchify<float>(tv, p, alias); }, "unpatchify alias"),
               "unpatchify accepted an output aliasing its input");
    const auto after = tokens.values();
    fuzz::check_bit_identical(before.data(), after.data(), before.size(), "unpatchify alias left tokens");
  }
}

// ---------------------------------------------------------------- diffusion

const tf::CosineSchedule& schedule(index_t T) {
  static const tf::CosineSchedule s1(1), s2(2), s10(10), s1000(1000);
  return T == 1 ? s1 : T == 2 ? s2 : T == 10 ? s10 : s1000;
}

void fuzz_ddpm(FuzzInput& in) {
  if (in.byte() < 8) {  // a huge or bad schedule must be rejected
    const index_t T = in.flag() ? in.huge() : -in.range(0, 2);
    run_expect([&] { tf::CosineSchedule s(T); }, 0, "CosineSchedule");
    return;
  }
  static const index_t kT[] = {1, 2, 10, 1000};
  const index_t T = in.pick(kT);
  const tf::CosineSchedule& sched = schedule(T);
  const index_t t = in.byte() < 24 ? in.range(0, 3) - 1 + (in.flag() ? T : 0) : in.range(1, T);
  index_t M = in.range(0, 5), D = in.range(0, 5);
  if (in.byte() < 10) (in.flag() ? M : D) = 0, (M == 0 ? D : M) = std::abs(in.huge() / 2) + 1;  // zero next to huge
  const bool wild = in.byte() < 40;
  const In<2> x = make_in<2>(in, {M, D}, wild), e = make_in<2>(in, {M, D}, wild);
  const int zkind = in.byte() % 4;  // 0 absent, 1 present, 2 null with shape, 3 wrong shape
  // A wrong z shape stays empty when [M, D] is (a huge extent next to 0).
  const std::array<index_t, 2> zwrong = M == 0 ? std::array<index_t, 2>{0, D + 1} : std::array<index_t, 2>{M + 1, D};
  const In<2> z = make_in<2>(in, zkind == 3 ? zwrong : std::array<index_t, 2>{M, D}, wild);
  ConstView<float, 2> zv;
  if (zkind == 1 || zkind == 3) zv = z.view();
  if (zkind == 2) zv = ConstView<float, 2>(nullptr, {M, D}, {D, 1});
  // Absent means null data and an empty shape; present, it must be [M, D].
  const bool z_present = !(zv.data() == nullptr && zv.empty());
  const bool z_ok = !z_present || zkind == 1;
  const int var_kind = in.byte() % 8;
  const tf::DdpmVariance variance = var_kind == 7 ? static_cast<tf::DdpmVariance>(5)
                                                  : (var_kind & 1 ? tf::DdpmVariance::beta : tf::DdpmVariance::posterior);
  const bool alias = in.byte() < 16;
  Out<2> out = make_out<2>(in, {M, D});
  const bool huge_case = M > 4096 || D > 4096;
  if (huge_case) out.null_data = true;
  ConstView<float, 2> xv = x.view();
  if (alias && !out.empty()) xv = ConstView<float, 2>(out.g.data(), {M, D}, out.strides);
  const bool valid = t >= 1 && t <= T && z_ok && var_kind != 7 && !(alias && !out.empty());
  const bool ok = run_expect([&] { tf::ddpm_step<float>(sched, xv, e.view(), t, zv, out.view(), variance); }, valid ? 1 : 0,
                             "ddpm_step");
  if (!ok) {
    fuzz_check(out.g.untouched(), "ddpm_step: rejected call wrote x_prev");
  } else if (!out.empty()) {
    out.check_gaps("ddpm_step x_prev");
    const bool noise = z_present;
    const double beta = sched.beta[static_cast<size_t>(t)], abar = sched.alpha_bar[static_cast<size_t>(t)],
                 abar_prev = sched.alpha_bar[static_cast<size_t>(t - 1)];
    const double var = variance == tf::DdpmVariance::posterior ? (1 - abar_prev) / (1 - abar) * beta : (t > 1 ? beta : 0.0);
    std::vector<double> want;
    for_each_index<2>({M, D}, [&](const std::array<index_t, 2>& ix) {
      double r = (x.at(ix) - beta / std::sqrt(1 - abar) * e.at(ix)) / std::sqrt(1 - beta);
      if (noise) r += std::sqrt(std::max(var, 0.0)) * z.at(ix);
      want.push_back(static_cast<double>(static_cast<float>(r)));
    });
    const auto got = out.values();
    if (x.ordinary && e.ordinary && z.ordinary)
      fuzz::check_close(got.data(), want.data(), want.size(), 1e-5, 1e-5, "ddpm_step vs formula");
  }

  // add_noise and predict_x0 on the same inputs (t in [0, T]).
  Out<2> xt = make_out<2>(in, {M, D});
  if (huge_case) xt.null_data = true;
  const bool noise_ok = t >= 0 && t <= T;
  if (run_expect([&] { tf::add_noise<float>(sched, x.view(), e.view(), t, xt.view()); }, noise_ok ? 1 : 0, "add_noise")) {
    xt.check_gaps("add_noise xt");
    if (!xt.empty() && x.ordinary && e.ordinary) {
      std::vector<double> want;
      const double a = std::sqrt(sched.alpha_bar[static_cast<size_t>(t)]), b = std::sqrt(1 - sched.alpha_bar[static_cast<size_t>(t)]);
      for_each_index<2>({M, D}, [&](const std::array<index_t, 2>& ix) { want.push_back(a * x.at(ix) + b * e.at(ix)); });
      const auto got = xt.values();
      fuzz::check_close(got.data(), want.data(), want.size(), 1e-5, 1e-5, "add_noise vs formula");
    }
  } else {
    fuzz_check(xt.g.untouched(), "add_noise: rejected call wrote xt");
  }
  Out<2> x0 = make_out<2>(in, {M, D});
  if (huge_case) x0.null_data = true;
  if (!run_expect([&] { tf::predict_x0<float>(sched, x.view(), e.view(), t, x0.view()); }, noise_ok ? 1 : 0, "predict_x0"))
    fuzz_check(x0.g.untouched(), "predict_x0: rejected call wrote x0");
  else
    x0.check_gaps("predict_x0 x0");
}

// ---------------------------------------------------------------- nn

nn::Matrix matrix(FuzzInput& in, index_t r, index_t c, bool& ordinary) {
  nn::Matrix m(r, c);
  for (index_t i = 0; i < m.size(); ++i) {
    m.data()[i] = in.byte() < 16 ? in.wild_value() : in.value();
    if (!std::isfinite(m.data()[i]) || std::fabs(m.data()[i]) > 1e3f) ordinary = false;
  }
  return m;
}

bool same(const nn::Matrix& a, const nn::Matrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         (a.size() == 0 || std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<size_t>(a.size())) == 0);
}

void fuzz_nn(FuzzInput& in) {
  static const int kThreads[] = {-1, 0, 1, 2};
  const int threads = in.pick(kThreads);
  const index_t R = in.range(0, 6), I = in.range(0, 6), O = in.range(0, 6);
  bool ordinary = true;
  nn::Linear l;
  l.weight = matrix(in, O, I, ordinary);
  if (in.flag()) l.bias = matrix(in, O + (in.byte() < 16 ? 1 : 0), 1, ordinary).col(0);
  const index_t xin = I + (in.byte() < 16 ? 1 : 0);
  const nn::Matrix x = matrix(in, R, xin, ordinary);
  nn::Matrix y = nn::Matrix::Constant(1, 2, 7.0f);
  const nn::Matrix y0 = y;
  const bool lin_ok = xin == I && (l.bias.size() == 0 || l.bias.size() == O);
  if (!run_expect([&] { l.forward(x, y); }, lin_ok ? 1 : 0, "nn::Linear::forward")) {
    fuzz_check(same(y, y0), "nn::Linear::forward: rejected call wrote y");
  } else if (ordinary) {
    std::vector<double> want;
    for (index_t r = 0; r < R; ++r)
      for (index_t o = 0; o < O; ++o) {
        double s = l.bias.size() ? l.bias[o] : 0.0;
        for (index_t i = 0; i < I; ++i) s += static_cast<double>(x(r, i)) * l.weight(o, i);
        want.push_back(s);
      }
    fuzz_check(y.rows() == R && y.cols() == O, "nn::Linear::forward: wrong output shape");
    fuzz::check_close(y.data(), want.data(), want.size(), 1e-4, 1e-4, "nn::Linear::forward vs float64");
  }

  // layer_norm on x (C = xin), weights of the right size or not.
  const index_t C = xin;
  const bool wbad = in.byte() < 16;
  nn::Vector w = matrix(in, C + (wbad ? 1 : 0), 1, ordinary).col(0), b = matrix(in, C, 1, ordinary).col(0);
  const float eps = in.byte() < 8 ? -1.0f : 1e-5f;
  nn::Matrix ln = nn::Matrix::Constant(2, 1, 7.0f);
  const nn::Matrix ln0 = ln;
  const bool ln_ok = threads >= 0 && !wbad && eps > 0;
  if (!run_expect([&] { nn::layer_norm(x, w, b, eps, ln, Executor(threads)); }, ln_ok ? 1 : 0, "nn::layer_norm")) {
    fuzz_check(same(ln, ln0), "nn::layer_norm: rejected call wrote y");
  } else {
    nn::Matrix l1, l2;
    nn::layer_norm(x, w, b, eps, l1, Executor(1));
    nn::layer_norm(x, w, b, eps, l2, Executor(2));
    fuzz_check(same(l1, l2) && same(l1, ln), "nn::layer_norm: thread counts differ");
    if (ordinary && C > 0) {
      for (index_t r = 0; r < R; ++r) {
        double mean = 0, var = 0;
        for (index_t c = 0; c < C; ++c) mean += x(r, c);
        mean /= static_cast<double>(C);
        for (index_t c = 0; c < C; ++c) var += (x(r, c) - mean) * (x(r, c) - mean);
        var /= static_cast<double>(C);
        std::vector<double> want;
        for (index_t c = 0; c < C; ++c) want.push_back((x(r, c) - mean) / std::sqrt(var + eps) * w[c] + b[c]);
        fuzz::check_close(ln.data() + r * C, want.data(), want.size(), 1e-3, 1e-3, "nn::layer_norm vs float64");
      }
    }
  }

  // GELU in place and the MLP.
  nn::Matrix g = x;
  if (!run_expect([&] { nn::gelu_erf(g, Executor(threads)); }, threads >= 0 ? 1 : 0, "nn::gelu_erf")) {
    fuzz_check(same(g, x), "nn::gelu_erf: rejected call changed x");
  } else if (ordinary) {
    std::vector<double> want;
    for (index_t i = 0; i < x.size(); ++i) {
      const double v = x.data()[i];
      want.push_back(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
    }
    fuzz::check_close(g.data(), want.data(), want.size(), 1e-5, 1e-5, "nn::gelu_erf vs float64");
  }
  nn::Mlp mlp;
  mlp.fc1 = l;
  mlp.fc2.weight = matrix(in, in.range(0, 4), O + (in.byte() < 16 ? 1 : 0), ordinary);
  nn::Matrix my = nn::Matrix::Constant(1, 3, 7.0f);
  const nn::Matrix my0 = my;
  const bool mlp_ok = threads >= 0 && lin_ok && mlp.fc2.weight.cols() == O;
  if (!run_expect([&] { mlp.forward(x, my, Executor(threads)); }, mlp_ok ? 1 : 0, "nn::Mlp::forward"))
    fuzz_check(same(my, my0), "nn::Mlp::forward: rejected call wrote y");

  // Interop: views of Eigen tensors and back.
  if (R * I > 0) {
    Eigen::Tensor<float, 2, Eigen::RowMajor> tr(R, I);
    for (index_t i = 0; i < R * I; ++i) tr.data()[i] = static_cast<float>(i);
    const auto vr = view(tr);
    fuzz_check(vr(R - 1, I - 1) == tr(R - 1, I - 1), "view(RowMajor tensor) indexes wrongly");
    Eigen::Tensor<float, 2, Eigen::ColMajor> tc(R, I);
    for (index_t i = 0; i < R * I; ++i) tc.data()[i] = static_cast<float>(i);
    const auto vc = cview(tc);
    fuzz_check(vc(R - 1, 0) == tc(R - 1, 0), "cview(ColMajor tensor) indexes wrongly");
    fuzz_check(as_tensor_map(vr)(R - 1, I - 1) == tr(R - 1, I - 1), "as_tensor_map indexes wrongly");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  switch (in.byte() % 7) {
    case 0: fuzz_segments(in); break;
    case 1: fuzz_spans(in); break;
    case 2: fuzz_tokens(in); break;
    case 3: fuzz_attention(in); break;
    case 4: fuzz_patchify(in); break;
    case 5: fuzz_ddpm(in); break;
    default: fuzz_nn(in); break;
  }
  return 0;
}
