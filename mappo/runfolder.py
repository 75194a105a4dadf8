"""A run folder belongs to one run at a time: a lock while a run writes to it, and no fresh run
into a folder that already holds one (it would mix two runs' metrics and checkpoints)."""
from __future__ import annotations

import fcntl
import os
import shutil
from typing import Optional

# what a run leaves in its folder; `overwrite=true` removes these before a fresh run starts
RUN_FILES = ("metrics.jsonl", "metrics.csv", "ckpt.pt", "best.pt", "curves.png", "eval.mp4")
RUN_DIRS = ("tensorboard", "wandb")


def holds_run(run_dir: str) -> bool:
    return any(os.path.exists(os.path.join(run_dir, name)) for name in ("metrics.jsonl", "ckpt.pt"))


class RunFolderLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` for as long as the run writes there; released
    by the kernel if the process dies, so a crashed run never leaves the folder locked."""

    def __init__(self, run_dir: str):
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, ".lock")
        self.fd: Optional[int] = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise RuntimeError(f"run_dir {run_dir!r} is in use by another run (pid {holder}); give this run its "
                               f"own run_dir") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def claim(run_dir: str, fresh: bool, overwrite: bool) -> RunFolderLock:
    """Lock ``run_dir`` for a run.  A ``fresh`` run (not a continuation or resume) is refused a
    folder that already holds a run unless ``overwrite``, which first removes that run's files."""
    lock = RunFolderLock(run_dir)
    if fresh and holds_run(run_dir):
        if not overwrite:
            lock.release()
            raise ValueError(f"run_dir {run_dir!r} already holds a run (metrics.jsonl / ckpt.pt). Continue it with "
                             f"`mappo train --resume {run_dir}` (or Trainer.load), choose a new run_dir, or set "
                             f"overwrite=true to replace it")
        for name in RUN_FILES:
            if os.path.exists(os.path.join(run_dir, name)):
                os.remove(os.path.join(run_dir, name))
        for name in RUN_DIRS:
            shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)
    return lock
