"""VMAS scenarios as a batched vector env whose tensors never leave the training device.

VMAS (Bettini et al. 2022) simulates all envs at once in torch.  This adapter exposes the
same arrays as ``mappo.vector`` (``obs [E, A, O]``, ``reward [E, A]``, ...), but as torch
tensors on the device, so the Trainer's loop runs without numpy or IPC.  One host sync per
step remains: reading whether any env finished, to reset it and report its episode.
VMAS can only reset one env index at a time (``reset_at``), so envs that finish on their own
are reset in a loop over the *finished* envs; when all finish together (fixed
``max_steps``, the usual case) one batched ``reset`` is used.

Each adapter owns its random streams (:class:`OwnRandomState`).  VMAS itself keeps one random
state for every env in the process (a class attribute of its ``Environment``, swapped in around
each call), seeds an env with ``torch.manual_seed`` (which reseeds every CUDA generator too), and
on a GPU draws resets from the process's CUDA generator.  Without the adapter's own state, building
an evaluation env would reseed the training env's resets, and on a GPU the policy's sampling.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch

from mappo.spaces import AgentSpec, TeamSpec, to_bounds


def to_gymnasium(space: Any) -> Any:
    """VMAS speaks the older ``gym`` space classes; map them onto gymnasium's."""
    from gymnasium import spaces

    kind = type(space).__name__
    if kind == "Box":
        return spaces.Box(np.asarray(space.low, np.float32), np.asarray(space.high, np.float32), dtype=np.float32)
    if kind == "Discrete":
        return spaces.Discrete(int(space.n))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.asarray(space.nvec))
    raise TypeError(f"unsupported VMAS space {space!r}")


