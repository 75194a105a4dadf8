"""Data-parallel training with ``torch.distributed``, launched by ``torchrun`` (issue 6).

Each rank steps its own envs and computes gradients on its own batch; gradients are averaged
with one all-reduce per minibatch, so every rank applies the same update and the parameters
stay bit-identical.  Everything that must agree across ranks goes through the helpers here:
gradients, advantage and value-target statistics, the KL that adapts beta, logged returns and
the decision to stop.  NCCL on CUDA (each rank takes GPU ``LOCAL_RANK``), gloo on the CPU.

    torchrun --nproc_per_node=2 -m mappo train configs/mpe_simple_spread.yaml
"""
from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, List

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> tuple:
    """Join the process group that torchrun describes in the environment; returns ``(info, device)``.

    Outside torchrun (no ``WORLD_SIZE`` > 1) this is a single process and changes nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        _leave_at_exit()
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank), device


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


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks (a new tensor; ``x`` is unchanged)."""
    out = x.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_max(value: int, device: torch.device) -> int:
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def average_gradients(params: Iterable[torch.nn.Parameter], world_size: int) -> None:
    """Replace every ``p.grad`` by its mean over ranks, in one coalesced all-reduce.

    A parameter without a gradient counts as a zero gradient, so all ranks send the same layout.
    """
    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone()
        offset += n


def broadcast_parameters(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank."""
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=src)


def barrier() -> None:
    dist.barrier()


def all_gather_objects(obj: Any, world_size: int) -> List[Any]:
    """Every rank's ``obj`` (picklable; used for the small per-rank resume state)."""
    out: List[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out
