"""Issue 21: config, baseline and history files written by someone else are refused in one sentence.

A config file may be found in any parent folder (a shared /tmp among them), a baseline or history file may
come from anywhere: trust-pickle only from a file the user named, no YAML alias bombs, no devices, FIFOs
or huge files, a line for every decoding error, every number in its range, no RecursionError and no NaN
that silently compares nothing.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.limits import RANGES, parse_memory, range_problem
from gradcheck_cli.config.config import Config, load_config
from gradcheck_cli.config.discovery import MAX_CONFIG_BYTES
from gradcheck_cli.config.nodes import ConfigError
from gradcheck_cli.monitor.history import HistoryError, read_history
from gradcheck_cli.report.baseline import load_baseline


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error_of(path: Path | str | None = None, start: Path | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(path, start=start)
    return str(raised.value)


def one_sentence(result) -> str:
    """The error: exit 2, nothing on stdout, one line on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, env={"COLUMNS": "100", "NO_COLOR": "1"})


# --- 1. trust-pickle only from --trust-pickle or a file named with --config --------------------------------

FOUND_FILES = {
    "top level": ("gradcheck.yaml", "passes: 2\ntrust-pickle: true\n", 2),
    "snake case": ("gradcheck.yaml", "trust_pickle: true\n", 1),
    "in a target": ("gradcheck.yaml", "targets:\n  - target: model.pt\n    trust-pickle: true\n", 3),
    "in pyproject.toml": ("pyproject.toml", "[tool.gradcheck]\npasses = 2\ntrust-pickle = true\n", 3),
    "hidden file": (".gradcheck.yaml", "trust-pickle: true\n", 1),
}


@pytest.mark.parametrize("case", list(FOUND_FILES))
def test_a_config_file_found_by_searching_cannot_grant_trust_pickle(tmp_path: Path, monkeypatch, case):
    # The file sits in a parent folder (think /tmp); the user works, and downloads a pickle, below it.
    name, text, line = FOUND_FILES[case]
    write(tmp_path / name, text)
    below = tmp_path / "downloads" / "model"
    below.mkdir(parents=True)
    monkeypatch.chdir(below)
    message = error_of()
    assert message.startswith(f"{tmp_path / name}:{line}: ")
    assert "is honoured only from --trust-pickle or a file given with --config" in message
    # Named with --config, the same file may set it.
    named = load_config(tmp_path / name)
    assert named.trust_pickle is True or named.targets[0].trust_pickle is True


def test_a_found_file_may_say_trust_pickle_false(project: Path):
    # false grants nothing, so a file that spells out the default still loads.
    write(project / "gradcheck.yaml", "trust-pickle: false\n")
    assert load_config().trust_pickle is False


def test_the_cli_refuses_a_found_trust_pickle_and_takes_a_named_one(project: Path):
    write(project / "gradcheck.yaml", "trust-pickle: true\n")
    message = one_sentence(invoke(["config", "--show"]))
    assert message.startswith("error: gradcheck.yaml:1: 'trust-pickle' is honoured only from --trust-pickle")
    result = invoke(["config", "--show", "--config", "gradcheck.yaml"])
    assert result.exit_code == 0, result.output
    assert "trust-pickle: true" in result.stdout


# --- 2. YAML anchors and aliases ---------------------------------------------------------------------------

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize("unknown_key_last", [False, True])
def test_a_billion_laughs_file_is_refused_at_once_with_its_line(project: Path, unknown_key_last):
    # 9**9 "lol"s when expanded; the unknown top-level keys (a, b, ...) must not be reached by expansion first.
    text = BILLION_LAUGHS + ("lolz: *i\n" if unknown_key_last else "")
    write(project / "gradcheck.yaml", text)
    began = time.perf_counter()
    message = error_of()
    assert time.perf_counter() - began < 0.5
    assert message == (
        "gradcheck.yaml:1: YAML anchors and aliases (&name, *name) are not allowed in a config file; write the "
        "value out where it is used."
    )


ANCHORS = {
    "an anchor alone": ("passes: 3\nseed: &s 4\n", 2),
    "an alias to a mapping": (
        "thresholds: &t\n  decades-error: 3\ntargets:\n  - target: m.py\n    thresholds: *t\n",
        1,
    ),
    "a merge key": ("targets:\n  - &base {target: a.py, passes: 2}\n  - <<: *base\n    target: b.py\n", 2),
    "an anchor in a list": ("ignore:\n  - head\n  - &x tail\n", 3),
}


