"""The vector env protocol: what a batch of envs gives the trainer, written down once.

A vector env runs ``E`` copies of a team of ``A`` agents (fixed slots, see ``spaces.TeamSpec``)
and exposes, after every ``reset`` and ``step``, the per-step fields of :data:`STEP_FIELDS`
(T = time is added by the rollout buffer, which stores the same fields):

    obs [E, A, O] float32        each agent's flattened observation (zero when gone); uint8 when
                                 every agent observes a uint8 Box (images: ``TeamSpec.obs_dtype``)
    action_mask [E, A, L] bool   the logits an agent may pick
    alive [E, A] bool            the agent acts this step
    state [E, S] float32         env.state() (S = 0 when the env has none); uint8 when state() is
    reward [E, A] float32        the reward of the last step
    terminated, truncated [E, A] bool
    final_obs [E, A, O], final_state [E, S]   the last observation before an auto-reset
    env_done [E] bool            the env finished an episode at the last step (and reset)

Methods (:class:`VectorEnv`): ``observe(name)`` returns a field as a torch tensor on the
env's ``device``, a snapshot that later steps leave alone; ``set_actions(actions [E, A, W])`` takes actions in the team layout on that
device; ``step()`` steps every env and returns the episodes that ended, each a dict with
``team_return``, ``length``, ``agent_returns`` (per slot) and ``env`` (its index), and ``info``
(``{key: [A] floats}``) when agents' infos held numbers as they finished (NaN for an agent that
said nothing: SMAX's ``won``, an env's delivery count); ``reset()``
starts every env's current episode from its seed; ``episode_counts()`` and
``restart_episodes(counts)`` read and set each env's episode number (exact resume), or return
None when the env cannot; ``close()``.

Two kinds of env factory reach the trainer: a zero-argument callable returning a PettingZoo
env (wrapped here into the in-process or subprocess back end of ``mappo.vector``), or a
:class:`Batched` builder, whose simulator steps all envs at once on the training device (VMAS).
:func:`mappo.vector.make_vector_env` is the one place that tells them apart.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import numpy as np
import torch

from .spaces import TeamSpec

# name -> (dims, dtype); dims name the TeamSpec widths: E envs, A agents, O obs, L logits, S state.
# The dtype "obs" / "state" is the team's own (TeamSpec.obs_dtype / state_dtype: uint8 for images,
# so a frame stays 1 byte per pixel until the encoder on the training device)
STEP_FIELDS: Dict[str, Tuple[Tuple[str, ...], Any]] = {
    "obs": (("E", "A", "O"), "obs"),
    "action_mask": (("E", "A", "L"), np.bool_),
    "alive": (("E", "A"), np.bool_),
    "state": (("E", "S"), "state"),
    "reward": (("E", "A"), np.float32),
    "terminated": (("E", "A"), np.bool_),
    "truncated": (("E", "A"), np.bool_),
    "final_obs": (("E", "A", "O"), "obs"),
    "final_state": (("E", "S"), "state"),
    "env_done": (("E",), np.bool_),
}


def field_shapes(spec: TeamSpec, num_envs: int) -> Dict[str, Tuple[Tuple[int, ...], Any]]:
    """Each step field's concrete shape and numpy dtype for ``spec`` and ``num_envs``."""
    sizes = {"E": num_envs, "A": spec.num_agents, "O": spec.obs_dim, "L": spec.num_logits, "S": spec.state_dim}
    dtypes = {"obs": spec.obs_dtype, "state": spec.state_dtype}
    return {name: (tuple(sizes[d] for d in dims), dtypes.get(dtype, dtype) if isinstance(dtype, str) else dtype)
            for name, (dims, dtype) in STEP_FIELDS.items()}


def torch_dtype(np_dtype: Any) -> torch.dtype:
    return {np.dtype(np.bool_): torch.bool, np.dtype(np.uint8): torch.uint8}.get(np.dtype(np_dtype), torch.float32)


