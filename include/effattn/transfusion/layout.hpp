// SPDX-License-Identifier: MIT
// effattn Transfusion: the layout of a mixed text / image-patch sequence.
//
// Transfusion (Zhou et al. 2024, arXiv 2408.11039) feeds one transformer with
// sequences that interleave text tokens and the patches of images. Every image
// is bracketed by two marker tokens:
//
//     text ... text  BOI  p(0,0) p(0,1) ... p(gh-1,gw-1)  EOI  text ...
//
// The patches are in raster order over the image's patch grid (gh rows, gw
// columns). A Layout records, per token, its type, the image it belongs to,
// its patch coordinates and its position; the block-causal mask
// (block_causal.hpp) is derived from it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"

EFFATTN_NAMESPACE_BEGIN
namespace transfusion {

/// Per-token type. The codes 0..3 are those of the golden data
/// (`token_type.npy`); `pad` marks padding in a batch.
enum class TokenType : std::int8_t { text = 0, boi = 1, eoi = 2, patch = 3, pad = 4 };

/// How positions are numbered.
enum class PositionMode {
  /// position(i) = i.
  sequential,
  /// Every patch of an image takes the position of the image's first patch,
  /// and the numbering continues after it as if the image were one token
  /// (what lucidrains/transfusion-pytorch derives for its rotary positions):
  /// position(i) = i - (number of non-first patches at indices <= i).
  shared_per_image,
};

/// The longest sequence a layout may describe: 2^31 - 1 tokens (far beyond
/// what attention over one sequence can run). A longer one is a corrupt size:
/// every constructor rejects it with parameter_error before allocating.
inline constexpr index_t max_sequence_length = (index_t(1) << 31) - 1;

/// One image of a layout. BOI sits at `start - 1`, the patches at
/// [start, start + length), EOI at `start + length`.
struct ImageSpan {
  index_t start = 0;   ///< first patch
  index_t length = 0;  ///< number of patches, = grid_h * grid_w
  index_t grid_h = 0;  ///< patch rows
  index_t grid_w = 0;  ///< patch columns
  index_t boi() const { return start - 1; }
  index_t end() const { return start + length; }  ///< one past the last patch
  index_t eoi() const { return start + length; }
};

/// One piece of a sequence description for make_layout().
struct Segment {
  enum class Kind { text, image };
  Kind kind = Kind::text;
  index_t length = 0;  ///< text: number of tokens
  index_t grid_h = 0;  ///< image: patch rows
  index_t grid_w = 0;  ///< image: patch columns

  /// A run of `n` text tokens (n >= 1).
  static Segment text(index_t n) {
    Segment s;
    s.kind = Kind::text;
    s.length = n;
    return s;
  }
  /// An image of grid_h x grid_w patches (both >= 1), emitted as BOI, the
  /// patches in raster order, EOI.
  static Segment image(index_t grid_h, index_t grid_w) {
    Segment s;
    s.kind = Kind::image;
    s.grid_h = grid_h;
    s.grid_w = grid_w;
    return s;
  }
  /// An image given as an H x W latent grid cut into p x p patches: a grid of
  /// (H/p) x (W/p) patches. Throws parameter_error unless p >= 1 divides H and W.
  static Segment latent_image(index_t H, index_t W, index_t p) {
    const char* op = "transfusion::Segment::latent_image";
    effattn::detail::require(p >= 1, op, "p", "must be >= 1, got ", p);
    effattn::detail::require(H >= 1 && W >= 1, op, "H, W", "must be >= 1, got H=", H, " W=", W);
    effattn::detail::require(H % p == 0, op, "p", "must divide the latent height H=", H, ", got p=", p);
    effattn::detail::require(W % p == 0, op, "p", "must divide the latent width W=", W, ", got p=", p);
    return image(H / p, W / p);
  }
};

/// The layout of one sequence of `length()` tokens.
struct Layout {
  std::vector<TokenType> type;        ///< [N]
  std::vector<index_t> image_id;      ///< [N] image index for a patch, -1 otherwise
  std::vector<index_t> patch_row;     ///< [N] row in the patch grid for a patch, -1 otherwise
  std::vector<index_t> patch_col;     ///< [N] column in the patch grid for a patch, -1 otherwise
  std::vector<index_t> position;      ///< [N] positions (see PositionMode)
  std::vector<ImageSpan> images;      ///< in sequence order; image k has image_id k
  PositionMode mode = PositionMode::sequential;

