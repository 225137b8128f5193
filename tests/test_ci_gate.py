"""gradcheck as a CI gate, end to end through the CLI: config files, CI formats, --output, -q/-s/--color,
--exit-zero and baselines. In-process with CliRunner on tiny model files written into tmp_path."""

from __future__ import annotations

import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app

ENV = {"COLUMNS": "100", "NO_COLOR": "1"}

# 6 sigmoid layers of width 16 with PyTorch's default init: the gradient loses about 4 decades (an error).
VANISHING_MODEL = """\
from torch import nn

layers = []
for _ in range(6):
    layers += [nn.Linear(16, 16), nn.Sigmoid()]
model = nn.Sequential(*layers, nn.Linear(16, 4))
"""

# 6 tanh layers with the default init: about 1.3 decades, a warning and nothing else.
WARNING_MODEL = """\
from torch import nn


def build_model():
    layers = []
    for _ in range(6):
        layers += [nn.Linear(16, 16), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(16, 4))
"""

# 4 ReLU layers with He init: healthy. SCALE multiplies the weight of the third Linear ("4"), so the
# layers below it ("0", "2") get SCALE times the gradient: the regression a baseline must catch.
HEALTHY_MODEL = """\
from torch import nn

SCALE = 1.0


def build_model():
    layers = []
    for _ in range(4):
        linear = nn.Linear(16, 16)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(16, 4))
    model[4].weight.data.mul_(SCALE)
    return model
"""

# A layer table's heading in the text report (not shown with -q).
LAYER_TABLE = "Layers, input end first"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the working folder with the three models. An empty gradcheck.yaml stops the config
    search here, so a stray config file in a parent of tmp_path cannot change the results."""
    for name, source in (("vanish.py", VANISHING_MODEL), ("warn.py", WARNING_MODEL), ("healthy.py", HEALTHY_MODEL)):
        (tmp_path / name).write_text(source)
    (tmp_path / "gradcheck.yaml").write_text("")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GRADCHECK_FORMAT", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    # The baseline tests edit a model file between scans: never let a stale __pycache__ answer.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return tmp_path


def run(runner: CliRunner, args: list[str], **env: str):
    return runner.invoke(app, args, env={**ENV, **env})


def config(folder: Path, text: str, name: str = "gradcheck.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def as_json(result) -> dict:
    return json.loads(result.stdout)


def line_of(source: str, start: str) -> int:
    return next(n for n, line in enumerate(source.splitlines(), 1) if line.startswith(start))


def one_sentence(result) -> str:
    """The error: exit 2, nothing on stdout, one line on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def set_scale(folder: Path, scale: str, name: str = "healthy.py") -> None:
    path = folder / name
    text = path.read_text()
    assert "SCALE = 1.0\n" in text
    path.write_text(text.replace("SCALE = 1.0\n", f"SCALE = {scale}\n"))


# --- Configuration files -------------------------------------------------------------------------------


