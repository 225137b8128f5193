"""action.yml, the composite GitHub Action, and the workflow docs/ci.md shows with it (issue 23).

GitHub only reads the file when a workflow runs, so what it would refuse or do wrong is checked here: the
structure of a composite action, every input used declared (and every declared one used), the options its
gradcheck commands pass exist in `gradcheck scan`, the torch it installs is the one the tests run on, and
docs/ci.md passes it only inputs it declares. The slow test runs its scan steps as the runner would: the
Python scripts with the step's environment, on docs/ci.md's model, with the exit code carried to the end.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from gradcheck_cli.cli.main import app

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
CI_DOC = ROOT / "docs" / "ci.md"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# The keys a step of a composite action may have (GitHub's metadata syntax, runs.steps[*]).
STEP_KEYS = {"id", "if", "name", "uses", "with", "run", "shell", "env", "working-directory", "continue-on-error"}
SHELLS = {"bash", "pwsh", "python", "sh", "cmd", "powershell"}
CONTEXT = re.compile(r"\b(inputs|steps)\.([A-Za-z_][\w-]*)")
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
FENCE = re.compile(r"^```yaml[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def action() -> dict:
    return yaml.safe_load(ACTION.read_text(encoding="utf-8"))


def steps() -> list[dict]:
    return action()["runs"]["steps"]


def strings(value) -> list[str]:
    """Every string in a step (its keys' values, nested), where expressions may appear."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


def gradcheck_steps() -> list[dict]:
    """The steps that run gradcheck: Python scripts calling `python -m gradcheck_cli`."""
    return [step for step in steps() if "gradcheck_cli" in step.get("run", "")]


def scan_options() -> set[str]:
    command = typer.main.get_command(app).commands["scan"]
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("-")}


def action_steps_in_docs() -> list[dict]:
    """The steps of docs/ci.md's YAML blocks that use this action: a local path, or `<owner>/gradcheck@<ref>`."""
    found = []
    for block in FENCE.findall(CI_DOC.read_text(encoding="utf-8")):
        document = yaml.safe_load(block)
        jobs = document.get("jobs", {}) if isinstance(document, dict) else {}
        for job in jobs.values():
            for step in job.get("steps", []):
                uses = step.get("uses", "")
                if uses.startswith("./") or re.match(r"[^/]+/gradcheck@", uses):
                    found.append(step)
    return found


# --- the file's structure --------------------------------------------------------------------------------


def test_the_action_is_composite_with_a_name_description_and_steps():
    document = action()
    assert document["runs"]["using"] == "composite"
    assert document["name"] == "gradcheck" and document["description"].strip()
    assert steps()


def test_every_step_has_only_composite_keys_and_run_steps_name_their_shell():
    for step in steps():
        assert not step.keys() - STEP_KEYS, f"{step.get('name')}: {step.keys() - STEP_KEYS}"
        assert ("run" in step) != ("uses" in step), step.get("name")
        if "run" in step:
            assert step.get("shell") in SHELLS, f"{step.get('name')}: a composite run step must say its shell"


def test_every_input_is_described_has_a_string_default_and_is_used():
    inputs = action()["inputs"]
    for name, spec in inputs.items():
        assert spec["description"].strip(), name
        # the runner hands inputs over as strings: a YAML true or 3.11 would arrive as "True" or "3.11"
        assert isinstance(spec.get("default"), str), f"{name}: quote the default"
        assert spec.get("required", False) is False, name
    used = {
        name for step in steps() for text in strings(step) for kind, name in CONTEXT.findall(text) if kind == "inputs"
    }
    assert used == set(inputs), f"undeclared: {used - set(inputs)}, unused: {set(inputs) - used}"


def test_step_outputs_read_are_written_by_an_earlier_step():
    seen: set[str] = set()
    for step in steps():
        for text in strings(step):
            for match in re.finditer(r"steps\.([\w-]+)\.outputs\.([\w-]+)", text):
                assert match[1] in seen, f"{step.get('name')} reads steps.{match[1]} before it ran"
                assert f"{match[2]}=" in next(s for s in steps() if s.get("id") == match[1])["run"]
        if "id" in step:
            seen.add(step["id"])
    output = action()["outputs"]["exit-code"]["value"]
    assert EXPRESSION.fullmatch(output)[1] == "steps.scan.outputs.exit-code"


def test_inputs_reach_the_scripts_through_env_only():
    """`${{ inputs.x }}` pasted into a script would run a value as code; env hands it over as data."""
    for step in steps():
        assert not EXPRESSION.search(step.get("run", "")), step.get("name")


