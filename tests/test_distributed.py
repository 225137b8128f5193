"""Distributed scans (issue 8): two real processes with gloo on the CPU give the figures one process gives
for the same model and seed (DDP, --fsdp, a file's shard_model); only the first process prints; every
process exits with the same code; an error on one process reaches the others instead of hanging them.

Two launches of two processes each (most of their time is importing torch), plus fast in-process tests
of the pieces: the batch split, the loss's random draws, the blocks --fsdp shards, the launch checks.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError
from gradcheck_cli.load.distributed import (
    DistributedRun,
    _WholeBatchDraws,
    split_batch,
    top_level_blocks,
)
from gradcheck_cli.load.torchrun import TORCHRUN_VARIABLES, torchrun_rank
from gradcheck_cli.measure.torch_compat import FSDP2

ROOT = Path(__file__).resolve().parent.parent
SHARDED_EXAMPLE = str(ROOT / "docs" / "examples" / "sharded_model.py")
FIGURES = ("weight_grad_norm", "backward", "forward_rms", "weight_norm", "grad_norm", "weight_std", "other_grad_norm")
# Two processes sum in another order than one: float32 gradients and float64 sums agree to ~1e-7.
TOLERANCE = 1e-5
LAUNCH_TIMEOUT = 120  # seconds: a hang fails the test instead of the suite

BLOCKS_MODEL = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.fc(self.norm(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 6)
        self.blocks = nn.ModuleList(Block(6) for _ in range(3))
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def build_model():
    return Net()
"""

FAILS_ON_PROCESS_1 = """
import os

from torch import nn

if os.environ.get("RANK") == "1":
    raise RuntimeError("only process 1 cannot import this file")

model = nn.Linear(4, 2)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(**extra: str) -> dict[str, str]:
    inherited = {
        k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES and not k.startswith("TORCHELASTIC")
    }
    return {**inherited, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "COLUMNS": "100", **extra}


def _run_two_processes(args: list[str]) -> list[tuple[int, str, str]]:
    """What torchrun does for a process, without its agent: (exit code, stdout, stderr) per rank."""
    port = str(_free_port())
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gradcheck_cli", *args],
            cwd=ROOT,
            env=_environment(
                RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=LAUNCH_TIMEOUT) for process in processes]
    finally:
        for process in processes:
            process.kill()
    return [(process.returncode, out, err) for process, (out, err) in zip(processes, outputs)]


def _one_process(*args: str) -> dict:
    result = CliRunner().invoke(app, ["scan", *args, "--format", "json", "--passes", "2"], env={"NO_COLOR": "1"})
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def _by_file(reports: list[dict]) -> dict[str, dict]:
    """Reports keyed by their model file's name (a title is "path (Class)")."""
    return {Path(report["title"].rsplit(" (", 1)[0]).name: report for report in reports}


def _assert_same_figures(single: dict, sharded: dict) -> None:
    assert [layer["name"] for layer in sharded["layers"]] == [layer["name"] for layer in single["layers"]]
    for one, many in zip(single["layers"], sharded["layers"]):
        assert many["type"] == one["type"]
        for figure in FIGURES:
            if one[figure] is None:
                assert many[figure] is None, (one["name"], figure)
            else:
                assert many[figure] == pytest.approx(one[figure], rel=TOLERANCE), (one["name"], figure)
    assert sharded["losses"] == pytest.approx(single["losses"], rel=TOLERANCE)
    assert sharded["total_grad_norms"] == pytest.approx(single["total_grad_norms"], rel=TOLERANCE)
    assert sharded["model"]["batch_size"] == single["model"]["batch_size"]
    assert sharded["verdict"] == single["verdict"]


@pytest.fixture(scope="module")
def blocks_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("models") / "blocks.py"
    path.write_text(BLOCKS_MODEL)
    return str(path)


@pytest.mark.skipif(not FSDP2.available(), reason=FSDP2.missing())
@pytest.mark.slow  # a few seconds of subprocesses: run with -m slow (CI runs it), keeping the default suite fast
def test_fsdp_and_shard_model_match_one_process_and_an_error_on_one_process_reaches_both(tmp_path, blocks_file):
    """--fsdp shards the blocks file; the example shards itself with its shard_model; the third file fails
    to import on process 1 only: both processes report it (the first prints) and exit 2, none hangs."""
    failing = tmp_path / "fails_on_process_1.py"
    failing.write_text(FAILS_ON_PROCESS_1)
    (code0, out0, err0), (code1, out1, err1) = _run_two_processes(
        [
            "scan",
            blocks_file,
            SHARDED_EXAMPLE,
            str(failing),
            "--distributed",
            "--fsdp",
            "--format",
            "json",
            "--passes",
            "2",
        ]
    )
    assert code0 == code1 == 2, err0 + err1
    assert out1 == "" and err1 == "", "only the first process prints"
    assert "process 1 of 2" in err0 and "only process 1 cannot import this file" in err0
    reports = _by_file(json.loads(out0)["reports"])
    assert set(reports) == {"blocks.py", "sharded_model.py"}
    assert "FSDP2 fully_shard on 3 top-level blocks and the root" in reports["blocks.py"]["context"]["processes"]
    assert "shard_model(model, mesh)" in reports["sharded_model.py"]["context"]["processes"]
    single = _by_file(_one_process(blocks_file, SHARDED_EXAMPLE)["reports"])
    for name, report in reports.items():
        _assert_same_figures(single[name], report)


