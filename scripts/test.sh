#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds effattn (Release, host ISA) with its tests, benchmarks and examples and
# runs the whole test suite with CTest. With CI=true (or EFFATTN_SANITIZE=1) it
# then builds and runs the test suite again under AddressSanitizer +
# UndefinedBehaviorSanitizer. Installs missing Debian packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build-essential cmake libeigen3-dev libgtest-dev nlohmann-json3-dev libbenchmark-dev
jobs=$(nproc 2>/dev/null || echo 2)

cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Release -DEFFATTN_BUILD_TESTS=ON -DEFFATTN_BUILD_BENCHMARKS=ON \
      -DEFFATTN_BUILD_EXAMPLES=ON
cmake --build build/test -j "$jobs"
(cd build/test && ctest --output-on-failure -j "$jobs")

if [ "${CI:-}" = "true" ] || [ "${EFFATTN_SANITIZE:-0}" = "1" ]; then
  echo "effattn: test suite under AddressSanitizer + UndefinedBehaviorSanitizer"
  cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEFFATTN_SANITIZE=ON -DEFFATTN_BUILD_TESTS=ON \
        -DEFFATTN_BUILD_BENCHMARKS=OFF -DEFFATTN_BUILD_EXAMPLES=OFF
  cmake --build build/asan -j "$jobs"
  (cd build/asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure -j "$jobs" -E '^package\.')
fi
