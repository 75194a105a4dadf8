"""num_seeds: K seeds in one process with one batched update (mappo/seeds.py)."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

import envs
import mappo
from mappo.seeds import SeedStack, seed_folder
from tests.helpers import sigterm_once_written, strip_timing, tiny, write_config
from tests.toy_envs import ContinuousEnv, CoordinationEnv, EarlyExitEnv, PixelTeamEnv, TwoTeamEnv, uneven_batched_env

# float rounding of the batched matmuls against the one-seed ones, after a few updates
TOL = 1e-5


def weights(trainer):
    return {f"{net}.{k}": v for net in ("actor", "critic")
            for k, v in getattr(trainer.learner, net).state_dict().items()}


def assert_same_run(stacked, stacked_history, alone, alone_history, what):
    a, b = strip_timing(stacked_history), strip_timing(alone_history)
    assert len(a) == len(b) > 0, what
    for i, (row_a, row_b) in enumerate(zip(a, b)):
        assert row_a.keys() == row_b.keys(), (what, i, set(row_a) ^ set(row_b))
        for key in row_a:
            assert row_a[key] == pytest.approx(row_b[key], abs=TOL, rel=TOL), (what, i, key)
    wa, wb = weights(stacked), weights(alone)
    for key in wb:
        assert torch.allclose(wa[key], wb[key], atol=TOL, rtol=TOL), (what, key)


CASES = {
    "concat_obs critic": (CoordinationEnv, dict()),
    "separate weights, no value_norm, kl objective": (CoordinationEnv, dict(parameter_sharing="separate", value_norm=False,
                                                                         objective="clip_kl")),
    "groups, popart, pieces": (TwoTeamEnv, dict(groups={"red": ["red_*"], "blue": ["blue_*"]}, popart=True, value_norm=False,
                                                update_rows=16)),
    "Box actions, agents leaving early": (ContinuousEnv, dict(critic_input="local")),
    "agents leaving, team deaths": (EarlyExitEnv, dict(dead_agents="team")),
    "batched simulator": (uneven_batched_env(), dict()),
    "recurrent, agents leaving early": (EarlyExitEnv, dict(recurrent=True, chunk_length=5)),
    "recurrent, separate weights": (CoordinationEnv, dict(recurrent=True, parameter_sharing="separate")),
    "image observations through a CNN": (PixelTeamEnv, dict(cnn_channels=[8, 8], cnn_kernels=[3, 3], cnn_strides=[2, 1],
                                                            cnn_features=32)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_seed_equals_its_own_run(case):
    """Seed k of a num_seeds=3 run trains as a one-seed run with seed cfg.seed + k: the same
    rollouts (episode returns), losses, evaluations and final weights."""
    env_fn, fields = CASES[case]
    cfg = tiny(total_steps=240, num_envs=4, hidden_sizes=[16, 16], eval_every=1, eval_episodes=2, seed=7, **fields)
    with SeedStack(env_fn, cfg.replace(num_seeds=3)) as stack:
        histories = stack.train()
        assert stack.seeds == [7, 8, 9]
        for k, history in enumerate(histories):
            with mappo.Trainer(env_fn, cfg.replace(seed=7 + k)) as alone:
                assert_same_run(stack.trainers[k], history, alone, alone.train(), (case, k))


def test_seeds_differ_and_the_update_is_per_seed():
    """The seeds are not copies of one run: different weights from the start, different
    rollouts; and one seed's weights move only by its own gradient (the equality test above
    would also pass if every seed trained on the union of the minibatches only by accident of
    equal data, so this pins that they differ)."""
    with SeedStack(CoordinationEnv, tiny(num_seeds=2, total_steps=80)) as stack:
        histories = stack.train()
        w0, w1 = weights(stack.trainers[0]), weights(stack.trainers[1])
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)
    assert [r["policy_loss"] for r in histories[0]] != [r["policy_loss"] for r in histories[1]]


def test_seed_folders_are_ordinary_runs(tmp_path):
    """Each seed writes an ordinary one-seed run folder, which loads and resumes as one; the
    resumed seed goes on as its one-seed run would."""
    cfg = tiny(total_steps=120, num_envs=2, rollout_length=20, seed=3)
    root = str(tmp_path / "run")
    with SeedStack(CoordinationEnv, cfg.replace(num_seeds=2, total_steps=80, run_dir=root)) as stack:
        stack.train()
    assert sorted(os.listdir(root)) == ["seed3", "seed4", "seeds.json"]
    for seed in (3, 4):
        folder = seed_folder(root, seed)
        saved = yaml.safe_load(open(os.path.join(folder, "config.yaml")))
        assert (saved["seed"], saved["num_seeds"]) == (seed, 1)
        assert {"ckpt.pt", "metrics.jsonl"} <= set(os.listdir(folder))
        with mappo.Trainer.load(os.path.join(folder, "ckpt.pt"), CoordinationEnv) as resumed:
            rest = resumed.train(total_steps=120)
        with mappo.Trainer(CoordinationEnv, cfg.replace(seed=seed)) as alone:
            straight = alone.train()
        assert len(rest) == 1 and rest[0]["env_steps"] == 120
        for key, value in strip_timing(rest)[0].items():
            assert value == pytest.approx(strip_timing(straight)[-1][key], abs=TOL, rel=TOL), (seed, key)


def test_a_seed_a_callback_stops_ends_alone():
    """Callbacks are per seed: early stopping on one seed's target ends that seed; the others go on."""
    cfg = tiny(num_seeds=2, total_steps=200, seed=0)

    class StopSeed1:
        def on_iteration_end(self, trainer, row):
            return trainer.cfg.seed == 1 and row["iteration"] >= 2

    with SeedStack(CoordinationEnv, cfg, callbacks=[StopSeed1()]) as stack:
        histories = stack.train()
    assert [len(h) for h in histories] == [5, 2]


