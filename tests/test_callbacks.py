"""Callbacks: every hook called at its point of the loop, early stopping (its rule by hand, a run it
stops, exact resume of its state), config entries and their errors."""
import json
import shutil
import subprocess
import sys

import pytest

import mappo
from mappo.registries import check_registered
from mappo.callbacks import EarlyStopping
from tests.helpers import tiny
from tests.toy_envs import CoordinationEnv, InfoEnv


class Recorder:
    """Writes down every hook call."""

    def __init__(self):
        self.calls = []

    def on_iteration_end(self, trainer, row):
        self.calls.append(("iteration", row["iteration"]))

    def on_evaluation(self, trainer, evaluation):
        self.calls.append(("evaluation", trainer.iteration, evaluation["episodes"]))

    def on_checkpoint(self, trainer, path):
        self.calls.append(("checkpoint", trainer.iteration, path.rsplit("/", 1)[-1]))

    def on_run_end(self, trainer, history):
        self.calls.append(("end", len(history)))


def test_each_hook_runs_at_its_point_of_the_loop(tmp_path):
    recorder = Recorder()
    cfg = tiny(total_steps=120, eval_every=2, eval_episodes=2, eval_at_start=True, checkpoint_every=3,
               run_dir=str(tmp_path / "run"))
    with mappo.Trainer(CoordinationEnv, cfg, callbacks=[recorder]) as trainer:
        trainer.train()
    assert recorder.calls == [
        ("evaluation", 0, 2),
        ("iteration", 1),
        # the callbacks see a row before the checkpoints written after it hold their state
        ("evaluation", 2, 2), ("iteration", 2), ("checkpoint", 2, "best.pt"),
        ("iteration", 3), ("checkpoint", 3, "ckpt.pt"),
        ("checkpoint", 3, "ckpt.pt"),  # the run's last checkpoint
        ("end", 4)]  # 3 iterations and the evaluation at the start


def test_early_stopping_rule_by_hand():
    stop = EarlyStopping(metric="m", patience=2, min_delta=0.5)
    rows = [{"m": 1.0}, {}, {"m": 1.4}, {"m": 2.0}, {"m": 2.2}, {"m": float("nan")}, {"m": 2.5}]
    # 1.0 best; 1.4 is within min_delta (stale 1); 2.0 improves (stale 0); 2.2 stale 1; 2.5 stale 2: stop
    assert [stop.on_iteration_end(None, r) for r in rows] == [False, False, False, False, False, False, True]
    assert stop.best == 2.0 and "not improved on 2 for 2 rows" in stop.reason
    low = EarlyStopping(metric="loss", mode="min", patience=5, target=0.1)
    assert [low.on_iteration_end(None, {"loss": v}) for v in (0.5, 0.3, 0.1)] == [False, False, True]
    assert "reached 0.1 (target 0.1)" in low.reason
    for kwargs, match in [({"patience": 0}, "patience must be"), ({"mode": "up"}, "mode must be"),
                          ({"min_delta": -1}, "min_delta must be"), ({"metric": ""}, "metric must be")]:
        with pytest.raises(ValueError, match=match):
            EarlyStopping(**kwargs)


def test_early_stopping_stops_a_run_with_a_checkpoint(tmp_path):
    # info/steps is 23/3 every iteration on InfoEnv: it never improves after the first row
    cfg = tiny(total_steps=2000, callbacks=[{"name": "early_stopping", "metric": "info/steps", "patience": 2}],
               run_dir=str(tmp_path / "run"))
    with mappo.Trainer(InfoEnv, cfg) as trainer:
        history = trainer.train()
    assert len(history) == 3 and trainer.env_steps == 120  # 1 best, then 2 stale rows
    assert trainer.stop_reason.startswith("info/steps has not improved") and trainer.interrupted is None
    resumed = mappo.Trainer.load(str(tmp_path / "run" / "ckpt.pt"), InfoEnv)
    assert resumed.callbacks[0].state_dict() == {"best": pytest.approx(23 / 3), "stale": 2}


def test_early_stopping_state_resumes_exactly(tmp_path):
    # CoordinationEnv's team return moves each iteration: a straight run and one resumed half-way stop
    # at the same iteration only if the callback's state comes back with the checkpoint
    entry = {"name": "early_stopping", "metric": "team_return", "patience": 3}
    cfg = tiny(total_steps=2000, seed=3, callbacks=[entry])
    with mappo.Trainer(CoordinationEnv, cfg) as trainer:
        straight = [r["iteration"] for r in trainer.train()]
    assert 3 < len(straight) < 50, straight
    run_dir = str(tmp_path / "run")
    with mappo.Trainer(CoordinationEnv, cfg.replace(run_dir=run_dir)) as trainer:
        first = trainer.train(total_steps=40 * (len(straight) - 2))
    with mappo.Trainer.load(run_dir + "/ckpt.pt", CoordinationEnv) as trainer:
        rest = trainer.train()
    assert [r["iteration"] for r in first + rest] == straight


