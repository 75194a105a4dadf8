"""The training loop, top to bottom: collect -> learner.update -> log -> checkpoint -> evaluate.

    trainer = Trainer(env_fn, Config(...))
    history = trainer.train()                       # one dict per iteration
    stats = trainer.evaluate(episodes=20)
    trainer.save("runs/x/ckpt.pt"); Trainer.load("runs/x/ckpt.pt", env_fn)

The PPO maths lives in :mod:`mappo.learner`, the env contract in :mod:`mappo.protocol`, the
writers of metrics in :mod:`mappo.logger`; docs/ARCHITECTURE.md shows how they fit.
"""
from __future__ import annotations

import contextlib
import os
import random
import sys
import time
from typing import Any, Callable, Dict, Generator, Iterator, List, Optional, Sequence

import numpy as np
import torch

from . import callbacks as C
from . import distributed as D
from . import machine as M
from . import rollout, runfolder
from .buffer import RolloutBuffer
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, auto_minibatches, validate
from .encoders import resolve_conv_stacks
from .algorithm import build_learner, learner_class
from .logger import RunLogger
from .policy import Policy
from .registries import check_registered
from .protocol import Batched, EnvError, VectorEnv
from .vector import make_vector_env, team_spec
from .stop import StopOnSignal
from .wrappers import WrappedEnvFn

# evaluation envs are seeded away from the training envs' seed
EVAL_SEED_OFFSET = 1_000_003
# config fields that shape the envs' carried state, or pick the learner: fixed for a loaded run (the
# learner's own are its ``shaping_fields``)
# (seed: a loaded run's RNG states and env episodes come from its own seed; another would mix two runs)
SHAPING_FIELDS = ("algorithm", "wrappers", "num_envs", "seed")
# checkpoint formats this version reads: 3 (before the learner had its own module, no best_eval), 4
# (one optimiser per network) and 5 (one per update unit)
CHECKPOINT_FORMAT = 5


def same_team(saved: Dict[str, Any], layout: Dict[str, Any], ignore_state: bool = False) -> bool:
    """A checkpoint's team layout against an env's (``TeamSpec.layout``), on the keys the checkpoint
    has (older ones lack the newer keys); ``ignore_state`` leaves out ``state_dim``."""
    keys = [k for k in saved if not (ignore_state and k == "state_dim")]
    return all(layout.get(k) == saved[k] for k in keys)


