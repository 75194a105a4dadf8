"""One conformance test for every vector env back end: PettingZoo (in-process, subprocess) and VMAS.

The expected fields, shapes and dtypes come from ``mappo.protocol.STEP_FIELDS``, the same list
the rollout buffer allocates from."""
import numpy as np
import pytest
import torch

from envs import make_env_fn
from mappo.protocol import field_shapes, torch_dtype
from mappo.vector import make_vector_env
from mappo.spaces import random_actions

E = 3


def check_conformance(vec, steps, episode_length):
    spec = vec.spec
    expected = field_shapes(spec, E)
    generator = torch.Generator().manual_seed(0)
    episodes = []
    for t in range(steps):
        mask = vec.observe("action_mask")
        assert (mask.cpu().numpy() & ~spec.valid_logits).sum() == 0  # masks never allow a logit the agent lacks
        actions = random_actions(spec, mask, generator)
        assert actions.shape == (E, spec.num_agents, spec.action_width) and actions.device == vec.device
        vec.set_actions(actions)
        episodes += vec.step()
        for name, (shape, dtype) in expected.items():
            value = vec.observe(name)
            assert torch.is_tensor(value) and value.device == vec.device, name
            assert tuple(value.shape) == shape, name
            assert value.dtype == torch_dtype(dtype), name
        assert torch.isfinite(vec.observe("obs")).all()
        done = vec.observe("env_done")
        assert bool(done.all()) == ((t + 1) % episode_length == 0)  # fixed-length episodes end together
        if done.any():
            assert vec.observe("truncated")[done].all()
            assert vec.observe("alive").all()  # reset: every agent back
            assert not torch.equal(vec.observe("obs"), vec.observe("final_obs"))
    assert len(episodes) == E * (steps // episode_length)
    assert all(e["length"] == episode_length for e in episodes)
    assert sorted(e["env"] for e in episodes) == sorted(list(range(E)) * (steps // episode_length))


@pytest.mark.parametrize("mode", ["inprocess", "subprocess"])
def test_pettingzoo_vector_env_conformance(mode):
    vec = make_vector_env(make_env_fn("mpe/simple_spread", N=3, max_cycles=5), E, 0, torch.device("cpu"), mode)
    try:
        check_conformance(vec, steps=12, episode_length=5)
    finally:
        vec.close()


@pytest.mark.parametrize("name", ["mpe/simple_tag", "mpe/simple_adversary", "mpe/simple_world_comm", "mpe/simple_push"])
def test_mixed_mpe_envs_conformance(name):
    """The adversarial MPE envs: two kinds of agent with different observation widths (padded
    to the widest; world_comm's leader also has Discrete(20) actions beside Discrete(5))."""
    vec = make_vector_env(make_env_fn(name, max_cycles=5), E, 0, torch.device("cpu"), "inprocess")
    try:
        check_conformance(vec, steps=10, episode_length=5)
        assert len({a.obs_dim for a in vec.spec.agents}) == 2
    finally:
        vec.close()


@pytest.mark.parametrize("mode", ["inprocess", "subprocess"])
def test_image_env_conformance_with_uint8_fields(mode):
    from tests.toy_envs import PixelTeamEnv

    vec = make_vector_env(PixelTeamEnv, E, 0, torch.device("cpu"), mode)
    try:
        assert vec.spec.obs_dtype == np.uint8 and vec.spec.state_dtype == np.uint8
        assert vec.observe("obs").dtype == vec.observe("final_obs").dtype == torch.uint8
        check_conformance(vec, steps=12, episode_length=PixelTeamEnv.max_steps)
    finally:
        vec.close()


@pytest.mark.parametrize("scenario,kwargs", [("vmas/simple_spread", {"max_steps": 5}),
                                             ("vmas/navigation", {"max_steps": 5}),
                                             ("vmas/balance", {"max_steps": 5})])
def test_vmas_adapter_conformance(scenario, kwargs):
    pytest.importorskip("vmas")
    vec = make_vector_env(make_env_fn(scenario, **kwargs), E, 0, torch.device("cpu"))
    assert all(torch.is_tensor(v) for v in vec.arrays.values())  # stays torch, on the device
    check_conformance(vec, steps=12, episode_length=5)


def test_each_vmas_env_keeps_its_own_random_streams():
    """VMAS shares one random state among all its envs in a process; the adapter gives each its own,
    so an env stepped beside others (or after an evaluation env was built) sees the episodes it
    would see alone, and the caller's torch stream is left alone."""
    pytest.importorskip("vmas")
    env_fn = make_env_fn("vmas/simple_spread", max_steps=3)  # resets (random positions) every 3 steps

    def trace(vec, steps, actions):
        out = []
        for t in range(steps):
            vec.set_actions(actions[t])
            vec.step()
            out.append(vec.observe("obs"))
        return out

    alone = make_vector_env(env_fn, 4, 0, torch.device("cpu"))
    actions = [random_actions(alone.spec, alone.observe("action_mask"), torch.Generator().manual_seed(t))
               for t in range(12)]
    expected = trace(alone, 12, actions)
    torch.manual_seed(99)
    caller = torch.get_rng_state()
    first = make_vector_env(env_fn, 4, 0, torch.device("cpu"))
    got = trace(first, 5, actions)
    other = make_vector_env(env_fn, 4, 1, torch.device("cpu"))  # as an evaluation env is built mid-run
    trace(other, 4, actions)
    got += trace(first, 7, actions[5:])
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert torch.equal(torch.get_rng_state(), caller)


def test_a_batched_builder_that_cannot_number_its_envs_gets_a_seed_of_its_own_per_rank():
    pytest.importorskip("vmas")
    env_fn = make_env_fn("vmas/simple_spread", max_steps=3)
    rank1 = make_vector_env(env_fn, 2, 0, torch.device("cpu"), first_index=2).observe("obs")
    seed2 = make_vector_env(env_fn, 2, 2, torch.device("cpu")).observe("obs")  # seed + first_index would replay another seed's envs
    rank0 = make_vector_env(env_fn, 2, 0, torch.device("cpu")).observe("obs")
    assert not torch.equal(rank1, seed2) and not torch.equal(rank1, rank0)
    again = make_vector_env(env_fn, 2, 0, torch.device("cpu"), first_index=2).observe("obs")
    assert torch.equal(rank1, again)  # derived from (seed, first_index): reproducible


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


@pytest.mark.parametrize("mode", ["inprocess", "subprocess"])
def test_sisl_multiwalker_episodes_end_and_reset(mode):
    """Random walkers fall within a few hundred steps; the episode's end (where multiwalker's own
    state() raises) must reset cleanly in both back ends."""
    pytest.importorskip("pettingzoo.sisl")
    env_fn = make_env_fn("sisl/multiwalker", n_walkers=3, max_cycles=500)
    vec = make_vector_env(env_fn, 2, 0, torch.device("cpu"), mode, num_workers=2)
    try:
        generator = torch.Generator().manual_seed(0)
        episodes = []
        for _ in range(500):
            vec.set_actions(random_actions(vec.spec, vec.observe("action_mask"), generator))
            episodes += vec.step()
            if episodes:
                break
        assert episodes and vec.observe("alive").all() and torch.isfinite(vec.observe("state")).all()
    finally:
        vec.close()
