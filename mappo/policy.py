"""The deployable policy: ``act(obs_dict) -> {agent: action}`` over a trained actor."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .networks import Actor
from .spaces import TeamSpec


class Policy:
    """Wraps an :class:`Actor`.  A recurrent policy keeps its hidden state between ``act``
    calls; call :meth:`reset` at the start of each episode."""

    def __init__(self, spec: TeamSpec, actor: Actor, device: torch.device, compile: bool = False):
        self.spec, self.actor, self.device = spec, actor, device
        self.hidden: Optional[torch.Tensor] = None
        # config field ``compile``: the step below through torch.compile
        self._step = torch.compile(self._act, dynamic=False) if compile else self._act

    @torch.no_grad()
    def act_batch(self, obs: torch.Tensor, mask: torch.Tensor, deterministic: bool = False,
                  hidden: Optional[torch.Tensor] = None, resets: Optional[torch.Tensor] = None
                  ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """One step for a batch: obs ``[E, A, O]``, mask ``[E, A, L]``, and for a recurrent actor
        ``hidden [E, A, H]`` and ``resets [E, A]`` -> (actions ``[E, A, W]``, log-probs ``[E, A]``,
        the new hidden state or None)."""
        return self._step(obs, mask, deterministic, hidden, resets)

    def _act(self, obs: torch.Tensor, mask: torch.Tensor, deterministic: bool, hidden: Optional[torch.Tensor],
             resets: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        if not self.actor.recurrent:
            dist, _ = self.actor(obs, mask)
            actions = dist.sample(deterministic)
            return actions, dist.log_prob(actions), None
        if hidden is None:
            hidden = torch.zeros(*obs.shape[:-1], self.actor.hidden_size, device=obs.device)
        if resets is None:
            resets = torch.zeros(obs.shape[:-1], dtype=torch.bool, device=obs.device)
        dist, hidden = self.actor(obs.unsqueeze(0), mask.unsqueeze(0), hidden, resets.unsqueeze(0))
        actions = dist.sample(deterministic)
        return actions[0], dist.log_prob(actions)[0], hidden

    def reset(self) -> None:
        """Forget the recurrent state (start of a new episode)."""
        self.hidden = None

    def act(self, obs: Dict[str, Any], deterministic: bool = True,
            infos: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
        """One env step's observations ``{agent: obs}`` -> ``{agent: action}`` for those agents.

        Action masks are read as in training: from a Dict observation's "action_mask" or
        from ``infos[agent]["action_mask"]``.
        """
        spec = self.spec
        unknown = set(obs) - set(spec.names)
        if unknown:
            raise KeyError(f"unknown agent(s) {sorted(unknown)}; this policy's agents are {spec.names}")
        flat = np.zeros((spec.num_agents, spec.obs_dim), dtype=spec.obs_dtype)  # uint8 for image teams
        mask = np.array(spec.valid_logits, dtype=bool)
        for k, name in enumerate(spec.names):
            if name in obs:
                spec.flatten_obs(k, obs[name], flat[k])
                spec.action_mask(k, obs[name], (infos or {}).get(name), mask[k])
        gone = torch.tensor([[name not in obs for name in spec.names]], device=self.device)
        actions, _, self.hidden = self.act_batch(torch.as_tensor(flat, device=self.device).unsqueeze(0),
                                                 torch.as_tensor(mask, device=self.device).unsqueeze(0),
                                                 deterministic, self.hidden, gone)
        rows = actions[0].cpu().numpy()
        return {name: spec.decode_action(k, rows[k]) for k, name in enumerate(spec.names) if name in obs}


class MixedPolicy:
    """Cross-play: ``base`` acts for every agent group except those in ``replaced``,
    whose agents act uniformly at random among their valid actions ("random") or with another
    :class:`Policy` (that group's actor from another checkpoint).  Same ``act_batch`` surface as
    :class:`Policy`; the hidden state it passes around holds one entry per policy."""

    def __init__(self, base: Policy, replaced: List[Tuple[List[int], Any]]):
        self.base, self.replaced = base, replaced
        self.spec, self.actor, self.device = base.spec, base.actor, base.device

    @classmethod
    def build(cls, base: Policy, groups: Any, policies: Dict[str, str],
              load: Callable[[str], Policy]) -> "MixedPolicy":
        """``policies``: group name -> "random" or a checkpoint (run folder or file), loaded by ``load``."""
        unknown = sorted(set(policies) - set(groups.names))
        if unknown:
            raise ValueError(f"--policy names unknown group(s) {unknown}; this run's groups are {groups.names}")
        replaced = []
        for name, source in policies.items():
            members = groups.members(groups.names.index(name))
            replaced.append((members, "random" if source == "random" else load(source)))
        return cls(base, replaced)

    @torch.no_grad()
    def act_batch(self, obs: torch.Tensor, mask: torch.Tensor, deterministic: bool = False,
                  hidden: Optional[Tuple[Any, ...]] = None, resets: Optional[torch.Tensor] = None):
        from .spaces import random_actions

        hidden = hidden or (None,) * (1 + len(self.replaced))
        actions, logp, h = self.base.act_batch(obs, mask, deterministic, hidden[0], resets)
        new_hidden = [h]
        for (members, other), h_other in zip(self.replaced, hidden[1:]):
            if other == "random":
                theirs, h_other = random_actions(self.spec, mask), None
            else:
                theirs, _, h_other = other.act_batch(obs, mask, deterministic, h_other, resets)
            actions[:, members] = theirs[:, members]
            new_hidden.append(h_other)
        return actions, logp, tuple(new_hidden)
