// SPDX-License-Identifier: MIT
// libFuzzer target: Perceiver AR's public entry points.
//
//  - cross_attention (float or float16 keys/values) and latent_attention on
//    random small shapes, GQA ratios, strides (contiguous, [B,N,H,D],
//    padded, broadcast inputs), valid lengths (absent, in range with the
//    official -1 convention for L < M, broadcast, or bad on purpose),
//    options and thread counts (-1, 0, 1, 2). Accepted calls must match the
//    library's float64 oracles (cross_attention_reference /
//    latent_attention_reference, built from the literal masks) and be
//    bit-identical for 1 and 2 threads; rejected calls throw
//    effattn::invalid_argument and leave every output byte untouched.
//  - huge extents next to a zero extent (nothing may be allocated or
//    touched: accepted, or rejected with a shape error);
//  - a tiny effattn::models::PerceiverArModel (forward) and its decoder
//    (append sequence): 1 vs 2 threads bit-identical, rejected calls change
//    no state.
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <effattn/models/perceiver_ar.hpp>

#include "fuzz_support.hpp"

using namespace effattn;
namespace pa = effattn::perceiver_ar;
using effattn::models::PerceiverArConfig;
using effattn::models::PerceiverArDecoder;
using effattn::models::PerceiverArModel;
using fuzz::FuzzInput;
using fuzz::Guarded;
using fuzz::Layout4;
using fuzz::cast_value;
using fuzz::data_or_null;
using fuzz::key_value;
using fuzz::make_layout;
using fuzz::small_value;
using fuzz::value_value;

