"""Training, threshold choice, ONNX export (with a parity check) and the model card.

    python -m seer_models.train --corpus ~/.cache/seer/corpus --net graph --horizon-ms 100 \
        --out models/seer-graph-h100

writes OUT.onnx and OUT.json (the card). `cargo xtask train` runs this in the training venv.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from . import data as D
from . import metrics as M
from . import nets

CARD_FORMAT = "seer-model-card-v1"
OPSET = 20


def log(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


class Prepared:
    """A run normalised, with labels for the horizon and its windows' end ticks."""

    def __init__(self, run: D.Run, norm: dict, horizon_ms: int, t_len: int):
        self.run = run
        self.xn = D.normalise(run.x, norm)
        self.y = M.labels(run, horizon_ms)
        # Positive ticks before their violation starts (what anticipation is made of; the
        # others are ticks of a violation already under way).
        self.ahead = self.y & (1 - M.labels(run, 0))
        self.coming, self.unknown = M.coming(run, horizon_ms)
        self.t_len = t_len
        self.n = run.x.shape[1]


def pad(x: np.ndarray, n_max: int, axis: int) -> np.ndarray:
    n = x.shape[axis]
    if n > n_max:
        raise ValueError(f"{n} services, the network takes at most {n_max}")
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, n_max - n)
    return np.pad(x, widths)


def predict_run(model: torch.nn.Module, net: str, prep: Prepared, n_max: int, batch: int = 256) -> np.ndarray:
    """p [T, N] for every tick (0 before the first full window)."""
    model.eval()
    w = D.windows(prep.xn, prep.t_len)
    p = np.zeros(prep.y.shape, np.float32)
    adj = torch.from_numpy(prep.run.adj)
    with torch.no_grad():
        for s in range(0, len(w), batch):
            xb = w[s : s + batch]
            if nets.takes_graph(net):
                out = model(torch.from_numpy(xb), adj).numpy()
            else:
                out = model(torch.from_numpy(pad(xb, n_max, 2))).numpy()[:, : prep.n]
            p[prep.t_len - 1 + s : prep.t_len - 1 + s + len(xb)] = out
    return p


def fit(
    net: str,
    train: list[Prepared],
    t_len: int,
    channels: int,
    n_max: int,
    epochs: int,
    seed: int,
    device: str = "cpu",
    time_budget_s: float | None = None,
    batch: int = 64,
    init: torch.nn.Module | None = None,
    ahead_weight: float = 1.0,
) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = init if init is not None else nets.build(net, t_len, channels, n_max)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    # Positives are rare: weight them so each class carries comparable loss.
    pos = sum(int(p.y[t_len - 1 :].sum()) for p in train)
    tot = sum(p.y[t_len - 1 :].size for p in train)
    pos_w = float(min(10.0, max(1.0, (tot - pos) / max(pos, 1))))
    started = time.time()
    steps = 0
    for ep in range(epochs):
        model.train()
        order = rng.permutation(len(train))
        loss_sum, nb = 0.0, 0
        for ri in order:
            prep = train[ri]
            w = D.windows(prep.xn, t_len)
            y = prep.y[t_len - 1 :]
            if len(w) == 0:
                continue
            yv = prep.coming[t_len - 1 :]
            known = ~prep.unknown[t_len - 1 :] | y.any(axis=1)
            # Every positive window, and as many negatives (sampled), per run per epoch. The
            # factored network also learns from violations without a known initiator (that
            # one came is known); the per-service network cannot (its labels are unknown
            # there), so it skips them rather than learn them as negatives.
            if nets.factored(net):
                posi = np.nonzero(yv.astype(bool))[0]
                negi = np.nonzero(~yv.astype(bool))[0]
            else:
                posi = np.nonzero(y.any(axis=1))[0]
                negi = np.nonzero(~y.any(axis=1) & known)[0]
            k = max(len(posi) * 3, batch)
            pick = np.concatenate([posi, rng.choice(negi, size=min(k, len(negi)), replace=False)])
            rng.shuffle(pick)
            adj = torch.from_numpy(prep.run.adj).to(device)
            for s in range(0, len(pick), batch):
                idx = pick[s : s + batch]
                xb = torch.from_numpy(w[idx] if nets.takes_graph(net) else pad(w[idx], n_max, 2)).to(device)
                yb = torch.from_numpy((y[idx] if nets.takes_graph(net) else pad(y[idx], n_max, 1)).astype(np.float32)).to(device)
                mask = torch.zeros_like(yb)
                mask[:, : prep.n] = 1.0
                if nets.factored(net):
                    loss = factored_loss(model, xb, adj, yb, torch.from_numpy(yv[idx].astype(np.float32)).to(device))
                else:
                    p = model(xb, adj) if nets.takes_graph(net) else model(xb)
                    p = p.clamp(1e-6, 1 - 1e-6)
                    ahead = prep.ahead[t_len - 1 :][idx]
                    ahead = torch.from_numpy((ahead if nets.takes_graph(net) else pad(ahead, n_max, 1)).astype(np.float32)).to(device)
                    wpos = pos_w * (1.0 + (ahead_weight - 1.0) * ahead)
                    loss = -(wpos * yb * torch.log(p) + (1 - yb) * torch.log(1 - p))
                    loss = (loss * mask).sum() / mask.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_sum += loss.item()
                nb += 1
                steps += 1
        log(f"{net}: epoch {ep + 1}/{epochs}: loss {loss_sum / max(nb, 1):.4f} ({time.time() - started:.0f} s)")
        if time_budget_s is not None and time.time() - started > time_budget_s:
            log(f"{net}: time budget of {time_budget_s:.0f} s reached after {ep + 1} epochs")
            break
    model.to("cpu")
    return model, {"epochs_run": ep + 1, "steps": steps, "seconds": time.time() - started, "pos_weight": pos_w}


