"""The JaxMARL rows of docs/PERFORMANCE.md: JaxMARL's own rMAPPO baselines (``baselines/MAPPO/mappo_rnn_mpe.py``
with its shipped ``mappo_homogenous_rnn_mpe.yaml`` on MPE simple_spread; ``--suite smax``:
``mappo_rnn_smax.py`` on SMAX 2s3z), timed on this machine beside ``scripts/bench_run.py``'s
mappo figures.

It runs in a venv of its own, never mappo's (JaxMARL's baselines are not a package; point
``--jaxmarl`` at a checkout of https://github.com/FLAIROx/JaxMARL):

    python -m venv /tmp/venv-jaxmarl && . /tmp/venv-jaxmarl/bin/activate
    pip install "jax[cpu]" "/path/to/JaxMARL[algs]"
    python scripts/bench_jaxmarl.py --jaxmarl /path/to/JaxMARL TOTAL_TIMESTEPS=300000

``KEY=value`` arguments override the baseline's config (YAML values).  Prints one line: the
env steps trained, the seconds XLA took to compile the whole run, the seconds of the compiled
run, steps per second with and without the compilation, and the mean return of the episodes
that ended in the last update (JaxMARL's own logged ``returns``: stochastic actions, per agent).

``--marl-eval FILE --env-name smax --task-name 2s3z`` also adds the run to FILE in marl-eval's
layout (``mappo/marl_eval.py``) as ``run_<SEED>`` of the algorithm ``jaxmarl_mappo``: at
``--points`` updates spread over the run, each training episode that ended in that update (its
return for agent 0, as JaxMARL logs it, and for SMAX whether it was won).  The baseline has no
separate evaluation, so these are its training episodes, with sampled actions.  Set it beside a
``mappo benchmark`` suite with ``--compare FILE``.
"""
from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import os
import time
import types

import numpy as np

import jax
import yaml
from omegaconf import OmegaConf