def test_the_python_steps_compile():
    scripts = [step["run"] for step in steps() if step.get("shell") == "python"]
    assert len(scripts) >= 3
    for script in scripts:
        compile(script, str(ACTION), "exec")


def test_the_gradcheck_commands_use_options_that_scan_has():
    options = scan_options()
    used = set()
    for step in gradcheck_steps():
        tree = ast.parse(step["run"])
        literals = [
            node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
        ]
        assert {"gradcheck_cli", "scan"} <= set(literals), step["name"]
        # "-m" is Python's (python -m gradcheck_cli); the action spells gradcheck's options long
        assert {value for value in literals if value.startswith("-") and not value.startswith("--")} <= {"-m"}
        used |= {value for value in literals if value.startswith("--")}
    assert used, "the gradcheck steps pass options"
    assert used <= options, f"not options of gradcheck scan: {used - options}"
    assert {"--format", "--output", "--exit-zero", "--fail-on"} <= used


def test_one_scan_is_the_gate_and_the_sarif_scan_only_reports():
    gate, sarif = gradcheck_steps()
    assert gate["id"] == "scan" and "--exit-zero" not in gate["run"] and '"github"' in gate["run"]
    assert '"sarif"' in sarif["run"] and "--exit-zero" in sarif["run"]
    assert steps()[-1]["run"].strip() == 'exit "$EXIT_CODE"'
    assert steps()[-1]["env"]["EXIT_CODE"] == "${{ steps.scan.outputs.exit-code }}"
    # nothing between the gate and the end may fail the job on its own
    after = steps()[steps().index(gate) + 1 : -1]
    assert all(step.get("continue-on-error") is True for step in after if "uses" in step)


def test_actions_used_are_pinned_to_a_major_version():
    uses = {step["uses"].split("@")[0]: step["uses"].split("@")[1] for step in steps() if "uses" in step}
    assert uses == {"actions/setup-python": "v5", "github/codeql-action/upload-sarif": "v3"}


def test_it_installs_the_torch_the_tests_run_on_from_the_cpu_index():
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"][
        "dev"
    ]
    pinned = next(requirement.split("==")[1] for requirement in dev if requirement.startswith("torch=="))
    inputs = action()["inputs"]
    assert inputs["torch-version"]["default"] == pinned
    assert inputs["torch-index"]["default"] == CPU_INDEX
    install = next(step for step in steps() if "GITHUB_ACTION_PATH" in step.get("run", ""))
    assert install["shell"] == "bash"
    # torch before gradcheck, so that gradcheck's own requirement does not fetch another build
    lines = [line for line in install["run"].splitlines() if "pip install" in line]
    assert "torch" in lines[0] and "GITHUB_ACTION_PATH" in lines[1]


# --- docs/ci.md ------------------------------------------------------------------------------------------


def test_the_docs_workflow_uses_the_action_with_declared_inputs_only():
    found = action_steps_in_docs()
    assert found, "docs/ci.md shows a workflow that uses the action"
    inputs = set(action()["inputs"])
    for step in found:
        assert step["uses"].startswith("./"), "a runnable path, not a made-up repository"
        assert (ROOT / "action.yml").is_file()
        assert set(step.get("with", {})) <= inputs, f"not inputs of action.yml: {set(step['with']) - inputs}"


