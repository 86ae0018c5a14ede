#!/usr/bin/env bash
# Failover time at scale (issue 15): a one-server JetStream (R1) on free loopback ports, two
# bucketd nodes on P partitions with the example buckets, U distinct users ingested through
# both nodes for S seconds, the load stopped and both nodes drained; then one node is
# SIGKILLed. Prints how long from the kill until the survivor (a) holds every partition's
# lease and (b) has every partition folded through its last message and answers a count
# query for the whole cluster: the time its clients cannot read the dead node's partitions.
# The takeover waits out the lease TTL, then restores each partition from its newest snapshot
# in JetStream and folds the tail (or folds it all without one: SNAPSHOT_EVERY=0).
# MODE=join instead starts a third node once drained: seconds until it holds its share and
# every partition is folded through its last message again, and the longest gap between two
# answered count queries on node 1 while partitions move (a moving partition's queries wait
# for its new owner): the rebalance pause.
#   bench/cluster_failover.sh [seconds] [users] [partitions]
#   LEASE_TTL=10s SNAPSHOT_EVERY=100000 (messages of a partition between its snapshots)
#   MODE=kill|join
set -euo pipefail

seconds="${1:-30}"
users="${2:-1000000}"
partitions="${3:-16}"
lease_ttl="${LEASE_TTL:-10s}"
snapshot_every="${SNAPSHOT_EVERY:-100000}"
mode="${MODE:-kill}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DBUCKETD_BENCH=OFF \
  ${CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j2 --target bucketd_server bucketd_loadgen >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
work="$(mktemp -d)"
pids=()
cleanup() {
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
sleep 1

ports=()
start_node() {
  local port
  port="$(free_port)"
  ports+=("$port")
  "$build/tools/bucketd/bucketd" --listen "127.0.0.1:$port" --data "$work/data$1" \
    --cluster-url "nats://127.0.0.1:$nats_port" --cluster-name failover \
    --partitions "$partitions" --node-id "node-$1" --cluster-replicas 1 \
    --lease-ttl "$lease_ttl" --snapshot-every-records "$snapshot_every" --log-level warn &
  pids+=($!)
}
for node in 1 2; do start_node "$node"; done
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

for port in "${ports[@]}"; do
  "$build/tools/loadgen/bucketd_loadgen" --port "$port" --connections 4 --batch 1000 \
    --users "$users" --seconds "$seconds" >"$work/load-$port.txt" || true &
done
sleep "$seconds"
sleep 2
cat "$work"/load-*.txt

# node's status: owned partitions, messages behind (as its owner last looked), rounds, and
# whether it holds all partitions.
status() {
  curl -sf "http://127.0.0.1:$1/v1/cluster" | python3 -c '
import json, sys
d = json.load(sys.stdin)
behind = sum(max(0, o["streamLastSeq"] - o["nextSeq"] + 1) for o in d["owned"])
print(len(d["owned"]), behind, d["rounds"], d["stats"]["snapshotsRestored"])'
}
drained() {
  local total_behind=0 total_owned=0
  for port in "${ports[@]}"; do
    read -r owned behind _ _ < <(status "$port")
    total_owned=$((total_owned + owned))
    total_behind=$((total_behind + behind))
  done
  [ "$total_owned" = "$partitions" ] && [ "$total_behind" = 0 ]
}
until drained; do sleep 0.5; done
sleep 1
until drained; do sleep 0.5; done
read -r owned_before _ _ _ < <(status "${ports[1]}")
stream_bytes="$(du -sb "$work/nats" | cut -f1)"
echo "drained: node-2 owns $owned_before of $partitions partitions; JetStream store ${stream_bytes} bytes"
count_before="$(curl -sf "http://127.0.0.1:${ports[0]}/v1/buckets/power-users/count")"

if [ "$mode" = join ]; then
  start_node 3
  joined=$(now)
  last_answer=$joined
  longest_gap=0
  settled=""
  while [ -z "$settled" ]; do
    if answer="$(curl -sf -m 30 "http://127.0.0.1:${ports[0]}/v1/buckets/power-users/count")" &&
      [ "$answer" = "$count_before" ]; then
      t=$(now)
      longest_gap=$(python3 -c "print(max($longest_gap, $t - $last_answer))")
      last_answer=$t
    fi
    if curl -sf "http://127.0.0.1:${ports[2]}/readyz" >/dev/null 2>&1 && drained; then
      read -r owned3 _ _ restored3 < <(status "${ports[2]}")
      [ "$owned3" -gt 0 ] && settled=$(now)
    fi
    sleep 0.05
  done
  python3 - "$joined" "$settled" "$longest_gap" "$owned3" "$restored3" <<'PY'
import sys
joined, settled, gap = map(float, sys.argv[1:4])
print(f"node-3 took {sys.argv[4]} partitions, restored {sys.argv[5]} from snapshots")
print(f"rebalanced_s={settled - joined:.2f} longest_query_gap_s={gap:.2f}")
PY
  exit 0
fi

kill -KILL "${pids[2]}"
killed=$(now)
read -r _ _ rounds_at_kill _ < <(status "${ports[0]}")
owned_at=""
until [ -n "$owned_at" ]; do
  read -r owned _ _ _ < <(status "${ports[0]}")
  [ "$owned" = "$partitions" ] && owned_at=$(now)
  sleep 0.05
done
serving_at=""
until [ -n "$serving_at" ]; do
  read -r owned behind rounds restored < <(status "${ports[0]}")
  if [ "$behind" = 0 ] && [ "$rounds" -gt $((rounds_at_kill + 1)) ]; then
    answer="$(curl -sf "http://127.0.0.1:${ports[0]}/v1/buckets/power-users/count" || true)"
    [ "$answer" = "$count_before" ] && serving_at=$(now)
  fi
  sleep 0.05
done
python3 - "$killed" "$owned_at" "$serving_at" "$lease_ttl" "$snapshot_every" "$restored" <<'PY'
import sys
killed, owned, serving = map(float, sys.argv[1:4])
print(f"lease_ttl={sys.argv[4]} snapshot_every={sys.argv[5]} snapshots_restored={sys.argv[6]}")
print(f"all_leases_s={owned - killed:.2f} serving_s={serving - killed:.2f}")
PY
