"""docs/ci.md, docs/config.md and .pre-commit-hooks.yaml: what they tell users to copy works.

The manifest is checked against pre-commit's schema (with pre-commit's own loader when it is installed);
every YAML block of the two pages parses; the gradcheck commands of the CI set-ups are run, in-process,
on the model file docs/ci.md shows, and the reports they write are parsed back; the configuration
examples load and agree with each other. The files the pages show are docs/examples/ci/ and
docs/examples/config*/, included by docs/gen_snippets.py, which also writes the outputs next to them from
real runs; the tests here check in-process that what the pages show is what those files give.
"""

import json
import re
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.config.config import KEYS, ConfigError, load_config
from gradcheck_cli.config.thresholds import DEPRECATED_THRESHOLD_KEYS, THRESHOLD_KEYS
from gradcheck_cli.scan.pytest_plugin import GradcheckFixture

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CI_DOC = ROOT / "docs" / "ci.md"
CONFIG_DOC = ROOT / "docs" / "config.md"
HOOKS_FILE = ROOT / ".pre-commit-hooks.yaml"
MODEL_PATH = "models/model.py"  # where docs/ci.md's commands look for the model
CI_EXAMPLE = ROOT / "docs" / "examples" / "ci"  # the folder docs/ci.md's commands run in
CONFIG_EXAMPLE = ROOT / "docs" / "examples" / "config" / "gradcheck.yaml"
BROKEN_CONFIG_EXAMPLE = ROOT / "docs" / "examples" / "config-broken" / "gradcheck.yaml"

# pre_commit/clientlib.py MANIFEST_HOOK_DICT (pre-commit 4.x): the keys a hook of a manifest may have.
REQUIRED_HOOK_KEYS = {"id", "name", "entry", "language"}
OPTIONAL_HOOK_KEYS = {
    "alias", "files", "exclude", "types", "types_or", "exclude_types", "always_run", "pass_filenames",
    "description", "args", "stages", "require_serial", "minimum_pre_commit_version",
    "additional_dependencies", "verbose", "log_file", "language_version", "fail_fast",
}  # fmt: skip
BOOLEAN_HOOK_KEYS = {"always_run", "pass_filenames", "require_serial", "verbose", "fail_fast"}
# pre_commit/languages: system and script are the older names of unsupported and unsupported_script.
PRE_COMMIT_LANGUAGES = {
    "conda", "coursier", "dart", "docker", "docker_image", "dotnet", "fail", "golang", "haskell", "julia",
    "lua", "node", "perl", "pygrep", "python", "r", "ruby", "rust", "swift", "script", "system",
    "unsupported", "unsupported_script",
}  # fmt: skip

FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
SHELL_SYNTAX = set("|&;<>$`()*?")
ANNOTATION = re.compile(r"^::(error|warning|notice) [^:]*::")


def fenced(path: Path, lang: str) -> list[str]:
    """The bodies of the fenced blocks of one language, in page order."""
    text = path.read_text(encoding="utf-8")
    return [match["body"] for match in FENCE.finditer(text) if match["lang"] == lang]


def first_line(block: str) -> str:
    return block.split("\n", 1)[0]


def block_starting(path: Path, lang: str, start: str) -> str:
    found = [block for block in fenced(path, lang) if first_line(block).startswith(start)]
    assert len(found) == 1, f"{path.name}: expected one ```{lang} block starting {start!r}, found {len(found)}"
    return found[0]


def shown_lines(path: Path, start: str) -> list[str]:
    """The lines of the ```text block that holds a line starting with `start`, without the "..." that
    stands for lines left out."""
    found = [block for block in fenced(path, "text") if any(line.startswith(start) for line in block.splitlines())]
    assert len(found) == 1, f"{path.name}: expected one ```text block with a line {start!r}, found {len(found)}"
    return [line for line in found[0].splitlines() if line != "..."]


