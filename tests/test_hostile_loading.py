"""Hostile inputs on the loading path (issue 21): crafted archives, odd encodings, traced TorchScript,
special files, a model that exits, asks for input or would leave bytecode beside itself.

Each case asserts the GradcheckError subclass, a message of one line that says what to do, and that
nothing the file asked for happened (no marker file written, no __pycache__). Everything is written to
``tmp_path`` at test time and is tiny, so each test takes well under a second.
"""

import io
import os
import socket
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from gradcheck_cli.common import stages
from gradcheck_cli.common.errors import GradcheckError, UserCodeExit
from gradcheck_cli.common.options import ScanOptions
from gradcheck_cli.load.loading import load_target
from gradcheck_cli.measure.torch_compat import EXPORT_ARCHIVE
from gradcheck_cli.scan.checks import check
from gradcheck_cli.scan.scan import scan_target
from tests.hostile import archives

HEADER = "import sys\nimport torch\nfrom torch import nn\n\n"
SMALL = "nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))"
# Loading a torch.export archive needs torch 2.13 (torch_compat.EXPORT_ARCHIVE); on an older torch it is refused
# (test_export_archive_on_an_older_torch_says_which_torch_it_needs) and the tests of loading one skip.
needs_export_archive = pytest.mark.skipif(not EXPORT_ARCHIVE.available(), reason=EXPORT_ARCHIVE.missing())


def write(folder: Path, name: str, source: str | bytes) -> Path:
    path = folder / name
    if isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(textwrap.dedent(source))
    return path


def one_sentence(error: BaseException, *fragments: str) -> str:
    """The message is one line with no traceback, and names each fragment."""
    message = str(error)
    assert "\n" not in message, message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- 1. torch.export archives unpickle nothing without --trust-pickle ------------------------------------


@needs_export_archive
@pytest.mark.parametrize("craft", archives.RUNS_ON_LOAD, ids=lambda craft: craft.__name__)
def test_crafted_export_archive_runs_code_in_plain_torch(tmp_path, craft):
    """The premise of the refusals below: torch.export.load itself runs each payload."""
    marker = tmp_path / "marker"
    path = craft(tmp_path, marker)
    try:
        torch.export.load(io.BytesIO(path.read_bytes()))
    except Exception:  # noqa: S110 - torch may reject what the payload returned; the marker is what counts
        pass
    assert marker.exists()


@needs_export_archive
@pytest.mark.parametrize("craft", archives.RUNS_ON_LOAD, ids=lambda craft: craft.__name__)
def test_crafted_export_archive_is_refused_before_anything_runs(tmp_path, craft, capfd):
    marker = tmp_path / "marker"
    path = craft(tmp_path, marker)
    with pytest.raises(GradcheckError) as caught:
        load_target(str(path))
    one_sentence(caught.value, "evil.pt2", "torch.export archive", "--trust-pickle", "files you trust")
    assert not marker.exists()
    assert capfd.readouterr() == ("", "")


@needs_export_archive
@pytest.mark.parametrize("suffix", [".zip", ".pt", ".bin", ".pt2"])
def test_crafted_sample_inputs_are_refused_whatever_the_file_is_named(tmp_path, suffix):
    marker = tmp_path / "marker"
    path = archives.craft_sample_inputs(tmp_path, marker, name=f"evil{suffix}")
    with pytest.raises(GradcheckError) as caught:
        load_target(str(path))
    one_sentence(caught.value, f"evil{suffix}", "holds pickled Python objects", "--trust-pickle")
    assert not marker.exists()


@needs_export_archive
def test_pickled_sample_inputs_are_named_in_the_refusal(tmp_path):
    path = archives.craft_sample_inputs(tmp_path, tmp_path / "marker")
    with pytest.raises(GradcheckError) as caught:
        load_target(str(path))
    one_sentence(caught.value, "pickled Python objects (data/sample_inputs/model.pt)")


@needs_export_archive
def test_shape_expression_that_is_code_is_refused(tmp_path):
    path = archives.craft_shape_expression(tmp_path, tmp_path / "marker")
    with pytest.raises(GradcheckError) as caught:
        load_target(str(path))
    one_sentence(caught.value, "a shape expression that is not a formula", "--trust-pickle")


@needs_export_archive
def test_compiled_aotinductor_code_is_refused(tmp_path):
    path = archives.craft_compiled_code(tmp_path, tmp_path / "marker")
    with pytest.raises(GradcheckError) as caught:
        load_target(str(path))
    one_sentence(caught.value, "compiled AOTInductor code", "--trust-pickle")


@needs_export_archive
def test_graph_calling_a_python_function_is_refused_by_torchs_verifier(tmp_path):
    marker = tmp_path / "marker"
    path = archives.craft_call_target(tmp_path, marker)
    with pytest.raises(GradcheckError) as caught:
        load_target(str(path))
    one_sentence(caught.value, "not a readable torch.export program", "re-save it with torch.export.save")
    assert not marker.exists()


