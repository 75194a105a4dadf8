"""The jaxmarl/ env family (envs/jaxmarl.py): the protocol, fidelity to mpe2, SMAX's masks and
deaths, seeding and exact resume, errors, and training through the same Trainer API."""
import os
import sys

import numpy as np
import pytest
import torch

import mappo
from envs import make_env_fn
from mappo.protocol import field_shapes, torch_dtype
from mappo.vector import make_vector_env
from mappo.spaces import random_actions
from tests.helpers import straight_and_resumed
from tests.test_conformance import E, check_conformance

# XLA's lowest optimisation level halves the compile time of the dozen small programs compiled
# here (and changes no result these tests check); speed is measured by scripts/bench_throughput.py
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
pytest.importorskip("jaxmarl")
import jax  # noqa: E402  (after the skip: jax comes with the jaxmarl extra)
import jax.numpy as jnp  # noqa: E402

CPU = torch.device("cpu")


def jax_vec(name, num_envs=E, seed=0, **kwargs):
    return make_vector_env(make_env_fn(f"jaxmarl/{name}", **kwargs), num_envs, seed, CPU)


# one SMAX setting for every SMAX test, so it compiles once: 3 marines against the heuristic enemy
SMAX_3M = ("HeuristicEnemySMAX", 4)
SMAX_3M_KWARGS = {"scenario": "3m", "max_steps": 15}


@pytest.mark.parametrize("name,kwargs", [
    ("MPE_simple_spread_v3", {}),
    ("MPE_simple_speaker_listener_v4", {}),  # two kinds of agent: observations 3 and 11 wide, 3 and 5 actions
    ("MPE_simple_tag_v3", {}),  # adversaries and good agents
    ("MPE_simple_spread_v3", {"action_type": "Continuous"}),
], ids=["spread", "speaker_listener", "tag", "spread-continuous"])
def test_jaxmarl_mpe_conformance(name, kwargs):
    vec = jax_vec(name, max_steps=5, **kwargs)
    check_conformance(vec, steps=12, episode_length=5)
    if name == "MPE_simple_speaker_listener_v4":
        assert [a.obs_dim for a in vec.spec.agents] == [3, 11] and [a.nvec for a in vec.spec.agents] == [[3], [5]]
    if "action_type" in kwargs:
        assert vec.spec.cont_dim == 5 and not vec.spec.component_sizes


def check_fields(vec, steps, limit):
    """The protocol's fields, shapes, dtypes and device every step, for envs whose episodes end
    on their own (``check_conformance`` wants fixed-length episodes that end together)."""
    spec, expected = vec.spec, field_shapes(vec.spec, vec.num_envs)
    generator = torch.Generator().manual_seed(0)
    episodes = []
    for _ in range(steps):
        mask = vec.observe("action_mask")
        assert (mask.numpy() & ~spec.valid_logits).sum() == 0
        assert spec.num_logits == 0 or mask.any(-1).all()  # always something to do
        vec.set_actions(random_actions(spec, mask, generator))
        episodes += vec.step()
        for name, (shape, dtype) in expected.items():
            value = vec.observe(name)
            assert value.device == vec.device and tuple(value.shape) == shape and value.dtype == torch_dtype(dtype), name
        assert torch.isfinite(vec.observe("obs").float()).all()
        done = vec.observe("env_done")
        assert vec.observe("alive")[done].all()  # a new episode: every agent back
        assert ((vec.observe("terminated") | vec.observe("truncated")).any(-1) | ~done).all()  # an ended env says how
    assert episodes and all(1 <= e["length"] <= limit for e in episodes)
    return episodes


@pytest.mark.parametrize("name,kwargs,steps", [
    ("hanabi", {}, 40),  # turn-based: the player not on turn may only pass (its mask); games end on their own
    ("overcooked", {"max_steps": 6}, 8),  # 26-channel grid images
    ("coin_game", {"max_steps": 6}, 8),
    ("switch_riddle", {}, 10),  # MultiDiscrete observations, one-hot as gymnasium flattens them
])
def test_the_other_suites_follow_the_protocol(name, kwargs, steps):
    vec = jax_vec(name, **kwargs)
    episodes = check_fields(vec, steps, vec.max_steps if vec.max_steps < 10**6 else 10**6)
    if name == "hanabi":
        assert vec.spec.num_logits == 21 and any(e["length"] < 40 for e in episodes)
    if name == "switch_riddle":
        assert vec.spec.obs_dim == 4  # MultiDiscrete([2, 2]) one-hot


