"""The training loop, top to bottom: collect -> GAE -> PPO update -> log.

    trainer = Trainer(env_fn, Config(...))
    history = trainer.train()                       # one dict per iteration
    stats = trainer.evaluate(episodes=20)
    trainer.save("runs/x/ckpt.pt"); Trainer.load("runs/x/ckpt.pt", env_fn)
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from . import distributed as D
from . import loss as L
from .buffer import HIDDEN_KEYS, RolloutBuffer
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, validate
from .logger import RunLogger
from .networks import Actor, Critic
from .normalize import RunningMeanStd, popart_rescale
from .policy import Policy
from .returns import gae
from .vector import InProcessVectorEnv, make_vector_env, probe

# the buffer fields one PPO minibatch needs
UPDATE_KEYS = ("actor_in", "critic_in", "alive", "action_mask", "actions", "logp", "advantages", "returns",
               "old_values", "resets")


# evaluation envs are seeded away from the training envs' seed
EVAL_SEED_OFFSET = 1_000_003


def recurrent_resets(episode_start: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """``[E, A]``: where a recurrent state restarts, at an episode's first step (``episode_start
    [E]``) and for agents that are gone (``alive [E, A]``)."""
    return episode_start.unsqueeze(-1) | ~alive


def linear_schedule(step: int, total: int) -> float:
    """Fraction of the base learning rate at ``step`` of ``total``: 1 -> 0, linearly."""
    return max(0.0, 1.0 - step / total)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("config field 'device' is 'cuda' but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _StopOnSignal:
    """While active, the first SIGINT/SIGTERM only records the signal (the training loop stops
    after the current iteration and writes a checkpoint); a second SIGINT interrupts at once.
    Handlers can only be set from the main thread; elsewhere this does nothing."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.previous: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nreceived {signal.Signals(signum).name}: stopping after this iteration and saving a checkpoint",
              flush=True)

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, env_fn: Callable[[], Any], cfg: Optional[Config] = None):
        cfg = cfg if cfg is not None else Config()
        if not isinstance(cfg, Config):
            raise TypeError(f"cfg must be a mappo.Config, got {type(cfg).__name__}")
        validate(cfg)  # before any env is built
        if not callable(env_fn):
            raise TypeError(f"env_fn must be a zero-argument callable returning a ParallelEnv, got {env_fn!r}")
        self.cfg, self.env_fn = cfg, env_fn
        # under torchrun: join the process group; each rank takes GPU LOCAL_RANK (issue 6)
        self.dist, self.device = D.setup(resolve_device(cfg.device))
        # rank r's envs are numbered from r * num_envs, as if one process ran them all
        self.env_index_offset = self.dist.rank * cfg.num_envs
        seed_everything(cfg.seed)
        # a batched simulator (VMAS) builds all its envs at once, on the training device
        self.batched = bool(getattr(env_fn, "batched", False))
        self.vec = None
        self.buffer = None
        self.interrupted: Optional[int] = None  # the signal that stopped the last train() call, if any
        self._resume: Optional[Dict[str, Any]] = None  # env-side state from a checkpoint, applied in _ensure_envs
        if self.batched:
            self._ensure_envs()  # the batched env is the only source of its spec
        else:
            self.spec, probe_env = probe(env_fn, cfg.seed)
            probe_env.close()
        shared = cfg.parameter_sharing == "shared"
        self.actor = Actor(self.spec, shared, cfg.hidden_sizes, cfg.activation, cfg.input_norm,
                           cfg.recurrent, cfg.log_std_init).to(self.device)
        self.critic = Critic(self.spec, cfg.critic_input, shared, cfg.hidden_sizes, cfg.activation,
                             cfg.input_norm, cfg.recurrent).to(self.device)
        # separate optimisers: the critic's larger gradients never scale the actor's step
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, eps=cfg.adam_eps, foreach=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr or cfg.lr, eps=cfg.adam_eps,
                                           foreach=True)
        # ValueNorm and PopArt share the running statistics; PopArt also rescales the value head
        self.normalize_values = cfg.value_norm or cfg.popart
        self.value_norm = RunningMeanStd().to(self.device)
        self.policy = Policy(self.spec, self.actor, self.device)
        self.kl_coef = cfg.kl_coef
        self.env_steps = 0
        self.iteration = 0
        self.history: List[Dict[str, Any]] = []
        if self.dist.enabled:
            # one set of weights everywhere, then a different sampling stream per rank
            D.broadcast_parameters(self.actor)
            D.broadcast_parameters(self.critic)
            if self.dist.rank:
                seed_everything(cfg.seed + self.dist.rank)

    # ------------------------------------------------------------------------------------------
    def _raw(self, v: torch.Tensor) -> torch.Tensor:
        """Critic output -> raw return units."""
        return self.value_norm.denormalize(v) if self.normalize_values else v

    def _ensure_envs(self) -> None:
        if self.vec is None:
            cfg = self.cfg
            if self.batched:
                self.vec = self.env_fn(num_envs=cfg.num_envs, device=self.device,
                                       seed=cfg.seed + self.env_index_offset)
                self.vec.reset()
                self.spec = self.vec.spec
            else:
                _, self.vec = make_vector_env(self.env_fn, cfg.num_envs, cfg.seed, cfg.vector_mode, cfg.num_workers,
                                              first_index=self.env_index_offset)
            hidden = cfg.hidden_sizes[-1] if cfg.recurrent else 0
            self.buffer = RolloutBuffer(self.spec, cfg.rollout_length, cfg.num_envs, self.device, hidden)
            # carried across iterations: recurrent states [E, A, H] (before the next step's reset)
            # and which envs start an episode at the next step
            A = self.spec.num_agents
            self.actor_h = torch.zeros(cfg.num_envs, A, hidden, device=self.device)
            self.critic_h = torch.zeros(cfg.num_envs, A, hidden, device=self.device)
            self.episode_start = torch.ones(cfg.num_envs, dtype=torch.bool, device=self.device)
        if self._resume is not None:
            self._apply_resume()

    def _apply_resume(self) -> None:
        """Put the envs and the carried state where the checkpoint left them, then restore the RNGs
        (last: building and resetting envs may draw from them)."""
        state, self._resume = self._resume, None
        episode = self.vec.arrays.get("episode")
        if state["episode"] is not None and isinstance(episode, np.ndarray):
            # every env restarts the episode it was in, from that episode's seed: exact when the
            # checkpoint fell between episodes, as it does when episode lengths divide rollout_length
            episode[:] = state["episode"].numpy()
            self.vec.reset()
        self.episode_start = state["episode_start"].to(self.device)
        self.actor_h = state["actor_h"].to(self.device)
        self.critic_h = state["critic_h"].to(self.device)
        set_rng_state(state["rng"])

    def _from_env(self, name: str, vec: Any = None) -> torch.Tensor:
        x = (vec or self.vec).arrays[name]
        return x if torch.is_tensor(x) else torch.from_numpy(x).to(self.device)

    @staticmethod
    def _send_actions(vec: Any, actions: torch.Tensor) -> None:
        if hasattr(vec, "set_actions"):  # batched torch env: stays on the device
            vec.set_actions(actions)
        else:
            vec.arrays["actions"][:] = actions.cpu().numpy()

    def collect(self) -> List[Dict[str, Any]]:
        """Fill the buffer with ``T`` steps of every env; returns the episodes that ended.

        With subprocess workers on the CPU, torch runs single-threaded here: the workers need
        the cores, and small per-step batches gain nothing from intra-op threads (issue 3:
        this alone took simple_spread collection from 2,700 to 4,200 steps/s on 2 cores).
        """
        threads = torch.get_num_threads()
        if self.cfg.vector_mode == "subprocess" and self.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            return self._collect()
        finally:
            torch.set_num_threads(threads)

    @torch.no_grad()
    def _collect(self) -> List[Dict[str, Any]]:
        buf, T = self.buffer, self.cfg.rollout_length
        episodes: List[Dict[str, Any]] = []
        for t in range(T):
            obs, state = self._from_env("obs"), self._from_env("state")
            alive, mask = self._from_env("alive"), self._from_env("action_mask")
            resets = recurrent_resets(self.episode_start, alive)
            actions, logp, hidden = self.policy.act_batch(obs, mask, hidden=self.actor_h, resets=resets)
            if self.actor.recurrent:
                buf.actor_h[t], self.actor_h = self.actor_h, hidden
            buf.obs[t], buf.state[t], buf.alive[t], buf.action_mask[t] = obs, state, alive, mask
            buf.actions[t], buf.logp[t], buf.resets[t] = actions, logp, resets
            self._send_actions(self.vec, actions)
            episodes += self.vec.step()
            buf.rewards[t] = self._from_env("reward")
            buf.terminated[t] = self._from_env("terminated")
            buf.truncated[t] = self._from_env("truncated")
            # kept for the time-limit bootstrap below: V(final observation), not V(reset observation)
            buf.final_obs[t], buf.final_state[t] = self._from_env("final_obs"), self._from_env("final_state")
            self.episode_start = self._from_env("env_done").clone()
        self._compute_values()
        return episodes

    def _compute_values(self) -> None:
        """``values`` and ``next_values`` for the whole rollout in one batched critic pass.

        One pass after the rollout rather than one small critic call per step: per-step
        inference is overhead-bound on the CPU, and on a GPU it is T times fewer kernel launches
        (issue 3).  A recurrent critic is unrolled over the T steps from the state carried over
        from the last rollout, with the same resets the actor saw.
        """
        buf, critic = self.buffer, self.critic
        out = critic.values(critic.inputs(buf.obs, buf.state, buf.alive), self.critic_h, buf.resets)
        buf.old_values.copy_(out.values)  # the value-clipping centre, in the critic's own units
        buf.values.copy_(self._raw(out.values))
        if critic.recurrent:
            buf.critic_h.copy_(out.h_before)
            self.critic_h = out.h_last
        # V(obs[t+1]): the next stored step, and for the last step the env's current observation
        obs, state, alive = self._from_env("obs"), self._from_env("state"), self._from_env("alive")
        resets = recurrent_resets(self.episode_start, alive)
        last_v = self._raw(critic.next_values(critic.inputs(obs, state, alive), out.feats[-1], resets))
        following = torch.cat([buf.values[1:], last_v.unsqueeze(0)], dim=0)
        # time limit: bootstrap from V(final observation), which continues the ended episode
        ts, es = torch.nonzero(buf.truncated.any(-1), as_tuple=True)
        if len(ts):
            x = critic.inputs(buf.final_obs[ts, es], buf.final_state[ts, es], buf.alive[ts, es])
            final_v = self._raw(critic.next_values(x, out.feats[ts, es]))
            following[ts, es] = torch.where(buf.truncated[ts, es], final_v, following[ts, es])
        buf.next_values.copy_(following)

    def update(self) -> Dict[str, float]:
        """PPO epochs over the buffer; returns mean diagnostics."""
        cfg, buf = self.cfg, self.buffer
        adv, ret = gae(buf.rewards, buf.values, buf.next_values, buf.terminated, buf.truncated, buf.alive,
                       cfg.gamma, cfg.gae_lambda)
        alive = buf.alive
        explained_var = L.explained_variance(buf.values, ret, alive)
        if cfg.normalize_advantages:
            if self.dist.enabled:  # statistics of all ranks' advantages together
                n, mean, var = self._global_moments(adv, alive)
                std = (var * n / max(n - 1.0, 1.0)).sqrt().to(adv.dtype)
                mean = mean.to(adv.dtype)
            else:
                mean, std = adv[alive].mean(), adv[alive].std() if alive.sum() > 1 else torch.ones((), device=adv.device)
            adv = (adv - mean) / (std + 1e-8)
        buf.advantages.copy_(adv * alive)
        if self.normalize_values:
            old_mean, old_std = self.value_norm.mean.clone(), self.value_norm.std()
            if self.dist.enabled:  # every rank folds in the same (global) batch: the normalisers stay equal
                self.value_norm.update_moments(*self._global_moments(ret, alive))
            else:
                self.value_norm.update(ret, alive)
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
        # network inputs (normalised features + agent id) are the same in every epoch: build once
        buf.data["actor_in"] = self.actor.inputs(buf.obs)
        buf.data["critic_in"] = self.critic.inputs(buf.obs, buf.state, alive)
        keys = UPDATE_KEYS + (HIDDEN_KEYS if cfg.recurrent else ())
        chunk = cfg.chunk_length if cfg.recurrent else 1
        sums: Dict[str, float] = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0}
        count = 0
        for _ in range(cfg.ppo_epochs):
            for mb in buf.minibatches(cfg.num_minibatches, keys, chunk):
                # mb fields are [chunk, B, A, ...]; hidden states [B, A, H] at each chunk's start
                total, p_loss, v_loss, entropy, info = self._minibatch_loss(mb)
                self._apply_gradients(total)
                sums["policy_loss"] += p_loss.item()
                sums["value_loss"] += v_loss.item()
                sums["entropy"] += entropy.item()
                sums["clip_fraction"] += float(info["clip_fraction"])
                count += 1
        with torch.no_grad():  # KL[pi_old, pi_new] over the whole batch, after the update (PPO Sec. 4)
            # a recurrent actor replays the rollout from its first step's stored state
            first_h = buf.actor_h[0] if cfg.recurrent else None
            dist, _ = self.actor.dist(buf.data["actor_in"], buf.action_mask, first_h, buf.resets)
            _, info = L.policy_loss(dist.log_prob(buf.actions), buf.logp, buf.advantages, alive, cfg.objective,
                                    cfg.clip_eps, 0.0)
            approx_kl = float(info["approx_kl"])
            if self.dist.enabled:  # all ranks adapt beta from the same KL: the mean over all agent-steps
                n = float(alive.sum())
                kl_sum, n_all = D.all_reduce_sum(torch.tensor([approx_kl * n, n], dtype=torch.float64,
                                                              device=self.device)).tolist()
                approx_kl = kl_sum / max(n_all, 1.0)
        for key in ("actor_in", "critic_in"):
            del buf.data[key]
        stats = {k: v / count for k, v in sums.items()}
        stats["approx_kl"] = approx_kl
        stats["kl_coef"] = self.kl_coef  # the beta used in this update
        if cfg.objective in ("kl", "clip_kl"):
            self.kl_coef = L.update_kl_coef(self.kl_coef, approx_kl, cfg.target_kl)
        stats["explained_variance"] = explained_var
        return stats

    def _minibatch_loss(self, mb: Dict[str, torch.Tensor]) -> tuple:
        """The PPO loss of one minibatch: ``(total, policy_loss, value_loss, entropy, info)``."""
        cfg = self.cfg
        mask = mb["alive"]
        dist, _ = self.actor.dist(mb["actor_in"], mb["action_mask"], mb.get("actor_h"), mb["resets"])
        new_logp = dist.log_prob(mb["actions"])
        entropy = L.masked_mean(dist.entropy(), mask)
        p_loss, info = L.policy_loss(new_logp, mb["logp"], mb["advantages"], mask, cfg.objective, cfg.clip_eps,
                                     self.kl_coef)
        values = self.critic.values(mb["critic_in"], mb.get("critic_h"), mb["resets"]).values
        v_loss = L.value_loss(values, mb["old_values"], mb["returns"], mask, cfg.clip_eps if cfg.value_clip else None,
                              cfg.huber_delta)
        total = p_loss - cfg.entropy_coef * entropy + cfg.value_coef * v_loss
        return total, p_loss, v_loss, entropy, info

    def _gradients(self, total: torch.Tensor) -> None:
        """Backward into fresh ``.grad``s, averaged over ranks when distributed (issue 6)."""
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        total.backward()
        if self.dist.enabled:
            D.average_gradients(list(self.actor.parameters()) + list(self.critic.parameters()), self.dist.world_size)

    def _apply_gradients(self, total: torch.Tensor) -> None:
        """Gradients (averaged over ranks), then clip each network and step."""
        cfg = self.cfg
        self._gradients(total)
        torch.nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
        torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
        self.actor_opt.step()
        self.critic_opt.step()

    def _global_moments(self, x: torch.Tensor, mask: torch.Tensor) -> tuple:
        """``(count, mean, population variance)`` of ``x[mask]`` over all ranks."""
        v = x[mask].detach().to(torch.float64)
        n, total, sq = D.all_reduce_sum(torch.stack([torch.tensor(float(v.numel()), dtype=torch.float64,
                                                                  device=v.device), v.sum(), (v * v).sum()]))
        n_f = float(n)
        mean = total / max(n_f, 1.0)
        var = (sq / max(n_f, 1.0) - mean * mean).clamp_min(0.0)
        return n_f, mean, var

    def _set_lr(self) -> None:
        """``lr_schedule: linear`` decays both learning rates to 0 at ``cfg.total_steps`` env steps."""
        cfg = self.cfg
        frac = linear_schedule(self.env_steps, cfg.total_steps) if cfg.lr_schedule == "linear" else 1.0
        for opt, base in ((self.actor_opt, cfg.lr), (self.critic_opt, cfg.critic_lr or cfg.lr)):
            for group in opt.param_groups:
                group["lr"] = base * frac

    def train(self, total_steps: Optional[int] = None, run_dir: Optional[str] = None) -> List[Dict[str, Any]]:
        """Train until ``total_steps`` env steps (default ``cfg.total_steps``); returns this call's history:
        one dict per iteration with iteration, env_steps, sps, policy_loss, value_loss, entropy,
        approx_kl, clip_fraction, kl_coef, explained_variance and lr, plus team_return,
        episode_length and episodes when episodes ended.

        ``run_dir`` (default ``cfg.run_dir``) receives config.yaml, metrics.jsonl, curves.png and
        ckpt.pt (every ``checkpoint_every`` iterations, at the end, and on SIGINT/SIGTERM).
        SIGINT or SIGTERM stops the run after the current iteration, with a checkpoint;
        ``self.interrupted`` then holds the signal number.  A second SIGINT stops at once.
        """
        cfg = self.cfg
        total = int(total_steps if total_steps is not None else cfg.total_steps)
        run_dir = run_dir if run_dir is not None else cfg.run_dir
        ckpt = os.path.join(run_dir, "ckpt.pt") if run_dir is not None else None
        main = self.dist.is_main  # only rank 0 logs and writes the run folder (issue 6)
        self._ensure_envs()
        # env steps of all ranks: total_steps counts the whole data-parallel job
        steps_per_iter = cfg.num_envs * cfg.rollout_length * self.dist.world_size
        logger = RunLogger(cfg if main else cfg.replace(wandb=False, progress=False), run_dir if main else None,
                           total, self.env_steps)
        history: List[Dict[str, Any]] = []
        self.interrupted = None
        started, last_plot, start_steps = time.perf_counter(), time.perf_counter(), self.env_steps
        with _StopOnSignal() as stop:
            try:
                while self.env_steps < total and self._agreed_stop(stop.signum) is None:
                    start = time.perf_counter()
                    self._set_lr()
                    episodes = self.collect()
                    stats = self.update()
                    self.env_steps += steps_per_iter
                    self.iteration += 1
                    elapsed = time.perf_counter() - start
                    row: Dict[str, Any] = {"iteration": self.iteration, "env_steps": self.env_steps,
                                           "sps": steps_per_iter / elapsed, **stats,
                                           "lr": self.actor_opt.param_groups[0]["lr"], **self._episode_stats(episodes)}
                    history.append(row)
                    self.history.append(row)
                    logger.log(row)
                    if ckpt and cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0:
                        self.save(ckpt)
                    if main and run_dir and cfg.curves_every_s and time.perf_counter() - last_plot >= cfg.curves_every_s:
                        logger.plot()
                        last_plot = time.perf_counter()
                self.interrupted = self._agreed_stop(stop.signum)
                if ckpt:
                    self.save(ckpt)
                    logger.plot()
                    logger.finish(self, ckpt)
            finally:
                logger.summary(self, history, time.perf_counter() - started, ckpt, self.env_steps - start_steps)
                logger.close()
        return history

    def _agreed_stop(self, signum: Optional[int]) -> Optional[int]:
        """The stop signal, agreed by all ranks (any rank's signal stops every rank at the same
        iteration, so no rank waits forever in a collective)."""
        if self.dist.enabled:
            signum = D.all_reduce_max(signum or 0, self.device) or None
        return signum

    def _episode_stats(self, episodes: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Mean team return and length of the episodes that ended this iteration, on all ranks."""
        totals = torch.tensor([sum(e["team_return"] for e in episodes), sum(e["length"] for e in episodes),
                               len(episodes)], dtype=torch.float64, device=self.device)
        if self.dist.enabled:
            totals = D.all_reduce_sum(totals)
        ret, length, count = totals.tolist()
        if not count:
            return {}
        return {"team_return": ret / count, "episode_length": length / count, "episodes": int(count)}

    # ------------------------------------------------------------------------------------------
    @property
    def eval_seed(self) -> int:
        """Seed of evaluation episodes (and eval videos): away from the training envs' seeds."""
        return self.cfg.seed + EVAL_SEED_OFFSET

    @torch.no_grad()
    def evaluate(self, episodes: int = 20, deterministic: bool = True, seed: Optional[int] = None) -> Dict[str, Any]:
        """Run ``episodes`` full episodes; returns mean returns and lengths.

        ``team_return_mean`` sums rewards over agents; ``return_mean`` is per agent.  A PettingZoo
        env plays the episodes one after another in one in-process env.  A batched env (VMAS)
        plays them side by side, ``episodes`` envs, and counts the *first* episode of each env:
        keeping the first ``episodes`` to finish would over-count envs whose episodes end early,
        since they reset and finish again while long episodes are still running.
        """
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        seed = self.eval_seed if seed is None else seed
        if self.batched:  # all episodes side by side in one batched env
            vec = self.env_fn(num_envs=episodes, device=self.device, seed=seed)
        else:
            vec = InProcessVectorEnv([self.env_fn], self.spec, seed)
        vec.reset()
        done: List[Dict[str, Any]] = []
        quota = -(-episodes // vec.num_envs)  # episodes counted per env: 1 when batched
        counted = [0] * vec.num_envs
        hidden, start = None, torch.ones(vec.num_envs, dtype=torch.bool, device=self.device)
        try:
            while len(done) < episodes:
                obs, mask = self._from_env("obs", vec), self._from_env("action_mask", vec)
                resets = recurrent_resets(start, self._from_env("alive", vec))
                actions, _, hidden = self.policy.act_batch(obs, mask, deterministic, hidden, resets)
                self._send_actions(vec, actions)
                for episode in vec.step():
                    if counted[episode["env"]] < quota:
                        counted[episode["env"]] += 1
                        done.append(episode)
                start = self._from_env("env_done", vec).clone()
        finally:
            vec.close()
        team = np.array([e["team_return"] for e in done])
        per_agent = np.array([e["agent_returns"] for e in done])
        return {
            "team_return_mean": float(team.mean()),
            "team_return_std": float(team.std()),
            "return_mean": {name: float(per_agent[:, k].mean()) for k, name in enumerate(self.spec.names)},
            "episode_length_mean": float(np.mean([e["length"] for e in done])),
            "episodes": len(team),
        }

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Everything a run needs to continue as if it had never stopped (issue 5): networks,
        optimisers, normalisers, the KL coefficient, counters, every RNG state, each env's episode
        count, the recurrent states carried between iterations, the config and the history.
        Plain tensors and containers only, so it loads with ``weights_only=True``."""
        resume = None
        if self.vec is not None:  # envs built: their position in the run is part of the state
            episode = self.vec.arrays.get("episode")
            resume = {
                "rng": rng_state(),
                "episode": torch.from_numpy(episode.copy()) if isinstance(episode, np.ndarray) else None,
                "episode_start": self.episode_start.cpu(),
                "actor_h": self.actor_h.cpu(),
                "critic_h": self.critic_h.cpu(),
            }
        # one entry per rank: each rank resumes its own envs and RNG streams (a collective when distributed)
        ranks = D.all_gather_objects(resume, self.dist.world_size) if self.dist.enabled else [resume]
        return {
            "format": 3,
            "config": self.cfg.to_dict(),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "value_norm": self.value_norm.state_dict(),
            "kl_coef": float(self.kl_coef),
            "env_steps": int(self.env_steps),
            "iteration": int(self.iteration),
            "history": [dict(row) for row in self.history],
            "team": self._team_layout(),
            "resume": None if resume is None else ranks,
        }

    def _team_layout(self) -> Dict[str, Any]:
        spec = self.spec
        return {"agents": list(spec.names), "obs_dim": spec.obs_dim, "state_dim": spec.state_dim,
                "num_logits": spec.num_logits, "action_width": spec.action_width}

    def save(self, path: str) -> None:
        """Write a checkpoint.  Distributed: every rank must call it (it gathers each rank's
        state); rank 0 writes the file."""
        payload = self.state_dict()
        if self.dist.is_main:
            save_checkpoint(path, payload)
        if self.dist.enabled:  # no rank goes on (and perhaps reads the file) before it is written
            D.barrier()

    @classmethod
    def load(cls, path: str, env_fn: Callable[[], Any], **overrides: Any) -> "Trainer":
        """Rebuild a trainer from ``save``'s file; ``overrides`` replace config fields (e.g. device,
        or a larger total_steps to train on).  ``train()`` then continues the run exactly where
        it stopped, RNG states included."""
        return cls.from_checkpoint(load_checkpoint(path), env_fn, path, **overrides)

    @classmethod
    def from_checkpoint(cls, payload: Dict[str, Any], env_fn: Callable[[], Any], path: str = "checkpoint",
                        **overrides: Any) -> "Trainer":
        """:meth:`load` from a checkpoint already read with ``load_checkpoint``; ``path`` names it in errors."""
        if payload.get("format") != 3:
            raise ValueError(f"{path!r} is a format-{payload.get('format')} checkpoint; this version reads format 3")
        cfg = Config.from_dict({**payload["config"], **overrides})
        trainer = cls(env_fn, cfg)
        if trainer._team_layout() != payload["team"]:
            raise ValueError(
                f"{path!r} was trained on agents/widths {payload['team']}, but env_fn builds {trainer._team_layout()}. "
                f"Pass the env_fn the run was trained with (the CLI rebuilds it from the config field 'env', "
                f"currently {cfg.env!r}: set it to a registry name or 'module:callable' when training)")
        trainer.actor.load_state_dict(payload["actor"])
        trainer.critic.load_state_dict(payload["critic"])
        trainer.actor_opt.load_state_dict(payload["actor_opt"])
        trainer.critic_opt.load_state_dict(payload["critic_opt"])
        trainer.value_norm.load_state_dict(payload["value_norm"])
        trainer.kl_coef = payload["kl_coef"]
        trainer.env_steps = payload["env_steps"]
        trainer.iteration = payload["iteration"]
        trainer.history = list(payload["history"])
        ranks = payload["resume"]
        if ranks is not None:
            if len(ranks) != trainer.dist.world_size:
                raise ValueError(f"{path!r} was written by a run with {len(ranks)} rank(s); resume it with the same "
                                 f"number of ranks (this run has {trainer.dist.world_size})")
            trainer._resume = ranks[trainer.dist.rank]
        if trainer._resume is not None and trainer.vec is not None:  # a batched env was built in __init__
            trainer._apply_resume()
        return trainer

    def close(self) -> None:
        if self.vec is not None:
            self.vec.close()
            self.vec = None

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


