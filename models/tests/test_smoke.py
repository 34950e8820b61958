"""The training smoke test of the test command: a small corpus recorded from real testbed runs
(models/fixtures/corpus, copied from `cargo xtask corpus` output), a few steps of training,
export, load in ONNX Runtime, parity with PyTorch, the card written and read back. Also: the
Python labels equal the testbed's, and the shipped model's card fits the agent's channel list.
"""

import json
import os
import re

import numpy as np
import onnxruntime as ort
import pytest

from seer_models import data as D
from seer_models import metrics as M
from seer_models import nets
from seer_models import train as T

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
FIXTURE = os.path.join(MODELS, "fixtures", "corpus")
REPO = os.path.dirname(MODELS)


def channel_names_in_rust():
    """CHANNEL_NAMES from seer-common, the one definition of the model's C axis."""
    src = open(os.path.join(REPO, "seer-common", "src", "sample.rs")).read()
    block = re.search(r"pub const CHANNEL_NAMES: \[&str; CHANNELS\] = \[(.*?)\];", src, re.S)
    assert block, "CHANNEL_NAMES not found in seer-common/src/sample.rs"
    return re.findall(r'"([a-z0-9_]+)"', block.group(1))


def test_the_fixture_is_real_testbed_output_with_violations():
    runs = D.read_corpus(FIXTURE)
    assert {r.split for r in runs} >= {"train", "val"}
    for r in runs:
        assert r.x.shape[2] == len(r.channels)
        assert r.x.shape[0] > 100
    assert sum(len([v for v in r.violations if v.initiator]) for r in runs) >= 1


def test_python_labels_equal_the_testbeds():
    for r in D.read_corpus(FIXTURE):
        for h, y in r.y.items():
            mine = M.labels(r, h)
            assert np.array_equal(mine, y), f"{r.name} horizon {h}: {np.argwhere(mine != y)[:5]}"