def factored_loss(model, xb, adj, yb, yv) -> torch.Tensor:
    """The factored network's two terms: binary cross-entropy of "a violation comes" on every
    window, and cross-entropy of the initiator over the services on the windows whose
    initiator is known."""
    v, c = model.parts(xb, adj)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(v, yv)
    known = yb.sum(dim=1) > 0
    if known.any():
        loss = loss + torch.nn.functional.cross_entropy(c[known], yb[known].argmax(dim=1))
    return loss


THRESHOLD_ON = ("val", "train+val")


def threshold_runs(on: str, train_runs: list, val_runs: list) -> list:
    """The runs the threshold is chosen on. The validation runs hold few violations (one
    anticipated more or less moves the product by a whole step), so train+val is offered: more
    violations for a steadier choice, at the cost of scoring the network on runs it learned."""
    if on not in THRESHOLD_ON:
        raise ValueError(f"threshold on {on!r}: one of {THRESHOLD_ON}")
    return train_runs + val_runs if on == "train+val" else val_runs


def choose_alarm(scores_fn, grid=None, consecutive=M.CONSECUTIVE_CHOICES) -> tuple[float, int, dict]:
    """The alarm policy (threshold, ticks in a row) that maximises anticipated% x precision on
    the runs given; scores_fn(threshold, consecutive) -> summary. One tick in a row fires 100 ms
    sooner (a fault whose first sign comes one tick before the violation can be anticipated
    only so) and lets more blips through: the runs decide."""
    grid = grid if grid is not None else [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99]
    best = (0.5, M.CONSECUTIVE, None, -1.0)
    for k in sorted(consecutive, reverse=True):
        for thr in grid:
            s = scores_fn(thr, k)
            a = s["anticipated_pct"]
            pr = s["precision_pct"]
            if np.isnan(a) or np.isnan(pr):
                continue
            v = a * pr
            if v > best[3]:
                best = (thr, k, s, v)
    return best[0], best[1], best[2] or {}


