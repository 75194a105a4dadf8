"""Observation encoders: flat team rows ``[..., A, O]`` -> features ``[..., A, F]``.

The config field ``encoder`` picks one per agent:

    auto   a CNN for an agent whose observation is an image (``spaces.find_image``) at least
           3x3, else the MLP
    mlp    every observation flattened into the MLP
    cnn    a CNN for every agent (an agent without an image is an error naming it)

"mlp" means no encoder of its own: the row goes straight to the actor's or critic's MLP trunk
(uint8 rows become float in [0, 1] first).  A CNN agent's image is cut back out of the flat row,
made float and scaled to [0, 1] here, on the training device (so frames travel and are stored as
uint8), run through a conv stack and joined with the row's other entries (the vector keys of a
Dict observation).  The existing MLP trunk then follows.

The conv stack is the config's (``cnn_channels``, ``cnn_kernels``, ``cnn_strides``,
``cnn_features``) where it sets one, else chosen from the image's size by :func:`conv_preset`,
in the spirit of RLlib's filter presets (``rllib/models/utils.py: get_filter_config``): 3x3
convolutions for small grids, the Nature CNN (Mnih et al. 2015) for Atari-size frames, and more
stride-2 layers for large screens.  The trainer prints the choice once and writes it into the
run's config (:func:`resolve_conv_stacks`).

Parameter sharing works as for the MLP: "shared" means one encoder for every agent, so every
agent must see the same kind of input (a clear error says what to do otherwise); "separate"
means one encoder per agent slot, whose feature widths may differ (zero-padded to the widest).

A new encoder is one class with ``build(image, row_dim, cfg, what)``, ``forward(rows [N, O]) ->
[N, F]`` and ``out_dim``, plus an entry in :data:`ENCODERS`; ``encoder=<its name>`` then picks it.
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from .spaces import ImageLayout, TeamSpec

# a conv stack whose flattened output times cnn_features exceeds this many weights is refused
# (a raw 560x880 screen through the Nature CNN gives ~225M): resize the image instead
MAX_PROJECTION_WEIGHTS = 50_000_000
# encoder=auto gives a CNN to images whose shorter side is at least this (a 3x3 convolution fits)
MIN_CNN_SIDE = 3


class ConvStack(NamedTuple):
    """A conv stack: one entry per layer in the first three, then the Linear's width."""
    channels: Tuple[int, ...]
    kernels: Tuple[int, ...]
    strides: Tuple[int, ...]
    features: int

    def describe(self) -> str:
        layers = ", ".join(f"{c}@{k}x{k}/{s}" for c, k, s in zip(self.channels, self.kernels, self.strides))
        return f"conv [{layers}] -> {self.features} features"


