"""One typed config for a run: defaults, YAML + ``key=value`` overrides, validation.

Every field is documented in its comment; ``mappo train --help`` prints them.
:func:`validate` checks each field by itself (types, ranges, fields against each other) when a
Config is made.  Fields that name a part of mappo (algorithm, encoder, loggers, callbacks,
wrappers, groups) are checked by that part's module, composed in ``mappo/registries.py``; this
file imports no other part of mappo.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

_CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "objective": ("clip", "kl", "clip_kl"),
    "parameter_sharing": ("shared", "separate"),
    "critic_input": ("state", "concat_obs", "local", "agent_specific"),
    "critic_pass": ("step", "agent"),
    "dead_agents": ("leave", "team"),
    "lr_schedule": ("constant", "linear"),
    "vector_mode": ("subprocess", "inprocess"),
    "wandb_mode": ("online", "offline", "disabled"),
}


@dataclass
class Config:
    # --- environment -------------------------------------------------------------------
    env: str = "mpe/simple_spread"  # registry name (see envs/registry.py) or "module.path:callable"
    env_kwargs: Dict[str, Any] = field(default_factory=dict)  # keyword arguments for the env factory
    wrappers: List[Dict[str, Any]] = field(default_factory=list)  # SuperSuit wrappers for each env copy, in order: [{frame_stack_v2: {stack_size: 4}}, ...] (mappo/wrappers.py)
    # --- run size ----------------------------------------------------------------------
    total_steps: int = 200_000  # env steps (vector steps x num_envs) to train for
    num_envs: int = 8  # env copies stepped side by side
    rollout_length: int = 128  # T: steps per env per iteration
    seed: int = 0  # seeds torch, numpy and every env reset (env i, episode k: SeedSequence([seed, i, k]))
    num_seeds: int = 1  # K > 1: seeds seed .. seed+K-1 trained in one process with one batched update, each an ordinary run in run_dir/seed<S> (mappo/seeds.py)
    device: str = "auto"  # "auto": CUDA only where it pays (a batched simulator, images, a hidden layer >= 512; else the CPU: mappo/machine.py), printed at the start | "cpu" | "cuda"
    vector_mode: str = "subprocess"  # "subprocess" workers, or "inprocess" for debugging
    num_workers: int = 0  # subprocess env workers, each on one torch thread; 0: auto, one per CPU core this process may use (at most num_envs; printed at the start)
    torch_threads: int = 0  # torch threads for the update (collection with subprocess workers on the CPU uses one); 0: auto, the cores (divided among torchrun's ranks), at most 4 beside subprocess env workers, never more than torch had (mappo/machine.py)
    env_timeout_s: float = 60.0  # a subprocess env step or reset slower than this is an error naming the env (0: wait forever)
    # --- optimisation ------------------------------------------------------------------
    algorithm: str = "ppo"  # the learner (mappo/algorithm.py ALGORITHMS): "ppo" (MAPPO, or IPPO with critic_input=local) | "happo" (HAPPO: each agent's or group's actor updated in turn, mappo/happo.py)
    algorithm_options: Dict[str, Any] = field(default_factory=dict)  # the algorithm's own section, checked by it: "ppo" takes none; "happo": {fixed_order: false} (true: the agents in index order every iteration, not a fresh random order)
    lr: float = 5e-4  # actor learning rate
    critic_lr: Optional[float] = None  # critic learning rate; None means the same as lr
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE lambda
    ppo_epochs: int = 10  # passes over each rollout
    num_minibatches: int = 0  # minibatches per epoch; 0: auto, 1 when every action is categorical (the MAPPO paper's MPE setting), 4 when any agent has Box actions (a Gaussian policy needs more, smaller steps to narrow; CleanRL's continuous PPO takes 32)
    update_rows: int = -1  # the update's forward and backward passes run on pieces of at most this many agent rows of a minibatch, gradients summed (the same step; faster on CPUs, whose caches large activations overflow); -1: auto, 2**19 // the widest hidden layer (2,048 rows at width 256, 8,192 at 64); 0: whole minibatches
    max_grad_norm: float = 10.0  # global grad-norm clip per network
    adam_eps: float = 1e-5  # Adam epsilon
    lr_schedule: str = "constant"  # "constant" | "linear" (decay to 0 at total_steps)
    # --- objective (PPO, arXiv 1707.06347) ---------------------------------------------
    objective: str = "clip"  # "clip" (Eq. 7) | "kl" (adaptive KL penalty, Sec. 4) | "clip_kl" (both)
    clip_eps: float = 0.2  # epsilon of the clipped surrogate
    kl_coef: float = 1.0  # initial beta of the KL penalty
    target_kl: float = 0.01  # d_targ of the adaptive beta rule
    entropy_coef: float = 0.01  # entropy bonus
    value_coef: float = 1.0  # weight of the value loss
    value_norm: bool = True  # normalise value targets with running mean/std (MAPPO paper's ValueNorm)
    popart: bool = False  # PopArt: ValueNorm that also rescales the value head (exclusive with value_norm)
    value_clip: bool = True  # clip the value update around the old value (by clip_eps)
    huber_delta: float = 10.0  # Huber loss delta for the value loss; 0 means squared error
    normalize_advantages: bool = True  # standardise advantages over the whole rollout (as on-policy does), before minibatching
    dead_agents: str = "leave"  # an agent that leaves the episode early (dies): "leave" ends its return there | "team" runs it on, with its group's reward, to the episode's end (MAPPO's SMAC convention: returns.team_streams); its rows after leaving stay out of the losses either way
    # --- model -------------------------------------------------------------------------
    hidden_sizes: List[int] = field(default_factory=lambda: [64, 64])  # MLP hidden layers
    activation: str = "tanh"  # "tanh" | "relu"
    input_norm: bool = False  # LayerNorm on raw network inputs (MAPPO's feature normalisation)
    parameter_sharing: str = "shared"  # "shared" (one actor/critic per group, agent id input) | "separate" (one per agent)
    groups: Dict[str, List[str]] = field(default_factory=dict)  # agent groups: {name: [agent names or glob patterns]}; each has its own actor (shared), critic, value normaliser, KL beta and grad clip; empty: one group (mappo/groups.py)
    critic_input: str = "state"  # "state" (env.state(), else joined obs) | "concat_obs" | "local" (IPPO) | "agent_specific" (state + own obs)
    critic_pass: str = "step"  # "step": when every agent's critic input is the same (state, concat_obs; shared), the critic trunk runs once per env step (per group) and its head gives each agent's value | "agent": one row per agent with its id (the official MAPPO code; A times the work)
    log_std_init: float = -0.5  # initial log std of Gaussian (Box) actions, in units where the Box spans [-1, 1] (std 0.61)
    encoder: str = "auto"  # observation encoder: "auto" (a CNN for image observations and image states of 3x3 and up, else MLP) | "mlp" | "cnn" (mappo/encoders.py)
    image_layout: str = "auto"  # where 3-D images keep their channels: "auto" (HWC unless the shape says CHW: mappo/spaces.py channels_first) | "hwc" | "chw"
    cnn_channels: Optional[List[int]] = None  # CNN: output channels per conv layer; None: chosen from the image size (mappo/encoders.py conv_preset; the run's config.yaml records the choice)
    cnn_kernels: Optional[List[int]] = None  # CNN: square kernel size per conv layer (set with cnn_channels and cnn_strides); None: chosen from the image size
    cnn_strides: Optional[List[int]] = None  # CNN: stride per conv layer (set with cnn_channels and cnn_kernels); None: chosen from the image size
    cnn_features: Optional[int] = None  # CNN: width of the Linear layer after the convs (then the MLP trunk, hidden_sizes); None: chosen from the image size
    recurrent: bool = False  # GRU actor and critic (MAPPO paper's recurrent policies)
    chunk_length: int = 10  # BPTT chunk length for recurrent training (a short last chunk per env is padded and masked)
    flush_denormal: bool = True  # flush denormal floats to zero in the trainer's process while train() runs (torch.set_flush_denormal; TensorFlow and XLA do the same on CPUs): VMAS stepped 1.6x slower once agents settled and its physics made denormals (docs/PERFORMANCE.md)
    compile: bool = False  # torch.compile the PPO loss (forward and backward) and the policy step; see docs/PERFORMANCE.md for where it pays
    # --- evaluation during training ----------------------------------------------------
    eval_every: int = 0  # evaluate every N iterations on envs of its own (0: never); logged as eval/...
    eval_episodes: int = 10  # episodes per evaluation
    eval_deterministic: bool = True  # greedy actions; false samples them (EPyMARL's test mode)
    eval_max_steps: int = 10_000  # an evaluation episode longer than this is cut (and reported as cut)
    eval_at_start: bool = False  # with eval_every: also evaluate the untrained policy (a row at iteration 0), as EPyMARL does
    # --- logging -----------------------------------------------------------------------
    loggers: List[str] = field(default_factory=list)  # extra metric writers besides metrics.jsonl: "csv", "tensorboard", "wandb"
    wandb: bool = False  # log to Weights & Biases (the same as adding "wandb" to loggers)
    callbacks: List[Any] = field(default_factory=list)  # hooks into the loop (mappo.callbacks): names, "module:Class" or {name: ..., <kwargs>}, e.g. [{name: early_stopping, patience: 5}]
    wandb_project: str = "mappo"  # W&B project
    wandb_mode: str = "online"  # "online" | "offline" (no account or network needed) | "disabled"
    run_dir: Optional[str] = None  # run folder; None means runs/<name>-<time> (CLI) or no folder (API)
    overwrite: bool = False  # let a fresh run write into a run_dir that already holds a run (its files are replaced)
    name: Optional[str] = None  # run name; None means the env name
    log_every: int = 10  # without a terminal: print a console line every N iterations
    progress: bool = True  # progress bar (on a terminal) or log lines (otherwise), and a run summary
    checkpoint_every: int = 50  # write <run_dir>/ckpt.pt every N iterations (0: only at the end and on SIGINT/SIGTERM)
    curves_every_s: float = 30.0  # refresh <run_dir>/curves.png at most this often, in seconds (0: only at the end)
    wandb_video: bool = True  # with W&B on: log a video of a deterministic episode at the end (needs rgb_array rendering)

    def __post_init__(self) -> None:
        validate(self)

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str, overrides: Optional[List[str]] = None) -> "Config":
        """Load ``path`` and apply dotted ``key=value`` overrides on top of the defaults."""
        import os

        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} not found")
        try:
            loaded, given = OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides or []))
        except Exception as err:
            raise ValueError(f"cannot read config {path!r} with overrides {overrides}: {err}") from err
        # lists and mappings are checked here, so that a mistake gets the framework's words (OmegaConf's
        # own say "AnyNode is not a ListConfig" or "Cannot merge incompatible container types")
        for part, source in ((loaded, f"config {path!r}"), (given, "overrides")):
            if not isinstance(part, DictConfig):
                raise ValueError(f"{source}: expected field: value pairs, got {OmegaConf.to_yaml(part)!r}")
            _check_containers(OmegaConf.to_container(part), source)
        loaded, given = _whole_numbers(loaded), _whole_numbers(given)
        try:
            merged = OmegaConf.merge(OmegaConf.structured(cls), loaded, given)
        except Exception as err:  # a scalar of the wrong type: OmegaConf names the key
            raise ValueError(_scalar_error(err, path, overrides)) from err
        return cls.from_dict(OmegaConf.to_container(merged, resolve=True))

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(_unknown_fields(unknown))
        return cls(**_whole_number_values(values))

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: Optional[str] = None) -> str:
        text = OmegaConf.to_yaml(OmegaConf.create(self.to_dict()))
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    @property
    def run_name(self) -> str:
        return self.name or self.env.replace("/", "_").replace(":", "_")


# an example value of each list or mapping field, for error messages
_EXAMPLES = {"env_kwargs": "{N: 3}", "wrappers": "[{frame_stack_v2: {stack_size: 4}}]", "hidden_sizes": "[64,64]",
             "groups": "{red: [red_*], blue: [blue_0]}", "cnn_channels": "[32,64,64]", "cnn_kernels": "[8,4,3]",
             "cnn_strides": "[4,2,1]", "loggers": "[csv,tensorboard]", "algorithm_options": "{fixed_order: true}",
             "callbacks": "[{name: early_stopping, patience: 5}]"}
_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}


def _unknown_fields(names: List[str]) -> str:
    known = [f.name for f in dataclasses.fields(Config)]
    hints = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown config field(s) {', '.join(hints)}; `mappo train --help` lists every field"


def _field_kind(name: str) -> Tuple[Any, bool]:
    """The field's type without Optional (list, dict or a scalar type), and whether None is allowed."""
    hint = typing.get_type_hints(Config)[name]
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) is typing.Union and type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    return typing.get_origin(hint) or hint, optional


