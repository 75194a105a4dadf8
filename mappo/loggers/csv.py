"""``<run_dir>/metrics.csv``: one row per iteration, one column per key.

Keys appear over a run (``team_return`` once episodes end, ``eval/...`` at the first
evaluation), so when a row brings a new key the file is rewritten with the wider header; rows
that lack a key leave its cell empty.  A resumed run starts from the rows of metrics.jsonl
(written first, and cut back to the checkpoint's iteration), so both files hold the same rows.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Dict, List


class CsvBackend:
    def __init__(self, cfg: Any, run_dir: str):
        self.path = os.path.join(run_dir, "metrics.csv")
        self.rows: List[Dict[str, Any]] = []
        self.columns: List[str] = []
        if os.path.isfile(os.path.join(run_dir, "metrics.jsonl")):
            from mappo.plot import read_metrics

            for row in read_metrics(run_dir):
                self.rows.append({k: "" if v is None else v for k, v in row.items()})
                self.columns += [k for k in row if k not in self.columns]
        self._rewrite()

    def log(self, row: Dict[str, Any]) -> None:
        row = {k: "" if v is None else v for k, v in row.items()}
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new:  # a wider header: write the whole file again
            self.columns += new
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self.columns, restval="").writerow(row)

    def _rewrite(self) -> None:
        tmp = self.path + ".tmp"  # via a temp file and rename: a reader never sees half a file
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)

    def log_file(self, kind: str, path: str, step: int) -> None:
        pass

    def close(self) -> None:
        pass