namespace {


/// One attention call (cross or latent) with its checks.
template <class KV>
void run_attention(FuzzInput& in, bool latent) {
  const index_t B = in.range(0, 2);
  const index_t Hkv = in.range(0, 2);
  index_t H = Hkv * in.range(1, 3);
  if (in.byte() < 8) H = in.range(0, 4);  // possibly not a multiple of Hkv
  index_t N = in.pick<index_t, 9>({1, 2, 3, 5, 8, 13, 33, 70, 0});
  index_t M = in.range(1, N > 0 ? N : 1);
  if (latent) N = M;
  const std::uint8_t mb = in.byte();
  if (mb < 6) M = 0;                       // rejected: M < 1
  else if (mb < 10 && !latent) M = N + 1;  // rejected: M > N
  if (latent && mb >= 6) N = M;
  const index_t D = in.pick<index_t, 6>({1, 3, 8, 16, 5, 0});
  const index_t Dv = in.byte() < 200 ? (D > 0 ? D : 1) : in.range(1, 9);
  // Valid lengths: absent, in range (L < M makes invalid latents), broadcast,
  // bad on purpose, or a null pointer with a shape.
  const int lkind = in.byte() % 8;  // 0-2 absent, 3-5 per sequence, 6 broadcast, 7 bad
  std::vector<index_t> len(static_cast<size_t>(lkind >= 3 ? std::max<index_t>(B, 1) : 0));
  for (auto& L : len) L = in.range(0, latent ? N + 3 : N);
  bool bad_len = false, null_len = false;
  if (lkind == 7 && B > 0) {
    const std::uint8_t k = in.byte() % 3;
    if (k == 0) len[in.byte() % len.size()] = -1;
    else if (k == 1 && !latent) len[in.byte() % len.size()] = N + 1;
    else null_len = true;
    bad_len = true;
  }
  ConstView<index_t, 1> lenv;
  if (lkind >= 3) {
    if (null_len) lenv = ConstView<index_t, 1>(nullptr, {B});
    else if (lkind == 6) lenv = ConstView<index_t, 1>(len.data(), {B}, {0});
    else lenv = ConstView<index_t, 1>(B > 0 ? len.data() : nullptr, {B});
  }
  AttentionOptions opt;
  const std::uint8_t sb = in.byte();
  opt.scale = sb < 200 ? 0.0 : (sb < 235 ? 0.125 * (sb - 199) : (sb < 245 ? -1.0 : std::nan("")));
  const index_t quantum = effattn::detail::attention_query_tile_quantum();
  const std::uint8_t qb = in.byte();
  opt.block_q = qb < 210 ? 0 : (qb < 240 ? quantum * in.range(1, 2) : quantum + 1);
  const std::uint8_t kb = in.byte();
  opt.block_k = kb < 170 ? 0 : (kb < 250 ? in.pick<index_t, 4>({1, 3, 16, 4096}) : 4097);
  const int threads = in.pick<int, 6>({1, 2, 0, 2, 1, -1});
  const bool with_lse = in.flag();
  const bool wild = in.byte() < 40;
  const bool misalign = in.flag();
  if (B * std::max<index_t>(H, 1) * std::max<index_t>(N, 1) * std::max<index_t>(std::max(D, Dv), 1) > 30000) return;

  const Layout4 lq = make_layout(in, {B, H, M, D}, true);
  const Layout4 lk = make_layout(in, {B, Hkv, N, D}, true);
  const Layout4 lv = make_layout(in, {B, Hkv, N, Dv}, true);
  const Layout4 lo = make_layout(in, {B, H, M, Dv}, false);
  std::vector<float> q(static_cast<size_t>(lq.span));
  std::vector<KV> k(static_cast<size_t>(lk.span)), v(static_cast<size_t>(lv.span));
  for (auto& x : q) x = small_value(in);
  // Non-finite keys or non-finite values, not both: a key whose logit is -inf
  // and whose value is inf is an engine finding (0 * inf; see the report of
  // issue 10), kept out of this target.
  const bool wild_k = wild && in.flag();
  for (auto& x : k) x = cast_value<KV>(key_value(in, wild_k));
  for (auto& x : v) x = cast_value<KV>(value_value(in, wild && !wild_k));

  const size_t on = static_cast<size_t>(lo.span), ln = static_cast<size_t>(B * H * M);
  Guarded<float> out1(on, misalign), out2(on, misalign), outr(on);
  Guarded<float> lse1(ln), lse2(ln), lser(ln);
  const ConstView<float, 4> Q(data_or_null(q), lq.shape, lq.strides);
  const ConstView<KV, 4> K(data_or_null(k), lk.shape, lk.strides), V(data_or_null(v), lv.shape, lv.strides);
  auto O = [&](Guarded<float>& g) { return View<float, 4>(on ? g.data() : nullptr, lo.shape, lo.strides); };
  auto L = [&](Guarded<float>& g) { return with_lse ? make_view(ln ? g.data() : nullptr, B, H, M) : View<float, 3>{}; };

  auto call = [&](Guarded<float>& og, Guarded<float>& lg, int t) {
    return fuzz::accepted(
        [&] {
          if (latent) {
            if constexpr (std::is_same<KV, float>::value)
              pa::latent_attention<float>(Q, K, V, O(og), lenv, opt, Executor(t), L(lg));
          } else {
            pa::cross_attention<float>(Q, K, V, O(og), lenv, opt, Executor(t), L(lg));
          }
        },
        latent ? "perceiver_ar::latent_attention" : "perceiver_ar::cross_attention");
  };
  const bool ok1 = call(out1, lse1, threads);
  const bool ok2 = call(out2, lse2, threads < 0 ? threads : (threads == 1 ? 2 : 1));
  fuzz::fuzz_check(ok1 == ok2, "accepted with one thread count and rejected with another");
  fuzz::fuzz_check(out1.guards_intact() && out2.guards_intact() && lse1.guards_intact() && lse2.guards_intact(),
                   "a guard zone around an output changed");
  if (!ok1) {
    fuzz::fuzz_check(out1.untouched() && lse1.untouched() && out2.untouched() && lse2.untouched(),
                     "a rejected call wrote to an output");
    return;
  }
  fuzz::fuzz_check(threads >= 0, "a negative thread count was accepted");
  fuzz::fuzz_check(!bad_len, "a bad valid_length was accepted");
  fuzz::fuzz_check(M >= 1 && M <= N, "M outside [1, N] was accepted");
  fuzz::check_bit_identical(out1.data(), out2.data(), on, "out");
  if (with_lse) fuzz::check_bit_identical(lse1.data(), lse2.data(), ln, "lse");

  // The float64 oracle (literal masks); it must accept what the operator accepted.
  const bool okr = fuzz::accepted(
      [&] {
        if (latent) {
          if constexpr (std::is_same<KV, float>::value)
            pa::latent_attention_reference<float>(Q, K, V, O(outr), lenv, opt, L(lser));
        } else {
          pa::cross_attention_reference<float>(Q, K, V, O(outr), lenv, opt, L(lser));
        }
      },
      "perceiver_ar reference");
  fuzz::fuzz_check(okr, "the reference rejected what the operator accepted");
  const double tol = 3e-4;
  // Cancellation in the weighted sum of values: the error scales with the largest |v|.
  double vmax = 0;
  for (const auto& x : v)
    if (std::isfinite(static_cast<float>(x))) vmax = std::max(vmax, std::fabs(static_cast<double>(static_cast<float>(x))));
  // The case, for a failure message.
  const std::string what = std::string(latent ? "latent" : "cross") + " B=" + std::to_string(B) + " H=" +
                           std::to_string(H) + " Hkv=" + std::to_string(Hkv) + " N=" + std::to_string(N) +
                           " M=" + std::to_string(M) + " D=" + std::to_string(D) + " Dv=" + std::to_string(Dv) +
                           " lengths=" + std::to_string(lkind) + " scale=" + std::to_string(opt.scale) +
                           " wild=" + std::to_string(wild) + ": ";
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < M; ++i) {
        if (with_lse) {
          const size_t li = static_cast<size_t>((b * H + h) * M + i);
          const double want = lser[li], got = lse1[li];
          const std::string at = what + "lse[" + std::to_string(li) + "] got " + std::to_string(got) + " want " +
                                 std::to_string(want);
          if (std::isinf(want) && want < 0)
            fuzz::fuzz_check(std::isinf(got) && got < 0, "lse of a latent with no allowed input is not -inf: " + at);
          else if (std::isfinite(want))
            fuzz::fuzz_check(std::fabs(got - want) <= tol * (1 + std::fabs(want)), "lse differs from the reference: " + at);
        }
        for (index_t e = 0; e < Dv; ++e) {
          const index_t off = b * lo.strides[0] + h * lo.strides[1] + i * lo.strides[2] + e * lo.strides[3];
          const double want = outr[static_cast<size_t>(off)], got = out1[static_cast<size_t>(off)];
          if (!std::isfinite(want)) continue;
          if (!std::isfinite(got) || std::fabs(got - want) > tol * (1 + std::fabs(want)) + 1e-5 * vmax)
            fuzz::fuzz_fail("output differs from the reference: " + what + "out at " + std::to_string(off) + " got " +
                            std::to_string(got) + " want " + std::to_string(want));
        }
      }
}

