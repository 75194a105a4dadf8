"""Throughput of one config, measured in one run: raw env stepping, collection, full training.

    python scripts/bench_throughput.py --config configs/mpe_simple_spread.yaml [key=value ...]

Prints env-steps/s for each stage and their ratios to raw stepping, plus peak memory.
Under torchrun every rank runs every stage on its own envs, and the figures are
summed over ranks (training counts all ranks' env steps, as ``total_steps`` does):

    torchrun --standalone --nproc_per_node=2 scripts/bench_throughput.py --config configs/mpe_simple_spread.yaml
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mappo  # noqa: E402
import mappo.trainer  # noqa: E402
from envs import make_env_fn  # noqa: E402
from mappo.spaces import random_actions  # noqa: E402
from mappo.vector import make_vector_env, team_spec  # noqa: E402
from mappo.wrappers import WrappedEnvFn  # noqa: E402


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own / 1024, children / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/mpe_simple_spread.yaml")
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget for each stage")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args()
    cfg = mappo.Config.from_yaml(args.config, args.overrides + ["progress=false"])
    env_fn = make_env_fn(cfg.env, **cfg.env_kwargs)
    E = cfg.num_envs

    # the trainer first: it chooses the device, torch threads and env workers (and, under torchrun,
    # joins the process group); raw stepping then uses the same device and workers
    trainer = mappo.Trainer(env_fn, cfg)
    ranks = trainer.sync.world_size
    device = trainer.device

    # 1. raw env stepping: random valid actions through the same vector env (VMAS: drawn on the device),
    # with the config's wrappers, and reading state() only where the trainer does
    raw_fn = WrappedEnvFn(env_fn, cfg.wrappers) if cfg.wrappers else env_fn
    spec = team_spec(raw_fn, cfg.seed, device)
    if cfg.critic_input in ("concat_obs", "local") and not isinstance(raw_fn, mappo.Batched):
        spec.set_state(None)
    vec = make_vector_env(raw_fn, E, cfg.seed, device, cfg.vector_mode, trainer.resources.num_workers, spec=spec)
    vec.set_actions(random_actions(vec.spec, vec.observe("action_mask")))
    vec.step()  # warm-up: a compiled simulator (JAX) compiles its step here
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds / 2:
        vec.set_actions(random_actions(vec.spec, vec.observe("action_mask")))
        vec.step()
        steps += E
    if device.type == "cuda":
        torch.cuda.synchronize()
    raw_sps = steps / (time.perf_counter() - start)
    vec.close()
    jax_sps = None
    if cfg.env.startswith("jaxmarl/"):  # JaxMARL's own compiled stepping, with no torch and no hand-over
        from envs.jaxmarl import raw_step_rate

        jax_sps = raw_step_rate(cfg.env.partition("/")[2], E, args.seconds / 2, cfg.seed, **cfg.env_kwargs)

    # 2. collection (policy in the loop) and 3. full training, on the trainer
    trainer._ensure_envs()
    trainer.collect()  # warm-up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds / 2:
        trainer.collect()
        steps += E * cfg.rollout_length
    collect_sps = steps / (time.perf_counter() - start)
    # every rank stepped its own envs: the job's throughput is the sum (one process: unchanged)
    raw_sps, collect_sps = trainer.sync.sum(torch.tensor([raw_sps, collect_sps], dtype=torch.float64)).tolist()
    per_iter = E * cfg.rollout_length * ranks
    iters = max(2, int(args.seconds * collect_sps / per_iter / 2))
    start = time.perf_counter()
    trainer.train(total_steps=trainer.env_steps + iters * per_iter)
    train_sps = iters * per_iter / (time.perf_counter() - start)
    # the rollout buffer as stored (uint8 frames) and as it would be with float32 frames
    stored = sum(t.numel() * t.element_size() for t in trainer.buffer.data.values())
    as_float32 = sum(t.numel() * (4 if t.dtype == torch.uint8 else t.element_size()) for t in trainer.buffer.data.values())
    trainer.close()

    own, children = peak_rss_mb()
    if not trainer.sync.is_main:
        return
    print(f"config: {args.config} {' '.join(args.overrides)}")
    print(f"device: {trainer.device}  ranks: {ranks}  envs per rank: {E}  vector_mode: {cfg.vector_mode}  "
          f"torch threads: {trainer.resources.update_threads} (update), {trainer.resources.collect_threads} "
          f"(collection)  env workers: {trainer.resources.num_workers}  cpus: {os.cpu_count()}")
    if jax_sps is not None:
        print(f"JaxMARL's own step/s   {jax_sps:12.0f}   {jax_sps / raw_sps:.2f} x raw  (jit(vmap(env.step)), random "
              f"actions in JAX, no hand-over)")
    print(f"raw env steps/s        {raw_sps:12.0f}   1.00")
    print(f"collection steps/s     {collect_sps:12.0f}   {collect_sps / raw_sps:.2f} x raw")
    print(f"training steps/s       {train_sps:12.0f}   {train_sps / raw_sps:.2f} x raw")
    print(f"peak RSS: trainer {own:.0f} MB, largest worker {children:.0f} MB")
    print(f"rollout buffer: {stored / 2**20:.1f} MB (obs {trainer.buffer.obs.dtype}); with float32 frames it would be "
          f"{as_float32 / 2**20:.1f} MB ({as_float32 / stored:.2f}x)")
    if torch.cuda.is_available():
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    from mappo.cli import script_main

    sys.exit(script_main(main, "bench_throughput.py"))
