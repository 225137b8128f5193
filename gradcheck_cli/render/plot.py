"""``--plot FILE.png|svg|html``: a report drawn as a gradient-flow figure with matplotlib.

A renderer: every number drawn is a field of the report (the probe's per-layer figures, the diagnosis's
ratios, statuses and thresholds); nothing about gradients is computed here. matplotlib is an optional
extra (``pip install 'gradcheck-cli[plot]'``), imported only when a figure is drawn, never at start-up,
and always through the Agg canvas, so no display is needed.

The figure has up to three panels, input end on the left:
  1. what was measured per layer: weight-gradient norm, backward signal (per-sample RMS of the gradient
     at the layer's output) and forward activation RMS, on a log scale;
  2. what is judged: each layer's backward signal over the output end of its kind (the diagnosis's
     ratios), with the warning and error lines the verdict is read against; flagged layers marked by
     colour and shape; with a fix tried (``demo``, ``--verify``) or ``--steps``, the curves after it,
     the measured one dashed grey;
  3. for recurrent models: the gradient reaching each time step's input over the last step's, likewise.
"""

from __future__ import annotations

import atexit
import html
import io
import math
import os
import re
import shutil
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradcheck_cli import __version__
from gradcheck_cli.common.choices import LayerStatus
from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError
from gradcheck_cli.render.names import LINE_CHARS, Names, shown

if TYPE_CHECKING:
    from gradcheck_cli.report.report import Report

INSTALL_HINT = "pip install 'gradcheck-cli[plot]'"
# Documentation figures stay small: 100 dpi on an 11-inch-wide figure is 1100 pixels.
DEFAULT_DPI = 100
FIGURE_WIDTH = 11.0  # inches
LEGEND_COLUMN = 0.34  # the legends' column, as a share of the plots' width
LEGEND_CHARS = 44  # legend labels wrap here
# Up to this many layers every layer is named on the x axis; past it, indices with a few names.
NAMED_LAYERS_MAX = 32
NAMED_TICKS_MANY = 8  # names shown when there are many layers
NAME_CHARS_MAX = 30  # longer layer names are cut in the middle on the axis
LEVEL_LABEL_CHARS = 120  # characters of 7-point text that fit across a panel: up to this, names stand level
FEW_LAYERS = 4  # a per-layer panel of this many layers or fewer (a recurrent model's) is drawn shorter
MARKERS_MAX = 80  # past this many points a curve is drawn without point markers

# Okabe & Ito (2008) colour-blind-safe palette; every curve also differs by line style or marker, so the
# figure reads in greyscale.
BLACK, ORANGE, SKY, GREEN, BLUE, VERMILION, PURPLE = (
    "#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7",
)  # fmt: skip
GREY = "#7f7f7f"
AFTER_STYLES = [(BLUE, "o"), (GREEN, "s"), (PURPLE, "D"), (ORANGE, "P"), (SKY, "^"), (VERMILION, "v")]


class PlotFormat(str, Enum):
    PNG = "png"
    SVG = "svg"
    HTML = "html"  # one self-contained file: the SVG inline, no external scripts or styles


@dataclass(frozen=True)
class FlagStyle:
    label: str
    color: str
    marker: str
    filled: bool
    edge: str = "value"  # "value": on the curve; "bottom"/"top": at the axis edge (no finite log value)


# Flagged statuses by colour AND shape (and fill): down for too little gradient, up for too much.
FLAG_STYLES = {
    LayerStatus.VANISHING: FlagStyle("status vanishing (error)", VERMILION, "v", True),
    LayerStatus.WEAK: FlagStyle("status weak (warning)", VERMILION, "v", False),
    LayerStatus.EXPLODING: FlagStyle("status exploding (error)", PURPLE, "^", True),
    LayerStatus.HIGH: FlagStyle("status high (warning)", PURPLE, "^", False),
    LayerStatus.ZERO: FlagStyle("status zero: exactly 0 (at the bottom edge)", BLACK, "X", True, "bottom"),
    LayerStatus.NONFINITE: FlagStyle("status nonfinite: NaN/Inf (at the top edge)", PURPLE, "*", True, "top"),
    LayerStatus.NO_GRAD: FlagStyle("status no-grad: no gradient (at the bottom edge)", GREY, "x", True, "bottom"),
}


