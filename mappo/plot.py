"""Learning curves from run folders (``metrics.jsonl``): mean +- std across seeds.

Used by ``scripts/plot.py`` (many runs, one figure) and by the Trainer, which refreshes
``<run_dir>/curves.png`` during a run.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .files import written_atomically


def read_metrics(run_dir: str, name: str = "metrics.jsonl") -> List[Dict]:
    """Rows of ``<run_dir>/metrics.jsonl`` (or of ``evaluations.jsonl``, each evaluation's episodes);
    a line cut short by a crash is skipped."""
    path = os.path.join(run_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {name} in {run_dir!r}: is it a mappo run folder?")
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def curve(rows: Sequence[Dict], key: str = "team_return", smooth: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """``(env_steps, value)`` of the rows that have ``key``, with a trailing moving average over
    ``smooth`` points (training returns are noisy: one iteration sees a few dozen episodes)."""
    pts = [(r["env_steps"], r[key]) for r in rows if r.get(key) is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    x, y = (np.asarray(v, dtype=float) for v in zip(*pts))
    if smooth > 1:
        c = np.cumsum(np.insert(y, 0, 0.0))
        n = np.minimum(np.arange(1, len(y) + 1), smooth)
        y = (c[1:] - c[np.arange(1, len(y) + 1) - n]) / n
    return x, y


def mean_std(curves: Sequence[Tuple[np.ndarray, np.ndarray]], points: int = 200
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolate each ``(x, y)`` onto a common grid over the steps all runs cover -> (x, mean, std)."""
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(0), ys.std(0)


def final_return(run_dir: str, key: str = "team_return", tail: float = 0.1) -> float:
    """The run's final team return: ``eval.json``'s deterministic mean when the folder has one,
    else the mean training return over the last ``tail`` fraction of iterations."""
    path = os.path.join(run_dir, "eval.json")
    if os.path.isfile(path):
        with open(path) as f:
            return float(json.load(f)["team_return_mean"])
    _, y = curve(read_metrics(run_dir), key)
    if not len(y):
        return float("nan")
    return float(y[-max(1, int(len(y) * tail)):].mean())


def key_label(key: str) -> str:
    """A legend label for a metric key: "team_return" is "training", "eval/team_return_mean"
    "evaluation", and an agent group's keys ("adversaries/team_return",
    "eval/adversaries/team_return_mean") add the group's name."""
    parts = key.split("/")
    kind = "evaluation" if parts[0] == "eval" else "training"
    parts = parts[1:] if parts[0] == "eval" else parts
    return f"{parts[0]}, {kind}" if len(parts) > 1 else kind


def plot_groups(groups: Dict[str, List[str]], out: str, key: str = "team_return", smooth: int = 10,
                title: Optional[str] = None, keys: Optional[Sequence[str]] = None) -> None:
    """One line per group (label -> run folders) and key: mean +- std across its runs, saved as
    PNG.  ``keys`` (default ``[key]``) may add e.g. "eval/team_return_mean", the periodic
    evaluations, drawn unsmoothed; a key no run has is left out."""
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    keys = list(keys or [key])
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, runs in groups.items():
        rows = [read_metrics(r) for r in runs]
        for k in keys:
            x, mean, std = mean_std([curve(r, k, 1 if k.startswith("eval/") else smooth) for r in rows])
            if not len(x):
                continue
            name = label if len(keys) == 1 else f"{label}: {key_label(k)}"
            line, = ax.plot(x, mean, label=f"{name} (n={len(runs)})", linestyle="--" if k.startswith("eval/") else "-")
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("env steps")
    measure = keys[0].split("/")[-1].removesuffix("_mean").replace("_", " ")  # "adversaries/team_return": team return
    ax.set_ylabel(measure)
    ax.set_title(title or measure)
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(loc="lower right")
    save_figure(fig, out)


def save_figure(fig: Any, path: str, dpi: Optional[int] = None) -> None:
    """Write ``fig`` to ``path`` whole (a viewer never sees half a file), then close it."""
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with written_atomically(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
