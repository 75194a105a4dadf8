"""Image observations: encoder choice per agent, the CNN path's consistency between
rollout and update, uint8 up to the encoder, image states, Dict image+vector with masks, and
the butterfly envs."""
import numpy as np
import pytest
import torch
from gymnasium import spaces

import mappo
from mappo.registries import check_registered
from mappo.encoders import ConvEncoder, FlatEncoder
from mappo.spaces import TeamSpec, AgentSpec, find_image
from tests.helpers import tiny
from tests.toy_envs import CoordinationEnv, MixedPixelEnv, PixelTeamEnv

SMALL_CNN = dict(cnn_channels=[8, 8], cnn_kernels=[3, 3], cnn_strides=[2, 1], cnn_features=32)


def test_find_image_reads_layouts():
    hwc = find_image(spaces.Box(0, 255, (84, 84, 4), np.uint8))
    assert (hwc.channels_first, hwc.chw, hwc.offset, hwc.scale) == (False, (4, 84, 84), 0, 1 / 255)
    chw = find_image(spaces.Box(0.0, 1.0, (3, 64, 48), np.float32))
    assert (chw.channels_first, chw.chw, chw.scale) == (True, (3, 64, 48), 1.0)
    gray = find_image(spaces.Box(0, 255, (30, 40), np.uint8))  # color_reduction_v0 without frame_stack
    assert gray.chw == (1, 30, 40)
    # gymnasium flattens a Dict key by key ("image" after "a_vec"): the image starts after the 5 entries
    mixed = find_image(spaces.Dict({"a_vec": spaces.Box(-1, 1, (5,)), "image": spaces.Box(0, 255, (8, 8, 1), np.uint8)}))
    assert mixed.offset == 5 and mixed.size == 64
    assert find_image(spaces.Box(-1.0, 1.0, (18,), np.float32)) is None
    assert find_image(spaces.Box(-1.0, 1.0, (27, 5), np.float32)) is None  # a 2-D float table is not an image
    assert find_image(spaces.Discrete(4)) is None


def test_auto_picks_the_encoder_per_agent():
    with mappo.Trainer(MixedPixelEnv, tiny(parameter_sharing="separate", **SMALL_CNN)) as trainer:
        kinds = [type(e) for e in trainer.actor.encoder.per_set]
        assert kinds == [ConvEncoder, FlatEncoder]  # the Dict with an image, then the plain vector
        assert [type(e) for e in trainer.critic.obs_encoder.per_set] == [ConvEncoder, FlatEncoder]
        assert trainer.actor.encodes and trainer.spec.obs_dtype == np.float32  # a float image in a Dict
        # encoder=mlp flattens everything into the MLP
    with mappo.Trainer(MixedPixelEnv, tiny(parameter_sharing="separate", encoder="mlp")) as trainer:
        assert not trainer.actor.encodes and not trainer.critic.encodes
    with pytest.raises(ValueError, match="encoder=cnn, but agent 'agent_1' has no image"):
        mappo.Trainer(MixedPixelEnv, tiny(parameter_sharing="separate", encoder="cnn", **SMALL_CNN))
    # shared: one encoder must read every agent, so an image agent beside a vector agent is an error
    with pytest.raises(ValueError, match=r"parameter_sharing=shared.*agent 'agent_0' sees 1x8x8 \(CHW\) image.*"
                                         r"agent 'agent_1' sees a vector.*parameter_sharing=separate"):
        mappo.Trainer(MixedPixelEnv, tiny(**SMALL_CNN))
    with pytest.raises(ValueError, match="config field 'encoder' must be one of"):
        check_registered(tiny(encoder="resnet"))
    with pytest.raises(ValueError, match="same length"):
        tiny(cnn_channels=[8], cnn_kernels=[3, 3], cnn_strides=[1, 1])


NATURE = dict(cnn_channels=[32, 64, 64], cnn_kernels=[8, 4, 3], cnn_strides=[4, 2, 1])


