"""The deployable policy: ``act(obs_dict) -> {agent: action}`` over a trained actor."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from .networks import Actor
from .spaces import TeamSpec


class Policy:
    def __init__(self, spec: TeamSpec, actor: Actor, device: torch.device):
        self.spec, self.actor, self.device = spec, actor, device

    @torch.no_grad()
    def act_batch(self, obs: torch.Tensor, mask: torch.Tensor, deterministic: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """obs ``[..., A, O]``, mask ``[..., A, L]`` -> (actions ``[..., A, W]``, log-probs ``[..., A]``)."""
        dist = self.actor(obs, mask)
        actions = dist.sample(deterministic)
        return actions, dist.log_prob(actions)

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
        flat = np.zeros((spec.num_agents, spec.obs_dim), dtype=np.float32)
        mask = np.array(spec.valid_logits, dtype=bool)
        for k, name in enumerate(spec.names):
            if name in obs:
                spec.flatten_obs(k, obs[name], flat[k])
                spec.action_mask(k, obs[name], (infos or {}).get(name), mask[k])
        actions, _ = self.act_batch(torch.as_tensor(flat, device=self.device).unsqueeze(0),
                                    torch.as_tensor(mask, device=self.device).unsqueeze(0), deterministic)
        rows = actions[0].cpu().numpy()
        return {name: spec.decode_action(k, rows[k]) for k, name in enumerate(spec.names) if name in obs}
