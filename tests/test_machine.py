"""The run's share of the machine (mappo/machine.py): device=auto, torch threads and env workers
chosen by rule and printed, single-threaded env workers, and the thread counts a run really uses."""
import pytest
import torch

import mappo
from mappo.machine import MAX_AUTO_THREADS, Machine, choose_device, choose_resources
from tests.helpers import tiny
from tests.toy_envs import CoordinationEnv, EarlyExitEnv


def test_device_auto_takes_cuda_only_where_it_pays():
    gpu, cpu_only = Machine(cores=16, cuda=True), Machine(cores=16, cuda=False)
    assert choose_device("auto", cpu_only, batched=True, images=True, widest_hidden=1024)[0] == "cpu"
    assert choose_device("auto", gpu, batched=True, images=False, widest_hidden=64)[0] == "cuda"
    device, why = choose_device("auto", gpu, batched=True, images=False, widest_hidden=64, simulator_cuda=False)
    assert device == "cpu" and "jax[cuda12]" in why  # a JAX simulator without jax's GPU backend
    assert choose_device("auto", gpu, batched=False, images=True, widest_hidden=64)[0] == "cuda"
    assert choose_device("auto", gpu, batched=False, images=False, widest_hidden=512)[0] == "cuda"
    device, why = choose_device("auto", gpu, batched=False, images=False, widest_hidden=256)
    assert device == "cpu" and "0.74-0.79x" in why  # PettingZoo envs with small MLPs
    assert choose_device("cpu", gpu, batched=True, images=True, widest_hidden=1024)[0] == "cpu"
    assert choose_device("cuda", gpu, batched=False, images=False, widest_hidden=64)[0] == "cuda"
    with pytest.raises(ValueError, match="'device' is 'cuda' but CUDA is not available"):
        choose_device("cuda", cpu_only, batched=False, images=False, widest_hidden=64)


def test_threads_and_workers_by_rule():
    big = Machine(cores=16, cuda=False, torch_threads=16)
    r = choose_resources(big, "cpu", "", "subprocess", batched=False, num_envs=8, num_workers=0, torch_threads=0)
    assert (r.num_workers, r.update_threads, r.collect_threads, r.eval_threads) == (8, MAX_AUTO_THREADS, 1, 1)
    r = choose_resources(big, "cpu", "", "subprocess", batched=False, num_envs=64, num_workers=0, torch_threads=0)
    assert r.num_workers == 16  # one per core, not one per env
    ranks = Machine(cores=16, cuda=False, local_ranks=8, torch_threads=16)
    r = choose_resources(ranks, "cpu", "", "subprocess", batched=False, num_envs=64, num_workers=0, torch_threads=0)
    assert (r.num_workers, r.update_threads) == (2, 2)  # each of 8 ranks has 2 of the 16 cores
    one = Machine(cores=16, cuda=False, torch_threads=1)  # OMP_NUM_THREADS=1: auto keeps one thread
    r = choose_resources(one, "cpu", "", "subprocess", batched=False, num_envs=8, num_workers=0, torch_threads=0)
    assert r.update_threads == 1
    r = choose_resources(big, "cpu", "", "subprocess", batched=False, num_envs=8, num_workers=3, torch_threads=6)
    assert (r.num_workers, r.update_threads, r.collect_threads) == (3, 6, 1)  # the config's own numbers
    r = choose_resources(big, "cuda", "", "inprocess", batched=True, num_envs=4096, num_workers=0, torch_threads=0)
    assert (r.num_workers, r.update_threads, r.collect_threads, r.eval_threads) == (0, 16, 16, 16)  # torch alone
    assert "env workers" not in "\n".join(r.lines)  # a batched simulator has none
    r = choose_resources(big, "cuda", "", "subprocess", batched=False, num_envs=8, num_workers=0, torch_threads=0)
    assert r.collect_threads == r.update_threads  # a GPU learner: the CPU thread only launches kernels


class ThreadsEnv(EarlyExitEnv):
    """Reports at each step the torch thread count of the process stepping it."""

    def _infos(self):
        return {a: {"torch_threads": torch.get_num_threads()} for a in self.agents}


def test_a_run_uses_the_threads_it_printed_and_gives_them_back(capsys):
    before = torch.get_num_threads()
    cfg = tiny(vector_mode="subprocess", num_workers=2, torch_threads=2, progress=True, total_steps=80,
               eval_every=2, eval_episodes=1)
    with mappo.Trainer(ThreadsEnv, cfg) as trainer:
        seen = []
        update = trainer.learner.update
        trainer.learner.update = lambda buf: seen.append(torch.get_num_threads()) or update(buf)
        history = trainer.train()
        assert trainer.resources.num_workers == 2
    out = capsys.readouterr().out
    assert "device=cpu (set in the config)" in out
    assert "torch threads: 2 for the update, 1 while collecting, 1 while evaluating" in out
    assert "env workers: 2 subprocesses for 2 envs" in out
    assert seen == [2, 2]
    assert history[-1]["info/torch_threads"] == 1.0  # the workers run one thread whatever the trainer has
    assert history[-1]["eval/info/torch_threads_mean"] == 1.0  # the evaluation env, in this process
    assert torch.get_num_threads() == before


def test_auto_device_for_a_small_mlp_is_the_cpu_and_bad_threads_are_errors():
    with mappo.Trainer(CoordinationEnv, tiny(device="auto")) as trainer:
        assert trainer.device.type == "cpu"  # with or without CUDA: a PettingZoo env with a 16-unit MLP
        # in-process envs: the cores are torch's alone, up to the count it had
        assert trainer.resources.update_threads == min(Machine.this().cores, torch.get_num_threads())
    with pytest.raises(ValueError, match="'torch_threads' must be >= 0"):
        tiny(torch_threads=-1)


def test_a_batched_simulator_says_whether_it_can_step_on_cuda():
    class NoCuda:
        def __call__(self, num_envs=1, device="cpu", seed=0):
            raise AssertionError("not built")

        def can_use_cuda(self):
            return False

    assert mappo.Batched(lambda num_envs, device, seed: None).can_use_cuda()  # torch simulators: wherever torch runs
    assert not mappo.Batched(NoCuda()).can_use_cuda()
    pytest.importorskip("jaxmarl")
    from envs import make_env_fn

    if not torch.cuda.is_available():  # the dev extra installs jax[cpu]
        assert not make_env_fn("jaxmarl/MPE_simple_spread_v3").can_use_cuda()
