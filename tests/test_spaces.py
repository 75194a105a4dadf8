import numpy as np
import pytest
import torch
from gymnasium import spaces

from mappo.buffer import RolloutBuffer
from mappo.spaces import AgentSpec, TeamSpec
from tests.toy_envs import HeterogeneousEnv, MaskedEnv, TextObsEnv


def _team(obs_spaces, act_spaces, state_dim=0):
    return TeamSpec([AgentSpec.build(n, obs_spaces[n], act_spaces[n]) for n in obs_spaces], state_dim)


def test_flatten_box_discrete_multibinary_dict_tuple():
    obs = {
        "box": spaces.Box(-1, 1, (2, 3), np.float32),
        "disc": spaces.Discrete(4, start=1),
        "mb": spaces.MultiBinary(3),
        "dict": spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Box(0, 1, (2,), np.float32)}),
        "tup": spaces.Tuple((spaces.Discrete(3), spaces.MultiBinary(2))),
    }
    team = _team(obs, {n: spaces.Discrete(2) for n in obs})
    assert [a.obs_dim for a in team.agents] == [6, 4, 3, 4, 5]
    assert team.obs_dim == 6
    out = np.full(6, 9.0, np.float32)
    team.flatten_obs(0, np.arange(6, dtype=np.float32).reshape(2, 3), out)
    assert out.tolist() == [0, 1, 2, 3, 4, 5]
    team.flatten_obs(1, 3, out)  # Discrete(4, start=1): value 3 is index 2, then zero padding
    assert out.tolist() == [0, 0, 1, 0, 0, 0]
    team.flatten_obs(2, np.array([1, 0, 1], np.int8), out)
    assert out.tolist() == [1, 0, 1, 0, 0, 0]
    team.flatten_obs(3, {"a": 1, "b": np.array([0.25, 0.5], np.float32)}, out)
    assert out.tolist() == [0, 1, 0.25, 0.5, 0, 0]
    team.flatten_obs(4, (2, np.array([0, 1], np.int8)), out)
    assert out.tolist() == [0, 0, 1, 0, 1, 0]


def test_unsupported_spaces_name_the_agent():
    with pytest.raises(TypeError, match=r"agent 'agent_0'.*Text"):
        TeamSpec.from_env(TextObsEnv())
    with pytest.raises(TypeError, match=r"agent 'x'.*action space"):
        AgentSpec.build("x", spaces.Box(0, 1, (1,)), spaces.Text(3))
    with pytest.raises(TypeError, match=r"agent 'y'.*finite bounds"):
        AgentSpec.build("y", spaces.Box(0, 1, (1,)), spaces.Box(-np.inf, np.inf, (2,)))


def test_heterogeneous_action_layout_padding_and_static_masks():
    team = TeamSpec.from_env(HeterogeneousEnv())
    # pointer Discrete(3), switch MultiDiscrete([2, 2]), reader Discrete(2)
    assert team.component_sizes == [3, 2] and team.num_logits == 5 and team.cont_dim == 0
    assert team.action_width == 2
    assert team.valid_logits.tolist() == [
        [True, True, True, True, False],   # pointer: 3 logits, padded component allows only 0
        [True, True, False, True, True],   # switch: 2 + 2
        [True, True, False, True, False],  # reader: 2, padded component allows only 0
    ]
    assert team.decode_action(0, np.array([2.0, 0.0])) == 2
    assert team.decode_action(1, np.array([1.0, 0.0])).tolist() == [1, 0]
    row = team.encode_action(1, np.array([0, 1]))
    assert row.tolist() == [0.0, 1.0]


def test_box_actions_are_clipped_into_bounds_and_mixed_kinds_pad():
    team = _team({"c": spaces.Box(0, 1, (1,)), "d": spaces.Box(0, 1, (1,))},
                 {"c": spaces.Box(-2, 2, (2,), np.float32), "d": spaces.Discrete(3)})
    assert team.component_sizes == [3] and team.cont_dim == 2 and team.action_width == 3
    assert team.valid_logits.tolist() == [[True, False, False], [True, True, True]]
    assert team.cont_mask.tolist() == [[1, 1], [0, 0]]
    # Gaussian dims are in policy units: -1 and 1 at the bounds, clipped beyond them
    a = team.decode_action(0, np.array([0.0, 5.0, -0.5], np.float32))
    assert a.tolist() == [2.0, -1.0] and a.dtype == np.float32
    assert team.decode_action(0, np.array([0.0, 0.0, -1.5], np.float32)).tolist() == [0.0, -2.0]
    row = team.encode_action(0, np.array([1.0, -2.0], np.float32))
    assert row.tolist() == [0.0, 0.5, -1.0]
    assert team.decode_action(0, row).tolist() == [1.0, -2.0]
    wide = _team({"w": spaces.Box(0, 1, (1,))}, {"w": spaces.Box(np.array([0.0, 10.0], np.float32), np.array([100.0, 20.0], np.float32))})
    assert wide.decode_action(0, np.array([0.0, 0.5], np.float32)).tolist() == [50.0, 17.5]


