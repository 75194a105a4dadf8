"""One critic trunk pass per env step when every agent's critic input is the same,
with one value per agent from the head."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mappo
from mappo.checkpoint import digest
from tests.helpers import tiny
from tests.toy_envs import ScaledRewardEnv, TwoTeamEnv

WEIGHTS = torch.tensor(ScaledRewardEnv.WEIGHTS)


def _values_by_cue(trainer):
    """The critic's raw values ``[3, A]`` for the cue 0, 1, 2 (every agent alive)."""
    cues = torch.eye(3)
    obs = cues.unsqueeze(1).expand(3, 6, 3)
    with torch.no_grad():
        x = trainer.critic.inputs(obs, cues, torch.ones(3, 6, dtype=torch.bool))
        return trainer.learner.raw(trainer.critic.values(x).values)


@pytest.mark.parametrize("critic_input", ["state", "concat_obs"])
def test_a_per_step_critic_fits_a_different_value_per_agent(critic_input):
    """Agent k's value is WEIGHTS[k] * c in the same state: a value copied to every agent could
    not fit it (BenchMARL's shared centralised critic)."""
    cfg = tiny(critic_input=critic_input, gamma=0.0, total_steps=6_000, num_envs=4, rollout_length=50,
               ppo_epochs=4, hidden_sizes=[32], lr=3e-3)
    with mappo.Trainer(ScaledRewardEnv, cfg) as trainer:
        assert trainer.critic.per_step and trainer.critic.inputs(
            torch.zeros(2, 6, 3), torch.zeros(2, 3), torch.ones(2, 6, dtype=torch.bool)).shape[-2] == 1
        trainer.train()
        values = _values_by_cue(trainer)
    expected = torch.arange(3.0).unsqueeze(-1) * WEIGHTS  # [3, A]
    assert (values - expected).abs().max() < 0.25, (values, expected)


def test_the_per_step_trunk_does_about_one_agents_share_of_the_work():
    """The critic's forward FLOPs drop by about A (= 6) against one row per agent."""
    flops = {}
    for mode in ("step", "agent"):
        with mappo.Trainer(ScaledRewardEnv, tiny(critic_pass=mode, hidden_sizes=[64, 64])) as trainer:
            obs = torch.rand(16, 8, 6, 3)  # [T, E, A, O]
            x = trainer.critic.inputs(obs, obs[:, :, 0], torch.ones(16, 8, 6, dtype=torch.bool))
            with FlopCounterMode(display=False) as counter:
                values = trainer.critic.values(x).values
            assert values.shape == (16, 8, 6)
            flops[mode] = counter.get_total_flops()
    assert flops["agent"] / flops["step"] > 0.8 * 6, flops


def test_row_per_agent_layouts_stay_per_agent():
    for fields in (dict(critic_input="local"), dict(critic_input="agent_specific"),
                   dict(parameter_sharing="separate"), dict(critic_pass="agent")):
        with mappo.Trainer(ScaledRewardEnv, tiny(**fields)) as trainer:
            assert not trainer.critic.per_step, fields
            x = trainer.critic.inputs(torch.zeros(2, 6, 3), torch.zeros(2, 3), torch.ones(2, 6, dtype=torch.bool))
            assert x.shape[-2] == 6


def test_groups_get_one_trunk_row_each_and_their_own_head_outputs():
    """TwoTeamEnv: red (2 agents) and blue (1): two trunk rows per step; blue's value comes from
    blue's weight set, so changing red's head leaves it alone."""
    cfg = tiny(groups={"red": ["red_*"], "blue": ["blue_0"]}, popart=True, value_norm=False)
    with mappo.Trainer(TwoTeamEnv, cfg) as trainer:
        critic = trainer.critic
        assert critic.per_step and critic.net.head.weight().shape[0] == 2 and critic.net.head.weight().shape[-1] == 2
        assert critic.head_sets(0) == [0] and critic.head_sets(1) == [1]
        trainer.train()  # PopArt rescales each group's head set with its own statistics
        A = trainer.spec.num_agents
        blue = trainer.spec.names.index("blue_0")
        obs = torch.rand(4, A, trainer.spec.obs_dim)
        state = torch.rand(4, trainer.spec.state_dim)
        alive = torch.ones(4, A, dtype=torch.bool)
        with torch.no_grad():
            before = critic.values(critic.inputs(obs, state, alive)).values
            critic.net.head.weight[0].add_(1.0)
            after = critic.values(critic.inputs(obs, state, alive)).values
        red = [k for k in range(A) if k != blue]
        assert torch.equal(before[:, blue], after[:, blue]) and not torch.equal(before[:, red], after[:, red])


def test_a_checkpoint_from_before_critic_pass_loads_with_a_row_per_agent(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    with mappo.Trainer(ScaledRewardEnv, tiny(critic_pass="agent")) as trainer:
        trainer.train()
        trainer.save(path)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["critic_pass"]  # as written before the field existed
    payload["checksum"] = digest(payload)
    torch.save(payload, path)
    with mappo.Trainer.load(path, ScaledRewardEnv) as loaded:
        assert loaded.cfg.critic_pass == "agent" and not loaded.critic.per_step
    with pytest.raises(ValueError, match="critic_pass"):
        mappo.Trainer.load(path, ScaledRewardEnv, critic_pass="step")
