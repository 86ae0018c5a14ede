#!/usr/bin/env python3
"""The §3b mix's cost against today's mix (issue 16), without the order of one process.

`ingest_bench` runs today's mix, then the §3b mix, in one process: the second reuses the
heap the first freed and pays fewer page faults, which flattered the §3b mix (1.02x where
separate processes measure ~1.35x; bench/README.md). This runs each mix in a process of
its own, with two repetitions: the first on a fresh heap (cold), the second after it
(warm). Rounds alternate the order of the mixes (and of the builds, given two), so a burst
of the neighbours' load falls on both. It prints each run, then per build the medians of
the benchmark thread's CPU per batch of 10,000 and of events/s, and the §3b / today ratios
(the issue's bar: within 25%).

    bench/mix_cpu.py --bench build-rel/bench/ingest_bench [--rounds 4]
    bench/mix_cpu.py --bench OLD/bench/ingest_bench --bench NEW/bench/ingest_bench

BUCKETD_BENCH_USERS (ingest_bench's) shortens a run.
"""
import argparse
import re
import statistics
import subprocess


def run(bench, mix):
    out = subprocess.run(
        [bench, f"--benchmark_filter=sync:0/beyond:{mix}", "--benchmark_repetitions=2"],
        check=True, capture_output=True, text=True).stdout
    runs = []
    for line in out.splitlines():
        if not line.startswith("BM_") or re.search(r"_(mean|median|stddev|cv) ", line):
            continue
        fields = line.split()
        cpu_ms = float(fields[3]) * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[fields[4]]
        events = re.search(r"events_per_s=([0-9.]+)([kM]?)/s", line)
        scale = {"": 1, "k": 1e3, "M": 1e6}[events.group(2)]
        runs.append((cpu_ms, float(events.group(1)) * scale))
    if len(runs) != 2:
        raise SystemExit(f"{bench}: expected two repetitions, got:\n{out}")
    return runs  # [(cold cpu ms, cold events/s), (warm ...)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", action="append", required=True,
                        help="an ingest_bench binary; twice for an A/B comparison")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    results = {}  # (build, mix, phase) -> [(cpu, events/s)]
    for r in range(args.rounds):
        builds = list(range(len(args.bench)))
        mixes = [0, 1]
        if r % 2:
            builds.reverse()
            mixes.reverse()
        for mix in mixes:
            for b in builds:
                cold, warm = run(args.bench[b], mix)
                for phase, value in (("cold", cold), ("warm", warm)):
                    results.setdefault((b, mix, phase), []).append(value)
                print(f"round {r + 1} build {'AB'[b]} mix {'today' if mix == 0 else '3b'}: "
                      f"cpu ms per batch cold {cold[0]:.2f} warm {warm[0]:.2f}, "
                      f"events/s cold {cold[1]:.0f} warm {warm[1]:.0f}", flush=True)
    for b in range(len(args.bench)):
        for phase in ("cold", "warm"):
            cpu = [statistics.median(v[0] for v in results[(b, m, phase)]) for m in (0, 1)]
            eps = [statistics.median(v[1] for v in results[(b, m, phase)]) for m in (0, 1)]
            print(f"build {'AB'[b]} {phase}: cpu ms per batch today {cpu[0]:.2f} §3b {cpu[1]:.2f} "
                  f"(§3b/today {cpu[1] / cpu[0]:.3f}); events/s today {eps[0]:.0f} "
                  f"§3b {eps[1]:.0f} (today/§3b {eps[0] / eps[1]:.3f})")


if __name__ == "__main__":
    main()
