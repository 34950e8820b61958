"""What the corpus lets any predictor learn, measured without a network: how often the QoS breaks
with no injected fault (noise the labels call nobody's), how many ticks before a violation its
initiator's own latency departs, and how often the initiator stands out from its callers and
callees at all. `cargo xtask eval model` puts these figures in the report, beside the networks',
so a low score can be told apart from a corpus that cannot teach more.

Definitions (channels as the agent records them, 100 ms ticks):
- noise: violations in runs without any injected fault, per hour of those runs; and the share of
  all violations that no fault explains (their initiator is unknown; the networks do not learn
  them as negatives);
- departure of service n at tick i: log(latency_p99[i, n] / median of its last 50 ticks); a tick
  with no completed request and requests outstanding counts as stalled (departure 10);
- exclusive departure: n's departure minus the largest of its callees' (a caller whose latency
  only mirrors a slow callee scores ~0; the slow callee itself scores high);
- precursor: ticks between the first tick (from the fault's application) where the initiator's
  p99 is over twice its pre-fault median and the violation's start (>= 2 is what the agent's
  alarm policy needs to fire before the start);
- stands out: the initiator has the largest exclusive departure of all services one tick after
  the violation starts (a hint at what these channels can localise, not a bound).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .data import Run


def departures(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(departure, exclusive departure), both [T, N]."""
    ci = {c: i for i, c in enumerate(run.channels)}
    lat = np.maximum(run.x[:, :, ci["latency_p99_us"]], 1.0)
    req = run.x[:, :, ci["requests"]]
    out = run.x[:, :, ci["outstanding"]]
    base = np.stack([np.median(lat[max(0, t - 50) : t + 1], axis=0) for t in range(len(lat))])
    dep = np.log(lat / np.maximum(base, 1.0))
    dep = np.where((req < 1) & (out > 0), 10.0, dep)
    excl = dep.copy()
    for i in range(lat.shape[1]):
        callees = np.nonzero(run.adj[i])[0]
        if len(callees):
            excl[:, i] = dep[:, i] - dep[:, callees].max(axis=1)
    return dep, excl


def facts(runs: list[Run]) -> dict:
    ff = [r for r in runs if r.fault_free]
    ff_hours = sum(r.hours for r in ff)
    all_v = [v for r in runs for v in r.violations]
    unknown = [v for v in all_v if not v.initiator]
    precursor = defaultdict(list)
    stands_out = defaultdict(lambda: [0, 0])
    for r in runs:
        ci = {c: i for i, c in enumerate(r.channels)}
        lat = np.maximum(r.x[:, :, ci["latency_p99_us"]], 1.0)
        e = r.ts_ms + r.tick_ms
        _, excl = departures(r)
        for v in r.violations:
            if v.initiator not in r.services:
                continue
            k = r.services.index(v.initiator)
            start = int(np.searchsorted(e, v.start_unix_ms))
            after = min(start + 1, len(e) - 1)
            s = stands_out[v.fault_kind or "-"]
            s[0] += int(np.argmax(excl[after]) == k)
            s[1] += 1
            mine = [f for f in r.faults if f.get("service") == v.initiator and f.get("applied_unix_ms")]
            if not mine:
                continue
            f = min(mine, key=lambda f: abs(f["applied_unix_ms"] - v.start_unix_ms))
            applied = int(np.searchsorted(e, f["applied_unix_ms"]))
            before = np.median(lat[max(0, applied - 50) : max(applied, 1), k])
            first = next((t for t in range(applied, min(start + 1, len(e))) if lat[t, k] > 2 * before), None)
            precursor[v.onset or "-"].append(None if first is None else start - first)
    return {
        "fault_free_hours": ff_hours,
        "noise_violations_per_fault_free_hour": sum(len(r.violations) for r in ff) / ff_hours if ff_hours else float("nan"),
        "violations": len(all_v),
        "unattributed": len(unknown),
        "precursor": {
            onset: {
                "n": len(xs),
                "departed": sum(x is not None for x in xs),
                "ticks_p50": float(np.median([x for x in xs if x is not None])) if any(x is not None for x in xs) else float("nan"),
                "two_ticks_or_more": sum(x is not None and x >= 2 for x in xs),
            }
            for onset, xs in sorted(precursor.items())
        },
        "stands_out": {kind: {"n": n, "pct": 100.0 * ok / n} for kind, (ok, n) in sorted(stands_out.items())},
    }


def report_lines(f: dict, fmt) -> list[str]:
    L = ["## What the corpus can teach (no network involved)\n"]
    L.append((__doc__ or "").split("Definitions", 1)[-1].strip().lstrip("(").split("):", 1)[-1].strip() + "\n")
    L.append(
        f"Noise: {f['unattributed']} of {f['violations']} violations ({fmt(100.0 * f['unattributed'] / max(f['violations'], 1))}%) have no injected fault behind them; "
        f"runs without faults broke the QoS {fmt(f['noise_violations_per_fault_free_hour'])} times an hour ({f['fault_free_hours']:.2f} h of them). "
        "Every alarm during such a violation counts as false in the precision above.\n"
    )
    L.append("| onset | violations | initiator's p99 doubled before the start | ticks before the start, p50 | of them >= 2 ticks |\n|---|---|---|---|---|")
    for onset, p in f["precursor"].items():
        L.append(f"| {onset} | {p['n']} | {p['departed']} | {fmt(p['ticks_p50'])} | {p['two_ticks_or_more']} |")
    L.append("\n| fault kind | violations | initiator stands out (largest exclusive departure) % |\n|---|---|---|")
    for kind, s in f["stands_out"].items():
        L.append(f"| {kind} | {s['n']} | {fmt(s['pct'])} |")
    L.append("")
    return L
