"""Level-Based Foraging (``pip install 'mappo[lbf]'``, lbforaging 2.0): ``lbf/<any lbforaging id>``.

    make_env_fn("lbf/Foraging-10x10-3p-3f-v3")                 # as registered by lbforaging
    make_env_fn("lbf/Foraging-8x8-2p-5f-v3", max_num_food=5)   # kwargs override the id's own

Rewards are lbforaging's normalised ones: a food's reward is split between the agents that load
it, and the team's sum over an episode is 1.0 when every food is collected (EPyMARL's LBF
accounting).  The episode ends as ``terminated`` when the field is empty, else as ``truncated``
at the time limit (``max_episode_steps``, 50 for the registered ids).  ``info["action_mask"]``
holds lbforaging's valid actions; the env itself turns an invalid action into NONE.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .tuple_gym import TupleGymParallelEnv, make_gym

NUM_ACTIONS = 6  # lbforaging.foraging.environment.Action: NONE, NORTH, SOUTH, WEST, EAST, LOAD


def _valid_actions(env: Any) -> np.ndarray:
    masks = np.zeros((len(env.players), NUM_ACTIONS), dtype=bool)
    for i, player in enumerate(env.players):
        for action in env._valid_actions[player]:
            masks[i, action.value] = True
    return masks


def _forget_positions(env: Any) -> None:
    # lbforaging 2.0 keeps each player's position from the last episode, and its spawning skips
    # cells those stale positions hold, so reset(seed=s) would depend on the episode before.
    # Clearing them makes an episode a function of its seed alone (the exact-resume contract).
    for player in env.players:
        player.position = None


def make_lbf(env_id: str, render_mode: str | None = None, **kwargs: Any) -> TupleGymParallelEnv:
    """A ParallelEnv of the lbforaging id ``env_id``; ``kwargs`` override the id's registered ones."""
    env = make_gym("lbf", env_id, "Foraging", "lbforaging", **kwargs)
    # the field is empty when every food was loaded: a real end; otherwise the time limit cut it
    return TupleGymParallelEnv(env, f"lbf/{env_id}", ended_by_time=lambda e: e.field.sum() > 0,
                               action_masks=_valid_actions, before_reset=_forget_positions,
                               render_mode=render_mode)
