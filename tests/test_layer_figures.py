"""One module computes the per-layer figures of the scan and of the monitor (issue 24): fed the same model and
batch, both give the same layers, owners, weight figures and gradient figures, to the last bit."""

import statistics

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.measure import layer_figures
from gradcheck_cli.measure.layer_figures import median_of_sorted
from gradcheck_cli.measure.probe import probe_model
from gradcheck_cli.monitor.monitor import Monitor

# What a layer is, its weights, and its parameter gradients: computed by layer_figures for both.
SAME_FIGURES = (
    "name", "type", "param_count", "trainable", "shared_with", "calls", "fan_in", "weight_norm", "weight_std",
    "zero_parameters", "weight_grad_norm", "other_grad_norm", "grad_norm", "relative_grad", "grad_nonfinite",
)  # fmt: skip
# The output and output-gradient figures: the scan takes float32 norms where they are exact, the monitor float64.
CLOSE_FIGURES = ("forward_rms", "backward")


class TiedHeadFirst(nn.Module):
    """A language model whose head is defined before the embedding it shares its weight with: the scan gives the
    weight to the embedding, which runs first; the monitor gave it to the head, defined first."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 50, bias=False)
        self.embed = nn.Embedding(50, 16)
        self.head.weight = self.embed.weight
        self.mid = nn.Linear(16, 16)

    def forward(self, tokens):
        return self.head(torch.tanh(self.mid(self.embed(tokens))))


class SharedTwice(nn.Module):
    """One module called twice in a forward pass: its gradient is the sum of both calls'."""

    def __init__(self):
        super().__init__()
        self.inp, self.shared, self.out = nn.Linear(12, 24), nn.Linear(24, 24), nn.Linear(24, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.shared(torch.tanh(self.shared(torch.tanh(self.inp(x)))))))


def tied_head_first():
    tokens = torch.randint(0, 50, (8, 6))
    return TiedHeadFirst(), tokens, lambda out: F.cross_entropy(out.flatten(0, 1), tokens.flatten())


def shared_twice():
    return SharedTwice(), torch.randn(8, 12), lambda out: out.pow(2).mean()


def frozen_layer():
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
    model[2].requires_grad_(False)
    return model, torch.randn(8, 20), lambda out: out.pow(2).mean()


def mlp():
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
    return model, torch.randn(8, 16), lambda out: out.pow(2).mean()


def extreme_scales():
    """Weights filled with one value (whose std the norm and sum would lose to rounding), weights of 1e-12 and
    gradients between 1e-15 and 1e-10: float32 norms the scan takes again in float64, and the monitor did not."""
    model, x, loss = mlp()
    with torch.no_grad():
        model[0].weight.fill_(0.25)
        model[2].weight.mul_(1e-12)
        model[4].bias.zero_()
    return model, x, loss


def scanned_and_monitored(make):
    torch.manual_seed(0)
    model, x, loss_of = make()
    scanned = probe_model(model, lambda i: Batch((x,)), lambda out, batch: loss_of(out), passes=1)
    monitor = Monitor(model, every=1, norms_every=1, on_problem="record")
    loss = loss_of(model(x))
    loss.backward()
    monitor.step(loss)
    monitor.detach()
    (record,) = monitor.history
    model.zero_grad(set_to_none=True)
    return scanned.layers, record.layers, monitor


@pytest.mark.parametrize("make", [tied_head_first, shared_twice, frozen_layer, mlp, extreme_scales])
def test_the_scan_and_the_monitor_give_the_same_figures_for_the_same_batch(make):
    scanned, monitored, _ = scanned_and_monitored(make)
    assert [layer.name for layer in monitored] == [layer.name for layer in scanned]
    for ours, theirs in zip(monitored, scanned):
        for key in SAME_FIGURES:
            assert getattr(ours, key) == getattr(theirs, key), (ours.name, key)
        for key in CLOSE_FIGURES:
            assert getattr(ours, key) == pytest.approx(getattr(theirs, key), rel=1e-6), (ours.name, key)


