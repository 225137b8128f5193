"""hooks.py and the hook functions of torch_compat.py on their own: both paths add hooks that run in the
registered order and leave the module exactly as found."""

import pytest
import torch
from torch import nn

from gradcheck_cli.measure import torch_compat
from gradcheck_cli.measure.hooks import ForwardHooks, unwrapped_forward, wrappable


def test_the_fast_path_works_on_this_torch_and_can_be_forced_off():
    assert torch_compat.private_hooks_work()
    assert torch_compat.fast_hooks()
    with torch_compat.public_hooks():
        assert not torch_compat.fast_hooks()
    assert torch_compat.fast_hooks()


@pytest.mark.parametrize("fast", [True, False])
def test_hooks_run_in_order_and_are_taken_off(fast):
    module = nn.Linear(2, 2)
    seen = []
    module.register_forward_hook(lambda m, a, o: seen.append("user"))
    before = (dict(vars(module)), dict(module._forward_hooks), dict(module._forward_pre_hooks))
    hooks = ForwardHooks(wrap=True, fast=fast)
    hooks.add(module, lambda m, a, o: seen.append("after"))
    hooks.add(module, lambda m, a: seen.append("before"), pre=True)
    module(torch.ones(1, 2))
    hooks.remove()
    module(torch.ones(1, 2))
    assert seen == ["before", "user", "after", "user"]
    assert (dict(vars(module)), dict(module._forward_hooks), dict(module._forward_pre_hooks)) == before


def test_a_wrapped_forward_is_put_back_and_its_original_reachable():
    module = nn.Tanh()
    own = module.forward
    hooks = ForwardHooks(wrap=True, fast=True)
    hooks.add(module, lambda m, a, o: None)
    assert "forward" in vars(module) and unwrapped_forward(module) == own
    hooks.remove()
    assert "forward" not in vars(module)


@pytest.mark.parametrize("fast", [True, False])
def test_gradient_edges_are_those_of_get_gradient_edge(fast):
    from torch.autograd.graph import get_gradient_edge

    x = torch.ones(2, requires_grad=True)
    y = (x * 2).unbind()[1]
    edge, reference = torch_compat.gradient_edge_function(fast)(y), get_gradient_edge(y)
    assert edge.node is reference.node and edge.output_nr == reference.output_nr == 1


def test_direct_parameters_and_buffers_agree_on_both_paths():
    module = nn.BatchNorm1d(3)
    assert dict(torch_compat.direct_parameters(module, True)) == torch_compat.direct_parameters(module, False)
    assert torch_compat.direct_buffers(module, True) == torch_compat.direct_buffers(module, False)


def test_the_public_path_cannot_see_global_hooks():
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, o: None)
    try:
        assert not wrappable([("", nn.Linear(1, 1))], fast=True)
        assert wrappable([("", nn.Linear(1, 1))], fast=False)
    finally:
        handle.remove()
