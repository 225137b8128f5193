"""Zero-initialized designs come in chains (issue 22, item 3): zero weights and zero gains are recognized from
their values, a copy is stepped as many times as the chain needs, and the design is judged then."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import CauseId, FindingKind, Severity, Verdict
from gradcheck_cli.examine.check_model import check_model
from gradcheck_cli.examine.zero_init import ZERO_INIT_MAX_STEPS, recognize, settle_zero_init
from gradcheck_cli.judge.causes import causes_for
from gradcheck_cli.judge.diagnosis import diagnose
from gradcheck_cli.judge.fixes import FixContext
from gradcheck_cli.measure.probe import probe_model
from tests.synthetic import geometric_result

WIDTH = 32


def cross_entropy(output, batch):
    return F.cross_entropy(output, batch.target)


def vectors(index):
    return Batch(args=(torch.randn(16, WIDTH),), target=torch.randint(0, 10, (16,)), size=16)


def images(index):
    return Batch(args=(torch.randn(8, 3, 8, 8),), target=torch.randint(0, 10, (8,)), size=8)


class ReZeroBlock(nn.Module):
    """x + alpha * f(x), alpha a 0-d parameter at zero (Bachlechner et al. 2020)."""

    def __init__(self, width):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + self.alpha * self.fc2(torch.relu(self.fc1(x)))


class NFBlock(nn.Module):
    """x + gain * conv2(relu(conv1(x))) with a per-channel gain of shape (C, 1, 1) at zero (NF-ResNets, Brock et
    al. 2021): neither a weight by name nor a single number."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.skipinit_gain = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, x):
        return x + self.skipinit_gain * self.conv2(torch.relu(self.conv1(x)))


class FixupBlock(nn.Module):
    """x + fc2(relu(fc1(x))) with fc2 at zero (Fixup, Zhang et al. 2019)."""

    def __init__(self, width):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


def rezero_model():
    return nn.Sequential(nn.Linear(WIDTH, WIDTH), *(ReZeroBlock(WIDTH) for _ in range(4)), nn.Linear(WIDTH, 10))


def nf_model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        *(NFBlock(8) for _ in range(3)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def fixup_model():
    """Zero branches behind a zero head: the head unlocks at the first step, the branches at the second."""
    model = nn.Sequential(*(FixupBlock(WIDTH) for _ in range(4)), nn.Linear(WIDTH, 10))
    nn.init.zeros_(model[-1].weight)
    return model


def zero_head_model():
    model = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10))
    nn.init.zeros_(model[-1].weight)
    return model


def dead_layer_model():
    """A layer at zero (weight and bias) whose ReLU passes no gradient back at 0 (relu'(0) = 0 in PyTorch), and
    nothing else feeds what follows: its own gradient is relu'(0) * ... = 0, so no step ever moves it, and the
    layer before it stays cut off too. Zeros that are real, not a design."""
    model = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10))
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[2].bias)
    return model


def zero_init_finding(report):
    (found,) = [f for f in report.diagnosis.findings if f.kind is FindingKind.ZERO_INIT]
    return found


@pytest.mark.parametrize(
    "build, make_batch, steps",
    [(rezero_model, vectors, 1), (nf_model, images, 1), (fixup_model, vectors, 2), (zero_head_model, vectors, 1)],
    ids=["rezero-scalar-alpha", "nf-channel-gain", "fixup-two-zero-chain", "zero-head"],
)
def test_a_zero_initialized_design_is_healthy_with_one_info_finding_naming_its_steps(build, make_batch, steps):
    torch.manual_seed(0)
    model = build()
    report = check_model(model, make_batch, cross_entropy)
    assert report.verdict is Verdict.HEALTHY and not report.fails()
    assert not [f for f in report.diagnosis.findings if f.severity is Severity.ERROR]
    found = zero_init_finding(report)
    assert found.severity is Severity.INFO
    assert found.evidence["steps"] == steps
    assert found.evidence["verdict_after_step"] == "healthy"
    assert found.causes[0].id is CauseId.ZERO_INIT
    assert ("one SGD step" if steps == 1 else f"After {steps} SGD steps") in found.message


def test_the_measurement_at_initialization_shows_the_zeros_the_chain_settles():
    """Without the steps the same models read as ERROR zero_gradient: the settled verdict above is the chain's."""
    torch.manual_seed(0)
    for build, make_batch in [(rezero_model, vectors), (nf_model, images), (fixup_model, vectors)]:
        diagnosis = diagnose(probe_model(build(), make_batch, cross_entropy))
        assert diagnosis.verdict is not Verdict.HEALTHY, build.__name__


