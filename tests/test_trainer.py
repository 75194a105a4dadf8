"""Trainer behaviour: API contract, critic inputs, objectives, checkpoints, determinism, CLI, W&B."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import mappo
from envs import make_env_fn
from tests.helpers import tiny, strip_timing
from tests.toy_envs import (CoordinationEnv, ContinuousEnv, EarlyExitEnv, FailingEnv, HeterogeneousEnv, MaskedEnv,
                            TextObsEnv)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORY_KEYS = {"iteration", "env_steps", "sps", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                "kl_coef", "explained_variance", "lr"}




def test_history_and_evaluate_contract():
    with mappo.Trainer(CoordinationEnv, tiny()) as trainer:
        history = trainer.train()
        assert len(history) == 5  # 200 steps / (2 envs x 20 steps)
        for row in history:
            assert HISTORY_KEYS <= set(row)
        assert [r["env_steps"] for r in history] == [40, 80, 120, 160, 200]
        assert "team_return" in history[-1]  # 10-step episodes end every iteration
        stats = trainer.evaluate(episodes=3)
    assert {"team_return_mean", "return_mean", "episode_length_mean"} <= set(stats)
    assert stats["episode_length_mean"] == 10
    assert set(stats["return_mean"]) == {"agent_0", "agent_1"}
    # shared reward: the team return is the sum of the per-agent returns
    assert stats["team_return_mean"] == pytest.approx(sum(stats["return_mean"].values()))


@pytest.mark.parametrize("critic_input", ["state", "concat_obs", "local", "agent_specific"])
@pytest.mark.parametrize("sharing", ["shared", "separate"])
def test_critic_inputs_and_sharing_run(critic_input, sharing):
    with mappo.Trainer(HeterogeneousEnv, tiny(critic_input=critic_input, parameter_sharing=sharing)) as trainer:
        history = trainer.train()
    assert all(math.isfinite(r["value_loss"]) for r in history)


def test_critic_input_widths():
    from mappo.networks import critic_dim

    for env_cls, state_dim in ((HeterogeneousEnv, 3), (CoordinationEnv, 0)):
        with mappo.Trainer(env_cls, tiny()) as t:
            spec = t.spec
            assert spec.state_dim == state_dim  # CoordinationEnv.state() raises NotImplementedError
            assert critic_dim(spec, "state") == (state_dim or spec.obs_dim * spec.num_agents)
            assert critic_dim(spec, "concat_obs") == spec.obs_dim * spec.num_agents
            assert critic_dim(spec, "local") == spec.obs_dim
            assert critic_dim(spec, "agent_specific") == (state_dim or spec.obs_dim * spec.num_agents) + spec.obs_dim


def test_shared_networks_get_agent_id_and_separate_networks_do_not():
    with mappo.Trainer(CoordinationEnv, tiny(parameter_sharing="shared")) as t:
        assert t.actor.net.body[0].weight().shape == (1, 3 + 2, 16)
    with mappo.Trainer(CoordinationEnv, tiny(parameter_sharing="separate")) as t:
        assert t.actor.net.body[0].weight().shape == (2, 3, 16)


@pytest.mark.parametrize("objective", ["kl", "clip_kl"])
def test_kl_objectives_adapt_beta(objective):
    cfg = tiny(objective=objective, kl_coef=1.0, target_kl=0.01, total_steps=400)
    with mappo.Trainer(CoordinationEnv, cfg) as trainer:
        history = trainer.train()
    betas = [r["kl_coef"] for r in history]
    assert betas[0] == 1.0
    for prev, row in zip(history, history[1:]):
        kl = prev["approx_kl"]
        expected = prev["kl_coef"] / 2 if kl < 0.01 / 1.5 else prev["kl_coef"] * 2 if kl > 0.015 else prev["kl_coef"]
        assert row["kl_coef"] == pytest.approx(expected)


def test_clip_objective_keeps_beta_fixed():
    with mappo.Trainer(CoordinationEnv, tiny(objective="clip")) as trainer:
        assert {r["kl_coef"] for r in trainer.train()} == {1.0}


def test_same_seed_same_history_on_cpu():
    runs = []
    for _ in range(2):
        with mappo.Trainer(HeterogeneousEnv, tiny(total_steps=120)) as t:
            runs.append(strip_timing(t.train()))
    assert runs[0] == runs[1]
    with mappo.Trainer(HeterogeneousEnv, tiny(total_steps=120, seed=1)) as t:
        assert strip_timing(t.train()) != runs[0]


def test_policy_act_gives_valid_actions_for_each_agent_space():
    for env_cls in (HeterogeneousEnv, ContinuousEnv, MaskedEnv):
        with mappo.Trainer(env_cls, tiny()) as trainer:
            env = env_cls()
            obs, infos = env.reset(seed=5)
            for _ in range(5):
                for deterministic in (True, False):
                    actions = trainer.policy.act(obs, deterministic=deterministic, infos=infos)
                    assert set(actions) == set(env.agents)
                    for agent, action in actions.items():
                        space = env.action_space(agent)
                        assert space.contains(action if np.isscalar(action) else np.asarray(action, space.dtype))
                obs, _, _, _, infos = env.step(actions)  # MaskedEnv raises on a masked action


def test_save_and_load_round_trip(tmp_path):
    path = str(tmp_path / "x" / "ckpt.pt")
    with mappo.Trainer(HeterogeneousEnv, tiny()) as trainer:
        trainer.train()
        trainer.save(path)
        obs, _ = HeterogeneousEnv().reset(seed=1)
        before = trainer.policy.act(obs, deterministic=True)
        env_steps = trainer.env_steps
    loaded = mappo.Trainer.load(path, HeterogeneousEnv)
    after = loaded.policy.act(obs, deterministic=True)
    assert {k: np.asarray(v).tolist() for k, v in before.items()} == {k: np.asarray(v).tolist() for k, v in after.items()}
    assert loaded.env_steps == env_steps and loaded.cfg == trainer.cfg
    payload = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert {"actor", "critic", "units", "config", "env_steps"} <= set(payload)
    assert not any(name.startswith(".ckpt-") for name in os.listdir(tmp_path / "x"))  # temp file renamed away


def test_aec_env_is_converted():
    from mpe2 import simple_spread_v3

    with mappo.Trainer(lambda: simple_spread_v3.env(N=2, max_cycles=5), tiny(total_steps=40)) as t:
        assert t.spec.names == ["agent_0", "agent_1"]
        t.train()


def test_unsupported_space_names_agent_and_space():
    with pytest.raises(TypeError, match=r"agent 'agent_0'.*Text"):
        mappo.Trainer(TextObsEnv, tiny())


def test_dead_agents_get_no_action_and_zero_input():
    from mappo.vector import make_vector_env

    vec = make_vector_env(EarlyExitEnv, 2, 0, torch.device("cpu"), "inprocess")
    try:
        for t in range(12):
            vec.arrays["actions"][:] = 0.0
            vec.step()  # EarlyExitEnv raises if an action is sent for the departed scout
            alive = vec.arrays["alive"]
            if t in (2, 3, 4):  # the scout left at step 3 (t=2) and stays gone until the reset
                assert not alive[:, 0].any() and alive[:, 1:].all()
                assert np.all(vec.arrays["obs"][:, 0] == 0)
            if t == 2:
                assert vec.arrays["terminated"][:, 0].all() and not vec.arrays["truncated"][:, 0].any()
            if t == 9:  # episode end: the others truncate, everyone is back after the auto-reset
                assert vec.arrays["truncated"][:, 1:].all() and vec.arrays["env_done"].all()
                assert alive.all()
    finally:
        vec.close()


def test_env_seeds_are_independent_across_run_seeds_and_continue_across_ranks():
    from mappo.vector import make_vector_env

    def first_obs(seed, n, first_index=0):
        vec = make_vector_env(HeterogeneousEnv, n, seed, torch.device("cpu"), "inprocess", first_index=first_index)
        obs = vec.arrays["obs"].copy()
        vec.close()
        return obs

    run0, run1 = first_obs(0, 4), first_obs(1, 4)
    for i in range(4):
        for j in range(4):  # with "seed + i", run 1's env 0 would replay run 0's env 1
            assert not np.array_equal(run1[i], run0[j])
    # rank 1 of a 2-rank job (envs numbered from 4) sees what envs 4..7 of one process see
    np.testing.assert_array_equal(first_obs(0, 4, first_index=4), first_obs(0, 8)[4:])


def test_subprocess_matches_inprocess_and_errors_surface():
    from mappo.vector import make_vector_env

    trajectories = []
    for mode in ("inprocess", "subprocess"):
        vec = make_vector_env(HeterogeneousEnv, 3, 7, torch.device("cpu"), mode, num_workers=2)
        rng = np.random.default_rng(0)
        obs = []
        try:
            for _ in range(25):
                vec.arrays["actions"][:] = rng.integers(0, 2, size=vec.arrays["actions"].shape)
                vec.step()
                obs.append((vec.arrays["obs"].copy(), vec.arrays["reward"].copy(), vec.arrays["alive"].copy()))
        finally:
            vec.close()
        trajectories.append(obs)
    for a, b in zip(*trajectories):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)

    vec = make_vector_env(FailingEnv, 3, 0, torch.device("cpu"), "subprocess", num_workers=2)
    procs = list(vec.backend.procs)
    with pytest.raises(RuntimeError, match=r"env 'tests.toy_envs:FailingEnv', copy \d: its step raised RuntimeError: "
                                           r"boom from FailingEnv"):
        for _ in range(10):
            vec.step()
    for p in procs:
        p.join(timeout=5)
        assert not p.is_alive()


def test_cli_writes_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "mappo", "train", os.path.join(ROOT, "configs", "mpe_simple_spread.yaml"),
           "total_steps=400", "num_envs=2", "rollout_length=100", "ppo_epochs=1", f"run_dir={run_dir}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert {"config.yaml", "metrics.jsonl", "ckpt.pt"} <= set(os.listdir(run_dir))
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert len(rows) == 2 and all(HISTORY_KEYS <= set(r) for r in rows)
    resolved = mappo.Config.from_yaml(str(run_dir / "config.yaml"))
    assert resolved.total_steps == 400 and resolved.env == "mpe/simple_spread"
    evaluation = subprocess.run([sys.executable, "-m", "mappo", "eval", str(run_dir), "--episodes", "2"], cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
    assert evaluation.returncode == 0, evaluation.stderr
    assert json.loads(evaluation.stdout)["episode_length_mean"] == 25
    bad = subprocess.run([sys.executable, "-m", "mappo", "train", os.path.join(ROOT, "configs", "mpe_simple_spread.yaml"),
                          "lr=-1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "'lr'" in bad.stderr


def test_wandb_offline_logs_config_and_history(tmp_path, monkeypatch):
    import wandb
    from wandb.sdk.wandb_run import Run

    monkeypatch.setenv("WANDB_SILENT", "true")
    logged, configs = [], []
    real_log = Run.log

    def spy_log(self, data, *args, **kwargs):  # record, then let wandb really write the offline run
        logged.append(dict(data))
        configs.append(dict(self.config))
        return real_log(self, data, *args, **kwargs)

    monkeypatch.setattr(Run, "log", spy_log)
    cfg = tiny(wandb=True, wandb_mode="offline", run_dir=str(tmp_path / "run"))
    with mappo.Trainer(CoordinationEnv, cfg) as t:
        history = t.train()
    assert wandb.run is None  # finished
    runs = [d for d in (tmp_path / "run" / "wandb").iterdir() if d.name.startswith("offline-run")]
    assert len(runs) == 1 and any(f.suffix == ".wandb" and f.stat().st_size > 0 for f in runs[0].iterdir())
    logged = [d for d in logged if "iteration" in d]  # the rest: the end-of-run eval video
    assert len(logged) == len(history)
    for row, sent in zip(history, logged):
        assert HISTORY_KEYS <= set(sent)
        assert sent["env_steps"] == row["env_steps"] and sent["value_loss"] == row["value_loss"]
    assert configs[0]["parameter_sharing"] == "shared" and configs[0]["total_steps"] == 200


def test_registry_names_and_user_callables():
    fn = make_env_fn("tests.toy_envs:CoordinationEnv")
    assert fn().possible_agents == ["agent_0", "agent_1"]
    with pytest.raises(ValueError, match="unknown env"):
        make_env_fn("nope/nothing")
    with pytest.raises(ValueError, match="has no attribute"):
        make_env_fn("tests.toy_envs:Missing")
    assert make_env_fn("mpe/simple_spread", N=2)().possible_agents == ["agent_0", "agent_1"]


def test_batched_evaluation_counts_the_first_episode_of_each_env():
    from tests.toy_envs import uneven_batched_env

    with mappo.Trainer(uneven_batched_env(), tiny(num_envs=2)) as trainer:
        stats = trainer.evaluate(episodes=8)
    assert stats["episodes"] == 8
    # one episode per env: env 0's -2 and seven envs' -50; env 0 alone would give -2
    assert stats["team_return_mean"] == pytest.approx((-2 - 7 * 50) / 8)
    assert stats["episode_length_mean"] == pytest.approx((2 + 7 * 50) / 8)


@pytest.mark.parametrize("name", ["groups_recurrent", "separate_gaussian"])
def test_a_format_4_checkpoint_resumes_as_the_version_that_wrote_it_did(name):
    """tests/data/format4_*.pt were written by the mappo version whose weight sets were one packed
    parameter per layer under one Adam per network (format 4), after one iteration of
    ``tiny(total_steps=80, ...)``; format4_expected.json holds the iteration that version trained
    next from them.  Loaded now, each weight set gets its own parameter and its unit's Adam its
    slice of the packed moments, and the next iteration's numbers are the same."""
    from tests.toy_envs import ContinuousEnv, TwoKindsEnv

    data = os.path.join(os.path.dirname(__file__), "data")
    with open(os.path.join(data, "format4_expected.json")) as f:
        expected = json.load(f)[name]
    env = {"groups_recurrent": TwoKindsEnv, "separate_gaussian": ContinuousEnv}[name]
    with mappo.Trainer.load(os.path.join(data, f"format4_{name}.pt"), env) as trainer:
        assert trainer.env_steps == 40
        got = strip_timing(trainer.train())
    assert len(got) == len(expected) == 1 and set(got[0]) == set(expected[0])
    for key, value in expected[0].items():
        assert got[0][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_checkpoints_of_the_previous_format_load_and_older_ones_say_what_they_are(tmp_path):
    with mappo.Trainer(EarlyExitEnv, tiny(total_steps=40)) as trainer:
        trainer.train()
        payload = trainer.state_dict()
    # format 3 (before the learner module): no best_eval, a team layout of five keys
    old = {k: v for k, v in payload.items() if k != "best_eval"}
    old.update(format=3, team={k: payload["team"][k] for k in ("agents", "obs_dim", "state_dim", "num_logits",
                                                                 "action_width")})
    torch.save(old, tmp_path / "v3.pt")
    with mappo.Trainer.load(str(tmp_path / "v3.pt"), EarlyExitEnv) as trainer:
        assert trainer.env_steps == 40 and trainer.best_eval is None
    torch.save({**payload, "format": 2}, tmp_path / "v2.pt")
    with pytest.raises(ValueError, match="format-2 checkpoint; this version of mappo reads formats 3 to 5"):
        mappo.Trainer.load(str(tmp_path / "v2.pt"), EarlyExitEnv)


def test_training_past_the_configured_budget_keeps_a_linear_schedule_learning():
    with mappo.Trainer(CoordinationEnv, tiny(total_steps=80, lr_schedule="linear")) as trainer:
        trainer.train()
        more = trainer.train(total_steps=160)  # the budget grows: the schedule decays to the new end
        assert trainer.cfg.total_steps == 160
    assert [r["lr"] for r in more] == pytest.approx([5e-4 * (1 - 80 / 160), 5e-4 * (1 - 120 / 160)])


def test_a_loaded_trainer_saved_before_training_keeps_its_resume_state(tmp_path):
    run_dir = str(tmp_path / "run")
    with mappo.Trainer(EarlyExitEnv, tiny(total_steps=80, run_dir=run_dir)) as trainer:
        trainer.train()
    with mappo.Trainer.load(os.path.join(run_dir, "ckpt.pt"), EarlyExitEnv) as trainer:
        trainer.save(str(tmp_path / "again.pt"))
    original = torch.load(os.path.join(run_dir, "ckpt.pt"), weights_only=True)["resume"]
    again = torch.load(str(tmp_path / "again.pt"), weights_only=True)["resume"]
    assert again is not None and torch.equal(again[0]["episode"], original[0]["episode"])
    assert torch.equal(again[0]["rng"]["torch"], original[0]["rng"]["torch"])
    # a loaded run keeps its seed: another would mix two runs' episode and sampling streams
    with pytest.raises(ValueError, match=r"was trained with seed=0; these fields shape .* random streams"):
        mappo.Trainer.load(os.path.join(run_dir, "ckpt.pt"), EarlyExitEnv, seed=5)


def test_cross_play_against_another_run_leaves_the_training_rng_alone(tmp_path):
    from tests.toy_envs import TwoTeamEnv

    teams = {"red": ["red_*"], "blue": ["blue_*"]}
    other = str(tmp_path / "other")
    with mappo.Trainer(TwoTeamEnv, tiny(groups=teams, total_steps=40, run_dir=other)) as trainer:
        trainer.train()
    with mappo.Trainer(TwoTeamEnv, tiny(groups=teams, total_steps=40)) as trainer:
        before = torch.get_rng_state()
        trainer.evaluate(episodes=2, deterministic=False, policies={"blue": other})
        assert torch.equal(torch.get_rng_state(), before)


def test_the_largest_seed_trains_and_evaluates():
    """Derived seeds (the evaluation's, another rank's) stay below 2**32, which numpy (and VMAS,
    which seeds numpy) requires."""
    pytest.importorskip("vmas")
    cfg = tiny(seed=2**32 - 1, num_envs=4, rollout_length=5, total_steps=20)
    with mappo.Trainer(make_env_fn("vmas/simple_spread", max_steps=5), cfg) as trainer:
        trainer.train()
        assert trainer.eval_seed == (2**32 - 1 + 1_000_003) % 2**32
        assert trainer.evaluate(episodes=2)["episodes"] == 2