def test_ddp_under_torchrun_matches_one_process_and_prints_one_report(blocks_file):
    """The real launcher, no --distributed (its environment is enough): torchrun's stdout carries every
    process's stdout, so one JSON document there means the second process printed nothing."""
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
         "-m", "gradcheck_cli", "scan", blocks_file, "--format", "json", "--passes", "2"],
        cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    report = json.loads(launched.stdout)
    assert (
        report["context"]["processes"]
        == "2 processes (gloo), 4 of the 8 samples each; replicated on every process (DDP)"
    )
    _assert_same_figures(_one_process(blocks_file), report)


@pytest.mark.parametrize("flags", [["--distributed"], ["--fsdp"]])
def test_distributed_outside_torchrun_is_one_sentence_and_exit_2(flags, blocks_file, monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["scan", blocks_file, *flags], env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert result.exit_code == 2
    assert (
        f"{flags[0]} runs only under torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not set)" in result.output
    )
    assert "torchrun --nproc-per-node" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_torchrun_rank_reads_the_environment():
    full = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert torchrun_rank(False, False, full) == 1  # torchrun's environment alone turns it on
    assert torchrun_rank(False, False, {}) is None
    assert torchrun_rank(False, False, {"RANK": "0"}) is None  # a stray variable is not a torchrun job
    with pytest.raises(InvalidOptionError, match="MASTER_ADDR, MASTER_PORT are not set"):
        torchrun_rank(True, False, {"RANK": "0", "WORLD_SIZE": "1"})
    with pytest.raises(InvalidOptionError, match="outside WORLD_SIZE"):
        torchrun_rank(True, False, {**full, "RANK": "2"})


def test_split_batch_keeps_each_process_its_slice_and_refuses_an_uneven_split():
    x, labels, mask = torch.arange(24.0).reshape(8, 3), torch.arange(8), torch.ones(5, 5)
    sequence = torch.zeros(7, 8, 2)  # time-major: the batch is dimension 1
    batch = Batch(args=(x, sequence), kwargs={"mask": mask}, target=(x, labels))
    second = split_batch(batch, rank=1, world_size=2)
    assert second.size == 4
    assert torch.equal(second.args[0], x[4:]) and torch.equal(second.target[1], labels[4:])
    assert second.args[1].shape == (7, 4, 2)
    assert second.kwargs["mask"] is mask  # no batch dimension: every process keeps it whole
    with pytest.raises(GradcheckError, match="8 samples does not split evenly over 3 processes"):
        split_batch(batch, rank=0, world_size=3)


def test_random_draws_in_the_loss_are_the_whole_batch_draws_cut_to_the_slice():
    """gradcheck's default losses draw random targets: each process gets the rows one process would, and
    the RNG ends where it would, so the next pass draws the same batch."""
    logits = torch.zeros(4, 5, 10)  # 4 of 8 samples, 5 positions
    torch.manual_seed(3)
    whole_labels, whole_noise, _ = torch.randint(0, 10, (40,)), torch.randn(8, 5, 10), torch.rand(1)
    after_one_process = torch.get_rng_state()
    torch.manual_seed(3)
    with _WholeBatchDraws(share=4, rank=1, world_size=2):
        labels, noise = torch.randint(0, 10, (20,)), torch.randn_like(logits)
        scalar = torch.rand(1)  # not per-sample: drawn as asked
    assert torch.equal(labels, whole_labels[20:]) and torch.equal(noise, whole_noise[4:])
    assert scalar.shape == (1,)
    assert torch.equal(torch.get_rng_state(), after_one_process)


def test_fsdp_shards_the_children_of_the_largest_stack():
    model = nn.Sequential(
        nn.Embedding(10, 4), nn.ModuleList([nn.Linear(4, 4) for _ in range(2)]), nn.ReLU(), nn.Linear(4, 2)
    )
    # the outer Sequential holds every parameter: its children with parameters are the blocks
    assert top_level_blocks(model) == [model[0], model[1], model[3]]
    assert top_level_blocks(nn.Linear(2, 2)) == []


def test_fsdp_on_a_torch_without_fsdp2_says_which_torch_it_needs(monkeypatch):
    """Issue 23: --fsdp before torch 2.6 is one sentence with the way out. On the floor (make test-floor) torch
    really is older; on a newer one its version is made older."""
    if FSDP2.available():
        monkeypatch.setattr(torch, "__version__", "2.5.1")
    run = DistributedRun(rank=0, world_size=2, backend="gloo", mesh=None, sync_group=None, fsdp=True)
    with pytest.raises(InvalidOptionError) as caught:
        run.spread(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), {}, "model.py")
    message = str(caught.value)
    assert message.startswith("--fsdp (FSDP2: torch.distributed.fsdp.fully_shard) needs torch >= 2.6; this is torch ")
    assert torch.__version__ in message and "shard_model(model, mesh)" in message and "\n" not in message


def test_a_replicated_tensor_is_counted_on_the_first_process_only():
    weight = torch.ones(3, 2)
    first = DistributedRun(rank=0, world_size=2, backend="gloo", mesh=None, sync_group=None)
    second = DistributedRun(rank=1, world_size=2, backend="gloo", mesh=None, sync_group=None)
    assert first.local(weight) is weight
    assert second.local(weight).numel() == 0
