"""Every shipped config runs a few iterations; the same seed gives the same history on the CPU."""
import glob
import os

import pytest

import mappo
from envs import make_env_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
SMALL = ["total_steps=60", "num_envs=2", "rollout_length=10", "ppo_epochs=2", "num_minibatches=1",
         "progress=false", "device=cpu", "vector_mode=inprocess"]


def run(path, extra=()):
    cfg = mappo.Config.from_yaml(path, SMALL + list(extra))
    with mappo.Trainer(make_env_fn(cfg.env, **cfg.env_kwargs), cfg) as trainer:
        return [{k: v for k, v in row.items() if k != "sps"} for row in trainer.train()]


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_runs_and_is_deterministic(path):
    first = run(path)
    assert len(first) == 3
    assert first == run(path)


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_runs_separate_ippo_with_subprocess_workers(path):
    assert len(run(path, ["parameter_sharing=separate", "critic_input=local", "vector_mode=subprocess"])) == 3
