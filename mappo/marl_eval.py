"""Benchmark results in marl-eval's JSON layout (InstaDeep's ``marl-eval``, Gorsane et al. 2022,
arXiv 2209.10485; BenchMARL and Mava write it too), and the per-run scores the statistics take::

    {env: {task: {algorithm: {"run_<seed>": {
        "step_0": {"step_count": 0, "return": [E returns], "episode_length": [E lengths]},
        ...
        "step_<K-1>": {...},
        "absolute_metrics": {"return": [10 x E returns], "episode_length": [...]}}}}}}

Each ``step_<k>`` is one evaluation during training, with each of its E episodes' numbers; the
``absolute_metrics`` re-evaluate the run's best checkpoint (``best.pt``) on ten times as many
episodes.  ``return`` is the task's metric per episode: the team's return (the sum over agents) or
one agent's (the mean over agents), as the suite's ``metric`` says.

Files from other frameworks in this layout can be set beside ours (``mappo benchmark --compare``);
:func:`check_layout` says what is wrong with one that is not.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

# the suite's metric -> the per-episode list of evaluations.jsonl that holds it
PER_EPISODE = {"eval/team_return_mean": "team_return", "eval/agent_return_mean": "agent_return"}
# per-episode outcomes an env may report (SMAX's win), carried under their own names; an
# evaluation holds them as ``info/<name>`` (runs written before the info metrics: ``<name>``)
OUTCOMES = ("won",)
ABSOLUTE = "absolute_metrics.json"  # in a run folder: `mappo eval best.pt --out` on 10x the episodes


def run_layout(run_dir: str, metric: str) -> Dict[str, Any]:
    """One run's ``{"step_k": ..., "absolute_metrics": ...}`` from its evaluations.jsonl (and its
    absolute_metrics.json when the run has one)."""
    from .logger import EVALUATIONS
    from .plot import read_metrics

    if metric not in PER_EPISODE:
        raise ValueError(f"marl-eval export: metric must be one of {sorted(PER_EPISODE)}, got {metric!r}")
    key = PER_EPISODE[metric]
    run: Dict[str, Any] = {}
    rows = read_metrics(run_dir, EVALUATIONS) if os.path.isfile(os.path.join(run_dir, EVALUATIONS)) else []
    for k, row in enumerate(sorted(rows, key=lambda r: r["env_steps"])):
        run[f"step_{k}"] = {"step_count": int(row["env_steps"]), **_metrics(row, key)}
    path = os.path.join(run_dir, ABSOLUTE)
    if os.path.isfile(path):
        with open(path) as f:
            run["absolute_metrics"] = _metrics(json.load(f)["per_episode"], key)
    return run


def _metrics(episodes: Dict[str, Any], key: str) -> Dict[str, List[float]]:
    """One evaluation's per-episode lists under marl-eval's names: ``return`` (the suite's metric),
    ``episode_length`` and the outcomes the env reported."""
    out = {"return": episodes[key], "episode_length": episodes["episode_length"]}
    for name in OUTCOMES:
        values = episodes.get(f"info/{name}", episodes.get(name))
        if values is not None:  # an episode that reported no outcome (cut short) is not a win
            out[name] = [0.0 if v is None else v for v in values]
    return out


def check_layout(data: Any, source: str = "marl-eval data") -> None:
    """Raise a ValueError naming the first place where ``data`` leaves the layout."""
    def fail(where: str, what: str) -> None:
        raise ValueError(f"{source}: {where}: {what}")

    if not isinstance(data, dict) or not data:
        fail("top level", "expected {env: {task: {algorithm: {run: {step: metrics}}}}}")
    for env, tasks in data.items():
        if not isinstance(tasks, dict) or not tasks:
            fail(env, "expected {task: ...}")
        for task, algorithms in tasks.items():
            if not isinstance(algorithms, dict) or not algorithms:
                fail(f"{env}/{task}", "expected {algorithm: ...}")
            for algorithm, runs in algorithms.items():
                if not isinstance(runs, dict) or not runs:
                    fail(f"{env}/{task}/{algorithm}", "expected {run: ...}")
                for run, steps in runs.items():
                    where = f"{env}/{task}/{algorithm}/{run}"
                    if not isinstance(steps, dict):
                        fail(where, "expected {step_k: metrics, absolute_metrics: metrics}")
                    for step, metrics in steps.items():
                        if step != "absolute_metrics" and not step.startswith("step_"):
                            fail(f"{where}/{step}", "keys are step_<k> or absolute_metrics")
                        if not isinstance(metrics, dict):
                            fail(f"{where}/{step}", "expected {metric: [per-episode values]}")
                        if step != "absolute_metrics" and not isinstance(metrics.get("step_count"), int):
                            fail(f"{where}/{step}", "needs an int step_count")
                        for name, values in metrics.items():
                            if name == "step_count":
                                continue
                            if not isinstance(values, list) or not values or \
                                    not all(isinstance(v, (int, float)) for v in values):
                                fail(f"{where}/{step}/{name}", "expected a non-empty list of numbers")


def read(path: str) -> Dict[str, Any]:
    """A marl-eval JSON file, checked."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"marl-eval file {path!r} not found")
    with open(path) as f:
        data = json.load(f)
    check_layout(data, path)
    return data


def merge(*datasets: Dict[str, Any]) -> Dict[str, Any]:
    """One layout from several; the same env/task/algorithm/run in two of them is an error."""
    out: Dict[str, Any] = {}
    for data in datasets:
        for env, tasks in data.items():
            for task, algorithms in tasks.items():
                for algorithm, runs in algorithms.items():
                    mine = out.setdefault(env, {}).setdefault(task, {}).setdefault(algorithm, {})
                    twice = sorted(set(mine) & set(runs))
                    if twice:
                        raise ValueError(f"{env}/{task}/{algorithm}: runs {twice} are given twice")
                    mine.update(runs)
    return out


def metric_names(data: Dict[str, Any]) -> set:
    """Every metric any step or absolute metric of ``data`` holds (``step_count`` aside)."""
    return {name for tasks in data.values() for algorithms in tasks.values() for runs in algorithms.values()
            for run in runs.values() for step in run.values() for name in step if name != "step_count"}


def final_score(run: Dict[str, Any], metric: str = "return", absolute: bool = True) -> Optional[float]:
    """A run's score: the mean of its absolute metric (the best checkpoint on 10x the episodes)
    when ``absolute`` and it has one, else of its last evaluation; None when it has neither."""
    if absolute and metric in run.get("absolute_metrics", {}):
        return float(np.mean(run["absolute_metrics"][metric]))
    steps = [s for k, s in run.items() if k.startswith("step_") and metric in s]
    if not steps:
        return None
    return float(np.mean(max(steps, key=lambda s: s["step_count"])[metric]))


def all_absolute(algorithms: Dict[str, Any], metric: str = "return") -> bool:
    """Whether every run of every algorithm on a task has the absolute metric: only then are runs
    scored by it, so that no algorithm's best checkpoint is set against another's last evaluation."""
    return all(metric in r.get("absolute_metrics", {}) for runs in algorithms.values() for r in runs.values())


def score_matrices(data: Dict[str, Any], metric: str = "return") -> tuple[List[str], Dict[str, np.ndarray]]:
    """``(tasks, {algorithm: [R, T]})`` for the statistics: the tasks ("env/task") every algorithm
    ran, and each algorithm's final scores there (:func:`final_score`, absolute where
    :func:`all_absolute`), R the fewest runs that algorithm has on any of those tasks (its first
    R runs in key order on the others)."""
    per: Dict[str, Dict[str, List[float]]] = {}
    for env, tasks in data.items():
        for task, algorithms in tasks.items():
            absolute = all_absolute(algorithms, metric)
            for algorithm, runs in algorithms.items():
                scores = [final_score(r, metric, absolute) for _, r in sorted(runs.items())]
                per.setdefault(algorithm, {})[f"{env}/{task}"] = [s for s in scores if s is not None]
    common = sorted(set.intersection(*(set(t for t, s in tasks.items() if s) for tasks in per.values())))
    if not common:
        return [], {}
    runs = {a: min(len(per[a][t]) for t in common) for a in per}
    return common, {a: np.array([per[a][t][:runs[a]] for t in common]).T for a in sorted(per)}