def _out_side(side: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    for k, s in zip(kernels, strides):
        side = (side - k) // s + 1
    return side


def conv_preset(height: int, width: int) -> ConvStack:
    """The conv stack ``encoder=auto`` gives an image of ``height x width`` pixels (channels aside),
    by its shorter side:

    - under 16 (grid worlds, MinAtar-like boards, stacked small frames): one 3x3 convolution of 16
      channels with stride 1, then 128 features: MinAtar's network for its 10x10 boards (Young &
      Tian 2019, Sec. 4);
    - 16 to 47: (32, 64, 64) channels, 3x3 kernels, strides (2, 2, 1), 512 features;
    - 48 and up (Atari's 84x84): the Nature CNN, (32, 64, 64) channels, kernels (8, 4, 3),
      strides (4, 2, 1), 512 features; above about 128 pixels, more 64-channel 3x3 stride-2
      layers until the shorter side of the output is at most 12 (a 560x880 screen gets three).
    """
    side = min(height, width)
    if side < MIN_CNN_SIDE:
        raise ValueError(f"a {height}x{width} image is too small for a convolution; use encoder=mlp")
    if side < 16:
        return ConvStack((16,), (3,), (1,), 128)
    if side < 48:
        return ConvStack((32, 64, 64), (3, 3, 3), (2, 2, 1), 512)
    channels, kernels, strides = [32, 64, 64], [8, 4, 3], [4, 2, 1]
    while _out_side(side, kernels, strides) > 12:
        channels, kernels, strides = channels + [64], kernels + [3], strides + [2]
    return ConvStack(tuple(channels), tuple(kernels), tuple(strides), 512)


def conv_stack(settings: Any, image: ImageLayout) -> ConvStack:
    """The stack for ``image``: the config's layers where it sets them (``cnn_channels``,
    ``cnn_kernels``, ``cnn_strides``, all three or none), else :func:`conv_preset`'s; its
    ``cnn_features`` where set, else the preset's."""
    _, h, w = image.chw
    preset = conv_preset(h, w) if min(h, w) >= MIN_CNN_SIDE else None
    if settings.cnn_channels is not None:
        layers = (tuple(settings.cnn_channels), tuple(settings.cnn_kernels), tuple(settings.cnn_strides))
    elif preset is None:
        raise ValueError(f"the image {image.describe()} is too small for a convolution ({MIN_CNN_SIDE}x"
                         f"{MIN_CNN_SIDE} at least); use encoder=auto or mlp, or set cnn_kernels yourself")
    else:
        layers = preset[:3]
    features = settings.cnn_features if settings.cnn_features is not None else (preset.features if preset else 512)
    return ConvStack(*layers, features)


def as_float(rows: torch.Tensor) -> torch.Tensor:
    """uint8 rows (images) -> float in [0, 1]; float rows unchanged."""
    return rows.float() / 255.0 if rows.dtype == torch.uint8 else rows


class ConvEncoder(nn.Module):
    """One image inside a flat row: conv stack (ReLU) -> flatten -> Linear(``features``) -> ReLU,
    then the row's other entries appended.  ``forward(rows [N, D]) -> [N, features + D - image]``.

    Orthogonal init with gain sqrt(2), as CleanRL's Atari PPO (and the MAPPO paper, App. A)."""

    def __init__(self, image: ImageLayout, row_dim: int, stack: ConvStack, what: str):
        super().__init__()
        self.image, self.row_dim = image, row_dim
        channels, kernels, strides, features = stack
        c, h, w = image.chw
        layers: List[nn.Module] = []
        for out_c, k, s in zip(channels, kernels, strides):
            if h < k or w < k:
                raise ValueError(f"{what}: the image {image.describe()} is too small for the conv stack "
                                 f"(cnn_kernels={list(kernels)}, cnn_strides={list(strides)}): at layer "
                                 f"{len(layers) // 2 + 1} it is {h}x{w}, smaller than its {k}x{k} kernel. Use "
                                 f"smaller cnn_kernels/cnn_strides, or enlarge it with the resize_v1 wrapper")
            conv = nn.Conv2d(c, out_c, k, s)
            nn.init.orthogonal_(conv.weight, nn.init.calculate_gain("relu"))
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            c, h, w = out_c, (h - k) // s + 1, (w - k) // s + 1
        flat = c * h * w
        if flat * features > MAX_PROJECTION_WEIGHTS:
            raise ValueError(f"{what}: the image {image.describe()} leaves a {c}x{h}x{w} conv output, so the "
                             f"Linear after it would hold {flat * features:,} weights. Shrink the image (the "
                             f"resize_v1 wrapper), or add conv layers/strides (cnn_channels, cnn_kernels, cnn_strides)"
                             + ("; for a large state(), critic_input=concat_obs reads the agents' "
                                "(preprocessed) observations instead" if "state" in what else ""))
        proj = nn.Linear(flat, features)
        nn.init.orthogonal_(proj.weight, nn.init.calculate_gain("relu"))
        nn.init.zeros_(proj.bias)
        self.convs = nn.Sequential(*layers, nn.Flatten(), proj, nn.ReLU())
        self.out_dim = features + row_dim - image.size

    @classmethod
    def build(cls, image: ImageLayout, row_dim: int, cfg: Any, what: str) -> "ConvEncoder":
        return cls(image, row_dim, conv_stack(cfg, image), what)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        im = self.image
        start, end = im.offset, im.offset + im.size
        x = rows[:, start:end].reshape(rows.shape[0], *im.shape)
        if len(im.shape) == 2:
            x = x.unsqueeze(1)
        elif not im.channels_first:
            x = x.permute(0, 3, 1, 2)
        # float only here, on the training device: frames stay uint8 up to this point
        feats = self.convs(x.float() * im.scale)
        if self.out_dim == feats.shape[-1]:
            return feats
        rest = torch.cat([rows[:, :start], rows[:, end:self.row_dim]], dim=-1)
        return torch.cat([feats, as_float(rest)], dim=-1)


class FlatEncoder(nn.Module):
    """The row as it is (the first ``row_dim`` entries), as float: the MLP reads it directly."""

    def __init__(self, row_dim: int):
        super().__init__()
        self.out_dim = row_dim

    @classmethod
    def build(cls, image: Optional[ImageLayout], row_dim: int, cfg: Any, what: str) -> "FlatEncoder":
        return cls(row_dim)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return as_float(rows[:, : self.out_dim])


# name -> class; each has ``build(image, row_dim, cfg, what)`` (``what`` names it in errors)
ENCODERS = {"cnn": ConvEncoder, "mlp": FlatEncoder}
ENCODER_CHOICES = ("auto", *ENCODERS)


def choose(encoder: str, image: Optional[ImageLayout], who: str) -> str:
    """The encoder for one input: "cnn" or "mlp"."""
    if encoder not in ENCODER_CHOICES:
        raise ValueError(f"config field 'encoder' must be one of {list(ENCODER_CHOICES)}, got {encoder!r}")
    if encoder == "cnn" and image is None:
        raise ValueError(f"encoder=cnn, but {who} has no image (a 3-D Box, HWC or CHW, or a 2-D uint8 Box); use "
                         f"encoder=auto to give only image observations a CNN")
    if encoder == "auto":
        return "cnn" if image is not None and min(image.chw[1:]) >= MIN_CNN_SIDE else "mlp"
    return encoder


def _build(kind: str, image: Optional[ImageLayout], row_dim: int, cfg: Any, what: str) -> nn.Module:
    return ENCODERS[kind].build(image, row_dim, cfg, what)


def cnn_images(spec: TeamSpec, encoder: str, reads_state: bool) -> Dict[str, ImageLayout]:
    """The images that get a CNN: who (an agent's name, or "state") -> its layout.  ``reads_state``:
    the critic reads ``state()``."""
    images = {a.name: a.image for a in spec.agents if choose(encoder, a.image, f"agent {a.name!r}") == "cnn"}
    if reads_state and spec.state_image is not None and encoder != "mlp":
        images["state"] = spec.state_image
    return images


def resolve_conv_stacks(cfg: Any, spec: TeamSpec, reads_state: bool) -> Tuple[Dict[str, Any], List[str]]:
    """What ``encoder`` gives each image: ``(fields, lines)``.  ``lines`` says it for people, one
    line per kind of image; ``fields`` are the config's ``cnn_*`` values that reproduce it, when
    the config left them to the presets and every image got the same stack (else empty: the
    presets are chosen again, the same way, when the run is loaded)."""
    images = cnn_images(spec, cfg.encoder, reads_state)
    stacks = {who: conv_stack(cfg, image) for who, image in images.items()}
    by_kind: Dict[Tuple[str, ConvStack], List[str]] = {}
    for who, image in images.items():
        by_kind.setdefault((image.describe(), stacks[who]), []).append(who)
    lines = [f"encoder={cfg.encoder}: {', '.join(whom)}: {shape} image -> {stack.describe()}"
             for (shape, stack), whom in by_kind.items()]
    fields: Dict[str, Any] = {}
    distinct = set(stacks.values())
    if len(distinct) == 1 and (cfg.cnn_channels is None or cfg.cnn_features is None):
        stack = distinct.pop()
        fields = {"cnn_channels": list(stack.channels), "cnn_kernels": list(stack.kernels),
                  "cnn_strides": list(stack.strides), "cnn_features": stack.features}
    return fields, lines


class TeamEncoder(nn.Module):
    """Encodes every agent's row: ``[..., A, O]`` -> ``[..., A, F]``.

    ``sets [A]`` gives each agent slot its encoder: one for all (shared), one per group (shared
    within agent groups) or one per slot (separate); ``set_owners`` gives each encoder's agent
    group (the update unit that steps it; default: group 0).  Agents that share an encoder must
    see the same kind of input.  Feature widths may differ between encoders; narrower ones are
    zero-padded to the widest.  ``identity`` is true when no agent has a CNN: then the encoder
    has no parameters and the rows pass through (as float), and the learner may build network
    inputs once per update.
    ``widths [A]`` is each slot's own feature width before that padding (agent groups read only
    their own widths, ``networks.group_widths``).
    """

    def __init__(self, spec: TeamSpec, sets: List[int], cfg: Any, role: str, set_names: Optional[List[str]] = None,
                 set_owners: Optional[List[int]] = None):
        super().__init__()
        kinds = [choose(cfg.encoder, a.image, f"agent {a.name!r}") for a in spec.agents]
        self.identity = all(k == "mlp" for k in kinds)
        self.obs_dim = spec.obs_dim
        self.members = [[k for k, s in enumerate(sets) if s == j] for j in range(max(sets) + 1)]
        # one encoder for all is ``one`` (its checkpoint keys), several are ``per_set``
        self.one: Optional[nn.Module] = None
        self.per_set: Optional[nn.ModuleList] = None
        if self.identity:
            self.out_dim = spec.obs_dim
            self.widths = [a.obs_dim for a in spec.agents]
            return
        encoders = []
        for j, members in enumerate(self.members):
            first = spec.agents[members[0]]
            for k in members[1:]:
                a = spec.agents[k]
                if (kinds[k], a.image, a.obs_dim) != (kinds[members[0]], first.image, first.obs_dim):
                    seen = lambda kind, b: f"{b.image.describe() + ' image' if kind == 'cnn' else 'a vector'} in a {b.obs_dim}-wide row"
                    whom = "every agent" if len(self.members) == 1 else f"every agent of group {set_names[j]!r}"
                    raise ValueError(
                        f"parameter_sharing=shared: one {role} encoder reads {whom}, but agent {first.name!r} "
                        f"sees {seen(kinds[members[0]], first)} and agent {a.name!r} sees {seen(kinds[k], a)}. Give "
                        f"them one image size (e.g. the resize_v1 wrapper), or use parameter_sharing=separate (one "
                        f"encoder per agent), or encoder=mlp")
            what = f"{role} encoder (agent {first.name!r})" if len(members) > 1 or len(self.members) == 1 \
                else f"{role} encoder of agent {first.name!r}"
            encoders.append(_build(kinds[members[0]], first.image, first.obs_dim, cfg, what))
        for j, enc in enumerate(encoders):  # set j's encoder is stepped by its agent group's update unit
            enc.unit = set_owners[j] if set_owners is not None else 0
        if len(encoders) == 1:
            self.one = encoders[0]
        else:
            self.per_set = nn.ModuleList(encoders)
        self.out_dim = max(e.out_dim for e in encoders)
        self.widths = [encoders[s].out_dim for s in sets]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return as_float(obs)
        lead, A = obs.shape[:-2], obs.shape[-2]
        if self.one is not None:
            return self.one(obs.reshape(-1, obs.shape[-1])).view(*lead, A, self.out_dim)
        rows = obs.reshape(-1, A, obs.shape[-1])
        out = rows.new_zeros(rows.shape[0], A, self.out_dim, dtype=torch.float32)
        for enc, members in zip(self.per_set, self.members):
            f = enc(rows[:, members].reshape(-1, rows.shape[-1])).view(rows.shape[0], len(members), -1)
            out[:, members, : f.shape[-1]] = f
        return out.view(*lead, A, self.out_dim)


class StateEncoder(nn.Module):
    """``state [..., S]`` -> ``[..., F]``: a CNN when ``state()`` is an image (and the encoder
    choice allows one), else the row as float.  The critic holds one per agent group when it has
    weights (``networks.Critic``), so no group's value loss moves another group's critic."""

    def __init__(self, spec: TeamSpec, cfg: Any):
        super().__init__()
        image = spec.state_image
        kind = "cnn" if (image is not None and cfg.encoder != "mlp") else "mlp"
        self.identity = kind == "mlp"
        self.net = None if self.identity else _build("cnn", image, spec.state_dim, cfg, "critic state encoder")
        self.out_dim = spec.state_dim if self.identity else self.net.out_dim

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return as_float(state)
        lead = state.shape[:-1]
        return self.net(state.reshape(-1, state.shape[-1])).view(*lead, self.out_dim)
