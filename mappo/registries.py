"""A config's names checked against the parts they name: the algorithm (and its own options
section), the encoder, the loggers, the callbacks, the SuperSuit wrappers and the agent groups.

``mappo/config.py`` checks what a field is by itself (types, ranges, one field against another)
and imports no other part of mappo; each part's module owns its names and its check.  This
module composes those checks, so that a config naming an unknown part is an error before any
env is built: ``Trainer`` calls it first, and so do the CLI, the benchmark and the sweep when
they read a config file.

    cfg = check_registered(Config.from_yaml(path, overrides))
"""
from __future__ import annotations

from .algorithm import learner_class
from .callbacks import check_callbacks
from .config import Config
from .encoders import ENCODER_CHOICES
from .groups import check_groups
from .logger import check_loggers
from .wrappers import check_wrappers


def check_registered(cfg: Config) -> Config:
    """Raise ValueError/TypeError naming the field and the choices; returns ``cfg`` with the list
    and mapping fields in their checked form (``wrappers`` as ``[{name: kwargs}]``, ``groups`` as
    ``{name: [patterns]}``), changed in place so that saved configs compare field by field."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a mappo.Config, got {type(cfg).__name__}")
    if cfg.encoder not in ENCODER_CHOICES:
        raise ValueError(f"config field 'encoder' must be one of {list(ENCODER_CHOICES)}, got {cfg.encoder!r}")
    cfg.wrappers = check_wrappers(cfg.wrappers)  # imports SuperSuit only when there are wrappers to check
    cfg.groups = check_groups(cfg.groups)
    cfg.callbacks = check_callbacks(cfg.callbacks)
    cfg.loggers = check_loggers(cfg.loggers)
    learner_class(cfg.algorithm).options(cfg)  # the algorithm's name, then its own section
    return cfg
