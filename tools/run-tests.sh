#!/usr/bin/env bash
# Sets up the machine, builds everything and runs the test suite (the README's test command):
# the CTest suites, then (plain build only) tools/check-embedding.sh, which installs the build
# and builds examples/embed with find_package, pkg-config and add_subdirectory.
#   BUCKETD_SANITIZE=1  build and test under AddressSanitizer + UndefinedBehaviorSanitizer
#                       in build-asan/
#   BUCKETD_TSAN=1      build and test under ThreadSanitizer in build-tsan/
#   BUCKETD_SOAK=1      the torture test runs 1,000 kill-9 rounds instead of 20 (~15 min)
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
# The packaging is the same under a sanitizer; check it once, on the plain build.
if [ "$build" = build ]; then
  tools/check-embedding.sh "$build"
fi
