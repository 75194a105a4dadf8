"""`mappo sweep`: the space file's checks, the pruning callback against a hand-made study, a small
search end to end (best.yaml, trials.md, more trials on a second call) and a stop and resume."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

from mappo import Config  # noqa: E402
from mappo.launchers import LocalLauncher  # noqa: E402
from mappo.sweep import ReportToStudy, load_space, run_sweep, score  # noqa: E402
from tests.helpers import sigterm_once_written  # noqa: E402

SPACE = """
config: {config}
overrides: [total_steps={steps}, eval_every=1, eval_episodes=4, num_envs=2, rollout_length=125,
            vector_mode=inprocess, checkpoint_every=1, "hidden_sizes=[16]"]
metric: eval/agent_return_mean
trials: {trials}
pruner: none
params:
  lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
  clip_eps: {{type: categorical, choices: [0.1, 0.3]}}
"""


def _space(tmp_path, trials=3, steps=750, extra=""):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(config=os.path.abspath("configs/benchmarks/matrix_climbing.yaml"), steps=steps,
                                 trials=trials) + extra)
    return str(path)


def test_space_errors_name_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    config = os.path.abspath("configs/benchmarks/matrix_climbing.yaml")
    cases = [
        ("config: x.yaml\nparams: {lr: {type: float, low: 0.1, high: 1}}\n", "config 'x.yaml' not found"),
        (f"config: {config}\n", "'params' is missing"),
        (f"config: {config}\nparams: {{}}\nbudget: 3\n", r"unknown key\(s\) \['budget'\]"),
        (f"config: {config}\nparams: {{lr: {{low: 0.1, high: 1}}}}\n", r"params.lr: needs 'type'"),
        (f"config: {config}\nparams: {{lr: {{type: float, low: 1, high: 0.1}}}}\n", "params.lr: 'low' and 'high'"),
        (f"config: {config}\nparams: {{lr: {{type: float, low: 0, high: 1, log: true}}}}\n", "log range needs low > 0"),
        (f"config: {config}\nparams: {{lr: {{type: float, low: 0.1, high: 1, choices: [1]}}}}\n",
         r"unknown key\(s\) \['choices'\] for type float"),
        (f"config: {config}\nparams: {{clip_eps: {{type: categorical, choices: [[1, 2]]}}}}\n", "'choices' must be"),
        (f"config: {config}\nparams: {{lrr: {{type: float, low: 0.1, high: 1}}}}\n", "lrr"),
        (f"config: {config}\nparams: {{lr: {{type: float, low: -1, high: 1}}}}\n", "low end: .*'lr'"),
        (f"config: {config}\nobjective: best\nparams: {{lr: {{type: float, low: 0.1, high: 1}}}}\n", "'objective'"),
        (f"config: {config}\npruner: hyper\nparams: {{lr: {{type: float, low: 0.1, high: 1}}}}\n", "'pruner'"),
        (f"config: {config}\ntrials: 0\nparams: {{lr: {{type: float, low: 0.1, high: 1}}}}\n", "'trials' must be"),
        # a metric from evaluations on trials that never evaluate
        (f"config: {config}\noverrides: [eval_every=0]\nparams: {{lr: {{type: float, low: 0.1, high: 1}}}}\n",
         r"'eval/team_return_mean' comes from evaluations.*eval_every=0"),
        (f"config: {config}\nparams: {{eval_every: {{type: categorical, choices: [1, 0, 2]}}}}\n",
         r"params.eval_every choice 0: metric .*\(eval_every=0\)"),
        # a bad choice between good ones is found when the space is read, not when its trial starts
        (f"config: {config}\nparams: {{algorithm: {{type: categorical, choices: [ppo, hapo, happo]}}}}\n",
         r"params.algorithm choice 'hapo': config field 'algorithm' must be one of"),
    ]
    for text, match in cases:
        path.write_text(text)
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            load_space(str(path))


class _Main:
    is_main = True


class _Trainer:
    sync = _Main()


def test_report_to_study_prunes_a_trial_that_trails_the_median(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for final in (10.0, 12.0):  # two finished trials that reached 5 at step 100
        trial = study.ask()
        trial.report(5.0, step=100)
        study.tell(trial, final)
    pruner = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    good = study.ask()
    reporter = ReportToStudy(storage, "s", good._trial_id, "m", pruner)
    assert reporter.on_iteration_end(_Trainer(), {"env_steps": 100, "m": 6.0}) is False  # above the median
    assert reporter.on_iteration_end(_Trainer(), {"env_steps": 150}) is False  # no metric: nothing reported
    bad = study.ask()
    reporter = ReportToStudy(storage, "s", bad._trial_id, "m", pruner)
    assert reporter.on_iteration_end(_Trainer(), {"env_steps": 100, "m": 1.0}) is True
    assert "pruned by Optuna at 100 env steps" in reporter.reason
    states = {t.number: t.state.name for t in optuna.load_study(study_name="s", storage=storage).trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "RUNNING", 3: "PRUNED"}
    assert optuna.load_study(study_name="s", storage=storage).trials[2].intermediate_values == {100: 6.0}


def test_score_reads_the_last_max_or_mean_of_the_metric(tmp_path):
    rows = [{"env_steps": 0, "m": 1.0}, {"env_steps": 10}, {"env_steps": 20, "m": 3.0}, {"env_steps": 30, "m": 2.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [score(str(tmp_path), "m", o) for o in ("last", "max", "mean")] == [2.0, 3.0, 2.0]
    assert score(str(tmp_path), "other", "last") is None and score(str(tmp_path / "none"), "m", "last") is None


@pytest.mark.slow
def test_a_small_sweep_writes_best_yaml_and_a_second_call_adds_trials(tmp_path):
    space = load_space(_space(tmp_path))
    out = str(tmp_path / "out")
    study = run_sweep(space, out, LocalLauncher(2), study_name="climb", poll_s=0.2)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    # each trial's value is its run's last evaluation, and the trials differ in their params
    for t in study.trials:
        assert t.value == score(os.path.join(out, f"trial_{t.number}"), "eval/agent_return_mean", "last")
        # every iteration's evaluation reported, at its env steps (the one before training is no iteration)
        assert sorted(t.intermediate_values) == [250, 500, 750]
    assert len({t.params["lr"] for t in study.trials}) == 3
    best = Config.from_yaml(os.path.join(out, "best.yaml"))
    assert best.lr == pytest.approx(study.best_params["lr"]) and best.clip_eps == study.best_params["clip_eps"]
    assert best.total_steps == 750 and best.callbacks == []  # ready to train, without the study's reporter
    table = open(os.path.join(out, "trials.md")).read()
    assert table.count("| complete |") == 3
    again = run_sweep(space, out, LocalLauncher(2), study_name="climb", trials=4, poll_s=0.2)
    assert len(again.trials) == 4 and again.trials[3].state.name == "COMPLETE"
    assert len({t.params["lr"] for t in again.trials}) == 4  # the new trial is not a repeat of an old one


def test_a_metric_no_row_has_stops_the_sweep_after_its_first_trial(tmp_path):
    """A misspelt metric is found when the first trial ends without it, not after the whole budget."""
    space = dataclasses.replace(load_space(_space(tmp_path, trials=4)), metric="eval/agent_retrun_mean")
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match=r"none of its rows has the metric 'eval/agent_retrun_mean'; its rows have "
                                         r"\[.*'eval/agent_return_mean'"):
        run_sweep(space, out, LocalLauncher(1), study_name="typo", poll_s=0.2)
    study = optuna.load_study(study_name="typo", storage=f"sqlite:///{os.path.abspath(os.path.join(out, 'study.db'))}")
    assert [t.state.name for t in study.trials] == ["FAIL"]


@pytest.mark.slow
def test_sigterm_stops_a_sweep_and_the_same_command_continues_its_trials(tmp_path):
    space = _space(tmp_path, trials=2, steps=5000)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mappo", "sweep", space, "--out", str(out), "--jobs", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    returncode, output = sigterm_once_written(command, [str(out / "trial_0" / "ckpt.pt")], env)
    assert returncode == 130, output
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{out / 'study.db'}")
    if all(t.state.name == "COMPLETE" for t in study.trials):
        pytest.skip("the trials finished before the signal arrived (a very fast machine)")
    assert "RUNNING" in [t.state.name for t in study.trials]
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert "resuming" in (out / "trial_0.log").read_text()
    rows = [json.loads(line) for line in (out / "trial_0" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["env_steps"] for r in rows if "sps" in r]
    assert steps == list(range(250, 5001, 250))  # resumed from its checkpoint: none twice, none lost
    assert "best: trial" in again.stderr and (out / "best.yaml").is_file()


def test_a_bad_storage_url_is_one_clear_error(tmp_path):
    space = load_space(_space(tmp_path))
    with pytest.raises(ValueError, match=r"cannot open the study at --storage 'notadb://x'"):
        run_sweep(space, str(tmp_path / "out"), LocalLauncher(1), storage="notadb://x")
