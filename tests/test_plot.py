"""--plot FILE.png|svg|html: the gradient-flow figure (gradcheck_cli/render/plot.py) and its CLI option.

Most tests read the matplotlib Figure without drawing it (fast); three draw a file, one per format."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError
from gradcheck_cli.common.stats import RecurrentStats
from gradcheck_cli.judge.diagnosis import diagnose
from gradcheck_cli.render import plot
from gradcheck_cli.render.plot import PlotFormat, plot_format, plot_paths
from gradcheck_cli.report.report import FixTrial, Report, TrainingStep
from tests.synthetic import geometric_result

ENV = {"COLUMNS": "100", "NO_COLOR": "1"}
TINY_VANISHING_DEMO = ["demo", "--depth", "6", "--width", "16", "--batch-size", "8", "--passes", "1", "--isolated"]


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


needs_matplotlib = pytest.mark.skipif(not _has_matplotlib(), reason="matplotlib (the [plot] extra) is not installed")


def vanishing_report(fixed: bool = False) -> Report:
    """12 sigmoid-like layers losing x0.3 per layer, the first one at exactly zero; with ``fixed`` a
    healthy copy as the fix tried."""
    before = geometric_result(depth=12, gain=0.3, activations={"Sigmoid": 12}, weight_scale=0.577)
    first = before.layers[0]
    first.backward = first.weight_grad_norm = first.grad_norm = 0.0
    report = Report("Synthetic <MLP> & sigmoid", before, diagnose(before))
    if fixed:
        after = geometric_result(depth=12, gain=1.0)
        report.fix_trials = [
            FixTrial("relu", "activation: sigmoid -> relu", Report("fixed", after, diagnose(after))),
            FixTrial("learning_rate", "not applied at initialization", None),
        ]
    return report


def recurrent_report() -> Report:
    result = geometric_result(depth=1)
    result.structure.activations, result.structure.recurrent = {}, {"RNN(tanh)": 1}
    result.recurrent = [RecurrentStats("rnn", "RNN", [0.55 ** (29 - t) for t in range(30)])]
    return Report("Synthetic RNN", result, diagnose(result))


def titles(figure) -> list[str]:
    return [axes.get_title(loc="left") for axes in figure.axes]


def legend_labels(figure) -> list[str]:
    return [text.get_text().replace("\n", " ") for legend in figure.legends for text in legend.get_texts()] + [
        text.get_text().replace("\n", " ")
        for axes in figure.axes
        if axes.get_legend() is not None
        for text in axes.get_legend().get_texts()
    ]


def lines_by_label(axes) -> dict[str, object]:
    return {line.get_label(): line for line in axes.get_lines()}


# --- the file formats ---------------------------------------------------------------------------------


@needs_matplotlib
def test_png_is_a_png():
    data = plot.render_plot(vanishing_report(), PlotFormat.PNG)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")


@needs_matplotlib
def test_html_is_one_self_contained_page_with_the_svg_inline():
    page = plot.render_plot(vanishing_report(fixed=True), PlotFormat.HTML).decode("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>gradcheck: Synthetic &lt;MLP&gt; &amp; sigmoid</title>" in page
    lowered = page.lower()
    # nothing fetched: no scripts, no stylesheets, no images or fonts from elsewhere
    for fetch in ("<script", "<link", "src=", "@import"):
        assert fetch not in lowered, fetch
    assert not re.search(r"url\((?!#)", lowered)  # only references inside the page (clip paths)
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    assert ET.fromstring(svg).tag.endswith("svg")
    assert "<?xml" not in page  # the SVG's XML declaration cannot stand inside HTML
    assert "vanishing_gradient" in page  # the findings as text under the figure


def test_format_is_chosen_by_suffix():
    assert plot_format("flow.png") is PlotFormat.PNG
    assert plot_format("out/Flow.SVG") is PlotFormat.SVG
    assert plot_format("report.html") is PlotFormat.HTML


@pytest.mark.parametrize("name", ["flow.pdf", "flow", "flow.htm"])
def test_an_unknown_suffix_names_the_supported_ones(name):
    with pytest.raises(InvalidOptionError) as caught:
        plot_format(name)
    message = str(caught.value)
    assert all(suffix in message for suffix in (".png", ".svg", ".html"))
    assert message.count(". ") == 0  # one sentence


def test_missing_matplotlib_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(GradcheckError, match=r"pip install 'gradcheck-cli\[plot\]'"):
        plot.require_matplotlib()
    with pytest.raises(GradcheckError, match="matplotlib"):
        plot.render_plot(vanishing_report(), PlotFormat.PNG)


def test_importing_the_cli_and_the_plot_module_does_not_import_matplotlib():
    code = "import sys, gradcheck_cli.cli.main, gradcheck_cli.render.plot; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --- what the figure shows ----------------------------------------------------------------------------


@needs_matplotlib
def test_feedforward_figure_shows_measured_and_judged_panels_on_the_agg_canvas():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    report = vanishing_report()
    figure = plot.gradient_flow_figure(report)
    assert isinstance(figure.canvas, FigureCanvasAgg)
    assert "Synthetic <MLP> & sigmoid" in figure.get_suptitle() and "VANISHING" in figure.get_suptitle()
    measured, judged = figure.axes[0], figure.axes[1]
    assert titles(figure)[0].startswith("Measured per layer")
    assert titles(figure)[1].startswith("Judged")
    assert measured.get_yscale() == judged.get_yscale() == "log"
    assert {"backward signal", "weight-gradient norm", "forward activation RMS"} <= {
        label.split(":")[0].split(" ||")[0] for label in lines_by_label(measured)
    }
    assert measured.get_ylabel() and judged.get_ylabel() and judged.get_xlabel()
    # every layer named on the x axis (13 layers fit), input end first
    names = [label.get_text() for label in judged.get_xticklabels()]
    assert names == [layer.name for layer in report.result.layers]
    labels = legend_labels(figure)
    # the thresholds the diagnosis judges against, and the flags by status
    assert any(label.startswith("±1 decade(s): warning") for label in labels)
    assert any(label.startswith("±2 decades: error") for label in labels)
    assert "status vanishing (error)" in labels
    assert any(label.startswith("status zero") for label in labels)  # layers.0 at exactly zero, at the edge


@needs_matplotlib
def test_threshold_lines_follow_the_reports_thresholds():
    result = geometric_result(depth=12, gain=0.5)
    from gradcheck_cli.judge.diagnosis import Thresholds

    report = Report("custom", result, diagnose(result, Thresholds(decades_warning=1.5, decades_error=3.0)))
    judged = plot.gradient_flow_figure(report).axes[1]
    horizontal = [line for line in judged.get_lines() if len(set(line.get_ydata())) == 1]
    levels = {round(line.get_ydata()[0], 6) for line in horizontal}
    assert {round(10**-1.5, 6), round(10**1.5, 6), 1e-3, 1e3} <= levels


@needs_matplotlib
def test_many_layers_get_index_ticks_with_a_few_names():
    result = geometric_result(depth=60, gain=1.0)
    figure = plot.gradient_flow_figure(Report("deep", result, diagnose(result)))
    labels = [label.get_text() for label in figure.axes[1].get_xticklabels()]
    assert len(labels) == plot.NAMED_TICKS_MANY
    assert labels[0] == "0: layers.0" and labels[-1] == "60: head"


@needs_matplotlib
def test_before_and_after_a_fix_share_the_judged_panel():
    figure = plot.gradient_flow_figure(vanishing_report(fixed=True))
    lines = lines_by_label(figure.axes[1])
    before = next(line for label, line in lines.items() if label.startswith("as measured"))
    after = next(line for label, line in lines.items() if label.startswith("fix relu"))
    assert before.get_linestyle() == "--" and before.get_color() == plot.GREY
    assert after.get_linestyle() == "-"
    assert "activation: sigmoid -> relu" in after.get_label() and "HEALTHY" in after.get_label()
    assert not any("learning_rate" in label for label in lines)  # a fix not applied has no curve


@needs_matplotlib
def test_training_steps_draw_the_last_step_after_the_measured_one():
    report = vanishing_report()
    later = geometric_result(depth=12, gain=0.9)
    report.training = [
        TrainingStep(0, None, replace(report)),
        TrainingStep(3, 2.1, Report("trained", later, diagnose(later))),
    ]
    report.training_setup = "3 SGD step(s), lr 0.001, on a copy"
    labels = list(lines_by_label(plot.gradient_flow_figure(report).axes[1]))
    assert any(label.startswith("after training (3 SGD step(s), lr 0.001, on a copy)") for label in labels)


@needs_matplotlib
def test_recurrent_report_gets_a_panel_per_time_step():
    figure = plot.gradient_flow_figure(recurrent_report())
    time_panel = next(axes for axes in figure.axes if axes.get_title(loc="left").startswith("Through time: rnn"))
    (curve,) = [line for line in time_panel.get_lines() if line.get_label().startswith("as measured")]
    assert "VANISHING" in curve.get_label()
    assert list(curve.get_xdata()) == list(range(1, 31))
    assert curve.get_ydata()[-1] == pytest.approx(1.0)  # each step over the last one
    assert time_panel.get_xlabel().startswith("time step")


# --- several targets ------------------------------------------------------------------------------------


def test_one_file_per_target_named_after_it():
    assert plot_paths("out/flow.png", ["model.py"]) == {"model.py": Path("out/flow.png")}
    paths = plot_paths("out/flow.png", ["a/model.py", "b/model.py", "nets.py:make", "pkg.module:factory"])
    assert paths == {
        "a/model.py": Path("out/flow-model.png"),
        "b/model.py": Path("out/flow-model-2.png"),
        "nets.py:make": Path("out/flow-nets-make.png"),
        "pkg.module:factory": Path("out/flow-module-factory.png"),
    }


# --- through the CLI -----------------------------------------------------------------------------------


@needs_matplotlib
def test_demo_writes_the_figure_and_says_where(tmp_path):
    target = tmp_path / "figures" / "flow.svg"
    result = CliRunner().invoke(app, [*TINY_VANISHING_DEMO, "--plot", str(target)], env=ENV)
    assert result.exit_code == 1, result.output  # vanishing: a finding, and the figure written all the same
    assert ET.fromstring(target.read_bytes()).tag.endswith("svg")
    assert f"plot: {target}" in result.stderr


def test_bad_suffix_exits_2_before_anything_is_measured(tmp_path, monkeypatch):
    monkeypatch.setattr("gradcheck_cli.trials.demo.run_demo", _must_not_run)
    result = CliRunner().invoke(app, [*TINY_VANISHING_DEMO, "--plot", str(tmp_path / "flow.pdf")], env=ENV)
    assert result.exit_code == 2
    assert all(suffix in result.stderr for suffix in (".png", ".svg", ".html"))
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_exits_2_before_the_scan(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr("gradcheck_cli.scan.scan.scan_target", _must_not_run)
    model = tmp_path / "model.py"
    model.write_text("from torch import nn\nmodel = nn.Linear(4, 2)\n")
    args = ["scan", str(model), "--isolated", "--plot", str(tmp_path / "flow.png")]
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 2
    assert "pip install 'gradcheck-cli[plot]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_scan_of_several_targets_writes_one_figure_each(tmp_path, monkeypatch):
    # What is drawn is tested above; here only which files the CLI writes.
    monkeypatch.setattr(plot, "render_plot", lambda report, plot_as: f"{report.target} as {plot_as.value}".encode())
    monkeypatch.chdir(tmp_path)
    for name in ("first", "second"):
        (tmp_path / f"{name}.py").write_text(
            "from torch import nn\nmodel = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))\n"
        )
    result = CliRunner().invoke(
        app, ["scan", "first.py", "second.py", "--isolated", "--passes", "1", "--plot", "out/flow.html"], env=ENV
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "flow-first.html").read_text() == "first.py as html"
    assert (tmp_path / "out" / "flow-second.html").read_text() == "second.py as html"
    assert not (tmp_path / "out" / "flow.html").exists()


def test_a_plot_that_cannot_be_written_exits_2(tmp_path, monkeypatch):
    monkeypatch.setattr(plot, "render_plot", lambda report, plot_as: b"figure")
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(app, [*TINY_VANISHING_DEMO, "--plot", str(tmp_path / "file" / "flow.png")], env=ENV)
    assert result.exit_code == 2
    assert "cannot write the plot" in result.stderr


def _must_not_run(*args, **kwargs):
    raise AssertionError("the model was measured although --plot could not work")
