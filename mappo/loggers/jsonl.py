"""``<run_dir>/metrics.jsonl``: one JSON object per iteration, always on (plots and resume read it)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict


class JsonlBackend:
    def __init__(self, cfg: Any, run_dir: str):
        self.file = open(os.path.join(run_dir, "metrics.jsonl"), "a")

    def log(self, row: Dict[str, Any]) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def log_file(self, kind: str, path: str, step: int) -> None:
        pass

    def close(self) -> None:
        self.file.close()
