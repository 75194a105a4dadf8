"""The benchmark env families: LBF and RWARE adapters, the matrix games, MPE's EPyMARL accounting.

Each adapter is checked as a PettingZoo ParallelEnv (parallel_api_test) and for what the
benchmark relies on: the time limit as truncation, real ends as termination, action masks,
seeding, state, and clear errors for unknown ids."""
import numpy as np
import pytest
import torch
from pettingzoo.test import parallel_api_test

from envs import make_env_fn
from mappo.vector import make_vector_env
from tests.test_conformance import check_conformance

lbforaging = pytest.importorskip("lbforaging")
rware = pytest.importorskip("rware")


@pytest.mark.parametrize("name", ["lbf/Foraging-8x8-2p-2f-coop-v3", "lbf/Foraging-10x10-3p-3f-v3",
                                  "rware/rware-tiny-2ag-v2", "matrix/climbing", "matrix/penalty"])
def test_parallel_api(name):
    parallel_api_test(make_env_fn(name)(), num_cycles=200)


def _random_episode(env, rng):
    """Play one episode with uniformly random *valid* actions; returns (steps, team return, last terms, truncs)."""
    obs, infos = env.reset(seed=int(rng.integers(1 << 30)))
    total, steps = 0.0, 0
    while env.agents:
        actions = {}
        for a in env.agents:
            mask = infos[a].get("action_mask")
            valid = np.flatnonzero(mask) if mask is not None else np.arange(env.action_space(a).n)
            actions[a] = int(rng.choice(valid))
        obs, rewards, terms, truncs, infos = env.step(actions)
        total += sum(rewards.values())
        steps += 1
    return steps, total, terms, truncs


def test_lbf_time_limit_is_truncation_and_an_empty_field_is_termination():
    env = make_env_fn("lbf/Foraging-5x5-2p-1f-v3")()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        steps, total, terms, truncs = _random_episode(env, rng)
        if steps < 50:  # ended early: every food was eaten, a real end; the normalised team sum is 1
            assert all(terms.values()) and not any(truncs.values())
            assert total == pytest.approx(1.0)
            seen.add("terminated")
        else:  # cut by max_episode_steps=50: a time limit, bootstrapped by the learner
            assert all(truncs.values()) and not any(terms.values())
            assert total < 1.0
            seen.add("truncated")
    assert seen == {"terminated", "truncated"}


def test_lbf_masks_are_the_valid_actions():
    env = make_env_fn("lbf/Foraging-8x8-2p-2f-v3")()
    obs, infos = env.reset(seed=1)
    rng = np.random.default_rng(1)
    loads = 0
    for _ in range(40):
        raw = env.env  # the lbforaging env
        for i, (agent, player) in enumerate(zip(env.possible_agents, raw.players)):
            mask = infos[agent]["action_mask"]
            assert mask.dtype == bool and mask.shape == (6,) and mask[0]  # NONE is always valid
            assert mask[5] == (raw.adjacent_food(*player.position) > 0)  # LOAD only next to food
            assert set(np.flatnonzero(mask)) == {a.value for a in raw._valid_actions[player]}
            loads += mask[5]
        if not env.agents:
            obs, infos = env.reset()
        else:
            obs, _, _, _, infos = env.step({a: int(rng.choice(np.flatnonzero(infos[a]["action_mask"])))
                                           for a in env.agents})
    assert loads > 0  # the LOAD case was exercised


@pytest.mark.parametrize("name", ["lbf/Foraging-8x8-2p-2f-coop-v3", "rware/rware-tiny-2ag-v2"])
def test_seeding_and_state(name):
    env = make_env_fn(name)()
    first, _ = env.reset(seed=7)
    again, _ = env.reset(seed=7)
    other, _ = env.reset(seed=8)
    assert all(np.array_equal(first[a], again[a]) for a in first)
    assert not all(np.array_equal(first[a], other[a]) for a in first)
    env.reset(seed=7)
    assert np.array_equal(env.state(), np.concatenate([first[a] for a in env.possible_agents]))
    assert env.state().shape == env.state_space.shape


def test_rware_episode_is_truncated_at_max_steps():
    env = make_env_fn("rware/rware-tiny-2ag-v2", max_steps=30)()
    steps, _, terms, truncs = _random_episode(env, np.random.default_rng(0))
    assert steps == 30 and all(truncs.values()) and not any(terms.values())


@pytest.mark.parametrize("name,fragment", [("lbf/Foraging-9x9-nope-v3", "Foraging-10x10-2p-1f-coop-v3"),
                                           ("rware/rware-huge-2ag-v2", "did you mean rware-")])
def test_unknown_id_names_it_and_the_known_ids(name, fragment):
    with pytest.raises(ValueError) as err:
        make_env_fn(name)()
    assert repr(name.split("/", 1)[1]) in str(err.value) and fragment in str(err.value)


