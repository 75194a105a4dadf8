"""A run folder belongs to one run at a time: a lock while a run writes to it, and no fresh run
into a folder that already holds one (it would mix two runs' metrics and checkpoints).

A folder "holds a run" when it has a checkpoint (``ckpt.pt`` or ``best.pt``): that run can be
continued with ``--resume``.  A run that stops before its first checkpoint has nothing to resume,
so the files it wrote never block the same command: the trainer removes them when it stops with
an error, and a fresh run replaces any that a killed process left behind."""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
from typing import List, Optional

CHECKPOINTS = ("ckpt.pt", "best.pt")
# what a run leaves in its folder; a fresh run (or `overwrite=true`) removes these before it starts
RUN_FILES = ("config.yaml", "metrics.jsonl", "evaluations.jsonl", "metrics.csv", "curves.png", "eval.mp4",
             "error.log") + CHECKPOINTS
RUN_DIRS = ("tensorboard", "wandb")


def holds_run(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a run that can be resumed or evaluated (a checkpoint)."""
    return any(os.path.isfile(os.path.join(run_dir, name)) for name in CHECKPOINTS)


def run_files(run_dir: str) -> List[str]:
    """The run files and folders present in ``run_dir``, by name."""
    return [n for n in RUN_FILES + RUN_DIRS if os.path.exists(os.path.join(run_dir, n))]


def _remove_run_files(run_dir: str) -> None:
    for name in RUN_FILES:
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))
    for name in RUN_DIRS:
        shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)


class RunFolderInUse(RuntimeError):
    """Another process holds the run folder's lock."""


def write_error_log(run_dir: str, err: BaseException) -> str:
    """``<run_dir>/error.log``: the traceback of the error that stopped the run (and the env code's
    own, for an env error); returns its path."""
    import traceback

    path = os.path.join(run_dir, "error.log")
    with open(path, "w") as f:
        f.write("".join(traceback.format_exception(type(err), err, err.__traceback__)))
        env_traceback = getattr(err, "traceback", "")
        if env_traceback:
            f.write("\n--- the env's own traceback ---\n" + env_traceback)
    return path


def hold(path: str) -> Optional[int]:
    """An exclusive ``flock`` on ``path`` (created if missing; this process's pid written in it): its
    file descriptor, or None while another process holds it.  :func:`let_go` releases it; the
    kernel releases it when the process dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def holder(path: str) -> str:
    """The pid written in a held lock file, or "?"."""
    try:
        with open(path) as f:
            return f.read(32).strip() or "?"
    except OSError:
        return "?"


def let_go(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class RunFolderLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` for as long as the run writes there; released
    by the kernel if the process dies, so a crashed run never leaves the folder locked."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.created = not os.path.isdir(run_dir)  # made for this run: removed again by discard()
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, ".lock")
        self.fd = hold(self.path)
        if self.fd is None:
            raise RunFolderInUse(f"run_dir {run_dir!r} is in use by another run (pid {holder(self.path)}); give this "
                                 f"run its own run_dir")

    def release(self) -> None:
        if self.fd is not None:
            let_go(self.fd)
            self.fd = None

    def discard(self) -> None:
        """Remove what a run that stopped before its first checkpoint wrote, and the folder itself
        when this run created it and nothing else is in it."""
        _remove_run_files(self.run_dir)
        if self.created and os.listdir(self.run_dir) == [".lock"]:
            os.remove(self.path)
            os.rmdir(self.run_dir)


def claim(run_dir: str, fresh: bool, overwrite: bool) -> RunFolderLock:
    """Lock ``run_dir`` for a run.  A ``fresh`` run (not a continuation or resume) is refused a
    folder that holds a run unless ``overwrite``; it replaces the files of a run that stopped
    before its first checkpoint, saying so."""
    if os.path.isfile(os.path.join(run_dir, "seeds.json")):  # mappo/seeds.py's folder of seed folders
        raise ValueError(f"run_dir {run_dir!r} holds a num_seeds run (seeds.json): a run of one seed needs a folder of "
                         f"its own (the seeds' folders, {run_dir}/seed<S>, are one-seed runs)")
    lock = RunFolderLock(run_dir)
    if os.path.exists(os.path.join(run_dir, "error.log")):  # the last attempt's; this one starts afresh
        os.remove(os.path.join(run_dir, "error.log"))
    if fresh:
        if holds_run(run_dir) and not overwrite:
            lock.release()
            raise ValueError(f"run_dir {run_dir!r} already holds a run (ckpt.pt / best.pt). Continue it with "
                             f"`mappo train --resume {run_dir}` (or Trainer.load), choose a new run_dir, or set "
                             f"overwrite=true to replace it")
        left = run_files(run_dir)
        if left and not holds_run(run_dir):
            print(f"run_dir {run_dir!r}: replacing {', '.join(left)} of a run that stopped before its first "
                  f"checkpoint", file=sys.stderr)
        _remove_run_files(run_dir)
    return lock
