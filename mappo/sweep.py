"""Hyperparameter search: ``mappo sweep SPACE.yaml`` samples configs with Optuna and trains each.

    mappo sweep configs/sweeps/matrix_climbing.yaml --out runs/sweep --jobs 2
    mappo sweep SPACE.yaml --out /shared/runs/sweep --launcher ray --address auto --storage postgresql://...

A space file names a base config, what to search and how to score a run::

    config: configs/mpe_simple_spread.yaml
    overrides: [total_steps=200000, eval_every=5, eval_episodes=20]   # key=value, as on the command line
    metric: eval/team_return_mean      # a key of the runs' metrics.jsonl rows
    objective: last                    # the run's score: last | max | mean of the rows with the metric
    direction: maximize                # or minimize
    trials: 20                         # trials the study should hold when the command ends
    seed: 0                            # the runs' seed (and the sampler's)
    pruner: median                     # stop runs whose metric trails the median of earlier trials; or none
    params:
      lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      ppo_epochs: {type: int, low: 5, high: 15}
      clip_eps: {type: categorical, choices: [0.1, 0.2, 0.3]}

Optuna's TPE sampler proposes each trial; the trial is one ``mappo train`` run in
``OUT/trial_<n>`` started by a launcher (:mod:`mappo.launchers`: subprocesses here, or Ray tasks),
which reports every row with the metric to the study through the :class:`ReportToStudy`
callback and stops early when the pruner says so.  The study lives in ``sqlite:///OUT/study.db``
by default, or in any database URL Optuna takes (``--storage``), which trials on other machines
reach.  Run the same command again after a stop: finished trials stay, trials that were running
continue from their checkpoints, and new ones fill the study up to ``trials``.  ``OUT/best.yaml``
is the best trial's config, ready for ``mappo train``; ``OUT/trials.md`` lists every trial.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from .launchers import Driving, Launcher, add_launcher_arguments, launcher_from_arguments

PARAM_TYPES = ("float", "int", "categorical")
OBJECTIVES = ("last", "max", "mean")


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError as err:
        raise ImportError("mappo sweep needs Optuna: pip install -e \".[sweep]\" (or pip install optuna)") from err
    return optuna


@dataclass
class Space:
    config: str
    params: Dict[str, Dict[str, Any]]
    overrides: List[str] = field(default_factory=list)
    metric: str = "eval/team_return_mean"
    objective: str = "last"
    direction: str = "maximize"
    trials: int = 20
    seed: int = 0
    pruner: Any = "median"


def load_space(path: str) -> Space:
    """Read and check a space file; each error names the field."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"space file {path!r} not found")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    where = f"space {path!r}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with 'config' and 'params'")
    known = {f for f in Space.__dataclass_fields__}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; a space file takes {sorted(known)}")
    for key in ("config", "params"):
        if key not in raw:
            raise ValueError(f"{where}: '{key}' is missing")
    space = Space(**raw)
    if not isinstance(space.config, str) or not os.path.isfile(space.config):
        raise FileNotFoundError(f"{where}: config {space.config!r} not found")
    if not isinstance(space.overrides, list) or not all(isinstance(o, str) and "=" in o for o in space.overrides):
        raise ValueError(f"{where}: 'overrides' must be a list of key=value strings, got {space.overrides!r}")
    if not isinstance(space.metric, str) or not space.metric:
        raise ValueError(f"{where}: 'metric' must be a row key such as eval/team_return_mean, got {space.metric!r}")
    if space.objective not in OBJECTIVES:
        raise ValueError(f"{where}: 'objective' must be one of {list(OBJECTIVES)}, got {space.objective!r}")
    if space.direction not in ("maximize", "minimize"):
        raise ValueError(f"{where}: 'direction' must be maximize or minimize, got {space.direction!r}")
    for key in ("trials", "seed"):
        value = getattr(space, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "trials" else 0):
            raise ValueError(f"{where}: '{key}' must be an integer >= {1 if key == 'trials' else 0}, got {value!r}")
    pruner_settings(space.pruner, where)
    if not isinstance(space.params, dict) or not space.params:
        raise ValueError(f"{where}: 'params' must map config fields to search ranges, got {space.params!r}")
    for name, spec in space.params.items():
        _check_param(name, spec, f"{where}: params.{name}")
    # every field exists and takes the range's ends and every categorical choice: build those configs now
    from .config import Config
    from .registries import check_registered

    for end in (0, -1):
        values = [_override(name, _end_value(spec, end)) for name, spec in space.params.items()]
        try:
            cfg = check_registered(Config.from_yaml(space.config, space.overrides + values))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{where}: params at their {'low' if end == 0 else 'high'} end: {err}") from err
        _check_evaluates(space, cfg, f"{where}: params at their {'low' if end == 0 else 'high'} end")
    low = {name: _override(name, _end_value(spec, 0)) for name, spec in space.params.items()}
    for name, spec in space.params.items():
        for choice in spec["choices"][1:-1] if spec["type"] == "categorical" else ():
            values = [*{**low, name: _override(name, choice)}.values()]
            try:
                cfg = check_registered(Config.from_yaml(space.config, space.overrides + values))
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}: params.{name} choice {choice!r}: {err}") from err
            _check_evaluates(space, cfg, f"{where}: params.{name} choice {choice!r}")
    return space


