import pytest
import torch

from mappo.returns import gae, team_streams


def _t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def slow_gae(rewards, values, next_values, term, trunc, alive, gamma, lam):
    """Reference: per-series forward sums of discounted deltas until the episode ends."""
    T = len(rewards)
    adv = []
    for t in range(T):
        if not alive[t]:
            adv.append(0.0)
            continue
        total, coef = 0.0, 1.0
        for k in range(t, T):
            if not alive[k]:  # a departed agent's steps carry nothing
                break
            delta = rewards[k] + gamma * (0.0 if term[k] else next_values[k]) - values[k]
            total += coef * delta
            if term[k] or trunc[k]:
                break
            coef *= gamma * lam
        adv.append(total)
    return adv


def test_gae_hand_computed_no_done():
    # T=3, gamma=0.9, lam=0.8, V = [1, 2, 3], bootstrap V(s3) = 4, rewards [1, 0, 2]
    r, v, nv = _t([1.0, 0.0, 2.0]), _t([1.0, 2.0, 3.0]), _t([2.0, 3.0, 4.0])
    f = torch.zeros(3, dtype=torch.bool)
    adv, ret = gae(r, v, nv, f, f, ~f, 0.9, 0.8)
    d2 = 2 + 0.9 * 4 - 3  # 2.6
    d1 = 0 + 0.9 * 3 - 2  # 0.7
    d0 = 1 + 0.9 * 2 - 1  # 1.8
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    assert adv.tolist() == pytest.approx([a0, a1, a2], abs=1e-6)
    assert ret.tolist() == pytest.approx([a0 + 1, a1 + 2, a2 + 3], abs=1e-6)


def test_gae_truncation_bootstraps_from_final_value_and_termination_does_not():
    r, v = _t([1.0, 1.0]), _t([0.5, 0.5])
    nv = _t([10.0, 7.0])  # step 0 truncated: V(final obs) = 10 (not V of the reset obs)
    term, trunc = _t([0, 0], torch.bool), _t([1, 0], torch.bool)
    alive = torch.ones(2, dtype=torch.bool)
    adv, _ = gae(r, v, nv, term, trunc, alive, 0.5, 1.0)
    # step 0: 1 + 0.5 * 10 - 0.5 = 5.5, recursion cut; step 1: 1 + 0.5 * 7 - 0.5 = 4
    assert adv.tolist() == pytest.approx([5.5, 4.0])
    adv_term, _ = gae(r, v, nv, trunc, term, alive, 0.5, 1.0)  # same step terminated instead
    assert adv_term.tolist() == pytest.approx([0.5, 4.0])  # 1 + 0 - 0.5


def test_gae_split_at_terminal_equals_two_halves():
    g = torch.Generator().manual_seed(0)
    T = 8
    r, v, nv = torch.randn(T, generator=g), torch.randn(T, generator=g), torch.randn(T, generator=g)
    term = torch.zeros(T, dtype=torch.bool)
    term[3] = True
    f = torch.zeros(T, dtype=torch.bool)
    alive = torch.ones(T, dtype=torch.bool)
    full, _ = gae(r, v, nv, term, f, alive, 0.99, 0.95)
    first, _ = gae(r[:4], v[:4], nv[:4], term[:4], f[:4], alive[:4], 0.99, 0.95)
    second, _ = gae(r[4:], v[4:], nv[4:], term[4:], f[4:], alive[4:], 0.99, 0.95)
    assert torch.allclose(full, torch.cat([first, second]))


def test_gae_matches_slow_reference_with_deaths_and_batch_dims():
    g = torch.Generator().manual_seed(1)
    T, E, A = 12, 3, 2
    r, v, nv = (torch.randn(T, E, A, generator=g) for _ in range(3))
    term = torch.rand(T, E, A, generator=g) < 0.15
    trunc = (torch.rand(T, E, A, generator=g) < 0.1) & ~term
    alive = torch.rand(T, E, A, generator=g) < 0.9
    adv, _ = gae(r, v, nv, term, trunc, alive, 0.97, 0.9)
    for e in range(E):
        for a in range(A):
            ref = slow_gae(*(x[:, e, a].tolist() for x in (r, v, nv, term, trunc, alive)), 0.97, 0.9)
            assert adv[:, e, a].tolist() == pytest.approx(ref, abs=1e-5)
    assert torch.all(adv[~alive] == 0)


