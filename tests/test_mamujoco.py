"""Multi-agent MuJoCo (envs/mamujoco.py over gymnasium-robotics' mamujoco_v1): the PettingZoo API,
the framework's vector-env contract, seeding and state, the team reward, clear errors for bad
ids, and one short training run of every registered algorithm."""
import numpy as np
import pytest
import torch
from pettingzoo.test import parallel_api_test

import mappo
from envs import make_env_fn
from mappo.algorithm import ALGORITHMS
from mappo.vector import make_vector_env
from tests.helpers import tiny
from tests.test_conformance import check_conformance

pytest.importorskip("gymnasium_robotics")

IDS = ["mamujoco/HalfCheetah-2x3", "mamujoco/Ant-4x2", "mamujoco/Walker2d-2x3"]


@pytest.mark.parametrize("name", IDS)
def test_parallel_api(name):
    parallel_api_test(make_env_fn(name, agent_obsk=0)(), num_cycles=100)


def test_the_ids_factorise_the_robot_and_every_agent_gets_the_team_reward():
    env = make_env_fn("mamujoco/Ant-4x2", agent_obsk=0)()
    obs, _ = env.reset(seed=3)
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2", "agent_3"]
    assert all(env.action_space(a).shape == (2,) for a in env.possible_agents)  # 4 agents x 2 joints
    _, rewards, _, _, _ = env.step({a: env.action_space(a).sample() for a in env.agents})
    assert len(set(rewards.values())) == 1
    cheetah = make_env_fn("mamujoco/HalfCheetah-2x3")()
    assert [cheetah.action_space(a).shape for a in cheetah.possible_agents] == [(3,), (3,)]


def test_seeding_and_state():
    env = make_env_fn("mamujoco/Walker2d-2x3", agent_obsk=0)()
    first, _ = env.reset(seed=7)
    state = env.state()
    again, _ = env.reset(seed=7)
    other, _ = env.reset(seed=8)
    assert all(np.array_equal(first[a], again[a]) for a in first)
    assert not all(np.array_equal(first[a], other[a]) for a in first)
    env.reset(seed=7)
    assert np.array_equal(env.state(), state) and state.shape == (17,)  # the single-agent task's observation


def test_vector_env_conformance():
    """Shapes, dtypes (float64 observations arrive as float32), truncation at a short limit, resets."""
    vec = make_vector_env(make_env_fn("mamujoco/HalfCheetah-2x3", max_episode_steps=5), 3, 0, torch.device("cpu"),
                          "inprocess")
    try:
        check_conformance(vec, steps=12, episode_length=5)
    finally:
        vec.close()


@pytest.mark.parametrize("name,fragment", [("mamujoco/Cheetah-2x3", "a scenario among"),
                                           ("mamujoco/HalfCheetah", "<scenario>-<agent_conf>"),
                                           ("mamujoco/HalfCheetah-5x9", "no '5x9' factorisation of HalfCheetah")])
def test_a_bad_id_names_it(name, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_env_fn(name)()


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_trains_on_it(algorithm):
    cfg = tiny(env="mamujoco/HalfCheetah-2x3", env_kwargs={"agent_obsk": 0, "max_episode_steps": 20},
               algorithm=algorithm, parameter_sharing="separate", total_steps=80)
    with mappo.Trainer(make_env_fn(cfg.env, **cfg.env_kwargs), cfg) as trainer:
        history = trainer.train()
        evaluation = trainer.evaluate(episodes=2)
    assert [row["env_steps"] for row in history] == [40, 80] and np.isfinite(history[-1]["policy_loss"])
    assert evaluation["episodes"] == 2 and np.isfinite(evaluation["team_return_mean"])
