"""The MLP building blocks written for speed compute what their plain forms compute."""
import torch

from mappo import networks as N


def test_sigmoid_tanh_matches_tanh_and_its_gradient():
    z = torch.linspace(-12.0, 12.0, 4001)
    assert (N.sigmoid_tanh_(z.clone()) - torch.tanh(z)).abs().max() < 3e-7
    # its autograd form: tanh's gradient, checked numerically in float64
    z64 = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: N.Tanh()(x * 1.0), (z64,))


def test_mlp_acting_and_training_give_identical_outputs():
    """Acting runs without autograd, the update with it: both must run the same GEMMs, so the
    rollout's log-probs equal the update's first-epoch ones bit for bit."""
    torch.manual_seed(1)
    mlp = N.GroupedMLP(1, 21, [64, 64], 2, "tanh", out_gain=0.01)
    x = torch.randn(1, 50, 3, 21)
    with torch.no_grad():
        acting = mlp(x)
    assert torch.equal(acting, mlp(x))


def test_linear_masked_inputs_get_no_gradient():
    """With ``in_mask`` (groups reading their own widths) the masked weights learn nothing."""
    mask = torch.tensor([[True, True, False, False]])
    layer = N.GroupedLinear(1, 4, 3, gain=1.0, in_mask=mask)
    x = torch.randn(5, 1, 4)
    layer(x).sum().backward()
    assert torch.count_nonzero(layer.weight[0].grad[2:]) == 0
    assert torch.count_nonzero(layer.weight[0].grad[:2]) == 6
