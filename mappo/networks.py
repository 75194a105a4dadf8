"""Actor and critic networks, shared or per agent, and their input builders.

Parameter sharing is a switch, not a class: a :class:`GroupedMLP` holds ``G`` weight sets,
``G = 1`` for "shared" and ``G = A`` for "separate".  Inputs are ``[..., A, in]`` and agent
``a`` uses weight set ``a`` (separate) or 0 (shared), all in one batched matmul.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
from torch.distributions import Categorical, Normal

from .spaces import TeamSpec


class GroupedLinear(nn.Module):
    """``y[..., a, :] = x[..., a, :] @ W[g(a)] + b[g(a)]``; orthogonal init (MAPPO paper, Sec. 4 / App. A)."""

    def __init__(self, groups: int, in_dim: int, out_dim: int, gain: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(groups, out_dim))
        for g in range(groups):
            w = torch.empty(out_dim, in_dim)
            nn.init.orthogonal_(w, gain=gain)
            self.weight.data[g] = w.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[0] == 1:
            return x @ self.weight[0] + self.bias[0]
        # x [..., A, in] with one weight set per agent slot
        return torch.einsum("...ai,aio->...ao", x, self.weight) + self.bias


class GroupedMLP(nn.Module):
    """MLP over ``[..., A, in]``; ``input_norm`` standardises the raw features of each row
    (MAPPO's "feature normalisation", a LayerNorm on the input) before the agent id is added."""

    def __init__(self, groups: int, in_dim: int, hidden: List[int], out_dim: int, activation: str, out_gain: float,
                 norm_dim: int = 0):
        super().__init__()
        self.norm_dim = norm_dim
        act = nn.Tanh if activation == "tanh" else nn.ReLU
        gain = nn.init.calculate_gain(activation)
        layers: List[nn.Module] = []
        prev = in_dim
        for h in hidden:
            layers += [GroupedLinear(groups, prev, h, gain), act()]
            prev = h
        self.body = nn.Sequential(*layers)
        self.head = GroupedLinear(groups, prev, out_dim, out_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_dim:
            feats, rest = x[..., : self.norm_dim], x[..., self.norm_dim :]
            x = torch.cat([nn.functional.layer_norm(feats, (self.norm_dim,)), rest], dim=-1)
        return self.head(self.body(x))


# --------------------------------------------------------------------------------------------
# inputs
def with_agent_id(x: torch.Tensor, add_id: bool) -> torch.Tensor:
    """``x [..., A, F]`` -> ``[..., A, F + A]`` with a one-hot agent id (only for shared nets)."""
    if not add_id:
        return x
    A = x.shape[-2]
    eye = torch.eye(A, device=x.device, dtype=x.dtype).expand(*x.shape[:-2], A, A)
    return torch.cat([x, eye], dim=-1)


def critic_features(obs: torch.Tensor, state: torch.Tensor, alive: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-agent critic input before the id: ``[..., A, C]``.

    obs ``[..., A, O]`` (dead agents already zero), state ``[..., S]`` (S may be 0), alive ``[..., A]``.
    "state": the global state, or the joined observations when the env has no ``state()``;
    "concat_obs": the joined observations; "local": the agent's own observation (IPPO).
    A dead agent's critic input is zeroed (death masking, MAPPO paper Sec. 4.4); it is
    also left out of the loss.
    """
    A = obs.shape[-2]
    if mode == "local":
        feats = obs
    else:
        if mode == "state" and state.shape[-1] > 0:
            glob = state
        else:
            glob = obs.reshape(*obs.shape[:-2], -1)
        feats = glob.unsqueeze(-2).expand(*glob.shape[:-1], A, glob.shape[-1])
    return feats * alive.unsqueeze(-1).to(feats.dtype)


def critic_dim(spec: TeamSpec, mode: str) -> int:
    if mode == "local":
        return spec.obs_dim
    if mode == "state" and spec.state_dim > 0:
        return spec.state_dim
    return spec.obs_dim * spec.num_agents


# --------------------------------------------------------------------------------------------
# action distribution over the team layout (see spaces.py)
class ActionDist:
    """Categorical components (masked logits) + a diagonal Gaussian (masked dims).

    logits ``[..., A, L]``, mask ``[..., A, L]`` bool, mean ``[..., A, D]``, log_std ``[A, D]``,
    cont_mask ``[A, D]``.  Actions are ``[..., A, C + D]`` (C components then D Gaussian dims).
    """

    def __init__(self, spec_sizes: List[int], logits: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                 mean: Optional[torch.Tensor], log_std: Optional[torch.Tensor], cont_mask: Optional[torch.Tensor]):
        self.sizes = spec_sizes
        self.cats: List[Categorical] = []
        if logits is not None and spec_sizes:
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
            for chunk in torch.split(logits, spec_sizes, dim=-1):
                self.cats.append(Categorical(logits=chunk, validate_args=False))
        self.normal = None
        if mean is not None and mean.shape[-1] > 0:
            self.normal = Normal(mean, log_std.exp().expand_as(mean), validate_args=False)
            self.cont_mask = cont_mask

    def sample(self, deterministic: bool = False) -> torch.Tensor:
        parts = []
        for cat in self.cats:
            a = cat.probs.argmax(-1) if deterministic else cat.sample()
            parts.append(a.unsqueeze(-1).float())
        if self.normal is not None:
            parts.append(self.normal.mean if deterministic else self.normal.sample())
        return torch.cat(parts, dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """``[..., A]``: summed over components and valid Gaussian dims."""
        total = 0.0
        C = len(self.cats)
        for c, cat in enumerate(self.cats):
            total = total + cat.log_prob(actions[..., c].long())
        if self.normal is not None:
            total = total + (self.normal.log_prob(actions[..., C:]) * self.cont_mask).sum(-1)
        return total

    def entropy(self) -> torch.Tensor:
        total = 0.0
        for cat in self.cats:
            total = total + cat.entropy()
        if self.normal is not None:
            total = total + (self.normal.entropy() * self.cont_mask).sum(-1)
        return total


class Actor(nn.Module):
    """Decentralised actor: ``obs [..., A, O]`` -> :class:`ActionDist`."""

    def __init__(self, spec: TeamSpec, shared: bool, hidden: List[int], activation: str, input_norm: bool = False):
        super().__init__()
        self.shared = shared
        self.sizes = list(spec.component_sizes)
        self.num_logits, self.cont_dim = spec.num_logits, spec.cont_dim
        groups = 1 if shared else spec.num_agents
        in_dim = spec.obs_dim + (spec.num_agents if shared else 0)
        # small output gain: near-uniform initial policy (Andrychowicz et al. 2021, "What matters")
        self.net = GroupedMLP(groups, in_dim, hidden, self.num_logits + self.cont_dim, activation, out_gain=0.01,
                              norm_dim=spec.obs_dim if input_norm else 0)
        self.log_std = nn.Parameter(torch.zeros(spec.num_agents, self.cont_dim))
        self.register_buffer("cont_mask", torch.as_tensor(spec.cont_mask))

    def forward(self, obs: torch.Tensor, mask: torch.Tensor) -> ActionDist:
        out = self.net(with_agent_id(obs, self.shared))
        logits, mean = out[..., : self.num_logits], out[..., self.num_logits :]
        return ActionDist(self.sizes, logits if self.num_logits else None, mask,
                          mean if self.cont_dim else None, self.log_std, self.cont_mask)


class Critic(nn.Module):
    """Centralised (or local, for IPPO) critic: ``features [..., A, C]`` -> values ``[..., A]``."""

    def __init__(self, spec: TeamSpec, mode: str, shared: bool, hidden: List[int], activation: str,
                 input_norm: bool = False):
        super().__init__()
        self.shared, self.mode = shared, mode
        groups = 1 if shared else spec.num_agents
        feat_dim = critic_dim(spec, mode)
        in_dim = feat_dim + (spec.num_agents if shared else 0)
        self.net = GroupedMLP(groups, in_dim, hidden, 1, activation, out_gain=1.0, norm_dim=feat_dim if input_norm else 0)

    def forward(self, obs: torch.Tensor, state: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        feats = critic_features(obs, state, alive, self.mode)
        return self.net(with_agent_id(feats, self.shared)).squeeze(-1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