@needs_export_archive
def test_guard_code_in_an_archive_is_never_run(tmp_path):
    """ExportedProgram.module() execs guard code; the model gradcheck loads (unflatten) must not."""
    marker = tmp_path / "marker"
    loaded = load_target(str(archives.craft_guards(tmp_path, marker)))
    args, kwargs = loaded.saved_inputs
    loaded.model(*args, **kwargs)
    assert not marker.exists()


@needs_export_archive
def test_trust_pickle_loads_what_the_archive_holds(tmp_path):
    """Consent is honoured: the payload runs (torch then rejects what it returned)."""
    marker = tmp_path / "marker"
    path = archives.craft_sample_inputs(tmp_path, marker)
    with pytest.raises(GradcheckError) as caught:
        load_target(str(path), trust_pickle=True)
    one_sentence(caught.value, "not a readable torch.export program")
    assert marker.exists()


@needs_export_archive
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic-batch"])
@pytest.mark.parametrize("suffix", [".pt2", ".zip", ".pt"])
def test_genuine_export_archive_loads_without_trust_pickle(tmp_path, capfd, dynamic, suffix):
    path = archives.save_program(tmp_path / f"m{suffix}", dynamic=dynamic)
    capfd.readouterr()
    loaded = load_target(str(path))
    assert loaded.description == f"the torch.export program in {path}"
    args, _ = loaded.saved_inputs
    assert tuple(args[0].shape) == (4, 8)
    assert capfd.readouterr() == ("", "")  # no FutureWarning, no "must be a file ending in .pt2"


@needs_export_archive
def test_genuine_export_archive_with_buffers_scans_without_trust_pickle(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)).eval()
    path = archives.save_program(tmp_path / "bn.pt2", model=model, dynamic=True)
    report = scan_target(str(path), ScanOptions(passes=1))
    assert report.context[0] == ("model", f"the torch.export program in {path}")


@pytest.mark.parametrize(
    "expression",
    [
        "Symbol('s31', positive=True, integer=True)",
        "Max(Integer(1), Symbol('s0', positive=True))",
        "FloorDiv(Mul(Integer(2), Symbol('s0')), Integer(3))",
        "Float('1.5', precision=53)",
        "Piecewise((Integer(1), StrictGreaterThan(Symbol('s0'), Integer(2))), (Integer(0), true))",
        "s0 + 1",
    ],
)
def test_shape_formulas_torch_writes_are_accepted(expression):
    from gradcheck_cli.load.export_hazards import is_formula

    assert is_formula(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "exec('1')",
        "Symbol('s0').__class__",
        "Symbol('__import__(\"os\")')",
        "sympify('1')",  # a sympy function, not an expression class: it parses its argument again
        "Integer(1)[0]",
        "(lambda: 1)()",
        "Symbol(**{'name': 's0'})",
        "ImmutableMatrix(['exec(1)'])",
        "x" * 20_000,
    ],
    ids=lambda text: text[:30],
)
def test_shape_expressions_that_would_run_code_are_not_formulas(expression):
    from gradcheck_cli.load.export_hazards import is_formula

    assert not is_formula(expression)


# --- 4. torch's own output while loading is silenced ----------------------------------------------------


@needs_export_archive
def test_truncated_export_archive_prints_nothing_but_the_error(tmp_path, capfd):
    whole = archives.save_program(tmp_path / "whole.pt2")
    (tmp_path / "broken.pt2").write_bytes(whole.read_bytes()[:3000])
    capfd.readouterr()
    with pytest.raises(GradcheckError) as caught:
        load_target(str(tmp_path / "broken.pt2"))
    one_sentence(caught.value, "broken.pt2 is not a readable torch.export program", "re-save it")
    assert capfd.readouterr() == ("", "")


@needs_export_archive
def test_warning_filters_and_logging_are_restored_after_loading(tmp_path):
    import logging
    import warnings

    path = archives.save_program(tmp_path / "m.pt2")
    filters, disabled = list(warnings.filters), logging.root.manager.disable
    load_target(str(path))
    assert warnings.filters == filters
    assert logging.root.manager.disable == disabled


def test_export_archive_on_an_older_torch_says_which_torch_it_needs(tmp_path, monkeypatch):
    """Issue 23: before torch 2.13 loading an archive (with --trust-pickle too) says so in one sentence with the
    way out. On the floor (make test-floor) torch really is older; on a newer one its version is made older."""
    path = archives.save_program(tmp_path / "m.pt2")
    if EXPORT_ARCHIVE.available():
        monkeypatch.setattr(torch, "__version__", "2.12.1")
    for trust_pickle in (False, True):
        with pytest.raises(GradcheckError) as caught:
            load_target(str(path), trust_pickle=trust_pickle)
        one_sentence(caught.value, "loading a torch.export archive needs torch >= 2.13", "this is torch ", ".py file")
        assert torch.__version__ in str(caught.value)


