"""Actor and critic networks, shared or per agent, and their input builders.

Parameter sharing is a switch, not a class: a :class:`GroupedMLP` holds ``G`` weight sets,
``G = 1`` for "shared", one per agent group for "shared" with agent groups, and
``G = A`` for "separate".  Inputs are ``[..., A, in]`` and agent ``a`` uses weight set ``a``
(separate), its group's (groups) or 0 (shared), all in one batched matmul (:func:`sharing`).

Recurrent networks (``recurrent=True``, MAPPO paper Sec. 4 / App. C) put a GRU between the
MLP body and the head.  They take sequences ``[L, B, A, in]``, a hidden state ``[B, A, H]``
from before step 0 and ``resets [L, B, A]`` (episode start or agent gone), which zero the
hidden state before that step.

Observations first pass an encoder (``mappo/encoders.py``): the identity for vector
observations, a CNN for images.  The critic encodes each agent's observation and, when
``state()`` is an image, the state, before joining them (:func:`critic_features`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.distributions import Normal

from .encoders import StateEncoder, TeamEncoder
from .spaces import TeamSpec


class EncoderSettings(NamedTuple):
    """The config fields an encoder reads (``Config`` has them all; see mappo/encoders.py)."""
    encoder: str = "auto"
    cnn_channels: Optional[Tuple[int, ...]] = None  # None: chosen from each image's size (encoders.conv_preset)
    cnn_kernels: Optional[Tuple[int, ...]] = None
    cnn_strides: Optional[Tuple[int, ...]] = None
    cnn_features: Optional[int] = None


def sigmoid_tanh_(z: torch.Tensor) -> torch.Tensor:
    """``tanh(z)`` computed in place as ``2 * sigmoid(2z) - 1`` (equal up to ~2e-7 absolute).

    Why: torch's CPU tanh (SLEEF's 1-ulp ``tanhf``) costs about three times a
    sigmoid; on a 2-core AMD EPYC VM a [2048, 256] layer's tanh took 1.9 ms beside a 3.8 ms matmul,
    this form 0.6 ms.  Acting, the update and exported actors all compute it this way, so the
    rollout's and the update's log-probs stay bit-identical.
    """
    return torch.sigmoid_(z.mul_(2)).mul_(2).sub_(1)


class _SigmoidTanhFn(torch.autograd.Function):
    """:func:`sigmoid_tanh_` with tanh's one-pass backward, ``grad * (1 - y^2)``, from the output."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.mark_dirty(z)
        y = sigmoid_tanh_(z)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


