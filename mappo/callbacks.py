"""Hooks into the training loop: user code that runs at iteration end, after an evaluation, after
a checkpoint is written and when the run ends, without editing the loop.

A callback is any object with some of these methods (each optional; the trainer calls the ones
it finds):

    on_iteration_end(trainer, row) -> bool | None   # True asks the run to stop after this iteration
    on_evaluation(trainer, evaluation)              # Trainer.evaluate's result (mean and per-episode)
    on_checkpoint(trainer, path)                    # path: the ckpt.pt or best.pt just written
    on_run_end(trainer, history)                    # train() finished, stopped or was interrupted
    state_dict() -> dict / load_state_dict(state)   # kept in checkpoints, so a resumed run goes on

Pass objects to ``Trainer(env_fn, cfg, callbacks=[...])``, or name them in the config field
``callbacks``: a registered name or ``"module:Class"``, alone or as ``{name: ..., <kwargs>}``
(``callbacks: [{name: early_stopping, patience: 5}]``).  Under torchrun every rank runs its
callbacks on the same rows (``trainer.sync.is_main`` is rank 0), and a stop asked for by any
rank stops all of them at the same iteration.  SB3's and BenchMARL's callbacks are the models.
"""
from __future__ import annotations

import importlib
import inspect
import math
from typing import Any, Dict, List, Optional, Sequence

HOOKS = ("on_iteration_end", "on_evaluation", "on_checkpoint", "on_run_end")


class EarlyStopping:
    """Stop when ``metric`` (a key of the iteration rows, e.g. ``eval/team_return_mean`` or
    ``info/won``) has not improved by more than ``min_delta`` for ``patience`` rows that carry it
    (evaluations, for an ``eval/`` key), or once it reaches ``target``.  ``mode="min"`` for
    metrics where lower is better."""

    def __init__(self, metric: str = "eval/team_return_mean", patience: int = 10, min_delta: float = 0.0,
                 mode: str = "max", target: Optional[float] = None):
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"early_stopping: metric must be a row key such as 'eval/team_return_mean', got {metric!r}")
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise ValueError(f"early_stopping: patience must be an integer >= 1, got {patience!r}")
        if not isinstance(min_delta, (int, float)) or not min_delta >= 0:
            raise ValueError(f"early_stopping: min_delta must be a number >= 0, got {min_delta!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"early_stopping: mode must be 'max' or 'min', got {mode!r}")
        self.metric, self.patience, self.min_delta, self.mode, self.target = metric, patience, float(min_delta), mode, target
        self.best: Optional[float] = None
        self.stale = 0  # rows with the metric since it last improved
        self.reason: Optional[str] = None

    def on_iteration_end(self, trainer: Any, row: Dict[str, Any]) -> bool:
        if self.metric.startswith("eval/") and not getattr(getattr(trainer, "cfg", None), "eval_every", 1):
            raise ValueError(f"early_stopping: metric {self.metric!r} comes from evaluations, and this run has none "
                             f"(eval_every=0): set eval_every, or a training metric such as 'team_return'")
        value = row.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        sign = 1.0 if self.mode == "max" else -1.0
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best, self.stale = float(value), 0
        else:
            self.stale += 1
        if self.target is not None and sign * (value - self.target) >= 0:
            self.reason = f"{self.metric} reached {value:.4g} (target {self.target:g})"
        elif self.stale >= self.patience:
            self.reason = f"{self.metric} has not improved on {self.best:.4g} for {self.stale} rows"
        return self.reason is not None

    def on_run_end(self, trainer: Any, history: List[Dict[str, Any]]) -> None:
        if self.best is None and history:  # a misspelt metric would otherwise never stop anything, silently
            keys = sorted({k for row in history for k in row})
            print(f"early_stopping: metric {self.metric!r} never appeared in this run's rows, so it never stopped "
                  f"the run; the rows have {keys}", flush=True)

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "stale": self.stale}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.stale = state["best"], int(state["stale"])


# name -> the class; a config entry may also name any "module:Class"
CALLBACKS = {"early_stopping": EarlyStopping}


def _resolve(name: str, where: str) -> Any:
    if name in CALLBACKS:
        return CALLBACKS[name]
    if ":" not in name:
        raise ValueError(f"{where}: unknown callback {name!r}; choose from {sorted(CALLBACKS)} or give 'module:Class'")
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{where}: cannot import callback {name!r}: {err}") from err


