"""The example models a newcomer scans first must say what their docstrings promise."""

from pathlib import Path

import pytest

from gradcheck_cli.common.choices import FindingKind, Verdict
from gradcheck_cli.common.options import ScanOptions
from gradcheck_cli.scan.scan import scan_target

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "healthy_resnet.py": Verdict.HEALTHY,
    "lstm_language_model.py": Verdict.HEALTHY,
    "vanishing_mlp.py": Verdict.VANISHING,
    "exploding_linear.py": Verdict.EXPLODING,
    "vanishing_rnn.py": Verdict.VANISHING,
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_verdict(name):
    report = scan_target(str(EXAMPLES / name), ScanOptions())
    assert report.verdict is EXPECTED[name]


def test_exploding_example_is_caught_by_the_backward_signal_not_the_weight_gradients():
    report = scan_target(str(EXAMPLES / "exploding_linear.py"), ScanOptions())
    hidden = report.result.layers[:-1]
    weight_grads = [layer.weight_grad_norm for layer in hidden]
    assert max(weight_grads) / min(weight_grads) < 10
    assert report.diagnosis.findings[0].kind is FindingKind.EXPLODING_GRADIENT
    assert dict(report.context)["loss"] == "loss_fn(output, inputs) from the model file"


def test_rnn_example_vanishes_through_time():
    report = scan_target(str(EXAMPLES / "vanishing_rnn.py"), ScanOptions())
    (profile,) = report.diagnosis.time_profiles
    assert profile.decades < -5
    assert report.diagnosis.findings[0].kind is FindingKind.VANISHING_THROUGH_TIME
    assert [fix.id for fix in report.diagnosis.findings[0].fixes] == ["lstm"]


def test_language_model_tied_weights_and_inferred_tokens():
    report = scan_target(str(EXAMPLES / "lstm_language_model.py"), ScanOptions())
    context = dict(report.context)
    assert "Embedding" in context["inputs"] and "tokens (8, 16) below 1000" in context["inputs"]
    assert "cross-entropy" in context["loss"]
    assert report.result.layer("decoder").shared_with == "embed"
