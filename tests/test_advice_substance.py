"""No advice without substance (issue 22, item 5): clipping only where a threshold below the measured norms
bounds a spike, no learning rate below a practical one, relative-gradient warnings judged against the lr and
never for a weight whose output goes straight into a normalization layer."""

import json
import textwrap

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.choices import CauseId, FindingKind, FixId
from gradcheck_cli.judge.diagnosis import diagnose
from gradcheck_cli.judge.fixes import PRACTICAL_LR_FLOOR
from gradcheck_cli.scan.checks import check
from tests.synthetic import geometric_result


def exploding(total_grad_norms, relative_grad=0.01):
    result = geometric_result(depth=30, gain=2.0, weight_scale=3.0, relative_grad=relative_grad)
    result.total_grad_norms = total_grad_norms
    return diagnose(result)


def findings_of(diagnosis, kind):
    return [f for f in diagnosis.findings if f.kind is kind]


def fix_of(finding, fix_id):
    found = [fix for fix in finding.fixes if fix.id == fix_id.value]
    return found[0] if found else None


# --- 1. clipping --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norms", [[4.66], [4.6, 4.66, 4.7], [1e5, 1.05e5]])
def test_no_clipping_when_no_threshold_below_the_measured_norm_bounds_a_spike(norms):
    """Regression: 'Clip the gradient norm at max_norm=4.7' when the measured norm was 4.66 (issue 22)."""
    (finding,) = findings_of(exploding(norms), FindingKind.EXPLODING_GRADIENT)
    assert fix_of(finding, FixId.CLIPPING) is None


def test_clipping_with_a_spike_is_suggested_below_the_largest_norm():
    (finding,) = findings_of(exploding([1.0, 1.07, 1.2, 9.0]), FindingKind.EXPLODING_GRADIENT)
    clip = fix_of(finding, FixId.CLIPPING)
    assert clip.params["max_norm"] == 1.1  # the median 1.135, rounded down, never up to a norm it should bound
    assert clip.params["max_norm"] < 9.0
    assert "cuts the largest step by 88%" in clip.detail


# --- 2. the learning-rate floor ----------------------------------------------------------------------


def test_a_learning_rate_below_the_practical_floor_is_not_suggested():
    """Regression: 'Lower the learning rate to 2.8e-09 or less' (issue 22)."""
    diagnosis = exploding([1.0], relative_grad=3.6e7)  # lr <= 0.1 / 3.6e7 = 2.8e-9 would keep a step at 10%
    (relative,) = findings_of(diagnosis, FindingKind.LARGE_RELATIVE_GRADIENT)
    assert "below any practical learning rate" in relative.message and "structural fix" in relative.message
    for finding in diagnosis.findings:
        assert fix_of(finding, FixId.LEARNING_RATE) is None
        assert [fix.id for fix in finding.fixes]  # the structural fixes are still there
    (cause,) = [c for c in relative.causes if c.id is CauseId.LEARNING_RATE]
    assert "structural fix, not a smaller lr" in cause.summary


def test_a_learning_rate_above_the_floor_is_suggested():
    diagnosis = exploding([1.0], relative_grad=1e3)
    (relative,) = findings_of(diagnosis, FindingKind.LARGE_RELATIVE_GRADIENT)
    fix = fix_of(relative, FixId.LEARNING_RATE)
    assert fix.params["lr"] == 1e-4 >= PRACTICAL_LR_FLOOR
    assert "practical" not in relative.message


# --- 3. relative gradients: against the lr, not for normalized weights ---------------------------------


def conv_net(batchnorm: bool) -> nn.Module:
    """A conv whose weight is 1e-3 of its default scale, so ||g||/||w|| is large, then BatchNorm or not."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(1e-3)
    norm = [nn.BatchNorm2d(8)] if batchnorm else []
    return nn.Sequential(conv, *norm, nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def relative_findings(report):
    return findings_of(report.diagnosis, FindingKind.LARGE_RELATIVE_GRADIENT)


def test_a_conv_followed_by_batchnorm_gets_no_relative_gradient_warning():
    report = check(conv_net(batchnorm=True), torch.randn(16, 3, 8, 8), lr=0.1)
    conv = report.result.layers[0]
    assert conv.type == "Conv2d" and conv.normalized_by == report.result.layers[1].name
    assert conv.relative_grad > 1e4  # scale-invariant: a step this large grows ||w|| and shrinks the next one
    assert relative_findings(report) == []
    assert all(fix.id != FixId.LEARNING_RATE.value for f in report.diagnosis.findings for fix in f.fixes)


def test_the_same_conv_without_batchnorm_warns_and_names_the_lr():
    report = check(conv_net(batchnorm=False), torch.randn(16, 3, 8, 8), lr=0.1)
    assert report.result.layers[0].normalized_by is None
    (finding,) = relative_findings(report)
    assert finding.layers == [report.result.layers[0].name]
    assert "one SGD step with lr 0.1 would change it" in finding.message
    assert "default" not in finding.message
    assert finding.evidence["lr"] == 0.1


def test_the_verdict_does_not_depend_on_module_names():
    """Normalized is read off the tensors: the same conv and BatchNorm, named and nested otherwise."""
    plain = conv_net(batchnorm=True)
    nested = nn.Module()
    nested.stem = nn.Sequential()
    nested.stem.add_module("weird_name", plain[0])
    nested.stem.add_module("bn_not", plain[1])
    nested.forward = lambda x: plain[4](plain[3](plain[2](nested.stem(x))))
    nested.tail = nn.ModuleList([plain[4]])
    report = check(nested, torch.randn(16, 3, 8, 8), lr=0.1)
    assert report.result.layer("stem.weird_name").normalized_by == "stem.bn_not"
    assert relative_findings(report) == []


def test_a_norm_that_reads_a_residual_sum_does_not_make_the_layer_before_it_normalized():
    class PostNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.norm, self.head = nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.norm(x + self.fc(x)))

    report = check(PostNorm(), torch.randn(16, 8))
    assert report.result.layer("fc").normalized_by is None


def test_the_default_lr_is_named_as_the_default(tmp_path):
    model = tmp_path / "model.py"
    model.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            torch.manual_seed(0)
            model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))
            with torch.no_grad():
                model[0].weight.mul_(1e-4)
            """
        )
    )
    runner = CliRunner()
    args = ["scan", str(model), "--input-shape", "16,3,8,8", "--format", "json"]
    default = json.loads(runner.invoke(app, args).stdout)
    (finding,) = [f for f in default["findings"] if f["kind"] == "large_relative_gradient"]
    assert "lr 0.001 is the default of --lr: pass the one you train with." in finding["message"]
    given = json.loads(runner.invoke(app, [*args, "--lr", "1e-5"]).stdout)
    # at lr 1e-5 a step changes the conv by under 10% of its norm: no warning against that lr
    assert [f for f in given["findings"] if f["kind"] == "large_relative_gradient"] == []
