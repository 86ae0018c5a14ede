#!/usr/bin/env bash
# Cluster mode end to end (docs/cluster.md): a one-server JetStream (R1), or three clustered
# servers with the streams at R3 (REPLICAS=3), on free loopback ports; K bucketd nodes on P
# partitions, the example buckets defined through node 1, then NDJSON batches of 1,000 events
# from N keep-alive connections spread over the nodes (each request acknowledged after
# JetStream acknowledged its events). Prints each node's load generator and the total ingest
# rate, then how long the nodes take to fold every partition and publish its transitions to
# the output stream after the load stops (the "drain"), with the transitions published.
#   bench/cluster_ingest.sh [seconds] [connections] [partitions] [nodes]
# BUCKETD_BIN=path runs another bucketd binary (to alternate two builds). REPLICAS=1|3.
set -euo pipefail

seconds="${1:-10}"
connections="${2:-8}"
partitions="${3:-16}"
nodes="${4:-2}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DBUCKETD_BENCH=OFF \
  ${CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j2 --target bucketd_server bucketd_loadgen >/dev/null

work="$(mktemp -d)"
pids=()
cleanup() {
  # The nodes first (they leave the cluster through NATS), then the servers.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=bench/cluster_nats.sh
source "$root/bench/cluster_nats.sh"
start_nats

ports=()
bin="${BUCKETD_BIN:-$build/tools/bucketd/bucketd}"
for node in $(seq "$nodes"); do
  port="$(free_port)"
  ports+=("$port")
  "$bin" --listen "127.0.0.1:$port" --data "$work/data$node" \
    --cluster-url "$nats_url" --cluster-name bench --partitions "$partitions" \
    --node-id "node-$node" --cluster-replicas "$replicas" --log-level warn &
  pids+=($!)
done
for port in "${ports[@]}"; do
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
  done
done
for file in "$root"/examples/buckets/*.json; do
  id="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$file")"
  curl -sf -XPUT "http://127.0.0.1:${ports[0]}/v1/buckets/$id" -H 'Content-Type: application/json' \
    --data-binary "@$file" >/dev/null
done

echo "partitions=$partitions nodes=$nodes nats=R$replicas"
# Each node's share of the connections, from one load generator per node, all at once.
loads=()
for i in "${!ports[@]}"; do
  share=$(( (connections + nodes - 1 - i) / nodes ))
  [ "$share" -gt 0 ] || continue
  "$build/tools/loadgen/bucketd_loadgen" --port "${ports[i]}" --connections "$share" \
    --batch 1000 --seconds "$seconds" >"$work/load$i.txt" || true &
  loads+=($!)
done
for pid in "${loads[@]}"; do wait "$pid" || true; done
cat "$work"/load*.txt
python3 - "$work"/load*.txt <<'PY'
import re, sys
rates = [float(m.group(1)) for f in sys.argv[1:] for m in [re.search(r"events_per_s=(\d+)", open(f).read())] if m]
print(f"total_events_per_s={sum(rates):.0f}")
PY

# The drain: until every node has finished a round begun after the load stopped (a node's
# status is its last round's), every partition is owned and folded through its last message
# as its owner last looked, nothing is pending publication, and the published count stopped
# moving.
status() {
  curl -sf "http://127.0.0.1:$1/v1/cluster" | python3 -c '
import json, sys
d = json.load(sys.stdin)
behind = sum(max(0, o["streamLastSeq"] - o["nextSeq"] + 1) for o in d["owned"])
print(d["rounds"], d["stats"]["transitionsPublished"], d["pending"], behind, len(d["owned"]))'
}
declare -A rounds_at_end
for port in "${ports[@]}"; do
  read -r r _ < <(status "$port")
  rounds_at_end[$port]=$r
done
progress() {
  local total=0 pending=0 behind=0 owned=0 fresh=1
  for port in "${ports[@]}"; do
    read -r r p q b o < <(status "$port")
    [ "$r" -ge $((rounds_at_end[$port] + 2)) ] || fresh=0
    total=$((total + p))
    pending=$((pending + q))
    behind=$((behind + b))
    owned=$((owned + o))
  done
  echo "$fresh $total $pending $behind $owned"
}
start=$(date +%s.%N)
last=-1
while :; do
  read -r fresh total pending behind owned < <(progress)
  if [ "$fresh" = 1 ] && [ "$owned" = "$partitions" ] && [ "$behind" = 0 ] &&
    [ "$pending" = 0 ] && [ "$total" = "$last" ]; then
    break
  fi
  last="$total"
  sleep 0.5
done
end=$(date +%s.%N)
echo "drain_seconds=$(python3 -c "print(round($end - $start - 0.5, 2))") transitions_published=$total"
