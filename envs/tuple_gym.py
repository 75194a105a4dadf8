"""A PettingZoo ``ParallelEnv`` around a multi-agent gymnasium env with tuple spaces.

Level-Based Foraging (``lbforaging``) and the multi-robot warehouse (``rware``) are gymnasium
envs whose observation and action spaces are ``Tuple``s with one entry per agent, whose reward
is a list and whose ``done`` is one bool for the whole team.  Their time limit comes back as
``done``, never as ``truncated``, so a learner would treat the last state of every episode as
terminal and never bootstrap there.  The families in ``envs/lbf.py`` and ``envs/rware.py``
tell this adapter which of the two it was (``ended_by_time``), and may give action masks.

    env = TupleGymParallelEnv(gym.make("Foraging-8x8-2p-2f-coop-v3").unwrapped,
                              ended_by_time=lambda e: e.field.sum() > 0)
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, List, Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


def unknown_id_error(family: str, env_id: str, known: List[str]) -> ValueError:
    """A ValueError naming the id, the closest known ids and a sample of the rest."""
    close = difflib.get_close_matches(env_id, known, n=5, cutoff=0.6)
    shown = known if len(known) <= 30 else known[:15] + ["..."] + known[-5:]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return ValueError(f"{family}: unknown env id {env_id!r}; {hint}known ids ({len(known)}): {', '.join(shown)}")


def make_gym(family: str, env_id: str, prefix: str, package: str, **kwargs: Any) -> gym.Env:
    """The env registered as ``env_id``, built with its registered kwargs updated by ``kwargs``,
    after importing ``package`` (which registers the ids); an unknown id is a ValueError naming
    it and the known ids."""
    try:
        __import__(package)
    except ImportError as err:
        raise ImportError(f"{family}/{env_id} needs the {package!r} package: pip install 'mappo[{family}]'") from err
    known = sorted(k for k in gym.registry if k.startswith(prefix))
    if env_id not in gym.registry:
        raise unknown_id_error(family, env_id, known)
    # the env class itself, not gym.make: gym.make would take max_episode_steps (an lbforaging
    # argument) for its own TimeLimit wrapper, and its checker wrappers only get in the way here
    spec = gym.spec(env_id)
    creator = gym.envs.registration.load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) \
        else spec.entry_point
    return creator(**{**spec.kwargs, **kwargs})


class TupleGymParallelEnv(ParallelEnv):
    """PettingZoo's parallel API over a gymnasium env with ``Tuple`` spaces (one entry per agent).

    * Agents are ``agent_0 ... agent_{n-1}``, in the tuple's order.
    * ``done`` becomes ``truncated`` for every agent when ``ended_by_time(env)`` says the episode
      was cut by its time limit, else ``terminated``.  Every agent leaves at the end.
    * ``action_masks(env)``, when given, returns ``[n, num_actions]`` booleans put in each
      agent's ``info["action_mask"]``.
    * ``state()`` joins the agents' observations (EPyMARL's state for these envs).
    * ``reset(seed=s)`` seeds the env's own generator; ``reset()`` continues its stream.
      ``before_reset(env)``, when given, clears what would carry over between episodes.
    """

    metadata = {"name": "tuple_gym", "render_modes": ["rgb_array"], "is_parallelizable": True}

    def __init__(self, env: gym.Env, name: str, ended_by_time: Callable[[Any], bool],
                 action_masks: Optional[Callable[[Any], np.ndarray]] = None,
                 before_reset: Optional[Callable[[Any], None]] = None, render_mode: Optional[str] = None):
        if not isinstance(env.observation_space, spaces.Tuple) or not isinstance(env.action_space, spaces.Tuple):
            raise TypeError(f"{name}: expected Tuple observation and action spaces, got "
                            f"{env.observation_space} and {env.action_space}")
        self.env = env
        self.metadata = {**self.metadata, "name": name}
        self.render_mode = render_mode
        self.possible_agents = [f"agent_{i}" for i in range(len(env.action_space.spaces))]
        self.agents: List[str] = []
        self._obs_spaces = dict(zip(self.possible_agents, env.observation_space.spaces))
        self._act_spaces = dict(zip(self.possible_agents, env.action_space.spaces))
        self._ended_by_time = ended_by_time
        self._action_masks = action_masks
        self._before_reset = before_reset
        self._obs: Optional[tuple] = None
        width = sum(spaces.flatdim(s) for s in env.observation_space.spaces)
        self.state_space = spaces.Box(-np.inf, np.inf, (width,), np.float32)

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    def _infos(self) -> Dict[str, Dict[str, Any]]:
        if self._action_masks is None:
            return {a: {} for a in self.agents}
        masks = self._action_masks(self.env)
        return {a: {"action_mask": masks[i]} for i, a in enumerate(self.possible_agents) if a in self.agents}

    def _as_dict(self, obs: tuple) -> Dict[str, np.ndarray]:
        return {a: np.asarray(o, dtype=self._obs_spaces[a].dtype) for a, o in zip(self.possible_agents, obs)}

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        if self._before_reset is not None:
            self._before_reset(self.env)
        obs, _ = self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        self._obs = obs
        return self._as_dict(obs), self._infos()

    def step(self, actions: Dict[str, Any]):
        if set(actions) != set(self.agents):
            raise ValueError(f"{self.metadata['name']}: actions for {sorted(actions)}, live agents {self.agents}")
        obs, rewards, done, truncated, _ = self.env.step(tuple(int(actions[a]) for a in self.possible_agents))
        self._obs = obs
        cut = bool(truncated) or (bool(done) and self._ended_by_time(self.env))
        ended = bool(done) or bool(truncated)
        terms = {a: ended and not cut for a in self.agents}
        truncs = {a: cut for a in self.agents}
        rews = {a: float(r) for a, r in zip(self.possible_agents, rewards)}
        infos = self._infos()
        out = self._as_dict(obs)
        if ended:
            self.agents = []
        return out, rews, terms, truncs, infos

    def state(self) -> np.ndarray:
        return np.concatenate([np.asarray(o, dtype=np.float32).ravel() for o in self._obs])

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self.env.render(mode="rgb_array")  # both lbforaging and rware draw with pyglet

    def close(self) -> None:
        self.env.close()
