#!/usr/bin/env bash
# The HTTP transport under hostile load, this build against an older one (issue 21):
#   1. /healthz p50/p99 while IDLE idle connections and POLLS parked long-polls are open
#      (bench/http_idle_latency.py; a stall means no answer within 5 s);
#   2. ingest throughput through tools/loadgen (NDJSON batches of 1,000 from 8 keep-alive
#      connections, sync durability, the example buckets), ROUNDS runs per build,
#      alternating builds so the host's drift hits both alike.
#
#   OLD_BUILD=/tmp/old/build bench/http_bench.sh [idle] [polls] [seconds] [rounds]
#
# BUILD_DIR (default build/) and OLD_BUILD are configured build trees holding
# tools/bucketd/bucketd and tools/loadgen/bucketd_loadgen; without OLD_BUILD only this
# build runs. To get an old build: git worktree add --detach /tmp/old <commit>, then
# cmake -S /tmp/old -B /tmp/old/build && cmake --build /tmp/old/build -j2 --target
# bucketd_server bucketd_loadgen.
set -euo pipefail

idle="${1:-10000}"
polls="${2:-1000}"
seconds="${3:-10}"
rounds="${4:-3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
new_build="${BUILD_DIR:-$root/build}"
builds=("new:$new_build")
[ -n "${OLD_BUILD:-}" ] && builds+=("old:$OLD_BUILD")

# Both servers and the client get the same descriptor budget (the new server raises its own
# soft limit; the old one does not).
ulimit -n "$(ulimit -Hn)"

pid=""
start_server() {  # build data-dir port
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "$1/tools/bucketd/bucketd" --listen "127.0.0.1:$3" \
    --data "$2" --buckets "$root/examples/buckets" --log-level error &
  pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$3/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "server did not start" >&2
  return 1
}
stop_server() {
  # A server stalled by the idle connections may not finish in-flight work: bounded wait.
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

echo "== /healthz with $idle idle connections and $polls long-polls"
for entry in "${builds[@]}"; do
  name="${entry%%:*}" build="${entry#*:}"
  data="$(mktemp -d)" port=$((20000 + RANDOM % 20000))
  start_server "$build" "$data" "$port"
  printf '%s ' "$name"
  python3 "$root/bench/http_idle_latency.py" --port "$port" --idle "$idle" --polls "$polls" || true
  stop_server
  rm -rf "$data"
done

echo "== ingest, ${seconds}s runs, $rounds rounds"
for round in $(seq "$rounds"); do
  for entry in "${builds[@]}"; do
    name="${entry%%:*}" build="${entry#*:}"
    data="$(mktemp -d)" port=$((20000 + RANDOM % 20000))
    start_server "$build" "$data" "$port"
    printf 'round=%s %s ' "$round" "$name"
    "$new_build/tools/loadgen/bucketd_loadgen" --port "$port" --connections 8 --batch 1000 \
      --seconds "$seconds" || true
    stop_server
    rm -rf "$data"
  done
done
