"""Export a trained actor that needs only torch (TorchScript) or an ONNX runtime.

The exported module maps one step of the whole team to deterministic actions:

    feed-forward:  (obs [N, A, O] float32, action_mask [N, A, L] bool) -> actions [N, A, W] float32
                   (obs is uint8 when the env's observations are: images; the sidecar's
                   "obs_dtype" says which, and the model scales the frames itself)
    recurrent:     (obs, action_mask, hidden [N, A, H] float32, resets [N, A] bool) -> (actions, hidden)

``obs`` rows are the agents' observations flattened and zero-padded to ``O`` (as
``TeamSpec.flatten_obs`` does; gymnasium's ``spaces.flatten`` for Dict/Discrete spaces);
``action_mask`` allows every valid logit when the env has no masks.  A shared actor adds each
agent's one-hot id itself; a per-agent actor uses each slot's own weights.  Action row ``k``
holds the categorical choice of each component, then the Gaussian means in the env's own
units, already mapped into each agent's Box (see the sidecar JSON written next to the model,
which records the layout per agent).
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .files import written_atomically
from .networks import Actor
from .protocol import torch_dtype
from .spaces import TeamSpec, to_bounds


class _EnvUnits(nn.Module):
    """Team-layout actions ``[..., A, W]`` with the Gaussian dims mapped from the policy's units
    into each agent's Box (``spaces.to_bounds``); categorical components pass through."""

    def __init__(self, spec: TeamSpec):
        super().__init__()
        self.C = spec.num_components
        self.register_buffer("low", torch.as_tensor(spec.cont_low))
        self.register_buffer("high", torch.as_tensor(spec.cont_high))

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        if self.low.shape[-1] == 0:
            return actions
        return torch.cat([actions[..., : self.C], to_bounds(actions[..., self.C:], self.low, self.high)], dim=-1)


class DeterministicActor(nn.Module):
    def __init__(self, actor: Actor, spec: TeamSpec):
        super().__init__()
        self.actor, self.env_units = actor, _EnvUnits(spec)

    def forward(self, obs: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
        dist, _ = self.actor(obs, action_mask)
        return self.env_units(dist.sample(deterministic=True))


class DeterministicRecurrentActor(nn.Module):
    def __init__(self, actor: Actor, spec: TeamSpec):
        super().__init__()
        self.actor, self.env_units = actor, _EnvUnits(spec)

    def forward(self, obs: torch.Tensor, action_mask: torch.Tensor, hidden: torch.Tensor,
                resets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        dist, hidden = self.actor(obs.unsqueeze(0), action_mask.unsqueeze(0), hidden, resets.unsqueeze(0))
        return self.env_units(dist.sample(deterministic=True)[0]), hidden


def example_inputs(spec: TeamSpec, actor: Actor, batch: int = 2) -> Tuple[torch.Tensor, ...]:
    A = spec.num_agents
    obs = torch.zeros(batch, A, spec.obs_dim, dtype=torch_dtype(spec.obs_dtype))
    mask = torch.as_tensor(spec.valid_logits).expand(batch, A, spec.num_logits).clone()
    if not actor.recurrent:
        return obs, mask
    return obs, mask, torch.zeros(batch, A, actor.hidden_size), torch.zeros(batch, A, dtype=torch.bool)


def layout(spec: TeamSpec, actor: Actor, groups: Optional[Any] = None) -> Dict[str, Any]:
    """What the sidecar JSON records: agents, widths, the action layout per agent, and each
    agent's group (one actor file for all groups: each agent's rows use its group's weights)."""
    return {
        **spec.layout(),
        "groups": {name: (groups.names[groups.of[k]] if groups is not None else "all")
                   for k, name in enumerate(spec.names)},
        "recurrent": actor.recurrent,
        "hidden_size": actor.hidden_size if actor.recurrent else 0,
        "inputs": ["obs", "action_mask"] + (["hidden", "resets"] if actor.recurrent else []),
        "outputs": ["actions"] + (["hidden"] if actor.recurrent else []),
    }


def export_actor(actor: Actor, spec: TeamSpec, path: str, fmt: str = "torchscript", groups: Optional[Any] = None) -> str:
    """Write the actor to ``path`` (``.pt`` TorchScript or ``.onnx``) plus ``<path>.json``; returns
    ``path``.  ``groups`` (``mappo.groups.Groups``) names each agent's group in the sidecar."""
    if fmt not in ("torchscript", "onnx"):
        raise ValueError(f"export format must be 'torchscript' or 'onnx', got {fmt!r}")
    actor = copy.deepcopy(actor).to("cpu").eval()  # a frozen copy: the trainer's actor is left as it is
    actor.requires_grad_(False)
    module = (DeterministicRecurrentActor(actor, spec) if actor.recurrent else DeterministicActor(actor, spec)).eval()
    inputs = example_inputs(spec, actor)
    if fmt == "onnx":
        try:  # before anything is written: a missing extra leaves no file behind
            import onnx
        except ImportError as err:
            raise ImportError("ONNX export needs the onnx package: pip install onnx onnxscript "
                              "(or the project's 'onnx' extra)") from err
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # can we write there? (torch's own error says "enforce fail")
            pass
    except OSError as err:
        raise OSError(f"cannot write the exported actor to {path!r}: {err.strerror or err}") from err
    meta = layout(spec, actor, groups)
    # both files are written whole or not at all, the model first: a failed export leaves no
    # empty or half-written file, and an earlier export stays as it was
    with written_atomically(path) as model_tmp:
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(module, inputs, check_trace=False)
            traced.save(model_tmp)
        else:
            names = meta["inputs"]
            dynamic = {n: {0: "batch"} for n in names + meta["outputs"]}
            with torch.no_grad():
                torch.onnx.export(module, inputs, model_tmp, input_names=names, output_names=meta["outputs"],
                                  dynamic_axes=dynamic, dynamo=False)
            # the exporter drops inputs the graph never reads (action_mask when there are no
            # categorical actions): record the inputs the model really takes
            meta["inputs"] = [i.name for i in onnx.load(model_tmp).graph.input]
        with written_atomically(path + ".json") as meta_tmp, open(meta_tmp, "w") as f:
            json.dump({"format": fmt, **meta}, f, indent=2)
    return path
