"""The numbers an env's infos report as agents finish: kept per slot by the vector envs, logged
as ``info/<key>`` (per group with several groups) in training rows and evaluations."""
import json

import numpy as np
import pytest
import torch

import mappo
from envs.vmas_adapter import final_info
from mappo.vector import record_info
from tests.helpers import tiny
from tests.toy_envs import InfoEnv

GROUPS = {"scouts": ["scout"], "rest": ["agent_*"]}


def test_record_info_keeps_numeric_scalars_only():
    kept = {}
    record_info(kept, 1, 3, {"steps": 4, "won": True, "score": np.float32(0.5), "zero_d": np.array(2.0),
                             "label": "x", "position": np.zeros(2), "nested": {"a": 1}, 7: 1.0})
    record_info(kept, 0, 3, None)  # an agent without an info dict says nothing
    assert sorted(kept) == ["score", "steps", "won", "zero_d"]
    np.testing.assert_array_equal(kept["steps"], [np.nan, 4.0, np.nan])
    assert kept["won"][1] == 1.0 and kept["score"][1] == 0.5 and kept["zero_d"][1] == 2.0


def test_vmas_final_info_reads_per_env_scalars_at_the_finished_envs():
    infos = [{"hits": torch.tensor([1.0, 2.0, 3.0]), "pos": torch.zeros(3, 2)},
             {"hits": torch.tensor([[4.0], [5.0], [6.0]]), "bonus": torch.tensor([7, 8, 9])}]
    out = final_info(infos, torch.tensor([0, 2]))
    assert sorted(out) == ["bonus", "hits"]  # [E, 2] positions are not a scalar per env
    np.testing.assert_array_equal(out["hits"].numpy(), [[1.0, 4.0], [3.0, 6.0]])
    np.testing.assert_array_equal(out["bonus"].numpy(), [[np.nan, 7.0], [np.nan, 9.0]])


@pytest.mark.parametrize("mode", ["inprocess", "subprocess"])
def test_episodes_carry_each_agents_info_as_it_finished(mode):
    from mappo.spaces import TeamSpec
    from mappo.vector import make_vector_env

    vec = make_vector_env(InfoEnv, 2, 0, torch.device("cpu"), mode, spec=TeamSpec.from_env(InfoEnv()))
    vec.reset()
    episodes = []
    while len(episodes) < 2:
        vec.set_actions(torch.zeros(2, 3, vec.spec.action_width))
        episodes += vec.step()
    vec.close()
    for e in episodes:  # the scout's last info came at its third step, the others' at the tenth
        assert e["info"] == {"early": [1.0, 0.0, 0.0], "steps": [3.0, 10.0, 10.0]}


def test_training_rows_and_evaluations_log_info_means_overall_and_per_group(tmp_path):
    cfg = tiny(groups=GROUPS, eval_every=1, eval_episodes=3, run_dir=str(tmp_path / "run"))
    with mappo.Trainer(InfoEnv, cfg) as trainer:
        history = trainer.train()
    row = history[-1]
    assert row["episodes"] == 4  # 2 envs x 20 steps, 10-step episodes
    # the mean over agents and episodes of the value each agent finished with: (3 + 10 + 10) / 3
    assert np.isclose(row["info/steps"], 23 / 3) and np.isclose(row["info/early"], 1 / 3)
    assert row["scouts/info/steps"] == 3.0 and row["rest/info/steps"] == 10.0
    assert row["scouts/info/early"] == 1.0 and row["rest/info/early"] == 0.0
    assert not any(k.endswith(("label", "position")) for k in row)
    assert np.isclose(row["eval/info/steps_mean"], 23 / 3)
    assert row["eval/scouts/info/steps_mean"] == 3.0 and row["eval/rest/info/steps_mean"] == 10.0
    lines = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    assert np.allclose(lines[-1]["info/steps"], [23 / 3] * 3)  # each episode's mean over its agents
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["scouts/info/steps"] == 3.0


def test_envs_without_numeric_infos_log_no_info_keys():
    from tests.toy_envs import EarlyExitEnv

    with mappo.Trainer(EarlyExitEnv, tiny(eval_every=1, eval_episodes=2)) as trainer:
        row = trainer.train()[-1]
        evaluation = trainer.evaluate(episodes=2)
    assert row["episodes"] > 0 and not any("info/" in k for k in row)
    assert evaluation["info_mean"] == {} and not any(k.startswith("info/") for k in evaluation["per_episode"])


def test_vmas_infos_reach_the_training_rows():
    pytest.importorskip("vmas")
    from envs import make_env_fn

    cfg = tiny(env="vmas/navigation", num_envs=8, rollout_length=5, total_steps=40)
    with mappo.Trainer(make_env_fn("vmas/navigation", max_steps=5), cfg) as trainer:
        row = trainer.train()[-1]
    # navigation's infos hold each agent's per-env positional reward and collision count
    assert row["episodes"] == 8 and {"info/pos_rew", "info/agent_collisions"} <= set(row), sorted(row)
    assert row["info/agent_collisions"] >= 0.0
