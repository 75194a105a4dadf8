"""Where the runs of a suite or a sweep execute: each run is one ``mappo train`` command that owns
its run folder, and a launcher starts such commands and says when they end.

    launcher = make_launcher("local", jobs=2)             # subprocesses on this machine
    launcher = make_launcher("ray", address="auto")       # Ray tasks on a cluster (mappo/ray_launcher.py)
    launcher.submit(key, command, log_path)               # when launcher.free() > 0
    for key, returncode, error, wall_s in launcher.wait(1.0): ...  # runs that ended (returncode None: lost)
    launcher.stop()                                       # SIGTERM to every run: each checkpoints

``mappo benchmark`` and ``mappo sweep`` drive either one the same way; a new launcher (SLURM
through submitit, say) is one file with these methods plus a line in :data:`LAUNCHERS`.
"""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

# name -> "module:Class", imported when chosen: the --launcher choices of `mappo benchmark` and
# `mappo sweep`.  A launcher class has the Launcher methods and from_options(**options).
LAUNCHERS = {"local": "mappo.launchers:LocalLauncher", "ray": "mappo.ray_launcher:RayLauncher"}

# every run: one torch thread, unbuffered output to its log
RUN_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# (key, exit code or None when lost, what went wrong, seconds the run ran: time queued for a free
# CPU or GPU on a cluster is not counted)
Outcome = Tuple[Any, Optional[int], Optional[str], float]


class Launcher(Protocol):
    @classmethod
    def from_options(cls, **options: Any) -> "Launcher":
        """Built from ``jobs``, ``address``, ``cpus_per_run``, ``gpus_per_run``: the ones it uses."""

    def free(self) -> int:
        """How many more runs may be submitted now."""

    def submit(self, key: Any, command: List[str], log_path: str) -> None:
        """Start ``command`` (a ``python -m mappo ...`` list), its output appended to ``log_path``."""

    def wait(self, timeout: float) -> List[Outcome]:
        """The runs that ended within ``timeout`` seconds."""

    def interrupt(self) -> None:
        """Pass a stop on to the runs now, without blocking (called from a signal handler)."""

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
        self.signalled: set = set()  # runs sent SIGTERM: a second one would stop them without a checkpoint

    @classmethod
    def from_options(cls, jobs: int = 1, **others: Any) -> "LocalLauncher":
        return cls(jobs)

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
        self.signalled.discard(key)
        log.close()
        return key, proc.returncode, None, time.monotonic() - started

    def interrupt(self) -> None:
        for key, (proc, _, _) in list(self.running.items()):
            if proc.poll() is None and key not in self.signalled:
                self.signalled.add(key)
                proc.send_signal(signal.SIGTERM)

    def stop(self) -> List[Outcome]:
        self.interrupt()
        for proc, _, _ in self.running.values():
            proc.wait()
        return [self._finish(key) for key in list(self.running)]

    def close(self) -> None:
        self.stop()


class Driving:
    """A driver loop's hold on a launcher for the length of a ``with`` block.  SIGINT or SIGTERM
    sets :attr:`signum` (the loop stops starting runs and leaves the block); on leaving after one,
    the running runs are stopped (each checkpoints) and ``finish`` gets their outcomes, then a
    KeyboardInterrupt says to run the same command to continue.  The handlers are restored and
    the launcher closed however the block ends."""

    def __init__(self, launcher: Launcher, finish: Callable[..., Any]):
        self.launcher, self.finish = launcher, finish
        self.signum: Optional[int] = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self.launcher.interrupt()  # at once: a run about to finish checkpoints and stops now

    def __enter__(self) -> "Driving":
        self.old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self.signum is not None and exc_type is None:
                for outcome in self.launcher.stop():
                    self.finish(*outcome)
        finally:
            for s, handler in self.old.items():
                signal.signal(s, handler)
            self.launcher.close()
        if self.signum is not None and exc_type is None:
            raise KeyboardInterrupt(f"stopped by signal {self.signum}; run the same command to continue")


def add_launcher_arguments(parser: Any, runs: str = "runs") -> None:
    """The launcher options of ``mappo benchmark`` and ``mappo sweep``."""
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local",
                        help=f"local: subprocesses here, --jobs at a time (default); ray: each of the {runs} a Ray "
                             f"task (needs the ray extra; --out on a filesystem every node sees)")
    parser.add_argument("--address", help="with --launcher ray: the cluster to join (e.g. auto, or "
                                          "ray://HOST:10001); default: a local Ray head started for this command")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="with --launcher ray: CPUs each run asks for")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, help="with --launcher ray: GPUs each run asks for")


def launcher_from_arguments(parser: Any, args: Any, argv: List[str]) -> Launcher:
    """The launcher the parsed options ask for; a Ray-only option without ``--launcher ray`` is a
    usage error."""
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.launcher != "ray" and (args.address or "--cpus-per-run" in argv or "--gpus-per-run" in argv):
        parser.error("--address, --cpus-per-run and --gpus-per-run go with --launcher ray")
    if args.cpus_per_run < 0 or args.gpus_per_run < 0:
        parser.error("--cpus-per-run and --gpus-per-run must be >= 0")
    return make_launcher(args.launcher, args.jobs, args.address, args.cpus_per_run, args.gpus_per_run)


def make_launcher(name: str, jobs: int = 1, address: Optional[str] = None, cpus_per_run: float = 1.0,
                  gpus_per_run: float = 0.0) -> Launcher:
    """The launcher registered as ``name`` (:data:`LAUNCHERS`), built from the options it uses."""
    if name not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {list(LAUNCHERS)}, got {name!r}")
    module, _, attr = LAUNCHERS[name].partition(":")
    launcher_class = getattr(importlib.import_module(module), attr)
    return launcher_class.from_options(jobs=jobs, address=address, cpus_per_run=cpus_per_run,
                                       gpus_per_run=gpus_per_run)


def run_child(command: List[str], log: Any, env: Dict[str, str], cwd: Optional[str] = None) -> int:
    """Run ``command`` to its end (in ``cwd``), output to ``log``; its exit code.  A SIGTERM or
    Ctrl-C to this process stops the child too (and then raises KeyboardInterrupt): no orphan is
    left working."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, interrupt) if threading.current_thread() is threading.main_thread() else None
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
        if old is not None:
            signal.signal(signal.SIGTERM, old)
