"""Per-agent spaces -> one fixed tensor layout for the whole team.

Observations are flattened (gymnasium's ``flatten``: Box flattened, Discrete one-hot,
MultiBinary, Dict/Tuple concatenated) and zero-padded to the widest agent, so a team
observation is ``[A, obs_dim]``.  (SuperSuit's pad_observations_v0 and pad_action_space_v0 pad
too, but inside the env: padded actions would become real, sampleable choices; here padded
logits are masked out, so they add nothing to log-probs or entropy.)

Actions use one layout for every agent: ``num_components`` categorical components
(Discrete is one component, MultiDiscrete one per entry) followed by ``cont_dim``
Gaussian dimensions (Box).  Gaussian dimensions are in the policy's own units, -1 and 1 at
the Box's bounds, whatever the bounds are (:func:`to_bounds` maps them into the Box and
clips), so one initial action std fits every env (SB3's advice to normalise action spaces).  An agent with fewer components than the widest gets padded
components in which only logit 0 is valid, and padded Gaussian dimensions are masked out,
so padded parts add nothing to log-probs or entropy.  A team action is ``[A, action_width]``.

Action masks follow PettingZoo: a Dict observation with "observation" and "action_mask",
or ``info["action_mask"]``.  Masks are ``[A, num_logits]`` booleans.

Images: an agent whose observation is an image (:func:`find_image`), alone or beside
vectors in a Dict, keeps its :class:`ImageLayout`, so an encoder can cut the image back out of the
flat row.  When every agent's observation is a uint8 Box, the team's rows are uint8
(``TeamSpec.obs_dtype``): they stay uint8 in the workers' shared memory and the rollout buffer,
and become float only in the encoder.  A uint8 ``state()`` stays uint8 the same way.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from gymnasium import spaces

_OBS_LEAVES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def check_obs_space(agent: str, space: spaces.Space) -> None:
    """Raise a TypeError naming ``agent`` and the space when it cannot be flattened."""
    if isinstance(space, _OBS_LEAVES):
        return
    if isinstance(space, spaces.Dict):
        for sub in space.spaces.values():
            check_obs_space(agent, sub)
        return
    if isinstance(space, spaces.Tuple):
        for sub in space.spaces:
            check_obs_space(agent, sub)
        return
    raise TypeError(
        f"agent {agent!r}: unsupported observation space {space!r}; supported: Box, Discrete, "
        "MultiDiscrete, MultiBinary, and Dict/Tuple of these"
    )


@dataclass(frozen=True)
class ImageLayout:
    """Where an image sits in a flat observation row, and how to read it back.

    ``shape`` is the image's shape as the env gives it: ``(H, W, C)``, ``(C, H, W)`` or ``(H, W)``;
    ``offset`` is its first entry in the agent's flattened observation (gymnasium flattens a Dict
    key by key); ``scale`` maps its values to about [0, 1] (1/255 for uint8, 1 for float images).
    """

    shape: Tuple[int, ...]
    channels_first: bool
    offset: int
    scale: float

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def chw(self) -> Tuple[int, int, int]:
        """``(C, H, W)``, the layout a convolution takes."""
        if len(self.shape) == 2:
            return (1, *self.shape)
        c, h, w = self.shape if self.channels_first else (self.shape[2], self.shape[0], self.shape[1])
        return (c, h, w)

    def describe(self) -> str:
        layout = "" if len(self.shape) == 2 else " (CHW)" if self.channels_first else " (HWC)"
        return "x".join(str(n) for n in self.shape) + layout


def is_image(space: spaces.Space) -> bool:
    """A Box that is an image: 3-D (HWC or CHW), uint8 in [0, 255] or float; or 2-D uint8 (a
    grayscale frame, as SuperSuit's ``color_reduction_v0`` makes)."""
    if not isinstance(space, spaces.Box):
        return False
    if space.dtype == np.uint8:
        return len(space.shape) in (2, 3) and min(space.shape[:2] if len(space.shape) == 2 else space.shape) >= 1
    return len(space.shape) == 3 and np.issubdtype(space.dtype, np.floating)


IMAGE_LAYOUTS = ("auto", "hwc", "chw")


def channels_first(shape: Tuple[int, ...], layout: str = "auto") -> bool:
    """Whether a 3-D image of ``shape`` is CHW.  ``layout`` "hwc" or "chw" says so (the config
    field ``image_layout``); "auto" reads the shape:

    - HWC is the default: PettingZoo's envs render HWC, and SuperSuit's ``frame_stack_v2`` stacks
      frames on the last axis (a 5x5 grid with 6 stacked channels is (5, 5, 6)).
    - A square frame shows where its channels are: (84, 84, 4) and (5, 5, 6) are HWC,
      (4, 84, 84) and (12, 64, 64) are CHW.
    - Otherwise the channels are the smaller end (SB3's rule): (3, 210, 160) is CHW,
      (210, 160, 3) HWC.
    """
    if layout not in IMAGE_LAYOUTS:
        raise ValueError(f"config field 'image_layout' must be one of {list(IMAGE_LAYOUTS)}, got {layout!r}")
    if len(shape) != 3:
        return False
    if layout != "auto":
        return layout == "chw"
    if shape[0] == shape[1]:
        return False
    if shape[1] == shape[2]:
        return True
    return shape[0] < shape[-1]


def _image_layout(box: spaces.Box, offset: int, layout: str) -> ImageLayout:
    shape = tuple(int(n) for n in box.shape)
    return ImageLayout(shape, channels_first(shape, layout), offset, 1.0 / 255.0 if box.dtype == np.uint8 else 1.0)


def find_image(space: spaces.Space, layout: str = "auto") -> Optional[ImageLayout]:
    """The image in an (inner) observation space: the space itself, or the first image in a Dict
    (its other keys are vectors, concatenated after the image's features); else None.  ``layout``:
    see :func:`channels_first`."""
    if is_image(space):
        return _image_layout(space, 0, layout)
    if isinstance(space, spaces.Dict):
        offset = 0
        for sub in space.spaces.values():
            if is_image(sub):
                return _image_layout(sub, offset, layout)
            offset += int(spaces.flatdim(sub))
    return None


def state_image(shape: Tuple[int, ...], dtype: Any, layout: str = "auto") -> Optional[ImageLayout]:
    """The layout of an image ``state()`` of this shape and dtype, or None when it is a vector."""
    box = spaces.Box(0, 255, shape, np.uint8) if np.dtype(dtype) == np.uint8 else \
        spaces.Box(-np.inf, np.inf, shape, np.float32)
    return _image_layout(box, 0, layout) if is_image(box) else None


def _is_mask_dict(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Dict) and set(space.spaces) >= {"observation", "action_mask"}


@dataclass
class AgentSpec:
    """How one agent's observation and action map onto the team layout."""

    name: str
    obs_space: spaces.Space  # the part that is flattened (inner "observation" for mask dicts)
    action_space: spaces.Space
    obs_dim: int
    nvec: List[int]  # categorical component sizes (empty for Box)
    cont_dim: int  # Gaussian dimensions (0 unless Box)
    mask_in_obs: bool  # action mask is carried in a Dict observation
    image: Optional[ImageLayout] = None  # the image inside the observation, if any (find_image)

    @classmethod
    def build(cls, name: str, obs_space: spaces.Space, action_space: spaces.Space) -> "AgentSpec":
        mask_in_obs = _is_mask_dict(obs_space)
        inner = obs_space["observation"] if mask_in_obs else obs_space
        check_obs_space(name, inner)
        if isinstance(action_space, spaces.Discrete):
            nvec, cont = [int(action_space.n)], 0
        elif isinstance(action_space, spaces.MultiDiscrete):
            if action_space.nvec.ndim != 1:
                raise TypeError(f"agent {name!r}: MultiDiscrete action space must be 1-D, got {action_space!r}")
            nvec, cont = [int(n) for n in action_space.nvec], 0
        elif isinstance(action_space, spaces.Box):
            if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
                raise TypeError(f"agent {name!r}: Box action space must have finite bounds, got {action_space!r}")
            nvec, cont = [], int(np.prod(action_space.shape))
        else:
            raise TypeError(
                f"agent {name!r}: unsupported action space {action_space!r}; supported: Discrete, MultiDiscrete, Box"
            )
        return cls(name, inner, action_space, int(spaces.flatdim(inner)), nvec, cont, mask_in_obs, find_image(inner))


class TeamSpec:
    """The fixed team layout: agent slots from ``possible_agents``, padded widths, static masks.

    Attributes (A = number of agents):
        obs_dim: padded observation width O.
        component_sizes: per categorical component, the largest size over agents; sum = num_logits L.
        cont_dim: padded Gaussian width D.
        valid_logits: ``[A, L]`` bool, the logits that exist for each agent.
        cont_mask: ``[A, D]`` float, the Gaussian dims that exist for each agent.
        action_width: ``len(component_sizes) + D``.
        state_dim: width of ``env.state()`` or 0 when the env has none.
        obs_dtype: numpy dtype of the team's observation rows: uint8 when every agent's
            (inner) observation space is a uint8 Box, else float32.
        state_shape, state_dtype: ``env.state()``'s own shape and dtype (uint8 kept as uint8).
    """

    def __init__(self, agents: List[AgentSpec], state_dim: int):
        self.agents = agents
        self.names = [a.name for a in agents]
        self.num_agents = len(agents)
        self.obs_dim = max(a.obs_dim for a in agents)
        num_components = max(len(a.nvec) for a in agents)
        self.component_sizes = [
            max((a.nvec[c] if c < len(a.nvec) else 1) for a in agents) for c in range(num_components)
        ]
        self.num_components = num_components
        self.num_logits = int(sum(self.component_sizes))
        self.cont_dim = max(a.cont_dim for a in agents)
        self.action_width = num_components + self.cont_dim
        self.state_dim = state_dim
        self.state_shape: Tuple[int, ...] = (state_dim,)
        self.state_dtype: Any = np.float32
        self.image_layout = "auto"  # where 3-D images keep their channels (set_image_layout)
        self.obs_dtype: Any = np.uint8 if all(
            isinstance(a.obs_space, spaces.Box) and a.obs_space.dtype == np.uint8 for a in agents) else np.float32
        self.valid_logits = np.zeros((self.num_agents, self.num_logits), dtype=bool)
        self.cont_mask = np.zeros((self.num_agents, self.cont_dim), dtype=np.float32)
        self.cont_low = np.zeros((self.num_agents, self.cont_dim), dtype=np.float32)
        self.cont_high = np.zeros((self.num_agents, self.cont_dim), dtype=np.float32)
        offsets = np.cumsum([0] + self.component_sizes)
        for i, a in enumerate(agents):
            for c in range(num_components):
                n = a.nvec[c] if c < len(a.nvec) else 1  # a padded component has one valid choice: 0
                self.valid_logits[i, offsets[c] : offsets[c] + n] = True
            self.cont_mask[i, : a.cont_dim] = 1.0
            if a.cont_dim:
                self.cont_low[i, : a.cont_dim] = np.asarray(a.action_space.low, dtype=np.float32).ravel()
                self.cont_high[i, : a.cont_dim] = np.asarray(a.action_space.high, dtype=np.float32).ravel()
        self.logit_offsets = offsets

    @classmethod
    def from_env(cls, env: Any) -> "TeamSpec":
        agents = [AgentSpec.build(a, env.observation_space(a), env.action_space(a)) for a in env.possible_agents]
        if not agents:
            raise ValueError("the env has no possible_agents")
        return cls(agents, state_dim=0)

    def set_state(self, state: Optional[np.ndarray]) -> None:
        """Record ``env.state()``'s layout from one sample (None: the env has no state)."""
        if state is None:
            self.state_dim, self.state_shape, self.state_dtype = 0, (0,), np.float32
        else:
            self.state_dim, self.state_shape = int(state.size), tuple(int(n) for n in np.shape(state))
            self.state_dtype = np.uint8 if state.dtype == np.uint8 else np.float32

    def set_image_layout(self, layout: str) -> None:
        """Read every 3-D image (observations and ``state()``) as ``layout``: "hwc", "chw" or
        "auto" (:func:`channels_first`)."""
        self.image_layout = layout
        for a in self.agents:
            if a.image is not None:
                a.image = dataclasses.replace(a.image, channels_first=channels_first(a.image.shape, layout))

    @property
    def state_image(self) -> Optional[ImageLayout]:
        """The layout of an image ``state()`` (pistonball's is the whole screen), else None."""
        return state_image(self.state_shape, self.state_dtype, self.image_layout) if self.state_dim else None

    def layout(self) -> Dict[str, Any]:
        """The team layout as plain data: what a checkpoint must match to load, and what an
        exported actor's sidecar JSON records."""
        return {
            "agents": list(self.names), "obs_dim": self.obs_dim, "state_dim": self.state_dim,
            # new keys sit at the top level: a checkpoint is checked on the keys it has (older ones lack these)
            "obs_dtype": np.dtype(self.obs_dtype).name,
            "obs_images": [None if a.image is None else {"shape": list(a.image.shape), "offset": a.image.offset,
                                                         "channels_first": a.image.channels_first} for a in self.agents],
            "num_logits": self.num_logits, "action_width": self.action_width,
            "per_agent": [{"name": a.name, "obs_size": a.obs_dim, "categorical_sizes": list(a.nvec),
                           "continuous_dims": a.cont_dim,
                           "continuous_low": self.cont_low[i, : a.cont_dim].tolist(),
                           "continuous_high": self.cont_high[i, : a.cont_dim].tolist()}
                          for i, a in enumerate(self.agents)],
        }

    # --- observations ------------------------------------------------------------------------
    def flatten_obs(self, index: int, obs: Any, out: np.ndarray) -> None:
        """Write agent ``index``'s flattened observation into ``out`` ``[O]`` (zero-padded)."""
        spec = self.agents[index]
        if spec.mask_in_obs:
            obs = obs["observation"]
        flat = spaces.flatten(spec.obs_space, obs)
        out[: spec.obs_dim] = flat
        out[spec.obs_dim :] = 0.0

    def action_mask(self, index: int, obs: Any, info: Optional[Dict[str, Any]], out: np.ndarray) -> None:
        """Write agent ``index``'s logit mask ``[L]``: static validity AND the env's action mask."""
        spec = self.agents[index]
        out[:] = self.valid_logits[index]
        mask = None
        if spec.mask_in_obs:
            mask = obs["action_mask"]
        elif info and "action_mask" in info:
            mask = info["action_mask"]
        if mask is None:
            return
        mask = np.asarray(mask, dtype=bool).ravel()
        if not spec.nvec:
            return  # masks only apply to categorical actions
        expected = int(sum(spec.nvec))
        if mask.size != expected:
            raise ValueError(f"agent {spec.name!r}: action mask has {mask.size} entries, expected {expected}")
        start = 0
        for c, n in enumerate(spec.nvec):
            lo = self.logit_offsets[c]
            out[lo : lo + n] &= mask[start : start + n]
            start += n

    # --- actions -------------------------------------------------------------------------------
    def decode_action(self, index: int, action: np.ndarray) -> Any:
        """Team-layout action row ``[action_width]`` -> a value in the agent's own action space."""
        spec = self.agents[index]
        space = spec.action_space
        if isinstance(space, spaces.Discrete):
            return int(action[0]) + int(space.start)
        if isinstance(space, spaces.MultiDiscrete):
            comps = action[: len(spec.nvec)].astype(np.int64)
            return (comps + space.start).astype(space.dtype)
        cont = action[self.num_components : self.num_components + spec.cont_dim]
        cont = to_bounds(cont, self.cont_low[index, : spec.cont_dim], self.cont_high[index, : spec.cont_dim])
        return cont.reshape(space.shape).astype(space.dtype)

    def encode_action(self, index: int, action: Any) -> np.ndarray:
        """An action in the agent's own space -> a team-layout row ``[action_width]``."""
        spec = self.agents[index]
        space = spec.action_space
        row = np.zeros(self.action_width, dtype=np.float32)
        if isinstance(space, spaces.Discrete):
            row[0] = int(action) - int(space.start)
        elif isinstance(space, spaces.MultiDiscrete):
            row[: len(spec.nvec)] = np.asarray(action) - space.start
        else:
            low, high = self.cont_low[index, : spec.cont_dim], self.cont_high[index, : spec.cont_dim]
            row[self.num_components : self.num_components + spec.cont_dim] = (
                2.0 * (np.asarray(action, dtype=np.float32).ravel() - low) / (high - low) - 1.0)
        return row


def to_bounds(u: Any, low: Any, high: Any) -> Any:
    """Gaussian action dims in the policy's units (-1 at ``low``, 1 at ``high``) -> the env's
    Box, clipped into it (CleanRL and SB3 clip rather than squash).  numpy arrays or torch
    tensors; ``low``/``high`` broadcast against ``u``."""
    return (low + (u + 1.0) * 0.5 * (high - low)).clip(low, high)


def flatten_state(state: Any) -> np.ndarray:
    """``env.state()`` as a flat row: uint8 stays uint8 (an image state), anything else float32."""
    state = np.asarray(state)
    return (state if state.dtype == np.uint8 else state.astype(np.float32)).ravel()


def random_actions(spec: TeamSpec, mask: Any, generator: Optional[Any] = None) -> Any:
    """Uniformly random valid actions for a batch: mask ``[E, A, L]`` -> actions ``[E, A, W]``.

    Works on torch tensors (on the mask's device) and numpy arrays alike; used for raw env
    throughput (``scripts/bench_throughput.py``) and conformance tests.  Each categorical
    component picks uniformly among its allowed entries; Gaussian dims are uniform in [-1, 1],
    the policy's units, which :func:`to_bounds` maps onto the whole box.
    """
    import torch

    as_numpy = isinstance(mask, np.ndarray)
    m_all = torch.from_numpy(mask) if as_numpy else mask
    E, A = m_all.shape[:2]
    out = torch.zeros(E, A, spec.action_width, device=m_all.device)
    for c, size in enumerate(spec.component_sizes):
        m = m_all[..., spec.logit_offsets[c] : spec.logit_offsets[c] + size].float()
        scores = torch.rand(m.shape, generator=generator, device=m.device)
        out[..., c] = torch.argmax(scores * m + m, dim=-1).float()  # argmax over allowed entries only
    if spec.cont_dim:
        u = torch.rand(E, A, spec.cont_dim, generator=generator, device=m_all.device)
        out[..., spec.num_components :] = 2.0 * u - 1.0
    return out.numpy() if as_numpy else out
