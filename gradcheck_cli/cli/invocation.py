"""One run of the command line: its --debug flag, the exit code it is heading for, and the one way an error
reaches the user (one sentence on stderr, and exit code 2, set here and only here).

Exit codes (public API, see README): 0 healthy, 1 a finding at or above --fail-on, 2 usage or input error.
The root command makes an ``Invocation`` per run and keeps it as the Typer context's ``obj``, so nothing of
one run is left over for the next (tests run many in one process).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from gradcheck_cli.common.errors import GradcheckError

EXIT_OK, EXIT_FINDINGS = 0, 1
stderr = Console(stderr=True, highlight=False)


class Invocation:
    """The state of one run of ``gradcheck``: ``invocation(ctx)`` finds it."""

    def __init__(self, debug: bool = False):
        self.debug = debug  # --debug: also print the traceback of an error
        self.exit_code = EXIT_OK

    def failed(self) -> None:
        """The command could not do what was asked: exit code 2. The only place that code is set (besides
        Typer's own for a command line it cannot parse)."""
        self.exit_code = 2

    def found(self) -> None:
        """A finding at or above --fail-on: exit code 1, unless an error already made it 2."""
        self.exit_code = max(self.exit_code, EXIT_FINDINGS)

    def error(self, error: GradcheckError | str, prefix: str = "", details: str = "") -> None:
        """One sentence on stderr (with --debug, the traceback before it: the error's own, or ``details``
        from the worker) and exit code 2."""
        if self.debug:
            if isinstance(error, GradcheckError):
                import traceback

                traceback.print_exception(error, file=sys.stderr)
            elif details:
                sys.stderr.write(details)
        print_error(f"{prefix}{error}")
        self.failed()

    def fail(self, error: GradcheckError) -> NoReturn:
        """The error, and the command ends here."""
        self.error(error)
        self.exit()

    def exit(self) -> NoReturn:
        raise typer.Exit(self.exit_code)


def invocation(ctx: typer.Context) -> Invocation:
    """This run's Invocation (a command invoked on its own, outside the app, gets a fresh one)."""
    if not isinstance(ctx.obj, Invocation):
        ctx.obj = Invocation()
    return ctx.obj


def print_error(message: str) -> None:
    """One line on stderr. The message carries the user's text (layer names, their exception's words), shown
    with control characters escaped (render/names.py), and Rich-escaped so "[plot]" is not taken for markup."""
    from gradcheck_cli.render.names import shown

    stderr.print(f"[bold red]error:[/] {escape(shown(message, None))}", soft_wrap=True, markup=True, highlight=False)
