"""E copies of a PettingZoo ParallelEnv -> batched numpy arrays with fixed agent slots.

Every reset is seeded: env ``i``'s ``k``-th episode starts from ``episode_seed(seed, i, k)``,
and ``episode [E]`` counts each env's resets.  An env's state at an episode start is therefore
a function of (seed, i, k) alone, which is what lets a resumed run continue exactly;
and runs with different seeds share no episode stream (``seed + i`` would: run 1's env 0
would replay run 0's env 1).  ``first_index`` offsets ``i`` (rank r of a distributed job
passes ``r * num_envs``, so its envs continue the numbering of the ranks before it).

Agent slots come from ``possible_agents`` and never change.  An agent that has left the
episode keeps its slot with ``alive=False``, a zero observation and no action sent to the
env.  Envs reset themselves when every agent is done; the observation returned for that
step is the first of the next episode, and ``final_obs``/``final_state`` keep the last one
so a time-limit truncation can bootstrap from it (DESIGN.md, "time limits are not deaths").

Both back ends implement ``mappo.protocol.VectorEnv``.  They keep numpy arrays: the protocol's
step fields (``protocol.STEP_FIELDS``) plus ``actions [E, A, W] float32`` and ``episode [E]
int64``; ``observe`` hands a field to the trainer as a torch tensor on its device.

Two back ends share the per-env logic in :class:`EnvSlot`: ``InProcessVectorEnv`` (for
debugging) and ``SubprocVectorEnv``, whose workers each step a slice of the envs and write
straight into shared-memory arrays, so nothing is pickled per step but a short command.
"""
from __future__ import annotations

import atexit
import contextlib
import math
import multiprocessing as mp
import multiprocessing.util  # noqa: F401  (registers multiprocessing's exit handler before ours, below)
import os
import signal
import time
import traceback
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch

from .machine import Machine, worker_single_threaded
from .protocol import Batched, EnvError, VectorEnv, describe_env, field_shapes
from .spaces import TeamSpec, flatten_state

EnvFn = Callable[[], Any]
WORKER_PARENT_CHECK_S = 1.0  # how often an idle worker checks that its trainer is alive


class EnvContractError(ValueError):
    """What an env returned breaks the env contract; the message names the agent and the field."""


def failure(err: BaseException, phase: str) -> str:
    """One line for :class:`mappo.protocol.EnvError`: a contract violation as it is, anything the
    env code raised with the phase it raised in ("reset", "step", "construction")."""
    if isinstance(err, EnvContractError):
        return str(err)
    return f"its {phase} raised {type(err).__name__}: {err}"


def episode_seed(seed: int, index: int, episode: int) -> int:
    """Reset seed of env ``index``'s ``episode``-th episode in a run seeded ``seed``: numpy's
    SeedSequence over the three, so distinct (seed, index, episode) give independent streams."""
    return int(np.random.SeedSequence([int(seed), int(index), int(episode)]).generate_state(1)[0])


def make_parallel(env: Any) -> Any:
    """Return a ParallelEnv: AEC envs are converted, anything else is refused clearly."""
    from pettingzoo.utils.env import AECEnv, ParallelEnv

    if isinstance(env, AECEnv):
        from pettingzoo.utils.conversions import aec_to_parallel

        return aec_to_parallel(env)
    if isinstance(env, ParallelEnv) or (hasattr(env, "possible_agents") and hasattr(env, "step")):
        return env
    raise TypeError(f"env_fn must return a PettingZoo ParallelEnv or AECEnv, got {type(env).__name__}")


def env_state(env: Any, flat: bool = True) -> Optional[np.ndarray]:
    """``env.state()`` flattened (``flat``, else as an array of its own shape), or None when the
    env does not implement it."""
    state_fn = getattr(env, "state", None)
    if state_fn is None:
        return None
    try:
        state = state_fn()
    except (NotImplementedError, AttributeError):
        return None
    if state is None:
        raise ValueError(f"{type(env).__name__}.state() returned None; return the global state as an array, or "
                         f"raise NotImplementedError when the env has none (the critic then joins the observations)")
    return flatten_state(state) if flat else np.asarray(state)


