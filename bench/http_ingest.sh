#!/usr/bin/env bash
# HTTP ingest throughput: builds bucketd and the load generator, then for each durability
# mode starts bucketd on a fresh temp data dir with the example buckets and sends NDJSON
# batches of 1,000 events from N keep-alive connections. Prints events/s and p50/p99.
#   bench/http_ingest.sh [seconds] [connections]
set -euo pipefail

seconds="${1:-10}"
connections="${2:-8}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DBUCKETD_BENCH=OFF \
  ${CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j2 --target bucketd_server bucketd_loadgen >/dev/null

port=$((20000 + RANDOM % 20000))
for durability in async sync; do
  data="$(mktemp -d)"
  # Huge pages for malloc, as tools/run-sidecar.sh runs it (fewer TLB misses on the state).
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "$build/tools/bucketd/bucketd" --listen "127.0.0.1:$port" --data "$data" \
    --durability "$durability" --buckets "$root/examples/buckets" --log-level warn &
  pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
  done
  printf 'durability=%s ' "$durability"
  "$build/tools/loadgen/bucketd_loadgen" --port "$port" --connections "$connections" \
    --batch 1000 --seconds "$seconds" || true
  kill -TERM "$pid"
  wait "$pid" || true
  rm -rf "$data"
done
