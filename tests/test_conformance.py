"""One conformance test for every vector env back end: PettingZoo (in-process, subprocess) and VMAS."""
import numpy as np
import pytest
import torch

from envs import make_env_fn
from mappo.spaces import random_actions
from mappo.vector import make_vector_env

E = 3


def as_np(x):
    return x.cpu().numpy() if torch.is_tensor(x) else x


def check_conformance(spec, vec, steps, episode_length):
    A, O, L, W = spec.num_agents, spec.obs_dim, spec.num_logits, spec.action_width
    expected = {"obs": ((E, A, O), np.float32), "action_mask": ((E, A, L), np.bool_), "alive": ((E, A), np.bool_),
                "state": ((E, spec.state_dim), np.float32), "reward": ((E, A), np.float32),
                "terminated": ((E, A), np.bool_), "truncated": ((E, A), np.bool_), "final_obs": ((E, A, O), np.float32),
                "env_done": ((E,), np.bool_)}
    generator = torch.Generator().manual_seed(0)
    episodes = []
    for t in range(steps):
        mask = as_np(vec.arrays["action_mask"])
        assert (mask & ~spec.valid_logits).sum() == 0  # masks never allow a logit the agent lacks
        actions = random_actions(spec, mask, generator)
        assert actions.shape == (E, A, W)
        if hasattr(vec, "set_actions"):
            vec.set_actions(torch.as_tensor(actions, device=vec.arrays["obs"].device))
        else:
            vec.arrays["actions"][:] = actions
        episodes += vec.step()
        for name, (shape, dtype) in expected.items():
            value = as_np(vec.arrays[name])
            assert value.shape == shape, name
            assert value.dtype == dtype, name
        assert np.isfinite(as_np(vec.arrays["obs"])).all()
        done = as_np(vec.arrays["env_done"])
        assert done.all() == ((t + 1) % episode_length == 0)  # fixed-length episodes end together
        if done.any():
            assert as_np(vec.arrays["truncated"])[done].all()
            assert as_np(vec.arrays["alive"]).all()  # reset: every agent back
            assert not np.array_equal(as_np(vec.arrays["obs"]), as_np(vec.arrays["final_obs"]))
    assert len(episodes) == E * (steps // episode_length)
    assert all(e["length"] == episode_length for e in episodes)


@pytest.mark.parametrize("mode", ["inprocess", "subprocess"])
def test_pettingzoo_vector_env_conformance(mode):
    spec, vec = make_vector_env(make_env_fn("mpe/simple_spread", N=3, max_cycles=5), E, seed=0, mode=mode)
    try:
        check_conformance(spec, vec, steps=12, episode_length=5)
    finally:
        vec.close()


@pytest.mark.parametrize("scenario,kwargs", [("vmas/simple_spread", {"max_steps": 5}),
                                             ("vmas/navigation", {"max_steps": 5}),
                                             ("vmas/balance", {"max_steps": 5})])
def test_vmas_adapter_conformance(scenario, kwargs):
    pytest.importorskip("vmas")
    env_fn = make_env_fn(scenario, **kwargs)
    vec = env_fn(num_envs=E, device="cpu", seed=0)
    vec.reset()
    assert all(torch.is_tensor(v) for v in vec.arrays.values())  # stays torch, on the device
    check_conformance(vec.spec, vec, steps=12, episode_length=5)


def test_vmas_trains_through_the_same_trainer_api():
    pytest.importorskip("vmas")
    import mappo

    cfg = mappo.Config(env="vmas/simple_spread", num_envs=64, rollout_length=10, total_steps=1280, ppo_epochs=1,
                       progress=False, device="cpu")
    with mappo.Trainer(make_env_fn("vmas/simple_spread", max_steps=10), cfg) as trainer:
        history = trainer.train()
        stats = trainer.evaluate(episodes=4)
    assert len(history) == 2 and history[-1]["episodes"] == 64
    assert stats["episode_length_mean"] == 10 and stats["episodes"] == 4
