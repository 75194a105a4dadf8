"""The run's share of the machine: the learner's device, torch's threads and the env workers,
chosen from the machine and the env where the config leaves them to ``auto`` (``device=auto``,
``torch_threads=0``, ``num_workers=0``), and printed once.

The rules, and the measurements behind them (docs/PERFORMANCE.md, "Torch threads" and "Device"):

- **Device.** CUDA pays where the env steps on it (a batched simulator: VMAS, JaxMARL) or where
  the networks are large enough to fill it (images through a CNN, a hidden layer of 512 or
  more). PettingZoo envs with small MLPs train faster on the CPU: their GPU learner ran at
  0.74-0.79x the CPU one on an H200 machine, the per-step transfers of collection costing more
  than the update saves.
- **Env workers** (subprocess PettingZoo envs): one per core this process may use (its CPU
  affinity, which containers and ``taskset`` narrow; not the machine's count), at most one per
  env. Each worker runs torch on one thread: they step small envs side by side.
- **Torch threads** for the update: the cores of this process's share (under torchrun, the
  cores divided by the ranks on this machine), at most :data:`MAX_AUTO_THREADS` beside subprocess
  env workers, and never more than torch had before the run (so ``OMP_NUM_THREADS=1`` keeps
  one). A batched simulator or in-process envs leave the cores to torch alone. Collection
  with subprocess workers runs on one thread (the workers need the cores; the per-step batch is
  a few dozen rows). On 16 cores with 16 torch threads training ran at 0.16-0.35x raw env
  stepping, against 0.68x on 2 cores with one thread; an update of a small MLP on a few
  thousand rows gains little from more threads than a few, and idle OpenMP threads spin.
  Evaluating a PettingZoo env (one env, one step at a time, in this process) runs on one thread.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Tuple

import torch

MAX_AUTO_THREADS = 4  # torch_threads=0 beside subprocess env workers uses at most this many (see above)
BIG_HIDDEN = 512  # a hidden layer at least this wide makes device=auto choose CUDA


@dataclass(frozen=True)
class Machine:
    """What a run may use: CPU cores (this process's affinity), CUDA, ranks on this machine, and
    torch's thread count before the run (``OMP_NUM_THREADS`` or the user's ``set_num_threads``)."""
    cores: int
    cuda: bool
    local_ranks: int = 1
    torch_threads: int = 1

    @classmethod
    def this(cls) -> "Machine":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS and Windows have no affinity call
            cores = os.cpu_count() or 1
        return cls(cores=max(1, cores), cuda=torch.cuda.is_available(),
                   local_ranks=max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))),
                   torch_threads=torch.get_num_threads())


@dataclass(frozen=True)
class Resources:
    """The choice for one run: ``device`` ("cpu" | "cuda"), ``update_threads`` (torch threads
    during the update), ``collect_threads`` (during collection), ``eval_threads`` (during
    evaluations), ``num_workers`` (subprocess env workers; 0 when the envs run in-process or
    batched) and the lines that explain it."""
    device: str
    update_threads: int
    collect_threads: int
    eval_threads: int
    num_workers: int
    lines: List[str]


def choose_device(wanted: str, machine: Machine, batched: bool, images: bool, widest_hidden: int,
                  simulator_cuda: bool = True) -> Tuple[str, str]:
    """``(device, reason)`` for the config field ``device``; "auto" picks CUDA only where it pays.
    ``simulator_cuda``: whether a batched simulator can step on CUDA (JaxMARL needs jax's GPU backend)."""
    if wanted == "cuda" and not machine.cuda:
        raise ValueError("config field 'device' is 'cuda' but CUDA is not available; use 'auto' or 'cpu'")
    if wanted != "auto":
        return wanted, "set in the config"
    if not machine.cuda:
        return "cpu", "no CUDA device"
    if batched and not simulator_cuda:
        return "cpu", "the batched simulator has no CUDA backend here (JaxMARL: pip install 'jax[cuda12]')"
    if batched:
        return "cuda", "a batched simulator steps on the training device"
    if images:
        return "cuda", "image observations go through a CNN"
    if widest_hidden >= BIG_HIDDEN:
        return "cuda", f"a hidden layer of {widest_hidden} units"
    return "cpu", ("PettingZoo envs with small MLPs: the GPU learner ran at 0.74-0.79x the CPU one "
                   "(docs/PERFORMANCE.md); device=cuda to override")


def choose_resources(machine: Machine, device: str, device_reason: str, vector_mode: str, batched: bool,
                     num_envs: int, num_workers: int, torch_threads: int) -> Resources:
    """The threads and workers of a run on ``device`` (see the module docstring for the rules);
    ``num_workers`` and ``torch_threads`` are the config's fields (0: automatic)."""
    share = max(1, machine.cores // machine.local_ranks)
    subprocess = vector_mode == "subprocess" and not batched
    workers = 0
    if subprocess:
        workers = max(1, min(num_workers or share, num_envs))
    # auto never raises the count the process was given (OMP_NUM_THREADS=1 stays one thread)
    cap = MAX_AUTO_THREADS if subprocess else share
    update = torch_threads or min(share, cap, machine.torch_threads)
    # subprocess workers need the cores while the trainer acts; a GPU learner launches kernels
    collect = 1 if subprocess and device == "cpu" else update
    # a PettingZoo evaluation steps one env at a time in this process: rows of one step's agents
    evaluate = 1 if not batched and device == "cpu" else update
    cores = f"{machine.cores} CPU cores" + (f" shared by {machine.local_ranks} ranks" if machine.local_ranks > 1 else "")
    lines = [f"machine: {cores}, {'CUDA' if machine.cuda else 'no CUDA'}",
             f"device={device} ({device_reason})",
             f"torch threads: {update} for the update"
             + ("" if torch_threads else f" (torch_threads=0, automatic: min(cores, "
                                        f"{str(MAX_AUTO_THREADS) + ' beside env workers, ' if subprocess else ''}"
                                        f"torch's own {machine.torch_threads}))")
             + (f", {collect} while collecting" if collect != update else "")
            + (f", {evaluate} while evaluating" if evaluate != update else "")]
    if subprocess:
        lines.append(f"env workers: {workers} subprocesses for {num_envs} envs, one torch thread each"
                     + ("" if num_workers else " (num_workers=0, automatic: one per core)"))
    return Resources(device, update, collect, evaluate, workers, lines)


def worker_single_threaded() -> None:
    """Called first in each env worker: torch (and any OpenMP code the env starts) on one thread."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    torch.set_num_threads(1)

