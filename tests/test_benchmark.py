"""Benchmark statistics against hand-computed values, and the multi-seed runner end to end."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from mappo import marl_eval
from mappo.benchmark import eval_curves, load_suite, report, run_command, run_suite, select
from mappo.stats import curve_ci95, max_and_average, mean_ci95
from tests.helpers import sigterm_once_written

T_975 = {2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}  # Student t quantiles, df = S - 1


def test_mean_ci95_by_hand():
    # [1, 2, 3]: mean 2, sample std 1, half-width t(0.975, 2) * 1 / sqrt(3)
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(T_975[2] / math.sqrt(3)) and half == pytest.approx(2.4841377)
    # [2, 4, 4, 6]: mean 4, sample std sqrt(8/3)
    mean, half = mean_ci95([2.0, 4.0, 4.0, 6.0])
    assert mean == 4.0 and half == pytest.approx(T_975[3] * math.sqrt(8 / 3) / 2)
    mean, half = mean_ci95([5.0])
    assert mean == 5.0 and math.isnan(half)  # one seed: no interval
    assert mean_ci95([7.0, 7.0, 7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci95([])
    with pytest.raises(ValueError, match="non-finite"):
        mean_ci95([1.0, float("nan")])


def test_max_and_average_by_hand():
    # 3 seeds x 4 evaluations; means over seeds per evaluation: 1, 3, 5, 4 -> the best is index 2
    returns = np.array([[0.0, 2.0, 4.0, 4.0],
                        [1.0, 3.0, 5.0, 3.0],
                        [2.0, 4.0, 6.0, 5.0]])
    s = max_and_average(returns)
    assert s["max_index"] == 2 and s["max_mean"] == 5.0
    assert s["max_ci"] == pytest.approx(T_975[2] * 1.0 / math.sqrt(3))  # [4, 5, 6]: std 1
    # per-seed averages over evaluations: 2.5, 3.0, 4.25 -> mean 3.25, std sqrt(0.8125)
    assert s["average_mean"] == pytest.approx(3.25)
    assert s["average_ci"] == pytest.approx(T_975[2] * math.sqrt(((2.5 - 3.25) ** 2 + 0.25 ** 2 + 1.0) / 2) / math.sqrt(3))
    # a tie for the best evaluation takes the first
    assert max_and_average(np.array([[1.0, 3.0, 3.0]]))["max_index"] == 1
    mean, half = curve_ci95(returns)
    assert mean.tolist() == [1.0, 3.0, 5.0, 4.0] and half[0] == pytest.approx(T_975[2] / math.sqrt(3))
    with pytest.raises(ValueError, match="seeds, evaluations"):
        max_and_average(np.zeros(3))


def _write_metrics(run_dir, points):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for step, value in points:
            f.write(json.dumps({"iteration": step // 10, "env_steps": step, "eval/team_return_mean": value}) + "\n")
            f.write(json.dumps({"iteration": step // 10 + 1, "env_steps": step + 10, "team_return": 0.0}) + "\n")


def test_eval_curves_keep_the_evaluations_every_seed_has(tmp_path):
    _write_metrics(tmp_path / "a", [(0, 1.0), (100, 2.0), (200, 3.0)])
    _write_metrics(tmp_path / "b", [(0, 2.0), (100, 4.0)])  # still running
    steps, returns, used = eval_curves([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "missing")],
                                       "eval/team_return_mean")
    assert steps.tolist() == [0, 100] and returns.tolist() == [[1.0, 2.0], [2.0, 4.0]] and len(used) == 2


SUITE = """
seeds: [0, 1]
tasks:
  - name: climb
    config: {config}
    metric: eval/agent_return_mean
    overrides: [total_steps=2500, eval_every=2, eval_episodes=4, num_envs=2, rollout_length=125,
                vector_mode=inprocess, checkpoint_every=1]
    published: {{mappo: 175.0, mappo_ci: 0.0, ippo: 175.0}}
