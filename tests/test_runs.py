"""Exact resume, checkpoints on signals, evaluation with video, progress and run folder,
W&B artifacts, policy export."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import mappo
from envs import make_env_fn
from tests.helpers import write_config, tiny, strip_timing
from tests.toy_envs import ContinuousEnv, CoordinationEnv, EarlyExitEnv, HeterogeneousEnv, MaskedEnv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




@pytest.mark.parametrize("extra", [
    {},
    {"recurrent": True, "chunk_length": 5, "objective": "clip_kl", "lr_schedule": "linear"},
    {"vector_mode": "subprocess", "popart": True, "value_norm": False, "critic_input": "agent_specific"},
], ids=["mlp", "recurrent-kl-linear", "subprocess-popart"])
def test_resume_gives_the_same_history_as_one_straight_run(tmp_path, extra):
    cfg = tiny(**extra)
    with mappo.Trainer(EarlyExitEnv, cfg) as trainer:
        straight = trainer.train()
    assert len(straight) == 5
    run_dir = str(tmp_path / "run")
    with mappo.Trainer(EarlyExitEnv, cfg.replace(run_dir=run_dir)) as trainer:
        first = trainer.train(total_steps=80)  # 2 iterations, then a checkpoint at the end
    resumed = mappo.Trainer.load(os.path.join(run_dir, "ckpt.pt"), EarlyExitEnv)
    with resumed:
        assert resumed.env_steps == 80 and strip_timing(resumed.history) == strip_timing(first)
        second = resumed.train()
    assert strip_timing(first + second) == strip_timing(straight)  # equal numbers, not just close
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5]  # one history across the stop


def test_checkpoint_every_and_contents(tmp_path):
    run_dir = tmp_path / "run"
    saves = []
    real_save = mappo.Trainer.save

    def spy(self, path):
        saves.append(self.iteration)
        return real_save(self, path)

    mappo.Trainer.save = spy
    try:
        with mappo.Trainer(CoordinationEnv, tiny(checkpoint_every=2, run_dir=str(run_dir))) as trainer:
            trainer.train()
    finally:
        mappo.Trainer.save = real_save
    assert saves == [2, 4, 5]  # every 2 iterations, and at the end
    payload = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert {"actor", "critic", "units", "config", "env_steps", "history"} <= set(payload)
    assert {"optimizer", "kl_coef", "value_norm"} == set(payload["units"]["critic"][0])
    assert {"python", "numpy", "torch", "cuda"} == set(payload["resume"][0]["rng"])
    assert payload["resume"][0]["episode"].tolist() == [10, 10]  # 10-step episodes, 100 steps per env
    assert {"config.yaml", "metrics.jsonl", "curves.png", "ckpt.pt"} <= set(os.listdir(run_dir))
    assert not any(n.startswith(".ckpt-") or n.endswith(".tmp.png") for n in os.listdir(run_dir))


def test_sigterm_writes_a_checkpoint_that_resumes(tmp_path):
    config = write_config(tmp_path / "c.yaml", total_steps=10_000_000, checkpoint_every=0, log_every=1)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mappo", "train", config, f"run_dir={run_dir}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    assert not os.path.exists(run_dir / "ckpt.pt")  # checkpoint_every=0: nothing written yet
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "received SIGTERM" in out and "mappo train --resume" in out
    payload = torch.load(run_dir / "ckpt.pt", weights_only=True)
    steps = payload["env_steps"]
    assert steps >= 120 and steps % 40 == 0
    rows = [json.loads(line) for line in open(metrics)]
    assert rows[-1]["env_steps"] == steps  # the checkpoint holds every iteration that was logged
    more = subprocess.run([sys.executable, "-m", "mappo", "train", "--resume", str(run_dir), f"total_steps={steps + 80}",
                           "--trust-env-code"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert more.returncode == 0, more.stderr
    assert f"resuming {run_dir} at {steps} env steps" in more.stdout
    rows = [json.loads(line) for line in open(metrics)]
    assert [r["env_steps"] for r in rows][-3:] == [steps, steps + 40, steps + 80]
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))
    children = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True).stdout.split()
    assert children == []  # no orphaned env workers


def test_progress_lines_without_a_terminal_and_summary(tmp_path):
    config = write_config(tmp_path / "c.yaml", total_steps=200, log_every=2)
    out = subprocess.run([sys.executable, "-m", "mappo", "train", config, f"run_dir={tmp_path / 'run'}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("iter ")]
    assert len(lines) == 2 and "team_return" in lines[0]  # iterations 2 and 4 of 5
    assert "run summary" in out.stdout and "env steps   200" in out.stdout and "\r" not in out.stdout
    png = tmp_path / "run" / "curves.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("ext", [".mp4", ".gif"])
def test_eval_writes_video(tmp_path, ext):
    config = write_config(tmp_path / "c.yaml", total_steps=40)
    run_dir = tmp_path / "run"
    assert subprocess.run([sys.executable, "-m", "mappo", "train", config, f"run_dir={run_dir}", "progress=false"],
                          cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    video = tmp_path / f"episode{ext}"
    out = subprocess.run([sys.executable, "-m", "mappo", "eval", str(run_dir), "--episodes", "3", "--video", str(video),
                          "--trust-env-code"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["episodes"] == 3
    import imageio.v3 as iio

    frames = iio.imread(video, index=None)
    assert frames.shape[0] == 11 and frames.shape[-1] == 3  # the reset frame + 10 steps
    assert not np.array_equal(frames[0], frames[-1])


def test_video_falls_back_to_gif_without_ffmpeg(tmp_path, monkeypatch, capsys):
    from mappo.video import write_video

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import now fails
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 255)]
    written = write_video(frames, str(tmp_path / "x.mp4"))
    assert written.endswith("x.gif") and os.path.isfile(written)
    assert "imageio-ffmpeg is not installed" in capsys.readouterr().err
    # a GIF already there is never replaced by one the user did not ask for: a free name, named
    (tmp_path / "x.gif").write_bytes(b"the user's own gif")
    again = write_video(frames, str(tmp_path / "x.mp4"))
    assert again == str(tmp_path / "x-1.gif") and os.path.isfile(again)
    assert (tmp_path / "x.gif").read_bytes() == b"the user's own gif"
    assert f"writing a GIF instead: {again}" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"\.mp4 or \.gif"):
        write_video(frames, str(tmp_path / "x.avi"))


def test_a_failed_video_write_leaves_no_file(tmp_path):
    from mappo.video import write_video

    bad = [np.zeros((8, 8, 3), np.uint8), np.zeros((9, 9), np.uint8)]  # frames of different shapes
    with pytest.raises(Exception):
        write_video(bad, str(tmp_path / "v.gif"))
    assert os.listdir(tmp_path) == []


def test_onnx_export_without_the_extra_writes_nothing(tmp_path, monkeypatch):
    from mappo.export import export_actor

    def contents():
        return {name: (tmp_path / name).read_bytes() for name in sorted(os.listdir(tmp_path))}

    with mappo.Trainer(HeterogeneousEnv, tiny()) as trainer:
        export_actor(trainer.actor, trainer.spec, str(tmp_path / "actor.pt"))  # an earlier export
        before = contents()
        assert list(before) == ["actor.pt", "actor.pt.json"]
        monkeypatch.setitem(sys.modules, "onnx", None)
        with pytest.raises(ImportError, match="'onnx' extra"):
            export_actor(trainer.actor, trainer.spec, str(tmp_path / "actor.onnx"), "onnx")
        assert contents() == before  # no empty actor.onnx.json, no temp file
        # an export that fails half-way (here: in tracing) leaves the earlier one as it was
        monkeypatch.setattr(torch.jit, "trace", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("trace failed")))
        with pytest.raises(RuntimeError, match="trace failed"):
            export_actor(trainer.actor, trainer.spec, str(tmp_path / "actor.pt"))
        assert contents() == before


def test_video_needs_rgb_array_rendering():
    from mappo.video import record_episode

    with mappo.Trainer(HeterogeneousEnv, tiny()) as trainer:
        with pytest.raises(ValueError, match="render_mode='rgb_array'"):
            record_episode(trainer.policy, HeterogeneousEnv)  # built without render_mode


def test_wandb_offline_logs_model_artifact_and_video(tmp_path, monkeypatch):
    from wandb.sdk.wandb_run import Run

    monkeypatch.setenv("WANDB_SILENT", "true")
    artifacts, videos = [], []
    real_log, real_artifact = Run.log, Run.log_artifact

    def spy_log(self, data, *args, **kwargs):
        videos.extend(k for k, v in data.items() if type(v).__name__ == "Video")
        return real_log(self, data, *args, **kwargs)

    def spy_artifact(self, artifact, *args, **kwargs):
        artifacts.append((artifact.type, sorted(artifact.manifest.entries)))
        return real_artifact(self, artifact, *args, **kwargs)

    monkeypatch.setattr(Run, "log", spy_log)
    monkeypatch.setattr(Run, "log_artifact", spy_artifact)
    cfg = tiny(wandb=True, wandb_mode="offline", run_dir=str(tmp_path / "run"), total_steps=40)
    with mappo.Trainer(CoordinationEnv, cfg) as trainer:
        trainer.train()
    assert artifacts == [("model", ["ckpt.pt"])]
    assert videos == ["eval_video"]
    assert (tmp_path / "run" / "eval.mp4").stat().st_size > 0


def _observations(env_cls, count=100, seed=0):
    """``count`` (obs, infos) pairs from random play."""
    env = env_cls()
    obs, infos = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        out.append((obs, infos))
        actions = {}
        for a in env.agents:
            mask = obs[a]["action_mask"] if isinstance(obs[a], dict) and "action_mask" in obs[a] else \
                infos.get(a, {}).get("action_mask")
            if mask is not None:
                actions[a] = int(rng.choice(np.flatnonzero(mask)))
            else:
                env.action_space(a).seed(int(rng.integers(1 << 30)))
                actions[a] = env.action_space(a).sample()
        obs, _, _, _, infos = env.step(actions)
        if not env.agents:
            obs, infos = env.reset(seed=int(rng.integers(1 << 30)))
    return out


def _flat(spec, obs, infos):
    flat = np.zeros((1, spec.num_agents, spec.obs_dim), np.float32)
    mask = np.array(spec.valid_logits, dtype=bool)[None].copy()
    for k, name in enumerate(spec.names):
        if name in obs:
            spec.flatten_obs(k, obs[name], flat[0, k])
            spec.action_mask(k, obs[name], infos.get(name), mask[0, k])
    return flat, mask


@pytest.mark.parametrize("env_cls,sharing,input_norm", [(HeterogeneousEnv, "shared", True), (MaskedEnv, "separate", False),
                                                        (ContinuousEnv, "shared", False)])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_actor_matches_policy_act(tmp_path, env_cls, sharing, input_norm, fmt):
    cfg = tiny(env=f"tests.toy_envs:{env_cls.__name__}", parameter_sharing=sharing, input_norm=input_norm,
               total_steps=80)
    with mappo.Trainer(env_cls, cfg) as trainer:
        trainer.train()
        run_dir = tmp_path / "run"
        trainer.save(str(run_dir / "ckpt.pt"))
        spec, policy = trainer.spec, trainer.policy
        out = subprocess.run([sys.executable, "-m", "mappo", "export", str(run_dir), "--format", fmt,
                              "--trust-env-code"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        path = run_dir / ("actor.pt" if fmt == "torchscript" else "actor.onnx")
        meta = json.loads(open(str(path) + ".json").read())
        assert meta["agents"] == spec.names and meta["obs_dim"] == spec.obs_dim
        if fmt == "torchscript":
            model = torch.jit.load(str(path))
            run = lambda flat, mask: model(torch.from_numpy(flat), torch.from_numpy(mask)).numpy()  # noqa: E731
        else:
            ort = pytest.importorskip("onnxruntime")
            session = ort.InferenceSession(str(path))
            names = [i.name for i in session.get_inputs()]
            assert names == meta["inputs"] and names[0] == "obs"
            run = lambda flat, mask: session.run(  # noqa: E731
                None, {"obs": flat, "action_mask": mask} if "action_mask" in names else {"obs": flat})[0]
        for obs, infos in _observations(env_cls):
            expected = policy.act(obs, deterministic=True, infos=infos)
            rows = run(*_flat(spec, obs, infos))[0]
            got = {name: spec.decode_action(k, rows[k]) for k, name in enumerate(spec.names) if name in obs}
            for name in expected:
                np.testing.assert_allclose(np.asarray(got[name], dtype=np.float64),
                                           np.asarray(expected[name], dtype=np.float64), rtol=1e-5, atol=1e-5)


def test_exported_recurrent_actor_carries_its_state(tmp_path):
    from mappo.export import export_actor

    with mappo.Trainer(HeterogeneousEnv, tiny(recurrent=True, chunk_length=5, total_steps=40)) as trainer:
        trainer.train()
        path = export_actor(trainer.actor, trainer.spec, str(tmp_path / "a.pt"))
        model = torch.jit.load(path)
        spec, policy = trainer.spec, trainer.policy
        policy.reset()
        hidden = torch.zeros(1, spec.num_agents, 16)
        resets = torch.zeros(1, spec.num_agents, dtype=torch.bool)
        for obs, infos in _observations(HeterogeneousEnv, count=10):
            expected = policy.act(obs, deterministic=True, infos=infos)
            flat, mask = _flat(spec, obs, infos)
            actions, hidden = model(torch.from_numpy(flat), torch.from_numpy(mask), hidden, resets)
            got = {name: spec.decode_action(k, actions[0, k].numpy()) for k, name in enumerate(spec.names)}
            assert {k: np.asarray(v).tolist() for k, v in got.items()} == \
                {k: np.asarray(v).tolist() for k, v in expected.items()}
        assert torch.allclose(hidden, policy.hidden)


def test_loading_with_a_different_env_is_a_clear_error(tmp_path):
    with mappo.Trainer(HeterogeneousEnv, tiny(total_steps=40)) as trainer:  # cfg.env left at its default
        trainer.save(str(tmp_path / "ckpt.pt"))
    with pytest.raises(ValueError, match="was trained on agents.*set it to a registry name"):
        mappo.Trainer.load(str(tmp_path / "ckpt.pt"), make_env_fn("mpe/simple_spread"))


def test_cli_errors_are_clear(tmp_path):
    run = lambda *args: subprocess.run([sys.executable, "-m", "mappo", *args], cwd=ROOT, capture_output=True,  # noqa
                                       text=True, timeout=120)
    missing = run("train", "--resume", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no checkpoint at" in missing.stderr
    nothing = run("train")
    assert nothing.returncode == 2 and "CONFIG" in nothing.stderr
    bad_video = run("eval", str(tmp_path), "--video", "x.avi")
    assert bad_video.returncode == 2 and ".mp4 or .gif" in bad_video.stderr


def test_help_shows_values_and_every_option_has_text():
    from mappo.cli import PARSERS
    from mappo.config import help_text

    text = help_text()
    assert "field(" not in text and "lambda:" not in text and "default_factory" not in text
    assert "hidden_sizes           MLP hidden layers (default: [64, 64])" in text
    assert "(default: mpe/simple_spread)" in text and "critic_lr" in text and "(default: null)" in text
    for command, make in PARSERS.items():
        for action in make()._actions:
            assert action.help, f"mappo {command} {action.option_strings or action.dest} has no help text"


@pytest.mark.parametrize("override,message", [
    ("hidden_sizes=64", "config field 'hidden_sizes' must be a list, e.g. hidden_sizes=[64,64]; got 64"),
    ("groups=[a]", "config field 'groups' must be a mapping, e.g. groups={red: [red_*], blue: [blue_0]}"),
    ("env_kwargs=3", "config field 'env_kwargs' must be a mapping"),
    ("lr=fast", "config field 'lr' must be a number; got 'fast'"),
    ("hidden_sizes=[64,x]", "config field 'hidden_sizes' (entry [1]) must be an integer; got 'x'"),
    ("lrr=0.1", "unknown config field(s) 'lrr' (did you mean 'lr'?)"),
])
def test_bad_overrides_are_explained_in_the_frameworks_words(override, message):
    with pytest.raises(ValueError) as err:
        mappo.Config.from_yaml(os.path.join(ROOT, "configs/mpe_simple_spread.yaml"), [override])
    assert message in str(err.value) and "ListConfig" not in str(err.value) and "AnyNode" not in str(err.value)


def test_an_env_name_typo_gets_did_you_mean():
    with pytest.raises(ValueError, match="unknown env 'mpe/simple_sprad'; did you mean 'mpe/simple_spread'"):
        make_env_fn("mpe/simple_sprad")


def test_an_env_error_is_one_clear_block_with_the_traceback_kept(tmp_path):
    """The CLI reports an env error in two lines naming the env, the copy, the agent and the field;
    the traceback goes behind --debug, or into the run folder's error.log once it holds a run."""
    run = lambda *args: subprocess.run([sys.executable, "-m", "mappo", *args], cwd=ROOT, capture_output=True,  # noqa
                                       text=True, timeout=180)
    config = write_config(tmp_path / "nan.yaml", env="tests.toy_envs:NaNObsEnv", total_steps=400, progress=False)
    failed = run("train", config, f"run_dir={tmp_path / 'a'}")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines() == [
        "mappo train: error: env 'tests.toy_envs:NaNObsEnv', copy 0: agent 'agent_0', observation: not finite "
        "(array([nan, nan, nan], dtype=float32))",
        "  run the same command with --debug for the full traceback"]
    debug = run("train", config, f"run_dir={tmp_path / 'a'}", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "the env's own traceback" in debug.stderr
    # a run folder that holds a checkpoint keeps the report: resume a good run with an env that fails
    good = write_config(tmp_path / "good.yaml", total_steps=40, progress=False)
    assert run("train", good, f"run_dir={tmp_path / 'b'}").returncode == 0
    resumed = run("train", "--resume", str(tmp_path / "b"), "env=tests.toy_envs:FailingEnv", "total_steps=400")
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert "env 'tests.toy_envs:FailingEnv', copy 0: its step raised RuntimeError: boom from FailingEnv" in resumed.stderr
    assert f"the full traceback is in {tmp_path / 'b' / 'error.log'}" in resumed.stderr
    log = (tmp_path / "b" / "error.log").read_text()
    assert "Traceback" in log and "the env's own traceback" in log and "boom from FailingEnv" in log


def test_resuming_a_finished_run_says_how_to_train_on(tmp_path, capsys):
    from mappo.cli import main

    config = write_config(tmp_path / "c.yaml", vector_mode="inprocess", total_steps=40)
    run_dir = str(tmp_path / "run")
    assert main(["train", config, f"run_dir={run_dir}"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", run_dir, "--trust-env-code"]) == 0
    assert (f"the run already has its budget of total_steps=40 env steps; train on with a larger one: "
            f"mappo train --resume {run_dir} total_steps=N") in capsys.readouterr().out


@pytest.mark.parametrize("script,args", [("bench_run.py", ["configs/mpe_simple_spread.yaml", "lr=-1"]),
                                         ("random_baseline.py", ["no_such_config.yaml"])])
def test_scripts_report_a_bad_config_in_one_line(script, args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, os.path.join(root, "scripts", script), *args], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-1500:]
    assert done.stderr.startswith(f"{script}: error: ") and len(done.stderr.strip().splitlines()) == 1
