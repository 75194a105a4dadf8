"""PPO losses (arXiv 1707.06347) and value loss, as pure functions with diagnostics.

All per-sample tensors share one shape (e.g. ``[N]`` or ``[T, E, A]``); ``mask`` (1 = counts)
removes dead agents' rows (death masking) from every mean.  ``count`` (optional) is the number of
counted rows of the whole minibatch when these tensors are one piece of it: each mean is then
this piece's share, and the pieces' losses sum to the whole minibatch's (gradient accumulation).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, count: Optional[torch.Tensor] = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / (mask.sum() if count is None else count).clamp(min=1.0)


def policy_loss(
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    objective: str,
    clip_eps: float,
    kl_coef: float,
    count: Optional[torch.Tensor] = None,
    factor: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """The surrogate to minimise.

    - "clip": ``-min(r A, clip(r, 1-eps, 1+eps) A)`` (Eq. 7);
    - "kl": ``-(r A) + beta * KL[pi_old, pi]`` (Eq. 8);
    - "clip_kl": the clipped term plus the KL penalty.

    ``factor`` (optional, detached, the shape of the samples) multiplies each sample's surrogate
    outside the clip, as HAPPO weights an agent's surrogate by the product of the ratios of the
    agents updated before it (Zhong et al. 2024, Alg. 1; HARL ``happo.py``); the KL penalty is
    not weighted.

    KL[pi_old, pi] is estimated per sample from actions drawn under pi_old with
    ``(r - 1) - log r`` (non-negative and unbiased, its gradient is that of the true KL).
    Diagnostics (detached): ``approx_kl`` (the same estimate) and ``clip_fraction``.
    """
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    surrogate = ratio * advantages
    kl = (ratio - 1.0) - log_ratio
    if objective in ("clip", "clip_kl"):
        clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
        per_sample = -torch.min(surrogate, clipped)
    elif objective == "kl":
        per_sample = -surrogate
    else:
        raise ValueError(f"objective must be one of ['clip', 'kl', 'clip_kl'], got {objective!r}")
    if factor is not None:
        per_sample = factor * per_sample
    if objective in ("kl", "clip_kl"):
        per_sample = per_sample + kl_coef * kl
    loss = masked_mean(per_sample, mask, count)
    with torch.no_grad():
        info = {
            "approx_kl": masked_mean(kl, mask, count),
            "clip_fraction": masked_mean(((ratio - 1.0).abs() > clip_eps).float(), mask, count),
        }
    return loss, info


def update_kl_coef(kl_coef: float, measured_kl: float, target_kl: float) -> float:
    """Adaptive beta (PPO paper, Sec. 4): halve below d_targ/1.5, double above 1.5 d_targ."""
    if measured_kl < target_kl / 1.5:
        return kl_coef / 2.0
    if measured_kl > target_kl * 1.5:
        return kl_coef * 2.0
    return kl_coef


def huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Elementwise Huber loss of an error ``x``; ``delta <= 0`` gives ``x**2 / 2``."""
    if delta <= 0:
        return 0.5 * x.pow(2)
    a = x.abs()
    return torch.where(a <= delta, 0.5 * x.pow(2), delta * (a - 0.5 * delta))


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float | None,
    huber_delta: float,
    count: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Value loss, optionally clipped around the old values (MAPPO paper, Sec. 4 / App. A):
    ``max(l(v - target), l(old + clip(v - old, -eps, eps) - target))`` with ``l`` Huber
    (``huber_delta > 0``) or squared error.  All in normalised target units when ValueNorm is on.
    """
    loss = huber(values - targets, huber_delta)
    if clip_eps is not None:
        clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        loss = torch.max(loss, huber(clipped - targets, huber_delta))
    return masked_mean(loss, mask, count)


def explained_variance(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var[target - pred] / Var[target]`` over masked entries; nan when Var[target] is 0."""
    m = mask.bool()
    y, p = target[m], pred[m]
    if y.numel() < 2:
        return float("nan")
    var_y = y.var(unbiased=False)
    if var_y == 0:
        return float("nan")
    return float(1.0 - (y - p).var(unbiased=False) / var_y)
