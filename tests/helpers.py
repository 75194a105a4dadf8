"""Shared test settings: a tiny, fast, CPU-only config."""
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
