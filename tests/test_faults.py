"""Fault probes: a trainer killed hard, envs that misbehave.  Each asserts a clear outcome and
no process left behind."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pids(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _wait_for_workers(run_dir):
    """Wait until the `mappo train` run in ``run_dir`` has logged 2 iterations; check that it runs
    as the trainer and its 2 env workers; returns the pgrep pattern that finds them."""
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    pattern = f"run_dir={run_dir}"
    assert len(_pids(pattern)) == 3  # the trainer and its 2 env workers
    return pattern


def test_workers_exit_when_the_trainer_is_killed(tmp_path):
    config = write_config(tmp_path / "c.yaml", num_envs=4, total_steps=100_000_000, progress=False)
    run_dir = tmp_path / "killed_run"
    proc = subprocess.Popen([sys.executable, "-m", "mappo", "train", str(config), f"run_dir={run_dir}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pattern = _wait_for_workers(run_dir)
    os.kill(proc.pid, signal.SIGKILL)  # no handler, no close(): as an OOM kill
    proc.wait(timeout=10)
    deadline = time.time() + 5
    while time.time() < deadline and _pids(pattern):
        time.sleep(0.1)
    left = _pids(pattern)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "env workers outlived the trainer"


def test_sigterm_to_the_whole_process_group_still_writes_a_checkpoint(tmp_path):
    """Slurm, `kill -- -PGID` and `pkill -f` signal every process of a job, env workers too: the
    workers leave it to the trainer, which checkpoints and closes them (were they to die first,
    the trainer would stop on "env worker died" without a checkpoint)."""
    config = write_config(tmp_path / "c.yaml", total_steps=10_000_000, checkpoint_every=0, log_every=1)
    run_dir = tmp_path / "group_signalled"
    proc = subprocess.Popen([sys.executable, "-m", "mappo", "train", config, f"run_dir={run_dir}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    pattern = _wait_for_workers(run_dir)
    os.killpg(proc.pid, signal.SIGTERM)  # the trainer is its session's (and group's) leader
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "received SIGTERM" in out and "died" not in err
    assert torch.load(run_dir / "ckpt.pt", weights_only=True)["env_steps"] >= 80
    assert _pids(pattern) == []


def test_a_nan_observation_is_reported_at_the_env_boundary(tmp_path):
    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import NaNObsEnv

    with mappo.Trainer(NaNObsEnv, tiny(total_steps=400)) as trainer:
        with pytest.raises(RuntimeError, match=r"env 'tests.toy_envs:NaNObsEnv', copy \d: agent 'agent_0', "
                                               r"observation: not finite"):
            trainer.train()  # NaN from each env's step 50: in the 3rd iteration of 20 steps


def test_a_non_finite_loss_stops_training_before_the_weights_change(tmp_path, monkeypatch):
    import torch

    import mappo
    import mappo.loss
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    calls = []
    real_value_loss = mappo.loss.value_loss

    def value_loss(*args, **kwargs):  # NaN from the 3rd iteration on (2 epochs x 2 minibatches each)
        calls.append(1)
        loss = real_value_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) > 8 else loss

    monkeypatch.setattr(mappo.loss, "value_loss", value_loss)
    run_dir = tmp_path / "run"
    trainer = mappo.Trainer(CoordinationEnv, tiny(total_steps=400, checkpoint_every=1))
    with pytest.raises(FloatingPointError, match="non-finite value_loss .*stopping before the optimiser step"):
        trainer.train(run_dir=str(run_dir))
    params = torch.cat([p.detach().reshape(-1) for p in trainer.actor.parameters()])
    assert bool(torch.isfinite(params).all())
    trainer.close()
    saved = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert saved["iteration"] == 2  # the last good checkpoint stays
    assert all(bool(torch.isfinite(v).all()) for v in saved["actor"].values() if v.is_floating_point())


def test_load_refuses_a_checkpoint_with_non_finite_parameters(tmp_path):
    import pytest
    import torch

    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    with mappo.Trainer(CoordinationEnv, tiny(total_steps=40)) as trainer:
        trainer.train()
        payload = trainer.state_dict()
    name = next(k for k in payload["actor"] if k.endswith("weight"))
    payload["actor"][name] = torch.full_like(payload["actor"][name], float("nan"))
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="non-finite actor parameters"):
        mappo.Trainer.load(str(tmp_path / "nan.pt"), CoordinationEnv)


def test_config_rejects_infinite_coefficients():
    import pytest

    import mappo

    for field in ("value_coef", "huber_delta", "entropy_coef"):
        with pytest.raises(ValueError, match=f"'{field}' must be a finite number"):
            mappo.Config(**{field: float("inf")})


def test_state_returning_none_is_named():
    import pytest

    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import NoneStateEnv

    with pytest.raises(ValueError, match=r"NoneStateEnv.state\(\) returned None"):
        mappo.Trainer(NoneStateEnv, tiny())


def test_evaluation_cuts_episodes_that_never_end(capsys):
    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import EndlessEnv

    with mappo.Trainer(EndlessEnv, tiny(eval_max_steps=30)) as trainer:
        stats = trainer.evaluate(episodes=3)
    assert stats["episodes"] == 3 and stats["episodes_cut"] == 3
    assert stats["episode_length_mean"] == 30 and 0 <= stats["team_return_mean"] <= 60
    assert "cut 3 episode(s) at eval_max_steps=30" in capsys.readouterr().err


def test_batched_evaluation_cuts_long_episodes_once_per_env():
    import pytest

    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import uneven_batched_env

    with mappo.Trainer(uneven_batched_env(), tiny(num_envs=2, eval_max_steps=10)) as trainer:
        stats = trainer.evaluate(episodes=8)
    # env 0's 2-step episode (-2) and seven 50-step episodes cut at 10 steps (-10 each)
    assert stats["episodes_cut"] == 7 and stats["team_return_mean"] == pytest.approx((-2 - 7 * 10) / 8)


def test_a_fresh_run_into_a_used_folder_is_refused_unless_overwrite(tmp_path):
    import json

    import pytest

    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    run_dir = str(tmp_path / "run")
    with mappo.Trainer(CoordinationEnv, tiny(total_steps=80)) as trainer:
        trainer.train(run_dir=run_dir)
    with mappo.Trainer(CoordinationEnv, tiny(total_steps=80)) as trainer:
        with pytest.raises(ValueError, match="already holds a run.*--resume"):
            trainer.train(run_dir=run_dir)
    with mappo.Trainer(CoordinationEnv, tiny(total_steps=40, overwrite=True)) as trainer:
        trainer.train(run_dir=run_dir)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["iteration"] for r in rows] == [1]  # replaced, not appended


def test_a_locked_run_folder_refuses_a_second_run(tmp_path):
    import pytest

    import mappo
    from mappo.runfolder import RunFolderLock
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    held = RunFolderLock(str(tmp_path / "run"))  # as a run in another process would hold it
    try:
        with mappo.Trainer(CoordinationEnv, tiny(total_steps=40)) as trainer:
            with pytest.raises(RuntimeError, match="is in use by another run"):
                trainer.train(run_dir=str(tmp_path / "run"))
    finally:
        held.release()


def test_resume_after_a_crash_drops_rows_logged_after_the_checkpoint(tmp_path):
    import json

    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    run_dir = tmp_path / "run"
    with mappo.Trainer(CoordinationEnv, tiny(total_steps=160, checkpoint_every=2, loggers=["csv"])) as trainer:
        trainer.train(total_steps=120, run_dir=str(run_dir))  # rows 1-3, ckpt.pt at the end: iteration 3
    with open(run_dir / "metrics.jsonl", "a") as f:  # a crashed continuation logged iteration 4, no checkpoint
        f.write(json.dumps({"iteration": 4, "env_steps": 160}) + "\n")
    with mappo.Trainer.load(str(run_dir / "ckpt.pt"), CoordinationEnv) as trainer:
        trainer.train(run_dir=str(run_dir))
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4] and [r["env_steps"] for r in rows] == [40, 80, 120, 160]
    assert "value_loss" in rows[-1]  # the real iteration 4, not the crashed run's row
    assert (run_dir / "metrics.csv").read_text().count("\n") == 5  # header + the same 4 rows


def test_a_run_stopped_during_its_start_evaluation_logs_it_once(tmp_path):
    """Stopped before its first iteration (checkpoint at iteration 0), a run resumes at 0 and
    evaluates the untrained policy again: the first evaluation's rows must not stay beside it."""
    import json

    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    run_dir = tmp_path / "run"
    cfg = tiny(total_steps=80, eval_every=1, eval_at_start=True, eval_episodes=2)
    with mappo.Trainer(CoordinationEnv, cfg) as trainer:
        trainer.train(total_steps=0, run_dir=str(run_dir))  # the start evaluation and a checkpoint at iteration 0
    with mappo.Trainer.load(str(run_dir / "ckpt.pt"), CoordinationEnv) as trainer:
        trainer.train(run_dir=str(run_dir))
    for name in ("metrics.jsonl", "evaluations.jsonl"):
        rows = [json.loads(line) for line in open(run_dir / name)]
        assert [r["iteration"] for r in rows] == [0, 1, 2], name