def test_kwargs_pass_through():
    env = make_env_fn("lbf/Foraging-8x8-2p-2f-v3", max_num_food=5, max_episode_steps=7)()
    obs, _ = env.reset(seed=0)
    assert obs["agent_0"].shape == (3 * 5 + 3 * 2,)  # (y, x, level) per food, then per agent
    steps, *_ = _random_episode(env, np.random.default_rng(0))
    assert steps <= 7


def test_matrix_games_pay_the_common_payoff_for_25_steps():
    env = make_env_fn("matrix/climbing")()
    env.reset(seed=0)
    total = {a: 0.0 for a in env.possible_agents}
    for t in range(25):
        _, rewards, terms, truncs, _ = env.step({"agent_0": 1, "agent_1": 1})
        assert rewards == {"agent_0": 7.0, "agent_1": 7.0}
        for a in rewards:
            total[a] += rewards[a]
        assert all(truncs.values()) == (t == 24) and not any(terms.values())
    assert total["agent_0"] == 175.0 and not env.agents  # EPyMARL's 175 = 25 x 7
    env.reset()
    assert env.step({"agent_0": 0, "agent_1": 0})[1]["agent_0"] == 11.0  # the optimum, 275 per episode
    assert env.step({"agent_0": 0, "agent_1": 1})[1]["agent_1"] == -30.0
    pen = make_env_fn("matrix/penalty", k=50)()
    pen.reset()
    assert [pen.step({"agent_0": a, "agent_1": b})[1]["agent_0"] for a, b in [(0, 0), (0, 2), (1, 1), (2, 2)]] == \
        [-50.0, 10.0, 2.0, -50.0]
    with pytest.raises(ValueError, match="k is the miscoordination cost"):
        make_env_fn("matrix/penalty", k=-1)()


@pytest.mark.parametrize("name,kwargs", [("lbf/Foraging-19x19-2p-4f-v3", {"max_episode_steps": 5}),
                                         ("rware/rware-tiny-2ag-v2", {"max_steps": 5})])
def test_vector_env_conformance(name, kwargs):
    """Through the framework's vector env: shapes, dtypes, truncation at the limit, resets.  (LBF on a
    field too big for a random policy to clear in 5 steps; the matrix games' constant observations
    cannot show a reset, and parallel_api_test covers them.)"""
    vec = make_vector_env(make_env_fn(name, **kwargs), 3, 0, torch.device("cpu"), "inprocess")
    try:
        check_conformance(vec, steps=12, episode_length=5)
    finally:
        vec.close()


# --- MPE: EPyMARL's reward accounting -------------------------------------------------------------


def _original_mpe_spread_reward(world) -> float:
    """The original MPE simple_spread (semitable/multiagent-particle-envs, as EPyMARL ran it): each
    agent scores -sum_l min_a dist(a, l) minus one per agent it collides with, *itself included*,
    and the collaborative world gives every agent the sum over agents."""
    total = 0.0
    for agent in world.agents:
        r = -sum(min(np.linalg.norm(a.state.p_pos - lm.state.p_pos) for a in world.agents) for lm in world.landmarks)
        r -= sum(np.linalg.norm(a.state.p_pos - agent.state.p_pos) < a.size + agent.size for a in world.agents)
        total += r
    return total


def _original_speaker_listener_reward(world) -> float:
    a = world.agents[0]  # every agent scores -|goal_a - goal_b|^2; the shared reward sums both
    return -2.0 * float(np.sum(np.square(a.goal_a.state.p_pos - a.goal_b.state.p_pos)))


@pytest.mark.parametrize("name,original", [("mpe/simple_spread", _original_mpe_spread_reward),
                                           ("mpe/simple_speaker_listener", _original_speaker_listener_reward)])
def test_epymarl_accounting_matches_the_original_mpe_reward(name, original):
    plain = make_env_fn(name)()
    paper = make_env_fn(name, accounting="epymarl")()
    rng = np.random.default_rng(0)
    collisions = 0
    for episode in range(4):
        plain.reset(seed=episode)
        paper.reset(seed=episode)
        while paper.agents:
            actions = {a: int(rng.integers(paper.action_space(a).n)) for a in paper.agents}
            _, r_plain, *_ = plain.step(actions)
            _, r_paper, *_ = paper.step(actions)
            world = paper.unwrapped.world
            expected = original(world)
            assert all(v == pytest.approx(expected, abs=1e-9) for v in r_paper.values())  # shared by all
            if name.endswith("spread"):  # the relation itself: shared = 2 x sum of mpe2's rewards - N
                assert expected == pytest.approx(2 * sum(r_plain.values()) - 3, abs=1e-9)
                collisions += sum(np.linalg.norm(a.state.p_pos - b.state.p_pos) < a.size + b.size
                                  for i, a in enumerate(world.agents) for b in world.agents[i + 1:])
            else:
                assert expected == pytest.approx(sum(r_plain.values()), abs=1e-9)
    if name.endswith("spread"):
        assert collisions > 0  # the collision term was exercised


