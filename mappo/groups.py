"""Agent groups: which agents share an actor, a critic and their statistics.

    groups:
      adversaries: ["adversary_*"]
      agents: ["agent_*"]

Each group maps a name to agent names or glob patterns (``fnmatch``).  Every agent falls in
exactly one group; the default (no ``groups``) puts all agents in one group, which is the
framework without groups.  Under ``parameter_sharing=shared`` a group has one actor and one
critic (a weight set each, ``networks.sharing``) and agent ids one-hot within the group; under
``separate`` every agent has its own.  Either way each group keeps its own value
normaliser, advantage statistics, KL coefficient and gradient-norm clip (``learner.py``).
"""
from __future__ import annotations

import fnmatch
from typing import Any, Dict, List, NamedTuple

ALL = "all"  # the name of the one group when ``groups`` is empty


class Groups(NamedTuple):
    """``names [G]`` and ``of [A]``: each agent slot's group index."""
    names: List[str]
    of: List[int]

    @property
    def count(self) -> int:
        return len(self.names)

    def members(self, g: int) -> List[int]:
        return [k for k, h in enumerate(self.of) if h == g]


def check_groups(groups: Any) -> Dict[str, List[str]]:
    """Validate the config field ``groups`` (its shape; agents are matched in :func:`resolve_groups`)."""
    if groups is None:
        return {}
    if not isinstance(groups, dict):
        raise TypeError(f"config field 'groups' must be a mapping from a group name to a list of agent names or "
                        f"glob patterns, e.g. {{adversaries: ['adversary_*'], agents: ['agent_*']}}; got {groups!r}")
    checked: Dict[str, List[str]] = {}
    for name, patterns in groups.items():
        if not isinstance(name, str) or not name or "/" in name or name == "eval":
            raise ValueError(f"config field 'groups': group name {name!r} must be a non-empty string without '/' "
                             f"(it prefixes metric names, '<group>/team_return'), and not 'eval'")
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, (list, tuple)) or not patterns or not all(
                isinstance(p, str) and p for p in patterns):
            raise ValueError(f"config field 'groups'[{name!r}] must be a non-empty list of agent names or glob "
                             f"patterns, got {patterns!r}")
        checked[name] = list(patterns)
    return checked


def resolve_groups(agents: List[str], groups: Dict[str, List[str]]) -> Groups:
    """Match ``groups`` (name -> patterns) against the env's ``agents``.

    A pattern that matches no agent, an agent matched by two groups, or an agent in none is a
    ValueError naming them."""
    if not groups:
        return Groups([ALL], [0] * len(agents))
    names = list(groups)
    owner: Dict[str, List[str]] = {a: [] for a in agents}
    for name, patterns in groups.items():
        for pattern in patterns:
            matched = fnmatch.filter(agents, pattern)
            if not matched:
                raise ValueError(f"config field 'groups'[{name!r}]: pattern {pattern!r} matches no agent; the env's "
                                 f"agents are {agents}")
            for a in matched:
                if name not in owner[a]:
                    owner[a].append(name)
    twice = {a: g for a, g in owner.items() if len(g) > 1}
    if twice:
        raise ValueError("config field 'groups': agents in more than one group: "
                         + ", ".join(f"{a!r} in {g}" for a, g in twice.items()))
    none = [a for a, g in owner.items() if not g]
    if none:
        raise ValueError(f"config field 'groups': agents {none} are in no group (groups: {groups}); every agent must "
                         f"be in exactly one")
    return Groups(names, [names.index(owner[a][0]) for a in agents])
