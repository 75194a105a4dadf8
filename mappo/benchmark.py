"""Multi-seed benchmark runs: a suite of configs x seeds, run a few at a time, resumable, then a table.

    mappo benchmark configs/benchmarks/epymarl.yaml --out runs/bench --jobs 2
    mappo benchmark configs/benchmarks/epymarl.yaml --out runs/bench --report   # table and plot only

A suite file names its seeds and tasks; each task is a training config plus the metric to report
and, optionally, the published figures to set beside ours::

    seeds: [0, 1, 2]
    tasks:
      - name: lbf_8x8_2p_2f_coop
        config: configs/benchmarks/lbf_8x8-2p-2f-coop.yaml
        metric: eval/team_return_mean        # or eval/agent_return_mean (one agent's copy)
        overrides: []                        # key=value, as on the command line
        published: {mappo: 1.00, mappo_ci: 0.0, ippo: 1.00, budget: 20000000}   # the paper's figures

Every run is ``mappo train CONFIG seed=S run_dir=OUT/<task>/seed<S>`` with one torch thread
(``OMP_NUM_THREADS=1``), started by a launcher (:mod:`mappo.launchers`): subprocesses here,
``--jobs`` at a time, or Ray tasks on a cluster (``--launcher ray``).  ``OUT/<task>/seed<S>.json``
records the command, the wall time, the attempts and whether the run finished; a run that fails
or is lost starts again from its checkpoint up to ``--retries`` times, then is reported.  Run the same command again after a stop
(Ctrl-C, SIGTERM, a crash, a reboot): finished runs are skipped, interrupted ones continue with
``mappo train --resume`` from their checkpoint (to the suite's budget), runs that never wrote
one start afresh.  A stopped run whose saved config differs from what its task's config now
gives (other than the budget) is an error naming the fields: it would mix two settings in one
curve.  Runs live in sessions of their own, so a runner killed outright (SIGKILL) leaves its
runs to finish on their own; a new runner then refuses their folders while they hold its lock.

The report reads the evaluations in the ``metrics.jsonl`` of each finished run (of the runs in
progress while none has finished) and writes ``OUT/results.md`` (mean
+- 95% CI over seeds of the maximum and average returns, :mod:`mappo.stats`) and
``OUT/results.png`` (mean +- CI against env steps, one panel per task).  It also writes the
finished runs in marl-eval's JSON layout (``OUT/marl_eval.json``, :mod:`mappo.marl_eval`), each
run's best checkpoint first re-evaluated on 10x its evaluation episodes (``absolute_metrics``),
and adds the field's statistics to results.md: the IQM of each task's runs with its bootstrap
interval and, where two algorithms ran the same tasks, the IQM over tasks, the probability of
improvement, performance profiles (``OUT/profiles.png``) and each algorithm's curves
(``OUT/comparison.png``).  ``--compare FILE.json`` sets another framework's runs in the same
layout beside ours::

    mappo benchmark configs/benchmarks/smax.yaml --out runs/smax --report --compare runs/smax/jaxmarl.json

A task may name where its runs go in that layout (``env_name``, ``task_name``, ``algorithm``;
by default the env family, the task's name, and mappo or ippo, or the config's ``algorithm``
when it is not ``ppo``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
from omegaconf import OmegaConf

from . import runfolder
from .files import written_atomically
from .launchers import Driving, Launcher, LocalLauncher, add_launcher_arguments, launcher_from_arguments, run_child
from .stats import curve_ci95, max_and_average


@dataclass
class Task:
    name: str
    config: str
    metric: str = "eval/team_return_mean"
    overrides: List[str] = field(default_factory=list)
    published: Dict[str, Any] = field(default_factory=dict)
    # where the runs go in the marl-eval layout (env -> task -> algorithm): by default the env
    # family of the config's env id, the task's name, and mappo (ippo when the critic is local; the
    # config's algorithm when it is not ppo)
    env_name: Optional[str] = None
    task_name: Optional[str] = None
    algorithm: Optional[str] = None

    def labels(self) -> tuple[str, str, str]:
        """``(env, task, algorithm)`` of this task's runs in the marl-eval layout."""
        from .config import Config
        from .registries import check_registered

        cfg = check_registered(Config.from_yaml(self.config, self.overrides))
        env = self.env_name or (cfg.env.split("/")[0] if "/" in cfg.env else cfg.env)
        algorithm = self.algorithm or (cfg.algorithm if cfg.algorithm != "ppo" else
                                       "ippo" if cfg.critic_input == "local" else "mappo")
        return env, self.task_name or self.name, algorithm


