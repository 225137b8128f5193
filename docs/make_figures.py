"""Regenerate the documentation figures from `gradcheck demo` runs (nothing is drawn by hand).

    python docs/make_figures.py          # needs the [plot] extra: pip install 'gradcheck-cli[plot]'

Each figure is what `gradcheck demo ... --plot FILE.png` draws for the command listed with it, except
the --verify ones, which keep only the named fix's curve of that run (the CLI draws every fix tried on
one figure). Figures of the demo's default run check that the demo still tries the fix they are named
after, so a change to the fix order cannot silently put the wrong picture under a fix's name.

Fixes without a figure, and why:
  clipping       bounds each update, not the gradient flow: the backward signal, which the figure
                 draws, is measured before clipping and is the same after it (how-it-decides.md).
  learning_rate  changes the optimizer's steps, not the gradients at initialization, so --verify does
                 not apply it (see it with --steps N --lr).

The PNGs are re-encoded with a 256-colour palette (octree, which keeps the few line colours exact): the
same picture at about a third of the size.
"""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from gradcheck_cli.common.choices import Activation, Arch
from gradcheck_cli.render.plot import DEFAULT_DPI, PlotFormat, render_plot
from gradcheck_cli.report.report import Report
from gradcheck_cli.trials.demo import run_demo
from gradcheck_cli.trials.presets import DemoSpec

IMAGES = Path(__file__).resolve().parent / "img"
PALETTE_COLOURS = 256
SIZE_LIMIT = 150_000  # bytes: the documentation site stays light


@dataclass(frozen=True)
class DocFigure:
    path: str  # under docs/img
    command: str  # the gradcheck command it comes from
    spec: DemoSpec
    fix_id: str  # the fix whose curve is drawn
    verify: bool = False  # True: one trial of a --verify run; False: the demo's own first fix


FIGURES = (
    DocFigure("gradient-flow.png", "gradcheck demo", DemoSpec(), "relu"),
    DocFigure("fixes/relu.png", "gradcheck demo --depth 20", DemoSpec(depth=20), "relu"),
    DocFigure(
        "fixes/init.png",
        "gradcheck demo --activation relu --depth 20",
        DemoSpec(activation=Activation.RELU, depth=20),
        "init",
    ),
    DocFigure("fixes/batchnorm.png", "gradcheck demo --depth 20 --verify", DemoSpec(depth=20), "batchnorm", True),
    DocFigure("fixes/residual.png", "gradcheck demo --depth 20 --verify", DemoSpec(depth=20), "residual", True),
    DocFigure("fixes/lstm.png", "gradcheck demo --arch rnn", DemoSpec(arch=Arch.RNN), "lstm"),
)


def figure_report(figure: DocFigure, runs: dict[tuple[DemoSpec, bool], Report]) -> Report:
    """The demo's report, holding only the fix the figure is named after."""
    key = (figure.spec, figure.verify)
    if key not in runs:
        runs[key] = run_demo(figure.spec, verify=figure.verify)
    report = runs[key]
    trials = [trial for trial in report.fix_trials if trial.fix_id == figure.fix_id and trial.applied]
    if figure.verify:
        if not trials:
            raise SystemExit(f"{figure.command} no longer measures the {figure.fix_id} fix: update {__file__}.")
        return replace(report, fix_trials=trials[:1])
    if [trial.fix_id for trial in report.fix_trials] != [figure.fix_id]:
        tried = ", ".join(trial.fix_id for trial in report.fix_trials) or "no fix"
        raise SystemExit(f"{figure.command} now tries {tried}, not {figure.fix_id}: update {__file__}.")
    return report


def small_png(png: bytes) -> bytes:
    from PIL import Image  # installed with matplotlib

    image = Image.open(io.BytesIO(png)).convert("RGB")
    palette = image.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def main() -> int:
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    runs: dict[tuple[DemoSpec, bool], Report] = {}
    for figure in FIGURES:
        report = figure_report(figure, runs)
        data = small_png(render_plot(report, PlotFormat.PNG, dpi=DEFAULT_DPI))
        target = IMAGES / figure.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        note = "  TOO LARGE" if len(data) > SIZE_LIMIT else ""
        print(f"{target.relative_to(IMAGES.parent.parent)}  {len(data) / 1000:.0f} kB  <- {figure.command}{note}")
        if note:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