def plot_format(path: str | Path) -> PlotFormat:
    """The format a --plot file name asks for, by its suffix."""
    suffix = Path(path).suffix.lower().lstrip(".")
    try:
        return PlotFormat(suffix)
    except ValueError:
        given = f"the suffix '{Path(path).suffix}'" if suffix else "no suffix"
        raise InvalidOptionError(
            f"--plot {path} has {given}: the figure is written as .png, .svg or .html, so name a file ending in one of those."
        ) from None


def require_matplotlib() -> None:
    """Fail early, before anything is measured, when matplotlib cannot be imported."""
    _own_config_dir()
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise GradcheckError(
            f"--plot needs matplotlib, which is not installed ({error}); run {INSTALL_HINT}."
        ) from None


def plot_paths(path: str | Path, targets: list[str]) -> dict[str, Path]:
    """One file per target when several are scanned: FILE's stem suffixed with the target's name
    (``flow.png`` and ``model.py`` -> ``flow-model.png``), numbered where two targets share a name."""
    path = Path(path)
    if len(targets) <= 1:
        return {target: path for target in targets}
    paths: dict[str, Path] = {}
    taken: set[str] = set()
    for target in targets:
        stem = f"{path.stem}-{_target_stem(target)}"
        name, number = stem, 2
        while name in taken:
            name, number = f"{stem}-{number}", number + 1
        taken.add(name)
        paths[target] = path.with_name(name + path.suffix)
    return paths


def _target_stem(target: str) -> str:
    """``nets/model.py:make`` -> ``model-make``; ``package.module:factory`` -> ``module-factory``."""
    location, _, name = target.partition(":")
    if location.endswith(".py") or "/" in location or "\\" in location or Path(location).exists():
        stem = Path(location).stem  # a file: its name without the suffix
    else:
        stem = location.rsplit(".", 1)[-1]  # a dotted module path: its last part
    text = f"{stem}-{name}" if name else stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-") or "target"


def _own_config_dir() -> None:
    """matplotlib writes its font cache and config into ~/.cache/matplotlib and ~/.config/matplotlib when it
    is first imported: nothing goes into the user's home unless asked (issue 21). Unless MPLCONFIGDIR is set
    (the user's choice) or matplotlib is already imported (the configuration is read once per process), it
    gets a folder of gradcheck's own, removed at exit. The price is a font cache built afresh on each run:
    about 0.15 s where this was measured (a few dozen fonts); more on a machine with thousands of fonts."""
    if "MPLCONFIGDIR" in os.environ or "matplotlib" in sys.modules:
        return
    folder = tempfile.mkdtemp(prefix="gradcheck-mpl-")
    os.environ["MPLCONFIGDIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


# Fixed ids and no date in the SVG, fonts drawn as paths (an HTML page fetches none): the same report
# gives the same file, so regenerated documentation figures only change when the report does.
STYLE = {"svg.hashsalt": "gradcheck", "svg.fonttype": "path", "font.size": 9, "axes.titlesize": 10}


def render_plot(report: Report, plot_format: PlotFormat, dpi: int = DEFAULT_DPI) -> bytes:
    """The figure as the bytes of a PNG, SVG or HTML file."""
    require_matplotlib()
    import matplotlib

    with matplotlib.rc_context(STYLE):
        figure = gradient_flow_figure(report)
        if plot_format is PlotFormat.PNG:
            return _save(figure, "png", dpi)
        svg = _save(figure, "svg", dpi)
    if plot_format is PlotFormat.SVG:
        return svg
    return _html(report, svg.decode("utf-8")).encode("utf-8")


def _save(figure: Any, file_format: str, dpi: int) -> bytes:
    buffer = io.BytesIO()
    metadata = {"Date": None} if file_format == "svg" else {"Software": f"gradcheck {__version__} (matplotlib)"}
    figure.savefig(buffer, format=file_format, dpi=dpi, metadata=metadata)
    return buffer.getvalue()


def _html(report: Report, svg: str) -> str:
    """One file a browser opens anywhere: the SVG inline (matplotlib draws text as paths, so no fonts are
    fetched), the findings as text, no scripts, no external styles."""
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and DOCTYPE: not allowed inside HTML
    names = Names.of(report)
    findings = "".join(
        f"<li><b>{html.escape(f.severity.value)}</b> <code>{html.escape(f.kind.value)}</code>: "
        f"{html.escape(names.prose(f.message))}</li>"
        for f in report.diagnosis.findings
    )
    findings_block = f"<h2>Findings</h2><ol>{findings}</ol>" if findings else "<p>No findings.</p>"
    title = html.escape(shown(report.title, LINE_CHARS))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>gradcheck: {title}</title>\n"
        "<style>body{font-family:sans-serif;max-width:1050px;margin:1em auto;padding:0 1em;color:#222}"
        "svg{width:100%;height:auto}li{margin:.4em 0}</style>\n"
        "</head>\n<body>\n"
        f"<h1>gradcheck: {title}</h1>\n"
        f"<p>Verdict: <b>{html.escape(report.verdict.value.upper())}</b>{html.escape(_trend_text(report))}</p>\n"
        f"<figure>\n{svg}\n</figure>\n"
        f"{findings_block}\n"
        f"<p><small>gradcheck {html.escape(__version__)}</small></p>\n"
        "</body>\n</html>\n"
    )


