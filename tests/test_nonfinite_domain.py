"""A NaN made by an op outside its domain gets the op named and a domain fix with code (issue 22, item 5).

Regression: a NaN from ``torch.log`` of negatives got clipping as its only fix. Now the watched pass names the
torch op inside the module (a TorchFunctionMode, measure/nonfinite/), the range that left its domain and the line
that called it; the finding's cause is ``domain_error`` and its one fix ``safe_op``, whose code is the user's
own call with the operand clamped. Each model below is scanned as a file, the suggested line is put in place of
the call it names, and the fixed file scans finite.
"""

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import CauseId, FindingKind, FixId, LossKind, Verdict
from gradcheck_cli.common.options import ScanOptions
from gradcheck_cli.common.stats import NonfiniteOp
from gradcheck_cli.judge.diagnosis import Thresholds
from gradcheck_cli.judge.fixes_safe_code import rewrite_call
from gradcheck_cli.load.objective import Objective
from gradcheck_cli.measure.nonfinite import trace_nonfinite
from gradcheck_cli.measure.nonfinite.caller import call_source
from gradcheck_cli.scan.scan import scan_target

MODEL = """\
import torch
from torch import nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        h = self.fc(x)
        return {expression}


def build_model():
    return Model()
"""
LINE = 12  # the line of {expression} in MODEL

# expression -> (op, domain, what the detail says, the suggested line, the operand reached out of its domain)
CASES = {
    "log": ("torch.log(h)", "torch.log", "log", "torch.log of values down to -", "torch.log(h.clamp_min(1e-6))"),
    "sqrt": ("h.sqrt()", "torch.sqrt", "sqrt", "torch.sqrt of values down to -", "h.clamp_min(1e-6).sqrt()"),
    "division": (
        "torch.relu(h - 1) / torch.relu(h - 1).sum(-1, keepdim=True)",
        "torch.div",
        "division",
        "division by 0 (divisor in [0, ",
        "torch.relu(h - 1) / torch.relu(h - 1).sum(-1, keepdim=True).clamp_min(1e-6)",
    ),
    "fractional power": ("h ** 0.5", "torch.pow", "pow", "to the power 0.5", "h.clamp_min(1e-6) ** 0.5"),
    "acos": (
        "torch.acos(3 * h)",
        "torch.acos",
        "acos",
        "(outside [-1, 1])",
        "torch.acos((3 * h).clamp(-1 + 1e-6, 1 - 1e-6))",
    ),
}


def scan_file(tmp_path, expression, name="model.py"):
    path = tmp_path / name
    path.write_text(MODEL.format(expression=expression))
    torch.manual_seed(0)  # the file builds its weights from the global RNG
    return path, scan_target(str(path), ScanOptions())


def nonfinite(report):
    (finding,) = [f for f in report.diagnosis.findings if f.kind is FindingKind.NONFINITE]
    return finding


def safe_line(fix):
    """The line of the fix's code that replaces the call: its first line that is not a comment."""
    return next(line for line in fix.code.splitlines() if not line.startswith("#"))


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_domain_error_names_the_op_and_its_fix_cures_it(tmp_path, case):
    expression, name, domain, detail, expected = CASES[case]
    path, report = scan_file(tmp_path, expression)

    assert report.verdict is Verdict.NONFINITE
    origin = report.result.nonfinite_origin
    op = origin.op
    assert (origin.stage, op.name, op.domain, op.singular) == ("forward", name, domain, False)
    assert detail in op.detail
    assert op.location == f"{path}:{LINE}" and op.source in expression
    low, high = op.operand_range
    if domain == "division":
        assert low == 0.0  # a sum of ReLU outputs: 0 where every unit is off
    elif domain == "acos":
        assert low < -1 or high > 1
    else:
        assert low < 0
    finding = nonfinite(report)
    assert f"made by {op.detail} at {path}:{LINE}" in finding.message
    assert finding.evidence["origin_op"] == name and finding.evidence["origin_domain"] == domain
    assert [cause.id for cause in finding.causes] == [CauseId.DOMAIN_ERROR]
    assert [fix.id for fix in finding.fixes] == [FixId.SAFE_OP.value]  # no clipping, no init
    assert all(fix.id != FixId.CLIPPING.value for f in report.diagnosis.findings for fix in f.fixes)
    fix = finding.fixes[0]
    assert safe_line(fix) == expected
    assert fix.params["replaces"] == op.source and fix.params["eps"] == 1e-6

    fixed, fixed_report = scan_file(tmp_path, expression.replace(op.source, safe_line(fix)), "fixed.py")
    assert fixed_report.result.nonfinite_origin is None
    assert fixed_report.verdict is not Verdict.NONFINITE
    assert FindingKind.NONFINITE not in {f.kind for f in fixed_report.diagnosis.findings}


