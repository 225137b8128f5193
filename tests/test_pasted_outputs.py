"""Every pasted output of README.md and docs/ is a region docs/gen_snippets.py writes from the command that
prints it (issue 23): every region parses and names commands and options that exist (fast), the included
files are the files themselves (fast), and every output is what its command prints now (slow: minutes).

To refresh after a change to what gradcheck prints: python docs/gen_snippets.py
"""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def snippets():
    spec = importlib.util.spec_from_file_location("gen_snippets", ROOT / "docs" / "gen_snippets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_snippets"] = module  # its dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["gen_snippets"]


def test_every_region_parses_and_runs_commands_and_options_that_exist(snippets):
    """Without running anything: every region of every page parses, is filled, and names commands and
    options the app's own parser accepts, so a renamed option fails here and not minutes later."""
    problems = [problem for page in snippets.pages() for problem in snippets.region_problems(page)]
    assert not problems, "\n".join(problems)


def test_the_pages_with_pasted_outputs_are_all_read(snippets):
    read = {str(page.relative_to(ROOT)) for page in snippets.pages()}
    assert {"README.md", "docs/cli.md", "docs/monitor.md", "docs/recipes/rnn.md", "benchmarks/README.md"} <= read
    kinds = {m["kind"] for page in snippets.pages() for m in snippets.REGION.finditer(page.read_text("utf-8"))}
    assert kinds == set(snippets.BUILDERS)


def test_included_files_are_the_files_themselves(snippets):
    stale = [
        str(stale)
        for page in snippets.pages()
        for stale in snippets.refresh(page.read_text("utf-8"), ("include",), page)[1]
    ]
    assert not stale, "\n\n".join(stale)


# Lines that only a report prints: its title line, its facts line, its verdict line.
REPORT_LINE = re.compile(r"^(gradcheck  \S|[\d,]+ parameters \(|Verdict: [A-Z]+ )", re.MULTILINE)


def test_no_report_is_pasted_outside_a_region(snippets):
    """A report pasted by hand drifts from what gradcheck prints; a region is regenerated and checked."""
    pasted = []
    for page in snippets.pages():
        outside = snippets.REGION.sub("", page.read_text(encoding="utf-8"))
        pasted += [f"{page.relative_to(ROOT)}: {line[0]!r}" for line in REPORT_LINE.finditer(outside)]
    assert not pasted, f"make these regions (<!-- output: gradcheck ... -->): {pasted}"


@pytest.mark.slow
def test_every_pasted_output_is_what_its_command_prints_now(snippets):
    """Every output, fix-code and verdict-table region against a fresh run of its commands, with the probe
    times masked (minutes: each command is a process of its own, as a user runs it)."""
    pages = snippets.pages()
    snippets.prefetch(pages)
    stale = [str(stale) for page in pages for stale in snippets.refresh(page.read_text("utf-8"), page=page)[1]]
    assert not stale, "not what their commands print now:\n\n" + "\n\n".join(stale)


