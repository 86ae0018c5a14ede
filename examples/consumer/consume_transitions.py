#!/usr/bin/env python3
"""An at-least-once consumer of bucketd's transition stream, in the Python standard library.

Long-polls GET /v1/transitions, hands each transition to handle() (here: print it as one JSON
line), and persists what it has done in two files:

  CURSOR_FILE       {"streamId": ..., "after": seq}, replaced atomically after each page
  CURSOR_FILE.keys  the idempotency keys handled since the cursor was last saved, one a line

The order per transition is: skip it if its key is in the keys file, handle it, append its key
(fsync). After the page: save the cursor, then empty the keys file. A crash anywhere delivers
the page again on restart, and the keys file drops what was already handled: each transition's
effect happens once unless the crash falls between handle() and the key's append. Make that
window vanish by recording the key in the same transaction as the effect (docs/consumers.md).

A cursor of another stream (a reset or restored data dir: 409, or another streamId) stops the
consumer with exit status 3, unless --on-reset says to replay the new stream from its start or
to skip its past.

  consume_transitions.py --url http://127.0.0.1:7411 --cursor-file ./cursor.json
  consume_transitions.py --once --wait 0 ...   # one page, then exit (tests, cron)
"""
import argparse
import json
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

EXIT_RESET = 3


class StreamReset(Exception):
    def __init__(self, stream_id, last_seq, reason):
        super().__init__(f"{reason}: the server's stream is {stream_id} (last seq {last_seq})")
        self.stream_id = stream_id
        self.last_seq = last_seq


def load_cursor(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"streamId": None, "after": 0}


def save_cursor(path, cursor):
    """Writes the cursor to a temp file, fsyncs it and renames it over the old one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cursor, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class HandledKeys:
    """The idempotency keys handled since the cursor was last saved (the page in flight)."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path) as f:
                self.keys = set(f.read().split())
        except FileNotFoundError:
            self.keys = set()

    def add(self, key):
        with open(self.path, "a") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.keys.add(key)

    def clear(self):
        open(self.path, "w").close()
        self.keys.clear()


def handle(transition):
    """The effect: here one JSON line on stdout. Replace with the journey's work."""
    print(json.dumps(transition, separators=(",", ":")), flush=True)


def fetch_page(args, cursor):
    query = [("after", cursor["after"]), ("limit", args.limit), ("wait", args.wait)]
    if args.bucket:
        query.append(("bucket", args.bucket))
    query += [("kind", k) for k in args.kind or []]
    request = urllib.request.Request(
        f"{args.url.rstrip('/')}/v1/transitions?{urllib.parse.urlencode(query)}")
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=args.wait + 30) as response:
            page = json.load(response)
    except urllib.error.HTTPError as e:
        body = json.load(e) if e.headers.get_content_type() == "application/json" else {}
        error = body.get("error", {})
        if e.code == 409 and "lastSeq" in error:
            raise StreamReset(error["streamId"], error["lastSeq"], "cursor beyond the stream's end")
        raise
    if cursor["streamId"] is not None and page["streamId"] != cursor["streamId"]:
        raise StreamReset(page["streamId"], page["lastSeq"], "another stream id")
    return page


def consume_page(args, cursor, handled):
    """Handles one page; returns the number of transitions it held."""
    page = fetch_page(args, cursor)
    for transition in page["transitions"]:
        key = transition["idempotencyKey"]
        if key in handled.keys:
            continue  # handled before a crash, delivered again
        handle(transition)
        handled.add(key)
    if page["next"] != cursor["after"] or cursor["streamId"] != page["streamId"]:
        cursor.update(streamId=page["streamId"], after=page["next"])
        save_cursor(args.cursor_file, cursor)
    handled.clear()
    return len(page["transitions"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7411")
    parser.add_argument("--token", default=os.environ.get("BUCKETD_TOKEN"))
    parser.add_argument("--cursor-file", required=True)
    parser.add_argument("--bucket")
    parser.add_argument("--kind", action="append", choices=["entered", "left", "dwell"])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--wait", type=int, default=25, help="long-poll seconds (0..30)")
    parser.add_argument("--once", action="store_true", help="one page, then exit")
    parser.add_argument("--on-reset", choices=["stop", "replay", "skip"], default="stop",
                        help="a cursor of another stream: exit 3, start the new stream from "
                             "seq 0, or from its last seq")
    args = parser.parse_args()

    cursor = load_cursor(args.cursor_file)
    handled = HandledKeys(args.cursor_file + ".keys")
    failures = 0
    while True:
        try:
            consume_page(args, cursor, handled)
            failures = 0
        except StreamReset as reset:
            print(f"stream reset: {reset}", file=sys.stderr)
            if args.on_reset == "stop":
                return EXIT_RESET
            after = 0 if args.on_reset == "replay" else reset.last_seq
            cursor = {"streamId": reset.stream_id, "after": after}
            save_cursor(args.cursor_file, cursor)
            handled.clear()
            continue
        except (urllib.error.URLError, OSError, ValueError) as e:
            # A 4xx other than the reset is a configuration error: retrying cannot fix it.
            if isinstance(e, urllib.error.HTTPError) and 400 <= e.code < 500 and e.code != 429:
                print(f"refused: {e.code} {e.read().decode(errors='replace')}", file=sys.stderr)
                return 2
            # A 5xx, a dead server, a cut connection: exponential backoff with jitter.
            delay = min(30.0, 0.25 * 2 ** failures) * random.uniform(0.5, 1.0)
            failures += 1
            print(f"retrying in {delay:.2f}s: {e}", file=sys.stderr)
            time.sleep(delay)
            continue
        if args.once:
            return 0


if __name__ == "__main__":
    sys.exit(main())
