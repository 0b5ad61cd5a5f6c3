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
    require(p >= 1, op, "p", "must be >= 1, got ", p);
    require(H >= 1 && W >= 1, op, "H, W", "must be >= 1, got H=", H, " W=", W);
    require(H % p == 0, op, "p", "must divide the latent height H=", H, ", got p=", p);
    require(W % p == 0, op, "p", "must divide the latent width W=", W, ", got p=", p);
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
    require(k >= 0 && k < num_images(), "transfusion::Layout::image_precedes_caption", "k",
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

}  // namespace detail

/// Builds a layout from segments in order: text runs as they are, each image
/// as BOI, grid_h * grid_w patches in raster order, EOI.
/// Throws parameter_error for a text run of length < 1 or an image with a
/// grid dimension < 1.
inline Layout make_layout(const std::vector<Segment>& segments, PositionMode mode = PositionMode::sequential) {
  const char* op = "transfusion::make_layout";
  Layout L;
  index_t N = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const Segment& g = segments[s];
    if (g.kind == Segment::Kind::text) {
      require(g.length >= 1, op, "segments", "[", s, "] is a text run of length ", g.length, " (must be >= 1)");
      N += g.length;
    } else if (g.kind == Segment::Kind::image) {
      require(g.grid_h >= 1 && g.grid_w >= 1, op, "segments", "[", s, "] is an image of ", g.grid_h, " x ", g.grid_w,
              " patches (zero-size image; both must be >= 1)");
      ImageSpan im;
      im.start = N + 1;
      im.grid_h = g.grid_h;
      im.grid_w = g.grid_w;
      im.length = g.grid_h * g.grid_w;
      L.images.push_back(im);
      N += im.length + 2;
    } else {
      require(false, op, "segments", "[", s, "] has an unknown kind ", static_cast<int>(g.kind));
    }
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
  require(N >= 0, op, "N", "must be >= 0, got ", N);
  Layout L;
  index_t prev_eoi = -1;
  for (size_t k = 0; k < placements.size(); ++k) {
    const ImagePlacement& p = placements[k];
    require(p.grid_h >= 1 && p.grid_w >= 1, op, "images", "[", k, "] has a ", p.grid_h, " x ", p.grid_w,
            " patch grid (zero-size image; both must be >= 1)");
    ImageSpan im;
    im.start = p.start;
    im.grid_h = p.grid_h;
    im.grid_w = p.grid_w;
    im.length = p.grid_h * p.grid_w;
    require(im.boi() >= 0 && im.eoi() < N, op, "images", "[", k, "] = BOI at ", im.boi(), ", patches [", im.start, ", ",
            im.end(), "), EOI at ", im.eoi(), " is out of range for a sequence of N=", N, " tokens");
    require(im.boi() > prev_eoi, op, "images", "[", k, "] (BOI at ", im.boi(), ") overlaps or precedes the previous image (EOI at ",
            prev_eoi, "); spans must be disjoint and in sequence order");
    prev_eoi = im.eoi();
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
  std::vector<ImagePlacement> pl;
  for (index_t i = 0; i < N;) {
    const std::int64_t t = type(i), id = image_id(i);
    require(t >= 0 && t <= 3, op, "type", "[", i, "]=", t, " is not a token type code (0 text, 1 BOI, 2 EOI, 3 patch)");
    if (t != 3) {
      require(id == -1, op, "image_id", "[", i, "]=", id, " must be -1 for a token that is not a patch");
      require(t != 2, op, "type", "[", i, "] is an EOI that does not close an image");
      if (t == 1)
        require(i + 1 < N && type(i + 1) == 3, op, "type", "[", i, "] is a BOI not followed by a patch (zero-size or truncated image)");
      ++i;
      continue;
    }
    const index_t k = static_cast<index_t>(pl.size());
    require(id == k, op, "image_id", "[", i, "]=", id, " but the next image in sequence order has id ", k);
    require(i >= 1 && type(i - 1) == 1, op, "type", "[", i, "] starts image ", k, " without a BOI right before it");
    index_t e = i;
    while (e < N && type(e) == 3 && image_id(e) == id) ++e;
    require(e < N && type(e) == 2, op, "type", "image ", k, " (patches [", i, ", ", e, ")) is not followed by an EOI");
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
/// the longest layout.
inline BatchLayout make_batch(std::vector<Layout> layouts, index_t pad_to = 0) {
  const char* op = "transfusion::make_batch";
  index_t longest = 0;
  for (const auto& L : layouts) longest = std::max(longest, L.length());
  require(pad_to >= 0, op, "pad_to", "must be >= 0, got ", pad_to);
  require(pad_to == 0 || pad_to >= longest, op, "pad_to", "=", pad_to, " is shorter than the longest layout (", longest,
          " tokens)");
  BatchLayout b;
  b.N = std::max(longest, pad_to);
  b.items = std::move(layouts);
  return b;
}

}  // namespace transfusion
EFFATTN_NAMESPACE_END