@pytest.mark.parametrize("net", ["graph", "graph-factored", "hybrid"])
def test_train_export_parity_and_card(tmp_path, net):
    out = str(tmp_path / f"smoke-{net}")
    rc = T.main(["--corpus", FIXTURE, "--net", net, "--epochs", "1", "--t-len", "5", "--n-max", "12", "--out", out])
    assert rc == 0
    card = T.read_card(out + ".json")
    assert card["channels"] == channel_names_in_rust()
    assert card["t"] == 5 and card["horizon_ms"] == 100
    assert abs(card["parity_max_abs_diff"]) <= 1e-5
    assert 0.0 < card["threshold"] < 1.0
    sess = ort.InferenceSession(out + ".onnx", providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    graph = nets.takes_graph(net)
    n = 6 if graph else 12
    feeds = {"x": np.zeros((1, 5, n, card["c"]), np.float32)}
    if graph:
        assert names == ["x", "edges"]
        feeds["edges"] = np.array([[1, 0], [2, 1]], np.int64)
    else:
        assert names == ["x"]
    (p,) = sess.run(["p"], feeds)
    assert p.shape == (1, n) and np.all((p >= 0) & (p <= 1))


def test_label_horizon_and_threshold_runs_are_options(tmp_path):
    """Training labels of another horizon than the card's, the threshold chosen on train+val:
    the card says both, and keeps the horizon the agent predicts at."""
    out = str(tmp_path / "smoke-options")
    argv = ["--corpus", FIXTURE, "--net", "graph", "--epochs", "1", "--t-len", "5", "--out", out]
    assert T.main(argv + ["--label-horizon-ms", "1100", "--threshold-on", "train+val"]) == 0
    card = T.read_card(out + ".json")
    assert card["horizon_ms"] == 100
    assert card["training"]["label_horizon_ms"] == 1100
    assert card["training"]["threshold_on"] == "train+val"
    runs = D.read_corpus(FIXTURE)
    train, val = [r for r in runs if r.split == "train"], [r for r in runs if r.split == "val"]
    assert [id(r) for r in T.threshold_runs("val", train, val)] == [id(r) for r in val]
    assert [id(r) for r in T.threshold_runs("train+val", train, val)] == [id(r) for r in train + val]
    with pytest.raises(ValueError):
        T.threshold_runs("test", train, val)


def test_a_card_of_another_format_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a seer model card"):
        T.read_card(str(bad))


def test_the_shipped_models_fit_the_agents_channels():
    cards = [f for f in os.listdir(MODELS) if f.endswith(".json") and os.path.exists(os.path.join(MODELS, f[:-5] + ".onnx"))]
    assert cards, "no shipped model (models/NAME.onnx + models/NAME.json)"
    rust = channel_names_in_rust()
    for c in cards:
        card = T.read_card(os.path.join(MODELS, c))
        assert card["channels"] == rust, (
            f"models/{c} was trained on channels {card['channels']}, the agent now has {rust}: "
            "retrain (cargo xtask corpus, then cargo xtask train) and commit the new model"
        )


def test_the_alarm_policy_is_the_agents():
    """The same sequences as seer-agent/src/respond/alarm.rs's tests, the same outcomes."""
    def events(ps, k=2):
        on = M.alarm_policy(np.array(ps, np.float32)[:, None], np.arange(1, len(ps) + 1) * 100, 0.5, k)[:, 0]
        out, prev = [], False
        for i, a in enumerate(on):
            if a and not prev:
                out.append((100 * (i + 1), "fired"))
            if prev and not a:
                out.append((100 * (i + 1), "cleared"))
            prev = a
        return out

    assert events([0.6, 0.1, 0.7, 0.9, 0.45, 0.45, 0.3, 0.2]) == [(400, "fired"), (800, "cleared")]
    # The agent's cooldown there is 1 s; here the default 30 s: no second alarm within it.
    assert events([0.9, 0.9, 0.1, 0.1] + [0.9] * 8) == [(200, "fired"), (400, "cleared")]
    # One tick in a row (a card may choose it): fires on the first tick over, clears on the
    # first under the hysteresis.
    assert events([0.6, 0.1, 0.7, 0.9, 0.45, 0.45, 0.3, 0.2], k=1) == [(100, "fired"), (200, "cleared")]


def test_an_anticipation_needs_an_alarm_that_fires_in_the_look_window():
    """The same cases as seer-agent/src/cli/score.rs's tests: one service, 100 ms ticks from 0,
    a violation it initiates from 5 s; an alarm firing at ~4.5 s anticipates it, an alarm on
    since the first tick does not (and is a false episode where it rose)."""
    from types import SimpleNamespace

    v = D.Violation(id=0, start_unix_ms=5000, end_unix_ms=5500, initiator="s", fault_kind="cpu_quota", onset="ramp", random=False)
    run = SimpleNamespace(name="r", services=["s"], tick_ms=100, ts_ms=np.arange(60) * 100, violations=[v])

    def score(p):
        return M.score_run(run, np.array(p, np.float32)[:, None], 0.5, 100, 0)

    late = score([0.9 if i >= 44 else 0.0 for i in range(60)])
    assert late["violations"][0]["anticipated"] and 0 < late["violations"][0]["lead_ms"] <= 1100
    assert late["false_episodes"] == 0
    always = score([0.9] * 60)
    assert not always["violations"][0]["anticipated"]
    assert (always["episodes"], always["false_episodes"]) == (1, 1)


def test_the_fault_oracle_marks_each_fault_target_from_its_start_and_nothing_else():
    from seer_models import baselines as B

    for r in D.read_corpus(FIXTURE):
        p = B.fault_oracle(r)
        assert p.shape == (len(r.ts_ms), len(r.services))
        e = r.ts_ms + r.tick_ms
        targets = {f["service"] for f in r.faults if f.get("service") in r.services and f.get("applied_unix_ms")}
        for j, name in enumerate(r.services):
            if name not in targets:
                assert not p[:, j].any(), f"{r.name}: {name} had no fault"
        for f in r.faults:
            if f.get("service") not in r.services or not f.get("applied_unix_ms"):
                continue
            j = r.services.index(f["service"])
            assert not p[e <= f["applied_unix_ms"], j].any() or any(
                g["service"] == f["service"] and g["applied_unix_ms"] < f["applied_unix_ms"] for g in r.faults
            ), "nothing before the fault (unless an earlier fault on the same service)"
            during = (e > f["applied_unix_ms"]) & (e <= f["removed_unix_ms"])
            assert p[during, j].all(), f"{r.name}: on for the whole of fault {f['id']}"