def _check_evaluates(space: Space, cfg: Any, where: str) -> None:
    """An ``eval/`` metric needs trials that evaluate."""
    if space.metric.startswith("eval/") and not cfg.eval_every:
        raise ValueError(f"{where}: metric {space.metric!r} comes from evaluations, and the trial's config has "
                         f"none (eval_every=0): set eval_every in 'overrides' or the config")


def _check_param(name: str, spec: Any, where: str) -> None:
    if not isinstance(spec, dict) or spec.get("type") not in PARAM_TYPES:
        raise ValueError(f"{where}: needs 'type' ({', '.join(PARAM_TYPES)}), got {spec!r}")
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}[spec["type"]]
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for type {spec['type']} (takes {sorted(allowed)})")
    if spec["type"] == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or not all(
                c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise ValueError(f"{where}: 'choices' must be a non-empty list of numbers, strings, booleans or null, "
                             f"got {choices!r}")
        return
    number = int if spec["type"] == "int" else (int, float)
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)) or not low <= high:
        raise ValueError(f"{where}: 'low' and 'high' must be {spec['type']}s with low <= high, got {low!r} and {high!r}")
    if spec.get("log") and low <= 0:
        raise ValueError(f"{where}: a log range needs low > 0, got {low!r}")
    if spec.get("log") and spec.get("step") is not None:
        raise ValueError(f"{where}: 'log' and 'step' cannot go together")


def _end_value(spec: Dict[str, Any], end: int) -> Any:
    return spec["choices"][end] if spec["type"] == "categorical" else spec["low" if end == 0 else "high"]


def _override(name: str, value: Any) -> str:
    return f"{name}={json.dumps(value)}"


def pruner_settings(pruner: Any, where: str = "pruner") -> Dict[str, Any]:
    """``none``, ``median`` or ``{name: median, n_startup_trials: N, n_warmup_steps: S}`` as a dict."""
    settings = {"name": pruner} if isinstance(pruner, str) or pruner is None else pruner
    if not isinstance(settings, dict) or settings.get("name") not in ("none", "median", None):
        raise ValueError(f"{where}: 'pruner' must be none, median or {{name: median, n_startup_trials: N, "
                         f"n_warmup_steps: S}}, got {pruner!r}")
    unknown = sorted(set(settings) - {"name", "n_startup_trials", "n_warmup_steps"})
    if unknown:
        raise ValueError(f"{where}: pruner: unknown key(s) {unknown}")
    return {"name": settings.get("name") or "none", **{k: v for k, v in settings.items() if k != "name"}}


def make_pruner(settings: Dict[str, Any]) -> Any:
    optuna = import_optuna()
    if settings["name"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=settings.get("n_startup_trials", 5),
                                       n_warmup_steps=settings.get("n_warmup_steps", 0))


class ReportToStudy:
    """The callback each trial's run carries: every row with ``metric`` is reported to the study
    (step: env steps), and the run stops (the trial marked pruned) when the pruner says so."""

    def __init__(self, storage: str, study_name: str, trial_id: int, metric: str, pruner: Dict[str, Any]):
        optuna = import_optuna()
        self.study = optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(pruner))
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.metric = metric
        self.reason: Optional[str] = None

    def on_iteration_end(self, trainer: Any, row: Dict[str, Any]) -> bool:
        value = row.get(self.metric)
        if value is None or not math.isfinite(value) or not trainer.sync.is_main:
            return False
        self.trial.report(float(value), step=int(row["env_steps"]))
        if not self.trial.should_prune():
            return False
        from optuna.trial import TrialState

        self.study.tell(self.trial.number, state=TrialState.PRUNED)
        self.reason = f"pruned by Optuna at {row['env_steps']} env steps ({self.metric} {value:.4g})"
        return True


def metric_keys(run_dir: str) -> List[str]:
    """Every key of the run's metrics.jsonl rows."""
    from .plot import read_metrics

    path = os.path.join(run_dir, "metrics.jsonl")
    return sorted({k for row in read_metrics(run_dir) for k in row}) if os.path.isfile(path) else []


