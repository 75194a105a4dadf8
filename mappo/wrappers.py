"""SuperSuit wrappers from the config: ``wrappers`` is a list applied in order to each env copy.

    wrappers:
      - color_reduction_v0: {mode: B}
      - resize_v1: {x_size: 84, y_size: 84}
      - frame_stack_v2: {stack_size: 4}

Each entry is a mapping with one key, a SuperSuit function name, whose value holds its keyword
arguments (``{}`` for none).  The Trainer wraps its ``env_fn`` in :class:`WrappedEnvFn`, so the
wrappers run where the env is built: inside each subprocess worker, and for evaluation and video
envs too.  With ``wrappers`` empty, ``env_fn`` is used as given.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Dict, List

# SuperSuit functions that turn a ParallelEnv into a vector env of another library: the framework
# vectorises envs itself, so these do not fit in ``wrappers``
VECTORISERS = ("concat_vec_envs_v1", "gym_vec_env_v0", "pettingzoo_env_to_vec_env_v1", "stable_baselines3_vec_env_v0",
               "stable_baselines_vec_env_v0", "vectorize_aec_env_v0")


def _supersuit():
    try:
        import supersuit
    except ImportError as err:  # a declared dependency; say what to do if it is missing
        raise ImportError("config field 'wrappers' needs SuperSuit: pip install supersuit") from err
    return supersuit


def known_wrappers() -> List[str]:
    """The SuperSuit functions ``wrappers`` accepts."""
    ss = _supersuit()
    return sorted(n for n in dir(ss) if n[-3:-1] == "_v" and n[-1].isdigit() and n not in VECTORISERS)


def check_wrappers(wrappers: Any) -> List[Dict[str, Dict[str, Any]]]:
    """Validate the config field ``wrappers``; returns it as a list of ``{name: kwargs}``.

    Raises ValueError/TypeError naming the entry, the wrapper and the problem: not a one-key
    mapping, an unknown name, or keyword arguments the function does not take."""
    if not isinstance(wrappers, (list, tuple)):
        raise TypeError(f"config field 'wrappers' must be a list of {{name: {{kwargs}}}} entries, got {wrappers!r}")
    checked: List[Dict[str, Dict[str, Any]]] = []
    known = known_wrappers() if wrappers else []
    for i, entry in enumerate(wrappers):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(f"config field 'wrappers'[{i}] must be a mapping with one key, the SuperSuit function "
                             f"name, e.g. {{frame_stack_v2: {{stack_size: 4}}}}; got {entry!r}")
        (name, kwargs), = entry.items()
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(kwargs, dict):
            raise ValueError(f"config field 'wrappers'[{i}] ({name}): the value must be a mapping of keyword "
                             f"arguments, got {kwargs!r}")
        if name not in known:
            what = "a vector-env converter (the framework vectorises envs itself)" if name in VECTORISERS \
                else "not a SuperSuit wrapper"
            close = difflib.get_close_matches(str(name), known, n=3)
            hint = f"did you mean {', '.join(close)}? " if close and name not in VECTORISERS else ""
            raise ValueError(f"config field 'wrappers'[{i}]: {name!r} is {what}; {hint}choose from {known}")
        signature = inspect.signature(getattr(_supersuit(), name))
        try:
            signature.bind(None, **kwargs)
        except TypeError as err:
            raise ValueError(f"config field 'wrappers'[{i}] ({name}): {err}; it takes {signature}") from err
        checked.append({str(name): dict(kwargs)})
    return checked


def apply_wrappers(env: Any, wrappers: List[Dict[str, Dict[str, Any]]]) -> Any:
    """``env`` with each SuperSuit wrapper applied in order; a wrapper that rejects the env is a
    ValueError naming it."""
    ss = _supersuit()
    for i, entry in enumerate(wrappers):
        (name, kwargs), = entry.items()
        try:
            env = getattr(ss, name)(env, **kwargs)
        except Exception as err:  # SuperSuit raises AssertionError and others for an env it cannot wrap
            raise ValueError(f"config field 'wrappers'[{i}] ({name} with {kwargs}) does not fit the env "
                             f"{getattr(env, 'metadata', {}).get('name', env)!r}: {type(err).__name__}: {err}") from err
    return env


class WrappedEnvFn:
    """A picklable zero-argument env factory: ``env_fn()`` with ``wrappers`` applied (in the worker
    that calls it)."""

    def __init__(self, env_fn: Callable[[], Any], wrappers: List[Dict[str, Dict[str, Any]]]):
        self.env_fn, self.wrappers = env_fn, wrappers

    def __call__(self, **kwargs: Any) -> Any:  # kwargs: render_mode="rgb_array" for videos (mappo/video.py)
        return apply_wrappers(self.env_fn(**kwargs), self.wrappers)

    def __repr__(self) -> str:
        return f"WrappedEnvFn({self.env_fn!r}, {self.wrappers!r})"
