"""Multi-agent MuJoCo (MaMuJoCo; de Witt, Peng et al. 2020) through gymnasium-robotics'
``mamujoco_v1`` PettingZoo env (``pip install 'mappo[mamujoco]'``; MuJoCo ships as a wheel):
``mamujoco/<scenario>-<agent_conf>``.

    make_env_fn("mamujoco/HalfCheetah-2x3")                # 2 agents, 3 joints each
    make_env_fn("mamujoco/Ant-4x2", agent_obsk=0)          # kwargs go to mamujoco_v1.parallel_env
    make_env_fn("mamujoco/Walker2d-2x3")

Each agent controls its share of the robot's joints (Box(-1, 1) actions) and observes its own
joints (and, with ``agent_obsk=k``, the joints up to k hops away); every agent gets the team
reward, the single-agent task's.  ``state()`` is the single-agent task's full observation.
Episodes end as ``truncated`` at 1,000 steps, or as ``terminated`` when the robot falls
(Ant, Hopper, Walker2d, Humanoid).

gymnasium-robotics runs gymnasium's v5 MuJoCo tasks on the ``mujoco`` bindings; HARL (Zhong et
al. 2024) and the original MaMuJoCo published on the v2 tasks (mujoco-py).  v5 changed details
of the models, rewards and health checks, so returns here are close to, not the same as, the
papers' numbers.
"""
from __future__ import annotations

import re
from typing import Any

# gymnasium-robotics' factorisations (its documentation's env pages); any other pair is checked by the package
SCENARIOS = ("Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "Reacher", "Swimmer", "Pusher",
             "Walker2d", "InvertedPendulum", "InvertedDoublePendulum", "ManySegmentSwimmer", "ManySegmentAnt",
             "CoupledHalfCheetah")


def make_mamujoco(env_id: str, **kwargs: Any) -> Any:
    """A ParallelEnv of ``<scenario>-<agent_conf>`` (e.g. ``HalfCheetah-2x3``); ``kwargs`` go to
    ``gymnasium_robotics.mamujoco_v1.parallel_env`` (``agent_obsk``, ``render_mode``, ...)."""
    match = re.fullmatch(r"([A-Za-z0-9]+)-(\d+x\d+\w*)", env_id)
    if match is None or match.group(1) not in SCENARIOS:
        raise ValueError(f"mamujoco/{env_id}: an id is <scenario>-<agent_conf>, e.g. mamujoco/HalfCheetah-2x3, "
                         f"with a scenario among {list(SCENARIOS)}")
    try:
        from gymnasium_robotics import mamujoco_v1
    except ImportError as err:
        raise ImportError(f"mamujoco/{env_id} needs gymnasium-robotics and MuJoCo: pip install 'mappo[mamujoco]' "
                          f"(or: pip install gymnasium-robotics)") from err
    scenario, agent_conf = match.groups()
    try:
        return mamujoco_v1.parallel_env(scenario, agent_conf, **kwargs)
    except Exception as err:  # the package raises a bare Exception for an unknown agent_conf
        raise ValueError(f"mamujoco/{env_id}: gymnasium-robotics has no {agent_conf!r} factorisation of "
                         f"{scenario} ({type(err).__name__}: {err})") from err
