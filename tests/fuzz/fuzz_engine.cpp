// SPDX-License-Identifier: MIT
// libFuzzer target: the attention engine's public entry points
// (attention, flash_attention, attention_materialized; float and double;
// float / float16 / bfloat16 keys and values) with every mask and score
// policy, random shapes, strides, options and thread counts.
//
// Accepted calls are compared with attention_reference (float64) where the
// reference is finite, and run with 1 and 2 threads (bit-identical). Keys,
// values and biases may hold NaN / inf: a query must still get exactly what
// the reference gives it (a masked key's value never reaches it), and a
// query with no allowed key gets out = 0, lse = -inf. Rejected calls must
// throw effattn::invalid_argument and leave the outputs untouched.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fuzz_support.hpp"

using namespace effattn;
using fuzz::FuzzInput;
using fuzz::Guarded;
using fuzz::Layout4;
using fuzz::cast_value;
using fuzz::make_layout;

namespace {

struct Case {
  index_t B, H, Hkv, Nq, Nk, D, Dv;
  int mask_kind, score_kind;
  index_t offset;
  std::vector<index_t> limit;           // [B, Nq]
  std::vector<std::uint8_t> pred_bits;  // allowed bits for the predicate mask
  std::vector<float> bias;              // [B, Nk]
  AttentionOptions opt;
  int threads;
  bool with_lse;
  bool materialized;
  bool misalign;
};

/// Calls f(mask, score) with the case's policies.
template <class F>
void dispatch_policies(const Case& c, F&& f) {
  auto with_score = [&](const auto& mask) {
    switch (c.score_kind) {
      case 0: f(mask, NoScore{}); break;
      case 1: f(mask, KeyBiasScore{make_view<const float>(c.bias.empty() ? nullptr : c.bias.data(), c.B, c.Nk)}); break;
      default:
        f(mask, make_functor_score([](index_t b, index_t h, index_t i, index_t j) {
            return static_cast<float>(((b * 7 + h * 5 + i * 3 + j) % 11) - 5) * 0.25f;
          }));
    }
  };
  switch (c.mask_kind) {
    case 0: with_score(NoMask{}); break;
    case 1: with_score(CausalMask{}); break;
    case 2: with_score(OffsetCausalMask{c.offset}); break;
    case 3: with_score(KeyLimitMask{make_view<const index_t>(c.limit.empty() ? nullptr : c.limit.data(), c.B, c.Nq)}); break;
    default: {
      const Case* cp = &c;
      with_score(make_predicate_mask([cp](index_t b, index_t h, index_t i, index_t j) {
        const size_t bit = static_cast<size_t>(((b * cp->H + h) * cp->Nq + i) * cp->Nk + j);
        return cp->pred_bits.empty() ? true : ((cp->pred_bits[(bit / 8) % cp->pred_bits.size()] >> (bit % 8)) & 1) != 0;
      }));
    }
  }
}

template <class T, class KV>
void run_case(FuzzInput& in, Case& c) {
  // Operands, inside buffers this harness owns.
  const Layout4 lq = make_layout(in, {c.B, c.H, c.Nq, c.D}, true, true);
  const Layout4 lk = make_layout(in, {c.B, c.Hkv, c.Nk, c.D}, true, true);
  const Layout4 lv = make_layout(in, {c.B, c.Hkv, c.Nk, c.Dv}, true, true);
  const Layout4 lo = make_layout(in, {c.B, c.H, c.Nq, c.Dv}, false, true);
  const bool wild = in.byte() < 64;  // non-finite keys / values / bias somewhere
  std::vector<T> q(static_cast<size_t>(lq.span));
  std::vector<KV> k(static_cast<size_t>(lk.span)), v(static_cast<size_t>(lv.span));
  for (auto& x : q) x = static_cast<T>(static_cast<float>(static_cast<std::int8_t>(in.byte())) / 48.0f);
  // Values of moderate size (a float dot product of huge finite values leaves
  // float's range, which tests float, not the engine), and with `wild` some
  // NaN / +-inf, the poison of unused cache slots.
  auto value = [&](float unit) {
    const std::uint8_t kind = wild ? in.byte() : 0;
    if (kind >= 200) {
      static const float special[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                      -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
      return special[kind % 4];
    }
    return static_cast<float>(static_cast<std::int8_t>(in.byte())) * unit;
  };
  for (auto& x : k) x = cast_value<KV>(value(1.0f / 48));
  for (auto& x : v) x = cast_value<KV>(value(1.0f / 48));
  for (auto& x : c.bias) x = value(1.0f / 64);
  // A shape mismatch on purpose (must be rejected).
  const int bad = in.byte() % 16;
  std::array<index_t, 4> ko = lk.shape;
  if (bad == 1) ko[3] += 1;
  if (bad == 2) ko[2] = ko[2] > 0 ? ko[2] - 1 : 1;
  const bool must_reject_shape = bad == 1 || (bad == 2);

  const size_t on = static_cast<size_t>(lo.span), ln = static_cast<size_t>(c.B * c.H * c.Nq);
  Guarded<T> out1(on, c.misalign), out2(on, c.misalign), outr(on);
  Guarded<acc_t<T>> lse1(ln), lse2(ln), lser(ln);
  auto Q = ConstView<T, 4>(q.empty() ? nullptr : q.data(), lq.shape, lq.strides);
  auto K = ConstView<KV, 4>(k.empty() ? nullptr : k.data(), ko, lk.strides);
  auto Vv = ConstView<KV, 4>(v.empty() ? nullptr : v.data(), lv.shape, lv.strides);
  auto O = [&](Guarded<T>& g) { return View<T, 4>(on ? g.data() : nullptr, lo.shape, lo.strides); };
  auto L = [&](Guarded<acc_t<T>>& g) {
    return c.with_lse ? make_view(ln ? g.data() : nullptr, c.B, c.H, c.Nq) : View<acc_t<T>, 3>{};
  };

  bool ok1 = false, ok2 = false;
  dispatch_policies(c, [&](const auto& mask, const auto& score) {
    auto call = [&](Guarded<T>& og, Guarded<acc_t<T>>& lg, int threads) {
      return fuzz::accepted([&] {
        if constexpr (std::is_same<KV, T>::value) {
          if (c.materialized)
            attention_materialized<T>(Q, K, Vv, O(og), mask, score, c.opt, Executor(threads), L(lg));
          else
            attention<T>(Q, K, Vv, O(og), mask, score, c.opt, Executor(threads), L(lg));
        } else {
          attention<T>(Q, K, Vv, O(og), mask, score, c.opt, Executor(threads), L(lg));
        }
      }, "attention");
    };
    ok1 = call(out1, lse1, c.threads);
    ok2 = call(out2, lse2, c.threads < 0 ? c.threads : (c.threads == 1 ? 2 : 1));
    fuzz::fuzz_check(ok1 == ok2, "accepted with one thread count and rejected with another");
    fuzz::fuzz_check(out1.guards_intact() && out2.guards_intact() && lse1.guards_intact() && lse2.guards_intact(),
                     "a guard zone around an output changed");
    if (!ok1) {
      fuzz::fuzz_check(out1.untouched() && lse1.untouched(), "a rejected call wrote to an output");
      return;
    }
    fuzz::fuzz_check(!must_reject_shape, "a mismatched k shape was accepted");
    fuzz::fuzz_check(c.threads >= 0, "a negative thread count was accepted");
    if (!c.materialized) {
      fuzz::check_bit_identical(out1.data(), out2.data(), on, "out");
      if (c.with_lse) fuzz::check_bit_identical(lse1.data(), lse2.data(), ln, "lse");
    }
    // The float64 oracle on the same (16-bit or not) keys and values.
    AttentionOptions ro = c.opt;
    ro.backend = Backend::reference;
    attention_reference<T>(Q, K, Vv, O(outr), mask, score, ro, L(lser));
  });
  if (!ok1) return;
  // Compare every element the views address.
  const double tol = std::is_same<T, double>::value ? 1e-9 : 3e-4;
  for (index_t b = 0; b < c.B; ++b)
    for (index_t h = 0; h < c.H; ++h)
      for (index_t i = 0; i < c.Nq; ++i) {
        if (c.with_lse) {
          const size_t li = static_cast<size_t>((b * c.H + h) * c.Nq + i);
          const double want = lser[li], got = lse1[li];
          if (std::isinf(want) && want < 0)
            fuzz::fuzz_check(std::isinf(got) && got < 0, "lse of a query with no allowed key is not -inf");
          else if (std::isfinite(want))
            fuzz::fuzz_check(std::fabs(got - want) <= tol * (1 + std::fabs(want)), "lse differs from the reference");
        }
        for (index_t e = 0; e < c.Dv; ++e) {
          const index_t off = b * lo.strides[0] + h * lo.strides[1] + i * lo.strides[2] + e * lo.strides[3];
          const double want = outr[static_cast<size_t>(off)], got = out1[static_cast<size_t>(off)];
          if (!std::isfinite(want)) continue;  // the reference itself is not finite here
          if (!std::isfinite(got) || std::fabs(got - want) > tol * (1 + std::fabs(want)))
            fuzz::fuzz_fail("output [" + std::to_string(b) + "," + std::to_string(h) + "," + std::to_string(i) + "," +
                            std::to_string(e) + "] is " + std::to_string(got) + ", the reference " +
                            std::to_string(want) + (std::isfinite(got) ? "" : " (a masked value leaked?)"));
        }
      }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  Case c{};
  c.B = in.range(0, 2);
  c.Hkv = in.range(0, 2);
  c.H = c.Hkv * in.range(1, 3);
  if (in.byte() < 8) c.H = in.range(0, 5);  // possibly not a multiple of Hkv
  c.Nq = in.pick<index_t, 8>({1, 2, 4, 5, 7, 17, 65, 0});
  c.Nk = in.pick<index_t, 8>({0, 1, 3, 8, 13, 33, 129, 200});
  c.D = in.pick<index_t, 8>({1, 3, 8, 16, 17, 40, 64, 0});
  c.Dv = in.byte() < 200 ? c.D : in.range(0, 33);
  c.mask_kind = in.byte() % 5;
  c.score_kind = in.byte() % 3;
  const std::uint8_t ob = in.byte();
  c.offset = ob < 16 ? in.huge() : in.range(-40, 40);
  // KeyLimitMask limits: non-decreasing in [0, Nk], or broken on purpose.
  c.limit.resize(static_cast<size_t>(c.B * c.Nq));
  for (index_t b = 0; b < c.B; ++b) {
    index_t e = in.range(0, c.Nk);
    for (index_t i = 0; i < c.Nq; ++i) {
      e = std::min<index_t>(c.Nk, e + in.range(0, 3));
      c.limit[static_cast<size_t>(b * c.Nq + i)] = e;
    }
  }
  if (!c.limit.empty() && in.byte() < 8) c.limit[in.byte() % c.limit.size()] = in.byte() < 128 ? -1 : c.Nk + 1;
  c.pred_bits.resize(16);
  for (auto& x : c.pred_bits) x = in.byte();
  c.bias.resize(static_cast<size_t>(c.B * c.Nk));
  // Options: mostly valid, sometimes not.
  const std::uint8_t sb = in.byte();
  c.opt.scale = sb < 200 ? 0.0 : (sb < 230 ? 0.125 * (sb - 199) : (sb < 240 ? -1.0 : std::nan("")));
  const index_t quantum = effattn::detail::attention_query_tile_quantum();
  const std::uint8_t qb = in.byte();
  c.opt.block_q = qb < 200 ? 0 : (qb < 230 ? quantum * in.range(1, 2) : (qb < 245 ? quantum + 1 : -quantum));
  const std::uint8_t kb = in.byte();
  c.opt.block_k = kb < 150 ? 0 : (kb < 245 ? in.pick<index_t, 6>({1, 3, 8, 16, 64, 4096}) : (kb < 250 ? 4097 : -1));
  c.threads = in.pick<int, 5>({1, 2, 0, 2, -1});
  c.with_lse = in.flag();
  c.materialized = in.byte() < 24;
  c.misalign = in.flag();
  // Every harness buffer and the oracle's work stay small (fast executions).
  if (c.B * c.H * c.Nq * std::max<index_t>(c.Dv, 1) > 20000 || c.B * c.Hkv * c.Nk * std::max(c.D, c.Dv) > 40000 ||
      c.B * c.H * c.Nq * c.Nk * (c.D + c.Dv) > 400000)
    return 0;
  const int type = in.byte() % 5;
  if (std::getenv("EFFATTN_FUZZ_VERBOSE"))  // describe the case (to read a crash input)
    std::fprintf(stderr,
                 "case: type=%d B=%td H=%td Hkv=%td Nq=%td Nk=%td D=%td Dv=%td mask=%d score=%d offset=%td threads=%d "
                 "lse=%d materialized=%d scale=%g block_q=%td block_k=%td\n",
                 type, c.B, c.H, c.Hkv, c.Nq, c.Nk, c.D, c.Dv, c.mask_kind, c.score_kind, c.offset, c.threads,
                 int(c.with_lse), int(c.materialized), c.opt.scale, c.opt.block_q, c.opt.block_k);
  switch (type) {
    case 0: run_case<double, double>(in, c); break;
    case 1: run_case<float, float16>(in, c); break;
    case 2: run_case<float, bfloat16>(in, c); break;
    default: run_case<float, float>(in, c); break;
  }
  return 0;
}