# --- what is drawn: fields picked from the report ---------------------------------------------------


@dataclass
class Curve:
    label: str
    report: Report
    color: str
    marker: str
    before: bool  # the model as measured, when there are curves after a fix: dashed grey


def comparison_curves(report: Report) -> list[Curve]:
    """The model as measured, then every fix applied to a copy and the last of the --steps, if any."""
    afters: list[tuple[str, Report]] = [
        (f"fix {trial.fix_id} \u2014 {trial.description}", trial.report) for trial in report.fix_trials if trial.report
    ]
    if len(report.training) > 1:
        last = report.training[-1]
        afters.append((f"after training ({report.training_setup})", last.report))
    curves = [Curve("as measured", report, BLACK, "o", bool(afters))]
    for index, (label, after) in enumerate(afters):
        color, marker = AFTER_STYLES[index % len(AFTER_STYLES)]
        curves.append(Curve(label, after, color, marker, False))
    return curves


def _power(decades: float, tex: bool) -> str:
    decades = round(decades, 1) + 0.0  # -0.02 reads +0.0, not -0.0
    return f"$10^{{{decades:+.1f}}}$" if tex else f"10^{decades:+.1f}"


def _trend_text(report: Report, tex: bool = False) -> str:
    """The figures behind the verdict, as the text report states them."""
    profile = report.diagnosis.profile
    parts = []
    if profile.decades is not None:
        parts.append(f"input/output backward signal {_power(profile.decades, tex)}")
    if profile.gain_per_layer is not None:
        parts.append(f"gain x{profile.gain_per_layer:.3g}/layer")
    for time in report.diagnosis.time_profiles:
        parts.append(f"{_label(time.name) if tex else shown(time.name)} first/last step {_power(time.decades, tex)}")
    return (" \u00b7 " + " \u00b7 ".join(parts)) if parts else ""


def _positions(before: Report, after: Report) -> dict[str, int]:
    """Where each layer of ``after`` sits on the measured model's axis: the k-th layer of a type goes to
    the k-th layer of that type (a fix may rename layers, wrapping them, or insert new ones, which have no
    place and are not drawn)."""
    slots: dict[str, list[int]] = {}
    for index, layer in enumerate(before.result.layers):
        slots.setdefault(layer.type, []).append(index)
    seen: dict[str, int] = {}
    positions = {}
    for layer in after.result.layers:
        count = seen.get(layer.type, 0)
        seen[layer.type] = count + 1
        if count < len(slots.get(layer.type, ())):
            positions[layer.name] = slots[layer.type][count]
    return positions


def _label(text: str, limit: int | None = NAME_CHARS_MAX) -> str:
    """A name drawn in the figure: shown as every report shows it (render/names.py), its "$" escaped so
    that matplotlib draws it rather than reading it as mathtext (which a stray "$" makes fail)."""
    return shown(text, limit).replace("$", r"\$")


def _finite_positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


# --- drawing -----------------------------------------------------------------------------------------


def gradient_flow_figure(report: Report) -> Any:
    """The report as a matplotlib ``Figure`` on the Agg canvas (to show or adjust it, e.g. in a notebook)."""
    require_matplotlib()
    import matplotlib

    with matplotlib.rc_context(STYLE):
        return _figure(report)


