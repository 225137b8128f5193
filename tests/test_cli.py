"""The CLI in-process with CliRunner: exit codes, stdout/stderr separation, JSON, errors."""

import json

import pytest
from typer.testing import CliRunner

from gradcheck_cli import __version__
from gradcheck_cli.cli.main import app
from gradcheck_cli.common.choices import FindingKind, FixId, LayerStatus, Severity, Verdict

SMALL_HEALTHY = ["demo", "--depth", "8", "--width", "32", "--activation", "relu", "--init", "kaiming"]
SMALL_VANISHING = ["demo", "--depth", "20", "--width", "32"]


@pytest.fixture
def runner():
    return CliRunner()


def run(runner, args):
    return runner.invoke(app, args, env={"COLUMNS": "100", "NO_COLOR": "1"})


def test_help_lists_the_demo_command(runner):
    result = run(runner, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output


def test_version(runner):
    result = run(runner, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"gradcheck {__version__}"


def test_healthy_demo_exits_0(runner):
    result = run(runner, [*SMALL_HEALTHY, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verdict"] == "healthy"


def test_vanishing_demo_exits_1_and_fail_on_never_exits_0(runner):
    assert run(runner, SMALL_VANISHING).exit_code == 1
    assert run(runner, [*SMALL_VANISHING, "--fail-on", "never"]).exit_code == 0


def test_warning_fails_only_with_fail_on_warning(runner):
    # tanh with weights at 0.9/sqrt(fan_in) loses 1.5 decades over 30 layers: a warning, not an error.
    args = ["demo", "--activation", "tanh", "--init", "normal", "--gain", "0.9", "--depth", "30", "--no-fix"]
    args += ["--format", "json"]
    result = run(runner, args)
    document = json.loads(result.stdout)
    assert [f["severity"] for f in document["findings"]] == ["warning"]
    assert result.exit_code == 0
    assert run(runner, [*args, "--fail-on", "warning"]).exit_code == 1


def test_json_is_one_document_with_the_required_keys(runner):
    result = run(runner, [*SMALL_VANISHING, "--format", "json"])
    document = json.loads(result.stdout)  # nothing else on stdout
    assert document["schema_version"] == "2.0"
    assert document["tool"] == {"name": "gradcheck", "version": __version__}
    assert document["verdict"] in {v.value for v in Verdict}
    assert document["verdict"] == "vanishing"
    for layer in document["layers"]:
        assert {"name", "type", "grad_norm", "status"} <= set(layer)
        assert layer["status"] in {s.value for s in LayerStatus}
    assert len(document["layers"]) == 21
    assert document["findings"]
    for finding in document["findings"]:
        assert {"kind", "severity", "layers", "message", "evidence", "fixes"} <= set(finding)
        assert finding["kind"] in {k.value for k in FindingKind}
        assert finding["severity"] in {s.value for s in Severity}
        for fix in finding["fixes"]:
            assert {"id", "title", "detail"} <= set(fix)
            assert fix["id"] in {f.value for f in FixId}
    (trial,) = document["fix_trials"]
    assert trial["fix_id"] == "relu" and trial["report"]["verdict"] == "healthy"


def test_text_report_shows_table_findings_and_before_after(runner):
    result = run(runner, [*SMALL_VANISHING, "-v"])  # -v: the whole report (issue 23)
    out = result.stdout
    assert "Verdict: VANISHING" in out
    assert "Layers, input end first" in out
    assert "vanishing_gradient" in out
    assert "[relu]" in out
    assert "After the suggested fix: relu" in out
    assert "Before -> after" in out
    assert "\x1b[" not in out  # NO_COLOR and not a terminal


def test_invalid_choice_exits_2_and_lists_the_valid_values(runner):
    result = run(runner, ["demo", "--arch", "transformer"])
    assert result.exit_code == 2
    for valid in ("mlp", "cnn", "rnn", "lstm"):
        assert valid in result.output
    assert "Traceback" not in result.output


def test_impossible_combination_is_one_sentence_and_exit_2(runner):
    result = run(runner, ["demo", "--init", "kaiming", "--gain", "2"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "error: --gain applies to --init normal, xavier or orthogonal" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # one sentence (wrapped at most once)


def test_debug_shows_the_traceback_and_keeps_exit_code_2(runner):
    result = run(runner, ["--debug", "demo", "--init", "kaiming", "--gain", "2"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "InvalidOptionError" in result.stderr
    assert "error: --gain applies" in result.stderr


def test_rnn_demo_reports_time_steps(runner):
    result = run(runner, ["demo", "--arch", "rnn", "--seq-len", "30", "--width", "32", "--format", "json"])
    document = json.loads(result.stdout)
    assert result.exit_code == 1
    (series,) = document["recurrent"]
    assert len(series["time_steps"]) == 30
    assert document["findings"][0]["kind"] == "vanishing_through_time"
    assert document["time_profiles"][0]["decades"] < -2