def test_a_checkpoint_cannot_run_code_without_consent(tmp_path):
    """A checkpoint is plain data, but `env: module:callable` in its config would import and call
    anything: subprocess:run with args=["touch", marker] ran the command before."""
    import torch

    import mappo
    from mappo.cli import main
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    with mappo.Trainer(CoordinationEnv, tiny(total_steps=40)) as trainer:
        trainer.train()
        payload = trainer.state_dict()
    marker = tmp_path / "marker"
    payload["config"].update(env="subprocess:run", env_kwargs={"args": ["touch", str(marker)]})
    path = tmp_path / "crafted.pt"
    torch.save(payload, path)
    assert main(["eval", str(path)]) == 2
    assert main(["export", str(path), "--out", str(tmp_path / "a.pt")]) == 2
    assert main(["train", "--resume", str(path)]) == 2
    assert not marker.exists()
    # a user's own env: refused without consent, run with --trust-env-code or when named on the command line
    payload["config"].update(env="tests.toy_envs:CoordinationEnv", env_kwargs={})
    torch.save(payload, path)
    assert main(["eval", str(path), "--episodes", "1"]) == 2
    assert main(["eval", str(path), "--episodes", "1", "--trust-env-code"]) == 0
    assert main(["eval", str(path), "--episodes", "1", "--env", "tests.toy_envs:CoordinationEnv"]) == 0


