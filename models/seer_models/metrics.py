"""Labels and the report's metrics, defined once (the agent's `seer-agent predict` must compute
the same figures from the same definitions).

Definitions (tick i covers [ts_i, ts_i + tick); its features are complete and its prediction
is made at e_i = ts_i + tick):
- label: service n initiates a violation within H of tick i when a violation whose initiator is
  n is active at e_i (start <= e_i < end + step) or starts in (e_i, e_i + H];
- alarm: the agent's alarm policy over p (`seer-agent/src/respond/alarm.rs`, same defaults):
  it fires when p[i, n] >= threshold for k ticks in a row (threshold and k, 1 or 2, chosen
  together on the training and validation runs, `--threshold-on`; the card carries both),
  clears after k ticks under HYSTERESIS x threshold, and a service that fired
  cannot fire again for COOLDOWN_MS; an alarm is "on" from the tick it fires until it clears;
- anticipated: an alarm on the violation's initiator fires (its rising edge) at some tick
  with start - H - window <= e_i < start (at least one tick before the start, at most the
  horizon plus one QoS window before it); an alarm already on since earlier does not count
  (it foresaw nothing: it rose with nothing coming, and is judged false there); lead time =
  start - the earliest such e_i;
- culprit top-1: argmax_n p[i, n] at the last tick with e_i <= start is the initiator;
- false alarm: an alarm episode (a rising edge of the alarm on one service) such that no
  violation initiated by that service is active at e_i or starts within (e_i, e_i + H + window];
  precision = true episodes / all episodes; false alarms per hour are counted on fault-free runs;
- unknown outcome: a false alarm episode during (or within H + window before) a violation that
  no injected fault explains: that violation's initiator is unknown, so whether the alarm named
  it is too; precision over known outcomes = true episodes / (all episodes - unknown ones),
  reported beside the precision above, never instead of it.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .data import Run

WINDOW_MS = 1000
STEP_MS = 100
# The agent's [predict] defaults (seer-agent/src/config.rs PredictConfig). CONSECUTIVE is the
# default only: the evaluation chooses it with the threshold (1 or 2 ticks) and the card carries
# it, as the agent's alarm policy then does.
CONSECUTIVE = 2
CONSECUTIVE_CHOICES = (1, 2)
HYSTERESIS = 0.8
COOLDOWN_MS = 30_000


def alarm_policy(p: np.ndarray, ts_ms: np.ndarray, threshold: float, consecutive: int = CONSECUTIVE) -> np.ndarray:
    """[T, N] bool: the alarm as the agent's policy raises it (see the module doc)."""
    t, n = p.shape
    on = np.zeros((t, n), bool)
    for j in range(n):
        above = below = 0
        firing = False
        last = None
        for i in range(t):
            v = p[i, j]
            if v >= threshold:
                above += 1
                below = 0
            else:
                above = 0
                if v < threshold * HYSTERESIS:
                    below += 1
            if not firing and above >= consecutive:
                if last is None or ts_ms[i] - last >= COOLDOWN_MS:
                    firing = True
                    last = ts_ms[i]
            elif firing and below >= consecutive:
                firing = False
            on[i, j] = firing
    return on


def labels(run: Run, horizon_ms: int) -> np.ndarray:
    """[T, N] uint8: the label above, for any horizon."""
    t, n = run.x.shape[:2]
    y = np.zeros((t, n), np.uint8)
    e = run.ts_ms + run.tick_ms
    index = {s: i for i, s in enumerate(run.services)}
    for v in run.violations:
        j = index.get(v.initiator)
        if j is None:
            continue
        on = ((v.start_unix_ms <= e) & (e < v.end_unix_ms + STEP_MS)) | (
            (e < v.start_unix_ms) & (v.start_unix_ms <= e + horizon_ms)
        )
        y[on, j] = 1
    return y


def coming(run: Run, horizon_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """([T] uint8, [T] bool): a violation, whoever initiates it, is active at the end of tick i
    or starts within H (the label of the factored network's first factor); and whether such a
    violation has no known initiator (no injected fault explains it: noise of the machine the
    corpus ran on), where the initiator labels are unknown rather than negative."""
    t = run.x.shape[0]
    any_v = np.zeros(t, np.uint8)
    unknown = np.zeros(t, bool)
    e = run.ts_ms + run.tick_ms
    index = {s: i for i, s in enumerate(run.services)}
    for v in run.violations:
        on = ((v.start_unix_ms <= e) & (e < v.end_unix_ms + STEP_MS)) | (
            (e < v.start_unix_ms) & (v.start_unix_ms <= e + horizon_ms)
        )
        any_v[on] = 1
        if index.get(v.initiator) is None:
            unknown |= on
    return any_v, unknown


def alarm_episodes(alarm: np.ndarray) -> list[tuple[int, int]]:
    """(tick, service) of every rising edge of `alarm` [T, N]."""
    prev = np.zeros_like(alarm[:1])
    edges = alarm & ~np.concatenate([prev, alarm[:-1]], axis=0)
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(edges))]


