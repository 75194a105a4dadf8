"""The PPO learner's public surface: the loss of a hand-built minibatch, gradient isolation,
and a full update."""
import math

import torch

from mappo.learner import PPOLearner
from mappo.spaces import TeamSpec
from tests.helpers import tiny
from tests.toy_envs import CoordinationEnv


def make_learner(**kw):
    spec = TeamSpec.from_env(CoordinationEnv())  # 2 agents, obs width 3, Discrete(3)
    cfg = tiny(objective="clip", clip_eps=0.2, entropy_coef=0.01, value_coef=1.0, huber_delta=10.0,
               value_clip=True, **kw)
    return spec, PPOLearner(spec, cfg, torch.device("cpu"))


def hand_built_minibatch(learner, spec):
    """L = 1 step, B = 2 envs, A = 2 agents; every agent alive."""
    obs = torch.tensor([[[[1.0, 0, 0], [0, 1.0, 0]], [[0, 0, 1.0], [1.0, 0, 0]]]])
    alive = torch.ones(1, 2, 2, dtype=torch.bool)
    state = torch.zeros(1, 2, 0)
    third = math.log(1 / 3)
    return {
        "actor_in": learner.actor.inputs(obs), "critic_in": learner.critic.inputs(obs, state, alive), "alive": alive,
        "action_mask": torch.ones(1, 2, 2, 3, dtype=torch.bool), "actions": torch.tensor([[[[0.0], [1.0]], [[2.0], [0.0]]]]),
        # ratios r = p_new / p_old with p_new = 1/3: 1.5, 1.0, 0.5, 1.1
        "logp": torch.tensor([[[third - math.log(1.5), third], [third - math.log(0.5), third - math.log(1.1)]]]),
        "advantages": torch.tensor([[[1.0, -1.0], [2.0, 0.5]]]),
        "returns": torch.tensor([[[1.0, 0.0], [0.5, 2.0]]]),
        "old_values": torch.tensor([[[0.5, 0.5], [0.2, 0.5]]]),
        "resets": torch.zeros(1, 2, 2, dtype=torch.bool),
    }


def test_loss_of_a_hand_built_minibatch():
    spec, learner = make_learner()
    with torch.no_grad():  # uniform policy (p = 1/3 for each action) and a critic that says 0.5 everywhere
        for p in learner.actor.net.head.parameters():
            p.zero_()
        learner.critic.net.head.weight[0].zero_()
        learner.critic.net.head.bias[0].fill_(0.5)
    terms = learner.loss(hand_built_minibatch(learner, spec))
    # policy: -min(r A, clip(r, 0.8, 1.2) A) per sample
    # (1.5, 1): -min(1.5, 1.2) = -1.2; (1, -1): 1; (0.5, 2): -min(1, 1.6) = -1; (1.1, 0.5): -0.55
    policy = (-1.2 + 1.0 - 1.0 - 0.55) / 4
    # value: v = 0.5; max(0.5 (v - R)^2, 0.5 (old + clip(v - old, +-0.2) - R)^2)
    # R=1, old=.5: .125 | R=0, old=.5: .125 | R=.5, old=.2: clipped v=.4: max(0, .005) | R=2, old=.5: 1.125
    value = (0.125 + 0.125 + 0.005 + 1.125) / 4
    entropy = math.log(3)
    assert math.isclose(terms.policy_loss.item(), policy, rel_tol=1e-5)
    assert math.isclose(terms.value_loss.item(), value, rel_tol=1e-5)
    assert math.isclose(terms.entropy.item(), entropy, rel_tol=1e-5)
    assert math.isclose(terms.total.item(), policy - 0.01 * entropy + value, rel_tol=1e-5)
    assert math.isclose(terms.clip_fraction.item(), 0.5, rel_tol=1e-6)  # r = 1.5 and 0.5 are outside [0.8, 1.2]


def test_critic_loss_leaves_the_actor_alone_and_the_reverse():
    spec, learner = make_learner()
    mb = hand_built_minibatch(learner, spec)
    terms = learner.loss(mb)
    terms.value_loss.backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.any() for p in learner.actor.parameters())
    assert any(p.grad is not None and p.grad.any() for p in learner.critic.parameters())
    for p in list(learner.actor.parameters()) + list(learner.critic.parameters()):
        p.grad = None
    (terms.policy_loss - 0.01 * terms.entropy).backward()
    assert all(p.grad is None or not p.grad.any() for p in learner.critic.parameters())
    assert any(p.grad is not None and p.grad.any() for p in learner.actor.parameters())


def test_step_changes_both_networks_and_state_dict_round_trips():
    spec, learner = make_learner()
    mb = hand_built_minibatch(learner, spec)
    before = [p.detach().clone() for p in list(learner.actor.parameters()) + list(learner.critic.parameters())]
    learner.step(learner.loss(mb).total)
    after = list(learner.actor.parameters()) + list(learner.critic.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    _, other = make_learner()
    other.load_state_dict(learner.state_dict())
    assert math.isclose(other.loss(mb).total.item(), learner.loss(mb).total.item(), rel_tol=1e-6)
