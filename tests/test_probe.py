"""The measurement layer against autograd on models whose gradients can be worked out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.errors import InvalidOptionError, ModelRunError
from gradcheck_cli.measure.probe import probe_model


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


class _CountingForwards(nn.Sequential):
    forwards = 0

    def forward(self, x):
        self.forwards += 1
        return super().forward(x)


def test_a_pass_outside_float32s_range_is_measured_again_in_float64_without_its_parameter_gradients():
    # Outputs of 1e-25 square to 1e-50, below float32's range: the first pass is measured again, those norms in
    # float64; its parameter gradients are exact already and are not computed a second time.
    torch.manual_seed(0)
    model = _CountingForwards(nn.Linear(4, 4), nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.mul_(1e-25)
        model[0].bias.zero_()
    weight_grads = []
    model[1].weight.register_hook(weight_grads.append)
    x = torch.randn(8, 4)
    result = probe_model(model, fixed_batch(x), lambda o, b: o.sum(), passes=3)
    assert model.forwards == 3 + 1
    assert len(weight_grads) == 1  # the first pass only: neither its second measurement nor the others compute it
    hidden = x.double() @ model[0].weight.detach().double().T
    assert result.layer("0").forward_rms == pytest.approx(hidden.pow(2).mean().sqrt().item(), rel=1e-6)
    assert result.layer("1").weight_grad_norm == pytest.approx(hidden.sum(0).norm().item(), rel=1e-5)
    assert result.layer("1").spread["weight_grad_norm"] == pytest.approx((result.layer("1").weight_grad_norm,) * 2)


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


def test_users_hooks_run_during_a_probe_and_stay_as_they_were():
    """The probe adds its hooks straight into the modules' hook dicts (_ForwardHooks): the user's own hooks
    must run beside them, keep their order, and be the only ones left; a handle the user takes afterwards
    must not collide with an id the probe used."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2), nn.GELU(), nn.Linear(2, 1))
    seen = []
    model[0].register_forward_hook(lambda m, a, o: seen.append("after 0"))
    model[1].register_forward_pre_hook(lambda m, a: seen.append("before tanh"))
    model[3].register_forward_hook(lambda m, a, o: seen.append("after gelu"))
    before = [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()]

    result = probe_model(model, fixed_batch(torch.randn(8, 4)), lambda o, b: o.sum(), passes=2)

    assert seen == ["after 0", "before tanh", "after gelu"] * 2
    assert [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()] == before
    assert [site.type for site in result.activations] == ["Tanh", "GELU"]  # the probe's own hooks ran too
    handle = model[2].register_forward_hook(lambda m, a, o: None)
    handle.remove()
    assert not model[2]._forward_hooks and len(model[0]._forward_hooks) == 1


