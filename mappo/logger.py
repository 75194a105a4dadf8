"""The run's logging: the metric backends of ``mappo/loggers/`` (metrics.jsonl always, plus the
config's ``loggers``), the console (progress bar or log lines), ``curves.png`` and the
end-of-run summary.  Every backend receives the same row of keys against ``env_steps``."""
from __future__ import annotations

import importlib
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

# name -> "module:class" of a backend (see mappo/loggers/__init__.py); imported only when used,
# so optional packages (tensorboard, wandb) load only for runs that ask for them
BACKENDS = {
    "jsonl": "mappo.loggers.jsonl:JsonlBackend",
    "csv": "mappo.loggers.csv:CsvBackend",
    "tensorboard": "mappo.loggers.tensorboard:TensorBoardBackend",
    "wandb": "mappo.loggers.wandb:WandbBackend",
}


# each evaluation's episodes, one line per evaluation: {"iteration", "env_steps", "team_return": [E],
# "agent_return": [E], "episode_length": [E]}, and "info/<key>": [E] for each number the env's infos
# reported at episode end ("info/won": SMAX's outcome)
# (mappo.rollout.evaluate's per_episode); the benchmark report's statistics and marl-eval JSON read it
EVALUATIONS = "evaluations.jsonl"


def check_loggers(names: Any) -> List[str]:
    """The config field ``loggers`` checked against :data:`BACKENDS` (metrics.jsonl is always written)."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"config field 'loggers' must be a list of names, got {names!r}")
    unknown = [n for n in names if n not in BACKENDS or n == "jsonl"]
    if unknown:
        raise ValueError(f"config field 'loggers' has unknown name(s) {unknown}; choose from "
                         f"{sorted(n for n in BACKENDS if n != 'jsonl')} (metrics.jsonl is always written)")
    return list(names)


def make_backend(name: str, cfg: Any, run_dir: Optional[str]) -> Any:
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(cfg, run_dir)


def truncate_metrics(path: str, iteration: int) -> None:
    """Keep the rows of a run's ``metrics.jsonl`` (or ``evaluations.jsonl``) up to ``iteration``."""
    if not os.path.isfile(path):
        return
    from .plot import read_metrics

    rows = read_metrics(os.path.dirname(path), os.path.basename(path))
    keep = [r for r in rows if r.get("iteration", 0) <= iteration]
    if len(keep) != len(rows):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in keep)
        os.replace(tmp, path)


def _fmt(value: Any, spec: str) -> str:
    """A console number; "-" for a missing or non-finite one (logged as None)."""
    return "-" if value is None else format(value, spec)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def resume_command(cfg: Any, run_dir: str) -> str:
    """The command that continues the run in ``run_dir``: an env given as ``module:callable`` is
    the user's code, which ``--resume`` runs only when told to (``--trust-env-code``)."""
    trust = " --trust-env-code" if ":" in str(cfg.env) else ""
    return f"mappo train --resume {run_dir}{trust}"