def score(run_dir: str, metric: str, objective: str) -> Optional[float]:
    """The run's score: the last, max or mean of ``metric`` over its metrics.jsonl rows; None when
    no row has it."""
    from .plot import read_metrics

    values = [float(r[metric]) for r in read_metrics(run_dir) if r.get(metric) is not None] \
        if os.path.isfile(os.path.join(run_dir, "metrics.jsonl")) else []
    if not values:
        return None
    return {"last": values[-1], "max": max(values), "mean": sum(values) / len(values)}[objective]


def trial_command(space: Space, out: str, number: int, trial_id: int, params: Dict[str, Any], storage: str,
                  study_name: str) -> List[str]:
    """The ``mappo train`` command of one trial: fresh, or ``--resume`` when its folder holds a checkpoint."""
    from .config import Config

    run_dir = os.path.join(out, f"trial_{number}")
    base = [sys.executable, "-m", "mappo", "train"]
    if os.path.isfile(os.path.join(run_dir, "ckpt.pt")):
        total = Config.from_yaml(space.config, space.overrides).total_steps
        return base + ["--resume", run_dir, f"total_steps={total}", "progress=false", "--trust-env-code"]
    reporter = {"name": "mappo.sweep:ReportToStudy", "storage": storage, "study_name": study_name,
                "trial_id": trial_id, "metric": space.metric, "pruner": pruner_settings(space.pruner)}
    return base + [space.config, *space.overrides, *(_override(k, v) for k, v in params.items()),
                   f"seed={space.seed}", f"run_dir={run_dir}", "overwrite=true", "progress=false",
                   "callbacks=" + json.dumps([reporter])]


def _suggest(trial: Any, space: Space) -> Dict[str, Any]:
    params = {}
    for name, spec in space.params.items():
        if spec["type"] == "categorical":
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["type"] == "int":
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step") or 1,
                                             log=bool(spec.get("log")))
        else:
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], step=spec.get("step"),
                                               log=bool(spec.get("log")))
    return params


def run_sweep(space: Space, out: str, launcher: Launcher, storage: Optional[str] = None,
              study_name: str = "mappo", trials: Optional[int] = None, poll_s: float = 1.0) -> Any:
    """Fill the study up to ``trials`` finished trials (default: the space's), ``launcher.free()``
    at a time; returns the study.  SIGINT/SIGTERM stops the runs with checkpoints; the same call
    later continues them."""
    optuna = import_optuna()
    from optuna.trial import TrialState

    os.makedirs(out, exist_ok=True)
    storage = storage or f"sqlite:///{os.path.abspath(os.path.join(out, 'study.db'))}"
    wanted = trials if trials is not None else space.trials
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, direction=space.direction,
                                    pruner=make_pruner(pruner_settings(space.pruner)), load_if_exists=True)
    except Exception as err:  # SQLAlchemy's own errors for a bad URL, a missing driver, a refused connection
        raise ValueError(f"cannot open the study at --storage {storage!r}: {type(err).__name__}: {err}") from err
    # a sampler seeded by the study's length: a call that adds trials to a study does not propose
    # again the points its first call drew (a fresh TPESampler(seed) would)
    study.sampler = optuna.samplers.TPESampler(seed=space.seed + len(study.trials))
    if study.direction.name.lower() != space.direction:
        raise ValueError(f"study {study_name!r} in {storage} {study.direction.name.lower()}s; the space says "
                         f"{space.direction}: use another --study name")
    # trial number -> its id in the storage, which a run needs to report to it: Optuna keeps it in
    # the private _trial_id, and optuna.trial.Trial(study, trial_id) rebuilds the trial in the run
    running: Dict[int, int] = {}
    driving: Optional[Driving] = None

    def start(number: int, trial_id: int, params: Dict[str, Any]) -> None:
        command = trial_command(space, out, number, trial_id, params, storage, study_name)
        log = os.path.join(out, f"trial_{number}.log")
        with open(log, "a") as f:
            f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n")
        print(f"[{time.strftime('%H:%M:%S')}] trial {number}: {params}", flush=True)
        running[number] = trial_id
        launcher.submit(number, command, log)

    def finish(number: int, returncode: Optional[int], error: Optional[str], wall_s: float) -> None:
        running.pop(number)
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        if trial.state != TrialState.RUNNING:  # the run told the study itself (pruned)
            print(f"[{time.strftime('%H:%M:%S')}] trial {number}: {trial.state.name.lower()}", flush=True)
            return
        if driving is not None and driving.signum is not None:
            return  # left RUNNING: the next call continues it
        run_dir = os.path.join(out, f"trial_{number}")
        value = score(run_dir, space.metric, space.objective) if returncode == 0 else None
        if returncode == 0 and value is None and not error:
            # a run that finished without the metric: every trial would, so stop here
            study.tell(number, state=TrialState.FAIL)
            keys = metric_keys(run_dir)
            if space.metric.startswith("eval/") and not any(k.startswith("eval/") for k in keys):
                raise ValueError(f"trial {number} ran to its end without an evaluation, so without the metric "
                                 f"{space.metric!r}: its budget ended before its first (eval_every); give the trials "
                                 f"an eval_every of at most their iterations, or eval_at_start=true")
            raise ValueError(f"trial {number} ran to its end, but none of its rows has the metric {space.metric!r}; "
                             f"its rows have {keys}. Fix 'metric' in the space file")
        if value is None or not math.isfinite(value):
            why = error or (f"exit {returncode}" if returncode else f"no row with {space.metric}")
            study.tell(number, state=TrialState.FAIL)
            print(f"[{time.strftime('%H:%M:%S')}] trial {number}: failed ({why}; see {out}/trial_{number}.log)",
                  flush=True)
            return
        study.tell(number, value)
        print(f"[{time.strftime('%H:%M:%S')}] trial {number}: {space.metric} ({space.objective}) {value:.4g}",
              flush=True)

    with Driving(launcher, finish) as driving:
        # trials a stopped call left running continue from their checkpoints
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            start(trial.number, trial._trial_id, trial.params)
        while driving.signum is None:
            finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                     TrialState.FAIL)))
            while launcher.free() > 0 and finished + len(running) < wanted:
                trial = study.ask()
                start(trial.number, trial._trial_id, _suggest(trial, space))
            if not running:
                break
            for outcome in launcher.wait(poll_s):
                finish(*outcome)
    write_results(study, space, out)
    return study


