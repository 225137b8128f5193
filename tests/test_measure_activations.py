"""activations.py on its own: the closed-form squared derivatives against autograd, and a site's statistics."""

import pytest
import torch
from torch import nn

from gradcheck_cli.measure.activations import (
    ActivationWatch,
    activation_stats,
    derivative_by_autograd,
    squared_derivative_from_output,
)
from gradcheck_cli.measure.fp16_range import Fp16Ranges
from gradcheck_cli.measure.hooks import ForwardHooks
from gradcheck_cli.measure.outputs import OutputNorms, OutputWatch


@pytest.mark.parametrize(
    "module", [nn.ReLU(), nn.Sigmoid(), nn.Tanh(), nn.ReLU6(), nn.LeakyReLU(0.1), nn.ELU(0.7), nn.SELU()]
)
def test_closed_forms_from_the_output_are_the_squared_derivative(module):
    h = torch.linspace(-8, 8, 101, dtype=torch.float64)
    h = h[h.abs() > 1e-6]  # (the kink of a rectifier: either side's derivative is right)
    expected = derivative_by_autograd(module, (h,)).square()
    assert torch.allclose(squared_derivative_from_output(module)(module(h)), expected, atol=1e-12)


def test_other_activations_are_differentiated_by_autograd():
    assert squared_derivative_from_output(nn.GELU()) is None
    h = torch.tensor([0.0, 1.0])
    assert derivative_by_autograd(nn.Softplus(), (h,)) == pytest.approx(torch.sigmoid(h))


@pytest.mark.parametrize("fast", [True, False])
def test_a_relu_site_counts_dead_units_and_its_mean_squared_derivative(fast):
    layer, relu = nn.Linear(2, 3), nn.ReLU()
    outputs = OutputWatch([("fc", layer)], OutputNorms(), Fp16Ranges(), fast)
    watch = ActivationWatch(outputs)
    watch.start_pass()
    hooks = ForwardHooks(wrap=True, fast=fast)
    watch.hook("act", relu, hooks)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        layer.bias.zero_()
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])  # unit 2 is never active, units 0 and 1 in 3 of 4 values
    relu(layer(x))
    hooks.remove()
    watch.reduce_kept()
    watch.finish_pass(exact=True)
    (stats,) = activation_stats(watch.sites, watch.passes)
    assert stats.name == "act" and stats.units == 3
    assert stats.dead_fraction == pytest.approx(1 / 3) and stats.derivative_rms == pytest.approx((3 / 6) ** 0.5)