def probe(env_fn: EnvFn, seed: int) -> tuple:
    """Build one env to read the team layout; returns ``(spec, env)`` with the env reset."""
    env = make_parallel(env_fn())
    spec = TeamSpec.from_env(env)
    env.reset(seed=seed)
    spec.set_state(env_state(env, flat=False))
    return spec, env


def allocate(spec: TeamSpec, num_envs: int, alloc: Callable[[tuple, Any], np.ndarray] = np.zeros) -> Dict[str, np.ndarray]:
    """The protocol's step fields, plus the actions and each env's episode number."""
    shapes = {**field_shapes(spec, num_envs), "actions": ((num_envs, spec.num_agents, spec.action_width), np.float32),
              "episode": ((num_envs,), np.int64)}
    return {k: alloc(shape, dtype) for k, (shape, dtype) in shapes.items()}


class ArrayVectorEnv:
    """A back end below (in-process or subprocess) as a ``mappo.protocol.VectorEnv``: the back end
    steps the envs and fills the numpy ``arrays``; this hands them to the trainer on ``device``."""

    def __init__(self, backend: Any, device: Any = "cpu"):
        self.backend, self.spec, self.num_envs, self.arrays = backend, backend.spec, backend.num_envs, backend.arrays
        self.device = torch.device(device)

    def reset(self) -> None:
        self.backend.reset()

    def step(self) -> List[Dict[str, Any]]:
        return self.backend.step()

    def close(self) -> None:
        self.backend.close()

    def observe(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.arrays[name]).to(self.device, copy=True)  # a snapshot: steps rewrite arrays

    def set_actions(self, actions: torch.Tensor) -> None:
        self.arrays["actions"][:] = actions.cpu().numpy()

    def episode_counts(self) -> np.ndarray:
        return self.arrays["episode"].copy()

    def restart_episodes(self, counts: np.ndarray) -> None:
        """Every env restarts episode ``counts[i]`` from that episode's seed."""
        self.arrays["episode"][:] = counts
        self.backend.reset()


def record_info(final_info: Dict[str, np.ndarray], slot: int, num_agents: int, info: Any) -> None:
    """Keep the numeric scalars of one agent's ``info`` dict (bools, ints, floats, 0-d arrays) in
    ``final_info[key][slot]`` (``[A]`` float arrays, NaN where an agent said nothing); other values
    (strings, arrays, nested dicts, action masks) are not metrics and are skipped."""
    if not isinstance(info, dict):
        return
    for key, value in info.items():
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        if isinstance(key, str) and isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
            final_info.setdefault(key, np.full(num_agents, np.nan))[slot] = float(value)