def test_the_region_checker_finds_unknown_options_filters_programs_and_files(snippets, tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    regions = [
        ("output: gradcheck demo --depht 5", "```text\n```\n"),
        ("output: gradcheck demo --depth 0 | exit 2", "```text\n```\n"),  # fine: its error is the point
        ("output: gradcheck scan x.py | head 3", "```text\n```\n"),
        ("output: ls -l", "```text\n```\n"),
        ("include: docs/examples/missing.py", "```python\n```\n"),
        ("output: gradcheck report h.jsonl | in docs/examples | after python missing.py", "```text\n```\n"),
        ("fix-code: relu | gradcheck demo --depth 20", ""),
    ]
    page.write_text(
        "".join(f"<!-- {open_} -->\n{body}<!-- end {open_.split(':')[0]} -->\n" for open_, body in regions),
        encoding="utf-8",
    )
    (tmp_path / "docs" / "examples").mkdir(parents=True)
    monkeypatch.setattr(snippets, "ROOT", tmp_path)
    problems = snippets.region_problems(page)
    assert len(problems) == 6, problems
    assert "No such option: --depht" in problems[0]
    assert "'head 3'" in problems[1] and "not 'ls'" in problems[2]
    assert "no file docs/examples/missing.py" in problems[3] and "no file missing.py" in problems[4]
    assert problems[5].endswith("empty; run python docs/gen_snippets.py page.md")


def test_what_varies_is_masked_and_nothing_else(snippets):
    """The probe time, and the line break its width moves; a changed figure still shows."""
    printed = "3,292,170 parameters (3,292,170 trainable) · 51 layers · float32 on\ncpu · 0.10 s\nratio 1.5e-24"
    slower = "3,292,170 parameters (3,292,170 trainable) · 51 layers · float32 on cpu ·\n12.48 s\nratio 1.5e-24"
    broken_before_its_unit = (
        "3,292,170 parameters (3,292,170 trainable) · 51 layers · float32 on cpu · 0.78\ns\nratio 1.5e-24"
    )
    assert snippets.normalized(printed) == snippets.normalized(slower) == snippets.normalized(broken_before_its_unit)
    assert snippets.normalized(printed) != snippets.normalized(printed.replace("1.5e-24", "1.6e-24"))
    assert snippets.normalized(printed) != snippets.normalized(printed.replace("51 layers", "52 layers"))
    assert snippets.normalized('"seconds": 0.0088,') == snippets.normalized('"seconds": 1.6049,')
    assert snippets.normalized("a report of 0.10 s") == "a report of <time> s"
    assert snippets.normalized("--timeout 900 s") == "--timeout 900 s"


def test_a_cut_output_marks_what_it_left_out_and_a_traceback_loses_its_frames(snippets, monkeypatch):
    lines = [
        "Traceback (most recent call last):",
        '  File "/home/x/a.py", line 1',
        "    f()",
        "ValueError: no",
        "error: no",
    ]
    assert snippets._without_frames(lines) == [
        "Traceback (most recent call last):",
        "  ...",
        "ValueError: no",
        "error: no",
    ]
    spec = snippets.parse_output("gradcheck demo ; gradcheck demo --depth 5 | from b | until d | exit 1 | bare")
    assert spec.commands == ("gradcheck demo", "gradcheck demo --depth 5") and spec.expected == (1,)
    assert (spec.start, spec.end, spec.flags) == ("b", "d", frozenset({"bare"}))
    printed = {"gradcheck demo": ("a\nb\n\nc\nd\ne\n", ""), "gradcheck demo --depth 5": ("b\nd\n", "")}
    monkeypatch.setattr(snippets, "run_all", lambda commands, *_: tuple(printed[c] for c in commands))
    shown = snippets.output_region("gradcheck demo ; gradcheck demo --depth 5 | from b | until d")
    assert shown == "```text\n$ gradcheck demo\n...\nb\n\nc\n...\n$ gradcheck demo --depth 5\nb\n...\n```\n"


def test_a_region_that_cannot_run_keeps_its_text_and_says_why(snippets, monkeypatch):
    def fails(*_):
        raise snippets.RegionError("`gradcheck demo` exited 2, not (0, 1):\nerror: no")

    monkeypatch.setattr(snippets, "run_all", fails)
    page = "<!-- output: gradcheck demo -->\n```text\nold\n```\n<!-- end output -->\n"
    text, stale = snippets.refresh(page, page=ROOT / "docs" / "cli.md")
    assert text == page
    assert stale[
        0
    ].failed and "docs/cli.md:1: output: gradcheck demo\ncannot be generated: `gradcheck demo` exited 2" in str(
        stale[0]
    )
    assert str(stale[0]).endswith("run: python docs/gen_snippets.py docs/cli.md")


def test_a_status_region_shows_each_commands_exit_code_and_what_it_said_on_stderr(snippets, monkeypatch):
    printed = {
        "gradcheck demo --depth 5": snippets.Printed("a report\n", "", 0),
        "gradcheck demo --depth 0": snippets.Printed("", "error: --depth must be at least 1.\n", 2),
    }
    monkeypatch.setattr(snippets, "run_all", lambda commands, *_: tuple(printed[c] for c in commands))
    shown = snippets.output_region("gradcheck demo --depth 5 ; gradcheck demo --depth 0 | exit 2 | status")
    assert shown == (
        "```text\n$ gradcheck demo --depth 5 > /dev/null; echo $?\n0\n"
        "$ gradcheck demo --depth 0 > /dev/null; echo $?\nerror: --depth must be at least 1.\n2\n```\n"
    )