@pytest.mark.parametrize("case", list(ANCHORS))
def test_every_anchor_and_alias_is_refused_with_its_line(project: Path, case):
    text, line = ANCHORS[case]
    write(project / "gradcheck.yaml", text)
    assert error_of().startswith(f"gradcheck.yaml:{line}: YAML anchors and aliases")


def test_a_yaml_syntax_error_is_still_reported_as_one(project: Path):
    write(project / "gradcheck.yaml", "passes: 1\nseed: 2: 3\n")
    assert error_of().startswith("gradcheck.yaml:2: invalid YAML")


# --- 3. Files that are not config files -------------------------------------------------------------------


def test_a_device_is_refused_before_reading(project: Path):
    began = time.perf_counter()
    message = error_of("/dev/zero")
    assert time.perf_counter() - began < 0.5
    assert message == (
        "config file /dev/zero is not a regular file (a device, FIFO or socket); pass a gradcheck.yaml or "
        "pyproject.toml."
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_is_refused_without_waiting_for_a_writer(project: Path):
    os.mkfifo(project / "pipe.yaml")
    assert "pipe.yaml is not a regular file" in error_of("pipe.yaml")


def test_a_symlink_is_judged_by_what_it_points_to(project: Path):
    (project / "zero.yaml").symlink_to("/dev/zero")
    assert "zero.yaml is not a regular file" in error_of("zero.yaml")
    write(project / "real.yaml", "passes: 2\n")
    (project / "link.yaml").symlink_to(project / "real.yaml")
    assert load_config("link.yaml").passes == 2


def test_the_cli_refuses_a_device_as_config_in_one_sentence(project: Path):
    message = one_sentence(invoke(["config", "--show", "--config", "/dev/zero"]))
    assert "/dev/zero is not a regular file" in message


def test_a_file_over_the_size_limit_is_refused(project: Path):
    (project / "big.yaml").write_text("passes: 2\n" + "#" * MAX_CONFIG_BYTES + "\n")
    assert error_of("big.yaml") == (
        "config file big.yaml is larger than 1 MiB, too large to be a config file; check that it is the right file."
    )
    (project / "fits.yaml").write_text("passes: 2\n#" + "x" * (MAX_CONFIG_BYTES - 20) + "\n")
    assert load_config("fits.yaml").passes == 2


@pytest.mark.parametrize(
    ("name", "raw", "line"),
    [
        ("gradcheck.yaml", b"passes: 2\nseed: 1\n# caf\xe9\n", 3),
        ("gradcheck.yaml", b"\xef\xbb\xbfpasses: 2\nentry: \xff\n", 2),  # after a byte-order mark
        ("gradcheck.yaml", b"\x80passes: 2\n", 1),
        ("pyproject.toml", b"[tool.gradcheck]\npasses = 2\n\n# \xe9\n", 4),
    ],
)
def test_a_file_that_is_not_utf8_names_the_line_of_the_first_bad_byte(project: Path, name, raw, line):
    (project / name).write_bytes(raw)
    message = error_of(name)
    assert message.startswith(f"{name}:{line}: the file is not UTF-8 text (byte 0x")
    assert message.endswith("; save it as UTF-8.")


def test_a_byte_order_mark_is_still_accepted(project: Path):
    (project / "gradcheck.yaml").write_bytes(b"\xef\xbb\xbfpasses: 2\n")
    assert load_config().passes == 2


@pytest.mark.parametrize(
    ("name", "text"),
    [("deep.yaml", "passes: " + "[" * 900 + "]" * 900), ("deep.toml", "passes = " + "[" * 5000 + "]" * 5000)],
)
def test_nesting_thousands_deep_is_one_sentence_not_a_recursion_error(project: Path, name, text):
    (project / name).write_text(text + "\n")
    message = error_of(name)
    assert message in (
        f"config file {name} nests lists or tables too deeply to be read; flatten it.",
        f"{name}:1: invalid YAML: exceeded maximum nesting depth.",  # libyaml's own limit, where it has one
    )


# --- 4. Every number a config file sets is in its range ---------------------------------------------------

# key -> (the name in limits.RANGES, a value just outside, a value at the edge that is accepted)
NUMBERS = {
    "seed": ("seed", 99999999999999999999, 2**63 - 1),
    "passes": ("passes", 1001, 1000),
    "steps": ("steps", 100_001, 100_000),
    "vocab-size": ("vocab_size", 2**31, 2**31 - 1),
    "seq-len": ("seq_len", 0, 1),
    "batch-size": ("batch_size", 2**40, 1),
    "lr": ("lr", 1e4, 1e3),
    "baseline-tolerance": ("baseline_tolerance", 1e13, 1e12),
    "timeout": ("timeout", 7 * 24 * 3600 + 1, 0),
}


@pytest.mark.parametrize("key", list(NUMBERS))
@pytest.mark.parametrize("in_target", [False, True])
def test_every_number_is_refused_outside_the_range_the_cli_takes(project: Path, key, in_target):
    name, outside, edge = NUMBERS[key]
    prefix = "targets:\n  - target: model.py\n    " if in_target else ""
    line = 3 if in_target else 1
    write(project / "gradcheck.yaml", f"{prefix}{key}: {outside}\n")
    message = error_of()
    assert message.startswith(f"gradcheck.yaml:{line}: '{key}' {range_problem(name, outside)}, not ")
    write(project / "gradcheck.yaml", f"{prefix}{key}: {edge}\n")
    config = load_config()
    settings = config.targets[0] if in_target else config
    assert getattr(settings, key.replace("-", "_")) == edge


def test_the_seed_of_the_issue_is_refused_in_yaml_and_toml_alike(project: Path):
    write(project / "gradcheck.yaml", "seed: 99999999999999999999\n")
    expected = f"'seed' {range_problem('seed', 99999999999999999999)}, not 99999999999999999999."
    assert error_of() == f"gradcheck.yaml:1: {expected}"
    write(project / "pyproject.toml", "[tool.gradcheck]\nseed = 99999999999999999999\n")
    assert error_of("pyproject.toml") == f"pyproject.toml:2: {expected}"


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize("key", ["lr", "baseline-tolerance", "timeout"])
def test_non_finite_numbers_are_refused(project: Path, key, value):
    write(project / "gradcheck.yaml", f"{key}: {value}\n")
    assert error_of().startswith(f"gradcheck.yaml:1: '{key}' must be a number")


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_threshold_values_must_be_finite(project: Path, value):
    write(project / "gradcheck.yaml", f"thresholds:\n  decades-error: {value}\n")
    assert error_of().startswith("gradcheck.yaml:2: 'decades-error' must be a number greater than 0, not ")
    toml_value = {".inf": "inf", "-.inf": "-inf", ".nan": "nan"}[value]
    write(project / "pyproject.toml", f"[tool.gradcheck.thresholds]\nrelative-grad-error = {toml_value}\n")
    assert error_of("pyproject.toml").startswith("pyproject.toml:2: 'relative-grad-error' must be a number")


def test_a_shape_dimension_past_the_range_is_refused(project: Path):
    write(project / "gradcheck.yaml", "input-shape: 100000000000,16\n")
    assert error_of() == (
        f"gradcheck.yaml:1: 'input-shape' has a size of 100000000000; each size {range_problem('input_dim', 10**11)}, "
        "and the whole input must fit max-memory."
    )
    write(project / "gradcheck.yaml", f"input-shape: [[{RANGES['input_dim'].maximum}, 1]]\n")
    assert load_config().input_shape == ((2**31 - 1, 1),)


# --- 5. timeout and max-memory -----------------------------------------------------------------------------


def test_timeout_and_max_memory_at_the_top_level_and_per_target(project: Path):
    write(
        project / "gradcheck.yaml",
        """
        timeout: 600
        max-memory: 8G
        targets:
          - model.py
          - target: big.py
            timeout: 1.5
            max-memory: 50%
        """,
    )
    config = load_config()
    assert (config.timeout, config.max_memory) == (600.0, 8 * 2**30)
    big = config.for_target(config.targets[1])
    assert (big.timeout, big.max_memory) == (1.5, parse_memory("50%"))
    assert config.for_target(config.targets[0]).max_memory == 8 * 2**30
    assert config.setting("timeout", None, False, 0) == 600.0
    assert config.setting("max_memory", None, False, 123) == 8 * 2**30
    assert config.setting("max-memory", 2**30, True, 123) == 2**30
    assert Config().setting("timeout", None, False, 0) == 0


@pytest.mark.parametrize(
    ("text", "shown"),
    [("8G", "8G"), ("512MiB", "512M"), ("1073741824", "1G"), ("268435457", 268435457), ("1.5G", "1536M")],
)
def test_max_memory_is_shown_back_as_a_size_that_reads_back_the_same(project: Path, text, shown):
    write(project / "gradcheck.yaml", f"max-memory: {text}\ntimeout: 30\n")
    config = load_config()
    assert config.to_yaml() == f"timeout: 30.0\nmax-memory: {shown}\n"
    write(project / "again.yaml", config.to_yaml())
    assert load_config("again.yaml").max_memory == config.max_memory


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max-memory: lots", "'max-memory' takes a size such as 8G, 512M or 75%"),
        ("max-memory: 1M", "'max-memory' 1M is below 256M"),
        ("max-memory: 150%", "'max-memory' takes a size"),
        ("max-memory: true", "'max-memory' must be a size such as 8G, 512M or 75%, not true."),
        ("max-memory: [8G]", "'max-memory' must be a size such as 8G, 512M or 75%, not a list."),
        ("timeout: -1", "'timeout' must be a number from 0 to 604800, not -1."),
        ("timeout: '60'", "'timeout' must be a number from 0 to 604800, not '60'."),
    ],
)
def test_bad_timeout_and_max_memory_values_name_the_line(project: Path, text, fragment):
    write(project / "gradcheck.yaml", f"passes: 1\n{text}\n")
    message = error_of()
    assert message.startswith("gradcheck.yaml:2: ") and fragment in message


