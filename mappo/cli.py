"""``mappo train CONFIG [key=value ...]`` and ``mappo eval RUN_DIR``: thin layers over Trainer."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

from .config import Config, help_text


def _env_fn(cfg: Config):
    from envs import make_env_fn

    return make_env_fn(cfg.env, **cfg.env_kwargs)


def train_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mappo train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train MAPPO from a YAML config with key=value overrides.",
        epilog="config fields:\n" + help_text(),
    )
    parser.add_argument("config", help="YAML config, e.g. configs/mpe_simple_spread.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lr=1e-3 num_envs=8")
    args = parser.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides must be key=value, got {bad}")
    cfg = Config.from_yaml(args.config, args.overrides)
    if cfg.run_dir is None:
        cfg.run_dir = os.path.join("runs", f"{cfg.run_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    from .trainer import Trainer

    start = time.perf_counter()
    with Trainer(_env_fn(cfg), cfg) as trainer:
        history = trainer.train()
    wall = time.perf_counter() - start
    returns = [h["team_return"] for h in history if "team_return" in h]
    print(f"done: {trainer.env_steps} env steps in {wall:.1f}s ({trainer.env_steps / wall:.0f} steps/s); "
          f"last team return {returns[-1] if returns else float('nan'):.3f}; run folder {cfg.run_dir}")
    return 0


def eval_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="mappo eval", description="Evaluate a run's final checkpoint.")
    parser.add_argument("run", help="run folder (holding ckpt.pt) or a checkpoint file")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    args = parser.parse_args(argv)
    path = os.path.join(args.run, "ckpt.pt") if os.path.isdir(args.run) else args.run
    from .checkpoint import load_checkpoint
    from .trainer import Trainer

    cfg = Config.from_dict(load_checkpoint(path)["config"])
    trainer = Trainer.load(path, _env_fn(cfg))
    stats = trainer.evaluate(episodes=args.episodes, deterministic=not args.stochastic)
    print(json.dumps(stats, indent=2))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train_main, "eval": eval_main}
    if not argv or argv[0] not in commands:
        print("usage: mappo {train,eval} ...\n  mappo train CONFIG [key=value ...]\n  mappo eval RUN_DIR [--episodes K]",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return commands[argv[0]](argv[1:])
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"mappo {argv[0]}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