def test_images_too_small_or_too_large_for_a_chosen_stack_are_errors_that_say_what_to_do():
    with pytest.raises(ValueError, match=r"actor encoder \(agent 'agent_0'\): the image 12x12x3 \(HWC\) is too small"
                                         r".*resize_v1"):
        mappo.Trainer(PixelTeamEnv, tiny(**NATURE))  # the Nature CNN's 8x8/4 then 4x4/2 kernels do not fit 12x12
    spec = TeamSpec([AgentSpec.build("a", spaces.Box(0, 255, (560, 880, 3), np.uint8), spaces.Discrete(2))], 0)
    from mappo.encoders import TeamEncoder

    with pytest.raises(ValueError, match=r"560x880x3 \(HWC\) leaves a 64x66x106 conv output.*resize_v1"):
        TeamEncoder(spec, [0], tiny(cnn_features=512, **NATURE), "actor")
    with pytest.raises(ValueError, match="set all three, or none"):
        tiny(cnn_channels=[8], cnn_kernels=[3])


@pytest.mark.parametrize("shape,chw,layers,conv_out", [
    ((3, 3), (1, 3, 3), 1, (16, 1, 1)),            # the smallest grid a 3x3 convolution takes
    ((5, 5, 6), (6, 5, 5), 1, (16, 3, 3)),         # a 5x5 grid with 6 stacked channels, HWC
    ((10, 10, 2), (2, 10, 10), 1, (16, 8, 8)),     # a 10x10 grid, two stacked frames
    ((42, 42, 4), (4, 42, 42), 3, (64, 7, 7)),
    ((84, 84, 4), (4, 84, 84), 3, (64, 7, 7)),     # Atari: the Nature CNN
    ((4, 84, 84), (4, 84, 84), 3, (64, 7, 7)),     # the same, CHW
    ((210, 160, 3), (3, 210, 160), 4, (64, 10, 7)),
    ((560, 880, 3), (3, 560, 880), 6, (64, 7, 12)),  # pistonball's raw screen
])
def test_auto_conv_stacks_fit_images_of_every_size(shape, chw, layers, conv_out):
    from mappo.encoders import TeamEncoder

    spec = TeamSpec([AgentSpec.build("a", spaces.Box(0, 255, shape, np.uint8), spaces.Discrete(2))], 0)
    assert spec.agents[0].image.chw == chw
    encoder = TeamEncoder(spec, [0], tiny(), "actor").one
    convs = [m for m in encoder.convs if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == layers
    x = torch.zeros(2, *chw)
    for layer in encoder.convs:
        if isinstance(layer, torch.nn.Flatten):
            break
        x = layer(x)
    assert tuple(x.shape[1:]) == conv_out
    out = encoder(torch.zeros(2, spec.obs_dim, dtype=torch.uint8))
    assert out.shape == (2, encoder.out_dim) and torch.isfinite(out).all()


def test_images_smaller_than_3x3_go_to_the_mlp_under_auto():
    from mappo.encoders import choose

    image = find_image(spaces.Box(0, 255, (2, 8), np.uint8))
    assert choose("auto", image, "agent 'a'") == "mlp"
    assert choose("auto", find_image(spaces.Box(0, 255, (3, 8), np.uint8)), "agent 'a'") == "cnn"


def test_the_channel_axis_rule_and_its_override():
    from mappo.spaces import channels_first

    assert [channels_first(s) for s in [(84, 84, 4), (4, 84, 84), (5, 5, 6), (12, 64, 64), (3, 210, 160),
                                        (210, 160, 3), (6, 6, 6)]] == [False, True, False, True, True, False, False]
    assert channels_first((5, 6, 6), "hwc") is False and channels_first((84, 84, 4), "chw") is True
    with pytest.raises(ValueError, match="'image_layout' must be one of"):
        tiny(image_layout="nhwc")

    class Ambiguous(PixelTeamEnv):  # a 5-row, 6-column grid with 6 channels reads as CHW unless told
        obs_spaces = {a: spaces.Box(0, 255, (5, 6, 6), np.uint8) for a in PixelTeamEnv.possible_agents}

    with mappo.Trainer(Ambiguous, tiny()) as trainer:
        assert trainer.spec.agents[0].image.chw == (5, 6, 6)
    with mappo.Trainer(Ambiguous, tiny(image_layout="hwc")) as trainer:
        assert trainer.spec.agents[0].image.chw == (6, 5, 6)


def test_the_chosen_conv_stack_is_printed_once_and_saved_in_the_config(tmp_path, capsys):
    with mappo.Trainer(PixelTeamEnv, tiny(progress=True, critic_input="state", total_steps=40)) as trainer:
        out = capsys.readouterr().out
        assert "encoder=auto: agent_0, agent_1: 12x12x3 (HWC) image -> conv [16@3x3/1] -> 128 features" in out
        # the state is a 16x16x1 frame: another stack, so the fields stay to the presets
        assert "state: 16x16x1 (HWC) image -> conv [32@3x3/2, 64@3x3/2, 64@3x3/1] -> 512 features" in out
        assert trainer.cfg.cnn_channels is None
    with mappo.Trainer(PixelTeamEnv, tiny(progress=True, critic_input="concat_obs", total_steps=40)) as trainer:
        assert (trainer.cfg.cnn_channels, trainer.cfg.cnn_kernels, trainer.cfg.cnn_strides,
                trainer.cfg.cnn_features) == ([16], [3], [1], 128)
        trainer.train(run_dir=str(tmp_path / "run"))
    saved = mappo.Config.from_yaml(str(tmp_path / "run" / "config.yaml"))
    assert saved.cnn_channels == [16] and saved.cnn_features == 128
    capsys.readouterr()
    with mappo.Trainer.load(str(tmp_path / "run" / "ckpt.pt"), PixelTeamEnv, progress=True) as trainer:
        assert "encoder=auto" not in capsys.readouterr().out  # once: a loaded run has it in its config


def test_heterogeneous_image_sizes_work_separately_and_fail_clearly_shared():
    class TwoSizes(PixelTeamEnv):
        obs_spaces = {"agent_0": spaces.Box(0, 255, (12, 12, 3), np.uint8),
                      "agent_1": spaces.Box(0, 255, (16, 16, 3), np.uint8)}

        def _obs(self):
            sizes = {"agent_0": 12, "agent_1": 16}
            return {a: self._frame(sizes[a], 3) for a in self.agents}

    with pytest.raises(ValueError, match=r"agent 'agent_0' sees 12x12x3 \(HWC\) image.*agent 'agent_1' sees 16x16x3 \(HWC\) image"
                                         r".*resize_v1.*parameter_sharing=separate"):
        mappo.Trainer(TwoSizes, tiny(**SMALL_CNN))
    with mappo.Trainer(TwoSizes, tiny(parameter_sharing="separate", total_steps=40, **SMALL_CNN)) as trainer:
        trainer.train()
        assert np.isfinite(trainer.history[-1]["policy_loss"])


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("sharing,critic_input", [("shared", "state"), ("separate", "agent_specific"),
                                                   ("shared", "concat_obs")])
def test_cnn_log_probs_and_values_match_between_rollout_and_update(recurrent, sharing, critic_input):
    cfg = tiny(recurrent=recurrent, chunk_length=5, parameter_sharing=sharing, critic_input=critic_input,
               **SMALL_CNN)
    with mappo.Trainer(PixelTeamEnv, cfg) as trainer:
        trainer.train(total_steps=40)  # one update first, so the networks are not at their initial weights
        trainer.collect()
        buf, learner = trainer.buffer, trainer.learner
        assert trainer.actor.encodes and trainer.critic.encodes
        # the image state() gets a CNN of its own where the critic reads it
        if critic_input != "concat_obs":
            assert isinstance(trainer.critic.state_encoder.net, ConvEncoder)
            assert buf.state.dtype == torch.uint8 and trainer.spec.state_shape == (16, 16, 1)
        else:
            assert trainer.critic.state_encoder is None and trainer.spec.state_dim == 0  # state() not even read
        keys = ("obs", "state", "alive", "action_mask", "actions", "logp", "old_values", "resets") + (
            ("actor_h", "critic_h") if recurrent else ())
        seen = []
        loss = learner._loss  # what update() calls (the loss, or its compiled form)

        def recording(mb, *args):  # what the learner's loss sees: frames still uint8
            seen.append(mb["obs"].dtype)
            return loss(mb, *args)

        with torch.no_grad():
            for mb in buf.minibatches(2, keys, chunk_length=5 if recurrent else 1):
                dist, _ = trainer.actor.dist(trainer.actor.inputs(mb["obs"]), mb["action_mask"], mb.get("actor_h"),
                                             mb["resets"])
                out = trainer.critic.values(trainer.critic.inputs(mb["obs"], mb["state"], mb["alive"]),
                                            mb.get("critic_h"), mb["resets"])
                alive = mb["alive"]
                assert torch.allclose(dist.log_prob(mb["actions"])[alive], mb["logp"][alive], atol=1e-5)
                assert torch.allclose(out.values[alive], mb["old_values"][alive], atol=1e-5)
        learner._loss = recording
        learner.update(buf)
        assert seen and set(seen) == {torch.uint8}


def test_uint8_stays_uint8_from_the_workers_to_the_encoder():
    cfg = tiny(vector_mode="subprocess", total_steps=40, **SMALL_CNN)
    with mappo.Trainer(PixelTeamEnv, cfg) as trainer:
        trainer.train()
        backend = trainer.vec.backend
        assert backend.arrays["obs"].dtype == np.uint8 and backend.arrays["state"].dtype == np.uint8  # shared memory
        assert backend.arrays["final_obs"].dtype == np.uint8
        assert trainer.vec.observe("obs").dtype == torch.uint8
        buf = trainer.buffer
        assert buf.obs.dtype == buf.final_obs.dtype == buf.state.dtype == torch.uint8
        assert int(buf.obs.max()) == 255  # raw pixel values, not scaled
        # the encoder is where frames become float in [0, 1]
        captured = {}
        conv = trainer.actor.encoder.one.convs[0]
        handle = conv.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
        trainer.actor.inputs(buf.obs[0])
        handle.remove()
        assert captured["x"].dtype == torch.float32 and float(captured["x"].max()) == 1.0
        # the checkpointed team layout records the dtype
        assert trainer.state_dict()["team"]["obs_dtype"] == "uint8"


def test_dict_image_and_vector_with_an_action_mask_learns():
    """MixedPixelEnv: agent_0 reads a row off its (CHW float) image beside a vector, with a masked
    action (the env raises if it is sent); agent_1 reads a one-hot vector.  Random: 1/8."""
    cfg = tiny(parameter_sharing="separate", total_steps=6000, num_envs=4, rollout_length=50, ppo_epochs=4,
               hidden_sizes=[32], lr=3e-3, **SMALL_CNN)
    with mappo.Trainer(MixedPixelEnv, cfg) as trainer:
        trainer.train()
        ret = trainer.evaluate(episodes=10)["team_return_mean"]
    assert ret >= 2 * 9.0, ret  # each of 2 agents gets the shared reward: optimum 20 per episode


def test_image_state_critic_learns_pixel_team():
    """PixelTeamEnv with the critic on the image state() (a CNN of its own): random 2.5, optimum 10."""
    cfg = tiny(total_steps=6000, num_envs=4, rollout_length=50, ppo_epochs=4, hidden_sizes=[32], lr=3e-3,
               critic_input="state", **SMALL_CNN)
    with mappo.Trainer(PixelTeamEnv, cfg) as trainer:
        trainer.train()
        ret = trainer.evaluate(episodes=10)["team_return_mean"]
    assert ret >= 9.0, ret


def test_vector_envs_are_unchanged_float32_and_precompute_inputs():
    with mappo.Trainer(CoordinationEnv, tiny(total_steps=40)) as trainer:
        trainer.train()
        assert trainer.spec.obs_dtype == np.float32 and trainer.buffer.obs.dtype == torch.float32
        assert not trainer.actor.encodes and not trainer.critic.encodes


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_cnn_actor_takes_the_envs_uint8_frames(tmp_path, fmt):
    from mappo.export import export_actor

    with mappo.Trainer(PixelTeamEnv, tiny(total_steps=40, **SMALL_CNN)) as trainer:
        trainer.train()
        spec, policy = trainer.spec, trainer.policy
        path = export_actor(trainer.actor, spec, str(tmp_path / ("actor.pt" if fmt == "torchscript" else "actor.onnx")),
                            fmt)
    env = PixelTeamEnv()
    rows = []
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        flat = np.stack([obs[a].ravel() for a in spec.names])[None]  # [1, A, O] uint8, as the env gives it
        assert flat.dtype == np.uint8
        mask = np.array(spec.valid_logits)[None]
        if fmt == "torchscript":
            got = torch.jit.load(path)(torch.from_numpy(flat), torch.from_numpy(mask)).numpy()
        else:
            ort = pytest.importorskip("onnxruntime")
            session = ort.InferenceSession(path)
            assert session.get_inputs()[0].type == "tensor(uint8)"
            got = session.run(None, {"obs": flat, "action_mask": mask})[0]
        expected = policy.act(obs, deterministic=True)
        assert {a: int(got[0, k, 0]) for k, a in enumerate(spec.names)} == {a: int(v) for a, v in expected.items()}
        rows.append(int(env.cue))
    assert len(set(rows)) > 1  # the frames differed


def test_video_of_a_cnn_actor(tmp_path):
    from mappo.video import record_episode, render_env_fn, write_video

    with mappo.Trainer(PixelTeamEnv, tiny(total_steps=40, **SMALL_CNN)) as trainer:
        trainer.train()
        frames = record_episode(trainer.policy, render_env_fn(PixelTeamEnv), seed=0)
    assert len(frames) == PixelTeamEnv.max_steps + 1
    path = write_video(frames, str(tmp_path / "pixels.gif"))
    assert (tmp_path / "pixels.gif").stat().st_size > 0 and path.endswith(".gif")


@pytest.mark.parametrize("name,kwargs", [
    ("butterfly/pistonball", {"n_pistons": 4, "continuous": False, "max_cycles": 12}),
    ("butterfly/cooperative_pong", {"max_cycles": 12}),
    ("butterfly/knights_archers_zombies", {"max_cycles": 12}),
])
def test_butterfly_envs_train_through_their_configs_wrappers(name, kwargs, tmp_path):
    """Each butterfly config's env, wrappers and encoder, shrunk (4 pistons, 12-step episodes, one
    short iteration): frames arrive as uint8 at the configured size, a CNN reads them, and a
    checkpoint resumes."""
    pytest.importorskip("pymunk")
    from envs import make_env_fn

    path = {"butterfly/pistonball": "configs/butterfly_pistonball.yaml",
            "butterfly/cooperative_pong": "configs/butterfly_cooperative_pong.yaml",
            "butterfly/knights_archers_zombies": "configs/butterfly_knights_archers_zombies.yaml"}[name]
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = mappo.Config.from_yaml(os.path.join(root, path), [
        "num_envs=2", "rollout_length=12", "total_steps=24", "ppo_epochs=1", "num_minibatches=1", "eval_every=0",
        "vector_mode=inprocess", "progress=false", "device=cpu"])
    assert cfg.env == name
    cfg = cfg.replace(env_kwargs={**cfg.env_kwargs, **kwargs})
    with mappo.Trainer(make_env_fn(cfg.env, **cfg.env_kwargs), cfg) as trainer:
        trainer.train()
        image = name != "butterfly/knights_archers_zombies"
        assert trainer.actor.encodes == image
        if image:
            assert trainer.buffer.obs.dtype == torch.uint8
            obs = trainer.buffer.obs
            assert obs.max() > 0  # the frames show something (pong's were black without rendering)
            assert not torch.equal(obs[1], obs[-1])  # and move (pistonball's froze without rendering)
            assert trainer.spec.agents[0].image.shape == (64, 64, 4)  # resize_v1 64x64, frame_stack_v2 4
        assert np.isfinite(trainer.history[-1]["policy_loss"])
        trainer.save(str(tmp_path / "ckpt.pt"))
    with mappo.Trainer.load(str(tmp_path / "ckpt.pt"), make_env_fn(cfg.env, **cfg.env_kwargs)) as again:
        assert again.spec.layout() == trainer.spec.layout()


@pytest.mark.slow
def test_a_grid_task_that_needs_two_frames_learns_from_pixels_on_defaults():
    """A 10x10 uint8 board whose dot's direction shows only across two frames, stacked by
    SuperSuit into a 10x10x2 grid: encoder=auto picks a stack that takes it, and the default
    config learns it in 60k steps (one frame, or random: 2.5; the best policy: 9.25)."""
    from tests.toy_envs import GridDotEnv

    cfg = mappo.Config(wrappers=[{"frame_stack_v2": {"stack_size": 2}}], total_steps=60_000, seed=0,
                       progress=False, device="cpu", vector_mode="inprocess")  # the learning settings' defaults
    with mappo.Trainer(GridDotEnv, cfg) as trainer:
        assert trainer.spec.agents[0].image.describe() == "10x10x2 (HWC)"
        trainer.train()
        assert trainer.history[-1]["team_return"] > 7.0
        assert trainer.evaluate(episodes=50)["team_return_mean"] > 7.0