BASELINES = {"mpe": ("mappo_rnn_mpe.py", "mappo_homogenous_rnn_mpe.yaml"),
             "smax": ("mappo_rnn_smax.py", "mappo_homogenous_rnn_smax.yaml")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jaxmarl", required=True, help="a JaxMARL checkout (holds baselines/MAPPO)")
    parser.add_argument("--suite", choices=sorted(BASELINES), default="mpe",
                        help="which baseline: mpe (mappo_rnn_mpe.py) or smax (mappo_rnn_smax.py, with its win rate)")
    parser.add_argument("--marl-eval", metavar="FILE.json", help="add this run's episodes to FILE (marl-eval layout)")
    parser.add_argument("--env-name", default="smax", help="the env in FILE's layout (default: smax)")
    parser.add_argument("--task-name", help="the task in FILE's layout (default: the baseline's MAP_NAME)")
    parser.add_argument("--points", type=int, default=41, help="updates kept in FILE, spread over the run")
    parser.add_argument("overrides", nargs="*", help="KEY=value overrides of the baseline's config")
    args = parser.parse_args()
    folder = os.path.join(args.jaxmarl, "baselines", "MAPPO")
    script_name, config_name = BASELINES[args.suite]
    script = os.path.join(folder, script_name)
    if not os.path.isfile(script):
        raise SystemExit(f"--jaxmarl {args.jaxmarl!r}: no baselines/MAPPO/{script_name} there")
    config = OmegaConf.to_container(OmegaConf.load(os.path.join(folder, "config", config_name)))
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in config:
            raise SystemExit(f"override {item!r}: expected KEY=value with KEY one of {sorted(config)}")
        config[key] = yaml.safe_load(value)
    config["TOTAL_TIMESTEPS"] = int(float(config["TOTAL_TIMESTEPS"]))

    spec = importlib.util.spec_from_file_location(f"jaxmarl_{script_name[:-3]}", script)
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    logged = []  # the baseline logs each update's metrics through wandb.log: keep them instead
    baseline.wandb = types.SimpleNamespace(log=lambda row: logged.append({k: float(v) for k, v in row.items()}))
    episodes = {}  # update -> each ended episode's numbers, read where the baseline hands its metrics out
    io_callback = jax.experimental.io_callback

    def tap(callback, result_shape, metric, *rest, **kwargs):
        def both(m):
            ended = np.asarray(m["returned_episode"])[:, :, 0]
            update = int(m["update_steps"])
            episodes[update] = {"return": np.asarray(m["returned_episode_returns"])[:, :, 0][ended].tolist()}
            if "returned_won_episode" in m:
                episodes[update]["won"] = np.asarray(m["returned_won_episode"])[:, :, 0][ended].tolist()
            return callback(m)
        return io_callback(both, result_shape, metric, *rest, **kwargs)

    if args.marl_eval:
        jax.experimental.io_callback = tap

    train = jax.jit(baseline.make_train(config))  # sets NUM_UPDATES from TOTAL_TIMESTEPS
    if config["NUM_UPDATES"] < 1:
        raise SystemExit(f"TOTAL_TIMESTEPS={config['TOTAL_TIMESTEPS']} is less than one update of "
                         f"NUM_ENVS x NUM_STEPS = {config['NUM_ENVS'] * config['NUM_STEPS']} env steps")
    rng = jax.random.PRNGKey(config["SEED"])
    start = time.perf_counter()
    compiled = train.lower(rng).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(compiled(rng))
    run_s = time.perf_counter() - start
    steps = config["NUM_UPDATES"] * config["NUM_STEPS"] * config["NUM_ENVS"]
    print(f"JaxMARL rMAPPO {config['ENV_NAME']} ({config['NUM_ENVS']} envs x {config['NUM_STEPS']} steps, "
          f"GRU {config['GRU_HIDDEN_DIM']}, {config['UPDATE_EPOCHS']}x{config['NUM_MINIBATCHES']}, jax {jax.__version__}, "
          f"{jax.devices()[0].platform}): {steps} env steps; compile {compile_s:.1f} s, run {run_s:.1f} s = "
          f"{steps / run_s:,.0f} steps/s ({steps / (compile_s + run_s):,.0f} with compilation); "
          f"last update's return {logged[-1]['returns']:.2f}"
          + (f", win rate {logged[-1]['win_rate']:.2f}" if "win_rate" in logged[-1] else "")
          + f" over {len(logged)} updates")
    if args.marl_eval:
        write_marl_eval(args, config, episodes, steps / (compile_s + run_s))


def write_marl_eval(args, config, episodes, steps_per_s):
    """Add the run as ``run_<SEED>`` of ``jaxmarl_mappo`` to ``args.marl_eval`` (created if missing)."""
    per_update = config["NUM_ENVS"] * config["NUM_STEPS"]
    updates = sorted(u for u, e in episodes.items() if e["return"])
    keep = sorted({updates[int(round(i))] for i in np.linspace(0, len(updates) - 1, min(args.points, len(updates)))})
    run = {f"step_{k}": {"step_count": (u + 1) * per_update, **episodes[u]} for k, u in enumerate(keep)}
    task = args.task_name or str(config.get("MAP_NAME", config["ENV_NAME"]))
    # Runs started side by side (one per core) add to the same file: the lock keeps one run's
    # read-modify-write from dropping another's.
    with open(args.marl_eval + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = {}
        if os.path.isfile(args.marl_eval):
            with open(args.marl_eval) as f:
                data = json.load(f)
        runs = data.setdefault(args.env_name, {}).setdefault(task, {}).setdefault("jaxmarl_mappo", {})
        runs[f"run_{config['SEED']}"] = run
        tmp = args.marl_eval + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, args.marl_eval)
    print(f"added {args.env_name}/{task}/jaxmarl_mappo/run_{config['SEED']} ({len(run)} points, "
          f"{steps_per_s:,.0f} steps/s with compilation) to {args.marl_eval}")


if __name__ == "__main__":
    main()
