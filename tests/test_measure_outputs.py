"""outputs.py on its own: deferred norms with their version checks, and a layer's output watched by its hook."""

import pytest
import torch
from torch import nn

from gradcheck_cli.measure.fp16_range import Fp16Ranges
from gradcheck_cli.measure.layer_figures import SIGNAL_BACKWARD, SIGNAL_FORWARD
from gradcheck_cli.measure.outputs import OutputNorms, OutputWatch


def test_kept_tensors_are_reduced_together_and_unpacked_per_slot():
    norms = OutputNorms()
    norms.start_pass(first=False)
    norms.record((SIGNAL_FORWARD, 0), torch.full((4,), 2.0))  # kept
    norms.record((SIGNAL_BACKWARD, 1), torch.full((4,), 3.0))  # kept
    norms.wide_keys = {(SIGNAL_FORWARD, 1)}
    norms.record((SIGNAL_FORWARD, 1), torch.full((1,), 1e-30))  # float64 at once
    norms.reduce_kept()
    host = [float(n) for n in norms.narrow] + [float(n) for n in norms.wide]
    forward_sq, backward_sq, seen, exact = norms.unpack(host, 0, 2)
    assert forward_sq == pytest.approx([16.0, 1e-60]) and backward_sq == pytest.approx([0.0, 36.0])
    assert seen == [False, True] and exact and not norms.overwritten


def test_a_kept_tensor_changed_before_its_norm_marks_the_pass_and_its_slot():
    norms = OutputNorms()
    norms.start_pass(first=False)
    kept = torch.ones(4)
    norms.record((SIGNAL_FORWARD, 0), kept)
    kept.mul_(2)  # an in-place op after the hook
    norms.reduce_kept()
    assert norms.overwritten and (SIGNAL_FORWARD, 0) in norms.immediate_keys


def test_the_first_pass_notes_an_output_an_in_place_op_overwrites():
    norms = OutputNorms()
    norms.start_pass(first=True)
    output = torch.ones(4)
    norms.record((SIGNAL_FORWARD, 0), output)
    assert len(norms.narrow) == 1  # the first pass reduces outputs at once
    output.relu_()
    norms.note_overwrite()
    assert (SIGNAL_FORWARD, 0) in norms.immediate_keys and not norms.overwritten


@pytest.mark.parametrize("fast", [True, False])
def test_a_layers_hook_keeps_its_output_norm_and_takes_its_gradient(fast):
    layer = nn.Linear(3, 2)
    norms = OutputNorms()
    watch = OutputWatch([("fc", layer)], norms, Fp16Ranges(), fast)
    watch.autograd_passes = True
    norms.start_pass(first=True)
    watch.start_pass(first=True)
    handle = layer.register_forward_hook(watch.forward_hook(0))
    x = torch.randn(5, 3)
    output = layer(x)
    handle.remove()
    loss = output.pow(2).sum()
    assert watch.take_gradients(loss, [layer.weight])[0] is not None
    norms.reduce_kept()
    watch.release_graph()
    host = [float(n) for n in norms.narrow]
    forward_sq, backward_sq, seen, _ = norms.unpack(host, 0, 1)
    assert forward_sq[0] == pytest.approx(output.pow(2).sum().item(), rel=1e-6)
    assert backward_sq[0] == pytest.approx((2 * output).pow(2).sum().item(), rel=1e-6) and seen == [True]
    assert watch.calls == [1] and watch.order == [0] and watch.path_starts == {0} and watch.numel == [10]