def test_corrupt_truncated_foreign_and_altered_checkpoints_are_one_line_errors(tmp_path):
    import os

    import pytest
    import torch

    import mappo
    from mappo.checkpoint import load_checkpoint, save_checkpoint
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    with mappo.Trainer(CoordinationEnv, tiny(total_steps=40)) as trainer:
        trainer.train()
        good = tmp_path / "good.pt"
        save_checkpoint(str(good), trainer.state_dict())
    assert oct(os.stat(good).st_mode & 0o777) == oct(0o666 & ~_umask())  # like the run's other files
    data = good.read_bytes()
    cases = {"random.pt": os.urandom(4096), "truncated.pt": data[: len(data) // 2], "empty.pt": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not a readable mappo checkpoint") as err:
            load_checkpoint(str(tmp_path / name))
        assert "weights_only" not in str(err.value) and "\n" not in str(err.value)
    torch.save({"some": "other file"}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="is not a mappo checkpoint"):
        load_checkpoint(str(tmp_path / "foreign.pt"))
    payload = torch.load(good, weights_only=True)  # one weight changed after writing, checksum kept
    first = next(k for k in payload["actor"] if k.endswith("weight"))
    payload["actor"][first].view(-1)[0] += 1e-3
    torch.save(payload, tmp_path / "altered.pt")
    with pytest.raises(ValueError, match="fails its checksum"):
        load_checkpoint(str(tmp_path / "altered.pt"))


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("field,value", [("num_envs", 3), ("parameter_sharing", "separate"), ("hidden_sizes", [8]),
                                         ("recurrent", True), ("critic_input", "local"), ("input_norm", True)])
def test_resume_with_a_changed_model_setting_names_the_field(tmp_path, field, value):
    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    with mappo.Trainer(CoordinationEnv, tiny(total_steps=40)) as trainer:
        trainer.train()
        trainer.save(str(tmp_path / "ckpt.pt"))
    with pytest.raises(ValueError, match=f"was trained with {field}=.*these fields shape"):
        mappo.Trainer.load(str(tmp_path / "ckpt.pt"), CoordinationEnv, **{field: value})
    with mappo.Trainer.load(str(tmp_path / "ckpt.pt"), CoordinationEnv, total_steps=80) as trainer:
        assert len(trainer.train()) == 1  # other fields may change


def test_the_summary_after_a_crash_points_to_no_checkpoint_that_was_not_written(tmp_path, capsys):
    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import NaNObsEnv

    trainer = mappo.Trainer(NaNObsEnv, tiny(total_steps=400, checkpoint_every=0, progress=True))
    with pytest.raises(RuntimeError, match="not finite"):
        trainer.train(run_dir=str(tmp_path / "run"))
    trainer.close()
    out = capsys.readouterr().out
    assert "run summary" in out and "--resume" not in out and not (tmp_path / "run" / "ckpt.pt").exists()


def test_a_hanging_env_is_an_error_naming_it_and_leaves_no_worker(tmp_path):
    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import HangingEnv

    cfg = tiny(vector_mode="subprocess", num_workers=2, num_envs=2, env_timeout_s=2.0)
    trainer = mappo.Trainer(HangingEnv, cfg)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"env 'tests.toy_envs:HangingEnv', copies \[\d\] .*took longer than "
                                           r"env_timeout_s=2 s"):
        trainer.train()
    assert time.monotonic() - start < 30
    procs = list(trainer.vec.backend.procs) if trainer.vec is not None else []
    trainer.close()
    for p in procs:
        p.join(timeout=5)
        assert not p.is_alive()


def test_a_second_sigterm_stops_a_run_whose_env_hangs(tmp_path):
    config = write_config(tmp_path / "c.yaml", env="tests.toy_envs:HangingEnv", env_timeout_s=0, total_steps=1000,
                          progress=False)
    run_dir = tmp_path / "hung_run"
    proc = subprocess.Popen([sys.executable, "-m", "mappo", "train", str(config), f"run_dir={run_dir}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    deadline = time.time() + 120  # wait until the trainer is blocked on the hung step (workers up)
    while time.time() < deadline and len(_pids(f"run_dir={run_dir}")) < 3:
        time.sleep(0.2)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)  # the first: "stopping after this iteration", which never ends
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)  # the second: at once
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "second SIGTERM" in err
    deadline = time.time() + 5
    while time.time() < deadline and _pids(f"run_dir={run_dir}"):
        time.sleep(0.1)
    assert _pids(f"run_dir={run_dir}") == []


def _tmpfs(path, size, read_only=False):
    """Mount a tmpfs of ``size`` at ``path`` (root only); skip the test where that is not possible."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("needs root to mount a tmpfs")
    return path


def test_a_full_disk_keeps_the_last_checkpoint_and_says_why(tmp_path):
    import torch

    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    with mappo.Trainer(CoordinationEnv, tiny(total_steps=40)) as probe:
        probe.train()
        probe.save(str(tmp_path / "probe.pt"))
    size = os.path.getsize(tmp_path / "probe.pt")
    disk = _tmpfs(tmp_path / "disk", f"{int(size * 1.6) // 1024}k")  # room for one checkpoint, not two
    try:
        trainer = mappo.Trainer(CoordinationEnv, tiny(total_steps=400, checkpoint_every=1))
        with pytest.raises(OSError, match="could not write checkpoint .*ckpt.pt.*disk full"):
            trainer.train(run_dir=str(disk / "run"))
        trainer.close()
        saved = torch.load(disk / "run" / "ckpt.pt", weights_only=True)  # the last good one
        assert saved["iteration"] >= 1
        assert not [n for n in os.listdir(disk / "run") if n.startswith(".ckpt-")]  # no temp file left
    finally:
        subprocess.run(["umount", str(disk)])


def test_exporting_into_a_read_only_folder_is_a_clear_error(tmp_path):
    import mappo
    from mappo.export import export_actor
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    folder = _tmpfs(tmp_path / "ro", "64k", read_only=True)
    try:
        with mappo.Trainer(CoordinationEnv, tiny()) as trainer:
            with pytest.raises(OSError, match="cannot write the exported actor to .*Read-only file system"):
                export_actor(trainer.actor, trainer.spec, str(folder / "actor.pt"))
    finally:
        subprocess.run(["umount", str(folder)])


def test_small_gaps_name_their_field(tmp_path):
    import json

    import mappo
    from envs import make_env_fn
    from tests.helpers import tiny

    with pytest.raises(ValueError, match="'seed' must be in"):
        mappo.Config(seed=2 ** 40)
    with pytest.raises(TypeError, match="'env_kwargs'.*'mpe/simple_spread'"):
        mappo.Trainer(make_env_fn("mpe/simple_spread", bogus=1), tiny(env="mpe/simple_spread",
                                                                       env_kwargs={"bogus": 1}))
    from mappo.cli import _finite

    # mappo eval prints strict JSON: a non-finite number becomes null
    stats = {"team_return_mean": float("nan"), "return_mean": {"a": float("inf")}, "episodes": 3}
    text = json.dumps(_finite(stats), allow_nan=False)
    assert json.loads(text) == {"team_return_mean": None, "return_mean": {"a": None}, "episodes": 3}


@pytest.mark.parametrize("mode,field,what", [
    ("wrong_shape", "agent 'agent_0', observation", r"\(5,\) does not fit its space Box"),
    ("unknown_agent", "agent 'intruder', rewards", "not in possible_agents"),
    ("missing_reward", "agent 'agent_1', rewards", "an agent that acted got no reward"),
    ("none_reward", "agent 'agent_1', reward", "None is not a finite number"),
    ("missing_obs", "agent 'agent_0', observations", "a live agent got no observation"),
])
@pytest.mark.parametrize("vector_mode", ["inprocess", "subprocess"])
def test_an_env_that_breaks_its_contract_is_named(mode, field, what, vector_mode):
    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import broken_env

    with mappo.Trainer(broken_env(mode), tiny(vector_mode=vector_mode, num_workers=2)) as trainer:
        with pytest.raises(RuntimeError, match=rf"env 'tests.toy_envs:BrokenEnv_{mode}', copy \d: {field}: ({what})"):
            trainer.train()


_SCRIPT = """
import sys
import mappo
from tests.helpers import tiny
from tests.toy_envs import CoordinationEnv

ending = sys.argv[1]
trainer = mappo.Trainer(CoordinationEnv, tiny(vector_mode="subprocess", num_workers=2, total_steps=80))
if ending == "exception":
    def broken_update():
        raise RuntimeError("a bug inside train()")
    trainer.update = broken_update
trainer.train()
print(trainer.evaluate(episodes=2)["team_return_mean"])
if ending == "close":
    trainer.close()
elif ending == "with":
    with trainer:
        trainer.train(total_steps=120)
print("script done", flush=True)
"""


@pytest.mark.parametrize("ending", ["no_close", "close", "with", "exception"])
def test_scripts_exit_without_close(tmp_path, ending):
    """A script that trains and evaluates exits promptly however it ends: without close(), with
    close(), with `with Trainer(...)`, or with an exception inside train().  multiprocessing's exit
    handler would wait forever on env workers, which ignore SIGTERM, if nothing closed them first."""
    script = tmp_path / f"script_{ending}.py"
    script.write_text(_SCRIPT)
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(script), ending], cwd=ROOT, capture_output=True, text=True,
                              timeout=90, env={**os.environ, "PYTHONPATH": ROOT})
    except subprocess.TimeoutExpired:
        for pid in _pids(str(script)):
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the script ending with {ending!r} did not exit within 90 s")
    if ending == "exception":
        assert proc.returncode == 1 and "a bug inside train()" in proc.stderr
    else:
        assert proc.returncode == 0 and "script done" in proc.stdout, proc.stderr[-2000:]
    assert time.monotonic() - start < 60
    assert _pids(str(script)) == [], "env workers outlived the script"


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_that_blocks(tmp_path, monkeypatch, capsys):
    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv, FailingEnv

    # an env error at step 5 in a folder the run created: the folder goes with it
    run_dir = tmp_path / "new"
    with mappo.Trainer(FailingEnv, tiny(total_steps=400, checkpoint_every=0, progress=True)) as trainer:
        with pytest.raises(RuntimeError, match="boom from FailingEnv"):
            trainer.train(run_dir=str(run_dir))
    assert not run_dir.exists()
    out = capsys.readouterr().out
    assert "its files were removed" in out and "curves.png" not in out
    # ... in a folder that holds a file of the user's: only the run's files go
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with mappo.Trainer(FailingEnv, tiny(total_steps=400, loggers=["csv"])) as trainer:
        with pytest.raises(RuntimeError, match="boom"):
            trainer.train(run_dir=str(tmp_path / "mine"))
    assert sorted(os.listdir(tmp_path / "mine")) == [".lock", "notes.txt"]
    # a logger whose package is missing: the same command then runs without overwrite=true
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    cfg = tiny(total_steps=40, loggers=["tensorboard"])
    with mappo.Trainer(CoordinationEnv, cfg) as trainer:
        with pytest.raises(ImportError, match="tensorboard"):
            trainer.train(run_dir=str(run_dir))
    assert not run_dir.exists()
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard")
    with mappo.Trainer(CoordinationEnv, cfg) as trainer:
        trainer.train(run_dir=str(run_dir))
    assert (run_dir / "ckpt.pt").exists() and (run_dir / "tensorboard").is_dir()


def test_a_fresh_run_replaces_what_a_killed_run_left_before_its_first_checkpoint(tmp_path, capsys):
    import json

    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import CoordinationEnv

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 7\n")  # as a SIGKILLed run leaves them: no checkpoint
    (run_dir / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "env_steps": 999}) + "\n")
    with mappo.Trainer(CoordinationEnv, tiny(total_steps=40)) as trainer:
        trainer.train(run_dir=str(run_dir))
    assert "replacing config.yaml, metrics.jsonl of a run that stopped before its first checkpoint" in \
        capsys.readouterr().err
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert [r["env_steps"] for r in rows] == [40]


def test_resume_of_a_folder_without_a_checkpoint_says_what_to_do(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    resume = [sys.executable, "-m", "mappo", "train", "--resume", str(run_dir)]
    proc = subprocess.run(resume, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "holds no checkpoint (ckpt.pt)" in proc.stderr
    assert f"mappo train CONFIG run_dir={run_dir}" in proc.stderr
    (run_dir / "config.yaml").write_text(f"run_dir: {run_dir}\n")
    proc = subprocess.run(resume, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "stopped before writing one" in proc.stderr
    assert f"`mappo train {run_dir}/config.yaml`" in proc.stderr


@pytest.mark.parametrize("vector_mode", ["inprocess", "subprocess"])
def test_an_env_whose_state_fails_once_the_episode_ended_still_trains(vector_mode):
    """SISL multiwalker's state() raises after its last step; the episode's final state is then
    the last one it gave (only a time-limit bootstrap reads it), and training goes on."""
    import mappo
    from tests.helpers import tiny
    from tests.toy_envs import StateGoneAtEndEnv

    with mappo.Trainer(StateGoneAtEndEnv, tiny(vector_mode=vector_mode, num_workers=2, total_steps=80)) as trainer:
        assert trainer.spec.state_dim == 3
        history = trainer.train()
        assert history[-1]["episodes"] == 4  # 10-step episodes ended and reset
