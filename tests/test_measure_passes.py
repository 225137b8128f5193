"""passes.py on its own: the garbage collector's pause, what a probe puts back, and the RNG state."""

import gc

import pytest
import torch
from torch import nn

from gradcheck_cli.measure.passes import cyclic_gc_paused, model_parameters, rng_state, snapshot, unique


def test_the_collector_is_paused_inside_and_enabled_again_on_every_way_out():
    assert gc.isenabled()
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), cyclic_gc_paused():
        raise KeyError("the user's model failed")
    assert gc.isenabled()


def test_a_collector_the_caller_disabled_stays_disabled():
    gc.disable()
    try:
        with cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("fast", [True, False])
def test_snapshot_puts_back_modes_gradients_and_buffers(fast):
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).eval()
    modules = list(model.named_modules())
    params = model_parameters(modules, fast)
    assert params == list(model.parameters())
    grad = torch.ones(3, 3)
    model[0].weight.grad = grad
    restore = snapshot(modules, params, fast)
    assert model[0].weight.grad is None  # the probe's gradients do not accumulate into the user's
    model.train()
    model(torch.randn(4, 3)).sum().backward()
    restore()
    assert not model.training and model[0].weight.grad is grad
    assert torch.equal(model[1].running_mean, torch.zeros(3)) and int(model[1].num_batches_tracked) == 0


def test_rng_state_draws_the_same_numbers_again():
    restore = rng_state([])
    first = torch.randn(3)
    restore()
    assert torch.equal(torch.randn(3), first)


def test_unique_keeps_each_tensor_once_in_order():
    a, b = torch.zeros(1), torch.zeros(1)
    assert unique(iter([a, None, b, a])) == [a, b]
