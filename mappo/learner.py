"""The PPO learner: the networks, their optimisers, the value normaliser, the KL coefficient, and
the update (PPO, arXiv 1707.06347, with the MAPPO practices of Yu et al. 2022).

    learner = PPOLearner(spec, cfg, device)
    learner.compute_values(buffer, ...)    # after a rollout: V(s_t), V(s_t+1), the clip centre
    stats = learner.update(buffer)         # targets(buffer), then epochs of loss(mb) + step(loss)

A variant of the PPO family is a new file with a class of the same surface (``compute_values``,
``targets``, ``loss``, ``step``, ``update``, ``state_dict``/``load_state_dict``) plus a
registration in :data:`LEARNERS`; the trainer only calls that surface.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch

from . import loss as L
from .buffer import HIDDEN_KEYS, RolloutBuffer
from .config import Config, auto_minibatches
from .distributed import Sync
from .groups import resolve_groups
from .networks import Actor, Critic, EncoderSettings
from .normalize import RunningMeanStd, popart_rescale
from .returns import gae, team_streams
from .spaces import TeamSpec

# the buffer fields one PPO minibatch needs (network inputs are added per update)
UPDATE_KEYS = ("alive", "action_mask", "actions", "logp", "advantages", "returns", "old_values", "resets")


class LossTerms(NamedTuple):
    """One minibatch's loss: ``total`` to minimise, its parts, and detached diagnostics.  With
    several agent groups, ``total`` is the sum of the groups' losses, the parts are means over
    groups, and ``per_group`` holds each group's own terms."""
    total: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor
    per_group: Optional[List["LossTerms"]] = None


