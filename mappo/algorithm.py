"""What an algorithm is to the trainer: the learner protocol, the update unit, and the registry.

    learner = build_learner(cfg.algorithm, spec, cfg, device, sync)
    learner.set_lr_fraction(frac)                        # the learning-rate schedule
    learner.compute_values(buf, critic_h, next_...)      # after a rollout (mappo/rollout.py)
    stats = learner.update(buf)                          # one iteration's update -> diagnostics
    learner.state_dict() / learner.load_state_dict(s)    # everything a checkpoint holds of it

The trainer calls nothing else: the acting policy is built from ``learner.actor``, metrics are
labelled with ``learner.groups``, and the config fields a loaded run must keep are the
learner's :attr:`Learner.shaping_fields`.  A new algorithm is a file with a class that has this
surface plus one line in :data:`ALGORITHMS`; ``tests/test_algorithms.py`` runs every registered one
through training, evaluation, checkpoints, exact resume, export, groups and recurrent policies.

An :class:`UpdateUnit` is one weight set's share of the update: its parameters (one
``networks.WeightSets`` entry per layer, and the encoders it owns), its own Adam, its own
gradient-norm clip, and the statistic its loss needs: a KL beta for a part of the actor, a value
normaliser for a part of the critic.  MAPPO steps every unit together; HAPPO steps the actor's
units one after another (mappo/happo.py).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import torch

from .groups import Groups
from .normalize import RunningMeanStd

# name -> "module:Class"; the config field ``algorithm`` picks one.  Imported when a run builds its
# learner, so that reading a config imports no learner.
ALGORITHMS: Dict[str, str] = {
    "ppo": "mappo.learner:PPOLearner",
    "happo": "mappo.happo:HAPPOLearner",
}


@runtime_checkable
class Learner(Protocol):
    """The surface the trainer uses (see the module docstring)."""

    groups: Groups  # the agent groups (teams): metrics, cross-play and export are keyed by them
    actor: torch.nn.Module  # networks.Actor: the acting policy's network
    critic: torch.nn.Module
    # config fields that shape the networks or the optimiser state: a loaded run keeps them
    shaping_fields: Tuple[str, ...]

    @classmethod
    def options(cls, cfg: Any) -> Any:
        """The config field ``algorithm_options`` checked and read (:func:`check_options`)."""
        ...

    def set_lr_fraction(self, frac: float) -> None: ...

    @property
    def learning_rate(self) -> float: ...

    def compute_values(self, buf: Any, critic_h: torch.Tensor, next_obs: torch.Tensor, next_state: torch.Tensor,
                       next_alive: torch.Tensor, next_resets: torch.Tensor) -> torch.Tensor: ...

    def update(self, buf: Any) -> Dict[str, float]: ...

    def state_dict(self) -> Dict[str, Any]: ...

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...


def check_options(algorithm: str, options_type: type, given: Dict[str, Any]) -> Any:
    """The config field ``algorithm_options`` as the algorithm's own options dataclass: a key it
    does not take, or a value of the wrong type, is an error naming the key and the algorithm."""
    fields = {f.name: f for f in dataclasses.fields(options_type)}
    for key, value in given.items():
        if key not in fields:
            takes = ", ".join(sorted(fields)) or "no options"
            raise ValueError(f"config field 'algorithm_options': algorithm {algorithm!r} takes {takes}; got {key!r}")
        kind = type(fields[key].default)
        if kind in (bool, int, float, str) and not (isinstance(value, kind) or (kind is float and type(value) is int)) \
                or (kind is not bool and isinstance(value, bool)):
            raise TypeError(f"config field 'algorithm_options': {key!r} of algorithm {algorithm!r} must be "
                            f"{kind.__name__}, got {value!r}")
    return options_type(**given)


def learner_class(name: str) -> type:
    """The learner class registered as ``name`` in :data:`ALGORITHMS`."""
    if name not in ALGORITHMS:
        raise ValueError(f"config field 'algorithm' must be one of {sorted(ALGORITHMS)}, got {name!r}")
    module, _, cls = ALGORITHMS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_learner(name: str, spec: Any, cfg: Any, device: torch.device, sync: Any = None) -> Learner:
    return learner_class(name)(spec, cfg, device, sync)


class UpdateUnit:
    """One weight set's share of the update (see the module docstring).

    ``params``: the parameters it owns (disjoint from every other unit's); ``lr``: its base
    learning rate.  ``kl_coef`` is the KL beta of an actor unit; ``value_norm`` the value
    normaliser of a critic unit (None for an actor unit).
    """

    def __init__(self, name: str, params: Sequence[torch.nn.Parameter], lr: float, adam_eps: float,
                 max_grad_norm: float, kl_coef: float = 0.0, value_norm: Optional[RunningMeanStd] = None):
        self.name, self.params, self.lr, self.max_grad_norm = name, list(params), lr, max_grad_norm
        # an empty unit (a group whose networks have no weights of their own) still has a state
        self.optimizer = torch.optim.Adam(self.params or [torch.nn.Parameter(torch.zeros(0))], lr=lr, eps=adam_eps,
                                          foreach=True)
        self.kl_coef = float(kl_coef)
        self.value_norm = value_norm

    def set_lr_fraction(self, frac: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * frac

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def clip(self, what: str) -> None:
        """Clip this unit's gradient norm; a non-finite norm raises before any weight changes."""
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        if not torch.isfinite(norm):
            raise FloatingPointError(f"non-finite {what} gradient norm (unit {self.name!r}): stopping before the "
                                     f"optimiser step; the weights and the last checkpoint are unchanged")

    def step(self) -> None:
        self.optimizer.step()

    def state_dict(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"optimizer": self.optimizer.state_dict(), "kl_coef": self.kl_coef}
        if self.value_norm is not None:
            state["value_norm"] = self.value_norm.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coef = float(state["kl_coef"])
        if self.value_norm is not None:
            self.value_norm.load_state_dict(state["value_norm"])


def split_packed_optimizer(saved: Dict[str, Any], net: torch.nn.Module, units: List[UpdateUnit]) -> List[Dict[str, Any]]:
    """One Adam state over a network whose weight sets were packed ``[G, ...]`` parameters (the
    checkpoint formats 3 and 4) -> one optimiser state per unit, each set's moments cut out of the
    packed ones.  The packed parameters were ``net``'s parameters in order, with each
    ``WeightSets`` module one parameter."""
    from .networks import WeightSets

    packed_index: Dict[int, Tuple[int, Optional[int]]] = {}  # id(param) -> (packed position, set or None)
    position = 0
    for module in net.modules():  # the order of net.parameters(), a WeightSets counted as its parent's own
        if isinstance(module, WeightSets):
            continue
        for p in module.parameters(recurse=False):
            packed_index[id(p)] = (position, None)
            position += 1
        for child in module.children():
            if isinstance(child, WeightSets):
                for j in range(len(child)):
                    packed_index[id(child[j])] = (position, j)
                position += 1
    order = saved["param_groups"][0]["params"]
    if len(order) != position:
        raise ValueError(f"the checkpoint's optimiser holds {len(order)} parameters, this network {position}")
    hyper = {k: v for k, v in saved["param_groups"][0].items() if k != "params"}
    out = []
    for unit in units:
        state = {}
        for k, p in enumerate(unit.params):
            pos, j = packed_index[id(p)]
            old = saved["state"].get(order[pos])
            if old is None:
                continue
            # every tensor copied: Adam increments its step counter in place, once per parameter
            state[k] = {name: (v if not torch.is_tensor(v) else v.clone() if j is None or v.dim() == 0 else v[j].clone())
                        for name, v in old.items()}
        out.append({"state": state, "param_groups": [{**hyper, "params": list(range(max(1, len(unit.params))))}]})
    return out
