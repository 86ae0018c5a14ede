#!/usr/bin/env python3
"""/healthz latency while many connections sit idle and many long-polls are parked.

Opens N idle TCP connections and M long-polls (GET /v1/transitions?after=<end>&wait=30,
which stay parked for the whole measurement), then times R sequential GET /healthz on one
keep-alive connection
and prints p50/p99/max in microseconds. A request unanswered after --timeout seconds
counts as a stall (a thread-per-connection server with all threads held answers none).

    bench/http_idle_latency.py --port P [--idle 10000] [--polls 1000] [--requests 2000]
"""
import argparse
import json
import resource
import selectors
import socket
import sys
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(sock, timeout):
    """One response with a Content-Length body; None on timeout or close."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            body += chunk
        return int(head[9:12]), body
    except socket.timeout:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--polls", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args()
    limit = raise_nofile()
    if args.idle + args.polls + 64 > limit:
        sys.exit(f"RLIMIT_NOFILE hard limit {limit} is below {args.idle + args.polls + 64}")
    host = f"127.0.0.1:{args.port}".encode()

    probe = connect(args.port)
    probe.sendall(b"GET /v1/state HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    state = read_response(probe, args.timeout)
    end = json.loads(state[1])["transitionSeq"] if state else 0

    idle = []
    for _ in range(args.idle):
        idle.append(connect(args.port))
    poll_request = (b"GET /v1/transitions?after=%d&wait=30 HTTP/1.1\r\nHost: " % end) + host + b"\r\n\r\n"
    polls = []
    for _ in range(args.polls):
        s = connect(args.port)
        s.sendall(poll_request)
        polls.append(s)
    time.sleep(1.0)

    client = connect(args.port)
    request = b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    latencies = []
    stalls = 0
    for _ in range(args.requests):
        start = time.perf_counter()
        client.sendall(request)
        res = read_response(client, args.timeout)
        if res is None or res[0] != 200:
            stalls += 1
            break
        latencies.append((time.perf_counter() - start) * 1e6)
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    print(f"idle={args.idle} polls={args.polls} healthz_requests={len(latencies)} "
          f"p50_us={pct(0.50):.0f} p99_us={pct(0.99):.0f} max_us={latencies[-1] if latencies else float('nan'):.0f} "
          f"stalled={'yes' if stalls else 'no'}")
    for s in idle + polls + [client, probe]:
        s.close()


if __name__ == "__main__":
    main()