def test_the_docs_table_lists_every_input_with_its_default():
    section = CI_DOC.read_text(encoding="utf-8").split("\n## GitHub Actions\n")[1].split("\n## ")[0]
    for name, spec in action()["inputs"].items():
        row = next((line for line in section.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row, f"docs/ci.md has no row for the input {name}"
        if spec["default"]:
            assert f"`{spec['default']}`" in row, f"{name}: the row should show the default {spec['default']!r}"


# --- the scan steps, run as the runner runs them ---------------------------------------------------------


def _value(operand: str, inputs: dict[str, str], outputs: dict[str, dict[str, str]]) -> str:
    if operand.startswith("'") and operand.endswith("'"):
        return operand[1:-1]
    parts = operand.split(".")
    if parts[0] == "inputs" and len(parts) == 2:
        return inputs[parts[1]]
    if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
        return outputs.get(parts[1], {}).get(parts[3], "")
    raise AssertionError(
        f"this test cannot evaluate {operand!r}: teach _value, or keep the action's expressions simple"
    )


def _condition(expression: str, inputs, outputs) -> bool:
    """The `if:` expressions the action uses: comparisons joined by &&."""
    results = []
    for term in expression.split("&&"):
        match = re.fullmatch(r"\s*(\S+)\s*(==|!=)\s*(\S+)\s*", term)
        assert match, f"this test cannot evaluate {term!r}"
        left, right = _value(match[1], inputs, outputs), _value(match[3], inputs, outputs)
        results.append((left == right) if match[2] == "==" else (left != right))
    return all(results)


def _expand(value: str, inputs, outputs) -> str:
    return EXPRESSION.sub(lambda match: _value(match[1], inputs, outputs), value)


def run_action(folder: Path, **given: str) -> dict:
    """The action's steps that need no network, in ``folder``: the gradcheck scans and the exit. The install
    steps and the actions it uses are recorded as they would run, not run (gradcheck is installed here)."""
    inputs = {name: spec["default"] for name, spec in action()["inputs"].items()}
    assert not given.keys() - inputs.keys()
    inputs.update(given)
    outputs: dict[str, dict[str, str]] = {}
    ran: dict[str, subprocess.CompletedProcess | dict] = {}
    for index, step in enumerate(steps()):
        if "if" in step and not _condition(step["if"], inputs, outputs):
            continue
        name = step["name"]
        env = {key: _expand(str(value), inputs, outputs) for key, value in step.get("env", {}).items()}
        if "uses" in step:
            ran[name] = {key: _expand(str(value), inputs, outputs) for key, value in step.get("with", {}).items()}
            continue
        if "pip" in step["run"]:
            ran[name] = env
            continue
        output_file = folder / f".github-output-{index}"
        output_file.write_text("", encoding="utf-8")
        command = [sys.executable, "-c", step["run"]] if step["shell"] == "python" else ["bash", "-c", step["run"]]
        environment = {**os.environ, **env, "GITHUB_OUTPUT": str(output_file), "COLUMNS": "100", "NO_COLOR": "1"}
        environment.pop("GRADCHECK_FORMAT", None)
        result = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=300)
        ran[name] = result
        if step["shell"] == "python":
            assert result.returncode == 0, f"{name}: {result.stderr}"
        if "id" in step:
            lines = output_file.read_text(encoding="utf-8").splitlines()
            outputs[step["id"]] = dict(line.split("=", 1) for line in lines if line)
    return {"ran": ran, "outputs": outputs, "exit": result.returncode}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A repository holding docs/ci.md's model (a vanishing MLP) and a gradcheck.yaml listing it."""
    model = next(
        block for block in re.findall(r"^```python\n(.*?)^```", CI_DOC.read_text(encoding="utf-8"), re.M | re.S)
    )
    assert model.startswith("# models/model.py")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.py").write_text(model, encoding="utf-8")
    (tmp_path / "gradcheck.yaml").write_text("targets:\n  - models/model.py\n", encoding="utf-8")
    (tmp_path / "gradcheck.sarif").write_text("left from before\n", encoding="utf-8")
    return tmp_path


@pytest.mark.slow
def test_the_action_annotates_uploads_sarif_and_fails_on_the_configured_targets(project: Path):
    run = run_action(project)
    gate = run["ran"]["Scan (annotations on the model files)"]
    assert gate.stdout.startswith("::error file=models/model.py,line=6,title=gradcheck vanishing_gradient::"), gate
    assert run["outputs"]["scan"] == {"exit-code": "1"}
    assert run["outputs"]["sarif"] == {"written": "true"}
    assert '"version": "2.1.0"' in (project / "gradcheck.sarif").read_text(encoding="utf-8")
    upload = run["ran"]["Upload the SARIF log to code scanning"]
    assert upload == {"sarif_file": "gradcheck.sarif", "category": "gradcheck"}
    assert run["exit"] == 1


@pytest.mark.slow
def test_the_action_passes_with_fail_on_never_and_scans_once_without_sarif(project: Path):
    run = run_action(project, targets="models/model.py", sarif="false", **{"fail-on": "never", "args": "--passes 1"})
    assert run["outputs"]["scan"] == {"exit-code": "0"}
    assert "Scan (SARIF log)" not in run["ran"] and "Upload the SARIF log to code scanning" not in run["ran"]
    assert run["exit"] == 0


@pytest.mark.slow
def test_a_target_that_cannot_be_scanned_fails_the_job_with_2_and_uploads_nothing(project: Path):
    run = run_action(project, targets="'models/no such model.py'")
    assert run["outputs"]["scan"] == {"exit-code": "2"}
    assert "no such model.py" in run["ran"]["Scan (annotations on the model files)"].stderr
    assert run["outputs"]["sarif"] == {"written": "false"}  # and the stale log was removed, not uploaded
    assert "Upload the SARIF log to code scanning" not in run["ran"]
    assert run["exit"] == 2