class Tanh(nn.Module):
    """The MLPs' tanh (see :func:`sigmoid_tanh_`), in place on its input: it only ever follows a
    :class:`GroupedLinear`, whose fresh output nothing else reads (a matmul's backward keeps its
    inputs, not its output).  No parameters, so checkpoints are unchanged."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return sigmoid_tanh_(z)  # the same operations, without autograd (acting, export)
        if z.requires_grad:
            return _SigmoidTanhFn.apply(z)
        # autograd may still be recording where ``z`` says it needs no grad: inside torch.func's
        # vmap over stacked weights (mappo/seeds.py), which in-place ops would break
        return torch.sigmoid(z * 2) * 2 - 1


class WeightSets(nn.Module):
    """``G`` tensors of one shape, each a Parameter of its own, used stacked: ``sets() -> [G, ...]``.

    Each set is its own Parameter so that an optimiser can own exactly one agent group's
    weights (the learner's update units), and so that an optimiser step that gets no gradient for a
    set leaves that set and its Adam moments untouched (HAPPO updates one agent after another).
    ``owners [G]`` is each set's agent group.  Checkpoints hold the stacked tensor under the
    module's own name (``<parent>.weight [G, ...]``): :func:`unpack_weight_sets` splits it when
    loading.
    """

    def __init__(self, packed: torch.Tensor, owners: Sequence[int]):
        super().__init__()
        if len(owners) != packed.shape[0]:
            raise ValueError(f"{packed.shape[0]} weight sets but {len(owners)} owners")
        for j, tensor in enumerate(packed.unbind(0)):
            self.register_parameter(str(j), nn.Parameter(tensor.clone()))
        self.owners = list(owners)

    def __len__(self) -> int:
        return len(self.owners)

    def __getitem__(self, j: int) -> nn.Parameter:
        return self._parameters[str(j)]

    def forward(self) -> torch.Tensor:
        """The sets stacked ``[G, ...]`` (a view of the one set when ``G = 1``)."""
        if len(self) == 1:
            return self[0].unsqueeze(0)
        return torch.stack([self[j] for j in range(len(self))])

    def _save_to_state_dict(self, destination: Dict[str, Any], prefix: str, keep_vars: bool) -> None:
        packed = self()
        destination[prefix[:-1]] = packed if keep_vars else packed.detach()


def unpack_weight_sets(module: nn.Module, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook of a module with :class:`WeightSets` children: each child's stacked
    tensor ``<prefix><name> [G, ...]`` becomes the per-set keys ``<prefix><name>.<j>``."""
    for name, child in module.named_children():
        key = prefix + name
        if isinstance(child, WeightSets) and torch.is_tensor(state_dict.get(key)):
            packed = state_dict.pop(key)
            if packed.shape[0] != len(child):
                raise ValueError(f"{key} holds {packed.shape[0]} weight sets, this network {len(child)}: the "
                                 f"checkpoint was trained with other agent groups or parameter sharing")
            for j in range(len(child)):
                state_dict[f"{key}.{j}"] = packed[j]


def parameters_by_unit(net: nn.Module, units: int) -> List[List[nn.Parameter]]:
    """``net``'s parameters by the agent group (update unit) that owns them: each
    :class:`WeightSets` names its sets' owners, and a module with an int attribute ``unit`` (an
    encoder of one group) gives its whole subtree to that group.  A parameter that no group owns is
    an error: it would never be stepped."""
    owned: List[List[nn.Parameter]] = [[] for _ in range(units)]

    def walk(module: nn.Module, owner: Optional[int], path: str) -> None:
        owner = getattr(module, "unit", owner)
        if isinstance(module, WeightSets):
            for j, g in enumerate(module.owners):
                owned[g].append(module[j])
            return
        for name, p in module.named_parameters(recurse=False):
            if owner is None:
                raise ValueError(f"parameter {path}{name} belongs to no agent group")
            owned[owner].append(p)
        for name, child in module.named_children():
            walk(child, owner, f"{path}{name}.")

    walk(net, None, "")
    return owned


class GroupedLinear(nn.Module):
    """``y[..., a, :] = x[..., a, :] @ W[g(a)] + b[g(a)]``; orthogonal init (MAPPO paper, Sec. 4 / App. A).

    ``groups`` weight sets (:class:`WeightSets`, ``owners [groups]`` their agent groups); ``slots``
    ``[A]`` maps each agent slot to its set when that is neither "one set for all"
    (``groups == 1``) nor "one set per slot" (``slots=None``): agent groups share a set within a group.

    ``in_mask`` ``[groups, in_dim]`` (bool, or None: every set reads every input) gives each set
    its own input width when agent groups see inputs of different widths ("across
    groups nothing is padded").  A set's weights on the inputs it does not read are structurally
    zero: initialised orthogonal over its own width only, and masked in every forward pass, so
    they neither act nor learn.
    """

    def __init__(self, groups: int, in_dim: int, out_dim: int, gain: float, slots: Optional[List[int]] = None,
                 in_mask: Optional[torch.Tensor] = None, owners: Optional[Sequence[int]] = None):
        super().__init__()
        self.groups = groups
        weight = torch.zeros(groups, in_dim, out_dim)
        for g in range(groups):
            reads = None if in_mask is None else in_mask[g]
            w = torch.empty(out_dim, in_dim if reads is None else int(reads.sum()))
            nn.init.orthogonal_(w, gain=gain)
            if reads is None:
                weight[g] = w.t()
            else:
                weight[g, reads] = w.t()
        owners = list(owners) if owners is not None else list(range(groups))
        self.weight = WeightSets(weight, owners)
        self.bias = WeightSets(torch.zeros(groups, out_dim), owners)
        self._register_load_state_dict_pre_hook(unpack_weight_sets, with_module=True)
        self.register_buffer("slots", None if slots is None else torch.as_tensor(slots, dtype=torch.long),
                             persistent=False)
        self.register_buffer("in_mask", None if in_mask is None else in_mask.float().unsqueeze(-1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:  # shared: one matmul over all rows (matmul folds the leading dims into one mm)
            weight = self.weight[0] if self.in_mask is None else self.weight[0] * self.in_mask[0]
            # matmul's output is not an autograd view, as addmm(...).view(...) is: the in-place Tanh
            # after it would otherwise make autograd copy every gradient through CopySlices
            return torch.matmul(x, weight).add_(self.bias[0])
        weight, bias = self.weight(), self.bias()
        weight = weight if self.in_mask is None else weight * self.in_mask
        if self.slots is not None:  # groups: each slot's set gathered (the gradient flows back to the set)
            return torch.einsum("...ai,aio->...ao", x, weight[self.slots]) + bias[self.slots]
        # x [..., A, in] with one weight set per agent slot
        return torch.einsum("...ai,aio->...ao", x, weight) + bias


class GroupedMLP(nn.Module):
    """MLP over ``[..., A, in]``."""

    def __init__(self, groups: int, in_dim: int, hidden: List[int], out_dim: int, activation: str, out_gain: float,
                 slots: Optional[List[int]] = None, in_mask: Optional[torch.Tensor] = None,
                 owners: Optional[Sequence[int]] = None):
        """``in_mask`` ``[groups, in_dim]``: the inputs each weight set reads; ``owners [groups]``: each
        set's agent group (see :class:`GroupedLinear`)."""
        super().__init__()
        act = Tanh if activation == "tanh" else nn.ReLU
        gain = nn.init.calculate_gain(activation)
        layers: List[nn.Module] = []
        prev = in_dim
        for h in hidden:
            layers += [GroupedLinear(groups, prev, h, gain, slots, None if layers else in_mask, owners), act()]
            prev = h
        self.body = nn.Sequential(*layers)
        self.head = GroupedLinear(groups, prev, out_dim, out_gain, slots, None if layers else in_mask, owners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class GroupedGRUCell(nn.Module):
    """``torch.nn.GRUCell``'s equations with G weight sets over ``[..., A, in]``:
    r = s(W_ir x + b_ir + W_hr h + b_hr), z = s(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h."""

    def __init__(self, groups: int, in_dim: int, hidden: int, slots: Optional[List[int]] = None,
                 owners: Optional[Sequence[int]] = None):
        super().__init__()
        self.x2h = GroupedLinear(groups, in_dim, 3 * hidden, gain=1.0, slots=slots, owners=owners)
        self.h2h = GroupedLinear(groups, hidden, 3 * hidden, gain=1.0, slots=slots, owners=owners)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.step(self.x2h(x), h)

    def step(self, xp: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step from the input's projection ``xp = x2h(x)`` ``[..., A, 3H]``."""
        xr, xz, xn = xp.chunk(3, dim=-1)
        hr, hz, hn = self.h2h(h).chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h

    @property
    def fused(self) -> bool:
        """One weight set: torch's own GRU kernel (cuDNN on a GPU) can run whole segments."""
        return self.x2h.groups == 1

    def fused_step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step ``x [N, in]``, ``h [N, H]`` -> ``[N, H]`` through ``torch.gru_cell``: one call,
        and bit-identical to a step of :meth:`sequence` (the update's kernel)."""
        return torch.gru_cell(x, h, self.x2h.weight[0].t(), self.h2h.weight[0].t(), self.x2h.bias[0], self.h2h.bias[0])

    def sequence(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Outputs ``[L, N, H]`` of steps without resets from ``x [L, N, in]`` and ``h [N, H]``,
        through ``torch.gru`` (the kernel behind ``nn.GRU``: same equations and gate order)."""
        params = [self.x2h.weight[0].t(), self.h2h.weight[0].t(), self.x2h.bias[0], self.h2h.bias[0]]
        out, _ = torch.gru(x, h.unsqueeze(0), params, True, 1, 0.0, self.training, False, False)
        return out


_STEPWISE = [False]  # run_gru takes the step loop only (set by :func:`stepwise_gru`)


@contextlib.contextmanager
def stepwise_gru() -> Iterator[None]:
    """Within: :func:`run_gru` unrolls step by step with plain tensor ops, never through the fused
    kernels or data-dependent segment cuts, which ``torch.func.vmap`` cannot batch (mappo/seeds.py
    runs the loss under it).  Same equations; the numbers differ from the fused kernels' by float
    rounding."""
    _STEPWISE[0] = True
    try:
        yield
    finally:
        _STEPWISE[0] = False


def run_gru(cell: GroupedGRUCell, x: torch.Tensor, h: torch.Tensor, resets: torch.Tensor
            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unroll ``cell`` over ``x [L, ..., A, in]`` from ``h [..., A, H]``.

    ``resets [L, ..., A]`` zeroes the hidden state before step t.  Returns the outputs
    ``[L, ..., A, H]``, the hidden states *before* each step's reset ``[L, ..., A, H]`` (what the
    rollout buffer stores: replaying from them, with the same resets, gives the same outputs)
    and the final hidden state ``[..., A, H]``.

    Speed: with one weight set the sequence is cut at the steps where any row restarts (few:
    episodes start together or at chunk edges) and each segment runs through torch's fused GRU
    (cuDNN on a GPU); one step (acting) is one ``torch.gru_cell`` call, which gives the same
    numbers as the fused GRU, so acting's log-probs are the update's.  With several sets the
    input projection ``x2h`` is made for all steps in one matmul and only ``h2h`` runs per step.
    """
    L = x.shape[0]
    fused = cell.fused and not _STEPWISE[0]
    if fused and L == 1 and not torch.jit.is_tracing():  # acting: one step (an exported actor: the plain cell)
        H = h.shape[-1]
        out = cell.fused_step(x[0].reshape(-1, x.shape[-1]), restart(h, resets[0]).reshape(-1, H)).view(h.shape)
        return out.unsqueeze(0), h.unsqueeze(0), out
    if fused and L > 1:
        rows, H = x.shape[1:-1], h.shape[-1]
        out = _gru_segments(cell, x.reshape(L, -1, x.shape[-1]), h.reshape(-1, H), resets.reshape(L, -1))
        out = out.reshape(L, *rows, H)
    else:
        xp = cell.x2h(x)  # every step's input projection in one matmul
        outs, state = [], h
        for t in range(L):
            state = cell.step(xp[t], restart(state, resets[t]))
            outs.append(state)
        out = torch.stack(outs)
    # the state before step t's reset is step t-1's output
    return out, torch.cat([h.unsqueeze(0), out[:-1]]), out[-1]


def _gru_segments(cell: GroupedGRUCell, x: torch.Tensor, h: torch.Tensor, resets: torch.Tensor) -> torch.Tensor:
    """One weight set, ``x [L, N, in]``, ``h [N, H]``, ``resets [L, N]`` -> outputs ``[L, N, H]``
    through ``torch.gru`` (cuDNN on a GPU) on the segments between the steps where any row restarts."""
    cuts = [0] + (torch.nonzero(resets[1:].any(-1)).flatten() + 1).tolist() + [x.shape[0]]
    outs = []
    for start, stop in zip(cuts[:-1], cuts[1:]):
        h = restart(h, resets[start])
        seg = cell.sequence(x[start:stop], h)
        outs.append(seg)
        h = seg[-1]
    return torch.cat(outs)


def restart(h: torch.Tensor, resets: torch.Tensor) -> torch.Tensor:
    """``h [..., A, H]`` with the rows where ``resets [..., A]`` is set zeroed (a fresh hidden state)."""
    return h * (~resets).unsqueeze(-1).to(h.dtype)


def trunk(net: GroupedMLP, gru: Optional[GroupedGRUCell], x: torch.Tensor, hidden: Optional[torch.Tensor],
          resets: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The shared part of actor and critic: MLP body, then the GRU when there is one.

    Returns ``(features before the head, hidden states before each step or None, final hidden
    state or None)``; see :func:`run_gru` for the recurrent shapes.
    """
    feats = net.body(x)
    if gru is None:
        return feats, None, None
    return run_gru(gru, feats, hidden, resets)


class Sharing(NamedTuple):
    """How agent slots map onto weight sets: ``sets`` weight sets, ``slots`` (agent -> set, or
    None when there is one set, or one per slot), ``encoder_sets`` (agent -> set, always a list),
    the one-hot agent ids ``ids [A, K]`` a shared set needs to tell its agents apart (None when
    separate), and ``owners [sets]``: each set's agent group (the update unit that steps it)."""
    sets: int
    slots: Optional[List[int]]
    encoder_sets: List[int]
    ids: Optional[torch.Tensor]
    owners: List[int]


def sharing(shared: bool, group_of: List[int], unit_of: Optional[List[int]] = None) -> Sharing:
    """``shared``: one set per agent group (``group_of [A]``; one group is the classic
    parameter sharing), with ids one-hot *within* the group; else one set per agent slot.
    ``unit_of [A]``: each slot's update unit (default: its group); a shared set belongs to its
    group's unit, which every member must have."""
    A = len(group_of)
    unit_of = list(group_of) if unit_of is None else list(unit_of)
    if not shared:
        return Sharing(A, None, list(range(A)), None, unit_of)
    G = max(group_of) + 1
    position, counts = [], [0] * G
    for g in group_of:
        position.append(counts[g])
        counts[g] += 1
    ids = torch.zeros(A, max(counts))
    ids[torch.arange(A), torch.tensor(position)] = 1.0
    owners = [unit_of[group_of.index(g)] for g in range(G)]
    if any(unit_of[k] != owners[g] for k, g in enumerate(group_of)):
        raise ValueError("agents that share a weight set must be in one update unit")
    return Sharing(G, None if G == 1 else list(group_of), list(group_of), ids, owners)


def group_widths(group_of: List[int], widths: List[int], full: int) -> Optional[torch.Tensor]:
    """``[A, full]`` bool: the feature columns slot ``k`` reads, the first ``w`` where ``w`` is the
    widest of its group's ``widths`` (agents of one group pad to their group's widest).  None when every group reads all ``full`` columns, which
    is always so for one group."""
    group_w = {g: max(w for h, w in zip(group_of, widths) if h == g) for g in set(group_of)}
    if all(w == full for w in group_w.values()):
        return None
    return torch.arange(full) < torch.tensor([group_w[g] for g in group_of]).unsqueeze(-1)


def input_masks(share: Sharing, group_of: List[int], feats: Optional[torch.Tensor], feat_dim: int
                ) -> Optional[torch.Tensor]:
    """The first layer's ``in_mask`` ``[sets, feat_dim + K]``: each weight set reads its group's
    feature columns (``feats [A, feat_dim]`` from :func:`group_widths`, None for all) and its
    group's id columns (a group of ``n`` agents uses the first ``n`` of the ``K`` id columns).
    None when every set reads every column."""
    A = len(group_of)
    reads = torch.ones(A, feat_dim, dtype=torch.bool) if feats is None else feats
    if share.ids is not None:
        sizes = torch.tensor([group_of.count(g) for g in group_of])
        reads = torch.cat([reads, torch.arange(share.ids.shape[1]) < sizes.unsqueeze(-1)], dim=-1)
    if bool(reads.all()):
        return None
    first_slot = [share.encoder_sets.index(j) for j in range(share.sets)]
    return reads[first_slot]


# --------------------------------------------------------------------------------------------
# inputs: parameter-free, so the update builds them once per iteration, not once per epoch
def masked_layer_norm(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm (no learned scale) of each row of ``x [..., A, F]`` over its own columns only:
    ``mask [A, F]`` (float 0/1) marks them; the other columns come out 0.  With an all-ones mask
    this is ``layer_norm(x, (F,))`` (biased variance, the same ``eps``)."""
    n = mask.sum(-1, keepdim=True)
    mean = (x * mask).sum(-1, keepdim=True) / n
    centred = (x - mean) * mask
    var = (centred * centred).sum(-1, keepdim=True) / n
    return centred * torch.rsqrt(var + eps)


def network_input(feats: torch.Tensor, norm_dim: int, agent_eye: Optional[torch.Tensor],
                  norm_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``feats [..., A, F]`` -> ``[..., A, F (+ K)]``.

    ``norm_dim`` (= F, or 0 for none) standardises each row's features (MAPPO's "feature
    normalisation", a LayerNorm on the input without learned scale); it is a plain int so that
    exported graphs keep a static shape.  ``norm_mask`` ``[A, F]`` (float) restricts each row's
    statistics to its group's own columns (:func:`group_widths`), so that a narrow group's
    features are not standardised together with the padding up to a wider group's width.
    ``agent_eye`` ``[A, K]`` appends a one-hot agent id (within the agent's group), which shared
    networks need to tell agents apart.  (Not SuperSuit's agent_indicator_v0, which writes the id
    into the observation: as extra image channels for images, and into every stored row; here it
    joins after the encoder, and only when parameters are shared.)
    """
    if norm_dim and norm_mask is not None:
        x = masked_layer_norm(feats, norm_mask)
    else:
        x = nn.functional.layer_norm(feats, (norm_dim,)) if norm_dim else feats
    if agent_eye is None:
        return x
    eye = agent_eye.to(x.dtype).expand(*x.shape[:-2], *agent_eye.shape)
    return torch.cat([x, eye], dim=-1)


def critic_features(obs: torch.Tensor, state: torch.Tensor, alive: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-agent critic input before the id: ``[..., A, C]``.

    obs ``[..., A, O]`` (dead agents already zero), state ``[..., S]`` (S may be 0), alive ``[..., A]``.
    "state": the global state, or the joined observations when the env has no ``state()``;
    "concat_obs": the joined observations; "local": the agent's own observation (IPPO);
    "agent_specific": the global state (as "state") followed by the agent's own observation,
    the paper's agent-specific "AS" state (the agent id is added by :func:`network_input`).
    A dead agent's critic input is zeroed, so it sees a zero state plus its id (death
    masking, MAPPO paper Sec. 4.4); it is also left out of the loss.
    """
    A = obs.shape[-2]
    if mode == "local":
        feats = obs
    else:
        if mode in ("state", "agent_specific") and state.shape[-1] > 0:
            glob = state
        else:
            glob = obs.reshape(*obs.shape[:-2], -1)
        feats = glob.unsqueeze(-2).expand(*glob.shape[:-1], A, glob.shape[-1])
        if mode == "agent_specific":
            feats = torch.cat([feats, obs], dim=-1)
    return feats * alive.unsqueeze(-1).to(feats.dtype)


def critic_dim(spec: TeamSpec, mode: str, obs_width: Optional[int] = None, state_width: Optional[int] = None) -> int:
    """The width of :func:`critic_features` for ``mode``; ``obs_width`` / ``state_width`` are the
    encoded widths (default: the raw ``obs_dim`` / ``state_dim``)."""
    obs_w = spec.obs_dim if obs_width is None else obs_width
    state_w = spec.state_dim if state_width is None else state_width
    if mode == "local":
        return obs_w
    glob = state_w if (mode in ("state", "agent_specific") and spec.state_dim > 0) else obs_w * spec.num_agents
    return glob + (obs_w if mode == "agent_specific" else 0)


# --------------------------------------------------------------------------------------------
# action distribution over the team layout (see spaces.py)
class ActionDist:
    """Categorical components (masked logits) + a diagonal Gaussian (masked dims).

    logits ``[..., A, L]``, mask ``[..., A, L]`` bool, mean ``[..., A, D]``, log_std ``[A, D]``,
    cont_mask ``[A, D]``.  Actions are ``[..., A, C + D]`` (C components then D Gaussian dims).

    The categorical maths is written out (log-softmax, Gumbel-max sampling) rather than
    built from ``torch.distributions.Categorical``: per-step inference on small batches is
    dominated by per-op overhead, and this cut sampling from ~45 to ~10 us.
    """

    def __init__(self, spec_sizes: List[int], logits: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                 mean: Optional[torch.Tensor], log_std: Optional[torch.Tensor], cont_mask: Optional[torch.Tensor]):
        self.sizes = spec_sizes
        # one normalised log-probability tensor per component, masked entries ~ -inf
        self.log_probs: List[torch.Tensor] = []
        if logits is not None and spec_sizes:
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
            self.log_probs = [chunk.log_softmax(-1) for chunk in torch.split(logits, spec_sizes, dim=-1)]
        self.normal = None
        if mean is not None:  # the actor passes None when there are no Gaussian dims
            self.normal = Normal(mean, log_std.exp().expand_as(mean), validate_args=False)
            self.cont_mask = cont_mask

    def sample(self, deterministic: bool = False) -> torch.Tensor:
        parts = []
        for logp in self.log_probs:
            if deterministic:
                a = logp.argmax(-1)
            else:  # Gumbel-max: argmax(log p + G), G = -log(-log U), U ~ Uniform(0, 1), is a draw from p.
                # rand_like is vectorised; exponential_ is ~5x slower on the CPU at 10^4+ rows.
                # torch.rand can return exactly 0 (about 7 in 2^27 draws): G would be -inf there, and
                # when that entry is the only valid one a masked entry (log p ~ -3.4e38) would win.
                # Clamping U to the smallest normal float keeps every G finite (|G| < 17).
                u = torch.rand_like(logp).clamp_(min=torch.finfo(logp.dtype).tiny)
                a = (logp - u.log_().neg_().log_()).argmax(-1)
            parts.append(a.unsqueeze(-1).float())
        if self.normal is not None:
            parts.append(self.normal.mean if deterministic else self.normal.sample())
        return torch.cat(parts, dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """``[..., A]``: summed over components and valid Gaussian dims."""
        total = 0.0
        C = len(self.log_probs)
        for c, logp in enumerate(self.log_probs):
            total = total + logp.gather(-1, actions[..., c : c + 1].long()).squeeze(-1)
        if self.normal is not None:
            total = total + (self.normal.log_prob(actions[..., C:]) * self.cont_mask).sum(-1)
        return total

    def entropy(self) -> torch.Tensor:
        total = 0.0
        for logp in self.log_probs:
            # masked entries have p = 0 and a large finite log p, so they add exactly 0
            total = total - (logp.exp() * logp).sum(-1)
        if self.normal is not None:
            total = total + (self.normal.entropy() * self.cont_mask).sum(-1)
        return total


class Actor(nn.Module):
    """Decentralised actor: ``obs [..., A, O]`` -> :class:`ActionDist` (and, if recurrent, a hidden state)."""

    def __init__(self, spec: TeamSpec, shared: bool, hidden: List[int], activation: str, input_norm: bool = False,
                 recurrent: bool = False, log_std_init: float = -0.5, encoding: EncoderSettings = EncoderSettings(),
                 group_of: Optional[List[int]] = None, group_names: Optional[List[str]] = None,
                 unit_of: Optional[List[int]] = None):
        """``group_of [A]``: each agent slot's group; ``unit_of [A]``: its update unit (default: its
        group), which owns its weight sets (``parameters_by_unit``)."""
        super().__init__()
        self.sizes = list(spec.component_sizes)
        self.num_logits, self.cont_dim = spec.num_logits, spec.cont_dim
        group_of = group_of or [0] * spec.num_agents
        unit_of = unit_of or list(group_of)
        share = sharing(shared, group_of, unit_of)
        self.encoder = TeamEncoder(spec, share.encoder_sets, encoding, "actor", group_names, share.owners)
        in_dim = self.encoder.out_dim + (0 if share.ids is None else share.ids.shape[1])
        # each group reads its own widths; None unless groups see different widths
        reads = group_widths(group_of, self.encoder.widths, self.encoder.out_dim)
        # small output gain: near-uniform initial policy (Andrychowicz et al. 2021, "What matters")
        self.net = GroupedMLP(share.sets, in_dim, hidden, self.num_logits + self.cont_dim, activation, out_gain=0.01,
                              slots=share.slots, in_mask=input_masks(share, group_of, reads, self.encoder.out_dim),
                              owners=share.owners)
        self.gru = GroupedGRUCell(share.sets, hidden[-1], hidden[-1], share.slots, share.owners) if recurrent else None
        self.hidden_size = hidden[-1]
        self.norm_dim = self.encoder.out_dim if input_norm else 0
        # state-independent log std per agent slot and dim (CleanRL, SB3); actions are in units where
        # the Box spans [-1, 1] (spaces.to_bounds), so one initial std fits every env
        self.log_std = WeightSets(torch.full((spec.num_agents, self.cont_dim), float(log_std_init)), unit_of)
        self._register_load_state_dict_pre_hook(unpack_weight_sets, with_module=True)
        self.register_buffer("cont_mask", torch.as_tensor(spec.cont_mask))
        self.register_buffer("agent_eye", share.ids, persistent=False)
        self.register_buffer("norm_mask", reads.float() if (reads is not None and input_norm) else None,
                             persistent=False)

    @property
    def recurrent(self) -> bool:
        return self.gru is not None

    @property
    def encodes(self) -> bool:
        """True when :meth:`inputs` has parameters (a CNN): it must then run inside each minibatch."""
        return not self.encoder.identity

    def inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """obs ``[..., A, O]`` (float, or uint8 images) -> network input ``[..., A, in]``."""
        return network_input(self.encoder(obs), self.norm_dim, self.agent_eye, self.norm_mask)

    def forward(self, obs: torch.Tensor, mask: torch.Tensor, hidden: Optional[torch.Tensor] = None,
                resets: Optional[torch.Tensor] = None) -> Tuple[ActionDist, Optional[torch.Tensor]]:
        return self.dist(self.inputs(obs), mask, hidden, resets)

    def dist(self, x: torch.Tensor, mask: torch.Tensor, hidden: Optional[torch.Tensor] = None,
             resets: Optional[torch.Tensor] = None) -> Tuple[ActionDist, Optional[torch.Tensor]]:
        """From prepared inputs (see :meth:`inputs`) -> ``(dist, final hidden or None)``.

        Feed-forward: ``x [..., A, in]``.  Recurrent: ``x [L, B, A, in]``, ``hidden [B, A, H]``,
        ``resets [L, B, A]`` (see :func:`run_gru`).
        """
        feats, _, h_last = trunk(self.net, self.gru, x, hidden, resets)
        out = self.net.head(feats)
        logits, mean = out[..., : self.num_logits], out[..., self.num_logits :]
        dist = ActionDist(self.sizes, logits if self.num_logits else None, mask,
                          mean if self.cont_dim else None, self.log_std(), self.cont_mask)
        return dist, h_last


class CriticOut(NamedTuple):
    values: torch.Tensor  # [..., A], in the critic's (possibly normalised) units
    feats: torch.Tensor  # [..., R, H]: the last hidden layer (the GRU output when recurrent), R trunk rows
    h_before: Optional[torch.Tensor]  # recurrent: [L, B, A, H] hidden state before each step's reset
    h_last: Optional[torch.Tensor]  # recurrent: [B, A, H] after the last step


class Critic(nn.Module):
    """Centralised (or local, for IPPO) critic: values ``[..., A]``, one per agent.

    Two layouts of the trunk's rows (``R`` below):

    * one row per agent (``R = A``): the agent's critic features ``[..., A, C]`` plus its id when
      shared.  Needed when inputs differ per agent ("local", "agent_specific") or every agent has
      its own critic ("separate"); ``critic_pass=agent`` forces it (the official MAPPO code).
    * one row per env step and agent group (``R = G``, ``per_step``): when every agent's
      input is the same ("state", "concat_obs") and parameters are shared, the trunk runs once on
      it per group and the head has one output per agent of the group, so each agent keeps its own
      value (unlike a single value copied to every agent, which is wrong when rewards differ per
      agent) for 1/A of the trunk's work.  Death masking is then the loss mask alone: a departed
      agent's value is computed from the live state but never trained or bootstrapped from
      (``returns.gae``).  A recurrent trunk keeps one hidden state per group, stored as a copy per
      agent so that buffers keep their ``[.., A, H]`` layout; it restarts when every agent of the
      group does (an episode start), not when one agent leaves.
    """

    def __init__(self, spec: TeamSpec, mode: str, shared: bool, hidden: List[int], activation: str,
                 input_norm: bool = False, recurrent: bool = False, encoding: EncoderSettings = EncoderSettings(),
                 group_of: Optional[List[int]] = None, group_names: Optional[List[str]] = None,
                 per_step: bool = True):
        super().__init__()
        self.mode = mode
        group_of = group_of or [0] * spec.num_agents
        share = sharing(shared, group_of)
        self.per_step = per_step and shared and mode in ("state", "concat_obs")
        uses_state = mode in ("state", "agent_specific") and spec.state_dim > 0
        # each agent's observation is encoded (CNN for images) before it is joined or used alone;
        # an image state() has a CNN of its own.  With several groups, an encoder with weights
        # that reads more than the agent's own observation (the state, the joined observations)
        # is one per group: a shared one would let one group's value loss move another group's
        # critic (tests/test_groups.py::test_scaling_one_groups_rewards_leaves_the_other_group_untouched)
        G = max(group_of) + 1
        self.encoder_copies = 1

        def per_group(make: Any) -> Optional[nn.Module]:
            first = make()
            if first is None or first.identity or G == 1 or mode == "local":
                if first is not None and G == 1:
                    first.unit = 0  # the one group's update unit steps it
                return first
            self.encoder_copies = G
            copies = nn.ModuleList([first] + [make() for _ in range(G - 1)])
            for g, copy in enumerate(copies):
                copy.unit = g  # group g's update unit steps it
            return copies

        self.obs_encoder = per_group(lambda: TeamEncoder(spec, share.encoder_sets, encoding, "critic", group_names,
                                                         share.owners)
                                     if (mode != "state" or not uses_state) else None)
        self.state_encoder = per_group(lambda: StateEncoder(spec, encoding) if uses_state else None)
        self.register_buffer("group_index", torch.tensor(group_of), persistent=False)  # [A]
        self._register_load_state_dict_pre_hook(self._encoder_per_group)
        obs_enc, state_enc = (e[0] if isinstance(e, nn.ModuleList) else e
                              for e in (self.obs_encoder, self.state_encoder))
        feat_dim = critic_dim(spec, mode, obs_enc.out_dim if obs_enc else None,
                              state_enc.out_dim if state_enc else None)
        self.norm_dim = feat_dim if input_norm else 0
        if self.per_step:
            members = [[k for k, g in enumerate(group_of) if g == j] for j in range(G)]
            width = max(len(m) for m in members)
            # row j of the trunk uses weight set j; the head's output i of set j is member i's value
            self.net = GroupedMLP(G, feat_dim, hidden, width, activation, out_gain=1.0)
            self.gru = GroupedGRUCell(G, hidden[-1], hidden[-1]) if recurrent else None  # set j: group j
            position = [members[g].index(k) for k, g in enumerate(group_of)]
            self.register_buffer("value_index", torch.tensor([g * width + i for g, i in zip(group_of, position)]),
                                 persistent=False)  # [A] into the flattened [G * width] head outputs
            self.register_buffer("row_of", torch.tensor(group_of), persistent=False)  # [A]
            self.register_buffer("first_of", torch.tensor([m[0] for m in members]), persistent=False)  # [G]
            self.register_buffer("member_mask", torch.tensor([[g == j for g in group_of] for j in range(G)]),
                                 persistent=False)  # [G, A]
            self.register_buffer("agent_eye", None, persistent=False)
            self.register_buffer("norm_mask", None, persistent=False)
            self._head_sets = [[j] for j in range(G)]
            return
        in_dim = feat_dim + (0 if share.ids is None else share.ids.shape[1])
        # each group reads its own widths: the agent's own observation ("local",
        # "agent_specific") is as wide as its group's widest; the shared state and the joined
        # observations are the same input for every group
        reads = None
        if mode in ("local", "agent_specific"):
            own = group_widths(group_of, obs_enc.widths, obs_enc.out_dim)
            if own is not None:
                shared_part = torch.ones(spec.num_agents, feat_dim - own.shape[1], dtype=torch.bool)
                reads = torch.cat([shared_part, own], dim=-1)
        # one critic per group: its own weight set, as the actor's
        self.net = GroupedMLP(share.sets, in_dim, hidden, 1, activation, out_gain=1.0, slots=share.slots,
                              in_mask=input_masks(share, group_of, reads, feat_dim), owners=share.owners)
        self.gru = GroupedGRUCell(share.sets, hidden[-1], hidden[-1], share.slots, share.owners) if recurrent else None
        self.register_buffer("agent_eye", share.ids, persistent=False)
        self.register_buffer("norm_mask", reads.float() if (reads is not None and input_norm) else None,
                             persistent=False)
        self._head_sets = [[0] if share.sets == 1 else [g] if share.slots is not None else
                           [k for k, h in enumerate(group_of) if h == g] for g in range(G)]

    def _encoder_per_group(self, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        """Load a critic whose groups shared one encoder (``obs_encoder.<rest>``, as saved before
        encoders were per group) into one encoder per group (``obs_encoder.<g>.<rest>``): every
        group starts from the shared weights."""
        for name in ("obs_encoder", "state_encoder"):
            if not isinstance(getattr(self, name), nn.ModuleList):
                continue
            head = f"{prefix}{name}."
            for key in [k for k in state_dict if k.startswith(head) and not k[len(head):].split(".")[0].isdigit()]:
                value = state_dict.pop(key)
                for g in range(self.encoder_copies):
                    state_dict[f"{head}{g}.{key[len(head):]}"] = value

    @property
    def recurrent(self) -> bool:
        return self.gru is not None

    @property
    def encodes(self) -> bool:
        """True when :meth:`inputs` has parameters (a CNN): it must then run inside each minibatch."""
        return any(e is not None and (isinstance(e, nn.ModuleList) or not e.identity)
                   for e in (self.obs_encoder, self.state_encoder))

    def head_sets(self, g: int) -> List[int]:
        """The value head's weight sets that belong to agent group ``g`` (PopArt rescales them)."""
        return self._head_sets[g]

    def inputs(self, obs: torch.Tensor, state: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        """obs ``[..., A, O]``, state ``[..., S]`` (float, or uint8 images), alive ``[..., A]`` ->
        network input ``[..., R, in]``: one row per agent (see :func:`critic_features`), or, per
        step, the one shared input ``[..., 1, C]`` (its trunk rows, one per group, read it)."""
        if self.encoder_copies == 1:
            return self._inputs(self.obs_encoder, self.state_encoder, obs, state, alive)
        # one input per group, each from that group's own encoders: per step, group g's trunk row
        # reads the g-th; per agent, agent k's row reads its group's
        per_group = [self._inputs(*(e[g] if isinstance(e, nn.ModuleList) else e
                                    for e in (self.obs_encoder, self.state_encoder)), obs, state, alive)
                     for g in range(self.encoder_copies)]
        if self.per_step:
            return torch.cat(per_group, dim=-2)  # [..., G, in]
        rows = torch.stack(per_group, dim=-3)  # [..., G, A, in]
        return rows[..., self.group_index, torch.arange(rows.shape[-2], device=rows.device), :]

    def _inputs(self, obs_encoder: Optional[nn.Module], state_encoder: Optional[nn.Module], obs: torch.Tensor,
                state: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        obs_f = obs_encoder(obs) if obs_encoder is not None else obs[..., :0].float()
        state_f = state_encoder(state) if state_encoder is not None else state[..., :0].float()
        if self.per_step:
            glob = state_f if self.mode == "state" and state_f.shape[-1] > 0 else obs_f.flatten(-2)
            return network_input(glob.unsqueeze(-2), self.norm_dim, None)
        return network_input(critic_features(obs_f, state_f, alive, self.mode), self.norm_dim, self.agent_eye,
                             self.norm_mask)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """Per step with several groups: the shared input ``[..., 1, C]`` as one row per group (each
        group's own input ``[..., G, C]`` is already one)."""
        if not self.per_step or x.shape[-2] != 1:
            return x
        return x.expand(*x.shape[:-2], self.first_of.shape[0], x.shape[-1])

    def _row_resets(self, resets: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """``resets [..., A]`` -> per trunk row: a group's row restarts when all its agents do."""
        if resets is None or not self.per_step:
            return resets
        return (resets.unsqueeze(-2) | ~self.member_mask).all(-1)

    def _per_agent(self, out: torch.Tensor) -> torch.Tensor:
        """Head outputs ``[..., R, 1 or width]`` -> values ``[..., A]``."""
        if not self.per_step:
            return out.squeeze(-1)
        return out.flatten(-2)[..., self.value_index]

    def values(self, x: torch.Tensor, hidden: Optional[torch.Tensor] = None,
               resets: Optional[torch.Tensor] = None) -> CriticOut:
        """From prepared inputs ``x`` (``[..., R, in]``, or ``[L, B, R, in]`` when recurrent, with
        ``hidden [B, A, H]`` and ``resets [L, B, A]``)."""
        if self.per_step and hidden is not None:
            hidden = hidden[..., self.first_of, :]  # every agent of a group holds the group's state
        feats, h_before, h_last = trunk(self.net, self.gru, self._rows(x), hidden, self._row_resets(resets))
        if self.per_step and h_before is not None:
            h_before, h_last = h_before[..., self.row_of, :], h_last[..., self.row_of, :]
        return CriticOut(self._per_agent(self.net.head(feats)), feats, h_before, h_last)

    def next_values(self, x: torch.Tensor, prev_feats: torch.Tensor,
                    resets: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Values of one further step ``x [B, R, in]`` that follows a step whose :class:`CriticOut`
        ``feats`` were ``prev_feats`` (a recurrent critic continues from them; ``resets [B, A]``
        starts afresh)."""
        feats = self.net.body(self._rows(x))
        if self.gru is not None:
            resets = self._row_resets(resets)
            feats = self.gru(feats, prev_feats if resets is None else restart(prev_feats, resets))
        return self._per_agent(self.net.head(feats))
