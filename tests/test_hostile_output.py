"""Issue 21: output files and the names a model's author chose, in every format.

``--output``, ``--save-baseline`` and ``--plot`` go through files.write_whole: a regular file is replaced
whole, a link's target is written and the link kept, a FIFO, a character device or ``/dev/stdout`` is written
in place. Layer, class and module names are shown escaped by every renderer (render/names.py): no name
starts a GitHub Actions workflow command, sends an escape sequence to the terminal, breaks Rich markup,
Markdown tables or XML, or fills a screen; JSON and SARIF keep them whole.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gradcheck_cli.common.choices import OutputFormat
from gradcheck_cli.common.files import write_whole
from gradcheck_cli.common.stats import RecurrentStats
from gradcheck_cli.judge.diagnosis import diagnose
from gradcheck_cli.render.interface import RenderOptions, get_renderer
from gradcheck_cli.render.names import NAME_CHARS, Names, escape, shorten, shown
from gradcheck_cli.report.report import Report
from tests.synthetic import geometric_result

ROOT = Path(__file__).resolve().parent.parent


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".tmp"))


# --- output files ------------------------------------------------------------------------------------


def test_a_regular_file_is_replaced_whole_and_keeps_its_permissions(tmp_path):
    new = tmp_path / "sub" / "report.txt"
    write_whole(new, "first")
    umask = os.umask(0)
    os.umask(umask)
    assert new.read_text() == "first"
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask
    private = tmp_path / "private.json"
    private.write_text("old, and longer than the new text")
    private.chmod(0o600)
    write_whole(private, b"new")
    assert private.read_bytes() == b"new"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert _leftovers(tmp_path) == _leftovers(new.parent) == []


def test_a_symlink_stays_a_link_and_its_target_is_written(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "report.json"
    target.write_text("old")
    link = tmp_path / "report.json"
    link.symlink_to(target)
    write_whole(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == _leftovers(target.parent) == []


def test_a_dangling_symlink_gets_its_target_created(tmp_path):
    target = tmp_path / "out" / "report.md"
    link = tmp_path / "report.md"
    link.symlink_to(target)
    write_whole(link, "made")
    assert link.is_symlink()
    assert target.read_text() == "made"


def test_a_link_to_dev_null_leaves_dev_null_a_device(tmp_path):
    # Through a link, not /dev/null itself: run as root, the old code would have replaced the machine's /dev/null.
    link = tmp_path / "null"
    link.symlink_to(os.devnull)
    write_whole(link, "discarded")
    assert link.is_symlink()
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert _leftovers(tmp_path) == []


def test_a_fifo_is_written_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_whole(fifo, "through the pipe")
    reader.join(timeout=5)
    assert received == [b"through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("form", ["/dev/fd/{fd}", "/proc/self/fd/{fd}", "link"])
def test_a_descriptor_path_is_written_through_the_descriptor_at_its_offset(tmp_path, form):
    log = tmp_path / "log.txt"
    log.write_text("before\n")
    with open(log, "a") as appended:  # as a shell's >>: the report must come after what is there
        path = form.format(fd=appended.fileno())
        if form == "link":
            path = tmp_path / "out"
            path.symlink_to(f"/proc/self/fd/{appended.fileno()}")
        if not os.path.exists(path):
            pytest.skip(f"{path} does not exist on this system")
        write_whole(Path(path), "report\n")
    assert log.read_text() == "before\nreport\n"


def test_dev_stdout_is_this_process_standard_output(tmp_path, capfd):
    if not os.path.islink("/dev/stdout"):
        pytest.skip("/dev/stdout is no link to a descriptor on this system")
    # Through a link, never /dev/stdout itself: run as root, a regression would replace the machine's /dev/stdout.
    link = tmp_path / "stdout"
    link.symlink_to("/dev/stdout")
    write_whole(link, "to stdout\n")
    assert capfd.readouterr().out == "to stdout\n"
    assert link.is_symlink()


def test_a_pipe_descriptor(tmp_path):
    read_end, write_end = os.pipe()
    try:
        write_whole(Path(f"/proc/self/fd/{write_end}"), b"bytes")
        os.close(write_end)
        assert os.read(read_end, 100) == b"bytes"
    finally:
        os.close(read_end)


def test_a_directory_and_an_empty_name_are_refused_with_a_reason(tmp_path):
    with pytest.raises(OSError) as raised:
        write_whole(tmp_path, "x")
    assert raised.value.errno == errno.EISDIR and "directory" in raised.value.strerror
    link = tmp_path / "to-dir"
    link.symlink_to(tmp_path)
    with pytest.raises(IsADirectoryError):
        write_whole(link, "x")
    with pytest.raises(OSError, match="empty"):
        write_whole("", "x")
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(tmp_path / "sock"))
        with pytest.raises(OSError, match="a socket, not a file"):
            write_whole(tmp_path / "sock", "x")
        assert stat.S_ISSOCK(os.lstat(tmp_path / "sock").st_mode)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sock", "to-dir"]


# --- names: the helper -------------------------------------------------------------------------------


def test_escape_shows_every_control_character():
    assert escape("a\nb\r\tc") == "a\\nb\\r\\tc"
    assert escape("\x1b[2J\x07\x7f\x85") == "\\x1b[2J\\x07\\x7f\\x85"
    assert escape("u\u2028v\u2029w\u202ex\u2066") == "u\\u2028v\\u2029w\\u202ex\\u2066"
    assert escape("code\n\x1b", keep_newlines=True) == "code\n\\x1b"
    assert escape("layers.0 Ünïcode ☃") == "layers.0 Ünïcode ☃"


def test_shown_breaks_commands_and_cuts_long_names_in_the_middle():
    assert shown("::error file=x::pwned") == ":\\x3aerror file=x:\\x3apwned"
    assert "::" not in shown(":::::")
    long = "start" + "x" * 3000 + "end"
    assert len(shown(long)) == NAME_CHARS and shown(long).startswith("start") and shown(long).endswith("end")
    assert "\u2026" in shown(long)
    assert shown(long, None) == long
    assert shorten("abcdef", 4) == "ab\u2026f" and shorten("abc", 4) == "abc"


def test_names_in_messages_are_shown_as_names_and_the_text_keeps_its_own_lines():
    names = Names(["ok", "a\nb", "L" * 200])
    assert names.prose("at a\nb and ok") == "at a\\nb and ok"
    assert names.prose("line one\nline two") == "line one\nline two"  # the renderer lays its own lines out
    assert names.prose("x " + "L" * 200) == "x " + shown("L" * 200)
    assert names.prose("param w\n::error::x") == "param w\n:\\x3aerror:\\x3ax"  # a name from elsewhere
    assert names.code("h = a\nb.size\nx[::2]") == "h = a\\nb.size\nx[::2]"


# --- names: every format -----------------------------------------------------------------------------

COMMAND = "a\n::error file=x::pwned"
ESCAPE = "\x1b[2J\x1b]0;title\x07"
MARKUP = "[red]x[/red]"
BAD_MARKUP = "[/x]"
LONG = "L" * 3000
PIPE = "p|q`r"
SEPARATORS = "u\u2028v\u202ew"
BARE_COMMAND = "::warning::w"
HOSTILE = [COMMAND, ESCAPE, PIPE, MARKUP, BAD_MARKUP, LONG, SEPARATORS, BARE_COMMAND, "$\\frac$"]
# Control characters that must not reach any output raw (a newline may, from the renderer itself).
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def hostile_report(title: str = "Net\x1b[31m\n::error::title " + "T" * 300) -> Report:
    """A vanishing model whose layers, activations and recurrent module carry hostile names: its findings'
    messages, causes and fixes embed them."""
    result = geometric_result(depth=len(HOSTILE), gain=0.2, relative_grad=500.0, activations={"Sigmoid": 9})
    for layer, name in zip(result.layers, HOSTILE):
        layer.name = name
    result.layers[-1].type = "Head\n::error::type"  # a class name: type("Head\n...", (nn.Module,), {})
    result.layers[HOSTILE.index(LONG)].relative_grad = 900.0  # the worst: named in the message
    for site, name in zip(result.activations, HOSTILE):
        site.name, site.after = f"act {name}", name
    result.layers[1].backward = result.layers[1].weight_grad_norm = result.layers[1].grad_norm = 0.0
    series = RecurrentStats(COMMAND, "LSTM", [0.3 ** (19 - t) for t in range(20)], memory_gate_bias=0.0)
    result.recurrent, result.structure.recurrent = [series], {"LSTM": 1}
    report = Report(title, result, diagnose(result))
    report.context = [("model", f"build() in {COMMAND}.py"), ("inputs", ESCAPE)]
    report.target = f"{COMMAND}.py"
    return report


def render(report: Report, output_format: OutputFormat, many: bool = False, **options) -> str:
    stream = io.StringIO()
    renderer = get_renderer(output_format)
    if many:
        renderer.render_many([report, report], stream, RenderOptions(**options))
    else:
        renderer.render(report, stream, RenderOptions(**options))
    return stream.getvalue()


def test_the_hostile_report_embeds_the_names_in_its_findings():
    """The premise of the tests below: the messages carry the names, as the diagnosis writes them."""
    report = hostile_report()
    texts = [f.message for f in report.diagnosis.findings] + [
        fix.detail for f in report.diagnosis.findings for fix in f.fixes
    ]
    assert any(COMMAND in text for text in texts)
    assert any(LONG in text for text in texts)
    assert {name for f in report.diagnosis.findings for name in f.layers} >= {COMMAND, ESCAPE}


CASES = {
    f"{output_format.value}{'-many' if many else ''}": (output_format, many)
    for output_format in OutputFormat
    for many in (False, True)
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_name_starts_a_workflow_command_or_reaches_the_terminal_raw(case):
    output_format, many = CASES[case]
    report = hostile_report()
    text = render(report, output_format, many, width=100, color=False)
    commands = [line for line in text.splitlines() if line.lstrip().startswith("::")]
    if output_format is OutputFormat.GITHUB:  # its own annotations, one per finding, and only those
        assert len(commands) == len(report.diagnosis.findings) * (2 if many else 1)
        assert all(
            re.match(r"::(error|warning|notice) file=.*,line=\d+|::(error|warning|notice) title=", c) for c in commands
        )
    else:
        assert commands == []
    assert "\x1b" not in text
    assert RAW_CONTROL.search(text) is None


@pytest.mark.parametrize("width", [40, 60, 100])
def test_text_wrapped_at_any_width_starts_no_command(width):
    for options in ({}, {"all_layers": True}, {"quiet": True}):
        text = render(hostile_report(), OutputFormat.TEXT, width=width, color=False, **options)
        assert not [line for line in text.splitlines() if line.lstrip().startswith("::")]


def test_with_colour_the_only_escape_sequences_are_rich_styles():
    text = render(hostile_report(), OutputFormat.TEXT, width=100, color=True)
    assert "\x1b[" in text  # colour was asked for
    assert re.sub(r"\x1b\[[0-9;]*m", "", text).count("\x1b") == 0
    assert "\\x1b[2J" in text  # the name, shown


def test_text_and_markdown_show_markup_as_text_and_long_names_cut():
    text = render(hostile_report(), OutputFormat.TEXT, width=100, color=False, all_layers=True)
    assert MARKUP in text and BAD_MARKUP in text  # neither read as Rich markup (the second would raise)
    for output_format in (OutputFormat.TEXT, OutputFormat.MARKDOWN, OutputFormat.GITHUB):
        text = render(hostile_report(), output_format, width=100, color=False, all_layers=True)
        assert "L" * (NAME_CHARS + 1) not in text and "T" * 200 not in text
        if output_format is not OutputFormat.GITHUB:  # an annotation is one line: message, cause and fix
            assert max(len(line) for line in text.splitlines()) < 400  # a long message, not a long name


def test_markdown_tables_keep_their_columns_and_code_spans_hold_backticks():
    text = render(hostile_report(), OutputFormat.MARKDOWN, many=True)
    for table in re.findall(r"(?m)(^\|.*\|\n)+", text):
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert len(widths) == 1, table
    assert "``p|q`r``" in text


def test_json_and_sarif_keep_the_names_whole():
    report = hostile_report()
    document = json.loads(render(report, OutputFormat.JSON))
    assert [layer["name"] for layer in document["layers"]][: len(HOSTILE)] == HOSTILE
    assert document["title"] == report.title
    sarif = json.loads(render(report, OutputFormat.SARIF))
    results = sarif["runs"][0]["results"]
    assert any(COMMAND in result["properties"]["layers"] for result in results)
    assert any(LONG in result["message"]["text"] for result in results)


def test_junit_is_valid_xml_with_the_names_escaped_and_whole():
    text = render(hostile_report(), OutputFormat.JUNIT, many=True)
    root = ET.fromstring(text.split("\n", 1)[1])
    bodies = " ".join(element.text or "" for element in root.iter() if element.tag in ("failure", "system-out"))
    assert shown(COMMAND, None) in bodies and LONG in bodies
    assert root.find("testsuite").get("name") == shown(f"{COMMAND}.py", None)


def test_a_real_model_named_by_add_module():
    """Names as torch allows them: add_module refuses "." and nothing else."""
    import torch
    from torch import nn

    from gradcheck_cli import check

    model = nn.Sequential()
    for index, name in enumerate(HOSTILE):
        model.add_module(name, nn.Linear(8, 8))
        model.add_module(f"{name} act{index}", nn.Sigmoid())
    report = check(model, torch.randn(16, 8), passes=1)
    assert report.diagnosis.findings
    for output_format in OutputFormat:
        text = render(report, output_format, width=80, color=False)
        lines = [line.lstrip() for line in text.splitlines()]
        if output_format is not OutputFormat.GITHUB:
            assert not [line for line in lines if line.startswith("::")], output_format
        assert "\x1b" not in text and RAW_CONTROL.search(text) is None, output_format


def test_the_history_report_shows_names_escaped(tmp_path, monkeypatch):
    import torch
    from torch import nn

    from gradcheck_cli.monitor.history import read_history, summarize_history
    from gradcheck_cli.monitor.monitor import Monitor
    from gradcheck_cli.render.history import HistoryTextRenderer

    torch.manual_seed(0)
    model = nn.Sequential()
    for name in (COMMAND, ESCAPE, BAD_MARKUP, LONG):
        model.add_module(name, nn.Linear(4, 4))
    log = tmp_path / "history.jsonl"
    with Monitor(model, norms_every=1, every=1, on_problem="record", log=log) as monitor:
        for step in range(1, 4):
            model(torch.randn(8, 4)).pow(2).mean().backward()
            if step == 2:
                getattr(model, COMMAND).weight.grad[0, 0] = float("nan")
            monitor.step()
            model.zero_grad()
    summary = summarize_history(read_history(log), str(log))
    assert summary.problems and summary.problems[0].layer == COMMAND
    for width in (60, 100):
        monkeypatch.setenv("COLUMNS", str(width))  # the history renderer takes the terminal's width
        stream = io.StringIO()
        HistoryTextRenderer().render(summary, stream, color=False, all_layers=True)
        text = stream.getvalue()
        assert not [line for line in text.splitlines() if line.lstrip().startswith("::")]
        assert "\x1b" not in text and RAW_CONTROL.search(text) is None
        assert "L" * (NAME_CHARS + 1) not in text
        assert shown(COMMAND) in text


# --- --plot ------------------------------------------------------------------------------------------

PLOT_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from gradcheck_cli.common.files import write_whole
    from gradcheck_cli.render.plot import PlotFormat, render_plot
    from tests.test_hostile_output import hostile_report

    write_whole(Path(sys.argv[1]), render_plot(hostile_report("Net $x"), PlotFormat.PNG))
    """
)


@pytest.mark.slow  # a few seconds of subprocesses: run with -m slow (CI runs it), keeping the default suite fast
def test_plot_writes_nothing_into_home_and_draws_hostile_names(tmp_path):
    pytest.importorskip("matplotlib")
    home, temporary = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temporary.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")
    }
    env.update(HOME=str(home), TMPDIR=str(temporary), PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    figure = tmp_path / "flow.png"
    done = subprocess.run(
        [sys.executable, "-c", PLOT_SCRIPT, str(figure)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert list(home.rglob("*")) == []  # no ~/.cache/matplotlib, no ~/.config/matplotlib
    assert list(temporary.iterdir()) == []  # gradcheck's own config folder, removed at exit