def region_shows(path: Path, included: Path) -> bool:
    """Whether the page shows the file, whole, in an include region."""
    relative = included.relative_to(ROOT).as_posix()
    body = included.read_text(encoding="utf-8").rstrip()
    return f"<!-- include: {relative} -->\n```{'python' if included.suffix == '.py' else 'yaml'}\n{body}\n```" in (
        path.read_text(encoding="utf-8")
    )


def yaml_documents(path: Path) -> list:
    return [yaml.safe_load(block) for block in fenced(path, "yaml")]


def gradcheck_lines(block: str) -> list[str]:
    """Lines that run gradcheck: `run: gradcheck ...`, `- gradcheck ...` (a script list) or a line of a
    `run: |` block."""
    commands = []
    for raw in block.splitlines():
        line = raw.strip()
        for prefix in ("run: ", "- "):
            if line.startswith(prefix):
                line = line[len(prefix) :].strip()
        if line.startswith("gradcheck "):
            commands.append(line.split(" #", 1)[0].strip())
    return commands


def ci_commands() -> list[str]:
    """Each distinct command once, in page order."""
    return list(dict.fromkeys(command for block in fenced(CI_DOC, "yaml") for command in gradcheck_lines(block)))


def option_value(args: list[str], *names: str) -> str | None:
    for index, arg in enumerate(args):
        if arg in names and index + 1 < len(args):
            return args[index + 1]
        for name in names:
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def workflow() -> dict:
    found = [
        doc
        for doc in yaml_documents(CI_DOC)
        if isinstance(doc, dict)
        and "jobs" in doc
        # the workflow that writes its steps out; the one with the action is tests/test_action.py's
        and not any(step.get("uses", "").startswith("./") for job in doc["jobs"].values() for step in job["steps"])
    ]
    assert len(found) == 1, "docs/ci.md should have one GitHub Actions workflow without the action"
    return found[0]


def gitlab_job() -> dict:
    found = [
        job
        for doc in yaml_documents(CI_DOC)
        if isinstance(doc, dict) and "jobs" not in doc and "repos" not in doc
        for job in doc.values()
        if isinstance(job, dict) and "script" in job
    ]
    assert len(found) == 1, "docs/ci.md should have one GitLab CI job"
    return found[0]


def pre_commit_configs() -> list[dict]:
    return [doc for doc in yaml_documents(CI_DOC) if isinstance(doc, dict) and "repos" in doc]


