"""Fault probes: a trainer killed hard, envs that misbehave.  Each asserts a clear outcome and
no process left behind."""
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pids(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def test_workers_exit_when_the_trainer_is_killed(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text('env: "tests.toy_envs:CoordinationEnv"\nnum_envs: 4\nrollout_length: 20\nppo_epochs: 1\n'
                      "hidden_sizes: [16]\ndevice: cpu\nvector_mode: subprocess\nnum_workers: 2\n"
                      "total_steps: 100000000\nprogress: false\n")
    run_dir = tmp_path / "killed_run"
    proc = subprocess.Popen([sys.executable, "-m", "mappo", "train", str(config), f"run_dir={run_dir}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    pattern = f"run_dir={run_dir}"
    assert len(_pids(pattern)) == 3  # the trainer and its 2 env workers
    os.kill(proc.pid, signal.SIGKILL)  # no handler, no close(): as an OOM kill
    proc.wait(timeout=10)
    deadline = time.time() + 5
    while time.time() < deadline and _pids(pattern):
        time.sleep(0.1)
    left = _pids(pattern)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "env workers outlived the trainer"