def test_smacv2_style_scenarios_build():
    """A SMACv2-style scenario (units drawn per episode) gets its team layout from shapes alone:
    five allies with action masks and a world state.  Stepping it compiles a second SMAX program
    (minutes on a 2-core CI machine), so the protocol checks run on SMAX_3M only."""
    from envs.jaxmarl import JaxMarlVectorEnv

    vec = JaxMarlVectorEnv("HeuristicEnemySMAX", 2, scenario="smacv2_5_units")
    assert vec.spec.num_agents == 5 and vec.spec.state_dim > 0 and vec.spec.num_logits > 6
    assert {name for name, *_ in vec.compiled.layouts_for(2)[1]} >= {"obs", "state", "action_mask", "alive"}


def test_mabrax_continuous_control_follows_the_protocol():
    pytest.importorskip("brax")
    vec = jax_vec("walker2d_2x3", max_steps=5)
    assert vec.spec.cont_dim == 3 and vec.spec.names == ["agent_0", "agent_1"]
    check_fields(vec, 8, 5)


def test_fields_reach_torch_without_a_copy():
    vec = jax_vec("MPE_simple_spread_v3")
    vec.step()
    # every field is a view of one of the step's packed XLA buffers (DLPack), none a copy
    buffers = {x.unsafe_buffer_pointer() for x in vec.packed}
    for name in ("obs", "state", "action_mask", "alive", "reward", "terminated", "truncated", "final_obs",
                 "final_state", "env_done"):
        assert vec.observe(name).untyped_storage().data_ptr() in buffers, name
    assert len(vec.packed) == 3  # float32, bool, int32 (episode lengths)


def _world_into_jax(vec, pz_env):
    """A JaxMARL MPE state holding mpe2's world: positions, velocities, messages, the goal."""
    world, env, state = pz_env.unwrapped.world, vec.env, vec.env_states()
    p_pos, p_vel, c = np.array(state.p_pos), np.array(state.p_vel), np.array(state.c)
    for agent in world.agents:
        i = env.a_to_i[agent.name]
        p_pos[0, i], p_vel[0, i], c[0, i] = agent.state.p_pos, agent.state.p_vel, agent.state.c
    for landmark in world.landmarks:
        p_pos[0, env.l_to_i[landmark.name]] = landmark.state.p_pos
    fields = {"p_pos": p_pos, "p_vel": p_vel, "c": c}
    if getattr(state, "goal", None) is not None:  # speaker-listener: the landmark the listener must reach
        fields["goal"] = np.array([int(world.agents[0].goal_b.name[-1])])
    return state.replace(**fields)


@pytest.mark.parametrize("accounting,dynamics", [("native", "mpe2"), ("epymarl", "mpe2"), ("epymarl", "original")])
@pytest.mark.parametrize("name,mpe2_name", [("MPE_simple_spread_v3", "mpe/simple_spread"),
                                            ("MPE_simple_speaker_listener_v4", "mpe/simple_speaker_listener")])
def test_jax_mpe_steps_like_mpe2_from_the_same_world(name, mpe2_name, accounting, dynamics):
    """From mpe2's world at each episode start, with the same actions, the JAX port gives the same
    observations, rewards (either accounting, either integration order), flags and 25-step
    episodes (atol 1e-4).  JaxMARL's own MPE would run 26 steps: the adapter ends episodes at
    max_steps as mpe2 does."""
    jvec = jax_vec(name, num_envs=1, accounting="jaxmarl" if accounting == "native" else "epymarl", dynamics=dynamics)
    pvec = make_vector_env(make_env_fn(mpe2_name, accounting="mpe2" if accounting == "native" else "epymarl",
                                       dynamics=dynamics), 1, 0, CPU, "inprocess")
    pz_env = pvec.backend.slots[0].env
    generator = torch.Generator().manual_seed(1)
    jax_episodes, mpe2_episodes = [], []
    for _ in range(2):
        jvec.place_states(_world_into_jax(jvec, pz_env))
        for t in range(25):
            for field in ("obs", "action_mask", "alive"):
                torch.testing.assert_close(jvec.observe(field), pvec.observe(field), atol=1e-4, rtol=0)
            actions = random_actions(jvec.spec, jvec.observe("action_mask"), generator)
            jvec.set_actions(actions), pvec.set_actions(actions)
            jax_episodes += jvec.step()
            mpe2_episodes += pvec.step()
            for field in ("reward", "final_obs", "terminated", "truncated", "env_done"):
                torch.testing.assert_close(jvec.observe(field), pvec.observe(field), atol=1e-4, rtol=0)
    assert [e["length"] for e in jax_episodes] == [e["length"] for e in mpe2_episodes] == [25, 25]
    np.testing.assert_allclose([e["team_return"] for e in jax_episodes], [e["team_return"] for e in mpe2_episodes],
                               atol=1e-3)
    pvec.close()