@dataclass
class Suite:
    seeds: List[int]
    tasks: List[Task]


def load_suite(path: str) -> Suite:
    """Read and check a suite file; paths of configs are relative to the working directory."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"suite file {path!r} not found")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(raw, dict) or set(raw) - {"seeds", "tasks"}:
        raise ValueError(f"suite {path!r}: expected the keys 'seeds' and 'tasks', got {sorted(raw or {})}")
    seeds = raw.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ValueError(f"suite {path!r}: 'seeds' must be a non-empty list of ints >= 0, got {seeds!r}")
    tasks = []
    for i, t in enumerate(raw.get("tasks") or []):
        if not isinstance(t, dict) or "name" not in t or "config" not in t:
            raise ValueError(f"suite {path!r}: task {i} needs 'name' and 'config', got {t!r}")
        unknown = set(t) - {"name", "config", "metric", "overrides", "published", "env_name", "task_name",
                            "algorithm"}
        if unknown:
            raise ValueError(f"suite {path!r}: task {t['name']!r} has unknown key(s) {sorted(unknown)}")
        published = t.get("published") or {}
        if not isinstance(published, dict) or set(published) - {"mappo", "mappo_ci", "ippo", "budget"}:
            raise ValueError(f"suite {path!r}: task {t['name']!r}: 'published' takes the keys mappo, mappo_ci, "
                             f"ippo and budget, got {published!r}")
        if not os.path.isfile(t["config"]):
            raise FileNotFoundError(f"suite {path!r}: task {t['name']!r}: config {t['config']!r} not found")
        tasks.append(Task(**t))
        _check_metric(tasks[-1], path)
    if not tasks:
        raise ValueError(f"suite {path!r} has no tasks")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"suite {path!r}: task names must be unique, got {names}")
    labels = [t.labels() for t in tasks]
    twice = sorted({"/".join(x) for x in labels if labels.count(x) > 1})
    if twice:
        raise ValueError(f"suite {path!r}: two tasks would write the same env/task/algorithm runs {twice}: "
                         "give them different env_name, task_name or algorithm")
    return Suite(seeds=list(seeds), tasks=tasks)


def select(suite: Suite, tasks: Optional[str], seeds: Optional[str]) -> Suite:
    """Restrict the suite to comma-separated task names and seeds (the CLI's --tasks and --seeds)."""
    chosen = suite.tasks
    if tasks:
        wanted = tasks.split(",")
        missing = [n for n in wanted if n not in {t.name for t in suite.tasks}]
        if missing:
            raise ValueError(f"--tasks: unknown task(s) {missing}; the suite has {[t.name for t in suite.tasks]}")
        chosen = [t for t in suite.tasks if t.name in wanted]
    try:
        chosen_seeds = [int(s) for s in seeds.split(",")] if seeds else suite.seeds
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {seeds!r}") from None
    return Suite(seeds=chosen_seeds, tasks=chosen)


# ---------------------------------------------------------------------------------------------
# running


def _check_metric(task: Task, path: str) -> None:
    """A task's metric is one the report can read, and its runs evaluate: found when the suite is
    read, not after every run has spent its budget."""
    from .config import Config
    from .marl_eval import PER_EPISODE

    where = f"suite {path!r}: task {task.name!r}"
    if task.metric not in PER_EPISODE:
        raise ValueError(f"{where}: 'metric' must be one of {sorted(PER_EPISODE)}, got {task.metric!r}")
    try:
        cfg = Config.from_yaml(task.config, task.overrides)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{where}: {err}") from err
    if not cfg.eval_every:
        raise ValueError(f"{where}: its metric {task.metric!r} comes from evaluations, but its config has "
                         f"eval_every=0; set eval_every in the config or the task's overrides")


def _record_path(out: str, task: Task, seed: int) -> str:
    return run_dir_of(out, task, seed) + ".json"


def run_dir_of(out: str, task: Task, seed: int) -> str:
    """``OUT/<task>/seed<S>``: the run folder; its record (.json) and log (.log) sit beside it."""
    return os.path.join(out, task.name, f"seed{seed}")


def _read_record(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _write_record(path: str, record: Dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)


def run_command(task: Task, seed: int, out: str) -> List[str]:
    """The ``mappo train`` command for one run: a fresh start, or ``--resume`` when the run folder
    already holds a checkpoint."""
    run_dir = run_dir_of(out, task, seed)
    base = [sys.executable, "-m", "mappo", "train"]
    common = ["progress=false"]
    if os.path.isfile(os.path.join(run_dir, "ckpt.pt")):
        from .config import Config

        # the budget comes from the suite, so that a run stopped early goes on to it
        total = Config.from_yaml(task.config, task.overrides).total_steps
        # the suite is the user's own file: an env it names as module:callable is their code
        return base + ["--resume", run_dir, f"total_steps={total}"] + common + ["--trust-env-code"]
    # a folder without a checkpoint holds nothing worth keeping (the run died before its first save)
    return base + [task.config, *task.overrides, f"seed={seed}", f"run_dir={run_dir}", "overwrite=true"] + common


# fields a resumed run may differ in from its task's config: the budget comes from the suite,
# and the rest are where and how the run is written, not what it trains
_RESUME_FREE = ("total_steps", "run_dir", "overwrite", "progress")


def check_resumable(task: Task, seed: int, out: str) -> None:
    """Refuse to continue a stopped run whose saved config differs from its task's config (say,
    a suite edited in between): the continued run would mix two settings in one curve."""
    run_dir = run_dir_of(out, task, seed)
    saved_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(os.path.join(run_dir, "ckpt.pt")) or not os.path.isfile(saved_path):
        return
    from .config import Config, changed_settings
    from .registries import check_registered

    saved = check_registered(Config.from_yaml(saved_path)).to_dict()
    wanted = check_registered(Config.from_yaml(task.config, [*task.overrides, f"seed={seed}"])).to_dict()
    changed = [k for k in changed_settings(saved, wanted) if k not in _RESUME_FREE]
    if changed:
        raise ValueError(f"{run_dir!r} was started with other settings than {task.config!r} now gives ("
                         + ", ".join(f"{k}: {saved.get(k)!r} -> {wanted[k]!r}" for k in changed)
                         + f"); delete {run_dir!r} and {_record_path(out, task, seed)!r} to run it again")


def start_log(task: Task, seed: int, out: str, command: List[str]) -> str:
    """Append the header of one attempt to the run's ``seed<S>.log``; its path."""
    path = run_dir_of(out, task, seed) + ".log"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(command)}\n")
    return path


def record_outcome(task: Task, seed: int, out: str, command: List[str], returncode: Optional[int], wall_s: float,
                   **extra: Any) -> Dict[str, Any]:
    """Add one attempt (its exit code, None when the run was lost with its worker, and wall time)
    to the run's record ``seed<S>.json``; the record."""
    path = _record_path(out, task, seed)
    record = _read_record(path)
    if "first_command" not in record:
        record["first_command"] = shlex.join(["mappo", "train", *command[4:]])
    record.update({"task": task.name, "seed": seed, "wall_s": record.get("wall_s", 0.0) + wall_s,
                   "done": returncode == 0, "attempts": record.get("attempts", 0) + 1,
                   "last_returncode": returncode, **extra})
    _write_record(path, record)
    return record


def pending_runs(suite: Suite, out: str) -> List[tuple]:
    """The (task, seed) runs not yet done, each checked to be resumable before any run starts."""
    pending = [(t, s) for t in suite.tasks for s in suite.seeds
               if not _read_record(_record_path(out, t, s)).get("done")]
    for task, seed in pending:
        check_resumable(task, seed, out)
    return pending


def run_suite(suite: Suite, out: str, jobs: int = 1, poll_s: float = 1.0, launcher: Optional[Launcher] = None,
              retries: int = 0) -> Dict[str, List[int]]:
    """Run every (task, seed) not yet done on ``launcher`` (default: ``jobs`` subprocesses here).
    A run that fails or is lost starts again (from its checkpoint) up to ``retries`` times.
    SIGINT/SIGTERM stops the runs, which checkpoint; the same call later picks them up.  Returns
    the runs that failed, by task."""
    if retries < 0:
        raise ValueError(f"--retries must be >= 0, got {retries}")
    pending = pending_runs(suite, out)
    launcher = launcher if launcher is not None else LocalLauncher(jobs)
    running: Dict[tuple, tuple] = {}  # (task name, seed) -> (task, command)
    attempts: Dict[tuple, int] = {}
    failed: Dict[str, List[int]] = {}
    # a run is driven by one runner at a time: two `mappo benchmark` calls on one OUT share the
    # runs between them, and neither writes a record over a run the other is driving
    claims: Dict[tuple, int] = {}

    def submit(task: Task, seed: int) -> None:
        key = (task.name, seed)
        if key not in claims:
            lock = run_dir_of(out, task, seed) + ".lock"
            os.makedirs(os.path.dirname(lock), exist_ok=True)
            fd = runfolder.hold(lock)
            if fd is None:
                print(f"[{time.strftime('%H:%M:%S')}] skip {task.name} seed {seed}: another mappo benchmark "
                      f"(pid {runfolder.holder(lock)}) is running it", flush=True)
                return
            claims[key] = fd
            if _read_record(_record_path(out, task, seed)).get("done"):  # finished by that other runner meanwhile
                runfolder.let_go(claims.pop(key))
                return
        command = run_command(task, seed, out)
        attempts[key] = attempts.get(key, 0) + 1
        again = f" (attempt {attempts[key]})" if attempts[key] > 1 else ""
        print(f"[{time.strftime('%H:%M:%S')}] start {task.name} seed {seed}{again}", flush=True)
        running[key] = (task, command)
        launcher.submit(key, command, start_log(task, seed, out, command))

    def finish(key: tuple, returncode: Optional[int], error: Optional[str], wall_s: float) -> Dict[str, Any]:
        task, command = running.pop(key)
        return record_outcome(task, key[1], out, command, returncode, wall_s, last_error=error)

    try:
        with Driving(launcher, finish) as driving:
            while (pending or running) and driving.signum is None:
                while pending and launcher.free() > 0:
                    submit(*pending.pop(0))
                for key, returncode, error, wall_s in launcher.wait(poll_s):
                    task = running[key][0]
                    record = finish(key, returncode, error, wall_s)
                    if record["done"]:
                        print(f"[{time.strftime('%H:%M:%S')}] done {task.name} seed {key[1]} "
                              f"({record['wall_s']:.0f} s in all)", flush=True)
                        continue
                    why = error or f"exit {returncode}"
                    if driving.signum is not None:
                        print(f"[{time.strftime('%H:%M:%S')}] stopped {task.name} seed {key[1]} ({why})", flush=True)
                    elif attempts[key] <= retries:
                        print(f"[{time.strftime('%H:%M:%S')}] {task.name} seed {key[1]} stopped ({why}): starting "
                              f"it again", flush=True)
                        pending.insert(0, (task, key[1]))
                    else:
                        print(f"[{time.strftime('%H:%M:%S')}] failed {task.name} seed {key[1]} ({why})", flush=True)
                        failed.setdefault(task.name, []).append(key[1])
    finally:
        for fd in claims.values():
            runfolder.let_go(fd)
    return failed


# ---------------------------------------------------------------------------------------------
# reporting


def absolute_metrics(task: Task, seed: int, out: str) -> Optional[str]:
    """Re-evaluate a finished run's best checkpoint on 10x its evaluation episodes (marl-eval's
    absolute metric) into ``<run>/absolute_metrics.json``, once; its path, or None when the run
    has no best.pt (it never evaluated)."""
    from . import marl_eval
    from .config import Config

    run_dir = run_dir_of(out, task, seed)
    path = os.path.join(run_dir, marl_eval.ABSOLUTE)
    best = os.path.join(run_dir, "best.pt")
    if os.path.isfile(path):
        return path
    if not os.path.isfile(best):
        return None
    cfg = Config.from_yaml(os.path.join(run_dir, "config.yaml"))
    command = [sys.executable, "-m", "mappo", "eval", best, "--episodes", str(10 * cfg.eval_episodes),
               "--out", path] + ([] if cfg.eval_deterministic else ["--stochastic"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(run_dir + ".log", "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(command)}\n")
        log.flush()
        returncode = run_child(command, log, env)
    if returncode != 0:
        print(f"mappo benchmark: the absolute metrics of {run_dir} failed (see {run_dir}.log)", file=sys.stderr)
        return None
    return path


def marl_eval_data(suite: Suite, out: str) -> Dict[str, Any]:
    """The suite's finished runs in marl-eval's layout (:mod:`mappo.marl_eval`), their absolute
    metrics computed first where missing."""
    from . import marl_eval

    data: Dict[str, Any] = {}
    for task in suite.tasks:
        env, task_name, algorithm = task.labels()
        for seed in suite.seeds:
            if not _read_record(_record_path(out, task, seed)).get("done"):
                continue
            absolute_metrics(task, seed, out)
            run = marl_eval.run_layout(run_dir_of(out, task, seed), task.metric)
            if run:
                data.setdefault(env, {}).setdefault(task_name, {}).setdefault(algorithm, {})[f"run_{seed}"] = run
    return data


def eval_curves(run_dirs: List[str], metric: str) -> tuple[np.ndarray, np.ndarray, List[str]]:
    """``(env_steps [K], returns [S, K], used_dirs)``: the evaluations every run has (their common
    env steps), so that seeds are compared at the same points."""
    from .plot import read_metrics

    per_run = {}
    for d in run_dirs:
        if not os.path.isfile(os.path.join(d, "metrics.jsonl")):
            continue
        points = {r["env_steps"]: r[metric] for r in read_metrics(d) if r.get(metric) is not None}
        if points:
            per_run[d] = points
    if not per_run:
        return np.zeros(0), np.zeros((0, 0)), []
    steps = sorted(set.intersection(*(set(p) for p in per_run.values())))
    returns = np.array([[p[s] for s in steps] for p in per_run.values()], dtype=np.float64)
    return np.array(steps, dtype=np.int64), returns, list(per_run)


def _fmt(mean: float, ci: float, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean:.{digits}f}"
    return text if ci is None or math.isnan(ci) else f"{text} ± {ci:.{digits}f}"


def _digits(values: List[float]) -> int:
    scale = max([abs(v) for v in values if v is not None and math.isfinite(v)] or [1.0])
    return 3 if scale < 2 else 2 if scale < 100 else 1


def report(suite: Suite, out: str, compare: List[str] = (), reps: int = 50_000) -> str:
    """The markdown table of every task with finished evaluations, then the field's statistics
    (:func:`statistics_section`) over the finished runs and the marl-eval files in ``compare``
    (other frameworks' runs of the same tasks).  Writes results.md, results.png, marl_eval.json
    (the suite's runs alone) and profiles.png."""
    from .config import Config

    lines = ["| task | metric | published MAPPO max (IPPO) | ours: max | ours: average | at env steps | seeds "
             "| budget | wall time per run |",
             "|---|---|---|---|---|---|---|---|---|"]
    panels = []
    for task in suite.tasks:
        records = {seed: _read_record(_record_path(out, task, seed)) for seed in suite.seeds}
        # finished runs only, so that a run just started does not cut the others' curves short;
        # while none has finished, the runs in progress (marked "unfinished")
        finished = [seed for seed in suite.seeds if records[seed].get("done")]
        dirs = [run_dir_of(out, task, s) for s in (finished or suite.seeds)]
        steps, returns, used = eval_curves(dirs, task.metric)
        pub = task.published or {}
        digits = _digits([pub.get("mappo")] + (returns.ravel().tolist() if returns.size else []))
        published = _fmt(pub.get("mappo"), pub.get("mappo_ci"), digits) if "mappo" in pub else "-"
        if "ippo" in pub:
            published += f" ({pub['ippo']:.{digits}f})"
        if not used:
            lines.append(f"| {task.name} | {task.metric.removeprefix('eval/')} | {published} | not run | | | 0 | | |")
            continue
        s = max_and_average(returns)
        walls = [records[seed]["wall_s"] for seed in finished]
        wall = f"{np.mean(walls) / 60:.1f} min" if walls else "unfinished"
        budget = f"{Config.from_yaml(task.config, task.overrides).total_steps:,}"
        if "budget" in pub:
            budget += f" (paper: {pub['budget']:,})"
        done_steps = int(steps[-1])
        lines.append(
            f"| {task.name} | {task.metric.removeprefix('eval/')} | {published} | "
            f"{_fmt(s['max_mean'], s['max_ci'], digits)} | {_fmt(s['average_mean'], s['average_ci'], digits)} | "
            f"{int(steps[s['max_index']]):,} (of {done_steps:,}) | {len(used)} | {budget} | {wall} |")
        panels.append((task, steps, returns))
    table = "\n".join(lines)
    os.makedirs(out, exist_ok=True)
    if panels:
        _plot(panels, os.path.join(out, "results.png"))
    from . import marl_eval

    ours = marl_eval_data(suite, out)
    if ours:
        with written_atomically(os.path.join(out, "marl_eval.json")) as tmp, open(tmp, "w") as f:
            json.dump(ours, f)
    data = marl_eval.merge(ours, *(marl_eval.read(path) for path in compare))
    if data:
        try:
            table += "\n\n" + statistics_section(data, out, reps)
        except ImportError as err:  # rliable is an extra; the table above stands without it
            table += f"\n\n(no aggregate statistics: {err})"
    with written_atomically(os.path.join(out, "results.md")) as tmp, open(tmp, "w") as f:
        f.write(table + "\n")
    return table


def _interval(est: Dict[str, np.ndarray], digits: int) -> str:
    point, low, high = (float(np.ravel(est[k])[0]) for k in ("point", "low", "high"))
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def statistics_section(data: Dict[str, Any], out: str, reps: int = 50_000) -> str:
    """Markdown of the field's statistics over ``data`` (marl-eval layout): per task and algorithm
    the IQM of the runs' scores with its 95% bootstrap interval; with two algorithms or more on
    the same tasks, the IQM of task-normalised scores over all tasks (stratified bootstrap), the
    probability of improvement of each pair, and performance profiles (``OUT/profiles.png``)."""
    from . import marl_eval, stats

    metrics = ["return"] + (["won"] if "won" in marl_eval.metric_names(data) else [])
    lines = ["Scores: each run's best checkpoint re-evaluated on 10x the evaluation episodes (\"best\"), where "
             "every run of the task has it, else each run's last evaluation (\"last\"); IQM over runs with its "
             f"95% bootstrap interval ({reps:,} resamples; rliable).", "",
             "| env/task | algorithm | runs | " + " | ".join(f"IQM {m} [95% CI]" for m in metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for env, tasks in sorted(data.items()):
        for task, algorithms in sorted(tasks.items()):
            for algorithm, runs in sorted(algorithms.items()):
                cells = []
                for m in metrics:
                    absolute = marl_eval.all_absolute(algorithms, m)
                    scores = [s for s in (marl_eval.final_score(r, m, absolute) for r in runs.values())
                              if s is not None]
                    if not scores:
                        cells.append("-")
                        continue
                    x = np.array(scores)[:, None]
                    cells.append(_interval(stats.interval_estimates({algorithm: x}, reps=reps)[algorithm],
                                           _digits(scores)) + (" best" if absolute else " last"))
                lines.append(f"| {env}/{task} | {algorithm} | {len(runs)} | " + " | ".join(cells) + " |")
    profiles = {}
    for m in metrics:
        tasks, matrices = marl_eval.score_matrices(data, m)
        if len(matrices) < 2:
            continue
        normalised = matrices if m == "won" else stats.normalise_per_task(matrices)
        scale = "win rate" if m == "won" else "return, min-max normalised per task over all runs"
        lines += ["", f"Over {len(tasks)} task(s) ({', '.join(tasks)}), {scale}: IQM with its 95% "
                  "stratified-bootstrap interval", "", "| algorithm | runs per task | IQM [95% CI] |", "|---|---|---|"]
        estimates = stats.interval_estimates(normalised, reps=reps)
        lines += [f"| {a} | {normalised[a].shape[0]} | {_interval(estimates[a], 3)} |" for a in sorted(normalised)]
        lines += ["", "| X | Y | P(X > Y) [95% CI] |", "|---|---|---|"]
        names = sorted(normalised)
        for i, x in enumerate(names):
            for y in names[i + 1:]:
                poi = stats.probability_of_improvement_ci(normalised[x], normalised[y], reps=min(reps, 2_000))
                lines.append(f"| {x} | {y} | {poi['point']:.2f} [{poi['low']:.2f}, {poi['high']:.2f}] |")
        taus = np.linspace(0.0, 1.0, 41)
        profiles[m] = (taus, stats.interval_estimates(
            normalised, statistic=lambda s: stats.performance_profile(s, taus), reps=min(reps, 2_000)))
    if profiles:
        _plot_profiles(profiles, os.path.join(out, "profiles.png"))
        _plot_marl_eval_curves(data, metrics, os.path.join(out, "comparison.png"))
        lines += ["", "Performance profiles: profiles.png; each algorithm's curves: comparison.png"]
    return "\n".join(lines)


def _plot_marl_eval_curves(data: Dict[str, Any], metrics: List[str], path: str) -> None:
    """One panel per task and metric: each algorithm's mean over runs of the per-step mean (the
    runs interpolated onto the steps of the first one, up to the last step every run reached),
    shaded between its lowest and highest run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import save_figure

    tasks = [(env, task, algorithms) for env, ts in sorted(data.items()) for task, algorithms in sorted(ts.items())]
    fig, axes = plt.subplots(len(tasks), len(metrics), figsize=(4.8 * len(metrics), 3.2 * len(tasks)), squeeze=False)
    for row, (env, task, algorithms) in enumerate(tasks):
        for col, metric in enumerate(metrics):
            ax = axes[row, col]
            for algorithm, runs in sorted(algorithms.items()):
                curves = []
                for run in runs.values():
                    points = sorted((p["step_count"], float(np.mean(p[metric])))
                                    for k, p in run.items() if k.startswith("step_") and metric in p)
                    if points:
                        curves.append(np.array(points))
                if not curves:
                    continue
                end = min(c[-1, 0] for c in curves)
                steps = curves[0][curves[0][:, 0] <= end, 0]
                ys = np.stack([np.interp(steps, c[:, 0], c[:, 1]) for c in curves])
                line, = ax.plot(steps, ys.mean(0), label=f"{algorithm} ({len(curves)} runs)")
                ax.fill_between(steps, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
            ax.set_title(f"{env}/{task}", fontsize=9)
            ax.set_xlabel("env steps")
            ax.set_ylabel("win rate" if metric == "won" else metric)
            ax.legend(fontsize=7)
    save_figure(fig, path, dpi=110)


def _plot_profiles(profiles: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import save_figure

    fig, axes = plt.subplots(1, len(profiles), figsize=(4.8 * len(profiles), 3.6), squeeze=False)
    for ax, (metric, (taus, estimates)) in zip(axes.ravel(), profiles.items()):
        for name, est in sorted(estimates.items()):
            ax.plot(taus, est["point"], label=name)
            ax.fill_between(taus, est["low"], est["high"], alpha=0.2)
        ax.set_xlabel(("win rate" if metric == "won" else "normalised return") + r" $\tau$")
        ax.set_ylabel(r"fraction of runs with score > $\tau$")
        ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def _plot(panels, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import save_figure

    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, (task, steps, returns) in zip(axes.ravel(), panels):
        mean, half = curve_ci95(returns)
        half = np.nan_to_num(half)
        ax.plot(steps, mean, label=f"mappo ({returns.shape[0]} seeds)")
        ax.fill_between(steps, mean - half, mean + half, alpha=0.25)
        if "mappo" in (task.published or {}):
            ax.axhline(task.published["mappo"], color="k", ls="--", lw=1, label="published MAPPO max")
        ax.set_title(task.name, fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel(task.metric.removeprefix("eval/"))
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    save_figure(fig, path, dpi=110)


def benchmark_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mappo benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", help="suite file, e.g. configs/benchmarks/epymarl.yaml")
    parser.add_argument("--out", default="runs/benchmark", help="folder for the runs and the report")
    parser.add_argument("--jobs", type=int, default=max(1, os.cpu_count() or 1),
                        help="runs at a time, each with one torch thread (default: the CPU count)")
    parser.add_argument("--tasks", help="comma-separated task names (default: all)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the suite's)")
    parser.add_argument("--report", action="store_true", help="only write the table and plot from runs on disk")
    parser.add_argument("--compare", action="append", default=[], metavar="FILE.json",
                        help="set another framework's runs (a marl-eval JSON file) beside ours in the statistics; "
                             "repeatable")
    parser.add_argument("--reps", type=int, default=50_000, help="bootstrap resamples of the statistics")
    add_launcher_arguments(parser)
    parser.add_argument("--retries", type=int, default=None,
                        help="attempts after a run fails or is lost, each from its checkpoint (default: 1 with "
                             "--launcher ray, 0 locally)")
    return parser


def benchmark_main(argv: List[str]) -> int:
    parser = benchmark_parser()
    args = parser.parse_args(argv)
    if args.retries is None:
        args.retries = 1 if args.launcher == "ray" else 0
    if args.retries < 0:
        parser.error(f"--retries must be >= 0, got {args.retries}")
    if args.reps < 1:
        parser.error(f"--reps (bootstrap resamples) must be >= 1, got {args.reps}")
    suite = select(load_suite(args.suite), args.tasks, args.seeds)
    from . import marl_eval

    for path in args.compare:  # a bad file fails now, not after hours of runs
        marl_eval.read(path)
    failed = {}
    if not args.report:
        launcher = launcher_from_arguments(parser, args, argv)
        try:
            failed = run_suite(suite, args.out, launcher=launcher, retries=args.retries)
        except KeyboardInterrupt as stop:
            print(f"mappo benchmark: {stop}", file=sys.stderr)
            return 130
    print(report(suite, args.out, args.compare, args.reps))
    written = [n for n in ("results.md", "results.png", "marl_eval.json", "profiles.png", "comparison.png")
               if os.path.isfile(os.path.join(args.out, n))]
    print(f"\nwrote {', '.join(written)} in {args.out}", file=sys.stderr)
    if failed:
        print(f"mappo benchmark: failed runs (see their seed<S>.log): {failed}", file=sys.stderr)
        return 1
    return 0
