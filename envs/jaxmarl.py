"""JaxMARL's suites (Rutherford et al. 2024, arXiv 2311.10090) as batched vector envs.

    make_env_fn("jaxmarl/MPE_simple_spread_v3")
    make_env_fn("jaxmarl/HeuristicEnemySMAX", scenario="2s3z")   # a SMAX map by name

Every env of a run lives in one JAX array tree and steps in one compiled call
(``jax.jit(jax.vmap(...))``).  The call also does what the protocol asks of a vector env
(``mappo/protocol.py``), so nothing per env runs in Python:

* it packs the agents' observations, action masks, rewards and flags into the team layout
  (``obs [E, A, O]``, ...), and hands them to torch through DLPack without a copy; actions come
  back the same way, and both stay on the learner's device (``XLA_PYTHON_CLIENT_PREALLOCATE=false``
  lets XLA and torch share a GPU);
* it seeds like the PettingZoo back ends: env ``i``'s ``k``-th episode starts from a key folded from
  (seed, i, k), and its step ``t`` draws from that key folded with ``t``, so a resumed run replays
  the same episodes (``episode_counts`` / ``restart_episodes``);
* it resets finished envs itself, keeping the final observation and state for bootstrapping, and
  keeps ``terminated`` (the game ended: a SMAX side wiped out, a Hanabi game over) apart from
  ``truncated`` (the time limit), which JaxMARL folds into one ``done``;
* an agent that dies (SMAX) terminates, then keeps its slot with ``alive=False`` and a zero
  observation; the env still needs an action for it, so it gets its first available one (SMAX: stop).

JaxMARL's MPE ends an episode one step late (``done`` is set from the step counter before it is
incremented: 26 steps for ``max_steps=25``); the adapter ends it at ``max_steps`` as ``mpe2``
does, so ``jaxmarl/MPE_*`` and ``mpe/*`` episodes have the same length.  ``accounting="epymarl"``
pays spread and speaker-listener the EPyMARL benchmark's shared reward, as the ``mpe/`` family
does (``envs/mpe_epymarl.py``); ``tests/test_jaxmarl.py`` steps both families side by side.

The critic's state is SMAX's ``world_state`` where the env gives one, else (S = 0) the trainer
joins the agents' observations, which is what ``mpe2``'s ``state()`` is.
"""
from __future__ import annotations

import copy
import difflib
import functools
import io
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from mappo.spaces import AgentSpec, TeamSpec, to_bounds

EXTRA_HINT = "pip install -e '.[jax]' (brings jaxmarl and jax[cpu]; for a GPU also pip install 'jax[cuda12]')"
ACCOUNTINGS = ("jaxmarl", "epymarl")
# (field name, which packed array, offset, shape, strides) per field handed to torch: see pack_fields
Layout = List[Tuple[str, int, int, Tuple[int, ...], Tuple[int, ...]]]
NO_LIMIT = 2**31 - 1  # the step count of an env that only ends on its own
# ids whose API departs from JaxMARL's MultiAgentEnv conventions the adapter relies on
UNSUPPORTED = {name: "its observations are not keyed by agent (STORM batches them under 'observations')"
               for name in ("storm", "storm_2p", "storm_np")}
# accounting="epymarl" (envs/mpe_epymarl.py): num_agents -> (scale, offset), shared = scale * sum_i r_i + offset
EPYMARL_SHARED = {"MPE_simple_spread_v3": lambda n: (2.0, -float(n)),
                  "MPE_simple_speaker_listener_v4": lambda n: (1.0, 0.0)}


def import_jax() -> Tuple[Any, Any]:
    """``(jax, jaxmarl)``, or an ImportError that names the extra."""
    # XLA would otherwise take 75% of a GPU's memory at its first use, leaving torch little
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    streams = sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__
    try:
        import jax

        # jaxmarl prints which optional suites it found, and its MaBrax module sets sys.stdout and
        # sys.stderr to sys.__stdout__ / sys.__stderr__ after trying brax (jaxmarl/environments/
        # mabrax/mabrax_env.py), which would undo any capture around it: hide the prints, restore the streams
        sys.stdout = sys.__stdout__ = io.StringIO()
        import jaxmarl
    except ImportError as err:
        raise ImportError(f"jaxmarl/ envs need the jax extra: {EXTRA_HINT} ({err})") from err
    finally:
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = streams
    return jax, jaxmarl


def registered_ids() -> List[str]:
    _, jaxmarl = import_jax()
    from jaxmarl.registration import registered_envs

    return list(registered_envs)


