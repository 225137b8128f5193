"""Messages that used to point the wrong way (issue 21, item 13): each names what is really wrong.

A model without parameters and one whose forward cuts the graph were both told to unfreeze; a model that
fails on its second call was told to pass --input-shape. Through the Python API (``check``), tiny models.
"""

import pytest
import torch
from torch import nn

from gradcheck_cli.common.errors import GradcheckError, ModelRunError
from gradcheck_cli.scan.checks import check


class Cut(nn.Module):
    """Parameters that require grad, and a forward that hands back a value cut off from them."""

    def __init__(self, cut):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        self.cut = cut

    def forward(self, x):
        return self.cut(self.net, x)


def _no_grad(net, x):
    with torch.no_grad():
        return net(x)


CUTS = {
    "detach": lambda net, x: net(x).detach(),
    "no_grad": _no_grad,
    "item": lambda net, x: torch.full((x.shape[0], 3), net(x).sum().item()),
    "numpy": lambda net, x: torch.from_numpy(net(x).detach().numpy()),
}


class CalledOnce(nn.Module):
    """Keeps state between calls: refuses to run a second time."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("this model may be called only once")
        return self.fc(x)


class GrowingCache(nn.Module):
    """Keeps state between calls another way: concatenates every batch it has seen, so the second call's
    shapes no longer fit the layer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.seen = None

    def forward(self, x):
        self.seen = x if self.seen is None else torch.cat([self.seen, x], dim=1)
        return self.fc(self.seen)


@pytest.mark.parametrize("model", [nn.ReLU(), nn.Sequential(nn.Tanh(), nn.Identity())], ids=["relu", "sequential"])
def test_a_model_without_parameters_is_not_told_to_unfreeze(model):
    with pytest.raises(GradcheckError) as caught:
        check(model, torch.randn(4, 4))
    message = str(caught.value)
    assert "has no parameters, so there is no gradient to measure" in message
    assert "unfreeze" not in message and "requires_grad" not in message


def test_a_frozen_model_is_still_told_to_unfreeze():
    model = nn.Linear(4, 2).requires_grad_(False)
    with pytest.raises(GradcheckError, match=r"requires_grad_\(True\)"):
        check(model, torch.randn(4, 4))


@pytest.mark.parametrize("how", sorted(CUTS))
def test_a_forward_that_cuts_the_graph_is_named_not_told_to_unfreeze(how):
    with pytest.raises(ModelRunError) as caught:
        check(Cut(CUTS[how]), torch.randn(4, 4))
    message = str(caught.value)
    assert "parameters require grad" in message and "its forward cuts the graph" in message
    assert "unfreeze" not in message


def test_a_loss_that_cuts_the_graph_is_named():
    with pytest.raises(ModelRunError) as caught:
        check(nn.Linear(4, 2), torch.randn(4, 4), loss_fn=lambda output, inputs: output.detach().sum())
    assert "the loss function cuts the graph" in str(caught.value) and "unfreeze" not in str(caught.value)


@pytest.mark.parametrize("model", [CalledOnce, GrowingCache], ids=["asserts-once", "growing-cache"])
def test_a_model_that_fails_on_its_second_call_is_not_told_to_pass_input_shape(model):
    with pytest.raises(ModelRunError) as caught:
        check(model(), torch.randn(4, 4))
    message = str(caught.value)
    assert "on pass 2, after pass 1 succeeded with inputs of the same shapes" in message
    assert "keeps state between calls" in message
    assert "--input-shape" not in message and "inputs tried" not in message
    assert caught.value.stage == "forward pass" and caught.value.layer is not None


def test_a_forward_that_fails_on_the_first_call_still_gets_the_input_hint():
    with pytest.raises(GradcheckError) as caught:
        check(nn.Linear(4, 2), lambda: torch.randn(4, 5))
    assert "inputs tried" in str(caught.value) and "keeps state" not in str(caught.value)


def test_inputs_that_change_shape_between_passes_are_not_blamed_on_state():
    shapes = iter([(4, 4), (4, 5), (4, 5), (4, 5)])
    with pytest.raises(GradcheckError) as caught:
        check(nn.Linear(4, 2), lambda: torch.randn(*next(shapes)))
    assert "keeps state" not in str(caught.value) and "inputs tried" in str(caught.value)
