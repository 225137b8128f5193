"""Refresh the generated regions of the documentation: real output, real files, the fixes' real code.

    python docs/gen_snippets.py                 # rewrite every region in docs/**/*.md
    python docs/gen_snippets.py docs/fixes.md   # only these pages
    python docs/gen_snippets.py --check         # exit 1 if an include region is out of date (fast: runs nothing)

A region is an HTML comment that names its source, the generated text, and an end comment; everything
between the two comments is rewritten, and nothing else on the page is touched:

    <!-- output: gradcheck demo --depth 50 -->
    ...  the command's stdout and stderr, run from the repository root with COLUMNS=100 NO_COLOR=1
    <!-- end output -->

    <!-- output: gradcheck demo --depth 20 --verify | from Fixes tried | until After -->
    ...  only the lines from the first one containing "Fixes tried" (and before the next one containing
    ...  "After"), with "..." where lines were left out
    <!-- end output -->

    <!-- output: gradcheck demo --depth 5 --format json | json-trimmed -->
    ...  a JSON report with every list of more than two items cut to its first and last, as a json block
    <!-- end output -->

    <!-- output: gradcheck scan docs/examples/cnn_64px.py | exit 2 -->
    ...  a command that must fail with that exit code (by default it must exit 0 or 1)
    <!-- end output -->

    <!-- include: docs/examples/hf_bert.py -->
    ...  the file, as a Python code block
    <!-- end include -->

    <!-- fix-code: init/gate_bias | gradcheck demo --arch lstm -->
    ...  the `code` of the first fix with that id (and params.scheme) in the command's JSON report,
    ...  exactly as gradcheck prints it (kept out of `ruff format` by fmt: off/on comments)
    <!-- end fix-code -->

Commands run in a fresh process each (the environment's `gradcheck`), as a user would run them; the report's
probe time varies from run to run, everything else is the same for the same seed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
COLUMNS = 100  # Material's content column shows about 100 characters of code without scrolling

REGION = re.compile(
    r"(?P<open><!-- (?P<kind>output|include|fix-code): (?P<arg>.+?) -->\n)(?P<body>.*?)(?P<close><!-- end (?P=kind) -->)",
    re.DOTALL,
)


@cache
def run(command: str, expected: tuple[int, ...] = (0, 1)) -> tuple[str, str]:
    """Run one `gradcheck ...` command line; its stdout and its stderr."""
    argv = shlex.split(command)
    if argv[0] != "gradcheck":
        raise SystemExit(f"a generated region must run gradcheck, not {argv[0]!r}")
    env = {**os.environ, "COLUMNS": str(COLUMNS), "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("FORCE_COLOR", None)
    env.pop("GRADCHECK_FORMAT", None)
    # the installed command where there is one, so that a usage line reads "gradcheck", as users see it
    script = Path(sys.executable).with_name("gradcheck")
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "gradcheck_cli"]
    done = subprocess.run([*launcher, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
    # an uncaught exception exits 1 too, like a finding: a traceback is never documentation
    if done.returncode not in expected or "Traceback (most recent call last)" in done.stderr:
        raise SystemExit(f"`{command}` exited {done.returncode}, not {expected}:\n{done.stdout}{done.stderr}")
    return done.stdout, done.stderr


def output_region(arg: str) -> str:
    command, *cuts = (part.strip() for part in arg.split(" | "))
    expected = tuple(int(cut.split()[1]) for cut in cuts if cut.startswith("exit ")) or (0, 1)
    stdout, stderr = run(command, expected)
    if "json-trimmed" in cuts:
        document = _json(stdout, stderr, command)
        return "```json\n" + json.dumps(_trimmed(document), indent=2, ensure_ascii=False) + "\n```\n"
    text = stdout + stderr
    lines = [line.rstrip() for line in text.rstrip().splitlines()]
    start, end = 0, len(lines)
    for cut in cuts:
        word, _, needle = cut.partition(" ")
        if word == "exit":
            continue
        if word == "from":
            start = _line_with(lines, needle, 0, command)
        elif word == "until":
            end = _line_with(lines, needle, start + 1, command)
        else:
            raise SystemExit(
                f"an output region takes '| from TEXT', '| until TEXT', '| exit N' and '| json-trimmed', not {cut!r}"
            )
    shown = (["..."] if start > 0 else []) + lines[start:end] + (["..."] if end < len(lines) else [])
    return "```text\n$ " + command + "\n" + "\n".join(shown).strip("\n") + "\n```\n"


def _json(stdout: str, stderr: str, command: str):
    # A Python traceback also exits 1, so a report is told by its parse, with the traceback shown if not.
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"`{command}` wrote no JSON report:\n{stdout}{stderr}") from None


def _trimmed(value):
    """A JSON document with every list of more than two items cut to its first and last: the shape of
    every object, at a readable length."""
    if isinstance(value, dict):
        return {key: _trimmed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_trimmed(item) for item in (value if len(value) <= 2 else [value[0], value[-1]])]
    return value


def _line_with(lines: list[str], needle: str, start: int, command: str) -> int:
    for index in range(start, len(lines)):
        if needle in lines[index]:
            return index
    raise SystemExit(f"the output of `{command}` has no line with {needle!r}")


def include_region(path: str) -> str:
    return "```python\n" + (ROOT / path).read_text(encoding="utf-8").rstrip() + "\n```\n"


def fix_code_region(arg: str) -> str:
    selector, command = (part.strip() for part in arg.split("|", 1))
    fix_id, _, scheme = selector.partition("/")
    # the demo's fix trial does not change the findings: --no-fix halves the run
    command += (" --no-fix" if command.startswith("gradcheck demo") else "") + " --format json"
    document = _json(*run(command), command)
    reports = document.get("reports", [document])
    for report in reports:
        for finding in report["findings"]:
            for fix in finding["fixes"]:
                if fix["id"] == fix_id and (not scheme or (fix.get("params") or {}).get("scheme") == scheme):
                    return "<!-- fmt: off -->\n```python\n" + fix["code"] + "\n```\n<!-- fmt: on -->\n"
    raise SystemExit(f"`{command}` suggests no fix {selector!r}")


BUILDERS = {"output": output_region, "include": include_region, "fix-code": fix_code_region}


def refresh(text: str, kinds: tuple[str, ...] = tuple(BUILDERS)) -> str:
    def replace(match: re.Match) -> str:
        if match["kind"] not in kinds:
            return match[0]
        return match["open"] + BUILDERS[match["kind"]](match["arg"]) + match["close"]

    return REGION.sub(replace, text)


def pages(argv: list[str]) -> list[Path]:
    named = [Path(arg).resolve() for arg in argv if not arg.startswith("--")]
    return named or sorted(DOCS.rglob("*.md"))


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = [
            page for page in pages(argv) if refresh(page.read_text("utf-8"), ("include",)) != page.read_text("utf-8")
        ]
        for page in stale:
            print(
                f"{page.relative_to(ROOT)}: an included file changed: run python docs/gen_snippets.py {page.relative_to(ROOT)}",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for page in pages(argv):
        before = page.read_text(encoding="utf-8")
        after = refresh(before)
        if after != before:
            page.write_text(after, encoding="utf-8")
            print(f"updated {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
