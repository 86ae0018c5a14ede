#!/usr/bin/env bash
# Due items through the sidecar (issue 20): builds bucketd (Release, as the other HTTP
# benches) and runs bench/http_sweep.py against it: 1M users ingested over HTTP into a
# bucket with a 30-day maxDwell, then rounds of POST /v1/clock that each make 1% due; the
# server's micros and the client's round trip per due item, and the engine's phases.
#   bench/http_sweep.sh [users] [rounds] [runs]
# OLD_BUILD=<build dir> alternates that build's bucketd with this one (A = old, B = new),
# `runs` times each; older builds compute the state digest for /metrics, so the phases are
# left out then (--no-metrics).
set -euo pipefail

users="${1:-1000000}"
rounds="${2:-20}"
runs="${3:-1}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DBUCKETD_BENCH=OFF \
  ${CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j2 --target bucketd_server >/dev/null

args=(--users "$users" --rounds "$rounds" --runs "$runs")
if [ -n "${OLD_BUILD:-}" ]; then
  args+=(--bucketd "$OLD_BUILD/tools/bucketd/bucketd" --no-metrics)
fi
exec python3 "$root/bench/http_sweep.py" "${args[@]}" --bucketd "$build/tools/bucketd/bucketd"
