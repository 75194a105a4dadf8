"""TensorBoard event files in ``<run_dir>/tensorboard``: every numeric key as a scalar against
``env_steps``.  Needs the ``tensorboard`` package (the project's ``tensorboard`` extra)."""
from __future__ import annotations

import os
from typing import Any, Dict


class TensorBoardBackend:
    def __init__(self, cfg: Any, run_dir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError("config loggers=[tensorboard] needs the tensorboard package: "
                              "pip install tensorboard (or the project's 'tensorboard' extra)") from err
        self.writer = SummaryWriter(log_dir=os.path.join(run_dir, "tensorboard"))

    def log(self, row: Dict[str, Any]) -> None:
        step = int(row["env_steps"])
        for key, value in row.items():
            if key != "env_steps" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def log_file(self, kind: str, path: str, step: int) -> None:
        pass

    def close(self) -> None:
        self.writer.close()
