import math

import pytest
import torch

from mappo import loss as L


def test_clip_objective_hand_computed():
    # ratios e^{0.5}=1.6487 (A=+1, clipped to 1.2), e^{-0.5}=0.6065 (A=-1, clipped to 0.8 -> -0.8 is larger? no)
    old = torch.zeros(3)
    new = torch.tensor([0.5, -0.5, 0.1])
    adv = torch.tensor([1.0, -1.0, 2.0])
    mask = torch.ones(3)
    loss, info = L.policy_loss(new, old, adv, mask, "clip", 0.2, kl_coef=0.0)
    r = [math.exp(0.5), math.exp(-0.5), math.exp(0.1)]
    terms = [min(r[0] * 1, 1.2 * 1), min(r[1] * -1, 0.8 * -1), min(r[2] * 2, min(max(r[2], 0.8), 1.2) * 2)]
    assert float(loss) == pytest.approx(-sum(terms) / 3, rel=1e-6)
    assert float(info["clip_fraction"]) == pytest.approx(2 / 3)
    kl = sum((ri - 1) - math.log(ri) for ri in r) / 3
    assert float(info["approx_kl"]) == pytest.approx(kl, rel=1e-6)


def test_kl_objective_hand_computed_and_mask():
    old = torch.zeros(3)
    new = torch.tensor([0.2, -0.1, 5.0])
    adv = torch.tensor([1.0, 2.0, 100.0])
    mask = torch.tensor([1.0, 1.0, 0.0])  # the third row is a dead agent: ignored
    beta = 3.0
    loss, _ = L.policy_loss(new, old, adv, mask, "kl", 0.2, kl_coef=beta)
    r = [math.exp(0.2), math.exp(-0.1)]
    per = [-(r[i] * adv[i].item()) + beta * ((r[i] - 1) - math.log(r[i])) for i in range(2)]
    assert float(loss) == pytest.approx(sum(per) / 2, rel=1e-6)
    loss_ck, _ = L.policy_loss(new, old, adv, mask, "clip_kl", 0.2, kl_coef=beta)
    per_ck = [-min(r[0] * 1.0, 1.2 * 1.0) + beta * ((r[0] - 1) - 0.2),
              -min(r[1] * 2.0, 0.9048374180359595 * 2.0) + beta * ((r[1] - 1) + 0.1)]
    assert float(loss_ck) == pytest.approx(sum(per_ck) / 2, rel=1e-6)


def test_kl_penalty_gradient_is_zero_at_old_policy():
    new = torch.zeros(4, requires_grad=True)
    loss, _ = L.policy_loss(new, torch.zeros(4), torch.zeros(4), torch.ones(4), "kl", 0.2, kl_coef=5.0)
    loss.backward()
    assert torch.all(new.grad == 0)


def test_unknown_objective_raises():
    with pytest.raises(ValueError, match="objective"):
        L.policy_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.ones(1), "trpo", 0.2, 1.0)


@pytest.mark.parametrize("kl,expected", [(0.001, 0.5), (0.0066, 0.5), (0.0067, 1.0), (0.01, 1.0), (0.015, 1.0),
                                         (0.0151, 2.0), (0.1, 2.0)])
def test_beta_update_rule(kl, expected):
    # d_targ = 0.01: halve below 0.00667, double above 0.015 (PPO paper Sec. 4)
    assert L.update_kl_coef(1.0, kl, 0.01) == expected


def test_huber_and_value_clipping_hand_computed():
    assert L.huber(torch.tensor([0.5, -3.0]), 1.0).tolist() == pytest.approx([0.125, 2.5])
    assert L.huber(torch.tensor([3.0]), 0.0).tolist() == pytest.approx([4.5])
    values, old, target = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([3.0, 1.0])
    mask = torch.ones(2)
    # row 0: unclipped err -1 -> 0.5; clipped v = 1.2, err -1.8 -> 1.62; max = 1.62. row 1: err -1 both -> 0.5
    assert float(L.value_loss(values, old, target, mask, 0.2, 0.0)) == pytest.approx((1.62 + 0.5) / 2)
    assert float(L.value_loss(values, old, target, mask, None, 0.0)) == pytest.approx(0.5)
    # Huber delta 1: row 0 clipped err 1.8 -> 1.8 - 0.5 = 1.3
    assert float(L.value_loss(values, old, target, mask, 0.2, 1.0)) == pytest.approx((1.3 + 0.5) / 2)


def test_explained_variance():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mask = torch.ones(4, dtype=torch.bool)
    assert L.explained_variance(y, y, mask) == pytest.approx(1.0)
    assert L.explained_variance(torch.full((4,), 2.5), y, mask) == pytest.approx(0.0)
    assert math.isnan(L.explained_variance(y, torch.ones(4), mask))
