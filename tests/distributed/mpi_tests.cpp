// SPDX-License-Identifier: MIT
// effattn::distributed (include/effattn/distributed/mpi.hpp) against the
// one-process engine, under mpiexec with 1 to 4 ranks (ctest -R distributed).
// Every rank builds the same global tensors from a fixed seed, runs its shard
// and compares its result with the engine on the whole problem. Every test
// makes the same collective calls on every rank whatever happens (EXPECT, not
// ASSERT, around them), so a failure never leaves a rank waiting.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <effattn/distributed/mpi.hpp>
#include <effattn/effattn.hpp>

namespace {

using effattn::index_t;
namespace dist = effattn::distributed;

int world_size() {
  int p = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  return p;
}
int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

std::vector<float> random_vec(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> x(n);
  for (auto& e : x) e = u(g);
  return x;
}

/// Rank 0's copy of x equals every rank's, bit for bit.
bool same_on_all_ranks(const std::vector<float>& x) {
  std::vector<float> r0 = x;
  MPI_Bcast(r0.data(), static_cast<int>(r0.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
  const int same = std::memcmp(r0.data(), x.data(), x.size() * sizeof(float)) == 0;
  int all = 0;
  MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

/// |a - b| <= 2e-5 + 2e-5 |b| elementwise; -inf must match -inf.
void expect_close(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < a.size() && bad < 5; ++i) {
    const bool ok = std::isinf(b[i]) ? a[i] == b[i] : std::fabs(a[i] - b[i]) <= 2e-5f + 2e-5f * std::fabs(b[i]);
    if (!ok) {
      ADD_FAILURE() << what << ": element " << i << " = " << a[i] << ", engine " << b[i];
      ++bad;
    }
  }
}

/// Keys [begin, begin + n) of a [B, Hkv, N, D] tensor, as a strided view.
effattn::ConstView<float, 4> key_slice(const std::vector<float>& x, index_t B, index_t Hkv, index_t N, index_t D,
                                       index_t begin, index_t n) {
  return effattn::ConstView<float, 4>(x.data() + begin * D, {B, Hkv, n, D}, {Hkv * N * D, N * D, D, 1});
}

struct Problem {
  index_t B = 2, H = 4, Hkv = 2, Nq = 3, N = 37, D = 8, Dv = 5;
  std::vector<float> q, k, v;
  explicit Problem(index_t nq, index_t n, index_t hkv = 2, unsigned seed = 7) : Hkv(hkv), Nq(nq), N(n) {
    q = random_vec(static_cast<size_t>(B * H * Nq * D), seed);
    k = random_vec(static_cast<size_t>(B * Hkv * N * D), seed + 1);
    v = random_vec(static_cast<size_t>(B * Hkv * N * Dv), seed + 2);
  }
  effattn::ConstView<float, 4> Q() const { return effattn::make_view<const float>(q.data(), B, H, Nq, D); }
};

/// This rank's key range: the balanced split, or (empty_rank1) the same with
/// rank 1's keys given to rank 0, so rank 1 holds none.
effattn::distributed::PositionRange my_keys(index_t N, bool empty_rank1) {
  const int P = world_size(), r = world_rank();
  auto range = dist::shard_range(N, P, r);
  if (empty_rank1 && P > 1) {
    if (r == 0) range.end = dist::shard_range(N, P, 1).end;
    if (r == 1) range.begin = range.end;
  }
  return range;
}

template <class Mask, class Score>
void check_sharded(const Problem& p, const Mask& mask, const Score& score, bool empty_rank1, const std::string& what) {
  const index_t rows = p.B * p.H * p.Nq;
  std::vector<float> ref(static_cast<size_t>(rows * p.Dv)), ref_lse(static_cast<size_t>(rows));
  effattn::attention<float>(p.Q(), key_slice(p.k, p.B, p.Hkv, p.N, p.D, 0, p.N),
                            key_slice(p.v, p.B, p.Hkv, p.N, p.Dv, 0, p.N),
                            effattn::make_view(ref.data(), p.B, p.H, p.Nq, p.Dv), mask, score, {}, effattn::Executor(1),
                            effattn::make_view(ref_lse.data(), p.B, p.H, p.Nq));
  const auto keys = my_keys(p.N, empty_rank1);
  std::vector<float> out[3], lse[3];
  const int threads[3] = {1, 2, 1};  // 1 thread, 2 threads, 1 thread again
  for (int run = 0; run < 3; ++run) {
    out[run].assign(ref.size(), -1.f);
    lse[run].assign(ref_lse.size(), -1.f);
    dist::sharded_attention<float>(MPI_COMM_WORLD, p.Q(), key_slice(p.k, p.B, p.Hkv, p.N, p.D, keys.begin, keys.size()),
                                   key_slice(p.v, p.B, p.Hkv, p.N, p.Dv, keys.begin, keys.size()),
                                   effattn::make_view(out[run].data(), p.B, p.H, p.Nq, p.Dv), {keys.begin, p.N}, mask,
                                   score, {}, effattn::Executor(threads[run]),
                                   effattn::make_view(lse[run].data(), p.B, p.H, p.Nq));
  }
  expect_close(out[0], ref, what + " out");
  expect_close(lse[0], ref_lse, what + " lse");
  EXPECT_TRUE(bits_equal(out[0], out[1]) && bits_equal(lse[0], lse[1])) << what << ": 1 vs 2 threads";
  EXPECT_TRUE(bits_equal(out[0], out[2]) && bits_equal(lse[0], lse[2])) << what << ": repeated run";
  // Both collectives on every rank (no short circuit).
  const bool same_out = same_on_all_ranks(out[0]), same_lse = same_on_all_ranks(lse[0]);
  EXPECT_TRUE(same_out && same_lse) << what << ": ranks differ";
  if (world_size() == 1) {  // one rank: the engine's own bits
    EXPECT_TRUE(bits_equal(out[0], ref) && bits_equal(lse[0], ref_lse)) << what << ": np=1 not the engine's bits";
  }
}

// ------------------------------------------------------------ layouts

TEST(DistributedLayout, ShardRangeAndRingPositionsPartition) {
  for (index_t N : {0, 1, 2, 5, 7, 16, 37, 1000, 16385})
    for (int P = 1; P <= 6; ++P) {
      index_t expect = 0;
      for (int r = 0; r < P; ++r) {
        const auto s = dist::shard_range(N, P, r);
        EXPECT_EQ(s.begin, expect);
        EXPECT_LE(s.size(), N / P + 1);
        expect = s.end;
      }
      EXPECT_EQ(expect, N);
      for (auto layout : {dist::RingLayout::zigzag, dist::RingLayout::contiguous}) {
        std::vector<int> owner(static_cast<size_t>(N), -1);
        index_t lo = N, hi = 0;
        for (int r = 0; r < P; ++r) {
          const auto pos = dist::ring_positions(N, P, r, layout);
          EXPECT_LE(pos.part[0].end, pos.part[1].begin);
          for (index_t l = 0; l < pos.size(); ++l) {
            const index_t x = pos.position(l);
            ASSERT_TRUE(x >= 0 && x < N);
            EXPECT_EQ(owner[x], -1) << "position " << x << " owned twice";
            owner[x] = r;
            if (l > 0) {
              EXPECT_LT(pos.position(l - 1), x);
            }
          }
          lo = std::min(lo, pos.size());
          hi = std::max(hi, pos.size());
        }
        for (index_t x = 0; x < N; ++x) {
          EXPECT_GE(owner[x], 0) << "position " << x << " unowned";
        }
        if (N > 0) {
          EXPECT_LE(hi - lo, 2);
        }
      }
    }
  // zigzag, 2 ranks: rank 0 owns chunks 0 and 3, rank 1 chunks 1 and 2.
  const auto z0 = dist::ring_positions(16, 2, 0), z1 = dist::ring_positions(16, 2, 1);
  EXPECT_EQ(z0.part[0].begin, 0);
  EXPECT_EQ(z0.part[1].begin, 12);
  EXPECT_EQ(z1.part[0].begin, 4);
  EXPECT_EQ(z1.part[1].begin, 8);
  EXPECT_THROW(dist::shard_range(-1, 2, 0), effattn::parameter_error);
  EXPECT_THROW(dist::shard_range(4, 0, 0), effattn::parameter_error);
  EXPECT_THROW(dist::ring_positions(4, 2, 2), effattn::parameter_error);
  EXPECT_THROW(dist::ring_positions(4, 2, -1), std::invalid_argument);
}

// ------------------------------------------------------------ sharded decode / cross-attention

TEST(DistributedSharded, MatchesEngineOnOddShapesMasksAndGqa) {
  for (index_t nq : {1, 3, 19})
    for (index_t n : {1, 7, 37, 300})
      for (bool empty_rank1 : {false, true}) {
        const Problem p(nq, n, /*hkv=*/2, static_cast<unsigned>(nq * 1000 + n));
        const std::string tag = "Nq=" + std::to_string(nq) + " N=" + std::to_string(n) +
                                (empty_rank1 ? " rank 1 empty" : "");
        check_sharded(p, effattn::NoMask{}, effattn::NoScore{}, empty_rank1, "no mask " + tag);
        // Bottom-right causal against the whole sequence: the queries are the
        // last Nq positions, so the last rank's keys are masked for the early
        // queries when Nq > 1.
        check_sharded(p, effattn::CausalMask{}, effattn::NoScore{}, empty_rank1, "causal " + tag);
        // Query i sees j <= i - 2: queries 0 and 1 see no key on any rank.
        check_sharded(p, effattn::OffsetCausalMask{-2}, effattn::NoScore{}, empty_rank1, "offset -2 " + tag);
        // Key limits in sequence positions; some 0, some within one rank.
        std::vector<index_t> lim(static_cast<size_t>(p.B * nq));
        for (index_t b = 0; b < p.B; ++b)
          for (index_t i = 0; i < nq; ++i) lim[b * nq + i] = std::min<index_t>(n, (b + 1) * i * n / (2 * nq + 1));
        check_sharded(p, effattn::KeyLimitMask{effattn::make_view<const index_t>(lim.data(), p.B, nq)},
                      effattn::NoScore{}, empty_rank1, "key limits " + tag);
        // A per-key bias in sequence positions.
        const auto bias = random_vec(static_cast<size_t>(p.B * n), 99);
        check_sharded(p, effattn::CausalMask{},
                      effattn::KeyBiasScore{effattn::make_view<const float>(bias.data(), p.B, n)}, empty_rank1,
                      "causal + key bias " + tag);
      }
}

TEST(DistributedSharded, MultiQueryHeadsAndEmptyContext) {
  const Problem p(2, 53, /*hkv=*/1, 5);  // H = 4 query heads share one K/V head
  check_sharded(p, effattn::NoMask{}, effattn::NoScore{}, false, "MQA");
  // No key at all: every rank's shard is empty; out 0 and lse -inf.
  const Problem z(3, 0, 2, 6);
  check_sharded(z, effattn::NoMask{}, effattn::NoScore{}, false, "N=0");
}

TEST(DistributedSharded, Float16KeysAndValues) {
  const Problem p(2, 61, 2, 11);
  std::vector<effattn::float16> kh(p.k.size()), vh(p.v.size());
  for (size_t i = 0; i < kh.size(); ++i) kh[i] = effattn::float16(p.k[i]);
  for (size_t i = 0; i < vh.size(); ++i) vh[i] = effattn::float16(p.v[i]);
  const index_t rows = p.B * p.H * p.Nq;
  std::vector<float> ref(static_cast<size_t>(rows * p.Dv)), out(ref.size());
  effattn::attention<float>(p.Q(), effattn::make_view<const effattn::float16>(kh.data(), p.B, p.Hkv, p.N, p.D),
                            effattn::make_view<const effattn::float16>(vh.data(), p.B, p.Hkv, p.N, p.Dv),
                            effattn::make_view(ref.data(), p.B, p.H, p.Nq, p.Dv));
  const auto keys = my_keys(p.N, false);
  const effattn::ConstView<effattn::float16, 4> ks(kh.data() + keys.begin * p.D, {p.B, p.Hkv, keys.size(), p.D},
                                                   {p.Hkv * p.N * p.D, p.N * p.D, p.D, 1});
  const effattn::ConstView<effattn::float16, 4> vs(vh.data() + keys.begin * p.Dv, {p.B, p.Hkv, keys.size(), p.Dv},
                                                   {p.Hkv * p.N * p.Dv, p.N * p.Dv, p.Dv, 1});
  dist::sharded_attention<float>(MPI_COMM_WORLD, p.Q(), ks, vs, effattn::make_view(out.data(), p.B, p.H, p.Nq, p.Dv),
                                 {keys.begin, p.N});
  expect_close(out, ref, "float16 K/V");
  // Perceiver AR with 16-bit K/V: the Nq = 2 queries as M = 2 latents.
  std::vector<float> cref(out.size()), cout(out.size());
  effattn::perceiver_ar::cross_attention<float>(
      p.Q(), effattn::make_view<const effattn::float16>(kh.data(), p.B, p.Hkv, p.N, p.D),
      effattn::make_view<const effattn::float16>(vh.data(), p.B, p.Hkv, p.N, p.Dv),
      effattn::make_view(cref.data(), p.B, p.H, p.Nq, p.Dv));
  dist::perceiver_ar_cross_attention<float>(MPI_COMM_WORLD, p.Q(), ks, vs,
                                            effattn::make_view(cout.data(), p.B, p.H, p.Nq, p.Dv), {keys.begin, p.N});
  expect_close(cout, cref, "perceiver_ar, float16 K/V");
}

TEST(DistributedSharded, PerceiverArCrossAttentionOverShardedPrefix) {
  const index_t B = 2, H = 4, Hkv = 1, M = 5, N = 41, D = 8;
  const auto q = random_vec(static_cast<size_t>(B * H * M * D), 21);
  const auto k = random_vec(static_cast<size_t>(B * Hkv * N * D), 22);
  const auto v = random_vec(static_cast<size_t>(B * Hkv * N * D), 23);
  const auto Q = effattn::make_view<const float>(q.data(), B, H, M, D);
  for (int with_vl = 0; with_vl < 2; ++with_vl) {
    // Valid lengths: a full sequence and one shorter than M (its first two
    // latents are invalid: out 0, lse -inf).
    const std::vector<index_t> vl = {N, 3};
    const effattn::ConstView<index_t, 1> VL =
        with_vl ? effattn::make_view<const index_t>(vl.data(), B) : effattn::ConstView<index_t, 1>{};
    std::vector<float> ref(static_cast<size_t>(B * H * M * D)), ref_lse(static_cast<size_t>(B * H * M));
    effattn::perceiver_ar::cross_attention<float>(Q, key_slice(k, B, Hkv, N, D, 0, N), key_slice(v, B, Hkv, N, D, 0, N),
                                                  effattn::make_view(ref.data(), B, H, M, D), VL, {}, {},
                                                  effattn::make_view(ref_lse.data(), B, H, M));
    const auto keys = my_keys(N, true);
    std::vector<float> out(ref.size()), lse(ref_lse.size());
    dist::perceiver_ar_cross_attention<float>(MPI_COMM_WORLD, Q, key_slice(k, B, Hkv, N, D, keys.begin, keys.size()),
                                              key_slice(v, B, Hkv, N, D, keys.begin, keys.size()),
                                              effattn::make_view(out.data(), B, H, M, D), {keys.begin, N}, VL, {}, {},
                                              effattn::make_view(lse.data(), B, H, M));
    expect_close(out, ref, with_vl ? "cross, valid lengths, out" : "cross out");
    expect_close(lse, ref_lse, with_vl ? "cross, valid lengths, lse" : "cross lse");
  }
}

// ------------------------------------------------------------ ring prefill

void check_ring(index_t N, index_t Hkv, dist::RingLayout layout, unsigned seed) {
  const index_t B = 2, H = 4, D = 8, Dv = 6;
  const int P = world_size(), r = world_rank();
  const auto q = random_vec(static_cast<size_t>(B * H * N * D), seed);
  const auto k = random_vec(static_cast<size_t>(B * Hkv * N * D), seed + 1);
  const auto v = random_vec(static_cast<size_t>(B * Hkv * N * Dv), seed + 2);
  std::vector<float> ref(static_cast<size_t>(B * H * N * Dv)), ref_lse(static_cast<size_t>(B * H * N));
  effattn::attention<float>(effattn::make_view<const float>(q.data(), B, H, N, D), key_slice(k, B, Hkv, N, D, 0, N),
                            key_slice(v, B, Hkv, N, Dv, 0, N), effattn::make_view(ref.data(), B, H, N, Dv),
                            effattn::CausalMask{}, effattn::NoScore{}, {}, effattn::Executor(1),
                            effattn::make_view(ref_lse.data(), B, H, N));
  // This rank's rows, gathered into contiguous local tensors.
  const auto pos = dist::ring_positions(N, P, r, layout);
  const index_t n = pos.size();
  const auto gather = [&](const std::vector<float>& x, index_t heads, index_t dim) {
    std::vector<float> y(static_cast<size_t>(B * heads * n * dim));
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < heads; ++h)
        for (index_t l = 0; l < n; ++l)
          for (index_t e = 0; e < dim; ++e)
            y[((b * heads + h) * n + l) * dim + e] = x[((b * heads + h) * N + pos.position(l)) * dim + e];
    return y;
  };
  const auto ql = gather(q, H, D), kl = gather(k, Hkv, D), vl = gather(v, Hkv, Dv);
  const auto ref_mine = gather(ref, H, Dv), ref_lse_mine = gather(ref_lse, H, 1);
  std::vector<float> out[3], lse[3];
  const int threads[3] = {1, 2, 1};
  for (int run = 0; run < 3; ++run) {
    out[run].assign(ref_mine.size(), -1.f);
    lse[run].assign(ref_lse_mine.size(), -1.f);
    dist::ring_causal_attention<float>(MPI_COMM_WORLD, effattn::make_view<const float>(ql.data(), B, H, n, D),
                                       effattn::make_view<const float>(kl.data(), B, Hkv, n, D),
                                       effattn::make_view<const float>(vl.data(), B, Hkv, n, Dv),
                                       effattn::make_view(out[run].data(), B, H, n, Dv), N, layout, {},
                                       effattn::Executor(threads[run]), effattn::make_view(lse[run].data(), B, H, n));
  }
  const std::string what = std::string(layout == dist::RingLayout::zigzag ? "zigzag" : "contiguous") +
                           " N=" + std::to_string(N) + " Hkv=" + std::to_string(Hkv);
  expect_close(out[0], ref_mine, what + " out");
  expect_close(lse[0], ref_lse_mine, what + " lse");
  EXPECT_TRUE(bits_equal(out[0], out[1]) && bits_equal(lse[0], lse[1])) << what << ": 1 vs 2 threads";
  EXPECT_TRUE(bits_equal(out[0], out[2]) && bits_equal(lse[0], lse[2])) << what << ": repeated run";
}

TEST(DistributedRing, CausalPrefillMatchesEngine) {
  const index_t P = world_size();
  for (auto layout : {dist::RingLayout::zigzag, dist::RingLayout::contiguous})
    // N < 2P leaves some zigzag chunks (and ranks) empty.
    for (index_t N : {index_t{1}, index_t{3}, 2 * P - 1, index_t{37}, index_t{130}})
      for (index_t hkv : {1, 2, 4}) check_ring(N, hkv, layout, static_cast<unsigned>(N * 10 + hkv));
  // Chunks of many query and key tiles: empty, full and partial tiles in
  // every step, tiles that straddle a rank's two chunks.
  for (auto layout : {dist::RingLayout::zigzag, dist::RingLayout::contiguous}) check_ring(777, 2, layout, 4242);
}

// ------------------------------------------------------------ errors: the same exception on every rank

TEST(DistributedErrors, BadArgumentsOnOneRankThrowOnEveryRank) {
  const int P = world_size(), r = world_rank(), last = P - 1;
  const Problem p(2, 20, 2, 3);
  const auto keys = my_keys(p.N, false);
  std::vector<float> out(static_cast<size_t>(p.B * p.H * p.Nq * p.Dv));
  const auto K = key_slice(p.k, p.B, p.Hkv, p.N, p.D, keys.begin, keys.size());
  const auto V = key_slice(p.v, p.B, p.Hkv, p.N, p.Dv, keys.begin, keys.size());
  const auto O = effattn::make_view(out.data(), p.B, p.H, p.Nq, p.Dv);
  // The last rank's values have the wrong Dv: shape_error everywhere.
  {
    const auto Vbad = r == last ? key_slice(p.v, p.B, p.Hkv, p.N, p.Dv - 1, keys.begin, keys.size()) : V;
    try {
      dist::sharded_attention<float>(MPI_COMM_WORLD, p.Q(), K, Vbad, O, {keys.begin, p.N});
      ADD_FAILURE() << "no exception";
    } catch (const effattn::shape_error& e) {
      EXPECT_NE(std::string(e.what()).find("distributed::sharded_attention"), std::string::npos) << e.what();
    }
  }
  // A negative thread count on rank 0: parameter_error everywhere.
  EXPECT_THROW(dist::sharded_attention<float>(MPI_COMM_WORLD, p.Q(), K, V, O, {keys.begin, p.N}, effattn::NoMask{},
                                              effattn::NoScore{}, {}, effattn::Executor(r == 0 ? -1 : 1)),
               effattn::parameter_error);
  // A shard outside [0, total) on the last rank.
  EXPECT_THROW(dist::sharded_attention<float>(MPI_COMM_WORLD, p.Q(), K, V, O,
                                              {r == last ? keys.begin + 1 : keys.begin, p.N}),
               effattn::parameter_error);
  if (P > 1) {
    // Shapes that are fine locally but disagree across ranks (Nq).
    std::vector<float> q1(static_cast<size_t>(p.B * p.H * 1 * p.D), 0.f), out1(static_cast<size_t>(p.B * p.H * p.Dv));
    try {
      if (r == last)
        dist::sharded_attention<float>(MPI_COMM_WORLD, effattn::make_view<const float>(q1.data(), p.B, p.H, 1, p.D),
                                       K, V, effattn::make_view(out1.data(), p.B, p.H, 1, p.Dv), {keys.begin, p.N});
      else
        dist::sharded_attention<float>(MPI_COMM_WORLD, p.Q(), K, V, O, {keys.begin, p.N});
      ADD_FAILURE() << "no exception";
    } catch (const effattn::shape_error& e) {
      EXPECT_NE(std::string(e.what()).find("disagree"), std::string::npos) << e.what();
    }
    // Shards that leave a gap: rank 0 claims one key less.
    const auto K0 = r == 0 ? key_slice(p.k, p.B, p.Hkv, p.N, p.D, 0, keys.size() - 1) : K;
    const auto V0 = r == 0 ? key_slice(p.v, p.B, p.Hkv, p.N, p.Dv, 0, keys.size() - 1) : V;
    try {
      dist::sharded_attention<float>(MPI_COMM_WORLD, p.Q(), K0, V0, O, {keys.begin, p.N});
      ADD_FAILURE() << "no exception";
    } catch (const effattn::parameter_error& e) {
      EXPECT_NE(std::string(e.what()).find("tile"), std::string::npos) << e.what();
    }
  }
  // Perceiver AR: a valid length past N on rank 0 only.
  {
    const std::vector<index_t> vl = {p.N, r == 0 ? p.N + 1 : p.N};
    EXPECT_THROW(dist::perceiver_ar_cross_attention<float>(MPI_COMM_WORLD, p.Q(), K, V, O, {keys.begin, p.N},
                                                           effattn::make_view<const index_t>(vl.data(), p.B)),
                 effattn::parameter_error);
  }
  // Ring: the last rank's rows do not match ring_positions; and a negative N.
  {
    const index_t N = 23, B = 1, H = 2, D = 4;
    const auto pos = dist::ring_positions(N, P, r);
    const index_t n = pos.size() + (r == last ? 1 : 0);
    std::vector<float> x(static_cast<size_t>(B * H * n * D), 0.5f), o(x.size());
    const auto X = effattn::make_view<const float>(x.data(), B, H, n, D);
    try {
      dist::ring_causal_attention<float>(MPI_COMM_WORLD, X, X, X, effattn::make_view(o.data(), B, H, n, D), N);
      ADD_FAILURE() << "no exception";
    } catch (const effattn::shape_error& e) {
      EXPECT_NE(std::string(e.what()).find("ring_positions"), std::string::npos) << e.what();
    }
    EXPECT_THROW(dist::ring_causal_attention<float>(MPI_COMM_WORLD, X, X, X, effattn::make_view(o.data(), B, H, n, D),
                                                    -1),
                 effattn::parameter_error);
  }
  // After all that, a correct call still works (no stray messages).
  check_sharded(p, effattn::CausalMask{}, effattn::NoScore{}, false, "after errors");
}

/// On ranks other than 0, GoogleTest's printer is replaced by this one: it
/// prints failures only, tagged with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.summary());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = world_rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  const int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && worst != 0 && rc == 0) std::fprintf(stderr, "effattn: a test failed on another rank\n");
  MPI_Finalize();
  return worst;
}
