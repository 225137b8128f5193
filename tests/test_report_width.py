"""Every report reads whole at 80 columns, and the default one fits a screen (issue 23, items 8 and 9).

At 80 columns the --verify table read ``input/outp…``, the --steps table ``vanishi…``, statuses ``ex``; the
default demo ran to 172 lines of evidence dumps, sentences stating nothing and a chart row ``zero  zero``;
several targets ended without a summary; -q dropped the --verify table without a word.
"""

import ast
import io
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.choices import LayerStatus, OutputFormat, Verdict
from gradcheck_cli.common.stats import ActivationStats
from gradcheck_cli.judge.causes import _saturation
from gradcheck_cli.judge.diagnosis import diagnose
from gradcheck_cli.render.code import fit_code
from gradcheck_cli.render.interface import RenderOptions, get_renderer
from gradcheck_cli.render.table import Cell, Column, fitted_table
from gradcheck_cli.report.report import Report
from tests.synthetic import geometric_result
from tests.test_render import (
    healthy_report,
    recurrent_report,
    vanishing_report_with_fix,
    vanishing_report_with_training,
    vanishing_report_with_trials,
)

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (80, 100)
SCREEN = 50  # lines: the default report of the demo and of a scan at 80 columns
WORDS = {status.value for status in LayerStatus} | {verdict.value for verdict in Verdict} | {"not applied"}

REPORTS = {
    "vanishing_with_fix": vanishing_report_with_fix,
    "verify": vanishing_report_with_trials,
    "steps": vanishing_report_with_training,
    "recurrent": recurrent_report,
    "healthy": healthy_report,
}
OPTIONS = {"default": {}, "verbose": {"verbose": True}, "all_layers": {"all_layers": True}, "quiet": {"quiet": True}}


def render(report: Report, width: int, many: int = 0, **options) -> str:
    stream = io.StringIO()
    renderer = get_renderer(OutputFormat.TEXT)
    render_options = RenderOptions(width=width, color=False, **options)
    if many:
        renderer.render_many([report] * many, stream, render_options)
    else:
        renderer.render(report, stream, render_options)
    return stream.getvalue()


def assert_whole(text: str, width: int) -> None:
    """No cell cut with an ellipsis, no line past the width."""
    for line in text.splitlines():
        assert "…" not in line, line
        assert len(line) <= width, line


def table_rows(text: str, title: str) -> list[str]:
    """The rows of the table under ``title``: from the rule under its header to the first line that is not
    a row (rows start with the cells' padding space)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rule = next(i for i in range(start, len(lines)) if lines[i].startswith("─"))
    rows = []
    for line in lines[rule + 1 :]:
        if not line.startswith(" ") or not line.strip():
            break
        rows.append(line)
    return rows


# --- every table whole ------------------------------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("options", sorted(OPTIONS))
@pytest.mark.parametrize("name", sorted(REPORTS))
def test_every_report_reads_whole(name, options, width):
    assert_whole(render(REPORTS[name](), width, **OPTIONS[options]), width)


@pytest.mark.parametrize("width", WIDTHS)
def test_several_targets_read_whole(width):
    assert_whole(render(vanishing_report_with_fix(), width, many=3), width)


@pytest.mark.parametrize("width", (60, *WIDTHS))
def test_the_verify_and_steps_tables_keep_their_words_whole(width):
    """The issue's `vanishi…` and `input/outp…`: the verdict of every row reads whole, the headers too."""
    verify = render(vanishing_report_with_trials(), width)
    rows = [row for row in table_rows(verify, "Fixes tried on a copy") if not row.startswith("  ")]  # not folds
    assert [row.split()[0] for row in rows] == ["(as", "relu", "batchnorm", "init", "learning_rate"]
    for row in rows[1:]:
        verdict = re.split(r"\s{2,}", row.strip())[1]
        assert verdict in WORDS, row
    # issue 22: the outcome words are never cut either, ranked best first
    assert [re.split(r"\s{2,}", row.strip())[2] for row in rows[1:4]] == ["cured", "cured", "helped"]
    assert "input/output" in verify and "What each fix changed" in verify or "change" in verify
    steps = render(vanishing_report_with_training(), width)
    rows = table_rows(steps, "Training:")
    assert [row.split()[0] for row in rows] == ["0", "1", "2", "3"]
    assert all(re.split(r"\s{2,}", row.strip())[1:3].count("vanishing") == 1 for row in rows)


