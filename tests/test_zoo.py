"""The zoo (issue 22): real architectures from torchvision, timm and transformers with random init, and plain
PyTorch designs, each scanned as a user scans a model file with no flags, against the verdict it should get.

Run with ``make test-zoo`` (``pytest -m zoo``), which installs the [zoo] extra first; the default run leaves
these out. What today's gradcheck gets wrong is marked ``xfail(strict=True)`` with its cause (the catalogue's
``known_failures``, tests/zoo/variants.py's ``KNOWN_FAILURES``): a fix that makes one pass fails the suite
until its mark is removed. tests/zoo/BASELINE.md shows today's verdicts, decades and times
(``tests/zoo/measure.py``).
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.choices import FindingKind, Verdict
from gradcheck_cli.judge.diagnosis import DECADES_ERROR
from tests.zoo import designs
from tests.zoo.catalogue import ARCHITECTURES, Check, Expected, Family
from tests.zoo.scanning import Scan, alarms, depth_alarms, errors, scan_architecture, top_finding, write_model_file
from tests.zoo.variants import INVARIANCE, KNOWN_FAILURES

pytestmark = pytest.mark.zoo

# Same weights, same verdict: decades may differ by this much under other names or nesting (issue 22).
INVARIANCE_TOLERANCE = 0.1


def cases(check: Check, names) -> list:
    """The architectures as test parameters, each known failure of ``check`` marked strict xfail."""
    params = []
    for name in names:
        reason = ARCHITECTURES[name].known_failures.get(check)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Each scan once per session, shared by the tests that read it; a scan that failed fails each of them."""
    folder = tmp_path_factory.mktemp("zoo")
    done: dict[tuple, Scan | Exception] = {}

    def scan(name: str, *, variant: str | None = None, example_inputs: bool = True) -> Scan:
        reason = ARCHITECTURES[name].unavailable()
        if reason:
            pytest.skip(reason)
        key = (name, variant, example_inputs)
        if key not in done:
            try:
                done[key] = scan_architecture(folder, name, variant=variant, example_inputs=example_inputs)
            except Exception as error:  # GradcheckError (exit 2) or a crash: each test that needs it fails
                done[key] = error
        if isinstance(done[key], Exception):
            raise done[key]
        return done[key]

    return scan


def describe(scan: Scan) -> str:
    report = scan.report
    decades = report.diagnosis.profile.decades
    shown = "-" if decades is None else f"{decades:+.2f}"
    return f"{report.verdict.value} {shown}, top finding {top_finding(report)}, alarms {alarms(report)}"


# ---------------------------------------------------------------------------------------------------------
# The catalogue itself


def test_the_catalogue_spans_the_families_issue_22_names():
    families = {architecture.family for architecture in ARCHITECTURES.values()}
    assert families == set(Family)
    assert len(ARCHITECTURES) >= 30
    for name, architecture in ARCHITECTURES.items():
        assert architecture.name == name and architecture.why
        assert set(architecture.known_failures) <= set(Check), name
        assert all(reason.startswith("issue 22") for reason in architecture.known_failures.values()), name
    for (name, variant), reason in KNOWN_FAILURES.items():
        assert variant in INVARIANCE[name] and reason.startswith("issue 22")


def test_the_zoo_packages_are_installed_so_that_nothing_skips():
    """``make test-zoo`` installs the [zoo] extra; without it the torchvision and timm models would skip."""
    needed = {package for architecture in ARCHITECTURES.values() for package in architecture.needs}
    missing = sorted(package for package in needed if importlib.util.find_spec(package) is None)
    assert not missing, f"{', '.join(missing)} not importable: run `make test-zoo`, which installs the [zoo] extra"


# ---------------------------------------------------------------------------------------------------------
# Verdicts: each architecture with its example inputs and the default options


@pytest.mark.parametrize("name", cases(Check.VERDICT, ARCHITECTURES))
def test_verdict(scans, name):
    architecture = ARCHITECTURES[name]
    scan = scans(name)
    report = scan.report
    if architecture.expected in (Expected.HEALTHY, Expected.HEALTHY_AFTER_ZERO_INIT):
        # No error-level false alarm, and nothing that says vanishing or exploding under a HEALTHY verdict.
        assert report.verdict is Verdict.HEALTHY, describe(scan)
        assert not errors(report) and not depth_alarms(report), describe(scan)
        if architecture.expected is Expected.HEALTHY_AFTER_ZERO_INIT:  # the zeros recognized, as a note
            assert FindingKind.ZERO_INIT in {finding.kind for finding in report.diagnosis.findings}, describe(scan)
    else:
        assert report.verdict.value == architecture.expected.value, describe(scan)


