"""Agent groups: resolution and its errors, separate parameters and statistics per
group, resume, metrics per group, cross-play evaluation, and learning on two-team and two-kind
toy envs."""
import json
import os
import subprocess
import sys

import pytest
import torch

import mappo
from mappo.registries import check_registered
from mappo.groups import resolve_groups
from tests.helpers import straight_and_resumed, tiny
from tests.toy_envs import EarlyExitEnv, TwoKindsEnv, TwoTeamEnv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEAMS = {"red": ["red_*"], "blue": ["blue_0"]}


def test_group_resolution_and_its_errors():
    agents = ["adversary_0", "adversary_1", "agent_0"]
    groups = resolve_groups(agents, {"adversaries": ["adversary_*"], "agents": ["agent_*"]})
    assert groups.names == ["adversaries", "agents"] and groups.of == [0, 0, 1] and groups.members(1) == [2]
    assert resolve_groups(agents, {}).of == [0, 0, 0]  # the default: one group
    with pytest.raises(ValueError, match=r"\['agents'\]: pattern 'agnt_\*' matches no agent; the env's agents are"):
        resolve_groups(agents, {"adversaries": ["adversary_*"], "agents": ["agnt_*"]})
    with pytest.raises(ValueError, match=r"more than one group: 'adversary_1' in \['a', 'b'\]"):
        resolve_groups(agents, {"a": ["adversary_*", "agent_0"], "b": ["adversary_1"]})
    with pytest.raises(ValueError, match=r"agents \['agent_0'\] are in no group"):
        resolve_groups(agents, {"adversaries": ["adversary_*"]})
    with pytest.raises(ValueError, match="must be a non-empty list"):
        check_registered(tiny(groups={"a": []}))
    with pytest.raises(ValueError, match="without '/'"):
        check_registered(tiny(groups={"a/b": ["x"]}))
    with pytest.raises(TypeError, match="must be a mapping"):
        check_registered(tiny(groups=["red_*"]))
    with pytest.raises(ValueError, match="matches no agent"):  # at trainer build, naming the pattern
        mappo.Trainer(TwoTeamEnv, tiny(groups={"red": ["red_*"], "green": ["green_*"]}))


def test_agent_ids_are_one_hot_within_a_group():
    with mappo.Trainer(TwoKindsEnv, tiny(groups={"scouts": ["scout_*"], "pilots": ["pilot_*"]})) as trainer:
        assert trainer.actor.agent_eye.tolist() == [[1, 0], [0, 1], [1, 0], [0, 1]]
        assert len(trainer.actor.net.head.weight) == 2  # one weight set per group
    with mappo.Trainer(TwoKindsEnv, tiny()) as trainer:  # one group: ids over all agents
        assert trainer.actor.agent_eye.tolist() == torch.eye(4).tolist()


