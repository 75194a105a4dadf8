"""The EPyMARL repeated matrix games: ``matrix/climbing`` and ``matrix/penalty`` (``k``).

    make_env_fn("matrix/climbing")           # 25 steps of the climbing game
    make_env_fn("matrix/penalty", k=100)     # miscoordination on the corners costs k

Two agents play the same one-shot game ``episode_length`` times (EPyMARL's ``time_limit=25``).
Both get the common payoff as their reward.  As in EPyMARL's ``*-nostate`` games (the
``semitable/matrix-games`` package), observations are constant zeros, so a policy cannot
condition on the past: it learns a fixed mixed strategy.  EPyMARL reports one agent's episode
return, 25 x the payoff per step: 175 = 25 x 7 on the climbing game; 275 is the optimum.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

# payoff[a0][a1], as in semitable/matrix-games (matrixgames/__init__.py)
CLIMBING = [[11, -30, 0], [-30, 7, 0], [0, 6, 5]]


def penalty(k: float) -> List[List[float]]:
    """The penalty game: 10 for (0, 2) or (2, 0), 2 for (1, 1), -k for the corners (0, 0), (2, 2)."""
    if k < 0:
        raise ValueError(f"matrix/penalty: k is the miscoordination cost and must be >= 0, got {k}")
    return [[-k, 0, 10], [0, 2, 0], [10, 0, -k]]


class MatrixGameEnv(ParallelEnv):
    """A two-player common-payoff matrix game repeated for ``episode_length`` steps.

    Each step, ``agent_0`` picks a row and ``agent_1`` a column; both are rewarded
    ``payoff[row][col]``.  The episode always ends by ``truncated`` (it has no terminal state).
    """

    metadata = {"name": "matrix_game", "render_modes": [], "is_parallelizable": True}

    def __init__(self, payoff: Sequence[Sequence[float]], episode_length: int = 25, name: str = "matrix_game",
                 render_mode: Optional[str] = None):
        self.payoff = np.asarray(payoff, dtype=np.float64)
        if self.payoff.ndim != 2 or min(self.payoff.shape) < 1:
            raise ValueError(f"{name}: payoff must be a 2-D matrix, got shape {self.payoff.shape}")
        if episode_length < 1:
            raise ValueError(f"{name}: episode_length must be >= 1, got {episode_length}")
        self.episode_length = int(episode_length)
        self.metadata = {**self.metadata, "name": name}
        self.render_mode = render_mode
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: List[str] = []
        self._act = {a: spaces.Discrete(n) for a, n in zip(self.possible_agents, self.payoff.shape)}
        self._obs_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.state_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.t = 0

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._act[agent]

    def _obs(self) -> Dict[str, np.ndarray]:
        return {a: np.zeros(1, dtype=np.float32) for a in self.possible_agents}

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        self.agents, self.t = list(self.possible_agents), 0  # nothing random: the seed changes nothing
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions: Dict[str, Any]):
        if set(actions) != set(self.agents):
            raise ValueError(f"{self.metadata['name']}: actions for {sorted(actions)}, live agents {self.agents}")
        row, col = int(actions["agent_0"]), int(actions["agent_1"])
        reward = float(self.payoff[row, col])
        self.t += 1
        cut = self.t >= self.episode_length
        rewards = {a: reward for a in self.agents}
        terms = {a: False for a in self.agents}
        truncs = {a: cut for a in self.agents}
        infos = {a: {} for a in self.agents}
        if cut:
            self.agents = []
        return self._obs(), rewards, terms, truncs, infos

    def state(self) -> np.ndarray:
        return np.zeros(1, dtype=np.float32)

    def render(self) -> None:
        return None


def climbing(episode_length: int = 25, render_mode: Optional[str] = None) -> MatrixGameEnv:
    return MatrixGameEnv(CLIMBING, episode_length, "matrix/climbing", render_mode)


def penalty_game(k: float = 100, episode_length: int = 25, render_mode: Optional[str] = None) -> MatrixGameEnv:
    return MatrixGameEnv(penalty(k), episode_length, f"matrix/penalty(k={k})", render_mode)