def score_run(run: Run, p: np.ndarray, threshold: float, horizon_ms: int, first_tick: int = 0, consecutive: int = CONSECUTIVE) -> dict:
    """Per-violation and per-alarm outcomes of one run. `p` [T, N]; ticks before `first_tick`
    (no full window yet) are not judged."""
    e = run.ts_ms + run.tick_ms
    q = p.copy()
    q[:first_tick] = 0.0
    alarm = alarm_policy(q, e, threshold, consecutive)
    index = {s: i for i, s in enumerate(run.services)}
    out = {"violations": [], "episodes": 0, "false_episodes": 0, "unknown_episodes": 0}
    for v in run.violations:
        j = index.get(v.initiator)
        if j is None:
            continue
        # Judge only violations the model had a full window before.
        if v.start_unix_ms - horizon_ms - WINDOW_MS < e[min(first_tick, len(e) - 1)]:
            continue
        look = (e >= v.start_unix_ms - horizon_ms - WINDOW_MS) & (e < v.start_unix_ms)
        # The alarm must fire (rise) inside the look window: an alarm that rose long before
        # and never cleared foresaw nothing (its episode is judged false where it rose).
        rise = alarm[:, j] & ~np.concatenate([[False], alarm[:-1, j]])
        hits = np.nonzero(look & rise)[0]
        at = np.nonzero(e <= v.start_unix_ms)[0]
        top1 = bool(len(at) and int(np.argmax(p[at[-1]])) == j)
        out["violations"].append(
            {
                "run": run.name,
                "id": v.id,
                "initiator": v.initiator,
                "fault_kind": v.fault_kind,
                "onset": v.onset,
                "random": v.random,
                "anticipated": bool(len(hits)),
                "lead_ms": int(v.start_unix_ms - e[hits[0]]) if len(hits) else None,
                "top1": top1,
            }
        )
    for i, j in alarm_episodes(alarm):
        out["episodes"] += 1
        ok = False
        for v in run.violations:
            if index.get(v.initiator) != j:
                continue
            active = v.start_unix_ms <= e[i] < v.end_unix_ms + STEP_MS
            soon = e[i] < v.start_unix_ms <= e[i] + horizon_ms + WINDOW_MS
            if active or soon:
                ok = True
                break
        if not ok:
            out["false_episodes"] += 1
            if any(
                index.get(v.initiator) is None
                and (v.start_unix_ms <= e[i] < v.end_unix_ms + STEP_MS or e[i] < v.start_unix_ms <= e[i] + horizon_ms + WINDOW_MS)
                for v in run.violations
            ):
                out["unknown_episodes"] += 1
    return out


def summarise(scores: list[dict], runs: list[Run]) -> dict:
    vs = [v for s in scores for v in s["violations"]]
    episodes = sum(s["episodes"] for s in scores)
    false_eps = sum(s["false_episodes"] for s in scores)
    unknown_eps = sum(s["unknown_episodes"] for s in scores)
    ff_hours = sum(r.hours for r in runs if r.fault_free)
    ff_false = sum(s["false_episodes"] for s, r in zip(scores, runs) if r.fault_free)

    def pct(xs):
        return 100.0 * sum(xs) / len(xs) if xs else float("nan")

    leads = [v["lead_ms"] for v in vs if v["lead_ms"] is not None]
    by = defaultdict(list)
    for v in vs:
        by[("kind", v["fault_kind"])].append(v)
        by[("onset", v["onset"])].append(v)
    return {
        "violations": len(vs),
        "anticipated_pct": pct([v["anticipated"] for v in vs]),
        "top1_pct": pct([v["top1"] for v in vs]),
        "alarm_episodes": episodes,
        "false_alarms": false_eps,
        "precision_pct": 100.0 * (episodes - false_eps) / episodes if episodes else float("nan"),
        "unknown_alarms": unknown_eps,
        "precision_known_pct": 100.0 * (episodes - false_eps) / (episodes - unknown_eps) if episodes > unknown_eps else float("nan"),
        "false_alarms_per_fault_free_hour": ff_false / ff_hours if ff_hours else float("nan"),
        "lead_ms_p50": float(np.median(leads)) if leads else float("nan"),
        "lead_ms_p10": float(np.percentile(leads, 10)) if leads else float("nan"),
        "lead_ms_p90": float(np.percentile(leads, 90)) if leads else float("nan"),
        "by": {
            f"{k}={name or '-'}": {
                "n": len(items),
                "anticipated_pct": pct([v["anticipated"] for v in items]),
                "top1_pct": pct([v["top1"] for v in items]),
            }
            for (k, name), items in sorted(by.items())
        },
    }


def predictable(v: dict) -> bool:
    """Ramps and bursts (and load growth that ramps): what a predictor can see coming. Step
    onsets are the paper's unpredictable spikes and are reported apart."""
    return v["onset"] in ("ramp", "bursts")
