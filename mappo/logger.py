"""Console / JSONL / W&B logging behind one small interface."""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, Optional


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    """Writes one JSON line per iteration to ``<run_dir>/metrics.jsonl``, mirrors every key to
    W&B (against ``env_steps``) when enabled, and shows progress on the console."""

    def __init__(self, cfg: Any, run_dir: Optional[str], total_steps: int, start_steps: int = 0):
        self.cfg, self.run_dir = cfg, run_dir
        self.metrics_file = None
        if run_dir is not None:
            os.makedirs(run_dir, exist_ok=True)
            cfg.to_yaml(os.path.join(run_dir, "config.yaml"))
            self.metrics_file = open(os.path.join(run_dir, "metrics.jsonl"), "a")
        self.wandb_run = None
        if cfg.wandb:
            import wandb

            self.wandb_run = wandb.init(project=cfg.wandb_project, name=cfg.run_name, config=cfg.to_dict(),
                                        mode=cfg.wandb_mode, dir=run_dir, reinit="finish_previous")
            self.wandb_run.define_metric("env_steps")
            self.wandb_run.define_metric("*", step_metric="env_steps")
        self.bar = None
        if cfg.progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_steps, unit="step", dynamic_ncols=True)
        self.last_steps = start_steps

    def log(self, row: Dict[str, Any]) -> None:
        row = {k: _clean(v) for k, v in row.items()}
        if self.metrics_file is not None:
            self.metrics_file.write(json.dumps(row) + "\n")
            self.metrics_file.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None})
        ret = row.get("team_return")
        if self.bar is not None:
            self.bar.update(row["env_steps"] - self.last_steps)
            self.bar.set_postfix(sps=f"{row['sps']:.0f}", team_return="-" if ret is None else f"{ret:.2f}")
        elif self.cfg.progress and row["iteration"] % self.cfg.log_every == 0:
            print(f"iter {row['iteration']:>5}  steps {row['env_steps']:>9}  sps {row['sps']:>7.0f}  "
                  f"team_return {'-' if ret is None else f'{ret:9.3f}'}  "
                  f"value_loss {row['value_loss']:.4f}  entropy {row['entropy']:.3f}  kl {row['approx_kl']:.4f}",
                  flush=True)
        self.last_steps = row["env_steps"]

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.metrics_file is not None:
            self.metrics_file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
