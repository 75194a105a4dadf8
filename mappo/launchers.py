"""Where the runs of a suite or a sweep execute: each run is one ``mappo train`` command that owns
its run folder, and a launcher starts such commands and says when they end.

    launcher = make_launcher("local", jobs=2)             # subprocesses on this machine
    launcher = make_launcher("ray", address="auto")       # Ray tasks on a cluster (mappo/ray_launcher.py)
    launcher.submit(key, command, log_path)               # when launcher.free() > 0
    for key, returncode, error, wall_s in launcher.wait(1.0): ...  # runs that ended (returncode None: lost)
    launcher.stop()                                       # SIGTERM to every run: each checkpoints

``mappo benchmark`` and ``mappo sweep`` drive either one the same way; a new launcher (SLURM
through submitit, say) is one file with these four methods plus a line in :func:`make_launcher`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any, Dict, List, Optional, Protocol, Tuple

# the --launcher choices of `mappo benchmark` and `mappo sweep` (make_launcher builds them)
LAUNCHERS = ("local", "ray")

# every run: one torch thread, unbuffered output to its log
RUN_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# (key, exit code or None when lost, what went wrong, seconds the run ran: time queued for a free
# CPU or GPU on a cluster is not counted)
Outcome = Tuple[Any, Optional[int], Optional[str], float]


class Launcher(Protocol):
    def free(self) -> int:
        """How many more runs may be submitted now."""

    def submit(self, key: Any, command: List[str], log_path: str) -> None:
        """Start ``command`` (a ``python -m mappo ...`` list), its output appended to ``log_path``."""

    def wait(self, timeout: float) -> List[Outcome]:
        """The runs that ended within ``timeout`` seconds."""

    def stop(self) -> List[Outcome]:
        """Ask every running run to stop (SIGTERM: it checkpoints) and wait for them."""

    def close(self) -> None:
        ...


class LocalLauncher:
    """Subprocesses on this machine, ``jobs`` at a time, each with one torch thread.  Runs live in
    sessions of their own: a Ctrl-C at the terminal reaches only the driver, which passes on one
    SIGTERM (a second signal would make a run stop without its checkpoint)."""

    def __init__(self, jobs: int):
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self.running: Dict[Any, Tuple[subprocess.Popen, Any, float]] = {}

    def free(self) -> int:
        return self.jobs - len(self.running)

    def submit(self, key: Any, command: List[str], log_path: str) -> None:
        log = open(log_path, "a")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **RUN_ENV},
                                start_new_session=True)
        self.running[key] = (proc, log, time.monotonic())

    def wait(self, timeout: float) -> List[Outcome]:
        deadline = time.monotonic() + timeout
        while True:
            ended = [key for key, (proc, _, _) in self.running.items() if proc.poll() is not None]
            if ended or time.monotonic() >= deadline:
                return [self._finish(key) for key in ended]
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _finish(self, key: Any) -> Outcome:
        proc, log, started = self.running.pop(key)
        log.close()
        return key, proc.returncode, None, time.monotonic() - started

    def stop(self) -> List[Outcome]:
        for proc, _, _ in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _, _ in self.running.values():
            proc.wait()
        return [self._finish(key) for key in list(self.running)]

    def close(self) -> None:
        self.stop()


def make_launcher(name: str, jobs: int = 1, address: Optional[str] = None, cpus_per_run: float = 1.0,
                  gpus_per_run: float = 0.0) -> Launcher:
    """``local`` (``jobs`` subprocesses here) or ``ray`` (tasks on the cluster at ``address``)."""
    if name == "local":
        return LocalLauncher(jobs)
    if name == "ray":
        from .ray_launcher import RayLauncher

        return RayLauncher(address, cpus_per_run, gpus_per_run)
    raise ValueError(f"launcher must be one of {list(LAUNCHERS)}, got {name!r}")
