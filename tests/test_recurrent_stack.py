"""Stacked recurrent modules measured per layer (issue 22, item 4): nn.LSTM/GRU/RNN(num_layers > 1) runs during
the probe as its single-layer equivalents sharing its parameters, each a row of its own with its own gradient
through time; checked against independent autograd on a chain of single-layer modules with the same weights."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import FindingKind, FixId, Severity
from gradcheck_cli.common.stats import RecurrentStats
from gradcheck_cli.judge.diagnosis import Thresholds, diagnose, time_profiles_of
from gradcheck_cli.measure.probe import probe_model
from gradcheck_cli.measure.recurrent import StackedLayers, stacked, stacked_modules

FEATURES, HIDDEN, STEPS, BATCH, CLASSES = 6, 10, 12, 5, 3


class Classifier(nn.Module):
    """A recurrent module read at its last step through a linear head, in float64."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size, CLASSES)
        self.double()

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def batch_and_loss(seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, STEPS, FEATURES, dtype=torch.float64, generator=generator)
    target = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    return x, target, (lambda index: Batch(args=(x,), target=target, size=BATCH))


def loss_fn(output, batch):
    return F.cross_entropy(output, batch.target)


def single_layers(stack: nn.RNNBase) -> list[nn.RNNBase]:
    """A chain of single-layer modules holding the stack's own parameters (as tests/test_zoo.py builds it)."""
    layers = []
    for k in range(stack.num_layers):
        kind = {"nonlinearity": stack.nonlinearity} if isinstance(stack, nn.RNN) else {}
        layer = type(stack)(
            stack.input_size if k == 0 else stack.hidden_size, stack.hidden_size, batch_first=True, **kind
        ).double()
        for weight in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(layer, f"{weight}_l0", getattr(stack, f"{weight}_l{k}"))
        layers.append(layer)
    return layers


def per_sample_rms(grad: torch.Tensor) -> float:
    return math.sqrt(grad.shape[0] * grad.pow(2).sum().item())  # the probe's b: the loss is a batch mean


def per_step(grad: torch.Tensor) -> list[float]:
    return [math.sqrt(grad.shape[0] * v) for v in grad.pow(2).sum(dim=(0, 2)).tolist()]


def test_a_one_layer_module_is_measured_as_before():
    """num_layers=1 is not split: one row, and dL/dx_t at its input per step, as measured before issue 22."""
    torch.manual_seed(0)
    model = Classifier(nn.LSTM(FEATURES, HIDDEN, batch_first=True))
    x, target, make_batch = batch_and_loss()
    result = probe_model(model, make_batch, loss_fn, passes=2)

    probe = torch.zeros_like(x, requires_grad=True)
    out, _ = model.rnn(x + probe)
    out.retain_grad()
    F.cross_entropy(model.head(out[:, -1]), target).backward()
    assert [layer.name for layer in result.layers] == ["rnn", "head"]
    ((series),) = result.recurrent
    assert (series.name, series.type, series.stack) == ("rnn", "LSTM", None)
    assert series.time_steps == pytest.approx(per_step(probe.grad), rel=1e-9)
    assert result.layer("rnn").backward == pytest.approx(per_sample_rms(out.grad), rel=1e-9)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU, nn.RNN])
def test_each_layer_of_a_stack_matches_a_chain_of_single_layers_sharing_its_weights(kind):
    torch.manual_seed(1)
    model = Classifier(kind(FEATURES, HIDDEN, num_layers=4, batch_first=True))
    x, target, make_batch = batch_and_loss()
    result = probe_model(model, make_batch, loss_fn, passes=2)

    layers = single_layers(model.rnn)
    inputs, outputs, finals, h = [], [], [], x.requires_grad_(True)
    for layer in layers:
        inputs.append(h)
        h.retain_grad()
        h, final = layer(h)
        h.retain_grad()
        outputs.append(h)
        finals.append(torch.utils._pytree.tree_leaves(final))
    F.cross_entropy(model.head(h[:, -1]), target).backward()

    names = [f"rnn.l{k}" for k in range(4)]
    assert [layer.name for layer in result.layers] == [*names, "head"]  # one row per layer: 5 layers, not 2
    for k, name in enumerate(names):
        row = result.layer(name)
        assert row.type == kind.__name__
        assert row.backward == pytest.approx(per_sample_rms(outputs[k].grad), rel=1e-9)
        everything = [outputs[k], *finals[k]]  # the forward RMS is over every tensor the layer returns
        squares = sum(t.detach().pow(2).sum().item() for t in everything)
        assert row.forward_rms == pytest.approx(math.sqrt(squares / sum(t.numel() for t in everything)), rel=1e-9)
        own = [getattr(layers[k], f"{w}_l0").grad for w in ("weight_ih", "weight_hh")]
        assert row.weight_grad_norm == pytest.approx(math.hypot(*(g.norm().item() for g in own)), rel=1e-9)
    # each layer's gradient through time: the stack's output gradient followed back through that layer alone
    for k, (name, series) in enumerate(zip(names, result.recurrent)):
        assert (series.name, series.stack) == (name, "rnn")
        seen = inputs[k].detach().requires_grad_(True)
        out, _ = layers[k](seen)
        (grad,) = torch.autograd.grad(out, seen, outputs[-1].grad)
        assert series.time_steps == pytest.approx(per_step(grad), rel=1e-9)
    # the top layer's is its own input gradient, as a single-layer module's is measured
    assert result.recurrent[-1].time_steps == pytest.approx(per_step(inputs[-1].grad), rel=1e-9)


