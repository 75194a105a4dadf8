"""Running mean/std normaliser, used as ValueNorm (MAPPO paper, Sec. 4: value normalisation)."""
from __future__ import annotations

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Running mean and variance of a stream of batches (Chan et al. parallel update).

    ``update(x)`` folds in every element of ``x`` (or only ``x[mask]``); ``normalize`` and
    ``denormalize`` map between raw and standardised units.  State lives in buffers so it
    is saved with ``state_dict`` and moves with ``.to(device)``.
    """

    def __init__(self, epsilon: float = 1e-5):
        super().__init__()
        self.epsilon = epsilon
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("var", torch.ones((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if mask is not None:
            x = x[mask.bool()]
        x = x.detach().reshape(-1).to(torch.float64)
        if x.numel() == 0:
            return
        self.update_moments(x.numel(), x.mean(), x.var(unbiased=False))

    @torch.no_grad()
    def update_moments(self, n: float, batch_mean: torch.Tensor, batch_var: torch.Tensor) -> None:
        """Fold in a batch given by its size, mean and (population) variance; distributed
        training passes the moments of all ranks' batches together, so every rank agrees."""
        if n == 0:
            return
        batch_mean = torch.as_tensor(batch_mean, dtype=torch.float64, device=self.mean.device)
        batch_var = torch.as_tensor(batch_var, dtype=torch.float64, device=self.mean.device)
        total = self.count + n
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def std(self) -> torch.Tensor:
        return torch.sqrt(self.var + self.epsilon)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std()).to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std() + self.mean).to(x.dtype)


@torch.no_grad()
def popart_rescale(weight: torch.Tensor, bias: torch.Tensor, old_mean: torch.Tensor, old_std: torch.Tensor,
                   new_mean: torch.Tensor, new_std: torch.Tensor) -> None:
    """PopArt's "preserving outputs precisely" step (van Hasselt et al. 2016, Alg. 1), in place.

    The value head ``v = h @ weight + bias`` predicts normalised values, so the raw-unit value
    is ``std * v + mean``.  When the statistics move from (old_mean, old_std) to (new_mean,
    new_std), ``weight <- weight * old_std / new_std`` and
    ``bias <- (old_std * bias + old_mean - new_mean) / new_std`` leave every raw-unit output
    unchanged.  ``weight [..., H, 1]``, ``bias [..., 1]``; statistics are scalars.
    """
    scale = (old_std / new_std).to(weight.dtype)
    weight.mul_(scale)
    bias.copy_(((old_std * bias + old_mean - new_mean) / new_std).to(bias.dtype))