@pytest.mark.parametrize("width", (60, *WIDTHS))
def test_the_layer_table_keeps_every_status_and_number_whole(width):
    report = vanishing_report_with_fix()
    rows = table_rows(render(report, width, verbose=True), "Layers, input end first")
    statuses = [row.split()[-1] for row in rows]
    assert set(statuses) <= WORDS and "zero" in statuses and "vanishing" in statuses
    assert "... 1 more" not in "\n".join(rows)  # one layer shows as itself, not as a row saying so
    numbers = [cell for row in rows for cell in row.split() if re.fullmatch(r"[-+]?\d[\d.e+-]*", cell)]
    assert all(re.fullmatch(r"\d+|\d+(\.\d+)?(e[-+]\d\d)?", n) for n in numbers)


def test_a_long_layer_name_folds_and_the_status_stays_whole():
    result = geometric_result(depth=6, gain=0.2)
    long_name = "encoder.layers.0.self_attention.output_projection.linear_after_dropout"
    result.layers[0].name = long_name
    report = Report("long names", result, diagnose(result))
    text = render(report, 80, verbose=True)
    assert_whole(text, 80)
    rows = table_rows(text, "Layers, input end first")
    assert "".join(row.split()[0] for row in rows[:3]).startswith(long_name[:40])  # folded, not cut
    assert rows[0].split()[-1] in WORDS


def test_a_narrow_table_drops_the_optional_columns_first():
    columns = [
        Column("name", Cell.PROSE, fold_to=8),
        Column("big", Cell.NUMBER, priority=1),
        Column("bigger", Cell.NUMBER, priority=2),
        Column("status", Cell.WORD),
    ]
    rows = [["blocks.0.layer", "1.23e-04", "5.67e+08", "vanishing"]]
    table, dropped = fitted_table(columns, rows, 100)
    assert dropped == []
    table, dropped = fitted_table(columns, rows, 36)
    assert [column.header for column in dropped] == ["bigger"]
    table, dropped = fitted_table(columns, rows, 24)
    assert [column.header for column in dropped] == ["big", "bigger"]
    stream = io.StringIO()
    from rich.console import Console

    Console(file=stream, width=24, no_color=True).print(table)
    assert "vanishing" in stream.getvalue() and "…" not in stream.getvalue()


def test_fix_code_is_laid_out_to_the_width_and_still_the_same_program():
    code = (
        "nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU())  # LayerNorm for sequences\n"
        "for m in model.modules():\n"
        "    if isinstance(m, (nn.Linear, nn.Conv2d)):\n"
        "        nn.init.xavier_normal_(m.weight)  # or nn.init.orthogonal_(m.weight)\n"
        "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.5e+08)  # after loss.backward()\n"
        'x = f("a, (b", g(1, 2))'
    )
    for width in (44, 60, 75):
        laid_out = fit_code(code, width)
        assert ast.dump(ast.parse(laid_out)) == ast.dump(ast.parse(code))
        assert all(len(line) <= width for line in laid_out.splitlines()), laid_out
        assert "# LayerNorm for sequences" in laid_out and "# after loss.backward()" in laid_out
    assert fit_code(code, 200) == code


# --- the default report fits a screen ----------------------------------------------------------------


