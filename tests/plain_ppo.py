"""A plain PPO for continuous actions, written independently of mappo, as a yardstick.

It follows CleanRL's ``ppo_continuous_action.py`` (Huang et al. 2022, "The 37 implementation
details of PPO"): a tanh MLP actor whose output is the Gaussian mean, a state-independent
log-std starting at 0, orthogonal init (gain sqrt(2), 0.01 on the mean head, 1 on the value
head), GAE, advantages standardised per minibatch, the clipped surrogate, a clipped value
loss, no entropy bonus, actions clipped into the bounds when sent to the env, Adam with a
linearly annealed learning rate and a global grad-norm clip of 0.5.  It runs as independent
PPO (IPPO) with one network shared by the agents: each agent is a row of the batch and the
critic sees only that agent's observation.  CleanRL's observation and reward normalisation
wrappers are left out: the toy envs here are already well scaled.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(n_in: int, n_out: int, out_gain: float) -> nn.Sequential:
    g = np.sqrt(2)
    return nn.Sequential(_layer(n_in, 64, g), nn.Tanh(), _layer(64, 64, g), nn.Tanh(), _layer(64, n_out, out_gain))


def train_plain_ppo(env_fn, total_steps: int, seed: int, num_envs: int = 8, num_steps: int = 128,
                    epochs: int = 10, minibatches: int = 32, lr: float = 3e-4, gamma: float = 0.99,
                    gae_lambda: float = 0.95, clip: float = 0.2, vf_coef: float = 0.5, max_grad_norm: float = 0.5):
    """Train on ``env_fn`` (a ParallelEnv with Box observations and Box actions, all agents
    present for the whole episode) for ``total_steps`` env steps; returns the actor as a
    function ``obs [N, O] -> mean action [N, D]``."""
    torch.manual_seed(seed)
    envs = [env_fn() for _ in range(num_envs)]
    agents = envs[0].possible_agents
    A = len(agents)
    space = envs[0].action_space(agents[0])
    low, high = space.low, space.high
    O, D = envs[0].observation_space(agents[0]).shape[0], space.shape[0]
    actor, critic = _mlp(O, D, 0.01), _mlp(O, 1, 1.0)
    log_std = nn.Parameter(torch.zeros(D))
    params = list(actor.parameters()) + list(critic.parameters()) + [log_std]
    opt = torch.optim.Adam(params, lr=lr, eps=1e-5)
    episode = 0

    def reset(env):
        nonlocal episode
        obs, _ = env.reset(seed=seed * 100_000 + episode)
        episode += 1
        return np.stack([obs[a] for a in agents])

    obs = np.stack([reset(env) for env in envs])  # [E, A, O]
    N = num_envs * A
    iterations = total_steps // (num_envs * num_steps)
    for it in range(iterations):
        for group in opt.param_groups:  # linear annealing, as CleanRL's --anneal-lr
            group["lr"] = lr * (1.0 - it / iterations)
        b_obs = torch.zeros(num_steps, N, O)
        b_act, b_logp = torch.zeros(num_steps, N, D), torch.zeros(num_steps, N)
        b_rew, b_done, b_val = torch.zeros(num_steps, N), torch.zeros(num_steps, N), torch.zeros(num_steps, N)
        for t in range(num_steps):
            x = torch.as_tensor(obs, dtype=torch.float32).reshape(N, O)
            with torch.no_grad():
                dist = torch.distributions.Normal(actor(x), log_std.exp())
                action = dist.sample()
                b_logp[t], b_val[t] = dist.log_prob(action).sum(-1), critic(x).squeeze(-1)
            b_obs[t], b_act[t] = x, action
            sent = np.clip(action.numpy().reshape(num_envs, A, D), low, high)
            for e, env in enumerate(envs):
                nxt, rew, term, trunc, _ = env.step({a: sent[e, k] for k, a in enumerate(agents)})
                done = all(term[a] or trunc[a] for a in agents)
                b_rew[t, e * A:(e + 1) * A] = torch.tensor([rew[a] for a in agents])
                b_done[t, e * A:(e + 1) * A] = float(done)
                obs[e] = reset(env) if done else np.stack([nxt[a] for a in agents])
        with torch.no_grad():  # GAE; a finished episode is not bootstrapped (CleanRL's handling)
            next_v = critic(torch.as_tensor(obs, dtype=torch.float32).reshape(N, O)).squeeze(-1)
            adv, last = torch.zeros(num_steps, N), torch.zeros(N)
            for t in reversed(range(num_steps)):
                following = next_v if t == num_steps - 1 else b_val[t + 1]
                live = 1.0 - b_done[t]
                delta = b_rew[t] + gamma * following * live - b_val[t]
                last = delta + gamma * gae_lambda * live * last
                adv[t] = last
            ret = adv + b_val
        flat = {"obs": b_obs.reshape(-1, O), "act": b_act.reshape(-1, D), "logp": b_logp.reshape(-1),
                "adv": adv.reshape(-1), "ret": ret.reshape(-1), "val": b_val.reshape(-1)}
        size = flat["obs"].shape[0]
        for _ in range(epochs):
            for idx in torch.randperm(size).chunk(minibatches):
                mb = {k: v[idx] for k, v in flat.items()}
                dist = torch.distributions.Normal(actor(mb["obs"]), log_std.exp())
                ratio = (dist.log_prob(mb["act"]).sum(-1) - mb["logp"]).exp()
                a = (mb["adv"] - mb["adv"].mean()) / (mb["adv"].std() + 1e-8)
                pg = torch.max(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip)).mean()
                v = critic(mb["obs"]).squeeze(-1)
                v_clipped = mb["val"] + (v - mb["val"]).clamp(-clip, clip)
                v_loss = 0.5 * torch.max((v - mb["ret"]) ** 2, (v_clipped - mb["ret"]) ** 2).mean()
                opt.zero_grad()
                (pg + vf_coef * v_loss).backward()
                nn.utils.clip_grad_norm_(params, max_grad_norm)
                opt.step()

    def act(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return actor(x)

    return act


def evaluate_plain(act, env_fn, episodes: int = 100, seed: int = 1_000_003) -> float:
    """Mean team return of the deterministic (mean) policy, actions clipped into the bounds."""
    env = env_fn()
    agents = env.possible_agents
    space = env.action_space(agents[0])
    totals = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total = 0.0
        while env.agents:
            x = torch.as_tensor(np.stack([obs[a] for a in env.agents]), dtype=torch.float32)
            mean = np.clip(act(x).numpy(), space.low, space.high)
            obs, rewards, _, _, _ = env.step({a: mean[k] for k, a in enumerate(env.agents)})
            total += sum(rewards.values())
        totals.append(total)
    return float(np.mean(totals))
