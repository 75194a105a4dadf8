"""Seeds in one process (``num_seeds=K``) against K separate runs, measured in one go.

    python scripts/bench_seeds.py --out runs/bench_seeds.jsonl
    python scripts/bench_seeds.py --configs configs/vmas_simple_spread.yaml --seeds 1 4 --iterations 2

For each config and each K: one process training K seeds together (``mappo.SeedStack``; K = 1 is a
plain Trainer); K processes one after another, each training one seed; and the same K processes
one per core at a time on one torch thread each (as ``mappo benchmark --jobs <cores>`` runs
seeds), with the same budget per seed (``--iterations`` rollouts).  It prints, per setting, the env steps of all seeds per
second of training (``train()`` only) and per second of wall time (process start, imports, env
and JIT start-up included), and the ratio together / separate.  Each process appends its
figures to ``--out`` as it finishes; a second call with the same ``--out`` skips those already
there, so a stopped run continues.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's mappo, not another one installed
CONFIGS = ["configs/vmas_simple_spread.yaml", "configs/jaxmarl_mpe_simple_spread.yaml"]


def one(config: str, seeds: int, seed: int, iterations: int, overrides: List[str]) -> Dict[str, float]:
    """Train ``seeds`` seeds from ``seed`` in this process; the seconds it took."""
    import mappo
    from mappo.cli import _env_fn

    cfg = mappo.Config.from_yaml(config, overrides)
    steps = cfg.num_envs * cfg.rollout_length * iterations
    cfg = cfg.replace(seed=seed, num_seeds=seeds, total_steps=steps, eval_every=0, progress=False, run_dir=None,
                      wandb=False, loggers=[])
    build = mappo.SeedStack if seeds > 1 else mappo.Trainer
    with build(_env_fn(cfg), cfg) as trainer:
        start = time.perf_counter()
        trainer.train()
        return {"train_s": time.perf_counter() - start, "steps_per_seed": steps}


def measure(config: str, seeds: int, mode: str, iterations: int, overrides: List[str]) -> Dict[str, Any]:
    """``mode`` "together" (one process), "separate" (``seeds`` processes in turn) or "parallel"
    (``seeds`` processes, one per core at a time, each on one torch thread, as ``mappo benchmark
    --jobs <cores>`` runs them): seconds and env steps per second of all seeds.  "parallel" has
    no training-only figure: its runs overlap."""
    runs = [(seeds, 0)] if mode == "together" else [(1, k) for k in range(seeds)]
    jobs = len(os.sched_getaffinity(0)) if mode == "parallel" else 1
    one_thread = ["torch_threads=1"] if mode == "parallel" else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if mode == "parallel" else None
    train_s = 0.0
    steps = 0
    running: List[subprocess.Popen] = []
    start = time.perf_counter()

    def reap(proc: subprocess.Popen) -> None:
        nonlocal train_s, steps
        out, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"{config} K={seeds} {mode}: {err.strip().splitlines()[-1:]}")
        figures = json.loads(out.strip().splitlines()[-1])
        train_s += figures["train_s"]
        steps = figures["steps_per_seed"]

    for count, seed in runs:
        if len(running) == jobs:
            reap(running.pop(0))
        command = [sys.executable, os.path.abspath(__file__), "--one", config, str(count), str(seed),
                   str(iterations), *overrides, *one_thread]
        running.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env))
    for proc in running:
        reap(proc)
    wall_s = time.perf_counter() - start
    total = steps * seeds
    return {"config": config, "seeds": seeds, "mode": mode, "iterations": iterations, "overrides": overrides,
            "train_s": None if mode == "parallel" else round(train_s, 2), "wall_s": round(wall_s, 2),
            "train_sps": None if mode == "parallel" else round(total / train_s), "wall_sps": round(total / wall_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 4, 16], help="the K to measure")
    parser.add_argument("--iterations", type=int, default=4, help="rollouts (and updates) per seed")
    parser.add_argument("--out", default="runs/bench_seeds.jsonl", help="JSONL of results, appended as they come")
    parser.add_argument("--one", nargs=4, metavar=("CONFIG", "K", "SEED", "ITERATIONS"), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for every run (e.g. num_envs=64)")
    args = parser.parse_args()
    if args.one:
        config, seeds, seed, iterations = args.one
        print(json.dumps(one(config, int(seeds), int(seed), int(iterations), args.overrides)))
        return
    bad = [o for o in args.overrides if "=" not in o]
    if bad or args.iterations < 1 or min(args.seeds) < 1:
        parser.error(f"overrides are key=value, --iterations and --seeds >= 1 (got {bad or args})")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    done = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = [json.loads(line) for line in f if line.strip()]
    key = lambda r: (r["config"], r["seeds"], r["mode"], r["iterations"], tuple(r["overrides"]))  # noqa: E731
    have = {key(r): r for r in done}
    for config in args.configs:
        for seeds in args.seeds:
            rows = {}
            for mode in ("together", "separate", "parallel"):
                wanted = (config, seeds, mode, args.iterations, tuple(args.overrides))
                if wanted not in have:
                    have[wanted] = measure(config, seeds, mode, args.iterations, args.overrides)
                    with open(args.out, "a") as f:
                        f.write(json.dumps(have[wanted]) + "\n")
                rows[mode] = have[wanted]
            t, s, p = rows["together"], rows["separate"], rows["parallel"]
            print(f"{os.path.basename(config)} K={seeds}: together {t['train_sps']:,} steps/s training, "
                  f"{t['wall_sps']:,} wall; separate {s['train_sps']:,} / {s['wall_sps']:,}; "
                  f"ratio {t['train_sps'] / s['train_sps']:.2f}x training, {t['wall_sps'] / s['wall_sps']:.2f}x wall; "
                  f"parallel (one per core) {p['wall_sps']:,} wall, ratio {t['wall_sps'] / p['wall_sps']:.2f}x",
                  flush=True)


if __name__ == "__main__":
    from mappo.cli import script_main

    sys.exit(script_main(main, "bench_seeds.py"))
