"""MPE with the EPyMARL benchmark's reward accounting (Papoudakis et al. 2021, arXiv 2006.07869).

    make_env_fn("mpe/simple_spread", accounting="epymarl")
    make_env_fn("mpe/simple_speaker_listener", accounting="epymarl")

EPyMARL ran the original MPE (the ``semitable/multiagent-particle-envs`` fork), whose envs give
every agent the *team sum* of the scenario's per-agent rewards (``shared_reward`` for
collaborative worlds), and its table reports one agent's copy of that shared reward.  ``mpe2``
rewards differ; from both packages' code, per step, with N agents, D = sum over landmarks of the
nearest agent's distance, c_i = the other agents colliding with agent i, P = colliding pairs:

* simple_spread, original: agent i scores -D - c_i - 1 (its collision loop also counts the agent
  itself, which always "collides" with itself), so the shared reward is -N*D - 2P - N.
  mpe2 (``local_ratio`` r): r_i = -(1 - r) D - r c_i; with r = 0.5, sum_i r_i = -N*D/2 - P.
  Hence  **shared = 2 * sum_i r_i - N**  (r = 0.5 only: other ratios weigh D and P differently).
* simple_speaker_listener, original and mpe2: both agents score -dist2 (listener to goal,
  squared), so the shared reward is -2 dist2 = **sum_i r_i**.

``accounting="epymarl"`` gives every agent that shared reward, so training sees the paper's
reward too, and any agent's return (or the mean over agents) is the paper's number.
``tests/test_benchmark_envs.py`` checks the relation against the original formula computed from
the world's positions on seeded trajectories.

``dynamics="original"`` integrates the world as the original MPE did (``core.py``
``World.integrate_state`` of openai/multiagent-particle-envs and of EPyMARL's fork): damp the
velocity, add the force, clip the speed, then move with the *new* velocity.  mpe2 (since
PettingZoo's MPE v3 -> v4 change, PR #970) and JaxMARL's port move with the *old* velocity first,
so every position, and every reward computed from positions, is one step late: an agent at rest
does not move on the step it first pushes.  On simple_speaker_listener that costs a near-perfect
listener about 2.5 of return (in the paper's units); ``dynamics="mpe2"`` (the default) keeps
mpe2's own order.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from pettingzoo.utils import BaseParallelWrapper

ACCOUNTINGS = ("mpe2", "epymarl")
DYNAMICS = ("mpe2", "original")


def integrate_as_original(world: Any) -> None:
    """Make an mpe2 ``world`` integrate in the original MPE's order (see the module's docstring)."""
    def integrate_state(p_force: Any) -> None:
        for i, entity in enumerate(world.entities):
            if not entity.movable:
                continue
            entity.state.p_vel = entity.state.p_vel * (1 - world.damping)
            if p_force[i] is not None:
                entity.state.p_vel += (p_force[i] / entity.mass) * world.dt
            if entity.max_speed is not None:
                speed = np.sqrt(np.square(entity.state.p_vel[0]) + np.square(entity.state.p_vel[1]))
                if speed > entity.max_speed:
                    entity.state.p_vel = entity.state.p_vel / speed * entity.max_speed
            entity.state.p_pos += entity.state.p_vel * world.dt

    world.integrate_state = integrate_state


class SharedReward(BaseParallelWrapper):
    """Every agent gets ``scale * sum_i r_i + offset`` of the wrapped env's rewards ``r_i``."""

    def __init__(self, env: Any, scale: float, offset: float):
        super().__init__(env)
        self.scale, self.offset = float(scale), float(offset)

    def step(self, actions: Dict[str, Any]):
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        shared = self.scale * sum(rewards.values()) + self.offset
        return obs, {a: shared for a in rewards}, terms, truncs, infos

    def state(self):
        return self.env.state()


def epymarl_accounting(module: str, env: Any, kwargs: Dict[str, Any]) -> Any:
    """Wrap an mpe2 ``env`` built from ``mpe2.<module>`` with ``kwargs`` so that it pays EPyMARL's reward."""
    if module.startswith("simple_spread"):
        ratio = kwargs.get("local_ratio", 0.5)
        if ratio != 0.5:
            raise ValueError(f"mpe/simple_spread: accounting='epymarl' needs local_ratio=0.5 (got {ratio}): only "
                             "then does the sum of mpe2's rewards give the original distance and collision terms")
        return SharedReward(env, scale=2.0, offset=-float(kwargs.get("N", 3)))
    if module.startswith("simple_speaker_listener"):
        return SharedReward(env, scale=1.0, offset=0.0)
    raise ValueError(f"accounting='epymarl' is defined for mpe/simple_spread and mpe/simple_speaker_listener, "
                     f"not mpe2.{module}")
