"""eval/closed-loop/report.py's scoring on hand-made runs (the report has no package: loaded by
path). The first-step lag and the avoided count, as its docstring defines them."""

import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))
REPORT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "eval", "closed-loop", "report.py")
spec = importlib.util.spec_from_file_location("closed_loop_report", REPORT)
R = importlib.util.module_from_spec(spec)
spec.loader.exec_module(R)


def run(vios, actions, violation_s=0.0):
    return {
        "summary": {"violation_s": violation_s, "duration_s": 60.0},
        "vios": vios,
        "actions": [{"t_ms": t} for t in actions],
        "lat": [],
        "spans": [],
    }


def vio(start, end, kind="cpu_quota", onset="ramp"):
    return {"start_ms": start, "end_ms": end, "fault_kind": kind, "onset": onset}


def test_the_first_step_lag_is_per_violation_and_may_come_first():
    r = run([vio(10_000, 14_000), vio(40_000, 41_000), vio(50_000, 52_000)], [11_200, 12_000, 38_000, 70_000])
    # 1.2 s after the first; 2 s before the second; none for the third (70 s is past its end).
    assert R.step_lags(r) == [1.2, -2.0]


def test_a_violation_of_none_is_avoided_only_when_nothing_overlaps_it():
    none = run([vio(10_000, 14_000), vio(40_000, 44_000), vio(60_000, 62_000, kind="blocking")], [], 10.0)
    pro = run([vio(13_500, 15_000)], [9_000, 39_000], 1.5)
    s = R.score({"none": [none], "proactive": [pro]})
    p = s["proactive"]
    # The first overlaps, the second is avoided, the blocking bug's is never counted avoided.
    assert (p["avoided"], p["caused"]) == (1, 3)
    assert p["lags"] == [-4.5]
    assert p["unnecessary"] == 0
