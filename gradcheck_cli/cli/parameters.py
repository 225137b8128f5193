"""The commands' parameters, built from the settings table (config/settings.py): Typer reads a command's
options from ``inspect.signature``, so each command function takes ``ctx`` and ``**values`` and is given the
signature the table declares, one ``Annotated[type, typer.Option(...)]`` parameter per entry."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from gradcheck_cli.common.limits import RANGES
from gradcheck_cli.config.settings import Setting, for_command


def takes_settings(command: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give the decorated ``def name(ctx, **values)`` the parameters of ``command`` in the table."""

    def decorate(function: Callable[..., None]) -> Callable[..., None]:
        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        parameters = [context, *(_parameter(setting) for setting in for_command(command))]
        function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        return function

    return decorate


def _parameter(setting: Setting) -> inspect.Parameter:
    if setting.argument:
        declared: Any = typer.Argument(help=setting.help, **setting.typer)
    else:
        declared = typer.Option(*setting.flags, **_option_keywords(setting))
    default = inspect.Parameter.empty if setting.default is ... else setting.default
    return inspect.Parameter(
        setting.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[setting.annotation, declared],
    )


def _option_keywords(setting: Setting) -> dict[str, Any]:
    keywords: dict[str, Any] = {}
    bounds = RANGES[setting.bounds] if setting.bounds is not None else None
    # Typer's min and max are inclusive: a range that excludes its minimum (a learning rate of 0) is checked
    # once the config file's value is known too (cli/resolve.py).
    if bounds is not None and not bounds.above_minimum:
        keywords |= {"min": bounds.minimum, "max": bounds.maximum}
    keywords |= setting.typer
    return {"help": setting.help, **keywords, "rich_help_panel": setting.panel}
