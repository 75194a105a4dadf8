"""Console / JSONL / W&B logging behind one small interface, plus the run folder's curves.png
and the end-of-run summary."""
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

    def plot(self) -> None:
        """Redraw ``<run_dir>/curves.png`` from metrics.jsonl (written via a temp file and rename)."""
        if self.run_dir is None or self.metrics_file is None:
            return
        from .plot import plot_groups

        try:
            plot_groups({self.cfg.run_name: [self.run_dir]}, os.path.join(self.run_dir, "curves.png"),
                        title=f"{self.cfg.run_name}: team return")
        except Exception as err:  # a plot must never kill a training run
            print(f"warning: could not draw curves.png: {err}", file=sys.stderr)

    def finish(self, trainer: Any, ckpt: Optional[str]) -> None:
        """With W&B on: log the final checkpoint as a model artifact and, when the env renders
        rgb_array frames, a video of a deterministic episode as ``wandb.Video``."""
        if self.wandb_run is None:
            return
        import wandb

        if ckpt and os.path.isfile(ckpt):
            artifact = wandb.Artifact(f"{self.cfg.run_name}-model".replace("/", "_"), type="model",
                                      metadata={"env_steps": trainer.env_steps, "iteration": trainer.iteration})
            artifact.add_file(ckpt, name="ckpt.pt")
            self.wandb_run.log_artifact(artifact)
        if self.cfg.wandb_video and not trainer.batched and self.run_dir is not None:
            from .video import record_episode, render_env_fn, write_video

            try:
                frames = record_episode(trainer.policy, render_env_fn(trainer.env_fn), seed=trainer.eval_seed)
                path = write_video(frames, os.path.join(self.run_dir, "eval.mp4"))
                self.wandb_run.log({"eval_video": wandb.Video(path, format=path.rsplit(".", 1)[-1]),
                                    "env_steps": trainer.env_steps})
            except Exception as err:  # no renderer: say so, keep the run
                print(f"warning: no eval video logged to W&B: {err}", file=sys.stderr)

    def summary(self, trainer: Any, history: Any, wall: float, ckpt: Optional[str], steps: int) -> None:
        """The end-of-run summary on the console (when ``progress`` is on)."""
        if not self.cfg.progress:
            return
        returns = [r["team_return"] for r in history if r.get("team_return") is not None]
        stop = "" if trainer.interrupted is None else f" (stopped by signal {trainer.interrupted})"
        lines = [f"run summary{stop}:",
                 f"  env steps   {trainer.env_steps} ({len(history)} iterations this call, {wall:.1f} s, "
                 f"{steps / max(wall, 1e-9):.0f} steps/s)"]
        if returns:
            lines.append(f"  team return last {returns[-1]:.3f}, best {max(returns):.3f}, first {returns[0]:.3f}")
        if self.run_dir is not None:
            lines.append(f"  run folder  {self.run_dir} (config.yaml, metrics.jsonl, curves.png)")
        if ckpt:
            lines.append(f"  checkpoint  {ckpt}; continue with: mappo train --resume {self.run_dir}")
        print("\n".join(lines), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.metrics_file is not None:
            self.metrics_file.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
