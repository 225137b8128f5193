"""How ``--help`` shows each option, set once for every command (issue 23): the command classes the CLI's
Typer app and its commands are built with. No torch here: --help stays instant.

Typer's Rich help has a type column between the option names and the help text. What it put there did
not read at 80 columns, so the commands rewrite it when they are built:

- a flag shows no value: Typer showed ``<bool>``, which reads as if ``--verify true`` were the way to
  set it (it is an extra argument, exit 2);
- a choice shows ``<choice>``, and its values go whole into the help text, from the option's enum
  (gradcheck_cli/common/choices.py): in the type column, ``<sigmoid|tanh|relu|leaky_relu|...>`` was folded
  mid-word;
- a number's range goes into the help text too: ``[0<=x<=9223372036854775807]`` widened the type column
  until the help text beside it was squeezed, and was itself cut in two.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption


def _describe(option: TyperOption) -> None:
    """Rewrite one option's type column and help text (see the module docstring). Call once per option."""
    if option.is_flag:
        option.metavar = ""
        return
    notes = []
    choices = option.type_descriptor.choices
    if choices:
        option.metavar = "<choice>"
        notes.append("one of: " + ", ".join(str(getattr(choice, "value", choice)) for choice in choices))
    if option.min is not None or option.max is not None:
        option.metavar = f"<{option.bare_type()}>"
        notes.append(_range(option.min, option.max))
        # Only the help reads these two: Typer checks the range against the declaration (typer.Option's
        # min and max), which stays as it was (tests/test_help_width.py keeps it checked).
        option.min = option.max = None
    if notes:
        # Rich markup (the app's rich_markup_mode): dim, like the "[default: ...]" Typer adds after them, and
        # the bracket escaped, so that it is not read as a markup tag.
        option.help = " ".join([option.help or "", *(f"[dim]{escape(f'[{note}]')}[/]" for note in notes)]).strip()


def _range(low: float | None, high: float | None) -> str:
    if low is None:
        return f"at most {_number(high)}"
    if high is None:
        return f"at least {_number(low)}"
    return f"range: {_number(low)} to {_number(high)}"


def _number(value: float) -> str:
    """A bound as the help shows it: the integer limits (gradcheck_cli/common/limits.py) as 2**31-1 and 2**63-1, which
    say what they are and, unlike 9223372036854775807, fit the help text's column at 60 columns."""
    if isinstance(value, int) and value >= 2**31 - 1 and (value + 1).bit_count() == 1:
        return f"2**{(value + 1).bit_length() - 1}-1"
    return str(value)


class _DescribedOptions:
    """For a TyperCommand or TyperGroup: every option described once, when the command is built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperOption):
                _describe(param)

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)  # made once, then kept by the command
        if option is not None and option.metavar is None:
            _describe(option)
            # Where the options are grouped in panels, --help goes in the last one shown (Typer shows them in
            # the order they first appear), so that the help does not open on a box holding --help alone.
            panels = [param.rich_help_panel for param in self.params if getattr(param, "rich_help_panel", None)]
            if panels:
                option.rich_help_panel = list(dict.fromkeys(panels))[-1]
        return option


class HelpCommand(_DescribedOptions, TyperCommand):
    """A command whose --help reads whole at 80 columns (``@app.command(cls=HelpCommand)``)."""


class HelpGroup(_DescribedOptions, TyperGroup):
    """The app's own options (--version, --debug) likewise (``typer.Typer(cls=HelpGroup)``)."""
