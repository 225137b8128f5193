"""The measurement layer against autograd on models whose gradients can be worked out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradcheck_cli.errors import InvalidOptionError, ModelRunError
from gradcheck_cli.probe import Batch, probe_model


def fixed_batch(*args, target=None, size=None):
    return lambda index: Batch(args=args, target=target, size=size)


def test_two_layer_linear_net_matches_hand_computed_gradients():
    # y = W2 (W1 x), loss = 0.5 * mean_b ||y_b||^2  =>  dL/dy = y / B,  dL/dW2 = (dL/dy)^T h,
    # dL/dh = (dL/dy) W2,  dL/dW1 = (dL/dh)^T x.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    x = torch.randn(5, 3)
    B = x.shape[0]
    w1, w2 = net[0].weight.detach(), net[1].weight.detach()
    h = x @ w1.T
    y = h @ w2.T
    dy = y / B
    dw2 = dy.T @ h
    dh = dy @ w2
    dw1 = dh.T @ x

    result = probe_model(net, fixed_batch(x), lambda out, batch: 0.5 * out.pow(2).sum(1).mean(), passes=1)

    first, second = result.layers
    assert (first.name, second.name) == ("0", "1")
    assert first.weight_grad_norm == pytest.approx(dw1.norm().item(), rel=1e-5)
    assert second.weight_grad_norm == pytest.approx(dw2.norm().item(), rel=1e-5)
    assert first.weight_norm == pytest.approx(w1.norm().item(), rel=1e-6)
    assert first.relative_grad == pytest.approx(dw1.norm().item() / w1.norm().item(), rel=1e-5)
    # backward signal: per-sample RMS of the per-sample loss gradient = sqrt(B * ||dL/dout||^2)
    assert first.backward == pytest.approx(math.sqrt(B) * dh.norm().item(), rel=1e-5)
    assert second.backward == pytest.approx(math.sqrt(B) * dy.norm().item(), rel=1e-5)
    assert first.forward_rms == pytest.approx(h.pow(2).mean().sqrt().item(), rel=1e-5)
    assert second.forward_rms == pytest.approx(y.pow(2).mean().sqrt().item(), rel=1e-5)
    assert first.other_grad_norm is None  # no bias
    assert result.total_grad_norms[0] == pytest.approx(math.hypot(dw1.norm().item(), dw2.norm().item()), rel=1e-5)


def test_bias_is_reported_apart_from_the_weight():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    result = probe_model(layer, fixed_batch(x), lambda out, b: out.sum(), passes=1)
    stats = result.layers[0]
    x_sum = x.sum(0)
    assert stats.weight_grad_norm == pytest.approx(math.sqrt(2) * x_sum.norm().item(), rel=1e-5)
    assert stats.other_grad_norm == pytest.approx(math.sqrt(2 * 4**2), rel=1e-5)  # d/db of sum = B per unit
    assert stats.grad_norm == pytest.approx(math.hypot(stats.weight_grad_norm, stats.other_grad_norm), rel=1e-6)


def test_layers_are_listed_in_execution_order_not_definition_order():
    class Backwards(nn.Module):
        def __init__(self):
            super().__init__()
            self.last = nn.Linear(4, 2)
            self.first = nn.Linear(3, 4)

        def forward(self, x):
            return self.last(self.first(x))

    result = probe_model(Backwards(), fixed_batch(torch.randn(2, 3)), lambda o, b: o.sum(), passes=1)
    assert [layer.name for layer in result.layers] == ["first", "last"]


def test_module_called_twice_is_measured_over_both_calls():
    torch.manual_seed(0)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = nn.Linear(4, 4, bias=False)

        def forward(self, x):
            return self.shared(torch.tanh(self.shared(x)))

    model = Twice()
    x = torch.randn(3, 4)
    result = probe_model(model, fixed_batch(x), lambda o, b: o.pow(2).sum(), passes=1)
    stats = result.layers[0]
    assert stats.calls == 2
    x_ref = x.clone()
    w = model.shared.weight.detach().clone().requires_grad_(True)
    h1 = x_ref @ w.T
    h1.retain_grad()
    h2 = torch.tanh(h1) @ w.T
    h2.retain_grad()
    h2.pow(2).sum().backward()
    assert stats.weight_grad_norm == pytest.approx(w.grad.norm().item(), rel=1e-5)
    expected_backward = math.sqrt(3 * (h1.grad.norm() ** 2 + h2.grad.norm() ** 2).item())
    assert stats.backward == pytest.approx(expected_backward, rel=1e-5)


def test_tied_weights_are_counted_once_and_marked_shared():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, tokens):
            return self.head(self.embed(tokens))

    model = Tied()
    tokens = torch.randint(0, 10, (2, 5))
    result = probe_model(model, fixed_batch(tokens), lambda o, b: F.cross_entropy(o.flatten(0, 1), tokens.flatten()))
    embed, head = result.layers
    assert head.shared_with == "embed" and embed.shared_with is None
    assert embed.weight_grad_norm is not None and head.weight_grad_norm is None
    model.zero_grad()
    F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten()).backward()
    assert embed.weight_grad_norm == pytest.approx(model.embed.weight.grad.norm().item(), rel=1e-5)
    assert result.param_count == 40


def test_frozen_and_unused_layers():
    class Partly(nn.Module):
        def __init__(self):
            super().__init__()
            self.frozen = nn.Linear(3, 3)
            self.used = nn.Linear(3, 2)
            self.unused = nn.Linear(3, 2)
            self.frozen.requires_grad_(False)

        def forward(self, x):
            return self.used(self.frozen(x))

    result = probe_model(Partly(), fixed_batch(torch.randn(2, 3)), lambda o, b: o.sum(), passes=1)
    frozen, used, unused = (result.layer(n) for n in ("frozen", "used", "unused"))
    assert not frozen.trainable and frozen.grad_norm is None
    assert used.grad_norm is not None
    assert unused.calls == 0 and unused.grad_norm is None and unused.backward is None
    assert [layer.name for layer in result.layers][-1] == "unused"


def test_tuple_outputs_are_measured():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 6, 3)
    result = probe_model(lstm, fixed_batch(x), lambda out, b: out[0][:, -1].sum(), passes=1)
    stats = result.layers[0]
    assert stats.forward_rms is not None and stats.forward_rms > 0
    assert stats.backward is not None and stats.backward > 0


def test_time_steps_match_autograd_input_gradient():
    torch.manual_seed(0)
    rnn = nn.RNN(3, 5, batch_first=True).double()
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    loss_fn = lambda out, b: out[0][:, -1].pow(2).sum(1).mean()  # noqa: E731
    result = probe_model(rnn, fixed_batch(x), loss_fn, passes=1)
    x_ref = x.clone().requires_grad_(True)
    loss_fn(rnn(x_ref), None).backward()
    expected = [math.sqrt(4 * x_ref.grad[:, t].pow(2).sum().item()) for t in range(7)]
    (series,) = result.recurrent
    assert series.name == "" and series.type == "RNN"
    assert series.time_steps == pytest.approx(expected, rel=1e-9)


def test_tiny_gradients_are_not_flushed_to_zero():
    # float32 squares of 1e-30 underflow; the probe reduces in float64 so they stay measurable.
    layer = nn.Linear(2, 2, bias=False)
    result = probe_model(layer, fixed_batch(torch.ones(1, 2)), lambda o, b: o.sum() * 1e-30, passes=1)
    assert result.layers[0].weight_grad_norm == pytest.approx(2e-30, rel=1e-5)


def test_nonfinite_values_are_detected():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = nn.Linear(2, 2)

        def forward(self, x):
            return self.b(torch.log(self.a(x) - 1e6))

    result = probe_model(Broken(), fixed_batch(torch.ones(3, 2)), lambda o, b: o.sum(), passes=1)
    assert not result.layer("a").forward_nonfinite
    assert result.layer("b").forward_nonfinite
    assert result.loss_nonfinite


def test_model_is_left_exactly_as_found():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))
    model.eval()
    model[1].train()  # a mixed mode must come back mixed
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    existing_grad = torch.full_like(model[0].weight, 7.0)
    model[0].weight.grad = existing_grad
    rng_before = torch.random.get_rng_state()
    hooks_before = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]

    probe_model(model, lambda i: Batch(args=(torch.randn(8, 4),)), lambda o, b: o.sum(), passes=2)

    assert [m.training for m in model.modules()] == [False, False, True, False, False]
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key  # incl. BatchNorm running stats
    assert model[0].weight.grad is existing_grad and torch.all(existing_grad == 7.0)
    assert model[3].weight.grad is None
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()] == hooks_before


def test_model_is_restored_when_forward_raises_and_the_failing_layer_is_named():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(4, 1)).eval()  # the second layer expects 4 features
    with pytest.raises(ModelRunError, match=r"forward pass in layer 1 \(Linear\): RuntimeError") as caught:
        probe_model(model, fixed_batch(torch.ones(1, 2)), lambda o, b: o.sum())
    assert caught.value.layer == "1 (Linear)" and caught.value.stage == "forward pass"
    assert not model.training and not model[0]._forward_hooks


def test_garbage_collector_is_paused_during_a_probe_and_restored_after_it():
    """The probe pauses the cyclic collector while it runs (see _cyclic_gc_paused) and leaves it as found:
    enabled after a probe and after one that raised, still disabled where the caller had disabled it."""
    import gc

    states = []
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))

    def loss_fn(output, batch):
        states.append(gc.isenabled())
        return output.sum()

    assert gc.isenabled()
    probe_model(model, fixed_batch(torch.ones(2, 2)), loss_fn, passes=2)
    assert states == [False, False] and gc.isenabled()
    with pytest.raises(ModelRunError):
        probe_model(nn.Sequential(nn.Linear(2, 3), nn.Linear(4, 1)), fixed_batch(torch.ones(1, 2)), loss_fn)
    assert gc.isenabled()
    gc.disable()
    try:
        probe_model(model, fixed_batch(torch.ones(2, 2)), loss_fn, passes=1)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_one_host_transfer_per_pass(monkeypatch):
    """No .item() per layer: every pass's reductions reach the host in one .tolist()."""
    calls = {"tolist": 0, "item": 0}
    original_tolist, original_item = torch.Tensor.tolist, torch.Tensor.item

    def counting_tolist(self):
        calls["tolist"] += 1
        return original_tolist(self)

    def counting_item(self):
        calls["item"] += 1
        return original_item(self)

    model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(20)], nn.Linear(8, 2))
    x = torch.randn(4, 8)
    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    probe_model(model, fixed_batch(x), lambda o, b: o.sum(), passes=3)
    assert calls["item"] == 0
    # one per pass, plus one for the weight figures and one for the activation sites, each measured once
    assert calls["tolist"] == 3 + 1 + 1