def test_smax_masks_deaths_and_episode_ends():
    """SMAX 3m against the heuristic enemy, random allies: an agent that dies terminates at that
    step, then stays out (alive False, zero observation, only the layout's logits); a wiped-out side
    ends the episode as terminated, the time limit as truncated; live agents' masks are SMAX's."""
    vec = jax_vec(*SMAX_3M, **SMAX_3M_KWARGS)
    spec = vec.spec
    assert spec.names == ["ally_0", "ally_1", "ally_2"] and spec.state_dim > 0 and spec.num_logits == 8  # 5 moves, 3 targets
    # no weakly typed leaf after a reset (SMAX has one): the step's carry types never change, so it compiles once
    assert not any(x.aval.weak_type for x in jax.tree.leaves(vec.env_states()))
    available = jax.jit(jax.vmap(vec.env.get_avail_actions))
    generator = torch.Generator().manual_seed(0)
    deaths = wiped = timeouts = 0
    episodes = []
    for _ in range(50):
        alive, mask = vec.observe("alive"), vec.observe("action_mask")
        env_mask = available(vec.env_states())
        env_mask = torch.from_numpy(np.stack([np.asarray(env_mask[n]) for n in spec.names], 1).astype(bool))
        assert torch.equal(mask[alive], env_mask[alive])
        assert (vec.observe("obs")[~alive] == 0).all()
        assert mask[~alive].all()  # a dead agent: only the layout's validity (it sends no action of its own)
        actions = random_actions(spec, mask, generator)
        assert mask.gather(-1, actions[..., :1].long()).all()  # what is sent was available
        vec.set_actions(actions)
        episodes += vec.step()
        term, trunc, done = vec.observe("terminated"), vec.observe("truncated"), vec.observe("env_done")
        assert not (term & trunc).any() and not ((term | trunc) & ~alive).any()  # only agents that acted end
        died = term & ~done[:, None]
        deaths += int(died.sum())
        assert not vec.observe("alive")[died].any()  # and they stay out
        wiped += int((done & term.any(-1)).sum())
        timeouts += int((done & trunc.any(-1)).sum())
    assert deaths > 0 and wiped > 0 and timeouts > 0, (deaths, wiped, timeouts)
    assert all(e["length"] <= 15 for e in episodes) and any(e["length"] < 15 for e in episodes)
    # the battle's outcome comes with each episode, the team's, so every slot's
    assert all(set(e["info"]["won"]) <= {0.0, 1.0} and len(set(e["info"]["won"])) == 1 for e in episodes)


def test_smax_win_is_the_enemy_wiped_out_with_an_ally_standing():
    from types import SimpleNamespace

    from envs.jaxmarl import _won_rule

    vec = jax_vec(*SMAX_3M, **SMAX_3M_KWARGS)
    won = _won_rule("HeuristicEnemySMAX", vec.env)
    assert _won_rule("MPE_simple_spread_v3", None) is None
    state = lambda alive: SimpleNamespace(state=SimpleNamespace(unit_alive=jnp.array(alive)))  # noqa: E731
    # 3 allies, then 3 enemies
    assert bool(won(state([True, False, False, False, False, False])))
    assert not bool(won(state([True, True, True, False, False, True])))  # an enemy stands
    assert not bool(won(state([False, False, False, False, False, False])))  # both wiped out: not a win


def test_smax_win_rate_is_logged_from_the_episodes_info():
    cfg = _tiny_jax(env=f"jaxmarl/{SMAX_3M[0]}", env_kwargs=SMAX_3M_KWARGS, num_envs=SMAX_3M[1], rollout_length=15,
                    total_steps=60, critic_input="state")
    with mappo.Trainer(make_env_fn(cfg.env, **cfg.env_kwargs), cfg) as trainer:
        row = trainer.train()[-1]
    assert row["episodes"] >= 4 and 0.0 <= row["info/won"] <= 1.0


