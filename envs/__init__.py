"""The env registry and the project's own envs."""
from .registry import ENVS, make_env_fn, register

__all__ = ["ENVS", "make_env_fn", "register"]
