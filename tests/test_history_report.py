"""`gradcheck report history.jsonl`: a Monitor's history read back and rendered; bad files are one sentence
and exit code 2."""

import json
import math
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.monitor.history import SCHEMA, HistoryError, read_history
from gradcheck_cli.monitor.monitor import GradientProblemWarning, Monitor

NAN_STEP = 7
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "monitor_training.py"


def run(path, steps=14, nan_at=None, every=5):
    """A short SGD run of a small MLP with its history logged to ``path``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with Monitor(model, norms_every=1, every=every, on_problem="record", log=path) as monitor:
        for step in range(1, steps + 1):
            x = torch.randn(16, 8)
            loss = nn.functional.mse_loss(model(x), x[:, :1].sin())
            loss.backward()
            if step == nan_at:
                model[2].weight.grad[0, 0] = float("nan")
            monitor.step(loss)
            optimizer.step()
            optimizer.zero_grad()
    return path


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    return run(tmp_path_factory.mktemp("healthy") / "history.jsonl")


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return run(tmp_path_factory.mktemp("broken") / "history.jsonl", nan_at=NAN_STEP)


def report(*args, env=None):
    return CliRunner().invoke(app, ["report", *map(str, args)], env={"COLUMNS": "100", "NO_COLOR": "1", **(env or {})})


def test_healthy_history_exits_0_with_a_chart_and_the_last_record(healthy):
    result = report(healthy)
    assert result.exit_code == 0, result.output
    out = result.stdout
    flat = " ".join(out.split())  # long lines wrap at the terminal's width
    assert "gradcheck report" in out and "Sequential · 433 parameters · 3 layers" in flat
    assert "sampled every 5 steps · 4 records, steps 1-14" in flat
    assert "No problems from step 1 to step 14." in out
    # the chart over steps, drawn by render/chart.py: one row per record under a decade axis
    assert "Total gradient norm" in out and "┬" in out
    assert all(f"step {step} " in out for step in (1, 6, 11, 14))
    assert "Step 14 (the last record)" in out and "weight gradients only" in flat
    assert "The scan's verdict on this step: HEALTHY" in out
    assert "\x1b[" not in out


def test_problem_history_exits_1_and_names_the_first_step_and_layer(broken):
    result = report(broken)
    assert result.exit_code == 1, result.output
    out = result.stdout
    flat = " ".join(out.split())
    assert "Problems: 1" in out
    assert f"nonfinite at step {NAN_STEP}, layer 2 (Linear) (found at the read-out of step 11)" in flat
    assert f"step {NAN_STEP}: non-finite gradient: the gradient norm of 2 (Linear) is NaN" in flat
    assert "Step 11 (the first record with a problem)" in out
    assert "nonfinite" in out.split("Total gradient norm")[1]  # the chart marks the record that found it


def test_json_report(broken):
    result = report(broken, "--format", "json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["schema_version"] == "1.0" and document["model"]["layers"] == 3
    (problem,) = document["problems"]
    assert (problem["kind"], problem["step"], problem["layer"], problem["found_at"]) == ("nonfinite", NAN_STEP, "2", 11)
    assert problem["figures"]["grad_norm"] is None  # NaN is null in JSON; the problem says what it was
    assert [row["step"] for row in document["series"]] == [1, 6, 11, 14]
    assert document["series"][2]["problems"] == ["nonfinite"]
    shown = document["shown"]
    assert shown["step"] == 11 and shown["because"] == "the first record with a problem"
    assert [layer["name"] for layer in shown["layers"]] == ["0", "2", "4"]
    assert shown["layers"][1]["nonfinite"] is True and shown["layers"][1]["status"] == "nonfinite"


def test_step_picks_the_record_shown(healthy):
    result = report(healthy, "--step", "6", "--format", "json")
    assert result.exit_code == 0
    shown = json.loads(result.stdout)["shown"]
    assert (shown["step"], shown["because"], shown["signals"], shown["batch_size"]) == (6, "asked for", True, 16)
    assert all(layer["backward"] > 0 for layer in shown["layers"])


def test_a_step_without_a_record_is_exit_2(healthy):
    result = report(healthy, "--step", "7")
    assert result.exit_code == 2
    assert "has no record of step 7; its records are at steps 1, 6, 11, 14." in result.stderr


def _header(**changes) -> str:
    document = {
        "schema": SCHEMA, "schema_version": "1.0", "tool": {"name": "gradcheck", "version": "0.1.0"},
        "model": "Net", "every": 5, "start_step": 1, "signals": False,
        "layers": [{"name": "fc", "type": "Linear"}], "thresholds": {}, "rules": {},
    }  # fmt: skip
    document.update(changes)
    return json.dumps(document) + "\n"


_RECORD = {
    "step": 1, "loss": 0.5, "layers": {key: [1.0] for key in (
        "grad_norm", "weight_grad_norm", "other_grad_norm", "weight_norm", "weight_std", "relative_grad", "backward",
        "forward_rms", "grad_nonfinite", "forward_nonfinite", "backward_nonfinite", "calls")},
}  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No history at {path}: write one with gradcheck_cli.Monitor(model, log='history.jsonl')"),
        ("", "is empty"),
        (b"\xff\xfe\x00binary", "is not a text file, so not a gradcheck history"),
        ("hello\n", "line 1 is not JSON"),
        ('{"a": 1}\n', 'is not a gradcheck monitor history: its first line has no "schema"'),
        ('{"schema_version": "1.0", "tool": {"name": "gradcheck"}, "layers": []}\n', "looks like a gradcheck report"),
        (_header(schema_version="2.0"), "has schema version '2.0', which gradcheck"),
        (_header(layers=[]), "line 1 is not a usable history header (no layers)"),
        (_header(), "has a header but no sampled step yet"),
        (_header() + "[1, 2]\n", "line 2 is not a usable history record (not an object)"),
        (
            _header() + json.dumps({**_RECORD, "layers": {**_RECORD["layers"], "grad_norm": [1.0, 2.0]}}) + "\n",
            "line 2 is not a usable history record (column 'grad_norm' does not have one value per layer (1))",
        ),
        (
            _header() + json.dumps({**_RECORD, "loss": "lots"}) + "\n",
            "line 2 is not a usable history record (loss is not a number)",
        ),
        (_header() + "{not json\n" + json.dumps(_RECORD) + "\n", "line 2 is not JSON"),
    ],
)
def test_bad_files_are_one_sentence_and_exit_2(tmp_path, content, message):
    path = tmp_path / "history.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = report(path)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert message.format(path=path) in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_a_directory_is_not_a_history(tmp_path):
    result = report(tmp_path)
    assert result.exit_code == 2 and "is a directory, not a history file" in result.stderr


def test_a_last_line_cut_short_is_left_out_with_a_note(tmp_path, broken):
    path = tmp_path / "cut.jsonl"
    path.write_text(broken.read_text() + '{"step": 20, "steps": 5, "loss": 0.')
    result = report(path)
    assert result.exit_code == 1
    assert "note: line 6 is cut short (the run stopped while writing it) and was left out" in result.stdout
    assert len(read_history(path).records) == 4


def test_minor_versions_may_add_keys(tmp_path, healthy):
    lines = healthy.read_text().splitlines()
    header = json.loads(lines[0])
    header["schema_version"] = "1.3"
    header["rules"]["a_later_rule"] = 3
    header["layers"][0]["a_later_figure"] = 1
    path = tmp_path / "newer.jsonl"
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    assert [record.step for record in read_history(path).records] == [1, 6, 11, 14]


def test_non_finite_figures_round_trip_as_strings(broken):
    def refuse(token):
        raise AssertionError(f"a {token} token: other JSON readers refuse it")

    lines = broken.read_text().splitlines()
    assert all(json.loads(line, parse_constant=refuse) for line in lines)
    assert any('"nan"' in line for line in lines)
    history = read_history(broken)
    record = next(r for r in history.records if r.step == 11)
    assert record.layer("2").grad_nonfinite
    assert math.isnan(history.problems[0].figures["grad_norm"])


def test_history_error_is_a_gradcheck_error():
    from gradcheck_cli.common.errors import GradcheckError

    assert issubclass(HistoryError, GradcheckError)


def test_the_docs_example_runs_and_its_report_is_what_the_page_shows(tmp_path, monkeypatch):
    """docs/examples/monitor_training.py as a program, then `gradcheck report` on what it wrote: the lines
    docs/monitor.md pastes are in the real output."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE)])
    with pytest.warns(GradientProblemWarning):
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    history = read_history(tmp_path / "monitor_history.jsonl")
    assert [(p.kind, p.step, p.layer, p.found_at) for p in history.problems] == [
        ("gradient_growth", 151, "2", 151),
        ("nonfinite", 156, "2", 201),
    ]
    result = report(tmp_path / "monitor_history.jsonl")
    assert result.exit_code == 1
    page = (ROOT / "docs" / "monitor.md").read_text(encoding="utf-8")
    pasted = re.search(
        r"<!-- output: gradcheck report monitor_history.jsonl .*?-->\n```text\n(.*?)```", page, re.DOTALL
    )
    assert pasted, "docs/monitor.md shows the example's report"
    output = [line.rstrip() for line in result.stdout.splitlines()]
    for line in pasted[1].splitlines():
        if line and line != "...":
            assert line.rstrip() in output, line