def test_the_default_report_fits_a_screen_and_verbose_has_the_rest():
    brief = render(vanishing_report_with_fix(), 80)
    whole = render(vanishing_report_with_fix(), 80, verbose=True)
    assert len(brief.splitlines()) <= SCREEN < len(whole.splitlines())
    for part in ("Verdict: VANISHING", "1. ERROR vanishing_gradient", "cause 1: [saturating_activation]",
                 "fix 1: [relu]", "act = nn.ReLU()", "Before -> after (cured): VANISHING -> HEALTHY"):  # fmt: skip
        assert part in brief
    assert "-v: 1 more cause [init_scale]; 3 more fixes [init], [batchnorm], [residual]" in brief
    assert "fix 2: [init]" in whole and "Layers, input end first" in whole and "gradcheck (after)" in whole
    assert "Layers, input end first" not in brief and "fix 2:" not in brief


def test_evidence_only_with_verbose():
    for options in ({}, {"quiet": True}, {"all_layers": True}):
        assert "evidence:" not in render(vanishing_report_with_fix(), 80, **options)
    assert "evidence: decades=-23.5" in render(vanishing_report_with_fix(), 80, verbose=True)


def test_the_default_report_states_no_noise():
    text = render(vanishing_report_with_fix(), 80, verbose=True)
    assert "0% of their outputs" not in text and "up to 0%" not in text
    assert not re.search(r"\bzero\s+zero\b", text)  # the chart row's value and mark said it twice
    assert "... 1 more" not in text
    steps = render(vanishing_report_with_training(), 80)
    assert steps.count("on a copy") == 1  # "Training on a copy: ..., on a copy, ..."


def test_the_flat_region_is_mentioned_only_when_it_is_not_zero():
    def sites(fractions):
        return [
            ActivationStats(f"act.{i}", "Sigmoid", after=f"fc.{i}", derivative_rms=0.245, saturated_fraction=f)
            for i, f in enumerate(fractions)
        ]

    assert "flat region" not in _saturation(sites([0.0, 0.001, 0.002]), 0.245, 3, 2.0).summary
    one = _saturation(sites([0.0, 0.0, 0.3]), 0.245, 3, 2.0).summary
    assert "up to 30% of the outputs of act.2 sit in the flat region" in one
    many = _saturation(sites([0.2, 0.25, 0.3]), 0.245, 3, 2.0).summary
    assert "25% of their outputs sit in the flat region, up to 30% at act.2" in many


# --- -q ---------------------------------------------------------------------------------------------


def test_quiet_keeps_the_verdict_of_every_fix_tried_in_one_line():
    text = render(vanishing_report_with_trials(), 80, quiet=True)
    flat = " ".join(text.split())
    assert "relu -> HEALTHY (cured), batchnorm -> HEALTHY (cured), init -> VANISHING (helped), " in flat
    assert "learning_rate -> not applied." in flat
    assert "Fixes tried on a copy of the model (--verify)" not in text  # the table itself: without -q
    assert "Fix tried on a copy: relu -> HEALTHY (cured)." in render(vanishing_report_with_fix(), 80, quiet=True)
    assert render(healthy_report(), 80, quiet=True).split() == ["gradcheck", "Synthetic", "healthy", "MLP", "HEALTHY"]


# --- the CLI: -v, -q, several targets ----------------------------------------------------------------

HEALTHY = "import torch.nn as nn\n\nmodel = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))\n"
VANISHING = (
    "import torch.nn as nn\n\n"
    "model = nn.Sequential(*[m for _ in range(12) for m in (nn.Linear(16, 16), nn.Sigmoid())], nn.Linear(16, 2))\n"
)


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "healthy.py").write_text(HEALTHY)
    (tmp_path / "vanishing.py").write_text(VANISHING)
    return tmp_path


def scan(*args, columns=80):
    return CliRunner().invoke(app, ["scan", *args, "--passes", "1"], env={"COLUMNS": str(columns), "NO_COLOR": "1"})


def test_several_targets_end_with_a_summary_and_its_exit_code(models):
    result = scan("healthy.py", "vanishing.py", "missing.py")
    assert result.exit_code == 2
    assert result.stdout.splitlines()[-1] == "3 targets: 1 healthy, 1 vanishing, 1 not measured (exit 2)"
    assert_whole(result.stdout, 80)
    result = scan("healthy.py", "vanishing.py")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "2 targets: 1 healthy, 1 vanishing (exit 1)"
    assert scan("healthy.py", "vanishing.py", "--exit-zero").stdout.splitlines()[-1].endswith("(exit 0)")


