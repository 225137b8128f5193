"""`gradcheck scan`: finding the model in a file, a module or a saved archive; several targets; bad inputs.

Every model here is tiny (a few Linear layers, width <= 16) and written to ``tmp_path``, so each test
runs in well under a second. The CLI runs in-process with CliRunner; the loader and ``scan_target`` are
also called directly where a test compares ``sys.path`` / ``sys.modules`` before and after.
"""

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.options import ScanOptions
from gradcheck_cli.load.discovery import FACTORY_NAMES
from gradcheck_cli.load.loading import load_target
from gradcheck_cli.measure.torch_compat import EXPORT_ARCHIVE
from gradcheck_cli.scan.scan import scan_target

HEADER = "import torch\nfrom torch import nn\n\n"
SMALL = "nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))"  # 212 parameters, healthy
# 20 sigmoid layers at PyTorch's default init: the gradient at the input end is ~10^-15 of the output's.
VANISHING = (
    HEADER
    + "layers = []\n"
    + "for _ in range(20):\n"
    + "    layers += [nn.Linear(16, 16), nn.Sigmoid()]\n"
    + "model = nn.Sequential(*layers, nn.Linear(16, 4))\n"
)


@pytest.fixture
def runner():
    return CliRunner()


def run(runner, args):
    return runner.invoke(app, args, env={"COLUMNS": "100", "NO_COLOR": "1"})


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def scan_json(runner, args):
    """Run a scan expected to succeed with exit 0 and return the JSON document."""
    result = run(runner, ["scan", *args, "--format", "json", "--passes", "1"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def assert_input_error(result, *fragments):
    """Exit 2, one clean message on stderr naming the problem, nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"


def small_model(out_features: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, out_features))


@pytest.fixture
def restores_sys_path():
    """Fails the test if it leaves sys.path changed (the loader must restore it even on errors)."""
    before = list(sys.path)
    yield
    assert sys.path == before


# --- 1. Conventions for finding the model in a .py file -----------------------------------------------


@pytest.mark.parametrize("factory", FACTORY_NAMES)
def test_each_factory_name_is_found_and_reported(runner, tmp_path, monkeypatch, factory):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + f"def {factory}():\n    return {SMALL}\n")
    document = scan_json(runner, ["model.py"])
    assert document["context"]["model"] == f"{factory}() in model.py"
    assert document["model"]["parameters"] == 212


def test_factory_names_are_the_documented_five():
    assert FACTORY_NAMES == ("build_model", "get_model", "create_model", "make_model", "model_fn")


@pytest.mark.parametrize("name", ["model", "net"])
def test_module_level_instance_is_found_by_name(runner, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + f"{name} = {SMALL}\n")
    document = scan_json(runner, ["model.py"])
    assert document["context"]["model"] == f"the nn.Module instance `{name}` in model.py"


# Three candidates of different sizes, so the parameter count shows which one was really built.
FACTORY_SOURCE = "def build_model():\n    return nn.Sequential(nn.Linear(8, 2))\n"  # 18 parameters
INSTANCE_SOURCE = "model = nn.Sequential(nn.Linear(8, 3))\n"  # 27 parameters
CLASS_SOURCE = """
class Net(nn.Module):
    def __init__(self, width=5):
        super().__init__()
        self.fc = nn.Linear(8, width)  # 45 parameters

    def forward(self, x):
        return self.fc(x)
"""


@pytest.mark.parametrize(
    ("parts", "description", "parameters"),
    [
        ((FACTORY_SOURCE, INSTANCE_SOURCE, CLASS_SOURCE), "build_model() in model.py", 18),
        ((INSTANCE_SOURCE, CLASS_SOURCE), "the nn.Module instance `model` in model.py", 27),
        ((CLASS_SOURCE,), "Net() (the nn.Module class in model.py, built with no arguments)", 45),
    ],
    ids=["factory-beats-instance-and-class", "instance-beats-class", "class-alone"],
)
def test_order_factory_then_instance_then_buildable_class(
    runner, tmp_path, monkeypatch, parts, description, parameters
):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + "\n".join(parts))
    document = scan_json(runner, ["model.py"])
    assert document["context"]["model"] == description
    assert document["model"]["parameters"] == parameters


def test_text_report_says_how_the_model_was_found(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + f"def build_model():\n    return {SMALL}\n")
    result = run(runner, ["scan", "model.py", "--passes", "1"])
    assert result.exit_code == 0, result.stderr
    assert "model: build_model() in model.py" in result.stdout


def test_report_context_has_a_model_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + f"net = {SMALL}\n")
    report = scan_target("model.py", ScanOptions(passes=1))
    assert ("model", "the nn.Module instance `net` in model.py") in report.context
    assert [what for what, _ in report.context] == ["model", "inputs", "output", "loss"]


def test_class_that_needs_arguments_is_not_a_candidate(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = HEADER + textwrap.dedent(
        """
        class Wide(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.fc = nn.Linear(8, width)

            def forward(self, x):
                return self.fc(x)

        class Small(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(8, 4)

            def forward(self, x):
                return self.fc(x)
        """
    )
    write(tmp_path, "model.py", source)
    document = scan_json(runner, ["model.py"])
    assert document["context"]["model"].startswith("Small() (the nn.Module class")


def test_only_a_class_that_needs_arguments_is_no_model(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = HEADER + textwrap.dedent(
        """
        class Wide(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.fc = nn.Linear(8, width)
        """
    )
    write(tmp_path, "model.py", source)
    assert_input_error(run(runner, ["scan", "model.py"]), "no model found in model.py", "--entry")


def test_activation_instance_is_not_taken_for_the_model(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = HEADER + "act = nn.ReLU()\n" + CLASS_SOURCE
    write(tmp_path, "model.py", source)
    document = scan_json(runner, ["model.py"])
    assert document["context"]["model"].startswith("Net() (the nn.Module class")


def test_instance_wrapped_by_another_is_not_the_model(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = HEADER + "encoder = nn.Linear(8, 16)\nclassifier = nn.Sequential(encoder, nn.ReLU(), nn.Linear(16, 4))\n"
    write(tmp_path, "model.py", source)
    document = scan_json(runner, ["model.py"])
    assert document["context"]["model"] == "the nn.Module instance `classifier` in model.py"


TWO_FACTORIES = (
    HEADER
    + "def build_model():\n    return nn.Sequential(nn.Linear(8, 2))\n\n"
    + "def get_model():\n    return nn.Sequential(nn.Linear(8, 3))\n"
)


def test_entry_option_picks_a_name(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", TWO_FACTORIES)
    document = scan_json(runner, ["model.py", "--entry", "get_model"])
    assert document["context"]["model"] == "get_model() in model.py"
    assert document["model"]["parameters"] == 27


def test_file_colon_name_picks_a_name(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", TWO_FACTORIES)
    document = scan_json(runner, ["model.py:get_model"])
    assert document["context"]["model"] == "get_model() in model.py"
    assert document["model"]["parameters"] == 27


def test_entry_can_name_a_class_or_an_instance(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + FACTORY_SOURCE + INSTANCE_SOURCE + CLASS_SOURCE)
    assert scan_json(runner, ["model.py:Net"])["model"]["parameters"] == 45
    assert scan_json(runner, ["model.py", "--entry", "model"])["model"]["parameters"] == 27


def test_entry_and_file_colon_name_agreeing_is_fine(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", TWO_FACTORIES)
    document = scan_json(runner, ["model.py:get_model", "--entry", "get_model"])
    assert document["context"]["model"] == "get_model() in model.py"


def test_entry_and_file_colon_name_disagreeing_is_an_error(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", TWO_FACTORIES)
    result = run(runner, ["scan", "model.py:get_model", "--entry", "build_model"])
    assert_input_error(result, "'get_model'", "'build_model'", "give only one")


def test_entry_that_does_not_exist_lists_the_candidates(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", TWO_FACTORIES)
    result = run(runner, ["scan", "model.py", "--entry", "build_big"])
    assert_input_error(result, "'build_big'", "build_model", "get_model")


def test_two_factories_are_ambiguous(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", TWO_FACTORIES)
    result = run(runner, ["scan", "model.py"])
    assert_input_error(result, "several candidate models", "build_model, get_model", "--entry", "model.py:NAME")


def test_two_buildable_classes_are_ambiguous(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = HEADER + CLASS_SOURCE + CLASS_SOURCE.replace("class Net", "class OtherNet")
    write(tmp_path, "model.py", source)
    result = run(runner, ["scan", "model.py"])
    assert_input_error(result, "several candidate models", "Net, OtherNet", "--entry")


def test_two_distinct_conventional_instances_are_ambiguous(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + f"model = {SMALL}\nnet = {SMALL}\n")
    assert_input_error(run(runner, ["scan", "model.py"]), "several candidate models", "model, net")


def test_the_same_instance_under_two_names_is_one_candidate(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + f"net = {SMALL}\nmodel = net\n")
    document = scan_json(runner, ["model.py"])
    assert document["context"]["model"] == "the nn.Module instance `model` in model.py"


# --- 2. package.module:factory targets and sys.path / sys.modules --------------------------------------


def make_package(root: Path, package: str = "mypkg", namespace: bool = False) -> Path:
    if not namespace:
        write(root, f"{package}/__init__.py", "")
    write(root, f"{package}/blocks.py", HEADER + f"def make():\n    return {SMALL}\n")
    write(root, f"{package}/models.py", "from .blocks import make\n\ndef build_model():\n    return make()\n")
    return root


def leaked_modules(before: set, root: Path, prefix: str) -> set:
    """Modules imported since ``before`` that come from ``root`` or are named like the user's code."""
    leaked = set()
    for name in set(sys.modules) - before:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if name.split(".")[0] == prefix or name.startswith("_gradcheck_model") or origin.startswith(str(root)):
            leaked.add(name)
    return leaked


def test_package_target_importable_from_the_working_directory(runner, tmp_path, monkeypatch):
    make_package(tmp_path)
    monkeypatch.chdir(tmp_path)
    document = scan_json(runner, ["mypkg.models:build_model"])
    assert document["context"]["model"] == "build_model() in mypkg.models"
    assert document["model"]["parameters"] == 212


def test_package_target_via_path_option(runner, tmp_path, monkeypatch):
    project = make_package(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    document = scan_json(runner, ["mypkg.models:build_model", "--path", str(project)])
    assert document["context"]["model"] == "build_model() in mypkg.models"


def test_package_target_not_on_the_path_says_to_use_path(runner, tmp_path, monkeypatch):
    make_package(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run(runner, ["scan", "mypkg.models:build_model"])
    assert_input_error(result, "mypkg", "--path")


def test_package_target_restores_sys_path_and_sys_modules(tmp_path, monkeypatch, restores_sys_path):
    project = make_package(tmp_path / "project")
    monkeypatch.chdir(tmp_path)
    path_before, modules_before = list(sys.path), set(sys.modules)
    loaded = load_target("mypkg.models:build_model", paths=[str(project)])
    assert isinstance(loaded.model, nn.Module)
    assert sys.path == path_before
    assert leaked_modules(modules_before, project, "mypkg") == set()


def test_scan_target_restores_sys_path_and_sys_modules(tmp_path, monkeypatch, restores_sys_path):
    make_package(tmp_path)
    monkeypatch.chdir(tmp_path)
    path_before, modules_before = list(sys.path), set(sys.modules)
    report = scan_target("mypkg.models:build_model", ScanOptions(passes=1))
    assert report.context[0] == ("model", "build_model() in mypkg.models")
    assert sys.path == path_before
    assert leaked_modules(modules_before, tmp_path, "mypkg") == set()


def test_namespace_package_target_restores_sys_modules(tmp_path, monkeypatch, restores_sys_path):
    project = make_package(tmp_path / "project", package="nspkg", namespace=True)
    monkeypatch.chdir(tmp_path)
    modules_before = set(sys.modules)
    try:
        load_target("nspkg.models:build_model", paths=[str(project)])
        assert leaked_modules(modules_before, project, "nspkg") == set()
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "nspkg"]:
            del sys.modules[name]  # do not leak the namespace package into later tests


def test_model_file_imports_a_sibling_module(runner, tmp_path, monkeypatch, restores_sys_path):
    write(tmp_path, "project/gc_sibling_blocks.py", HEADER + f"def make():\n    return {SMALL}\n")
    write(tmp_path, "project/model.py", "from gc_sibling_blocks import make\n\nmodel = make()\n")
    monkeypatch.chdir(tmp_path)  # the parent folder, not the model's: only the file's own folder helps
    modules_before = set(sys.modules)
    document = scan_json(runner, ["project/model.py"])
    assert document["context"]["model"] == "the nn.Module instance `model` in project/model.py"
    assert "gc_sibling_blocks" not in sys.modules
    assert leaked_modules(modules_before, tmp_path / "project", "gc_sibling_blocks") == set()


def test_factory_that_imports_a_sibling_when_called(runner, tmp_path, monkeypatch):
    write(tmp_path, "project/gc_lazy_blocks.py", HEADER + f"def make():\n    return {SMALL}\n")
    write(tmp_path, "project/model.py", "def build_model():\n    from gc_lazy_blocks import make\n    return make()\n")
    monkeypatch.chdir(tmp_path)
    document = scan_json(runner, ["project/model.py"])
    assert document["context"]["model"] == "build_model() in project/model.py"


def test_two_files_with_same_named_siblings_each_get_their_own(runner, tmp_path, monkeypatch):
    # The sibling module is dropped after each target, so the second file does not get the first's.
    for folder, width in (("a", 3), ("b", 5)):
        write(tmp_path, f"{folder}/gc_twin_blocks.py", HEADER + f"WIDTH = {width}\n")
        write(
            tmp_path,
            f"{folder}/model.py",
            HEADER + "from gc_twin_blocks import WIDTH\n\nmodel = nn.Sequential(nn.Linear(8, WIDTH))\n",
        )
    monkeypatch.chdir(tmp_path)
    result = run(runner, ["scan", "a/model.py", "b/model.py", "--format", "json", "--passes", "1"])
    assert result.exit_code == 0, result.stderr
    reports = json.loads(result.stdout)["reports"]
    assert [r["model"]["parameters"] for r in reports] == [8 * 3 + 3, 8 * 5 + 5]


# --- 3. Saved models ----------------------------------------------------------------------------------


TORCHSCRIPT_HOOKS = (
    "probe_model expects NotImplementedError from register_forward_hook on a TorchScript module, but torch "
    "raises RuntimeError('register_forward_hook is not supported on ScriptModules'): the scan crashes with a "
    "traceback and exit code 1"
)


def test_torchscript_archive_scans(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.jit.script(small_model()).save(str(tmp_path / "model.pt"))
    result = run(runner, ["scan", "model.pt", "--format", "json", "--passes", "1"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["context"]["model"] == "the TorchScript module in model.pt"


def test_torchscript_report_is_read_from_weight_gradient_norms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    layers = []
    for _ in range(20):
        layers += [nn.Linear(16, 16), nn.Sigmoid()]
    torch.jit.script(nn.Sequential(*layers, nn.Linear(16, 4))).save(str(tmp_path / "deep.pt"))
    report = scan_target("deep.pt", ScanOptions(passes=1))
    assert report.result.hooked is False
    assert report.context[0] == ("model", "the TorchScript module in deep.pt")
    depth = [f for f in report.diagnosis.findings if f.kind.value == "vanishing_gradient"]
    assert depth, report.diagnosis.findings
    assert depth[0].evidence["signal"] == "weight_grad_norm"
    assert "weight-gradient norms" in depth[0].message


def save_export(path: Path) -> None:
    model = small_model()
    torch.export.save(torch.export.export(model.eval(), (torch.randn(2, 8),)), str(path))


@pytest.mark.skipif(not EXPORT_ARCHIVE.available(), reason=EXPORT_ARCHIVE.missing())
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torch_export_program_scans_with_its_input_shape(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_export(tmp_path / "m.pt2")
    document = scan_json(runner, ["m.pt2", "--input-shape", "2,8"])
    assert document["context"]["model"] == "the torch.export program in m.pt2"
    assert document["model"]["parameters"] == 212


@pytest.mark.skipif(not EXPORT_ARCHIVE.available(), reason=EXPORT_ARCHIVE.missing())
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torch_export_program_scans_without_options(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_export(tmp_path / "m.pt2")
    document = scan_json(runner, ["m.pt2"])
    assert document["context"]["model"] == "the torch.export program in m.pt2"


def test_pickled_module_is_refused_without_trust_pickle(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(small_model(), tmp_path / "full.pt")
    result = run(runner, ["scan", "full.pt"])
    assert_input_error(result, "full.pt", "pickled", "--trust-pickle", "arbitrary code")


def test_pickled_module_scans_with_trust_pickle(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(small_model(), tmp_path / "full.pt")
    document = scan_json(runner, ["full.pt", "--trust-pickle"])
    assert document["context"]["model"] == "the pickled module in full.pt"
    assert document["model"]["parameters"] == 212


def test_state_dict_is_not_a_model(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(small_model().state_dict(), tmp_path / "weights.pt")
    result = run(runner, ["scan", "weights.pt"])
    assert_input_error(result, "weights.pt", "state_dict", "not a model", "build_model()")


def test_state_dict_is_not_a_model_even_with_trust_pickle(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(small_model().state_dict(), tmp_path / "weights.pth")
    assert_input_error(run(runner, ["scan", "weights.pth", "--trust-pickle"]), "state_dict", "not a model")


def test_saved_model_has_no_names_to_pick(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(small_model().state_dict(), tmp_path / "weights.pt")
    assert_input_error(run(runner, ["scan", "weights.pt", "--entry", "build_model"]), "no names to pick")


# --- 4. Several targets: one report each, one exit code -----------------------------------------------


@pytest.fixture
def healthy_and_vanishing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "healthy.py", HEADER + f"model = {SMALL}\n")
    write(tmp_path, "vanishing.py", VANISHING)
    return tmp_path


def test_healthy_and_vanishing_give_two_reports_and_exit_1(runner, healthy_and_vanishing):
    result = run(runner, ["scan", "healthy.py", "vanishing.py", "--passes", "1"])
    assert result.exit_code == 1, result.stderr
    assert result.stdout.count("Verdict:") == 2
    assert "Verdict: HEALTHY" in result.stdout and "Verdict: VANISHING" in result.stdout


def test_healthy_alone_exits_0(runner, healthy_and_vanishing):
    assert run(runner, ["scan", "healthy.py", "--passes", "1"]).exit_code == 0


def test_json_with_several_targets_is_one_document_with_a_worst_verdict(runner, healthy_and_vanishing):
    result = run(runner, ["scan", "healthy.py", "vanishing.py", "--format", "json", "--passes", "1"])
    assert result.exit_code == 1, result.stderr
    document = json.loads(result.stdout)  # one document, nothing else on stdout
    assert document["schema_version"] == "2.0"
    assert document["verdict"] == "vanishing"
    assert [r["verdict"] for r in document["reports"]] == ["healthy", "vanishing"]
    assert [r["context"]["model"] for r in document["reports"]] == [
        "the nn.Module instance `model` in healthy.py",
        "the nn.Module instance `model` in vanishing.py",
    ]


def test_a_bad_target_among_good_ones_exits_2_and_still_prints_the_good_reports(runner, healthy_and_vanishing):
    result = run(runner, ["scan", "healthy.py", "missing.py", "vanishing.py", "--passes", "1"])
    assert result.exit_code == 2
    assert result.stdout.count("Verdict:") == 2
    assert "error: missing.py: file not found" in result.stderr  # prefixed with the target
    assert "Traceback" not in result.stderr


def test_json_shape_with_several_targets_does_not_depend_on_failures(runner, healthy_and_vanishing):
    result = run(runner, ["scan", "healthy.py", "missing.py", "--format", "json", "--passes", "1"])
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert [r["verdict"] for r in document["reports"]] == ["healthy"]


# --- 5. Bad inputs: exit 2, one message naming the problem, no traceback, nothing on stdout ------------


def test_file_not_found(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_input_error(run(runner, ["scan", "missing.py"]), "missing.py: file not found", str(tmp_path))


def test_saved_model_not_found(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_input_error(run(runner, ["scan", "runs/missing.pt"]), "runs/missing.pt: file not found")


def test_not_a_python_file(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "notes.txt", "build_model = 1\n")
    assert_input_error(run(runner, ["scan", "notes.txt"]), "notes.txt is not a Python file or a saved model")


def test_a_folder(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert_input_error(run(runner, ["scan", "models"]), "models is a folder", ".py")


def test_syntax_error_names_file_and_line(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", "from torch import nn\n\ndef build_model(:\n    return nn.Linear(8, 4)\n")
    assert_input_error(run(runner, ["scan", "model.py"]), "model.py:3", "syntax error")


def test_import_error_names_the_missing_module(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", "import torch\nimport gc_no_such_module_xyz\n\nmodel = torch.nn.Linear(8, 4)\n")
    assert_input_error(run(runner, ["scan", "model.py"]), "gc_no_such_module_xyz", "model.py:2", "--path")


def test_error_while_importing_the_file_names_the_line(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", "import torch\n\nWIDTH = 16 // 0\n")
    assert_input_error(run(runner, ["scan", "model.py"]), "model.py:3", "ZeroDivisionError")


def test_no_model_found(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + "def helper():\n    return 1\n")
    result = run(runner, ["scan", "model.py"])
    assert_input_error(result, "no model found in model.py", "build_model()", "--entry NAME")


def test_several_candidates(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", TWO_FACTORIES)
    assert_input_error(run(runner, ["scan", "model.py"]), "build_model, get_model", "--entry NAME")


def test_factory_raises(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + "def build_model():\n    raise ValueError('width must be even')\n")
    result = run(runner, ["scan", "model.py"])
    assert_input_error(result, "build_model() in model.py raised ValueError: width must be even")


def test_factory_returns_something_else(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + "def build_model():\n    return {'fc': nn.Linear(8, 4)}\n")
    assert_input_error(run(runner, ["scan", "model.py"]), "returned a dict, not an nn.Module")


MISMATCHED = """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(16, 8)
        self.second = nn.Linear(4, 2)  # expects 4 features, gets 8

    def forward(self, x):
        return self.second(self.first(x))
"""


def test_forward_fails_names_the_layer_and_the_inputs_tried(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + MISMATCHED)
    result = run(runner, ["scan", "model.py"])
    assert_input_error(result, "forward pass", "second (Linear)", "(8, 16)", "--input-shape")


def test_forward_fails_with_given_shape_still_mentions_input_shape(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + f"model = {SMALL}\n")
    result = run(runner, ["scan", "model.py", "--input-shape", "4,5"])
    assert_input_error(result, "forward pass", "0 (Linear)", "(4, 5)", "--input-shape")


def test_output_without_a_floating_point_tensor(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = HEADER + textwrap.dedent(
        """
        class Classifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(8, 4)

            def forward(self, x):
                return self.fc(x).argmax(dim=-1)
        """
    )
    write(tmp_path, "model.py", source)
    assert_input_error(run(runner, ["scan", "model.py"]), "no floating-point tensor", "loss_fn(output, inputs)")


def test_no_parameter_requires_grad(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + f"model = {SMALL}.requires_grad_(False)\n")
    assert_input_error(run(runner, ["scan", "model.py"]), "requires grad", "requires_grad_(True)")


def test_model_without_parameters_has_nothing_to_check(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + "act = nn.ReLU()\n")
    assert_input_error(run(runner, ["scan", "model.py", "--entry", "act"]), "has no parameters")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_model_on_cuda_without_a_gpu(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + f"def build_model():\n    return {SMALL}.to('cuda')\n")
    assert_input_error(run(runner, ["scan", "model.py"]), "build_model() in model.py raised", "GPU", "CPU")


def test_model_on_the_meta_device(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = HEADER + f"def build_model():\n    with torch.device('meta'):\n        return {SMALL}\n"
    write(tmp_path, "model.py", source)
    assert_input_error(run(runner, ["scan", "model.py"]), "meta device", "CPU")


def test_training_checkpoint_dict_is_not_a_model(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"epoch": 3, "state_dict": small_model().state_dict()}, tmp_path / "last.ckpt")
    assert_input_error(
        run(runner, ["scan", "last.ckpt"]), "last.ckpt is a training checkpoint (a dict with a state_dict)"
    )


def test_truncated_checkpoint_is_unreadable(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(small_model().state_dict(), tmp_path / "whole.pt")
    (tmp_path / "broken.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:100])
    assert_input_error(run(runner, ["scan", "broken.pt"]), "broken.pt is not a saved model gradcheck can read")


def test_file_that_is_not_a_checkpoint_is_not_called_a_pickle(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.pt").write_bytes(b"not a torch file\n")
    result = run(runner, ["scan", "notes.pt"])
    assert_input_error(result, "notes.pt is not a saved model gradcheck can read")
    assert "--trust-pickle" not in result.stderr


def test_bad_input_shape_option(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + f"model = {SMALL}\n")
    assert_input_error(run(runner, ["scan", "model.py", "--input-shape", "8,zero"]), "--input-shape", "not a shape")


@pytest.mark.parametrize(
    "source",
    [
        "def build_model(:\n    pass\n",  # syntax error
        "import gc_no_such_module_xyz\n",  # import error
        "raise RuntimeError('boom')\n",  # error while importing
        HEADER + "def build_model():\n    raise ValueError('no')\n",  # factory raises
        HEADER + "def helper():\n    pass\n",  # no model
    ],
    ids=["syntax", "import", "raises-on-import", "factory-raises", "no-model"],
)
def test_sys_path_and_modules_unchanged_after_an_error(tmp_path, monkeypatch, source):
    write(tmp_path, "project/gc_err_sibling.py", "VALUE = 1\n")
    write(tmp_path, "project/model.py", "import gc_err_sibling\n" + source)
    monkeypatch.chdir(tmp_path)
    path_before, modules_before = list(sys.path), set(sys.modules)
    with pytest.raises(GradcheckError):
        load_target("project/model.py", paths=[str(tmp_path / "extra")])
    assert sys.path == path_before
    assert leaked_modules(modules_before, tmp_path / "project", "gc_err_sibling") == set()


def test_sys_path_unchanged_after_a_cli_error(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", "import gc_no_such_module_xyz\n")
    before = list(sys.path)
    assert run(runner, ["scan", "model.py", "--path", str(tmp_path)]).exit_code == 2
    assert sys.path == before