def test_wrapped_forwards_are_taken_off_and_an_instance_forward_is_put_back():
    """The probe wraps each layer's forward on the instance (_ForwardHooks): after it, a module has exactly the
    attributes it had, including a forward of its own set on the instance (as accelerate's hooks set one),
    which the probe measured through."""
    model = nn.Sequential(nn.Linear(4, 4), nn.PReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    own_forward_calls = []
    class_forward = model[2].forward

    def own_forward(x):
        own_forward_calls.append(1)
        return class_forward(x) * 3.0

    model[2].forward = own_forward
    before = [dict(m.__dict__) for m in model.modules()]
    x = torch.randn(8, 4)

    result = probe_model(model, fixed_batch(x), lambda o, b: o.sum(), passes=2)

    assert [dict(m.__dict__) for m in model.modules()] == before
    assert model[2].forward is own_forward and len(own_forward_calls) == 2
    with torch.no_grad():
        expected = (3.0 * class_forward(model[1](model[0](x)))).pow(2).mean().sqrt().item()
    assert result.layer("2").forward_rms == pytest.approx(expected, rel=1e-5)
    assert [site.type for site in result.activations] == ["PReLU", "ReLU"]  # a PReLU is a layer and a site


def test_a_layer_whose_own_hook_replaces_its_output_is_measured_after_that_hook():
    """A module with forward hooks of its own keeps a hook in its dict, run after the user's: what the next layer
    gets is what is measured, as before the probe wrapped forwards."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    batch = fixed_batch(torch.randn(8, 4))
    unhooked = probe_model(model, batch, lambda o, b: o.sum(), passes=1).layer("0").forward_rms
    handle = model[0].register_forward_hook(lambda m, a, o: o * 10.0)
    hooked = probe_model(model, batch, lambda o, b: o.sum(), passes=1).layer("0").forward_rms
    handle.remove()
    assert hooked == pytest.approx(10.0 * unhooked, rel=1e-5)


def test_data_parallel_and_global_hooks_keep_the_probe_off_the_modules_forward():
    """nn.DataParallel copies each module's attributes into its replicas, where a wrapped forward would run the
    original module; global forward hooks may replace the output a wrapper sees: hooks in the dicts there."""
    from gradcheck_cli.measure.hooks import wrappable

    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    assert wrappable(list(model.named_modules()))
    assert not wrappable(list(nn.DataParallel(model).named_modules()))
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, o: None)
    try:
        assert not wrappable(list(model.named_modules()))
        seen = []
        model[0].register_forward_hook(lambda m, a, o: seen.append(m))
        result = probe_model(model, fixed_batch(torch.randn(8, 4)), lambda o, b: o.sum(), passes=1)
    finally:
        handle.remove()
    assert result.layer("0").forward_rms and seen == [model[0]]
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_model_is_restored_when_forward_raises_and_the_failing_layer_is_named():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(4, 1)).eval()  # the second layer expects 4 features
    with pytest.raises(ModelRunError, match=r"forward pass in layer 1 \(Linear\): RuntimeError") as caught:
        probe_model(model, fixed_batch(torch.ones(1, 2)), lambda o, b: o.sum())
    assert caught.value.layer == "1 (Linear)" and caught.value.stage == "forward pass"
    assert not model.training and not model[0]._forward_hooks


def test_garbage_collector_is_paused_during_a_probe_and_restored_after_it():
    """The probe pauses the cyclic collector while its passes run (passes.cyclic_gc_paused) and leaves it as found:
    enabled after a probe and after one that raised, still disabled where the caller had disabled it."""
    import gc

    states = []
    torch.manual_seed(0)  # (an initialisation whose ReLUs all die has a zero gradient, measured again in float64)
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


class _ActivationZoo(nn.Module):
    """One site of each way an activation is measured: closed forms (ReLU, a shared Sigmoid called twice,
    LeakyReLU), autograd (GELU), and a LeakyReLU whose output is changed in place after its hook (its
    backward needs only its input)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.fc4 = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.relu, self.sigmoid, self.leaky, self.gelu = nn.ReLU(), nn.Sigmoid(), nn.LeakyReLU(0.1), nn.GELU()
        self.shifted = nn.LeakyReLU(0.2)
        self.head = nn.Linear(6, 1)
        with torch.no_grad():
            self.fc1.bias[:2] = -100.0  # two units that never fire: dead

    def pre_activations(self, x):
        h1 = self.fc1(x)
        h2 = self.fc2(torch.relu(h1))
        h3 = self.fc3(torch.sigmoid(h2))
        h4 = self.fc4(torch.sigmoid(h3))
        h5 = self.fc2(F.leaky_relu(h4, 0.1))
        return h1, h2, h3, h4, h5

    def forward(self, x):
        a = self.relu(self.fc1(x))
        a = self.sigmoid(self.fc3(self.sigmoid(self.fc2(a))))
        a = self.leaky(self.fc4(a))
        h5 = self.fc2(a)
        g = self.gelu(h5)
        shifted = self.shifted(h5)
        shifted.add_(10.0)  # after the hook: the kept output no longer holds leaky_relu(h5)
        return self.head(g + shifted)


def test_activation_statistics_match_the_derivatives_worked_out_by_hand():
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    model = _ActivationZoo()
    with torch.no_grad():
        h1, h2, h3, h4, h5 = model.pre_activations(x)
    result = probe_model(model, fixed_batch(x), lambda o, b: o.pow(2).mean(), passes=3)
    stats = {a.name: a for a in result.activations}
    assert set(stats) == {"relu", "sigmoid[0]", "sigmoid[1]", "leaky", "gelu", "shifted"}

    def rms(squared):
        return squared.double().mean().sqrt().item()

    relu = stats["relu"]
    assert relu.derivative_rms == pytest.approx(rms((h1 > 0).float()), rel=1e-6)
    assert relu.dead_fraction == pytest.approx(2 / 6) and relu.units == 6 and relu.after == "fc1"
    bound = (0.05 * 0.25) ** 2
    for name, h in (("sigmoid[0]", h2), ("sigmoid[1]", h3)):
        derivative = torch.sigmoid(h) * (1 - torch.sigmoid(h))
        assert stats[name].derivative_rms == pytest.approx(rms(derivative.square()), rel=1e-5)
        assert stats[name].saturated_fraction == pytest.approx((derivative.square() < bound).double().mean().item())
    assert stats["leaky"].derivative_rms == pytest.approx(rms(torch.where(h4 > 0, 1.0, 0.01)), rel=1e-6)
    leaf = h5.clone().requires_grad_(True)
    (gelu_derivative,) = torch.autograd.grad(F.gelu(leaf).sum(), leaf)
    assert stats["gelu"].derivative_rms == pytest.approx(rms(gelu_derivative.square()), rel=1e-5)
    # Changed in place after its hook: not taken from the changed values (all positive, which would give
    # 1), but measured in its hook on the next pass.
    assert (h5 < 0).any()
    assert stats["shifted"].derivative_rms == pytest.approx(rms(torch.where(h5 > 0, 1.0, 0.04)), rel=1e-6)


class _Block(nn.Module):
    """BatchNorm then ReLU(inplace=True) and a skip: the outputs an in-place op overwrites."""

    def __init__(self, width):
        super().__init__()
        self.fc, self.bn, self.relu = nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)

    def forward(self, x):
        return x + self.relu(self.bn(self.fc(x)))


