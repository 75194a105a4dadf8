"""Several seeds of one config trained in one process (config field ``num_seeds``).

    stack = SeedStack(env_fn, cfg)   # cfg.num_seeds = K: seeds cfg.seed, ..., cfg.seed + K - 1
    histories = stack.train()        # one history per seed

Each seed is an ordinary one-seed run: a :class:`~mappo.trainer.Trainer` with ``seed = cfg.seed + k``
and ``num_seeds = 1``, with its own envs, networks, update units (Adam, gradient clip, KL beta,
value normaliser), random streams, logs and checkpoints, in the folder ``<run_dir>/seed<S>``
(``mappo eval`` and ``mappo train --resume`` take that folder as they take any run's).

What the seeds share is the update.  Every minibatch step computes all seeds' losses, forward and
backward, as one batched computation: ``torch.func.vmap`` over the seeds' weights stacked
``[K, ...]`` (the "model ensembling" recipe of torch.func).  Then each seed clips its own gradient
and steps its own Adam.  Between updates each seed collects its rollout with its own random
streams in place, so seed ``k`` follows the run ``Trainer(env_fn, cfg.replace(seed=cfg.seed + k,
num_seeds=1))`` would, up to the float rounding of the batched matmuls
(tests/test_seeds.py::test_each_seed_equals_its_own_run).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence

import torch
from torch.func import functional_call, vmap

from .checkpoint import rng_state, set_rng_state
from . import runfolder
from .config import Config
from .files import written_atomically
from .learner import EpochTally, LossTerms, PPOLearner, add_terms
from .logger import resume_command
from .machine import Machine
from .networks import stepwise_gru
from .stop import StopOnSignal
from .trainer import Trainer, threads


SEEDS_FILE = "seeds.json"  # in a num_seeds run's folder: its seeds


def seed_folder(run_dir: str, seed: int) -> str:
    """The run folder of seed ``seed`` of a ``num_seeds`` run in ``run_dir``."""
    return os.path.join(run_dir, f"seed{seed}")


class _Networks(torch.nn.Module):
    """A learner's actor and critic as one module, whose forward is the learner's loss: what
    ``functional_call`` runs with another seed's weights in place."""

    def __init__(self, learner: PPOLearner):
        super().__init__()
        self.actor, self.critic = learner.actor, learner.critic
        self._learner = [learner]  # in a list: not a submodule

    def forward(self, mb: Dict[str, torch.Tensor], counts: Any, kl_coefs: torch.Tensor) -> LossTerms:
        return self._learner[0].loss(mb, counts, kl_coefs=kl_coefs)


def _stack(dicts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    return {k: torch.stack([d[k] for d in dicts]) for k in dicts[0]}


def _seed_terms(terms: LossTerms, k: int) -> LossTerms:
    """Seed ``k``'s (detached) part of losses computed for all seeds at once."""
    parts = {name: value[k].detach() for name, value in terms.parts.items()}
    return LossTerms(*(getattr(terms, f)[k].detach() for f in LossTerms._fields if f != "parts"), parts)


def learn_together(learners: Sequence[PPOLearner], mbs: Sequence[Dict[str, torch.Tensor]]) -> List[LossTerms]:
    """One optimiser step of every learner (all actor and critic units), learner ``k`` on
    minibatch ``mbs[k]``, with the losses, forward and backward, batched over the learners;
    returns each one's loss terms (detached), as :meth:`PPOLearner.learn` does for one.

    The learners must share one config but the seed, so their networks and minibatches have the
    same shapes.  A minibatch larger than ``update_rows`` runs in pieces, as in ``learn``."""
    template = learners[0]
    nets = [_Networks(learner) for learner in learners]
    own = [dict(net.named_parameters()) for net in nets]
    weights = {name: w.detach().requires_grad_() for name, w in _stack(own).items()}
    buffers = _stack([dict(net.named_buffers()) for net in nets])
    kl_coefs = torch.tensor([[u.kl_coef for u in learner.actor_units] for learner in learners],
                            device=template.device)
    pieces = [template._pieces(mb) for mb in mbs]  # the same cuts for every seed: equal shapes
    counts = template.counted_rows(torch.stack([mb["alive"] for mb in mbs])) if len(pieces[0]) > 1 else None

    def loss(w: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], mb: Dict[str, torch.Tensor], c: Any,
             kl: torch.Tensor) -> LossTerms:
        return functional_call(nets[0], {**w, **b}, (mb, c, kl))

    def checked(k: int, check: Callable[[], None]) -> None:
        try:
            check()
        except FloatingPointError as err:
            raise SeedFailed(k, learners[k].cfg.seed, err) from err

    totals: List[Optional[LossTerms]] = [None] * len(learners)
    for i in range(len(pieces[0])):
        with stepwise_gru():
            terms = vmap(loss, in_dims=(0, 0, 0, None if counts is None else 0, 0))(
                weights, buffers, _stack([p[i] for p in pieces]), counts, kl_coefs)
        for k, learner in enumerate(learners):
            if len(pieces[0]) == 1:  # before the backward pass: a NaN loss names its part and seed
                checked(k, lambda: learner._check_finite(terms.total[k], _seed_terms(terms, k)))
        terms.total.sum().backward()
        for k in range(len(learners)):
            part = _seed_terms(terms, k)
            totals[k] = part if totals[k] is None else add_terms(totals[k], part)
    # every seed's loss and gradient norms checked before any seed steps: an error leaves them all as they were
    stepped = []
    for k, learner in enumerate(learners):
        checked(k, lambda: learner._check_finite(totals[k].total, totals[k]))
        for name, p in own[k].items():  # a weight the loss never reads (no Gaussian dims) has none
            grad = weights[name].grad
            p.grad = None if grad is None else grad[k]
        units = learner._stepped(None, True)
        for unit, what in units:
            checked(k, lambda: unit.clip(what))
        stepped += units
    for unit, _ in stepped:
        unit.step()
    return totals  # type: ignore[return-value]