def manifest() -> list:
    return yaml.safe_load(HOOKS_FILE.read_text(encoding="utf-8"))


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, env={"COLUMNS": "100", "NO_COLOR": "1", "GRADCHECK_FORMAT": None})


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository holding docs/ci.md's model file where its commands look for it; the working folder.
    Its (empty) gradcheck.yaml keeps a configuration file in a parent folder from applying."""
    (tmp_path / MODEL_PATH).parent.mkdir(parents=True)
    (tmp_path / MODEL_PATH).write_text((CI_EXAMPLE / MODEL_PATH).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "gradcheck.yaml").write_text("# the defaults\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GRADCHECK_FORMAT", raising=False)
    return tmp_path


# --- (a) .pre-commit-hooks.yaml ------------------------------------------------------------------------


def test_hooks_manifest_follows_pre_commits_schema():
    hooks = manifest()
    assert isinstance(hooks, list) and hooks
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    for hook in hooks:
        assert isinstance(hook, dict)
        assert REQUIRED_HOOK_KEYS <= hook.keys(), f"{hook.get('id')}: missing {REQUIRED_HOOK_KEYS - hook.keys()}"
        assert not hook.keys() - REQUIRED_HOOK_KEYS - OPTIONAL_HOOK_KEYS, f"{hook['id']}: unknown keys"
        assert all(isinstance(hook[key], str) and hook[key] for key in REQUIRED_HOOK_KEYS)
        assert hook["language"] in PRE_COMMIT_LANGUAGES
        assert all(isinstance(hook[key], bool) for key in BOOLEAN_HOOK_KEYS & hook.keys())
        for key in ("files", "exclude"):
            if key in hook:
                re.compile(hook[key])
        assert shlex.split(hook["entry"])[0] in scripts
    assert len({hook["id"] for hook in hooks}) == len(hooks)


def test_hooks_run_gradcheck_scan_once_on_python_yaml_and_toml_changes():
    hooks = {hook["id"]: hook for hook in manifest()}
    assert set(hooks) == {"gradcheck", "gradcheck-system"}
    assert hooks["gradcheck"]["language"] == "python"
    assert hooks["gradcheck-system"]["language"] == "system"
    for hook in hooks.values():
        assert hook["entry"] == "gradcheck scan"
        assert hook["pass_filenames"] is False and hook["always_run"] is False
        files = re.compile(hook["files"])
        for name in ("model.py", "gradcheck.yaml", ".gradcheck.yml", "pyproject.toml", "sub/x.py"):
            assert files.search(name), name
        for name in ("README.md", "weights.pt", "model.pyc", "yaml.txt"):
            assert not files.search(name), name


def test_hooks_manifest_loads_with_pre_commit():
    clientlib = pytest.importorskip("pre_commit.clientlib")
    loaded = clientlib.load_manifest(str(HOOKS_FILE))
    assert [hook["id"] for hook in loaded] == [hook["id"] for hook in manifest()]


# --- (b) the YAML blocks of the pages --------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc, index",
    [(doc, index) for doc in (CI_DOC, CONFIG_DOC) for index in range(len(fenced(doc, "yaml")))],
    ids=lambda value: value.name if isinstance(value, Path) else str(value),
)
def test_every_yaml_block_parses(doc: Path, index: int):
    assert yaml.safe_load(fenced(doc, "yaml")[index]) is not None


def test_github_workflow_scans_and_uploads_the_sarif_log_always():
    document = workflow()
    # YAML 1.1 reads the key `on` as True: what yaml.safe_load and GitHub's own parser disagree on.
    assert "pull_request" in document.get("on", document.get(True))
    steps = [step for job in document["jobs"].values() for step in job["steps"]]
    uses = [step.get("uses", "") for step in steps]
    assert any(use.startswith("actions/checkout@") for use in uses)
    setup = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "3.11"
    runs = [step.get("run", "") for step in steps]
    assert any("download.pytorch.org/whl/cpu" in run and "torch==" in run for run in runs)
    assert any("gradcheck scan" in run for run in runs)
    scan = next(step for step in steps if "--format sarif" in step.get("run", ""))
    sarif = option_value(shlex.split(scan["run"]), "--output", "-o")
    upload = next(step for step in steps if step.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    assert upload["uses"].endswith("@v3")
    assert upload["if"] == "always()"
    assert upload["with"]["sarif_file"] == sarif
    job = next(iter(document["jobs"].values()))
    assert job["permissions"]["security-events"] == "write"
    assert any("--format github" in run for run in runs)
    assert any("--format markdown" in run for run in runs)


def test_gitlab_job_reports_the_junit_file_its_command_writes():
    job = gitlab_job()
    commands = [line for line in job["script"] if line.startswith("gradcheck ")]
    assert len(commands) == 1
    assert "--format junit" in commands[0]
    output = option_value(shlex.split(commands[0]), "--output", "-o")
    assert job["artifacts"]["reports"]["junit"] == output
    assert job["artifacts"]["when"] == "always"  # gradcheck exits 1 exactly when the report matters


def test_pre_commit_configs_use_the_hooks_of_the_manifest():
    ids = {hook["id"] for hook in manifest()}
    configs = pre_commit_configs()
    assert configs
    for config in configs:
        for repo in config["repos"]:
            for hook in repo["hooks"]:
                assert not hook.keys() - REQUIRED_HOOK_KEYS - OPTIONAL_HOOK_KEYS, hook
                if repo["repo"] == "local":
                    assert REQUIRED_HOOK_KEYS <= hook.keys()
                    assert hook["language"] in PRE_COMMIT_LANGUAGES
                    re.compile(hook.get("files", ""))
                else:
                    assert hook["id"] in ids
                    assert isinstance(repo["rev"], str) and repo["rev"]


# --- (c) the gradcheck commands of the set-ups, run ------------------------------------------------------


def test_the_set_ups_run_the_commands_this_test_runs():
    commands = ci_commands()
    formats = {option_value(shlex.split(command), "--format") for command in commands}
    assert {"sarif", "junit", "github", "markdown"} <= formats
    assert all(MODEL_PATH in shlex.split(command) for command in commands)


@pytest.mark.parametrize("command", ci_commands())
def test_each_command_of_the_set_ups_runs_and_writes_its_report(project: Path, command: str):
    assert not SHELL_SYNTAX & set(command), f"not a plain command: {command}"
    args = shlex.split(command)[1:]
    result = invoke(args)
    assert result.exit_code in (0, 1), result.output
    output = option_value(args, "--output", "-o")
    report_format = option_value(args, "--format")
    if output is None:
        assert report_format == "github"
        lines = result.stdout.splitlines()
        assert lines and all(ANNOTATION.match(line) or line.startswith("gradcheck: ") for line in lines)
        assert any(line.startswith(f"::error file={MODEL_PATH},") for line in lines)
        return
    written = project / output
    assert written.is_file(), f"{command} did not write {output}"
    text = written.read_text(encoding="utf-8")
    if report_format == "sarif":
        log = json.loads(text)
        assert log["version"] == "2.1.0"
        results = log["runs"][0]["results"]
        assert results, "the docs' model vanishes: at least one result"
        for item in results:
            artifact = item["locations"][0]["physicalLocation"]["artifactLocation"]
            assert artifact == {"uri": MODEL_PATH, "uriBaseId": "%SRCROOT%"}
    elif report_format == "junit":
        root = ET.fromstring(text)
        assert root.tag == "testsuites"
        assert [suite.get("name") for suite in root.iter("testsuite")] == [MODEL_PATH]
        assert int(root.get("failures")) > 0
    elif report_format == "markdown":
        assert text.strip().startswith("### gradcheck:")
    else:
        pytest.fail(f"no check for --format {report_format}")


def test_the_pre_commit_hooks_run_as_configured(project: Path):
    """Each hook of the docs' configurations: its entry (from the manifest for a remote hook) plus args."""
    entries = {hook["id"]: hook["entry"] for hook in manifest()}
    ran = 0
    for config in pre_commit_configs():
        for repo in config["repos"]:
            for hook in repo["hooks"]:
                entry = shlex.split(hook["entry"] if repo["repo"] == "local" else entries[hook["id"]])
                assert Path(entry[0]).name == "gradcheck"
                result = invoke([*entry[1:], *hook.get("args", [])])
                assert result.exit_code in (0, 1), result.output
                ran += 1
    assert ran >= 2


