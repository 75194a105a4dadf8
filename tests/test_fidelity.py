"""Recurrent policies (GRU, chunked BPTT), agent-specific critic input, PopArt, lr schedule."""
import math

import pytest
import torch

import mappo
from mappo.networks import GroupedGRUCell, critic_features, run_gru
from mappo.normalize import popart_rescale
from mappo.trainer import linear_schedule
from tests.helpers import tiny
from tests.toy_envs import CoordinationEnv, EarlyExitEnv, HeterogeneousEnv, random_team_return



def test_grouped_gru_cell_matches_torch_gru_cell():
    torch.manual_seed(0)
    ours = GroupedGRUCell(groups=1, in_dim=5, hidden=4)
    ref = torch.nn.GRUCell(5, 4)
    with torch.no_grad():  # torch stores [3H, in] in (r, z, n) order; ours stores [in, 3H]
        ref.weight_ih.copy_(ours.x2h.weight[0].t())
        ref.weight_hh.copy_(ours.h2h.weight[0].t())
        ours.x2h.bias[0].normal_()
        ours.h2h.bias[0].normal_()
        ref.bias_ih.copy_(ours.x2h.bias[0])
        ref.bias_hh.copy_(ours.h2h.bias[0])
    x, h = torch.randn(7, 3, 5), torch.randn(7, 3, 4)
    expected = ref(x.reshape(-1, 5), h.reshape(-1, 4)).reshape(7, 3, 4)
    assert torch.allclose(ours(x, h), expected, atol=1e-6)


def test_run_gru_resets_zero_the_state_before_the_step():
    torch.manual_seed(0)
    cell = GroupedGRUCell(groups=2, in_dim=3, hidden=4)  # separate weights per agent slot
    x = torch.randn(5, 1, 2, 3)
    resets = torch.zeros(5, 1, 2, dtype=torch.bool)
    resets[3, 0, 1] = True
    h0 = torch.randn(1, 2, 4)
    outs, before, last = run_gru(cell, x, h0, resets)
    assert outs.shape == (5, 1, 2, 4) and before.shape == (5, 1, 2, 4)
    assert torch.equal(before[0], h0) and torch.equal(last, outs[-1])
    # agent 1 restarts at step 3: replaying steps 3.. from a zero state gives the same outputs
    fresh, _, _ = run_gru(cell, x[3:], torch.zeros(1, 2, 4), torch.zeros(2, 1, 2, dtype=torch.bool))
    assert torch.allclose(outs[3:, :, 1], fresh[:, :, 1], atol=1e-6)
    assert not torch.allclose(outs[3:, :, 0], fresh[:, :, 0])  # agent 0 carried its state on


def test_fused_gru_segments_equal_the_step_by_step_unroll():
    """One weight set runs torch's fused GRU over the segments between resets; it
    must give the step-by-step recursion's outputs, stored states and gradients (inputs, first
    state, weights)."""
    torch.manual_seed(0)
    cell = GroupedGRUCell(groups=1, in_dim=3, hidden=4)
    assert cell.fused
    x = torch.randn(6, 2, 3, 3, requires_grad=True)
    h0 = torch.randn(2, 3, 4, requires_grad=True)
    resets = torch.zeros(6, 2, 3, dtype=torch.bool)
    resets[0, 1] = True  # rows restart at the first step, and mid-sequence at different steps
    resets[2, 0, 1] = True
    resets[4, 1, 2] = True
    outs, before, last = run_gru(cell, x, h0, resets)
    grads = torch.autograd.grad(outs.square().sum() + last.sum(), [x, h0, *cell.parameters()])
    ref_outs, ref_before, h = [], [], h0  # the recursion itself, one step at a time
    for t in range(6):
        ref_before.append(h)
        h = cell(x[t], h * (~resets[t]).unsqueeze(-1))
        ref_outs.append(h)
    ref_outs, ref_before = torch.stack(ref_outs), torch.stack(ref_before)
    ref_grads = torch.autograd.grad(ref_outs.square().sum() + h.sum(), [x, h0, *cell.parameters()])
    torch.testing.assert_close(outs, ref_outs)
    torch.testing.assert_close(before, ref_before)
    torch.testing.assert_close(last, h)
    for g, ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, ref)