class FinalStateClassifier(Classifier):
    def forward(self, x):
        _, (h, _) = self.rnn(x)
        return self.head(h[-1])  # the top layer's final state, not the output sequence


def test_a_stack_read_through_its_final_state_gets_each_layers_gradient_through_time():
    torch.manual_seed(5)
    model = FinalStateClassifier(nn.LSTM(FEATURES, HIDDEN, num_layers=2, batch_first=True))
    x, target, make_batch = batch_and_loss()
    result = probe_model(model, make_batch, loss_fn, passes=1)

    bottom, top = single_layers(model.rnn)
    hidden = bottom(x)[0].detach()
    final = top(hidden)[1][0].detach().requires_grad_(True)
    (dh,) = torch.autograd.grad(F.cross_entropy(model.head(final[-1]), target), final)  # what the loss gives h_n

    def through(layer, inputs):  # dh followed back through one layer alone, to each step's input
        seen = inputs.detach().requires_grad_(True)
        return per_step(torch.autograd.grad(layer(seen)[1][0], seen, dh)[0])

    assert [series.name for series in result.recurrent] == ["rnn.l0", "rnn.l1"]
    assert result.recurrent[0].time_steps == pytest.approx(through(bottom, x), rel=1e-9)
    assert result.recurrent[1].time_steps == pytest.approx(through(top, hidden), rel=1e-9)
    assert all(v > 0 for v in result.recurrent[0].time_steps)


