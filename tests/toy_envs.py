"""Small PettingZoo ParallelEnvs for learning tests: each a few seconds to learn, with a known optimum.

Every env checks the actions it is sent and raises on anything invalid, so a framework bug
(an action for a dead agent, a masked action, an out-of-bounds value) fails loudly.
"""
from __future__ import annotations

import functools
from typing import Any, Dict

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv


class _Toy(ParallelEnv):
    """Bookkeeping shared by the toy envs: RNG, agents, time limit, action checks."""

    metadata = {"name": "toy", "render_modes": ["rgb_array"]}
    max_steps = 10

    def __init__(self, render_mode=None):
        self.agents = []
        self.rng = np.random.default_rng()
        self.t = 0
        self.render_mode = render_mode

    def render(self):
        """A 24x32 frame: a bar as long as the step count, so frames differ (for video tests)."""
        if self.render_mode != "rgb_array":
            return None
        frame = np.zeros((24, 32, 3), dtype=np.uint8)
        frame[8:16, : 3 * self.t + 2] = (255, 160, 0)
        return frame

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> spaces.Space:
        return self.obs_spaces[agent]

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent: str) -> spaces.Space:
        return self.act_spaces[agent]

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.t = 0
        self._new_round()
        return self._obs(), self._infos()

    def _check(self, actions: Dict[str, Any]) -> None:
        if set(actions) != set(self.agents):
            raise ValueError(f"actions for {sorted(actions)} but live agents are {sorted(self.agents)}")
        for agent, action in actions.items():
            if not self.action_space(agent).contains(np.asarray(action, dtype=self.action_space(agent).dtype)
                                                     if not isinstance(self.action_space(agent), spaces.Discrete)
                                                     else action):
                raise ValueError(f"{agent}: action {action!r} not in {self.action_space(agent)}")

    def _infos(self) -> Dict[str, Any]:
        return {a: {} for a in self.agents}

    def _finish(self, rewards: Dict[str, float], leaving=()):
        self.t += 1
        truncated = self.t >= self.max_steps
        terms = {a: a in leaving for a in self.agents}
        truncs = {a: truncated and a not in leaving for a in self.agents}
        self._new_round()
        obs = self._obs()
        infos = self._infos()
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos


class CoordinationEnv(_Toy):
    """Two agents see a cue c in {0,1,2}; the shared reward is 1 when agent_0 picks c and
    agent_1 picks (c+1) % 3.  Random: 1/9 per step; optimum 1.  ``state()`` is not
    implemented, so the critic falls back to the joined observations."""

    possible_agents = ["agent_0", "agent_1"]
    obs_spaces = {a: spaces.Box(0.0, 1.0, (3,), np.float32) for a in possible_agents}
    act_spaces = {a: spaces.Discrete(3) for a in possible_agents}

    def _new_round(self):
        self.cue = int(self.rng.integers(3))

    def _obs(self):
        one_hot = np.eye(3, dtype=np.float32)[self.cue]
        return {a: one_hot.copy() for a in self.agents}

    def state(self):
        raise NotImplementedError

    def step(self, actions):
        self._check(actions)
        ok = actions["agent_0"] == self.cue and actions["agent_1"] == (self.cue + 1) % 3
        return self._finish({a: float(ok) for a in self.agents})


