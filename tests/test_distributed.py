"""Data-parallel training over torch.distributed, 2 CPU processes with gloo (torchrun)."""
import json
import os
import subprocess
import sys

import pytest
import torch

import mappo
from tests.toy_envs import EarlyExitEnv, random_team_return, CoordinationEnv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torchrun(mode, out, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "tests", "dist_worker.py"), mode, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("mode", ["params", "groups", "happo"])
def test_two_ranks_keep_identical_parameters_and_normalisers(tmp_path, mode):
    # "groups": two agent groups, each with its own normaliser and beta; "happo": the agents'
    # actors updated one after another, in an order both ranks draw alike
    torchrun(mode, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert len(r0["records"]) == len(r1["records"]) == 3  # 240 steps / (2 ranks x 2 envs x 20 steps)
    for a, b in zip(r0["records"], r1["records"]):
        assert torch.equal(a["params"], b["params"])  # bit-identical after every update
        assert a["kl_coef"] == b["kl_coef"] and a["value_norm"] == b["value_norm"]
        assert len(a["value_norm"]) == (2 if mode == "groups" else 1)
        assert len(a["kl_coef"]) == {"params": 1, "groups": 2, "happo": 3}[mode]  # one beta per actor unit
    assert not torch.equal(r0["records"][0]["params"], r0["records"][-1]["params"])  # and they did train
    assert [row["env_steps"] for row in r0["history"]] == [80, 160, 240]  # steps of both ranks
    assert (r0["env_index_offset"], r1["env_index_offset"]) == (0, 2)  # rank 1's envs follow rank 0's
    # only rank 0 writes the run folder; its checkpoint holds both ranks' resume state
    payload = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert len(payload["resume"]) == 2 and payload["env_steps"] == 240
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(rows) == 3
    # a 2-rank checkpoint does not resume in one process
    with pytest.raises(ValueError, match="written by a run with 2 rank"):
        mappo.Trainer.load(str(tmp_path / "run" / "ckpt.pt"), EarlyExitEnv)


def test_a_two_rank_run_resumes_exactly_with_two_ranks(tmp_path):
    torchrun("resume", tmp_path)
    r0, r1 = (torch.load(tmp_path / f"resume{r}.pt", weights_only=False) for r in (0, 1))
    assert len(r0["straight"]) == 3
    assert r0["resumed"] == r0["straight"]  # the same numbers as the run that never stopped
    assert torch.equal(r0["params"], r1["params"])


def test_averaged_gradient_equals_the_gradient_of_the_concatenated_batch(tmp_path):
    torchrun("grad", tmp_path)
    g0, g1 = (torch.load(tmp_path / f"grad{r}.pt", weights_only=False) for r in (0, 1))
    for a, b in zip(g0["averaged"], g1["averaged"]):
        assert torch.equal(a, b)
    for avg, whole in zip(g0["averaged"], g0["whole"]):
        assert torch.allclose(avg, whole, atol=1e-6, rtol=1e-5)
    assert sum(float(g.abs().sum()) for g in g0["whole"]) > 0


def test_no_rank_leaves_the_group_while_another_still_works(tmp_path):
    # rank 1 finishes first; leaving then killed it with SIGABRT under torch 2.14 (gloo)
    torchrun("exit", tmp_path)
    done0 = float((tmp_path / "rank0_done.txt").read_text())
    exits = [float((tmp_path / f"exit{r}.txt").read_text()) for r in (0, 1)]
    assert exits[1] >= done0 and exits[0] >= done0  # rank 1 waited at the barrier for rank 0


def test_shutdown_outside_torchrun_does_nothing():
    from mappo import distributed as D

    D.shutdown()  # no process group: no barrier, no error
    assert not torch.distributed.is_initialized()


@pytest.mark.slow
def test_two_ranks_learn_the_coordination_game(tmp_path):
    torchrun("learn", tmp_path, timeout=900)
    result = json.load(open(tmp_path / "learn.json"))
    assert result["env_steps"] == 40_000
    random_return = random_team_return(CoordinationEnv)
    assert result["team_return"] >= random_return + 0.7 * (20.0 - random_return)