@pytest.mark.parametrize("sharing", ["shared", "separate"])
def test_rollout_hidden_states_equal_those_recomputed_on_training_chunks(sharing):
    cfg = tiny(recurrent=True, chunk_length=5, parameter_sharing=sharing)
    with mappo.Trainer(EarlyExitEnv, cfg) as trainer:  # an agent leaves mid-episode: resets for it
        trainer.train(total_steps=40)  # one iteration, so hidden states carry over into the next rollout
        trainer.collect()
        buf = trainer.buffer
        assert buf.resets[:, :, 0].any() and not buf.resets.all()
        assert buf.actor_h.abs().sum() > 0 and buf.critic_h.abs().sum() > 0
        actor_in = trainer.actor.inputs(buf.obs)
        critic_in = trainer.critic.inputs(buf.obs, buf.state, buf.alive)
        batches = list(buf.minibatches(1, ("actor_h", "critic_h", "resets", "logp", "values", "action_mask",
                                           "actions", "obs", "state", "alive"), chunk_length=5))
        mb = batches[0]
        with torch.no_grad():
            # the state carried through the rollout equals the one replayed from each chunk's start
            for start in range(0, 20, 5):
                steps = slice(start, start + 5)
                feats = trainer.actor.net.body(actor_in[steps])
                _, before, _ = run_gru(trainer.actor.gru, feats, buf.actor_h[start], buf.resets[steps])
                assert torch.allclose(before, buf.actor_h[steps], atol=1e-5)
                before = trainer.critic.values(critic_in[steps], buf.critic_h[start], buf.resets[steps]).h_before
                assert torch.allclose(before, buf.critic_h[steps], atol=1e-5)
            # and the training path (shuffled chunks) reproduces the rollout's log-probs and values
            dist, _ = trainer.actor.dist(trainer.actor.inputs(mb["obs"]), mb["action_mask"], mb["actor_h"],
                                         mb["resets"])
            out = trainer.critic.values(trainer.critic.inputs(mb["obs"], mb["state"], mb["alive"]),
                                        mb["critic_h"], mb["resets"])
        assert torch.allclose(dist.log_prob(mb["actions"]), mb["logp"], atol=1e-5)
        assert torch.allclose(trainer.learner.raw(out.values), mb["values"], atol=1e-4)
        assert actor_in.shape[:3] == (20, 2, 3)
        # the critic reads the state: one trunk row per step when shared, else one per agent
        assert critic_in.shape[:3] == (20, 2, 1 if sharing == "shared" else 3)


def test_agent_specific_critic_input_is_state_plus_own_obs_and_death_masked():
    obs = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2) + 1  # [E=2, A=3, O=2]
    state = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    alive = torch.tensor([[True, False, True], [True, True, True]])
    feats = critic_features(obs, state, alive, "agent_specific")
    assert feats.shape == (2, 3, 4)
    assert torch.equal(feats[0, 0], torch.tensor([10.0, 20.0, 1.0, 2.0]))
    assert torch.equal(feats[1, 2], torch.tensor([30.0, 40.0, 11.0, 12.0]))
    assert torch.equal(feats[0, 1], torch.zeros(4))  # dead: zero state (its id is appended after this)
    no_state = critic_features(obs, torch.zeros(2, 0), alive, "agent_specific")
    assert torch.equal(no_state[1, 0], torch.cat([obs[1].reshape(-1), obs[1, 0]]))  # joined obs, then own


def test_agent_specific_dead_agent_sees_only_its_id():
    with mappo.Trainer(EarlyExitEnv, tiny(critic_input="agent_specific")) as trainer:
        obs = torch.randn(1, 3, trainer.spec.obs_dim)
        state = torch.randn(1, trainer.spec.state_dim)
        alive = torch.tensor([[False, True, True]])
        x = trainer.critic.inputs(obs, state, alive)
    width = x.shape[-1] - 3
    assert torch.equal(x[0, 0, :width], torch.zeros(width)) and torch.equal(x[0, 0, width:], torch.eye(3)[0])