def test_epymarl_accounting_needs_local_ratio_one_half_and_a_known_name():
    with pytest.raises(ValueError, match="local_ratio=0.5"):
        make_env_fn("mpe/simple_spread", accounting="epymarl", local_ratio=0.3)()
    with pytest.raises(ValueError, match="accounting must be one of"):
        make_env_fn("mpe/simple_spread", accounting="paper")()
    with pytest.raises(ValueError, match="defined for mpe/simple_spread"):
        make_env_fn("mpe/simple_reference", accounting="epymarl")()


@pytest.mark.slow
def test_mappo_learns_a_small_lbf_task_far_above_random():
    """Foraging-5x5-2p-1f-coop: both agents must load the one food together.  Random valid actions
    collect it in about 5% of the episodes; 12k steps of MAPPO (about 12 s) collect it in most."""
    import mappo

    env_fn = make_env_fn("lbf/Foraging-5x5-2p-1f-coop-v3")
    rng = np.random.default_rng(0)
    random_return = np.mean([_random_episode(env_fn(), rng)[1] for _ in range(200)])
    assert random_return < 0.15
    cfg = mappo.Config(env="lbf/Foraging-5x5-2p-1f-coop-v3", total_steps=12_000, num_envs=8, rollout_length=50,
                       hidden_sizes=[64, 64], gamma=0.99, lr=1e-3, input_norm=True, vector_mode="inprocess",
                       seed=0, progress=False)
    with mappo.Trainer(env_fn, cfg) as trainer:
        trainer.train()
        learned = trainer.evaluate(episodes=100, deterministic=False)["team_return_mean"]
    assert learned > 0.6, (learned, random_return)


def test_family_names_are_registry_names_not_code(tmp_path):
    """A checkpoint of ``lbf/<id>`` is evaluated and resumed without --trust-env-code (the resume
    of a stopped benchmark run depends on it); a ':' still marks code."""
    import mappo
    from envs import is_registered
    from mappo.cli import main

    assert is_registered("lbf/Foraging-5x5-2p-1f-v3") and is_registered("rware/rware-tiny-2ag-v2")
    assert is_registered("matrix/climbing") and not is_registered("lbf/") and not is_registered("my.mod:make")
    assert not is_registered("lbf/x:y")
    cfg = mappo.Config(env="lbf/Foraging-5x5-2p-1f-v3", num_envs=2, rollout_length=10, total_steps=20, ppo_epochs=1,
                       vector_mode="inprocess", progress=False)
    with mappo.Trainer(make_env_fn(cfg.env), cfg) as trainer:
        trainer.train(run_dir=str(tmp_path / "run"))
    assert main(["eval", str(tmp_path / "run"), "--episodes", "1"]) == 0
    assert main(["train", "--resume", str(tmp_path / "run"), "total_steps=40"]) == 0


def test_lbf_food_rule_epymarl_draws_food_levels_as_lbforaging_1():
    """lbforaging 2.0 draws a food's level up to the sum of the three players' levels, inclusive;
    1.x (EPyMARL's paper) excluded the sum, so with three players a food needing all three is rare."""
    def foods(rule):
        env = make_env_fn("lbf/Foraging-10x10-3p-3f-v3", food_rule=rule)()
        out = []
        for seed in range(200):
            env.reset(seed=seed)
            levels = sorted(p.level for p in env.env.players)
            out += [(int(level), sum(levels), levels[1] + levels[2]) for level in env.env.field[env.env.field > 0]]
        return out

    new, old = foods("lbforaging2"), foods("epymarl")
    assert len(new) == len(old) == 600
    assert all(1 <= f <= total for f, total, _ in new) and sum(f == total for f, total, _ in new) > 100
    assert all(1 <= f < total for f, total, _ in old)  # never the sum itself
    need_all = lambda fs: sum(f > two for f, _, two in fs) / len(fs)  # noqa: E731  more than the best pair
    assert need_all(new) > 0.2 and need_all(old) < 0.08, (need_all(new), need_all(old))
    with pytest.raises(ValueError, match="food_rule must be one of"):
        make_env_fn("lbf/Foraging-10x10-3p-3f-v3", food_rule="v1")()


@pytest.mark.parametrize("dynamics,moved", [("mpe2", 0.0), ("original", 0.05)])
def test_mpe_dynamics_original_moves_with_the_new_velocity(dynamics, moved):
    """A listener at rest pushing once: the original MPE damps, adds the force (5 x 0.1 s: speed
    0.5) and moves with it (0.5 x 0.1 s = 0.05); mpe2 moves with the old velocity (0) first."""
    env = make_env_fn("mpe/simple_speaker_listener", dynamics=dynamics)()
    env.reset(seed=0)
    listener = env.unwrapped.world.agents[1]
    before = listener.state.p_pos.copy()
    assert not listener.state.p_vel.any()
    env.step({"speaker_0": 0, "listener_0": 1})
    assert np.linalg.norm(listener.state.p_pos - before) == pytest.approx(moved, abs=1e-9)
    assert np.linalg.norm(listener.state.p_vel) == pytest.approx(0.5, abs=1e-9)
    with pytest.raises(ValueError, match="dynamics must be one of"):
        make_env_fn("mpe/simple_spread", dynamics="paper")()
