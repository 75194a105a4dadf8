"""SuperSuit wrappers from the config: validation, errors naming the wrapper, and the
wrappers applied inside each worker with the same observations as applying them by hand."""
import numpy as np
import pytest
import supersuit
import torch

import mappo
from mappo.registries import check_registered
from envs import make_env_fn
from mappo.vector import make_vector_env
from mappo.spaces import random_actions
from mappo.wrappers import WrappedEnvFn, check_wrappers


def test_config_errors_name_the_entry_and_the_wrapper():
    with pytest.raises(ValueError, match=r"'wrappers'\[1\]: 'frame_stak_v2' is not a SuperSuit wrapper; did you mean frame_stack_v2"):
        check_registered(mappo.Config(wrappers=[{"clip_reward_v0": {}}, {"frame_stak_v2": {}}]))
    with pytest.raises(ValueError, match=r"'wrappers'\[0\] \(frame_stack_v2\): got an unexpected keyword argument 'size'"):
        check_registered(mappo.Config(wrappers=[{"frame_stack_v2": {"size": 4}}]))
    with pytest.raises(ValueError, match="vector-env converter"):
        check_registered(mappo.Config(wrappers=[{"concat_vec_envs_v1": {}}]))
    with pytest.raises(ValueError, match="mapping with one key"):
        check_registered(mappo.Config(wrappers=[{"frame_stack_v2": {}, "clip_reward_v0": {}}]))
    with pytest.raises(TypeError, match="must be a list"):
        check_registered(mappo.Config(wrappers={"frame_stack_v2": {}}))
    assert check_wrappers([{"frame_stack_v2": None}]) == [{"frame_stack_v2": {}}]


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("env: mpe/simple_spread\nwrappers:\n  - frame_stack_v2: {stack_size: 3}\n  - clip_reward_v0: {}\n")
    cfg = mappo.Config.from_yaml(str(path))
    assert cfg.wrappers == [{"frame_stack_v2": {"stack_size": 3}}, {"clip_reward_v0": {}}]
    assert mappo.Config.from_yaml(str(path), ["wrappers=[]"]).wrappers == []


def test_a_wrapper_that_does_not_fit_the_env_is_an_error_naming_it():
    cfg = mappo.Config(env="mpe/simple_spread", wrappers=[{"color_reduction_v0": {"mode": "B"}}], progress=False)
    with pytest.raises(ValueError, match=r"'wrappers'\[0\] \(color_reduction_v0 .*does not fit the env 'simple_spread_v3'"):
        mappo.Trainer(make_env_fn("mpe/simple_spread"), cfg)


def test_without_wrappers_env_fn_is_used_as_given():
    env_fn = make_env_fn("mpe/simple_spread", max_cycles=5)
    with mappo.Trainer(env_fn, mappo.Config(num_envs=2, rollout_length=5, progress=False)) as trainer:
        assert trainer.env_fn is env_fn


def test_wrappers_run_in_the_workers_and_match_wrapping_by_hand():
    wrappers = [{"frame_stack_v2": {"stack_size": 3}}, {"clip_reward_v0": {"lower_bound": -0.5, "upper_bound": 0.5}}]
    base = make_env_fn("mpe/simple_spread", max_cycles=6)
    in_workers = make_vector_env(WrappedEnvFn(base, wrappers), 2, 0, torch.device("cpu"), "subprocess")
    by_hand = make_vector_env(lambda: supersuit.clip_reward_v0(supersuit.frame_stack_v2(base(), stack_size=3),
                                                               lower_bound=-0.5, upper_bound=0.5),
                              2, 0, torch.device("cpu"), "inprocess")
    try:
        assert in_workers.spec.obs_dim == 3 * 18  # three stacked frames of 18 features
        generator = torch.Generator().manual_seed(0)
        for _ in range(9):  # past an episode end: the stack restarts after the reset
            for name in ("obs", "state", "reward"):
                assert torch.equal(in_workers.observe(name), by_hand.observe(name)), name
            actions = random_actions(in_workers.spec, in_workers.observe("action_mask"), generator)
            in_workers.set_actions(actions)
            by_hand.set_actions(actions)
            in_workers.step()
            by_hand.step()
        assert in_workers.observe("reward").abs().max() <= 0.5
    finally:
        in_workers.close()
        by_hand.close()


def test_a_run_with_wrappers_trains_saves_and_loads(tmp_path):
    cfg = mappo.Config(env="mpe/simple_spread", env_kwargs={"max_cycles": 5}, wrappers=[{"frame_stack_v2": {"stack_size": 2}}],
                       num_envs=2, rollout_length=10, total_steps=40, ppo_epochs=1, progress=False)
    with mappo.Trainer(make_env_fn(cfg.env, **cfg.env_kwargs), cfg) as trainer:
        trainer.train()
        trainer.save(str(tmp_path / "ckpt.pt"))
        assert trainer.spec.obs_dim == 36
        assert np.isfinite(trainer.evaluate(episodes=2)["team_return_mean"])
    with mappo.Trainer.load(str(tmp_path / "ckpt.pt"), make_env_fn(cfg.env, **cfg.env_kwargs)) as again:
        assert again.spec.obs_dim == 36 and again.cfg.wrappers == cfg.wrappers
    with pytest.raises(ValueError, match="wrappers="):
        mappo.Trainer.load(str(tmp_path / "ckpt.pt"), make_env_fn(cfg.env, **cfg.env_kwargs), wrappers=[])


@pytest.mark.slow
def test_frame_stacking_from_the_config_makes_a_moving_dot_learnable():
    """MovingDotEnv: one frame cannot show the dot's direction (5 of 10 at best), two stacked
    frames can (9.5).  The same config learns it with ``frame_stack_v2`` and not without, through
    the CNN encoder that ``encoder=auto`` picks for its uint8 frames."""
    from mappo.encoders import ConvEncoder
    from tests.toy_envs import MovingDotEnv

    def trained_return(wrappers):
        cfg = mappo.Config(num_envs=8, rollout_length=50, total_steps=24_000, hidden_sizes=[64], lr=1e-3,
                           cnn_channels=[16], cnn_kernels=[3], cnn_strides=[1], cnn_features=64,
                           input_norm=True, gamma=0.9, vector_mode="inprocess", seed=0, progress=False,
                           wrappers=wrappers)
        with mappo.Trainer(MovingDotEnv, cfg) as trainer:
            assert isinstance(trainer.actor.encoder.one, ConvEncoder)
            trainer.train()
            assert trainer.spec.obs_dim == 27 * (2 if wrappers else 1)
            return trainer.evaluate(episodes=100, deterministic=True)["team_return_mean"]

    stacked = trained_return([{"frame_stack_v2": {"stack_size": 2}}])
    single = trained_return([])
    assert stacked >= 9.0, stacked
    assert single <= 6.5, single