def test_the_monitor_gives_a_tied_weight_to_the_layer_that_runs_first():
    _, monitored, monitor = scanned_and_monitored(tied_head_first)
    assert [layer.name for layer in monitored] == ["embed", "mid", "head"]  # execution order, as the scan
    embed, _, head = monitored
    assert head.shared_with == "embed" and embed.shared_with is None
    assert embed.weight_grad_norm is not None and head.weight_grad_norm is None
    assert [(info.name, info.shared_with) for info in monitor.header.layers] == [
        ("embed", None), ("mid", None), ("head", "embed"),
    ]  # fmt: skip
    torch.manual_seed(0)
    model, tokens, loss_of = tied_head_first()  # the same model and batch again
    loss_of(model(tokens)).backward()  # the gradient of both uses of the weight
    assert embed.weight_grad_norm == pytest.approx(model.embed.weight.grad.norm().item(), rel=1e-6)


def test_the_extreme_scales_are_what_they_should_be():
    """The figures both now give: float64 norms where float32 was not exact, the std of a constant weight zero."""
    scanned, _, _ = scanned_and_monitored(extreme_scales)
    torch.manual_seed(0)
    model, x, loss_of = extreme_scales()
    loss_of(model(x)).backward()
    first, second = scanned[0], scanned[1]
    assert first.weight_std == 0.0
    assert first.weight_grad_norm == model[0].weight.grad.double().norm().item()  # 1.9e-14: taken in float64
    assert second.weight_norm == model[2].weight.detach().double().norm().item()  # 3e-12: taken in float64


def test_median_of_sorted_is_the_statistics_median():
    for values in ([3.0], [2.0, 1.0], [5.0, 1.0, 4.0], [4.0, 1.0, 3.0, 2.0], [0.1, 0.7, 0.2, 0.9, 0.3, 0.4]):
        assert median_of_sorted(sorted(values)) == statistics.median(values)


def test_norms_and_sums_of_stacked_and_lone_tensors_come_back_in_order(monkeypatch):
    """_norms_and_sums stacks small tensors of one shape (several stacks here: WEIGHT_STACK_BYTES made small)
    and reduces the others one by one; the values must come back in the tensors' order whatever the grouping."""
    monkeypatch.setattr(layer_figures, "WEIGHT_STACK_BYTES", 16 * 4 * 12)  # 16 tensors of 4x3 float32 a stack
    torch.manual_seed(0)
    tensors = [torch.randn(4, 3) for _ in range(40)]
    tensors[5:5] = [torch.randn(7), torch.randn(4, 3, dtype=torch.float64), torch.zeros(0, 3), torch.randn(50, 50)]
    tensors.append(torch.randn(7))
    summed = [0, 5, 6, 8, 9, 17, 44]

    values = layer_figures._norms_and_sums(tensors, summed).tolist()

    expected_norms = [t.double().norm().item() for t in tensors]
    expected_sums = [tensors[k].double().sum().item() for k in summed]
    assert values[: len(tensors)] == pytest.approx(expected_norms, rel=1e-6)
    assert values[len(tensors) :] == pytest.approx(expected_sums, rel=1e-5, abs=1e-5)


def test_signal_squares_and_the_output_figures_from_them():
    """One output norm per call (a layer called twice has two) and an output-gradient norm per call: summed as
    squares per layer; the output RMS over the elements, the output-gradient RMS per sample of a mean loss."""
    forward, backward = layer_figures.SIGNAL_FORWARD, layer_figures.SIGNAL_BACKWARD
    slots = [(forward, 0), (forward, 1), (forward, 1), (backward, 1), (backward, 1)]
    forward_sq, backward_sq, backward_seen = layer_figures.signal_squares(slots, [3.0, 1.0, 2.0, 0.5, 0.5], 3)
    assert (forward_sq, backward_sq, backward_seen) == ([9.0, 5.0, 0.0], [0.0, 0.5, 0.0], [False, True, False])
    assert layer_figures.output_rms(forward_sq[1], 20) == 0.5
    assert layer_figures.output_gradient_rms(backward_sq[1], 8) == 2.0
