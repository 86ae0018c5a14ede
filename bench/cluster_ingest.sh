#!/usr/bin/env bash
# Cluster mode end to end (docs/cluster.md): a one-server JetStream (R1) on free loopback
# ports, two bucketd nodes on P partitions, the example buckets defined through node 1, then
# NDJSON batches of 1,000 events from N keep-alive connections to node 1 (each event
# acknowledged after JetStream's ack). Prints the ingest rate, then how long the two nodes
# take to fold every partition and publish its transitions to the output stream after the
# load stops (the "drain"), with the transitions published.
#   bench/cluster_ingest.sh [seconds] [connections] [partitions]
set -euo pipefail

seconds="${1:-10}"
connections="${2:-8}"
partitions="${3:-16}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DBUCKETD_BENCH=OFF \
  ${CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j2 --target bucketd_server bucketd_loadgen >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"
pids=()
cleanup() {
  # The nodes first (they leave the cluster through NATS), then the server.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

nats_port="$(free_port)"
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$nats_port" >/dev/null 2>&1 && break
  (echo >"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
  sleep 0.1
done
sleep 0.5

ports=()
for node in 1 2; do
  port="$(free_port)"
  ports+=("$port")
  "$build/tools/bucketd/bucketd" --listen "127.0.0.1:$port" --data "$work/data$node" \
    --cluster-url "nats://127.0.0.1:$nats_port" --cluster-name bench --partitions "$partitions" \
    --node-id "node-$node" --cluster-replicas 1 --log-level warn &
  pids+=($!)
done
for port in "${ports[@]}"; do
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
  done
done
for file in "$root"/examples/buckets/*.json; do
  id="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$file")"
  curl -sf -XPUT "http://127.0.0.1:${ports[0]}/v1/buckets/$id" -H 'Content-Type: application/json' \
    --data-binary "@$file" >/dev/null
done

echo "partitions=$partitions nodes=2 nats=R1"
"$build/tools/loadgen/bucketd_loadgen" --port "${ports[0]}" --connections "$connections" \
  --batch 1000 --seconds "$seconds" || true

# The drain: until both nodes have nothing pending and their published count stops moving.
published() {
  local total=0 pending=0
  for port in "${ports[@]}"; do
    read -r p q < <(curl -sf "http://127.0.0.1:$port/v1/cluster" | python3 -c \
      'import json,sys; d=json.load(sys.stdin); print(d["stats"]["transitionsPublished"], d["pending"])')
    total=$((total + p))
    pending=$((pending + q))
  done
  echo "$total $pending"
}
start=$(date +%s.%N)
last=-1
while :; do
  read -r total pending < <(published)
  if [ "$pending" = 0 ] && [ "$total" = "$last" ]; then break; fi
  last="$total"
  sleep 0.5
done
end=$(date +%s.%N)
echo "drain_seconds=$(python3 -c "print(round($end - $start - 0.5, 2))") transitions_published=$total"