class EnvSlot:
    """One env writing into row ``index`` of the shared arrays; handles auto-reset and episode stats."""

    def __init__(self, env: Any, spec: TeamSpec, arrays: Dict[str, np.ndarray], index: int, seed: int,
                 global_index: int):
        self.env, self.spec, self.a, self.i, self.seed = env, spec, arrays, index, seed
        self.global_index = global_index  # the env's number in the whole (possibly distributed) run
        self.names = spec.names
        self.known = set(spec.names)
        self.team_return = 0.0
        self.agent_returns = np.zeros(spec.num_agents)
        self.length = 0
        self.final_info: Dict[str, np.ndarray] = {}  # key -> [A]: what each agent's info said as it finished

    # --- the env boundary: what comes back from the env is checked here, once, per step ---------
    def _fail(self, agent: Optional[str], field: str, what: str) -> None:
        who = f"agent {agent!r}, " if agent is not None else ""
        raise EnvContractError(f"{who}{field}: {what}")

    def _check_agents(self, field: str, names: Any) -> None:
        if not self.known.issuperset(names):
            self._fail(sorted(set(names) - self.known)[0], field, f"not in possible_agents {self.names}")

    def _write_row(self, field: str, k: int, value: Any, out: np.ndarray) -> None:
        """Agent ``k``'s observation into ``out``: it must fit the agent's declared space."""
        try:
            self.spec.flatten_obs(k, value, out)
        except Exception as err:
            space = self.spec.agents[k].obs_space
            self._fail(self.names[k], field, f"{np.shape(value)} does not fit its space {space} ({err})")

    def _check_finite(self, field: str, rows: np.ndarray) -> None:
        """``rows [A, O]``, all agents at once: one float64 sum per step is NaN or inf exactly when
        some entry is (float32 values cannot overflow it), the cheapest check there is.  uint8 rows
        (images) are finite by their type."""
        if rows.dtype == np.uint8:
            return
        if not math.isfinite(rows.sum(dtype=np.float64)):
            k = int(np.flatnonzero(~np.isfinite(rows).all(axis=-1))[0])
            self._fail(self.names[k], field, f"not finite ({rows[k]!r})")

    def _state(self, field: str, ended: bool = False) -> np.ndarray:
        """``env.state()``, checked.  ``ended``: the step just ended the episode; an env whose state()
        fails then (multiwalker's raises once the package is gone) gives its last state instead,
        which only a time-limit bootstrap would read."""
        state = env_state(self.env)
        if state is None and ended:
            return self.a["state"][self.i]
        if state is None or state.size != self.spec.state_dim:
            self._fail(None, field, f"state() has {0 if state is None else state.size} entries, expected "
                                    f"{self.spec.state_dim}")
        if state.dtype != np.uint8 and not math.isfinite(state.sum(dtype=np.float64)):  # one reduction: NaN or inf anywhere makes it so
            self._fail(None, field, f"state() is not finite ({state!r})")
        return state

    def _write_obs(self, obs: Dict[str, Any], infos: Dict[str, Any], alive_names,
                   state: Optional[np.ndarray] = None, checked: bool = False) -> None:
        """The env's observations (and ``state``, read from the env unless given) into row ``i``.
        ``checked``: ``step`` has already checked these observations (as final_obs) and the state."""
        a, i = self.a, self.i
        if not checked:
            self._check_agents("observations", obs)
        for k, name in enumerate(self.names):
            if name in alive_names:
                if name not in obs:
                    self._fail(name, "observations", "a live agent got no observation")
                self._write_row("observation", k, obs[name], a["obs"][i, k])
                self.spec.action_mask(k, obs[name], infos.get(name), a["action_mask"][i, k])
                a["alive"][i, k] = True
            else:  # death masking: zero input, only the padded "valid" logits, no action sent.
                # Not SuperSuit's black_death_v3: it keeps a dead agent in the env with zero
                # observations and still steps it, so its (meaningless) actions and zero rewards would
                # enter the loss; here ``alive`` leaves them out (MAPPO paper, Sec. 4.4)
                a["obs"][i, k] = 0.0
                a["action_mask"][i, k] = self.spec.valid_logits[k]
                a["alive"][i, k] = False
        if not checked:
            self._check_finite("observation", a["obs"][i])
        if self.spec.state_dim:
            a["state"][i] = self._state("state") if state is None else state

    def reset(self) -> None:
        """Start episode ``episode[i]`` from its seed."""
        obs, infos = self.env.reset(seed=episode_seed(self.seed, self.global_index, int(self.a["episode"][self.i])))
        self._write_obs(obs, infos or {}, set(self.env.agents))
        self.team_return, self.length = 0.0, 0
        self.agent_returns[:] = 0.0
        self.final_info = {}

    def step(self) -> Optional[Dict[str, Any]]:
        """Step with ``actions[i]``; returns the finished episode's stats, if one finished."""
        a, i, spec = self.a, self.i, self.spec
        acting = [k for k, name in enumerate(self.names) if a["alive"][i, k]]
        actions = {self.names[k]: spec.decode_action(k, a["actions"][i, k]) for k in acting}
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        infos = infos or {}
        for field, names in (("observations", obs), ("rewards", rewards), ("terminations", terms),
                             ("truncations", truncs)):
            self._check_agents(field, names)
        a["reward"][i] = 0.0
        a["terminated"][i] = False
        a["truncated"][i] = False
        for k in acting:
            name = self.names[k]
            if name not in rewards:
                self._fail(name, "rewards", "an agent that acted got no reward")
            reward = rewards[name]
            try:
                finite = math.isfinite(reward)
            except TypeError:
                finite = False
            if not finite:
                self._fail(name, "reward", f"{reward!r} is not a finite number")
            a["reward"][i, k] = reward
            a["terminated"][i, k] = bool(terms.get(name, False))
            a["truncated"][i, k] = bool(truncs.get(name, False))
        # an agent that ends by truncation bootstraps from its last observation
        a["final_obs"][i] = 0.0
        for k in acting:
            if self.names[k] in obs:
                self._write_row("observation", k, obs[self.names[k]], a["final_obs"][i, k])
        self._check_finite("observation", a["final_obs"][i])
        self.team_return += float(a["reward"][i].sum())
        self.agent_returns += a["reward"][i]
        self.length += 1
        for k in acting:
            if a["terminated"][i, k] or a["truncated"][i, k]:
                record_info(self.final_info, k, len(self.names), infos.get(self.names[k]))
        still = [n for n in self.env.agents if not (terms.get(n, False) or truncs.get(n, False))]
        done = len(still) == 0
        a["env_done"][i] = done
        if spec.state_dim:
            a["final_state"][i] = self._state("state", ended=done) if obs else a["state"][i]
        if not done:  # the state after this step is also the next step's: read it once (MPE's state() is costly)
            self._write_obs(obs, infos, set(still), a["final_state"][i] if spec.state_dim else None, checked=True)
            return None
        episode = {"team_return": self.team_return, "length": self.length,
                   "agent_returns": self.agent_returns.tolist(), "env": self.i}
        if self.final_info:
            episode["info"] = {key: values.tolist() for key, values in self.final_info.items()}
        a["episode"][i] += 1
        self.reset()
        return episode