def export_onnx(model: torch.nn.Module, net: str, t_len: int, channels: int, n_max: int, path: str, n_example: int = 6) -> dict:
    """Exports with a dynamic batch (and, for the graph net, a dynamic N) and checks the
    ONNX Runtime output against PyTorch's on fixed inputs (max abs difference <= 1e-5)."""
    import onnxruntime as ort

    model.eval()
    g = torch.Generator().manual_seed(1234)
    n = n_example if nets.takes_graph(net) else n_max
    x = torch.randn(2, t_len, n, channels, generator=g)
    if nets.takes_graph(net):
        # The call graph goes in as its edge list (nets.Graph): linear in the calls.
        adj = (torch.rand(n, n, generator=g) < 0.3).float() * (1 - torch.eye(n))
        args = (x, adj.nonzero())
        names = ["x", "edges"]
        batch = torch.export.Dim("batch", min=1, max=4096)
        nsvc = torch.export.Dim("n", min=2, max=1_000_000)
        ne = torch.export.Dim("e", min=1, max=100_000_000)
        dyn = ({0: batch, 2: nsvc}, {0: ne})
    else:
        args = (x,)
        names = ["x"]
        dyn = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    tmp = path + ".tmp"
    torch.onnx.export(
        model,
        args,
        tmp,
        input_names=names,
        output_names=["p"],
        dynamic_shapes=dyn,
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
    )
    sess = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    worst = 0.0
    checks = []
    # Parity on the export example and, for the graph net, on other sizes of N (3: no call at
    # all), the exported edge-list form against PyTorch's dense one.
    sizes = [n, 3, 17] if nets.takes_graph(net) else [n]
    for k, nn_ in enumerate(sizes):
        gx = torch.Generator().manual_seed(99 + k)
        xx = torch.randn(3, t_len, nn_, channels, generator=gx)
        feeds = {"x": xx.numpy()}
        with torch.no_grad():
            if nets.takes_graph(net):
                aa = (torch.rand(nn_, nn_, generator=gx) < 0.3).float() * (1 - torch.eye(nn_))
                if nn_ == 3:
                    aa = torch.zeros(nn_, nn_)
                feeds["edges"] = aa.nonzero().numpy()
                ref = model(xx, aa).numpy()
            else:
                ref = model(xx).numpy()
        got = sess.run(["p"], feeds)[0]
        d = float(np.max(np.abs(got - ref)))
        worst = max(worst, d)
        checks.append({"n": nn_, "max_abs_diff": d})
    if worst > 1e-5:
        os.remove(tmp)
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by {worst:.2e} (> 1e-5): not exported")
    os.replace(tmp, path)
    return {"max_abs_diff": worst, "checks": checks, "onnxruntime": ort.__version__, "opset": OPSET}


def finite(v):
    """JSON has no NaN: an undefined figure (no fault-free hour, no alarm) is null."""
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return finite(v.item())
    return v


def write_card(path: str, card: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(finite(card), f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def read_card(path: str) -> dict:
    with open(path) as f:
        card = json.load(f)
    if card.get("format") != CARD_FORMAT:
        raise ValueError(f"{path}: not a seer model card (format {card.get('format')!r})")
    return card


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="a `cargo xtask corpus` directory")
    ap.add_argument("--net", default="graph", choices=sorted(nets.NETS))
    ap.add_argument("--horizon-ms", type=int, default=100)
    ap.add_argument(
        "--label-horizon-ms",
        type=int,
        default=None,
        help="horizon of the training labels (default: --horizon-ms); horizon + 1000 labels every tick whose alarm the metrics count as true",
    )
    ap.add_argument(
        "--threshold-on",
        default="train+val",
        choices=THRESHOLD_ON,
        help="the runs the threshold is chosen on: train+val (default: more violations, a steadier choice; the test runs stay unseen) or val",
    )
    ap.add_argument("--ahead-weight", type=float, default=1.0, help="loss weight of positive ticks before their violation starts, relative to ticks of a violation under way")
    ap.add_argument("--t-len", type=int, default=10, help="ticks per window (T)")
    ap.add_argument("--n-max", type=int, default=48, help="service positions of the fixed-N networks")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--time-budget-s", type=float, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--limit-runs", type=int, default=None, help="read at most this many runs per split")
    ap.add_argument("--out", required=True, help="output path without extension: OUT.onnx, OUT.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        log("--device cuda: no CUDA device here")
        return 2
    train_runs = D.read_corpus(a.corpus, {"train"}, a.limit_runs)
    val_runs = D.read_corpus(a.corpus, {"val"}, a.limit_runs)
    if not train_runs or not val_runs:
        log(f"{a.corpus}: needs finished train and val runs (has {len(train_runs)} and {len(val_runs)}): record more with `cargo xtask corpus`")
        return 2
    channels = train_runs[0].channels
    for r in train_runs + val_runs:
        if r.channels != channels:
            log(f"run {r.name} has channels {r.channels}, others {channels}: one corpus, one channel list")
            return 2
    norm = D.fit_normalisation(train_runs)
    log(f"{len(train_runs)} train runs ({sum(r.hours for r in train_runs):.2f} h), {len(val_runs)} val runs")
    prep = [Prepared(r, norm, a.label_horizon_ms or a.horizon_ms, a.t_len) for r in train_runs]
    model, fitinfo = fit(a.net, prep, a.t_len, len(channels), a.n_max, a.epochs, a.seed, a.device, a.time_budget_s, ahead_weight=a.ahead_weight)
    preds = {}

    def scores(runs, thr, k):
        for r in runs:
            if id(r) not in preds:
                preds[id(r)] = predict_run(model, a.net, Prepared(r, norm, a.horizon_ms, a.t_len), a.n_max)
        return M.summarise([M.score_run(r, preds[id(r)], thr, a.horizon_ms, a.t_len - 1, k) for r in runs], runs)

    thr_runs = threshold_runs(a.threshold_on, train_runs, val_runs)
    thr, k, _ = choose_alarm(lambda t, kk: scores(thr_runs, t, kk))
    # The card's figures are the validation runs' whichever runs chose the threshold: the agent
    # acts on alarms only when this precision clears its `min_precision_pct`.
    vs = scores(val_runs, thr, k)
    log(f"threshold {thr}, {k} tick(s) in a row (chosen on {a.threshold_on}) on val: anticipated {vs.get('anticipated_pct')}, precision {vs.get('precision_pct')}")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)) or ".", exist_ok=True)
    exp = export_onnx(model, a.net, a.t_len, len(channels), a.n_max, a.out + ".onnx")
    plan = json.load(open(os.path.join(a.corpus, "plan.json")))
    card = make_card(a, channels, norm, thr, k, exp, fitinfo, plan, train_runs, val_runs, vs)
    write_card(a.out + ".json", card)
    log(f"wrote {a.out}.onnx and {a.out}.json (parity {exp['max_abs_diff']:.1e})")
    return 0