@pytest.mark.parametrize("name", ["resnet18", "deep_sigmoid_mlp"])
def test_the_cli_with_no_flags_gives_the_scans_verdict_and_exit_code(scans, tmp_path, name):
    """The zoo scans through scan_target, as the CLI's worker does: the CLI itself agrees (--format only renders)."""
    scan = scans(name)
    result = CliRunner().invoke(
        app, ["scan", str(write_model_file(tmp_path, name)), "--format", "json"], env={"NO_COLOR": "1"}
    )
    assert json.loads(result.stdout)["verdict"] == scan.report.verdict.value
    assert result.exit_code == (1 if scan.report.fails() else 0), result.output


# ---------------------------------------------------------------------------------------------------------
# Inputs: models that say what they take are scanned without example_inputs() too


@pytest.mark.parametrize(
    "name", cases(Check.INFERS_INPUTS, [name for name, a in ARCHITECTURES.items() if a.check_inference])
)
def test_inputs_are_inferred(scans, name):
    scan = scans(name, example_inputs=False)  # a GradcheckError here is the scan's exit 2
    assert scan.report.result.layers, describe(scan)


# ---------------------------------------------------------------------------------------------------------
# Invariance: the same weights under other names and nesting give the same verdict and decades


def invariance_cases() -> list:
    params = []
    for name, variants in INVARIANCE.items():
        for variant in variants:
            reason = KNOWN_FAILURES.get((name, variant))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(name, variant, marks=marks, id=f"{name}-{variant}"))
    return params


@pytest.mark.parametrize("name, variant", invariance_cases())
def test_same_weights_renamed_or_renested_give_the_same_verdict(scans, name, variant):
    built, varied = scans(name), scans(name, variant=variant)
    assert varied.report.verdict is built.report.verdict, f"as built: {describe(built)}; {variant}: {describe(varied)}"
    before, after = built.report.diagnosis.profile.decades, varied.report.diagnosis.profile.decades
    assert (before is None) == (after is None), f"as built: {describe(built)}; {variant}: {describe(varied)}"
    if before is not None:
        assert abs(after - before) <= INVARIANCE_TOLERANCE, (
            f"as built: {describe(built)}; {variant}: {describe(varied)}"
        )


@pytest.mark.parametrize("name, variant", [(n, v) for n, variants in INVARIANCE.items() for v in variants])
def test_each_variant_computes_the_same_function_with_the_same_parameters(name, variant):
    architecture = ARCHITECTURES[name]
    reason = architecture.unavailable()
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    built = architecture.build()
    parameters = {id(p) for p in built.parameters()}
    x = architecture.example_inputs()
    with torch.no_grad():
        expected = built(x)
        varied = INVARIANCE[name][variant](built)
        assert {id(p) for p in varied.parameters()} == parameters
        torch.testing.assert_close(varied(x), expected)


# ---------------------------------------------------------------------------------------------------------
# The pathological expectations, measured without gradcheck


def rms_decades(first: torch.Tensor, last: torch.Tensor) -> float:
    """log10 of the RMS gradient at the input end over that at the output end."""
    return math.log10(first.pow(2).mean().sqrt().item() / last.pow(2).mean().sqrt().item())


def test_the_plain_vgg_vanishes_by_independent_hooks(torch_seed):
    """dL/d(conv output) at the first conv against the last: the catalogue's VANISHING is measured, not assumed."""
    model = designs.NamedStageVGG()
    outputs = []

    def keep(module, args, output):
        output.retain_grad()
        outputs.append(output)

    handles = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        logits = model(ARCHITECTURES["vgg_named_stages_default_init"].example_inputs())
        nn.functional.cross_entropy(logits, torch.randint(0, 10, (len(logits),))).backward()
    finally:
        for handle in handles:
            handle.remove()
    assert len(outputs) == 15
    assert rms_decades(outputs[0].grad, outputs[-1].grad) < -DECADES_ERROR


def test_the_stacked_lstm_vanishes_layer_by_layer(torch_seed):
    """The 8 layers of nn.LSTM(num_layers=8) run as 8 single-layer LSTMs with the same weights: the gradient
    reaching layer 0's input against that reaching layer 7's."""
    model = designs.StackedLSTMClassifier()
    stacked = model.lstm
    layers = []
    for index in range(stacked.num_layers):
        layer = nn.LSTM(
            stacked.input_size if index == 0 else stacked.hidden_size, stacked.hidden_size, batch_first=True
        )
        for weight in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(layer, f"{weight}_l0", getattr(stacked, f"{weight}_l{index}"))
        layers.append(layer)
    x = ARCHITECTURES["stacked_lstm_8"].example_inputs().requires_grad_(True)
    inputs, hidden = [], x
    for layer in layers:
        hidden.retain_grad()
        inputs.append(hidden)
        hidden, _ = layer(hidden)
    assert torch.allclose(hidden, stacked(x)[0], atol=1e-5)  # the same function, layer by layer
    logits = model.head(hidden[:, -1])
    nn.functional.cross_entropy(logits, torch.randint(0, 10, (len(logits),))).backward()
    assert rms_decades(inputs[0].grad, inputs[-1].grad) < -DECADES_ERROR
