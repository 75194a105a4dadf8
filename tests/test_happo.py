"""HAPPO (mappo/happo.py): the factor against hand computations, one unit equal to MAPPO,
one unit's update leaving the others alone, its errors, and training with recurrent policies,
action masks and agents that leave early."""
import math

import pytest
import torch

import mappo
from mappo import loss as L
from tests.helpers import strip_timing, tiny
from tests.toy_envs import CoordinationEnv, EarlyExitEnv, MaskedEnv, SoloEnv, TwoKindsEnv, random_team_return

HAPPO = dict(algorithm="happo", parameter_sharing="separate")
UPDATE_KEYS = ("alive", "action_mask", "actions", "logp", "advantages", "returns", "old_values", "resets", "obs",
               "state")


def collected(trainer):
    trainer._ensure_envs()
    trainer.collect()
    return trainer.learner, trainer.buffer


def test_the_factor_multiplies_each_samples_clipped_surrogate_outside_the_clip():
    # r = (1.5, 1.0, 0.5), A = (1, -1, 2), factor M = (2, 0.5, 1), eps = 0.2:
    # -M min(r A, clip(r) A) = -2 * 1.2, -0.5 * -1, -1 * 1.0
    ratio = torch.tensor([1.5, 1.0, 0.5])
    adv = torch.tensor([1.0, -1.0, 2.0])
    factor = torch.tensor([2.0, 0.5, 1.0])
    loss, info = L.policy_loss(ratio.log(), torch.zeros(3), adv, torch.ones(3, dtype=torch.bool), "clip", 0.2, 0.0,
                               factor=factor)
    assert loss.item() == pytest.approx((-2.4 + 0.5 - 1.0) / 3)
    assert info["clip_fraction"].item() == pytest.approx(2 / 3)  # the diagnostics do not see the factor
    # the KL penalty is not weighted: with M = 0 only beta * KL is left
    kl = (ratio - 1) - ratio.log()
    loss, _ = L.policy_loss(ratio.log(), torch.zeros(3), adv, torch.ones(3, dtype=torch.bool), "clip_kl", 0.2, 3.0,
                            factor=torch.zeros(3))
    assert loss.item() == pytest.approx(3.0 * kl.mean().item())


def test_a_units_ratio_is_the_product_over_its_live_agents_per_env_step():
    with mappo.Trainer(EarlyExitEnv, tiny(**HAPPO)) as trainer:
        learner, buf = collected(trainer)
        learner.targets(buf)
        inputs = learner.network_inputs(buf)
        now = learner.rollout_logp(buf, inputs.get("actor_in"))
        # pretend the rollout's policy differed: agent k's old log-prob lower by 0.1 (k + 1)
        shift = torch.tensor([0.1, 0.2, 0.3])
        buf.logp.copy_(now - shift)
        alive = buf.alive
        for unit, agent in enumerate(trainer.spec.names):
            got = learner.unit_ratio(buf, inputs, unit)
            k = trainer.spec.names.index(agent)
            expected = torch.where(alive[..., k], math.exp(shift[k].item()), 1.0).unsqueeze(-1)
            torch.testing.assert_close(got, expected)
        # and the factor of the third unit in order (0, 1, 2) is the product of the first two
        factor = learner.unit_ratio(buf, inputs, 0) * learner.unit_ratio(buf, inputs, 1)
        both = alive[..., 0] & alive[..., 1]
        assert torch.allclose(factor[both], torch.full_like(factor[both], math.exp(0.3)))
        assert not alive[..., 0].all()  # the scout leaves early: its steps after that count as 1


@pytest.mark.parametrize("env, extra", [(SoloEnv, {}), (SoloEnv, {"recurrent": True, "objective": "clip_kl"}),
                                        (CoordinationEnv, {"parameter_sharing": "shared", "groups": {}})],
                         ids=["one agent", "one agent, recurrent, KL", "two agents, one shared actor, HAPPO refuses"])
def test_with_one_unit_happo_is_mappo(env, extra):
    cfg = tiny(total_steps=120, **{**HAPPO, **extra})
    if env is CoordinationEnv:
        with pytest.raises(ValueError, match="algorithm=happo updates each agent's actor in turn.*separate"):
            mappo.Trainer(env, cfg)
        return
    runs = {}
    for algorithm in ("happo", "ppo"):
        with mappo.Trainer(env, cfg.replace(algorithm=algorithm)) as trainer:
            history = strip_timing(trainer.train())
            weights = torch.cat([p.detach().flatten() for p in trainer.learner._params()])
        runs[algorithm] = history, weights
    (h_happo, w_happo), (h_ppo, w_ppo) = runs["happo"], runs["ppo"]
    assert [sorted(r) for r in h_happo] == [sorted(r) for r in h_ppo]
    for a, b in zip(h_happo, h_ppo):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    torch.testing.assert_close(w_happo, w_ppo, rtol=1e-6, atol=1e-7)