  index_t length() const { return static_cast<index_t>(type.size()); }
  index_t num_images() const { return static_cast<index_t>(images.size()); }
  index_t num_patches() const {
    index_t n = 0;
    for (const auto& im : images) n += im.length;
    return n;
  }
  index_t num_text() const {
    index_t n = 0;
    for (auto t : type) n += t == TokenType::text;
    return n;
  }
  /// End of the keys query i may attend: the end of i's image for a patch,
  /// i + 1 otherwise (BOI and EOI are ordinary causal tokens).
  index_t key_limit(index_t i) const {
    const index_t id = image_id[static_cast<size_t>(i)];
    return id >= 0 ? images[static_cast<size_t>(id)].end() : i + 1;
  }
  /// The rule itself: allowed(i, j) = j <= i, or i and j are patches of the
  /// same image.
  bool allowed(index_t i, index_t j) const {
    if (j <= i) return true;
    const index_t a = image_id[static_cast<size_t>(i)];
    return a >= 0 && a == image_id[static_cast<size_t>(j)];
  }
  /// True when image k is followed by text (right after its EOI) and not
  /// preceded by text (right before its BOI): the image comes before its
  /// caption, the case in which the paper caps the diffusion timestep at 500
  /// (see diffusion.hpp). Throws parameter_error for k out of range.
  bool image_precedes_caption(index_t k) const {
    effattn::detail::require(k >= 0 && k < num_images(), "transfusion::Layout::image_precedes_caption", "k",
            "must be in [0, ", num_images(), "), got ", k);
    const ImageSpan& im = images[static_cast<size_t>(k)];
    const bool text_before = im.boi() > 0 && type[static_cast<size_t>(im.boi() - 1)] == TokenType::text;
    const bool text_after = im.eoi() + 1 < length() && type[static_cast<size_t>(im.eoi() + 1)] == TokenType::text;
    return text_after && !text_before;
  }
};

namespace detail {

/// Fills the per-token arrays of a layout whose `images` (ordered, checked)
/// and length are known; every token that is not BOI, a patch or EOI is text.
inline void fill_layout(Layout& L, index_t N, PositionMode mode) {
  const size_t n = static_cast<size_t>(N);
  L.mode = mode;
  L.type.assign(n, TokenType::text);
  L.image_id.assign(n, -1);
  L.patch_row.assign(n, -1);
  L.patch_col.assign(n, -1);
  L.position.assign(n, 0);
  for (index_t k = 0; k < L.num_images(); ++k) {
    const ImageSpan& im = L.images[static_cast<size_t>(k)];
    L.type[static_cast<size_t>(im.boi())] = TokenType::boi;
    L.type[static_cast<size_t>(im.eoi())] = TokenType::eoi;
    for (index_t t = 0; t < im.length; ++t) {
      const size_t i = static_cast<size_t>(im.start + t);
      L.type[i] = TokenType::patch;
      L.image_id[i] = k;
      L.patch_row[i] = t / im.grid_w;
      L.patch_col[i] = t % im.grid_w;
    }
  }
  index_t cur = 0;
  for (index_t i = 0; i < N; ++i) {
    const size_t u = static_cast<size_t>(i);
    const index_t id = L.image_id[u];
    if (mode == PositionMode::shared_per_image && id >= 0 && i != L.images[static_cast<size_t>(id)].start)
      L.position[u] = L.position[static_cast<size_t>(L.images[static_cast<size_t>(id)].start)];
    else
      L.position[u] = cur++;
  }
}

/// Validates a layout that may have been built or edited by hand, in O(N):
/// every per-token array has N = type.size() <= max_sequence_length entries;
/// the images are in order, disjoint, in range, with grid_h * grid_w patches
/// and their markers; each patch carries its image's id and every other token
/// is text with id -1 (what the constructors produce). Consumers of a Layout
/// call this before reading it, so an inconsistent one throws parameter_error
/// instead of being read out of bounds. `which`/`index` name the argument.
inline void check_layout(const Layout& L, const char* op, const char* which = "layout", size_t index = size_t(-1)) {
  const std::string name = index == size_t(-1) ? std::string(which) : ::effattn::detail::concat(which, "[", index, "]");
  const char* nm = name.c_str();
  effattn::detail::require(L.type.size() <= static_cast<size_t>(max_sequence_length), op, nm, "has ", L.type.size(),
          " tokens, more than max_sequence_length=", max_sequence_length);
  const index_t N = L.length();
  const size_t n = static_cast<size_t>(N);
  effattn::detail::require(L.image_id.size() == n && L.patch_row.size() == n && L.patch_col.size() == n && L.position.size() == n, op,
          nm, "per-token arrays must all have N=", N, " entries, got image_id ", L.image_id.size(), ", patch_row ",
          L.patch_row.size(), ", patch_col ", L.patch_col.size(), ", position ", L.position.size());
  index_t prev_eoi = -1, patches = 0;
  for (size_t k = 0; k < L.images.size(); ++k) {
    const ImageSpan& im = L.images[k];
    effattn::detail::require(im.grid_h >= 1 && im.grid_w >= 1 && im.start >= 1 && im.start - 1 > prev_eoi && im.start < N &&
                im.length >= 1 && im.length < N - im.start && im.length / im.grid_w == im.grid_h &&
                im.length % im.grid_w == 0,
            op, nm, "image ", k, " {start=", im.start, ", length=", im.length, ", grid ", im.grid_h, " x ", im.grid_w,
            "} is not a span of grid_h * grid_w patches inside [1, N-1) after the previous image (EOI at ", prev_eoi,
            "), N=", N);
    prev_eoi = im.eoi();
    effattn::detail::require(L.type[static_cast<size_t>(im.boi())] == TokenType::boi && L.type[static_cast<size_t>(im.eoi())] == TokenType::eoi,
            op, nm, "image ", k, " is not bracketed by BOI at ", im.boi(), " and EOI at ", im.eoi());
    patches += im.length;
  }
  // Each image's markers were found in place above, and each patch lies in its
  // own image's span below; equal counts mean no stray marker or text token
  // sits inside a span, and no marker outside one.
  index_t markers = 0, found = 0;
  for (size_t i = 0; i < n; ++i) {
    const index_t id = L.image_id[i];
    const TokenType t = L.type[i];
    if (id == -1) {
      effattn::detail::require(t == TokenType::text || t == TokenType::boi || t == TokenType::eoi, op, nm, "token ", i,
              " has image_id -1 but type ", static_cast<int>(t), " (not text, BOI or EOI)");
      markers += t != TokenType::text;
      continue;
    }
    effattn::detail::require(id >= 0 && id < L.num_images() && t == TokenType::patch, op, nm, "token ", i, " has image_id ", id,
            " and type ", static_cast<int>(t), " (a patch of one of the ", L.num_images(), " images expected)");
    const ImageSpan& im = L.images[static_cast<size_t>(id)];
    effattn::detail::require(static_cast<index_t>(i) >= im.start && static_cast<index_t>(i) < im.end(), op, nm, "token ", i,
            " claims image ", id, " but lies outside its patches [", im.start, ", ", im.end(), ")");
    ++found;
  }
  effattn::detail::require(markers == 2 * L.num_images() && found == patches, op, nm, "has ", markers, " BOI / EOI and ", found,
          " patch tokens, but its ", L.num_images(), " images need ", 2 * L.num_images(), " and ", patches);
}

}  // namespace detail

/// Builds a layout from segments in order: text runs as they are, each image
/// as BOI, grid_h * grid_w patches in raster order, EOI.
/// Throws parameter_error for a text run of length < 1, an image with a
/// grid dimension < 1, or more than max_sequence_length tokens in all
/// (shape_error when a size overflows the index type), before allocating.
inline Layout make_layout(const std::vector<Segment>& segments, PositionMode mode = PositionMode::sequential) {
  const char* op = "transfusion::make_layout";
  // Every size is checked (and the whole length known) before anything is allocated.
  index_t N = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const Segment& g = segments[s];
    index_t add = 0;
    if (g.kind == Segment::Kind::text) {
      effattn::detail::require(g.length >= 1, op, "segments", "[", s, "] is a text run of length ", g.length, " (must be >= 1)");
      add = g.length;
    } else if (g.kind == Segment::Kind::image) {
      effattn::detail::require(g.grid_h >= 1 && g.grid_w >= 1, op, "segments", "[", s, "] is an image of ", g.grid_h, " x ", g.grid_w,
              " patches (zero-size image; both must be >= 1)");
      add = ::effattn::detail::checked_add(::effattn::detail::checked_mul(g.grid_h, g.grid_w, op, "grid_h * grid_w"),
                                           index_t(2), op, "image length with markers");
    } else {
      effattn::detail::require(false, op, "segments", "[", s, "] has an unknown kind ", static_cast<int>(g.kind));
    }
    N = ::effattn::detail::checked_add(N, add, op, "sequence length");
    effattn::detail::require(N <= max_sequence_length, op, "segments", "describe more than max_sequence_length=", max_sequence_length,
            " tokens (", N, " through segments[", s, "])");
  }
  Layout L;
  index_t start = 0;
  for (const Segment& g : segments) {
    if (g.kind == Segment::Kind::text) {
      start += g.length;
      continue;
    }
    ImageSpan im;
    im.start = start + 1;
    im.grid_h = g.grid_h;
    im.grid_w = g.grid_w;
    im.length = g.grid_h * g.grid_w;  // checked above
    L.images.push_back(im);
    start += im.length + 2;
  }
  detail::fill_layout(L, N, mode);
  return L;
}