def test_popart_rescale_preserves_raw_outputs():
    w, b = torch.tensor([[2.0], [-1.0]]), torch.tensor([0.5])
    h = torch.tensor([[1.0, 3.0]])
    old_mean, old_std, new_mean, new_std = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0), torch.tensor(0.5)
    raw_before = (h @ w + b) * old_std + old_mean  # (2 - 3 + 0.5) * 2 + 1 = 0
    popart_rescale(w, b, old_mean, old_std, new_mean, new_std)
    assert torch.allclose(w, torch.tensor([[8.0], [-4.0]]))  # w * 2 / 0.5
    assert torch.allclose(b, torch.tensor([-4.0]))  # (2 * 0.5 + 1 - 4) / 0.5
    assert torch.allclose((h @ w + b) * new_std + new_mean, raw_before)


def test_popart_keeps_critic_outputs_through_the_statistics_update():
    with mappo.Trainer(HeterogeneousEnv, tiny(popart=True, value_norm=False, ppo_epochs=1)) as trainer:
        trainer.train(total_steps=40)
        trainer.collect()
        x = trainer.critic.inputs(trainer.buffer.obs, trainer.buffer.state, trainer.buffer.alive)
        before = trainer.learner.raw(trainer.critic.values(x).values)
        # the statistics move, the head is rescaled, raw outputs stay (up to float error)
        trainer.learner.set_lr_fraction(0.0)
        mean_before = trainer.value_norm.mean.item()
        trainer.update()
        assert trainer.value_norm.mean.item() != mean_before
        after = trainer.learner.raw(trainer.critic.values(x).values)
    assert torch.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize("recurrent", [False, True])
def test_value_clipping_window_is_centred_on_the_critics_own_output(monkeypatch, recurrent):
    """ValueNorm without PopArt: the statistics move before each update but the critic's output
    does not, so the clip centre must be the stored output, not the stored raw value
    re-normalised with the new statistics (on-policy's r_mappo.py clips around value_preds)."""
    import mappo.loss

    calls = []
    real_value_loss = mappo.loss.value_loss

    def spy(values, old_values, *args, **kwargs):
        calls.append((values.detach().clone(), old_values.clone()))
        return real_value_loss(values, old_values, *args, **kwargs)

    monkeypatch.setattr(mappo.loss, "value_loss", spy)
    cfg = tiny(value_norm=True, popart=False, recurrent=recurrent, chunk_length=5)
    with mappo.Trainer(EarlyExitEnv, cfg) as trainer:
        means = []
        for _ in range(4):
            trainer.train(total_steps=trainer.env_steps + 40)  # one iteration each
            means.append(trainer.value_norm.mean.item())
    per_iteration = cfg.ppo_epochs * cfg.num_minibatches
    assert len(calls) == 4 * per_iteration
    assert abs(means[0]) > 0.5 and len(set(means)) == 4  # the statistics moved at every update
    for values, old_values in calls[::per_iteration]:  # the first minibatch of every iteration
        assert torch.allclose(values, old_values, atol=1e-5)


def test_popart_and_value_norm_together_is_a_config_error():
    with pytest.raises(ValueError, match="'popart' and 'value_norm' are mutually exclusive"):
        mappo.Config(popart=True, value_norm=True)