def test_pickle_refusal_recommends_torch_export_not_torchscript(tmp_path):
    torch.save(archives.small_model(), tmp_path / "full.pt")
    with pytest.raises(GradcheckError) as caught:
        load_target(str(tmp_path / "full.pt"))
    message = one_sentence(caught.value, "--trust-pickle", "torch.export.save", "state_dict", "model.py")
    assert "jit" not in message


def test_empty_name_after_the_colon_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "good.py", HEADER + f"model = {SMALL}\n")
    with pytest.raises(GradcheckError) as caught:
        load_target("good.py:")
    message = one_sentence(caught.value, "name after ':'", "empty", "good.py:NAME")
    assert "not found" not in message


def test_upper_case_python_suffix_is_a_python_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "MODEL.PY", HEADER + f"model = {SMALL}\n")
    loaded = load_target("MODEL.PY")
    assert loaded.description == "the nn.Module instance `model` in MODEL.PY"
    assert loaded.source_line == 5


# --- 2. Encodings ----------------------------------------------------------------------------------------

LATIN1_MODEL = (HEADER + 'LABEL = "café"  # naïve\n' + f"model = {SMALL}\n").encode("latin-1")


def test_latin1_file_with_a_coding_line_loads_and_scans(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", b"# -*- coding: latin-1 -*-\n" + LATIN1_MODEL)
    report = scan_target("model.py", ScanOptions(passes=1))
    assert report.source_path == "model.py"
    assert report.source_line == 7


def test_latin1_file_without_a_coding_line_says_it_is_not_utf8(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", LATIN1_MODEL)
    with pytest.raises(GradcheckError) as caught:
        load_target("model.py")
    one_sentence(caught.value, "model.py:5", "not UTF-8", "coding line", "save it as UTF-8")


def test_latin1_bytes_in_a_comment_only_load(tmp_path, monkeypatch):
    """Python accepts undecodable bytes in a comment; reading the file for the model's line must too."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", (HEADER + "# naïve\n" + f"model = {SMALL}\n").encode("latin-1"))
    loaded = load_target("model.py")
    assert (loaded.source_path, loaded.source_line) == ("model.py", 6)


def test_latin1_sibling_module_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "gc_latin_sibling.py", 'LABEL = "café"\n'.encode("latin-1"))
    write(tmp_path, "model.py", HEADER + f"import gc_latin_sibling\nmodel = {SMALL}\n")
    with pytest.raises(GradcheckError) as caught:
        load_target("model.py")
    one_sentence(caught.value, "gc_latin_sibling.py:1", "not UTF-8")


# --- 3. Traced TorchScript -------------------------------------------------------------------------------


def trace(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    torch.manual_seed(0)
    torch.jit.trace(model.eval(), example).save(str(path))
    return path


def test_traced_cnn_scans_with_inputs_read_from_its_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    trace(cnn, torch.randn(2, 3, 16, 16), tmp_path / "cnn.pt")
    report = scan_target("cnn.pt", ScanOptions(passes=1))
    inputs = dict(report.context)["inputs"]
    assert "in_channels=3" in inputs and "(8, 3, 32, 32)" in inputs, inputs


def test_traced_mlp_scans_with_inputs_read_from_its_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trace(archives.small_model(), torch.randn(2, 8), tmp_path / "mlp.pt")
    report = scan_target("mlp.pt", ScanOptions(passes=1))
    inputs = dict(report.context)["inputs"]
    assert "in_features=8" in inputs and "(8, 8)" in inputs, inputs


def test_traced_token_model_draws_ids_below_its_vocabulary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(8 * 16, 4))
    trace(model, torch.randint(0, 50, (2, 16)), tmp_path / "tokens.pt")
    report = scan_target("tokens.pt", ScanOptions(passes=1))
    assert "below 50" in dict(report.context)["inputs"]


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return x * self.gain


def test_traced_model_whose_first_layer_says_nothing_asks_for_input_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trace(nn.Sequential(Scale(), nn.Linear(8, 4)), torch.randn(2, 8), tmp_path / "scaled.pt")
    with pytest.raises(GradcheckError) as caught:
        scan_target("scaled.pt", ScanOptions(passes=1))
    one_sentence(caught.value, "cannot infer the model's input", "Scale", "--input-shape")


# --- 5. Special files ------------------------------------------------------------------------------------


def load_within(target: str, seconds: float = 5.0) -> BaseException | None:
    """load_target in a thread, so a loader that blocks fails the test instead of hanging it."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            load_target(target)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"load_target({target!r}) blocked"
    return outcome[0]


@pytest.mark.parametrize("name", ["model.py", "model.pt", "model"])
def test_fifo_is_refused_without_opening_it(tmp_path, name):
    os.mkfifo(tmp_path / name)
    error = load_within(str(tmp_path / name))
    assert isinstance(error, GradcheckError)
    one_sentence(error, name, "named pipe", "not a regular file")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_character_device_is_refused(tmp_path):
    (tmp_path / "zero.pt").symlink_to("/dev/zero")
    for target in ("/dev/zero", str(tmp_path / "zero.pt")):
        error = load_within(target)
        assert isinstance(error, GradcheckError)
        one_sentence(error, target, "character device", "not a regular file")


def test_socket_is_refused(tmp_path):
    path = tmp_path / "s.pt"
    if len(str(path)) > 100:
        pytest.skip("socket paths are limited to about 100 characters")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        error = load_within(str(path))
    assert isinstance(error, GradcheckError)
    one_sentence(error, "socket", "not a regular file")


def test_symlink_to_a_regular_model_file_still_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "real.py", HEADER + f"model = {SMALL}\n")
    (tmp_path / "link.py").symlink_to(tmp_path / "real.py")
    assert isinstance(load_target("link.py").model, nn.Sequential)


# --- 6. sys.exit in the user's code ----------------------------------------------------------------------

EXITS = ["sys.exit(0)", "sys.exit(3)", "exit()", "raise SystemExit"]


def exiting_file(folder: Path, stage: str, call: str) -> Path:
    body = {
        stages.IMPORT: f"{call}\nmodel = {SMALL}\n",
        stages.BUILD: f"def build_model():\n    {call}\n",
        stages.INPUTS: f"model = {SMALL}\n\ndef example_inputs():\n    {call}\n",
    }[stage]
    return write(folder, "exits.py", HEADER + body)


@pytest.mark.parametrize("call", EXITS)
@pytest.mark.parametrize("stage", [stages.IMPORT, stages.BUILD, stages.INPUTS])
def test_exit_in_the_users_code_is_an_error_naming_the_stage(tmp_path, monkeypatch, stage, call):
    monkeypatch.chdir(tmp_path)
    exiting_file(tmp_path, stage, call)
    with pytest.raises(UserCodeExit) as caught:
        check("exits.py", passes=1)
    assert caught.value.stage == stage
    phrase = {stages.IMPORT: "while being imported", stages.BUILD: "construction", stages.INPUTS: "inputs"}[stage]
    one_sentence(caught.value, "sys.exit", phrase, "not measured")


def test_exit_while_importing_a_package_target_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "gc_exiting_pkg.py", HEADER + "sys.exit(0)\n")
    with pytest.raises(UserCodeExit) as caught:
        load_target("gc_exiting_pkg:model")
    assert caught.value.stage == stages.IMPORT


class ExitsInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 4)

    def forward(self, x):
        sys.exit(0)


def test_exit_in_forward_is_an_error_naming_the_stage():
    with pytest.raises(UserCodeExit) as caught:
        check(ExitsInForward(), torch.randn(4, 8), passes=1)
    assert caught.value.stage == stages.FORWARD
    one_sentence(caught.value, "sys.exit(0)", "forward pass")


# --- 7. No __pycache__ beside the user's model -----------------------------------------------------------


def test_loading_writes_no_bytecode_beside_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as a plain `python -m gradcheck_cli` runs
    (tmp_path / "project").mkdir()
    write(tmp_path, "project/gc_bytecode_sibling.py", "WIDTH = 16\n")
    write(
        tmp_path,
        "project/model.py",
        HEADER + "import gc_bytecode_sibling\n\ndef build_model():\n" + f"    return {SMALL}\n",
    )
    load_target(str(tmp_path / "project/model.py"))
    assert list(tmp_path.rglob("__pycache__")) == []
    assert sys.dont_write_bytecode is False  # restored


# --- 8. input() while importing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", ["size = int(input('size? '))\n", "def build_model():\n    input('size? ')\n"], ids=["import", "build"]
)
def test_input_at_import_says_a_scan_cannot_answer(tmp_path, monkeypatch, body):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # the CLI's worker reads /dev/null
    write(tmp_path, "asks.py", HEADER + body)
    with pytest.raises(GradcheckError) as caught:
        load_target("asks.py")
    one_sentence(caught.value, "asks.py", "asked for input", "a scan cannot give")


def test_multiline_error_while_importing_is_told_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "model.py", HEADER + "raise RuntimeError('first line\\nsecond line')\n")
    with pytest.raises(GradcheckError) as caught:
        load_target("model.py")
    one_sentence(caught.value, "model.py:5", "RuntimeError", "first line second line")