def final_info(infos: List[Dict[str, torch.Tensor]], index: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``{key: [len(index), A]}``: the per-env scalars (``[E]`` or ``[E, 1]`` tensors) of each agent's
    VMAS info at the envs ``index`` that just finished, NaN for an agent without that key."""
    out: Dict[str, torch.Tensor] = {}
    for k, info in enumerate(infos):
        for key, value in (info or {}).items():
            if torch.is_tensor(value) and value.dim() in (1, 2) and value.numel() == value.shape[0]:
                column = out.setdefault(key, torch.full((len(index), len(infos)), float("nan"), dtype=torch.float64))
                column[:, k] = value.reshape(-1)[index].to("cpu", torch.float64)
    return out


class OwnRandomState:
    """One VMAS env's own random streams: its copy of VMAS's shared state (torch CPU, numpy and
    Python ``random``) and, on a GPU, of the device's CUDA generator.  ``with own():`` around every
    call into VMAS swaps them in, and afterwards keeps what the call left and gives the process
    (and any other VMAS env) back its own, so envs and the caller never draw from each other."""

    def __init__(self, device: torch.device):
        self.cuda = device if device.type == "cuda" else None
        self.shared: Optional[List[Any]] = None  # set by the first call (the env's construction seeds it)
        self.cuda_state: Optional[torch.Tensor] = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        from vmas.simulator.environment.environment import Environment

        shared = Environment.vmas_random_state
        others = list(shared)
        caller_cuda = torch.cuda.get_rng_state(self.cuda) if self.cuda is not None else None
        if self.shared is not None:
            shared[:] = self.shared
        if self.cuda_state is not None:
            torch.cuda.set_rng_state(self.cuda_state, self.cuda)
        try:
            yield
        finally:
            self.shared = list(shared)
            shared[:] = others
            if caller_cuda is not None:
                self.cuda_state = torch.cuda.get_rng_state(self.cuda)
                torch.cuda.set_rng_state(caller_cuda, self.cuda)


class VmasVectorEnv:
    """A ``mappo.protocol.VectorEnv`` over one VMAS simulator; every field is a tensor on ``device``."""

    def __init__(self, scenario: str, num_envs: int, device: Any = "cpu", seed: int = 0, max_steps: int = 100,
                 continuous_actions: bool = True, **scenario_kwargs: Any):
        try:
            import vmas
        except ImportError as err:
            raise ImportError("VMAS envs need the vmas extra: pip install -e '.[vmas]'") from err
        self.device = torch.device(device)
        self.own = OwnRandomState(self.device)
        with self.own():
            self.env = vmas.make_env(scenario, num_envs=num_envs, device=self.device,
                                     continuous_actions=continuous_actions, max_steps=max_steps, seed=seed,
                                     terminated_truncated=True, dict_spaces=False, **scenario_kwargs)
        self.num_envs = num_envs
        names = [agent.name for agent in self.env.agents]
        obs_spaces, act_spaces = self.env.observation_space, self.env.action_space
        self.spec = TeamSpec([AgentSpec.build(n, to_gymnasium(obs_spaces[i]), to_gymnasium(act_spaces[i])) for i, n in enumerate(names)], 0)
        spec, E, A = self.spec, num_envs, self.spec.num_agents
        zeros = lambda *shape, dtype=torch.float32: torch.zeros(shape, dtype=dtype, device=self.device)  # noqa: E731
        self.arrays: Dict[str, torch.Tensor] = {
            "obs": zeros(E, A, spec.obs_dim), "state": zeros(E, 0),
            "action_mask": torch.as_tensor(spec.valid_logits, device=self.device).expand(E, A, spec.num_logits).clone(),
            "alive": torch.ones(E, A, dtype=torch.bool, device=self.device),  # VMAS agents never leave early
            "reward": zeros(E, A), "terminated": zeros(E, A, dtype=torch.bool), "truncated": zeros(E, A, dtype=torch.bool),
            "final_obs": zeros(E, A, spec.obs_dim), "final_state": zeros(E, 0),
            "env_done": zeros(E, dtype=torch.bool), "actions": zeros(E, A, spec.action_width),
        }
        self.low = torch.as_tensor(spec.cont_low, device=self.device)
        self.high = torch.as_tensor(spec.cont_high, device=self.device)
        self.team_return = zeros(E)
        self.agent_returns = zeros(E, A)
        self.length = zeros(E)

    def _write_obs(self, obs: List[torch.Tensor], out: torch.Tensor) -> None:
        for k, o in enumerate(obs):
            d = o.shape[-1]
            out[:, k, :d] = o

    def observe(self, name: str) -> torch.Tensor:
        return self.arrays[name].clone()  # a snapshot: a step writes obs in place

    def set_actions(self, actions: torch.Tensor) -> None:
        self.arrays["actions"] = actions

    def episode_counts(self) -> None:
        return None  # VMAS cannot restart a given episode: a resumed run restarts every env's episode

    def restart_episodes(self, counts: Any) -> None:
        self.reset()

    def reset(self) -> None:
        with self.own():
            obs = self.env.reset()
        self._write_obs(obs, self.arrays["obs"])
        self.team_return.zero_(), self.agent_returns.zero_(), self.length.zero_()

    def step(self) -> List[Dict[str, Any]]:
        a, spec = self.arrays, self.spec
        actions = []
        for k, agent in enumerate(spec.agents):
            if agent.nvec:
                actions.append(a["actions"][:, k, : len(agent.nvec)].long())
            else:
                c = spec.num_components
                actions.append(to_bounds(a["actions"][:, k, c : c + agent.cont_dim], self.low[k, : agent.cont_dim],
                                         self.high[k, : agent.cont_dim]))
        with self.own():
            obs, rewards, terminated, truncated, infos = self.env.step(actions)
        reward = torch.stack(rewards, dim=-1).to(torch.float32)
        terminated = terminated.bool()
        truncated = truncated.bool() & ~terminated
        a["reward"] = reward
        a["terminated"] = terminated.unsqueeze(-1).expand_as(reward)
        a["truncated"] = truncated.unsqueeze(-1).expand_as(reward)
        self._write_obs(obs, a["final_obs"])
        done = terminated | truncated
        a["env_done"] = done
        self.team_return += reward.sum(-1)
        self.agent_returns += reward
        self.length += 1
        if not bool(done.any()):  # the one host sync per step
            a["obs"].copy_(a["final_obs"])
            return []
        index = done.nonzero().squeeze(-1)
        episodes = [{"team_return": float(t), "length": int(n), "agent_returns": r, "env": i}
                    for i, t, n, r in zip(index.tolist(), self.team_return[index].tolist(),
                                          self.length[index].tolist(), self.agent_returns[index].tolist())]
        for key, values in final_info(infos, index).items():
            for episode, row in zip(episodes, values.tolist()):
                episode.setdefault("info", {})[key] = row
        with self.own():
            if bool(done.all()):
                obs = self.env.reset()
            else:
                for i in index.tolist():
                    self.env.reset_at(i, return_observations=False)
                obs = self.env.get_from_scenario(get_observations=True, get_rewards=False, get_infos=False,
                                                 get_dones=False)[0]
        self._write_obs(obs, a["obs"])
        self.team_return[index] = 0.0
        self.agent_returns[index] = 0.0
        self.length[index] = 0.0
        return episodes

    def close(self) -> None:
        pass


class VmasEnvFn:
    """The builder behind ``make_env_fn("vmas/<scenario>", ...)`` (wrapped in ``mappo.Batched``):
    called by the Trainer with ``num_envs``, ``device`` and ``seed`` to build one batched env."""

    def __init__(self, scenario: str, **kwargs: Any):
        self.scenario, self.kwargs = scenario, kwargs

    def __call__(self, num_envs: int = 1, device: Any = "cpu", seed: Optional[int] = 0) -> VmasVectorEnv:
        return VmasVectorEnv(self.scenario, num_envs, device, 0 if seed is None else seed, **self.kwargs)
