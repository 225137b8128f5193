"""The command line: a thin adapter over the library, and the only code that prints or exits.

The app and its root options (--version, --debug) are here; each command is a module of its own (cli/scan.py,
cli/demo.py, cli/config_command.py, cli/report.py) whose options come from the settings table
(config/settings.py). Exit codes: cli/invocation.py. torch is imported inside the commands, never at start-up,
so --help and --version stay instant.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gradcheck_cli import __version__
from gradcheck_cli.cli.config_command import config
from gradcheck_cli.cli.demo import demo
from gradcheck_cli.cli.help import HelpCommand, HelpGroup
from gradcheck_cli.cli.invocation import EXIT_OK, Invocation
from gradcheck_cli.cli.report import report
from gradcheck_cli.cli.scan import scan

app = typer.Typer(
    name="gradcheck",
    help="Find vanishing and exploding gradients in PyTorch models: where, why, and what to change.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    cls=HelpGroup,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradcheck {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Also print the traceback of an error (exit code stays 2).")
    ] = False,
) -> None:
    ctx.obj = Invocation(debug=debug)


for command in (demo, scan, config, report):
    app.command(name=command.__name__, cls=HelpCommand)(command)


def main() -> None:
    app()
