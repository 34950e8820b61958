"""Plot of `cargo xtask bench scale`: the agent's CPU against sockets, one line per service count.

Usage: plot.py agent-scaling.json agent-scaling.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    doc = json.load(open(src))
    pts = doc["points"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for s in sorted({p["services"] for p in pts}):
        row = sorted((p["sockets"], p["agent_cpu_pct"]) for p in pts if p["services"] == s)
        ax.plot([r[0] for r in row], [r[1] for r in row], marker="o", label=f"{s} services")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="target: 1% (36 services, 10k sockets)")
    ax.set_xscale("log")
    ax.set_xlabel("TCP sockets in the namespace (both ends of loopback connections)")
    ax.set_ylabel("agent CPU, % of one core")
    ax.set_title(f"seer-agent at {doc['tick_ms']} ms ticks, kernel {doc['kernel']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
