"""The corpus on disk -> arrays the networks and baselines read.

One testbed run's `dataset/` (written by seer-testbed, format `seer-testbed-dataset-v1`) is a
`samples.arrow` file with one row per (tick, service) in the manifest's service order (back end
first), the channels named as in `seer_common::sample::CHANNEL_NAMES`, and labels per horizon
(`initiator_in_<H>ms`: 1 on the row of the service that initiates a violation active at the end
of the tick or starting within H). `Run` holds it as dense arrays:

    x        float32 [T, N, C]   the agent's channels
    y[H]     uint8   [T, N]      initiator_in_<H>ms
    adj      float32 [N, N]      adj[i, j] = 1 when service i calls service j (observed edges)
    ts_ms    int64   [T]         tick bucket start; the tick's labels refer to e = ts + tick
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc


@dataclass
class Violation:
    id: int
    start_unix_ms: int
    end_unix_ms: int
    initiator: str  # '' when no fault explains it
    fault_kind: str
    onset: str
    random: bool


@dataclass
class Run:
    name: str
    split: str
    topology: str
    tick_ms: int
    services: list[str]
    channels: list[str]
    x: np.ndarray
    y: dict[int, np.ndarray]
    adj: np.ndarray
    ts_ms: np.ndarray
    violations: list[Violation]
    fault_free: bool
    faults: list[dict] = field(default_factory=list)

    @property
    def hours(self) -> float:
        return len(self.ts_ms) * self.tick_ms / 3.6e6


def read_dataset(dataset_dir: str, name: str = "", split: str = "", topology: str = "") -> Run:
    with open(os.path.join(dataset_dir, "manifest.json")) as f:
        man = json.load(f)
    if man.get("format") != "seer-testbed-dataset-v1":
        raise ValueError(f"{dataset_dir}: not a seer-testbed dataset (format {man.get('format')!r})")
    with pa.memory_map(os.path.join(dataset_dir, man["data_file"])) as src:
        table = ipc.open_file(src).read_all()
    t, n, c = man["shape"]
    channels = man["channels"]
    x = np.stack([table.column(ch).to_numpy().astype(np.float32) for ch in channels], axis=-1)
    x = x.reshape(t, n, c)
    # Channels the agents could not observe on this kernel are zeros, not gaps.
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    y = {}
    for col in table.column_names:
        if col.startswith("initiator_in_") and col.endswith("ms"):
            h = int(col[len("initiator_in_") : -2])
            y[h] = table.column(col).to_numpy().astype(np.uint8).reshape(t, n)
    ts = table.column("ts_ms").to_numpy().reshape(t, n)[:, 0].astype(np.int64)
    services = [s["name"] for s in man["services"]]
    index = {s: i for i, s in enumerate(services)}
    adj = np.zeros((n, n), np.float32)
    with open(os.path.join(dataset_dir, man["edges_file"])) as f:
        for row in csv.DictReader(f):
            a, b = index.get(row["caller"]), index.get(row["callee"])
            if a is not None and b is not None and a != b:
                adj[a, b] = 1.0
    run_dir = os.path.dirname(os.path.abspath(dataset_dir))
    violations = []
    vpath = os.path.join(run_dir, "violations.json")
    if os.path.exists(vpath):
        with open(vpath) as f:
            for v in json.load(f):
                violations.append(
                    Violation(
                        id=v["id"],
                        start_unix_ms=v["start_unix_ms"],
                        end_unix_ms=v["end_unix_ms"],
                        initiator=v.get("initiator") or "",
                        fault_kind=v.get("fault_kind") or "",
                        onset=v.get("onset") or "",
                        random=bool(v.get("random") or False),
                    )
                )
    faults = []
    fpath = os.path.join(run_dir, "faults.json")
    if os.path.exists(fpath):
        with open(fpath) as f:
            faults = json.load(f)
    return Run(
        name=name or man.get("scenario", ""),
        split=split,
        topology=topology,
        tick_ms=int(man["tick_ms"]),
        services=services,
        channels=channels,
        x=x,
        y=y,
        adj=adj,
        ts_ms=ts,
        violations=violations,
        fault_free=not faults,
        faults=faults,
    )


def read_corpus(corpus_dir: str, splits: set[str] | None = None, limit: int | None = None) -> list[Run]:
    """Every finished run of a `cargo xtask corpus` directory, with its split."""
    with open(os.path.join(corpus_dir, "plan.json")) as f:
        plan = json.load(f)
    runs = []
    for e in plan["entries"]:
        if splits is not None and e["split"] not in splits:
            continue
        d = os.path.join(corpus_dir, "runs", e["name"], "dataset")
        if not os.path.exists(os.path.join(d, "manifest.json")):
            continue
        runs.append(read_dataset(d, e["name"], e["split"], e["topology"]))
        if limit is not None and len(runs) >= limit:
            break
    return runs


# --- normalisation ----------------------------------------------------------------------------


def fit_normalisation(runs: list[Run]) -> dict:
    """Per channel: v' = (log1p(max(v, 0)) - mean) / std, statistics from the training runs."""
    xs = np.concatenate([r.x.reshape(-1, r.x.shape[-1]) for r in runs], axis=0)
    lx = np.log1p(np.maximum(xs, 0.0))
    mean = lx.mean(axis=0)
    std = lx.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)
    return {"kind": "log1p_standard", "mean": mean.tolist(), "std": std.tolist()}


def normalise(x: np.ndarray, norm: dict) -> np.ndarray:
    mean = np.asarray(norm["mean"], np.float32)
    std = np.asarray(norm["std"], np.float32)
    return ((np.log1p(np.maximum(x, 0.0)) - mean) / std).astype(np.float32)


# --- windows ----------------------------------------------------------------------------------


def windows(x: np.ndarray, t_len: int) -> np.ndarray:
    """[T, N, C] -> [T - t_len + 1, t_len, N, C]: the window ending at each tick."""
    t = x.shape[0]
    if t < t_len:
        return np.zeros((0, t_len) + x.shape[1:], x.dtype)
    idx = np.arange(t_len)[None, :] + np.arange(t - t_len + 1)[:, None]
    return x[idx]


def downsample(run: Run, factor: int) -> Run:
    """The run as an agent ticking `factor` times slower would have seen it: gauges at the
    coarse tick's end, rates summed, latencies the max of the fine ticks' (an upper bound)."""
    if factor == 1:
        return run
    t = run.x.shape[0] // factor * factor
    x = run.x[:t].reshape(t // factor, factor, *run.x.shape[1:])
    rates = {"nic_rx_pkts", "nic_rx_bytes", "epoll_calls", "epoll_events", "epoll_wait_ms", "requests"}
    lat = {"latency_p50_us", "latency_p99_us"}
    out = np.empty((t // factor,) + run.x.shape[1:], np.float32)
    for ci, ch in enumerate(run.channels):
        if ch in rates:
            out[..., ci] = x[..., ci].sum(axis=1)
        elif ch in lat:
            out[..., ci] = x[..., ci].max(axis=1)
        else:
            out[..., ci] = x[:, -1, :, ci]
    y = {h: v[:t].reshape(t // factor, factor, -1)[:, -1] for h, v in run.y.items()}
    ts = run.ts_ms[:t].reshape(t // factor, factor)[:, 0]
    r = Run(**{**run.__dict__})
    r.x, r.y, r.ts_ms, r.tick_ms = out, y, ts, run.tick_ms * factor
    return r