# --- 6. Baseline and history files --------------------------------------------------------------------------


def baseline_document(layer: dict | None = None, profile: dict | None = None) -> dict:
    entry = {
        "target": "model.py",
        "verdict": "healthy",
        "profile": {"decades": 0.1, "gain_per_layer": 1.0, "forward_decades": 0.0, **(profile or {})},
        "layers": [{"name": "fc1", "type": "Linear", "status": "ok", "backward": 1.0, "ratio": 1.0, **(layer or {})}],
        "time_profiles": [],
        "findings": [],
    }
    return {"schema_version": "2.0", "tool": {"name": "gradcheck", "version": "0"}, "targets": {"model.py": entry}}


def test_a_deeply_nested_baseline_is_one_sentence(tmp_path: Path):
    path = tmp_path / "baseline.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(GradcheckError, match=f"^The baseline {path} nests arrays or objects too deeply"):
        load_baseline(path)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"layer": {"ratio": math.nan}}, "a layer 'fc1' whose ratio is NaN, not a finite number"),
        ({"layer": {"backward": math.inf}}, "a layer 'fc1' whose backward is Infinity, not a finite number"),
        (
            {"layer": {"weight_grad_norm": -math.inf}},
            "a layer 'fc1' whose weight_grad_norm is -Infinity, not a finite number",
        ),
        ({"layer": {"ratio": -2.0}}, "a layer 'fc1' whose ratio is -2, below zero"),
        ({"layer": {"relative_grad": "1e-3"}}, "a layer 'fc1' whose relative_grad is '1e-3', not a number"),
        ({"layer": {"backward": [1.0]}}, "a layer 'fc1' whose backward is a list, not a number"),
        ({"profile": {"decades": math.nan}}, "a profile whose decades is NaN, not a finite number"),
        ({"profile": {"forward_decades": "inf"}}, "a profile whose forward_decades is 'inf', not a number"),
    ],
)
def test_a_baseline_holding_nan_or_a_non_number_is_refused_naming_the_entry(tmp_path: Path, changes, problem):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline_document(**changes)))  # json writes NaN and Infinity unless told not to
    with pytest.raises(GradcheckError) as raised:
        load_baseline(path)
    assert str(raised.value) == (
        f"{path} is not a usable gradcheck baseline: target 'model.py' has {problem}; create it with "
        "--save-baseline again."
    )