def _figure(report: Report) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = comparison_curves(report)
    layers = report.result.layers
    judged = any(curve.report.diagnosis.ratios for curve in curves)
    # (a stacked module's layers: the steepest one's panel, as diagnosis.time_profiles_of keeps it)
    profiled = {profile.name for profile in report.diagnosis.time_profiles}
    recurrent = [series.name for series in report.result.recurrent if series.stack is None or series.name in profiled]
    # A recurrent model has two or three layers: its per-layer panel needs less room than its time panel.
    heights = [3.0 if len(layers) > FEW_LAYERS else 2.2] + ([2.8] if judged else []) + [2.4] * len(recurrent)
    many = len(layers) > NAMED_LAYERS_MAX
    longest = max((len(_label(layer.name)) for layer in layers), default=0)
    tick_room = 0.5 if many else 0.15 + 0.05 * longest
    figure = Figure(figsize=(FIGURE_WIDTH, sum(heights) + 1.0 + tick_room), layout="constrained")
    FigureCanvasAgg(figure)  # explicitly the Agg canvas: no display, whatever the default backend
    verdict = f"Verdict: {report.verdict.value.upper()}{_trend_text(report, tex=True)}"
    figure.suptitle(f"{_label(report.title, 110)}\n{verdict}", fontsize=11)
    grid = figure.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[1, LEGEND_COLUMN])
    measured = figure.add_subplot(grid[0, 0])
    panels = [(measured, grid[0, 1])]
    _measured_panel(measured, report, flags=not judged)
    row = 1
    if judged:
        judged_axes = figure.add_subplot(grid[row, 0], sharex=measured)
        _judged_panel(judged_axes, report, curves)
        panels.append((judged_axes, grid[row, 1]))
        measured.tick_params(labelbottom=False)
        row += 1
    _layer_ticks(panels[-1][0], [layer.name for layer in layers])
    for name in recurrent:
        time_axes = figure.add_subplot(grid[row, 0])
        _time_panel(time_axes, report, name, curves)
        panels.append((time_axes, grid[row, 1]))
        row += 1
    for axes, legend_cell in panels:
        _legend_beside(figure, axes, legend_cell)
    return figure


def _legend_beside(figure: Any, axes: Any, cell: Any) -> None:
    """Each panel's legend in the column to its right, so every panel keeps the same width."""
    handles, labels = axes.get_legend_handles_labels()
    holder = figure.add_subplot(cell)
    holder.axis("off")
    if handles:
        wrapped = [textwrap.fill(label, LEGEND_CHARS) for label in labels]
        holder.legend(handles, wrapped, loc="center left", fontsize=7.5, frameon=False, borderaxespad=0)


def _measured_panel(axes: Any, report: Report, flags: bool) -> None:
    layers = report.result.layers
    hooked = report.result.hooked
    xs = list(range(len(layers)))
    series = [
        ("backward signal: per-sample RMS of dL/d(layer output)", [layer.backward for layer in layers], BLUE, "-", "o", 2.0),
        ("weight-gradient norm ||dL/dW||", [layer.weight_grad_norm for layer in layers], ORANGE, "--", "s", 1.4),
        ("forward activation RMS", [layer.forward_rms for layer in layers], GREEN, ":", "^", 1.4),
    ]  # fmt: skip
    drawn = False
    for label, values, color, line, marker, width in series:
        drawn |= _plot_log(axes, xs, values, label, color, line, marker, width)
    statuses = [report.diagnosis.statuses.get(layer.name, LayerStatus.OK) for layer in layers]
    if not flags:  # the judged panel marks the flags; here only what the curves cannot show (zero, NaN/Inf)
        statuses = [status if _at_edge(status) else LayerStatus.OK for status in statuses]
    _mark_flags(axes, xs, [layer.backward if hooked else layer.weight_grad_norm for layer in layers], statuses)
    axes.set_yscale("log")
    axes.set_ylabel("magnitude")
    unit = "" if hooked else " (no hooks, e.g. TorchScript: weight-gradient norms only)"
    axes.set_title(f"Measured per layer{unit}, median over {report.result.passes} pass(es)", loc="left")
    if not drawn:
        axes.text(0.5, 0.5, "no layer with a finite, non-zero figure", transform=axes.transAxes, ha="center")
    axes.grid(True, which="major", axis="y", alpha=0.3)


