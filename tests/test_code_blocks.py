"""Every ```python block of README.md and docs/**/*.md runs as written (issue 23).

Each block is compiled, then run as ``python block.py`` would run it: in a fresh namespace whose
``__name__`` is ``"__main__"``, with an empty temporary folder as the working folder (what a block writes,
a history log, lands there); the global RNG, the warning filters, ``sys.path`` and ``sys.argv`` are
restored afterwards. A new block is run by default. The HTML comments on the lines right above a block's
fence (read upward to the first line that is not one) say otherwise:

- ``<!-- not run: REASON -->``: the block cannot run by design, since it stands for the reader's own
  objects. It is compiled only. The reason is required.
- ``<!-- needs: MODULE, ... -->``: the block runs where these modules import (lightning, transformers: the
  integrations' packages) and is skipped, naming them, elsewhere.
- ``<!-- include: PATH -->`` (docs/gen_snippets.py): the block is the file PATH, kept equal to it by
  tests/test_docs_site.py and imported and scanned by the tests of its folder: docs/examples/
  (tests/test_docs_examples.py) or examples/ (tests/test_examples.py). It is compiled only here; a file
  included from another folder fails until something runs it.
- ``<!-- fix-code: ... -->`` (docs/gen_snippets.py): the code of a fix as gradcheck prints it for a user's
  model. It names that model's own objects (``model``, ``lstm``, ``BasicBlock``), so it is compiled only.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PYTHON = {"python", "py", "python3"}
# A fenced block; the closing fence repeats the opening one, so a longer fence can show a shorter one.
FENCE = re.compile(
    r"^(?P<indent>[ ]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`{]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
COMMENT = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
MARKER = re.compile(r"<!--\s*(not run|needs)\b")
# The folders whose every file another test imports and scans (see the module docstring).
INCLUDED_FILES_RUN_BY = {
    "docs/examples": "tests/test_docs_examples.py",
    "docs/examples/ci/models": "tests/test_ci_docs.py",
    "examples": "tests/test_examples.py",
}


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence
    body: str
    comments: tuple[str, ...]  # the texts of the HTML comments right above the fence, nearest first

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"

    def marker(self, key: str) -> str | None:
        """The text after ``key:`` of the first comment that starts with it, or None."""
        for text in self.comments:
            if text.startswith(f"{key}:"):
                return text[len(key) + 1 :].strip()
        return None


def python_blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if match["lang"].lower() not in PYTHON:
            continue
        line = text.count("\n", 0, match.start()) + 1
        above = text[: match.start()].splitlines()
        comments = []
        while above and (comment := COMMENT.match(above[-1])):
            comments.append(comment["text"])
            above.pop()
        body = textwrap.dedent(match["body"])
        blocks.append(Block(str(path.relative_to(ROOT)), line, body, tuple(comments)))
    return blocks


BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def not_run_because(block: Block) -> str | None:
    """Why the block is compiled but not run here, or None when this test runs it."""
    if (reason := block.marker("not run")) is not None:
        return reason
    if (included := block.marker("include")) is not None:
        return f"the file {included}, run by {INCLUDED_FILES_RUN_BY.get(str(Path(included).parent), '?')}"
    if block.marker("fix-code") is not None:
        return "the code of a fix for a user's model, as gradcheck prints it"
    return None


def test_the_pages_have_python_blocks_to_run():
    assert len(BLOCKS) > 10
    run = [block.name for block in BLOCKS if not_run_because(block) is None]
    assert any(name.startswith("README.md:") for name in run)
    assert len(run) >= 5, run


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_every_python_block_compiles(block: Block):
    compile(block.body, block.name, "exec")


@pytest.mark.parametrize(
    "block", [block for block in BLOCKS if not_run_because(block) is None], ids=lambda block: block.name
)
def test_python_block_runs_as_written(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    needs = [name.strip() for name in (block.marker("needs") or "").split(",") if name.strip()]
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}, which is not installed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "argv", [block.name])
    code = compile(block.body, block.name, "exec")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        exec(code, {"__name__": "__main__", "__file__": str(tmp_path / "block.py")})


def test_every_marker_is_well_formed_and_sits_above_a_python_block():
    """A misspelt or misplaced marker would leave a block run (and failing) or, worse, silently skipped."""
    attached = {(block.page, text) for block in BLOCKS for text in block.comments}
    problems = []
    for page in PAGES:
        relative = str(page.relative_to(ROOT))
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if not MARKER.search(line):
                continue
            comment = COMMENT.match(line)
            if comment is None or (relative, comment["text"]) not in attached:
                problems.append(f"{relative}:{number}: not right above a ```python block: {line.strip()}")
            elif not re.fullmatch(r"(not run|needs): \S.*", comment["text"]):
                problems.append(f"{relative}:{number}: write `not run: REASON` or `needs: MODULE`: {line.strip()}")
    assert not problems, "\n".join(problems)


def test_included_blocks_are_files_another_test_runs():
    included = {block.marker("include") for block in BLOCKS} - {None}
    assert included
    elsewhere = sorted(path for path in included if str(Path(path).parent) not in INCLUDED_FILES_RUN_BY)
    assert not elsewhere, f"included from a folder no test runs: {elsewhere}; run them or mark `not run: REASON`"
    assert all((ROOT / path).is_file() for path in included)
