#!/usr/bin/env python3
"""examples/consumer/consume_transitions.py against a real bucketd: one page per run, the
cursor file carries on where the last run stopped, a key handled before a crash is not handled
again, and a cursor of another stream stops the consumer (exit 3) until told to replay.

Usage: consumer_example_test.py BUCKETD_BINARY EXAMPLE_SCRIPT (CTest passes both).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

from bucketd_process import Server


def call(server, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=data,
                                     method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def setup(server, users):
    call(server, "POST", "/v1/buckets", {
        "id": "power", "name": "Power",
        "criteria": {"type": "event", "eventName": "used", "check": "count", "operator": "gte",
                     "value": 1, "within": "1d"}})
    call(server, "POST", "/v1/events", [{"userId": u, "event": "used"} for u in users])


class Example:
    def __init__(self, script, cursor_file):
        self.script = script
        self.cursor_file = cursor_file

    def run(self, server, *extra):
        """One page; returns (exit status, the seqs it handled, stderr)."""
        done = subprocess.run(
            [sys.executable, self.script, "--url", f"http://127.0.0.1:{server.port}",
             "--cursor-file", self.cursor_file, "--once", "--wait", "0", *extra],
            capture_output=True, text=True, timeout=60)
        seqs = [json.loads(line)["seq"] for line in done.stdout.splitlines()]
        return done.returncode, seqs, done.stderr

    def cursor(self):
        with open(self.cursor_file) as f:
            return json.load(f)


def main():
    binary, script = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="bucketd-consumer-")
    try:
        example = Example(script, os.path.join(work, "cursor.json"))
        server = Server(binary, os.path.join(work, "a"))
        try:
            setup(server, ["u1", "u2"])
            stream_id = call(server, "GET", "/v1/state")["streamId"]
            assert example.run(server)[:2] == (0, [1, 2])
            assert example.cursor() == {"streamId": stream_id, "after": 2}
            assert example.run(server)[:2] == (0, [])  # nothing new

            # Both leave. A crash after handling seq 3 left its key and not the cursor: the
            # next run gets seq 3 again and skips it.
            call(server, "POST", "/v1/clock", {"now": "2026-01-03T00:00:00Z"})
            third = call(server, "GET", "/v1/transitions?after=2&limit=1")["transitions"][0]
            with open(example.cursor_file + ".keys", "w") as f:
                f.write(third["idempotencyKey"] + "\n")
            assert example.run(server)[:2] == (0, [4])
            assert example.cursor() == {"streamId": stream_id, "after": 4}
            with open(example.cursor_file + ".keys") as f:
                assert f.read() == ""
        finally:
            server.stop()

        # A new data dir: the cursor (seq 4) is beyond its end.
        server = Server(binary, os.path.join(work, "b"))
        try:
            setup(server, ["v1"])
            status, seqs, stderr = example.run(server)
            assert (status, seqs) == (3, []), (status, seqs, stderr)
            assert "stream reset" in stderr, stderr
            assert example.cursor()["after"] == 4  # untouched until told
            assert example.run(server, "--on-reset", "replay")[:2] == (0, [1])
            new_id = call(server, "GET", "/v1/state")["streamId"]
            assert example.cursor() == {"streamId": new_id, "after": 1}
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("OK: pages, cursor file, key dedupe after a crash, and a reset handled")


if __name__ == "__main__":
    main()
