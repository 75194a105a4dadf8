"""Running a policy on vector envs: the one step loop behind rollout collection and evaluation.

    step = policy_step(policy, vec, hidden, episode_start, deterministic)   # act, then step the envs
    episodes = collect(policy, learner, vec, buffer, carry)                 # T steps into the buffer
    stats = evaluate(policy, env_fn, spec, episodes=20)                     # on envs of its own
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional

import numpy as np
import torch

from .buffer import RolloutBuffer
from .policy import Policy
from .protocol import VectorEnv
from .vector import eval_vector_env
from .spaces import TeamSpec


def recurrent_resets(episode_start: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """``[E, A]``: where a recurrent state restarts, at an episode's first step (``episode_start
    [E]``) and for agents that are gone (``alive [E, A]``)."""
    return episode_start.unsqueeze(-1) | ~alive


class PolicyStep(NamedTuple):
    """What one step of the policy on a vector env saw and did (each ``[E, A, ...]``)."""
    obs: torch.Tensor
    alive: torch.Tensor
    action_mask: torch.Tensor
    resets: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    hidden: Optional[torch.Tensor]  # the actor's state after the step (None when feed-forward)
    episodes: List[Dict[str, Any]]  # episodes that ended at this step
    episode_start: torch.Tensor  # [E]: which envs start an episode at the next step


@torch.no_grad()
def policy_step(policy: Policy, vec: VectorEnv, hidden: Optional[torch.Tensor], episode_start: torch.Tensor,
                deterministic: bool) -> PolicyStep:
    """Act in every env of ``vec`` and step it."""
    obs, alive, mask = vec.observe("obs"), vec.observe("alive"), vec.observe("action_mask")
    resets = recurrent_resets(episode_start, alive)
    actions, logp, hidden = policy.act_batch(obs, mask, deterministic, hidden, resets)
    vec.set_actions(actions)
    episodes = vec.step()
    return PolicyStep(obs, alive, mask, resets, actions, logp, hidden, episodes, vec.observe("env_done").clone())


@dataclass
class Carry:
    """What a rollout hands to the next one: recurrent states ``[E, A, H]`` (before the next
    step's reset) and which envs start an episode at the next step ``[E]``."""
    actor_h: torch.Tensor
    critic_h: torch.Tensor
    episode_start: torch.Tensor

    @classmethod
    def fresh(cls, num_envs: int, num_agents: int, hidden: int, device: torch.device) -> "Carry":
        zeros = torch.zeros(num_envs, num_agents, hidden, device=device)
        return cls(zeros, zeros.clone(), torch.ones(num_envs, dtype=torch.bool, device=device))


@torch.no_grad()
def collect(policy: Policy, learner: Any, vec: VectorEnv, buf: RolloutBuffer, carry: Carry) -> List[Dict[str, Any]]:
    """Fill ``buf`` with ``T`` steps of every env, then the learner's values; updates ``carry``
    and returns the episodes that ended."""
    recurrent = policy.actor.recurrent
    episodes: List[Dict[str, Any]] = []
    for t in range(buf.T):
        buf.state[t] = vec.observe("state")  # before the step: the state the critic pairs with obs[t]
        step = policy_step(policy, vec, carry.actor_h if recurrent else None, carry.episode_start, False)
        if recurrent:
            buf.actor_h[t], carry.actor_h = carry.actor_h, step.hidden
        buf.obs[t], buf.alive[t], buf.action_mask[t] = step.obs, step.alive, step.action_mask
        buf.actions[t], buf.logp[t], buf.resets[t] = step.actions, step.logp, step.resets
        for name in ("reward", "terminated", "truncated", "final_obs", "final_state", "env_done"):
            buf.data[name][t] = vec.observe(name)  # final_*: for the time-limit bootstrap
        carry.episode_start = step.episode_start
        episodes += step.episodes
    alive = vec.observe("alive")
    carry.critic_h = learner.compute_values(buf, carry.critic_h, vec.observe("obs"), vec.observe("state"), alive,
                                            recurrent_resets(carry.episode_start, alive))
    return episodes


@torch.no_grad()
def evaluate(policy: Policy, env_fn: Any, spec: TeamSpec, episodes: int, deterministic: bool, seed: int,
             device: torch.device, max_steps: int = 10_000) -> Dict[str, Any]:
    """Run ``episodes`` full episodes on envs of their own; returns mean returns and lengths, and
    under ``per_episode`` each episode's team return, agent return (the mean over agents) and length.

    ``team_return_mean`` sums rewards over agents; ``return_mean`` is per agent.  A PettingZoo
    env plays the episodes one after another in one in-process env.  A batched env (VMAS) plays
    them side by side, ``episodes`` envs, and counts the *first* episode of each env: keeping
    the first ``episodes`` to finish would over-count envs whose episodes end early, since they
    reset and finish again while long episodes are still running.  Sampling
    (``deterministic=False``) draws from a torch RNG forked off the caller's and seeded with
    ``seed``, so an evaluation never moves a training run's random streams.

    An episode still running after ``max_steps`` steps is cut there and counted with the return
    it had; ``episodes_cut`` says how many were, and a warning is printed.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    vec = eval_vector_env(env_fn, episodes, seed, device, spec)
    done: List[Dict[str, Any]] = []
    quota = -(-episodes // vec.num_envs)  # episodes counted per env: 1 when batched
    counted = [0] * vec.num_envs
    hidden, start = None, torch.ones(vec.num_envs, dtype=torch.bool, device=device)
    # each env's running episode, kept here too so that an episode cut at max_steps can be counted
    length = np.zeros(vec.num_envs, dtype=np.int64)
    returns = np.zeros((vec.num_envs, spec.num_agents))
    cut = 0
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            while len(done) < episodes:
                step = policy_step(policy, vec, hidden, start, deterministic)
                hidden, start = step.hidden, step.episode_start
                length += 1
                returns += vec.observe("reward").cpu().numpy()
                ended = [(e["env"], e) for e in step.episodes]
                if length.max() >= max_steps:  # cut every episode that reached the cap, then start afresh
                    late = [i for i in np.flatnonzero(length >= max_steps) if i not in dict(ended)]
                    ended += [(int(i), {"team_return": float(returns[i].sum()), "length": int(length[i]),
                                        "agent_returns": returns[i].tolist(), "env": int(i)}) for i in late]
                    if late:
                        counts = vec.episode_counts()
                        vec.restart_episodes(None if counts is None else counts + np.isin(np.arange(len(counts)), late))
                        start = torch.ones(vec.num_envs, dtype=torch.bool, device=device)
                        cut += sum(counted[i] < quota for i in late)
                        length[:], returns[:] = 0, 0.0
                for i, episode in ended:
                    length[i], returns[i] = 0, 0.0
                    if counted[i] < quota:
                        counted[i] += 1
                        done.append(episode)
    finally:
        vec.close()
    if cut:
        print(f"warning: evaluation cut {cut} episode(s) at eval_max_steps={max_steps} steps", file=sys.stderr)
    team = np.array([e["team_return"] for e in done])
    per_agent = np.array([e["agent_returns"] for e in done])
    info = info_arrays(done, spec.num_agents)
    return {
        "team_return_mean": float(team.mean()),
        "team_return_std": float(team.std()),
        "return_mean": {name: float(per_agent[:, k].mean()) for k, name in enumerate(spec.names)},
        "episode_length_mean": float(np.mean([e["length"] for e in done])),
        # each agent's mean of what its info reported as the episode ended (None: it never did)
        "info_mean": {key: {name: finite_mean(values[:, k]) for k, name in enumerate(spec.names)}
                      for key, values in info.items()},
        "episodes": len(team),
        "episodes_cut": cut,
        # each episode's numbers, for statistics over episodes (the marl-eval layout keeps them)
        "per_episode": {"team_return": team.tolist(), "agent_return": per_agent.mean(axis=1).tolist(),
                        "episode_length": [int(e["length"]) for e in done],
                        # the env's info numbers, each episode's mean over its agents (SMAX's info/won:
                        # 1.0 for a won episode; None for an episode that reported none, one cut short)
                        **{f"info/{key}": [finite_mean(row) for row in values] for key, values in info.items()}},
    }


def info_arrays(episodes: List[Dict[str, Any]], num_agents: int) -> Dict[str, np.ndarray]:
    """``{key: [N, A]}``: the ``info`` numbers of ``N`` episodes (see :mod:`mappo.protocol`), NaN
    where an episode or agent reported none."""
    keys = sorted({key for e in episodes for key in e.get("info", {})})
    out = {key: np.full((len(episodes), num_agents), np.nan) for key in keys}
    for n, e in enumerate(episodes):
        for key, values in e.get("info", {}).items():
            out[key][n] = values
    return out


def finite_mean(values: Any) -> Optional[float]:
    """The mean of the finite entries (None counts as missing); None when there are none (JSON has no NaN)."""
    values = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def eval_row(evaluation: Dict[str, Any]) -> Dict[str, float]:
    """:func:`evaluate`'s result as flat log keys: ``eval/team_return_mean`` (summed over agents),
    ``eval/agent_return_mean`` (averaged over agents: one agent's copy when the reward is
    shared), ``eval/return_mean/<agent>``, ``eval/episode_length_mean``, and ``eval/info/<key>_mean``
    for each number the env's infos reported at episode end (``eval/info/won_mean``: SMAX's win
    rate); with several agent groups also ``eval/<group>/team_return_mean`` and
    ``eval/<group>/info/<key>_mean``."""
    per_agent = list(evaluation["return_mean"].values())
    row = {"eval/team_return_mean": evaluation["team_return_mean"],
           "eval/agent_return_mean": float(np.mean(per_agent)),
           "eval/episode_length_mean": evaluation["episode_length_mean"]}
    row.update({f"eval/return_mean/{name}": v for name, v in evaluation["return_mean"].items()})
    for name, values in evaluation.get("per_episode", {}).items():
        if name.startswith("info/"):
            row[f"eval/{name}_mean"] = finite_mean(values)
    groups = evaluation.get("group_return_mean", {})
    if len(groups) > 1:  # agent groups: each group's return (its agents' returns summed)
        row.update({f"eval/{g}/team_return_mean": v for g, v in groups.items()})
        row.update({f"eval/{g}/info/{key}_mean": v for g, means in evaluation.get("group_info_mean", {}).items()
                    for key, v in means.items()})
    return row
