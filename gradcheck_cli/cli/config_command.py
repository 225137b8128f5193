"""``gradcheck config``: which configuration file applies here, and (--show) the settings it makes."""

from __future__ import annotations

from typing import Any

import typer

from gradcheck_cli.cli.invocation import invocation
from gradcheck_cli.cli.parameters import takes_settings
from gradcheck_cli.cli.resolve import load_config
from gradcheck_cli.common.errors import GradcheckError


@takes_settings("config")
def config(ctx: typer.Context, **values: Any) -> None:
    """Show which configuration file applies here and what it sets.

    [dim]Example: gradcheck config --show[/]
    """
    run_state = invocation(ctx)
    try:
        loaded = load_config(values["config"], values["isolated"], verbose=False)
    except GradcheckError as error:
        run_state.fail(error)
    typer.echo(f"# {loaded.describe()}")
    if values["show"]:
        text = loaded.to_yaml().strip()
        typer.echo(text if text not in ("", "{}") else "# (every setting at its default)")
    run_state.exit()
