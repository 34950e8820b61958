#!/usr/bin/env python3
"""End-to-end latency during each fault of a run vs. the quiet periods.

usage: p99_by_fault.py OUT [OUT2 ...]   (OUT: a `seer-testbed run --out` directory)

A fault's requests are those sent from 1 s after its start to its end (the first second is
skipped: ramps, hog start-up). Quiet: sent at t >= 0 and at least 3 s away from any fault.
Failed requests count as infinitely slow (as in windows.csv). Besides the pooled p50/p90/p99,
`med p99/s` is the median over the period's seconds of each second's p99: one stall of the
machine (other work on it) moves the pooled p99 of a 10 s period, not this."""
import csv, json, math, statistics, sys
from collections import defaultdict

def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[max(0, math.ceil(len(xs) * q) - 1)]

def med_p99_per_s(rows):
    by_s = defaultdict(list)
    for t, l in rows:
        by_s[int(t // 1000)].append(l)
    return statistics.median(pct(v, 0.99) for v in by_s.values()) if by_s else float("nan")

for out in sys.argv[1:]:
    faults = json.load(open(f"{out}/faults.json"))
    rows = []
    with open(f"{out}/requests.csv") as f:
        for r in csv.DictReader(f):
            lat = float(r["latency_us"]) / 1000 if r["status"] == "ok" else math.inf
            rows.append((float(r["t_ms"]), lat))
    spans = [(f["start_s"] * 1000, f["end_s"] * 1000) for f in faults]
    quiet = [(t, l) for t, l in rows if t >= 0 and all(t < s - 3000 or t > e + 3000 for s, e in spans)]
    print(f"# {out}")
    print("| period | hog CPUs | requests | p50 ms | p90 ms | p99 ms | med p99/s ms | p99 / quiet | med p99/s / quiet |")
    print("|---|---|---|---|---|---|---|---|---|")
    ql = [l for _, l in quiet]
    q99, qm = pct(ql, 0.99), med_p99_per_s(quiet)
    print(f"| quiet | | {len(ql)} | {pct(ql, 0.5):.2f} | {pct(ql, 0.9):.2f} | {q99:.2f} | {qm:.2f} | 1.00 | 1.00 |")
    for f, (s, e) in zip(faults, spans):
        sel = [(t, l) for t, l in rows if s + 1000 <= t < e]
        xs = [l for _, l in sel]
        p99, m = pct(xs, 0.99), med_p99_per_s(sel)
        err = f" (error: {f['error']})" if f.get("error") else ""
        print(f"| {f['kind']} {f['intensity']:g} {f['unit']} on {f['service']}{err} | {f.get('hog_cpus') or ''} | {len(xs)} | {pct(xs, 0.5):.2f} | {pct(xs, 0.9):.2f} | {p99:.2f} | {m:.2f} | {p99 / q99:.2f} | {m / qm:.2f} |")