def zeroed_channels(runs) -> list[str]:
    """Channels that were zero in every training run (not observed by the agents that recorded
    them): the agent feeds zeros there, whatever its own kernel can see."""
    chans = runs[0].channels
    seen = np.zeros(len(chans), bool)
    for r in runs:
        seen |= (r.x != 0).reshape(-1, len(chans)).any(axis=0)
    return [c for c, s in zip(chans, seen) if not s]


def make_card(a, channels, norm, thr, consecutive, exp, fitinfo, plan, train_runs, val_runs, val_scores) -> dict:
    graph = nets.takes_graph(a.net)
    return {
        "format": CARD_FORMAT,
        "name": os.path.basename(a.out),
        "network": a.net,
        "inputs": {
            "x": "float32 [batch, T, N, C]: normalised channels, services in topological order (back end first)",
            **({"edges": "int64 [E, 2]: one row (i, j) per call, service i calls service j (indices into x's N; each call once, no self-calls)"} if graph else {}),
        },
        "output": "p: float32 [batch, N], probability that each service initiates a QoS violation within the horizon",
        "services": (
            {"n": "any: weights are shared across services; the call graph is an input"}
            if graph
            else {"n": f"at most {a.n_max}: inputs padded with zeros to {a.n_max} services, outputs past N ignored", "n_max": a.n_max}
        ),
        "t": a.t_len,
        "c": len(channels),
        "channels": channels,
        "tick_ms": train_runs[0].tick_ms,
        "horizon_ms": a.horizon_ms,
        "threshold": thr,
        # The alarm fires after this many ticks in a row at or over the threshold (chosen with
        # it); the agent's [predict] consecutive overrides it.
        "consecutive": consecutive,
        "normalisation": norm,
        "zeroed_channels": zeroed_channels(train_runs),
        "opset": exp["opset"],
        "onnxruntime_tested": exp["onnxruntime"],
        "parity_max_abs_diff": exp["max_abs_diff"],
        "training": {
            "corpus_seed": plan.get("seed"),
            "corpus_runs_planned": plan.get("runs"),
            "train_runs": len(train_runs),
            "train_hours": round(sum(r.hours for r in train_runs), 3),
            "val_runs": len(val_runs),
            "epochs": fitinfo["epochs_run"],
            "seconds": round(fitinfo["seconds"], 1),
            "seed": a.seed,
            "label_horizon_ms": a.label_horizon_ms or a.horizon_ms,
            "ahead_weight": getattr(a, "ahead_weight", 1.0),
            "threshold_on": a.threshold_on,
            "torch": torch.__version__,
        },
        "validation": {k: v for k, v in val_scores.items() if k != "by"},
    }


if __name__ == "__main__":
    sys.exit(main())
