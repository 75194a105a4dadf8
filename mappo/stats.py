"""Statistics over seeds for benchmark tables: pure functions on numpy arrays.

EPyMARL's protocol (Papoudakis et al. 2021, Sec. 4): each seed's run is evaluated K times during
training.  From the returns ``[S seeds, K evaluations]``:

* the **maximum return** takes the evaluation where the mean over seeds is highest and reports
  the mean over seeds there, with its 95% confidence interval;
* the **average return** is each seed's mean over all K evaluations, then the mean over seeds,
  with its 95% confidence interval.

The interval is Student's t over seeds: mean +- t(0.975, S-1) * std(ddof=1) / sqrt(S).  (The paper
does not say how it computed its intervals; t is the standard choice for 3 to 10 seeds, where
1.96 * std / sqrt(S) would be too narrow.)  One seed has no interval: its half-width is NaN.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
from scipy import stats as _scipy_stats


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """``(mean, half_width)`` of the 95% Student-t interval of the mean of ``values [S]``."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"mean_ci95: non-finite values {x.tolist()}")
    if x.size == 1:
        return float(x[0]), float("nan")
    half = _scipy_stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def max_and_average(returns: np.ndarray) -> Dict[str, float]:
    """EPyMARL's maximum and average returns from ``returns [S, K]`` (seeds x evaluations).

    Returns ``max_mean``, ``max_ci`` (half-width), ``max_index`` (the evaluation, 0-based),
    ``average_mean`` and ``average_ci``.  A tie for the best evaluation takes the first."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] < 1:
        raise ValueError(f"returns must be [seeds, evaluations] with both >= 1, got shape {r.shape}")
    best = int(np.argmax(r.mean(axis=0)))
    max_mean, max_ci = mean_ci95(r[:, best])
    avg_mean, avg_ci = mean_ci95(r.mean(axis=1))
    return {"max_mean": max_mean, "max_ci": max_ci, "max_index": best, "average_mean": avg_mean,
            "average_ci": avg_ci}


def curve_ci95(returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [K], half_width [K])`` over seeds at each evaluation of ``returns [S, K]``."""
    r = np.asarray(returns, dtype=np.float64)
    pairs = [mean_ci95(r[:, k]) for k in range(r.shape[1])]
    return np.array([m for m, _ in pairs]), np.array([h for _, h in pairs])
