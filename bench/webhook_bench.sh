#!/usr/bin/env bash
# Webhook delivery (issue 18): throughput (transitions/s delivered to a local receiver) and
# end-to-end latency from an event's POST to its transition arriving at the receiver, p50/p99.
#   bench/webhook_bench.sh [backlog_users] [latency_events] [rate_per_s]
# Phase 1: `backlog_users` users ingested (NDJSON, 1,000 per request) with no subscription,
# then a subscription from seq 0: the time until every transition is delivered.
# Phase 2: `latency_events` single events at `rate_per_s`, each a new user (one `entered`);
# the receiver notes when each transition arrives. Wall clock, sync durability.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUCKETD_BIN:-build/tools/bucketd/bucketd}
USERS=${1:-100000}
EVENTS=${2:-2000}
RATE=${3:-200}
DATA=$(mktemp -d)
trap 'kill $SERVER_PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" --listen 127.0.0.1:$PORT --data "$DATA" --log-level error ${BUCKETD_FLAGS:-} &
SERVER_PID=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.05; done
python3 - "$PORT" "$USERS" "$EVENTS" "$RATE" <<'PY'
import http.client, http.server, json, sys, threading, time

port, users, events, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
arrived = {}          # userId -> arrival time (monotonic)
count = [0]
lock = threading.Lock()

class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        now = time.monotonic()
        ts = json.loads(body)["transitions"]
        with lock:
            count[0] += len(ts)
            for t in ts:
                arrived.setdefault(t["userId"], now)
        self.send_response(204); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass

rx = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=rx.serve_forever, daemon=True).start()
hook = f"http://127.0.0.1:{rx.server_address[1]}/hook"
c = http.client.HTTPConnection("127.0.0.1", port)
def call(method, path, body, ctype="application/json"):
    c.request(method, path, body, {"Content-Type": ctype})
    r = c.getresponse(); data = r.read()
    assert r.status in (200, 201), (r.status, data)
    return json.loads(data)
call("POST", "/v1/buckets", json.dumps({"id": "seen", "name": "Seen", "criteria": {
    "type": "event", "eventName": "seen", "check": "count", "operator": "gte", "value": 1,
    "within": "30d"}}))

# Phase 1: a backlog, then a subscription from the start.
for start in range(0, users, 1000):
    lines = "\n".join(json.dumps({"userId": f"b{i}", "event": "seen"})
                      for i in range(start, min(start + 1000, users)))
    call("POST", "/v1/events", lines, "application/x-ndjson")
t0 = time.monotonic()
sub = call("POST", "/v1/subscriptions", json.dumps({"url": hook, "after": 0}))
while True:
    with lock:
        if count[0] >= users: break
    time.sleep(0.01)
elapsed = time.monotonic() - t0
print(f"throughput: {users} transitions delivered in {elapsed:.2f} s = {users / elapsed:,.0f} transitions/s")

# Phase 2: latency of single events at a steady rate.
sent = {}
interval = 1.0 / rate
next_at = time.monotonic()
for i in range(events):
    user = f"l{i}"
    now = time.monotonic()
    if next_at > now: time.sleep(next_at - now)
    next_at += interval
    sent[user] = time.monotonic()
    call("POST", "/v1/events", json.dumps({"userId": user, "event": "seen"}))
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    with lock:
        if all(u in arrived for u in sent): break
    time.sleep(0.01)
lat = sorted((arrived[u] - sent[u]) * 1000 for u in sent if u in arrived)
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"latency: {len(lat)} events at {rate:.0f}/s, event POST to transition delivered: "
      f"p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {lat[-1]:.2f} ms")
state = call("GET", f"/v1/subscriptions/{sub['id']}", None)
print(f"subscription: cursor {state['cursor']}, loggedCursor {state['loggedCursor']}, lag {state['lag']}")
PY
