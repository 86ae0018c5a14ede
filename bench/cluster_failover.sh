#!/usr/bin/env bash
# Failover time at scale (issue 15): a one-server JetStream (R1), or three clustered servers
# with the streams at R3 (REPLICAS=3), on free loopback ports; K bucketd nodes (NODES, 2 by
# default) on P partitions with the example buckets, U distinct users ingested through every
# node for S seconds (4 connections per node), the load stopped and the nodes drained; then
# the last node is SIGKILLed. Prints how long from the kill until the survivors (a) hold every
# partition's lease between them and (b) have every partition folded through its last message
# and node 1 answers a count query for the whole cluster as before the kill: the time clients
# cannot read the dead node's partitions.
# The takeover waits out the lease TTL, then restores each partition from its newest snapshot
# in JetStream and folds the tail (or folds it all without one: SNAPSHOT_EVERY=0).
# MODE=join instead starts one more node once drained: seconds until it holds its share and
# every partition is folded through its last message again, and the longest gap between two
# answered count queries on node 1 while partitions move (a moving partition's queries wait
# for its new owner): the rebalance pause.
#   bench/cluster_failover.sh [seconds] [users] [partitions]
#   LEASE_TTL=10s SNAPSHOT_EVERY=100000 (messages of a partition between its snapshots)
#   MODE=kill|join REPLICAS=1|3 NODES=2
#   USERS_ORDER=turn|random: ids in turn (default; U events reach all U users, so the kill
#   happens "at U users") or drawn at random (about U(1 - e^(-events/U)) reached)
set -euo pipefail

