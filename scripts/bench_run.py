"""One whole training run, timed: env steps per second of ``train()`` and, optionally, the
trained policy's return (the peer rows of docs/PERFORMANCE.md: a run of a fixed budget, as the peers report).

    python scripts/bench_run.py configs/mpe_simple_spread.yaml recurrent=true --eval 100
    python scripts/bench_run.py configs/vmas_navigation.yaml num_envs=600 hidden_sizes=[256,256] \
        total_steps=1000000 input_norm=false

``--threads 1`` runs torch on one thread (the VMAS peer row was measured so); the default is
torch's own, as ``mappo train`` runs.
Prints one line: env steps, wall seconds of ``train()`` (building the trainer and its envs is
not counted; the first iteration, with any compilation, is), steps per second, the seconds spent
collecting and updating, how many episodes ended, and with ``--eval N`` the deterministic team
return over N episodes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mappo  # noqa: E402
from mappo.cli import _env_fn  # noqa: E402  (the env the CLI would build for this config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config, e.g. configs/vmas_navigation.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--eval", type=int, default=0, help="deterministic evaluation episodes after training")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # through the API, with no run_dir: nothing is written to disk
    cfg = mappo.Config.from_yaml(args.config, args.overrides + ["progress=false", "wandb=false"])
    with mappo.Trainer(_env_fn(cfg), cfg) as trainer:
        trainer._ensure_envs()  # start the workers before the clock
        phases = {"collect": 0.0, "update": 0.0}
        for name in phases:  # time the two phases of every iteration
            def timed(method=getattr(trainer, name), name=name):
                t = time.perf_counter()
                try:
                    return method()
                finally:
                    phases[name] += time.perf_counter() - t
            setattr(trainer, name, timed)
        start = time.perf_counter()
        history = trainer.train()
        wall = time.perf_counter() - start
        episodes = sum(row.get("episodes", 0) for row in history)
        line = (f"{args.config} {' '.join(args.overrides)}: {trainer.env_steps} env steps in {wall:.1f} s = "
                f"{trainer.env_steps / wall:,.0f} steps/s (torch {torch.__version__}, {torch.get_num_threads()} thread(s)); "
                f"collection {phases['collect']:.1f} s, update {phases['update']:.1f} s, {episodes} episodes ended")
        if args.eval:
            result = trainer.evaluate(episodes=args.eval, deterministic=True)
            line += f"; deterministic team return {result['team_return_mean']:.1f} over {args.eval} episodes"
    print(line, flush=True)


if __name__ == "__main__":
    from mappo.cli import script_main

    sys.exit(script_main(main, "bench_run.py"))