class SeedFailed(FloatingPointError):
    """A non-finite loss or gradient norm in one seed's update; ``index``: its place in the batch."""

    def __init__(self, index: int, seed: int, err: FloatingPointError):
        super().__init__(f"seed {seed}: {err}")
        self.index = index


class SeedStack:
    """``cfg.num_seeds`` seeds of ``cfg`` trained side by side in this process (module docstring).

    ``callbacks`` (as :class:`~mappo.trainer.Trainer` takes them): each seed gets its own copy,
    so a callback's state (early stopping's patience) is per seed; a seed a callback stops ends
    while the others go on.  With subprocess envs and ``num_workers=0`` (auto), each seed gets
    ``cores // K`` env workers (at least one), written into its config."""

    def __init__(self, env_fn: Callable[..., Any], cfg: Config, callbacks: Sequence[Any] = ()):
        if not isinstance(cfg, Config):
            raise TypeError(f"cfg must be a mappo.Config, got {type(cfg).__name__}")
        check_seedable(cfg)
        self.cfg = cfg
        self.trainers: List[Trainer] = []
        self.rng: List[Dict[str, Any]] = []  # each seed's random streams while another seed runs
        workers = cfg.num_workers
        if not workers and cfg.vector_mode == "subprocess":
            # each seed's PettingZoo envs have their own worker processes, idle while another seed
            # collects: one per core for every seed would be K x cores processes
            workers = max(1, Machine.this().cores // cfg.num_seeds)
        try:
            for k in range(cfg.num_seeds):
                seed = cfg.seed + k
                one = cfg.replace(seed=seed, num_seeds=1, progress=cfg.progress and k == 0, num_workers=workers,
                                  run_dir=None if cfg.run_dir is None else seed_folder(cfg.run_dir, seed))
                self._add(Trainer(env_fn, one, [copy.deepcopy(c) for c in callbacks]))
        except BaseException:
            self.close()
            raise
        self.device = self.trainers[0].device
        self.interrupted: Optional[int] = None

    def _add(self, trainer: Trainer) -> None:
        if not isinstance(trainer.learner, PPOLearner) or type(trainer.learner).update is not PPOLearner.update:
            trainer.close()
            raise ValueError(f"num_seeds={self.cfg.num_seeds} batches PPO's update over the seeds; algorithm="
                             f"{self.cfg.algorithm!r} updates its own way: train its seeds as separate runs")
        if trainer.sync.world_size > 1:
            trainer.close()
            raise ValueError("num_seeds > 1 runs in one process; under torchrun train one seed per job")
        self.trainers.append(trainer)
        self.rng.append(rng_state(trainer.device))  # what a one-seed run holds entering train()

    @classmethod
    def load(cls, run_dir: str, load_one: Callable[..., Trainer]) -> "SeedStack":
        """The seeds of a ``num_seeds`` run in ``run_dir`` (those its ``seeds.json`` lists), each
        rebuilt by ``load_one(folder, run_dir=folder)`` (e.g. :meth:`Trainer.load` of the folder's
        ckpt.pt; ``progress=False`` joins the fields after the first seed), to train on together
        where they stopped.  A listed seed without a checkpoint, or seeds whose configs differ
        (but for the seed and the budget), are errors naming them."""
        seeds = read_seeds(run_dir)
        if seeds is None:
            raise FileNotFoundError(f"{run_dir!r} holds no num_seeds run (no {SEEDS_FILE})")
        folders = [seed_folder(run_dir, seed) for seed in seeds]
        missing = [f for f in folders if not os.path.isfile(os.path.join(f, "ckpt.pt"))]
        if missing:
            raise FileNotFoundError(f"the num_seeds run in {run_dir!r} cannot go on as one: {missing} hold no checkpoint "
                                    f"(those seeds stopped before their first). Continue the others one by one "
                                    f"(mappo train --resume {run_dir}/seed<S>), or start the run again")
        stack = cls.__new__(cls)
        stack.trainers, stack.rng, stack.interrupted = [], [], None
        try:
            for k, folder in enumerate(folders):
                trainer = load_one(folder, run_dir=folder, **({} if k == 0 else {"progress": False}))
                if k == 0:
                    stack.cfg = trainer.cfg.replace(num_seeds=len(folders), run_dir=run_dir)
                    check_seedable(stack.cfg)
                else:
                    _check_same_run(stack.trainers[0], trainer)
                stack._add(trainer)
        except BaseException:
            stack.close()
            raise
        stack.device = stack.trainers[0].device
        return stack

    @property
    def seeds(self) -> List[int]:
        return [t.cfg.seed for t in self.trainers]

    @property
    def sync(self) -> Any:
        """The seeds' :class:`~mappo.distributed.Sync`: one process, so this one is the main one."""
        return self.trainers[0].sync

    def save(self, index: int, path: str) -> None:
        """Seed ``index``'s checkpoint (:meth:`Trainer.save`) with its own random streams: after
        :meth:`train`, the process's streams are those of the seed that ran last."""
        outside = rng_state(self.device)
        set_rng_state(self.rng[index], self.device)
        try:
            self.trainers[index].save(path)
        finally:
            set_rng_state(outside, self.device)

    def train(self, total_steps: Optional[int] = None) -> List[List[Dict[str, Any]]]:
        """Train every seed to ``total_steps`` env steps each (default ``cfg.total_steps``); returns
        each seed's history (as :meth:`Trainer.train` does for one).  SIGINT/SIGTERM stops every
        seed after its current iteration, each with its checkpoint.  A non-finite loss in one
        seed's update stops the others where their last checkpoints are and raises, naming it."""
        cfg = self.cfg
        fresh = all(not t.history and t._resume is None for t in self.trainers)
        if fresh and cfg.run_dir is not None:
            self._claim_root()
        if cfg.progress:
            where = f" in {cfg.run_dir}/seed<S>" if cfg.run_dir is not None else ""
            print(f"num_seeds={cfg.num_seeds}: seeds {self.seeds[0]}..{self.seeds[-1]} in one process{where}; "
                  f"progress shows seed {self.seeds[0]}", flush=True)
        histories: List[List[Dict[str, Any]]] = [[] for _ in self.trainers]
        stop = StopOnSignal()
        runs: Dict[int, Generator[str, Dict[str, float], List[Dict[str, Any]]]] = {}
        # process-wide, so held for all the seeds (see Trainer.training)
        flush = cfg.flush_denormal and torch.set_flush_denormal(True)
        try:
            with stop:
                for k, trainer in enumerate(self.trainers):
                    runs[k] = trainer.training(total_steps, stop=stop)
                waiting = [k for k in list(runs) if self._advance(k, runs, histories, None)]
                while waiting:
                    try:
                        stats = self.update(waiting)
                    except SeedFailed as err:
                        raise self._one_failed(waiting[err.index], err, runs, histories) from err
                    except BaseException as err:
                        for k in waiting:  # each run's own handlers see it (error log, summary)
                            try:
                                self._advance(k, runs, histories, err)
                            except BaseException:
                                pass
                        raise
                    waiting = [k for k, s in zip(waiting, stats) if self._advance(k, runs, histories, s)]
        except BaseException:
            if fresh and cfg.run_dir is not None:
                self._let_go_of_root()
            raise
        finally:
            for run in runs.values():  # after an error in one seed: the others close their logs and folders
                run.close()
            if flush:
                torch.set_flush_denormal(False)
        self.interrupted = stop.signum
        if cfg.progress:
            print(self._summary(histories), flush=True)
        return histories

    def _one_failed(self, bad: int, err: SeedFailed, runs: Dict[int, Any], histories: List[Any]) -> BaseException:
        """Seed ``bad``'s update failed: it gets the error (its error.log); the others stop where
        their last checkpoints are, without writing another (their weights are mid-update)."""
        for k in list(runs):
            if k != bad:
                runs.pop(k).close()
        try:
            self._advance(bad, runs, histories, err)
        except BaseException:
            pass
        root = self.cfg.run_dir
        if root is None:
            return FloatingPointError(f"{err}. The other seeds stopped")
        kept = [t.cfg.seed for t in self.trainers if runfolder.holds_run(seed_folder(root, t.cfg.seed))]
        if not kept:
            return FloatingPointError(f"{err}. The other seeds stopped; no seed had written a checkpoint yet, so "
                                      f"nothing of the run is kept")
        return FloatingPointError(f"{err}. The other seeds stopped; seeds {kept} keep their last checkpoints in {root}")

    def _claim_root(self) -> None:
        """``run_dir`` for this run's seeds: ``seeds.json`` lists them.  A folder holding another
        run (a one-seed run, or other seeds) is an error, or with ``overwrite`` is replaced."""
        root = self.cfg.run_dir
        if any(os.path.isfile(os.path.join(root, f)) for f in ("ckpt.pt", "config.yaml")):
            raise ValueError(f"run_dir {root!r} holds a one-seed run; a num_seeds run needs a folder of its own")
        old = read_seeds(root)
        if old is not None and old != self.seeds and not self.cfg.overwrite:
            raise ValueError(f"run_dir {root!r} holds a num_seeds run of seeds {old}, not {self.seeds}: choose "
                             f"another run_dir, or overwrite=true to replace it")
        replaced = [s for s in old or [] if s not in self.seeds]
        # nothing is removed while a folder this run would write or replace is in use by another run
        held = []
        try:
            for seed in self.seeds + replaced:
                folder = seed_folder(root, seed)
                if os.path.isdir(folder):
                    fd = runfolder.hold(os.path.join(folder, ".lock"))
                    if fd is None:
                        raise runfolder.RunFolderInUse(
                            f"run_dir {folder!r} is in use by another run (pid "
                            f"{runfolder.holder(os.path.join(folder, '.lock'))}); give this run its own run_dir")
                    held.append(fd)
            for seed in replaced:
                shutil.rmtree(seed_folder(root, seed), ignore_errors=True)
        finally:
            for fd in held:
                runfolder.let_go(fd)
        os.makedirs(root, exist_ok=True)
        with written_atomically(os.path.join(root, SEEDS_FILE)) as tmp, open(tmp, "w") as f:
            json.dump({"seeds": self.seeds}, f)

    def _let_go_of_root(self) -> None:
        """After a failed start: when no seed kept a checkpoint, nothing of the run is left."""
        root = self.cfg.run_dir
        if any(os.path.isfile(os.path.join(seed_folder(root, s), "ckpt.pt")) for s in self.seeds):
            return
        path = os.path.join(root, SEEDS_FILE)
        if os.path.isfile(path):
            os.remove(path)
        try:
            os.rmdir(root)
        except OSError:  # other files there: not ours to remove
            pass

    def _summary(self, histories: List[List[Dict[str, Any]]]) -> str:
        """The seeds' last team returns, and how to go on with all of them."""
        lasts = []
        for trainer, history in zip(self.trainers, histories):
            last = next((r["team_return"] for r in reversed(history) if "team_return" in r), None)
            lasts.append(f"{trainer.cfg.seed}: {'-' if last is None else f'{last:.3f}'}")
        text = f"num_seeds={len(self.trainers)}: team return last, by seed: {', '.join(lasts)}"
        if self.cfg.run_dir is not None:
            text += f"\ncontinue every seed with: {resume_command(self.cfg, self.cfg.run_dir)}"
        return text

    def _advance(self, k: int, runs: Dict[int, Any], histories: List[Any], answer: Any) -> bool:
        """Run seed ``k``'s generator, with its random streams in place, to its next update
        (True) or its end (False; its history kept).  ``answer``: the update's diagnostics, an
        error to raise in it, or None to start it."""
        set_rng_state(self.rng[k], self.device)
        try:
            if answer is None:
                next(runs[k])
            elif isinstance(answer, BaseException):
                runs[k].throw(answer)
            else:
                runs[k].send(answer)
            return True
        except StopIteration as done:
            histories[k] = done.value
            del runs[k]
            return False
        except BaseException:
            del runs[k]
            raise
        finally:
            self.rng[k] = rng_state(self.device)

    def update(self, ks: Sequence[int]) -> List[Dict[str, float]]:
        """The update of seeds ``ks`` (indices): each seed's targets, then ``ppo_epochs`` passes of
        minibatch steps batched over the seeds (:func:`learn_together`), each seed's minibatches
        shuffled from its own stream; returns each seed's diagnostics."""
        trainers = [self.trainers[k] for k in ks]
        learners = [t.learner for t in trainers]
        with threads(trainers[0].resources.update_threads):
            explained = [t.learner.targets(t.buffer) for t in trainers]
            inputs = [t.learner.network_inputs(t.buffer) for t in trainers]
            shuffles = []
            for k in ks:  # the stream the one-seed run's global generator would be at
                generator = torch.Generator()
                generator.set_state(self.rng[k]["torch"])
                shuffles.append(generator)
            streams = [t.learner.epoch_minibatches(t.buffer, x, g) for t, x, g in zip(trainers, inputs, shuffles)]
            tallies = [EpochTally() for _ in ks]
            for items in zip(*streams):
                terms = learn_together(learners, [mb for _, mb in items])
                for tally, part, (last, _) in zip(tallies, terms, items):
                    tally.add(part, last)
            for k, generator in zip(ks, shuffles):
                self.rng[k]["torch"] = generator.get_state()
            return [t.learner.finish_update(t.buffer, x, *tally.result(), ev)
                    for t, x, tally, ev in zip(trainers, inputs, tallies, explained)]

    def close(self) -> None:
        for trainer in self.trainers:
            trainer.close()

    def __enter__(self) -> "SeedStack":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_seeds(run_dir: str) -> Optional[List[int]]:
    """The seeds of the ``num_seeds`` run in ``run_dir`` (its ``seeds.json``), or None."""
    path = os.path.join(run_dir, SEEDS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return [int(s) for s in json.load(f)["seeds"]]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path!r} does not list a num_seeds run's seeds ({{\"seeds\": [0, 1, ...]}}): {err}") from err


# config fields in which the seeds of one run may differ
PER_SEED_FIELDS = ("seed", "run_dir", "progress", "total_steps", "num_workers", "overwrite")


def _check_same_run(first: Trainer, other: Trainer) -> None:
    """Seeds trained together share one config but for :data:`PER_SEED_FIELDS` (the batched
    update runs every seed with the first seed's settings)."""
    a, b = first.cfg.to_dict(), other.cfg.to_dict()
    differ = [k for k in a if k not in PER_SEED_FIELDS and a[k] != b.get(k)]
    if differ:
        raise ValueError(f"seeds {first.cfg.seed} and {other.cfg.seed} of {os.path.dirname(other.cfg.run_dir)!r} were "
                         f"trained with different configs (" + ", ".join(f"{k}: {a[k]!r} vs {b.get(k)!r}" for k in differ)
                         + "), so they cannot go on as one run: continue them one by one (mappo train --resume "
                         "<run_dir>/seed<S>)")


def check_seedable(cfg: Config) -> None:
    """What ``num_seeds > 1`` does not batch: an error naming the field."""
    if cfg.num_seeds < 2:
        raise ValueError(f"SeedStack trains num_seeds >= 2 seeds; num_seeds={cfg.num_seeds} is one Trainer")
    if cfg.compile:
        raise ValueError(f"num_seeds={cfg.num_seeds} does not take compile=true: the batched update runs under "
                         f"torch.func.vmap; train the seeds as separate runs to compile each")