def test_config_in_a_parent_folder_is_used_from_a_subfolder(runner, project, monkeypatch):
    config(project, "passes: 2\n")
    monkeypatch.chdir(project / "sub")
    result = run(runner, ["scan", "../healthy.py", "-v", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "using config" in result.stderr
    assert str(project / "gradcheck.yaml") in result.stderr
    assert as_json(result)["model"]["passes"] == 2


def test_the_command_line_wins_over_the_file(runner, project):
    config(project, "passes: 2\nseed: 3\n")
    document = as_json(run(runner, ["scan", "healthy.py", "--passes", "1", "--format", "json"]))
    assert document["model"]["passes"] == 1
    assert document["model"]["seed"] == 3  # what the command line does not give still comes from the file


def test_isolated_ignores_the_file(runner, project):
    config(project, "passes: 2\nseed: 3\nfail-on: never\n")
    result = run(runner, ["scan", "vanish.py", "--isolated", "-v", "--format", "json"])
    assert "config ignored (--isolated)" in result.stderr
    assert result.exit_code == 1  # fail-on: never was ignored
    document = as_json(result)
    assert (document["model"]["passes"], document["model"]["seed"]) == (3, 0)  # the defaults


def test_config_option_picks_another_file(runner, project):
    config(project, "passes: 2\n")
    config(project, "passes: 1\nseed: 5\n", name="other.yaml")
    result = run(runner, ["scan", "healthy.py", "--config", "other.yaml", "-v", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "using config other.yaml" in result.stderr
    document = as_json(result)
    assert (document["model"]["passes"], document["model"]["seed"]) == (1, 5)


def test_tool_gradcheck_in_pyproject_is_used(runner, project):
    (project / "gradcheck.yaml").unlink()
    config(project, '[project]\nname = "demo"\n\n[tool.gradcheck]\npasses = 2\nseed = 3\n', name="pyproject.toml")
    result = run(runner, ["scan", "healthy.py", "-v", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "using config pyproject.toml [tool.gradcheck]" in result.stderr
    document = as_json(result)
    assert (document["model"]["passes"], document["model"]["seed"]) == (2, 3)


def test_scan_without_a_target_scans_the_files_targets_with_their_own_settings(runner, project):
    config(project, "passes: 1\nseed: 4\ntargets:\n  - healthy.py\n  - target: warn.py\n    seed: 7\n")
    result = run(runner, ["scan", "--format", "json"])
    assert result.exit_code == 0, result.output  # a warning does not fail at the default fail-on
    reports = as_json(result)["reports"]
    assert len(reports) == 2
    seeds = {report["title"].split()[0]: report["model"]["seed"] for report in reports}
    assert seeds == {"healthy.py": 4, "warn.py": 7}
    assert all(report["model"]["passes"] == 1 for report in reports)


def test_targets_are_found_from_a_subfolder(runner, project, monkeypatch):
    config(project, "passes: 1\ntargets: [healthy.py, vanish.py]\n")
    monkeypatch.chdir(project / "sub")
    result = run(runner, ["scan", "--format", "json"])
    assert result.exit_code == 1  # vanish.py, resolved against the config file's folder
    assert [report["verdict"] for report in as_json(result)["reports"]] == ["healthy", "vanishing"]


@pytest.mark.parametrize("extra", [[], ["--isolated"]])
def test_no_target_anywhere_exits_2_with_one_sentence(runner, project, extra):
    config(project, "passes: 1\n")
    line = one_sentence(run(runner, ["scan", *extra]))
    assert "no target" in line


def test_fail_on_warning_in_the_file_fails_a_warning_only_model(runner, project):
    document = as_json(run(runner, ["scan", "warn.py", "--passes", "1", "--format", "json"]))
    assert [(f["kind"], f["severity"]) for f in document["findings"]] == [("vanishing_gradient", "warning")]
    assert run(runner, ["scan", "warn.py", "--passes", "1"]).exit_code == 0
    config(project, "fail-on: warning\n")
    assert run(runner, ["scan", "warn.py", "--passes", "1"]).exit_code == 1
    # and the command line wins over it
    assert run(runner, ["scan", "warn.py", "--passes", "1", "--fail-on", "error"]).exit_code == 0


def test_thresholds_in_the_file_are_used(runner, project):
    assert run(runner, ["scan", "vanish.py", "--passes", "1"]).exit_code == 1
    config(project, "thresholds: {decades-warning: 50, decades-error: 60}\n")
    result = run(runner, ["scan", "vanish.py", "--passes", "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    document = as_json(result)
    assert document["findings"] == []
    assert (document["thresholds"]["decades_warning"], document["thresholds"]["decades_error"]) == (50, 60)


def test_ignore_in_the_file_marks_the_layer_ignored(runner, project):
    config(project, 'ignore: ["0"]\n')
    document = as_json(run(runner, ["scan", "vanish.py", "--passes", "1", "--format", "json"]))
    statuses = {layer["name"]: layer["status"] for layer in document["layers"]}
    assert statuses["0"] == "ignored"
    assert [name for name, status in statuses.items() if status == "ignored"] == ["0"]


def test_config_show_prints_the_file_used_and_the_effective_yaml(runner, project, monkeypatch):
    config(project, "fail_on: warning\npasses: 2\nthresholds:\n  decades-error: 3\n")
    monkeypatch.chdir(project / "sub")
    result = run(runner, ["config", "--show"])
    assert result.exit_code == 0, result.output
    first, *rest = result.stdout.splitlines()
    assert first == f"# using config {project / 'gradcheck.yaml'}"
    assert yaml.safe_load("\n".join(rest)) == {"passes": 2, "fail-on": "warning", "thresholds": {"decades-error": 3}}


CONFIG_ERRORS = {
    "unknown key": ("passes: 1\npases: 2\n", 2, ["unknown key 'pases'", "did you mean 'passes'"]),
    "wrong type": ("seed: 1\npasses: two\n", 2, ["'passes' must be an integer", "'two'"]),
    "out of range": ("seed: 1\npasses: 0\n", 2, ["'passes' must be an integer from 1 to 1000", "not 0"]),
    "bad enum": ("fail-on: warnings\n", 1, ["'fail-on' must be one of", "did you mean 'warning'"]),
    "yaml syntax": ("passes: 1\nseed: 2: 3\n", 2, ["invalid YAML"]),
    "threshold": ("thresholds:\n  decades-warning: 3\n  decades-error: 2\n", 1, ["do not fit together"]),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_a_config_error_is_one_line_naming_the_file_and_line(runner, project, case):
    text, line, fragments = CONFIG_ERRORS[case]
    config(project, text)
    message = one_sentence(run(runner, ["scan", "healthy.py", "--passes", "1"]))
    assert message.startswith(f"error: gradcheck.yaml:{line}: ")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("command", [["config", "--show"], ["demo", "--depth", "4", "--width", "8"]])
def test_a_config_error_stops_every_command(runner, project, command):
    config(project, "passes: 1\npases: 2\n")
    assert one_sentence(run(runner, command)).startswith("error: gradcheck.yaml:2: unknown key 'pases'")


@pytest.mark.parametrize("command", [["scan", "healthy.py"], ["config", "--show"]])
def test_an_explicit_config_that_does_not_exist_is_one_sentence(runner, project, command):
    message = one_sentence(run(runner, [*command, "--config", "missing.yaml"]))
    assert "missing.yaml" in message and "not found" in message


# --- CI formats ----------------------------------------------------------------------------------------


def test_markdown(runner, project):
    result = run(runner, ["scan", "vanish.py", "--passes", "1", "--format", "markdown"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "### gradcheck: vanish.py (Sequential): **VANISHING**"
    assert "| # | severity | kind | message | layers |" in lines
    assert any(line.startswith("| 1 | error | `vanishing_gradient` |") for line in lines)
    assert "\x1b[" not in result.stdout


def test_junit(runner, project):
    result = run(runner, ["scan", "vanish.py", "--passes", "1", "--format", "junit"])
    assert result.exit_code == 1
    root = ET.fromstring(result.stdout.encode())
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "vanish.py"
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert {"vanishing_gradient", "exploding_gradient", "verdict"} <= set(cases)
    failure = cases["vanishing_gradient"].find("failure")
    assert failure is not None and failure.get("type") == "vanishing_gradient"
    assert cases["exploding_gradient"].find("failure") is None
    assert cases["verdict"].find("failure") is not None
    assert int(root.get("failures")) == 2

    healthy = ET.fromstring(run(runner, ["scan", "healthy.py", "--passes", "1", "--format", "junit"]).stdout.encode())
    assert healthy.findall(".//failure") == [] and healthy.get("failures") == "0"


@pytest.mark.parametrize(
    ("name", "source", "start", "level"),
    [("vanish.py", VANISHING_MODEL, "model =", "error"), ("warn.py", WARNING_MODEL, "def build_model", "warning")],
)
def test_sarif_points_at_the_model_definition(runner, project, name, source, start, level):
    result = run(runner, ["scan", name, "--passes", "1", "--format", "sarif"])
    log = as_json(result)
    assert log["version"] == "2.1.0"
    (sarif_run,) = log["runs"]
    assert sarif_run["tool"]["driver"]["name"] == "gradcheck"
    (sarif_result,) = sarif_run["results"]
    assert (sarif_result["ruleId"], sarif_result["level"]) == ("vanishing_gradient", level)
    (location,) = sarif_result["locations"]
    physical = location["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == name
    assert physical["region"]["startLine"] == line_of(source, start)


def test_sarif_of_a_healthy_model_has_no_results(runner, project):
    result = run(runner, ["scan", "healthy.py", "--passes", "1", "--format", "sarif"])
    assert result.exit_code == 0
    assert as_json(result)["runs"][0]["results"] == []


def test_github_annotations(runner, project):
    result = run(runner, ["scan", "vanish.py", "warn.py", "healthy.py", "--passes", "1", "--format", "github"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    vanish_line, warn_line = line_of(VANISHING_MODEL, "model ="), line_of(WARNING_MODEL, "def build_model")
    assert re.fullmatch(
        rf"::error file=vanish\.py,line={vanish_line},title=gradcheck vanishing_gradient::Vanishing gradients.+",
        lines[0],
    )
    assert re.fullmatch(
        rf"::warning file=warn\.py,line={warn_line},title=gradcheck vanishing_gradient::The gradient weakens toward the input.+",
        lines[1],
    )
    assert lines[2:] == [
        "gradcheck: vanish.py (Sequential): vanishing (1 error, 0 warnings)",
        "gradcheck: warn.py (Sequential): healthy (0 errors, 1 warning)",
        "gradcheck: healthy.py (Sequential): healthy (0 errors, 0 warnings)",
    ]


def test_gradcheck_format_env_selects_json_and_format_overrides_it(runner, project):
    result = run(runner, ["scan", "healthy.py", "--passes", "1"], GRADCHECK_FORMAT="json")
    assert as_json(result)["verdict"] == "healthy"
    result = run(runner, ["scan", "healthy.py", "--passes", "1", "--format", "github"], GRADCHECK_FORMAT="json")
    assert result.stdout == "gradcheck: healthy.py (Sequential): healthy (0 errors, 0 warnings)\n"


def test_format_in_the_file_is_used_when_neither_option_nor_env_gives_one(runner, project):
    config(project, "format: markdown\n")
    result = run(runner, ["scan", "healthy.py", "--passes", "1"])
    assert result.stdout.startswith("### gradcheck: healthy.py (Sequential): **HEALTHY**")
    result = run(runner, ["scan", "healthy.py", "--passes", "1", "--format", "json"])
    assert as_json(result)["verdict"] == "healthy"


# --- --output ------------------------------------------------------------------------------------------


def _timeless(output_format: str, text: str) -> str:
    """The report without the measured seconds, the one thing that differs between two runs."""
    if output_format == "json":
        document = json.loads(text)
        del document["model"]["seconds"]
        return json.dumps(document)
    return re.sub(r"\d+\.\d+(?=\s+s\b)", "<t>", text)  # the text report may wrap before the " s"


@pytest.mark.parametrize("output_format", ["text", "json", "github"])
def test_output_holds_exactly_what_stdout_would(runner, project, output_format):
    args = ["scan", "vanish.py", "--passes", "1", "--format", output_format]
    printed = run(runner, args)
    written = run(runner, [*args, "--output", "reports/out.txt"])
    assert (printed.exit_code, written.exit_code) == (1, 1)
    assert written.stdout == ""
    text = (project / "reports" / "out.txt").read_text()
    assert _timeless(output_format, text) == _timeless(output_format, printed.stdout)
    assert printed.stdout.strip()


def test_output_replaces_an_existing_file_whole(runner, project):
    target = project / "report.json"
    target.write_text("stale " * 20_000)
    result = run(runner, ["scan", "healthy.py", "--passes", "1", "--format", "json", "-o", "report.json"])
    assert result.exit_code == 0
    assert json.loads(target.read_text())["verdict"] == "healthy"  # no stale tail
    assert _leftovers(project, "report.json") == []


def _leftovers(folder: Path, name: str) -> list[Path]:
    """Temporary files of an --output write (``.NAME.xxxx`` beside the target)."""
    return list(folder.rglob(f".{name}.*"))


def test_output_under_a_file_exits_2_and_leaves_nothing(runner, project):
    (project / "afile").write_text("not a folder\n")
    result = run(runner, ["scan", "vanish.py", "--passes", "1", "-o", "afile/report.txt"])
    assert "cannot write the report" in one_sentence(result)
    assert (project / "afile").read_text() == "not a folder\n"
    assert _leftovers(project, "report.txt") == []


def test_output_onto_a_folder_exits_2_and_removes_its_temporary_file(runner, project):
    (project / "adir").mkdir()
    result = run(runner, ["scan", "vanish.py", "--passes", "1", "-o", "adir"])
    assert "cannot write the report to adir" in one_sentence(result)
    assert list((project / "adir").iterdir()) == []
    assert _leftovers(project, "adir") == []


def test_output_file_gets_the_permissions_of_any_new_file(runner, project):
    # Regression: the report was written through tempfile.mkstemp and so came out 0600 (unreadable to the
    # CI step or user that reads it when written by another account), also when replacing a 0644 file.
    (project / "old.txt").write_text("old\n")
    (project / "old.txt").chmod(0o644)
    umask = os.umask(0o022)
    try:
        run(runner, ["scan", "healthy.py", "--passes", "1", "-o", "report.txt"])
        run(runner, ["scan", "healthy.py", "--passes", "1", "-o", "old.txt"])
    finally:
        os.umask(umask)
    assert (project / "report.txt").stat().st_mode & 0o777 == 0o644
    assert (project / "old.txt").stat().st_mode & 0o777 == 0o644


def test_a_failed_scan_writes_no_output_file(runner, project):
    result = run(runner, ["scan", "missing.py", "--format", "json", "-o", "report.json"])
    assert "missing.py" in one_sentence(result)
    assert not (project / "report.json").exists()
    assert _leftovers(project, "report.json") == []


# --- -q, -s, --exit-zero, --color ----------------------------------------------------------------------


def test_quiet_prints_the_verdict_line_and_the_findings_only(runner, project):
    result = run(runner, ["scan", "vanish.py", "--passes", "1", "-q"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["gradcheck", "vanish.py", "(Sequential)", "VANISHING"]
    assert lines[1].startswith("1. ERROR vanishing_gradient:")
    assert LAYER_TABLE not in result.stdout and "inputs:" not in result.stdout
    assert LAYER_TABLE in run(runner, ["scan", "vanish.py", "--passes", "1", "-v"]).stdout
    healthy = run(runner, ["scan", "healthy.py", "--passes", "1", "-q"])
    assert healthy.stdout.split() == ["gradcheck", "healthy.py", "(Sequential)", "HEALTHY"]


def test_silent_prints_nothing_and_keeps_the_exit_code(runner, project):
    healthy = run(runner, ["scan", "healthy.py", "--passes", "1", "-s"])
    assert (healthy.exit_code, healthy.stdout, healthy.stderr) == (0, "", "")
    vanishing = run(runner, ["scan", "vanish.py", "--passes", "1", "-s"])
    assert (vanishing.exit_code, vanishing.stdout, vanishing.stderr) == (1, "", "")


def test_silent_still_writes_the_output_file(runner, project):
    result = run(runner, ["scan", "vanish.py", "--passes", "1", "-s", "--format", "json", "-o", "r.json"])
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", "")
    assert json.loads((project / "r.json").read_text())["verdict"] == "vanishing"


def test_exit_zero_reports_findings_but_exits_0_and_errors_still_exit_2(runner, project):
    result = run(runner, ["scan", "vanish.py", "--passes", "1", "--exit-zero", "--format", "json"])
    assert result.exit_code == 0
    assert as_json(result)["findings"][0]["kind"] == "vanishing_gradient"
    assert "missing.py" in one_sentence(run(runner, ["scan", "missing.py", "--exit-zero"]))
    config(project, "pases: 2\n")
    one_sentence(run(runner, ["scan", "vanish.py", "--exit-zero"]))


def test_color_always_and_never(runner, project):
    args = ["scan", "vanish.py", "--passes", "1"]
    assert "\x1b[" in run(runner, [*args, "--color", "always"]).stdout  # NO_COLOR set, not a terminal
    assert "\x1b[" not in run(runner, [*args, "--color", "never"]).stdout
    assert "\x1b[" not in run(runner, [*args, "--color", "never"], FORCE_COLOR="1").stdout
    assert "\x1b[" not in run(runner, args).stdout


def test_color_always_reaches_an_output_file_and_auto_does_not(runner, project):
    run(runner, ["scan", "vanish.py", "--passes", "1", "--color", "always", "-o", "colour.txt"])
    run(runner, ["scan", "vanish.py", "--passes", "1", "-o", "plain.txt"], FORCE_COLOR="1")
    assert "\x1b[" in (project / "colour.txt").read_text()
    assert "\x1b[" not in (project / "plain.txt").read_text()


# --- Baselines -----------------------------------------------------------------------------------------


def save(runner, targets: list[str], path: str = "base.json") -> dict:
    result = run(runner, ["scan", *targets, "--passes", "1", "-q", "--save-baseline", path])
    assert result.exit_code == 0, result.output
    return json.loads(Path(path).read_text())


def compare(runner, targets: list[str], *extra: str, path: str = "base.json"):
    return run(runner, ["scan", *targets, "--passes", "1", "--baseline", path, *extra])


def test_an_unchanged_model_passes_its_baseline(runner, project):
    assert list(save(runner, ["healthy.py"])["targets"]) == ["healthy.py"]
    result = compare(runner, ["healthy.py"])
    assert result.exit_code == 0, result.output
    assert "Baseline: no regression" in result.stdout
    document = as_json(compare(runner, ["healthy.py"], "--format", "json"))
    assert document["baseline"]["regressed"] is False
    assert document["baseline"]["changes"] == []


def test_a_regression_against_the_baseline_fails(runner, project):
    save(runner, ["healthy.py"])
    set_scale(project, "0.05")  # the layers below "4" now get 1/20 of their gradient
    assert run(runner, ["scan", "healthy.py", "--passes", "1"]).exit_code == 0  # the model alone passes
    result = compare(runner, ["healthy.py"])
    assert result.exit_code == 1
    assert "Baseline: REGRESSED" in result.stdout
    document = as_json(compare(runner, ["healthy.py"], "--format", "json"))
    assert document["baseline"]["regressed"] is True
    changed = {change["layer"]: change for change in document["baseline"]["changes"]}
    assert set(changed) == {"0", "2"}
    assert all(change["regression"] and change["factor"] > 10 for change in changed.values())
    (finding,) = [f for f in document["findings"] if f["kind"] == "baseline_regression"]
    assert finding["severity"] == "error"
    assert set(finding["layers"]) == {"0", "2"}
    assert "2 ratio" in finding["message"]


def test_a_large_regression_fails_too(runner, project):
    save(runner, ["healthy.py"])
    set_scale(project, "1e-4")
    document = as_json(compare(runner, ["healthy.py"], "--format", "json"))
    assert document["baseline"]["regressed"] is True
    assert {"0", "2"} <= {change["layer"] for change in document["baseline"]["changes"] if change["regression"]}
    assert "baseline_regression" in [f["kind"] for f in document["findings"]]


def test_baseline_tolerance_loosens_and_tightens_the_comparison(runner, project):
    save(runner, ["healthy.py"])
    set_scale(project, "0.2")  # x5 on layers 0 and 2: within the default x10
    assert compare(runner, ["healthy.py"]).exit_code == 0
    assert compare(runner, ["healthy.py"], "--baseline-tolerance", "2").exit_code == 1
    config(project, "baseline-tolerance: 2\n")
    assert compare(runner, ["healthy.py"]).exit_code == 1
    assert compare(runner, ["healthy.py"], "--baseline-tolerance", "10").exit_code == 0


def test_a_looser_tolerance_stops_the_layer_regressions(runner, project):
    save(runner, ["healthy.py"])
    set_scale(project, "0.05")  # x22: over the default x10, under x100
    strict = as_json(compare(runner, ["healthy.py"], "--format", "json"))
    loose = as_json(compare(runner, ["healthy.py"], "--baseline-tolerance", "100", "--format", "json"))
    assert any(change["regression"] for change in strict["baseline"]["changes"])
    assert loose["baseline"]["tolerance"] == 100
    assert not any(change["regression"] for change in loose["baseline"]["changes"])
    assert not any(" ratio " in item for item in loose["baseline"]["regressions"])


def test_a_missing_baseline_exits_2_with_one_sentence(runner, project):
    message = one_sentence(compare(runner, ["healthy.py"], path="missing.json"))
    assert "missing.json" in message and "--save-baseline" in message


def test_a_target_not_in_the_baseline_is_a_note_not_a_failure(runner, project):
    save(runner, ["healthy.py"])
    (project / "other.py").write_text(HEALTHY_MODEL)
    result = compare(runner, ["other.py"], "--format", "json")
    assert result.exit_code == 0, result.output
    assert "note: other.py is not in the baseline" in " ".join(result.stderr.split())  # Rich may wrap it
    assert as_json(result)["baseline"] is None


def test_one_baseline_holds_several_targets(runner, project):
    (project / "other.py").write_text(HEALTHY_MODEL)
    assert sorted(save(runner, ["healthy.py", "other.py"])["targets"]) == ["healthy.py", "other.py"]
    result = compare(runner, ["healthy.py", "other.py"], "--format", "json")
    assert result.exit_code == 0, result.output
    assert [report["baseline"]["regressed"] for report in as_json(result)["reports"]] == [False, False]
    set_scale(project, "0.05", name="other.py")
    result = compare(runner, ["healthy.py", "other.py"], "--format", "json")
    assert result.exit_code == 1
    assert [report["baseline"]["regressed"] for report in as_json(result)["reports"]] == [False, True]


def test_a_baseline_of_the_files_targets_holds_from_a_subfolder(runner, project, monkeypatch):
    config(project, "passes: 1\ntargets: [healthy.py]\n")
    assert run(runner, ["scan", "-s", "--save-baseline", "base.json"]).exit_code == 0
    set_scale(project, "0.05")
    assert run(runner, ["scan", "-s", "--baseline", "base.json"]).exit_code == 1
    monkeypatch.chdir(project / "sub")
    result = run(runner, ["scan", "--baseline", "../base.json", "--format", "json"])
    assert "not in the baseline" not in " ".join(result.stderr.split())
    assert result.exit_code == 1


# --- The demo ------------------------------------------------------------------------------------------

DEMO_VANISHING = ["demo", "--depth", "8", "--width", "16", "--no-fix"]
DEMO_WARNING = ["demo", "--activation", "tanh", "--depth", "6", "--width", "16", "--no-fix", "--passes", "1"]


def test_demo_uses_passes_from_the_file(runner, project):
    config(project, "passes: 2\n")
    assert as_json(run(runner, [*DEMO_VANISHING, "--format", "json"]))["model"]["passes"] == 2
    assert as_json(run(runner, [*DEMO_VANISHING, "--passes", "1", "--format", "json"]))["model"]["passes"] == 1


def test_demo_uses_fail_on_from_the_file(runner, project):
    args = [*DEMO_VANISHING, "--passes", "1"]
    assert run(runner, args).exit_code == 1
    config(project, "fail-on: never\n")
    assert run(runner, args).exit_code == 0
    assert run(runner, DEMO_WARNING).exit_code == 0
    config(project, "fail-on: warning\n")
    result = run(runner, [*DEMO_WARNING, "--format", "json"])
    assert [f["severity"] for f in as_json(result)["findings"]] == ["warning"]
    assert result.exit_code == 1


def test_demo_exit_zero(runner, project):
    config(project, "fail-on: warning\n")
    assert run(runner, [*DEMO_VANISHING, "--passes", "1", "--exit-zero"]).exit_code == 0
    assert run(runner, [*DEMO_WARNING, "--exit-zero"]).exit_code == 0
    one_sentence(run(runner, [*DEMO_VANISHING, "--exit-zero", "--init", "kaiming", "--gain", "2"]))
