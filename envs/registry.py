"""Env names -> zero-argument factories returning PettingZoo ParallelEnvs.

    make_env_fn("mpe/simple_spread", N=3)        # a registered name with keyword arguments
    make_env_fn("my_pkg.my_envs:make_env", k=1)   # "module.path:callable" for your own env
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, Dict

EnvFactory = Callable[..., Any]
ENVS: Dict[str, EnvFactory] = {}


def register(name: str, factory: EnvFactory | None = None):
    """Register ``factory(**kwargs) -> ParallelEnv`` under ``name`` (usable as a decorator)."""
    if factory is None:
        return lambda f: register(name, f)
    ENVS[name] = factory
    return factory


def _mpe(module: str, defaults: Dict[str, Any]) -> EnvFactory:
    def factory(**kwargs: Any) -> Any:
        mod = importlib.import_module(f"mpe2.{module}")
        return mod.parallel_env(**{**defaults, **kwargs})

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
register("sisl/multiwalker", _sisl("multiwalker_v9"))
register("sisl/pursuit", _sisl("pursuit_v4"))


def _vmas(scenario: str, defaults: Dict[str, Any]) -> EnvFactory:
    def factory(**kwargs: Any) -> Any:
        from .vmas_adapter import VmasEnvFn

        return VmasEnvFn(scenario, **{**defaults, **kwargs})

    factory.batched = True  # make_env_fn returns factory(**kwargs): a batched env builder
    return factory


register("vmas/simple_spread", _vmas("simple_spread", {"max_steps": 25, "continuous_actions": False}))
register("vmas/navigation", _vmas("navigation", {"max_steps": 100}))
register("vmas/balance", _vmas("balance", {"max_steps": 100}))


def _resolve(name: str) -> EnvFactory:
    if name in ENVS:
        return ENVS[name]
    if ":" in name:
        module, _, attr = name.partition(":")
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
    raise ValueError(f"unknown env {name!r}; registered: {sorted(ENVS)}, or use 'module.path:callable'")


def make_env_fn(name: str, **kwargs: Any) -> Callable[[], Any]:
    """A zero-argument env factory for ``name``; a picklable partial so spawn-based workers work too.

    For batched simulators (``vmas/...``) it returns a builder with ``batched = True`` that the
    Trainer calls with ``num_envs``, ``device`` and ``seed``.
    """
    factory = _resolve(name)
    if getattr(factory, "batched", False):
        return factory(**kwargs)
    return functools.partial(factory, **kwargs)
