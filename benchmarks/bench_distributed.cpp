// SPDX-License-Identifier: MIT
// effattn::distributed (include/effattn/distributed/mpi.hpp): time per call
// against compute and message sizes, for docs/distributed.md. An MPI program,
// not a Google Benchmark one (every rank must run the same number of
// iterations, and the time of a collective call is the slowest rank's), built
// as mpi_bench_distributed so that scripts/bench.sh's bench_* loop does not
// start it directly; bench.sh runs it under mpiexec when MPI was found.
//
//   OMP_NUM_THREADS=1 mpiexec -n 2 --bind-to none -x OMP_NUM_THREADS mpi_bench_distributed prefill threads=1
//   OMP_NUM_THREADS=2 mpiexec -n 1 --bind-to none mpi_bench_distributed prefill threads=2  # the one-process baseline
//   mpiexec -n 2 --bind-to none mpi_bench_distributed decode                                # sharded decode
//
// (Open MPI binds each rank of a 1- or 2-rank job to one core by default: a
// 1-rank baseline with 2 threads would then run both on one core.)
//
// Options (after the mode): N=<positions> H=<heads> D=<head dim> reps=<n>
// threads=<per rank, 0 = OpenMP default> layout=zigzag|contiguous. Rank 0
// prints one line per measurement: the median over reps of the slowest rank's
// wall time, the fastest rank's, the payload each rank sends per call, and
// (prefill) the time of one ring step's message alone, measured with the
// same MPI_Isend / MPI_Irecv pair and no compute.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <effattn/distributed/mpi.hpp>
#include <effattn/effattn.hpp>

