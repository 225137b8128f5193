"""Configuration files: discovery, loading, precedence helpers, and one test per error kind (file and line)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from gradcheck_cli.common.choices import FailOn, LossKind, Optimizer, OutputFormat
from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.options import DTYPE_BYTES
from gradcheck_cli.config.config import Config, TargetConfig, load_config
from gradcheck_cli.config.discovery import find_config
from gradcheck_cli.config.nodes import ConfigError
from gradcheck_cli.config.settings import KEYS
from gradcheck_cli.config.thresholds import DEPRECATED_THRESHOLD_KEYS, THRESHOLD_KEYS


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error_of(folder: Path, text: str, name: str = "gradcheck.yaml") -> str:
    """The message of the ConfigError that loading ``text`` as ``folder/name`` raises (cwd = folder)."""
    write(folder / name, text)
    with pytest.raises(ConfigError) as raised:
        load_config(start=folder)
    return str(raised.value)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


ALL_KEYS_YAML = """
passes: 5
seed: 7
loss: mse
fail-on: warning
format: sarif
ignore: ["encoder.*.attention.*", "head"]
input-shape: ["8,3,32,32", [4, 10]]
input-dtype: float64
vocab-size: 1000
seq-len: 12
batch-size: 4
entry: build_model
path: [src, ../shared]
trust-pickle: true
lr: 1e-2
optimizer: adam
steps: 3
verify: true
baseline-tolerance: 2.5
thresholds:
  decades-warning: 1.5
  decades-error: 3
  forward-decades-error: 2.5
  relative-grad-warning: 50
  relative-grad-error: 5000
  min-trend-layers: 5
  lr-step-fraction: 0.2
targets:
  - model.py
  - target: nets/cnn.py:build
    passes: 2
    thresholds:
      decades-error: 4
  - mypkg.models:factory
"""

ALL_KEYS_TOML = """
[project]
name = "example"

[tool.gradcheck]
passes = 5
seed = 7
loss = "mse"
fail-on = "warning"
format = "sarif"
ignore = ["encoder.*.attention.*", "head"]
input-shape = ["8,3,32,32", [4, 10]]
input-dtype = "float64"
vocab-size = 1000
seq-len = 12
batch-size = 4
entry = "build_model"
path = ["src", "../shared"]
trust-pickle = true
lr = 1e-2
optimizer = "adam"
steps = 3
verify = true
baseline-tolerance = 2.5
targets = ["model.py", { target = "nets/cnn.py:build", passes = 2, thresholds = { decades-error = 4 } }, "mypkg.models:factory"]

