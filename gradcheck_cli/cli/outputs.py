"""What the run commands do around the measuring: the report written once (to --output whole, or stdout),
the plot, the baseline, the worker processes and their output, the spinner, and torchrun's other processes
kept quiet. Only the CLI prints; these are its helpers."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from gradcheck_cli.cli.invocation import stderr
from gradcheck_cli.cli.resolve import OutputSettings
from gradcheck_cli.common.choices import Color, OutputFormat
from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError


def same_target(target: str) -> str:
    """A target as a comparable key: file paths resolved, package.module:attr as written."""
    location, colon, name = target.partition(":")
    if location.endswith(".py") or Path(location).exists():
        return str(Path(location).resolve()) + colon + name
    return target


def load_baseline(path: str | None) -> dict | None:
    if path is None:
        return None
    from gradcheck_cli.report.baseline import load_baseline

    return load_baseline(Path(path))


def compare(report: Any, entries: dict, tolerance: float, silent: bool, folder: Path) -> None:
    from gradcheck_cli.report.baseline import apply_baseline, baseline_key, compare

    key = baseline_key(report, folder)
    entry = entries.get(key)
    if entry is None:
        if not silent:
            stderr.print(
                f"note: {key} is not in the baseline; nothing to compare (add it with --save-baseline).",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        return
    apply_baseline(report, compare(report, entry, tolerance))


def emit(reports: list, many: bool, settings: OutputSettings, values: dict[str, Any]) -> None:
    """Render once; write to --output (whole, or not at all) and/or stdout (unless --silent). ``values``: the
    command's options (--output, --all-layers, --quiet, --silent, --color, --verbose)."""
    from gradcheck_cli.render.interface import RenderOptions, get_renderer

    output, all_layers, quiet, silent, color, verbose = (
        values[name] for name in ("output", "all_layers", "quiet", "silent", "color", "verbose")
    )
    colour = {Color.ALWAYS: True, Color.NEVER: False}.get(color)
    if output is not None:
        colour = False if colour is None else colour  # a file gets no escape codes unless asked
    options = RenderOptions(all_layers=all_layers, quiet=quiet, verbose=verbose, color=colour, fail_on=settings.fail_on)
    renderer = get_renderer(settings.format)
    if output is None and silent:
        return
    if not reports and not many:
        return  # the one target failed (exit 2): no report, and no empty file for a later step to read
    # To the terminal directly, so Rich sees its width and whether it takes colour; to a file, in full first.
    stream = io.StringIO() if output is not None else sys.stdout
    if many:  # several targets: one output whose shape does not depend on how many loaded
        renderer.render_many(reports, stream, options)
    else:
        renderer.render(reports[0], stream, options)
    if output is not None:
        from gradcheck_cli.common.files import write_whole

        try:
            write_whole(Path(output), stream.getvalue())
        except OSError as error:
            raise GradcheckError(f"cannot write the report to {output}: {error.strerror or error}.") from error


def print_summary(reports: list, not_measured: int, exit_code: int, settings: OutputSettings, output) -> None:
    """Several targets: one line of verdicts and the exit code, after the report when it is text on stdout,
    else on stderr (pip-audit's way), so a JSON or SARIF document stays whole."""
    from gradcheck_cli.render.text import targets_summary

    line = targets_summary(reports, not_measured, exit_code)
    if settings.format is OutputFormat.TEXT and output is None:
        typer.echo(line)
    else:
        stderr.print(line, highlight=False, markup=False, soft_wrap=True)


@contextlib.contextmanager
def worker_run(jobs: list, limits: Any, silent: bool, spread: Any = None) -> Any:
    """The jobs in worker processes (gradcheck_cli/cli/isolation.py); what they print reaches stderr, labelled."""
    from gradcheck_cli.cli.isolation import WorkerRun
    from gradcheck_cli.cli.jobs import Request
    from gradcheck_cli.render.names import shown

    def relay(label: str, line: str) -> None:
        if not silent:  # what the model prints, shown but never obeyed: no escape sequence, no workflow command
            stderr.print(f"{shown(label, None)}| {shown(line, None)}", markup=False, highlight=False, soft_wrap=True)

    with WorkerRun(Request(jobs, limits, spread), relay) as run:
        yield run


def torchrun_rank(ctx: typer.Context, distributed: bool, fsdp: bool) -> int | None:
    """--distributed, or torchrun's environment: this process's rank, else None. Every process after the
    first prints nothing for the rest of the command (no warnings either): the first prints for all."""
    from gradcheck_cli.load.torchrun import torchrun_rank

    rank = torchrun_rank(distributed, fsdp)
    if rank:
        ctx.with_resource(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        ctx.with_resource(_muted(stderr))
    return rank


@contextlib.contextmanager
def _muted(console: Console) -> Any:
    quiet, console.quiet = console.quiet, True
    try:
        yield
    finally:
        console.quiet = quiet


def check_output(path: str | None) -> None:
    if path is not None and not path.strip():
        raise InvalidOptionError("--output needs a file name; leave it out to print the report.")


def check_plot(path: str | None) -> Any:
    """--plot: its file type and matplotlib are checked before anything is measured."""
    if path is None:
        return None
    from gradcheck_cli.render.plot import plot_format, require_matplotlib

    chosen = plot_format(path)
    require_matplotlib()
    return chosen


def write_plot(report: Any, path: Path, plot_as: Any, silent: bool) -> None:
    from gradcheck_cli.common.files import write_whole
    from gradcheck_cli.render.plot import render_plot

    try:
        write_whole(path, render_plot(report, plot_as))
    except OSError as error:
        raise GradcheckError(f"cannot write the plot to {path}: {error.strerror or error}.") from error
    if not silent:
        stderr.print(f"plot: {path}", highlight=False, markup=False, soft_wrap=True)


def progress(message: str, silent: bool = False) -> contextlib.AbstractContextManager:
    """A spinner on stderr when it is a terminal; nothing otherwise (stdout carries only the report)."""
    if stderr.is_terminal and not silent:
        return stderr.status(message)
    return contextlib.nullcontext()
