#!/usr/bin/env bash
# Sets up the machine, builds everything and runs the test suite (the README's test command):
# the CTest suites, then (plain build only) tools/check-embedding.sh, which installs the build
# and builds examples/embed with find_package, pkg-config and add_subdirectory,
# tools/check-typescript-client.sh (the TypeScript client's tests against the built bucketd;
# needs node >= 20 and the npm registry), and each libFuzzer target for a short time
# (tools/run-fuzz.sh, a clang build in build-fuzz/).
#   BUCKETD_SANITIZE=1      build and test under AddressSanitizer + UndefinedBehaviorSanitizer
#                           in build-asan/
#   BUCKETD_TSAN=1          build and test under ThreadSanitizer in build-tsan/
#   BUCKETD_SOAK=1          the torture test runs 1,000 kill-9 rounds instead of 20 (~15 min)
#   BUCKETD_FUZZ_SECONDS=N  run each libFuzzer target for N seconds (default 10; 0 skips them)
# Any failure ends the script with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh

build=build
flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [ "${BUCKETD_SANITIZE:-0}" = 1 ] && [ "${BUCKETD_TSAN:-0}" = 1 ]; then
  echo "run-tests: BUCKETD_SANITIZE and BUCKETD_TSAN cannot be combined" >&2
  exit 2
fi
if [ "${BUCKETD_SANITIZE:-0}" = 1 ]; then
  build="build-asan"
  flags+=(-DBUCKETD_SANITIZE=ON -DBUCKETD_BENCH=OFF)
elif [ "${BUCKETD_TSAN:-0}" = 1 ]; then
  build="build-tsan"
  flags+=(-DBUCKETD_TSAN=ON -DBUCKETD_BENCH=OFF)
fi
cmake -S . -B "$build" "${flags[@]}" >/dev/null
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure --timeout 900
# The packaging and the parsers' fuzzing are the same under a sanitizer (the fuzz build has
# ASan + UBSan of its own): run them once, with the plain build.
if [ "$build" = build ]; then
  tools/check-embedding.sh "$build"
  tools/check-typescript-client.sh "$build"
  tools/check-package.sh "$build"
  fuzz_seconds=${BUCKETD_FUZZ_SECONDS:-10}
  if [ "$fuzz_seconds" != 0 ]; then
    tools/run-fuzz.sh "$fuzz_seconds"
  fi
fi