def _did_you_mean(value: str, choices: List[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=3, cutoff=0.5)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


def check_env_id(env_id: str) -> None:
    ids = registered_ids()
    if env_id not in ids:
        raise ValueError(f"unknown env 'jaxmarl/{env_id}'; {_did_you_mean(env_id, ids)}JaxMARL's ids: {sorted(ids)}")


def build_jaxmarl_env(env_id: str, kwargs: Dict[str, Any]) -> Any:
    """``jaxmarl.make(env_id, **kwargs)``, with a SMAX ``scenario`` given by map name ("2s3z") and
    MPE's ``dynamics`` ("mpe2" or "original", envs/mpe_epymarl.py)."""
    jax, jaxmarl = import_jax()
    check_env_id(env_id)
    if env_id in UNSUPPORTED:
        raise ValueError(f"jaxmarl/{env_id} is not supported: {UNSUPPORTED[env_id]}")
    kwargs = dict(kwargs)
    from .mpe_epymarl import DYNAMICS

    dynamics = kwargs.pop("dynamics", "mpe2")
    if dynamics not in DYNAMICS:
        raise ValueError(f"jaxmarl/{env_id}: dynamics must be one of {list(DYNAMICS)}, got {dynamics!r}")
    if dynamics == "original" and not env_id.startswith("MPE_"):
        raise ValueError(f"jaxmarl/{env_id}: dynamics='original' is defined for the MPE envs only")
    if "SMAX" in env_id and isinstance(kwargs.get("scenario"), str):
        from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO, map_name_to_scenario

        name = kwargs["scenario"]
        if name not in MAP_NAME_TO_SCENARIO:
            raise ValueError(f"jaxmarl/{env_id}: unknown SMAX map scenario={name!r}; "
                             f"{_did_you_mean(name, list(MAP_NAME_TO_SCENARIO))}maps: {sorted(MAP_NAME_TO_SCENARIO)}")
        kwargs["scenario"] = map_name_to_scenario(name)
    try:
        env = jaxmarl.make(env_id, **kwargs)
    except TypeError as err:  # an unknown keyword: say whose
        raise ValueError(f"jaxmarl/{env_id}: bad env_kwargs {sorted(kwargs)}: {err}") from err
    if dynamics == "original":  # mapped over entities, as JaxMARL's own method is
        env._integrate_state = jax.vmap(functools.partial(_integrate_as_original, env))
    return env


def _integrate_as_original(env: Any, p_force: Any, p_pos: Any, p_vel: Any, mass: Any, moveable: Any,
                           max_speed: Any) -> Tuple[Any, Any]:
    """One entity's step of JaxMARL's ``SimpleMPE._integrate_state`` in the original MPE's order:
    the new velocity first, then the move with it (envs/mpe_epymarl.py); ``p_vel [2]``."""
    import jax
    import jax.numpy as jnp

    p_vel = p_vel * (1 - env.damping) + (p_force / mass) * env.dt * moveable
    speed = jnp.sqrt(jnp.square(p_vel[0]) + jnp.square(p_vel[1]))
    over_max = p_vel / jnp.sqrt(jnp.square(p_vel[0]) + jnp.square(p_vel[1])) * max_speed
    p_vel = jax.lax.select((speed > max_speed) & (max_speed >= 0), over_max, p_vel)
    return p_pos + p_vel * env.dt, p_vel


def to_gymnasium(space: Any, where: str) -> Any:
    """A JaxMARL space as gymnasium's (the classes ``AgentSpec`` reads)."""
    from gymnasium import spaces

    kind = type(space).__name__
    if isinstance(space, dict) or kind == "Dict":  # STORM gives a plain dict of spaces
        inner = space if isinstance(space, dict) else space.spaces
        return spaces.Dict({k: to_gymnasium(v, f"{where}[{k!r}]") for k, v in inner.items()})
    if kind == "Tuple":
        return spaces.Tuple([to_gymnasium(v, f"{where}[{i}]") for i, v in enumerate(space.spaces)])
    if kind == "Discrete":
        return spaces.Discrete(int(space.n))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.asarray(space.num_categories, dtype=np.int64))
    if kind == "Box":
        dtype = np.dtype(space.dtype) if space.dtype is not None else np.dtype(np.float32)
        dtype = np.uint8 if dtype == np.uint8 else np.float32
        shape = tuple(int(n) for n in np.atleast_1d(np.asarray(space.shape))) or (1,)
        low = np.broadcast_to(np.asarray(space.low, dtype=np.float64), shape)
        high = np.broadcast_to(np.asarray(space.high, dtype=np.float64), shape)
        if dtype == np.uint8:
            low, high = np.clip(low, 0, 255), np.clip(high, 0, 255)
        return spaces.Box(low.astype(dtype), high.astype(dtype), shape, dtype=dtype)
    raise TypeError(f"{where}: unsupported JaxMARL space {space!r}; supported: Discrete, MultiDiscrete, Box, "
                    "and Dict or Tuple of them")