class RunLogger:
    """Fans each iteration's row out to the backends and shows progress on the console.

    With a ``run_dir`` it writes config.yaml and metrics.jsonl there, plus the backends named in
    ``cfg.loggers`` (W&B also when ``cfg.wandb``).  W&B works without a folder too.
    """

    def __init__(self, cfg: Any, run_dir: Optional[str], agent_names: Sequence[str], total_steps: int,
                 start_steps: int = 0, start_iteration: int = 0, group_names: Sequence[str] = ()):
        self.cfg, self.run_dir, self.agent_names = cfg, run_dir, list(agent_names)
        # with several agent groups (teams that may compete) each group's return is shown, never
        # their sum; one group shows the team return
        groups = list(group_names) if len(group_names) > 1 else []
        self.shown = [(g, f"{g}/team_return", f"eval/{g}/team_return_mean") for g in groups] or \
            [("team_return", "team_return", "eval/team_return_mean")]
        names: List[str] = list(dict.fromkeys(cfg.loggers + (["wandb"] if cfg.wandb else [])))
        if run_dir is not None:
            os.makedirs(run_dir, exist_ok=True)
            cfg.to_yaml(os.path.join(run_dir, "config.yaml"))
            names = ["jsonl"] + names
            # rows past the iteration the run (re)starts from were logged after its last checkpoint
            # by a run that then crashed: drop them, so no iteration appears twice.  A run that
            # (re)starts at iteration 0 redoes its start evaluation (the same numbers: same weights,
            # same evaluation seed), so it keeps no row at all
            for name in ("metrics.jsonl", EVALUATIONS):
                truncate_metrics(os.path.join(run_dir, name), start_iteration if start_iteration > 0 else -1)
        else:
            names = [n for n in names if n == "wandb"]  # the file writers need a folder
        self.backends: List[Any] = []
        self.bar = None
        try:
            for name in names:
                self.backends.append(make_backend(name, cfg, run_dir))
        except BaseException:  # e.g. a logger whose package is missing: close the files already open
            self.close()
            raise
        self.wants_video = "wandb" in names and cfg.wandb_video and run_dir is not None
        if cfg.progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_steps, unit="step", dynamic_ncols=True)
        self.last_steps = start_steps

    def log(self, row: Dict[str, Any]) -> None:
        row = {k: _clean(v) for k, v in row.items()}
        for backend in self.backends:
            backend.log(row)
        if self.bar is not None:
            self.bar.update(row["env_steps"] - self.last_steps)
            postfix = {"sps": _fmt(row.get("sps"), ".0f")}
            postfix.update({name: _fmt(row.get(key), ".2f") for name, key, _ in self.shown})
            postfix.update({f"eval {name}": f"{row[key]:.2f}" for name, _, key in self.shown if row.get(key) is not None})
            self.bar.set_postfix(postfix)
        elif self.cfg.progress and row["iteration"] % self.cfg.log_every == 0:
            returns = "  ".join(f"{name} {_fmt(row.get(key), '9.3f')}" for name, key, _ in self.shown)
            evals = "".join(f"  eval {name} {row[key]:9.3f}" for name, _, key in self.shown if row.get(key) is not None)
            print(f"iter {row['iteration']:>5}  steps {row['env_steps']:>9}  sps {_fmt(row.get('sps'), '7.0f')}  "
                  f"{returns}  value_loss {_fmt(row.get('value_loss'), '.4f')}  "
                  f"entropy {_fmt(row.get('entropy'), '.3f')}  kl {_fmt(row.get('approx_kl'), '.4f')}{evals}",
                  flush=True)
        self.last_steps = row["env_steps"]

    def log_evaluation(self, iteration: int, env_steps: int, evaluation: Dict[str, Any]) -> None:
        """Append one evaluation's per-episode numbers to ``<run_dir>/evaluations.jsonl``."""
        if self.run_dir is None:
            return
        line = {"iteration": iteration, "env_steps": env_steps,
                **{k: [_clean(v) for v in values] for k, values in evaluation["per_episode"].items()}}
        with open(os.path.join(self.run_dir, EVALUATIONS), "a") as f:
            f.write(json.dumps(line) + "\n")

    def log_file(self, kind: str, path: str, step: int) -> None:
        """Hand a file the run produced ("checkpoint", "video") to the backends that keep files."""
        for backend in self.backends:
            backend.log_file(kind, path, step)

    def plot(self) -> None:
        """Redraw ``<run_dir>/curves.png`` from metrics.jsonl: the training return, and the
        evaluation return when the run evaluates."""
        if self.run_dir is None:
            return
        from .plot import plot_groups

        keys = [key for _, key, _ in self.shown] + [key for _, _, key in self.shown]
        what = "each group's return" if len(self.shown) > 1 else "team return"
        try:
            plot_groups({self.cfg.run_name: [self.run_dir]}, os.path.join(self.run_dir, "curves.png"),
                        keys=keys, title=f"{self.cfg.run_name}: {what}")
        except Exception as err:  # a plot must never kill a training run
            print(f"warning: could not draw curves.png: {err}", file=sys.stderr)

    def summary(self, env_steps: int, interrupted: Optional[int], history: List[Dict[str, Any]], wall: float,
                ckpt: Optional[str], steps: int, discarded: bool = False) -> None:
        """The end-of-run summary on the console (when ``progress`` is on).  ``discarded``: the run
        stopped with an error before its first checkpoint and its files were removed."""
        if not self.cfg.progress:
            return
        stop = "" if interrupted is None else f" (stopped by signal {interrupted})"
        lines = [f"run summary{stop}:",
                 f"  env steps   {env_steps} ({len(history)} iterations this call, {wall:.1f} s, "
                 f"{steps / max(wall, 1e-9):.0f} steps/s)"]
        for name, train_key, eval_key in self.shown:
            label = "team return" if len(self.shown) == 1 else f"{name} return"
            returns = [r[train_key] for r in history if r.get(train_key) is not None]
            evals = [r[eval_key] for r in history if r.get(eval_key) is not None]
            if returns:
                lines.append(f"  {label:<11} last {returns[-1]:.3f}, best {max(returns):.3f}, first {returns[0]:.3f}")
            if evals:
                lines.append(f"  {'evaluation' if len(self.shown) == 1 else name + ' eval':<11} last "
                             f"{evals[-1]:.3f}, best {max(evals):.3f}" + (" (best.pt)" if len(self.shown) == 1 else ""))
        if len(self.shown) > 1 and any(r.get("eval/team_return_mean") is not None for r in history):
            lines.append("  best.pt     the evaluation with the best return summed over all agents")
        if self.run_dir is not None and discarded:
            lines.append(f"  run folder  {self.run_dir}: its files were removed (the run stopped before its first "
                         f"checkpoint, so there is nothing to resume); the same command starts it again")
        elif self.run_dir is not None:
            from .runfolder import run_files

            lines.append(f"  run folder  {self.run_dir} ({', '.join(run_files(self.run_dir)) or 'empty'})")
        if ckpt:
            lines.append(f"  checkpoint  {ckpt}; continue with: {resume_command(self.cfg, self.run_dir)}")
        print("\n".join(lines), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        for backend in self.backends:
            backend.close()
        self.backends = []