/// Huge extents alongside a zero extent (or overflowing ones): the operators
/// must reject them or accept them without allocating or touching anything.
void run_huge(FuzzInput& in) {
  const float one = 1.0f;
  const index_t huge = in.huge();
  const int where = in.byte() % 3;  // which extent is huge: B, M (and N), or both
  const index_t B = where != 1 ? huge : in.range(0, 2);
  const index_t M = where != 0 ? huge : in.range(1, 3);
  const index_t N = where != 0 ? huge : M + in.range(0, 3);
  const index_t H = in.flag() ? 0 : 1;  // H = 1: only an overflow or a bad shape can save it
  const ConstView<float, 4> q(&one, {B, H, M, 1}, {0, 0, 0, 0});
  const ConstView<float, 4> k(&one, {B, H, N, 1}, {0, 0, 0, 0});
  Guarded<float> out(4), lse(4);
  const View<float, 4> o(H == 0 ? out.data() : nullptr, {B, 0, M, 1}, {0, 0, 0, 0});
  const View<float, 3> l(lse.data(), {B, 0, M}, {0, 0, 0});
  const index_t L = in.range(0, 3);
  const ConstView<index_t, 1> len(&L, {B}, {0});
  const bool with_len = in.flag();
  const int threads = in.pick<int, 3>({1, 2, -1});
  const bool latent = in.flag();
  const bool ok = fuzz::accepted(
      [&] {
        if (latent)
          pa::latent_attention<float>(q, q, q, o, with_len ? len : ConstView<index_t, 1>{}, {}, Executor(threads), l);
        else
          pa::cross_attention<float>(q, k, k, o, with_len ? len : ConstView<index_t, 1>{}, {}, Executor(threads), l);
      },
      "perceiver_ar huge");
  fuzz::fuzz_check(out.untouched() && lse.untouched(), "an empty output was written");
  if (ok) fuzz::fuzz_check(threads >= 0, "a negative thread count was accepted");
  // H = 1 with an output of H = 0 is a shape mismatch: never accepted.
  if (ok) fuzz::fuzz_check(H == 0, "a mismatched output was accepted");
}

const PerceiverArModel& tiny_model() {
  static const PerceiverArModel model = [] {
    PerceiverArConfig cfg;
    cfg.vocab = 7;
    cfg.width = 8;
    cfg.heads = 2;
    cfg.layers = 1;
    cfg.mlp_hidden = 8;
    return PerceiverArModel::random(cfg, 3);
  }();
  return model;
}

