"""The hostile corpus (issue 21), end to end through the CLI: one case per class of hostile input. Every case
asserts the exit code, one error line on stderr (none when it passes), no traceback, stdout a JSON document
(or empty) with --format json, and that nothing was created or changed outside what the case asked for.

The cases that need a real worker process (os._exit, segfaults, hangs, memory, prints, signals) are in
tests/test_isolation.py; the unit-level cases of each area in tests/test_hostile_*.py.
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.measure.torch_compat import EXPORT_ARCHIVE

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
import torch
from torch import nn

def build_model():
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

def example_inputs():
    return torch.randn(4, 8)
"""


def forward_model(forward: str, top: str = "", init: str = "") -> str:
    return textwrap.dedent(f"""
import sys
import torch
from torch import nn
{top}

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        {init or "self.calls = 0"}

    def forward(self, x):
        {forward}

def build_model():
    return Net()

def example_inputs():
    return torch.randn(4, 8)
""")


HOSTILE_NAMES = textwrap.dedent("""
import torch
from torch import nn

def build_model():
    model = nn.Sequential()
    model.add_module("first\\n::error file=x::pwned", nn.Linear(8, 8))
    model.add_module("\\x1b[2J" + "x" * 3000, nn.Linear(8, 2))
    return model

def example_inputs():
    return torch.randn(4, 8)
""")

BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["passes: *i", "unknown-key: 1"]
)


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def traced_mlp(folder: Path) -> None:
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    torch.jit.trace(model, torch.randn(2, 8)).save(str(folder / "traced.pt"))


def traced_cnn(folder: Path) -> None:
    """Its input size cannot be read from its weights (the Linear after Flatten fixes it at 8x8)."""
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    torch.jit.trace(model, torch.randn(2, 3, 8, 8)).save(str(folder / "traced.pt"))


def crafted_export(folder: Path) -> None:
    from tests.hostile.archives import craft_sample_inputs

    if not EXPORT_ARCHIVE.available():  # crafted in torch 2.13's layout, which older torch does not write
        pytest.skip(EXPORT_ARCHIVE.missing())

    craft_sample_inputs(folder, folder / "PWNED", name="evil.pt2")


