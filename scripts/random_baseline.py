"""Team return of uniformly random valid actions, counted as `mappo eval` counts it.

    python scripts/random_baseline.py configs/mpe_simple_spread.yaml [more configs] [--episodes 100] [key=value ...]

Steps one in-process env per config with ``mappo.spaces.random_actions`` (masks respected)
and prints the mean and std of the team return over the episodes: the "random" row of
docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mappo  # noqa: E402
from envs import make_env_fn  # noqa: E402
from mappo.spaces import random_actions  # noqa: E402
from mappo.vector import make_vector_env  # noqa: E402
from mappo.wrappers import WrappedEnvFn  # noqa: E402


def random_return(config: str, episodes: int, seed: int, overrides=()) -> np.ndarray:
    cfg = mappo.Config.from_yaml(config, ["progress=false", *overrides])
    env_fn = make_env_fn(cfg.env, **cfg.env_kwargs)
    if cfg.wrappers:  # the same envs training sees (a wrapper may change rewards or episode ends)
        env_fn = WrappedEnvFn(env_fn, cfg.wrappers)
    vec = make_vector_env(env_fn, 1, seed, torch.device("cpu"), "inprocess")
    generator = torch.Generator().manual_seed(seed)
    done = []
    try:
        while len(done) < episodes:
            vec.set_actions(random_actions(vec.spec, vec.observe("action_mask"), generator))
            done += vec.step()
    finally:
        vec.close()
    return np.array([e["team_return"] for e in done[:episodes]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="config files, then any key=value overrides for all of them")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per config")
    parser.add_argument("--seed", type=int, default=1_000_003,
                        help="seed of the env resets (default: a seed-0 run's evaluation seed)")
    args = parser.parse_intermixed_args()
    overrides = [a for a in args.configs if "=" in a]
    for config in [a for a in args.configs if "=" not in a]:
        returns = random_return(config, args.episodes, args.seed, overrides)
        print(f"{config}: random team return {returns.mean():.2f} +- {returns.std():.2f} ({len(returns)} episodes)")
    return 0


if __name__ == "__main__":
    from mappo.cli import script_main

    sys.exit(script_main(main, "random_baseline.py"))
