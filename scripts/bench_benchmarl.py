"""BenchMARL's side of the VMAS navigation row in docs/PERFORMANCE.md.

BenchMARL is a peer, never a dependency of mappo: run this in a venv of its own.

    python3 -m venv .venv-benchmarl && . .venv-benchmarl/bin/activate
    pip install benchmarl==1.5.2 vmas
    python scripts/bench_benchmarl.py --frames 1000000

The settings match mappo's side of the row (`scripts/bench_peers.sh` runs both):
VMAS navigation (3 agents, 100-step episodes, continuous actions), 600 envs x 100 steps per
iteration, MLPs of [256, 256] with tanh for actor and critic, shared parameters, a centralised
critic, 4 passes x 4 minibatches of 15,000 env steps per iteration, CPU, one torch thread.
Evaluation, loggers and checkpoints are off, so the figure is collection plus training.

It prints one line: frames (env steps), BenchMARL's own timer (`total_time`, the sum of its
iteration times) and the wall time of `experiment.run()`, steps per second for both, and its
own collection and training timers summed over the iterations.
"""
from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000, help="env steps in all")
    parser.add_argument("--envs", type=int, default=600, help="VMAS envs stepped side by side")
    parser.add_argument("--steps", type=int, default=100, help="steps per env per iteration")
    parser.add_argument("--epochs", type=int, default=4, help="on_policy_n_minibatch_iters")
    parser.add_argument("--minibatches", type=int, default=4, help="minibatches per pass")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="MLP hidden layers")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="torch device of the envs and the learner")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run")
    args = parser.parse_args()

    import torch
    from benchmarl.algorithms import MappoConfig
    from benchmarl.environments import VmasTask
    from benchmarl.experiment import Experiment, ExperimentConfig
    from benchmarl.models.mlp import MlpConfig

    torch.set_num_threads(args.threads)
    batch = args.envs * args.steps
    exp = ExperimentConfig.get_from_yaml()
    exp.sampling_device = exp.train_device = exp.buffer_device = args.device
    exp.max_n_frames = args.frames
    exp.on_policy_collected_frames_per_batch = batch
    exp.on_policy_n_envs_per_worker = args.envs
    exp.on_policy_n_minibatch_iters = args.epochs
    exp.on_policy_minibatch_size = batch // args.minibatches
    exp.evaluation = False
    exp.render = False
    exp.loggers = []
    exp.create_json = False
    exp.checkpoint_interval = 0
    exp.checkpoint_at_end = False
    exp.save_folder = tempfile.mkdtemp(prefix="benchmarl-")
    task = VmasTask.NAVIGATION.get_from_yaml()  # n_agents 3, max_steps 100
    algorithm = MappoConfig.get_from_yaml()  # share_param_critic: true
    actor_model, critic_model = MlpConfig.get_from_yaml(), MlpConfig.get_from_yaml()
    actor_model.num_cells = critic_model.num_cells = list(args.hidden)
    experiment = Experiment(task=task, algorithm_config=algorithm, model_config=actor_model,
                            critic_model_config=critic_model, seed=args.seed, config=exp)
    timers = {"timers/collection_time": 0.0, "timers/training_time": 0.0}
    log = experiment.logger.log

    def log_and_sum(values, step=None):  # BenchMARL's own per-iteration timers, summed
        for key in timers:
            timers[key] += values.get(key, 0.0)
        return log(values, step=step)

    experiment.logger.log = log_and_sum
    start = time.perf_counter()
    experiment.run()
    wall = time.perf_counter() - start
    frames = experiment.total_frames
    print(f"benchmarl {frames} frames: own timer {experiment.total_time:.1f} s ({frames / experiment.total_time:,.0f} "
          f"steps/s), wall {wall:.1f} s ({frames / wall:,.0f} steps/s); torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); collection {timers['timers/collection_time']:.1f} s, "
          f"training {timers['timers/training_time']:.1f} s")


if __name__ == "__main__":
    main()
