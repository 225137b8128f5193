"""Refresh every pasted output of the repository from the command that prints it, and check that none drifted.

    python docs/gen_snippets.py                   # rewrite the regions of README.md, benchmarks/*.md, docs/**/*.md
    python docs/gen_snippets.py docs/fixes.md     # only these pages
    python docs/gen_snippets.py --check           # fast, runs nothing: every region parses, names a command
                                                  # and options that exist, and every included file is current
    python docs/gen_snippets.py --check-outputs   # runs every command (minutes): exit 1 if a region is not
                                                  # what its command prints now

A region is an HTML comment that names its source, the generated text, and an end comment; everything
between the two comments is rewritten whole, and nothing else on the page is touched:

    <!-- output: gradcheck demo --depth 50 -->
    ...  the command's stdout and stderr, run from the repository root with COLUMNS=100 NO_COLOR=1,
    ...  after a "$ command" line
    <!-- end output -->

    <!-- output: gradcheck demo --depth 20 --verify | from Fixes tried | until After -->
    ...  only the lines from the first one containing "Fixes tried" (and before the next one containing
    ...  "After"), with "..." where lines were left out
    <!-- end output -->

    <!-- output: gradcheck demo --init kaiming --gain 2 ; gradcheck demo --depth 0 | exit 2 -->
    ...  several commands, each after its "$ command" line; "| exit N": they must exit N (by default 0 or 1)
    <!-- end output -->

An output region takes these after its commands, each after a "|":

    from TEXT, until TEXT   the lines shown, as above
    exit N                  the exit code the commands must give (a traceback fails a region unless the
                            command has --debug)
    json-trimmed            a JSON report with every list of more than two items cut to its first and
                            last, as a json block
    no-frames               a traceback's frames cut to "  ...", since they name this machine's paths
    bare                    no "$ command" line, for a page whose prose names the command
    status                  each command's exit code instead of its report, as a shell shows it after
                            "$ command > /dev/null; echo $?" (stderr, if any, before it)
    in DIR                  run in a scratch copy of the folder DIR (what the commands write lands there)
    after COMMAND           run COMMAND first in that scratch folder, its output not shown

A command is `gradcheck ...` (the environment's own, as a user runs it), `python ...` (`python -c PROGRAM`
too, say to edit a file of the scratch folder in an "after") or `torchrun ...`.

    <!-- verdict-table: gradcheck demo --depth 50 ; gradcheck demo --arch rnn -->
    ...  a Markdown table: for each command, the report's title, its input/output backward signal and gain
    ...  as the verdict line prints them, and its verdict; then the same for the fix the demo applied
    <!-- end verdict-table -->

    <!-- include: docs/examples/hf_bert.py -->
    ...  the file, as a code block in its language
    <!-- end include -->

    <!-- fix-code: init/gate_bias | gradcheck demo --arch lstm -->
    ...  the `code` of the first fix with that id (and params.scheme) in the command's JSON report,
    ...  exactly as gradcheck prints it (kept out of `ruff format` by fmt: off/on comments)
    <!-- end fix-code -->

Commands run in a fresh process each, as a user would run them. A report's probe time varies from run to
run and the scratch folder's path from region to region; everything else is the same for the same seed.
So a region is compared, and rewritten, only where it differs with those masked (`normalized`): a run
that changes nothing but a time leaves the page alone.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
COLUMNS = 100  # Material's content column shows about 100 characters of code without scrolling
REFRESH = "python docs/gen_snippets.py"

REGION = re.compile(
    r"(?P<open><!-- (?P<kind>output|include|fix-code|verdict-table): (?P<arg>.+?) -->\n)"
    r"(?P<body>.*?)(?P<close><!-- end (?P=kind) -->)",
    re.DOTALL,
)
LANGUAGES = {".py": "python", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}
FLAGS = ("json-trimmed", "no-frames", "bare", "status")
TAKING_TEXT = ("from", "until", "exit", "in", "after")
PROGRAMS = ("gradcheck", "python", "torchrun")

# What varies from run to run, masked before two outputs are compared. The header's facts line wraps
# where its time's width puts it, so it is compared as one line.
FACTS_LINE = re.compile(r"[\d,]+ parameters \(.*? ·\s+\d+\.\d+\s+s\b", re.DOTALL)
SECONDS = re.compile(r"\b\d+\.\d+ s\b")
JSON_SECONDS = re.compile(r'"seconds": [0-9.e+-]+')


class Printed(tuple):
    """What a command printed, (stdout, stderr), and its exit code as `code`."""

    def __new__(cls, stdout: str, stderr: str, code: int) -> Printed:
        printed = super().__new__(cls, (stdout, stderr))
        printed.code = code
        return printed


class RegionError(Exception):
    """A region that cannot be generated: its message says why."""


def pages(argv: list[str] = ()) -> list[Path]:
    """The pages named on the command line, or every page that may hold a region."""
    named = [Path(arg).resolve() for arg in argv if not arg.startswith("--")]
    return named or [ROOT / "README.md", *sorted((ROOT / "benchmarks").glob("*.md")), *sorted(DOCS.rglob("*.md"))]


# --- parsing --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    commands: tuple[str, ...]
    start: str | None = None
    end: str | None = None
    expected: tuple[int, ...] = (0, 1)
    folder: str | None = None
    setup: tuple[str, ...] = ()
    flags: frozenset[str] = frozenset()


def parse_output(arg: str) -> Output:
    head, *options = (part.strip() for part in arg.split(" | "))
    fields: dict = {"commands": _commands(head), "setup": (), "flags": frozenset()}
    for option in options:
        word, _, value = option.partition(" ")
        if option in FLAGS:
            fields["flags"] |= {option}
        elif word in TAKING_TEXT and value:
            if word == "exit":
                if not value.isdigit():
                    raise RegionError(f"'| exit' takes an exit code, not {value!r}")
                fields["expected"] = (int(value),)
            elif word == "after":
                fields["setup"] += (_commands(value)[0],)
            else:
                fields[{"from": "start", "until": "end", "in": "folder"}[word]] = value
        else:
            known = ", ".join([*(f"'{word} ...'" for word in TAKING_TEXT), *(f"'{flag}'" for flag in FLAGS)])
            raise RegionError(f"an output region takes {known} after its commands, not {option!r}")
    if "json-trimmed" in fields["flags"] and len(fields["commands"]) > 1:
        raise RegionError("'| json-trimmed' shows one command's report")
    if fields.get("folder") and not (ROOT / fields["folder"]).is_dir():
        raise RegionError(f"'| in {fields['folder']}': no such folder in the repository")
    return Output(**fields)


def _commands(text: str) -> tuple[str, ...]:
    commands = tuple(command.strip() for command in text.split(" ; "))
    for command in commands:
        program = command.split(" ", 1)[0]
        if program not in PROGRAMS:
            raise RegionError(f"a region runs {', '.join(PROGRAMS)}, not {program!r} (in {command!r})")
    return commands


def parse_fix_code(arg: str) -> tuple[str, str, str]:
    """(fix id, scheme or "", command)."""
    selector, bar, command = (part.strip() for part in arg.partition("|"))
    if not bar:
        raise RegionError("a fix-code region is 'FIX_ID[/SCHEME] | gradcheck ...'")
    fix_id, _, scheme = selector.partition("/")
    return fix_id, scheme, _commands(command)[0]


Run = tuple  # the arguments of one run_all call: (commands, expected exit codes, folder, set-up commands)


def region_runs(kind: str, arg: str) -> list[Run]:
    """The runs a region's text comes from, parsed and checked for syntax (RegionError if it does not
    parse); none for an include, whose file must exist."""
    if kind == "output":
        spec = parse_output(arg)
        return [(spec.commands, spec.expected, spec.folder, spec.setup)]
    if kind == "fix-code":
        command = parse_fix_code(arg)[2]
        # the demo's fix trial does not change the findings: --no-fix halves the run
        return [
            (
                (command + (" --no-fix" if command.startswith("gradcheck demo") else "") + " --format json",),
                (0, 1),
                None,
                (),
            )
        ]
    if kind == "verdict-table":
        return [((command + " --format json",), (0, 1), None, ()) for command in _commands(arg)]
    if not (ROOT / arg).is_file():
        raise RegionError(f"no file {arg} to include")
    return []


def command_problem(command: str, expected: tuple[int, ...], folder: str | None) -> str | None:
    """Why a command cannot run as written (an unknown command or option, a missing file), or None. Options
    are parsed by the app's own parser, without running anything; a command that must exit 2 may have
    options the parser refuses, as long as its subcommand exists."""
    argv = shlex.split(command)
    here = ROOT / folder if folder else ROOT
    if argv[0] == "python":
        if argv[1:2] in (["-c"], ["-m"]):  # a program on the command line, or a module: no file to look for
            return None
        script = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
        return None if script is None or (here / script).is_file() else f"no file {script}"
    if argv[0] == "torchrun":
        if "gradcheck_cli" not in argv:
            return "torchrun runs gradcheck as `-m gradcheck_cli`"
        argv = ["gradcheck", *argv[argv.index("gradcheck_cli") + 1 :]]
    root = _parser()
    try:
        context = root.make_context("gradcheck", argv[1:])
        # the group keeps the subcommand's name apart from its arguments (click's protected args)
        name, subcommand, rest = root.resolve_command(context, [*context._protected_args, *context.args])
        if 2 not in expected:
            subcommand.make_context(name, rest, parent=context)
    except Exception as error:  # the parser's own errors (no such command, option or value)
        return error.format_message() if hasattr(error, "format_message") else str(error)
    return None


@cache
def _parser():
    """The app's command tree, as its own parser reads a command line (torch is not imported)."""
    import typer

    from gradcheck_cli.cli.main import app

    return typer.main.get_command(app)


