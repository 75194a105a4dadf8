"""The ``mappo`` command: thin layers over Trainer.

    mappo train CONFIG [key=value ...]           train from a YAML config with overrides
    mappo train --resume RUN_DIR [key=value ...] continue a run from its checkpoint
    mappo eval RUN_DIR [--episodes K] [--video out.mp4|out.gif]
    mappo export RUN_DIR --format torchscript|onnx [--out PATH]
    mappo benchmark SUITE [--out DIR] [--jobs N]  configs x seeds, resumable, then a results table
    mappo sweep SPACE [--out DIR] [--jobs N]      hyperparameter search with Optuna, resumable
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Callable, List, Optional

from . import distributed as D
from .config import Config, help_text
from .files import written_atomically
from .protocol import EnvError
from .runfolder import RunFolderInUse


def _env_fn(cfg: Config):
    from envs import make_env_fn

    return make_env_fn(cfg.env, **cfg.env_kwargs)


def _finite(x):
    """``x`` with non-finite floats (at any depth) as None, which JSON writes as null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _checkpoint_path(run: str) -> str:
    path = os.path.join(run, "ckpt.pt") if os.path.isdir(run) else run
    if os.path.isfile(path):
        return path
    if not os.path.isdir(run):
        raise FileNotFoundError(f"no checkpoint at {path!r} (expected a run folder holding ckpt.pt, or the file)")
    if os.path.isfile(os.path.join(run, "config.yaml")):
        raise FileNotFoundError(f"run folder {run!r} holds no checkpoint: its run stopped before writing one (ckpt.pt "
                                f"is written every checkpoint_every iterations, at the end and on Ctrl-C), so there "
                                f"is nothing to resume. Start it again with `mappo train {run}/config.yaml`; the "
                                f"folder is reused")
    raise FileNotFoundError(f"run folder {run!r} holds no checkpoint (ckpt.pt): a run that stops with an error "
                            f"before its first checkpoint leaves nothing to resume. Start it again with the same "
                            f"`mappo train CONFIG run_dir={run}` command")


TRUST_HELP = ("build the env named inside the checkpoint even when it is 'module:callable' code "
              "(only for checkpoints you trust; registry names never need this)")