def test_a_nan_the_backward_pass_makes_at_sqrt_of_0_names_the_sqrt(tmp_path):
    # A mask gives exact zeros: sqrt is finite there, its slope is not, and the mask's 0 * Inf is NaN.
    path, report = scan_file(tmp_path, "torch.sqrt(h * (h > 0))")

    origin = report.result.nonfinite_origin
    assert origin.stage == "backward" and origin.op.singular
    assert origin.op.detail == "the gradient of torch.sqrt at 0 (its slope is infinite there)"
    assert origin.op.operand_range[0] == 0.0
    finding = nonfinite(report)
    assert finding.causes[0].id is CauseId.DOMAIN_ERROR and "infinite slope" in finding.causes[0].summary
    fix = finding.fixes[0]
    assert (fix.id, safe_line(fix)) == (FixId.SAFE_OP.value, "torch.sqrt((h * (h > 0)).clamp_min(1e-6))")
    _, fixed = scan_file(tmp_path, safe_line(fix), "fixed.py")
    assert fixed.result.nonfinite_origin is None


def test_a_nan_hidden_by_torch_where_is_found_in_the_branch_not_taken(tmp_path):
    # The forward output is finite; the sqrt of the negatives still sends NaN back (0 * NaN is NaN).
    path, report = scan_file(tmp_path, "torch.where(h > 0, h.sqrt(), h)")

    origin = report.result.nonfinite_origin
    assert origin.stage == "backward"
    assert (origin.op.name, origin.op.source, origin.op.singular) == ("torch.sqrt", "h.sqrt()", False)
    fix = nonfinite(report).fixes[0]
    assert safe_line(fix) == "h.clamp_min(1e-6).sqrt()"
    _, fixed = scan_file(tmp_path, f"torch.where(h > 0, {safe_line(fix)}, h)", "fixed.py")
    assert fixed.result.nonfinite_origin is None


def test_exp_overflow_is_clamped_below_float32s_limit(tmp_path):
    path, report = scan_file(tmp_path, "torch.exp(200 * h)")

    op = report.result.nonfinite_origin.op
    assert op.domain == "exp" and "(float32 overflows above 88.7)" in op.detail
    fix = nonfinite(report).fixes[0]
    assert safe_line(fix) == "torch.exp((200 * h).clamp_max(80))" and fix.params["max"] == 80.0
    assert "torch.logsumexp" in fix.code
    _, fixed = scan_file(tmp_path, safe_line(fix), "fixed.py")
    assert fixed.result.nonfinite_origin is None


def test_a_call_that_does_not_parse_alone_gets_placeholder_code_with_its_location(tmp_path):
    path, report = scan_file(tmp_path, "(h\n            / torch.relu(h - 1).sum(-1, keepdim=True))")

    op = report.result.nonfinite_origin.op
    assert op.domain == "division" and op.location == f"{path}:{LINE}"
    fix = nonfinite(report).fixes[0]
    assert safe_line(fix) == "a / b.clamp_min(1e-6)  # instead of a / b"
    assert "replaces" not in fix.params
    assert fix.code.startswith(f"# {path}:{LINE}, in h / torch.relu(h - 1).sum(-1, keepdim=True): division by 0")
    assert "b stands for the divisor" in fix.code


def test_a_minus_inf_mask_made_by_log_does_not_hide_the_op_that_made_nan():
    class Masked(nn.Module):
        def forward(self, x):
            mask = torch.log((x > 0).float())  # 0 where x > 0, -Inf elsewhere: an additive mask
            return torch.softmax(x + mask, dim=-1) + torch.sqrt(x)

    origin = trace_nonfinite(Masked(), Batch(args=(torch.randn(8, 4),)), lambda out, batch: out.mean())

    assert (origin.stage, origin.op.name) == ("forward", "torch.sqrt")


def test_an_op_that_is_not_a_domain_error_keeps_the_other_fixes(tmp_path):
    # A matmul overflowing float32 has no domain to keep to: no domain cause, no safe_op fix.
    path, report = scan_file(tmp_path, "h @ (torch.ones(8, 8) * 1e38)")

    op = report.result.nonfinite_origin.op
    assert (op.name, op.domain) == ("torch.matmul", None) and "overflowed on finite values" in op.detail
    finding = nonfinite(report)
    assert all(cause.id is not CauseId.DOMAIN_ERROR for cause in finding.causes)
    assert all(fix.id != FixId.SAFE_OP.value for fix in finding.fixes)