def flattener(space: Any) -> Callable[[Any], Any]:
    """``x -> 1-D jnp array``, the jnp twin of ``gymnasium.spaces.flatten(space, x)`` (one-hot for
    Discrete and MultiDiscrete, Dict leaves in the space's key order), so the compiled step packs
    observations exactly as ``TeamSpec`` lays them out for PettingZoo envs."""
    import jax.numpy as jnp
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return lambda x: jnp.ravel(jnp.asarray(x))
    if isinstance(space, spaces.Discrete):
        return lambda x: jnp.zeros((int(space.n),)).at[jnp.asarray(x, jnp.int32) - int(space.start)].set(1.0)
    if isinstance(space, spaces.MultiDiscrete):
        sizes = [int(n) for n in np.ravel(space.nvec)]
        return lambda x: jnp.concatenate([jnp.zeros((n,)).at[jnp.ravel(jnp.asarray(x, jnp.int32))[i]].set(1.0)
                                          for i, n in enumerate(sizes)])
    if isinstance(space, spaces.Dict):
        parts = {k: flattener(v) for k, v in space.spaces.items()}
        return lambda x: jnp.concatenate([f(x[k]).astype(jnp.float32) for k, f in parts.items()])
    if isinstance(space, spaces.Tuple):
        parts = [flattener(v) for v in space.spaces]
        return lambda x: jnp.concatenate([f(v).astype(jnp.float32) for f, v in zip(parts, x)])
    raise TypeError(f"cannot flatten {space!r}")


def _jax_device(jax: Any, device: torch.device) -> Any:
    """The JAX device that shares memory with torch's ``device``."""
    if device.type == "cpu":
        return jax.devices("cpu")[0]
    if device.type == "cuda":
        try:
            gpus = jax.devices("gpu")
        except RuntimeError as err:
            raise RuntimeError(f"device={device}: this jax has no GPU backend ({err}); install one with "
                               "pip install 'jax[cuda12]', or train with device=cpu") from err
        return gpus[device.index or 0]
    raise ValueError(f"jaxmarl/ envs run on cpu or cuda devices, not {device}")


