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

The field's aggregate statistics (Agarwal et al. 2021, arXiv 2108.13264; for MARL, Gorsane et al. 2022,
arXiv 2209.10485, whose marl-eval tool BenchMARL and Mava write for) work on ``scores [R runs, T tasks]``,
one matrix per algorithm, and come from ``rliable`` (the ``stats`` extra):

* the **interquartile mean** (IQM): the mean of the middle 50% of all R x T scores;
* its 95% interval by the **stratified bootstrap**: runs are resampled within each task;
* the **probability of improvement** P(X > Y): for each task the chance that a run of X beats a run
  of Y (ties count half: the Mann-Whitney U over R_x x R_y pairs), averaged over tasks;
* the **performance profile**: the fraction of all runs x tasks whose score exceeds tau, for each tau.

Returns on different tasks are put on one scale first by :func:`normalise_per_task` (min-max over
every algorithm's runs of the task, as marl-eval's ``data_process_pipeline`` does).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Sequence

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


# ---------------------------------------------------------------------------------------------
# aggregate statistics over runs and tasks (rliable)


def _rliable() -> Any:
    try:
        from rliable import library, metrics
    except ImportError as err:
        raise ImportError("the aggregate statistics (IQM, probability of improvement, performance profiles) "
                          "need rliable: pip install 'mappo[stats]'") from err
    return library, metrics


def _scores(scores: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    out = {}
    tasks = None
    for name, x in scores.items():
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"scores of {name!r} must be [runs, tasks] with both >= 1, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"scores of {name!r} hold non-finite values")
        if tasks is not None and x.shape[1] != tasks:
            raise ValueError(f"every algorithm needs the same tasks: {name!r} has {x.shape[1]}, others {tasks}")
        tasks = x.shape[1]
        out[name] = x
    if not out:
        raise ValueError("no scores")
    return out


def normalise_per_task(scores: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Each task's scores mapped to [0, 1] by the min and max over every algorithm's runs of it;
    a task where all runs score the same maps to 0.  ``{alg: [R, T]}`` -> the same shapes."""
    scores = _scores(scores)
    stacked = np.concatenate(list(scores.values()), axis=0)
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return {name: (x - low) / span for name, x in scores.items()}


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all scores of ``[R, T]``: the mean after dropping the lowest and the
    highest 25% (scipy's trim_mean, which rliable's ``aggregate_iqm`` calls)."""
    _, metrics = _rliable()
    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=np.float64)))


def interval_estimates(scores: Dict[str, np.ndarray], statistic: Callable[[np.ndarray], Any] = None,
                       reps: int = 50_000, seed: int = 0) -> Dict[str, Dict[str, np.ndarray]]:
    """``{alg: {"point": value(s), "low": ..., "high": ...}}``: ``statistic`` (default the IQM) of
    each algorithm's ``[R, T]`` scores and its 95% stratified-bootstrap percentile interval."""
    library, metrics = _rliable()
    scores = _scores(scores)
    func = statistic or (lambda x: np.array([metrics.aggregate_iqm(x)]))
    with warnings.catch_warnings():  # arch's note that random_state will become a Generator
        warnings.simplefilter("ignore", FutureWarning)
        point, interval = library.get_interval_estimates(scores, func, reps=reps,
                                                         random_state=np.random.RandomState(seed))
    return {name: {"point": np.asarray(point[name]), "low": np.asarray(interval[name][0]),
                   "high": np.asarray(interval[name][1])} for name in scores}


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y): for each task the fraction of (run of X, run of Y) pairs that X wins, ties
    counting half, averaged over tasks.  ``x [Rx, T]``, ``y [Ry, T]``."""
    _, metrics = _rliable()
    pair = _scores({"x": x, "y": y})
    return float(metrics.probability_of_improvement(pair["x"], pair["y"]))


def probability_of_improvement_ci(x: np.ndarray, y: np.ndarray, reps: int = 2_000,
                                  seed: int = 0) -> Dict[str, float]:
    """:func:`probability_of_improvement` with its 95% stratified-bootstrap interval (both
    algorithms' runs resampled within each task)."""
    library, metrics = _rliable()
    pair = _scores({"x": x, "y": y})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        point, interval = library.get_interval_estimates(
            {"x,y": [pair["x"], pair["y"]]}, lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
            reps=reps, random_state=np.random.RandomState(seed))
    return {"point": float(point["x,y"][0]), "low": float(interval["x,y"][0][0]),
            "high": float(interval["x,y"][1][0])}


def performance_profile(scores: np.ndarray, taus: Sequence[float]) -> np.ndarray:
    """``[len(taus)]``: the fraction of all runs x tasks of ``scores [R, T]`` scoring above each tau
    (rliable's run-score distribution)."""
    library, _ = _rliable()
    return np.asarray(library.score_distributions(np.asarray(scores, dtype=np.float64), np.asarray(taus)))
