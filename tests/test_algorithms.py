"""The contract every registered algorithm keeps (mappo/algorithm.py ALGORITHMS): train, evaluate,
save and load, exact resume, export, agent groups and recurrent policies.  Parametrised over the
registry, so an algorithm is covered the day it is registered.  Every agent has its own actor
(``parameter_sharing=separate``) or its group's, which every algorithm of the PPO family takes."""
import math
import os

import numpy as np
import pytest
import torch

import mappo
from mappo.algorithm import ALGORITHMS, Learner, learner_class
from tests.helpers import straight_and_resumed, tiny
from tests.toy_envs import EarlyExitEnv, HeterogeneousEnv, TwoTeamEnv

ALGORITHM_NAMES = sorted(ALGORITHMS)


@pytest.mark.parametrize("algorithm", ALGORITHM_NAMES)
def test_the_learner_has_the_protocols_surface(algorithm):
    cls = learner_class(algorithm)
    for name in ("set_lr_fraction", "compute_values", "update", "state_dict", "load_state_dict"):
        assert callable(getattr(cls, name, None)), name
    assert isinstance(cls.shaping_fields, tuple) and "parameter_sharing" in cls.shaping_fields
    with mappo.Trainer(HeterogeneousEnv, tiny(algorithm=algorithm, parameter_sharing="separate")) as trainer:
        assert isinstance(trainer.learner, Learner)  # the runtime-checkable parts: attributes and methods
        trainer.learner.set_lr_fraction(0.5)
        assert trainer.learner.learning_rate == pytest.approx(0.5 * trainer.cfg.lr)


@pytest.mark.parametrize("algorithm", ALGORITHM_NAMES)
def test_trains_evaluates_saves_loads_and_exports(algorithm, tmp_path):
    from mappo.export import export_actor

    cfg = tiny(algorithm=algorithm, parameter_sharing="separate", total_steps=80)
    with mappo.Trainer(HeterogeneousEnv, cfg) as trainer:
        history = trainer.train()
        assert [row["env_steps"] for row in history] == [40, 80]
        assert all(math.isfinite(row[k]) for row in history for k in ("policy_loss", "value_loss", "entropy", "lr"))
        evaluation = trainer.evaluate(episodes=3)
        path = str(tmp_path / "ckpt.pt")
        trainer.save(path)
        env = HeterogeneousEnv()
        obs, _ = env.reset(seed=3)
        before = trainer.policy.act(obs, deterministic=True)
        exported = export_actor(trainer.actor, trainer.spec, str(tmp_path / "actor.pt"))
    assert math.isfinite(evaluation["team_return_mean"])
    with mappo.Trainer.load(path, HeterogeneousEnv) as loaded:
        assert loaded.cfg.algorithm == algorithm and loaded.env_steps == 80
        after = loaded.policy.act(obs, deterministic=True)
    assert {a: np.asarray(v).tolist() for a, v in before.items()} == {a: np.asarray(v).tolist() for a, v in after.items()}
    assert os.path.getsize(exported) > 0 and os.path.exists(exported + ".json")
    assert torch.jit.load(exported) is not None


@pytest.mark.parametrize("algorithm", ALGORITHM_NAMES)
@pytest.mark.parametrize("features", [
    {"groups": {"scouts": ["scout"], "agents": ["agent_*"]}, "parameter_sharing": "shared"},
    {"parameter_sharing": "separate", "recurrent": True, "chunk_length": 5, "objective": "clip_kl"},
], ids=["groups", "recurrent"])
def test_resumes_exactly(algorithm, features, tmp_path):
    cfg = tiny(algorithm=algorithm, total_steps=120, **features)
    straight, resumed = straight_and_resumed(EarlyExitEnv, cfg, str(tmp_path / "run"), first_steps=80)
    assert resumed == straight and len(straight) == 3


@pytest.mark.parametrize("algorithm", ALGORITHM_NAMES)
def test_groups_keep_their_own_units_and_metrics(algorithm):
    groups = {"red": ["red_*"], "blue": ["blue_0"]}
    with mappo.Trainer(TwoTeamEnv, tiny(algorithm=algorithm, groups=groups, total_steps=80)) as trainer:
        history = trainer.train()
        learner = trainer.learner
        assert [u.name for u in learner.critic_units] == ["red", "blue"]
        params = [id(p) for u in learner.actor_units + learner.critic_units for p in u.params]
        assert len(params) == len(set(params)) == len(learner._params())  # every parameter in exactly one unit
        evaluation = trainer.evaluate(episodes=2)
    assert {"red/team_return", "blue/team_return", "red/value_loss", "blue/value_loss"} <= set(history[-1])
    assert set(evaluation["group_return_mean"]) == {"red", "blue"}
    with pytest.raises(ValueError, match="config field 'algorithm' must be one of"):
        mappo.Trainer(TwoTeamEnv, tiny(algorithm="nope"))
    with pytest.raises(ValueError, match=f"'algorithm_options': algorithm '{algorithm}' takes"):
        mappo.Trainer(TwoTeamEnv, tiny(algorithm=algorithm, groups=groups, algorithm_options={"no_such_option": 1}))
