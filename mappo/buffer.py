"""Rollout storage: preallocated ``[T, E, A, ...]`` tensors on the training device."""
from __future__ import annotations

from typing import Dict, Iterator, Sequence

import torch

from .spaces import TeamSpec


class RolloutBuffer:
    """One iteration of experience.

    Fields (T steps, E envs, A agents, O obs, S state, L logits, W action width):
        obs [T,E,A,O], state [T,E,S], alive [T,E,A] bool, action_mask [T,E,A,L] bool,
        actions [T,E,A,W], logp [T,E,A], values [T,E,A] (raw units), next_values [T,E,A],
        rewards [T,E,A], terminated [T,E,A] bool, truncated [T,E,A] bool,
        final_obs [T,E,A,O], final_state [T,E,S] (the last observation before an auto-reset),
        advantages [T,E,A], returns [T,E,A] (filled after GAE).
    """

    def __init__(self, spec: TeamSpec, T: int, E: int, device: torch.device):
        A = spec.num_agents
        f32, b = torch.float32, torch.bool
        shapes = {
            "obs": ((T, E, A, spec.obs_dim), f32), "state": ((T, E, spec.state_dim), f32),
            "alive": ((T, E, A), b), "action_mask": ((T, E, A, spec.num_logits), b),
            "actions": ((T, E, A, spec.action_width), f32), "logp": ((T, E, A), f32),
            "values": ((T, E, A), f32), "next_values": ((T, E, A), f32), "rewards": ((T, E, A), f32),
            "terminated": ((T, E, A), b), "truncated": ((T, E, A), b),
            "final_obs": ((T, E, A, spec.obs_dim), f32), "final_state": ((T, E, spec.state_dim), f32),
            "advantages": ((T, E, A), f32), "returns": ((T, E, A), f32),
        }
        self.T, self.E, self.A = T, E, A
        self.data: Dict[str, torch.Tensor] = {k: torch.zeros(s, dtype=d, device=device) for k, (s, d) in shapes.items()}

    def __getattr__(self, name: str) -> torch.Tensor:
        data = self.__dict__.get("data")
        if data is not None and name in data:
            return data[name]
        raise AttributeError(name)

    def minibatches(self, num_minibatches: int, keys: Sequence[str], generator: torch.Generator | None = None
                    ) -> Iterator[Dict[str, torch.Tensor]]:
        """Shuffle the ``T*E`` env-steps and yield ``num_minibatches`` dicts of ``[B, A, ...]`` tensors
        holding the fields ``keys``.

        Agents stay together in a row so per-agent (separate) networks see their own slot.
        """
        n = self.T * self.E
        flat = {k: self.data[k].reshape(n, *self.data[k].shape[2:]) for k in keys}
        device = self.data["obs"].device
        perm = torch.randperm(n, generator=generator).to(device)
        for idx in torch.tensor_split(perm, num_minibatches):
            yield {k: v[idx] for k, v in flat.items()}