def truncated_export(folder: Path) -> None:
    from tests.hostile.archives import save_program

    save_program(folder / "whole.pt2")
    data = (folder / "whole.pt2").read_bytes()
    (folder / "cut.pt2").write_bytes(data[: len(data) // 2])
    (folder / "whole.pt2").unlink()


def fifo(folder: Path) -> None:
    os.mkfifo(folder / "pipe.py")


def baseline_with_nan(folder: Path) -> None:
    runner = CliRunner()
    (folder / "good.py").write_text(GOOD)
    result = runner.invoke(app, ["scan", str(folder / "good.py"), "--save-baseline", str(folder / "base.json")])
    assert result.exit_code == 0, result.output
    text = (folder / "base.json").read_text()
    document = json.loads(text)
    entry = next(iter(document["targets"].values())) if "targets" in document else document
    _first_number_to_nan(entry)
    (folder / "base.json").write_text(json.dumps(document))


def _first_number_to_nan(node) -> bool:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, float) and value > 0:
            node[key] = float("nan")
            return True
        if _first_number_to_nan(value):
            return True
    return False


@dataclass
class Case:
    args: list[str]
    exit_code: int
    fragment: str = ""  # in the error line
    files: dict[str, str] = field(default_factory=dict)  # relative path -> content
    setup: Callable[[Path], None] | None = None
    cwd: str = "."  # relative to the case's folder
    writes: tuple[str, ...] = ()  # paths the case asks gradcheck to write
    json: bool = True  # add --format json and check stdout


CASES = {
    # 1. user code that exits must never pass
    "sys.exit at import": Case(["scan", "m.py"], 2, "while being imported", {"m.py": "import sys\nsys.exit(0)\n"}),
    "sys.exit in the factory": Case(
        ["scan", "m.py"], 2, "model's construction", {"m.py": "import sys\ndef build_model():\n    sys.exit(0)\n"}
    ),
    "sys.exit in forward": Case(["scan", "m.py"], 2, "forward pass", {"m.py": forward_model("sys.exit(0)")}),
    "exit() in example_inputs": Case(
        ["scan", "m.py"], 2, "inputs", {"m.py": GOOD.replace("    return torch.randn(4, 8)", "    exit(0)")}
    ),
    # 2. archives that would run code when loaded
    "crafted torch.export archive": Case(["scan", "evil.pt2"], 2, "--trust-pickle", setup=crafted_export),
    "truncated torch.export archive": Case(["scan", "cut.pt2"], 2, "cut.pt2", setup=truncated_export),
    # 3. trust-pickle only from the command line or --config
    "trust-pickle from a found config": Case(
        ["scan", "good.py"],
        2,
        "trust-pickle",
        {"gradcheck.yaml": "trust-pickle: true\n", "sub/good.py": GOOD},
        cwd="sub",
    ),
    # 4. YAML aliases
    "alias bomb in the config": Case(
        ["scan", "good.py"], 2, "alias", {"gradcheck.yaml": BILLION_LAUGHS, "good.py": GOOD}
    ),
    # 5. special files as outputs
    "--output through a link to /dev/null": Case(
        ["scan", "good.py", "--output", "null-link"],
        0,
        files={"good.py": GOOD},
        setup=lambda d: os.symlink("/dev/null", d / "null-link"),
    ),
    # 6. input that used to end in a traceback
    "latin-1 without a coding line": Case(["scan", "m.py"], 2, "UTF-8", {"m.py": 'NAME = "caf\xe9"\n' + GOOD}),
    "latin-1 with a coding line": Case(
        ["scan", "m.py"], 0, files={"m.py": "# -*- coding: latin-1 -*-\n# caf\xe9\n" + GOOD}
    ),
    "an input shape too large": Case(
        ["scan", "good.py", "--input-shape", "100000000000,16"], 2, "--input-shape", {"good.py": GOOD}
    ),
    "a seed past 64 bits": Case(["scan", "good.py", "--seed", "99999999999999999999"], 2, "", {"good.py": GOOD}),
    "a vocabulary past 2**31": Case(
        ["scan", "good.py", "--vocab-size", "99999999999999999999"], 2, "", {"good.py": GOOD}
    ),
    "a seed past 64 bits in the config": Case(
        ["scan", "good.py"], 2, "seed", {"good.py": GOOD, "gradcheck.yaml": "seed: 99999999999999999999\n"}
    ),
    "an empty --output": Case(["scan", "good.py", "--output", ""], 2, "--output", {"good.py": GOOD}),
    "a deeply nested baseline": Case(
        ["scan", "good.py", "--baseline", "base.json"],
        2,
        "base.json",
        {"good.py": GOOD, "base.json": nested_json(100_000)},
    ),
    "a baseline holding NaN": Case(
        ["scan", "good.py", "--baseline", "base.json"], 2, "base.json", setup=baseline_with_nan
    ),
    "a deeper demo than allowed": Case(["demo", "--depth", "100001"], 2),
    "a traced TorchScript file": Case(["scan", "traced.pt"], 0, setup=traced_mlp),
    "a traced TorchScript file of fixed input size": Case(["scan", "traced.pt"], 2, "--input-shape", setup=traced_cnn),
    # 9. inputs that used to hang or run for ever
    "passes past any use": Case(["scan", "good.py", "--passes", "99999999999999999999999"], 2, "", {"good.py": GOOD}),
    "--config /dev/zero": Case(["scan", "good.py", "--config", "/dev/zero"], 2, "/dev/zero", {"good.py": GOOD}),
    "a FIFO as the model": Case(["scan", "pipe.py"], 2, "pipe.py", setup=fifo),
    # 11. layer names that would steer a terminal or a CI log (checked below for every line)
    "hostile layer names": Case(["scan", "names.py"], 0, files={"names.py": HOSTILE_NAMES}, json=False),
    "hostile layer names, github": Case(
        ["scan", "names.py", "--format", "github"], 0, files={"names.py": HOSTILE_NAMES}, json=False
    ),
    "hostile layer names, markdown": Case(
        ["scan", "names.py", "--format", "markdown"], 0, files={"names.py": HOSTILE_NAMES}, json=False
    ),
    # 13. messages that pointed the wrong way
    "an empty name after the colon": Case(["scan", "good.py:"], 2, "empty", {"good.py": GOOD}),
    "an upper-case suffix": Case(["scan", "MODEL.PY"], 0, files={"MODEL.PY": GOOD}),
    "a negative seed": Case(["scan", "good.py", "--seed", "-1"], 2, "", {"good.py": GOOD}),
    "an infinite learning rate": Case(["scan", "good.py", "--lr", "inf"], 2, "--lr", {"good.py": GOOD}),
    "a model without parameters": Case(
        ["scan", "m.py"], 2, "no parameters", {"m.py": "import torch\nfrom torch import nn\nmodel = nn.ReLU()\n"}
    ),
    "a forward that detaches its output": Case(
        ["scan", "m.py"], 2, "detach", {"m.py": forward_model("return self.net(x).detach()")}
    ),
    "a forward that fails on its second call": Case(
        ["scan", "m.py"],
        2,
        "pass 2",
        {
            "m.py": forward_model(
                "self.calls += 1\n        assert self.calls == 1, 'called twice'\n        return self.net(x)"
            )
        },
    ),
}


def _tree(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder`` with what would show a change (kind, size, time; a link's target)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        target = os.readlink(path) if path.is_symlink() else None
        found[str(path.relative_to(folder))] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns, target)
    return found


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(name, tmp_path, monkeypatch):
    case = CASES[name]
    for relative, content in case.files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(content, encoding="latin-1" if "\xe9" in content else "utf-8")
    if case.setup is not None:
        case.setup(tmp_path)
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path / case.cwd)
    args = [*case.args, *(["--format", "json"] if case.json else [])]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "100", "NO_COLOR": "1"})

    assert result.exit_code == case.exit_code, result.output
    assert "Traceback" not in result.output
    # gradcheck's one line, or Typer's own box for a value outside an option's declared range
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:") or "Invalid value" in line]
    assert len(errors) == (1 if case.exit_code == 2 else 0), result.stderr
    if case.fragment:
        assert case.fragment in errors[0], errors[0]
        assert len(errors[0]) < 600, errors[0]  # a sentence, not a pasted traceback
    if case.json:
        if case.exit_code == 2 or "--output" in args:
            assert result.stdout == ""
        else:
            json.loads(result.stdout)
    github = "github" in args
    for line in result.output.splitlines():  # nothing the model named can steer a terminal or a CI log
        assert "\x1b" not in line
        assert github or not line.lstrip().startswith("::"), line
    if github:  # the format's own workflow commands, and its summary lines, and nothing else
        assert all(
            line.startswith(("::error", "::warning", "::notice", "gradcheck:")) for line in result.stdout.splitlines()
        )
    after = _tree(tmp_path)
    changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
    assert changed <= set(case.writes), f"changed or created: {sorted(changed)}"
    assert not (tmp_path / "PWNED").exists()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