def _load(run: str, trust_env_code: bool = False, **overrides):
    """A trainer from a run's checkpoint, its env rebuilt from the config inside.

    A checkpoint is data, but its config's ``env: module:callable`` would import and call code:
    that only happens with ``trust_env_code``, or when the user names the env (``env=...``)."""
    from envs import is_registered

    from .checkpoint import load_checkpoint
    from .trainer import Trainer

    path = _checkpoint_path(run)
    payload = load_checkpoint(path)  # read once: the config inside says which env to build
    cfg = Config.from_dict({**payload["config"], **overrides})
    if not is_registered(cfg.env) and "env" not in overrides and not trust_env_code:
        raise ValueError(f"{path!r} names the env {cfg.env!r}, which is code (module:callable), not a registered "
                         f"env; mappo runs it only with --trust-env-code, or name the env yourself "
                         f"(--env NAME, or env=NAME with --resume)")
    if "callbacks" in overrides:  # the config field: callbacks=... on --resume replaces the run's own
        payload = {**payload, "config": {**payload["config"], "callbacks": overrides.pop("callbacks")}}
    return Trainer.from_checkpoint(payload, _env_fn(cfg), path, **overrides)


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mappo train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train MAPPO from a YAML config with key=value overrides, or resume a run.",
        epilog="config fields:\n" + help_text(),
    )
    parser.add_argument("config", nargs="?", help="YAML config, e.g. configs/mpe_simple_spread.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lr=1e-3 num_envs=8")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its ckpt.pt (overrides such as total_steps=... apply)")
    parser.add_argument("--trust-env-code", action="store_true", help="with --resume: " + TRUST_HELP)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def train_main(argv: List[str]) -> int:
    parser = train_parser()
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.resume and args.config:  # with --resume, a lone positional is an override
        overrides.insert(0, args.config)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        parser.error(f"overrides must be key=value, got {bad}")
    from .trainer import Trainer

    if args.resume:
        from omegaconf import OmegaConf

        changes = OmegaConf.to_container(OmegaConf.from_dotlist(overrides)) if overrides else {}
        from .seeds import SeedStack, read_seeds

        if not os.path.isfile(os.path.join(args.resume, "ckpt.pt")) and read_seeds(args.resume) is not None:
            # a num_seeds run: its seeds go on together
            fixed = [k for k in ("num_seeds", "run_dir", "seed") if k in changes]
            if fixed:
                parser.error(f"--resume of a num_seeds run keeps its seeds and folders; drop {fixed}")

            def load_one(folder: str, **fields: Any) -> Trainer:
                return _load(folder, args.trust_env_code, **{**changes, **fields})

            trainer = SeedStack.load(args.resume, load_one)
            steps = ", ".join(f"seed {t.cfg.seed} at {t.env_steps}" for t in trainer.trainers)
            print(f"resuming {args.resume}: {steps} env steps", flush=True)
        else:
            trainer = _load(args.resume, args.trust_env_code, **{"run_dir": args.resume, **changes})
            if trainer.sync.is_main:
                print(f"resuming {args.resume} at {trainer.env_steps} env steps (iteration {trainer.iteration})",
                      flush=True)
    else:
        if not args.config:
            parser.error("give a CONFIG file, or --resume RUN_DIR")
        cfg = Config.from_yaml(args.config, overrides)
        if cfg.run_dir is None:
            cfg.run_dir = os.path.join("runs", f"{cfg.run_name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if cfg.num_seeds > 1:
            from .seeds import SeedStack

            trainer = SeedStack(_env_fn(cfg), cfg)
        else:
            trainer = Trainer(_env_fn(cfg), cfg)
    seeds = getattr(trainer, "trainers", [trainer])
    if args.resume and all(t.env_steps >= t.cfg.total_steps for t in seeds) and trainer.sync.is_main:
        print(f"the run already has its budget of total_steps={seeds[0].cfg.total_steps} env steps; train on with "
              f"a larger one: mappo train --resume {args.resume} total_steps=N", flush=True)
    with trainer:
        trainer.train()
    D.shutdown()  # every rank waits for the others (rank 0 writes the checkpoint and summary), then leaves
    # a run stopped by SIGINT/SIGTERM exits like the signal would, after its checkpoint is written
    return 128 + trainer.interrupted if trainer.interrupted else 0


def eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mappo eval", description="Evaluate a run's checkpoint; optionally render a video.")
    parser.add_argument("run", help="run folder (holding ckpt.pt) or a checkpoint file")
    parser.add_argument("--episodes", type=int, default=20, help="episodes to evaluate (default: 20)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    parser.add_argument("--out", metavar="FILE.json",
                        help="also write the result with each episode's returns and length (per_episode) to FILE")
    parser.add_argument("--video", metavar="PATH", help="render a deterministic episode to PATH (.mp4 or .gif)")
    parser.add_argument("--fps", type=int, default=10, help="frames per second of the video (default: 10)")
    parser.add_argument("--env", help="build this env (a registry name or module:callable) instead of the checkpoint's")
    parser.add_argument("--trust-env-code", action="store_true", help=TRUST_HELP)
    parser.add_argument("--policy", action="append", default=[], metavar="GROUP=SOURCE",
                        help="cross-play: the agent group GROUP acts with SOURCE, 'random' (uniform valid actions) or "
                             "another run folder/checkpoint of the same env (its actor for that group); repeatable")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def eval_main(argv: List[str]) -> int:
    parser = eval_parser()
    args = parser.parse_args(argv)
    policies = {}
    for item in args.policy:
        group, sep, source = item.partition("=")
        if not sep or not group or not source:
            parser.error(f"--policy takes GROUP=random or GROUP=RUN_DIR, got {item!r}")
        policies[group] = source
    if args.video and os.path.splitext(args.video)[1].lower() not in (".mp4", ".gif"):
        parser.error(f"--video must end in .mp4 or .gif, got {args.video!r}")
    if args.fps < 1:
        parser.error(f"--fps must be >= 1, got {args.fps}")
    overrides = {"env": args.env} if args.env else {}
    if not _cuda():
        overrides["device"] = "cpu"  # a GPU run evaluates on a CPU-only machine
    trainer = _load(args.run, args.trust_env_code, **overrides)
    with trainer:
        stats = _finite(trainer.evaluate(episodes=args.episodes, deterministic=not args.stochastic, policies=policies))
        if args.out:
            with written_atomically(args.out) as tmp, open(tmp, "w") as f:
                json.dump(stats, f, allow_nan=False)
        # valid JSON: a non-finite number is null; the episodes' own numbers only in --out
        print(json.dumps({k: v for k, v in stats.items() if k != "per_episode"}, indent=2, allow_nan=False))
        if args.video:
            from .video import record, write_video

            frames = record(trainer.policy, trainer.env_fn, seed=trainer.eval_seed)
            path = write_video(frames, args.video, args.fps)
            print(f"wrote {path} ({len(frames)} frames)", file=sys.stderr)
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mappo export",
                                     description="Export a run's actor: TorchScript (needs only torch) or ONNX.")
    parser.add_argument("run", help="run folder (holding ckpt.pt) or a checkpoint file")
    parser.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript",
                        help="torchscript (default; needs only torch to run) or onnx (needs the 'onnx' extra)")
    parser.add_argument("--out", help="output file (default: RUN_DIR/actor.pt or RUN_DIR/actor.onnx)")
    parser.add_argument("--env", help="build this env (a registry name or module:callable) instead of the checkpoint's")
    parser.add_argument("--trust-env-code", action="store_true", help=TRUST_HELP)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def export_main(argv: List[str]) -> int:
    parser = export_parser()
    args = parser.parse_args(argv)
    from .export import export_actor

    trainer = _load(args.run, args.trust_env_code, device="cpu", **({"env": args.env} if args.env else {}))
    folder = args.run if os.path.isdir(args.run) else os.path.dirname(os.path.abspath(args.run))
    out = args.out or os.path.join(folder, "actor.pt" if args.format == "torchscript" else "actor.onnx")
    with trainer:
        export_actor(trainer.actor, trainer.spec, out, args.format, trainer.learner.groups)
    print(f"wrote {out} and {out}.json (inputs, outputs and action layout)")
    return 0


