"""Shared test settings: a tiny, fast, CPU-only config."""
import json

import mappo


def tiny(**kw) -> mappo.Config:
    """2 in-process envs x 20 steps, 2 epochs of 2 minibatches, one 16-unit layer, 200 steps."""
    base = dict(total_steps=200, num_envs=2, rollout_length=20, seed=0, vector_mode="inprocess", ppo_epochs=2,
                num_minibatches=2, hidden_sizes=[16], progress=False, device="cpu")
    base.update(kw)
    return mappo.Config(**base)


def strip_timing(history):
    """History rows without their wall-clock field, for exact comparisons."""
    return [{k: v for k, v in row.items() if k != "sps"} for row in history]


def straight_and_resumed(env_fn, cfg, run_dir, first_steps):
    """Histories of one straight run of ``cfg``, and of a run stopped after ``first_steps`` env steps
    (a checkpoint in ``run_dir``) and resumed from it, both without wall-clock fields."""
    import os

    with mappo.Trainer(env_fn, cfg) as trainer:
        straight = trainer.train()
    with mappo.Trainer(env_fn, cfg.replace(run_dir=run_dir)) as trainer:
        first = trainer.train(total_steps=first_steps)
    with mappo.Trainer.load(os.path.join(run_dir, "ckpt.pt"), env_fn) as resumed:
        second = resumed.train()
    return strip_timing(straight), strip_timing(first + second)


def write_config(path, **fields):
    """A YAML config for a `mappo train` subprocess: CoordinationEnv, 2 subprocess workers, tiny networks."""
    base = {"env": "tests.toy_envs:CoordinationEnv", "num_envs": 2, "rollout_length": 20, "ppo_epochs": 1,
            "hidden_sizes": [16], "device": "cpu", "vector_mode": "subprocess", "num_workers": 2}
    base.update(fields)
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in base.items()) + "\n")
    return str(path)


def sigterm_once_written(command, paths, env, timeout=180.0):
    """Start ``command``, send it SIGTERM once every file in ``paths`` exists (or after ``timeout``
    seconds), and return its exit code and output."""
    import os
    import signal
    import subprocess
    import time

    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + timeout
    while not all(os.path.isfile(p) for p in paths) and time.time() < deadline:
        time.sleep(0.1)
    runner.send_signal(signal.SIGTERM)
    output, _ = runner.communicate(timeout=timeout)
    return runner.returncode, output
