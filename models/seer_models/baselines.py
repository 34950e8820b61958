"""Baselines on the same runs and metrics as the networks: each returns scores [T, N] in [0, 1]
(higher = more likely the initiator), thresholded on the validation runs like the models.

- queue: the service's queue depth (outstanding + accept backlog + unread KiB) against its own
  running median of the previous 5 s;
- latency: its turn-latency p99 against its own running median;
- labeller: the agent's reactive labeller run as a predictor (`seer-agent/src/watch.rs`,
  same constants): per service, a fast and a slow running mean of outstanding, receive queue,
  accept backlog and latency p99 (learned while the QoS holds); departed when the fast mean
  exceeds the slow one by K deviations; the deepest departed service is named;
- gbt: gradient-boosted trees (scikit-learn HistGradientBoosting) on hand-made window features
  of the service and of its callers and callees;
- fault oracle (not a predictor: the ceiling): the injected faults' targets from the moment
  each fault starts, read from the run's fault records.
"""

from __future__ import annotations

import numpy as np

from .data import Run
from . import metrics as M
from .metrics import STEP_MS

CH = None


def _ch(run: Run, name: str) -> np.ndarray:
    return run.x[:, :, run.channels.index(name)]


def _running_median(v: np.ndarray, window: int = 50) -> np.ndarray:
    out = np.zeros_like(v)
    for t in range(v.shape[0]):
        lo = max(0, t - window)
        out[t] = np.median(v[lo:t], axis=0) if t > lo else v[t]
    return out


def _ratio_score(v: np.ndarray) -> np.ndarray:
    base = _running_median(v)
    r = v / (1.0 + base)
    return r / (1.0 + r)


def queue(run: Run) -> np.ndarray:
    q = _ch(run, "outstanding") + _ch(run, "accept_backlog") + _ch(run, "rx_queue_bytes") / 1024.0
    return _ratio_score(q)


def latency(run: Run) -> np.ndarray:
    return _ratio_score(_ch(run, "latency_p99_us"))


# The labeller's constants (seer-agent/src/watch.rs).
WATCHED = [("outstanding", 2.0), ("rx_queue_bytes", 1.0), ("accept_backlog", 1.0), ("latency_p99_us", 2000.0)]
K, WARMUP, ALPHA, FAST, SETTLE = 4.0, 20, 0.05, 0.3, 10


def depths(adj: np.ndarray) -> np.ndarray:
    """Longest call chain from a front end (a service nothing calls), as discovery computes it."""
    n = adj.shape[0]
    d = np.zeros(n, int)
    for _ in range(n):
        changed = False
        for a, b in zip(*np.nonzero(adj)):
            if d[a] + 1 > d[b] and d[a] + 1 <= n:
                d[b] = d[a] + 1
                changed = True
        if not changed:
            break
    return d


def violation_active(run: Run) -> np.ndarray:
    e = run.ts_ms + run.tick_ms
    act = np.zeros(len(e), bool)
    for v in run.violations:
        act |= (v.start_unix_ms <= e) & (e < v.end_unix_ms + STEP_MS)
    return act


# The testbed's attribution: a fault explains a violation that starts before it is removed
# plus a QoS window plus this grace (seer-testbed/src/truth.rs DRAIN_GRACE_MS).
DRAIN_GRACE_MS = 3000


def fault_oracle(run: Run) -> np.ndarray:
    """Not a predictor: the ceiling of the definitions. 1 on a fault's target from the first
    tick after the fault was applied until it was removed plus a window plus the drain grace,
    0 elsewhere: it knows every fault the moment it starts, so a violation it does not
    anticipate is one no predictor can under the rules (e.g. a violation more than the horizon
    plus a window after its fault began: the alarm rose too early to count)."""
    e = run.ts_ms + run.tick_ms
    p = np.zeros((len(e), len(run.services)), np.float32)
    for f in run.faults:
        if f.get("service") in run.services and f.get("applied_unix_ms"):
            j = run.services.index(f["service"])
            end = f.get("removed_unix_ms") or e[-1]
            p[(e > f["applied_unix_ms"]) & (e <= end + M.WINDOW_MS + DRAIN_GRACE_MS), j] = 1.0
    return p