@pytest.mark.parametrize("large_numel", [1, 2**62])
def test_outputs_measured_in_their_hooks_and_batched_give_the_same_figures(monkeypatch, large_numel):
    """Large outputs are reduced in their hooks, small ones batched after the backward: the same figures."""
    from gradcheck_cli.measure import outputs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), _Block(16), _Block(16), nn.Linear(16, 3))
    x, target = torch.randn(12, 6), torch.randint(3, (12,))

    def loss_fn(output, batch):
        return F.cross_entropy(output, batch.target)

    reference = probe_model(model, fixed_batch(x, target=target), loss_fn, passes=3)
    monkeypatch.setattr(outputs, "LARGE_NUMEL", large_numel)
    result = probe_model(model, fixed_batch(x, target=target), loss_fn, passes=3)
    for expected, stats in zip(reference.layers, result.layers, strict=True):
        for key in ("forward_rms", "backward", "weight_grad_norm"):
            assert getattr(stats, key) == pytest.approx(getattr(expected, key), rel=1e-5), (stats.name, key)
            assert stats.spread.get(key) == pytest.approx(expected.spread.get(key), rel=1e-5), (stats.name, key)
    # the backward signal at the BatchNorm output (before the in-place ReLU), worked out by autograd
    h = model[1].bn(model[1].fc(model[0](x)))
    h.retain_grad()
    loss_fn(model[3](model[2](model[0](x) + torch.relu(h))), Batch(args=(x,), target=target)).backward()
    model.zero_grad(set_to_none=True)
    assert result.layer("1.bn").backward == pytest.approx(math.sqrt(12) * h.grad.norm().item(), rel=1e-5)


class _ScaledInput(nn.Module):
    """fc's input carries a gradient from a raw parameter, not from a layer, and the model's own output is
    small: a signal pass that asks only for the output's edge stops before fc's large output."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, 8), 2.0))
        self.fc = nn.Linear(8, 300)

    def forward(self, x):
        return self.fc(x * self.scale).sum(dim=1, keepdim=True)


def test_a_large_output_the_backward_did_not_reach_is_asked_for_on_the_next_pass(monkeypatch):
    from gradcheck_cli.measure import outputs

    monkeypatch.setattr(outputs, "LARGE_NUMEL", 1000)
    torch.manual_seed(0)
    model, batches = _ScaledInput(), [torch.randn(4, 8) for _ in range(3)]

    def backward_signal(x):
        y = model.fc(x * model.scale)
        y.retain_grad()
        y.sum(dim=1, keepdim=True).pow(2).mean().backward()
        model.zero_grad(set_to_none=True)
        return math.sqrt(4) * y.grad.norm().item()

    first, _, third = (backward_signal(x) for x in batches)
    result = probe_model(model, lambda i: Batch(args=(batches[i],)), lambda o, b: o.pow(2).mean(), passes=3)
    # The first pass reaches fc (it asks for the parameters' gradients); the second asks only for the model
    # output's edge and stops short of it; the third asks for fc's edge too.
    fc = result.layer("fc")
    assert fc.backward == pytest.approx((first + third) / 2, rel=1e-5)
    assert fc.spread["backward"] == pytest.approx((min(first, third), max(first, third)), rel=1e-5)


def test_clipped_gradient_figures_are_those_clip_grad_norm_leaves():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(5, 4) * 10
    loss_fn = lambda o, b: o.pow(2).sum()  # noqa: E731
    loss_fn(model(x), None).backward()
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5).item()
    assert total > 0.5  # the clipping bites
    clipped = {name: p.grad.norm().item() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    result = probe_model(model, fixed_batch(x), loss_fn, passes=2, clip_grad_norm=0.5)
    assert result.total_grad_norms == pytest.approx([0.5], rel=1e-5)
    for layer in ("0", "2"):
        assert result.layer(layer).weight_grad_norm == pytest.approx(clipped[f"{layer}.weight"], rel=1e-5)
        assert result.layer(layer).other_grad_norm == pytest.approx(clipped[f"{layer}.bias"], rel=1e-5)
    unclipped = probe_model(model, fixed_batch(x), loss_fn, passes=2, clip_grad_norm=10 * total)
    assert unclipped.total_grad_norms == pytest.approx([total], rel=1e-5)