def test_action_masks_from_dict_obs_and_info():
    env = MaskedEnv()
    team = TeamSpec.from_env(env)
    obs, infos = env.reset(seed=3)
    out = np.zeros(team.num_logits, bool)
    team.action_mask(0, obs["agent_0"], infos["agent_0"], out)
    assert out.tolist() == env.masks["agent_0"].astype(bool).tolist()
    team.action_mask(1, obs["agent_1"], infos["agent_1"], out)
    assert out.tolist() == env.masks["agent_1"].astype(bool).tolist()
    with pytest.raises(ValueError, match="action mask has 3 entries"):
        team.action_mask(1, obs["agent_1"], {"action_mask": np.ones(3)}, out)


def test_masked_logits_are_never_sampled():
    from mappo.networks import ActionDist

    logits = torch.zeros(2000, 1, 4)
    mask = torch.tensor([True, False, True, False]).expand(2000, 1, 4)
    dist = ActionDist([4], logits, mask, None, None, None)
    samples = dist.sample()[..., 0]
    assert set(samples.unique().tolist()) == {0.0, 2.0}
    assert torch.allclose(dist.entropy(), torch.full((2000, 1), np.log(2.0)))


def test_a_zero_uniform_draw_never_picks_a_masked_action(monkeypatch):
    """torch.rand can return exactly 0.0; with U = 0 on the only valid entry, an unclamped
    Gumbel-max (-log(-log U) = -inf) would pick a masked entry with log-prob ~ -3.4e38."""
    from mappo.networks import ActionDist

    logits = torch.randn(64, 2, 5)
    mask = torch.zeros(64, 2, 5, dtype=torch.bool)
    only = torch.randint(0, 5, (64, 2))
    mask.scatter_(-1, only.unsqueeze(-1), True)  # one valid action per row
    real_rand_like = torch.rand_like

    def zero_on_valid(x, *args, **kwargs):  # the rare draw, forced on every valid entry
        return real_rand_like(x, *args, **kwargs).masked_fill(mask, 0.0)

    monkeypatch.setattr(torch, "rand_like", zero_on_valid)
    dist = ActionDist([5], logits, mask, None, None, None)
    actions = dist.sample()
    assert torch.equal(actions[..., 0].long(), only)
    assert bool((dist.log_prob(actions) > -1e-4).all())  # log 1: the one valid action, never ~ -3.4e38


def test_buffer_shapes_and_minibatches():
    team = TeamSpec.from_env(HeterogeneousEnv())
    team.state_dim = 3
    buf = RolloutBuffer(team, T=5, E=4, device=torch.device("cpu"))
    assert buf.obs.shape == (5, 4, 3, team.obs_dim)
    assert buf.state.shape == (5, 4, 3)
    assert buf.action_mask.shape == (5, 4, 3, 5) and buf.action_mask.dtype == torch.bool
    assert buf.actions.shape == (5, 4, 3, 2)
    for name in ("logp", "values", "next_values", "reward", "terminated", "truncated", "alive"):
        assert getattr(buf, name).shape == (5, 4, 3)
    buf.reward.copy_(torch.arange(60.0).reshape(5, 4, 3))
    batches = list(buf.minibatches(3, ("obs", "reward"), generator=torch.Generator().manual_seed(0)))
    assert all(set(b) == {"obs", "reward"} for b in batches)
    assert [b["obs"].shape[:2] for b in batches] == [(1, 7), (1, 7), (1, 6)]
    assert all(b["obs"].shape[2:] == (3, team.obs_dim) for b in batches)
    seen = torch.cat([b["reward"].reshape(-1) for b in batches]).reshape(-1).sort().values
    assert torch.equal(seen, torch.arange(60.0))  # every (t, e, a) exactly once, agents kept together


