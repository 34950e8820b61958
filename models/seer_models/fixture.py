"""Writes models/fixtures/parity/: a small graph model trained for one epoch on the fixture
corpus, and one real window from it with the probabilities Python's onnxruntime gives, so the
agent's Rust inference can be checked against Python's (the agent's test
`infer::tests::rust_and_python_give_the_same_probabilities`).

    PYTHONPATH=models python -m seer_models.fixture
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort

from . import data as D
from . import train as T

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")


def main() -> int:
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
    (p,) = sess.run(["p"], {"x": x, "adj": run.adj})
    with open(os.path.join(out, "window.json"), "w") as f:
        json.dump(
            {
                "run": run.name,
                "tick": end,
                "t": t,
                "n": int(raw.shape[1]),
                "services": run.services,
                "raw": raw.astype(float).ravel().tolist(),
                "adj": run.adj.astype(float).ravel().tolist(),
                "p": p[0].astype(float).tolist(),
            },
            f,
        )
    print(f"wrote {out}: p = {np.round(p[0], 4).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