class LanguageModel(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.rnn = nn.LSTM(FEATURES, HIDDEN, num_layers=layers, batch_first=True)
        self.head = nn.Linear(HIDDEN, CLASSES)
        self.double()

    def forward(self, x):
        return self.head(self.rnn(x)[0])  # a prediction at every step


@pytest.mark.parametrize("layers", [1, 3])
def test_a_loss_at_every_step_reads_flat_through_time_in_one_layer_or_a_stack(layers):
    """Every step is near a loss: nothing decays through time, whether the LSTM has one layer or three (a signal
    that injected the gradient at the last step only would read a stack's layers as vanishing)."""
    torch.manual_seed(6)
    x, target, _ = batch_and_loss()
    targets = target.repeat(STEPS, 1).T
    result = probe_model(
        LanguageModel(layers),
        lambda index: Batch(args=(x,), target=targets, size=BATCH),
        lambda output, batch: F.cross_entropy(output.flatten(0, 1), batch.target.flatten()),
        passes=1,
    )
    profiles = time_profiles_of(result.recurrent)
    assert len(profiles) == 1 and all(abs(d) < 1 for p in profiles for d in [p.decades, *p.layer_decades.values()])


def test_the_model_is_left_exactly_as_found():
    torch.manual_seed(2)
    model = Classifier(nn.LSTM(FEATURES, HIDDEN, num_layers=3, batch_first=True, dropout=0.2))
    model.eval()
    rnn = model.rnn
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    pointers = {k: p.data_ptr() for k, p in params.items()}
    flat = list(rnn._flat_weights)
    _, _, make_batch = batch_and_loss()
    probe_model(model, make_batch, loss_fn, passes=2)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert dict(model.named_parameters()) == params and all(p.grad is None for p in params.values())
    assert {k: p.data_ptr() for k, p in params.items()} == pointers
    assert all(a is b for a, b in zip(rnn._flat_weights, flat))
    assert "forward" not in rnn.__dict__ and not rnn._forward_hooks and not rnn._forward_pre_hooks
    assert not model.training and not rnn.training


CASES = {
    "lstm": lambda: nn.LSTM(FEATURES, HIDDEN, num_layers=3, batch_first=True),
    "lstm, time first": lambda: nn.LSTM(FEATURES, HIDDEN, num_layers=3),
    "lstm, bidirectional, projected": lambda: nn.LSTM(
        FEATURES, HIDDEN, num_layers=3, batch_first=True, bidirectional=True, proj_size=4
    ),
    "gru, no bias": lambda: nn.GRU(FEATURES, HIDDEN, num_layers=2, batch_first=True, bias=False),
    "rnn relu, dropout in eval": lambda: nn.RNN(
        FEATURES, HIDDEN, num_layers=2, batch_first=True, nonlinearity="relu", dropout=0.5
    ),
}


@pytest.mark.parametrize("build", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("with_state", [False, True], ids=["no state", "given state"])
def test_layer_by_layer_computes_what_the_module_computes(build, with_state):
    torch.manual_seed(3)
    module = build().double().eval()
    x = torch.randn(BATCH, STEPS, FEATURES, dtype=torch.float64)
    if not module.batch_first:
        x = x.transpose(0, 1)
    rows = module.num_layers * (2 if module.bidirectional else 1)
    hx = None
    if with_state:
        h = torch.randn(rows, BATCH, getattr(module, "proj_size", 0) or HIDDEN, dtype=torch.float64)
        hx = (h, torch.randn(rows, BATCH, HIDDEN, dtype=torch.float64)) if isinstance(module, nn.LSTM) else h
    expected = module(x, hx)
    stacks = StackedLayers([("rnn", module)])
    probes = []
    with stacks.layer_by_layer(lambda *probe: probes.append(probe), lambda: True):
        got = module(x, hx)
    assert torch.allclose(got[0], expected[0], rtol=0, atol=1e-12)
    for a, b in zip(torch.utils._pytree.tree_leaves(got[1]), torch.utils._pytree.tree_leaves(expected[1])):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert [name for name, _, _ in probes] == [f"rnn.l{k}" for k in range(module.num_layers)]


def test_unbatched_and_packed_inputs_run_layer_by_layer():
    torch.manual_seed(4)
    module = nn.LSTM(FEATURES, HIDDEN, num_layers=2, batch_first=True).double()
    unbatched = torch.randn(STEPS, FEATURES, dtype=torch.float64)
    packed = pack_padded_sequence(
        torch.randn(BATCH, STEPS, FEATURES, dtype=torch.float64), [12, 9, 7, 3, 1], batch_first=True
    )
    expected = [module(unbatched)[0], module(packed)[0].data]
    with StackedLayers([("rnn", module)]).layer_by_layer(lambda *probe: None, lambda: True):
        got = [module(unbatched)[0], module(packed)[0].data]
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(got, expected))


def test_modules_that_cannot_be_split_run_whole():
    class Custom(nn.LSTM):  # a subclass may change the forward
        pass

    assert stacked(nn.GRU(4, 4, num_layers=2))
    assert not stacked(nn.GRU(4, 4, num_layers=1))
    assert not stacked(Custom(4, 4, num_layers=2))
    weighted = nn.LSTM(4, 4, num_layers=2)
    nn.utils.parametrizations.weight_norm(weighted, "weight_hh_l1")
    assert not stacked(weighted)
    assert stacked_modules([("a", nn.GRU(4, 4, num_layers=2)), ("b", Custom(4, 4, num_layers=2))])[0][0] == "a"


def test_a_stack_of_8_lstm_layers_vanishes_through_depth_and_gets_residual_connections():
    """GRADIENTS.md: each layer of a default nn.LSTM stack passes ~0.14-0.3 of the gradient to the one below;
    measured as one module it read as healthy (tests/zoo/catalogue.py's stacked_lstm_8)."""
    torch.manual_seed(0)
    model = Classifier(nn.LSTM(FEATURES, 16, num_layers=8, batch_first=True))
    _, _, make_batch = batch_and_loss()
    result = probe_model(model, make_batch, loss_fn, passes=1)
    diagnosis = diagnose(result, Thresholds())
    assert len(result.layers) == 9
    (depth,) = [f for f in diagnosis.findings if f.kind is FindingKind.VANISHING_GRADIENT]
    assert depth.severity is Severity.ERROR and depth.evidence["decades"] < -2
    (fix,) = [fix for fix in depth.fixes if fix.id == FixId.RESIDUAL.value]
    assert "between the stacked recurrent layers" in fix.title and "Wu et al. 2016" in fix.detail
    assert not any(fix.id == FixId.INIT.value for fix in depth.fixes)  # the head's Linear init is not the cause


def series(name, decades, stack="rnn", steps=10):
    """A hand-built per-step series whose first/last ratio is 10^decades, geometric in between."""
    return RecurrentStats(name, "LSTM", [10 ** (decades * (1 - t / (steps - 1))) for t in range(steps)], stack=stack)


def test_a_stack_is_judged_layer_by_layer_and_shown_by_its_steepest_layer():
    profiles = time_profiles_of([series("rnn.l0", -6.0), series("rnn.l1", -0.5), series("rnn.l2", -3.0)])
    (profile,) = profiles
    assert profile.name == "rnn.l0" and profile.stack == "rnn"
    assert profile.layer_decades == pytest.approx({"rnn.l0": -6.0, "rnn.l1": -0.5, "rnn.l2": -3.0})


def test_layers_that_vanish_and_layers_that_explode_are_two_findings():
    from gradcheck_cli.judge.diagnosis import _time_findings

    profiles = time_profiles_of([series("rnn.l0", -6.0), series("rnn.l1", 3.0), series("other", -0.2, stack=None)])
    assert [p.name for p in profiles] == ["rnn.l0", "rnn.l1", "other"]
    vanishing, exploding = _time_findings(profiles, Thresholds())
    assert (vanishing.kind, vanishing.layers) == (FindingKind.VANISHING_THROUGH_TIME, ["rnn.l0"])
    assert (exploding.kind, exploding.layers) == (FindingKind.EXPLODING_THROUGH_TIME, ["rnn.l1"])
    assert "1 of the 2 layers of rnn" in vanishing.message
    assert vanishing.evidence["module"] == "rnn.l0" and vanishing.evidence["stack"] == "rnn"
