"""Do the automatic choices (mappo/machine.py) pay on this machine?  One table, measured in one go:
for each config, training throughput on the defaults (``device=auto``, ``torch_threads=0``,
``num_workers=0``) beside fixed thread counts and both devices, each as a ratio to raw env stepping.

    python scripts/bench_defaults.py --out runs/bench_defaults.jsonl
    python scripts/bench_defaults.py --configs configs/mpe_simple_spread.yaml --threads 1 2 --seconds 4

Each setting runs ``scripts/bench_throughput.py`` in its own process (so torch's thread pool and
the CUDA context start fresh) and appends its figures to ``--out`` as it finishes; a second call
with the same ``--out`` skips the settings already there, so a stopped run continues.  The
questions it answers: does training on the defaults reach 0.6x raw env stepping, and is the
device ``auto`` picks never slower than the other one?
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's mappo, not another one installed
CONFIGS = ["configs/mpe_simple_spread.yaml", "configs/jaxmarl_mpe_simple_spread.yaml",
           "configs/benchmarks/lbf_8x8-2p-2f-coop.yaml", "configs/benchmarks/rware_tiny-2ag.yaml",
           "configs/vmas_navigation.yaml", "configs/butterfly_cooperative_pong.yaml"]
FIGURES = {"raw": r"raw env steps/s\s+([\d.]+)", "collect": r"collection steps/s\s+([\d.]+)",
           "train": r"training steps/s\s+([\d.]+)", "device": r"device: (\S+)",
           "threads": r"torch threads: (\d+) \(update\)", "workers": r"env workers: (\d+)"}


def settings(threads: List[int], devices: List[str]) -> List[Dict[str, str]]:
    """The defaults first, then each thread count on the CPU, then each device on the defaults' threads."""
    out: List[Dict[str, str]] = [{}]
    out += [{"device": "cpu", "torch_threads": str(n)} for n in threads]
    out += [{"device": d} for d in devices]
    return out


def measure(config: str, setting: Dict[str, str], seconds: float) -> Optional[Dict[str, object]]:
    """One ``bench_throughput.py`` run; its figures, or None (with the error printed) when it failed."""
    command = [sys.executable, os.path.join(ROOT, "scripts", "bench_throughput.py"), "--config", config,
               "--seconds", str(seconds), *[f"{k}={v}" for k, v in setting.items()]]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        print(f"  failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    row: Dict[str, object] = {}
    for key, pattern in FIGURES.items():
        found = re.search(pattern, done.stdout)
        row[key] = (found.group(1) if key == "device" else float(found.group(1))) if found else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 4, 16],
                        help="fixed torch_threads to compare with the automatic choice")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="devices to compare (default: cpu, and cuda when there is one)")
    parser.add_argument("--seconds", type=float, default=4.0, help="bench_throughput.py's time per stage")
    parser.add_argument("--out", default="runs/bench_defaults.jsonl", help="results, one line per setting")
    args = parser.parse_args()
    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    done = {}
    if os.path.isfile(args.out):
        with open(args.out) as f:
            for line in f:
                row = json.loads(line)
                done[(row["config"], json.dumps(row["setting"], sort_keys=True))] = row
    for config in args.configs:
        for setting in settings(args.threads, devices):
            key = (config, json.dumps(setting, sort_keys=True))
            if key in done:
                continue
            print(f"{config} {setting or 'defaults'}", flush=True)
            figures = measure(config, setting, args.seconds)
            if figures is None:
                continue
            row = {"config": config, "setting": setting, **figures}
            done[key] = row
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    print("\n| config | setting | device | threads | workers | raw steps/s | training steps/s | training / raw |")
    print("|---|---|---|---|---|---|---|---|")
    for (config, _), row in done.items():
        if config not in args.configs:
            continue
        setting = " ".join(f"{k}={v}" for k, v in row["setting"].items()) or "**defaults**"
        ratio = row["train"] / row["raw"] if row["train"] and row["raw"] else float("nan")
        print(f"| {os.path.basename(config)} | {setting} | {row['device']} | {row['threads']:.0f} | "
              f"{row['workers'] or 0:.0f} | {row['raw']:,.0f} | {row['train']:,.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    from mappo.cli import script_main

    sys.exit(script_main(main, "bench_defaults.py"))
