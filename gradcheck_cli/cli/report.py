"""``gradcheck report``: a training run's gradient history (written by ``gradcheck_cli.Monitor``) reported."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from gradcheck_cli.cli.invocation import invocation
from gradcheck_cli.cli.parameters import takes_settings
from gradcheck_cli.common.choices import Color
from gradcheck_cli.common.errors import GradcheckError


@takes_settings("report")
def report(ctx: typer.Context, **values: Any) -> None:
    """Report on a training run's gradient history: its problems, where each began, and a chart over steps.

    [dim]Example: gradcheck report history.jsonl[/]
    """
    run_state = invocation(ctx)
    try:
        from gradcheck_cli.monitor.history import read_history, summarize_history
        from gradcheck_cli.render.history import get_history_renderer

        history = values["history"]
        summary = summarize_history(read_history(Path(history)), history, values["step"])
        colour = {Color.ALWAYS: True, Color.NEVER: False}.get(values["color"])
        renderer = get_history_renderer(values["output_format"])
        renderer.render(summary, sys.stdout, color=colour, all_layers=values["all_layers"])
    except GradcheckError as error:
        run_state.fail(error)
    if summary.problems:
        run_state.found()
    run_state.exit()