def test_median_and_spread_across_passes():
    torch.manual_seed(0)
    layer = nn.Linear(3, 1, bias=False)
    scales = [1.0, 3.0, 2.0]
    result = probe_model(layer, lambda i: Batch(args=(torch.ones(1, 3) * scales[i],)), lambda o, b: o.sum(), passes=3)
    stats = result.layers[0]
    out = abs(layer.weight.sum().item())  # the output at scale 1
    assert stats.forward_rms == pytest.approx(2 * out)
    assert stats.spread["forward_rms"] == pytest.approx((out, 3 * out))
    # parameter gradients are read on the first pass only
    unit = math.sqrt(3)
    assert stats.weight_grad_norm == pytest.approx(unit)
    assert stats.spread["weight_grad_norm"] == pytest.approx((unit, unit))


def test_later_passes_take_output_gradients_without_computing_parameter_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    computed = []
    handles = [p.register_hook(lambda grad: computed.append(1)) for p in model.parameters()]
    result = probe_model(model, fixed_batch(torch.randn(5, 4)), lambda o, b: o.pow(2).sum(), passes=3)
    for handle in handles:
        handle.remove()
    assert len(computed) == 6  # each parameter's gradient once: in the first pass
    assert len(result.total_grad_norms) == 1
    for stats in result.layers:
        # the same batch every pass: the later passes' backward signal is the first pass's, to rounding
        low, high = stats.spread["backward"]
        assert low == pytest.approx(high, rel=1e-6) and low > 0


