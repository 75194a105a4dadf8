"""Train a two-group config in stages and play every stage's teams against each other.

    python scripts/crossplay.py configs/mpe_simple_tag.yaml --out runs/crossplay/tag \
        --stages 100000 200000 400000 [--seed 0] [--episodes 100] [key=value ...]

Trains one run (``OUT/run``), keeping a copy of its checkpoint at each stage
(``OUT/stage<steps>.pt``); an existing stage file is reused, so the command resumes.  It plots each
group's training return (``<group>/team_return``, smoothed over 10 iterations) to
``OUT/groups.png``.  Then each
group's actor at each stage plays, with sampled actions over ``--episodes`` episodes, against
the other group at every stage and against uniformly random valid actions.  Prints (and writes
to ``OUT/crossplay.md``) one table per group: rows are that group's stage, columns its opponent;
each cell is the group's mean return (its agents' rewards summed).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mappo  # noqa: E402
from envs import make_env_fn  # noqa: E402


def plot_group_returns(run_dir: str, groups, out: str, title: str) -> None:
    """Each group's training return against env steps, from the run's metrics.jsonl."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    fig, ax = plt.subplots(figsize=(6, 4))
    for g in groups:
        pts = [(r["env_steps"], r[f"{g}/team_return"]) for r in rows if f"{g}/team_return" in r]
        steps, values = np.array(pts).T
        smooth = np.convolve(values, np.ones(10) / 10, mode="valid") if len(values) >= 10 else values
        ax.plot(steps[len(steps) - len(smooth):], smooth, label=g)
    ax.set_xlabel("env steps")
    ax.set_ylabel("group return (training, smoothed)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config of a two-group env, e.g. configs/mpe_simple_tag.yaml")
    parser.add_argument("--out", required=True, help="folder for the run, the stage checkpoints and the tables")
    parser.add_argument("--stages", type=int, nargs="+", required=True, help="env steps at which to keep a checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training run")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per pairing")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_intermixed_args()
    stages = sorted(args.stages)
    run_dir = os.path.join(args.out, "run")
    cfg = mappo.Config.from_yaml(args.config, args.overrides + [f"seed={args.seed}", f"run_dir={run_dir}",
                                                                 f"total_steps={stages[-1]}", "progress=false"])
    env_fn = make_env_fn(cfg.env, **cfg.env_kwargs)
    stage_file = lambda steps: os.path.join(args.out, f"stage{steps}.pt")  # noqa: E731
    for steps in stages:
        if os.path.isfile(stage_file(steps)):
            continue
        ckpt = os.path.join(run_dir, "ckpt.pt")
        trainer = mappo.Trainer.load(ckpt, env_fn) if os.path.isfile(ckpt) else mappo.Trainer(env_fn, cfg)
        with trainer:
            trainer.train(total_steps=steps)
            if trainer.interrupted:
                return 128 + trainer.interrupted
            trainer.save(ckpt)
        shutil.copyfile(ckpt, stage_file(steps))
        print(f"stage {steps}: saved {stage_file(steps)}", flush=True)
    lines = [f"Cross-play for `{args.config}` (seed {args.seed}, {args.episodes} episodes per cell, sampled actions); "
             f"each cell: the row group's mean return.", ""]
    for steps in stages:
        with mappo.Trainer.load(stage_file(steps), env_fn, progress=False) as trainer:
            groups = trainer.learner.groups.names
    if len(groups) != 2:
        raise SystemExit(f"{args.config} has groups {groups}; cross-play needs two")
    plot_group_returns(run_dir, groups, os.path.join(args.out, "groups.png"), os.path.basename(args.config))
    for me, them in (groups, groups[::-1]):
        lines += [f"**{me}** (rows: its stage) against **{them}** (columns)", "",
                  "| " + me + " \\ " + them + " | random | " + " | ".join(f"{s:,}" for s in stages) + " |",
                  "|---" * (len(stages) + 2) + "|"]
        for mine in stages:
            cells = []
            with mappo.Trainer.load(stage_file(mine), env_fn, progress=False) as trainer:
                for opponent in ["random"] + [stage_file(s) for s in stages]:
                    result = trainer.evaluate(episodes=args.episodes, deterministic=False,
                                              policies={them: opponent})
                    cells.append(f"{result['group_return_mean'][me]:.1f}")
            lines.append(f"| {mine:,} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
        lines.append("")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "crossplay.md"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