namespace {

using effattn::index_t;
namespace dist = effattn::distributed;

struct Args {
  std::string mode = "prefill";
  index_t N = 16384, H = 8, D = 64;
  int reps = 3, threads = 0;
  dist::RingLayout layout = dist::RingLayout::zigzag;
};

Args parse(int argc, char** argv) {
  Args a;
  if (argc > 1) a.mode = argv[1];
  if (a.mode == "decode") a.N = 1 << 20;
  for (int i = 2; i < argc; ++i) {
    const std::string s = argv[i];
    const auto eq = s.find('=');
    const std::string key = s.substr(0, eq), val = eq == std::string::npos ? "" : s.substr(eq + 1);
    if (key == "N") a.N = std::atoll(val.c_str());
    else if (key == "H") a.H = std::atoll(val.c_str());
    else if (key == "D") a.D = std::atoll(val.c_str());
    else if (key == "reps") a.reps = std::atoi(val.c_str());
    else if (key == "threads") a.threads = std::atoi(val.c_str());
    else if (key == "layout") a.layout = val == "contiguous" ? dist::RingLayout::contiguous : dist::RingLayout::zigzag;
  }
  return a;
}

std::vector<float> random_vec(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> x(n);
  for (auto& e : x) e = d(g);
  return x;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x.empty() ? 0.0 : x[x.size() / 2];
}

/// CPU time of this process, all its threads.
double cpu_now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// Set by time_collective: the median over reps of the CPU seconds summed
/// over ranks.
double g_cpu_all_ranks = 0;

/// Runs f reps times between barriers; returns the medians of the slowest and
/// of the fastest rank's wall time (and leaves the median over reps of the
/// CPU seconds summed over ranks in g_cpu_all_ranks: on a loaded host that
/// compares the work of two configurations better than their wall times).
template <class F>
std::pair<double, double> time_collective(int reps, F&& f) {
  std::vector<double> slow, fast, cpu;
  for (int i = 0; i < reps; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = now(), c0 = cpu_now();
    f();
    const double t = now() - t0, c = cpu_now() - c0;
    double mx = 0, mn = 0, cs = 0;
    MPI_Allreduce(&t, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&t, &mn, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&c, &cs, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    slow.push_back(mx);
    fast.push_back(mn);
    cpu.push_back(cs);
  }
  g_cpu_all_ranks = median(cpu);
  return {median(slow), median(fast)};
}

const char* isa_name() { return effattn::to_string(effattn::active_isa()); }

void prefill(const Args& a, int P, int r) {
  const index_t B = 1, H = a.H, Hkv = a.H, D = a.D, N = a.N;
  const auto pos = dist::ring_positions(N, P, r, a.layout);
  const index_t n = pos.size();
  const auto q = random_vec(static_cast<size_t>(B * H * n * D), 1 + r);
  const auto k = random_vec(static_cast<size_t>(B * Hkv * n * D), 100 + r);
  const auto v = random_vec(static_cast<size_t>(B * Hkv * n * D), 200 + r);
  std::vector<float> out(q.size());
  const effattn::Executor ex(a.threads);
  const auto Q = effattn::make_view<const float>(q.data(), B, H, n, D);
  const auto K = effattn::make_view<const float>(k.data(), B, Hkv, n, D);
  const auto V = effattn::make_view<const float>(v.data(), B, Hkv, n, D);
  const auto O = effattn::make_view(out.data(), B, H, n, D);
  const char* layout = a.layout == dist::RingLayout::zigzag ? "zigzag" : "contiguous";
  const double flops = 2.0 * 2.0 * D * B * H * (static_cast<double>(N) * (N + 1) / 2);
  const auto ring = time_collective(a.reps, [&] { dist::ring_causal_attention<float>(MPI_COMM_WORLD, Q, K, V, O, N, a.layout, {}, ex); });
  const double ring_cpu = g_cpu_all_ranks;
  // One ring step's message alone: a K/V block to the next rank.
  const index_t block = 2 * B * Hkv * n * D;
  std::vector<float> sbuf(static_cast<size_t>(block), 1.f), rbuf(static_cast<size_t>(block));
  const auto msg = time_collective(a.reps, [&] {
    if (P == 1) return;
    MPI_Request rq[2];
    MPI_Irecv(rbuf.data(), static_cast<int>(block), MPI_FLOAT, (r - 1 + P) % P, 7, MPI_COMM_WORLD, &rq[0]);
    MPI_Isend(sbuf.data(), static_cast<int>(block), MPI_FLOAT, (r + 1) % P, 7, MPI_COMM_WORLD, &rq[1]);
    MPI_Waitall(2, rq, MPI_STATUSES_IGNORE);
  });
  if (r == 0)
    std::printf("prefill ring  P=%d threads/rank=%d layout=%s N=%lld H=%lld D=%lld: %.3f s (fastest rank %.3f s), "
                "%.1f GFLOP/s, CPU %.3f s (all ranks), %d steps, K/V block %.2f MiB per step, one step's message "
                "alone %.2f ms\n",
                P, a.threads, layout, static_cast<long long>(N), static_cast<long long>(H),
                static_cast<long long>(D), ring.first, ring.second, flops / ring.first / 1e9, ring_cpu, P,
                block * 4.0 / (1 << 20), msg.first * 1e3);
  if (P == 1) {
    // The one-process engine on the same problem (the baseline).
    const auto eng = time_collective(a.reps, [&] {
      effattn::attention<float>(Q, K, V, O, effattn::CausalMask{}, effattn::NoScore{}, {}, ex);
    });
    std::printf("prefill engine P=1 threads=%d N=%lld H=%lld D=%lld: %.3f s, %.1f GFLOP/s, CPU %.3f s\n", a.threads,
                static_cast<long long>(N), static_cast<long long>(H), static_cast<long long>(D), eng.first,
                flops / eng.first / 1e9, g_cpu_all_ranks);
  }
}

void decode(const Args& a, int P, int r) {
  const index_t B = 1, H = a.H, Hkv = a.H, D = a.D, N = a.N, Nq = 1;
  const auto keys = dist::shard_range(N, P, r);
  const index_t n = keys.size();
  const auto q = random_vec(static_cast<size_t>(B * H * Nq * D), 1);
  const auto k = random_vec(static_cast<size_t>(B * Hkv * n * D), 100 + r);
  const auto v = random_vec(static_cast<size_t>(B * Hkv * n * D), 200 + r);
  std::vector<float> out(static_cast<size_t>(B * H * Nq * D)), lse(static_cast<size_t>(B * H * Nq));
  const effattn::Executor ex(a.threads);
  const auto Q = effattn::make_view<const float>(q.data(), B, H, Nq, D);
  const auto K = effattn::make_view<const float>(k.data(), B, Hkv, n, D);
  const auto V = effattn::make_view<const float>(v.data(), B, Hkv, n, D);
  const auto O = effattn::make_view(out.data(), B, H, Nq, D);
  const auto L = effattn::make_view(lse.data(), B, H, Nq);
  const int reps = std::max(a.reps, 10);
  const auto call = time_collective(reps, [&] {
    dist::sharded_attention<float>(MPI_COMM_WORLD, Q, K, V, O, {keys.begin, N}, effattn::NoMask{}, effattn::NoScore{},
                                   {}, ex, L);
  });
  // The local engine call on the shard alone (the compute of one step).
  const auto local = time_collective(reps, [&] {
    effattn::attention<float>(Q, K, V, O, effattn::NoMask{}, effattn::NoScore{}, {}, ex, L);
  });
  // The same call with no key on any rank: the agreement, the allreduce of
  // the same payload and the packing, without the attention.
  const auto Ke = effattn::make_view<const float>(k.data(), B, Hkv, 0, D);
  const auto Ve = effattn::make_view<const float>(v.data(), B, Hkv, 0, D);
  const auto comm = time_collective(reps, [&] {
    dist::sharded_attention<float>(MPI_COMM_WORLD, Q, Ke, Ve, O, {0, 0}, effattn::NoMask{}, effattn::NoScore{}, {}, ex,
                                   L);
  });
  const double payload = static_cast<double>(B * H * Nq * (D + 2)) * 4;
  if (r == 0)
    std::printf("decode sharded P=%d threads/rank=%d N=%lld H=%lld D=%lld: %.3f ms per step (fastest rank %.3f ms); "
                "local engine on the shard %.3f ms; the call with empty shards (agreement + allreduce) %.1f us; "
                "allreduce payload %.0f B, agreement %d B per rank\n",
                P, a.threads, static_cast<long long>(N), static_cast<long long>(H), static_cast<long long>(D),
                call.first * 1e3, call.second * 1e3, local.first * 1e3, comm.first * 1e6, payload, 16 * 8);
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int P = 1, r = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  const Args a = parse(argc, argv);
  if (r == 0) std::printf("effattn distributed: %d rank(s), engine ISA level %s\n", P, isa_name());
  if (a.mode == "decode")
    decode(a, P, r);
  else
    prefill(a, P, r);
  MPI_Finalize();
  return 0;
}