def write_results(study: Any, space: Space, out: str) -> None:
    """``OUT/trials.md`` (every trial) and ``OUT/best.yaml`` (the best trial's config)."""
    from optuna.trial import TrialState

    from .config import Config

    names = list(space.params)
    lines = [f"# Sweep over {space.config}: {space.metric} ({space.objective}), {space.direction}", "",
             "| trial | state | value | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for t in study.trials:
        value = "" if t.value is None else f"{t.value:.4g}"
        lines.append(f"| {t.number} | {t.state.name.lower()} | {value} | "
                     + " | ".join(str(t.params.get(n, "")) for n in names) + " |")
    with open(os.path.join(out, "trials.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return
    best = study.best_trial
    cfg = Config.from_yaml(space.config, space.overrides + [_override(k, v) for k, v in best.params.items()]
                           + [f"seed={space.seed}"])
    body = {k: v for k, v in cfg.to_dict().items() if k not in ("run_dir", "overwrite")}
    header = (f"# mappo sweep: trial {best.number} of {len(study.trials)}, {space.metric} ({space.objective}) "
              f"{best.value:.6g}\n# params: {json.dumps(best.params)}\n")
    with open(os.path.join(out, "best.yaml"), "w") as f:
        f.write(header + OmegaConf.to_yaml(OmegaConf.create(body)))


def sweep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mappo sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("space", help="space file, e.g. configs/sweeps/matrix_climbing.yaml")
    parser.add_argument("--out", default="runs/sweep", help="folder for the trials, the study and best.yaml")
    parser.add_argument("--trials", type=int, help="trials the study should hold (default: the space's 'trials')")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUT/study.db); a database every "
                                          "machine reaches shares the study")
    parser.add_argument("--study", help="study name (default: the space file's name)")
    parser.add_argument("--jobs", type=int, default=1, help="local launcher: trials at a time (default 1)")
    add_launcher_arguments(parser, "trials")
    return parser


def sweep_main(argv: List[str]) -> int:
    parser = sweep_parser()
    args = parser.parse_args(argv)
    if args.trials is not None and args.trials < 1:
        parser.error(f"--trials must be >= 1, got {args.trials}")
    space = load_space(args.space)
    import_optuna()  # before any run starts
    study_name = args.study or os.path.splitext(os.path.basename(args.space))[0]
    launcher = launcher_from_arguments(parser, args, argv)
    try:
        study = run_sweep(space, args.out, launcher, args.storage, study_name, args.trials)
    except KeyboardInterrupt as stop:
        print(f"mappo sweep: {stop}", file=sys.stderr)
        return 130
    print(open(os.path.join(args.out, "trials.md")).read())
    if os.path.isfile(os.path.join(args.out, "best.yaml")):
        print(f"best: trial {study.best_trial.number}, {study.best_value:.4g}; wrote {args.out}/best.yaml "
              f"(mappo train {args.out}/best.yaml) and {args.out}/trials.md", file=sys.stderr)
        return 0
    print("mappo sweep: no trial completed; see the trial_<n>.log files", file=sys.stderr)
    return 1