def benchmark_main(argv: List[str]) -> int:
    from .benchmark import benchmark_main as run

    return run(argv)


def benchmark_parser() -> argparse.ArgumentParser:
    from .benchmark import benchmark_parser as parser

    return parser()


def sweep_main(argv: List[str]) -> int:
    from .sweep import sweep_main as run

    return run(argv)


def sweep_parser() -> argparse.ArgumentParser:
    from .sweep import sweep_parser as parser

    return parser()


# errors about the user's input, env or machine, reported as one block (bugs keep their traceback)
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, FloatingPointError, EnvError, RunFolderInUse)
COMMANDS = {"train": train_main, "eval": eval_main, "export": export_main, "benchmark": benchmark_main,
            "sweep": sweep_main}
PARSERS = {"train": train_parser, "eval": eval_parser, "export": export_parser, "benchmark": benchmark_parser,
           "sweep": sweep_parser}


def script_main(main: Callable[[], Optional[int]], prog: str) -> int:
    """Run a script's ``main()`` (``scripts/``): errors about the user's input (a config field, a
    missing file) as one line and exit code 2, as the ``mappo`` command reports them; with
    ``MAPPO_DEBUG=1`` in the environment, the traceback."""
    try:
        return main() or 0
    except USER_ERRORS as err:
        if os.environ.get("MAPPO_DEBUG"):
            raise
        print(f"{prog}: error: {err} (MAPPO_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.split("\n\n", 1)[1].rstrip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    debug = "--debug" in argv[1:]
    try:
        return COMMANDS[argv[0]](argv[1:])
    except USER_ERRORS as err:  # one clear block; the traceback behind --debug (or in the run's error.log)
        if debug:
            if getattr(err, "traceback", ""):
                print(f"--- the env's own traceback ---\n{err.traceback}", file=sys.stderr)
            raise
        print(f"mappo {argv[0]}: error: {err}", file=sys.stderr)
        if isinstance(err, EnvError):
            print(f"  the full traceback is in {err.log}" if err.log else
                  "  run the same command with --debug for the full traceback", file=sys.stderr)
        D.mark_failed()  # under torchrun: leave without waiting for ranks that may not come
        return 2


if __name__ == "__main__":
    sys.exit(main())
