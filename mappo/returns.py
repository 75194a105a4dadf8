"""Generalised advantage estimation (Schulman et al. 2016) as a pure function, and the team streams it
reads when an agent's return runs on after it leaves."""
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


def team_streams(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    alive: torch.Tensor,
    env_done: torch.Tensor,
    group_mask: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-agent streams for :func:`gae` when an agent's return runs on after it leaves.

    MAPPO's convention for a team (Yu et al. 2022, Sec. 4 "death masking"; on-policy's SMAC runner
    ends a return at the env's ``done``, not at the agent's): an agent that dies keeps earning its
    team's reward until the episode ends, so dying early is weighed by how the team fares after,
    and a sacrifice that wins the fight pays.  Its rows after death stay out of the losses (the
    learner masks them with ``alive``); only the advantages of its living steps change.

    ``rewards``, ``terminated``, ``truncated``, ``alive``: ``[T, E, A]``; ``env_done [T, E]``;
    ``group_mask [G, A]`` bool, each slot in one group.  Returns ``(rewards, terminated,
    truncated)``, each ``[T, E, A]``: where a slot is not alive its reward is its group's (the mean
    of the group's living agents' rewards at that step; 0 when none lives), and every slot ends
    when the episode does: truncated where any agent was (a time limit), else terminated.
    """
    members = alive.unsqueeze(-2) & group_mask  # [T, E, G, A]
    count = members.sum(-1).clamp(min=1).to(rewards.dtype)
    group_reward = (rewards.unsqueeze(-2) * members).sum(-1) / count  # [T, E, G]
    slot_reward = (group_reward.unsqueeze(-1) * group_mask.to(rewards.dtype)).sum(-2)  # [T, E, A]
    cut = truncated.any(-1) & env_done
    ends = (env_done & ~cut, cut)
    return (torch.where(alive, rewards, slot_reward),
            *(end.unsqueeze(-1).expand_as(alive).clone() for end in ends))
