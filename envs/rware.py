"""The multi-robot warehouse (``pip install 'mappo[rware]'``, rware 2.0): ``rware/<any rware id>``.

    make_env_fn("rware/rware-tiny-2ag-v2")
    make_env_fn("rware/rware-tiny-2ag-v2", max_steps=200)   # kwargs override the id's own

Each agent earns 1 per shelf it delivers (``RewardType.INDIVIDUAL`` in the registered ids), so
the team's episode return is the number of deliveries in the episode (EPyMARL's RWARE accounting,
500-step episodes).  rware has no terminal state: its end is always ``truncated``, whether by
``max_steps`` or by ``max_inactivity_steps`` (a time cut as well, off by default).
"""
from __future__ import annotations

from typing import Any

from .tuple_gym import TupleGymParallelEnv, make_gym


def make_rware(env_id: str, render_mode: str | None = None, **kwargs: Any) -> TupleGymParallelEnv:
    """A ParallelEnv of the rware id ``env_id``; ``kwargs`` override the id's registered ones."""
    env = make_gym("rware", env_id, "rware", "rware", **kwargs)
    return TupleGymParallelEnv(env, f"rware/{env_id}", ended_by_time=lambda e: True, render_mode=render_mode)