def _check_containers(values: Dict[str, Any], source: str) -> None:
    """Unknown fields, and list or mapping fields given something else, as errors in the framework's words."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(Config)})
    if unknown:
        raise ValueError(f"{source}: {_unknown_fields(unknown)}")
    for name, value in values.items():
        kind, optional = _field_kind(name)
        if kind in (list, dict) and not isinstance(value, kind) and not (optional and value is None):
            what = "a list" if kind is list else "a mapping"
            raise ValueError(f"{source}: config field {name!r} must be {what}{' or null' if optional else ''}, "
                             f"e.g. {name}={_EXAMPLES.get(name, '[]' if kind is list else '{}')}; got {value!r}")


def _whole_number_values(values: Dict[str, Any]) -> Dict[str, Any]:
    """``values`` with a whole float given to an integer field as that integer: ``total_steps=1e6``
    (YAML and OmegaConf read 1e6 as a float)."""
    fields = {f.name for f in dataclasses.fields(Config)}
    return {name: int(value) if name in fields and isinstance(value, float) and value.is_integer()
            and _field_kind(name)[0] is int else value for name, value in values.items()}


def _whole_numbers(part: DictConfig) -> DictConfig:
    """:func:`_whole_number_values` of an OmegaConf part, before the typed merge refuses the float."""
    values = OmegaConf.to_container(part)
    whole = _whole_number_values(values)
    changed = any(type(whole[k]) is not type(values[k]) for k in values)  # 1.0 == 1: compare the types
    return OmegaConf.create(whole) if changed else part


def _scalar_error(err: Exception, path: str, overrides: Optional[List[str]]) -> str:
    key = str(getattr(err, "full_key", "") or "")
    name = re.split(r"[.\[]", key)[0]
    if name not in {f.name for f in dataclasses.fields(Config)}:
        return f"bad config {path!r} with overrides {overrides}: {str(err).splitlines()[0]}"
    kind, optional = _field_kind(name)
    if kind is list:  # an entry of a list field
        inner = typing.get_args(typing.get_type_hints(Config)[name])
        kind = typing.get_args(inner[0])[0] if optional else inner[0]
    value = re.search(r"Value '(.*?)'", str(err))
    got = f"; got {value.group(1)!r}" if value else ""
    where = f"config field {name!r}" + (f" (entry {key[len(name):]})" if key != name else "")
    return f"{where} must be {_WORDS.get(kind, getattr(kind, '__name__', str(kind)))}" \
           f"{' or null' if optional and key == name else ''}{got}"


# fields whose default leaves the choice to the env (action type, image sizes); a trainer writes
# the value it chose into its config, so a saved config may hold any value where these are unset
AUTOMATIC = {"num_minibatches": 0, "cnn_channels": None, "cnn_kernels": None, "cnn_strides": None,
             "cnn_features": None}


def changed_settings(saved: Dict[str, Any], wanted: Dict[str, Any]) -> List[str]:
    """The fields where a run's saved config differs from ``wanted``; a field ``wanted`` leaves to
    the env (:data:`AUTOMATIC`) matches whatever the run chose."""
    return sorted(k for k in wanted if saved.get(k) != wanted[k]
                  and not (k in AUTOMATIC and wanted[k] == AUTOMATIC[k]))


def auto_minibatches(cfg: Config, continuous: bool) -> int:
    """``num_minibatches`` for ``cfg``: its own when set, else by action type (see the field), at
    most the number of rows a minibatch can be cut into."""
    if cfg.num_minibatches:
        return cfg.num_minibatches
    return min(4 if continuous else 1, minibatch_units(cfg))


def minibatch_units(cfg: Config) -> int:
    """How many pieces a rollout can be cut into: recurrent minibatches are made of whole chunks
    (the last one per env may be short), feed-forward ones of single steps."""
    return cfg.num_envs * (-(-cfg.rollout_length // cfg.chunk_length) if cfg.recurrent else cfg.rollout_length)


def help_text() -> str:
    """One line per field, read from this file's comments: the CLI's ``--help``."""
    import inspect

    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(Config)}
    lines = []
    for line in inspect.getsource(Config).splitlines():
        m = re.match(r"\s+(\w+): [^=]+= .+?\s+# (.+)", line)
        if m:
            value = defaults[m.group(1)]
            value = {None: "null", True: "true", False: "false"}.get(value, value) if not isinstance(
                value, (list, dict, int, float)) or isinstance(value, bool) else json.dumps(value)
            lines.append(f"  {m.group(1):<22} {m.group(2)} (default: {value})")
    return "\n".join(lines)


def _check_type(cfg: Config, name: str, kind: type) -> None:
    value = getattr(cfg, name)
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        setattr(cfg, name, float(value))
        ok = True
    if not ok:
        raise TypeError(f"config field {name!r} must be {kind.__name__}, got {value!r} ({type(value).__name__})")


def validate(cfg: Config) -> None:
    """Raise ValueError/TypeError naming the field and the allowed values."""
    for name in ("total_steps", "num_envs", "rollout_length", "seed", "num_seeds", "ppo_epochs", "num_minibatches",
                 "num_workers", "torch_threads", "log_every", "chunk_length", "checkpoint_every", "eval_every", "eval_episodes",
                 "eval_max_steps", "update_rows"):
        _check_type(cfg, name, int)
    for name in ("lr", "gamma", "gae_lambda", "max_grad_norm", "adam_eps", "clip_eps", "kl_coef",
                 "target_kl", "entropy_coef", "value_coef", "huber_delta", "curves_every_s", "log_std_init",
                 "env_timeout_s"):
        _check_type(cfg, name, float)
    for name in ("value_norm", "value_clip", "normalize_advantages", "wandb", "progress", "input_norm", "popart", "compile",
                 "recurrent", "wandb_video", "eval_deterministic", "overwrite", "eval_at_start", "flush_denormal"):
        _check_type(cfg, name, bool)
    for name, allowed in _CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"config field {name!r} must be one of {list(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.activation not in ("tanh", "relu"):
        raise ValueError(f"config field 'activation' must be one of ['tanh', 'relu'], got {cfg.activation!r}")
    if cfg.compile and cfg.recurrent:
        raise ValueError("config field 'compile': torch.compile is for feed-forward networks here; with recurrent=true "
                         "it made the update slower and the policy step 30x slower on the CPU (docs/PERFORMANCE.md). "
                         "Use compile=false with recurrent=true")
    positive_ints = ("total_steps", "num_envs", "rollout_length", "ppo_epochs", "log_every",
                     "chunk_length", "eval_episodes", "eval_max_steps")
    for name in positive_ints:
        if getattr(cfg, name) < 1:
            raise ValueError(f"config field {name!r} must be an integer >= 1, got {getattr(cfg, name)!r}")
    if cfg.update_rows < -1:
        raise ValueError(f"config field 'update_rows' must be -1 (auto), 0 (whole minibatches) or a row count, "
                         f"got {cfg.update_rows!r}")
    for name in ("checkpoint_every", "curves_every_s", "eval_every", "env_timeout_s"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"config field {name!r} must be >= 0 (0 = off), got {getattr(cfg, name)!r}")
    if cfg.num_minibatches < 0:
        raise ValueError(f"config field 'num_minibatches' must be >= 1, or 0 for auto (by action type), "
                         f"got {cfg.num_minibatches}")
    for name in ("num_workers", "torch_threads"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"config field {name!r} must be >= 0 (0 = automatic), got {getattr(cfg, name)}")
    if not 0 <= cfg.seed < 2 ** 32:
        raise ValueError(f"config field 'seed' must be in [0, 2**32), got {cfg.seed}")
    if cfg.num_seeds < 1 or cfg.seed + cfg.num_seeds > 2 ** 32:
        raise ValueError(f"config field 'num_seeds' must be >= 1 with seed + num_seeds <= 2**32 (seeds seed .. "
                         f"seed+num_seeds-1), got num_seeds={cfg.num_seeds} with seed={cfg.seed}")
    for name in ("lr", "max_grad_norm", "adam_eps", "kl_coef", "target_kl"):
        value = getattr(cfg, name)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"config field {name!r} must be a finite number > 0, got {value!r}")
    if cfg.critic_lr is not None:
        if isinstance(cfg.critic_lr, bool) or not isinstance(cfg.critic_lr, (int, float)):
            raise TypeError(f"config field 'critic_lr' must be float or None, got {cfg.critic_lr!r}")
        if not cfg.critic_lr > 0:
            raise ValueError(f"config field 'critic_lr' must be > 0 or None, got {cfg.critic_lr!r}")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"config field {name!r} must be in [0, 1], got {getattr(cfg, name)!r}")
    if not 0.0 < cfg.clip_eps < 1.0:
        raise ValueError(f"config field 'clip_eps' must be in (0, 1), got {cfg.clip_eps!r}")
    for name in ("entropy_coef", "value_coef", "huber_delta"):
        value = getattr(cfg, name)
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"config field {name!r} must be a finite number >= 0, got {value!r}")
    if not -5.0 <= cfg.log_std_init <= 2.0:
        raise ValueError(f"config field 'log_std_init' must be in [-5, 2], got {cfg.log_std_init!r}")
    if not isinstance(cfg.hidden_sizes, (list, tuple)) or not cfg.hidden_sizes or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in cfg.hidden_sizes
    ):
        raise ValueError(f"config field 'hidden_sizes' must be a non-empty list of positive ints, got {cfg.hidden_sizes!r}")
    cfg.hidden_sizes = list(cfg.hidden_sizes)
    if cfg.image_layout not in ("auto", "hwc", "chw"):
        raise ValueError(f"config field 'image_layout' must be one of ['auto', 'hwc', 'chw'], got {cfg.image_layout!r}")
    layer_fields = ("cnn_channels", "cnn_kernels", "cnn_strides")
    unset = [name for name in layer_fields if getattr(cfg, name) is None]
    if unset and len(unset) < 3:
        raise ValueError(f"config fields 'cnn_channels', 'cnn_kernels' and 'cnn_strides' describe one conv stack: set "
                         f"all three, or none to let the image size choose; {unset} not set")
    for name in layer_fields if not unset else ():
        value = getattr(cfg, name)
        if not isinstance(value, (list, tuple)) or not value or not all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value):
            raise ValueError(f"config field {name!r} must be a non-empty list of positive ints, got {value!r}")
        setattr(cfg, name, list(value))
    if not unset and not len(cfg.cnn_channels) == len(cfg.cnn_kernels) == len(cfg.cnn_strides):
        raise ValueError(f"config fields 'cnn_channels', 'cnn_kernels' and 'cnn_strides' give one entry per conv layer, "
                         f"so they must have the same length; got {cfg.cnn_channels}, {cfg.cnn_kernels}, "
                         f"{cfg.cnn_strides}")
    if cfg.cnn_features is not None:
        _check_type(cfg, "cnn_features", int)
        if cfg.cnn_features < 1:
            raise ValueError(f"config field 'cnn_features' must be an integer >= 1 or None, got {cfg.cnn_features!r}")
    if not isinstance(cfg.env, str) or not cfg.env:
        raise ValueError(f"config field 'env' must be a registry name or 'module:callable', got {cfg.env!r}")
    if not isinstance(cfg.env_kwargs, dict):
        raise TypeError(f"config field 'env_kwargs' must be a mapping, got {cfg.env_kwargs!r}")
    cfg.env_kwargs = dict(cfg.env_kwargs)
    if not isinstance(cfg.algorithm_options, dict):
        raise TypeError(f"config field 'algorithm_options' must be a mapping, got {cfg.algorithm_options!r}")
    cfg.algorithm_options = dict(cfg.algorithm_options)
    if cfg.popart and cfg.value_norm:
        raise ValueError("config fields 'popart' and 'value_norm' are mutually exclusive (PopArt is ValueNorm plus "
                         "a rescaled value head); set value_norm=false to use popart=true")
    units = minibatch_units(cfg)
    if cfg.num_minibatches > units:
        what = "num_envs*ceil(rollout_length/chunk_length)" if cfg.recurrent else "num_envs*rollout_length"
        raise ValueError(f"config field 'num_minibatches' ({cfg.num_minibatches}) must be <= {what} ({units})")