def test_episodes_replay_from_their_seeds():
    """Env i's episode k depends on (seed, i, k) only: restarting at recorded episode numbers
    replays the same observations under the same actions; another seed does not."""
    def rollout(vec, steps, generator):
        rows = []
        for _ in range(steps):
            vec.set_actions(random_actions(vec.spec, vec.observe("action_mask"), generator))
            vec.step()
            rows.append(vec.observe("obs").clone())
        return rows

    vec = jax_vec(*SMAX_3M, **SMAX_3M_KWARGS)
    rollout(vec, 30, torch.Generator().manual_seed(0))  # some episodes done: counts now differ from 0
    counts = vec.episode_counts()
    assert counts.sum() >= 2
    vec.restart_episodes(counts)
    first = rollout(vec, 15, torch.Generator().manual_seed(5))
    vec.restart_episodes(counts)
    again = rollout(vec, 15, torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other = jax_vec(*SMAX_3M, seed=1, **SMAX_3M_KWARGS)
    other.restart_episodes(counts)
    assert not torch.equal(rollout(other, 1, torch.Generator().manual_seed(5))[0], first[0])


def _tiny_jax(**kw):
    base = dict(env="jaxmarl/MPE_simple_spread_v3", num_envs=4, rollout_length=25, total_steps=400, ppo_epochs=2,
                num_minibatches=2, hidden_sizes=[16], progress=False, device="cpu", seed=0)
    base.update(kw)
    return mappo.Config(**base)


def test_training_resumes_exactly(tmp_path):
    cfg = _tiny_jax()
    straight, resumed = straight_and_resumed(make_env_fn(cfg.env), cfg, str(tmp_path / "run"), first_steps=200)
    assert len(straight) == 4 and resumed == straight


def test_mixed_mpe_trains_with_a_group_per_side_and_plays_across(tmp_path):
    """simple_tag: adversaries and good agents as two groups, each its own actor and critic and
    its own return; evaluation pits the trained adversaries against random runners."""
    cfg = _tiny_jax(env="jaxmarl/MPE_simple_tag_v3", groups={"adversaries": ["adversary_*"], "agents": ["agent_*"]})
    with mappo.Trainer(make_env_fn(cfg.env), cfg) as trainer:
        history = trainer.train()
        stats = trainer.evaluate(episodes=4, policies={"agents": "random"})
    assert "adversaries/team_return" in history[-1] and "agents/team_return" in history[-1]
    assert stats["episodes"] == 4 and stats["policies"] == {"adversaries": "trained", "agents": "random"}
    assert set(stats["group_return_mean"]) == {"adversaries", "agents"}


def test_video_of_an_mpe_episode(tmp_path):
    """A trained (recurrent) policy's episode drawn by JaxMARL's MPE visualiser: the reset frame
    and one per step up to the episode's end, with the agents moving; SMAX says it cannot."""
    from mappo.video import record, write_video

    cfg = _tiny_jax(env_kwargs={"max_steps": 6}, recurrent=True, total_steps=48, rollout_length=6, chunk_length=3)
    with mappo.Trainer(make_env_fn(cfg.env, **cfg.env_kwargs), cfg) as trainer:
        trainer.train()
        frames = record(trainer.policy, trainer.env_fn, seed=trainer.eval_seed)
    assert len(frames) == 7 and all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[-1] == 3 for f in frames)
    assert len({f.shape for f in frames}) == 1 and not np.array_equal(frames[0], frames[-1])
    assert write_video(frames, str(tmp_path / "spread.gif")).endswith(".gif")
    smax = make_env_fn(f"jaxmarl/{SMAX_3M[0]}", **SMAX_3M_KWARGS)
    with pytest.raises(ValueError, match="MPE scenarios only"):
        record(trainer.policy, smax)


def test_a_wrong_id_or_map_gets_did_you_mean():
    with pytest.raises(ValueError, match="did you mean 'MPE_simple_spread_v3'"):
        make_env_fn("jaxmarl/MPE_simple_sprad_v3")
    with pytest.raises(ValueError, match="did you mean '2s3z'"):
        jax_vec("HeuristicEnemySMAX", scenario="2s3y")
    with pytest.raises(ValueError, match="accounting="):
        jax_vec("MPE_simple_tag_v3", accounting="epymarl")


def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "jaxmarl", None)  # import jaxmarl now raises ImportError
    with pytest.raises(ImportError, match=r"\.\[jax\]"):
        make_env_fn("jaxmarl/MPE_simple_spread_v3")


def test_a_rank_continues_the_env_numbering_of_the_ranks_before_it():
    """Under torchrun rank r builds its envs with first_index = r * num_envs: its envs are the
    one-process run's envs r*E..., episode for episode, and not another seed's envs."""
    env_fn = make_env_fn("jaxmarl/MPE_simple_spread_v3")
    whole = make_vector_env(env_fn, 4, 0, CPU)
    rank1 = make_vector_env(env_fn, 2, 0, CPU, first_index=2)
    seed2 = make_vector_env(env_fn, 2, 2, CPU)  # seed + first_index would replay another seed's envs
    generator = torch.Generator().manual_seed(0)
    for t in range(30):  # past the first episode's end (max_steps 25): the next episode's reset too
        actions = random_actions(whole.spec, whole.observe("action_mask"), generator)
        assert torch.equal(rank1.observe("obs"), whole.observe("obs")[2:])
        assert not torch.equal(seed2.observe("obs"), rank1.observe("obs"))
        for vec, part in ((whole, actions), (rank1, actions[2:]), (seed2, actions[2:])):
            vec.set_actions(part)
            vec.step()
    for vec in (whole, rank1, seed2):
        vec.close()
