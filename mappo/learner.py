"""The PPO learner (MAPPO and IPPO): the networks, their update units, and the update (PPO,
arXiv 1707.06347, with the MAPPO practices of Yu et al. 2022).

    learner = PPOLearner(spec, cfg, device)
    learner.compute_values(buffer, ...)    # after a rollout: V(s_t), V(s_t+1), the clip centre
    stats = learner.update(buffer)         # targets(buffer), then epochs of learn(minibatch)

It has the surface of :class:`mappo.algorithm.Learner`; a variant of the PPO family (HAPPO,
mappo/happo.py) reuses its parts: :meth:`targets`, :meth:`loss` (of chosen units), :meth:`learn`
(one step of chosen units) and :meth:`run_epochs`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch

from . import loss as L
from .algorithm import UpdateUnit, check_options, split_packed_optimizer
from .buffer import HIDDEN_KEYS, RolloutBuffer
from .config import Config, auto_minibatches
from .distributed import Sync
from .groups import Groups, resolve_groups
from .networks import Actor, Critic, EncoderSettings, parameters_by_unit
from .normalize import RunningMeanStd, popart_rescale
from .returns import gae, team_streams
from .spaces import TeamSpec

# the buffer fields one PPO minibatch needs (network inputs are added per update)
UPDATE_KEYS = ("alive", "action_mask", "actions", "logp", "advantages", "returns", "old_values", "resets")
# the per-unit diagnostics of a minibatch: an actor unit's, then a critic unit's
ACTOR_TERMS = ("policy_loss", "entropy", "approx_kl", "clip_fraction")
CRITIC_TERMS = ("value_loss",)


class LossTerms(NamedTuple):
    """One minibatch's loss: ``total`` to minimise, its parts, and detached diagnostics.

    ``total`` sums the units' losses; ``policy_loss``, ``entropy``, ``approx_kl`` and
    ``clip_fraction`` are means over the actor units in the loss, ``value_loss`` over the critic
    units (0 without the critic); ``parts`` holds each unit's own, as ``"<unit>/<term>"``."""
    total: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor
    parts: Dict[str, torch.Tensor]


class EpochTally:
    """The update's diagnostics over its minibatches: the mean of every :class:`LossTerms` part,
    and each actor unit's mean approx_kl over the last epoch's minibatches."""

    def __init__(self) -> None:
        self.sums: Dict[str, float] = {}
        self.last_kl: Dict[str, float] = {}
        self.count = self.last_count = 0

    def add(self, terms: LossTerms, last_epoch: bool) -> None:
        for key, value in terms.parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.item()
        self.count += 1
        if last_epoch:
            for key, value in terms.parts.items():
                if key.endswith("/approx_kl"):
                    unit = key[:-len("/approx_kl")]
                    self.last_kl[unit] = self.last_kl.get(unit, 0.0) + value.item()
            self.last_count += 1

    def result(self) -> Tuple[Dict[str, float], Dict[str, float]]:
        return ({k: v / self.count for k, v in self.sums.items()},
                {k: v / self.last_count for k, v in self.last_kl.items()})