def test_the_summary_goes_to_stderr_when_the_report_is_machine_readable(models):
    import json

    result = scan("healthy.py", "vanishing.py", "--format", "json")
    assert len(json.loads(result.stdout)["reports"]) == 2  # stdout: the document, whole
    assert result.stderr.splitlines()[-1] == "2 targets: 1 healthy, 1 vanishing (exit 1)"
    written = scan("healthy.py", "vanishing.py", "-o", "report.txt")
    assert written.stdout == "" and written.stderr.splitlines()[-1].startswith("2 targets:")
    assert "targets:" not in (models / "report.txt").read_text()


def test_one_target_and_silent_have_no_summary(models):
    assert "targets:" not in scan("vanishing.py").stdout
    silent = scan("healthy.py", "vanishing.py", "-s")
    assert (silent.exit_code, silent.stdout, silent.stderr) == (1, "", "")


def test_verbose_shows_the_evidence_and_the_layer_table(models):
    brief, whole = scan("vanishing.py"), scan("vanishing.py", "-v")
    assert "evidence:" not in brief.stdout and "Layers, input end first" not in brief.stdout
    assert "evidence:" in whole.stdout and "Layers, input end first" in whole.stdout
    assert brief.stdout.rstrip().endswith("-v: the layer table, evidence, every cause and fix.")


def test_quiet_verify_keeps_the_verdicts_of_the_fixes(models):
    result = scan("vanishing.py", "--verify", "-q")
    assert result.exit_code == 1
    assert "Fixes tried on a copy: relu -> HEALTHY" in " ".join(result.stdout.split())
    assert "Fixes tried on a copy of the model" not in result.stdout


def test_quiet_and_verbose_say_what_they_do_in_help():
    text = " ".join(CliRunner().invoke(app, ["scan", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "fixes tried" in text and "layer table, each finding's evidence" in text


# --- the real presets and examples (minutes) ----------------------------------------------------------

PRESETS = [
    ["demo"],
    ["demo", "--depth", "20", "--verify"],
    ["demo", "--steps", "3"],
    ["demo", "--arch", "cnn"],
    ["demo", "--arch", "rnn"],
    ["demo", "--arch", "lstm", "--verify"],
    ["scan", str(ROOT / "examples" / "vanishing_mlp.py")],
    ["scan", str(ROOT / "examples" / "healthy_resnet.py"), "--verify"],
]


def cli(args, columns):
    return CliRunner().invoke(app, args, env={"COLUMNS": str(columns), "NO_COLOR": "1"})


@pytest.mark.slow
@pytest.mark.parametrize("columns", WIDTHS)
@pytest.mark.parametrize("args", PRESETS, ids=" ".join)
def test_the_presets_read_whole(args, columns):
    for verbose in ([], ["-v"]):
        result = cli([*args, *verbose], columns)
        assert result.exit_code in (0, 1), result.output
        assert_whole(result.stdout, columns)


@pytest.mark.slow
@pytest.mark.parametrize("args", [["demo"], ["scan", str(ROOT / "examples" / "vanishing_mlp.py")]], ids=" ".join)
def test_the_default_demo_and_scan_fit_a_screen(args):
    result = cli(args, 80)
    assert len(result.stdout.splitlines()) <= SCREEN, result.stdout


@pytest.mark.slow
def test_a_scan_of_every_example_ends_with_its_summary():
    examples = sorted(str(path) for path in (ROOT / "examples").glob("*.py"))
    result = cli(["scan", *examples], 80)
    assert_whole(result.stdout, 80)
    assert re.fullmatch(rf"{len(examples)} targets: .* \(exit {result.exit_code}\)", result.stdout.splitlines()[-1])