def test_team_streams_pay_the_departed_the_team_reward_until_the_episode_ends():
    # T=3, one env, 3 agents in one group; agent 2 dies at t=0 (it acted, so alive then) and the
    # env zeroes its later rewards; the episode ends at t=2 by termination
    reward = _t([[[1.0, 1.0, 1.0]], [[2.0, 4.0, 0.0]], [[3.0, 3.0, 0.0]]])
    alive = _t([[[1, 1, 1]], [[1, 1, 0]], [[1, 1, 0]]], torch.bool)
    terminated = _t([[[0, 0, 1]], [[0, 0, 0]], [[1, 1, 0]]], torch.bool)
    truncated = torch.zeros_like(terminated)
    env_done = _t([[0], [0], [1]], torch.bool)
    r, term, trunc = team_streams(reward, terminated, truncated, alive, env_done, _t([[1, 1, 1]], torch.bool))
    # its own reward while alive, then the mean of the living agents': (2 + 4) / 2, (3 + 3) / 2
    assert torch.equal(r[:, 0, 2], _t([1.0, 3.0, 3.0]))
    assert torch.equal(r[:, 0, :2], reward[:, 0, :2])
    assert torch.equal(term[:, 0], _t([[0, 0, 0], [0, 0, 0], [1, 1, 1]], torch.bool))  # every slot ends with the episode
    assert not trunc.any()


def test_team_streams_keep_groups_apart_and_carry_a_time_limit_to_every_slot():
    # 4 agents, groups {0, 1} and {2, 3}; at t=0 agent 1 is gone (group A: agent 0 alone) and both of
    # group B are gone; the env hits its time limit at t=1 (the living agents truncated)
    reward = _t([[[4.0, 0.0, 0.0, 0.0]], [[2.0, 6.0, 0.0, 0.0]]])
    alive = _t([[[1, 0, 0, 0]], [[1, 1, 0, 0]]], torch.bool)
    truncated = _t([[[0, 0, 0, 0]], [[1, 1, 0, 0]]], torch.bool)
    groups = _t([[1, 1, 0, 0], [0, 0, 1, 1]], torch.bool)
    r, term, trunc = team_streams(reward, torch.zeros_like(truncated), truncated, alive, _t([[0], [1]], torch.bool), groups)
    assert torch.equal(r[0, 0], _t([4.0, 4.0, 0.0, 0.0]))  # group A's reward for agent 1; group B has none living
    assert torch.equal(r[1, 0], _t([2.0, 6.0, 0.0, 0.0]))
    assert torch.equal(trunc[:, 0], _t([[0, 0, 0, 0], [1, 1, 1, 1]], torch.bool))  # so every slot bootstraps
    assert not term.any()


def test_gae_over_team_streams_credits_a_death_with_what_the_team_earns_after():
    # 2 agents; agent 1 dies at t=0 with reward 0, agent 0 earns 1 at t=1 when the episode ends;
    # values 0, gamma 0.9, lambda 1
    reward = _t([[[0.0, 0.0]], [[1.0, 0.0]]])
    alive = _t([[[1, 1]], [[1, 0]]], torch.bool)
    terminated = _t([[[0, 1]], [[1, 0]]], torch.bool)
    env_done = _t([[0], [1]], torch.bool)
    zeros = torch.zeros(2, 1, 2)
    own, _ = gae(reward, zeros, zeros, terminated, torch.zeros_like(terminated), alive, 0.9, 1.0)
    assert own[0, 0, 1] == 0.0  # its return ends at its death
    r, term, trunc = team_streams(reward, terminated, torch.zeros_like(terminated), alive, env_done, _t([[1, 1]], torch.bool))
    team, _ = gae(r, zeros, zeros, term, trunc, torch.ones_like(alive), 0.9, 1.0)
    assert team[0, 0, 1] == pytest.approx(0.9)  # 0 + 0.9 * 1: the team's reward after it died
    assert torch.equal(team[:, 0, 0], own[:, 0, 0])  # a survivor's advantages are unchanged