class InProcessVectorEnv:
    """All envs in this process: simple and easy to debug."""

    def __init__(self, env_fns: List[EnvFn], spec: TeamSpec, seed: int, first_env: Any = None, first_index: int = 0,
                 name: Optional[str] = None):
        self.num_envs, self.spec, self.name = len(env_fns), spec, name
        self.arrays = allocate(spec, self.num_envs)
        self.slots = []
        for j, fn in enumerate(env_fns):
            with self._naming(first_index + j, "construction"):
                env = first_env if (j == 0 and first_env is not None) else make_parallel(fn())
            self.slots.append(EnvSlot(env, spec, self.arrays, j, seed, first_index + j))

    @contextlib.contextmanager
    def _naming(self, copy: int, phase: str) -> Iterator[None]:
        """Any error inside becomes an :class:`EnvError` naming the env and the copy."""
        try:
            yield
        except Exception as err:
            raise EnvError(copy, failure(err, phase), traceback.format_exc(), self.name) from err

    def reset(self) -> None:
        """Reset every env to the start of episode ``arrays["episode"][i]``."""
        for slot in self.slots:
            with self._naming(slot.global_index, "reset"):
                slot.reset()

    def step(self) -> List[Dict[str, Any]]:
        """Step every env with ``arrays["actions"]``; returns stats of episodes that ended."""
        episodes = []
        for slot in self.slots:
            with self._naming(slot.global_index, "step"):
                ep = slot.step()
            if ep is not None:
                episodes.append(ep)
        return episodes

    def close(self) -> None:
        for slot in self.slots:
            try:
                slot.env.close()
            except Exception:
                pass