/// PerceiverArModel::forward and a short decoder run.
void run_model(FuzzInput& in) {
  const PerceiverArModel& model = tiny_model();
  const index_t B = in.range(0, 2), N = in.range(0, 6);
  std::vector<std::int32_t> tok(static_cast<size_t>(B * N));
  for (auto& t : tok) t = static_cast<std::int32_t>(in.byte() % 7);
  bool bad = false;
  if (!tok.empty() && in.byte() < 10) {
    tok[in.byte() % tok.size()] = in.flag() ? -1 : 7;
    bad = true;
  }
  const index_t M = in.range(0, N + 1);
  std::vector<index_t> len(static_cast<size_t>(B));
  for (auto& L : len) L = in.range(0, N);
  const bool with_len = in.flag() && B > 0;
  const int threads = in.pick<int, 4>({1, 2, 0, -1});
  const ConstView<std::int32_t, 2> tv(tok.empty() ? nullptr : tok.data(), {B, N});
  const ConstView<index_t, 1> lv = with_len ? make_view<const index_t>(len.data(), B) : ConstView<index_t, 1>{};
  nn::Matrix l1 = nn::Matrix::Constant(1, 1, 5.0f), l2 = l1;
  const bool ok1 = fuzz::accepted([&] { model.forward(tv, lv, M, l1, 0, Executor(threads)); }, "Model::forward");
  const bool ok2 = fuzz::accepted([&] { model.forward(tv, lv, M, l2, 0, Executor(threads == 1 ? 2 : (threads == 2 ? 1 : threads))); },
                                  "Model::forward");
  fuzz::fuzz_check(ok1 == ok2, "Model::forward: accepted with one thread count and rejected with another");
  if (!ok1) {
    fuzz::fuzz_check(l1.rows() == 1 && l1.cols() == 1 && l1(0, 0) == 5.0f, "Model::forward: a rejected call wrote logits");
  } else {
    fuzz::fuzz_check(threads >= 0 && !bad && M >= 1 && M <= N, "Model::forward: bad input accepted");
    fuzz::fuzz_check(l1.rows() == B * M && l1.cols() == 7, "Model::forward: logits shape");
    fuzz::check_bit_identical(l1.data(), l2.data(), static_cast<size_t>(l1.size()), "Model::forward logits");
    for (index_t i = 0; i < l1.size(); ++i) fuzz::fuzz_check(std::isfinite(l1.data()[i]), "Model::forward: non-finite logit");
  }

  // Decoder: a few appends, two thread counts side by side.
  const index_t DB = in.range(1, 2), max_lat = 2 * in.range(1, 2), ctx = max_lat / 2 + in.range(1, 4);
  PerceiverArDecoder d1(model, DB, ctx, max_lat), d2(model, DB, ctx, max_lat);
  const int steps = in.range(1, 6);
  for (int s = 0; s < steps; ++s) {
    const index_t n = in.range(0, d1.max_append() + 1);
    std::vector<std::int32_t> t(static_cast<size_t>(DB * n));
    for (auto& x : t) x = static_cast<std::int32_t>(in.byte() % 7);
    const int th = in.pick<int, 4>({1, 2, 0, -1});
    const index_t len0 = d1.length(), lat0 = d1.cached_latents(), rec0 = d1.recomputes();
    nn::Matrix a, b;
    const ConstView<std::int32_t, 2> tw(t.empty() ? nullptr : t.data(), {DB, n});
    const bool oka = fuzz::accepted([&] { d1.append(tw, a, Executor(th)); }, "Decoder::append");
    const bool okb = fuzz::accepted([&] { d2.append(tw, b, Executor(th == 1 ? 2 : (th == 2 ? 1 : th))); }, "Decoder::append");
    fuzz::fuzz_check(oka == okb, "Decoder::append: accepted with one thread count and rejected with another");
    if (!oka) {
      fuzz::fuzz_check(d1.length() == len0 && d1.cached_latents() == lat0 && d1.recomputes() == rec0 && a.size() == 0,
                       "Decoder::append: a rejected call changed the decoder or the logits");
      continue;
    }
    fuzz::fuzz_check(th >= 0 && n >= 1 && n <= d1.max_append(), "Decoder::append: bad input accepted");
    fuzz::fuzz_check(a.rows() == DB && a.cols() == 7, "Decoder::append: logits shape");
    fuzz::check_bit_identical(a.data(), b.data(), static_cast<size_t>(a.size()), "Decoder logits");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const std::uint8_t mode = in.byte();
  if (mode < 110) run_attention<float>(in, false);
  else if (mode < 140) run_attention<float16>(in, false);
  else if (mode < 210) run_attention<float>(in, true);
  else if (mode < 230) run_huge(in);
  else run_model(in);
  return 0;
}
