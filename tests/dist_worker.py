"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/dist_worker.py MODE OUT_DIR
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mappo  # noqa: E402
from tests.helpers import tiny  # noqa: E402
from tests.toy_envs import CoordinationEnv, EarlyExitEnv  # noqa: E402



def flat_params(trainer):
    return torch.cat([p.detach().reshape(-1).clone() for p in list(trainer.actor.parameters())
                      + list(trainer.critic.parameters())])


def params_mode(out, rank, **extra):
    """Parameters, value normalisers and betas (one per agent group) after every update."""
    trainer = mappo.Trainer(EarlyExitEnv, tiny(total_steps=240, objective="clip_kl", run_dir=os.path.join(out, "run"),
                                               **extra))
    records = []
    real_update = trainer.update

    def update():
        stats = real_update()
        records.append({"params": flat_params(trainer), "kl_coef": list(trainer.learner.kl_coefs),
                        "value_norm": [[n.mean.item(), n.var.item()] for n in trainer.learner.value_norms]})
        return stats

    trainer.update = update
    history = trainer.train()
    trainer.close()
    torch.save({"records": records, "history": history, "env_index_offset": trainer.env_index_offset}, os.path.join(out, f"rank{rank}.pt"))


def resume_mode(out, rank):
    """3 iterations straight, against 2 iterations + a checkpoint + a resumed trainer for the 3rd."""
    from tests.helpers import strip_timing

    with mappo.Trainer(EarlyExitEnv, tiny(total_steps=240)) as trainer:
        straight = strip_timing(trainer.train())
    run_dir = os.path.join(out, "run")
    with mappo.Trainer(EarlyExitEnv, tiny(total_steps=240, run_dir=run_dir)) as trainer:
        first = strip_timing(trainer.train(total_steps=160))
    with mappo.Trainer.load(os.path.join(run_dir, "ckpt.pt"), EarlyExitEnv) as trainer:
        second = strip_timing(trainer.train())
        params = flat_params(trainer)
    torch.save({"straight": straight, "resumed": first + second, "params": params},
               os.path.join(out, f"resume{rank}.pt"))


def learn_mode(out, rank):
    """The coordination game with 2 ranks x 2 envs (the single-process learning test uses 4 envs)."""
    cfg = mappo.Config(total_steps=40_000, num_envs=2, rollout_length=50, seed=0, vector_mode="inprocess", lr=3e-3,
                       ppo_epochs=8, num_minibatches=2, entropy_coef=0.05, hidden_sizes=[64, 64], progress=False,
                       device="cpu")
    with mappo.Trainer(CoordinationEnv, cfg) as trainer:
        trainer.train()
        if rank == 0:
            result = trainer.evaluate(episodes=30)["team_return_mean"]
            with open(os.path.join(out, "learn.json"), "w") as f:
                json.dump({"team_return": result, "env_steps": trainer.env_steps}, f)


def exit_mode(out, rank):
    """Rank 0 goes on working after training (as an evaluation would) while rank 1 is done.
    The exit times are taken by handlers registered before the process group exists: atexit
    runs the last-registered first, so they run after mappo.distributed has left the group."""
    import atexit
    import time

    atexit.register(lambda: open(os.path.join(out, f"exit{rank}.txt"), "w").write(repr(time.time())))
    with mappo.Trainer(EarlyExitEnv, tiny(total_steps=80)) as trainer:
        trainer.train()
        if rank == 0:
            time.sleep(1.5)
            trainer.evaluate(episodes=2)
            with open(os.path.join(out, "rank0_done.txt"), "w") as f:
                f.write(repr(time.time()))


def grad_mode(out, rank):
    """The averaged gradient of two half batches against one process on the whole batch."""
    trainer = mappo.Trainer(CoordinationEnv, tiny())
    spec = trainer.spec
    g = torch.Generator().manual_seed(123)  # the same full batch on every rank
    B, A = 16, spec.num_agents
    obs = torch.rand(1, B, A, spec.obs_dim, generator=g)
    state = torch.zeros(1, B, spec.state_dim)
    alive = torch.ones(1, B, A, dtype=torch.bool)
    full = {
        "actor_in": trainer.actor.inputs(obs), "critic_in": trainer.critic.inputs(obs, state, alive),
        "alive": alive, "action_mask": torch.ones(1, B, A, spec.num_logits, dtype=torch.bool),
        "actions": torch.randint(0, 3, (1, B, A, 1), generator=g).float(),
        "logp": torch.log(torch.rand(1, B, A, generator=g) * 0.5 + 0.2),
        "advantages": torch.randn(1, B, A, generator=g), "returns": torch.randn(1, B, A, generator=g),
        "old_values": torch.randn(1, B, A, generator=g), "resets": torch.zeros(1, B, A, dtype=torch.bool),
    }
    half = {k: v[:, rank * B // 2:(rank + 1) * B // 2] for k, v in full.items()}
    params = list(trainer.actor.parameters()) + list(trainer.critic.parameters())
    trainer.learner.gradients(trainer.learner.loss(half).total)  # the training path: backward + all-reduce
    averaged = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    trainer.learner.loss(full).total.backward()  # one process, the concatenated batch, no all-reduce
    whole = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    torch.save({"averaged": averaged, "whole": whole}, os.path.join(out, f"grad{rank}.pt"))


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    groups_mode = lambda out, rank: params_mode(out, rank, groups={"scout": ["scout"], "agents": ["agent_*"]})  # noqa: E731
    happo_mode = lambda out, rank: params_mode(out, rank, algorithm="happo", parameter_sharing="separate")  # noqa: E731
    {"params": params_mode, "groups": groups_mode, "happo": happo_mode, "learn": learn_mode, "grad": grad_mode, "resume": resume_mode, "exit": exit_mode}[mode](out, rank)
    # no explicit teardown: mappo.distributed leaves the group at exit, after a barrier, so rank 1
    # does not go while rank 0 is still evaluating (learn mode); that order is what is under test