class HeterogeneousEnv(_Toy):
    """Different spaces per agent.  "pointer": Box(4,) obs with a cue in {0,1,2}, Discrete(3)
    action, reward 1 for the cue.  "switch": Discrete(4) obs d, MultiDiscrete([2, 2]) action,
    reward 1 for (d % 2, d // 2).  "reader": Dict obs (Box + Discrete) with a bit, Discrete(2)
    action, reward 1 for the bit.  Random: 1/3 + 1/4 + 1/2 per step; optimum 3."""

    possible_agents = ["pointer", "switch", "reader"]
    obs_spaces = {
        "pointer": spaces.Box(-1.0, 1.0, (4,), np.float32),
        "switch": spaces.Discrete(4),
        "reader": spaces.Dict({"noise": spaces.Box(-1.0, 1.0, (2,), np.float32), "bit": spaces.Discrete(2)}),
    }
    act_spaces = {"pointer": spaces.Discrete(3), "switch": spaces.MultiDiscrete([2, 2]), "reader": spaces.Discrete(2)}

    def _new_round(self):
        self.cue, self.d, self.bit = int(self.rng.integers(3)), int(self.rng.integers(4)), int(self.rng.integers(2))

    def _obs(self):
        pointer = np.zeros(4, np.float32)
        pointer[self.cue] = 1.0
        noise = self.rng.uniform(-1, 1, 2).astype(np.float32)
        return {"pointer": pointer, "switch": self.d, "reader": {"noise": noise, "bit": self.bit}}

    def state(self):
        return np.array([self.cue, self.d, self.bit], dtype=np.float32)

    def step(self, actions):
        self._check(actions)
        rewards = {
            "pointer": float(actions["pointer"] == self.cue),
            "switch": float(list(actions["switch"]) == [self.d % 2, self.d // 2]),
            "reader": float(actions["reader"] == self.bit),
        }
        return self._finish(rewards)


class EarlyExitEnv(_Toy):
    """Three agents each rewarded 1 for matching their own cue in {0,1,2,3}.  "scout" leaves
    (terminates) after 3 steps; the others play 10.  Random: (3 + 10 + 10) / 4; optimum 23.
    Sending an action for the departed scout raises."""

    possible_agents = ["scout", "agent_1", "agent_2"]
    obs_spaces = {a: spaces.Box(0.0, 1.0, (4,), np.float32) for a in possible_agents}
    act_spaces = {a: spaces.Discrete(4) for a in possible_agents}
    scout_steps = 3

    def _new_round(self):
        self.cues = {a: int(self.rng.integers(4)) for a in self.possible_agents}

    def _obs(self):
        return {a: np.eye(4, dtype=np.float32)[self.cues[a]] for a in self.agents}

    def state(self):
        return np.array([self.cues[a] for a in self.possible_agents] + [self.t], dtype=np.float32)

    def step(self, actions):
        self._check(actions)
        rewards = {a: float(actions[a] == self.cues[a]) for a in self.agents}
        leaving = ("scout",) if self.t + 1 == self.scout_steps and "scout" in self.agents else ()
        return self._finish(rewards, leaving)


class InfoEnv(EarlyExitEnv):
    """:class:`EarlyExitEnv` whose infos count each agent's steps, every step: the scout finishes
    with ``steps`` 3, the others with 10, and ``early`` is True for the scout only.  They also carry
    things that are not metrics (a string, a vector)."""

    def _infos(self):
        return {a: {"steps": self.t, "early": a == "scout", "label": "cue", "position": np.zeros(2)}
                for a in self.agents}


class MaskedEnv(_Toy):
    """Discrete(5) actions with masks the env enforces by raising.  agent_0 gets PettingZoo's
    Dict observation {"observation", "action_mask"}; agent_1 gets ``info["action_mask"]``.
    The cue (always allowed) pays 1; about half the other actions are masked.  A uniform
    valid choice earns about 1/3 per step; optimum 1."""

    possible_agents = ["agent_0", "agent_1"]
    obs_spaces = {
        "agent_0": spaces.Dict({"observation": spaces.Box(0.0, 1.0, (5,), np.float32),
                                "action_mask": spaces.MultiBinary(5)}),
        "agent_1": spaces.Box(0.0, 1.0, (5,), np.float32),
    }
    act_spaces = {a: spaces.Discrete(5) for a in possible_agents}

    def _new_round(self):
        self.cues, self.masks = {}, {}
        for a in self.possible_agents:
            cue = int(self.rng.integers(5))
            mask = (self.rng.random(5) < 0.5).astype(np.int8)
            mask[cue] = 1
            self.cues[a], self.masks[a] = cue, mask

    def _obs(self):
        out = {}
        for a in self.agents:
            x = np.eye(5, dtype=np.float32)[self.cues[a]]
            out[a] = {"observation": x, "action_mask": self.masks[a].copy()} if a == "agent_0" else x
        return out

    def _infos(self):
        return {a: ({"action_mask": self.masks[a].copy()} if a == "agent_1" else {}) for a in self.agents}

    def step(self, actions):
        self._check(actions)
        for a, act in actions.items():
            if not self.masks[a][act]:
                raise ValueError(f"{a}: masked action {act} (mask {self.masks[a]})")
        return self._finish({a: float(actions[a] == self.cues[a]) for a in self.agents})


class ContinuousEnv(_Toy):
    """Two agents with Box(-1, 1, (2,)) actions, rewarded ``-|a - target|^2`` for a target in
    [-0.8, 0.8]^2 they observe.  Out-of-bounds actions raise.  Optimum 0 per step."""

    possible_agents = ["agent_0", "agent_1"]
    obs_spaces = {a: spaces.Box(-1.0, 1.0, (2,), np.float32) for a in possible_agents}
    act_spaces = {a: spaces.Box(-1.0, 1.0, (2,), np.float32) for a in possible_agents}

    def _new_round(self):
        self.targets = {a: self.rng.uniform(-0.8, 0.8, 2).astype(np.float32) for a in self.possible_agents}

    def _obs(self):
        return {a: self.targets[a].copy() for a in self.agents}

    def state(self):
        return np.concatenate([self.targets[a] for a in self.possible_agents])

    def step(self, actions):
        self._check(actions)
        return self._finish({a: -float(np.sum((np.asarray(actions[a]) - self.targets[a]) ** 2)) for a in self.agents})


class SteeringEnv(_Toy):
    """A cooperative continuous-control task with a fixed horizon of 8 steps.

    Two agents start at random points of [-1, 1]^2 and steer, with velocity actions in
    Box(-1, 1, (2,)) (a move of 0.25 * action per step, kept inside the square), towards a
    shared target in [-0.5, 0.5]^2.  Every step each agent receives the team reward
    ``-(d_0^2 + d_1^2) / 2``, the mean squared distance to the target after the move, so each
    agent's return depends on its partner's steering too.  An agent observes its own and its
    partner's offset to the target and the fraction of the episode left; ``state()`` is both
    positions, the target and the time.  The episode *terminates* after 8 steps: the horizon
    is part of the task, and observed.  Out-of-bounds actions raise.  Uniformly random actions
    score about -14.0 (team return, summed over both agents); the greedy policy (each step, the
    move that lands closest to the target), optimal here since each step's cost depends only
    on where the agents land, about -1.18 (see :func:`steering_greedy_return`).
    """

    possible_agents = ["agent_0", "agent_1"]
    max_steps = 8
    speed = 0.25
    obs_spaces = {a: spaces.Box(-np.inf, np.inf, (5,), np.float32) for a in possible_agents}
    act_spaces = {a: spaces.Box(-1.0, 1.0, (2,), np.float32) for a in possible_agents}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.pos = self.rng.uniform(-1.0, 1.0, (2, 2)).astype(np.float32)
        self.target = self.rng.uniform(-0.5, 0.5, 2).astype(np.float32)
        self.agents = list(self.possible_agents)
        self.t = 0
        return self._obs(), self._infos()

    def _obs(self):
        offsets = self.pos - self.target
        left = np.float32(1.0 - self.t / self.max_steps)
        return {a: np.concatenate([offsets[i], offsets[1 - i], [left]]).astype(np.float32)
                for i, a in enumerate(self.possible_agents) if a in self.agents}

    def state(self):
        return np.concatenate([self.pos.ravel(), self.target, [self.t / self.max_steps]]).astype(np.float32)

    def step(self, actions):
        self._check(actions)
        for i, a in enumerate(self.possible_agents):
            self.pos[i] = np.clip(self.pos[i] + self.speed * np.asarray(actions[a], dtype=np.float32), -1.0, 1.0)
        reward = -float(np.mean(np.sum((self.pos - self.target) ** 2, axis=1)))
        self.t += 1
        done = self.t >= self.max_steps
        obs = self._obs()
        rewards = {a: reward for a in self.agents}
        terms = {a: done for a in self.agents}
        truncs = {a: False for a in self.agents}
        infos = self._infos()
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos


def steering_greedy_return(episodes: int = 200, seed: int = 123) -> float:
    """Mean team return of the greedy steering policy on :class:`SteeringEnv`."""
    env = SteeringEnv()
    totals = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total = 0.0
        while env.agents:
            actions = {a: np.clip(-obs[a][:2] / env.speed, -1.0, 1.0).astype(np.float32) for a in env.agents}
            obs, rewards, _, _, _ = env.step(actions)
            total += sum(rewards.values())
        totals.append(total)
    return float(np.mean(totals))


class MovingDotEnv(_Toy):
    """Pixels whose meaning needs two frames: a dot moving along a strip, one cell per step.

    Each episode a dot starts at a random column of a 3 x 9 strip (an HWC image, uint8, 255 in
    the dot's column) and moves left or right, wrapping around; the direction is drawn per episode.
    Each step the agent guesses the direction (0 = left, 1 = right) and earns 1 when right.  One
    frame cannot show the direction, so a policy that sees one frame scores 5 of 10 on average;
    with ``frame_stack_v2`` (stack 2) it sees the last move and can score 9.5 (the first step's
    stack holds no earlier frame, a coin flip).  ``state()`` is the current frame, flattened.
    """

    possible_agents = ["agent_0"]
    max_steps = 10
    width = 9
    height = 3
    obs_spaces = {"agent_0": spaces.Box(0, 255, (height, width, 1), np.uint8)}
    act_spaces = {"agent_0": spaces.Discrete(2)}

    def _new_round(self):
        if self.t == 0:
            self.pos = int(self.rng.integers(self.width))
            self.direction = int(self.rng.integers(2))  # 0: left, 1: right
        else:
            self.pos = (self.pos + (1 if self.direction else -1)) % self.width

    def _frame(self):
        frame = np.zeros((self.height, self.width, 1), dtype=np.uint8)
        frame[:, self.pos, 0] = 255
        return frame

    def _obs(self):
        return {a: self._frame() for a in self.agents}

    def state(self):
        return self._frame().ravel().astype(np.float32) / 255.0

    def step(self, actions):
        self._check(actions)
        rewards = {"agent_0": float(int(actions["agent_0"]) == self.direction)}
        return self._finish(rewards)


class GridDotEnv(_Toy):
    """A 10x10 grid world whose meaning needs two frames: a dot moves one cell per step in a
    direction drawn per episode (up, down, left, right; wrapping around), and both agents guess
    the direction, each earning 1/2 when right.  The observation is the 10x10 uint8 board (255
    at the dot), as SuperSuit's ``color_reduction_v0`` would give; one frame cannot show the
    direction (team return 2.5 per 10-step episode), two stacked frames (``frame_stack_v2``,
    stack 2: a 10x10x2 HWC grid) show it from the second step on (9.25 at best)."""

    possible_agents = ["agent_0", "agent_1"]
    size = 10
    obs_spaces = {a: spaces.Box(0, 255, (10, 10), np.uint8) for a in possible_agents}
    act_spaces = {a: spaces.Discrete(4) for a in possible_agents}
    moves = ((-1, 0), (1, 0), (0, -1), (0, 1))

    def _new_round(self):
        if self.t == 0:
            self.pos = self.rng.integers(self.size, size=2)
            self.direction = int(self.rng.integers(4))
        else:
            self.pos = (self.pos + self.moves[self.direction]) % self.size

    def _obs(self):
        board = np.zeros((self.size, self.size), dtype=np.uint8)
        board[self.pos[0], self.pos[1]] = 255
        return {a: board.copy() for a in self.agents}

    def state(self):
        raise NotImplementedError

    def step(self, actions):
        self._check(actions)
        return self._finish({a: 0.5 * float(int(actions[a]) == self.direction) for a in self.agents})


class FailingEnv(CoordinationEnv):
    """Raises on its 5th step: for error-surfacing tests."""

    def step(self, actions):
        if self.t == 4:
            raise RuntimeError("boom from FailingEnv")
        return super().step(actions)


class TextObsEnv(CoordinationEnv):
    obs_spaces = {"agent_0": spaces.Text(8), "agent_1": spaces.Box(0.0, 1.0, (3,), np.float32)}


def random_team_return(env_fn, episodes: int = 50, seed: int = 123) -> float:
    """Mean team return of uniformly random valid actions (respecting action masks)."""
    env = env_fn()
    rng = np.random.default_rng(seed)
    totals = []
    for ep in range(episodes):
        obs, infos = env.reset(seed=seed + ep)
        total = 0.0
        while env.agents:
            actions = {}
            for a in env.agents:
                space = env.action_space(a)
                mask = None
                if isinstance(obs[a], dict) and "action_mask" in obs[a]:
                    mask = obs[a]["action_mask"]
                elif "action_mask" in infos.get(a, {}):
                    mask = infos[a]["action_mask"]
                if mask is not None:
                    actions[a] = int(rng.choice(np.flatnonzero(mask)))
                else:
                    space.seed(int(rng.integers(1 << 30)))
                    actions[a] = space.sample()
            obs, rewards, _, _, infos = env.step(actions)
            total += sum(rewards.values())
        totals.append(total)
    return float(np.mean(totals))


class UnevenBatchedEnv:
    """A batched (VMAS-style) env on torch tensors, one agent: env 0's episodes last 2 steps,
    every other env's 50; the reward is -1 per step, so returns are -2 and -50.  Evaluating one
    episode per env over E envs gives (-2 - 50 (E - 1)) / E; counting the first E episodes to
    finish would give -2.  Build it with :func:`uneven_batched_env` (the batched env_fn)."""

    def __init__(self, num_envs: int, device: Any = "cpu", seed: int = 0):
        from mappo.spaces import AgentSpec, TeamSpec

        self.num_envs, self.device = num_envs, torch.device(device)
        self.spec = TeamSpec([AgentSpec.build("agent_0", spaces.Box(0.0, 1.0, (1,), np.float32),
                                              spaces.Discrete(2))], state_dim=0)
        self.lengths = torch.full((num_envs,), 50)
        self.lengths[0] = 2
        E, z = num_envs, functools.partial(torch.zeros, device=device)
        self.arrays = {
            "obs": z(E, 1, 1), "action_mask": torch.ones(E, 1, 2, dtype=torch.bool, device=device),
            "alive": torch.ones(E, 1, dtype=torch.bool, device=device), "state": z(E, 0), "reward": z(E, 1),
            "terminated": z(E, 1, dtype=torch.bool), "truncated": z(E, 1, dtype=torch.bool),
            "final_obs": z(E, 1, 1), "final_state": z(E, 0), "env_done": z(E, dtype=torch.bool),
            "actions": z(E, 1, 1),
        }
        self.t = torch.zeros(num_envs, dtype=torch.long)

    def observe(self, name):
        return self.arrays[name].clone()

    def set_actions(self, actions):
        self.arrays["actions"].copy_(actions)

    def episode_counts(self):
        return None

    def restart_episodes(self, counts):
        self.reset()

    def reset(self):
        self.t.zero_()

    def step(self):
        a = self.arrays
        self.t += 1
        done = self.t >= self.lengths
        a["reward"].fill_(-1.0)
        a["truncated"].copy_(done.unsqueeze(-1))
        a["env_done"].copy_(done)
        episodes = [{"team_return": -float(self.t[i]), "length": int(self.t[i]), "agent_returns": [-float(self.t[i])],
                     "env": i} for i in done.nonzero().squeeze(-1).tolist()]
        self.t[done] = 0
        return episodes

    def close(self):
        pass


def _uneven_builder(num_envs: int = 1, device: Any = "cpu", seed: int = 0) -> UnevenBatchedEnv:
    return UnevenBatchedEnv(num_envs, device, seed)


def uneven_batched_env():
    """The env_fn of :class:`UnevenBatchedEnv` (a mappo.Batched builder)."""
    import mappo

    return mappo.Batched(_uneven_builder)


class NaNObsEnv(CoordinationEnv):
    """CoordinationEnv whose observations turn NaN from its 50th step on (counted over episodes)."""

    steps = 0

    def _obs(self):
        obs = super()._obs()
        if self.steps >= 50:
            obs = {a: np.full(3, np.nan, np.float32) for a in obs}
        return obs

    def step(self, actions):
        self.steps += 1
        return super().step(actions)


class NoneStateEnv(CoordinationEnv):
    def state(self):
        return None


class EndlessEnv(CoordinationEnv):
    """CoordinationEnv whose episodes never end (no time limit): reward 1 for the joint right answer."""

    max_steps = 10 ** 9


class HangingEnv(CoordinationEnv):
    """CoordinationEnv that hangs (sleeps for an hour) on its 5th step."""

    def step(self, actions):
        if self.t == 4:
            import time

            time.sleep(3600)
        return super().step(actions)


class BrokenEnv(CoordinationEnv):
    """CoordinationEnv that breaks its contract on its 3rd step, in the way ``mode`` says."""

    mode = "none"

    def step(self, actions):
        obs, rewards, terms, truncs, infos = super().step(actions)
        if self.t == 3:
            if self.mode == "wrong_shape":
                obs["agent_0"] = np.zeros(5, np.float32)
            elif self.mode == "unknown_agent":
                rewards["intruder"] = 0.0
            elif self.mode == "missing_reward":
                del rewards["agent_1"]
            elif self.mode == "none_reward":
                rewards["agent_1"] = None
            elif self.mode == "missing_obs":
                del obs["agent_0"]
        return obs, rewards, terms, truncs, infos


def broken_env(mode):
    return type(f"BrokenEnv_{mode}", (BrokenEnv,), {"mode": mode})


class PixelTeamEnv(_Toy):
    """Two agents see the same 12x12 RGB uint8 frame with a bright square in one of its four
    quadrants; the team earns 1/2 per agent that names the quadrant, shared (team return per step:
    random 1/4, optimum 1).
    ``state()`` is a 16x16x1 uint8 frame of the same picture: an image state for the critic."""

    possible_agents = ["agent_0", "agent_1"]
    obs_spaces = {a: spaces.Box(0, 255, (12, 12, 3), np.uint8) for a in possible_agents}
    act_spaces = {a: spaces.Discrete(4) for a in possible_agents}

    def _new_round(self):
        self.cue = int(self.rng.integers(4))

    def _frame(self, size: int, channels: int) -> np.ndarray:
        frame = np.zeros((size, size, channels), dtype=np.uint8)
        half = size // 2
        row, col = divmod(self.cue, 2)
        frame[row * half:(row + 1) * half, col * half:(col + 1) * half] = 255
        return frame

    def _obs(self):
        return {a: self._frame(12, 3) for a in self.agents}

    def state(self):
        return self._frame(16, 1)

    def step(self, actions):
        self._check(actions)
        reward = float(np.mean([int(actions[a]) == self.cue for a in self.agents]))
        return self._finish({a: reward / 2 for a in self.agents})


class PixelTeamThousandEnv(PixelTeamEnv):
    """:class:`PixelTeamEnv` with agent_1's rewards scaled by 1000 (agent_0's as they are)."""

    def step(self, actions):
        obs, rewards, terms, truncs, infos = super().step(actions)
        return obs, {a: r * (1000.0 if a == "agent_1" else 1.0) for a, r in rewards.items()}, terms, truncs, infos


class MixedPixelEnv(_Toy):
    """agent_0 sees a Dict: an 8x8 grayscale image (CHW, float in [0, 1]) and a 2-vector, with an
    action mask beside them; agent_1 sees a 4-vector.  The shared reward is 1 when agent_0 names
    the lit image row (0 or 1) and agent_1 the cue in its vector; action 2 of agent_0 is masked."""

    possible_agents = ["agent_0", "agent_1"]
    obs_spaces = {
        "agent_0": spaces.Dict({"observation": spaces.Dict({"image": spaces.Box(0.0, 1.0, (1, 8, 8), np.float32),
                                                            "pos": spaces.Box(-1.0, 1.0, (2,), np.float32)}),
                                "action_mask": spaces.MultiBinary(3)}),
        "agent_1": spaces.Box(0.0, 1.0, (4,), np.float32),
    }
    act_spaces = {"agent_0": spaces.Discrete(3), "agent_1": spaces.Discrete(4)}

    def _new_round(self):
        self.row, self.cue = int(self.rng.integers(2)), int(self.rng.integers(4))

    def _obs(self):
        image = np.zeros((1, 8, 8), dtype=np.float32)
        image[0, self.row * 4:(self.row + 1) * 4] = 1.0
        out = {"agent_0": {"observation": {"image": image, "pos": np.array([0.5, -0.5], np.float32)},
                           "action_mask": np.array([1, 1, 0], np.int8)},
               "agent_1": np.eye(4, dtype=np.float32)[self.cue]}
        return {a: out[a] for a in self.agents}

    def step(self, actions):
        self._check(actions)
        if int(actions["agent_0"]) == 2:
            raise ValueError("agent_0: masked action 2")
        reward = float(int(actions["agent_0"]) == self.row and int(actions["agent_1"]) == self.cue)
        return self._finish({a: reward for a in self.agents})


class TwoTeamEnv(_Toy):
    """Two opposing teams, red (red_0, red_1) and blue (blue_0), see a cue c in {0, 1, 2}.  A red
    agent is right when it names c, the blue agent when it names (c + 1) % 3.  The game is zero
    sum: each red agent earns (red right - blue right) / 2 per step, where "red right" is the
    fraction of red agents that are, and blue earns the negative.  Against a uniformly random
    opponent (right 1/3 of the time) a perfect team earns 2/3 per step, 6.67 per episode;
    two random teams earn 0."""

    possible_agents = ["red_0", "red_1", "blue_0"]
    obs_spaces = {a: spaces.Box(0.0, 1.0, (3,), np.float32) for a in possible_agents}
    act_spaces = {a: spaces.Discrete(3) for a in possible_agents}

    def _new_round(self):
        self.cue = int(self.rng.integers(3))

    def _obs(self):
        return {a: np.eye(3, dtype=np.float32)[self.cue] for a in self.agents}

    def step(self, actions):
        self._check(actions)
        red = np.mean([int(actions[a]) == self.cue for a in ("red_0", "red_1")])
        blue = float(int(actions["blue_0"]) == (self.cue + 1) % 3)
        rewards = {"red_0": (red - blue) / 2, "red_1": (red - blue) / 2, "blue_0": blue - red}
        return self._finish(rewards)


class TwoKindsEnv(_Toy):
    """A cooperative team of two kinds: scouts (scout_0, scout_1) see a cue c in {0, 1, 2} one-hot
    (3 wide) and must name c; pilots (pilot_0, pilot_1) see it as a 5-wide row (one-hot in the
    first 3, then two constant entries) and must name (c + 1) % 3.  Every agent gets the fraction
    of the four that are right: random 1/3 per step (13.3 team return per episode), optimum 40."""

    possible_agents = ["scout_0", "scout_1", "pilot_0", "pilot_1"]
    obs_spaces = {**{a: spaces.Box(0.0, 1.0, (3,), np.float32) for a in ("scout_0", "scout_1")},
                  **{a: spaces.Box(0.0, 1.0, (5,), np.float32) for a in ("pilot_0", "pilot_1")}}
    act_spaces = {a: spaces.Discrete(3) for a in possible_agents}

    def _new_round(self):
        self.cue = int(self.rng.integers(3))

    def _obs(self):
        one_hot = np.eye(3, dtype=np.float32)[self.cue]
        wide = np.concatenate([one_hot, np.array([1.0, 0.5], np.float32)])
        return {a: (one_hot if a.startswith("scout") else wide) for a in self.agents}

    def step(self, actions):
        self._check(actions)
        right = [int(actions[a]) == (self.cue if a.startswith("scout") else (self.cue + 1) % 3) for a in self.agents]
        return self._finish({a: float(np.mean(right)) for a in self.agents})


class ScaledRewardEnv(_Toy):
    """Six agents, one global cue c in {0, 1, 2} (each agent sees it one-hot; the state is c one-hot);
    agent k is paid ``WEIGHTS[k] * c`` whatever it does, so with gamma = 0 agent k's value is
    ``WEIGHTS[k] * c``: the same state, a different value per agent.  Actions are ignored."""

    WEIGHTS = (1.0, -1.0, 3.0, 0.0, 2.0, -2.0)
    possible_agents = [f"agent_{k}" for k in range(6)]
    obs_spaces = {a: spaces.Box(0.0, 1.0, (3,), np.float32) for a in possible_agents}
    act_spaces = {a: spaces.Discrete(2) for a in possible_agents}

    def _new_round(self):
        self.cue = int(self.rng.integers(3))

    def _obs(self):
        return {a: np.eye(3, dtype=np.float32)[self.cue] for a in self.agents}

    def state(self):
        return np.eye(3, dtype=np.float32)[self.cue]

    def step(self, actions):
        self._check(actions)
        cue = self.cue
        return self._finish({a: self.WEIGHTS[k] * cue for k, a in enumerate(self.possible_agents) if a in self.agents})


class StateGoneAtEndEnv(ScaledRewardEnv):
    """:class:`ScaledRewardEnv` whose ``state()`` raises once the episode has ended, as SISL
    multiwalker's does (its package object is gone)."""

    def state(self):
        if self.t >= self.max_steps:
            raise AttributeError("'NoneType' object has no attribute 'position'")
        return super().state()


class SacrificeEnv(_Toy):
    """A hero and an ally share every reward.  While both play, each earns 0.2 per step.  The
    hero's action 0 is a sacrifice: it leaves the episode (terminates, with that step's 0.2), and
    from then on the ally earns 1.0 per step; actions 1-3 keep it in.  The ally's action does
    nothing.  A sacrifice at the first step gives the team 0.4 + 9 = 9.4 over the 10 steps; never
    sacrificing gives 4.0.  The hero's own return is 0.2 for the sacrifice and 2.0 for staying,
    so only a return that runs on with the team's reward after it leaves makes it worth it."""

    possible_agents = ["hero", "ally"]
    obs_spaces = {a: spaces.Box(0.0, 1.0, (2,), np.float32) for a in possible_agents}
    act_spaces = {a: spaces.Discrete(4) for a in possible_agents}

    def _new_round(self):
        pass

    def _obs(self):
        return {a: self.state() for a in self.agents}

    def state(self):
        return np.array([float("hero" in self.agents), self.t / self.max_steps], np.float32)

    def step(self, actions):
        self._check(actions)
        reward = 0.2 if "hero" in self.agents else 1.0
        leaving = ("hero",) if "hero" in self.agents and int(actions["hero"]) == 0 else ()
        return self._finish({a: reward for a in self.agents}, leaving)


class SoloEnv(TwoTeamEnv):
    """One agent sees a cue c in {0, 1, 2} and is paid 1 for naming it.  Random: 1/3 per step."""

    possible_agents = ["agent_0"]
    obs_spaces = {"agent_0": spaces.Box(0.0, 1.0, (3,), np.float32)}
    act_spaces = {"agent_0": spaces.Discrete(3)}

    def step(self, actions):
        self._check(actions)
        return self._finish({"agent_0": float(actions["agent_0"] == self.cue)})


_steps_in_this_process = [0]


class _KilledOnce(ParallelEnv):
    """Steps ``inner`` and, ``after_steps`` env steps into its process, kills that process
    (SIGKILL, as the OOM killer or a lost node would) if it wins the exclusive creation of ``marker``."""

    def __init__(self, inner, marker: str, after_steps: int):
        self.inner, self.marker, self.after_steps = inner, marker, after_steps
        self.possible_agents, self.metadata = inner.possible_agents, inner.metadata

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def observation_space(self, agent):
        return self.inner.observation_space(agent)

    def action_space(self, agent):
        return self.inner.action_space(agent)

    def reset(self, seed=None, options=None):
        return self.inner.reset(seed=seed, options=options)

    def step(self, actions):
        import os
        import signal

        _steps_in_this_process[0] += 1
        if _steps_in_this_process[0] == self.after_steps:
            try:
                open(self.marker, "x").close()
            except FileExistsError:
                return self.inner.step(actions)
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.step(actions)


def climbing_killed_once(marker: str, after_steps: int) -> ParallelEnv:
    """``matrix/climbing``, whose process is killed once (across all processes sharing ``marker``)."""
    from envs.matrix import climbing

    return _KilledOnce(climbing(), marker, after_steps)
