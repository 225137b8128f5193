"""The settings table (gradcheck_cli/config/settings.py) is the one place a setting is declared (issue 24):
every entry reaches the command line and the config file as it says, and nothing reaches either from
anywhere else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.limits import RANGES
from gradcheck_cli.config.config import load_config
from gradcheck_cli.config.nodes import ConfigError
from gradcheck_cli.config.settings import BY_KEY, KEYS, SETTINGS, for_command

COMMANDS = ("demo", "scan", "config", "report")
# Per config key: a value the loader takes, and one its check refuses. A new key needs a row here.
VALUES = {
    "passes": (5, 0),
    "seed": (1, -1),
    "loss": ("mse", "l2"),
    "fail-on": ("warning", "sometimes"),
    "format": ("json", "xml"),
    "ignore": (["head.*"], [1]),
    "input-shape": (["8,3,32,32"], "eight"),
    "input-dtype": ("float16", "float8"),
    "vocab-size": (100, 0),
    "seq-len": (12, 0),
    "batch-size": (4, 0),
    "entry": ("build", ""),
    "path": (["lib"], [1]),
    "trust-pickle": (True, "yes"),
    "lr": (0.01, 0),
    "optimizer": ("adam", "lbfgs"),
    "steps": (3, -1),
    "verify": (True, "yes"),
    "baseline-tolerance": (4, 1),
    "device": ("cpu", "tpu"),
    "amp": ("bf16", "fp8"),
    "timeout": (60, -1),
    "max-memory": ("8G", "lots"),
    "thresholds": ({"decades-warning": 1.5}, 5),
    "targets": (["model.py"], {"model.py": 1}),
}


def help_of(command: str) -> str:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def option_names(setting) -> list[str]:
    if setting.argument:
        return [setting.typer.get("metavar", setting.name.upper())]
    flags = setting.flags or ("--" + setting.name.replace("_", "-"),)
    return [name for flag in flags for name in flag.split("/")]


def write_config(folder: Path, key: str, value) -> Path:
    path = folder / "gradcheck.yaml"
    path.write_text(yaml.safe_dump({key: value}), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_every_entry_of_a_command_is_in_its_help(command: str):
    shown = help_of(command)
    for setting in for_command(command):
        for name in option_names(setting):
            flags = re.IGNORECASE if setting.argument else 0  # an argument shows as TARGET, or as history
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", shown, flags), (command, name)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_parameter_of_a_command_comes_from_the_table(command: str):
    group = typer.main.get_command(app)
    parameters = group.get_command(typer.Context(group), command).params
    declared = [setting.name for setting in for_command(command)]
    assert [parameter.name for parameter in parameters if parameter.name != "help"] == declared
    assert len(declared) == len(set(declared)), "a command takes each parameter once"


@pytest.mark.parametrize("key", KEYS)
def test_every_config_key_is_read_and_its_check_refuses_a_bad_value(key: str, tmp_path: Path):
    good, bad = VALUES[key]
    loaded = load_config(write_config(tmp_path, key, good))
    assert loaded.to_yaml().startswith(f"{key}:"), "the value is read and shown by config --show"
    with pytest.raises(ConfigError) as raised:
        load_config(write_config(tmp_path, key, bad))
    message = str(raised.value)
    assert message.startswith("gradcheck.yaml:") or message.startswith(str(tmp_path)), message
    assert f"'{key}'" in message, message
    assert "\n" not in message and message.endswith((".", "?")), message


def test_the_config_keys_are_the_tables():
    assert sorted(KEYS) == sorted(BY_KEY) == sorted(VALUES)
    assert len(KEYS) == len(set(KEYS))


def test_a_key_outside_the_table_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown key 'frobnicate'"):
        load_config(write_config(tmp_path, "frobnicate", 1))


def test_every_entry_is_used_and_its_range_exists():
    for setting in SETTINGS:
        assert setting.commands or setting.key, f"{setting.name} is neither an option nor a key"
        assert set(setting.commands) <= set(COMMANDS), setting.name
        assert setting.bounds is None or setting.bounds in RANGES, setting.name
        assert setting.key is None or setting.key == setting.key.lower(), setting.name