def test_masked_layer_norm_against_hand_values():
    from mappo.networks import masked_layer_norm

    x = torch.tensor([[1.0, 3.0, 99.0], [2.0, 4.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    out = masked_layer_norm(x, mask)
    # row 0 over its first two columns: mean 2, variance 1; the third column is not its own
    torch.testing.assert_close(out[0], torch.tensor([-1.0, 1.0, 0.0]) / (1.0 + 1e-5) ** 0.5)
    # row 1 over all three: mean 5, variance 26/3, so it is the plain LayerNorm
    torch.testing.assert_close(out[1], torch.tensor([-3.0, -1.0, 4.0]) / (26 / 3 + 1e-5) ** 0.5)
    torch.testing.assert_close(out[1], torch.nn.functional.layer_norm(x[1], (3,)))
    assert masked_layer_norm(torch.zeros(2, 3), mask).abs().sum() == 0  # a dead agent's zero row stays zero


KINDS = {"scouts": ["scout_*"], "pilots": ["pilot_*"]}


@pytest.mark.parametrize("sharing", ["shared", "separate"])
def test_each_group_reads_only_its_own_widths(sharing):
    """Across groups nothing is padded.  TwoKindsEnv: scouts see 3 entries, pilots 5.
    A scout's weight set reads 3 feature columns (and, shared, 2 id columns), its LayerNorm
    standardises those 3, and its weights on a pilot's extra columns are zero and stay zero."""
    cfg = tiny(groups=KINDS, parameter_sharing=sharing, input_norm=True, critic_input="agent_specific")
    with mappo.Trainer(TwoKindsEnv, cfg) as trainer:
        actor, critic = trainer.actor, trainer.critic
        scout_set, pilot_set = (0, 1) if sharing == "shared" else (0, 2)
        first = actor.net.body[0]
        ids = 2 if sharing == "shared" else 0
        assert first.in_mask[:, :, 0].sum(-1)[[scout_set, pilot_set]].tolist() == [3 + ids, 5 + ids]
        obs = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]] * 2 + [[0.0, 1.0, 0.0, 1.0, 0.5]] * 2)  # [A, O]
        x = actor.inputs(obs)
        torch.testing.assert_close(x[0, :3], torch.nn.functional.layer_norm(obs[0, :3], (3,)))
        assert x[0, 3:5].abs().sum() == 0  # not the scout's columns: not standardised into it
        torch.testing.assert_close(x[2, :5], torch.nn.functional.layer_norm(obs[2], (5,)))
        # the critic's agent-specific input: the shared state in full, then the own observation
        state_w = critic.norm_dim - 5
        assert critic.net.body[0].in_mask[:, :, 0].sum(-1)[[scout_set, pilot_set]].tolist() == \
            [state_w + 3 + ids, state_w + 5 + ids]
        for p, extra in ((first.weight(), slice(3, 5)), (critic.net.body[0].weight(), slice(state_w + 3, state_w + 5))):
            assert p.detach()[scout_set, extra].abs().sum() == 0
            assert p.detach()[pilot_set, extra].abs().sum() > 0
        trainer.train()
        assert first.weight[scout_set].detach()[3:5].abs().sum() == 0  # learnt nothing there
        # the scout's logits are exactly a network of its own width: its 3 columns, its 2 ids
        w, b = first.weight[scout_set].detach(), first.bias[scout_set].detach()
        own = torch.cat([torch.nn.functional.layer_norm(obs[0, :3], (3,)), torch.tensor([1.0, 0.0])[:ids]])
        rows = torch.cat([torch.arange(3), torch.arange(5, 5 + ids)])
        hidden = torch.tanh(own @ w[rows] + b) if cfg.activation == "tanh" else torch.relu(own @ w[rows] + b)
        head = actor.net.head
        expected = hidden @ head.weight[scout_set].detach() + head.bias[scout_set].detach()
        mask = torch.ones(4, actor.num_logits, dtype=torch.bool)
        dist, _ = actor(obs, mask)
        torch.testing.assert_close(dist.log_probs[0][0], expected.log_softmax(-1))


def test_a_group_of_one_reads_one_id_column():
    """TwoTeamEnv: red has two agents, blue one; blue's set reads one id column, not red's two."""
    with mappo.Trainer(TwoTeamEnv, tiny(groups=TEAMS)) as trainer:
        reads = trainer.actor.net.body[0].in_mask[:, :, 0]
        width = trainer.actor.net.body[0].weight().shape[1]
        assert reads[0].sum() == width and reads[1].sum() == width - 1 and reads[1, -1] == 0
    with mappo.Trainer(TwoKindsEnv, tiny()) as trainer:  # one group: one set, which reads everything
        assert trainer.actor.net.body[0].in_mask is None and trainer.critic.net.body[0].in_mask is None


