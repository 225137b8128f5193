"""Rendered output against golden files (set UPDATE_GOLDEN=1 to rewrite them after a deliberate change)."""

import io
import json
import os
from pathlib import Path

import pytest

from gradcheck_cli.common.choices import OutputFormat
from gradcheck_cli.common.stats import RecurrentStats
from gradcheck_cli.judge.diagnosis import diagnose
from gradcheck_cli.render.interface import RenderOptions, get_renderer
from gradcheck_cli.report.report import FixTrial, Report, TrainingStep
from gradcheck_cli.trials.verify import judge_trials
from tests.synthetic import geometric_result

GOLDEN = Path(__file__).parent / "golden"


def vanishing_report_with_fix() -> Report:
    before = geometric_result(depth=40, gain=0.25, activations={"Sigmoid": 40}, weight_scale=0.577)
    for layer in before.layers[:2]:
        layer.backward = layer.weight_grad_norm = layer.grad_norm = 0.0
    after = geometric_result(depth=40, gain=1.0, activations={"ReLU": 40}, weight_scale=1.414)
    report = Report("Synthetic MLP, sigmoid", before, diagnose(before))
    fixed = Report("Synthetic MLP, relu", after, diagnose(after))
    report.fix_trials = judge_trials(
        report, [FixTrial("relu", "activation: sigmoid -> relu, init: default -> kaiming", fixed)]
    )
    return report


def vanishing_report_with_trials() -> Report:
    """--verify: four fixes tried, one of them not applicable to a copy."""
    report = vanishing_report_with_fix()
    after = report.fix_trials[0].report
    still = geometric_result(depth=40, gain=0.5, activations={"Sigmoid": 40}, weight_scale=1.0)
    report.fix_trials = [
        FixTrial("relu", "activation: sigmoid -> relu, init: default -> kaiming", after),
        FixTrial("init", "init: default -> xavier", Report("init", still, diagnose(still))),
        FixTrial("batchnorm", "norm: none -> batch", after),
        FixTrial("learning_rate", "needs your training loop: the learning rate is not part of the model", None),
    ]
    report.fix_trials = judge_trials(report, report.fix_trials)  # each outcome, best first
    return report


def vanishing_report_with_training() -> Report:
    """--steps 3: the model measured after each step of training a copy."""
    report = vanishing_report_with_fix()
    report.fix_trials = []
    report.training_setup = "3 SGD step(s), lr 0.001, on a copy, with the same synthetic batches"
    report.training = [TrainingStep(step, None if step == 0 else 2.3 - 0.01 * step, report) for step in range(4)]
    return report


def healthy_report() -> Report:
    result = geometric_result(depth=6, gain=1.0)
    return Report("Synthetic healthy MLP", result, diagnose(result))


def recurrent_report() -> Report:
    result = geometric_result(depth=1)
    result.structure.activations, result.structure.recurrent = {}, {"RNN(tanh)": 1}
    result.recurrent = [RecurrentStats("rnn", "RNN", [0.55 ** (29 - t) for t in range(30)])]
    return Report("Synthetic RNN", result, diagnose(result))


def render(report: Report, output_format: OutputFormat, **options) -> str:
    stream = io.StringIO()
    get_renderer(output_format).render(report, stream, RenderOptions(**options))
    return stream.getvalue()


# The default report (one screen), -v (the whole report), --all-layers, and the tables of --verify and
# --steps; at 100 columns and at 80, where every table must still read whole (issue 23).
CASES = {
    "vanishing_with_fix_w100.txt": lambda: render(vanishing_report_with_fix(), OutputFormat.TEXT, width=100),
    "vanishing_with_fix_w80.txt": lambda: render(vanishing_report_with_fix(), OutputFormat.TEXT, width=80),
    "vanishing_with_fix_verbose_w80.txt": lambda: render(
        vanishing_report_with_fix(), OutputFormat.TEXT, width=80, verbose=True
    ),
    "vanishing_all_layers_w100.txt": lambda: render(
        vanishing_report_with_fix(), OutputFormat.TEXT, width=100, all_layers=True
    ),
    "verify_w80.txt": lambda: render(vanishing_report_with_trials(), OutputFormat.TEXT, width=80),
    "verify_w120.txt": lambda: render(vanishing_report_with_trials(), OutputFormat.TEXT, width=120),
    "verify_quiet_w80.txt": lambda: render(vanishing_report_with_trials(), OutputFormat.TEXT, width=80, quiet=True),
    "steps_w80.txt": lambda: render(vanishing_report_with_training(), OutputFormat.TEXT, width=80),
    "healthy_w60.txt": lambda: render(healthy_report(), OutputFormat.TEXT, width=60),
    "recurrent_w100.txt": lambda: render(recurrent_report(), OutputFormat.TEXT, width=100),
    "recurrent_verbose_w80.txt": lambda: render(recurrent_report(), OutputFormat.TEXT, width=80, verbose=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    text = CASES[name]()
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_text_has_no_escape_codes_when_not_a_terminal():
    assert "\x1b[" not in render(vanishing_report_with_fix(), OutputFormat.TEXT, width=100)


def test_condensed_table_keeps_the_ends_and_says_what_it_skipped():
    text = render(vanishing_report_with_fix(), OutputFormat.TEXT, width=100, verbose=True)
    assert "layers.0 " in text and "layers.39" in text and "head" in text
    assert "... 29 more" in text
    full = render(vanishing_report_with_fix(), OutputFormat.TEXT, width=100, all_layers=True)
    assert all(f"layers.{i} " in full for i in range(40))


def test_every_status_and_verdict_has_a_style():
    from gradcheck_cli.common.choices import LayerStatus, Verdict
    from gradcheck_cli.render.text_style import STATUS_STYLE, VERDICT_STYLE

    assert set(STATUS_STYLE) == set(LayerStatus) and set(VERDICT_STYLE) == set(Verdict)


def test_every_output_format_renders():
    for output_format in OutputFormat:
        assert render(vanishing_report_with_fix(), output_format, width=100).strip()


def test_json_has_no_nan_or_infinity():
    report = healthy_report()
    report.result.layers[0].backward = float("inf")
    report.result.losses = [float("nan")]
    document = json.loads(render(report, OutputFormat.JSON))
    assert document["layers"][0]["backward"] is None
    assert document["losses"] == [None]
