"""The picture of a run: training reward, validation cover-EM and F1, noise probability and searches per
trajectory over the steps, from the run's metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Write a 2x2 PNG of the run's curves (default: <run_dir>/curves.png) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    (a, b), (c, d) = ax
    x, y = _series(rows, "critic/score/mean")
    a.plot(x, y, color="tab:blue", alpha=0.35, lw=1, label="per step")
    if len(y) >= 5:
        k = max(5, len(y) // 20)
        smooth = [sum(y[max(0, i - k + 1):i + 1]) / len(y[max(0, i - k + 1):i + 1]) for i in range(len(y))]
        a.plot(x, smooth, color="tab:blue", lw=2, label=f"mean of {k}")
    a.set(title="training reward (F1, simulated search)", xlabel="step", ylim=(0, 1))
    a.legend(loc="lower right")
    for key, label, style in (("val/cover_em/all", "cover-EM, real BM25", "o-"), ("val/f1/all", "F1, real BM25", "s--"),
                              ("val_noise_0/cover_em", "cover-EM, simulator p=0", "^:"),
                              ("val_noise_0.5/cover_em", "cover-EM, simulator p=0.5", "v:")):
        x, y = _series(rows, key)
        if x:
            b.plot(x, y, style, label=label)
    b.set(title="validation (held-out countries, greedy)", xlabel="step", ylim=(0, 1))
    b.legend(loc="lower right", fontsize=8)
    x, y = _series(rows, "search/noise_prob")
    c.plot(x, y, color="tab:red")
    c.set(title="curriculum: probability of noisy documents", xlabel="step", ylim=(0, 1))
    for key, label in (("env/searches/mean", "training rollouts"), ("val/env/searches/mean", "validation, real search"),
                       ("val_noise_0/searches", "validation, simulator p=0"),
                       ("val_noise_0.5/searches", "validation, simulator p=0.5")):
        x, y = _series(rows, key)
        if x:
            d.plot(x, y, "-" if key.startswith("env") else "o--", label=label)
    d.set(title="searches per trajectory", xlabel="step")
    d.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"ZeroSearch in miniature: {Path(run_dir).name}")
    fig.tight_layout()
    out = out or Path(run_dir) / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