def test_passes_must_be_positive():
    with pytest.raises(InvalidOptionError, match="passes must be at least 1"):
        probe_model(nn.Linear(1, 1), fixed_batch(torch.ones(1, 1)), lambda o, b: o.sum(), passes=0)


def test_gru_time_steps_are_measured():
    torch.manual_seed(0)
    gru = nn.GRU(3, 4)  # time-major: the time dimension is 0
    x = torch.randn(6, 2, 3)
    result = probe_model(gru, fixed_batch(x, size=2), lambda out, b: out[0][-1].sum(), passes=1)
    (series,) = result.recurrent
    assert series.type == "GRU" and len(series.time_steps) == 6
    assert series.time_steps[-1] > series.time_steps[0] > 0


class _InPlaceAfterLater(nn.Module):
    """fc1's output is overwritten in place only after fc2 has run: the first pass cannot see it, so the
    version check on the kept tensor must (and the pass is measured again)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 1)
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        a = self.fc1(x)
        b = self.fc2(x)
        a += b
        return self.head(torch.relu(a))


def test_batched_norms_see_outputs_before_an_in_place_op_overwrites_them():
    passes = 3
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    # BatchNorm then ReLU(inplace=True): the first pass notes the overwrite, later passes reduce at once.
    net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True), nn.Linear(16, 1))
    with torch.no_grad():
        before_relu = net[1](net[0](x))
    result = probe_model(net, fixed_batch(x), lambda o, b: o.sum(), passes=passes)
    bn = result.layer("1")
    assert bn.forward_rms == pytest.approx(before_relu.pow(2).mean().sqrt().item(), rel=1e-5)
    assert bn.spread["forward_rms"][0] == pytest.approx(bn.spread["forward_rms"][1], rel=1e-5)
    # An overwrite the first pass cannot see: caught by the version check, the pass measured again, right.
    model = _InPlaceAfterLater()
    with torch.no_grad():
        fc1_out = model.fc1(x)
    result = probe_model(model, fixed_batch(x), lambda o, b: o.sum(), passes=passes)
    assert result.layer("fc1").forward_rms == pytest.approx(fc1_out.pow(2).mean().sqrt().item(), rel=1e-5)
    assert result.layer("fc1").spread["forward_rms"][1] == pytest.approx(fc1_out.pow(2).mean().sqrt().item(), rel=1e-5)
    assert model.forwards == passes + 1  # the second pass, measured again; the third knows fc1 by then