# --- running --------------------------------------------------------------------------------------------


@cache
def run_all(
    commands: tuple[str, ...],
    expected: tuple[int, ...] = (0, 1),
    folder: str | None = None,
    setup: tuple[str, ...] = (),
) -> tuple[Printed, ...]:
    """Run commands, each in a fresh process: what each printed. With a folder or a set-up they run in
    a scratch folder (a copy of the folder), whose path their output shows as "."."""
    if folder is None and not setup:
        return tuple(_run(command, expected, ROOT) for command in commands)
    with tempfile.TemporaryDirectory(prefix="gradcheck-docs-") as scratch:
        if folder is not None:
            shutil.copytree(ROOT / folder, scratch, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        for command in setup:
            _run(command, (0, 1), Path(scratch))
        results = [_run(command, expected, Path(scratch)) for command in commands]
        real = os.path.realpath(scratch)
        return tuple(
            Printed(
                *(text.replace(real + os.sep, "").replace(scratch + os.sep, "").replace(real, ".") for text in printed),
                printed.code,
            )
            for printed in results
        )


def _run(command: str, expected: tuple[int, ...], cwd: Path) -> Printed:
    argv = shlex.split(command)
    # The environment a user has: no variable of gradcheck's own (the test suite sets some), no thread cap.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GRADCHECK_") and key not in ("FORCE_COLOR", "OMP_NUM_THREADS")
    }
    env.update({"COLUMNS": str(COLUMNS), "NO_COLOR": "1", "TERM": "dumb"})
    bin_folder = Path(sys.executable).parent
    if argv[0] == "gradcheck":
        # the installed command where there is one, so that a usage line reads "gradcheck", as users see it
        script = bin_folder / "gradcheck"
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "gradcheck_cli"]
        argv += shlex.split(command)[1:]
    elif argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "torchrun":
        argv[0] = str(bin_folder / "torchrun")
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    # an uncaught exception exits 1 too, like a finding: a traceback is documentation only with --debug
    traceback = "Traceback (most recent call last)" in done.stderr and "--debug" not in argv
    if done.returncode not in expected or traceback:
        raise RegionError(f"`{command}` exited {done.returncode}, not {expected}:\n{done.stdout}{done.stderr}")
    return Printed(done.stdout, done.stderr, done.returncode)


