"""The process boundary (gradcheck_cli/cli/isolation.py, worker.py): whatever the model's code does, a scan exits 0
only when every target was measured and judged healthy, and stdout carries the report alone."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradcheck_cli.cli.isolation import _resident_bytes
from gradcheck_cli.cli.jobs import FRAME_HEADER, ReportUnpickler
from gradcheck_cli.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
VANISHING = str(ROOT / "examples" / "vanishing_mlp.py")

HEALTHY = """
import torch
from torch import nn

def build_model():
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

def example_inputs():
    return torch.randn(4, 8)
"""


def model_file(folder: Path, name: str, forward_body: str = "return self.net(x)", top: str = "", factory: str = ""):
    """A small model whose import, factory and forward can each be given hostile code."""
    source = f"""
import os, sys, time
import torch
from torch import nn
{top}

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x):
        {forward_body}

def build_model():
    {factory or "return Net()"}

def example_inputs():
    return torch.randn(4, 8)
"""
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return str(path)


@pytest.fixture(autouse=True)
def _every_test_takes_the_real_worker(real_worker):
    pass


@pytest.fixture
def runner():
    return CliRunner()


def scan(runner, *args):
    return runner.invoke(app, ["scan", *args], env={"COLUMNS": "100", "NO_COLOR": "1"})


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def assert_one_sentence(result, *fragments):
    """Exit 2, one error line holding every fragment, no traceback anywhere."""
    assert result.exit_code == 2, result.output
    errors = error_lines(result)
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("where", "stage"),
    [
        ({"top": "sys.exit(0)"}, "while being imported"),
        ({"factory": "sys.exit(0)"}, "during the model's construction"),
        ({"forward_body": "sys.exit(0)"}, "during the forward pass"),
        ({"forward_body": "raise SystemExit(3)"}, "during the forward pass"),
    ],
)
def test_sys_exit_anywhere_in_the_model_fails_the_scan(runner, tmp_path, where, stage):
    result = scan(runner, model_file(tmp_path, "exits.py", **where))
    assert_one_sentence(result, "sys.exit", stage, "not measured")


@pytest.mark.parametrize(
    ("forward_body", "fragments"),
    [
        ("os._exit(0)", ("exit status 0", "during the forward pass")),
        ("import ctypes; ctypes.string_at(0)", ("SIGSEGV", "during the forward pass")),
        ("os.kill(os.getpid(), 9)", ("SIGKILL", "during the forward pass")),
    ],
)
def test_a_worker_that_dies_fails_its_target_with_the_stage(runner, tmp_path, forward_body, fragments):
    result = scan(runner, model_file(tmp_path, "dies.py", forward_body))
    assert_one_sentence(result, "dies.py", *fragments)
    assert result.stdout == ""


def test_the_other_targets_are_still_scanned_and_reported(runner, tmp_path):
    exits = model_file(tmp_path, "exits.py", "os._exit(0)")
    healthy = tmp_path / "good.py"
    healthy.write_text(HEALTHY)
    result = scan(runner, VANISHING, exits, str(healthy), "--format", "json")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    verdicts = {Path(report["title"].split(" ")[0]).name: report["verdict"] for report in document["reports"]}
    assert verdicts == {"vanishing_mlp.py": "vanishing", "good.py": "healthy"}
    assert len(error_lines(result)) == 1 and "exits.py" in error_lines(result)[0]


def test_what_the_model_prints_reaches_stderr_labelled_never_stdout(runner, tmp_path):
    target = model_file(tmp_path, "chatty.py", "print('from forward'); return self.net(x)", top="print('at import')")
    result = scan(runner, target, "--format", "json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # one document, nothing else
    assert f"{target}| at import" in result.stderr
    assert f"{target}| from forward" in result.stderr
    silent = scan(runner, target, "--silent")
    assert silent.exit_code == 0 and silent.output == ""


def test_escape_sequences_printed_by_the_model_are_shown_not_sent(runner, tmp_path):
    target = model_file(tmp_path, "ansi.py", top=r"print('\x1b[2J::error::x\r')")
    result = scan(runner, target)
    assert "\x1b" not in result.stderr and "\r" not in result.stderr
    assert r"\x1b[2J:\x3aerror:\x3ax\r" in result.stderr  # shown, and no line can start a workflow command


def test_input_at_import_does_not_wait(runner, tmp_path):
    started = time.monotonic()
    result = scan(runner, model_file(tmp_path, "asks.py", top="name = input('name? ')"))
    assert result.exit_code == 2
    assert time.monotonic() - started < 60
    assert "Traceback" not in result.output


@pytest.mark.slow  # a few seconds of subprocesses: run with -m slow (CI runs it), keeping the default suite fast
def test_a_hang_is_stopped_at_the_timeout(runner, tmp_path):
    started = time.monotonic()
    result = scan(runner, model_file(tmp_path, "hangs.py", "time.sleep(600)"), "--timeout", "3")
    assert_one_sentence(result, "did not finish within --timeout 3 s", "during the forward pass")
    assert time.monotonic() - started < 30


def test_an_allocation_past_max_memory_is_one_sentence(runner, tmp_path):
    # 3 GiB in one tensor, against a limit of 1 GiB
    target = model_file(tmp_path, "greedy.py", "big = torch.ones(3 * 2**30, dtype=torch.uint8); return self.net(x)")
    result = scan(runner, target, "--max-memory", "1G")
    assert_one_sentence(result, "greedy.py", "memory", "--max-memory 1G", "forward pass")


def test_input_shapes_that_cannot_fit_are_refused_before_running(runner, tmp_path):
    healthy = tmp_path / "good.py"
    healthy.write_text(HEALTHY)
    result = scan(runner, str(healthy), "--input-shape", "2000000000,16")
    assert_one_sentence(result, "--input-shape 2000000000,16", "--max-memory")
    result = scan(runner, str(healthy), "--input-shape", "100000000000,16")
    assert_one_sentence(result, "--input-shape '100000000000,16'", "at most 2_147_483_647")


@pytest.mark.parametrize(
    "args",
    [
        ["--seed", "99999999999999999999"],
        ["--seed", "-1"],
        ["--passes", "99999999999999999999999"],
        ["--vocab-size", "99999999999999999999"],
        ["--lr", "inf"],
        ["--lr", "nan"],
        ["--timeout", "-1"],
        ["--max-memory", "lots"],
        ["--output", ""],
        ["--baseline-tolerance", "inf"],
    ],
)
def test_numbers_out_of_range_are_refused_where_they_enter(runner, tmp_path, args):
    healthy = tmp_path / "good.py"
    healthy.write_text(HEALTHY)
    result = scan(runner, str(healthy), *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_demo_options_out_of_range_are_refused(runner):
    for args in (["--depth", "100001"], ["--width", "0"], ["--gain", "inf"], ["--seed", "-1"]):
        result = runner.invoke(app, ["demo", *args])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output


def test_nothing_is_left_in_the_temp_folder_or_beside_the_model(runner, tmp_path, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    models = tmp_path / "models"
    models.mkdir()
    (models / "helper.py").write_text("WIDTH = 8\n")
    (models / "model.py").write_text(HEALTHY.replace("import torch\n", "import torch\nimport helper\n"))
    monkeypatch.setenv("TMPDIR", str(temp))
    result = scan(runner, str(models / "model.py"), "--steps", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in models.iterdir()) == ["helper.py", "model.py"]
    assert list(temp.iterdir()) == []


def test_the_cli_imports_no_torch_to_hand_a_scan_over():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from gradcheck_cli.cli.main import app\n"
        "result = CliRunner().invoke(app, ['demo', '--depth', '3', '--width', '8', '--no-fix'])\n"
        "assert result.exit_code in (0, 1), result.output\n"
        "assert 'torch' not in sys.modules, 'torch was imported by the CLI process'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _start_cli(tmp_path, forward_body):
    marker = tmp_path / "worker.pid"
    body = f"open({str(marker)!r}, 'w').write(str(os.getpid())); {forward_body}"
    target = model_file(tmp_path, "slow.py", body)
    process = subprocess.Popen(
        [sys.executable, "-m", "gradcheck_cli", "scan", target],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    return process, int(marker.read_text())


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow  # a few seconds of subprocesses: run with -m slow (CI runs it), keeping the default suite fast
@pytest.mark.parametrize(("number", "exit_status"), [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130)])
def test_a_signal_to_the_cli_ends_the_worker_too(tmp_path, number, exit_status):
    process, worker = _start_cli(tmp_path, "time.sleep(600)")
    process.send_signal(number)
    process.communicate(timeout=30)
    assert process.returncode in (exit_status, 128 + abs(exit_status)), process.returncode
    assert _gone(worker)


def test_the_report_channel_builds_report_classes_and_nothing_else():
    class Sneaky:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError):
        ReportUnpickler(io.BytesIO(pickle.dumps(("report", 0, Sneaky())))).load()
    with pytest.raises(pickle.UnpicklingError):  # a function of gradcheck's own is no report either
        from gradcheck_cli.common.files import write_whole

        ReportUnpickler(io.BytesIO(pickle.dumps(write_whole))).load()
    from gradcheck_cli.common.choices import Verdict

    assert ReportUnpickler(io.BytesIO(pickle.dumps(("x", Verdict.HEALTHY)))).load() == ("x", Verdict.HEALTHY)
    assert FRAME_HEADER.size == 4


def test_resident_memory_counts_the_worker_and_its_children():
    def resident(pid: int) -> int:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(200 * 2**20); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while resident(child.pid) < 200 * 2**20:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        total = _resident_bytes(os.getpid())
        assert total is not None and total >= resident(os.getpid()) + 200 * 2**20
    finally:
        child.kill()
        child.wait()


def test_where_there_is_no_worker_the_jobs_run_in_process_and_the_cli_says_so(runner, tmp_path, monkeypatch):
    monkeypatch.setattr("gradcheck_cli.cli.isolation.WORKER_SUPPORTED", False)
    target = model_file(tmp_path, "exits.py", "sys.exit(0)")
    result = scan(runner, target)
    assert_one_sentence(result, "sys.exit(0)", "during the forward pass")
    assert "--timeout and --max-memory are not enforced" in result.stderr