def _judged_panel(axes: Any, report: Report, curves: list[Curve]) -> None:
    """Each layer's backward signal over the output end of its kind, as the diagnosis compares it, with
    the lines it judges against; the head is left out, as from the diagnosis's trend."""
    diagnosis = report.diagnosis
    thresholds = diagnosis.thresholds
    _threshold_lines(axes, thresholds.decades_warning, thresholds.decades_error)
    names = [layer.name for layer in report.result.layers]
    own = {name: index for index, name in enumerate(names)}
    for curve in curves:
        ratios, head = curve.report.diagnosis.ratios, curve.report.diagnosis.profile.head
        positions = own if curve.report is report else _positions(report, curve.report)
        points = sorted(
            (positions[name], ratio) for name, ratio in ratios.items() if name in positions and name != head
        )
        xs, ys = [x for x, _ in points], [y for _, y in points]
        if not any(_finite_positive(y) for y in ys):  # NaN everywhere: said in the legend, not left out
            xs, ys = [], []
        _plot_curve(axes, curve, xs, ys, _curve_label(curve, None if ys else "nothing finite to draw"))
    judged = {name: ratio for name, ratio in diagnosis.ratios.items() if name != diagnosis.profile.head}
    xs = [own[name] for name in names if name in judged]
    _mark_flags(
        axes, xs, [judged[names[x]] for x in xs], [diagnosis.statuses.get(names[x], LayerStatus.OK) for x in xs]
    )
    axes.set_yscale("log")
    _keep_lines_in_view(axes, thresholds.decades_error)
    signal = "backward signal" if diagnosis.profile.hooked else "weight-gradient norm"
    axes.set_ylabel(f"{signal} \u00f7 output end")
    trend = _label(diagnosis.profile.layer_type or "its type", None)
    axes.set_title(
        f"Judged: {signal} over the output end of the layer's kind (trend layers: {trend}; the head is left out)",
        loc="left",
    )
    axes.grid(True, which="major", axis="y", alpha=0.3)


def _time_panel(axes: Any, report: Report, name: str, curves: list[Curve]) -> None:
    """The gradient reaching each time step's input over the last step's, for one recurrent module."""
    thresholds = report.diagnosis.thresholds
    _threshold_lines(axes, thresholds.decades_warning, thresholds.decades_error)
    steps, kind = 1, ""
    for curve in curves:
        profile = next((p for p in curve.report.diagnosis.time_profiles if p.name == name), None)
        if profile is None:
            continue
        kind, steps = kind or profile.type, max(steps, profile.steps)
        measure = f"{_label(profile.type)}, first/last step {_power(profile.decades, tex=True)}"
        _plot_curve(axes, curve, list(range(1, profile.steps + 1)), profile.ratio_to_last, _curve_label(curve, measure))
    axes.set_yscale("log")
    _keep_lines_in_view(axes, thresholds.decades_error)
    axes.set_xlim(0.5, steps + 0.5)
    axes.set_xlabel("time step (the loss reads the last one)")
    axes.set_ylabel("dL/dx_t \u00f7 last step")
    axes.set_title(
        f"Through time: {_label(name)} ({_label(kind)}), the gradient reaching each step's input", loc="left"
    )
    axes.grid(True, which="major", axis="y", alpha=0.3)


def _curve_label(curve: Curve, measure: str | None = None) -> str:
    diagnosis = curve.report.diagnosis
    if measure is None:
        measure = _power(diagnosis.profile.decades, tex=True) if diagnosis.profile.decades is not None else "no trend"
    return f"{curve.label} \u2192 {diagnosis.verdict.value.upper()}, {measure}"


def _plot_curve(axes: Any, curve: Curve, xs: list[int], values: list[float], label: str) -> None:
    if curve.before:  # the measured model under the fixes' curves: dashed grey
        _plot_log(axes, xs, values, label, GREY, "--", curve.marker, 1.5)
    else:
        _plot_log(axes, xs, values, label, curve.color, "-", curve.marker, 2.0)


def _threshold_lines(axes: Any, warning: float, error: float) -> None:
    """The lines a layer's ratio is judged against: past the warning line it is weak (or high), past the
    error line vanishing (or exploding); the verdict reads the input end of the trend the same way."""
    axes.axhspan(
        10**-warning, 10**warning, color=GREEN, alpha=0.10, linewidth=0, label=f"within \u00b1{warning:g} decade(s): ok"
    )
    for sign in (-1, 1):
        axes.axhline(
            10 ** (sign * warning), color=ORANGE, linestyle="--", linewidth=1.0,
            label=f"\u00b1{warning:g} decade(s): warning (weak / high)" if sign < 0 else None,
        )  # fmt: skip
        axes.axhline(
            10 ** (sign * error), color=VERMILION, linestyle="-.", linewidth=1.0,
            label=f"\u00b1{error:g} decades: error (vanishing / exploding)" if sign < 0 else None,
        )  # fmt: skip


