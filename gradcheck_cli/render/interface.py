"""One small interface for every output format: a renderer turns a finished report into text on a stream.

Renderers never compute: every number they show is in the report. Picking one is by ``OutputFormat``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

from gradcheck_cli.common.choices import FailOn, OutputFormat

if TYPE_CHECKING:
    from gradcheck_cli.report.report import Report


@dataclass(frozen=True)
class RenderOptions:
    all_layers: bool = False  # text: show every layer instead of the condensed table
    width: int | None = None  # text: force a width (tests); None lets Rich read the terminal / COLUMNS
    quiet: bool = False  # text: the verdict line, the findings and the fixes tried, one line each (-q)
    verbose: bool = False  # text: the layer table, every cause and fix, the evidence (-v); else one screen
    color: bool | None = None  # text: force colour on or off; None lets Rich decide (NO_COLOR, terminal)
    fail_on: FailOn = FailOn.ERROR  # formats that mark pass/fail per check (JUnit, SARIF levels) use it


class Renderer(Protocol):
    def render(self, report: Report, stream: TextIO, options: RenderOptions) -> None: ...

    def render_many(self, reports: list[Report], stream: TextIO, options: RenderOptions) -> None:
        """Several targets' reports in one output (one document for machine formats)."""
        ...


# format -> (module, class): each renderer is imported only when it is used.
_RENDERERS = {
    OutputFormat.TEXT: ("gradcheck_cli.render.text", "TextRenderer"),
    OutputFormat.JSON: ("gradcheck_cli.render.json", "JsonRenderer"),
    OutputFormat.MARKDOWN: ("gradcheck_cli.render.markdown", "MarkdownRenderer"),
    OutputFormat.JUNIT: ("gradcheck_cli.render.junit", "JunitRenderer"),
    OutputFormat.SARIF: ("gradcheck_cli.render.sarif", "SarifRenderer"),
    OutputFormat.GITHUB: ("gradcheck_cli.render.github", "GithubRenderer"),
}


def get_renderer(output_format: OutputFormat) -> Renderer:
    import importlib

    module, name = _RENDERERS[output_format]
    return getattr(importlib.import_module(module), name)()