class PPOLearner:
    """Owns ``actor``, ``critic`` and their update units: ``actor_units`` (one per agent group: its
    actor weight sets, Adam, gradient clip and KL beta) and ``critic_units`` (one per group: its
    critic weight sets, Adam, gradient clip and value normaliser).

    ``sync`` (:class:`mappo.distributed.Sync`) makes every statistic and gradient agree across
    ranks; in one process it changes nothing.

    Agent groups (``cfg.groups``): each group has its own weight sets in the actor and the critic
    (``networks.sharing``), its own units, advantage statistics and loss (a mean over its own
    agents).  The weight sets are parameters of their own (``networks.WeightSets``), so one backward
    pass gives each unit its own gradient; each unit clips it and steps its own Adam.  The default,
    one group, is one unit of each.
    """

    # config fields that shape the networks or the optimiser state: a loaded run keeps them
    shaping_fields: Tuple[str, ...] = (
        "parameter_sharing", "groups", "hidden_sizes", "activation", "recurrent", "critic_input", "critic_pass",
        "input_norm", "popart", "value_norm", "encoder", "cnn_channels", "cnn_kernels", "cnn_strides", "cnn_features")

    @dataclass(frozen=True)
    class Options:
        """The config field ``algorithm_options`` of ``algorithm=ppo``: none."""

    @classmethod
    def options(cls, cfg: Config) -> Any:
        """``cfg.algorithm_options`` as :attr:`Options`; a key it does not take is an error naming it."""
        return check_options(cfg.algorithm, cls.Options, cfg.algorithm_options)

    def __init__(self, spec: TeamSpec, cfg: Config, device: torch.device, sync: Optional[Sync] = None):
        self.cfg, self.spec, self.device = cfg, spec, device
        self.opts = self.options(cfg)
        self.sync = sync if sync is not None else Sync()
        shared = cfg.parameter_sharing == "shared"
        self.groups = resolve_groups(spec.names, cfg.groups)
        self.units = self.actor_unit_layout(self.groups)
        # [G, A] / [U, A] bool: which agent slots form each group / actor unit
        self.group_mask = _membership(self.groups, device)
        self.unit_mask = _membership(self.units, device)
        self.group_index = torch.tensor(self.groups.of, device=device)  # [A]
        layers = [None if v is None else tuple(v) for v in (cfg.cnn_channels, cfg.cnn_kernels, cfg.cnn_strides)]
        encoding = EncoderSettings(cfg.encoder, *layers, cfg.cnn_features)
        group_args = dict(group_of=self.groups.of, group_names=self.groups.names)
        self.actor = Actor(spec, shared, cfg.hidden_sizes, cfg.activation, cfg.input_norm, cfg.recurrent,
                           cfg.log_std_init, encoding, **group_args, unit_of=self.units.of).to(device)
        self.critic = Critic(spec, cfg.critic_input, shared, cfg.hidden_sizes, cfg.activation, cfg.input_norm,
                             cfg.recurrent, encoding, **group_args, per_step=cfg.critic_pass == "step").to(device)
        # separate optimisers for actor and critic: the critic's larger gradients never scale the actor's step
        self.actor_units = [UpdateUnit(name, params, cfg.lr, cfg.adam_eps, cfg.max_grad_norm, kl_coef=cfg.kl_coef)
                            for name, params in zip(self.units.names, parameters_by_unit(self.actor, self.units.count))]
        # ValueNorm and PopArt share the running statistics; PopArt also rescales the value head
        self.normalize_values = cfg.value_norm or cfg.popart
        self.critic_units = [UpdateUnit(name, params, self.critic_lr, cfg.adam_eps, cfg.max_grad_norm,
                                        value_norm=RunningMeanStd().to(device))
                             for name, params in zip(self.groups.names, parameters_by_unit(self.critic, self.groups.count))]
        # config field ``compile``: the loss, forward and backward, through torch.compile
        self._loss = torch.compile(self.loss) if cfg.compile else self.loss
        # one set of weights on every rank
        self.sync.broadcast(self.actor)
        self.sync.broadcast(self.critic)

    def actor_unit_layout(self, groups: Groups) -> Groups:
        """The actor's update units over the agent slots: here one per agent group."""
        return groups

    @property
    def critic_lr(self) -> float:
        return self.cfg.critic_lr or self.cfg.lr

    @property
    def learning_rate(self) -> float:
        """The actor's learning rate now (after the schedule)."""
        return self.actor_units[0].optimizer.param_groups[0]["lr"]

    @property
    def value_norms(self) -> List[RunningMeanStd]:
        """Each group's value normaliser."""
        return [u.value_norm for u in self.critic_units]

    @property
    def value_norm(self) -> RunningMeanStd:
        """The first group's value normaliser (the only one without groups)."""
        return self.critic_units[0].value_norm

    @property
    def kl_coefs(self) -> List[float]:
        """Each actor unit's KL beta."""
        return [u.kl_coef for u in self.actor_units]

    @kl_coefs.setter
    def kl_coefs(self, betas: Sequence[float]) -> None:
        for unit, beta in zip(self.actor_units, betas):
            unit.kl_coef = float(beta)

    @property
    def kl_coef(self) -> float:
        """The first actor unit's KL beta (the only one without groups)."""
        return self.actor_units[0].kl_coef

    def _value_stats(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Each agent slot's value-normaliser mean and std ``[A]``: its group's."""
        norms = self.value_norms
        return (torch.stack([n.mean for n in norms])[self.group_index],
                torch.stack([n.std() for n in norms])[self.group_index])

    def raw(self, v: torch.Tensor) -> torch.Tensor:
        """Critic output ``[..., A]`` -> raw return units."""
        if not self.normalize_values:
            return v
        mean, std = self._value_stats()
        return (v * std + mean).to(v.dtype)

    def normalized(self, v: torch.Tensor) -> torch.Tensor:
        """Raw return units ``[..., A]`` -> the critic's (normalised) units."""
        mean, std = self._value_stats()
        return ((v - mean) / std).to(v.dtype)

    def set_lr_fraction(self, frac: float) -> None:
        """Every unit's learning rate at ``frac`` of its base (the linear schedule)."""
        for unit in self.actor_units + self.critic_units:
            unit.set_lr_fraction(frac)

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def compute_values(self, buf: RolloutBuffer, critic_h: torch.Tensor, next_obs: torch.Tensor,
                       next_state: torch.Tensor, next_alive: torch.Tensor,
                       next_resets: torch.Tensor) -> torch.Tensor:
        """Fill ``values``, ``old_values`` and ``next_values`` (and ``critic_h``) of a filled rollout
        in one batched critic pass; returns the critic's recurrent state after the rollout.

        One pass after the rollout rather than one small critic call per step: per-step
        inference is overhead-bound on the CPU, and on a GPU it is T times fewer kernel
        launches.  A recurrent critic is unrolled over the T steps from ``critic_h [E, A, H]``
        (carried over from the last rollout), with the same resets the actor saw.  ``next_*``
        are the envs' current fields (``[E, A, O]``, ``[E, S]``, ``[E, A]``), after the last step.
        """
        critic = self.critic
        out = critic.values(critic.inputs(buf.obs, buf.state, buf.alive), critic_h, buf.resets)
        buf.old_values.copy_(out.values)  # the value-clipping centre, in the critic's own units
        buf.values.copy_(self.raw(out.values))
        if critic.recurrent:
            buf.critic_h.copy_(out.h_before)
            critic_h = out.h_last
        # V(obs[t+1]): the next stored step, and for the last step the env's current observation
        last_v = self.raw(critic.next_values(critic.inputs(next_obs, next_state, next_alive), out.feats[-1],
                                             next_resets))
        following = torch.cat([buf.values[1:], last_v.unsqueeze(0)], dim=0)
        # time limit: bootstrap from V(final observation), which continues the ended episode
        truncated = self.streams(buf)[2]
        ts, es = torch.nonzero(truncated.any(-1), as_tuple=True)
        if len(ts):
            x = critic.inputs(buf.final_obs[ts, es], buf.final_state[ts, es], buf.alive[ts, es])
            final_v = self.raw(critic.next_values(x, out.feats[ts, es]))
            following[ts, es] = torch.where(truncated[ts, es], final_v, following[ts, es])
        buf.next_values.copy_(following)
        return critic_h

    def streams(self, buf: RolloutBuffer) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reward, terminated, truncated, alive)`` ``[T, E, A]`` as :func:`gae` reads them: the
        env's own, or with ``dead_agents="team"`` each slot's return running on to the episode's
        end (:func:`team_streams`), its steps after death counted (alive all true)."""
        if self.cfg.dead_agents == "leave":
            return buf.reward, buf.terminated, buf.truncated, buf.alive
        streams = team_streams(buf.reward, buf.terminated, buf.truncated, buf.alive, buf.env_done, self.group_mask)
        return (*streams, torch.ones_like(buf.alive))

    @torch.no_grad()
    def targets(self, buf: RolloutBuffer) -> float:
        """GAE advantages (standardised over the whole rollout of all ranks, as on-policy does)
        and value targets (in ValueNorm units when it is on) into ``buf``; returns the explained
        variance of the values before the update."""
        cfg = self.cfg
        alive = buf.alive
        reward, terminated, truncated, counted = self.streams(buf)
        adv, ret = gae(reward, buf.values, buf.next_values, terminated, truncated, counted, cfg.gamma, cfg.gae_lambda)
        explained_var = L.explained_variance(buf.values, ret, alive)
        groups = range(self.groups.count)
        if cfg.normalize_advantages:  # per group: one team's reward scale never rescales another's advantages
            out = torch.zeros_like(adv)
            for g in groups:
                members = alive & self.group_mask[g]
                n, mean, var = self.sync.moments(adv, members)
                std = (var * n / max(n - 1.0, 1.0)).sqrt().to(adv.dtype)  # the unbiased std
                out = torch.where(members, (adv - mean.to(adv.dtype)) / (std + 1e-8), out)
            adv = out
        buf.advantages.copy_(adv * alive)
        if self.normalize_values:
            head = self.critic.net.head
            for g, norm in zip(groups, self.value_norms):
                old_mean, old_std = norm.mean.clone(), norm.std()
                norm.update_moments(*self.sync.moments(ret, alive & self.group_mask[g]))  # every rank: same batch
                if cfg.popart:  # keep the critic's raw-unit outputs unchanged under the new statistics
                    for j in self.critic.head_sets(g):
                        popart_rescale(head.weight[j].data, head.bias[j].data, old_mean, old_std, norm.mean, norm.std())
            if cfg.popart:
                # the rescaled head now outputs the old raw values in the new units: clip around those
                buf.old_values.copy_(self.normalized(buf.values))
            # Plain ValueNorm leaves the critic's output where it was, so the clipping window stays
            # centred on the stored output (buf.old_values), as on-policy's r_mappo.py centres it on
            # value_preds.  Re-normalising buf.values with the new statistics instead would move the
            # window off the output: 99% of samples started outside it on simple_spread.
            buf.returns.copy_(self.normalized(ret))
        else:
            buf.returns.copy_(ret)
        return explained_var

    def loss(self, mb: Dict[str, torch.Tensor], counts: Optional[Tuple[List[torch.Tensor], List[torch.Tensor]]] = None,
             units: Optional[Sequence[int]] = None, critic: bool = True,
             kl_coefs: Optional[Sequence[Any]] = None) -> LossTerms:
        """The PPO loss of one minibatch: the clipped (or KL-penalised) surrogate and entropy of each
        actor unit in ``units`` (default all), each a mean over its own agents, plus the value loss
        of each critic unit when ``critic``.

        ``mb`` holds ``actor_in`` / ``critic_in`` (network inputs, :meth:`Actor.inputs` and
        :meth:`Critic.inputs`), or, for a network with a CNN encoder, ``obs`` (and ``state``) to
        build them from here, and the :data:`UPDATE_KEYS` fields, each ``[L, B, A, ...]`` (L = 1
        for feed-forward), plus ``actor_h`` / ``critic_h [B, A, H]`` when recurrent.  An optional
        ``factor [L, B, A]`` multiplies each sample's surrogate (HAPPO's product of the earlier
        units' ratios).  ``counts`` (per actor unit, per critic unit): the counted rows of the
        whole minibatch when ``mb`` is a piece of it (see :meth:`learn`); the piece's terms are
        then its share of the minibatch's.  ``kl_coefs``: each actor unit's KL beta in place of
        the unit's own (mappo/seeds.py passes each seed's, batched).
        """
        cfg = self.cfg
        mask = mb["alive"]
        units = range(len(self.actor_units)) if units is None else units
        actor_in = mb["actor_in"] if "actor_in" in mb else self.actor.inputs(mb["obs"])
        dist, _ = self.actor.dist(actor_in, mb["action_mask"], mb.get("actor_h"), mb["resets"])
        new_logp, entropies = dist.log_prob(mb["actions"]), dist.entropy()
        parts: Dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=mask.device)
        for u in units:
            unit = self.actor_units[u]
            members = mask & self.unit_mask[u]
            count = None if counts is None else counts[0][u]
            entropy = L.masked_mean(entropies, members, count)
            beta = unit.kl_coef if kl_coefs is None else kl_coefs[u]
            p_loss, info = L.policy_loss(new_logp, mb["logp"], mb["advantages"], members, cfg.objective,
                                         cfg.clip_eps, beta, count, mb.get("factor"))
            total = total + p_loss - cfg.entropy_coef * entropy
            for key, value in zip(ACTOR_TERMS, (p_loss, entropy, info["approx_kl"], info["clip_fraction"])):
                parts[f"{unit.name}/{key}"] = value
        if critic:
            critic_in = mb["critic_in"] if "critic_in" in mb else self.critic.inputs(mb["obs"], mb["state"], mask)
            values = self.critic.values(critic_in, mb.get("critic_h"), mb["resets"]).values
            for g, unit in enumerate(self.critic_units):
                count = None if counts is None else counts[1][g]
                v_loss = L.value_loss(values, mb["old_values"], mb["returns"], mask & self.group_mask[g],
                                      cfg.clip_eps if cfg.value_clip else None, cfg.huber_delta, count)
                total = total + cfg.value_coef * v_loss
                parts[f"{unit.name}/value_loss"] = v_loss
        names = [self.actor_units[u].name for u in units]
        mean = lambda key, who: (torch.stack([parts[f"{n}/{key}"] for n in who]).mean() if who  # noqa: E731
                                 else torch.zeros((), device=mask.device))
        critic_names = [u.name for u in self.critic_units] if critic else []
        return LossTerms(total, mean("policy_loss", names), mean("value_loss", critic_names), mean("entropy", names),
                         mean("approx_kl", names), mean("clip_fraction", names), parts)

    def _params(self) -> List[torch.nn.Parameter]:
        return list(self.actor.parameters()) + list(self.critic.parameters())

    def _zero_grad(self) -> None:
        for unit in self.actor_units + self.critic_units:
            unit.zero_grad()

    def gradients(self, total: torch.Tensor, retain_graph: bool = False) -> None:
        """Backward into fresh ``.grad``s, averaged over ranks."""
        self._zero_grad()
        total.backward(retain_graph=retain_graph)
        self.sync.average_gradients(self._params())

    @staticmethod
    def _check_finite(total: torch.Tensor, terms: Optional[LossTerms]) -> None:
        """A non-finite loss raises ``FloatingPointError`` naming the part that went bad, before
        any weight changes: one NaN step would make every parameter NaN."""
        if torch.isfinite(total):
            return
        parts = {k: getattr(terms, k).item() for k in ("policy_loss", "value_loss", "entropy")} if terms else {}
        bad = [k for k, v in parts.items() if not math.isfinite(v)] or ["total loss"]
        raise FloatingPointError(f"non-finite {', '.join(bad)} ({parts or float(total)}): stopping before the "
                                 f"optimiser step; the weights and the last checkpoint are unchanged. Check the "
                                 f"env's observations and rewards, and the learning rate")

    def _stepped(self, units: Optional[Sequence[int]], critic: bool) -> List[Tuple[UpdateUnit, str]]:
        actor = [self.actor_units[u] for u in (range(len(self.actor_units)) if units is None else units)]
        return [(u, "actor") for u in actor] + ([(u, "critic") for u in self.critic_units] if critic else [])

    def _apply(self, stepped: List[Tuple[UpdateUnit, str]]) -> None:
        """The gradients in ``.grad`` averaged over ranks, then each stepped unit clips its own and
        steps its own Adam.  Units not stepped keep their weights and Adam moments."""
        self.sync.average_gradients(self._params())
        for unit, what in stepped:
            unit.clip(what)
        for unit, _ in stepped:
            unit.step()

    def step(self, total: torch.Tensor, terms: Optional[LossTerms] = None, units: Optional[Sequence[int]] = None,
             critic: bool = True) -> None:
        """One optimiser step on a loss: gradients (averaged over ranks), each unit's grad norm
        clipped, then the actor units in ``units`` (default all) and, with ``critic``, the critic
        units step.

        A non-finite loss or gradient norm raises ``FloatingPointError`` naming it, before any
        weight changes; ``terms`` (the loss's parts) lets the error name the part that went bad."""
        self._check_finite(total, terms)
        self._zero_grad()
        total.backward()
        self._apply(self._stepped(units, critic))

    def learn(self, mb: Dict[str, torch.Tensor], units: Optional[Sequence[int]] = None,
              critic: bool = True) -> LossTerms:
        """One optimiser step of the actor units in ``units`` (default all) and, with ``critic``,
        the critic units, on minibatch ``mb``; returns its loss terms (detached).

        The forward and backward passes run on pieces of at most ``cfg.update_rows`` agent rows
        (time x chunks x agents), and their gradients add up.  Every loss is a mean
        over the whole minibatch's counted rows (``counts``), so the pieces' gradients sum to the
        whole minibatch's: the step is the same up to float rounding.  Why: on a CPU the
        activations of a large minibatch (60,000 rows x 256 units is 61 MB per layer) fall out of
        the cache, and the elementwise passes over them (tanh and its backward, the loss) then run
        at memory speed; pieces that stay in cache made a [256, 256] MLP's forward and backward
        1.6x faster on a 2-core Intel Xeon VM, and the whole VMAS navigation update 1.3x (docs/PERFORMANCE.md).
        """
        pieces = self._pieces(mb)
        counts = self.counted_rows(mb["alive"]) if len(pieces) > 1 else None
        self._zero_grad()
        total: Optional[LossTerms] = None
        for piece in pieces:
            terms = self._loss(piece, counts, units, critic)
            if len(pieces) == 1:  # before the backward pass: a NaN loss names its part
                self._check_finite(terms.total, terms)
            terms.total.backward()
            total = _detached(terms) if total is None else add_terms(total, _detached(terms))
        self._check_finite(total.total, total)
        self._apply(self._stepped(units, critic))
        return total

    def counted_rows(self, alive: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Each actor unit's and each critic unit's counted rows of a minibatch, ``alive [..., L, B, A]``
        -> per unit ``[...]`` (scalars for one minibatch): what the loss of its pieces divides by."""
        return ([(alive & m).sum((-3, -2, -1)).to(torch.float32) for m in self.unit_mask],
                [(alive & m).sum((-3, -2, -1)).to(torch.float32) for m in self.group_mask])

    @property
    def update_rows(self) -> int:
        """``cfg.update_rows``, with -1 (auto) resolved: pieces whose widest layer holds about 2**19
        activations (2 MB), which stay in a CPU's cache.  On a 2-core AMD EPYC VM a [256, 256] VMAS
        update ran 1.06x faster in pieces of 2,048 rows than of 8,192, while a [64, 64] simple_spread
        update ran about 1.3x slower in pieces of 2,048 than whole."""
        if self.cfg.update_rows >= 0:
            return self.cfg.update_rows
        return max(256, (1 << 19) // max(self.cfg.hidden_sizes))

    def _pieces(self, mb: Dict[str, torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        """``mb`` cut along its chunk axis (dim 1; dim 0 for hidden states) into pieces of at most
        :attr:`update_rows` rows (time x chunks x agents), or ``[mb]`` when it fits (or 0)."""
        alive = mb["alive"]  # [L, B, A]
        L_, B, A = alive.shape
        limit = self.update_rows
        if not limit or L_ * B * A <= limit:
            return [mb]
        per_piece = max(1, limit // (L_ * A))
        bounds = range(0, B, per_piece)
        return [{k: (v[s:s + per_piece] if k in HIDDEN_KEYS else v[:, s:s + per_piece]) for k, v in mb.items()}
                for s in bounds]

    def update(self, buf: RolloutBuffer) -> Dict[str, float]:
        """:meth:`targets`, then ``ppo_epochs`` passes of minibatch steps of every unit together;
        adapts each actor unit's beta for the KL objectives.  Returns mean diagnostics:
        policy_loss, value_loss, entropy, clip_fraction, approx_kl, kl_coef (the beta used) and
        explained_variance, and with several units each unit's as ``<unit>/<term>``.  approx_kl is
        KL[pi_old, pi] over the whole rollout after the update for the KL objectives (beta adapts
        to it), and for "clip" the mean of the last epoch's minibatches, each before its own step."""
        explained_var = self.targets(buf)
        inputs = self.network_inputs(buf)
        stats, last_kl = self.run_epochs(buf, inputs)
        return self.finish_update(buf, inputs, stats, last_kl, explained_var)

    def network_inputs(self, buf: RolloutBuffer) -> Dict[str, torch.Tensor]:
        """Network inputs (normalised features + agent id) are the same in every epoch: built once,
        unless an encoder has weights (a CNN), which must see each minibatch's raw (uint8) frames."""
        inputs = {}
        if not self.actor.encodes:
            inputs["actor_in"] = self.actor.inputs(buf.obs)
        if not self.critic.encodes:
            inputs["critic_in"] = self.critic.inputs(buf.obs, buf.state, buf.alive)
        return inputs

    def epoch_minibatches(self, buf: RolloutBuffer, inputs: Dict[str, torch.Tensor],
                          generator: Optional[torch.Generator] = None) -> Iterator[Tuple[bool, Dict[str, torch.Tensor]]]:
        """The minibatches of ``ppo_epochs`` shuffled passes over ``buf``, each with ``inputs``
        (:meth:`network_inputs`, and any other ``[T, E, A]`` field the loss reads, e.g. HAPPO's
        ``factor``), as ``(in_last_epoch, minibatch)``.  The shuffles draw from ``generator``
        (default torch's global one)."""
        cfg = self.cfg
        raw = ("obs",) * ("actor_in" not in inputs or "critic_in" not in inputs) + ("state",) * ("critic_in" not in inputs)
        keys = UPDATE_KEYS + raw + (HIDDEN_KEYS if cfg.recurrent else ())
        chunk = cfg.chunk_length if cfg.recurrent else 1
        for epoch in range(cfg.ppo_epochs):
            for mb in buf.minibatches(auto_minibatches(cfg, self.spec.cont_dim > 0), keys, chunk, generator, inputs):
                yield epoch == cfg.ppo_epochs - 1, mb

    def run_epochs(self, buf: RolloutBuffer, inputs: Dict[str, torch.Tensor], units: Optional[Sequence[int]] = None,
                   critic: bool = True) -> Tuple[Dict[str, float], Dict[str, float]]:
        """``ppo_epochs`` passes of minibatch steps (:meth:`learn`) of the actor units in ``units``
        (default all) and, with ``critic``, the critic units, over :meth:`epoch_minibatches`.
        Returns :meth:`EpochTally.result`."""
        tally = EpochTally()
        for last, mb in self.epoch_minibatches(buf, inputs):
            tally.add(self.learn(mb, units, critic), last)
        return tally.result()

    def finish_update(self, buf: RolloutBuffer, inputs: Dict[str, torch.Tensor], parts: Dict[str, float],
                      last_kl: Dict[str, float], explained_var: float) -> Dict[str, float]:
        """The update's diagnostics from the units' mean ``parts`` (:meth:`run_epochs`), and each
        actor unit's beta adapted to its KL (PPO Sec. 4) for the KL objectives."""
        cfg = self.cfg
        actor_names = [u.name for u in self.actor_units]
        if cfg.objective in ("kl", "clip_kl"):
            # beta adapts to the KL between the rollout's policy and the updated one (PPO Sec. 4):
            # one more actor pass over the whole rollout
            approx_kl, unit_kl = self._rollout_kl(buf, inputs.get("actor_in"))
        else:
            # "clip" only logs the KL: the last epoch's minibatches measured it before their own
            # steps, as CleanRL and SB3 log it, which saves that pass (a tenth of a VMAS
            # navigation iteration)
            unit_kl = [last_kl.get(n, 0.0) for n in actor_names]
            approx_kl = sum(unit_kl) / len(unit_kl)
        mean = lambda key, names: sum(parts.get(f"{n}/{key}", 0.0) for n in names) / len(names)  # noqa: E731
        stats = {"policy_loss": mean("policy_loss", actor_names),
                 "value_loss": mean("value_loss", [u.name for u in self.critic_units]),
                 "entropy": mean("entropy", actor_names), "clip_fraction": mean("clip_fraction", actor_names),
                 "approx_kl": approx_kl, "kl_coef": self.kl_coef, "explained_variance": explained_var}
        if len(self.actor_units) > 1 or len(self.critic_units) > 1:  # each unit's own, named by it
            stats.update({k: v for k, v in parts.items() if not k.endswith("/approx_kl")})
            stats.update({f"{n}/approx_kl": kl for n, kl in zip(actor_names, unit_kl)})
            stats.update({f"{u.name}/kl_coef": u.kl_coef for u in self.actor_units})
        if cfg.objective in ("kl", "clip_kl"):  # beta per actor unit, from the unit's own KL
            for unit, kl in zip(self.actor_units, unit_kl):
                unit.kl_coef = L.update_kl_coef(unit.kl_coef, kl, cfg.target_kl)
        return stats

    @torch.no_grad()
    def rollout_logp(self, buf: RolloutBuffer, actor_in: Optional[torch.Tensor]) -> torch.Tensor:
        """The current actor's log-probabilities ``[T, E, A]`` of the rollout's actions; a recurrent
        actor replays the rollout from its first step's stored state.  ``actor_in``: the prepared
        inputs, or None to encode ``buf.obs`` here."""
        first_h = buf.actor_h[0] if self.cfg.recurrent else None
        if actor_in is None:
            actor_in = self.actor.inputs(buf.obs)
        dist, _ = self.actor.dist(actor_in, buf.action_mask, first_h, buf.resets)
        return dist.log_prob(buf.actions)

    @torch.no_grad()
    def _rollout_kl(self, buf: RolloutBuffer, actor_in: Optional[torch.Tensor]) -> Tuple[float, List[float]]:
        """KL[pi_old, pi_new] over the whole rollout (and all ranks), after the update (PPO Sec. 4),
        overall and per actor unit."""
        new_logp = self.rollout_logp(buf, actor_in)

        def kl(mask: torch.Tensor) -> float:
            _, info = L.policy_loss(new_logp, buf.logp, buf.advantages, mask, self.cfg.objective, self.cfg.clip_eps, 0.0)
            return self.sync.weighted_mean(float(info["approx_kl"]), float(mask.sum()), self.device)

        return kl(buf.alive), [kl(buf.alive & m) for m in self.unit_mask]

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The networks (each layer's weight sets stacked ``[sets, ...]``) and each unit's state:
        its Adam, its KL beta (actor units) or value normaliser (critic units)."""
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "units": {"actor": [u.state_dict() for u in self.actor_units],
                          "critic": [u.state_dict() for u in self.critic_units]}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """:meth:`state_dict`'s output, or a checkpoint of formats 3 and 4 (one Adam per network over
        packed weight sets, a value normaliser and a beta per group), whose groups were its units."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        units = state.get("units") or _units_from_packed(state, self)
        for kind, mine in (("actor", self.actor_units), ("critic", self.critic_units)):
            saved = units[kind]
            if len(saved) != len(mine):
                raise ValueError(f"the checkpoint has {len(saved)} {kind} update unit(s), this learner {len(mine)} "
                                 f"({[u.name for u in mine]}): it was trained with other agent groups")
            for unit, unit_state in zip(mine, saved):
                unit.load_state_dict(unit_state)


def _membership(groups: Groups, device: torch.device) -> torch.Tensor:
    """``[G, A]`` bool: which agent slots form each group."""
    return torch.tensor([[h == g for h in groups.of] for g in range(groups.count)], device=device)


def _units_from_packed(state: Dict[str, Any], learner: PPOLearner) -> Dict[str, List[Dict[str, Any]]]:
    """A format-3/4 checkpoint's optimiser states, value normalisers and betas as unit states."""
    norms, betas = state["value_norm"], state["kl_coef"]
    norms = norms if isinstance(norms, list) else [norms]
    betas = betas if isinstance(betas, list) else [betas]
    if len(norms) != len(learner.critic_units) or len(betas) != len(learner.actor_units):
        raise ValueError(f"the checkpoint has {len(norms)} agent group(s), this learner {len(learner.critic_units)}")
    actor = split_packed_optimizer(state["actor_opt"], learner.actor, learner.actor_units)
    critic = split_packed_optimizer(state["critic_opt"], learner.critic, learner.critic_units)
    return {"actor": [{"optimizer": o, "kl_coef": b} for o, b in zip(actor, betas)],
            "critic": [{"optimizer": o, "kl_coef": 0.0, "value_norm": n} for o, n in zip(critic, norms)]}


def _detached(terms: LossTerms) -> LossTerms:
    return LossTerms(*(getattr(terms, k).detach() for k in LossTerms._fields[:6]),
                     parts={k: v.detach() for k, v in terms.parts.items()})


def add_terms(a: LossTerms, b: LossTerms) -> LossTerms:
    """Two pieces' (detached) terms summed: each is its share of the minibatch's means."""
    return LossTerms(*(getattr(a, k) + getattr(b, k) for k in LossTerms._fields[:6]),
                     parts={k: a.parts[k] + b.parts[k] for k in a.parts})
