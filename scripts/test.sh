#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds effattn (Release, host ISA, GCC) with its tests, benchmarks and
# examples and runs the whole test suite with CTest. With CI=true (or
# EFFATTN_SANITIZE=1) it then builds and runs the test suite twice more: with
# GCC without -march, as effattn::effattn builds (EFFATTN_NATIVE=OFF, tests
# only: every instruction-set level is compiled and the per-level tests run
# each one the host supports), and with clang + libomp under
# AddressSanitizer + UndefinedBehaviorSanitizer, together with the libFuzzer
# targets of tests/fuzz: the unit tests, then each fuzz target for a fixed,
# seeded number of executions (EFFATTN_FUZZ_RUNS per target, 40000 by
# default). With CI=true every leg treats warnings in effattn's own targets as
# errors (EFFATTN_WERROR). The MPI tests (distributed.np1 .. np4, Open MPI from
# Debian) run in the GCC legs, not under the sanitizers. Installs missing
# Debian packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitize=0
if [ "${CI:-}" = "true" ] || [ "${EFFATTN_SANITIZE:-0}" = "1" ]; then sanitize=1; fi
werror=OFF
if [ "${CI:-}" = "true" ]; then werror=ON; fi
pkgs=(build-essential cmake pkg-config libeigen3-dev libgtest-dev nlohmann-json3-dev libbenchmark-dev libstb-dev openmpi-bin libopenmpi-dev libtorch-dev libopenblas0-openmp)
if [ "$sanitize" = 1 ]; then pkgs+=(clang libomp-dev libclang-rt-dev); fi
bash scripts/deps.sh "${pkgs[@]}"
jobs=$(nproc 2>/dev/null || echo 2)
start=$(date +%s)
stamp() { echo "effattn: $1 ($(( $(date +%s) - start )) s)"; }

cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Release -DEFFATTN_BUILD_TESTS=ON -DEFFATTN_BUILD_BENCHMARKS=ON \
      -DEFFATTN_BUILD_EXAMPLES=ON -DEFFATTN_WERROR="$werror"
cmake --build build/test -j "$jobs"
stamp "GCC Release build done"
(cd build/test && ctest --output-on-failure -j "$jobs")
stamp "GCC Release tests passed"

if [ "$sanitize" = 1 ]; then
  echo "effattn: test suite with GCC without -march (EFFATTN_NATIVE=OFF, as effattn::effattn builds: every level)"
  cmake -S . -B build/portable -DCMAKE_BUILD_TYPE=Release -DEFFATTN_NATIVE=OFF -DEFFATTN_WERROR="$werror" \
        -DEFFATTN_USE_TORCH=OFF \
        -DEFFATTN_BUILD_TESTS=ON -DEFFATTN_BUILD_BENCHMARKS=OFF -DEFFATTN_BUILD_EXAMPLES=OFF
  cmake --build build/portable -j "$jobs"
  stamp "GCC portable build done"
  # package.* builds consumers on effattn::effattn, already run above.
  (cd build/portable && ctest --output-on-failure -j "$jobs" -E '^package\.')
  stamp "GCC portable tests passed"

  echo "effattn: test suite and fuzz targets with clang + libomp under AddressSanitizer + UndefinedBehaviorSanitizer"
  CC=clang CXX=clang++ cmake -S . -B build/clang-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEFFATTN_SANITIZE=ON \
        -DEFFATTN_WERROR="$werror" \
        -DEFFATTN_BUILD_TESTS=ON -DEFFATTN_BUILD_FUZZERS=ON -DEFFATTN_USE_MPI=OFF -DEFFATTN_USE_TORCH=OFF -DEFFATTN_FUZZ_RUNS="${EFFATTN_FUZZ_RUNS:-40000}" \
        -DEFFATTN_BUILD_BENCHMARKS=OFF -DEFFATTN_BUILD_EXAMPLES=OFF
  cmake --build build/clang-asan -j "$jobs"
  stamp "clang sanitizer build done"
  (cd build/clang-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j "$jobs" -E '^(package|fuzz)\.')
  stamp "clang sanitizer tests passed"
  (cd build/clang-asan && ctest --output-on-failure -j "$jobs" -R '^fuzz\.')
  for log in build/clang-asan/tests/fuzz/work/*/fuzz.log; do
    echo "effattn: fuzz $(basename "$(dirname "$log")"): $(grep -E '^Done [0-9]+ runs' "$log" || echo '?')"
  done
  stamp "fuzz runs passed"
fi