def linear_schedule(step: int, total: int) -> float:
    """Fraction of the base learning rate at ``step`` of ``total``: 1 -> 0, linearly."""
    return max(0.0, 1.0 - step / total)


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block, and given back after it."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def drive(run: Generator[str, Dict[str, float], List[Dict[str, Any]]], update: Callable[[], Dict[str, float]]
          ) -> List[Dict[str, Any]]:
    """Run a :meth:`Trainer.training` generator to its end, answering each ``"update"`` with
    ``update()``; an error in the update is raised inside the run (its folder, error log and
    summary are handled there), then here.  Returns the run's history."""
    try:
        next(run)
        while True:
            try:
                stats = update()
            except BaseException as err:
                run.throw(err)
                raise
            run.send(stats)
    except StopIteration as done:
        return done.value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, env_fn: Callable[..., Any], cfg: Optional[Config] = None, callbacks: Sequence[Any] = ()):
        """``callbacks``: objects with the hooks of :mod:`mappo.callbacks` (or entries like the config
        field's: a name, ``"module:Class"``, ``{name: ..., <kwargs>}``), run after the config's own."""
        cfg = cfg if cfg is not None else Config()
        if not isinstance(cfg, Config):
            raise TypeError(f"cfg must be a mappo.Config, got {type(cfg).__name__}")
        if cfg.num_seeds > 1:
            raise ValueError(f"config field 'num_seeds'={cfg.num_seeds}: a Trainer trains one seed; "
                             f"mappo.SeedStack(env_fn, cfg) trains {cfg.num_seeds} in one process (mappo train picks it)")
        validate(cfg)  # the fields by themselves, then the parts they name: before any env is built
        check_registered(cfg)
        self.callbacks = C.build_callbacks(cfg.callbacks) + C.from_argument(callbacks)
        if not callable(env_fn):
            raise TypeError(f"env_fn must be a zero-argument callable returning a ParallelEnv, got {env_fn!r}")
        if cfg.wrappers:  # SuperSuit wrappers, applied where each env is built (inside workers too)
            if isinstance(env_fn, Batched):
                raise ValueError("config field 'wrappers' applies SuperSuit wrappers to PettingZoo envs; a batched "
                                 "simulator (mappo.Batched) takes none")
            env_fn = WrappedEnvFn(env_fn, cfg.wrappers)
        self.cfg, self.env_fn = cfg, env_fn
        seed_everything(cfg.seed)
        # device=auto weighs the env (mappo/machine.py): a PettingZoo env's layout is read first, on
        # the CPU; a batched simulator is built on the chosen device
        machine, batched = M.Machine.this(), isinstance(env_fn, Batched)
        spec = None if batched else self._team_spec(torch.device("cpu"))
        images = spec is not None and cfg.encoder != "mlp" and (any(a.image for a in spec.agents) or (
            spec.state_image is not None and cfg.critic_input in ("state", "agent_specific")))
        # asked only where it matters: a JAX simulator answers by importing jax
        simulator_cuda = batched and cfg.device == "auto" and machine.cuda and env_fn.can_use_cuda()
        device, why = M.choose_device(cfg.device, machine, batched, images, max(cfg.hidden_sizes), simulator_cuda)
        # under torchrun: join the process group; each rank takes GPU LOCAL_RANK (docs/DISTRIBUTED.md)
        self.sync, self.device = D.setup(torch.device(device))
        self.resources = M.choose_resources(machine, device, why, cfg.vector_mode, batched, cfg.num_envs,
                                            cfg.num_workers, cfg.torch_threads)
        # rank r's envs are numbered from r * num_envs, as if one process ran them all
        self.env_index_offset = self.sync.rank * cfg.num_envs
        self.spec = spec if spec is not None else self._team_spec(self.device)
        if cfg.critic_input in ("concat_obs", "local") and not isinstance(env_fn, Batched):
            # the critic never reads state(): the workers skip it (pistonball's is a 1.5 MB screen per step)
            self.spec.set_state(None)
        self.spec.set_image_layout(cfg.image_layout)
        cfg = self.cfg = self._resolve_automatic_fields(cfg)
        self.learner = build_learner(cfg.algorithm, self.spec, cfg, self.device, self.sync)
        self.policy = Policy(self.spec, self.learner.actor, self.device, compile=cfg.compile)
        self.vec: Optional[VectorEnv] = None  # the training envs, built on the first train()
        self.buffer: Optional[RolloutBuffer] = None
        self.interrupted: Optional[int] = None  # the signal that stopped the last train() call, if any
        self.stop_reason: Optional[str] = None  # why a callback stopped the last train() call, if one did
        self._resume: Optional[Dict[str, Any]] = None  # env-side state from a checkpoint, applied in _ensure_envs
        self.env_steps = 0
        self.iteration = 0
        self.history: List[Dict[str, Any]] = []
        self.best_eval: Optional[float] = None  # the best evaluation team return so far (best.pt holds it)
        if self.sync.rank:  # a different sampling stream per rank
            seed_everything((cfg.seed + self.sync.rank) % 2**32)  # numpy takes seeds below 2**32

    def _team_spec(self, device: torch.device) -> Any:
        try:
            return team_spec(self.env_fn, self.cfg.seed, device)
        except TypeError as err:
            if "keyword argument" not in str(err):
                raise
            raise TypeError(f"building the env failed: {err}. Check config field 'env_kwargs' "
                            f"({self.cfg.env_kwargs}) against what env {self.cfg.env!r} accepts") from err

    def _resolve_automatic_fields(self, cfg: Config) -> Config:
        """``cfg`` with the fields left to the env filled in (``num_minibatches=0``: by action
        type; the ``cnn_*`` stacks: by image size), so that config.yaml and checkpoints record
        what ran.  The choices are printed once, when made."""
        lines = []
        if not cfg.num_minibatches:
            cfg = cfg.replace(num_minibatches=auto_minibatches(cfg, continuous=self.spec.cont_dim > 0))
            kind = "Box (Gaussian) actions" if self.spec.cont_dim else "categorical actions only"
            lines.append(f"num_minibatches=auto: {cfg.num_minibatches} ({kind})")
        chosen = cfg.cnn_channels is None or cfg.cnn_features is None
        fields, stacks = resolve_conv_stacks(cfg, self.spec, reads_state=cfg.critic_input in ("state", "agent_specific"))
        cfg = cfg.replace(**fields) if fields else cfg
        lines += stacks if chosen else []
        if lines and cfg.progress and self.sync.is_main:
            print("\n".join(lines), flush=True)
        return cfg

    # the networks and statistics live in the learner; these names are the public API
    @property
    def actor(self) -> torch.nn.Module:
        return self.learner.actor

    @property
    def critic(self) -> torch.nn.Module:
        return self.learner.critic

    @property
    def value_norm(self) -> torch.nn.Module:
        return self.learner.value_norm

    @property
    def kl_coef(self) -> float:
        return self.learner.kl_coef

    # ------------------------------------------------------------------------------------------
    def _ensure_envs(self) -> None:
        """Build the training envs, the buffer and the state carried between iterations."""
        if self.vec is None:
            cfg = self.cfg
            self.vec = make_vector_env(self.env_fn, cfg.num_envs, cfg.seed, self.device, cfg.vector_mode,
                                       self.resources.num_workers, first_index=self.env_index_offset, spec=self.spec,
                                       timeout=cfg.env_timeout_s)
            hidden = cfg.hidden_sizes[-1] if cfg.recurrent else 0
            self.buffer = RolloutBuffer(self.spec, cfg.rollout_length, cfg.num_envs, self.device, hidden)
            self.carry = rollout.Carry.fresh(cfg.num_envs, self.spec.num_agents, hidden, self.device)
        if self._resume is not None:
            state, self._resume = self._resume, None
            if state["episode"] is not None:
                # every env restarts the episode it was in, from that episode's seed: exact when the
                # checkpoint fell between episodes, as it does when episode lengths divide rollout_length
                self.vec.restart_episodes(state["episode"].numpy())
            self.carry = rollout.Carry(*(state[k].to(self.device) for k in ("actor_h", "critic_h", "episode_start")))
            set_rng_state(state["rng"], self.device)  # last: building and resetting envs may draw from the RNGs

    def collect(self) -> List[Dict[str, Any]]:
        """Fill the buffer with ``T`` steps of every env and the critic's values; returns the
        episodes that ended.

        With subprocess workers on the CPU, torch runs single-threaded here: the workers need
        the cores, and small per-step batches gain nothing from intra-op threads (this alone
        took simple_spread collection from 2,700 to 4,200 steps/s on 2 cores, docs/PERFORMANCE.md).
        """
        with threads(self.resources.collect_threads):
            return rollout.collect(self.policy, self.learner, self.vec, self.buffer, self.carry)

    def update(self) -> Dict[str, float]:
        """The learner's update on the filled buffer, on the run's update threads; returns mean diagnostics."""
        with threads(self.resources.update_threads):
            return self.learner.update(self.buffer)

    def train(self, total_steps: Optional[int] = None, run_dir: Optional[str] = None) -> List[Dict[str, Any]]:
        """Train until ``total_steps`` env steps (default ``cfg.total_steps``); returns this call's history:
        one dict per iteration with iteration, env_steps, sps, policy_loss, value_loss, entropy,
        approx_kl, clip_fraction, kl_coef, explained_variance and lr, plus team_return,
        episode_length and episodes when episodes ended, and the ``eval/...`` keys on
        evaluation iterations (``eval_every``).

        ``run_dir`` (default ``cfg.run_dir``) receives config.yaml, metrics.jsonl (and the other
        ``loggers``), curves.png, ckpt.pt (every ``checkpoint_every`` iterations, at the end, and
        on SIGINT/SIGTERM) and best.pt (the checkpoint with the best evaluation so far).
        SIGINT or SIGTERM stops the run after the current iteration, with a checkpoint;
        ``self.interrupted`` then holds the signal number.  A second SIGINT stops at once.
        With ``flush_denormal`` (the default) this process flushes denormal floats to zero until
        ``train()`` returns.
        """
        return drive(self.training(total_steps, run_dir), self.update)

    def training(self, total_steps: Optional[int] = None, run_dir: Optional[str] = None,
                 stop: Optional[StopOnSignal] = None) -> Generator[str, Dict[str, float], List[Dict[str, Any]]]:
        """:meth:`train` as a generator that yields ``"update"`` after each rollout and takes the
        update's diagnostics back (``send``); it returns the history.  :func:`drive` runs it with
        :meth:`update`; ``mappo/seeds.py`` runs several seeds' generators side by side with one
        update for all of them.  ``stop``: a signal handler shared by such runs (default: its
        own); its holder also owns the other process-wide setting, ``flush_denormal``."""
        cfg = self.cfg
        total = int(total_steps if total_steps is not None else cfg.total_steps)
        if total > cfg.total_steps:
            # the run's budget grows: lr_schedule=linear decays to the new end (not to 0 at the old
            # one), and config.yaml and checkpoints say what ran, as `--resume total_steps=` does
            self.cfg = cfg = cfg.replace(total_steps=total)
        run_dir = run_dir if run_dir is not None else cfg.run_dir
        main = self.sync.is_main  # only rank 0 logs and writes the run folder
        ckpt = os.path.join(run_dir, "ckpt.pt") if run_dir is not None else None
        # rank 0 owns the folder while it writes; a fresh run may not mix with one already there
        fresh = not self.history and self._resume is None
        folder = runfolder.claim(run_dir, fresh=fresh, overwrite=cfg.overwrite) if main and run_dir is not None else None
        # denormal floats (below 1.2e-38) take a slow path on x86 CPUs; settling physics makes
        # them (VMAS navigation stepped 10 -> 16 ms once agents stood still), so they are flushed
        # to zero while training, and the process is left as torch's default (off) afterwards
        flush = stop is None and cfg.flush_denormal and torch.set_flush_denormal(True)
        try:
            return (yield from self._train(total, run_dir, ckpt, folder if fresh else None, stop))
        except Exception as err:
            if folder is not None and runfolder.holds_run(run_dir):  # the folder stays: the report goes with it
                path = runfolder.write_error_log(run_dir, err)
                if isinstance(err, EnvError):
                    err.log = path
            raise
        finally:
            if flush:
                torch.set_flush_denormal(False)
            if folder is not None:
                folder.release()

    def _train(self, total: int, run_dir: Optional[str], ckpt: Optional[str],
               discard_on_error: Optional[runfolder.RunFolderLock] = None, shared_stop: Optional[StopOnSignal] = None
               ) -> Generator[str, Dict[str, float], List[Dict[str, Any]]]:
        cfg, main = self.cfg, self.sync.is_main
        # env steps of all ranks: total_steps counts the whole data-parallel job
        steps_per_iter = cfg.num_envs * cfg.rollout_length * self.sync.world_size
        history: List[Dict[str, Any]] = []
        self.interrupted, self.stop_reason = None, None
        stopping = False  # a callback asked to stop (agreed by all ranks)
        started, last_plot, start_steps = time.perf_counter(), time.perf_counter(), self.env_steps
        logger: Optional[RunLogger] = None
        completed = False
        try:
            if self.vec is None and cfg.progress and main:  # the first train() call: how it uses the machine
                print("\n".join(self.resources.lines), flush=True)
            self._ensure_envs()
            logger = RunLogger(cfg if main else cfg.replace(wandb=False, loggers=[], progress=False),
                               run_dir if main else None, self.spec.names, total, self.env_steps, self.iteration,
                               self.learner.groups.names)
            with contextlib.nullcontext(shared_stop) if shared_stop else StopOnSignal() as stop:
                if cfg.eval_every and cfg.eval_at_start and self.iteration == 0:
                    # the untrained policy's evaluation: EPyMARL's averages over evaluations include it
                    evaluation = self.evaluate(cfg.eval_episodes, cfg.eval_deterministic)
                    row0 = {"iteration": 0, "env_steps": self.env_steps, **rollout.eval_row(evaluation)}
                    history.append(row0)
                    self.history.append(row0)
                    logger.log(row0)
                    logger.log_evaluation(0, self.env_steps, evaluation)
                    C.call(self.callbacks, "on_evaluation", self, evaluation)
                while self.env_steps < total and not stopping and self._agreed_stop(stop.signum) is None:
                    start = time.perf_counter()
                    frac = linear_schedule(self.env_steps, cfg.total_steps) if cfg.lr_schedule == "linear" else 1.0
                    self.learner.set_lr_fraction(frac)
                    episodes = self.collect()
                    stats = yield "update"
                    self.env_steps += steps_per_iter
                    self.iteration += 1
                    row: Dict[str, Any] = {"iteration": self.iteration, "env_steps": self.env_steps,
                                           "sps": steps_per_iter / (time.perf_counter() - start), **stats,
                                           "lr": self.learner.learning_rate,
                                           **self._episode_stats(episodes)}
                    improved = False
                    if cfg.eval_every and self.iteration % cfg.eval_every == 0:
                        evaluation = self.evaluate(cfg.eval_episodes, cfg.eval_deterministic)
                        row.update(rollout.eval_row(evaluation))
                        improved = self.best_eval is None or evaluation["team_return_mean"] > self.best_eval
                        if improved:
                            self.best_eval = evaluation["team_return_mean"]
                    history.append(row)
                    self.history.append(row)
                    logger.log(row)
                    if "eval/team_return_mean" in row:
                        logger.log_evaluation(self.iteration, self.env_steps, evaluation)
                        C.call(self.callbacks, "on_evaluation", self, evaluation)
                    # the callbacks see the row before the checkpoints are written, so that a run
                    # resumed from one goes on with the callbacks' state after this row
                    if self.callbacks:
                        asked = any(C.call(self.callbacks, "on_iteration_end", self, row))
                        stopping = bool(self.sync.max_int(int(asked), self.device))
                    if run_dir is not None and improved:
                        self._save(os.path.join(run_dir, "best.pt"))
                    if ckpt and cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0:
                        self._save(ckpt)
                    if main and run_dir and cfg.curves_every_s and time.perf_counter() - last_plot >= cfg.curves_every_s:
                        logger.plot()
                        last_plot = time.perf_counter()
                self.interrupted = self._agreed_stop(stop.signum)
                if stopping:
                    self.stop_reason = C.stop_reason(self.callbacks)
                    if main:
                        print(f"stopped at iteration {self.iteration}: {self.stop_reason}", flush=True)
                if ckpt:
                    self._save(ckpt)
                    logger.plot()
                    logger.log_file("checkpoint", ckpt, self.env_steps)
                    if main and logger.wants_video:
                        self._log_video(logger, run_dir)
                C.call(self.callbacks, "on_run_end", self, history)
            completed = True
        finally:
            if logger is not None:
                logger.close()
            # a fresh run that stops with an error before its first checkpoint has nothing to resume:
            # it leaves nothing that would block the same command
            discarded = not completed and discard_on_error is not None and not runfolder.holds_run(run_dir)
            if discarded:
                discard_on_error.discard()
            if logger is not None:
                # after a crash only files that exist are worth pointing to
                written = ckpt if ckpt is not None and os.path.isfile(ckpt) else None
                logger.summary(self.env_steps, self.interrupted, history, time.perf_counter() - started, written,
                               self.env_steps - start_steps, discarded)
        return history

    def _log_video(self, logger: RunLogger, run_dir: str) -> None:
        """A deterministic episode rendered to ``<run_dir>/eval.mp4`` and handed to the loggers."""
        from .video import record, write_video

        try:
            frames = record(self.policy, self.env_fn, seed=self.eval_seed)
            logger.log_file("video", write_video(frames, os.path.join(run_dir, "eval.mp4")), self.env_steps)
        except Exception as err:  # no renderer: say so, keep the run
            print(f"warning: no eval video logged: {err}", file=sys.stderr)

    def _agreed_stop(self, signum: Optional[int]) -> Optional[int]:
        """The stop signal, agreed by all ranks (any rank's signal stops every rank at the same
        iteration, so no rank waits forever in a collective)."""
        return self.sync.max_int(signum or 0, self.device) or None

    def _episode_stats(self, episodes: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Mean team return and length of the episodes that ended this iteration, on all ranks;
        ``info/<key>``, the mean of each number the agents' infos reported as they finished
        (SMAX's ``info/won``: the fraction of episodes won); with several agent groups also each
        group's return, ``<group>/team_return`` (its agents' rewards summed), and
        ``<group>/info/<key>``."""
        groups = self.learner.groups
        several = groups.count > 1
        per_group = [sum(sum(e["agent_returns"][k] for k in groups.members(g)) for e in episodes)
                     for g in range(groups.count)] if several else []
        keys = sorted({key for e in episodes for key in e.get("info", {})})
        if self.sync.enabled:  # every rank sums the same keys, in the same order
            keys = sorted(set().union(*self.sync.gather(keys)))
        info = rollout.info_arrays(episodes, self.spec.num_agents)
        slots = [list(range(self.spec.num_agents))] + ([groups.members(g) for g in range(groups.count)] if several else [])
        finite = {key: np.isfinite(values) for key, values in info.items()}
        info_sums = [[float(np.where(finite[key], info[key], 0.0)[:, s].sum()), float(finite[key][:, s].sum())]
                     if key in info else [0.0, 0.0] for s in slots for key in keys]
        totals = self.sync.sum(torch.tensor([sum(e["team_return"] for e in episodes),
                                             sum(e["length"] for e in episodes), len(episodes),
                                             *per_group, *(x for pair in info_sums for x in pair)],
                                            dtype=torch.float64, device=self.device)).tolist()
        (ret, length, count), group_ret = totals[:3], totals[3:3 + len(per_group)]
        info_totals = totals[3 + len(per_group):]
        if not count:
            return {}
        row = {"team_return": ret / count, "episode_length": length / count, "episodes": int(count)}
        row.update({f"{g}/team_return": r / count for g, r in zip(groups.names, group_ret)})
        prefixes = ["info/"] + [f"{g}/info/" for g in groups.names] if several else ["info/"]
        for n, (prefix, key) in enumerate((p, k) for p in prefixes for k in keys):
            total, reported = info_totals[2 * n], info_totals[2 * n + 1]
            if reported:
                row[prefix + key] = total / reported
        return row

    # ------------------------------------------------------------------------------------------
    @property
    def eval_seed(self) -> int:
        """Seed of evaluation episodes (and eval videos): away from the training envs' seeds."""
        return (self.cfg.seed + EVAL_SEED_OFFSET) % 2**32  # seeds numpy too (VMAS): below 2**32

    def evaluate(self, episodes: int = 20, deterministic: bool = True, seed: Optional[int] = None,
                 policies: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        """Mean returns and lengths of ``episodes`` episodes on envs of their own (seeded with
        :attr:`eval_seed` unless ``seed`` is given), each cut at ``eval_max_steps`` steps; see
        :func:`mappo.rollout.evaluate`.  ``group_return_mean`` holds each agent group's return,
        ``group_info_mean`` the mean over its agents of their ``info_mean``.

        ``policies`` (cross-play) replaces groups' policies: ``{"adversaries": "random"}``
        acts uniformly at random among valid actions, ``{"adversaries": "runs/Y"}`` with that
        group's actor from another checkpoint (run folder or file) of the same env."""
        policy = self.policy
        if policies:
            from .policy import MixedPolicy

            # another run's actor is built (random init, then its weights) on a forked RNG: an
            # evaluation never moves the training run's random streams
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                policy = MixedPolicy.build(self.policy, self.learner.groups, policies, self._group_policy)
        with threads(self.resources.eval_threads):
            result = rollout.evaluate(policy, self.env_fn, self.spec, episodes, deterministic,
                                      self.eval_seed if seed is None else seed, self.device, self.cfg.eval_max_steps)
        groups = self.learner.groups
        result["group_return_mean"] = {g: float(sum(result["return_mean"][self.spec.names[k]]
                                                    for k in groups.members(i)))
                                       for i, g in enumerate(groups.names)}
        result["group_info_mean"] = {g: {key: rollout.finite_mean([means[self.spec.names[k]] for k in groups.members(i)])
                                         for key, means in result["info_mean"].items()}
                                     for i, g in enumerate(groups.names)}
        result["policies"] = {g: (policies or {}).get(g, "trained") for g in groups.names}
        return result

    def _group_policy(self, run: str) -> Policy:
        """The actor of another checkpoint of this env (its team layout and groups must match)."""
        path = os.path.join(run, "ckpt.pt") if os.path.isdir(run) else run
        payload = load_checkpoint(path)
        cfg = Config.from_dict({**payload["config"], "device": self.device.type})
        layout = self.spec.layout()
        if not same_team(payload["team"], layout, ignore_state=True):  # only its actor is used
            raise ValueError(f"{path!r} was trained on agents/widths {payload['team']}, not this env's {layout}")
        learner = build_learner(cfg.algorithm, self.spec, cfg, self.device)
        if learner.groups != self.learner.groups:
            raise ValueError(f"{path!r} has agent groups {dict(zip(learner.groups.names, learner.groups.of))}, "
                             f"this run {dict(zip(self.learner.groups.names, self.learner.groups.of))}")
        learner.actor.load_state_dict(payload["actor"])
        return Policy(self.spec, learner.actor, self.device)

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Everything a run needs to continue as if it had never stopped: the learner (networks,
        optimisers, normalisers, the KL coefficient), counters, the best evaluation, every RNG
        state, each env's episode count, the recurrent states carried between iterations, the
        config and the history.  Plain tensors and containers only, so it loads with
        ``weights_only=True``."""
        resume = None
        if self.vec is not None:  # envs built: their position in the run is part of the state
            episode = self.vec.episode_counts()
            resume = {"rng": rng_state(self.device), "episode": None if episode is None else torch.from_numpy(episode),
                      **{k: getattr(self.carry, k).cpu() for k in ("actor_h", "critic_h", "episode_start")}}
        elif self._resume is not None:  # loaded and not trained yet: the state it will resume from
            resume = self._resume
        ranks = self.sync.gather(resume)  # one entry per rank: each resumes its own envs and RNG streams
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            **self.learner.state_dict(),
            "env_steps": int(self.env_steps),
            "iteration": int(self.iteration),
            "best_eval": self.best_eval,
            "history": [dict(row) for row in self.history],
            "team": self.spec.layout(),
            "resume": None if resume is None else ranks,
            "callbacks": C.callback_states(self.callbacks),
        }

    def _save(self, path: str) -> None:
        """:meth:`save`, then the callbacks' ``on_checkpoint``."""
        self.save(path)
        C.call(self.callbacks, "on_checkpoint", self, path)

    def save(self, path: str) -> None:
        """Write a checkpoint.  Distributed: every rank must call it (it gathers each rank's
        state); rank 0 writes the file."""
        payload = self.state_dict()
        if self.sync.is_main:
            save_checkpoint(path, payload)
        self.sync.barrier()  # no rank goes on (and perhaps reads the file) before it is written

    @classmethod
    def load(cls, path: str, env_fn: Callable[..., Any], callbacks: Sequence[Any] = (), **overrides: Any) -> "Trainer":
        """Rebuild a trainer from ``save``'s file; ``overrides`` replace config fields (e.g. device,
        or a larger total_steps to train on); ``callbacks`` are added to the run's configured ones,
        as in the constructor, and the callbacks get back the state they had.  ``train()`` then
        continues the run exactly where it stopped, RNG states included."""
        return cls.from_checkpoint(load_checkpoint(path), env_fn, path, callbacks, **overrides)

    @classmethod
    def from_checkpoint(cls, payload: Dict[str, Any], env_fn: Callable[..., Any], path: str = "checkpoint",
                        callbacks: Sequence[Any] = (), **overrides: Any) -> "Trainer":
        """:meth:`load` from a checkpoint already read with ``load_checkpoint``; ``path`` names it in errors."""
        fmt = payload.get("format")
        if fmt not in (3, 4, CHECKPOINT_FORMAT):
            raise ValueError(f"{path!r} is a format-{fmt} checkpoint; this version of mappo reads formats 3 to "
                             f"{CHECKPOINT_FORMAT} (format 2 and older were written before mappo's exact-resume "
                             f"checkpoints; retrain, or load it with the mappo version that wrote it)")
        # in their checked form (wrappers, groups), so that the comparison below is field by field
        cfg = check_registered(Config.from_dict({**payload["config"], **overrides}))
        saved = check_registered(Config.from_dict(payload["config"]))
        shaping = SHAPING_FIELDS + learner_class(saved.algorithm).shaping_fields
        changed = [f for f in shaping if getattr(cfg, f) != getattr(saved, f)]
        if changed:
            raise ValueError(f"{path!r} was trained with " + ", ".join(f"{f}={getattr(saved, f)!r}" for f in changed)
                             + "; these fields shape the networks, the envs or the random streams, so a loaded run keeps them (got "
                             + ", ".join(f"{f}={getattr(cfg, f)!r}" for f in changed) + ")")
        trainer = cls(env_fn, cfg, callbacks)
        layout = trainer.spec.layout()
        # older runs recorded a state their critic never read
        if not same_team(payload["team"], layout, ignore_state=cfg.critic_input in ("concat_obs", "local")):
            raise ValueError(
                f"{path!r} was trained on agents/widths {payload['team']}, but env_fn builds {layout}. "
                f"Pass the env_fn the run was trained with (the CLI rebuilds it from the config field 'env', "
                f"currently {cfg.env!r}: set it to a registry name or 'module:callable' when training)")
        for net in ("actor", "critic"):
            bad = [k for k, v in payload[net].items() if torch.is_tensor(v) and v.is_floating_point()
                   and not bool(torch.isfinite(v).all())]
            if bad:
                raise ValueError(f"{path!r} holds non-finite {net} parameters ({', '.join(bad[:3])}): it cannot act "
                                 f"or train; use an earlier checkpoint")
        trainer.learner.load_state_dict(payload)
        trainer.env_steps = payload["env_steps"]
        trainer.iteration = payload["iteration"]
        trainer.best_eval = payload.get("best_eval")
        trainer.history = list(payload["history"])
        C.load_callback_states(trainer.callbacks, payload.get("callbacks", {}), path)
        ranks = payload["resume"]
        if ranks is not None:
            if len(ranks) != trainer.sync.world_size:
                raise ValueError(f"{path!r} was written by a run with {len(ranks)} rank(s); resume it with the same "
                                 f"number of ranks (this run has {trainer.sync.world_size})")
            trainer._resume = ranks[trainer.sync.rank]
        return trainer

    def close(self) -> None:
        if self.vec is not None:
            self.vec.close()
            self.vec = None

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
