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
from typing import Any, Dict, NamedTuple, Optional

import torch

from . import loss as L
from .buffer import HIDDEN_KEYS, RolloutBuffer
from .config import Config
from .distributed import Sync
from .networks import Actor, Critic, EncoderSettings
from .normalize import RunningMeanStd, popart_rescale
from .returns import gae
from .spaces import TeamSpec

# the buffer fields one PPO minibatch needs (network inputs are added per update)
UPDATE_KEYS = ("alive", "action_mask", "actions", "logp", "advantages", "returns", "old_values", "resets")


class LossTerms(NamedTuple):
    """One minibatch's loss: ``total`` to minimise, its parts, and detached diagnostics."""
    total: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


class PPOLearner:
    """Owns ``actor``, ``critic``, ``actor_opt``, ``critic_opt``, ``value_norm`` and ``kl_coef``.

    ``sync`` (:class:`mappo.distributed.Sync`) makes every statistic and gradient agree across
    ranks; in one process it changes nothing.
    """

    def __init__(self, spec: TeamSpec, cfg: Config, device: torch.device, sync: Optional[Sync] = None):
        self.cfg, self.spec, self.device = cfg, spec, device
        self.sync = sync if sync is not None else Sync()
        shared = cfg.parameter_sharing == "shared"
        encoding = EncoderSettings(cfg.encoder, tuple(cfg.cnn_channels), tuple(cfg.cnn_kernels),
                                   tuple(cfg.cnn_strides), cfg.cnn_features)
        self.actor = Actor(spec, shared, cfg.hidden_sizes, cfg.activation, cfg.input_norm, cfg.recurrent,
                           cfg.log_std_init, encoding).to(device)
        self.critic = Critic(spec, cfg.critic_input, shared, cfg.hidden_sizes, cfg.activation, cfg.input_norm,
                             cfg.recurrent, encoding).to(device)
        # separate optimisers: the critic's larger gradients never scale the actor's step
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, eps=cfg.adam_eps, foreach=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr, eps=cfg.adam_eps, foreach=True)
        # ValueNorm and PopArt share the running statistics; PopArt also rescales the value head
        self.normalize_values = cfg.value_norm or cfg.popart
        self.value_norm = RunningMeanStd().to(device)
        self.kl_coef = cfg.kl_coef
        # one set of weights on every rank
        self.sync.broadcast(self.actor)
        self.sync.broadcast(self.critic)

    @property
    def critic_lr(self) -> float:
        return self.cfg.critic_lr or self.cfg.lr

    def raw(self, v: torch.Tensor) -> torch.Tensor:
        """Critic output -> raw return units."""
        return self.value_norm.denormalize(v) if self.normalize_values else v

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
        ts, es = torch.nonzero(buf.truncated.any(-1), as_tuple=True)
        if len(ts):
            x = critic.inputs(buf.final_obs[ts, es], buf.final_state[ts, es], buf.alive[ts, es])
            final_v = self.raw(critic.next_values(x, out.feats[ts, es]))
            following[ts, es] = torch.where(buf.truncated[ts, es], final_v, following[ts, es])
        buf.next_values.copy_(following)
        return critic_h

    @torch.no_grad()
    def targets(self, buf: RolloutBuffer) -> float:
        """GAE advantages (standardised over the whole rollout of all ranks, as on-policy does)
        and value targets (in ValueNorm units when it is on) into ``buf``; returns the explained
        variance of the values before the update."""
        cfg = self.cfg
        alive = buf.alive
        adv, ret = gae(buf.reward, buf.values, buf.next_values, buf.terminated, buf.truncated, alive,
                       cfg.gamma, cfg.gae_lambda)
        explained_var = L.explained_variance(buf.values, ret, alive)
        if cfg.normalize_advantages:
            n, mean, var = self.sync.moments(adv, alive)
            std = (var * n / max(n - 1.0, 1.0)).sqrt().to(adv.dtype)  # the unbiased std
            adv = (adv - mean.to(adv.dtype)) / (std + 1e-8)
        buf.advantages.copy_(adv * alive)
        if self.normalize_values:
            old_mean, old_std = self.value_norm.mean.clone(), self.value_norm.std()
            self.value_norm.update_moments(*self.sync.moments(ret, alive))  # every rank folds in the same batch
            if cfg.popart:  # keep the critic's raw-unit outputs unchanged under the new statistics
                head = self.critic.net.head
                popart_rescale(head.weight, head.bias, old_mean, old_std, self.value_norm.mean, self.value_norm.std())
                # the rescaled head now outputs the old raw values in the new units: clip around those
                buf.old_values.copy_(self.value_norm.normalize(buf.values))
            # Plain ValueNorm leaves the critic's output where it was, so the clipping window stays
            # centred on the stored output (buf.old_values), as on-policy's r_mappo.py centres it on
            # value_preds.  Re-normalising buf.values with the new statistics instead would move the
            # window off the output: 99% of samples started outside it on simple_spread.
            buf.returns.copy_(self.value_norm.normalize(ret))
        else:
            buf.returns.copy_(ret)
        return explained_var

    def loss(self, mb: Dict[str, torch.Tensor]) -> LossTerms:
        """The PPO loss of one minibatch.

        ``mb`` holds ``actor_in`` / ``critic_in`` (network inputs, :meth:`Actor.inputs` and
        :meth:`Critic.inputs`), or, for a network with a CNN encoder, ``obs`` (and ``state``) to
        build them from here, and the :data:`UPDATE_KEYS` fields, each ``[L, B, A, ...]`` (L = 1
        for feed-forward), plus ``actor_h`` / ``critic_h [B, A, H]`` when recurrent.
        """
        cfg = self.cfg
        mask = mb["alive"]
        actor_in = mb["actor_in"] if "actor_in" in mb else self.actor.inputs(mb["obs"])
        critic_in = mb["critic_in"] if "critic_in" in mb else self.critic.inputs(mb["obs"], mb["state"], mask)
        dist, _ = self.actor.dist(actor_in, mb["action_mask"], mb.get("actor_h"), mb["resets"])
        entropy = L.masked_mean(dist.entropy(), mask)
        p_loss, info = L.policy_loss(dist.log_prob(mb["actions"]), mb["logp"], mb["advantages"], mask,
                                     cfg.objective, cfg.clip_eps, self.kl_coef)
        values = self.critic.values(critic_in, mb.get("critic_h"), mb["resets"]).values
        v_loss = L.value_loss(values, mb["old_values"], mb["returns"], mask, cfg.clip_eps if cfg.value_clip else None,
                              cfg.huber_delta)
        total = p_loss - cfg.entropy_coef * entropy + cfg.value_coef * v_loss
        return LossTerms(total, p_loss, v_loss, entropy, info["approx_kl"], info["clip_fraction"])

    def gradients(self, total: torch.Tensor) -> None:
        """Backward into fresh ``.grad``s, averaged over ranks."""
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        total.backward()
        self.sync.average_gradients(list(self.actor.parameters()) + list(self.critic.parameters()))

    def step(self, total: torch.Tensor, terms: Optional[LossTerms] = None) -> None:
        """One optimiser step on a loss: gradients (averaged over ranks), each network's grad norm
        clipped, then both optimisers step.

        A non-finite loss or gradient norm raises ``FloatingPointError`` naming it, before any
        weight changes: one NaN step would make every parameter NaN.  ``terms`` (the loss's parts)
        lets the error name the part that went bad."""
        if not torch.isfinite(total):
            parts = {k: getattr(terms, k).item() for k in ("policy_loss", "value_loss", "entropy")} if terms else {}
            bad = [k for k, v in parts.items() if not math.isfinite(v)] or ["total loss"]
            raise FloatingPointError(f"non-finite {', '.join(bad)} ({parts or float(total)}): stopping before the "
                                     f"optimiser step; the weights and the last checkpoint are unchanged. Check the "
                                     f"env's observations and rewards, and the learning rate")
        self.gradients(total)
        for name, net in (("actor", self.actor), ("critic", self.critic)):
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), self.cfg.max_grad_norm)
            if not torch.isfinite(norm):
                raise FloatingPointError(f"non-finite {name} gradient norm: stopping before the optimiser step; the "
                                         f"weights and the last checkpoint are unchanged")
        self.actor_opt.step()
        self.critic_opt.step()

    def update(self, buf: RolloutBuffer) -> Dict[str, float]:
        """:meth:`targets`, then ``ppo_epochs`` passes of minibatch steps; adapts beta for the KL
        objectives.  Returns mean diagnostics: policy_loss, value_loss, entropy, clip_fraction,
        approx_kl (over the whole rollout, after the update), kl_coef (the beta used) and
        explained_variance."""
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
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0}
        count = 0
        for _ in range(cfg.ppo_epochs):
            for mb in buf.minibatches(cfg.num_minibatches, keys, chunk, extra=inputs):
                terms = self.loss(mb)
                self.step(terms.total, terms)
                for key in sums:
                    sums[key] += getattr(terms, key).item()
                count += 1
        approx_kl = self._rollout_kl(buf, inputs.get("actor_in"))
        stats = {k: v / count for k, v in sums.items()}
        stats.update(approx_kl=approx_kl, kl_coef=self.kl_coef, explained_variance=explained_var)
        if cfg.objective in ("kl", "clip_kl"):
            self.kl_coef = L.update_kl_coef(self.kl_coef, approx_kl, cfg.target_kl)
        return stats

    @torch.no_grad()
    def _rollout_kl(self, buf: RolloutBuffer, actor_in: Optional[torch.Tensor]) -> float:
        """KL[pi_old, pi_new] over the whole rollout (and all ranks), after the update (PPO Sec. 4);
        a recurrent actor replays the rollout from its first step's stored state.  ``actor_in``:
        the prepared inputs, or None to encode ``buf.obs`` here."""
        first_h = buf.actor_h[0] if self.cfg.recurrent else None
        if actor_in is None:
            actor_in = self.actor.inputs(buf.obs)
        dist, _ = self.actor.dist(actor_in, buf.action_mask, first_h, buf.resets)
        _, info = L.policy_loss(dist.log_prob(buf.actions), buf.logp, buf.advantages, buf.alive, self.cfg.objective,
                                self.cfg.clip_eps, 0.0)
        return self.sync.weighted_mean(float(info["approx_kl"]), float(buf.alive.sum()), self.device)

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "value_norm": self.value_norm.state_dict(), "kl_coef": float(self.kl_coef)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.value_norm.load_state_dict(state["value_norm"])
        self.kl_coef = state["kl_coef"]


# name -> learner class; Config.algorithm picks one
LEARNERS = {"ppo": PPOLearner}