# --- the regions ----------------------------------------------------------------------------------------


def output_region(arg: str) -> str:
    spec = parse_output(arg)
    results = run_all(*region_runs("output", arg)[0])
    if "json-trimmed" in spec.flags:
        document = _json(*results[0], spec.commands[0])
        return "```json\n" + json.dumps(_trimmed(document), indent=2, ensure_ascii=False) + "\n```\n"
    shown = []
    for command, printed in zip(spec.commands, results):
        if "status" in spec.flags:
            shown += [f"$ {command} > /dev/null; echo $?", *printed[1].rstrip().splitlines(), str(printed.code)]
            continue
        stdout, stderr = printed
        lines = [line.rstrip() for line in (stdout + stderr).rstrip().splitlines()]
        if "no-frames" in spec.flags:
            lines = _without_frames(lines)
        start = _line_with(lines, spec.start, 0, command) if spec.start else 0
        end = _line_with(lines, spec.end, start + 1, command) if spec.end else len(lines)
        kept = "\n".join(lines[start:end]).strip("\n").splitlines()
        part = (["..."] if start > 0 else []) + kept + (["..."] if end < len(lines) else [])
        shown += ([] if "bare" in spec.flags else ["$ " + command]) + part
    return "```text\n" + "\n".join(shown).strip("\n") + "\n```\n"


