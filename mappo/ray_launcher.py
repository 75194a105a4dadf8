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
import signal
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from .benchmark import RUN_ENV, Suite, Task, pending_runs, record_outcome, run_child, run_command, start_log


def _run_attempt(command: List[str], cwd: str, log_path: str) -> int:
    """The body of one Ray task: ``command`` with this node's Python, output appended to
    ``log_path``; its exit code.  Cancelling the task (KeyboardInterrupt) sends the run SIGTERM and
    waits for its checkpoint."""
    command = [sys.executable, *command[1:]]
    with open(log_path, "a") as log:
        return run_child(command, log, {**os.environ, **RUN_ENV}, cwd=cwd)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ImportError("the Ray launcher needs Ray: pip install -e \".[ray]\" (or pip install ray)") from err
    return ray


def run_suite_on_ray(suite: Suite, out: str, address: Optional[str] = None, retries: int = 1,
                     cpus_per_run: float = 1.0, gpus_per_run: float = 0.0, poll_s: float = 1.0) -> Dict[str, List[int]]:
    """Run every (task, seed) not yet done as a Ray task on the cluster at ``address`` (None: the
    one this process is connected to, else a local head started here and stopped at the end).
    Returns the runs that failed after ``retries`` more attempts, by task."""
    ray = import_ray()
    if retries < 0:
        raise ValueError(f"--retries must be >= 0, got {retries}")
    pending = pending_runs(suite, out)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(_run_attempt).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
    cwd = os.getcwd()
    running: Dict[Any, Tuple[Task, int, List[str], float]] = {}
    attempts: Dict[Tuple[str, int], int] = {}
    failed: Dict[str, List[int]] = {}
    stopping: Dict[str, Optional[int]] = {"signal": None}

    def submit(task: Task, seed: int) -> None:
        command = run_command(task, seed, out)
        log = os.path.abspath(start_log(task, seed, out, command))
        attempts[task.name, seed] = attempts.get((task.name, seed), 0) + 1
        print(f"[{time.strftime('%H:%M:%S')}] submit {task.name} seed {seed} (attempt {attempts[task.name, seed]})",
              flush=True)
        running[remote.remote(command, cwd, log)] = (task, seed, command, time.time())

    def collect(ref: Any) -> Dict[str, Any]:
        """The outcome of a finished task, written to its run's record."""
        task, seed, command, started = running.pop(ref)
        try:
            returncode, error = ray.get(ref), None
        except (ray.exceptions.RayError, KeyboardInterrupt) as err:  # lost with its worker, or cancelled
            returncode, error = None, f"{type(err).__name__}: {str(err)[:300]}"
        return record_outcome(task, seed, out, command, returncode, time.time() - started, last_error=error)

    def on_signal(signum: int, frame: Any) -> None:  # cancel the tasks; their runs checkpoint and stop
        stopping["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for task, seed in pending:  # Ray queues the tasks that find no free CPU or GPU yet
            submit(task, seed)
        while running and stopping["signal"] is None:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=poll_s)
            for ref in ready:
                task, seed = running[ref][:2]
                record = collect(ref)
                if record["done"]:
                    print(f"[{time.strftime('%H:%M:%S')}] done {task.name} seed {seed} "
                          f"({record['wall_s']:.0f} s in all)", flush=True)
                    continue
                why = record["last_error"] or f"exit {record['last_returncode']}"
                if attempts[task.name, seed] <= retries and stopping["signal"] is None:
                    print(f"[{time.strftime('%H:%M:%S')}] {task.name} seed {seed} stopped ({why}): "
                          f"starting it again", flush=True)
                    submit(task, seed)
                else:
                    print(f"[{time.strftime('%H:%M:%S')}] failed {task.name} seed {seed} ({why})", flush=True)
                    failed.setdefault(task.name, []).append(seed)
        if stopping["signal"] is not None:
            for ref in list(running):
                ray.cancel(ref)  # a KeyboardInterrupt in the task: its run gets SIGTERM
            for ref in list(running):
                try:
                    ray.wait([ref], timeout=300)
                finally:
                    collect(ref)
            raise KeyboardInterrupt(f"stopped by signal {stopping['signal']}; run the same command to continue")
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if started_here:
            ray.shutdown()
    return failed
