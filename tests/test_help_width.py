"""--help of every command reads whole at 60, 80 and 120 columns (issue 23, item 8): flags shown as flags, no
choice cut mid-word, nothing cut with an ellipsis, no line past the width. The commands are found in the
Typer app itself, so a command or option added later is checked too."""

from __future__ import annotations

import json
import re

import pytest
import typer
from typer.core import TyperOption
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app

WIDTHS = (60, 80, 120)


def _commands(command=None, path=()) -> list[tuple[tuple[str, ...], object]]:
    """(argv before --help, command) for the app and every command under it."""
    if command is None:
        command = typer.main.get_command(app)
    found = [(path, command)]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands()


def _help(path: tuple[str, ...], width: int) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def _options(path: tuple[str, ...]) -> list[TyperOption]:
    command = dict(COMMANDS)[path]
    ctx = typer.Context(command, info_name="gradcheck")
    return [param for param in command.get_params(ctx) if isinstance(param, TyperOption) and not param.hidden]


def _word(text: str) -> re.Pattern:
    """``text`` whole: not the start, end or middle of a longer name (leaky_relu is not relu, --no-fix not --fix)."""
    return re.compile(rf"(?<![\w-]){re.escape(text)}(?![\w-])")


def _help_column(text: str) -> str:
    """The help as one line of words, the box drawn around it removed: a text wrapped over several lines of
    the help column reads as it was written (the other columns are blank on its continuation lines)."""
    return " ".join(" ".join(line.strip(" │") for line in text.splitlines()).split())


def test_the_commands_are_found():
    assert {path for path, _ in COMMANDS} >= {(), ("demo",), ("scan",), ("config",), ("report",)}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=lambda path: " ".join(path) or "gradcheck")
def test_help_reads_whole(path, width):
    text = _help(path, width)
    assert "<bool>" not in text
    assert "…" not in text
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, too_long
    for option in _options(path):
        for name in (*option.opts, *option.secondary_opts):
            assert _word(name).search(text), f"{name} is not shown whole"
            if option.is_flag:  # no value placeholder after a flag's name
                assert not re.search(rf"{_word(name).pattern}[ \t]+<", text), f"{name} is shown taking a value"
        choices = [choice.value for choice in option.type_descriptor.choices or ()]
        for choice in choices:
            assert _word(choice).search(text), f"{'/'.join(option.opts)}: choice {choice!r} is cut"
        if choices:  # and listed whole, in the enum's order, in the help column (read as one text)
            assert f"[one of: {', '.join(choices)}]" in _help_column(text), option.opts


def test_every_choice_option_is_checked():
    """The test above cannot pass for want of choices: demo's and scan's enum options are all seen."""
    names = {option.name for option in _options(("demo",)) if option.type_descriptor.choices}
    assert {"arch", "activation", "init", "norm", "output_format", "color", "fail_on", "device", "amp"} <= names
    assert "loss" in {option.name for option in _options(("scan",)) if option.type_descriptor.choices}


def test_demo_activation_choices_at_80_columns():
    """The report of issue 23: the choice list was folded into '<sigmoid|tanh|relu|le' / 'aky_relu|...'."""
    text = _help(("demo",), 80)
    for choice in ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "identity"):
        assert _word(choice).search(text)
    assert "[one of: sigmoid, tanh, relu, leaky_relu, elu, selu, gelu, identity]" in _help_column(text)


def test_demo_verify_is_a_flag():
    """Issue 23: --help showed `--verify <bool>`, and `demo --verify true` was refused (an extra argument).
    --verify takes no value: alone, it runs the suggested fixes on copies."""
    args = ["demo", "--no-fix", "--depth", "10", "--width", "4", "--passes", "1", "--format", "json"]
    env = {"COLUMNS": "80", "NO_COLOR": "1"}
    runner = CliRunner()
    verified = runner.invoke(app, [*args, "--verify"], env=env)
    assert verified.exit_code in (0, 1), verified.output
    assert json.loads(verified.stdout)["fix_trials"], "--verify ran no fix"
    plain = runner.invoke(app, args, env=env)
    assert json.loads(plain.stdout)["fix_trials"] == []


@pytest.mark.parametrize(("option", "value"), [("--passes", "0"), ("--seed", "-1"), ("--timeout", "700000")])
def test_ranges_are_still_checked(option, value):
    """The help shows a range in the help text rather than the type column (gradcheck_cli/cli/help.py): Typer
    must still refuse a number outside it."""
    result = CliRunner().invoke(app, ["demo", option, value], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == 2
    assert option in result.output