def _without_frames(lines: list[str]) -> list[str]:
    """A traceback's frames (indented, between its first line and the exception) cut to one "  ..."."""
    if "Traceback (most recent call last):" not in lines:
        return lines
    first = lines.index("Traceback (most recent call last):") + 1
    last = next((index for index in range(first, len(lines)) if not lines[index].startswith(" ")), len(lines))
    return lines[:first] + ["  ..."] + lines[last:]


def _json(stdout: str, stderr: str, command: str):
    # A Python traceback also exits 1, so a report is told by its parse, with the traceback shown if not.
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        raise RegionError(f"`{command}` wrote no JSON report:\n{stdout}{stderr}") from None


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
    raise RegionError(f"the output of `{command}` has no line with {needle!r}")


def include_region(path: str) -> str:
    language = LANGUAGES.get(Path(path).suffix, "text")
    return f"```{language}\n" + (ROOT / path).read_text(encoding="utf-8").rstrip() + "\n```\n"


def fix_code_region(arg: str) -> str:
    fix_id, scheme, _ = parse_fix_code(arg)
    [job] = region_runs("fix-code", arg)
    command = job[0][0]
    document = _json(*run_all(*job)[0], command)
    for report in document.get("reports", [document]):
        for finding in report["findings"]:
            for fix in finding["fixes"]:
                if fix["id"] == fix_id and (not scheme or (fix.get("params") or {}).get("scheme") == scheme):
                    return "<!-- fmt: off -->\n```python\n" + fix["code"] + "\n```\n<!-- fmt: on -->\n"
    raise RegionError(f"`{command}` suggests no fix {fix_id}{'/' + scheme if scheme else ''}")


def verdict_table_region(arg: str) -> str:
    rows = [
        "| model: `command` | input/output backward signal | gain | verdict |",
        "|---|---|---|---|",
    ]
    for command, job in zip(_commands(arg), region_runs("verdict-table", arg)):
        report = _json(*run_all(*job)[0], command)
        rows.append(_verdict_row(f"{report['title']}: `{command}`", report))
        # the demo tries the fixes in order on fresh copies until one cures: the cure, else the first it tried
        trials = [trial for trial in report.get("fix_trials", []) if trial["applied"]]
        cured = [trial for trial in trials if trial.get("outcome") == "cured"]
        for trial in (cured or trials)[:1]:
            rows.append(_verdict_row(f"… after the fix `{trial['fix_id']}` ({trial['change']})", trial["report"]))
    return "\n".join(rows) + "\n"


def _verdict_row(label: str, report: dict) -> str:
    """One row, its figures formatted as the text report's verdict line prints them."""
    profile = report["profile"]
    if profile["decades"] is not None:
        zero = profile["zero_layers"]
        exactly_zero = f" ({zero} layer{'s' if zero != 1 else ''} exactly 0)" if zero else ""
        signal = f"10^{profile['decades']:+.1f}{exactly_zero}"
        gain = f"x{profile['gain_per_layer']:.3g}/layer"
    else:
        series = report["time_profiles"][0]
        label += ", first/last step"
        signal, gain = f"10^{series['decades']:+.1f}", f"x{series['gain_per_step']:.3g}/step"
    return f"| {label} | {signal} | {gain} | {report['verdict']} |"


BUILDERS = {
    "output": output_region,
    "include": include_region,
    "fix-code": fix_code_region,
    "verdict-table": verdict_table_region,
}


# --- pages ----------------------------------------------------------------------------------------------


