"""The model files of the recipes (docs/examples/) scan with the commands their docstrings give, which
are the commands the recipe pages run: each exits 0 or 1 (a verdict), never 2 (could not scan)."""

import ast
import importlib.util
import json
import shlex
from functools import cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
# Files that build a model from a library gradcheck does not depend on: skipped where it is not installed.
NEEDS = {"hf_bert.py": "transformers", "hf_gpt2.py": "transformers"}


def _commands(path: Path) -> list[list[str]]:
    """The `gradcheck scan docs/examples/...` lines of the file's docstring, as argument lists."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return [
        shlex.split(line, comments=True)[1:]
        for line in docstring.splitlines()
        if line.strip().startswith(f"gradcheck scan docs/examples/{path.name}")
    ]


CASES = [
    pytest.param(path.name, args, id=" ".join(args))
    for path in sorted(EXAMPLES.glob("*.py"))
    for args in _commands(path)
]


def _scan(*args: str):
    # paths in the docstrings are relative to the repository root, where the recipes run them
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "100", "NO_COLOR": "1"})


@cache
def _report(*args: str) -> tuple[int, dict | None, str]:
    """One pass is enough to tell a verdict from a failure; each command is run once for all the tests."""
    result = _scan(*args, "--format", "json", "--passes", "1")
    return result.exit_code, json.loads(result.stdout) if result.exit_code in (0, 1) else None, result.output


def test_every_example_file_says_how_to_scan_it():
    files = sorted(path.name for path in EXAMPLES.glob("*.py"))
    assert files, "docs/examples/ holds the recipes' model files"
    assert [name for name in files if not _commands(EXAMPLES / name)] == []


@pytest.mark.parametrize(("name", "args"), CASES)
def test_example_scans_with_a_verdict(name, args):
    if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{NEEDS[name]} is not installed")
    exit_code, report, output = _report(*args)
    assert exit_code in (0, 1), output
    assert report["verdict"] in ("healthy", "vanishing", "exploding", "nonfinite")


def test_lstm_recipe_default_init_vanishes_through_time_and_the_chrono_bias_cures_it():
    """What docs/recipes/rnn.md says: the default LSTM's cause is its forget-gate bias, the fix sets it
    to ln(T - 1), and build_chrono(), which applies it, is healthy."""
    exit_code, report, output = _report("scan", "docs/examples/lstm_classifier.py")
    assert exit_code == 1, output
    (finding,) = report["findings"]
    assert finding["kind"] == "vanishing_through_time"
    assert [cause["id"] for cause in finding["causes"]] == ["memory_gate_bias"]
    assert [(fix["id"], fix["params"]["scheme"]) for fix in finding["fixes"]] == [("init", "gate_bias")]
    assert finding["fixes"][0]["params"]["forget_bias"] == pytest.approx(4.595, abs=1e-3)  # ln(99)
    exit_code, report, output = _report("scan", "docs/examples/lstm_classifier.py:build_chrono")
    assert exit_code == 0, output
    assert report["findings"] == []


@pytest.mark.parametrize(
    ("target", "options"),
    [("docs/examples/cnn_64px.py", "--input-shape"), ("docs/examples/token_table.py", "--vocab-size")],
)
def test_special_input_recipes_fail_without_their_option_and_say_which(target, options):
    """docs/recipes/special-inputs.md shows these two failing first, with the option that fixes them."""
    result = _scan("scan", target, "--passes", "1")
    assert result.exit_code == 2
    assert options in result.stderr