def labeller(run: Run) -> np.ndarray:
    t, n, _ = run.x.shape
    idx = [run.channels.index(c) for c, _ in WATCHED]
    floors = np.array([f for _, f in WATCHED], np.float32)
    mean = np.zeros((n, len(idx)), np.float32)
    dev = np.zeros_like(mean)
    fast = np.zeros_like(mean)
    count = np.zeros(n, int)
    since = np.full(n, -1)
    quiet = np.zeros(n, int)
    learn = ~violation_active(run)
    depth = depths(run.adj)
    out = np.zeros((t, n), np.float32)
    for ti in range(t):
        x = run.x[ti][:, idx]
        for j in range(n):
            why = False
            for k in range(len(idx)):
                if k == 3 and x[j, k] == 0.0:
                    continue
                fast[j, k] += FAST * (x[j, k] - fast[j, k])
                if count[j] >= WARMUP and not why:
                    if fast[j, k] - mean[j, k] > max(K * dev[j, k], floors[k]):
                        why = True
                if learn[ti]:
                    if count[j] == 0:
                        mean[j, k] = x[j, k]
                        fast[j, k] = x[j, k]
                    else:
                        dev[j, k] += ALPHA * (abs(x[j, k] - mean[j, k]) - dev[j, k])
                        mean[j, k] += ALPHA * (x[j, k] - mean[j, k])
            if learn[ti]:
                count[j] += 1
            if why:
                quiet[j] = 0
                if since[j] < 0:
                    since[j] = ti
            elif since[j] >= 0:
                quiet[j] += 1
                if quiet[j] >= SETTLE:
                    since[j] = -1
        departed = np.nonzero(since >= 0)[0]
        if len(departed):
            # Deepest, then earliest.
            best = min(departed, key=lambda j: (-depth[j], since[j], j))
            out[ti, best] = 1.0
    return out


def features(run: Run, t_len: int = 10) -> np.ndarray:
    """[T, N, F]: per channel (log1p) the last value, the window mean, max - min and the slope
    (last - first), for the service and the mean of its callees and of its callers."""
    x = np.log1p(np.maximum(run.x, 0.0))
    t, n, c = x.shape
    f = np.zeros((t, n, 4 * c), np.float32)
    for ti in range(t):
        w = x[max(0, ti - t_len + 1) : ti + 1]
        f[ti] = np.concatenate([w[-1], w.mean(0), w.max(0) - w.min(0), w[-1] - w[0]], axis=-1)
    adj = run.adj
    down = adj / np.maximum(adj.sum(1, keepdims=True), 1)
    up = adj.T / np.maximum(adj.sum(0)[:, None], 1)
    return np.concatenate([f, np.einsum("ij,tjf->tif", down, f), np.einsum("ij,tjf->tif", up, f)], axis=-1)


class GBT:
    def __init__(self, seed: int = 1):
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)

    def fit(self, runs: list[Run], labels: list[np.ndarray], seed: int = 1) -> "GBT":
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for r, y in zip(runs, labels):
            f = features(r)
            pos = np.argwhere(y == 1)
            neg = np.argwhere(y == 0)
            neg = neg[rng.choice(len(neg), size=min(len(neg), max(4 * len(pos), 200)), replace=False)]
            for idx in (pos, neg):
                xs.append(f[idx[:, 0], idx[:, 1]])
                ys.append(y[idx[:, 0], idx[:, 1]])
        self.clf.fit(np.concatenate(xs), np.concatenate(ys))
        return self

    def score(self, run: Run) -> np.ndarray:
        f = features(run)
        t, n, k = f.shape
        return self.clf.predict_proba(f.reshape(-1, k))[:, 1].reshape(t, n).astype(np.float32)