def normalized(text: str) -> str:
    """The text with what varies from run to run masked: times, and the line break a time's width moves."""
    text = FACTS_LINE.sub(lambda facts: " ".join(facts[0].split()), text)
    return JSON_SECONDS.sub('"seconds": <time>', SECONDS.sub("<time> s", text))


@dataclass(frozen=True)
class Stale:
    page: Path
    line: int
    kind: str
    arg: str
    detail: str  # a diff, or why the region could not be generated
    failed: bool = False  # could not be generated

    def __str__(self) -> str:
        where = self.page.relative_to(ROOT)
        return f"{where}:{self.line}: {self.kind}: {self.arg}\n{self.detail}\nrun: {REFRESH} {where}"


def refresh(
    text: str, kinds: tuple[str, ...] = tuple(BUILDERS), page: Path = ROOT / "page.md"
) -> tuple[str, list[Stale]]:
    """The page with each region of these kinds generated again, and the regions that changed or failed. A
    region whose new text differs only in what varies keeps its old text; one that fails keeps it too."""
    stale = []

    def replace(match: re.Match) -> str:
        if match["kind"] not in kinds:
            return match[0]
        line = text.count("\n", 0, match.start()) + 1
        try:
            body = BUILDERS[match["kind"]](match["arg"])
        except RegionError as error:
            stale.append(Stale(page, line, match["kind"], match["arg"], f"cannot be generated: {error}", failed=True))
            return match[0]
        if normalized(body) == normalized(match["body"]):
            return match[0]
        diff = difflib.unified_diff(
            normalized(match["body"]).splitlines(),
            normalized(body).splitlines(),
            "on the page",
            "printed now",
            n=1,
            lineterm="",
        )
        stale.append(Stale(page, line, match["kind"], match["arg"], "\n".join(list(diff)[:40])))
        return match["open"] + body + match["close"]

    return REGION.sub(replace, text), stale


def region_problems(page: Path) -> list[str]:
    """Why regions of the page cannot run as written, without running them: syntax, commands, options."""
    problems = []
    text = page.read_text(encoding="utf-8")
    for match in REGION.finditer(text):
        where = f"{page.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match['kind']}: {match['arg']}"
        try:
            runs = region_runs(match["kind"], match["arg"])
        except RegionError as error:
            problems.append(f"{where}: {error}")
            continue
        for commands, expected, folder, setup in runs:
            for command, codes in [
                *((command, expected) for command in commands),
                *((command, (0, 1)) for command in setup),
            ]:
                if problem := command_problem(command, codes, folder):
                    problems.append(f"{where}: `{command}`: {problem}")
        if "```" not in match["body"] and "|---" not in match["body"]:
            problems.append(f"{where}: empty; run {REFRESH} {page.relative_to(ROOT)}")
    return problems


def prefetch(selected: list[Path]) -> None:
    """Run every region's commands at once, a few processes at a time, so that building the pages finds
    them done. The processes do not share anything, so their figures are those of one run at a time; a run
    that fails is left to fail again where its region names it."""
    jobs = {
        job
        for page in selected
        for match in REGION.finditer(page.read_text(encoding="utf-8"))
        for job in _runs_or_none(match["kind"], match["arg"])
    }

    def attempt(job: Run) -> None:
        try:
            run_all(*job)
        except RegionError:
            pass

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(attempt, sorted(jobs, key=str)))


def _runs_or_none(kind: str, arg: str) -> list[Run]:
    try:
        return region_runs(kind, arg)
    except RegionError:
        return []


def main(argv: list[str]) -> int:
    selected = pages(argv)
    if "--check" in argv:
        problems = [problem for page in selected for problem in region_problems(page)]
        problems += [
            str(stale) for page in selected for stale in refresh(page.read_text("utf-8"), ("include",), page)[1]
        ]
        if problems:
            print("\n\n".join(problems), file=sys.stderr)
        return 1 if problems else 0
    checking = "--check-outputs" in argv
    failed = False
    prefetch(selected)
    for page in selected:
        before = page.read_text(encoding="utf-8")
        after, stale = refresh(before, page=page)
        for region in stale:
            failed |= checking or region.failed
            shown = (
                str(region) if checking or region.failed else f"updated {region.page.relative_to(ROOT)}:{region.line}"
            )
            print(shown, file=sys.stderr)
        if not checking and after != before:
            page.write_text(after, encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