def _shared_array(shape: tuple, dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = mp.RawArray("b", max(n, 1))
    return np.frombuffer(raw, dtype=np.uint8, count=n).view(dtype).reshape(shape)


def _worker(conn: Any, env_fns: List[EnvFn], indices: List[int], spec: TeamSpec, arrays: Dict[str, np.ndarray],
            seed: int, first_index: int, inherited: List[Any], parent_pid: int) -> None:
    # Ctrl-C reaches the whole process group, and job schedulers (Slurm, `kill -- -PGID`,
    # `pkill -f`) send SIGTERM to every process of the job; the trainer decides what happens (it
    # writes a checkpoint and then closes the workers), so a worker must not die on either first
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker_single_threaded()  # workers step small envs side by side, one core each
    # A forked worker inherits the trainer's ends of the pipes made so far (its own and its
    # elder siblings'); while any process holds them, a dead trainer's pipe never reads EOF.
    for end in inherited:
        end.close()
    slots = []
    current, phase = first_index + indices[0], "construction"
    try:
        for fn, j in zip(env_fns, indices):
            current = first_index + j
            slots.append(EnvSlot(make_parallel(fn()), spec, arrays, j, seed, first_index + j))
        conn.send(("ok", None))
        while True:
            # wait in slices, so a trainer that died without closing the pipe (SIGKILL, OOM) is
            # noticed within a second: this worker is then re-parented
            if not conn.poll(WORKER_PARENT_CHECK_S):
                if os.getppid() != parent_pid:
                    break
                continue
            cmd = conn.recv()
            if cmd == "step":
                episodes = []
                for slot in slots:
                    current, phase = slot.global_index, "step"
                    ep = slot.step()
                    if ep is not None:
                        episodes.append(ep)
                conn.send(("ok", episodes))
            elif cmd == "reset":
                for slot in slots:
                    current, phase = slot.global_index, "reset"
                    slot.reset()
                conn.send(("ok", None))
            elif cmd == "close":
                break
    except KeyboardInterrupt:
        pass
    except Exception as err:  # report which env failed, with the original traceback
        try:
            conn.send(("error", (current, failure(err, phase), traceback.format_exc())))
        except Exception:
            pass
    finally:
        for slot in slots:
            try:
                slot.env.close()
            except Exception:
                pass
        conn.close()


# SubprocVectorEnvs whose workers are running, closed at interpreter exit if nobody closed them
_OPEN: "weakref.WeakSet[SubprocVectorEnv]" = weakref.WeakSet()


@atexit.register
def _close_open_envs() -> None:
    """Close the workers of every vector env still open when the interpreter exits.

    multiprocessing's own exit handler sends SIGTERM to daemon children and then joins them; the
    workers ignore SIGTERM (see ``_worker``), so a script that trained and ended without
    ``Trainer.close()`` would wait forever.  atexit runs handlers last-in first-out, and
    multiprocessing registered its handler when ``multiprocessing.util`` was imported above, so
    this one runs first (tests/test_faults.py::test_scripts_exit_without_close)."""
    for vec in list(_OPEN):
        vec.close()


class SubprocVectorEnv:
    """Envs split over worker processes that write into shared-memory arrays."""

    def __init__(self, env_fns: List[EnvFn], spec: TeamSpec, seed: int, num_workers: int = 0, first_index: int = 0,
                 timeout: float = 0.0, name: Optional[str] = None):
        self.num_envs, self.spec, self.timeout, self.name = len(env_fns), spec, timeout, name
        self.first_index = first_index
        self.arrays = allocate(spec, self.num_envs, alloc=_shared_array)
        num_workers = num_workers or min(self.num_envs, Machine.this().cores)
        num_workers = max(1, min(num_workers, self.num_envs))
        chunks = np.array_split(np.arange(self.num_envs), num_workers)
        # fork keeps env_fn usable even when it is a lambda or closure (not picklable)
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.conns, self.procs = [], []
        self.env_indices = [[int(j) for j in chunk] for chunk in chunks]
        forked = ctx.get_start_method() == "fork"
        for chunk in chunks:
            parent, child = ctx.Pipe()
            idx = [int(j) for j in chunk]
            inherited = self.conns + [parent] if forked else []  # trainer-side ends a forked child holds
            proc = ctx.Process(target=_worker, args=(child, [env_fns[j] for j in idx], idx, spec, self.arrays, seed,
                                                     first_index, inherited, os.getpid()),
                               daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        self._closed = False
        _OPEN.add(self)
        self._gather()

    def _gather(self) -> List[Any]:
        results, error = [], None
        deadline = time.monotonic() + self.timeout if self.timeout else None
        for conn, proc, envs in zip(self.conns, self.procs, self.env_indices):
            try:
                if deadline is not None and not conn.poll(max(0.0, deadline - time.monotonic())):
                    # a hung env would block training (and a stop signal) forever: fail, naming it
                    copies = [self.first_index + j for j in envs]
                    error = error or TimeoutError(
                        f"env {self.name!r}, copies {copies} (worker pid {proc.pid}) took longer than "
                        f"env_timeout_s={self.timeout:g} s to step or reset; raise env_timeout_s for slow envs, or set "
                        f"it to 0 to wait forever")
                    continue
                status, payload = conn.recv()
            except (EOFError, ConnectionResetError, BrokenPipeError):
                error = error or RuntimeError(f"the worker process of env {self.name!r}, copies "
                                              f"{[self.first_index + j for j in envs]} (pid {proc.pid}) died "
                                              f"(exit code {proc.exitcode})")
                continue
            if status == "error" and error is None:
                error = EnvError(*payload, env=self.name)
            results.append(payload)
        if error is not None:
            self.close()
            raise error
        return results

    def reset(self) -> None:
        for conn in self.conns:
            conn.send("reset")
        self._gather()

    def step(self) -> List[Dict[str, Any]]:
        for conn in self.conns:
            conn.send("step")
        return [ep for eps in self._gather() for ep in eps]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        for conn in self.conns:
            try:
                conn.send("close")
            except Exception:
                pass
        for proc in self.procs:
            proc.join(timeout=2)
            if proc.is_alive():  # hung in env code; workers ignore SIGTERM (see _worker), so SIGKILL
                proc.kill()
                proc.join(timeout=1)
        for conn in self.conns:
            conn.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def make_vector_env(env_fn: Any, num_envs: int, seed: int, device: torch.device, mode: str = "subprocess",
                    num_workers: int = 0, first_index: int = 0, spec: Optional[TeamSpec] = None,
                    timeout: float = 0.0) -> VectorEnv:
    """``num_envs`` envs from ``env_fn``, reset.  A PettingZoo factory's env ``i`` starts from
    ``episode_seed(seed, first_index + i, 0)``; ``mode`` picks its back end ("subprocess" or
    "inprocess"); ``spec`` (from :func:`team_spec`) saves building an env to read the layout;
    ``timeout`` (seconds, 0 = none) bounds a subprocess step or reset (a hung env is an error).
    A :class:`Batched` builder gets ``first_index`` (see :class:`Batched`)."""
    if isinstance(env_fn, Batched):
        vec = env_fn(num_envs=num_envs, device=device, seed=seed, first_index=first_index)
    else:
        name = describe_env(env_fn)
        first = None
        if spec is None:
            spec, first = probe(env_fn, seed)
        if mode == "inprocess":
            backend = InProcessVectorEnv([env_fn] * num_envs, spec, seed, first_env=first, first_index=first_index,
                                         name=name)
        else:
            if first is not None:
                first.close()
            backend = SubprocVectorEnv([env_fn] * num_envs, spec, seed, num_workers, first_index, timeout, name)
        vec = ArrayVectorEnv(backend, device)
    vec.reset()
    return vec


def team_spec(env_fn: Any, seed: int, device: torch.device) -> TeamSpec:
    """The team layout of ``env_fn``'s envs, read from one env built for the purpose and closed."""
    if isinstance(env_fn, Batched):
        vec = env_fn(num_envs=1, device=device, seed=seed)
        spec = vec.spec
    else:
        spec, vec = probe(env_fn, seed)
    vec.close()
    return spec


def eval_vector_env(env_fn: Any, episodes: int, seed: int, device: torch.device,
                    spec: Optional[TeamSpec] = None) -> VectorEnv:
    """The envs an evaluation of ``episodes`` episodes runs on: one in-process PettingZoo env
    (episodes one after another), or ``episodes`` batched envs side by side."""
    return make_vector_env(env_fn, episodes if isinstance(env_fn, Batched) else 1, seed, device, "inprocess",
                           spec=spec)