def test_a_baseline_with_finite_figures_and_nulls_loads(tmp_path: Path):
    path = tmp_path / "baseline.json"
    path.write_text(
        json.dumps(baseline_document(layer={"ratio": None, "relative_grad": None}, profile={"decades": -3}))
    )
    assert load_baseline(path)["model.py"]["layers"][0]["ratio"] is None


def test_a_time_profile_with_nan_decades_is_refused(tmp_path: Path):
    document = baseline_document()
    document["targets"]["model.py"]["time_profiles"] = [{"name": "rnn", "decades": math.nan}]
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(document))
    with pytest.raises(GradcheckError, match="a time profile 'rnn' whose decades is NaN"):
        load_baseline(path)


@pytest.mark.parametrize("reader", [load_baseline, read_history])
def test_a_device_is_not_read_as_a_baseline_or_history(reader):
    began = time.perf_counter()
    with pytest.raises(GradcheckError, match="/dev/zero is not a regular file"):
        reader(Path("/dev/zero"))
    assert time.perf_counter() - began < 0.5


def test_a_deeply_nested_history_line_is_one_sentence_naming_the_line(tmp_path: Path):
    path = tmp_path / "history.jsonl"
    path.write_text("{}\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(HistoryError, match=f"^{path} line 2 nests arrays or objects too deeply"):
        read_history(path)