"""


def _suite(tmp_path):
    config = tmp_path / "climb.yaml"
    config.write_text("env: matrix/climbing\nhidden_sizes: [16]\neval_at_start: true\neval_deterministic: false\n")
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(config=config))
    return str(path)


def test_suite_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [0]\ntasks:\n  - name: x\n    config: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_suite(str(bad))
    bad.write_text("seeds: [0]\nruns: []\n")
    with pytest.raises(ValueError, match="'seeds' and 'tasks'"):
        load_suite(str(bad))
    bad.write_text(f"seeds: [0]\ntasks:\n  - name: x\n    config: {_suite(tmp_path)}\n    published: {{best: 1}}\n")
    with pytest.raises(ValueError, match="'published' takes the keys"):
        load_suite(str(bad))
    # a metric the report cannot read, or one the runs never log, is found before anything runs
    good = open(_suite(tmp_path)).read()
    bad.write_text(good.replace("metric: eval/agent_return_mean", "metric: eval/agent_retrun_mean"))
    with pytest.raises(ValueError, match=r"task 'climb': 'metric' must be one of .*got 'eval/agent_retrun_mean'"):
        load_suite(str(bad))
    bad.write_text(good.replace("eval_every=2", "eval_every=0"))
    with pytest.raises(ValueError, match=r"task 'climb': its metric .* eval_every=0"):
        load_suite(str(bad))
    bad.write_text(good.replace("eval_every=2", "eval_evry=2"))  # a task's override names the task
    with pytest.raises(ValueError, match=r"task 'climb': overrides: unknown config field\(s\) 'eval_evry'"):
        load_suite(str(bad))
    suite = load_suite(_suite(tmp_path))
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['nope'\]"):
        select(suite, "nope", None)
    assert select(suite, None, "3").seeds == [3]


@pytest.mark.slow
def test_runner_runs_resumes_and_reports(tmp_path):
    suite = load_suite(_suite(tmp_path))
    out = str(tmp_path / "out")
    # seed 1 was stopped after its first checkpoint: the runner must resume it, not start over
    first = run_command(suite.tasks[0], 1, out)
    assert "--resume" not in first and "seed=1" in first
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(first[:4] + first[4:] + ["total_steps=500"], check=True, env=env, capture_output=True)
    run_dir = os.path.join(out, "climb", "seed1")
    assert os.path.isfile(os.path.join(run_dir, "ckpt.pt"))
    assert run_command(suite.tasks[0], 1, out)[4:6] == ["--resume", run_dir]
    failed = run_suite(suite, out, jobs=2, poll_s=0.2)
    assert failed == {}
    for seed in (0, 1):
        record = json.load(open(os.path.join(out, "climb", f"seed{seed}.json")))
        assert record["done"] and record["wall_s"] > 0
        rows = [json.loads(line) for line in open(os.path.join(out, "climb", f"seed{seed}", "metrics.jsonl"))]
        evals = [r["env_steps"] for r in rows if "eval/agent_return_mean" in r]
        assert evals == [0, 500, 1000, 1500, 2000, 2500] and rows[-1]["env_steps"] == 2500  # the resumed run went on to the end
    assert "resuming" in open(os.path.join(out, "climb", "seed1.log")).read()
    # a second call has nothing left to run
    assert run_suite(suite, out, jobs=2, poll_s=0.2) == {}
    table = report(suite, out)
    line = [row for row in table.splitlines() if row.startswith("| climb")][0]
    assert "175.0 ± 0.0 (175.0)" in line and "| 2 |" in line and "2,500" in line
    assert os.path.isfile(os.path.join(out, "results.md")) and os.path.isfile(os.path.join(out, "results.png"))
    # the marl-eval layout: every evaluation once (the resumed run's too), with each episode's return,
    # and the best checkpoint re-evaluated on 10x the episodes
    data = json.load(open(os.path.join(out, "marl_eval.json")))
    marl_eval.check_layout(data)
    runs = data["matrix"]["climb"]["mappo"]
    assert sorted(runs) == ["run_0", "run_1"]
    for run in runs.values():
        assert [run[f"step_{k}"]["step_count"] for k in range(6)] == [0, 500, 1000, 1500, 2000, 2500]
        assert len(run) == 7 and all(len(run[f"step_{k}"]["return"]) == 4 for k in range(6))
        assert len(run["absolute_metrics"]["return"]) == 40  # eval_episodes=4
        assert all(-25 * 30 <= v <= 25 * 11 for v in run["absolute_metrics"]["return"])  # the payoffs' range
    assert "IQM return [95% CI]" in table and "| matrix/climb | mappo | 2 |" in table
    # the command line's --report reads the same runs
    cli = subprocess.run([sys.executable, "-m", "mappo", "benchmark", _suite(tmp_path), "--out", out, "--report"],
                         capture_output=True, text=True, env=env)
    assert cli.returncode == 0 and line in cli.stdout


@pytest.mark.slow
def test_two_runners_on_one_folder_never_drive_the_same_run(tmp_path, capsys):
    from mappo import runfolder

    suite = load_suite(_suite(tmp_path))
    out = str(tmp_path / "out")
    os.makedirs(os.path.join(out, "climb"))
    # another `mappo benchmark` on the same --out is driving seed 0
    other = runfolder.hold(os.path.join(out, "climb", "seed0.lock"))
    assert run_suite(suite, out, jobs=2, poll_s=0.2) == {}  # skipped, not failed
    assert f"skip climb seed 0: another mappo benchmark (pid {os.getpid()}) is running it" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(out, "climb", "seed0.json"))  # no record written over its run
    assert json.load(open(os.path.join(out, "climb", "seed1.json")))["done"]
    runfolder.let_go(other)
    assert run_suite(suite, out, jobs=2, poll_s=0.2) == {}  # once free, the next call runs it
    assert json.load(open(os.path.join(out, "climb", "seed0.json")))["done"]
    assert json.load(open(os.path.join(out, "climb", "seed1.json")))["attempts"] == 1  # done once, not again


@pytest.mark.slow
def test_sigterm_stops_the_runs_with_checkpoints_and_the_same_command_finishes_them(tmp_path):
    import signal

    suite_path = _suite(tmp_path)
    out = str(tmp_path / "out")
    command = [sys.executable, "-m", "mappo", "benchmark", suite_path, "--out", out, "--jobs", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ckpts = [os.path.join(out, "climb", f"seed{s}", "ckpt.pt") for s in (0, 1)]
    returncode, output = sigterm_once_written(command, ckpts, env, timeout=120)
    assert returncode == 130, output
    records = [json.load(open(os.path.join(out, "climb", f"seed{s}.json"))) for s in (0, 1)]
    if all(r["done"] for r in records):
        pytest.skip("both runs finished before the signal arrived (a very fast machine)")
    assert all(r["last_returncode"] in (0, 128 + signal.SIGTERM) for r in records), records
    # no run is left behind: every mappo train child has exited
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert out not in ps
    # the same command finishes what was stopped, from the checkpoints
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    for seed in (0, 1):
        record = json.load(open(os.path.join(out, "climb", f"seed{seed}.json")))
        assert record["done"]
        rows = [json.loads(line) for line in open(os.path.join(out, "climb", f"seed{seed}", "metrics.jsonl"))]
        steps = [r["env_steps"] for r in rows if "sps" in r]
        assert steps == sorted(set(steps)) and steps[-1] == 2500  # no step trained twice, none lost


def test_plot_script_prints_maximum_and_average_returns_of_runs(tmp_path, capsys):
    from scripts.plot import main

    _write_metrics(tmp_path / "seed0", [(0, 1.0), (100, 3.0), (200, 2.0)])
    _write_metrics(tmp_path / "seed1", [(0, 2.0), (100, 4.0), (200, 5.0)])
    assert main([f"X={tmp_path}/seed*", "--key", "eval/team_return_mean", "--smooth", "1",
                 "--out", str(tmp_path / "c.png")]) == 0
    line = [row for row in capsys.readouterr().out.splitlines() if row.startswith("X ")][-1]
    # evaluation means over runs: 1.5, 3.5, 3.5 -> the first best (100); averages per run 2.0, 3.667
    t1 = 12.706204736174704  # t(0.975, 1)
    assert f"{3.5:9.3f} +- {t1 * np.std([3.0, 4.0], ddof=1) / np.sqrt(2):.3f} (100)" in line
    assert f"{(2.0 + 11 / 3) / 2:9.3f} +- {t1 * np.std([2.0, 11 / 3], ddof=1) / np.sqrt(2):.3f}" in line


@pytest.mark.slow
def test_a_stopped_run_is_not_continued_under_changed_settings(tmp_path):
    suite = load_suite(_suite(tmp_path))
    out = str(tmp_path / "out")
    first = run_command(suite.tasks[0], 0, out)
    subprocess.run(first + ["total_steps=500"], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    changed = select(suite, None, "0")
    changed.tasks[0].overrides = [*changed.tasks[0].overrides, "lr=1e-3"]
    with pytest.raises(ValueError, match=r"lr: 0.0005 -> 0.001.*delete"):
        run_suite(changed, out, jobs=1)
    # a larger budget alone is no change of settings: the run goes on to it
    assert "--resume" in run_command(suite.tasks[0], 0, out)


# ---------------------------------------------------------------------------------------------
# the field's statistics (rliable) and the marl-eval layout, against hand-computed values


def test_iqm_by_hand():
    from mappo.stats import iqm

    assert iqm(np.arange(1.0, 9.0)[:, None]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    # over all runs x tasks: sorted 1 2 3 4 10 20 30 40, the middle half 3 4 10 20
    assert iqm(np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])) == pytest.approx(9.25)


def test_probability_of_improvement_by_hand():
    from mappo.stats import probability_of_improvement

    # task 1: pairs (3,1) win, (3,3) tie, (4,1) win, (4,3) win -> 3.5/4; task 2: X always loses -> 0
    x, y = np.array([[3.0, 0.0], [4.0, 0.0]]), np.array([[1.0, 1.0], [3.0, 1.0]])
    assert probability_of_improvement(x, y) == pytest.approx((0.875 + 0.0) / 2)
    assert probability_of_improvement(y, x) == pytest.approx((0.125 + 1.0) / 2)
    assert probability_of_improvement(x, x) == pytest.approx(0.5)


def test_stratified_bootstrap_intervals_by_hand():
    from mappo.stats import interval_estimates, probability_of_improvement_ci

    mean = lambda s: np.array([s.mean()])  # noqa: E731
    # two runs 0 and 1: resampled means 0, 0.5, 1 with chances 1/4, 1/2, 1/4 -> the 95% interval [0, 1]
    est = interval_estimates({"a": np.array([[0.0], [1.0]])}, mean, reps=4000)["a"]
    assert est["point"][0] == 0.5 and est["low"][0] == 0.0 and est["high"][0] == 1.0
    # stratified: runs are resampled within each task, so task 2 always gives 10 and the mean over
    # all scores is (task 1's resampled mean + 10) / 2, in [5, 5.5]; an unstratified bootstrap could
    # draw both scores of one task and reach 0.5 or 10
    est = interval_estimates({"a": np.array([[0.0, 10.0], [1.0, 10.0]])}, mean, reps=4000)["a"]
    assert est["low"][0] == 5.0 and est["high"][0] == 5.5
    # the same seed gives the same interval; equal runs give a point
    again = interval_estimates({"a": np.array([[0.0, 10.0], [1.0, 10.0]])}, mean, reps=4000)["a"]
    assert again["low"][0] == est["low"][0] and again["high"][0] == est["high"][0]
    flat = interval_estimates({"a": np.full((5, 2), 3.0)}, reps=1000)["a"]  # the IQM
    assert flat["point"][0] == flat["low"][0] == flat["high"][0] == 3.0
    poi = probability_of_improvement_ci(np.array([[1.0], [1.0]]), np.array([[0.0], [0.0]]), reps=500)
    assert poi == {"point": 1.0, "low": 1.0, "high": 1.0}


def test_performance_profile_and_normalisation_by_hand():
    from mappo.stats import normalise_per_task, performance_profile

    scores = np.arange(1.0, 9.0)[:, None]
    assert performance_profile(scores, [0.0, 2.5, 7.5, 8.0]).tolist() == [1.0, 0.75, 0.125, 0.0]
    a, b = np.array([[0.0, 10.0], [2.0, 20.0]]), np.array([[4.0, 30.0], [1.0, 10.0]])
    n = normalise_per_task({"a": a, "b": b})  # task 1 spans 0..4, task 2 spans 10..30
    assert n["a"].tolist() == [[0.0, 0.0], [0.5, 0.5]] and n["b"].tolist() == [[1.0, 1.0], [0.25, 0.0]]
    with pytest.raises(ValueError, match="same tasks"):
        normalise_per_task({"a": a, "b": b[:, :1]})
    with pytest.raises(ValueError, match="non-finite"):
        normalise_per_task({"a": np.array([[np.nan]])})


def _marl_eval_run(returns, absolute=None):
    run = {f"step_{k}": {"step_count": 100 * k, "return": list(r)} for k, r in enumerate(returns)}
    if absolute is not None:
        run["absolute_metrics"] = {"return": list(absolute)}
    return run


def test_marl_eval_layout_and_scores_by_hand(tmp_path):
    data = {"smax": {"2s3z": {
        "mappo": {"run_0": _marl_eval_run([[0.0, 1.0], [2.0, 4.0]], absolute=[5.0, 7.0]),
                  "run_1": _marl_eval_run([[0.0], [1.0]])},
        "other": {"run_0": _marl_eval_run([[1.0], [3.0]]), "run_1": _marl_eval_run([[2.0], [2.0]]),
                  "run_2": _marl_eval_run([[9.0], [9.0]])}}}}
    marl_eval.check_layout(data)
    # a run's score: its absolute metric's mean, else its last evaluation's mean
    assert marl_eval.final_score(data["smax"]["2s3z"]["mappo"]["run_0"]) == 6.0
    assert marl_eval.final_score(data["smax"]["2s3z"]["mappo"]["run_1"]) == 1.0
    tasks, matrices = marl_eval.score_matrices(data)
    # not every run has an absolute metric: all are scored by their last evaluation
    assert tasks == ["smax/2s3z"] and matrices["mappo"].tolist() == [[3.0], [1.0]]
    assert matrices["other"].tolist() == [[3.0], [2.0], [9.0]]
    for run in data["smax"]["2s3z"]["other"].values():
        run["absolute_metrics"] = {"return": [4.0]}
    data["smax"]["2s3z"]["mappo"]["run_1"]["absolute_metrics"] = {"return": [1.0, 1.0]}
    assert marl_eval.score_matrices(data)[1]["mappo"].tolist() == [[6.0], [1.0]]  # now all are
    from mappo.benchmark import statistics_section

    text = statistics_section(data, str(tmp_path), reps=500)
    # P(mappo > other) on the absolute metrics 6, 1 against 4, 4, 4: (6,4) wins 3 pairs, (1,4) loses 3 -> 0.5
    assert "| mappo | other | 0.50 [" in text and "| smax/2s3z | other | 3 |" in text
    assert os.path.isfile(tmp_path / "profiles.png") and os.path.isfile(tmp_path / "comparison.png")
    bad = json.loads(json.dumps(data))
    del bad["smax"]["2s3z"]["mappo"]["run_1"]["step_1"]["step_count"]
    with pytest.raises(ValueError, match=r"smax/2s3z/mappo/run_1/step_1: needs an int step_count"):
        marl_eval.check_layout(bad, "x.json")
    bad = {"smax": {"2s3z": {"mappo": {"run_0": {"step_0": {"step_count": 0, "return": 3.0}}}}}}
    with pytest.raises(ValueError, match="step_0/return: expected a non-empty list"):
        marl_eval.check_layout(bad)
    with pytest.raises(ValueError, match=r"runs \['run_0'\] are given twice"):
        marl_eval.merge(data, {"smax": {"2s3z": {"other": {"run_0": {}}}}})


def test_marl_eval_run_layout_carries_each_episode_and_the_win_outcome(tmp_path):
    run_dir = tmp_path / "seed0"
    run_dir.mkdir()
    rows = [{"iteration": 4, "env_steps": 800, "team_return": [2.0, 4.0], "agent_return": [1.0, 2.0],
             "episode_length": [30, 40], "info/won": [0.0, 1.0]},
            {"iteration": 0, "env_steps": 0, "team_return": [0.0], "agent_return": [0.0], "episode_length": [50]}]
    (run_dir / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # an absolute_metrics.json written before the info metrics holds the outcome as "won"
    (run_dir / marl_eval.ABSOLUTE).write_text(json.dumps({"per_episode": {
        "team_return": [6.0], "agent_return": [3.0], "episode_length": [20], "won": [1.0]}}))
    run = marl_eval.run_layout(str(run_dir), "eval/agent_return_mean")
    assert run == {"step_0": {"step_count": 0, "return": [0.0], "episode_length": [50]},
                   "step_1": {"step_count": 800, "return": [1.0, 2.0], "episode_length": [30, 40], "won": [0.0, 1.0]},
                   "absolute_metrics": {"return": [3.0], "episode_length": [20], "won": [1.0]}}
    assert marl_eval.run_layout(str(run_dir), "eval/team_return_mean")["step_1"]["return"] == [2.0, 4.0]
    with pytest.raises(ValueError, match="metric must be one of"):
        marl_eval.run_layout(str(run_dir), "eval/won_mean")
    # an episode that reported no outcome (cut short) counts as not won
    rows[0]["info/won"] = [None, 1.0]
    (run_dir / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert marl_eval.run_layout(str(run_dir), "eval/agent_return_mean")["step_1"]["won"] == [0.0, 1.0]


def test_a_sigterm_during_a_child_run_stops_the_child_too(tmp_path):
    # the report's absolute-metric evaluations run as children: a SIGTERM to the runner must not
    # leave one working on alone
    import signal
    import threading
    import time

    from mappo.launchers import run_child

    pid_file = tmp_path / "child.pid"
    child = [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]

    def send_sigterm():
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=send_sigterm, daemon=True).start()
    with open(tmp_path / "log", "w") as log, pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        run_child(child, log, dict(os.environ))
    child_pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # gone, and reaped
        os.kill(child_pid, 0)
    assert signal.getsignal(signal.SIGTERM) is before

    with open(tmp_path / "log", "a") as log:  # an ordinary child: its exit code
        assert run_child([sys.executable, "-c", "raise SystemExit(3)"], log, dict(os.environ)) == 3