seconds="${1:-30}"
users="${2:-1000000}"
partitions="${3:-16}"
lease_ttl="${LEASE_TTL:-10s}"
snapshot_every="${SNAPSHOT_EVERY:-100000}"
mode="${MODE:-kill}"
nodes="${NODES:-2}"
users_order="${USERS_ORDER:-turn}"
[ "$nodes" -ge 2 ] || { echo "NODES must be at least 2" >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DBUCKETD_BENCH=OFF \
  ${CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j2 --target bucketd_server bucketd_loadgen >/dev/null

now() { date +%s.%N; }
work="$(mktemp -d)"
pids=()
node_pids=()
cleanup() {
  # The nodes first, then the servers.
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
start_node() {
  local port
  port="$(free_port)"
  ports+=("$port")
  "$build/tools/bucketd/bucketd" --listen "127.0.0.1:$port" --data "$work/data$1" \
    --cluster-url "$nats_url" --cluster-name failover \
    --partitions "$partitions" --node-id "node-$1" --cluster-replicas "$replicas" \
    --lease-ttl "$lease_ttl" --snapshot-every-records "$snapshot_every" --log-level warn &
  pids+=($!)
  node_pids+=($!)
}
for node in $(seq "$nodes"); do start_node "$node"; done
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

echo "replicas=$replicas nodes=$nodes partitions=$partitions users=$users seconds=$seconds"
loads=()
order_args=()
for shard in "${!ports[@]}"; do
  port="${ports[shard]}"
  if [ "$users_order" = turn ]; then
    order_args=(--users-in-turn --shard "$shard" --shards "${#ports[@]}")
  fi
  "$build/tools/loadgen/bucketd_loadgen" --port "$port" --connections 4 --batch 1000 \
    --users "$users" --seconds "$seconds" "${order_args[@]}" >"$work/load-$port.txt" || true &
  loads+=($!)
done
for pid in "${loads[@]}"; do wait "$pid" || true; done
cat "$work"/load-*.txt
# Users in turn: the loadgens count the distinct ids their acknowledged requests carried
# (each connection's first pass over its residue). Drawn uniformly from U: about
# U(1 - e^(-events/U)) distinct ones.
python3 - "$users" "$users_order" "$work"/load-*.txt <<'PY'
import math, re, sys
users = int(sys.argv[1])
in_turn = sys.argv[2] == "turn"
texts = [open(f).read() for f in sys.argv[3:]]
events = sum(int(m.group(1)) for t in texts for m in [re.search(r"\bevents=(\d+)", t)] if m)
rate = sum(float(m.group(1)) for t in texts for m in [re.search(r"events_per_s=(\d+)", t)] if m)
if in_turn:
    reached = sum(int(m.group(1)) for t in texts for m in [re.search(r"users_in_turn_reached=(\d+)", t)] if m)
else:
    reached = round(users * (1 - math.exp(-events / users)))
print(f"events={events} total_events_per_s={rate:.0f} users_reached{'=' if in_turn else '~'}{reached}")
PY

# node's status: owned partitions, messages behind (as its owner last looked), rounds, and
# whether it holds all partitions.
# (A node that does not answer reads as owning nothing, one message behind.)
status() {
  { curl -sf -m 10 "http://127.0.0.1:$1/v1/cluster" || true; } | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    print(0, 1, 0, 0)
    sys.exit()
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
victim=$((nodes - 1))  # index of the last node
read -r owned_before _ _ _ < <(status "${ports[victim]}")
stream_bytes="$(du -scb "$work"/nats* | tail -1 | cut -f1)"
echo "drained: node-$nodes owns $owned_before of $partitions partitions;" \
  "JetStream store ${stream_bytes} bytes over $replicas server(s)"
count_before="$(curl -sf "http://127.0.0.1:${ports[0]}/v1/buckets/power-users/count")"

if [ "$mode" = join ]; then
  start_node $((nodes + 1))
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
    if curl -sf "http://127.0.0.1:${ports[nodes]}/readyz" >/dev/null 2>&1 && drained; then
      read -r owned_new _ _ restored_new < <(status "${ports[nodes]}")
      [ "$owned_new" -gt 0 ] && settled=$(now)
    fi
    sleep 0.05
  done
  python3 - "$joined" "$settled" "$longest_gap" "$owned_new" "$restored_new" "$((nodes + 1))" <<'PY'
import sys
joined, settled, gap = map(float, sys.argv[1:4])
print(f"node-{sys.argv[6]} took {sys.argv[4]} partitions, restored {sys.argv[5]} from snapshots")
print(f"rebalanced_s={settled - joined:.2f} longest_query_gap_s={gap:.2f}")
PY
  exit 0
fi

kill -KILL "${node_pids[victim]}"
killed=$(now)
survivors=("${ports[@]:0:victim}")
declare -A rounds_at_kill
restored_before=0  # snapshots the survivors restored before (handovers at their start)
for port in "${survivors[@]}"; do
  read -r _ _ r restored_here < <(status "$port")
  rounds_at_kill[$port]=$r
  restored_before=$((restored_before + restored_here))
done
owned_at=""
until [ -n "$owned_at" ]; do
  total_owned=0
  for port in "${survivors[@]}"; do
    read -r owned _ _ _ < <(status "$port")
    total_owned=$((total_owned + owned))
  done
  [ "$total_owned" = "$partitions" ] && owned_at=$(now)
  sleep 0.05
done
serving_at=""
until [ -n "$serving_at" ]; do
  caught_up=1
  restored=0
  for port in "${survivors[@]}"; do
    read -r _ behind rounds restored_here < <(status "$port")
    restored=$((restored + restored_here))
    if [ "$behind" != 0 ] || [ "$rounds" -le $((rounds_at_kill[$port] + 1)) ]; then caught_up=0; fi
  done
  if [ "$caught_up" = 1 ]; then
    answer="$(curl -sf "http://127.0.0.1:${ports[0]}/v1/buckets/power-users/count" || true)"
    [ "$answer" = "$count_before" ] && serving_at=$(now)
  fi
  sleep 0.05
done
python3 - "$killed" "$owned_at" "$serving_at" "$lease_ttl" "$snapshot_every" \
  "$((restored - restored_before))" <<'PY'
import sys
killed, owned, serving = map(float, sys.argv[1:4])
print(f"lease_ttl={sys.argv[4]} snapshot_every={sys.argv[5]} snapshots_restored={sys.argv[6]} (by the survivors, at the takeover)")
print(f"all_leases_s={owned - killed:.2f} serving_s={serving - killed:.2f}")
PY