def test_minibatch_chunks_keep_time_order_and_start_hidden_states():
    team = TeamSpec.from_env(HeterogeneousEnv())
    buf = RolloutBuffer(team, T=6, E=2, device=torch.device("cpu"), hidden_size=4)
    # rewards[t, e, a] = 100 t + 10 e + a; actor_h[t, e, a, :] = t
    t, e, a = torch.meshgrid(torch.arange(6.0), torch.arange(2.0), torch.arange(3.0), indexing="ij")
    buf.reward.copy_(100 * t + 10 * e + a)
    buf.actor_h.copy_(t.unsqueeze(-1).expand(6, 2, 3, 4))
    batches = list(buf.minibatches(2, ("reward", "actor_h"), chunk_length=3))
    assert [b["reward"].shape for b in batches] == [(3, 2, 3)] * 2  # [L, B, A]: 3 chunks per env x 2 envs / 2
    assert [b["actor_h"].shape for b in batches] == [(2, 3, 4)] * 2  # [B, A, H] at each chunk's start
    for b in batches:
        r = b["reward"]
        assert torch.equal(r[1:] - r[:-1], torch.full((2, 2, 3), 100.0))  # consecutive steps of one env
        start_t = (r[0, :, 0] // 100)
        assert torch.equal(b["actor_h"][:, 0, 0], start_t)  # the hidden state stored at the chunk's first step
        assert set(start_t.tolist()) <= {0.0, 3.0}


def test_a_short_last_chunk_is_padded_at_its_end_and_masked():
    team = TeamSpec.from_env(HeterogeneousEnv())
    buf = RolloutBuffer(team, T=6, E=2, device=torch.device("cpu"), hidden_size=4)
    t, e, a = torch.meshgrid(torch.arange(6.0), torch.arange(2.0), torch.arange(3.0), indexing="ij")
    buf.reward.copy_(100 * t + 10 * e + a + 1)  # > 0 on every real step
    buf.alive.fill_(True)
    buf.actor_h.copy_(t.unsqueeze(-1).expand(6, 2, 3, 4))
    # chunks of 4 over 6 steps: steps 0-3, then steps 4-5 and two padding steps, per env
    (mb,) = buf.minibatches(1, ("reward", "alive", "actor_h"), chunk_length=4)
    assert mb["reward"].shape == (4, 4, 3) and mb["actor_h"].shape == (4, 3, 4)
    starts = mb["actor_h"][:, 0, 0]
    short = starts == 4.0
    assert int(short.sum()) == 2  # one short chunk per env
    assert bool(mb["alive"][:, ~short].all())
    assert bool(mb["alive"][:2, short].all()) and not bool(mb["alive"][2:, short].any())  # padding: not alive
    assert bool((mb["reward"][2:, short] == 0).all())
    assert torch.equal(mb["reward"][mb["alive"]].sort().values, buf.reward.reshape(-1).sort().values)
    # a chunk_length longer than the rollout is cut to it: one whole chunk per env
    (mb,) = buf.minibatches(1, ("reward",), chunk_length=10)
    assert mb["reward"].shape == (6, 2, 3)


def test_random_actions_respect_masks_and_bounds():
    from mappo.spaces import random_actions

    team = TeamSpec([AgentSpec.build("d", spaces.Box(-1, 1, (2,)), spaces.Discrete(4)),
                     AgentSpec.build("c", spaces.Box(-1, 1, (2,)), spaces.Box(-2.0, 3.0, (2,), np.float32))], 0)
    mask = np.zeros((5000, 2, team.num_logits), dtype=bool)
    mask[:, 0, [1, 3]] = True  # agent "d" may only pick 1 or 3
    mask[:, 1] = team.valid_logits[1]
    acts = random_actions(team, mask, torch.Generator().manual_seed(0))
    assert isinstance(acts, np.ndarray) and acts.shape == (5000, 2, team.action_width)
    picks = acts[:, 0, 0]
    assert set(np.unique(picks)) == {1.0, 3.0}
    assert abs((picks == 1.0).mean() - 0.5) < 0.03  # uniform over the allowed entries
    cont = np.stack([team.decode_action(1, row) for row in acts[:, 1]])  # policy units -> the box
    assert cont.min() >= -2.0 and cont.max() <= 3.0 and cont.std() > 1.0
    assert cont.min() < -1.9 and cont.max() > 2.9  # the whole box
    as_torch = random_actions(team, torch.from_numpy(mask))
    assert torch.is_tensor(as_torch) and as_torch.shape == acts.shape
