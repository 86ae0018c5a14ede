#!/usr/bin/env bash
# Ingest with a dead webhook receiver (issue 18): bucketd's HTTP ingest (NDJSON, 1,000 events
# a request, N connections, sync durability) in alternating rounds without a subscription and
# with one whose receiver accepts connections and never answers (every delivery waits out
# --webhook-timeout, then backs off), so a dead receiver's cost to ingest shows as the ratio.
#   bench/webhook_ingest.sh [seconds_per_round] [rounds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUCKETD_BIN:-build/tools/bucketd/bucketd}
LOADGEN=${LOADGEN_BIN:-build/tools/loadgen/bucketd_loadgen}
SECONDS_PER_ROUND=${1:-8}
ROUNDS=${2:-2}
CONNECTIONS=${3:-8}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DATA=$(mktemp -d)
PORT=$(free_port)
DEAD=$(free_port)
# The dead receiver: listens, accepts, reads nothing, answers nothing.
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    c, _ = s.accept(); held.append(c)
' "$DEAD" &
DEAD_PID=$!
"$BIN" --listen 127.0.0.1:$PORT --data "$DATA" --log-level error --webhook-timeout 5s &
SERVER_PID=$!
trap 'kill $SERVER_PID $DEAD_PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.05; done
for file in examples/buckets/*.json; do
  id="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$file")"
  curl -sf -XPUT "http://127.0.0.1:$PORT/v1/buckets/$id" -H 'Content-Type: application/json' \
    --data-binary "@$file" >/dev/null
done
round() {
  "$LOADGEN" --port "$PORT" --connections "$CONNECTIONS" --batch 1000 \
    --seconds "$SECONDS_PER_ROUND" | sed -n 's/.*events_per_s=\([0-9]*\).*/\1/p'
}
sub=""
for r in $(seq "$ROUNDS"); do
  if [ -n "$sub" ]; then
    curl -sf -XDELETE "http://127.0.0.1:$PORT/v1/subscriptions/$sub" >/dev/null
    sub=""
  fi
  without=$(round)
  sub=$(curl -sf -XPOST "http://127.0.0.1:$PORT/v1/subscriptions" -H 'Content-Type: application/json' \
    -d "{\"url\":\"http://127.0.0.1:$DEAD/hook\",\"after\":0}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  with=$(round)
  state=$(curl -sf "http://127.0.0.1:$PORT/v1/subscriptions/$sub" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("lag=%d failed=%d" % (d["lag"], d["failedAttempts"]))')
  echo "round=$r without_events_per_s=$without with_dead_receiver_events_per_s=$with ratio=$(python3 -c "print(round($with/$without, 2))") $state"
done
