"""Env names -> env factories for the Trainer.

    make_env_fn("mpe/simple_spread", N=3)        # a registered name with keyword arguments
    make_env_fn("my_pkg.my_envs:make_env", k=1)   # "module.path:callable" for your own env

A PettingZoo family registers ``factory(**kwargs) -> ParallelEnv``; ``make_env_fn`` returns a
zero-argument partial of it.  A batched simulator registers with ``batched=True`` a
``factory(**kwargs) -> mappo.Batched``, which ``make_env_fn`` calls at once (see
``mappo/protocol.py``).  A new env family is one file plus one ``register`` call here.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import os
import sys
from typing import Any, Callable, Dict, Set

from mappo.protocol import Batched

EnvFactory = Callable[..., Any]
ENVS: Dict[str, EnvFactory] = {}
BATCHED: Set[str] = set()  # names whose factory returns a mappo.Batched builder
# families whose every id is a name: "lbf/<id>" calls FAMILIES["lbf"](<id>, **kwargs)
FAMILIES: Dict[str, EnvFactory] = {}
BATCHED_FAMILIES: Set[str] = set()  # families whose factory returns a mappo.Batched builder


def register(name: str, factory: EnvFactory | None = None, batched: bool = False):
    """Register ``factory(**kwargs)`` under ``name`` (usable as a decorator): it returns a
    ParallelEnv, or with ``batched=True`` a :class:`mappo.Batched` builder."""
    if factory is None:
        return lambda f: register(name, f, batched)
    ENVS[name] = factory
    if batched:
        BATCHED.add(name)
    return factory


def register_family(prefix: str, factory: EnvFactory, batched: bool = False) -> EnvFactory:
    """Register ``factory(env_id, **kwargs) -> ParallelEnv`` for every name ``"<prefix>/<env_id>"``
    (a package with many ids of its own, such as lbforaging); the factory rejects unknown ids.
    With ``batched=True`` the factory returns a :class:`mappo.Batched` builder."""
    FAMILIES[prefix] = factory
    if batched:
        BATCHED_FAMILIES.add(prefix)
    return factory


def _mpe(module: str, defaults: Dict[str, Any]) -> EnvFactory:
    def factory(accounting: str = "mpe2", dynamics: str = "mpe2", **kwargs: Any) -> Any:
        """``accounting``: "mpe2" (its own rewards) or "epymarl"; ``dynamics``: "mpe2" or "original"
        (the original MPE's integration order); see envs/mpe_epymarl.py."""
        from .mpe_epymarl import ACCOUNTINGS, DYNAMICS, epymarl_accounting, integrate_as_original

        if accounting not in ACCOUNTINGS:
            raise ValueError(f"mpe: accounting must be one of {list(ACCOUNTINGS)}, got {accounting!r}")
        if dynamics not in DYNAMICS:
            raise ValueError(f"mpe: dynamics must be one of {list(DYNAMICS)}, got {dynamics!r}")
        mod = importlib.import_module(f"mpe2.{module}")
        env = mod.parallel_env(**{**defaults, **kwargs})
        if dynamics == "original":
            integrate_as_original(env.unwrapped.world)
        return epymarl_accounting(module, env, kwargs) if accounting == "epymarl" else env

    return factory


def _sisl(module: str) -> EnvFactory:
    def factory(**kwargs: Any) -> Any:
        mod = importlib.import_module(f"pettingzoo.sisl.{module}")
        return mod.parallel_env(**kwargs)

    return factory


register("mpe/simple_spread", _mpe("simple_spread_v3", {"N": 3, "max_cycles": 25, "continuous_actions": False}))
register("mpe/simple_speaker_listener", _mpe("simple_speaker_listener_v4", {"max_cycles": 25, "continuous_actions": False}))
register("mpe/simple_reference", _mpe("simple_reference_v3", {"max_cycles": 25, "continuous_actions": False}))
register("mpe/simple", _mpe("simple_v3", {"max_cycles": 25, "continuous_actions": False}))
# mixed cooperative-competitive: adversaries against good agents, each side with its own rewards
register("mpe/simple_tag", _mpe("simple_tag_v3", {"max_cycles": 25, "continuous_actions": False}))
register("mpe/simple_adversary", _mpe("simple_adversary_v3", {"max_cycles": 25, "continuous_actions": False}))
register("mpe/simple_world_comm", _mpe("simple_world_comm_v3", {"max_cycles": 25, "continuous_actions": False}))
register("mpe/simple_push", _mpe("simple_push_v3", {"max_cycles": 25, "continuous_actions": False}))
register("sisl/multiwalker", _sisl("multiwalker_v9"))
register("sisl/pursuit", _sisl("pursuit_v4"))


def _butterfly(module: str, defaults: Dict[str, Any] | None = None) -> EnvFactory:
    def factory(**kwargs: Any) -> Any:
        try:
            mod = importlib.import_module(f"pettingzoo.butterfly.{module}")
        except ImportError as err:  # pygame/pymunk are optional: say which extra brings them
            raise ImportError(f"butterfly envs need pygame and pymunk: pip install 'pettingzoo[butterfly]' (or this "
                              f"project's 'butterfly' extra): {err}") from err
        return mod.parallel_env(**{**(defaults or {}), **kwargs})

    return factory


# pixel observations: configs/butterfly_*.yaml preprocess them with SuperSuit wrappers.
# pistonball_v6 and cooperative_pong_v6 draw their screen only when render_mode is set: with None,
# pistonball's observations and state() stay the first frame of the episode and pong's are black
# (PettingZoo 1.25; found by a training run whose explained variance stayed 0).  With "rgb_array"
# they draw every step (and render() returns the frame, which videos use).
register("butterfly/pistonball", _butterfly("pistonball_v6", {"render_mode": "rgb_array"}))
register("butterfly/cooperative_pong", _butterfly("cooperative_pong_v6", {"render_mode": "rgb_array"}))
register("butterfly/knights_archers_zombies", _butterfly("knights_archers_zombies_v11"))


def _vmas(scenario: str, defaults: Dict[str, Any]) -> EnvFactory:
    def factory(**kwargs: Any) -> Batched:
        from .vmas_adapter import VmasEnvFn

        return Batched(VmasEnvFn(scenario, **{**defaults, **kwargs}))

    return factory


register("vmas/simple_spread", _vmas("simple_spread", {"max_steps": 25, "continuous_actions": False}), batched=True)
register("vmas/navigation", _vmas("navigation", {"max_steps": 100}), batched=True)
register("vmas/balance", _vmas("balance", {"max_steps": 100}), batched=True)


def _lbf(env_id: str, **kwargs: Any) -> Any:
    from .lbf import make_lbf

    return make_lbf(env_id, **kwargs)


def _rware(env_id: str, **kwargs: Any) -> Any:
    from .rware import make_rware

    return make_rware(env_id, **kwargs)


def _matrix(name: str) -> EnvFactory:
    def factory(**kwargs: Any) -> Any:
        from . import matrix

        return getattr(matrix, name)(**kwargs)

    return factory


register("matrix/climbing", _matrix("climbing"))
register("matrix/penalty", _matrix("penalty_game"))
def _mamujoco(env_id: str, **kwargs: Any) -> Any:
    from .mamujoco import make_mamujoco

    return make_mamujoco(env_id, **kwargs)


def _jaxmarl(env_id: str, **kwargs: Any) -> Batched:
    from .jaxmarl import JaxMarlEnvFn, check_env_id

    check_env_id(env_id)  # a wrong id fails here, with "did you mean", not when the trainer builds envs
    return Batched(JaxMarlEnvFn(env_id, **kwargs))


register_family("lbf", _lbf)
register_family("rware", _rware)
register_family("mamujoco", _mamujoco)  # mamujoco/HalfCheetah-2x3, mamujoco/Ant-4x2, ...
register_family("jaxmarl", _jaxmarl, batched=True)  # JaxMARL's ids: jaxmarl/MPE_simple_spread_v3, jaxmarl/SMAX, ...


def _family_factory(name: str) -> EnvFactory | None:
    """``FAMILIES[family]`` bound to the id for a name ``"<family>/<id>"`` (no ':', which marks code), else None."""
    family, _, env_id = name.partition("/")
    if family in FAMILIES and env_id and ":" not in name:
        return functools.partial(FAMILIES[family], env_id)
    return None


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registry name (``mpe/simple_spread``, ``lbf/<id>``): data, where a
    ``module:callable`` name is code that building the env would import and run."""
    return name in ENVS or _family_factory(name) is not None


def _resolve(name: str) -> EnvFactory:
    if name in ENVS:
        return ENVS[name]
    family_factory = _family_factory(name)
    if family_factory is not None:
        return family_factory
    if ":" in name:
        module, _, attr = name.partition(":")
        # the user's own module in the folder they run from imports as under `python -m mappo`
        # (the `mappo` console script's path starts at its own folder, not the working one)
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        try:
            obj = importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"env {name!r}: cannot import module {module!r}: {err}") from err
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"env {name!r}: module {module!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        if not callable(obj):
            raise ValueError(f"env {name!r}: {attr!r} is not callable")
        return obj
    close = difflib.get_close_matches(name, list(ENVS), n=3, cutoff=0.6)
    names = [repr(c) for c in close]
    hint = f"did you mean {', '.join(names[:-1]) + ' or ' if len(names) > 1 else ''}{names[-1]}? " if close else ""
    raise ValueError(f"unknown env {name!r}; {hint}registered: {sorted(ENVS)}, families: "
                     f"{sorted(f + '/<id>' for f in FAMILIES)}, or use 'module.path:callable'")


def make_env_fn(name: str, **kwargs: Any) -> Callable[[], Any]:
    """A zero-argument env factory for ``name``; a picklable partial so spawn-based workers work too.

    For batched simulators (``vmas/...``, or a user's ``module:NAME`` that is a ``mappo.Batched``)
    it returns a :class:`mappo.Batched` builder that the Trainer calls with ``num_envs``,
    ``device`` and ``seed``.
    """
    factory = _resolve(name)
    if name in BATCHED or (_family_factory(name) is not None and name.partition("/")[0] in BATCHED_FAMILIES):
        return factory(**kwargs)
    if isinstance(factory, Batched):
        return Batched(functools.partial(factory.builder, **kwargs))
    env_fn = functools.partial(factory, **kwargs)
    env_fn.env_name = name  # errors name the env as the user did (mappo.protocol.describe_env)
    return env_fn
