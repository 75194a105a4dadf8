"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

Each rank steps its own envs and computes gradients on its own batch; gradients are averaged
with one all-reduce per minibatch, so every rank applies the same update and the parameters
stay bit-identical.  Everything that must agree across ranks goes through one :class:`Sync`
object: gradients, advantage and value-target statistics, the KL that adapts beta, logged
returns and the decision to stop.  NCCL on CUDA (each rank takes GPU ``LOCAL_RANK``), gloo on the CPU.

    torchrun --nproc_per_node=2 -m mappo train configs/mpe_simple_spread.yaml
"""
from __future__ import annotations

import atexit
import os
import sys
from typing import Any, Iterable, List, Tuple

import torch
import torch.distributed as dist


class Sync:
    """Everything ranks must agree on, as one object the learner and trainer call unconditionally.

    In a single process (``world_size`` 1) every method is the local answer (a sum of one rank is
    the value itself), so no caller branches on whether training is distributed.  Under torchrun
    the methods are collectives: every rank must call them in the same order.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs and writes the run folder."""
        return self.rank == 0

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of ``x`` over ranks (a new tensor; ``x`` is unchanged)."""
        out = x.clone()
        if self.enabled:
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def max_int(self, value: int, device: torch.device) -> int:
        if not self.enabled:
            return int(value)
        t = torch.tensor([value], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def moments(self, x: torch.Tensor, mask: torch.Tensor) -> Tuple[float, torch.Tensor, torch.Tensor]:
        """``(count, mean, population variance)`` of ``x[mask]`` over all ranks, in float64."""
        v = x[mask].detach().to(torch.float64)
        n, total, sq = self.sum(torch.stack([torch.tensor(float(v.numel()), dtype=torch.float64, device=v.device),
                                             v.sum(), (v * v).sum()]))
        n_f = float(n)
        mean = total / max(n_f, 1.0)
        return n_f, mean, (sq / max(n_f, 1.0) - mean * mean).clamp_min(0.0)

    def weighted_mean(self, value: float, weight: float, device: torch.device) -> float:
        """The mean of every rank's ``value``, each weighted by its ``weight``."""
        if not self.enabled:
            return value
        total, weights = self.sum(torch.tensor([value * weight, weight], dtype=torch.float64, device=device)).tolist()
        return total / max(weights, 1e-12)

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace every ``p.grad`` by its mean over ranks, in one coalesced all-reduce.

        A parameter without a gradient counts as a zero gradient, so all ranks send the same layout.
        """
        if not self.enabled:
            return
        params = list(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset: offset + n].view_as(p).clone()
            offset += n

    def broadcast(self, module: torch.nn.Module, src: int = 0) -> None:
        """Copy rank ``src``'s parameters and buffers to every rank."""
        if self.enabled:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=src)

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj`` (picklable; used for the small per-rank resume state)."""
        if not self.enabled:
            return [obj]
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup(device: torch.device) -> Tuple[Sync, torch.device]:
    """Join the process group that torchrun describes in the environment; returns ``(sync, device)``.

    Outside torchrun (no ``WORLD_SIZE`` > 1) this is a single process and changes nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Sync(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        _leave_at_exit()
    return Sync(dist.get_rank(), dist.get_world_size(), local_rank), device


# --------------------------------------------------------------------------------------------
# leaving the group.  A rank that exits while another still talks to it (rank 0 still
# evaluating or writing a checkpoint, say) tears the connection down under it: with torch
# 2.14 and gloo the finished rank died with SIGABRT ("terminate called without an active
# exception").  So every rank waits for the others, then destroys the group.
_failed = False  # this rank raised: the others may never reach a barrier, so leave without one
_exit_hook_installed = False


def mark_failed() -> None:
    """Record that this rank is exiting on an error: :func:`shutdown` at exit skips the barrier
    (torchrun then stops the other ranks) instead of waiting for ranks that will not come."""
    global _failed
    _failed = True


def shutdown() -> None:
    """Leave the process group in order: a barrier (no rank goes while another still needs it),
    then ``destroy_process_group``.  Safe to call more than once and outside torchrun.  It runs
    by itself at interpreter exit once :func:`setup` has joined a group; call it yourself to
    leave earlier.  The barrier waits at most the process group's timeout (torch's default: 30
    minutes for gloo, 10 for NCCL)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if not _failed:
        dist.barrier()
    dist.destroy_process_group()


def _leave_at_exit() -> None:
    global _exit_hook_installed
    if _exit_hook_installed:
        return
    _exit_hook_installed = True
    previous_hook = sys.excepthook

    def note_failure(*exc_info: Any) -> None:  # an uncaught exception: this rank is failing
        mark_failed()
        previous_hook(*exc_info)

    sys.excepthook = note_failure
    atexit.register(shutdown)