def _check_entry(entry: Any, where: str) -> Any:
    if isinstance(entry, dict):
        if not isinstance(entry.get("name"), str):
            raise ValueError(f"{where} needs a string 'name', got {entry!r}")
        entry = dict(entry)
    elif not isinstance(entry, str):
        raise TypeError(f"{where} must be a name or a {{name: ..., <kwargs>}} mapping, got {entry!r}")
    name = entry["name"] if isinstance(entry, dict) else entry
    if name not in CALLBACKS and ":" not in name:
        raise ValueError(f"{where}: unknown callback {name!r}; choose from {sorted(CALLBACKS)} or give 'module:Class'")
    return entry


def _build(entry: Any, where: str) -> Any:
    """One callback object from a checked entry; a bad keyword gets an error naming the entry and
    what the class takes."""
    kwargs = {k: v for k, v in entry.items() if k != "name"} if isinstance(entry, dict) else {}
    name = entry["name"] if isinstance(entry, dict) else entry
    cls = _resolve(name, where)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise TypeError(f"{where}: {name} {err}; it takes {inspect.signature(cls)}") from err
    return cls(**kwargs)


def check_callbacks(entries: Any) -> List[Any]:
    """The config field ``callbacks`` as a list, each entry's shape and name checked."""
    if not isinstance(entries, (list, tuple)):
        raise TypeError(f"config field 'callbacks' must be a list of names or {{name: ..., <kwargs>}} mappings, "
                        f"got {entries!r}")
    return [_check_entry(entry, f"config field 'callbacks[{i}]'") for i, entry in enumerate(entries)]


def build_callbacks(entries: Sequence[Any]) -> List[Any]:
    """The config field's callbacks as objects."""
    return [_build(entry, f"config field 'callbacks[{i}]'") for i, entry in enumerate(entries)]


def from_argument(callbacks: Sequence[Any]) -> List[Any]:
    """``Trainer(callbacks=...)``: objects with at least one hook, or entries like the config field's."""
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list of callback objects, got {callbacks!r}")
    out = []
    for i, cb in enumerate(callbacks):
        if isinstance(cb, (str, dict)):
            out.append(_build(_check_entry(cb, f"callbacks[{i}]"), f"callbacks[{i}]"))
        elif any(callable(getattr(cb, hook, None)) for hook in HOOKS):
            out.append(cb)
        else:
            raise TypeError(f"callbacks[{i}] ({cb!r}) has none of the hooks {list(HOOKS)}")
    return out


def call(callbacks: Sequence[Any], hook: str, *args: Any) -> List[Any]:
    """Call ``hook`` on every callback that has it; returns what they returned."""
    return [getattr(cb, hook)(*args) for cb in callbacks if callable(getattr(cb, hook, None))]


def stop_reason(callbacks: Sequence[Any]) -> str:
    """What the callbacks that asked to stop say about why (their ``reason`` attribute, else their name)."""
    return "; ".join(str(getattr(cb, "reason", None) or type(cb).__name__) for cb in callbacks
                     if getattr(cb, "reason", None) is not None) or "a callback asked to stop"


def callback_states(callbacks: Sequence[Any]) -> Dict[str, Any]:
    """``{"<position>:<class>": state}`` of the callbacks that have ``state_dict``, for checkpoints."""
    return {f"{i}:{type(cb).__name__}": cb.state_dict() for i, cb in enumerate(callbacks)
            if callable(getattr(cb, "state_dict", None))}


def load_callback_states(callbacks: Sequence[Any], states: Dict[str, Any], path: str) -> None:
    """Give each callback its state from a checkpoint (matched by position and class); a state with
    no callback to take it is reported, not dropped silently."""
    keys = {f"{i}:{type(cb).__name__}": cb for i, cb in enumerate(callbacks)}
    unclaimed = [k for k in states if k not in keys or not callable(getattr(keys[k], "load_state_dict", None))]
    if unclaimed:
        print(f"warning: {path!r} holds callback state(s) {unclaimed} that no callback of this run takes",
              flush=True)
    for key, state in states.items():
        if key not in unclaimed:
            keys[key].load_state_dict(state)