/// Where one image sits in a sequence for layout_from_spans(): its first
/// patch, and its grid (length = grid_h * grid_w patches).
struct ImagePlacement {
  index_t start = 0;
  index_t grid_h = 1;
  index_t grid_w = 0;
};

/// Builds a layout of N tokens from explicit image placements (in sequence
/// order). Image k occupies BOI at start-1, patches [start, start+len), EOI at
/// start+len; every other token is text. Throws parameter_error when a span is
/// out of range (BOI before 0 or EOI at or after N), has a zero-size grid, or
/// overlaps (or is not after) the previous image's span including markers.
inline Layout layout_from_spans(index_t N, const std::vector<ImagePlacement>& placements,
                                PositionMode mode = PositionMode::sequential) {
  const char* op = "transfusion::layout_from_spans";
  effattn::detail::require(N >= 0 && N <= max_sequence_length, op, "N", "must be in [0, max_sequence_length=", max_sequence_length,
          "], got ", N);
  // Every span is checked before anything is allocated.
  index_t prev_eoi = -1;
  for (size_t k = 0; k < placements.size(); ++k) {
    const ImagePlacement& p = placements[k];
    effattn::detail::require(p.grid_h >= 1 && p.grid_w >= 1, op, "images", "[", k, "] has a ", p.grid_h, " x ", p.grid_w,
            " patch grid (zero-size image; both must be >= 1)");
    effattn::detail::require(p.start >= 1 && p.start < N, op, "images", "[", k, "] starts at ", p.start,
            ": out of range for a sequence of N=", N, " tokens (its BOI sits at start - 1 >= 0)");
    const index_t len = ::effattn::detail::checked_mul(p.grid_h, p.grid_w, op, "grid_h * grid_w");
    // start < N <= max_sequence_length, so start + len only overflows for a
    // len that is out of range anyway.
    effattn::detail::require(len < N - p.start, op, "images", "[", k, "] = BOI at ", p.start - 1, ", ", len, " patches from ", p.start,
            ", EOI at ", p.start, " + ", len, " is out of range for a sequence of N=", N, " tokens");
    effattn::detail::require(p.start - 1 > prev_eoi, op, "images", "[", k, "] (BOI at ", p.start - 1,
            ") overlaps or precedes the previous image (EOI at ", prev_eoi, "); spans must be disjoint and in sequence order");
    prev_eoi = p.start + len;
  }
  Layout L;
  L.images.reserve(placements.size());
  for (const ImagePlacement& p : placements) {
    ImageSpan im;
    im.start = p.start;
    im.grid_h = p.grid_h;
    im.grid_w = p.grid_w;
    im.length = p.grid_h * p.grid_w;  // checked above
    L.images.push_back(im);
  }
  detail::fill_layout(L, N, mode);
  return L;
}

