"""The MLP building blocks written for speed (issue 16) compute what their plain forms compute."""
import torch

from mappo import networks as N


def test_sigmoid_tanh_matches_tanh_and_its_gradient():
    z = torch.linspace(-12.0, 12.0, 4001)
    assert (N.sigmoid_tanh_(z.clone()) - torch.tanh(z)).abs().max() < 3e-7
    # its autograd form: tanh's gradient, checked numerically in float64
    z64 = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: N.Tanh()(x * 1.0), (z64,))