def test_a_hook_without_args_scans_the_targets_of_the_configuration_file(project: Path):
    (project / "gradcheck.yaml").write_text(f"targets:\n  - {MODEL_PATH}\n", encoding="utf-8")
    result = invoke(shlex.split(manifest()[0]["entry"])[1:] + ["--format", "json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["verdict"] == "vanishing"


def test_the_python_api_example_passes(monkeypatch: pytest.MonkeyPatch):
    """The test functions of docs/ci.md's example, called as pytest would (the fixture given)."""
    source = next(block for block in fenced(CI_DOC, "python") if "def test_" in block)
    namespace: dict = {"__name__": "ci_docs_example"}
    exec(compile(source, f"{CI_DOC}:python", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_") and callable(value)]
    assert len(tests) >= 2
    for test in tests:
        needs_fixture = "gradcheck" in test.__code__.co_varnames[: test.__code__.co_argcount]
        test(gradcheck=GradcheckFixture()) if needs_fixture else test()


# --- (d) docs/config.md ----------------------------------------------------------------------------------


def example_yaml() -> str:
    return CONFIG_EXAMPLE.read_text(encoding="utf-8")


def test_the_pages_show_the_example_files():
    assert region_shows(CI_DOC, CI_EXAMPLE / MODEL_PATH)
    assert region_shows(CONFIG_DOC, CONFIG_EXAMPLE)
    assert region_shows(CONFIG_DOC, BROKEN_CONFIG_EXAMPLE)


def test_the_gradcheck_yaml_example_loads(tmp_path: Path):
    path = tmp_path / "gradcheck.yaml"
    path.write_text(example_yaml(), encoding="utf-8")
    config = load_config(path)
    assert config.path == path and len(config.targets) == 3
    current = {key.replace("-", "_") for key in THRESHOLD_KEYS if key not in DEPRECATED_THRESHOLD_KEYS}
    assert {name for name, _ in config.threshold_values} == current and config.notices == ()


def test_the_pyproject_example_loads_to_the_same_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gradcheck.yaml").write_text(example_yaml(), encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(block_starting(CONFIG_DOC, "toml", "# pyproject.toml"), encoding="utf-8")
    from_yaml = load_config(tmp_path / "gradcheck.yaml")
    from_toml = load_config(tmp_path / "pyproject.toml")
    assert from_toml.to_yaml() == from_yaml.to_yaml()


def test_every_other_yaml_block_of_config_md_loads_or_fails_as_the_page_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    text_blocks = fenced(CONFIG_DOC, "text")
    broken = 0
    for block in fenced(CONFIG_DOC, "yaml"):
        path = tmp_path / "gradcheck.yaml"
        path.write_text(block, encoding="utf-8")
        if "broken on purpose" not in first_line(block):
            load_config(path)
            continue
        broken += 1
        with pytest.raises(ConfigError):
            load_config(path)
        # The page says what `gradcheck scan models/model.py` prints for it: that exact line, exit code 2.
        result = invoke(["scan", MODEL_PATH])
        assert result.exit_code == 2
        assert result.stderr in text_blocks
    assert broken == 1


def test_the_config_show_output_on_the_page_is_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gradcheck.yaml").write_text(example_yaml(), encoding="utf-8")
    result = invoke(["config", "--show"])
    assert result.exit_code == 0, result.output
    assert result.stdout == block_starting(CONFIG_DOC, "text", "# using config gradcheck.yaml")


def test_the_keys_table_lists_every_key():
    page = CONFIG_DOC.read_text(encoding="utf-8")
    missing = [key for key in (*KEYS, *THRESHOLD_KEYS) if f"| `{key}` |" not in page]
    assert not missing, f"docs/config.md has no row for {missing}"


# --- the outputs shown on docs/ci.md ---------------------------------------------------------------------


def test_the_github_annotations_on_the_page_are_real(project: Path):
    result = invoke(["scan", MODEL_PATH, "--format", "github"])
    assert result.exit_code == 1
    assert result.stdout == block_starting(CI_DOC, "text", f"::error file={MODEL_PATH},")


def test_the_baseline_regression_on_the_page_is_real(project: Path):
    """docs/ci.md: record a baseline, grow the model from 12 to 16 sigmoid layers, compare."""
    assert invoke(["scan", MODEL_PATH, "--save-baseline", "gradcheck-baseline.json", "-s"]).exit_code == 1
    model = project / MODEL_PATH
    model.write_text(model.read_text(encoding="utf-8").replace("range(12)", "range(16)"), encoding="utf-8")
    result = invoke(["scan", MODEL_PATH, "--baseline", "gradcheck-baseline.json"])
    assert result.exit_code == 1
    shown = [line.rstrip() for line in result.stdout.splitlines()]
    pasted = shown_lines(CI_DOC, "2. ERROR baseline_regression")
    start = shown.index(pasted[0])
    assert shown[start : start + len(pasted)] == pasted
