"""The package's layout is its architecture (issue 24): each folder is one concern, torch is imported only in
the folders that measure or build models, folders import only the layers below them, and no file, class or
function grows past the size a reader can hold (docs/architecture.md says why the cut is where it is)."""

import ast
import subprocess
import sys

import pytest

from tests.test_import_graph import PACKAGE, import_graph

# Folder -> whether its modules may import torch. The torch-free ones are what the CLI, the judgement and the
# renderers need: `gradcheck --help`, a config check or a report from a saved JSON never pay for torch.
TORCH = {
    "common": False,
    "judge": False,
    "report": False,
    "render": False,
    "config": False,
    "cli": False,
    "measure": True,
    "load": True,
    "examine": True,
    "trials": True,
    "scan": True,
    "monitor": True,
    "integrations": True,
}
# Folder -> the folders it may import (anywhere in a module, function-local imports included): the layers in
# the order docs/architecture.md draws them. cli reaches measure, load and the rest only from the worker process.
MAY_IMPORT = {
    "common": set(),
    "measure": {"common"},
    "load": {"common", "measure"},
    "judge": {"common"},
    "report": {"common", "judge"},
    "render": {"common", "judge", "report", "monitor"},
    "examine": {"common", "measure", "judge", "report"},
    "trials": {"common", "measure", "judge", "report", "examine"},
    "scan": {"common", "measure", "load", "judge", "report", "render", "examine", "trials"},
    "monitor": {"common", "measure", "judge"},
    "integrations": {"common", "monitor"},
    "config": {"common", "judge"},
    "cli": {"common", "config", "judge", "report", "render", "monitor", "measure", "load", "trials", "scan"},
}
TOP_LEVEL = {"gradcheck_cli", "gradcheck_cli.__main__"}
MAX_FILE_LINES = 700
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 100


def folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in TORCH) else None


def modules() -> list[str]:
    return sorted(import_graph())


def test_every_module_lives_in_a_folder_of_one_concern():
    stray = [name for name in modules() if name not in TOP_LEVEL and folder(name) not in TORCH]
    assert not stray, f"modules outside the folders docs/architecture.md describes: {stray}"


def test_folders_import_only_the_layers_below_them():
    graph = import_graph()
    crossing = []
    for name, imported in graph.items():
        if name in TOP_LEVEL:
            continue
        home = folder(name)
        for other in imported:
            there = folder(other)
            if there is not None and there != home and there not in MAY_IMPORT[home]:
                crossing.append(f"{name} -> {other}")
    assert not crossing, "imports against the layering (tests/test_layout.py MAY_IMPORT):\n" + "\n".join(
        sorted(crossing)
    )


def test_torch_free_folders_have_no_module_level_torch_import():
    found = []
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if TORCH.get(folder(name) or "", True):
            continue
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n == "torch" or n.startswith("torch.") for n in names):
                found.append(f"{name}:{node.lineno}")
    assert not found, f"torch imported at module level in a torch-free folder: {found}"


def test_importing_every_torch_free_module_leaves_torch_unloaded():
    torch_free = [name for name in modules() if not TORCH.get(folder(name) or "", True)]
    code = (
        "import importlib, sys\n"
        f"for name in {torch_free!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'torch' not in sys.modules, f'importing {name} imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def _oversized() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(PACKAGE.parent)
        if len(text.splitlines()) > MAX_FILE_LINES:
            found.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if size > limit:
                    found.append(f"{where}:{node.lineno} {node.name}: {size} lines")
    return found


def test_no_file_class_or_function_past_its_size():
    found = _oversized()
    assert not found, (
        f"past {MAX_FILE_LINES} lines a file, {MAX_CLASS_LINES} a class, {MAX_FUNCTION_LINES} a function:\n"
        + "\n".join(found)
    )


@pytest.mark.parametrize("name", sorted(TORCH))
def test_docs_architecture_describes_every_folder(name):
    architecture = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    assert f"`{name}/`" in architecture, f"docs/architecture.md does not describe {name}/"