/// Rebuilds a layout from per-token arrays, the form of the golden data:
/// `type[i]` in {0 text, 1 BOI, 2 EOI, 3 patch} and `image_id[i]` (the image
/// index for a patch, -1 otherwise). Images get a 1 x length grid (the arrays
/// carry no 2-D shape). Throws parameter_error unless every image is one
/// contiguous run of patches with ids 0, 1, 2, ... in order, directly preceded
/// by BOI and followed by EOI, and every BOI / EOI brackets such a run.
inline Layout layout_from_tokens(ConstView<std::int64_t, 1> type, ConstView<std::int64_t, 1> image_id,
                                 PositionMode mode = PositionMode::sequential) {
  const char* op = "transfusion::layout_from_tokens";
  ::effattn::detail::check_view(type, op, "type", false);
  ::effattn::detail::check_view(image_id, op, "image_id", false);
  const index_t N = type.dim(0);
  ::effattn::detail::check_shape(image_id, op, "image_id", "[N]", {N});
  // A broadcast (stride 0) view may have any extent: bound it before the scan.
  effattn::detail::require(N <= max_sequence_length, op, "type", "has N=", N, " tokens, more than max_sequence_length=",
          max_sequence_length);
  std::vector<ImagePlacement> pl;
  for (index_t i = 0; i < N;) {
    const std::int64_t t = type(i), id = image_id(i);
    effattn::detail::require(t >= 0 && t <= 3, op, "type", "[", i, "]=", t, " is not a token type code (0 text, 1 BOI, 2 EOI, 3 patch)");
    if (t != 3) {
      effattn::detail::require(id == -1, op, "image_id", "[", i, "]=", id, " must be -1 for a token that is not a patch");
      effattn::detail::require(t != 2, op, "type", "[", i, "] is an EOI that does not close an image");
      if (t == 1)
        effattn::detail::require(i + 1 < N && type(i + 1) == 3, op, "type", "[", i, "] is a BOI not followed by a patch (zero-size or truncated image)");
      ++i;
      continue;
    }
    const index_t k = static_cast<index_t>(pl.size());
    effattn::detail::require(id == k, op, "image_id", "[", i, "]=", id, " but the next image in sequence order has id ", k);
    effattn::detail::require(i >= 1 && type(i - 1) == 1, op, "type", "[", i, "] starts image ", k, " without a BOI right before it");
    index_t e = i;
    while (e < N && type(e) == 3 && image_id(e) == id) ++e;
    effattn::detail::require(e < N && type(e) == 2, op, "type", "image ", k, " (patches [", i, ", ", e, ")) is not followed by an EOI");
    effattn::detail::require(image_id(e) == -1, op, "image_id", "[", e, "]=", image_id(e), " must be -1 for the EOI of image ", k);
    pl.push_back(ImagePlacement{i, 1, e - i});
    i = e + 1;
  }
  return layout_from_spans(N, pl, mode);
}