class PPOLearner:
    """Owns ``actor``, ``critic``, ``actor_opt``, ``critic_opt``, ``value_norms`` and ``kl_coefs``.

    ``sync`` (:class:`mappo.distributed.Sync`) makes every statistic and gradient agree across
    ranks; in one process it changes nothing.

    Agent groups (``cfg.groups``): each group has its own weight sets in the actor and
    the critic (``networks.sharing``), its own value normaliser, advantage statistics, KL beta,
    loss (a mean over its own agents) and gradient-norm clip.  Adam is elementwise, so one
    optimiser over disjoint weight sets steps each group exactly as an optimiser of its own would;
    the one thing that could couple groups, the gradient-norm clip, is done per group (one
    backward pass per group).  With one group all of this is the plain MAPPO update.
    """

    def __init__(self, spec: TeamSpec, cfg: Config, device: torch.device, sync: Optional[Sync] = None):
        self.cfg, self.spec, self.device = cfg, spec, device
        self.sync = sync if sync is not None else Sync()
        shared = cfg.parameter_sharing == "shared"
        self.groups = resolve_groups(spec.names, cfg.groups)
        G = self.groups.count
        # [G, A] bool: which agent slots form each group
        self.group_mask = torch.tensor([[h == g for h in self.groups.of] for g in range(G)], device=device)
        self.group_index = torch.tensor(self.groups.of, device=device)  # [A]
        layers = [None if v is None else tuple(v) for v in (cfg.cnn_channels, cfg.cnn_kernels, cfg.cnn_strides)]
        encoding = EncoderSettings(cfg.encoder, *layers, cfg.cnn_features)
        group_args = dict(group_of=self.groups.of, group_names=self.groups.names)
        self.actor = Actor(spec, shared, cfg.hidden_sizes, cfg.activation, cfg.input_norm, cfg.recurrent,
                           cfg.log_std_init, encoding, **group_args).to(device)
        self.critic = Critic(spec, cfg.critic_input, shared, cfg.hidden_sizes, cfg.activation, cfg.input_norm,
                             cfg.recurrent, encoding, **group_args, per_step=cfg.critic_pass == "step").to(device)
        # separate optimisers: the critic's larger gradients never scale the actor's step
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, eps=cfg.adam_eps, foreach=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr, eps=cfg.adam_eps, foreach=True)
        # ValueNorm and PopArt share the running statistics; PopArt also rescales the value head
        self.normalize_values = cfg.value_norm or cfg.popart
        self.value_norms = [RunningMeanStd().to(device) for _ in range(G)]  # one per group
        self.kl_coefs = [float(cfg.kl_coef)] * G  # beta per group
        # config field ``compile``: the loss, forward and backward, through torch.compile
        self._loss = torch.compile(self.loss) if cfg.compile else self.loss
        # one set of weights on every rank
        self.sync.broadcast(self.actor)
        self.sync.broadcast(self.critic)

    @property
    def critic_lr(self) -> float:
        return self.cfg.critic_lr or self.cfg.lr

    @property
    def value_norm(self) -> RunningMeanStd:
        """The value normaliser when there is one group."""
        return self.value_norms[0]

    @property
    def kl_coef(self) -> float:
        """The KL beta when there is one group."""
        return self.kl_coefs[0]

    def _per_agent(self, per_group: torch.Tensor) -> torch.Tensor:
        """``[G]`` -> ``[A]``: each agent slot's group's value."""
        return per_group[self.group_index]

    def _value_stats(self):
        """Each agent slot's value-normaliser mean and std ``[A]`` (scalars with one group)."""
        if len(self.value_norms) == 1:
            return self.value_norm.mean, self.value_norm.std()
        return (self._per_agent(torch.stack([n.mean for n in self.value_norms])),
                self._per_agent(torch.stack([n.std() for n in self.value_norms])))

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
        """Both learning rates at ``frac`` of their base (the linear schedule)."""
        for opt, base in ((self.actor_opt, self.cfg.lr), (self.critic_opt, self.critic_lr)):
            for group in opt.param_groups:
                group["lr"] = base * frac

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
                        popart_rescale(head.weight.data[j], head.bias.data[j], old_mean, old_std, norm.mean, norm.std())
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

    def loss(self, mb: Dict[str, torch.Tensor], counts: Optional[List[torch.Tensor]] = None) -> LossTerms:
        """The PPO loss of one minibatch.

        ``mb`` holds ``actor_in`` / ``critic_in`` (network inputs, :meth:`Actor.inputs` and
        :meth:`Critic.inputs`), or, for a network with a CNN encoder, ``obs`` (and ``state``) to
        build them from here, and the :data:`UPDATE_KEYS` fields, each ``[L, B, A, ...]`` (L = 1
        for feed-forward), plus ``actor_h`` / ``critic_h [B, A, H]`` when recurrent.  ``counts``
        (one per group): the counted rows of the whole minibatch when ``mb`` is a piece of it
        (see :meth:`learn`); the piece's terms are then its share of the minibatch's.
        """
        cfg = self.cfg
        mask = mb["alive"]
        actor_in = mb["actor_in"] if "actor_in" in mb else self.actor.inputs(mb["obs"])
        critic_in = mb["critic_in"] if "critic_in" in mb else self.critic.inputs(mb["obs"], mb["state"], mask)
        dist, _ = self.actor.dist(actor_in, mb["action_mask"], mb.get("actor_h"), mb["resets"])
        new_logp, entropies = dist.log_prob(mb["actions"]), dist.entropy()
        values = self.critic.values(critic_in, mb.get("critic_h"), mb["resets"]).values
        parts = []
        for g in range(self.groups.count):  # each group's loss is a mean over its own agents
            members = self._members(mask, g)
            count = None if counts is None else counts[g]
            entropy = L.masked_mean(entropies, members, count)
            p_loss, info = L.policy_loss(new_logp, mb["logp"], mb["advantages"], members, cfg.objective,
                                         cfg.clip_eps, self.kl_coefs[g], count)
            v_loss = L.value_loss(values, mb["old_values"], mb["returns"], members,
                                  cfg.clip_eps if cfg.value_clip else None, cfg.huber_delta, count)
            total = p_loss - cfg.entropy_coef * entropy + cfg.value_coef * v_loss
            parts.append(LossTerms(total, p_loss, v_loss, entropy, info["approx_kl"], info["clip_fraction"]))
        if len(parts) == 1:
            return parts[0]
        mean = lambda k: torch.stack([getattr(p, k) for p in parts]).mean()  # noqa: E731
        return LossTerms(torch.stack([p.total for p in parts]).sum(), *(mean(k) for k in LossTerms._fields[1:6]),
                         per_group=parts)

    def _members(self, alive: torch.Tensor, g: int) -> torch.Tensor:
        """``alive [..., A]`` restricted to group ``g``'s agent slots (all of them with one group)."""
        return alive if self.groups.count == 1 else alive & self.group_mask[g]

    def _params(self) -> List[torch.nn.Parameter]:
        return list(self.actor.parameters()) + list(self.critic.parameters())

    def gradients(self, total: torch.Tensor, retain_graph: bool = False) -> None:
        """Backward into fresh ``.grad``s, averaged over ranks."""
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        total.backward(retain_graph=retain_graph)
        self.sync.average_gradients(self._params())

    def _clip(self) -> None:
        for name, net in (("actor", self.actor), ("critic", self.critic)):
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), self.cfg.max_grad_norm)
            if not torch.isfinite(norm):
                raise FloatingPointError(f"non-finite {name} gradient norm: stopping before the optimiser step; the "
                                         f"weights and the last checkpoint are unchanged")

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

    def step(self, total: torch.Tensor, terms: Optional[LossTerms] = None) -> None:
        """One optimiser step on a loss: gradients (averaged over ranks), each network's grad norm
        clipped, then both optimisers step.

        A non-finite loss or gradient norm raises ``FloatingPointError`` naming it, before any
        weight changes.  ``terms`` (the loss's parts) lets the error name the part that went bad;
        with several groups its ``per_group`` losses are clipped each on its own."""
        self._check_finite(total, terms)
        groups = terms.per_group if terms is not None and terms.per_group else None
        if groups is None:
            self.gradients(total)
            self._clip()
        else:
            self._apply_group_grads(self._group_backward([part.total for part in groups]))
        self.actor_opt.step()
        self.critic_opt.step()

    def _group_backward(self, losses: List[torch.Tensor], grads: Optional[List[List[Optional[torch.Tensor]]]] = None
                        ) -> List[List[Optional[torch.Tensor]]]:
        """``losses[g]``: group g's loss (of one graph) -> each group's gradient, one list per group
        aligned with :meth:`_params`, added to ``grads`` when given (pieces of one minibatch)."""
        params = self._params()
        grads = grads if grads is not None else [[None] * len(params) for _ in losses]
        for g, loss in enumerate(losses):
            for p in params:
                p.grad = None
            loss.backward(retain_graph=g < len(losses) - 1)
            for j, p in enumerate(params):
                if p.grad is not None:
                    grads[g][j] = p.grad if grads[g][j] is None else grads[g][j].add_(p.grad)
        return grads

    def _apply_group_grads(self, grads: List[List[Optional[torch.Tensor]]]) -> None:
        """Each group's gradient averaged over ranks and clipped on its own, then summed into
        ``.grad`` (weight sets are disjoint, so one group never scales another's step)."""
        params = self._params()
        summed: List[Optional[torch.Tensor]] = [None] * len(params)
        for group in grads:  # the lists' tensors are this step's own: averaged, clipped and summed in place
            for p, g in zip(params, group):
                p.grad = g
            self.sync.average_gradients(params)
            self._clip()
            for j, p in enumerate(params):
                if p.grad is not None:
                    summed[j] = p.grad if summed[j] is None else summed[j].add_(p.grad)
        for p, g in zip(params, summed):
            p.grad = g

    def learn(self, mb: Dict[str, torch.Tensor]) -> LossTerms:
        """One optimiser step on minibatch ``mb``; returns its loss terms (detached).

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
        if len(pieces) == 1:
            terms = self._loss(mb)
            self.step(terms.total, terms)
            return _detached(terms)
        G = self.groups.count
        counts = [self._members(mb["alive"], g).sum().to(torch.float32) for g in range(G)]
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        total: Optional[LossTerms] = None
        grads = None  # several groups: each group's gradient, summed over pieces
        for piece in pieces:
            terms = self._loss(piece, counts)
            if G == 1:  # one group: the pieces' gradients accumulate in .grad
                terms.total.backward()
            else:
                grads = self._group_backward([part.total for part in terms.per_group], grads)
            total = _detached(terms) if total is None else _add(total, _detached(terms))
        self._check_finite(total.total, total)
        if G == 1:
            self.sync.average_gradients(self._params())
            self._clip()
        else:
            self._apply_group_grads(grads)
        self.actor_opt.step()
        self.critic_opt.step()
        return total

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
        """:meth:`targets`, then ``ppo_epochs`` passes of minibatch steps; adapts beta for the KL
        objectives.  Returns mean diagnostics: policy_loss, value_loss, entropy, clip_fraction,
        approx_kl, kl_coef (the beta used) and explained_variance.  approx_kl is KL[pi_old, pi]
        over the whole rollout after the update for the KL objectives (beta adapts to it), and
        for "clip" the mean of the last epoch's minibatches, each before its own step."""
        cfg = self.cfg
        explained_var = self.targets(buf)
        # network inputs (normalised features + agent id) are the same in every epoch: build them once,
        # unless an encoder has weights (a CNN), which must see each minibatch's raw (uint8) frames
        inputs = {}
        if not self.actor.encodes:
            inputs["actor_in"] = self.actor.inputs(buf.obs)
        if not self.critic.encodes:
            inputs["critic_in"] = self.critic.inputs(buf.obs, buf.state, buf.alive)
        raw = ("obs",) * (len(inputs) < 2) + ("state",) * ("critic_in" not in inputs)
        keys = UPDATE_KEYS + raw + (HIDDEN_KEYS if cfg.recurrent else ())
        chunk = cfg.chunk_length if cfg.recurrent else 1
        names = ("policy_loss", "value_loss", "entropy", "clip_fraction")
        several = self.groups.count > 1
        sums = {k: 0.0 for k in names}
        sums.update({f"{g}/{k}": 0.0 for g in self.groups.names for k in names} if several else {})
        count = 0
        last_kl, last_count = [0.0] * (self.groups.count + 1), 0  # the last epoch's minibatch KLs: all, per group
        for epoch in range(cfg.ppo_epochs):
            for mb in buf.minibatches(auto_minibatches(cfg, self.spec.cont_dim > 0), keys, chunk, extra=inputs):
                terms = self.learn(mb)
                for key in names:
                    sums[key] += getattr(terms, key).item()
                    for g, part in zip(self.groups.names, terms.per_group or ()):
                        sums[f"{g}/{key}"] += getattr(part, key).item()
                count += 1
                if epoch == cfg.ppo_epochs - 1:
                    kls = [terms.approx_kl] + [p.approx_kl for p in terms.per_group or (terms,)]
                    last_kl = [s + float(k) for s, k in zip(last_kl, kls)]
                    last_count += 1
        if cfg.objective in ("kl", "clip_kl"):
            # beta adapts to the KL between the rollout's policy and the updated one (PPO Sec. 4):
            # one more actor pass over the whole rollout
            approx_kl, group_kl = self._rollout_kl(buf, inputs.get("actor_in"))
        else:
            # "clip" only logs the KL: the last epoch's minibatches measured it before their own
            # steps, as CleanRL and SB3 log it, which saves that pass (a tenth of a VMAS
            # navigation iteration)
            approx_kl, *group_kl = [k / last_count for k in last_kl]
        stats = {k: v / count for k, v in sums.items()}
        stats.update(approx_kl=approx_kl, kl_coef=self.kl_coef, explained_variance=explained_var)
        if several:
            stats.update({f"{g}/approx_kl": kl for g, kl in zip(self.groups.names, group_kl)})
            stats.update({f"{g}/kl_coef": beta for g, beta in zip(self.groups.names, self.kl_coefs)})
        if cfg.objective in ("kl", "clip_kl"):  # beta per group, from the group's own KL
            self.kl_coefs = [L.update_kl_coef(beta, kl, cfg.target_kl) for beta, kl in zip(self.kl_coefs, group_kl)]
        return stats

    @torch.no_grad()
    def _rollout_kl(self, buf: RolloutBuffer, actor_in: Optional[torch.Tensor]):
        """KL[pi_old, pi_new] over the whole rollout (and all ranks), after the update (PPO Sec. 4),
        and per group (a list); a recurrent actor replays the rollout from its first step's stored
        state.  ``actor_in``: the prepared inputs, or None to encode ``buf.obs`` here."""
        first_h = buf.actor_h[0] if self.cfg.recurrent else None
        if actor_in is None:
            actor_in = self.actor.inputs(buf.obs)
        dist, _ = self.actor.dist(actor_in, buf.action_mask, first_h, buf.resets)
        new_logp = dist.log_prob(buf.actions)

        def kl(mask: torch.Tensor) -> float:
            _, info = L.policy_loss(new_logp, buf.logp, buf.advantages, mask, self.cfg.objective, self.cfg.clip_eps, 0.0)
            return self.sync.weighted_mean(float(info["approx_kl"]), float(mask.sum()), self.device)

        overall = kl(buf.alive)
        if self.groups.count == 1:
            return overall, [overall]
        return overall, [kl(buf.alive & self.group_mask[g]) for g in range(self.groups.count)]

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                # one group: one entry, as checkpoints without groups hold it; several: one entry per group
                "value_norm": self.value_norm.state_dict() if len(self.value_norms) == 1 else
                [n.state_dict() for n in self.value_norms],
                "kl_coef": float(self.kl_coef) if len(self.kl_coefs) == 1 else [float(b) for b in self.kl_coefs]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        norms, betas = state["value_norm"], state["kl_coef"]
        norms = norms if isinstance(norms, list) else [norms]
        betas = betas if isinstance(betas, list) else [betas]
        if len(norms) != len(self.value_norms) or len(betas) != len(self.kl_coefs):
            raise ValueError(f"the checkpoint has {len(norms)} agent group(s), this learner {len(self.value_norms)}")
        for norm, saved in zip(self.value_norms, norms):
            norm.load_state_dict(saved)
        self.kl_coefs = [float(b) for b in betas]


# name -> learner class; Config.algorithm picks one
LEARNERS = {"ppo": PPOLearner}


def _detached(terms: LossTerms) -> LossTerms:
    parts = [_detached(p) for p in terms.per_group] if terms.per_group else None
    return LossTerms(*(getattr(terms, k).detach() for k in LossTerms._fields[:6]), per_group=parts)


def _add(a: LossTerms, b: LossTerms) -> LossTerms:
    """Two pieces' (detached) terms summed: each is its share of the minibatch's means."""
    parts = [_add(x, y) for x, y in zip(a.per_group, b.per_group)] if a.per_group else None
    return LossTerms(*(getattr(a, k) + getattr(b, k) for k in LossTerms._fields[:6]), per_group=parts)
