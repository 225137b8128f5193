"""One small interface for every output format: a renderer turns a finished report into text on a stream.

Renderers never compute: every number they show is in the report. Picking one is by ``OutputFormat``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

from gradcheck_cli.choices import OutputFormat

if TYPE_CHECKING:
    from gradcheck_cli.report import Report


@dataclass(frozen=True)
class RenderOptions:
    all_layers: bool = False  # text: show every layer instead of the condensed table
    width: int | None = None  # text: force a width (tests); None lets Rich read the terminal / COLUMNS


class Renderer(Protocol):
    def render(self, report: Report, stream: TextIO, options: RenderOptions) -> None: ...

    def render_many(self, reports: list[Report], stream: TextIO, options: RenderOptions) -> None:
        """Several targets' reports in one output (one document for machine formats)."""
        ...


def get_renderer(output_format: OutputFormat) -> Renderer:
    if output_format is OutputFormat.JSON:
        from gradcheck_cli.render.json import JsonRenderer

        return JsonRenderer()
    from gradcheck_cli.render.text import TextRenderer

    return TextRenderer()