@pytest.mark.parametrize("rollout_length,chunk_length", [(23, 5), (7, 10)])
def test_recurrent_training_with_a_rollout_length_that_chunk_length_does_not_divide(rollout_length, chunk_length):
    assert mappo.Config(recurrent=True).rollout_length % mappo.Config().chunk_length  # the defaults: 128 and 10
    cfg = tiny(recurrent=True, rollout_length=rollout_length, chunk_length=chunk_length)
    with mappo.Trainer(EarlyExitEnv, cfg) as trainer:  # an agent leaves mid-episode: resets for it
        history = trainer.train(total_steps=4 * rollout_length)  # 2 iterations: hidden states carry over
        assert len(history) == 2 and all(math.isfinite(row["value_loss"]) for row in history)
        trainer.collect()
        buf = trainer.buffer
        L = min(chunk_length, rollout_length)
        chunks = -(-rollout_length // L)
        (mb,) = buf.minibatches(1, ("actor_h", "critic_h", "resets", "logp", "values", "action_mask", "actions",
                                    "obs", "state", "alive"), chunk_length=chunk_length)
        assert mb["obs"].shape[:3] == (L, chunks * 2, 3)
        assert int(mb["alive"].sum()) == int(buf.alive.sum())  # every live agent-step once; padding is not alive
        with torch.no_grad():  # the training path (shuffled, padded chunks) reproduces the rollout
            dist, _ = trainer.actor.dist(trainer.actor.inputs(mb["obs"]), mb["action_mask"], mb["actor_h"],
                                         mb["resets"])
            out = trainer.critic.values(trainer.critic.inputs(mb["obs"], mb["state"], mb["alive"]),
                                        mb["critic_h"], mb["resets"])
        live = mb["alive"]
        assert torch.allclose(dist.log_prob(mb["actions"])[live], mb["logp"][live], atol=1e-5)
        assert torch.allclose(trainer.learner.raw(out.values)[live], mb["values"][live], atol=1e-4)
        stats = trainer.update()
        assert all(math.isfinite(stats[k]) for k in ("policy_loss", "value_loss", "entropy", "approx_kl"))


def test_linear_lr_schedule():
    assert [linear_schedule(s, 100) for s in (0, 25, 100, 120)] == [1.0, 0.75, 0.0, 0.0]
    with mappo.Trainer(CoordinationEnv, tiny(lr=1e-3, lr_schedule="linear", total_steps=160)) as trainer:
        lrs = [row["lr"] for row in trainer.train()]
    assert lrs == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    with mappo.Trainer(CoordinationEnv, tiny(lr=1e-3, total_steps=80)) as trainer:
        assert [row["lr"] for row in trainer.train()] == [1e-3, 1e-3]


def test_recurrent_policy_act_keeps_and_resets_its_state():
    env = HeterogeneousEnv()
    with mappo.Trainer(HeterogeneousEnv, tiny(recurrent=True)) as trainer:
        obs, _ = env.reset(seed=0)
        policy = trainer.policy
        policy.reset()
        policy.act(obs)
        assert policy.hidden is not None and policy.hidden.shape == (1, 3, 16)
        first = policy.hidden.clone()
        policy.act(obs)
        assert not torch.equal(first, policy.hidden)  # the state moved on
        policy.reset()
        assert policy.hidden is None


CASES = {"coordination": (CoordinationEnv, 40_000, 20.0, {"entropy_coef": 0.05}),
         "early_exit": (EarlyExitEnv, 30_000, 23.0, {})}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["recurrent", "agent_specific"])
@pytest.mark.parametrize("case", list(CASES))
def test_recurrent_and_agent_specific_learn_above_random(case, variant):
    env_cls, steps, optimum, extra = CASES[case]
    settings = dict(total_steps=steps, num_envs=4, rollout_length=50, seed=0, vector_mode="inprocess", lr=3e-3,
                    ppo_epochs=8, num_minibatches=2, entropy_coef=0.01, hidden_sizes=[64, 64], progress=False,
                    device="cpu")
    settings.update(extra)
    if variant == "recurrent":
        settings.update(recurrent=True, chunk_length=10)
    else:
        settings.update(critic_input="agent_specific")
    random_return = random_team_return(env_cls)
    threshold = random_return + 0.7 * (optimum - random_return)
    # The coordination game has a known trap: a policy that commits early to a wrong action for
    # one cue leaves its partner no signal (stuck near 13/20). Which seeds fall into it moves with
    # float rounding: a change of summation order that moves the actor's weights by 6e-8 after
    # one update moved the trap from one seed to another (the recurrent policy and the
    # agent_specific critic each fall into it on one seed in six). So a coordination case must
    # learn on 2 of 3 seeds rather than on one.
    seeds = (0, 1, 2) if case == "coordination" else (0,)
    needed = max(1, len(seeds) - 1)
    results = []
    for seed in seeds:
        with mappo.Trainer(env_cls, mappo.Config(**{**settings, "seed": seed})) as trainer:
            trainer.train()
            results.append(trainer.evaluate(episodes=30)["team_return_mean"])
        passed = sum(r >= threshold for r in results)
        if passed >= needed or len(results) - passed > len(seeds) - needed:
            break  # the verdict is settled: the remaining seeds cannot change it
    print(f"{case}/{variant}: random {random_return:.2f}, trained {results}, threshold {threshold:.2f}")
    assert all(math.isfinite(r) for r in results)
    assert sum(r >= threshold for r in results) >= needed