[tool.gradcheck.thresholds]
decades-warning = 1.5
decades-error = 3
forward-decades-error = 2.5
relative-grad-warning = 50
relative-grad-error = 5000
min-trend-layers = 5
lr-step-fraction = 0.2
"""


def expected_all_keys(folder: Path) -> Config:
    return Config(
        path=folder / "gradcheck.yaml",
        passes=5,
        seed=7,
        loss=LossKind.MSE,
        fail_on=FailOn.WARNING,
        format=OutputFormat.SARIF,
        ignore=("encoder.*.attention.*", "head"),
        input_shape=((8, 3, 32, 32), (4, 10)),
        input_dtype="float64",
        vocab_size=1000,
        seq_len=12,
        batch_size=4,
        entry="build_model",
        paths=(str(folder / "src"), str(folder.parent / "shared")),
        trust_pickle=True,
        lr=0.01,
        optimizer=Optimizer.ADAM,
        steps=3,
        verify=True,
        baseline_tolerance=2.5,
        threshold_values=(
            ("decades_warning", 1.5),
            ("decades_error", 3.0),
            ("forward_decades_error", 2.5),
            ("relative_grad_warning", 50.0),
            ("relative_grad_error", 5000.0),
            ("min_trend_layers", 5),
            ("lr_step_fraction", 0.2),
        ),
        targets=(
            TargetConfig(target="model.py"),
            TargetConfig(target="nets/cnn.py:build", passes=2, threshold_values=(("decades_error", 4.0),)),
            TargetConfig(target="mypkg.models:factory"),
        ),
        notices=(DEPRECATED_THRESHOLD_KEYS["relative-grad-warning"],),  # every key: the deprecated one too
    )


# --- Discovery ----------------------------------------------------------------------------------------


def test_yaml_in_a_parent_folder_is_found_from_a_subfolder(project: Path, monkeypatch: pytest.MonkeyPatch):
    config_file = write(project / "gradcheck.yaml", "passes: 4\n")
    deeper = project / "src" / "models"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)
    assert find_config(deeper) == config_file
    config = load_config()
    assert config.path == config_file
    assert config.passes == 4


def test_dot_gradcheck_yaml_is_found(project: Path):
    config_file = write(project / ".gradcheck.yaml", "seed: 3\n")
    assert find_config(project) == config_file
    assert load_config().seed == 3


def test_pyproject_with_a_gradcheck_table_is_used(project: Path):
    config_file = write(project / "pyproject.toml", '[project]\nname = "x"\n\n[tool.gradcheck]\npasses = 6\n')
    assert find_config(project) == config_file
    assert load_config().passes == 6


def test_pyproject_without_a_gradcheck_table_is_skipped_and_the_search_goes_on(project: Path):
    parent_config = write(project / "gradcheck.yaml", "passes: 2\n")
    write(project / "pkg" / "pyproject.toml", '[project]\nname = "pkg"\n\n[tool.ruff]\nline-length = 100\n')
    assert find_config(project / "pkg") == parent_config


def test_the_nearest_config_wins(project: Path):
    write(project / "gradcheck.yaml", "passes: 2\n")
    nearer = write(project / "pkg" / "pyproject.toml", "[tool.gradcheck]\npasses = 9\n")
    assert find_config(project / "pkg") == nearer
    assert load_config(start=project / "pkg").passes == 9


def test_in_one_folder_gradcheck_yaml_comes_before_dot_gradcheck_yaml_and_pyproject(project: Path):
    write(project / "pyproject.toml", "[tool.gradcheck]\npasses = 9\n")
    write(project / ".gradcheck.yaml", "passes: 8\n")
    assert find_config(project) == project / ".gradcheck.yaml"
    write(project / "gradcheck.yaml", "passes: 7\n")
    assert find_config(project) == project / "gradcheck.yaml"


def test_no_config_file_gives_the_defaults(project: Path):
    assert find_config(project) is None
    config = load_config()
    assert config == Config()
    assert config.describe() == "no config file found (defaults)"
    assert config.to_yaml() == "{}\n"


def test_an_explicit_path_is_used_instead_of_discovery(project: Path):
    write(project / "gradcheck.yaml", "passes: 2\n")
    explicit = write(project / "configs" / "ci.yaml", "passes: 11\n")
    config = load_config(Path("configs/ci.yaml"))
    assert config.path == explicit
    assert config.passes == 11
    assert config.describe() == "using config configs/ci.yaml"


def test_an_explicit_toml_file_without_a_tool_table_is_read_from_its_top_level(project: Path):
    write(project / "gradcheck.toml", "passes = 4\n")
    assert load_config("gradcheck.toml").passes == 4


def test_isolated_ignores_every_file(project: Path):
    write(project / "gradcheck.yaml", "passes: 2\n")
    config = load_config(isolated=True)
    assert config == Config(isolated=True)
    assert config.path is None
    assert config.describe() == "config ignored (--isolated)"


def test_describe_names_the_file_used(project: Path):
    write(project / "gradcheck.yaml", "passes: 2\n")
    assert load_config().describe() == "using config gradcheck.yaml"
    (project / "gradcheck.yaml").unlink()
    write(project / "pyproject.toml", "[tool.gradcheck]\npasses = 2\n")
    assert load_config().describe() == "using config pyproject.toml [tool.gradcheck]"


# --- Every key ----------------------------------------------------------------------------------------


def test_every_key_is_read_from_yaml(project: Path):
    write(project / "gradcheck.yaml", ALL_KEYS_YAML)
    assert load_config("gradcheck.yaml") == expected_all_keys(project)  # named: it may set trust-pickle


def test_every_key_is_read_from_pyproject_like_from_yaml(project: Path):
    write(project / "pyproject.toml", ALL_KEYS_TOML)
    expected = dataclasses.replace(expected_all_keys(project), path=project / "pyproject.toml")
    assert load_config("pyproject.toml") == expected


def test_snake_case_keys_are_accepted(project: Path):
    write(
        project / "gradcheck.yaml",
        """
        fail_on: never
        input_shape: 2x5
        trust_pickle: false
        baseline_tolerance: 3
        thresholds:
          decades_warning: 0.5
        """,
    )
    config = load_config()
    assert (config.fail_on, config.input_shape, config.trust_pickle) == (FailOn.NEVER, ((2, 5),), False)
    assert config.baseline_tolerance == 3.0
    assert config.threshold_values == (("decades_warning", 0.5),)


def test_keys_and_thresholds_match_the_rest_of_the_package():
    from gradcheck_cli.judge.diagnosis import Thresholds
    from gradcheck_cli.load.inputs import DTYPES

    assert tuple(DTYPE_BYTES) == tuple(DTYPES)
    assert {name: dtype.itemsize for name, dtype in DTYPES.items()} == DTYPE_BYTES
    assert [key.replace("-", "_") for key in THRESHOLD_KEYS] == [
        f.name for f in dataclasses.fields(Thresholds) if f.name != "lr"
    ]
    assert {LossKind("ce"), Optimizer("sgd")}  # the enums the keys use
    assert len(KEYS) == len(set(KEYS)) == 25


def test_a_single_pattern_and_a_single_shape_need_no_list(project: Path):
    write(project / "gradcheck.yaml", 'ignore: "head.*"\ninput-shape: [8, 3, 32, 32]\npath: src\n')
    config = load_config()
    assert config.ignore == ("head.*",)
    assert config.input_shape == ((8, 3, 32, 32),)
    assert config.paths == (str(project / "src"),)


def test_an_exponent_without_a_dot_is_a_number_in_yaml(project: Path):
    # PyYAML follows YAML 1.1, where 1e-3 is a string; every user means the number.
    write(project / "gradcheck.yaml", "lr: 1e-3\nbaseline-tolerance: 2E0\n")
    config = load_config()
    assert (config.lr, config.baseline_tolerance) == (0.001, 2.0)


def test_a_quoted_exponent_stays_a_string(project: Path):
    message = error_of(project, 'lr: "1e-3"\n')
    assert message == "gradcheck.yaml:1: 'lr' must be a number greater than 0 and at most 1000, not '1e-3'."


def test_an_empty_yaml_file_sets_nothing(project: Path):
    write(project / "gradcheck.yaml", "# settings come later\n")
    config = load_config()
    assert config == Config(path=project / "gradcheck.yaml")


def test_to_yaml_writes_the_settings_in_a_fixed_order(project: Path):
    write(project / "gradcheck.yaml", ALL_KEYS_YAML)
    shared = project.parent / "shared"
    assert load_config("gradcheck.yaml").to_yaml() == textwrap.dedent(
        f"""\
        passes: 5
        seed: 7
        loss: mse
        fail-on: warning
        format: sarif
        ignore:
        - encoder.*.attention.*
        - head
        input-shape:
        - 8,3,32,32
        - 4,10
        input-dtype: float64
        vocab-size: 1000
        seq-len: 12
        batch-size: 4
        entry: build_model
        path:
        - {project / "src"}
        - {shared}
        trust-pickle: true
        lr: 0.01
        optimizer: adam
        steps: 3
        verify: true
        baseline-tolerance: 2.5
        thresholds:
          decades-warning: 1.5
          decades-error: 3.0
          forward-decades-error: 2.5
          relative-grad-warning: 50.0
          relative-grad-error: 5000.0
          min-trend-layers: 5
          lr-step-fraction: 0.2
        targets:
        - model.py
        - target: nets/cnn.py:build
          passes: 2
          thresholds:
            decades-error: 4.0
        - mypkg.models:factory
        """
    )


def test_to_yaml_reads_back_to_the_same_settings(project: Path, tmp_path: Path):
    write(project / "gradcheck.yaml", ALL_KEYS_YAML)
    config = load_config("gradcheck.yaml")
    write(project / "again.yaml", config.to_yaml())
    assert load_config("again.yaml") == dataclasses.replace(config, path=project / "again.yaml")


def test_to_yaml_writes_only_what_is_set(project: Path):
    write(project / "gradcheck.yaml", "seed: 3\nformat: json\n")
    assert load_config().to_yaml() == "seed: 3\nformat: json\n"


# --- Targets ------------------------------------------------------------------------------------------


def test_targets_are_strings_or_mappings(project: Path):
    write(
        project / "gradcheck.yaml",
        """
        targets:
          - model.py
          - target: other.py
            seed: 4
            loss: ce
        """,
    )
    assert load_config().targets == (
        TargetConfig(target="model.py"),
        TargetConfig(target="other.py", seed=4, loss=LossKind.CE),
    )


def test_target_paths_are_relative_to_the_config_file_and_shown_relative_to_the_cwd(project: Path):
    write(
        project / "configs" / "gradcheck.yaml",
        """
        path: [../src]
        targets:
          - ../models/net.py:build
          - target: local.py
          - saved.pt2
          - mypkg.models:factory
        """,
    )
    config = load_config("configs/gradcheck.yaml")
    assert [t.target for t in config.targets] == [
        "models/net.py:build",
        "configs/local.py",
        "configs/saved.pt2",
        "mypkg.models:factory",
    ]
    assert config.paths == (str(project / "src"),)


def test_a_target_outside_the_cwd_is_absolute(project: Path, monkeypatch: pytest.MonkeyPatch):
    write(project / "gradcheck.yaml", "targets: [model.py]\n")
    elsewhere = project.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(project / "gradcheck.yaml").targets[0].target == str(project / "model.py")


def test_a_target_that_exists_without_a_model_suffix_is_a_path(project: Path):
    write(project / "weights" / "model", "")
    write(project / "conf" / "gradcheck.yaml", "targets: [../weights/model, mymodule]\n")
    assert [t.target for t in load_config("conf/gradcheck.yaml").targets] == ["weights/model", "mymodule"]


def test_for_target_puts_a_targets_settings_over_the_top_level(project: Path):
    write(
        project / "gradcheck.yaml",
        """
        passes: 5
        seed: 1
        thresholds: {decades-warning: 1.5}
        targets:
          - target: a.py
            passes: 2
            thresholds: {decades-error: 4}
        """,
    )
    config = load_config()
    merged = config.for_target(config.targets[0])
    assert (merged.passes, merged.seed, merged.targets) == (2, 1, ())
    assert merged.thresholds(None) == {"decades_warning": 1.5, "decades_error": 4.0}


# --- Precedence helpers -------------------------------------------------------------------------------


def test_setting_takes_the_command_line_then_the_file_then_the_default(project: Path):
    write(project / "gradcheck.yaml", "passes: 5\nfail-on: warning\npath: [src]\n")
    config = load_config()
    assert config.setting("passes", 9, True, 3) == 9
    assert config.setting("passes", 3, False, 3) == 5
    assert config.setting("seed", 0, False, 0) == 0
    assert config.setting("fail-on", FailOn.ERROR, False, FailOn.ERROR) is FailOn.WARNING
    assert config.setting("fail_on", FailOn.NEVER, True, FailOn.ERROR) is FailOn.NEVER
    assert config.setting("path", None, False, ()) == (str(project / "src"),)
    with pytest.raises(ValueError):
        config.setting("thresholds", None, False, None)


def test_thresholds_gives_the_kwargs_set_in_the_file_and_the_learning_rate(project: Path):
    from gradcheck_cli.judge.diagnosis import Thresholds

    write(project / "gradcheck.yaml", "lr: 0.05\nthresholds:\n  decades-warning: 0.5\n")
    config = load_config()
    assert config.thresholds(None) == {"decades_warning": 0.5, "lr": 0.05}
    assert config.thresholds(0.5) == {"decades_warning": 0.5, "lr": 0.5}
    assert Thresholds(**config.thresholds(0.5)).decades_warning == 0.5
    assert Config().thresholds(None) == {}
    assert config.notices == ()


def test_relative_grad_warning_is_still_read_but_gives_one_notice_that_it_is_ignored(project: Path):
    # Regression (issue 22): the relative gradient is judged against the lr only, so this key decides nothing;
    # old files keep loading, and say so once however many places set it.
    write(
        project / "gradcheck.yaml",
        """
        thresholds:
          relative-grad-warning: 10
        targets:
          - target: model.py
            thresholds:
              relative-grad-warning: 20
        """,
    )
    config = load_config()
    assert config.thresholds(None) == {"relative_grad_warning": 10.0}
    (notice,) = config.notices
    assert notice.startswith("'relative-grad-warning' is deprecated and ignored:")
    assert notice.endswith("remove the key.") and notice.count(". ") == 0


def test_a_deprecated_key_with_a_bad_value_is_still_an_error(project: Path):
    message = error_of(project, "thresholds:\n  relative-grad-warning: -1\n")
    assert "'relative-grad-warning' must be a number greater than 0" in message


def test_the_cli_shows_the_deprecation_notice_on_stderr(project: Path):
    from typer.testing import CliRunner

    from gradcheck_cli.cli.main import app

    write(project / "gradcheck.yaml", "thresholds:\n  relative-grad-warning: 10\n")
    result = CliRunner().invoke(app, ["config", "--show"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("'relative-grad-warning' is deprecated and ignored") == 1
    assert "deprecated" not in result.stdout


# --- Errors: each names the file and the line ---------------------------------------------------------


def test_error_unknown_top_level_key_suggests_the_right_one(project: Path):
    message = error_of(project, "seed: 1\npases: 3\n")
    assert message == "gradcheck.yaml:2: unknown key 'pases'; did you mean 'passes'? See docs/config.md for the keys."


def test_error_unknown_key_without_a_close_match(project: Path):
    message = error_of(project, "seed: 1\ncolour: red\n")
    assert message == "gradcheck.yaml:2: unknown key 'colour'; see docs/config.md for the keys."


def test_error_unknown_key_in_a_target(project: Path):
    message = error_of(project, "targets:\n  - a.py\n  - target: b.py\n    sede: 3\n")
    assert message == (
        "gradcheck.yaml:4: unknown key 'sede' in a target; did you mean 'seed'? See docs/config.md for the keys."
    )


def test_error_top_level_only_key_in_a_target(project: Path):
    message = error_of(project, "targets:\n  - target: b.py\n    format: json\n")
    assert message == "gradcheck.yaml:3: 'format' cannot be set per target; set it at the top level."


def test_error_unknown_threshold(project: Path):
    message = error_of(project, "thresholds:\n  decades-warning: 1\n  decade-error: 3\n")
    assert message == (
        "gradcheck.yaml:3: unknown threshold 'decade-error'; did you mean 'decades-error'? "
        "See docs/config.md for the thresholds."
    )


def test_error_lr_is_not_a_threshold(project: Path):
    message = error_of(project, "thresholds:\n  lr: 0.1\n")
    assert message == "gradcheck.yaml:2: 'lr' is not a threshold; set it as a top-level key (lr: 0.001)."


def test_error_wrong_type_string_for_passes(project: Path):
    message = error_of(project, "seed: 1\nloss: ce\npasses: three\n")
    assert message == "gradcheck.yaml:3: 'passes' must be an integer from 1 to 1000, not 'three'."


def test_error_wrong_type_bool_is_not_an_integer(project: Path):
    message = error_of(project, "passes: true\n")
    assert message == "gradcheck.yaml:1: 'passes' must be an integer from 1 to 1000, not true."


def test_error_wrong_type_list_for_seed(project: Path):
    message = error_of(project, "passes: 2\nseed: [1, 2]\n")
    assert message == "gradcheck.yaml:2: 'seed' must be an integer from 0 to 9_223_372_036_854_775_807, not a list."


def test_error_wrong_type_names_the_line_of_the_value(project: Path):
    message = error_of(project, "seed: 1\nverify:\n  - yes\n")
    assert message == "gradcheck.yaml:3: 'verify' must be true or false, not a list."


def test_error_an_integer_is_accepted_where_a_float_is_wanted_but_not_a_string(project: Path):
    write(project / "gradcheck.yaml", "lr: 1\n")
    assert load_config().lr == 1.0
    message = error_of(project, "lr: fast\n")
    assert message == "gradcheck.yaml:1: 'lr' must be a number greater than 0 and at most 1000, not 'fast'."


def test_error_out_of_range_passes_zero(project: Path):
    message = error_of(project, "passes: 0\n")
    assert message == "gradcheck.yaml:1: 'passes' must be an integer from 1 to 1000, not 0."


def test_error_out_of_range_negative_lr(project: Path):
    message = error_of(project, "passes: 2\nlr: -1\n")
    assert message == "gradcheck.yaml:2: 'lr' must be a number greater than 0 and at most 1000, not -1."


def test_error_out_of_range_baseline_tolerance_of_one(project: Path):
    message = error_of(project, "baseline-tolerance: 1\n")
    assert message == "gradcheck.yaml:1: 'baseline-tolerance' must be a number greater than 1 and at most 1e+12, not 1."


def test_error_out_of_range_shape(project: Path):
    message = error_of(project, "input-shape:\n  - 8,3\n  - [8, 0]\n")
    assert message == (
        "gradcheck.yaml:3: 'input-shape' must be a list of shapes such as \"8,3,32,32\" or [8, 3, 32, 32], not a list."
    )


def test_error_bad_enum(project: Path):
    message = error_of(project, "fail-on: sometimes\n")
    assert message == "gradcheck.yaml:1: 'fail-on' must be one of error, warning, never, not 'sometimes'."


def test_error_bad_enum_with_a_close_match(project: Path):
    message = error_of(project, "seed: 0\ninput-dtype: flaot32\n")
    assert message == (
        "gradcheck.yaml:2: 'input-dtype' must be one of float32, float64, float16, bfloat16, int64, int32, bool, "
        "not 'flaot32'; did you mean 'float32'?"
    )


def test_error_thresholds_that_do_not_fit_together_name_the_thresholds_line(project: Path):
    message = error_of(project, "seed: 1\nthresholds:\n  decades-warning: 3\n  decades-error: 2\n")
    assert message == (
        "gradcheck.yaml:2: these thresholds do not fit together: thresholds need 0 < decades-warning <= decades-error."
    )


def test_error_a_targets_thresholds_are_checked_with_the_top_level_ones(project: Path):
    text = "thresholds:\n  decades-warning: 1.5\ntargets:\n  - target: a.py\n    thresholds:\n      decades-error: 1\n"
    message = error_of(project, text)
    assert message.startswith("gradcheck.yaml:5: these thresholds do not fit together: ")


def test_error_out_of_range_threshold(project: Path):
    message = error_of(project, "thresholds:\n  min-trend-layers: 1\n")
    assert message == "gradcheck.yaml:2: 'min-trend-layers' must be an integer of at least 2, not 1."


def test_error_yaml_syntax_names_the_line(project: Path):
    message = error_of(project, "seed: 1\npasses: 2\nignore: [head\nloss: ce\n")
    assert message.startswith("gradcheck.yaml:4: invalid YAML: ")


def test_error_yaml_indentation_names_the_line(project: Path):
    message = error_of(project, "seed: 1\n  passes: 2\n")
    assert message == "gradcheck.yaml:2: invalid YAML: mapping values are not allowed in this context."


def test_error_duplicate_key(project: Path):
    message = error_of(project, "seed: 1\npasses: 2\nseed: 3\n")
    assert message == "gradcheck.yaml:3: duplicate key 'seed' (also set on line 1); keep one."


def test_error_duplicate_key_in_two_spellings(project: Path):
    message = error_of(project, "seq_len: 1\nseq-len: 2\n")
    assert message == "gradcheck.yaml:2: duplicate key 'seq-len' (also set on line 1); keep one."


def test_error_top_level_list(project: Path):
    message = error_of(project, "- passes: 2\n- seed: 1\n")
    assert message == "gradcheck.yaml:1: the top level must be a mapping of settings (key: value), not a list."


def test_error_target_mapping_without_target(project: Path):
    message = error_of(project, "targets:\n  - a.py\n  - passes: 2\n    seed: 1\n")
    assert message == (
        "gradcheck.yaml:3: this target has no 'target' key; add target: model.py (or package.module:factory)."
    )


def test_error_target_of_the_wrong_type(project: Path):
    message = error_of(project, "targets:\n  - 3\n")
    assert message == "gradcheck.yaml:2: each of 'targets' must be a target or a mapping with a 'target' key, not 3."


def test_error_missing_explicit_config_file(project: Path):
    write(project / "gradcheck.yaml", "passes: 2\n")
    with pytest.raises(ConfigError) as raised:
        load_config("missing.yaml")
    assert str(raised.value) == "config file missing.yaml not found; check the path."


def test_error_explicit_config_that_is_a_folder(project: Path):
    (project / "conf").mkdir()
    with pytest.raises(ConfigError, match="config file conf is a folder"):
        load_config("conf")


def test_error_unsafe_tags_are_refused(project: Path):
    message = error_of(project, "seed: 1\npasses: !!python/name:os.system\n")
    assert message.startswith("gradcheck.yaml:2: invalid YAML: could not determine a constructor")
    message = error_of(project, "seed: !!python/object:os.system {}\n")
    assert message.startswith("gradcheck.yaml:1: invalid YAML: the tag ")


def test_error_several_documents(project: Path):
    message = error_of(project, "seed: 1\n---\nseed: 2\n")
    assert message == (
        "gradcheck.yaml:2: invalid YAML: expected a single document in the stream but found another document."
    )


def test_config_error_is_a_gradcheck_error():
    assert issubclass(ConfigError, GradcheckError)


# --- pyproject.toml errors ----------------------------------------------------------------------------


PYPROJECT_HEAD = '[project]\nname = "x"\n\n[tool.gradcheck]\n'


def test_pyproject_error_unknown_key(project: Path):
    message = error_of(project, PYPROJECT_HEAD + "passes = 3\npases = 4\n", "pyproject.toml")
    assert message == "pyproject.toml:6: unknown key 'pases'; did you mean 'passes'? See docs/config.md for the keys."


def test_pyproject_error_wrong_type(project: Path):
    message = error_of(project, PYPROJECT_HEAD + "seed = 1\npasses = true\n", "pyproject.toml")
    assert message == "pyproject.toml:6: 'passes' must be an integer from 1 to 1000, not true."


def test_pyproject_error_in_a_thresholds_table(project: Path):
    text = PYPROJECT_HEAD + "passes = 3\n\n[tool.gradcheck.thresholds]\ndecades-warning = 1\nrelative-grad-error = -1\n"
    message = error_of(project, text, "pyproject.toml")
    assert message == "pyproject.toml:9: 'relative-grad-error' must be a number greater than 0, not -1."


def test_pyproject_error_thresholds_that_do_not_fit_together(project: Path):
    text = PYPROJECT_HEAD + "passes = 3\n\n[tool.gradcheck.thresholds]\ndecades-warning = 3\ndecades-error = 2\n"
    message = error_of(project, text, "pyproject.toml")
    assert message.startswith("pyproject.toml:7: these thresholds do not fit together: ")


def test_pyproject_error_in_the_second_array_of_tables_target(project: Path):
    text = PYPROJECT_HEAD + 'passes = 3\n\n[[tool.gradcheck.targets]]\ntarget = "a.py"\n\n'
    text += '[[tool.gradcheck.targets]]\ntarget = "b.py"\npases = 2\n'
    message = error_of(project, text, "pyproject.toml")
    assert message.startswith("pyproject.toml:12: unknown key 'pases' in a target")


def test_pyproject_error_in_an_inline_target(project: Path):
    text = PYPROJECT_HEAD + 'passes = 3\ntargets = [\n  "a.py",\n  { target = "b.py", seed = -1 },\n]\n'
    message = error_of(project, text, "pyproject.toml")
    assert message == "pyproject.toml:8: 'seed' must be an integer from 0 to 9_223_372_036_854_775_807, not -1."


def test_pyproject_error_target_without_target(project: Path):
    text = PYPROJECT_HEAD + "passes = 3\n\n[[tool.gradcheck.targets]]\nseed = 2\n"
    message = error_of(project, text, "pyproject.toml")
    assert message.startswith("pyproject.toml:7: this target has no 'target' key")


def test_pyproject_error_toml_syntax_names_the_line(project: Path):
    message = error_of(project, PYPROJECT_HEAD + "passes = 3\nseed = = 1\n", "pyproject.toml")
    assert message.startswith("pyproject.toml:6: invalid TOML: ")


def test_pyproject_error_gradcheck_not_a_table(project: Path):
    message = error_of(project, "[tool]\ngradcheck = 3\n", "pyproject.toml")
    assert message == "pyproject.toml:2: [tool.gradcheck] must be a table of settings, not 3."


def test_pyproject_error_without_a_line_names_the_table(project: Path):
    # An escaped key cannot be found in the text: the message names the table instead of a line.
    message = error_of(project, PYPROJECT_HEAD + '"pa\\u0073ses" = 0\n', "pyproject.toml")
    assert message == "pyproject.toml [tool.gradcheck]: 'passes' must be an integer from 1 to 1000, not 0."


def test_pyproject_error_explicit_file_without_the_table(project: Path):
    write(project / "pyproject.toml", '[project]\nname = "x"\n')
    with pytest.raises(ConfigError) as raised:
        load_config("pyproject.toml")
    assert str(raised.value) == "pyproject.toml has no [tool.gradcheck] table; add one, or use a gradcheck.yaml."


def test_an_unparseable_pyproject_with_the_table_is_found_and_reported(project: Path):
    write(project / "pyproject.toml", "[tool.gradcheck]\npasses = [\n")
    assert find_config(project) == project / "pyproject.toml"
    with pytest.raises(ConfigError, match=r"^pyproject.toml:\d+: invalid TOML: "):
        load_config()


def test_the_config_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, gradcheck_cli.config.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