/// A batch of layouts padded to a common length N (>= the longest). Tokens
/// at i >= valid_length(b) are padding.
struct BatchLayout {
  std::vector<Layout> items;
  index_t N = 0;

  index_t batch() const { return static_cast<index_t>(items.size()); }
  index_t valid_length(index_t b) const { return items[static_cast<size_t>(b)].length(); }
  TokenType type(index_t b, index_t i) const {
    const Layout& L = items[static_cast<size_t>(b)];
    return i < L.length() ? L.type[static_cast<size_t>(i)] : TokenType::pad;
  }
  index_t image_id(index_t b, index_t i) const {
    const Layout& L = items[static_cast<size_t>(b)];
    return i < L.length() ? L.image_id[static_cast<size_t>(i)] : -1;
  }
  /// Position of token i (padding continues one past the last valid position).
  index_t position(index_t b, index_t i) const {
    const Layout& L = items[static_cast<size_t>(b)];
    if (i < L.length()) return L.position[static_cast<size_t>(i)];
    const index_t last = L.length() > 0 ? L.position.back() : -1;
    return last + 1 + (i - L.length());
  }
};

/// Pads layouts of different lengths into one batch of length
/// max(pad_to, longest). Throws parameter_error if pad_to > 0 is shorter than
/// the longest layout, pad_to is outside [0, max_sequence_length], or a layout
/// is inconsistent (detail::check_layout).
inline BatchLayout make_batch(std::vector<Layout> layouts, index_t pad_to = 0) {
  const char* op = "transfusion::make_batch";
  effattn::detail::require(pad_to >= 0 && pad_to <= max_sequence_length, op, "pad_to", "must be in [0, max_sequence_length=",
          max_sequence_length, "], got ", pad_to);
  index_t longest = 0;
  for (size_t b = 0; b < layouts.size(); ++b) {
    detail::check_layout(layouts[b], op, "layouts", b);
    longest = std::max(longest, layouts[b].length());
  }
  effattn::detail::require(pad_to == 0 || pad_to >= longest, op, "pad_to", "=", pad_to, " is shorter than the longest layout (", longest,
          " tokens)");
  BatchLayout b;
  b.N = std::max(longest, pad_to);
  b.items = std::move(layouts);
  return b;
}

}  // namespace transfusion
EFFATTN_NAMESPACE_END
