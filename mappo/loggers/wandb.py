"""Weights & Biases: the config, every metric against ``env_steps``, the final checkpoint as a
model artifact and the evaluation video.  ``wandb_mode=offline`` needs no account or network."""
from __future__ import annotations

import os
from typing import Any, Dict


class WandbBackend:
    def __init__(self, cfg: Any, run_dir: str):
        import wandb

        self.wandb, self.cfg = wandb, cfg
        self.run = wandb.init(project=cfg.wandb_project, name=cfg.run_name, config=cfg.to_dict(), mode=cfg.wandb_mode,
                              dir=run_dir, reinit="create_new")  # num_seeds: one open run per seed
        self.run.define_metric("env_steps")
        self.run.define_metric("*", step_metric="env_steps")

    def log(self, row: Dict[str, Any]) -> None:
        self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None})

    def log_file(self, kind: str, path: str, step: int) -> None:
        if kind == "checkpoint" and os.path.isfile(path):
            artifact = self.wandb.Artifact(f"{self.cfg.run_name}-model".replace("/", "_"), type="model",
                                           metadata={"env_steps": step})
            artifact.add_file(path, name="ckpt.pt")
            self.run.log_artifact(artifact)
        elif kind == "video":
            self.run.log({"eval_video": self.wandb.Video(path, format=path.rsplit(".", 1)[-1]), "env_steps": step})

    def close(self) -> None:
        self.run.finish()
