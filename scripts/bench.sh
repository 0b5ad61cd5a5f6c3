#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The main job: builds effattn in Release for the host ISA, runs every
# benchmark program (each operator against full attention on our own tiled
# engine, in the same run), and writes results/report.md, results/summary.json
# and PNG plots in results/plots/. Prints the summary table. Installs missing
# Debian packages first.
#   EFFATTN_BENCH_THREADS  OpenMP threads per operator (default 2)
#   EFFATTN_BENCH_REPS     repetitions per benchmark (default 3; medians are reported)
#   EFFATTN_BENCH_FILTER   Google Benchmark filter regex (default: all)
#   EFFATTN_BENCH_QUICK=1  smallest shapes only (a smoke run)
#   (also mpi_bench_distributed under mpiexec, Debian's Open MPI: results/distributed.txt,
#   and STAR's search, star_train_search: results/star_search/front.json)
#   EFFATTN_TORCH_PYTHON   a Python with torch >= 2.1: also time PyTorch's
#                          scaled_dot_product_attention on the engine's shapes,
#                          interleaved with effattn (benchmarks/bench_torch.py);
#                          unset: the report says torch was not measured
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build-essential cmake libeigen3-dev libbenchmark-dev libstb-dev python3 python3-matplotlib openmpi-bin libopenmpi-dev libtorch-dev libopenblas0-openmp
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DEFFATTN_BUILD_TESTS=OFF -DEFFATTN_BUILD_BENCHMARKS=ON \
      -DEFFATTN_BUILD_EXAMPLES=ON
cmake --build build/release -j "$jobs"
out=results
mkdir -p "$out"
rm -f "$out"/*.json
for b in build/release/benchmarks/bench_*; do
  [ -x "$b" ] || continue
  name=$(basename "$b")
  echo "effattn: running $name"
  "$b" --benchmark_out="$out/$name.json" --benchmark_out_format=json \
       --benchmark_repetitions="${EFFATTN_BENCH_REPS:-3}" --benchmark_report_aggregates_only=false \
       --benchmark_display_aggregates_only=true --benchmark_filter="${EFFATTN_BENCH_FILTER:-.}"
done
# The MPI benchmark (docs/distributed.md), when MPI was found at configure
# time: ring prefill on 2 ranks x 1 thread against 1 rank x 2 threads, and a
# sharded decode step. Plain text in results/distributed.txt (report.py does
# not read it); skipped without MPI, which the main job does not install.
mpib=build/release/benchmarks/mpi_bench_distributed
if [ -x "$mpib" ] && command -v mpiexec >/dev/null 2>&1; then
  echo "effattn: running mpi_bench_distributed under mpiexec"
  mpiflags=()
  if mpiexec --version 2>&1 | grep -q "Open MPI\|OpenRTE"; then
    mpiflags=(--oversubscribe --bind-to none)  # the default binds a 1-rank job to one core
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
  n=16384; dn=1048576
  if [ "${EFFATTN_BENCH_QUICK:-0}" = "1" ]; then n=2048; dn=65536; fi
  reps="${EFFATTN_BENCH_REPS:-3}"
  {
    OMP_NUM_THREADS=2 mpiexec -n 1 "${mpiflags[@]}" "$mpib" prefill N=$n threads=2 reps="$reps"
    OMP_NUM_THREADS=1 mpiexec -n 2 "${mpiflags[@]}" "$mpib" prefill N=$n threads=1 reps="$reps"
    OMP_NUM_THREADS=1 mpiexec -n 2 "${mpiflags[@]}" "$mpib" prefill N=$n threads=1 reps="$reps" layout=contiguous
    OMP_NUM_THREADS=2 mpiexec -n 1 "${mpiflags[@]}" "$mpib" decode N=$dn threads=2
    OMP_NUM_THREADS=1 mpiexec -n 2 "${mpiflags[@]}" "$mpib" decode N=$dn threads=1
  } | tee "$out/distributed.txt"
fi
# STAR's search over quality (MQAR, trained with LibTorch, scored by effattn)
# and cache bytes (docs/star.md): its Pareto front goes into the report
# (results/star_search/front.json). About 10 minutes on 2 cores; quick: a
# tiny budget. Without LibTorch the example runs an untrained proxy, which the
# report labels as such.
sts=build/release/examples/star_train_search
if [ -x "$sts" ]; then
  echo "effattn: running star_train_search (STAR search, quality x cache bytes)"
  rm -rf "$out/star_search"
  if [ "${EFFATTN_BENCH_QUICK:-0}" = "1" ]; then
    "$sts" --population 4 --generations 1 --steps 50 --checkpoint "$out/star_search" --quiet
  else
    "$sts" --checkpoint "$out/star_search" --quiet
  fi
fi
if [ -n "${EFFATTN_TORCH_PYTHON:-}" ]; then
  if "$EFFATTN_TORCH_PYTHON" -c 'import sys, torch
v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if v >= (2, 1) else 1)'; then
    echo "effattn: running bench_torch.py (PyTorch SDPA interleaved with effattn)"
    quick=()
    if [ "${EFFATTN_BENCH_QUICK:-0}" = "1" ]; then quick=(--quick); fi
    "$EFFATTN_TORCH_PYTHON" benchmarks/bench_torch.py --effattn build/release/benchmarks/bench_attention \
        --out "$out/bench_torch.json" --threads "${EFFATTN_BENCH_THREADS:-2}" --rounds "${EFFATTN_BENCH_REPS:-3}" \
        "${quick[@]}"
  else
    echo "effattn: EFFATTN_TORCH_PYTHON=$EFFATTN_TORCH_PYTHON has no torch >= 2.1: PyTorch not measured" >&2
  fi
fi
/usr/bin/python3 benchmarks/report.py "$out"
