"""Writes models/fixtures/parity/: a small graph model trained for one epoch on the fixture
corpus, and one real window from it with the probabilities Python's onnxruntime gives, so the
agent's Rust inference can be checked against Python's (the agent's test
`infer::tests::rust_and_python_give_the_same_probabilities`).

    PYTHONPATH=models python -m seer_models.fixture
    PYTHONPATH=models python -m seer_models.fixture --from ~/.cache/seer/corpus --runs 020-g18 004-g02

The second form first replaces models/fixtures/corpus with those runs of a recorded corpus
(their scenario, faults, violations, summary and dataset; the first becomes `train`, the
second `val`): needed when the channels change, as the fixture must be what the agent records.
"""

import argparse
import datetime
import json
import os
import shutil
import sys

import numpy as np
import onnxruntime as ort

from . import data as D
from . import metrics as M
from . import train as T

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")


RUN_FILES = ["scenario.toml", "faults.json", "violations.json", "summary.json"]
DATASET_FILES = ["samples.arrow", "manifest.json", "edges.csv"]


def refresh_corpus(src: str, names: list[str]) -> None:
    """models/fixtures/corpus <- runs `names` of the corpus at `src` (train, then val)."""
    plan = json.load(open(os.path.join(src, "plan.json")))
    by_name = {e["name"]: e for e in plan["entries"]}
    dst = os.path.join(FIXTURES, "corpus")
    shutil.rmtree(os.path.join(dst, "runs"), ignore_errors=True)
    entries = []
    for name, split in zip(names, ["train", "val"]):
        if name not in by_name:
            raise SystemExit(f"{src}: no run {name} in its plan")
        run_src = os.path.join(src, "runs", name)
        run_dst = os.path.join(dst, "runs", name)
        os.makedirs(os.path.join(run_dst, "dataset"))
        for f in RUN_FILES:
            shutil.copy(os.path.join(run_src, f), os.path.join(run_dst, f))
        for f in DATASET_FILES:
            shutil.copy(os.path.join(run_src, "dataset", f), os.path.join(run_dst, "dataset", f))
        entries.append({**by_name[name], "split": split})
    today = datetime.date.today().isoformat()
    plan = {
        **{k: v for k, v in plan.items() if k != "entries"},
        "runs": len(entries),
        "entries": entries,
        "note": f"A fixture for models/tests: {len(entries)} runs copied from `cargo xtask corpus` (seed {plan['seed']}) output on {today}, splits reassigned (train, val).",
    }
    with open(os.path.join(dst, "plan.json"), "w") as f:
        json.dump(plan, f, indent=1)
        f.write("\n")
    print(f"fixture corpus <- {', '.join(names)} from {src}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="src", help="a recorded corpus to take the fixture runs from")
    ap.add_argument("--runs", nargs=2, metavar=("TRAIN", "VAL"), help="the two runs (with --from)")
    a = ap.parse_args(argv)
    if a.src:
        if not a.runs:
            ap.error("--from needs --runs TRAIN VAL")
        refresh_corpus(os.path.expanduser(a.src), a.runs)
    out = os.path.join(FIXTURES, "parity")
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, "model")
    rc = T.main(["--corpus", os.path.join(FIXTURES, "corpus"), "--net", "graph", "--epochs", "1", "--out", base])
    if rc != 0:
        return rc
    card = T.read_card(base + ".json")
    run = D.read_corpus(os.path.join(FIXTURES, "corpus"), {"val"})[0]
    # The window ending at the tick with the busiest back end: real values, not zeros.
    t = card["t"]
    end = int(np.argmax(run.x[t:, 0, :].sum(axis=1))) + t
    raw = run.x[end - t + 1 : end + 1]  # [T, N, C]
    zeroed = [run.channels.index(c) for c in card["zeroed_channels"]]
    fed = raw.copy()
    fed[..., zeroed] = 0.0
    x = D.normalise(fed, card["normalisation"])[None]
    sess = ort.InferenceSession(base + ".onnx", providers=["CPUExecutionProvider"])
    edges = np.argwhere(run.adj != 0).astype(np.int64)
    (p,) = sess.run(["p"], {"x": x, "edges": edges})
    with open(os.path.join(out, "window.json"), "w") as f:
        json.dump(
            {
                "run": run.name,
                "tick": end,
                "t": t,
                "n": int(raw.shape[1]),
                "services": run.services,
                "raw": raw.astype(float).ravel().tolist(),
                "edges": edges.tolist(),
                "p": p[0].astype(float).tolist(),
            },
            f,
        )
    # The whole run through ONNX Runtime, and the report's metrics for it: what the agent's
    # `seer-agent predict --dataset` must print for the same run and model.
    full = D.normalise(np.where(np.isin(np.arange(len(run.channels)), zeroed), 0.0, run.x), card["normalisation"])
    wins = D.windows(full.astype(np.float32), t)
    probs = np.zeros(run.x.shape[:2], np.float32)
    for i in range(len(wins)):
        (pp,) = sess.run(["p"], {"x": wins[i : i + 1], "edges": edges})
        probs[t - 1 + i] = pp[0]
    rows = []
    for thr, k in sorted({(float(card["threshold"]), int(card["consecutive"])), (0.5, 1), (0.5, 2)}):
        sc = M.score_run(run, probs, thr, card["horizon_ms"], t - 1, k)
        vios = sc["violations"]
        rows.append(
            {
                "threshold": thr,
                "consecutive": k,
                "violations": len(vios),
                "anticipated": sum(v["anticipated"] for v in vios),
                "top1": sum(v["top1"] for v in vios),
                "episodes": sc["episodes"],
                "false_episodes": sc["false_episodes"],
                "leads_ms": [v["lead_ms"] for v in vios if v["lead_ms"] is not None],
            }
        )
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"dataset": f"models/fixtures/corpus/runs/{run.name}/dataset", "scores": rows}, f, indent=1)
    print(f"wrote {out}: p = {np.round(p[0], 4).tolist()}; metrics at thresholds {[r['threshold'] for r in rows]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