def test_zero_gains_are_read_from_values_whatever_their_names_and_biases_are_left_out():
    torch.manual_seed(0)
    model = nf_model()
    model[1].conv1.bias.data.zero_()  # a zero 1-D bias gates nothing
    frozen = NFBlock(8)
    frozen.skipinit_gain.requires_grad_(False)  # a frozen zero stays zero: not a design that steps unlock
    model[2] = frozen
    result = probe_model(model, images, cross_entropy)
    zero = {layer.name: layer.zero_parameters for layer in result.layers if layer.zero_parameters}
    assert zero == {"1": ["skipinit_gain"], "3": ["skipinit_gain"]}


def test_real_zeros_that_no_step_unlocks_keep_their_error():
    torch.manual_seed(0)
    report = check_model(dead_layer_model(), vectors, cross_entropy)
    zero = [f for f in report.diagnosis.findings if f.kind is FindingKind.ZERO_GRADIENT]
    assert zero and zero[0].severity is Severity.ERROR
    assert "still does not flow" in zero[0].message
    assert "the last step unblocked no layer" in zero[0].message  # stopped early, not after all the steps
    assert not [f for f in report.diagnosis.findings if f.kind is FindingKind.ZERO_INIT]
    assert report.fails()


def test_a_chain_still_blocked_after_the_bound_says_so():
    """settle_zero_init on a measurement after the last allowed step that still has zeros: the findings stay."""
    torch.manual_seed(0)
    result = probe_model(dead_layer_model(), vectors, cross_entropy)
    diagnosis = recognize(result, diagnose(result))
    assert diagnosis.needs_step_check
    settled = settle_zero_init(diagnosis, diagnose(result), ZERO_INIT_MAX_STEPS)
    assert settled.verdict is diagnosis.verdict
    message = next(f.message for f in settled.findings if f.kind is FindingKind.ZERO_GRADIENT)
    assert f"After {ZERO_INIT_MAX_STEPS} SGD steps" in message and "unblocked no layer" not in message


def test_a_design_whose_stepped_copy_has_an_error_is_judged_by_the_copy():
    """A deep sigmoid stack behind a zero head: the zero is a design, the vanishing it hid is not."""
    torch.manual_seed(0)
    layers = []
    for _ in range(20):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(WIDTH, 10))
    nn.init.zeros_(model[-1].weight)
    report = check_model(model, vectors, cross_entropy)
    assert zero_init_finding(report).evidence["steps"] == 1
    assert report.verdict is Verdict.VANISHING
    vanishing = next(f for f in report.diagnosis.findings if f.kind is FindingKind.VANISHING_GRADIENT)
    assert vanishing.message.startswith("After one SGD step (lr 0.01) on a copy: ")


def test_the_model_is_left_as_found():
    torch.manual_seed(0)
    model = fixup_model()
    model.eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    report = check_model(model, vectors, cross_entropy)
    assert zero_init_finding(report).evidence["steps"] == 2  # the copy was stepped twice
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert torch.count_nonzero(model[-1].weight) == 0


def test_init_scale_does_not_compound_over_residual_branches():
    """Issue 22: Fixup read "init_scale 0.122 ... 10^-60.2 over 66 layers", multiplying the per-layer term over
    layers that sit in parallel branches. With skip connections it is one layer's worth."""
    series = geometric_result(depth=20, gain=0.5, weight_scale=0.3, residual=False)
    residual = geometric_result(depth=20, gain=0.5, weight_scale=0.3, residual=True)

    def init_scale(result):
        profile = diagnose(result).profile
        causes = causes_for(FindingKind.VANISHING_GRADIENT, {"decades": -5.7}, FixContext(result, profile))
        (cause,) = [c for c in causes if c.id is CauseId.INIT_SCALE]
        return cause

    term, count = init_scale(series).evidence["term_per_layer"], init_scale(series).evidence["layers"]
    assert count == 21  # the 20 layers and the head
    assert init_scale(series).decades == pytest.approx(count * -math.log10(term), rel=1e-3)
    assert f"over {count} layers" in init_scale(series).summary
    assert init_scale(residual).decades == pytest.approx(-math.log10(term), rel=1e-3)
    assert "does not compound" in init_scale(residual).summary
    assert "10^" not in init_scale(residual).summary


def test_zero_weights_are_not_a_weight_scale():
    """A zero-initialized design's zeros are no init scale: they stay out of the weight-scale median."""
    result = geometric_result(depth=10, weight_scale=1.0)
    for layer in result.layers[:6]:  # most layers at zero: the median would be 0
        layer.weight_std, layer.weight_norm = 0.0, 0.0
    scale, count = FixContext(result, diagnose(result).profile).weight_scale()
    assert count == 5 and scale == pytest.approx(1.0)  # the 4 others and the head
