"""Level-Based Foraging (``pip install 'mappo[lbf]'``, lbforaging 2.0): ``lbf/<any lbforaging id>``.

    make_env_fn("lbf/Foraging-10x10-3p-3f-v3")                 # as registered by lbforaging
    make_env_fn("lbf/Foraging-8x8-2p-5f-v3", max_num_food=5)   # kwargs override the id's own
    make_env_fn("lbf/Foraging-10x10-3p-3f-v3", food_rule="epymarl")   # food levels as in EPyMARL's paper

Rewards are lbforaging's normalised ones: a food's reward is split between the agents that load
it, and the team's sum over an episode is 1.0 when every food is collected (EPyMARL's LBF
accounting).  The episode ends as ``terminated`` when the field is empty, else as ``truncated``
at the time limit (``max_episode_steps``, 50 for the registered ids).  ``info["action_mask"]``
holds lbforaging's valid actions; the env itself turns an invalid action into NONE.

``food_rule`` sets how a food's level is drawn.  ``"lbforaging2"`` (the default) is lbforaging
2.0's: uniform from 1 to the sum of the three lowest player levels, both ends included.
``"epymarl"`` is lbforaging 1.x's, which the EPyMARL benchmark paper ran: the top end excluded
(numpy's ``randint(low, high)``; 2.0's ``spawn_food`` draws ``integers(low, high + 1)``).
With three players the difference is large: on Foraging-10x10-3p-3f, 2.0's rule makes about a
quarter of the foods need all three players loading together (about 37% of an episode's reward),
1.x's rule about 3% (only when every player has level 2).  ``force_coop`` ids are the same under both.
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


FOOD_RULES = ("lbforaging2", "epymarl")


def _exclusive_food_levels(env: Any) -> None:
    """lbforaging 1.x's food levels on a 2.0 env: ``randint(low, high)`` with ``high`` excluded
    is 2.0's inclusive draw up to ``high - 1`` (2.0 takes ``low`` itself when the two are equal)."""
    spawn = env.spawn_food

    def spawn_food(max_num_food: int, min_levels: Any, max_levels: Any) -> None:
        low, high = np.asarray(min_levels), np.asarray(max_levels)
        spawn(max_num_food, min_levels, np.where(high > low, high - 1, high))

    env.spawn_food = spawn_food


def make_lbf(env_id: str, render_mode: str | None = None, food_rule: str = "lbforaging2",
             **kwargs: Any) -> TupleGymParallelEnv:
    """A ParallelEnv of the lbforaging id ``env_id``; ``kwargs`` override the id's registered ones."""
    if food_rule not in FOOD_RULES:
        raise ValueError(f"lbf/{env_id}: food_rule must be one of {list(FOOD_RULES)}, got {food_rule!r}")
    env = make_gym("lbf", env_id, "Foraging", "lbforaging", **kwargs)
    if food_rule == "epymarl" and not env.force_coop:  # force_coop foods take the top level under both
        _exclusive_food_levels(env)
    # the field is empty when every food was loaded: a real end; otherwise the time limit cut it
    return TupleGymParallelEnv(env, f"lbf/{env_id}", ended_by_time=lambda e: e.field.sum() > 0,
                               action_masks=_valid_actions, before_reset=_forget_positions,
                               render_mode=render_mode)