class CompiledEnv:
    """One JaxMARL env with its settings, and the functions that act on a batch of its copies,
    jitted once: vector envs of the same settings share it, so a run's evaluation envs (another
    ``E``) compile only for their shape, and the same settings never compile twice in a process."""

    def __init__(self, env_id: str, max_steps: Optional[int], accounting: str, env_kwargs: Dict[str, Any]):
        jax, _ = import_jax()
        import jax.numpy as jnp

        self.env_id = env_id
        self.env = env = build_jaxmarl_env(env_id, env_kwargs)
        if accounting not in ACCOUNTINGS:
            raise ValueError(f"jaxmarl/{env_id}: accounting must be one of {list(ACCOUNTINGS)}, got {accounting!r}")
        if accounting == "epymarl" and env_id not in EPYMARL_SHARED:
            raise ValueError(f"jaxmarl/{env_id}: accounting='epymarl' is defined for {sorted(EPYMARL_SHARED)}")
        if accounting == "epymarl" and env_id == "MPE_simple_spread_v3" and getattr(env, "local_ratio", 0.5) != 0.5:
            raise ValueError(f"jaxmarl/{env_id}: accounting='epymarl' needs local_ratio=0.5 (envs/mpe_epymarl.py)")
        self.accounting = accounting
        self.names = list(env.agents)
        agents = [AgentSpec.build(a, to_gymnasium(env.observation_space(a), f"jaxmarl/{env_id} agent {a!r} "
                                                  "observation"),
                                  to_gymnasium(env.action_space(a), f"jaxmarl/{env_id} agent {a!r} action"))
                  for a in self.names]
        self.spec = spec = TeamSpec(agents, 0)
        env_limit = getattr(env, "max_steps", None) or getattr(env, "episode_length", None)  # MaBrax: episode_length
        if env_limit is None and hasattr(env, "num_inner_steps"):  # the coin game, STORM: inner games x outer rounds
            env_limit = int(env.num_inner_steps) * int(getattr(env, "num_outer_steps", 1))
        # the adapter's time limit: the env's own, unless max_steps shortens it; an env without one
        # (Hanabi) ends its games itself
        self.max_steps = int(max_steps if max_steps is not None else (env_limit or NO_LIMIT))
        if self.max_steps <= 0:
            raise ValueError(f"jaxmarl/{env_id}: max_steps must be positive, got {max_steps}")
        if max_steps is not None and env_limit is not None and max_steps > env_limit:
            raise ValueError(f"jaxmarl/{env_id}: max_steps={max_steps} is beyond the env's own limit {env_limit}; "
                             f"pass max_steps to the env too")
        self._has_avail = _has_avail_actions(env)
        obs0, _ = jax.eval_shape(env.reset, jax.random.PRNGKey(0))  # shapes only: nothing compiled
        self._state_key = "world_state" if "world_state" in obs0 else None
        world = obs0.get(self._state_key)
        spec.set_state(np.zeros(int(np.prod(world.shape)), world.dtype) if world is not None else None)
        self._build(jax, jnp)

    def _build(self, jax: Any, jnp: Any) -> None:
        env, spec, names = self.env, self.spec, self.names
        A, O, L = spec.num_agents, spec.obs_dim, spec.num_logits
        obs_dtype = jnp.uint8 if spec.obs_dtype == np.uint8 else jnp.float32
        valid = jnp.asarray(spec.valid_logits)
        low, high = jnp.asarray(spec.cont_low), jnp.asarray(spec.cont_high)
        limit, state_key, has_avail = self.max_steps, self._state_key, self._has_avail
        terminal, won_rule = _terminal_rule(self.env_id, env), _won_rule(self.env_id, env)
        shared = EPYMARL_SHARED[self.env_id](A) if self.accounting == "epymarl" else None

        flat = [flattener(a.obs_space) for a in spec.agents]

        def pack_obs(obs: Dict[str, Any]) -> Any:  # -> [A, O]
            rows = [jnp.pad(flat[k](obs[n]).astype(obs_dtype), (0, O - spec.agents[k].obs_dim))
                    for k, n in enumerate(names)]
            return jnp.stack(rows)

        def pack_state(obs: Dict[str, Any]) -> Any:  # -> [S]
            if state_key is None:
                return jnp.zeros((0,), jnp.float32)
            world = jnp.ravel(obs[state_key])
            return world.astype(jnp.uint8 if spec.state_dtype == np.uint8 else jnp.float32)

        def pack_mask(state: Any) -> Any:  # -> [A, L] (the env's available actions AND the layout's)
            if not has_avail:
                return valid
            avail = env.get_avail_actions(state)
            rows = []
            for k, n in enumerate(names):
                row = jnp.asarray(avail[n]).astype(bool).ravel()
                rows.append(jnp.pad(row, (0, L - row.shape[0])) if row.shape[0] < L else row[:L])
            return jnp.stack(rows) & valid

        def decode(actions: Any, mask: Any, alive: Any) -> Dict[str, Any]:  # actions [A, W] -> per agent
            out = {}
            for k, (n, a) in enumerate(zip(names, spec.agents)):
                if a.nvec:
                    if len(a.nvec) == 1:
                        chosen = actions[k, 0].astype(jnp.int32)
                        # a dead agent still owes the env an action: its first available one (SMAX: stop)
                        fallback = jnp.argmax(mask[k, : a.nvec[0]]).astype(jnp.int32)
                        out[n] = jnp.where(alive[k], chosen, fallback)
                    else:
                        out[n] = actions[k, : len(a.nvec)].astype(jnp.int32)
                else:
                    c, d = spec.num_components, a.cont_dim
                    box = to_bounds(actions[k, c : c + d], low[k, :d], high[k, :d])  # jnp arrays clip too
                    out[n] = box.reshape(a.action_space.shape)
            return out

        def episode_key(seed: Any, index: Any, episode: Any) -> Any:
            return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), index), episode)

        def strong(state: Any) -> Any:
            # a reset may hold weakly typed leaves (SMAX: an int32 from a Python int) that its step
            # makes strong: the step would then compile a second time, for the second carry's types
            return jax.tree.map(lambda x: jax.lax.convert_element_type(x, jnp.asarray(x).dtype), state)

        def start(seed: Any, index: Any, episode: Any) -> Dict[str, Any]:
            obs, state = env.reset(episode_key(seed, index, episode))
            state = strong(state)
            alive = jnp.ones((A,), bool)
            # episode number, step count and each agent's return so far live here too, so that a
            # step needs nothing from the host
            return {"state": state, "obs": pack_obs(obs), "world": pack_state(obs), "mask": pack_mask(state),
                    "alive": alive, "length": jnp.zeros((), jnp.int32), "episode": jnp.asarray(episode, jnp.int32),
                    "returns": jnp.zeros((A,), jnp.float32)}

        def advance(carry: Dict[str, Any], actions: Any, seed: Any, index: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
            """One step without the auto-reset: the carry after it, and the step's outputs."""
            acting, episode = carry["alive"], carry["episode"]
            key = jax.random.fold_in(episode_key(seed, index, episode), carry["length"] + 1)
            obs, state, rewards, dones, _ = env.step_env(key, carry["state"], decode(actions, carry["mask"], acting))
            reward = jnp.stack([jnp.asarray(rewards[n], jnp.float32) for n in names])
            if shared is not None:  # EPyMARL's shared team reward (envs/mpe_epymarl.py)
                scale, offset = shared
                reward = jnp.full((A,), scale * reward.sum() + offset, jnp.float32)
            reward = jnp.where(acting, reward, 0.0)
            length = carry["length"] + 1
            agent_done = jnp.stack([jnp.asarray(dones[n], bool) for n in names])
            all_done = jnp.asarray(dones["__all__"], bool)
            env_done = all_done | (length >= limit)
            ended = terminal(state, all_done, length >= limit) & env_done
            terminated = acting & ((agent_done & ~all_done) | ended)
            truncated = acting & env_done & ~terminated
            final_obs = jnp.where(acting[:, None], pack_obs(obs), 0)
            final_world = pack_state(obs)
            alive = acting & ~agent_done
            returns = carry["returns"] + reward
            nxt = {"state": state, "obs": jnp.where(alive[:, None], final_obs, 0), "world": final_world,
                   "mask": jnp.where(alive[:, None], pack_mask(state), valid), "alive": alive, "length": length,
                   "episode": episode, "returns": returns}
            out = {"reward": reward, "terminated": terminated, "truncated": truncated, "final_obs": final_obs,
                   "final_state": final_world, "env_done": env_done,
                   "episode_return": returns, "episode_length": length}  # read where env_done
            if won_rule is not None:
                out["episode_won"] = won_rule(state)  # read where env_done
            return nxt, out

        def step_one(carry: Dict[str, Any], actions: Any, seed: Any, index: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
            nxt, out = advance(carry, actions, seed, index)
            fresh = start(seed, index, carry["episode"] + 1)
            return jax.tree.map(lambda r, s: jnp.where(out["env_done"], r, s), fresh, nxt), out

        def place(state: Any, carry: Dict[str, Any]) -> Dict[str, Any]:
            state = strong(state)
            obs = env.get_obs(state)
            return {**carry, "state": state, "obs": jnp.where(carry["alive"][:, None], pack_obs(obs), 0),
                    "world": pack_state(obs) if state_key is None else carry["world"],
                    "mask": jnp.where(carry["alive"][:, None], pack_mask(state), valid)}

        def published(carry: Dict[str, Any], out: Dict[str, Any]) -> Dict[str, Any]:
            return {"obs": carry["obs"], "state": carry["world"], "action_mask": carry["mask"],
                    "alive": carry["alive"], **out}

        # batched over envs: seed is shared, index [E] and episode [E] are each env's own.  Each
        # returns the new carry and the fields torch reads, packed into one flat array per dtype
        # (see pack_fields): a handful of DLPack hand-overs per step instead of one per field
        place_all, start_all = jax.vmap(place), jax.vmap(start, in_axes=(None, 0, 0))
        step_all = jax.vmap(step_one, in_axes=(0, 0, None, 0))
        advance_all = jax.vmap(advance, in_axes=(0, 0, None, 0))

        def packing(fn: Callable[..., Tuple[Dict[str, Any], Dict[str, Any]]]) -> Callable[..., Any]:
            """``fn`` (-> carry, outputs) jitted to return the carry and its published fields, packed."""
            def run(*args: Any) -> Tuple[Dict[str, Any], Tuple[Any, ...]]:
                carry, out = fn(*args)
                return carry, pack_fields(published(carry, out))
            return jax.jit(run)

        self.start = packing(lambda seed, index, episode: (start_all(seed, index, episode), {}))
        self.place = packing(lambda states, carry: (place_all(states, carry), {}))
        self.step = packing(step_all)
        self.advance = packing(advance_all)  # a step that leaves ended episodes as they ended (videos)

        self._start_fn, self._step_fn, self._published = start_all, step_all, published
        self.layouts: Dict[int, Tuple[Layout, Layout]] = {}

    def layouts_for(self, num_envs: int) -> Tuple[Layout, Layout]:
        """``(layout of a start or place, layout of a step)`` for ``num_envs`` envs (see
        :func:`field_layout`), from shapes alone."""
        if num_envs not in self.layouts:
            jax, _ = import_jax()
            import jax.numpy as jnp

            index = jax.ShapeDtypeStruct((num_envs,), jnp.int32)
            seed = jax.ShapeDtypeStruct((), jnp.uint32)
            carry = jax.eval_shape(self._start_fn, seed, index, index)
            actions = jax.ShapeDtypeStruct((num_envs, self.spec.num_agents, self.spec.action_width), jnp.float32)
            stepped = jax.eval_shape(self._step_fn, carry, actions, seed, index)
            self.layouts[num_envs] = (field_layout(self._published(carry, {})), field_layout(self._published(*stepped)))
        return self.layouts[num_envs]


def _dtype_order(fields: Dict[str, Any]) -> List[Any]:
    """The dtypes of ``fields`` in first-seen order: one packed array each."""
    order: List[Any] = []
    for value in fields.values():
        if value.dtype not in order:
            order.append(value.dtype)
    return order


def pack_fields(fields: Dict[str, Any]) -> Tuple[Any, ...]:
    """``fields`` (JAX arrays, in their dict order) raveled and joined into one flat array per
    dtype; :func:`field_layout` says where each one lies."""
    import jax.numpy as jnp

    return tuple(jnp.concatenate([v.ravel() for v in fields.values() if v.dtype == dtype])
                 for dtype in _dtype_order(fields))


def field_layout(fields: Dict[str, Any]) -> Layout:
    """``(name, which packed array, offset, shape, strides)`` per field of :func:`pack_fields`,
    strides those of a contiguous array of that shape."""
    order, offsets, layout = _dtype_order(fields), {}, []
    for name, value in fields.items():
        k = order.index(value.dtype)
        shape = tuple(int(n) for n in value.shape)
        strides = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
        layout.append((name, k, offsets.get(k, 0), shape, strides))
        offsets[k] = offsets.get(k, 0) + int(np.prod(shape))
    return layout


_COMPILED: Dict[Tuple[str, str, Optional[int], str], CompiledEnv] = {}


def compiled_env(env_id: str, max_steps: Optional[int], accounting: str, env_kwargs: Dict[str, Any]) -> CompiledEnv:
    key = (env_id, repr(sorted(env_kwargs.items())), max_steps, accounting)
    if key not in _COMPILED:
        _COMPILED[key] = CompiledEnv(env_id, max_steps, accounting, env_kwargs)
    return _COMPILED[key]


class JaxMarlVectorEnv:
    """A ``mappo.protocol.VectorEnv`` over ``num_envs`` copies of one JaxMARL env, stepped together
    in one compiled call; every field is a torch tensor on ``device`` that shares XLA's buffer.
    Env ``i`` draws its keys from ``(seed, first_index + i, episode)``: a rank of a distributed
    job passes ``first_index = rank * num_envs`` and continues the numbering of the ranks before it."""

    def __init__(self, env_id: str, num_envs: int, device: Any = "cpu", seed: int = 0,
                 max_steps: Optional[int] = None, accounting: str = "jaxmarl", first_index: int = 0,
                 **env_kwargs: Any):
        jax, _ = import_jax()
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        self.compiled = compiled_env(env_id, max_steps, accounting, env_kwargs)
        self.env, self.max_steps = self.compiled.env, self.compiled.max_steps
        self.spec = copy.deepcopy(self.compiled.spec)  # the trainer may set an image layout on its own copy
        self.env_id, self.num_envs = env_id, int(num_envs)
        self.device = torch.device(device)
        self.jax_device = _jax_device(jax, self.device)
        self._seed = jax.device_put(jnp.asarray(int(seed) % 2**32, dtype=jnp.uint32), self.jax_device)
        self._indexes = jax.device_put(jnp.arange(first_index, first_index + self.num_envs, dtype=jnp.int32),
                                       self.jax_device)
        self._start_layout, self._step_layout = self.compiled.layouts_for(self.num_envs)
        self._start_episodes = np.zeros(self.num_envs, dtype=np.int64)  # what reset() starts from
        self.arrays: Dict[str, torch.Tensor] = {}
        self._carry = None
        self.actions = torch.zeros(self.num_envs, self.spec.num_agents, self.spec.action_width, device=self.device)

    # --- the protocol ------------------------------------------------------------------------
    def _publish(self, packed: Tuple[Any, ...], layout: Layout) -> None:
        """Torch views of each field in ``packed`` (:func:`pack_fields`), zero-copy."""
        self.packed = packed
        flat = [torch.from_dlpack(x) for x in packed]
        for name, k, offset, shape, strides in layout:  # as_strided: one cheap op per field
            self.arrays[name] = flat[k].as_strided(shape, strides, flat[k].storage_offset() + offset)

    def env_states(self) -> Any:
        """The JaxMARL state of every env: one pytree whose arrays lead with ``E``."""
        return self._carry["state"]

    def place_states(self, states: Any) -> None:
        """Put every env in ``states`` (a pytree like :meth:`env_states`'s) mid-episode; the
        observations and masks are read from it.  Tests start both MPE families from one world
        this way."""
        with self.jax.default_device(self.jax_device):
            self._carry, packed = self.compiled.place(states, self._carry)
        self._publish(packed, self._start_layout)

    def observe(self, name: str) -> torch.Tensor:
        return self.arrays[name]  # each step makes new buffers: an observed tensor is a snapshot already

    def set_actions(self, actions: torch.Tensor) -> None:
        self.actions = actions

    def episode_counts(self) -> np.ndarray:
        if self._carry is None:
            return self._start_episodes.copy()
        return np.asarray(self._carry["episode"]).astype(np.int64)

    def restart_episodes(self, counts: Any) -> None:
        self._start_episodes = np.asarray(counts, dtype=np.int64).copy()
        self._carry = None
        self.reset()

    def reset(self) -> None:
        """Every env starts its current episode afresh (from its seed)."""
        jax, jnp = self.jax, self.jnp
        episodes = jax.device_put(jnp.asarray(self.episode_counts(), dtype=jnp.int32), self.jax_device)
        with jax.default_device(self.jax_device):
            self._carry, packed = self.compiled.start(self._seed, self._indexes, episodes)
        E, A = self.num_envs, self.spec.num_agents
        zeros = functools.partial(torch.zeros, device=self.device)
        self.arrays = {"reward": zeros(E, A), "terminated": zeros(E, A, dtype=torch.bool),
                       "truncated": zeros(E, A, dtype=torch.bool), "env_done": zeros(E, dtype=torch.bool)}
        self._publish(packed, self._start_layout)
        self.arrays["final_obs"] = self.arrays["obs"]
        self.arrays["final_state"] = self.arrays["state"]

    def _apply(self, compiled_step: Callable[..., Any], actions: torch.Tensor) -> None:
        """One compiled step (``CompiledEnv.step`` or ``.advance``) of ``actions [E, A, W]``, handed to
        JAX through DLPack, and its fields published."""
        jax = self.jax
        actions = actions.detach().to(self.device, torch.float32).contiguous()
        with jax.default_device(self.jax_device):
            self._carry, packed = compiled_step(self._carry, jax.dlpack.from_dlpack(actions), self._seed,
                                                self._indexes)
        self._publish(packed, self._step_layout)

    def step(self) -> List[Dict[str, Any]]:
        self._apply(self.compiled.step, self.actions)
        done = self.arrays["env_done"]
        if not bool(done.any()):  # the one host sync per step
            return []
        index = done.nonzero().squeeze(-1)
        returns = self.arrays["episode_return"][index].tolist()
        lengths = self.arrays["episode_length"][index].tolist()
        episodes = [{"team_return": float(sum(g)), "length": int(n), "agent_returns": g, "env": i}
                    for i, n, g in zip(index.tolist(), lengths, returns)]
        if "episode_won" in self.arrays:  # SMAX: the battle's outcome, the team's, so every slot's
            for episode, won in zip(episodes, self.arrays["episode_won"][index].tolist()):
                episode["info"] = {"won": [float(won)] * len(episode["agent_returns"])}
        return episodes

    def record_episode(self, policy: Any, max_steps: int = 10_000) -> List[np.ndarray]:
        """Frames ``[H, W, 3] uint8`` of env 0's current episode from its start, with ``policy``
        (``mappo.Policy``) acting deterministically, drawn by JaxMARL's own MPE visualiser.  Only
        the MPE scenarios render: the other suites' visualisers replay internal states (SMAX's
        sub-steps) that the adapter does not keep."""
        if not self.env_id.startswith("MPE_"):
            raise ValueError(f"jaxmarl/{self.env_id}: videos are drawn for JaxMARL's MPE scenarios only")
        jax = self.jax
        self.reset()
        first = lambda tree: jax.tree.map(lambda x: np.asarray(x[0]), tree)  # noqa: E731  (env 0)
        states = [first(self._carry["state"])]
        hidden, starts = None, torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        for _ in range(max_steps):
            alive = self.arrays["alive"]
            resets = starts.unsqueeze(-1) | ~alive
            actions, _, hidden = policy.act_batch(self.arrays["obs"], self.arrays["action_mask"], True, hidden, resets)
            starts = torch.zeros_like(starts)
            self._apply(self.compiled.advance, actions)
            states.append(first(self._carry["state"]))
            if bool(self.arrays["env_done"][0]):
                break
        self.reset()  # the envs go on from fresh episodes, as after any ended one
        return mpe_frames(self.env, states)

    def close(self) -> None:
        self._carry = None


def mpe_frames(env: Any, states: List[Any]) -> List[np.ndarray]:
    """One RGB frame ``[H, W, 3] uint8`` per MPE state, drawn by JaxMARL's ``MPEVisualizer``."""
    import contextlib

    import matplotlib.pyplot as plt
    from jaxmarl.environments.mpe.mpe_visualizer import MPEVisualizer

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its communication settings
        viz = MPEVisualizer(env, states)
    frames = []
    try:
        for k in range(len(states)):
            viz.update(k)
            viz.fig.canvas.draw()
            frames.append(np.asarray(viz.fig.canvas.buffer_rgba())[..., :3].copy())
    finally:
        plt.close(viz.fig)
    return frames


def _has_avail_actions(env: Any) -> bool:
    """Whether the env implements ``get_avail_actions`` (the base class raises NotImplementedError)."""
    from jaxmarl.environments.multi_agent_env import MultiAgentEnv

    method = getattr(type(env), "get_avail_actions", None)
    return method is not None and method is not MultiAgentEnv.get_avail_actions


def _terminal_rule(env_id: str, env: Any) -> Callable[[Any, Any, Any], Any]:
    """``terminal(state, env_done, at_limit)``: whether an ended episode ended in the game (the
    learner bootstraps nothing) rather than at its time limit (it bootstraps from the final
    observation).  JaxMARL reports one ``done``; these rules split it."""
    import jax.numpy as jnp

    if env_id.startswith("MPE_"):
        return lambda state, env_done, at_limit: jnp.zeros((), bool)  # MPE episodes only run out of time
    if "SMAX" in env_id:
        allies = env.num_allies

        def smax(state: Any, env_done: Any, at_limit: Any) -> Any:
            alive = getattr(state, "state", state).unit_alive  # the enemy-policy envs wrap SMAX's state
            return ~jnp.any(alive[:allies]) | ~jnp.any(alive[allies:])  # one side is wiped out

        return smax
    # elsewhere: an env's own done before the time limit is the game's end
    return lambda state, env_done, at_limit: env_done & ~at_limit


def _won_rule(env_id: str, env: Any) -> Optional[Callable[[Any], Any]]:
    """``won(state)`` after an episode's last step, for the games with a winner (SMAX: every
    enemy dead and an ally alive, SMAX's own ``won_battle & ~lost_battle``); None elsewhere."""
    import jax.numpy as jnp

    if "SMAX" not in env_id:
        return None
    allies = env.num_allies

    def won(state: Any) -> Any:
        alive = getattr(state, "state", state).unit_alive
        return jnp.any(alive[:allies]) & ~jnp.any(alive[allies:])

    return won


class JaxMarlEnvFn:
    """The builder behind ``make_env_fn("jaxmarl/<env id>", ...)`` (wrapped in ``mappo.Batched``)."""

    def __init__(self, env_id: str, **kwargs: Any):
        self.env_id, self.kwargs = env_id, kwargs

    def __call__(self, num_envs: int = 1, device: Any = "cpu", seed: Optional[int] = 0,
                 first_index: int = 0) -> JaxMarlVectorEnv:
        return JaxMarlVectorEnv(self.env_id, num_envs, device, 0 if seed is None else seed,
                                first_index=first_index, **self.kwargs)

    def can_use_cuda(self) -> bool:
        """Whether this jax has a GPU backend (``jax[cuda12]``); ``device=auto`` asks before choosing CUDA."""
        jax, _ = import_jax()
        try:
            return bool(jax.devices("gpu"))
        except RuntimeError:
            return False

    def __repr__(self) -> str:
        return f"jaxmarl/{self.env_id}"


def raw_step_rate(env_id: str, num_envs: int, seconds: float, seed: int = 0, **env_kwargs: Any) -> float:
    """Env steps per second of JaxMARL's own ``jax.jit(jax.vmap(env.step))`` (its auto-reset
    included) under uniform random actions drawn in JAX, waiting for each step as a learner must:
    the ceiling the adapter and the trainer are measured against (``scripts/bench_throughput.py``)."""
    import time

    jax, _ = import_jax()
    env_kwargs.pop("accounting", None)
    env_kwargs.pop("max_steps", None)
    env = build_jaxmarl_env(env_id, env_kwargs)

    def step(keys: Any, states: Any) -> Any:
        def one(key: Any, state: Any) -> Any:
            key, act_key, step_key = jax.random.split(key, 3)
            act_keys = jax.random.split(act_key, len(env.agents))
            actions = {a: env.action_space(a).sample(k) for a, k in zip(env.agents, act_keys)}
            _, state, _, _, _ = env.step(step_key, state, actions)
            return key, state

        return jax.vmap(one)(keys, states)

    keys = jax.random.split(jax.random.PRNGKey(seed), num_envs)
    _, states = jax.jit(jax.vmap(env.reset))(keys)
    step = jax.jit(step)
    for _ in range(2):  # compile: twice where a reset's weakly typed leaves differ from a step's (SMAX)
        keys, states = jax.block_until_ready(step(keys, states))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        keys, states = jax.block_until_ready(step(keys, states))
        steps += num_envs
    return steps / (time.perf_counter() - start)
