"""The documentation site: it builds with `mkdocs build --strict`, every link and image in docs/ resolves,
and the CLI reference matches the app it comes from. The regions docs/gen_snippets.py generates (pasted
outputs, included files): tests/test_pasted_outputs.py."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gradcheck_cli.common.choices import CauseId, FindingKind, FixId

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
# [text](target) and ![alt](target), outside code; the target up to a space or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _generator(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose(page: Path) -> str:
    """The page without its fenced code blocks and code spans: what Markdown reads as links."""
    return CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))


def test_the_site_builds_without_a_warning(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = built.stdout + built.stderr
    assert built.returncode == 0, log
    assert "WARNING" not in log, log
    assert (tmp_path / "site" / "fixes" / "index.html").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(DOCS)))
def test_every_relative_link_and_image_resolves(page):
    """Without MkDocs too: a link to a page, a file or an image under docs/ must exist (anchors are
    checked by the strict build)."""
    missing = []
    for target in LINK.findall(_prose(page)):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists() or DOCS not in path.parents:
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to what docs/ does not hold: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(DOCS)))
def test_markdown_reads_the_same_on_github_and_on_the_site(page):
    """Python-Markdown (the site) and GitHub differ where these pages could trip: a list right after a
    paragraph line stays part of the paragraph, a fence indented by 1-3 spaces leaves its list, and an
    escaped pipe inside a code span keeps its backslash."""
    problems = []
    lines = FENCE.sub(lambda block: "\n" * block[0].count("\n"), page.read_text(encoding="utf-8")).splitlines()
    for number, line in enumerate(lines, 1):
        previous = lines[number - 2] if number > 1 else ""
        is_item = re.match(r"\s*([-*]|\d+\.) ", line)
        if is_item and previous.strip() and not re.match(r"\s*([-*]|\d+\.) |\s", previous) and "|" not in previous:
            problems.append(f"{number}: a list needs a blank line before it")
        if re.match(r" {1,3}```", line):
            problems.append(f"{number}: a fence indented by 1-3 spaces")
        if any("\\|" in span for span in CODE_SPAN.findall(line)):
            problems.append(f"{number}: an escaped pipe in a code span (use <code>&#124;</code>)")
    assert not problems, f"{page.relative_to(ROOT)}: {problems}"


def test_the_cli_reference_is_generated_from_the_current_app():
    reference = _generator("gen_cli_reference")
    committed = (DOCS / "cli-reference.md").read_text(encoding="utf-8")
    assert committed == reference.render(), "docs/cli-reference.md is out of date: run python docs/gen_cli_reference.py"


def test_the_fixes_catalog_has_every_fix_and_cause():
    catalog = (DOCS / "fixes.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## `([a-z_]+)`", catalog, re.MULTILINE)
    assert set(headings) == {fix.value for fix in FixId}
    code_blocks = re.findall(r"<!-- fix-code: ([a-z_]+)", catalog)
    assert set(code_blocks) == {fix.value for fix in FixId}, "every fix shows the code gradcheck prints"
    causes = set(re.findall(r"^\| `([a-z_]+)` \|", catalog, re.MULTILINE))
    assert {cause.value for cause in CauseId} <= causes, "the table of causes and the fixes they call for"


# Objects whose keys are data (module type names -> counts), not schema keys.
_DATA_MAPS = {"activations", "norms", "recurrent"}


def _keys(value, found: set[str]) -> set[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            found.add(key)
            if not (key in _DATA_MAPS and isinstance(item, dict)):
                _keys(item, found)
    elif isinstance(value, list):
        for item in value:
            _keys(item, found)
    return found


def test_the_json_reference_names_every_key_kind_and_fix():
    """docs/json-schema.md against a real report (with a fix trial, causes, activations and a time
    profile): every key the JSON renderer writes, every finding kind and every fix id is documented."""
    from typer.testing import CliRunner

    from gradcheck_cli.cli.main import app

    reference = (DOCS / "json-schema.md").read_text(encoding="utf-8")
    keys: set[str] = set()
    for preset in (["--depth", "3", "--width", "8"], ["--arch", "rnn", "--seq-len", "5", "--width", "4"]):
        result = CliRunner().invoke(app, ["demo", *preset, "--passes", "1", "--format", "json"])
        assert result.exit_code in (0, 1), result.output
        _keys(json.loads(result.stdout), keys)
    written = ("`{}`", "`structure.{}`", '"{}":')
    undocumented = sorted(key for key in keys if not any(form.format(key) in reference for form in written))
    assert not undocumented, f"docs/json-schema.md does not describe {undocumented}"
    kinds = set(
        re.findall(r"^\| `([a-z_0-9]+)` \| (?:vanishing|exploding|nonfinite|healthy) \|", reference, re.MULTILINE)
    )
    assert kinds == {kind.value for kind in FindingKind}
    assert all(f"`{fix.value}`" in reference for fix in FixId)


def test_pages_in_the_nav_are_the_pages_in_docs():
    """A page left out of the nav is a warning only when MkDocs runs; this holds without it."""
    nav = re.findall(r":\s*([\w/-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.MULTILINE)
    assert sorted(nav) == sorted(str(page.relative_to(DOCS)) for page in PAGES)
