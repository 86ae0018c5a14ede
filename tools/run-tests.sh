#!/usr/bin/env bash
# Sets up the machine, builds everything and runs the test suite (the README's test command).
#   BUCKETD_SANITIZE=1      build and test under AddressSanitizer + UndefinedBehaviorSanitizer
#   BUCKETD_SOAK=1          the torture test runs 1,000 kill-9 rounds instead of 20 (~15 min)
#   BUCKETD_FUZZ_SECONDS=N  after CTest, run each libFuzzer target for N seconds (default 10;
#                           0 skips them), built with clang in build-fuzz/ (tools/run-fuzz.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh

build=build
flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [ "${BUCKETD_SANITIZE:-0}" = 1 ]; then
  build=build-asan
  flags+=(-DBUCKETD_SANITIZE=ON -DBUCKETD_BENCH=OFF)
fi
cmake -S . -B "$build" "${flags[@]}" >/dev/null
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure --timeout 900

fuzz_seconds=${BUCKETD_FUZZ_SECONDS:-10}
if [ "$fuzz_seconds" != 0 ]; then
  tools/run-fuzz.sh "$fuzz_seconds"
fi
