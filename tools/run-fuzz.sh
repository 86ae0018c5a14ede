#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/*_fuzz.cc) with clang in build-fuzz/ and runs each
# for a bounded time on a copy of its seed corpus (tests/fuzz/corpus/<target>/; the seeds in
# the repo are never written to). Fails on any crash, leak, timeout or out-of-memory; the
# input that caused it is kept in build-fuzz/fuzz-artifacts/<target>/.
#   tools/run-fuzz.sh [seconds-per-target] [target...]   (default 20 s, every target)
#   BUCKETD_FUZZ_RUNS=N   also stop each target after N executions (the long run:
#                         BUCKETD_FUZZ_RUNS=10000000 tools/run-fuzz.sh 86400)
#   BUCKETD_FUZZ_ARGS     more libFuzzer flags, e.g. "-max_len=65536"
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
[ $# -gt 0 ] && shift
build=build-fuzz
all_targets=()
for src in tests/fuzz/*_fuzz.cc; do
  name=$(basename "$src" .cc)
  all_targets+=("${name%_fuzz}")
done
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

bash tools/setup.sh
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUCKETD_FUZZ=ON \
  -DBUCKETD_BENCH=OFF >/dev/null
cmake --build "$build" --target fuzzers -j "$(nproc)"

flags=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
[ -n "${BUCKETD_FUZZ_RUNS:-}" ] && flags+=(-runs="$BUCKETD_FUZZ_RUNS")
# shellcheck disable=SC2206  # word splitting intended: a list of flags
[ -n "${BUCKETD_FUZZ_ARGS:-}" ] && flags+=($BUCKETD_FUZZ_ARGS)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
printf '%-14s %12s %10s %8s %8s %s\n' target executions exec/s cov ft result
for target in "${targets[@]}"; do
  seeds=tests/fuzz/corpus/$target
  [ -d "$seeds" ] || { echo "no seed corpus $seeds" >&2; exit 2; }
  artifacts=$build/fuzz-artifacts/$target
  mkdir -p "$work/$target" "$artifacts"
  cp -r "$seeds/." "$work/$target/"
  log=$build/fuzz-$target.log
  result=ok
  # TMPDIR: a target's own temp files (http_request's engine) go where this script cleans up.
  TMPDIR="$work" "$build/tests/fuzz/${target}_fuzz" "${flags[@]}" -artifact_prefix="$artifacts/" \
    "$work/$target" >"$log" 2>&1 || result="FAILED (see $log)"
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  printf '%-14s %12s %10s %8s %8s %s\n' "$target" "${executions:-?}" "${rate:-?}" "${cov:-?}" \
    "${ft:-?}" "$result"
  [ "$result" = ok ] || failed+=("$target")
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]}" >&2
  exit 1
fi