class RowCounter:
    """Counts the rows it sees; its count is its checkpointed state."""

    def __init__(self, keep_at=None, keep_as=None):
        self.rows, self.keep_at, self.keep_as = 0, keep_at, keep_as

    def on_iteration_end(self, trainer, row):
        self.rows += 1

    def on_checkpoint(self, trainer, path):  # keeps a periodic checkpoint, as a crash after it would leave it
        if trainer.iteration == self.keep_at and path.endswith("ckpt.pt"):
            shutil.copy(path, self.keep_as)

    def state_dict(self):
        return {"rows": self.rows}

    def load_state_dict(self, state):
        self.rows = state["rows"]


def test_a_run_resumed_from_a_periodic_checkpoint_gives_callbacks_the_state_after_its_row(tmp_path):
    kept = str(tmp_path / "at2.pt")
    cfg = tiny(total_steps=200, checkpoint_every=2, run_dir=str(tmp_path / "run"))  # 5 iterations
    straight = RowCounter(keep_at=2, keep_as=kept)
    with mappo.Trainer(CoordinationEnv, cfg, callbacks=[straight]) as trainer:
        trainer.train()
    resumed = RowCounter()
    with mappo.Trainer.load(kept, CoordinationEnv, callbacks=[resumed], run_dir=str(tmp_path / "again")) as trainer:
        assert trainer.iteration == 2 and resumed.rows == 2  # the state after row 2, which it saw
        trainer.train()
    assert straight.rows == resumed.rows == 5


def test_callback_entries_and_their_errors():
    with pytest.raises(ValueError, match=r"config field 'callbacks\[0\]': unknown callback 'early_stoping'"):
        check_registered(tiny(callbacks=["early_stoping"]))
    with pytest.raises(TypeError, match="config field 'callbacks' must be a list"):
        check_registered(tiny(callbacks="early_stopping"))
    with pytest.raises(ValueError, match=r"callbacks\[1\]' needs a string 'name'"):
        mappo.Trainer(CoordinationEnv, tiny(callbacks=["early_stopping", {"patience": 3}]))
    with pytest.raises(TypeError, match=r"callbacks\[0\]': early_stopping .*patiense.*it takes \(metric"):
        mappo.Trainer(CoordinationEnv, tiny(callbacks=[{"name": "early_stopping", "patiense": 3}]))
    with pytest.raises(ValueError, match=r"cannot import callback 'tests.nowhere:Stop'"):
        mappo.Trainer(CoordinationEnv, tiny(callbacks=["tests.nowhere:Stop"]))
    with pytest.raises(TypeError, match=r"callbacks\[0\] .* has none of the hooks"):
        mappo.Trainer(CoordinationEnv, tiny(), callbacks=[object()])
    # by "module:Class" and as a Trainer argument entry; the config's come first
    trainer = mappo.Trainer(CoordinationEnv, tiny(callbacks=["tests.test_callbacks:Recorder"]),
                            callbacks=[{"name": "early_stopping", "patience": 4}])
    assert [type(cb).__name__ for cb in trainer.callbacks] == ["Recorder", "EarlyStopping"]
    assert trainer.callbacks[1].patience == 4
    trainer.close()


def test_cli_early_stopping_from_a_config_override(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "mappo", "train", "configs/mpe_simple_spread.yaml", f"run_dir={run_dir}",
           "total_steps=100000", "num_envs=2", "rollout_length=25", "vector_mode=inprocess", "progress=false",
           "env_kwargs.max_cycles=25", "callbacks=[{name: early_stopping, metric: episode_length, patience: 2}]"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "stopped at iteration 3: episode_length has not improved on 25 for 2 rows" in out.stdout
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and (run_dir / "ckpt.pt").is_file()


def test_early_stopping_says_when_its_metric_cannot_or_did_not_appear(capsys):
    """An eval/ metric on a run without evaluations is an error at the first iteration; a metric
    no row carried (a typo) is said at the end of the run, with the keys the rows had."""
    with mappo.Trainer(CoordinationEnv, tiny(eval_every=0), callbacks=[EarlyStopping()]) as trainer:
        with pytest.raises(ValueError, match="eval_every=0"):
            trainer.train()
    with mappo.Trainer(CoordinationEnv, tiny(), callbacks=[EarlyStopping(metric="team_retrun")]) as trainer:
        history = trainer.train()
    assert len(history) == 5 and trainer.stop_reason is None
    out = capsys.readouterr().out
    assert "metric 'team_retrun' never appeared" in out and "'team_return'" in out
