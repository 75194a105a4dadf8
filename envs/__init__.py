"""The env registry and the project's own envs."""
from .registry import ENVS, is_registered, make_env_fn, register

__all__ = ["ENVS", "is_registered", "make_env_fn", "register"]