def test_updating_one_unit_leaves_the_others_weights_and_adam_state_untouched():
    with mappo.Trainer(TwoKindsEnv, tiny(**HAPPO)) as trainer:
        trainer.train(total_steps=40)  # every unit has Adam moments now
        learner, buf = collected(trainer)
        learner.targets(buf)
        inputs = {**learner.network_inputs(buf), "factor": torch.ones_like(buf.logp)}

        def snapshot(unit):
            state = [{k: v.clone() for k, v in unit.optimizer.state[p].items()} for p in unit.params
                     if p in unit.optimizer.state]
            return [p.detach().clone() for p in unit.params], state

        before = [snapshot(u) for u in learner.actor_units + learner.critic_units]
        learner.run_epochs(buf, inputs, units=[2], critic=False)
        after = [snapshot(u) for u in learner.actor_units + learner.critic_units]
        for index, ((w0, s0), (w1, s1)) in enumerate(zip(before, after)):
            same = all(torch.equal(a, b) for a, b in zip(w0, w1)) and all(
                torch.equal(x[k], y[k]) for x, y in zip(s0, s1) for k in x)
            assert same == (index != 2), index  # only unit 2 (pilot_0's actor) moved


def test_each_iteration_draws_a_fresh_order_and_a_resumed_run_draws_the_same(tmp_path):
    from tests.helpers import straight_and_resumed

    cfg = tiny(total_steps=160, **HAPPO)
    straight, resumed = straight_and_resumed(TwoKindsEnv, cfg, str(tmp_path / "run"), first_steps=80)
    assert resumed == straight
    with mappo.Trainer(TwoKindsEnv, cfg) as trainer:
        orders = [torch.randperm(4, generator=trainer.learner.order_rng).tolist() for _ in range(4)]
    assert len({tuple(o) for o in orders}) > 1


@pytest.mark.parametrize("env, extra", [(MaskedEnv, {"recurrent": True, "chunk_length": 5}),
                                        (EarlyExitEnv, {"groups": {"scouts": ["scout"], "agents": ["agent_*"]},
                                                        "parameter_sharing": "shared", "dead_agents": "team"}),
                                        (EarlyExitEnv, {"update_rows": 16, "popart": True, "value_norm": False})],
                         ids=["recurrent, action masks", "groups, agents leaving", "pieces, popart"])
def test_happo_trains_with_every_feature(env, extra):
    with mappo.Trainer(env, tiny(total_steps=120, **{**HAPPO, **extra})) as trainer:
        history = trainer.train()
        evaluation = trainer.evaluate(episodes=2)
    assert len(history) == 3 and all(math.isfinite(row["policy_loss"]) for row in history)
    units = trainer.learner.actor_units
    assert {f"{u.name}/policy_loss" for u in units} <= set(history[-1])
    assert math.isfinite(evaluation["team_return_mean"])


@pytest.mark.slow
@pytest.mark.parametrize("env, steps, optimum", [(MaskedEnv, 20_000, 20.0), (EarlyExitEnv, 30_000, 23.0)])
def test_happo_learns_above_random(env, steps, optimum):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a fixed-seed result must not depend on the machine's core count
    cfg = mappo.Config(total_steps=steps, num_envs=4, rollout_length=50, seed=0, vector_mode="inprocess", lr=3e-3,
                       ppo_epochs=8, num_minibatches=2, hidden_sizes=[64, 64], progress=False, device="cpu", **HAPPO)
    with mappo.Trainer(env, cfg) as trainer:
        trainer.train()
        result = trainer.evaluate(episodes=30, deterministic=True)["team_return_mean"]
    torch.set_num_threads(threads)
    random_return = random_team_return(env)
    assert result >= random_return + 0.7 * (optimum - random_return)


def test_its_options_section_is_checked_and_fixed_order_keeps_the_index_order(monkeypatch):
    with pytest.raises(ValueError, match="'algorithm_options': algorithm 'happo' takes fixed_order; got 'fixd_order'"):
        mappo.Trainer(TwoKindsEnv, tiny(algorithm_options={"fixd_order": True}, **HAPPO))
    with pytest.raises(TypeError, match="'fixed_order' of algorithm 'happo' must be bool, got 1"):
        mappo.Trainer(TwoKindsEnv, tiny(algorithm_options={"fixed_order": 1}, **HAPPO))
    for fixed in (True, False):
        with mappo.Trainer(TwoKindsEnv, tiny(algorithm_options={"fixed_order": fixed}, total_steps=80, **HAPPO)) as t:
            orders = []
            real = t.learner.run_epochs

            def recording(buf, inputs, units=None, critic=True):
                orders.append(units[0])
                return real(buf, inputs, units, critic)

            monkeypatch.setattr(t.learner, "run_epochs", recording)
            t.train()
        assert len(orders) == 8 and sorted(orders[:4]) == sorted(orders[4:]) == [0, 1, 2, 3]
        assert (orders == [0, 1, 2, 3] * 2) == fixed
