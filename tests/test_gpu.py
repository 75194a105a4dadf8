"""GPU path: device=auto picks CUDA for a batched simulator (and the CPU for a PettingZoo env
with a small MLP), and the rollout buffer, networks and a batched simulator's tensors all live on
the GPU.  Skipped on machines without CUDA."""
import numpy as np
import pytest
import torch

import mappo
from mappo.protocol import STEP_FIELDS
from envs import make_env_fn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_pettingzoo_envs_feed_a_gpu_learner():
    cfg = mappo.Config(env="mpe/simple_spread", num_envs=4, rollout_length=25, total_steps=200, ppo_epochs=2,
                       progress=False, device="auto")
    with mappo.Trainer(make_env_fn("mpe/simple_spread", N=3, max_cycles=25), cfg) as trainer:
        assert trainer.device.type == "cpu"  # a small MLP: the GPU learner is slower (mappo/machine.py)
    with mappo.Trainer(make_env_fn("mpe/simple_spread", N=3, max_cycles=25), cfg.replace(device="cuda")) as trainer:
        assert trainer.device.type == "cuda"
        history = trainer.train()
        assert all(t.device.type == "cuda" for t in trainer.buffer.data.values())
        assert all(p.device.type == "cuda" for p in trainer.actor.parameters())
    assert len(history) == 2 and all(np.isfinite(row["value_loss"]) for row in history)


def test_vmas_stays_on_the_gpu():
    pytest.importorskip("vmas")
    cfg = mappo.Config(env="vmas/simple_spread", num_envs=1024, rollout_length=10, total_steps=20480, ppo_epochs=2,
                       progress=False, device="auto")
    with mappo.Trainer(make_env_fn("vmas/simple_spread", max_steps=10), cfg) as trainer:
        assert trainer.device.type == "cuda"  # a batched simulator: device=auto takes the GPU
        history = trainer.train()
        assert all(trainer.vec.observe(name).device.type == "cuda" for name in STEP_FIELDS)
        assert all(t.device.type == "cuda" for t in trainer.buffer.data.values())
        stats = trainer.evaluate(episodes=8)
    assert len(history) == 2 and history[-1]["episodes"] == 1024
    assert stats["episodes"] == 8


def test_building_a_vmas_env_leaves_the_cuda_generator_alone():
    pytest.importorskip("vmas")
    torch.cuda.manual_seed(123)
    before = torch.cuda.get_rng_state()
    make_env_fn("vmas/simple_spread", max_steps=5)(num_envs=8, device="cuda", seed=7)  # VMAS calls torch.manual_seed(7)
    assert torch.equal(torch.cuda.get_rng_state(), before)


def test_a_checkpoint_holds_the_cuda_state_of_its_own_gpu_only(tmp_path):
    cfg = mappo.Config(env="mpe/simple_spread", num_envs=2, rollout_length=25, total_steps=50, ppo_epochs=1,
                       progress=False, device="cuda", vector_mode="inprocess", run_dir=str(tmp_path / "run"))
    with mappo.Trainer(make_env_fn("mpe/simple_spread", N=3, max_cycles=25), cfg) as trainer:
        trainer.train()
    resume = torch.load(str(tmp_path / "run" / "ckpt.pt"), weights_only=True)["resume"][0]
    assert len(resume["rng"]["cuda"]) == 1  # resumes on a machine with fewer GPUs
    with mappo.Trainer.load(str(tmp_path / "run" / "ckpt.pt"), make_env_fn("mpe/simple_spread", N=3, max_cycles=25),
                            total_steps=100) as trainer:
        trainer.train()


def test_seeds_on_the_gpu_equal_their_own_runs():
    """num_seeds on CUDA (VMAS): each seed's rows and weights match its one-seed run (sampling on the
    seed's CUDA stream, the batched update's rounding allowed)."""
    pytest.importorskip("vmas")
    env_fn = make_env_fn("vmas/simple_spread", max_steps=10)
    cfg = mappo.Config(env="vmas/simple_spread", num_envs=64, rollout_length=10, total_steps=1920, ppo_epochs=2,
                       hidden_sizes=[32, 32], progress=False, device="cuda", seed=3)
    with mappo.SeedStack(env_fn, cfg.replace(num_seeds=2)) as stack:
        histories = stack.train()
        for k, history in enumerate(histories):
            with mappo.Trainer(env_fn, cfg.replace(seed=3 + k)) as alone:
                straight = alone.train()
                for row, ref in zip(history, straight):
                    for key in ("team_return", "policy_loss", "value_loss", "entropy"):
                        assert row[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-4), (k, key)
                ours, theirs = stack.trainers[k].actor.state_dict(), alone.actor.state_dict()
                assert all(torch.allclose(ours[n], theirs[n], atol=1e-4) for n in theirs)