def test_refusals_name_the_field():
    with pytest.raises(ValueError, match="num_seeds"):
        tiny(num_seeds=0)
    with pytest.raises(ValueError, match="num_seeds"):
        tiny(seed=2**32 - 1, num_seeds=2)
    with pytest.raises(ValueError, match="SeedStack"):
        mappo.Trainer(CoordinationEnv, tiny(num_seeds=2))
    with pytest.raises(ValueError, match="compile"):
        SeedStack(CoordinationEnv, tiny(num_seeds=2, compile=True))
    with pytest.raises(ValueError, match="algorithm='happo'"):
        SeedStack(CoordinationEnv, tiny(num_seeds=2, algorithm="happo", parameter_sharing="separate"))


@pytest.mark.slow
def test_vmas_seeds_equal_their_own_runs():
    """On VMAS (its own random state per env): each seed equals its one-seed run."""
    pytest.importorskip("vmas")
    env_fn = envs.make_env_fn("vmas/simple_spread", max_steps=10)
    cfg = tiny(total_steps=160, num_envs=4, hidden_sizes=[16, 16], seed=11)
    with SeedStack(env_fn, cfg.replace(num_seeds=2)) as stack:
        histories = stack.train()
        for k, history in enumerate(histories):
            with mappo.Trainer(env_fn, cfg.replace(seed=11 + k)) as alone:
                assert_same_run(stack.trainers[k], history, alone, alone.train(), ("vmas", k))


def test_a_stopped_seed_run_resumes_together(tmp_path):
    """A num_seeds run stopped part-way goes on from its seeds' checkpoints, together (the
    Python API and `mappo train --resume RUN_DIR`), each seed as its one-seed run would."""
    cfg = tiny(total_steps=120, num_envs=2, rollout_length=20, seed=3)
    root = str(tmp_path / "run")
    with SeedStack(CoordinationEnv, cfg.replace(num_seeds=2, total_steps=80, run_dir=root)) as stack:
        stack.train()

    def load_one(folder, **fields):
        return mappo.Trainer.load(os.path.join(folder, "ckpt.pt"), CoordinationEnv, **fields)

    with SeedStack.load(root, load_one) as resumed:
        assert resumed.seeds == [3, 4] and resumed.cfg.num_seeds == 2
        rest = resumed.train(total_steps=120)
    for k, seed in enumerate((3, 4)):
        with mappo.Trainer(CoordinationEnv, cfg.replace(seed=seed)) as alone:
            straight = strip_timing(alone.train())
        assert [r["env_steps"] for r in rest[k]] == [120]
        for key, value in strip_timing(rest[k])[0].items():
            assert value == pytest.approx(straight[-1][key], abs=TOL, rel=TOL), (seed, key)