def _keep_lines_in_view(axes: Any, error: float) -> None:
    low, high = axes.get_ylim()
    axes.set_ylim(min(low, 10 ** -(error + 0.7)), max(high, 10 ** (error + 0.7)))


def _plot_log(
    axes: Any, xs: list[int], values: list[float | None], label: str, color: str, line: str, marker: str, width: float
) -> bool:
    """One curve on a log axis: finite positive points joined, gaps where a figure is missing, zero or
    non-finite (the flag markers show those). A series with nothing to draw is left out; no values at all
    draw the legend entry alone. Returns whether a point was drawn."""
    drawable = [y if _finite_positive(y) else math.nan for y in values]
    drawn = any(not math.isnan(y) for y in drawable)
    if values and not drawn:
        return False
    axes.plot(
        xs, drawable, linestyle=line, color=color, linewidth=width, label=label,
        marker=marker if len(xs) <= MARKERS_MAX else None, markersize=3.5,
        markerfacecolor=color if line == "-" else "white",
    )  # fmt: skip
    return drawn


def _at_edge(status: LayerStatus) -> bool:
    style = FLAG_STYLES.get(status)
    return style is not None and style.edge != "value"


def _mark_flags(axes: Any, xs: list[int], values: list[float | None], statuses: list[LayerStatus]) -> None:
    """Flagged layers: on the curve where the value can be drawn on a log axis, else at the axis edge
    (zero or missing at the bottom, NaN/Inf at the top)."""
    on_curve: dict[LayerStatus, list[tuple[int, float]]] = {}
    at_edge: dict[LayerStatus, list[tuple[int, float]]] = {}
    for x, value, status in zip(xs, values, statuses):
        style = FLAG_STYLES.get(status)
        if style is None:
            continue
        if style.edge == "value" and _finite_positive(value):
            on_curve.setdefault(status, []).append((x, value))
            continue
        nonfinite = style.edge == "top" or (value is not None and not math.isfinite(value))
        at_edge.setdefault(status, []).append((x, 0.97 if nonfinite else 0.03))  # an axes fraction
    for status, style in FLAG_STYLES.items():
        kwargs = {
            "marker": style.marker, "s": 50, "linewidths": 1.3, "zorder": 5,
            "facecolors": style.color if style.filled else "white", "edgecolors": style.color,
        }  # fmt: skip
        label: str | None = style.label
        if status in on_curve:
            points = on_curve[status]
            axes.scatter([x for x, _ in points], [y for _, y in points], label=label, **kwargs)
            label = None
        if status in at_edge:
            points = at_edge[status]
            axes.scatter(
                [x for x, _ in points], [y for _, y in points], transform=axes.get_xaxis_transform(),
                clip_on=False, label=label, **kwargs,
            )  # fmt: skip


def _layer_ticks(axes: Any, names: list[str]) -> None:
    """Every layer named when they fit; else index ticks with a few names (first, last, evenly between)."""
    if not names:
        return
    axes.set_xlim(-0.6, len(names) - 0.4)
    if len(names) <= NAMED_LAYERS_MAX:
        labels = [_label(name) for name in names]
        # Level when every name fits in its slot (a few layers), else slanted so that neighbours never overlap.
        level = len(names) * (max(len(label) for label in labels) + 2) <= LEVEL_LABEL_CHARS
        axes.set_xticks(range(len(names)), labels, rotation=0 if level else 45, ha="center" if level else "right")
        axes.tick_params(axis="x", labelsize=7)
        axes.set_xlabel("layer, input end \u2192 output end")
    else:
        count = min(NAMED_TICKS_MANY, len(names))
        chosen = sorted({round(i * (len(names) - 1) / (count - 1)) for i in range(count)})
        axes.set_xticks(range(len(names)), minor=True)
        axes.set_xticks(chosen, [f"{i}: {_label(names[i])}" for i in chosen], rotation=20, ha="right", fontsize=7)
        axes.set_xlabel(f"layer (index: name), {len(names)} layers, input end \u2192 output end")
    for label in axes.get_xticklabels():
        label.set_rotation_mode("anchor")