@pytest.mark.parametrize("sharing", ["shared", "separate"])
def test_a_step_on_one_groups_loss_leaves_the_other_groups_weights_unchanged(sharing):
    """No gradient crosses groups.  (The first step: Adam has no momentum yet, so a zero gradient
    moves nothing; in training every step carries every group's loss.)"""
    with mappo.Trainer(TwoTeamEnv, tiny(groups=TEAMS, parameter_sharing=sharing)) as trainer:
        trainer._ensure_envs()
        trainer.collect()
        learner, buf = trainer.learner, trainer.buffer
        learner.targets(buf)
        keys = ("alive", "action_mask", "actions", "logp", "advantages", "returns", "old_values", "resets", "obs",
                "state")
        mb = next(buf.minibatches(1, keys))
        parts = learner.loss(mb).parts
        assert {"red/policy_loss", "blue/policy_loss", "red/value_loss", "blue/value_loss"} <= set(parts)
        red_loss = parts["red/policy_loss"] - 0.01 * parts["red/entropy"] + parts["red/value_loss"]
        # each unit's parameters: its group's weight sets (shared) or its agents' (separate)
        red = learner.actor_units[0].params + learner.critic_units[0].params
        blue = learner.actor_units[1].params + learner.critic_units[1].params
        assert not {id(p) for p in red} & {id(p) for p in blue}
        before = {id(p): p.detach().clone() for p in red + blue}
        learner.step(red_loss)  # red's loss only, every unit stepped
        assert all(torch.equal(p, before[id(p)]) for p in blue)
        assert sum(not torch.equal(p, before[id(p)]) for p in red) >= len(red) - 2  # (zero-width log_std sets)


def test_each_group_keeps_its_own_value_normaliser_and_kl_beta():
    from mappo.returns import gae

    cfg = tiny(groups=TEAMS, objective="clip_kl", total_steps=400)
    with mappo.Trainer(TwoTeamEnv, cfg) as trainer:
        trainer._ensure_envs()
        trainer.collect()
        buf, learner = trainer.buffer, trainer.learner
        _, ret = gae(buf.reward, buf.values, buf.next_values, buf.terminated, buf.truncated, buf.alive, cfg.gamma,
                     cfg.gae_lambda)
        learner.targets(buf)
        for norm, members in zip(learner.value_norms, ([0, 1], [2])):  # red's two agents, blue's one
            own = ret[..., members][buf.alive[..., members]].double()
            assert norm.count.item() == own.numel()
            assert norm.mean.item() == pytest.approx(own.mean().item(), abs=1e-9)
            assert norm.var.item() == pytest.approx(own.var(unbiased=False).item(), abs=1e-9)
            expected = (ret[..., members] - norm.mean) / norm.std()
            assert torch.allclose(buf.returns[..., members], expected.float(), atol=1e-5)
            # advantages are standardised within the group too
            adv = buf.advantages[..., members][buf.alive[..., members]]
            assert abs(adv.mean().item()) < 1e-5 and adv.std().item() == pytest.approx(1.0, abs=1e-4)
        trainer.train()
        row = trainer.history[-1]
        assert {"red/team_return", "blue/team_return", "red/policy_loss", "blue/value_loss", "red/kl_coef",
                "blue/approx_kl"} <= set(row)
        assert row["red/team_return"] == pytest.approx(-row["blue/team_return"], abs=1e-6)  # zero sum
        # each beta follows its own group's KL (PPO Sec. 4's rule), iteration after iteration
        from mappo.loss import update_kl_coef
        for before, after in zip(trainer.history, trainer.history[1:]):
            for g in ("red", "blue"):
                assert after[f"{g}/kl_coef"] == update_kl_coef(before[f"{g}/kl_coef"], before[f"{g}/approx_kl"],
                                                               cfg.target_kl)
        # and weighs only its own group's loss: the stored log-probs are from before the last update
        mb = next(buf.minibatches(1, ("alive", "action_mask", "actions", "logp", "advantages", "returns",
                                      "old_values", "resets", "obs", "state")))
        learner.kl_coefs = [0.0, 0.0]
        plain = learner.loss(mb).parts
        learner.kl_coefs = [0.0, 100.0]
        blue_penalised = learner.loss(mb).parts
        assert blue_penalised["red/policy_loss"] == plain["red/policy_loss"]
        assert blue_penalised["blue/policy_loss"] > plain["blue/policy_loss"]
        state = learner.state_dict()["units"]
        assert len(state["critic"]) == 2 and len(state["actor"]) == 2
        assert [u["kl_coef"] for u in state["actor"]] == [0.0, 100.0]