def test_cli_trains_and_resumes_the_seeds(tmp_path):
    """`mappo train CONFIG num_seeds=2` writes a folder per seed under run_dir, and
    `mappo train --resume RUN_DIR` continues both."""
    config = write_config(tmp_path / "c.yaml", vector_mode="inprocess", total_steps=40)
    out = tmp_path / "run"
    first = subprocess.run([sys.executable, "-m", "mappo", "train", config, "num_seeds=2", f"run_dir={out}"],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "num_seeds=2: seeds 0..1" in first.stdout
    assert f"continue every seed with: mappo train --resume {out} --trust-env-code" in first.stdout
    again = subprocess.run([sys.executable, "-m", "mappo", "train", "--resume", str(out), "total_steps=8e1",
                            "--trust-env-code"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "seed 0 at 40, seed 1 at 40 env steps" in again.stdout
    for seed in (0, 1):
        rows = [json.loads(line) for line in open(out / f"seed{seed}" / "metrics.jsonl")]
        assert [r["env_steps"] for r in rows if "policy_loss" in r] == [40, 80]


def test_sigterm_stops_every_seed_with_its_checkpoint(tmp_path):
    """SIGTERM to a num_seeds run stops every seed after the iteration, each with its checkpoint,
    and `--resume RUN_DIR` finishes them."""
    config = write_config(tmp_path / "c.yaml", vector_mode="inprocess", total_steps=200000, checkpoint_every=1)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mappo", "train", config, "num_seeds=3", f"run_dir={out}"]
    ckpts = [str(out / f"seed{s}" / "ckpt.pt") for s in range(3)]
    returncode, output = sigterm_once_written(command, ckpts, dict(os.environ), timeout=120)
    assert returncode == 128 + signal.SIGTERM, output[-2000:]
    # a seed that had already collected its next rollout when the signal came finishes that iteration
    steps = [torch.load(p, weights_only=False)["env_steps"] for p in ckpts]
    assert all(0 < s < 200000 for s in steps) and max(steps) - min(steps) <= 40, steps
    target = max(steps) + 80
    again = subprocess.run([sys.executable, "-m", "mappo", "train", "--resume", str(out), f"total_steps={target}",
                            "--trust-env-code"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [torch.load(p, weights_only=False)["env_steps"] for p in ckpts] == [target] * 3


def test_each_seed_is_its_own_wandb_run(tmp_path, monkeypatch):
    """W&B (offline): every seed logs to a run of its own, all open side by side, each with its
    seed's rows and config."""
    from wandb.sdk.wandb_run import Run

    monkeypatch.setenv("WANDB_SILENT", "true")
    sent = []
    real_log = Run.log

    def spy_log(self, data, *args, **kwargs):
        if "iteration" in data:
            sent.append((self.id, self.config["seed"], data["env_steps"], data["policy_loss"]))
        return real_log(self, data, *args, **kwargs)

    monkeypatch.setattr(Run, "log", spy_log)
    cfg = tiny(num_seeds=2, total_steps=80, wandb=True, wandb_mode="offline", run_dir=str(tmp_path / "run"))
    with SeedStack(CoordinationEnv, cfg) as stack:
        histories = stack.train()
    for k, seed in enumerate((0, 1)):
        rows = [(steps, loss) for _, s, steps, loss in sent if s == seed]
        assert rows == [(r["env_steps"], r["policy_loss"]) for r in histories[k]], seed
        assert len({run for run, s, *_ in sent if s == seed}) == 1
        assert any(d.name.startswith("offline-run") for d in (tmp_path / "run" / f"seed{seed}" / "wandb").iterdir())
    assert len({run for run, *_ in sent}) == 2


def test_seeds_share_the_cores_among_their_env_workers(monkeypatch):
    """Subprocess envs with num_workers=0: each seed gets cores // K workers (at least one), not
    one per core for every seed."""
    from mappo.machine import Machine

    monkeypatch.setattr(Machine, "this", classmethod(lambda cls: Machine(cores=8, cuda=False)))
    cfg = tiny(num_seeds=4, vector_mode="subprocess", num_envs=4)
    with SeedStack(CoordinationEnv, cfg) as stack:
        assert [t.cfg.num_workers for t in stack.trainers] == [2] * 4
        assert [t.resources.num_workers for t in stack.trainers] == [2] * 4
    with SeedStack(CoordinationEnv, cfg.replace(num_seeds=16, num_envs=2)) as stack:
        assert {t.resources.num_workers for t in stack.trainers} == {1}


@pytest.mark.slow
def test_jaxmarl_seeds_equal_their_own_runs():
    """On JaxMARL MPE (keys from (seed, env, episode, step)): each seed equals its one-seed run."""
    pytest.importorskip("jaxmarl")
    env_fn = envs.make_env_fn("jaxmarl/MPE_simple_spread_v3")
    cfg = tiny(total_steps=200, num_envs=4, rollout_length=25, hidden_sizes=[16, 16], seed=21)
    with SeedStack(env_fn, cfg.replace(num_seeds=2)) as stack:
        histories = stack.train()
        for k, history in enumerate(histories):
            with mappo.Trainer(env_fn, cfg.replace(seed=21 + k)) as alone:
                assert_same_run(stack.trainers[k], history, alone, alone.train(), ("jaxmarl", k))


def test_flush_denormal_holds_for_every_seed_until_the_last_ends():
    """Denormal flushing is process-wide: a seed that ends early does not turn it off under the others."""
    flushed = []

    class Watch:
        def on_iteration_end(self, trainer, row):
            if trainer.cfg.seed == 0:  # a denormal times one is zero only while flushing
                flushed.append((torch.tensor([1e-39]) * 1.0).item() == 0.0)
            return trainer.cfg.seed == 1

    with SeedStack(CoordinationEnv, tiny(num_seeds=2, total_steps=120), callbacks=[Watch()]) as stack:
        histories = stack.train()
    assert [len(h) for h in histories] == [3, 1] and flushed == [True, True, True]
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0  # torch's default again after the run


def test_a_nan_in_one_seed_names_it_and_stops_the_others_unchanged(tmp_path):
    """A non-finite loss in seed 1's update: the error names seed 1 and goes to its error.log only;
    no seed has stepped on that minibatch (in pieces too), and the others keep their checkpoints."""
    cfg = tiny(num_seeds=3, total_steps=120, update_rows=8, checkpoint_every=1, run_dir=str(tmp_path / "run"))
    with SeedStack(CoordinationEnv, cfg) as stack:
        learner = stack.trainers[1].learner
        real_targets, calls = learner.targets, []

        def poisoned(buf):  # the second update of seed 1 sees a NaN advantage
            out = real_targets(buf)
            calls.append(1)
            if len(calls) == 2:
                buf.advantages[0, 0, 0] = float("nan")
            return out

        learner.targets = poisoned
        before = {}

        class Keep:
            def on_iteration_end(self, trainer, row):
                before[trainer.cfg.seed] = weights(trainer)

        for t in stack.trainers:
            t.callbacks.append(Keep())
        with pytest.raises(FloatingPointError, match=r"seed 1: non-finite .*The other seeds stopped; seeds \[0, 1, 2\] "
                                                     r"keep their last checkpoints"):
            stack.train()
        for k in (0, 2):
            after = weights(stack.trainers[k])
            assert all(torch.equal(after[n], before[k][n]) for n in after), k
    assert os.path.isfile(tmp_path / "run" / "seed1" / "error.log")
    assert not any(os.path.isfile(tmp_path / "run" / f"seed{s}" / "error.log") for s in (0, 2))
    for s in (0, 2):
        assert torch.load(tmp_path / "run" / f"seed{s}" / "ckpt.pt", weights_only=False)["env_steps"] == 40


def test_resume_refuses_seeds_that_do_not_belong_together(tmp_path):
    root = str(tmp_path / "run")
    cfg = tiny(num_seeds=2, total_steps=40, run_dir=root)
    with SeedStack(CoordinationEnv, cfg) as stack:
        stack.train()

    def load_one(folder, **fields):
        return mappo.Trainer.load(os.path.join(folder, "ckpt.pt"), CoordinationEnv, **fields)

    # one seed continued alone with another setting: the batched update would run it with seed 0's
    with mappo.Trainer.load(os.path.join(root, "seed1", "ckpt.pt"), CoordinationEnv, ppo_epochs=3) as alone:
        alone.train(total_steps=80)
    with pytest.raises(ValueError, match=r"seeds 0 and 1 .* different configs \(ppo_epochs: 2 vs 3\)"):
        SeedStack.load(root, load_one)
    # a listed seed without a checkpoint
    os.remove(os.path.join(root, "seed1", "ckpt.pt"))
    with pytest.raises(FileNotFoundError, match=r"seed1'\] hold no checkpoint"):
        SeedStack.load(root, load_one)


def test_a_seed_run_folder_holds_one_run(tmp_path):
    """Other seeds in the folder are an error, or with overwrite are replaced (their folders go)."""
    root = tmp_path / "run"
    with SeedStack(CoordinationEnv, tiny(num_seeds=3, total_steps=40, run_dir=str(root))) as stack:
        stack.train()
    with pytest.raises(ValueError, match=r"holds a num_seeds run of seeds \[0, 1, 2\], not \[5, 6\]"):
        with SeedStack(CoordinationEnv, tiny(num_seeds=2, seed=5, total_steps=40, run_dir=str(root))) as stack:
            stack.train()
    with SeedStack(CoordinationEnv, tiny(num_seeds=2, total_steps=40, run_dir=str(root), overwrite=True,
                                         hidden_sizes=[8])) as stack:
        stack.train()
    assert sorted(os.listdir(root)) == ["seed0", "seed1", "seeds.json"]
    # a one-seed run may not write into a num_seeds run's folder either
    with pytest.raises(ValueError, match="holds a num_seeds run"):
        with mappo.Trainer(CoordinationEnv, tiny(total_steps=40, run_dir=str(root), overwrite=True)) as one:
            one.train()
    with pytest.raises(ValueError, match="holds a one-seed run"):
        with mappo.Trainer(CoordinationEnv, tiny(total_steps=40, run_dir=str(tmp_path / "one"))) as one:
            one.train()
        with SeedStack(CoordinationEnv, tiny(num_seeds=2, run_dir=str(tmp_path / "one"))) as stack:
            stack.train()


def test_a_seed_saved_after_training_keeps_its_own_random_streams(tmp_path):
    cfg = tiny(total_steps=80, seed=0)
    with SeedStack(CoordinationEnv, cfg.replace(num_seeds=2)) as stack:
        stack.train()
        stack.save(0, str(tmp_path / "s0.pt"))
    with mappo.Trainer.load(str(tmp_path / "s0.pt"), CoordinationEnv) as resumed:
        rest = strip_timing(resumed.train(total_steps=160))
    with mappo.Trainer(CoordinationEnv, cfg.replace(total_steps=160)) as alone:
        straight = strip_timing(alone.train())
    for row, ref in zip(rest, straight[-len(rest):]):
        for key in row:
            assert row[key] == pytest.approx(ref[key], abs=TOL, rel=TOL), key


def test_overwrite_removes_nothing_while_a_folder_is_in_use(tmp_path):
    """overwrite=true on a num_seeds folder whose seed folder another run holds: an error naming it,
    before any old seed's files are removed."""
    from mappo import runfolder

    root = tmp_path / "run"
    with SeedStack(CoordinationEnv, tiny(num_seeds=3, total_steps=40, run_dir=str(root))) as stack:
        stack.train()
    for busy in ("seed2", "seed1"):  # a seed the new run drops, and one it would write
        fd = runfolder.hold(str(root / busy / ".lock"))
        try:
            with pytest.raises(runfolder.RunFolderInUse, match=busy):
                with SeedStack(CoordinationEnv, tiny(num_seeds=2, total_steps=40, run_dir=str(root),
                                                     overwrite=True)) as stack:
                    stack.train()
        finally:
            runfolder.let_go(fd)
        assert all((root / f"seed{s}" / "ckpt.pt").is_file() for s in (0, 1, 2))
        assert json.load(open(root / "seeds.json")) == {"seeds": [0, 1, 2]}


def test_a_nan_before_any_checkpoint_says_nothing_is_kept(tmp_path):
    cfg = tiny(num_seeds=2, total_steps=120, checkpoint_every=0, run_dir=str(tmp_path / "run"))
    with SeedStack(CoordinationEnv, cfg) as stack:
        real_targets = stack.trainers[1].learner.targets

        def poisoned(buf):
            out = real_targets(buf)
            buf.advantages[0, 0, 0] = float("nan")
            return out

        stack.trainers[1].learner.targets = poisoned
        with pytest.raises(FloatingPointError, match="seed 1: .*no seed had written a checkpoint yet"):
            stack.train()
    assert not (tmp_path / "run").exists()
