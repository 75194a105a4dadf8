"""Throughput of one config, measured in one run: raw env stepping, collection, full training.

    python scripts/bench_throughput.py --config configs/mpe_simple_spread.yaml [key=value ...]

Prints env-steps/s for each stage and their ratios to raw stepping, plus peak memory.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mappo  # noqa: E402
import mappo.trainer  # noqa: E402
from envs import make_env_fn  # noqa: E402
from mappo.vector import make_vector_env  # noqa: E402


def random_actions(spec, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform valid actions for the whole batch: mask ``[E, A, L]`` -> ``[E, A, W]``."""
    E, A = mask.shape[:2]
    out = np.zeros((E, A, spec.action_width), np.float32)
    start = 0
    for c, size in enumerate(spec.component_sizes):
        m = mask[..., start : start + size]
        scores = rng.random(m.shape) * m  # argmax of random scores over the valid entries
        out[..., c] = np.argmax(scores + m, axis=-1)
        start += size
    if spec.cont_dim:
        low, high = spec.cont_low, spec.cont_high
        out[..., spec.num_components :] = rng.uniform(low, high, size=(E, A, spec.cont_dim))
    return out


def random_actions_torch(spec, mask: torch.Tensor) -> torch.Tensor:
    """The same as ``random_actions`` with torch on the mask's device."""
    E, A = mask.shape[:2]
    out = torch.zeros(E, A, spec.action_width, device=mask.device)
    start = 0
    for c, size in enumerate(spec.component_sizes):
        m = mask[..., start : start + size].float()
        out[..., c] = torch.argmax(torch.rand_like(m) * m + m, dim=-1).float()
        start += size
    if spec.cont_dim:
        low = torch.as_tensor(spec.cont_low, device=mask.device)
        high = torch.as_tensor(spec.cont_high, device=mask.device)
        out[..., spec.num_components :] = low + (high - low) * torch.rand(E, A, spec.cont_dim, device=mask.device)
    return out


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own / 1024, children / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget for each stage")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = mappo.Config.from_yaml(args.config, args.overrides + ["progress=false"])
    env_fn = make_env_fn(cfg.env, **cfg.env_kwargs)
    E = cfg.num_envs

    # 1. raw env stepping: random valid actions through the same vector env
    batched = getattr(env_fn, "batched", False)
    if batched:  # VMAS: random actions drawn on the device, no numpy
        device = mappo.trainer.resolve_device(cfg.device)
        vec = env_fn(num_envs=E, device=device, seed=cfg.seed)
        vec.reset()
        spec = vec.spec
    else:
        spec, vec = make_vector_env(env_fn, E, cfg.seed, cfg.vector_mode, cfg.num_workers)
    rng = np.random.default_rng(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds / 2:
        if batched:
            vec.set_actions(random_actions_torch(spec, vec.arrays["action_mask"]))
        else:
            vec.arrays["actions"][:] = random_actions(spec, vec.arrays["action_mask"], rng)
        vec.step()
        steps += E
    if batched and device.type == "cuda":
        torch.cuda.synchronize()
    raw_sps = steps / (time.perf_counter() - start)
    vec.close()

    # 2. collection (policy in the loop) and 3. full training, on one trainer
    trainer = mappo.Trainer(env_fn, cfg)
    trainer._ensure_envs()
    trainer.collect()  # warm-up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds / 2:
        trainer.collect()
        steps += E * cfg.rollout_length
    collect_sps = steps / (time.perf_counter() - start)
    per_iter = E * cfg.rollout_length
    iters = max(2, int(args.seconds * collect_sps / per_iter / 2))
    start = time.perf_counter()
    trainer.train(total_steps=trainer.env_steps + iters * per_iter)
    train_sps = iters * per_iter / (time.perf_counter() - start)
    trainer.close()

    own, children = peak_rss_mb()
    print(f"config: {args.config} {' '.join(args.overrides)}")
    print(f"device: {trainer.device}  envs: {E}  vector_mode: {cfg.vector_mode}  torch threads: {torch.get_num_threads()}"
          f"  cpus: {os.cpu_count()}")
    print(f"raw env steps/s        {raw_sps:12.0f}   1.00")
    print(f"collection steps/s     {collect_sps:12.0f}   {collect_sps / raw_sps:.2f} x raw")
    print(f"training steps/s       {train_sps:12.0f}   {train_sps / raw_sps:.2f} x raw")
    print(f"peak RSS: trainer {own:.0f} MB, largest worker {children:.0f} MB")
    if torch.cuda.is_available():
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
