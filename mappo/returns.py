"""Generalised advantage estimation (Schulman et al. 2016) as a pure function."""
from __future__ import annotations

from typing import Tuple

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    alive: torch.Tensor,
    gamma: float,
    lam: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets, all tensors ``[T, ...]`` (usually ``[T, E, A]``).

    ``next_values[t]`` is V of the observation that follows step ``t`` in the same episode:
    ``values[t + 1]`` mid-episode, V(last observation of the rollout) at ``t = T - 1``, and
    V(final observation) where the episode was truncated by a time limit.  ``terminated``
    zeroes that bootstrap; ``terminated or truncated`` cuts the recursion (unlike CleanRL's
    OR'd ``done``, a time limit still bootstraps: CleanRL issue #198).  Entries with
    ``alive = 0`` (an agent that has left) get advantage 0 and are masked out of the loss.

    Returns ``(advantages, returns)`` with ``returns = advantages + values``.
    """
    not_term = 1.0 - terminated.to(values.dtype)
    not_done = 1.0 - (terminated | truncated).to(values.dtype)
    alive_f = alive.to(values.dtype)
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        delta = rewards[t] + gamma * not_term[t] * next_values[t] - values[t]
        last = (delta + gamma * lam * not_done[t] * last) * alive_f[t]
        advantages[t] = last
    return advantages, advantages + values
