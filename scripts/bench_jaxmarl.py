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
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time
import types

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


if __name__ == "__main__":
    main()