class VectorEnv(Protocol):
    """See the module docstring."""

    spec: TeamSpec
    num_envs: int
    device: torch.device

    def reset(self) -> None: ...

    def observe(self, name: str) -> torch.Tensor: ...

    def set_actions(self, actions: torch.Tensor) -> None: ...

    def step(self) -> List[Dict[str, Any]]: ...

    def episode_counts(self) -> Optional[np.ndarray]: ...

    def restart_episodes(self, counts: np.ndarray) -> None: ...

    def close(self) -> None: ...


class EnvError(RuntimeError):
    """An env failed or broke its contract.  ``str()`` is one line a person can act on: the env
    (its registry name or factory, :func:`describe_env`), the copy, and what happened (the agent
    and the field, for a contract violation).  ``traceback`` holds the env code's own traceback
    (from its worker process, where it ran there); ``log`` is set when the trainer has written
    the full report to the run folder (``error.log``)."""

    def __init__(self, copy: int, detail: str, traceback: str = "", env: Optional[str] = None):
        super().__init__(detail)
        self.copy, self.detail, self.traceback, self.env = copy, detail, traceback, env
        self.log: Optional[str] = None

    def __str__(self) -> str:
        where = f"env {self.env!r}, copy {self.copy}" if self.env else f"env copy {self.copy}"
        return f"{where}: {self.detail}"

    def __reduce__(self) -> Any:  # picklable with its fields
        return (type(self), (self.copy, self.detail, self.traceback, self.env))


def describe_env(env_fn: Any) -> str:
    """A name for an env factory in messages: its registry name (``envs.make_env_fn`` records it),
    else the factory's ``module:qualname``."""
    name = getattr(env_fn, "env_name", None)
    if name:
        return name
    inner = getattr(env_fn, "env_fn", None)  # mappo.wrappers.WrappedEnvFn
    if inner is not None:
        return describe_env(inner)
    func = getattr(env_fn, "func", env_fn)  # functools.partial
    qualname = getattr(func, "__qualname__", None)
    return f"{func.__module__}:{qualname}" if qualname and getattr(func, "__module__", None) else repr(env_fn)


class Batched:
    """Marks an env builder that simulates many envs at once: ``builder(num_envs=E, device=d,
    seed=s)`` returns a :class:`VectorEnv` whose tensors live on ``device`` (``envs/vmas_adapter.py``).
    ``mappo.Trainer(Batched(MyBatchedEnv), cfg)`` trains on it.

    Under torchrun, rank r's envs are numbers ``r * E`` to ``r * E + E - 1`` of the job.  A builder
    that takes a ``first_index`` keyword gets it and numbers its envs from there (JaxMARL's do: the
    job sees the episodes one process with all the envs would).  Any other builder gets, on ranks
    after the first, a seed of its own derived from ``(seed, first_index)``: distinct streams, and
    not ``seed + first_index``, which would replay another seed's run."""

    def __init__(self, builder: Callable[..., VectorEnv]):
        if not callable(builder):
            raise TypeError(f"Batched needs a callable builder(num_envs, device, seed), got {builder!r}")
        self.builder = builder

    def __call__(self, num_envs: int = 1, device: Any = "cpu", seed: int = 0, first_index: int = 0) -> VectorEnv:
        if not first_index:
            return self.builder(num_envs=num_envs, device=device, seed=seed)
        if "first_index" in inspect.signature(self.builder).parameters:
            return self.builder(num_envs=num_envs, device=device, seed=seed, first_index=first_index)
        own = int(np.random.SeedSequence([seed, first_index]).generate_state(1)[0])
        return self.builder(num_envs=num_envs, device=device, seed=own)

    def can_use_cuda(self) -> bool:
        """Whether the simulator can step on a CUDA device: the builder's own ``can_use_cuda()``
        when it has one (a JAX simulator needs jax's GPU backend), else True (a torch simulator
        such as VMAS runs wherever torch does).  ``device=auto`` asks before it chooses CUDA."""
        check = getattr(self.builder, "can_use_cuda", None)
        return bool(check()) if callable(check) else True

    def __repr__(self) -> str:
        return f"Batched({self.builder!r})"
