"""`mappo benchmark --launcher ray`: a tiny suite on a local Ray head, one run killed mid-way and
started again from its checkpoint; records, folders and resume as with the local launcher."""
import json
import os
import sys

import pytest

from mappo.benchmark import load_suite, report, run_suite
from tests.helpers import sigterm_once_written

SUITE = """
seeds: [0, 1]
tasks:
  - name: climb
    config: {config}
    metric: eval/agent_return_mean
    overrides: [total_steps=1000, eval_every=2, eval_episodes=4, num_envs=2, rollout_length=125,
                vector_mode=inprocess, checkpoint_every=1]
"""


def _suite(tmp_path, after_steps=1000):
    # env steps are counted per process: 2 envs x 125 steps an iteration, so 1000 is mid-way through
    # the run's 4 iterations, after its first checkpoints
    config = tmp_path / "climb.yaml"
    config.write_text("env: tests.toy_envs:climbing_killed_once\n"
                      f"env_kwargs: {{marker: {tmp_path / 'killed'}, after_steps: {after_steps}}}\n"
                      "hidden_sizes: [16]\neval_at_start: true\neval_deterministic: false\n")
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(config=config))
    return str(path)


@pytest.mark.slow
def test_a_suite_on_a_local_ray_head_with_a_run_killed_mid_way(tmp_path):
    ray = pytest.importorskip("ray")
    from mappo.ray_launcher import RayLauncher

    suite = load_suite(_suite(tmp_path))
    out = str(tmp_path / "out")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        failed = run_suite(suite, out, launcher=RayLauncher(), retries=1, poll_s=0.2)
        assert failed == {}
        records = [json.load(open(os.path.join(out, "climb", f"seed{s}.json"))) for s in (0, 1)]
        assert os.path.isfile(tmp_path / "killed")  # one run was killed
        assert all(r["done"] and r["last_returncode"] == 0 for r in records)
        assert sorted(r["attempts"] for r in records) == [1, 2], records  # the killed one ran again
        killed = [s for s, r in zip((0, 1), records) if r["attempts"] == 2][0]
        log = open(os.path.join(out, "climb", f"seed{killed}.log")).read()
        assert log.count("=== ") == 2 and "--resume" in log and "resuming" in log  # from its checkpoint
        for seed in (0, 1):
            rows = [json.loads(line) for line in open(os.path.join(out, "climb", f"seed{seed}", "metrics.jsonl"))]
            steps = [r["env_steps"] for r in rows if "sps" in r]
            assert steps == [250, 500, 750, 1000]  # no iteration trained twice, none lost
        # a second call has nothing left to run; the report reads the runs as the local launcher's
        assert run_suite(suite, out, launcher=RayLauncher(), retries=1, poll_s=0.2) == {}
        assert all(json.load(open(os.path.join(out, "climb", f"seed{s}.json")))["attempts"] == a
                   for s, a in zip((0, 1), [r["attempts"] for r in records]))
        table = report(suite, out, reps=200)
        assert "| climb" in table and "| 2 |" in table
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_a_run_that_keeps_failing_is_reported_after_its_retries(tmp_path):
    ray = pytest.importorskip("ray")
    from mappo.ray_launcher import RayLauncher

    suite = load_suite(_suite(tmp_path))
    suite.tasks[0].overrides.append("lr=-1")  # a config error: every attempt exits with an error
    out = str(tmp_path / "out")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        failed = run_suite(suite, out, launcher=RayLauncher(), retries=1, poll_s=0.2)
        assert sorted(failed["climb"]) == [0, 1] and list(failed) == ["climb"]
    finally:
        ray.shutdown()
    for seed in (0, 1):
        record = json.load(open(os.path.join(out, "climb", f"seed{seed}.json")))
        assert not record["done"] and record["attempts"] == 2 and record["last_returncode"] not in (0, None)


def test_without_ray_the_error_names_the_extra(monkeypatch):
    from mappo.launchers import make_launcher

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"\.\[ray\]"):
        make_launcher("ray")


def test_ray_flags_need_the_ray_launcher(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "mappo", "benchmark", _suite(tmp_path), "--out", str(tmp_path / "o"),
                          "--gpus-per-run", "1"], capture_output=True, text=True)
    assert out.returncode == 2 and "go with --launcher ray" in out.stderr


@pytest.mark.slow
def test_sigterm_cancels_the_tasks_with_checkpoints_and_the_same_command_finishes_them(tmp_path):
    pytest.importorskip("ray")
    import subprocess

    suite_path = _suite(tmp_path, after_steps=10**9)  # nothing is killed here
    text = open(suite_path).read().replace("total_steps=1000", "total_steps=5000")
    open(suite_path, "w").write(text)
    out = str(tmp_path / "out")
    command = [sys.executable, "-m", "mappo", "benchmark", suite_path, "--out", out, "--launcher", "ray", "--reps", "200"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ckpts = [os.path.join(out, "climb", f"seed{s}", "ckpt.pt") for s in (0, 1)]
    returncode, output = sigterm_once_written(command, ckpts, env)
    assert returncode == 130, output
    records = [json.load(open(os.path.join(out, "climb", f"seed{s}.json"))) for s in (0, 1)]
    if all(r["done"] for r in records):
        pytest.skip("both runs finished before the signal arrived (a very fast machine)")
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert out not in ps  # no run is left working
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    for seed in (0, 1):
        assert json.load(open(os.path.join(out, "climb", f"seed{seed}.json")))["done"]
        rows = [json.loads(line) for line in open(os.path.join(out, "climb", f"seed{seed}", "metrics.jsonl"))]
        steps = [r["env_steps"] for r in rows if "sps" in r]
        assert steps == list(range(250, 5001, 250))  # resumed from the checkpoint: none twice, none lost