def test_cli_text_shows_the_op_the_cause_and_the_safe_code(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL.format(expression="torch.log(h)"))
    result = CliRunner().invoke(app, ["scan", str(path)], env={"COLUMNS": "100", "NO_COLOR": "1"})

    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())  # the message wraps at 100 columns
    assert "made by torch.log of values down to -" in text and f"at {path}:{LINE}" in text
    assert "cause 1: [domain_error]" in text
    assert "fix 1: [safe_op] Keep the input of torch.log positive (clamp it at 1e-6)" in text
    assert "\n     torch.log(h.clamp_min(1e-6))\n" in result.output
    assert "[clipping]" not in result.output and "clip_grad_norm_" not in result.output


@pytest.mark.parametrize(
    ("domain", "source", "operand_range", "expected"),
    [
        ("log", "return torch.log(h)", (-1.0, 1.0), "torch.log(h.clamp_min(1e-6))"),  # a whole line (Python 3.10)
        ("log", "h.log_()", (-1.0, 1.0), "h.clamp_min(1e-6).log_()"),
        ("log", "(x - y).log()", (-1.0, 1.0), "(x - y).clamp_min(1e-6).log()"),
        ("division", "torch.div(a, b)", (0.0, 1.0), "torch.div(a, b.clamp_min(1e-6))"),
        ("division", "a.div(b)", (-1.0, 0.0), "a.div(b.clamp_max(-1e-6))"),
        (
            "division",
            "1 / (x - y)",
            (-1.0, 1.0),
            "1 / torch.where((x - y) >= 0, (x - y).clamp_min(1e-6), (x - y).clamp_max(-1e-6))",
        ),
        ("division", "x.reciprocal()", (0.0, 1.0), "x.clamp_min(1e-6).reciprocal()"),
        ("pow", "torch.pow(h, 0.5)", (-1.0, 1.0), "torch.pow(h.clamp_min(1e-6), 0.5)"),
        ("pow", "(-h) ** 0.5", (-1.0, 1.0), "(-h).clamp_min(1e-6) ** 0.5"),
        ("log1p", "torch.log1p(h)", (-2.0, 1.0), "torch.log1p(h.clamp_min(-1 + 1e-6))"),
        ("division", "a / 0", (0.0, 0.0), None),  # a number is not clamped: placeholder code instead
        ("log", "torch.log(x) + torch.exp(", (-1.0, 1.0), None),  # does not parse
    ],
)
def test_rewrite_keeps_the_operand_in_the_domain(domain, source, operand_range, expected):
    op = NonfiniteOp("torch.op", domain, "", operand_range, "float32", source=source)
    rewritten = rewrite_call(op, "1e-6")
    assert (rewritten[2] if rewritten else None) == expected


def test_call_source_without_column_positions_is_the_whole_line(tmp_path):
    path = tmp_path / "f.py"
    path.write_text("x = 1\n    return torch.log(h)  # comment\n")
    assert call_source(str(path), 2, (None, None, None, None)) == "return torch.log(h)  # comment"
    assert call_source(str(path), 2, (2, 2, 11, 23)) == "torch.log(h)"


def test_the_op_watch_ends_with_the_pass():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    with torch.no_grad():
        model[1].bias.fill_(-1.0)
    origin = trace_nonfinite(model, Batch(args=(torch.randn(8, 4),)), lambda out, batch: torch.log(out).mean())
    assert origin.stage == "loss" and origin.op.name == "torch.log"
    assert not torch.overrides._get_current_function_mode_stack()  # nothing left watching torch calls


def test_an_op_in_gradchecks_own_loss_gets_no_location():
    """Regression (issue 24): once the tracer moved into measure/, the calling-line search took gradcheck's own
    loss code (load/objective.py) for the user's and named a line of it, which the user has no reason to edit."""
    model = nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.fill_(1e19)  # finite outputs whose squares overflow float32 in the built-in MSE loss
    origin = trace_nonfinite(model, Batch(args=(torch.ones(2, 4),)), Objective(model, LossKind.MSE, {}))
    assert origin.stage == "loss" and origin.op.name == "torch.nn.functional.mse_loss"
    assert origin.op.location is None and origin.op.source is None


def test_a_domain_error_training_steps_make_keeps_its_safe_op_fix(tmp_path):
    # log(fc(x) + 3) is finite at initialization; three SGD steps at lr 5 push its input below 0.
    path = tmp_path / "model.py"
    path.write_text(MODEL.format(expression="torch.log(h + 3.0)"))
    torch.manual_seed(0)
    report = scan_target(str(path), ScanOptions(steps=3, passes=1), Thresholds(lr=5.0))

    finding = nonfinite(report)
    assert finding.message.startswith("After 3 step(s): ")
    assert [cause.id for cause in finding.causes] == [CauseId.DOMAIN_ERROR]
    assert [safe_line(fix) for fix in finding.fixes] == ["torch.log((h + 3.0).clamp_min(1e-6))"]
