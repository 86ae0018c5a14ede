#!/usr/bin/env python3
"""Due items through the sidecar (issue 20): what one POST /v1/clock costs per due item.

Starts the real `bucketd` (manual clock, sync durability by default, a temp data dir, a
free loopback port, no automatic snapshots), defines one bucket {"type":"event",
"eventName":"signup","check":"exists"} with a 30-day maxDwell, and ingests U users (each one
event, with an email unless --no-email) over HTTP, NDJSON batches on /v1/events, in groups
of U * P / 1000 users drawn in a shuffled order, the manual clock one minute further for
each group, so each group's memberships enter one minute after the previous one's. Five
clock moves with nothing due give the fixed cost (a record, its fsync, the answer). Then
each round moves the clock to start + 30 d + r minutes: exactly one group (P per mille of
the members) falls due and leaves (reason maxDwell), one `left` transition each.

Per round: the server's `micros` (the sweep on the engine thread: fold and staging), the
client's round trip (request sent to answer read: the log write and fsync are inside), and
the engine's phases from /metrics read around the round (fold, stage, the log's write
without its fsync, the fsync; bucketd_sweep_phase_seconds_total and
bucketd_log_*_seconds_total), each per due item. The summary gives medians over the rounds.

    bench/http_sweep.py --bucketd build-rel/tools/bucketd/bucketd [--users 1000000]
        [--due-permille 10] [--rounds 10] [--durability sync] [--batch 10000]
    bench/http_sweep.py --bucketd OLD --bucketd NEW --runs 3 [--no-metrics]   # A B A B A B

Each run prints a line `RESULT {json}`; with two binaries, the medians and the A/B ratio
of each pair. --perf FILE records the server with perf during the rounds only.
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE_MS = 60_000
DAY_MS = 86_400_000
MAX_DWELL_DAYS = 30


class Server:
    def __init__(self, binary, durability, extra, no_metrics):
        self.no_metrics = no_metrics
        self.data = tempfile.mkdtemp(prefix="bucketd-sweep-")
        env = dict(os.environ)
        # Huge pages for malloc, as tools/run-sidecar.sh runs it.
        env.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
        args = [
            binary, "--listen", "127.0.0.1:0", "--data", self.data, "--clock", "manual",
            "--start-time", str(START_MS), "--durability", durability,
            # No automatic snapshot: a fork in the middle of a measured sweep would be noise.
            "--snapshot-every-records", "0", "--snapshot-every", "0", "--log-level", "info",
        ] + extra
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, text=True)
        self.port = None
        found = threading.Event()

        def pump():  # reads the log so the pipe never fills; finds the port
            for line in self.proc.stdout:
                if self.port is None:
                    m = re.search(r"event=listening address=[^ ]*:(\d+)", line)
                    if m:
                        self.port = int(m.group(1))
                        found.set()
            found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(30) or self.port is None:
            self.stop()
            sys.exit("bucketd did not report its port")
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        deadline = time.time() + 60
        while True:
            try:
                status, _ = self.request("GET", "/readyz")
                if status == 200:
                    break
            except OSError:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            if time.time() > deadline:
                self.stop()
                sys.exit("bucketd not ready")
            time.sleep(0.05)

    def request(self, method, path, body=None, content_type="application/json"):
        headers = {"Content-Type": content_type} if body is not None else {}
        if body is None and method in ("POST", "PUT"):
            body = b""
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def call(self, method, path, body=None, content_type="application/json", want=(200, 201)):
        status, data = self.request(method, path, body, content_type)
        if status not in want:
            self.stop()
            sys.exit(f"{method} {path}: {status} {data[:300]!r}")
        return data

    def phase_seconds(self):
        """The engine's phase totals from /metrics, in seconds; empty if absent: fold (with
        the transitions' encoding since they are staged as made) and stage
        (bucketd_sweep_phase_seconds_total), write (the log's writes without their fsync)
        and fsync (bucketd_log_*_seconds_total); log_bytes, in MB."""
        if self.no_metrics:
            return {}
        text = self.call("GET", "/metrics").decode()
        out = {}
        for m in re.finditer(r'^bucketd_sweep_phase_seconds_total\{phase="(\w+)"\} (\S+)$', text,
                             re.M):
            out[m.group(1)] = float(m.group(2))
        log = {m.group(1): float(m.group(2)) for m in re.finditer(
            r"^bucketd_log_(write|fsync)_seconds_total (\S+)$", text, re.M)}
        m = re.search(r"^bucketd_log_write_bytes_total (\S+)$", text, re.M)
        if m:
            out["log_bytes"] = float(m.group(1)) / 1e6  # reported per item like the seconds
        if len(log) == 2:
            out["write"] = log["write"] - log["fsync"]
            out["fsync"] = log["fsync"]
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


def set_clock(server, now_ms):
    body = json.dumps({"now": now_ms}).encode()
    t0 = time.perf_counter()
    data = server.call("POST", "/v1/clock", body)
    return time.perf_counter() - t0, json.loads(data)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bucketd", required=True, action="append",
                   help="the bucketd binary; twice to alternate two builds (A B A B ...)")
    p.add_argument("--runs", type=int, default=1,
                   help="server runs per binary (each a fresh data dir and ingest)")
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--due-permille", type=int, default=10, help="members due per round, ‰")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch", type=int, default=10_000, help="events per NDJSON request")
    p.add_argument("--durability", default="sync", choices=["sync", "async"])
    p.add_argument("--in-order", action="store_true",
                   help="groups of consecutive users instead of shuffled ones")
    p.add_argument("--no-email", action="store_true", help="contacts without an email")
    p.add_argument("--perf", help="perf record the server during the rounds into this file")
    p.add_argument("--no-metrics", action="store_true",
                   help="do not read /metrics (older builds compute the state digest for it)")
    p.add_argument("--extra", default="", help="more bucketd flags, space-separated")
    return p.parse_args()


def measure(binary, args):
    """One server run: ingest, then the rounds. Returns the RESULT dict."""
    group = args.users * args.due_permille // 1000
    groups = args.users // group
    if groups < args.rounds:
        sys.exit(f"{groups} groups: fewer than --rounds {args.rounds}")

    server = Server(binary, args.durability, args.extra.split(), args.no_metrics)
    try:
        definition = {
            "id": "trial", "name": "Trial users", "kind": "dynamic",
            "criteria": {"type": "event", "eventName": "signup", "check": "exists"},
            "entryLimit": "once", "maxDwell": f"{MAX_DWELL_DAYS}d",
        }
        server.call("PUT", "/v1/buckets/trial", json.dumps(definition).encode())

        # Users join in a shuffled order (fixed seed): a group's users are spread over the
        # state as they would be in life, not neighbours in memory.
        users = list(range(args.users))
        if not args.in_order:
            random.Random(20).shuffle(users)
        email = ',"email":"user-%07d@example.com"' if not args.no_email else ""
        line = '{"userId":"user-%07d","event":"signup"' + email + '}\n'
        t0 = time.perf_counter()
        for g in range(groups):
            set_clock(server, START_MS + g * MINUTE_MS)
            for first in range(g * group, (g + 1) * group, args.batch):
                last = min(first + args.batch, (g + 1) * group)
                body = "".join(line % ((u, u) if email else (u,))
                               for u in users[first:last]).encode()
                server.call("POST", "/v1/events", body, "application/x-ndjson")
        ingest_s = time.perf_counter() - t0
        print(f"ingested {args.users:,} users in {groups} groups of {group:,}: {ingest_s:.1f} s "
              f"({args.users / ingest_s:,.0f} events/s with the clock moves)", flush=True)

        # Nothing due: the fixed cost of a clock move (a record, its fsync, the answer).
        empty = []
        for i in range(5):
            rtt, answer = set_clock(server, START_MS + (groups - 1) * MINUTE_MS + 1 + i)
            empty.append((answer["micros"], rtt * 1e6))

        perf = None
        if args.perf:
            # Samples the server during the rounds only (not the ingest).
            # PERF_CALL_GRAPH=dwarf for call chains through a build without frame pointers.
            perf = subprocess.Popen(["perf", "record", "-F", "20000", "--call-graph",
                                     os.environ.get("PERF_CALL_GRAPH", "fp"), "-o", args.perf,
                                     "-p", str(server.proc.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        rows = []
        print("round  due     transitions  server_us  client_us  server_us/item  client_us/item"
              "  phases us/item", flush=True)
        # The phase counters are read before and after each round: a scrape is an engine
        # call of its own, kept out of the measured request.
        phase_rows = []
        for r in range(args.rounds):
            before = server.phase_seconds()
            rtt, answer = set_clock(server, START_MS + MAX_DWELL_DAYS * DAY_MS + r * MINUTE_MS)
            after = server.phase_seconds()
            due = answer["due"]
            if due != group or answer["transitions"] != group:
                server.stop()
                sys.exit(f"round {r}: {answer}, expected {group} due")
            rows.append((answer["micros"], rtt * 1e6))
            phase_rows.append({k: (after[k] - before.get(k, 0.0)) * 1e6 / due for k in after})
            print(f"{r:5d}  {due:6d}  {answer['transitions']:11d}  {answer['micros']:9d}  "
                  f"{rtt * 1e6:9.0f}  {answer['micros'] / due:14.3f}  {rtt * 1e6 / due:14.3f}  " +
                  " ".join(f"{k}={v:.3f}" for k, v in phase_rows[-1].items() if k != "log_bytes"),
                  flush=True)
        phases = {k: statistics.median(p[k] for p in phase_rows) for k in phase_rows[0]}
        if perf is not None:
            perf.send_signal(2)
            perf.wait()
        med_server = statistics.median(r[0] for r in rows)
        med_client = statistics.median(r[1] for r in rows)
        empty_server = statistics.median(e[0] for e in empty)
        empty_client = statistics.median(e[1] for e in empty)
        print(f"nothing due (median of {len(empty)}): server {empty_server:.0f} us, "
              f"client {empty_client:.0f} us")
        print(f"median of {len(rows)} rounds, {group:,} due each: server {med_server:.0f} us = "
              f"{med_server / group:.3f} us/item, client round trip {med_client:.0f} us = "
              f"{med_client / group:.3f} us/item")
        log_bytes = phases.pop("log_bytes", None)
        if phases:
            print(f"engine phases, medians of {len(rows)} rounds, us/item: " +
                  ", ".join(f"{k} {v:.3f}" for k, v in phases.items()) +
                  f" (sum {sum(phases.values()):.3f})")
        if log_bytes is not None:
            print(f"log bytes written per due item: {log_bytes:.1f}")
        result = {"bucketd": binary,
            "due": group, "server_us_per_item": med_server / group,
            "client_us_per_item": med_client / group, "empty_server_us": empty_server,
            "empty_client_us": empty_client, "phases_us_per_item": phases,
            "log_bytes_per_item": log_bytes,
            "ingest_s": ingest_s}
        print("RESULT " + json.dumps(result), flush=True)
        return result
    finally:
        server.stop()


def main():
    args = parse_args()
    results = {binary: [] for binary in args.bucketd}
    for run in range(args.runs):
        for binary in args.bucketd:
            print(f"--- run {run + 1}/{args.runs}: {binary}", flush=True)
            results[binary].append(measure(binary, args))
    if len(args.bucketd) == 2 and args.runs > 0:
        a, b = args.bucketd
        print(f"A = {a}\nB = {b}")
        for key in ("server_us_per_item", "client_us_per_item"):
            ratios = [ra[key] / rb[key] for ra, rb in zip(results[a], results[b])]
            print(f"{key}: A median {statistics.median(r[key] for r in results[a]):.3f}, "
                  f"B median {statistics.median(r[key] for r in results[b]):.3f}; "
                  f"A/B per pair {', '.join(f'{x:.2f}' for x in ratios)} "
                  f"(median {statistics.median(ratios):.2f})")


if __name__ == "__main__":
    main()
