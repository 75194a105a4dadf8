"""HAPPO: heterogeneous-agent PPO (Zhong et al., "Heterogeneous-Agent Reinforcement Learning",
JMLR 2024, Algorithm 5; PKU-MARL/HARL ``harl/algorithms/actors/happo.py`` and
``harl/runners/on_policy_ha_runner.py``).

Every agent (``parameter_sharing=separate``), or every agent group when agents of a group share
an actor, is an actor update unit.  Each iteration:

1. GAE targets and the critic as MAPPO's (one centralised critic per agent group; with no
   ``groups``, one for the team);
2. the actor units in a fresh random order; unit ``i_m`` trains ``ppo_epochs`` epochs on

       -min(r A, clip(r, 1 - eps, 1 + eps) A) * M,   M = prod_{j before i_m} pi_j(a|o) / pi_j,old(a|o)

   where the factor ``M`` (one number per env step, detached, outside the clip) is recomputed
   after each unit's update from the updated actor's probabilities of the rollout's actions.

The critic trains on the first unit's minibatches, alongside it.  With one unit the update is
MAPPO's (tests/test_happo.py checks both to float precision).  The random order comes from a
generator seeded with ``seed`` and kept in checkpoints, so ranks agree on it and a resumed run
draws the orders a straight one would.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

from .buffer import RolloutBuffer
from .config import Config
from .distributed import Sync
from .groups import Groups
from .learner import PPOLearner
from .spaces import TeamSpec


class HAPPOLearner(PPOLearner):
    """:class:`PPOLearner` whose actor units step one after another (see the module docstring)."""

    @dataclass(frozen=True)
    class Options:
        """The config field ``algorithm_options`` of ``algorithm=happo``."""
        fixed_order: bool = False  # the units in index order every iteration (HARL's fixed_order), not a fresh random order

    def __init__(self, spec: TeamSpec, cfg: Config, device: torch.device, sync: Optional[Sync] = None):
        super().__init__(spec, cfg, device, sync)
        shared_by = [self.groups.names[g] for g in range(self.groups.count) if len(self.groups.members(g)) > 1]
        if cfg.parameter_sharing == "shared" and self.units.count == 1 and shared_by:
            raise ValueError(f"algorithm=happo updates each agent's actor in turn, but parameter_sharing=shared "
                             f"gives all {spec.num_agents} agents one actor (group {shared_by[0]!r}), which makes "
                             f"HAPPO plain MAPPO: set parameter_sharing=separate (every agent its own actor), or "
                             f"config field 'groups' (every group its own)")
        self.order_rng = torch.Generator().manual_seed(cfg.seed)

    def actor_unit_layout(self, groups: Groups) -> Groups:
        """One unit per agent with separate actors; one per group with shared ones."""
        if self.cfg.parameter_sharing == "separate":
            return Groups(list(self.spec.names), list(range(self.spec.num_agents)))
        return groups

    def update(self, buf: RolloutBuffer) -> Dict[str, float]:
        """:meth:`targets`, then the actor units one after another, each weighted by the factor of
        the units before it; returns :meth:`PPOLearner.update`'s diagnostics."""
        explained_var = self.targets(buf)
        inputs = self.network_inputs(buf)
        order = torch.randperm(len(self.actor_units), generator=self.order_rng).tolist()
        if self.opts.fixed_order:
            order = sorted(order)
        factor = torch.ones_like(buf.logp)  # [T, E, A]: the same number for every agent of an env step
        parts: Dict[str, float] = {}
        last_kl: Dict[str, float] = {}
        for position, unit in enumerate(order):
            unit_parts, unit_kl = self.run_epochs(buf, {**inputs, "factor": factor}, units=[unit],
                                                  critic=position == 0)
            parts.update(unit_parts)
            last_kl.update(unit_kl)
            if position < len(order) - 1:
                factor = factor * self.unit_ratio(buf, inputs, unit)
        return self.finish_update(buf, inputs, parts, last_kl, explained_var)

    @torch.no_grad()
    def unit_ratio(self, buf: RolloutBuffer, inputs: Dict[str, torch.Tensor], unit: int) -> torch.Tensor:
        """``[T, E, 1]``: the product over ``unit``'s live agents of the updated actor's probability
        ratio of the rollout's actions, per env step (1 where none of them is alive)."""
        log_ratio = self.rollout_logp(buf, inputs.get("actor_in")) - buf.logp
        members = buf.alive & self.unit_mask[unit]
        return (log_ratio * members).sum(-1, keepdim=True).exp()

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "happo_order_rng": self.order_rng.get_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.order_rng.set_state(state["happo_order_rng"])
