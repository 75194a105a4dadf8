"""Learning curves of one or more runs: mean +- std across seeds against env steps, as PNG.

    python scripts/plot.py runs/a runs/b --out curves.png
    python scripts/plot.py "MAPPO=runs/results/spread_mappo/seed*" "IPPO=runs/results/spread_ippo/seed*" \\
        --out docs/results/spread.png --title "simple_spread"

Each argument is a run folder, a glob, or LABEL=GLOB; runs that share a label are one curve.
Prints a table of final team returns (eval.json's deterministic mean when present, else the
mean training return over the last 10% of iterations): mean +- std over the runs of each label.
With ``--key eval/...`` it also prints EPyMARL's maximum and average returns over the runs'
evaluations (mean +- 95% CI over runs; mappo/stats.py), as ``mappo benchmark`` reports them:

    python scripts/plot.py "runs/my_lbf/seed*" --key eval/team_return_mean --smooth 1
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mappo.benchmark import eval_curves  # noqa: E402
from mappo.plot import final_return, plot_groups  # noqa: E402
from mappo.stats import max_and_average  # noqa: E402


def parse_groups(specs):
    groups = {}
    for spec in specs:
        label, pattern = spec.split("=", 1) if "=" in spec else (None, spec)
        runs = sorted(p for p in glob.glob(pattern) if os.path.isfile(os.path.join(p, "metrics.jsonl")))
        if not runs:
            raise SystemExit(f"error: no run folders (with metrics.jsonl) match {pattern!r}")
        label = label or os.path.basename(os.path.normpath(pattern))
        groups.setdefault(label, []).extend(runs)
    return groups


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders, globs, or LABEL=GLOB")
    parser.add_argument("--out", default="curves.png", help="PNG file to write (default: curves.png)")
    parser.add_argument("--key", default="team_return", help="metrics.jsonl key to plot (default: team_return)")
    parser.add_argument("--smooth", type=int, default=10, help="moving-average window in iterations (default: 10)")
    parser.add_argument("--title", default=None, help="figure title (default: the key)")
    args = parser.parse_args(argv)
    groups = parse_groups(args.runs)
    plot_groups(groups, args.out, args.key, args.smooth, args.title)
    print(f"wrote {args.out}")
    print(f"{'label':<24} {'runs':>4}  final team return (mean +- std)")
    for label, runs in groups.items():
        finals = np.array([final_return(r, args.key) for r in runs])
        print(f"{label:<24} {len(runs):>4}  {finals.mean():9.2f} +- {finals.std():.2f}   "
              f"[{', '.join(f'{v:.2f}' for v in finals)}]")
    if args.key.startswith("eval/"):
        print(f"\n{'label':<24} {'runs':>4}  maximum return (at env steps)       average return   (95% CI over runs)")
        for label, runs in groups.items():
            steps, returns, used = eval_curves(runs, args.key)
            if not used:
                continue
            s = max_and_average(returns)
            print(f"{label:<24} {len(used):>4}  {s['max_mean']:9.3f} +- {s['max_ci']:.3f} ({int(steps[s['max_index']]):,})"
                  f"   {s['average_mean']:9.3f} +- {s['average_ci']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
