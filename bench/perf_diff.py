#!/usr/bin/env python3
"""Where one profile spends more than another: self and inclusive samples per function.

The §3b mix costs more than today's mix in many places at once (bench/README.md, issue
16), so a profile is read as a difference: the same benchmark under two mixes (or two
builds), each recorded with call graphs, then compared function by function. Only the
samples whose stack holds a frame matching --timed count (by default the engine's own
work in ingest_bench: EngineImpl::IngestBatch and EngineImpl::AdvanceClock, not making the
inputs or tearing down).

    perf record -F 1500 --call-graph dwarf,16384 -o A.data build-rel/bench/ingest_bench \\
        --benchmark_filter='sync:0/beyond:0/' --benchmark_repetitions=1
    perf script -i A.data -F tid,ip,sym > A.txt      (and B the same with beyond:1)
    bench/perf_diff.py A.txt B.txt                   self and inclusive, B - A, top 40
    bench/perf_diff.py A.txt B.txt --under Fold::Refile     only what runs under it
    bench/perf_diff.py A.txt B.txt --callers memcpy         who calls a hot leaf

Counts are samples; with dwarf unwinding perf's own copying of the stack weighs on
memory-bound code, so read the differences, not the ratio of the totals, against
bench/mix_cpu.py's CPU figures.
"""
import argparse
import collections
import re


def load(path):
    """The samples of a `perf script -F tid,ip,sym` output: each a list of frames, leaf first."""
    samples, frames = [], None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if frames:
                    samples.append(frames)
                frames = None
            elif not line.startswith("\t"):
                frames = []  # a sample's header line (its thread id)
            elif frames is not None:
                parts = line.split(None, 1)
                frames.append(re.sub(r"\+0x[0-9a-f]+$", "", parts[1].strip()) if len(parts) > 1 else "?")
    if frames:
        samples.append(frames)
    return samples


def selected(samples, timed, under):
    """The timed samples, each cut at its outermost `under` frame (dropped if none)."""
    for frames in samples:
        if not any(any(t in f for t in timed) for f in frames):
            continue
        if under:
            at = [i for i, f in enumerate(frames) if under in f]
            if not at:
                continue
            frames = frames[: at[-1] + 1]
        yield frames


def counts(samples):
    """Samples per leaf function (self) and per function anywhere on the stack (inclusive)."""
    own, total = collections.Counter(), collections.Counter()
    for frames in samples:
        own[frames[0]] += 1
        for f in set(frames):
            total[f] += 1
    return own, total


def callers(samples, leaf, scope):
    """For samples whose leaf matches, the nearest caller frame in `scope` (a prefix)."""
    found = collections.Counter()
    for frames in samples:
        if leaf not in frames[0]:
            continue
        who = next((f for f in frames[1:] if f.startswith(scope) and leaf not in f), "?")
        found[who] += 1
    return found


def show(title, a, b, top, width):
    print(f"--- {title}: A, B, B - A")
    for key in sorted(set(a) | set(b), key=lambda k: -(b[k] - a[k]))[:top]:
        print(f"{a[key]:7d} {b[key]:7d} {b[key] - a[key]:+7d}  {key[:width]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", help="perf script output of the baseline")
    parser.add_argument("b", help="perf script output to compare with it")
    parser.add_argument("--timed", action="append",
                        help="a frame a counted sample must hold (repeatable; default the "
                             "engine's ingest and clock work)")
    parser.add_argument("--under", help="count only what runs under the outermost frame matching this")
    parser.add_argument("--callers", metavar="LEAF",
                        help="instead: the nearest callers of leaf frames matching LEAF")
    parser.add_argument("--scope", default="bucketd::",
                        help="with --callers: the frames that count as callers (a prefix)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--width", type=int, default=110)
    args = parser.parse_args()
    timed = args.timed or ["EngineImpl::IngestBatch", "EngineImpl::AdvanceClock"]
    a = list(selected(load(args.a), timed, args.under))
    b = list(selected(load(args.b), timed, args.under))
    print(f"samples counted: A {len(a)}, B {len(b)}, B / A {len(b) / max(len(a), 1):.3f}")
    if args.callers:
        show(f"callers of {args.callers}", callers(a, args.callers, args.scope),
             callers(b, args.callers, args.scope), args.top, args.width)
        return
    own_a, total_a = counts(a)
    own_b, total_b = counts(b)
    show("self", own_a, own_b, args.top, args.width)
    show("inclusive", total_a, total_b, args.top, args.width)


if __name__ == "__main__":
    main()