def test_resume_with_groups_is_exact(tmp_path):
    cfg = tiny(groups={"scouts": ["scout"], "agents": ["agent_*"]}, objective="clip_kl", popart=True, value_norm=False,
               recurrent=True, chunk_length=5)
    run_dir = str(tmp_path / "run")
    straight, resumed = straight_and_resumed(EarlyExitEnv, cfg, run_dir, first_steps=80)
    assert resumed == straight
    assert "scouts/team_return" in straight[-1]
    with pytest.raises(ValueError, match="groups="):
        mappo.Trainer.load(os.path.join(run_dir, "ckpt.pt"), EarlyExitEnv, groups={})


@pytest.mark.slow
def test_each_team_learns_to_beat_a_random_opponent(tmp_path):
    """TwoTeamEnv with a group per team: each trained team, against a random opponent, earns well
    above the 0 of two random teams (a perfect team: 6.67 per episode)."""
    cfg = tiny(env="tests.toy_envs:TwoTeamEnv", groups=TEAMS, total_steps=20_000, num_envs=4, rollout_length=50, ppo_epochs=4, hidden_sizes=[32],
               lr=3e-3, run_dir=str(tmp_path / "run"))
    with mappo.Trainer(TwoTeamEnv, cfg) as trainer:
        trainer.train()
        red_vs_random = trainer.evaluate(episodes=30, policies={"blue": "random"})
        blue_vs_random = trainer.evaluate(episodes=30, policies={"red": "random"})
        both_random = trainer.evaluate(episodes=30, policies={"red": "random", "blue": "random"})
        trainer.save(str(tmp_path / "run" / "ckpt.pt"))
    assert red_vs_random["policies"] == {"red": "trained", "blue": "random"}
    assert red_vs_random["group_return_mean"]["red"] >= 5.0, red_vs_random
    assert blue_vs_random["group_return_mean"]["blue"] >= 5.0, blue_vs_random
    assert abs(both_random["group_return_mean"]["red"]) <= 2.0, both_random
    # the CLI: the same cross-play, and a group's actor from another checkpoint
    out = subprocess.run([sys.executable, "-m", "mappo", "eval", str(tmp_path / "run"), "--episodes", "10",
                          "--policy", "blue=random", "--trust-env-code"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["policies"] == {"red": "trained", "blue": "random"} and stats["group_return_mean"]["red"] >= 5.0
    # one exported actor for both teams, the group named per agent; it acts as the trained policy
    out = subprocess.run([sys.executable, "-m", "mappo", "export", str(tmp_path / "run"), "--trust-env-code"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    meta = json.loads(open(tmp_path / "run" / "actor.pt.json").read())
    assert meta["groups"] == {"red_0": "red", "red_1": "red", "blue_0": "blue"}
    model = torch.jit.load(str(tmp_path / "run" / "actor.pt"))
    cues = torch.eye(3)
    rows = model(cues.unsqueeze(1).expand(3, 3, 3).contiguous(), torch.ones(3, 3, 3, dtype=torch.bool))
    assert (rows[:, :2, 0] == torch.arange(3).unsqueeze(1)).float().mean() >= 0.8  # red names the cue
    assert (rows[:, 2, 0] == (torch.arange(3) + 1) % 3).float().mean() >= 0.6  # blue names the next one
    out = subprocess.run([sys.executable, "-m", "mappo", "eval", str(tmp_path / "run"), "--episodes", "5",
                          "--policy", "blue=" + str(tmp_path / "run"), "--policy", "green=random",
                          "--trust-env-code"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "unknown group(s) ['green']" in out.stderr


@pytest.mark.slow
def test_two_kinds_learn_under_group_sharing():
    """TwoKindsEnv: scouts and pilots map the cue differently and see it in different widths;
    one actor per kind (random 13.3, optimum 40)."""
    cfg = tiny(groups={"scouts": ["scout_*"], "pilots": ["pilot_*"]}, total_steps=12_000, num_envs=4,
               rollout_length=50, ppo_epochs=4, hidden_sizes=[32], lr=3e-3)
    with mappo.Trainer(TwoKindsEnv, cfg) as trainer:
        trainer.train()
        result = trainer.evaluate(episodes=20)
    assert result["team_return_mean"] >= 36.0, result
    assert set(result["group_return_mean"]) == {"scouts", "pilots"}


def test_groups_on_a_batched_vmas_env():
    pytest.importorskip("vmas")
    from envs import make_env_fn

    cfg = tiny(groups={"first": ["agent_0"], "others": ["agent_1", "agent_2"]}, total_steps=80, num_envs=4,
               rollout_length=10)
    with mappo.Trainer(make_env_fn("vmas/simple_spread", max_steps=5), cfg) as trainer:
        trainer.train()
        row = trainer.history[-1]
        assert trainer.learner.groups.of == [0, 1, 1]
        assert {"first/team_return", "others/team_return", "first/policy_loss"} <= set(row)
        assert set(trainer.evaluate(episodes=2)["group_return_mean"]) == {"first", "others"}


@pytest.mark.parametrize("critic_input", ["state", "concat_obs"])
def test_scaling_one_groups_rewards_leaves_the_other_group_untouched(critic_input):
    """Each group's critic reads the image state (or the joined CNN-encoded observations) through
    encoders of its own: multiplying group b's rewards by 1000 leaves every weight of group a, and
    so its values and its policy, bit-identical after training."""
    from tests.toy_envs import PixelTeamEnv, PixelTeamThousandEnv

    groups = {"a": ["agent_0"], "b": ["agent_1"]}

    def train(env):
        trainer = mappo.Trainer(env, tiny(groups=groups, critic_input=critic_input, total_steps=80))
        trainer.train()
        trainer._ensure_envs()
        obs, state = trainer.vec.observe("obs"), trainer.vec.observe("state")
        alive = torch.ones(obs.shape[:-1], dtype=torch.bool)
        with torch.no_grad():
            values = trainer.critic.values(trainer.critic.inputs(obs, state, alive)).values
            logits = trainer.actor(obs, trainer.vec.observe("action_mask"))[0].log_probs[0]
        mine = {}  # group a's weights: its encoders, and its weight set of every grouped layer
        for prefix, net in (("actor.", trainer.actor), ("critic.", trainer.critic)):
            for name, p in net.named_parameters():
                if name.startswith(("encoder.per_set.0.", "state_encoder.0.", "obs_encoder.0.")):
                    mine[prefix + name] = p.detach().clone()
                elif name.startswith("net.") and name.endswith(".0"):  # weight set 0 of a layer
                    mine[prefix + name] = p.detach().clone()
        trainer.close()
        return mine, values[..., 0], logits[..., 0, :], values[..., 1]

    plain, scaled = train(PixelTeamEnv), train(PixelTeamThousandEnv)
    assert plain[0].keys() == scaled[0].keys() and len(plain[0]) >= 8
    for name in plain[0]:
        assert torch.equal(plain[0][name], scaled[0][name]), name
    assert torch.equal(plain[1], scaled[1]) and torch.equal(plain[2], scaled[2])  # a's values and policy
    assert not torch.equal(plain[3], scaled[3])  # b's critic did see its rewards change


def test_a_critic_saved_with_one_encoder_for_all_groups_loads_into_one_per_group():
    from tests.toy_envs import PixelTeamEnv

    with mappo.Trainer(PixelTeamEnv, tiny(groups={"a": ["agent_0"], "b": ["agent_1"]})) as trainer:
        critic = trainer.critic
        assert critic.encoder_copies == 2
        saved = {k: v.clone() for k, v in critic.state_dict().items() if not k.startswith("state_encoder.1.")}
        saved = {k.replace("state_encoder.0.", "state_encoder."): v for k, v in saved.items()}  # the shared layout
        critic.load_state_dict(saved)
        for name, value in saved.items():
            if name.startswith("state_encoder."):
                for g in (0, 1):
                    assert torch.equal(critic.state_dict()[name.replace("state_encoder.", f"state_encoder.{g}.")],
                                       value)
