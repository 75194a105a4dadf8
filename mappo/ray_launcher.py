"""Suites on a Ray cluster: ``mappo benchmark SUITE --launcher ray`` runs each (task, seed) as a Ray task.

    ray start --head                                  # or a cluster of your own; `ray.init()` alone works too
    mappo benchmark configs/benchmarks/epymarl.yaml --out /shared/runs/bench --launcher ray --address auto

The runs are the local launcher's (:mod:`mappo.benchmark`): the same ``mappo train`` commands,
run folders, ``seed<S>.json`` records and resume rules, so a suite started on one machine can be
finished on a cluster and back.  Each Ray task asks for ``--cpus-per-run`` CPUs and
``--gpus-per-run`` GPUs (Ray places it where they are free) and runs its command as a child
process with that node's Python, in the driver's working directory: ``--out`` and the suite's
configs must be at the same paths on every node (a shared filesystem); on one machine nothing
more is needed.  A run that fails or is lost (its worker or node died) starts again, from its
checkpoint when it wrote one, up to ``--retries`` times, and is then reported as failed.  Ctrl-C
or SIGTERM cancels the tasks: each passes SIGTERM to its run, which checkpoints and stops, and the
same command continues them.  Ray's own schedulers (Ray Tune, RLlib) are not used: a run is one
process that owns its folder, as with the local launcher.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from .launchers import RUN_ENV, Outcome, run_child


def _run_attempt(command: List[str], cwd: str, log_path: str) -> Tuple[int, float]:
    """The body of one Ray task: ``command`` with this node's Python, output appended to
    ``log_path``; its exit code and the seconds it ran.  Cancelling the task (KeyboardInterrupt)
    sends the run SIGTERM and waits for its checkpoint."""
    command = [sys.executable, *command[1:]]
    started = time.monotonic()
    with open(log_path, "a") as log:
        return run_child(command, log, {**os.environ, **RUN_ENV}, cwd=cwd), time.monotonic() - started


def import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ImportError("the Ray launcher needs Ray: pip install -e \".[ray]\" (or pip install ray)") from err
    return ray


class RayLauncher:
    """Each run a Ray task on the cluster at ``address`` (None: the one this process is connected
    to, else a local head started here and shut down by :meth:`close`), asking for
    ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs.  Ray queues what does not fit yet."""

    def __init__(self, address: Optional[str] = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0):
        self.ray = ray = import_ray()
        if cpus_per_run < 0 or gpus_per_run < 0:
            raise ValueError(f"CPUs and GPUs per run must be >= 0, got {cpus_per_run} and {gpus_per_run}")
        self.started_here = not ray.is_initialized()
        if self.started_here:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        # retries are the driver's: a new attempt resumes from the run's checkpoint
        self.remote = ray.remote(_run_attempt).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        self.cwd = os.getcwd()
        self.running: Dict[Any, Tuple[Any, float]] = {}  # ObjectRef -> (key, when submitted)

    @classmethod
    def from_options(cls, address: Optional[str] = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
                     **others: Any) -> "RayLauncher":
        return cls(address, cpus_per_run, gpus_per_run)

    def free(self) -> int:
        return 1 << 30

    def submit(self, key: Any, command: List[str], log_path: str) -> None:
        self.running[self.remote.remote(command, self.cwd, os.path.abspath(log_path))] = (key, time.monotonic())

    def _outcome(self, ref: Any) -> Outcome:
        key, submitted = self.running.pop(ref)
        try:
            returncode, wall_s = self.ray.get(ref)
            return key, returncode, None, wall_s
        except (self.ray.exceptions.RayError, KeyboardInterrupt) as err:  # lost with its worker, or cancelled
            # how long it ran before is unknown: the time since it was submitted is an upper bound
            return key, None, f"{type(err).__name__}: {str(err)[:300]}", time.monotonic() - submitted

    def wait(self, timeout: float) -> List[Outcome]:
        if not self.running:
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        return [self._outcome(ref) for ref in ready]

    def interrupt(self) -> None:
        pass  # cancelling waits for stop(): Ray calls do not belong in a signal handler

    def stop(self) -> List[Outcome]:
        for ref in list(self.running):
            self.ray.cancel(ref)  # a KeyboardInterrupt in the task: its run gets SIGTERM and checkpoints
        self.ray.wait(list(self.running), num_returns=len(self.running), timeout=300)
        return [self._outcome(ref) for ref in list(self.running)]

    def close(self) -> None:
        if self.running:
            self.stop()
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False
