"""Benchmarks for gradcheck: what a probe costs next to the training passes it watches.

Every figure is a ratio taken side by side in the same run (probe against plain forward/backward passes
of the same model on the same batches), so the numbers carry from one machine to another; absolute times
are printed only as context. Models and batches are built here, seeded; nothing is downloaded.

    python benchmarks/run.py [--quick] [--only overhead,startup,scale,memory,monitor,depth] [--write-results]

Tables go to stdout (Markdown); progress goes to stderr. The script exits 0 whether targets are met or not.
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch  # noqa: TID253
from torch import nn  # noqa: TID253

from gradcheck_cli.common.batches import Batch, LossFn
from gradcheck_cli.measure.graph import describe_structure
from gradcheck_cli.measure.probe import probe_model

SECTIONS = ("overhead", "startup", "scale", "memory", "monitor", "depth")
PASSES = 3
RESULTS = Path(__file__).with_name("RESULTS.md")
BIN = Path(sys.executable).parent  # the venv's executables, without resolving the python symlink


# ---------------------------------------------------------------------------------------------- models


class BasicBlock(nn.Module):
    """The ResNet basic block (He et al. 2016), with one ReLU module called twice as torchvision does."""

    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet: 8 basic blocks over three stages (16, 32, 64 channels), 32x32 input."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        blocks, channels = [], 16
        for width, count, stride in ((16, 3, 1), (32, 3, 2), (64, 2, 2)):
            for k in range(count):
                blocks.append(BasicBlock(channels, width, stride if k == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class TokenTransformer(nn.Module):
    """Token and position embeddings, a stack of nn.TransformerEncoderLayer, a head over the vocabulary.
    With ``causal`` and ``tied`` and GPT-2 small's sizes it has GPT-2 small's shape (Radford et al. 2019)."""

    def __init__(self, vocab: int, d_model: int, heads: int, layers: int, seq: int, causal: bool, tied: bool):
        super().__init__()
        self.tokens = nn.Embedding(vocab, d_model)
        self.positions = nn.Embedding(seq if not causal else 1024, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 4 * d_model, batch_first=True, norm_first=causal, activation="gelu" if causal else "relu"
        )
        self.encoder = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(d_model) if causal else None, enable_nested_tensor=False
        )
        self.head = nn.Linear(d_model, vocab, bias=not tied)
        if tied:
            self.head.weight = self.tokens.weight
        self.causal = causal
        mask = nn.Transformer.generate_square_subsequent_mask(seq) if causal else None
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tokens(tokens) + self.positions(positions)
        return self.head(self.encoder(x, mask=self.mask, is_causal=self.causal))


class LSTMLanguageModel(nn.Module):
    def __init__(self, vocab: int = 1000, embed: int = 128, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(tokens))[0])


def mlp(depth: int, width: int, inputs: int, classes: int = 10) -> nn.Sequential:
    """``depth`` Linear layers with ReLU between them, He-initialized so the signal stays healthy."""
    layers: list[nn.Module] = []
    for k in range(depth):
        linear = nn.Linear(inputs if k == 0 else width, classes if k == depth - 1 else width)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if k < depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def classification_loss(output: torch.Tensor, batch: Batch) -> torch.Tensor:
    return nn.functional.cross_entropy(output, batch.target)


def token_loss(output: torch.Tensor, batch: Batch) -> torch.Tensor:
    return nn.functional.cross_entropy(output.flatten(0, 1), batch.target.flatten())


@dataclass
class Workload:
    """A model with its seeded batches (one per pass) and its loss: what plain passes and a probe share."""

    label: str
    model: nn.Module
    batches: list[Batch]
    loss_fn: LossFn
    target: float | None = None  # probe/plain at most this (informational)

    def make_batch(self, index: int) -> Batch:
        return self.batches[index % len(self.batches)]

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def build_workload(name: str, passes: int = PASSES) -> Workload:
    """Build a named workload, seeded: the same name gives the same weights and batches in any process."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def images(batch: int, shape: tuple[int, ...], classes: int = 10) -> list[Batch]:
        return [
            Batch(args=(torch.randn(batch, *shape, generator=g),), target=torch.randint(classes, (batch,), generator=g))
            for _ in range(passes)
        ]

    def tokens(batch: int, seq: int, vocab: int) -> list[Batch]:
        out = []
        for _ in range(passes):
            ids = torch.randint(vocab, (batch, seq + 1), generator=g)
            out.append(Batch(args=(ids[:, :-1],), target=ids[:, 1:]))
        return out

    if name == "mlp":
        return Workload("MLP 50x256", mlp(50, 256, 256), images(64, (256,)), classification_loss, 1.10)
    if name == "narrow-mlp":
        return Workload("MLP 200x64", mlp(200, 64, 64), images(64, (64,)), classification_loss, 1.25)
    if name.startswith("mlp-depth-"):
        depth = int(name.removeprefix("mlp-depth-"))
        return Workload(f"MLP {depth}x64", mlp(depth, 64, 64), images(32, (64,)), classification_loss)
    if name == "resnet":
        return Workload("ResNet, 8 blocks", SmallResNet(), images(32, (3, 32, 32)), classification_loss, 1.10)
    if name == "transformer":
        model = TokenTransformer(1000, 256, 4, 6, 64, causal=False, tied=False)
        return Workload("Transformer 6x256", model, tokens(16, 64, 1000), token_loss, 1.10)
    if name == "lstm":
        return Workload("LSTM 2x256", LSTMLanguageModel(), tokens(32, 50, 1000), token_loss)
    if name == "gpt2-small":
        model = TokenTransformer(50257, 768, 12, 12, 128, causal=True, tied=True)
        return Workload("GPT-2 small shape", model, tokens(2, 128, 50257), token_loss)
    raise SystemExit(f"unknown workload {name!r}")


# ---------------------------------------------------------------------------------- what is being timed


def plain_passes(w: Workload, passes: int = PASSES, after: Callable[[nn.Module], object] | None = None) -> None:
    """What training does without gradcheck: forward, loss, backward, grads zeroed before each pass."""
    w.model.train()
    for index in range(passes):
        w.model.zero_grad(set_to_none=True)
        batch = w.make_batch(index)
        w.loss_fn(w.model(*batch.args, **batch.kwargs), batch).backward()
        if after is not None:
            after(w.model)


def norm_item_loop(model: nn.Module) -> list[float]:
    """The alternative a user writes first: one norm and one host sync per parameter."""
    return [p.grad.norm().item() for p in model.parameters() if p.grad is not None]


def histc_loop(model: nn.Module) -> list[list[float]]:
    """The TensorBoard-style alternative: a 64-bin histogram of every parameter's gradient."""
    return [torch.histc(p.grad, bins=64).tolist() for p in model.parameters() if p.grad is not None]


def passes_run(w: Workload) -> int:
    """Forward passes one probe of ``w`` runs: its passes, and one more for each pass measured again."""
    count = 0

    def counted(module: nn.Module, args: tuple) -> None:
        nonlocal count
        count += 1

    handle = w.model.register_forward_pre_hook(counted)
    try:
        probe(w)
    finally:
        handle.remove()
    return count


def probe(w: Workload, passes: int = PASSES, scan: bool = False) -> None:
    """``scan``: no structure given, so the probe also reads skip connections off the autograd graph."""
    structure = None if scan else describe_structure(w.model)
    probe_model(w.model, w.make_batch, w.loss_fn, passes=passes, structure=structure)


def as_loaded(w: Workload, names: Iterable[str]) -> dict[str, Callable[[], object]]:
    """``before`` for interleaved_medians: each named candidate starts from a model with no .grad, as
    `gradcheck scan` has one it just loaded. Plain passes leave theirs on the model, and a probe must keep a
    user's gradients while it computes its own (a second set: overhead measures that case apart, "last step's
    .grad held"), so without this a probe would start from another state than the plain passes it is held
    against."""
    return {name: lambda: w.model.zero_grad(set_to_none=True) for name in names}


# ------------------------------------------------------------------------------------------ timing help


def page_faults() -> int:
    """Minor page faults of this process so far: pages the kernel had to map (and zero) on first touch."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn: Callable[[], object]) -> tuple[float, int]:
    """Seconds of one call, and the page faults it took."""
    gc.collect()
    faults = page_faults()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, page_faults() - faults


@dataclass
class Timings:
    seconds: dict[str, float]  # median seconds of each candidate
    ratios: dict[str, float]  # median over repetitions of candidate / first candidate, run side by side
    faults: dict[str, float]  # median page faults of one run of each candidate
    quartiles: dict[str, list[float]]  # first and third quartile of those ratios: how far the rounds spread


def interleaved_medians(
    candidates: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    before: dict[str, Callable[[], object]] | None = None,
) -> Timings:
    """Run the candidates in turn (a, b, c, a, b, c, ...) after ``warmup`` rounds, so drift hits them all
    alike. Ratios to the first candidate are taken within each round, then the median: a burst of other
    work on the machine then skews one round's ratios, not the medians. ``before``: untimed set-up run
    before each run of the candidates it names (the state that candidate starts from)."""
    before = before or {}
    for _ in range(warmup):
        for name, fn in candidates.items():
            if name in before:
                before[name]()
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    faults: dict[str, list[int]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            if name in before:
                before[name]()
            took, faulted = timed(fn)
            seconds[name].append(took)
            faults[name].append(faulted)
    base = seconds[next(iter(candidates))]
    ratios = {name: [v / b for v, b in zip(values, base)] for name, values in seconds.items()}
    return Timings(
        {name: statistics.median(values) for name, values in seconds.items()},
        {name: statistics.median(values) for name, values in ratios.items()},
        {name: statistics.median(values) for name, values in faults.items()},
        {name: quartiles(values) for name, values in ratios.items()},
    )


def quartiles(values: list[float]) -> list[float]:
    """The first and third quartile: the middle half of the values lies between them."""
    if len(values) < 2:
        return [values[0], values[0]]
    first, _, third = statistics.quantiles(values, n=4)
    return [first, third]


# glibc gives freed memory back to the system (the top of its heap beyond M_TRIM_THRESHOLD, and each block
# above M_MMAP_THRESHOLD at once), and the next allocation takes it again, one page fault per 4 KiB page:
# two sequences of allocations (plain passes, a probe) that do not fit the same holes pay it over and over.
# With these settings the allocator keeps what it took; the overhead table shows the ratio measured both
# ways, so that what the probe's own work costs and what the allocator's churn costs can be told apart.
WARM_HEAP = {"MALLOC_TRIM_THRESHOLD_": str(2**34), "MALLOC_MMAP_THRESHOLD_": str(2**25)}


def run_child(arguments: list[str], env: dict[str, str] | None = None) -> Any:
    """Run this script in a fresh process (``env`` added to its environment) and return the JSON it prints
    last."""
    command = [sys.executable, __file__, *arguments]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def overhead_in_child(workload: str, repeats: int, candidates: list[str], env: dict[str, str] | None = None) -> Timings:
    """The overhead candidates of one workload, interleaved, in a fresh process: no workload inherits
    another's heap."""
    return Timings(**run_child(["--measure-overhead", workload, str(repeats), ",".join(candidates)], env))


def measure_overhead(workload: str, repeats: str, candidates: str) -> None:
    """The child's side of overhead_in_child."""
    w = build_workload(workload)
    every = overhead_candidates(w)
    kinds = candidates.split(",")
    timings = interleaved_medians({kind: every[kind] for kind in kinds}, int(repeats), before=overhead_before(w))
    print(json.dumps(timings.__dict__))


def measure_memory_in_child(kind: str, workload: str) -> dict[str, int]:
    """RSS (KiB) after set-up and peak RSS of one measurement, in a fresh process."""
    return run_child(["--measure-memory", kind, workload])


@dataclass
class MemoryFigures:
    setup_kb: float  # medians over fresh processes
    peak_kb: float
    rise_kb: float  # peak minus set-up
    rise_range_kb: tuple[float, float]


def memory_medians(workload: str, repeats: int) -> dict[str, MemoryFigures]:
    """Plain passes and a probe, each in ``repeats`` fresh processes (interleaved): the peak RSS of one run
    varies by tens of MB with where the allocator happens to place things, so take medians."""
    runs: dict[str, list[dict[str, int]]] = {"plain": [], "probe": []}
    for _ in range(repeats):
        for kind, figures in runs.items():
            figures.append(measure_memory_in_child(kind, workload))
    out = {}
    for kind, figures in runs.items():
        rises = [f["peak_kb"] - f["setup_kb"] for f in figures]
        out[kind] = MemoryFigures(
            statistics.median(f["setup_kb"] for f in figures),
            statistics.median(f["peak_kb"] for f in figures),
            statistics.median(rises),
            (min(rises), max(rises)),
        )
    return out


def measure_memory(kind: str, workload: str) -> None:
    """The child's side of measure_memory_in_child: set up, note the RSS, do the work, read the peak."""
    w = build_workload(workload)
    gc.collect()
    setup = reset_peak_rss()
    if kind == "plain":
        plain_passes(w)
    elif kind == "probe":
        probe(w, scan=True)
    else:
        raise SystemExit(f"unknown kind {kind!r}: plain or probe")
    print(json.dumps({"setup_kb": setup, "peak_kb": peak_rss()}))


# ru_maxrss of a child started by fork/vfork + exec starts at the *parent's* peak (Linux keeps the pre-exec
# address space's high-water mark in signal->maxrss), so a child of this 600 MB process would report at
# least 600 MB whatever it did. VmHWM in /proc/self/status is the peak of this process's own address space,
# the figure ru_maxrss reports otherwise; writing 5 to /proc/self/clear_refs resets it to the current RSS
# (Linux 4.0+), so the peak after the work is the work's own, not set-up's (model construction, imports).
def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1])


def reset_peak_rss() -> int:
    """Reset the peak RSS to the current RSS where Linux allows it; return the RSS (KiB) it starts from."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return peak_rss()  # no reset: the rise is then measured from set-up's own peak
    return _proc_status_kib("VmRSS") or peak_rss()


def peak_rss() -> int:
    """Peak RSS in KiB: VmHWM, else ru_maxrss (KiB on Linux)."""
    return _proc_status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -------------------------------------------------------------------------------------------- formatting


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def middle_half(quartile_pair: list[float]) -> str:
    return f"{quartile_pair[0]:.2f}-{quartile_pair[1]:.2f}"


def seconds_text(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def megabytes(kib: float) -> str:
    return f"{kib / 1024:.1f} MB"


def judged(ratio: float, target: float | None) -> str:
    if target is None:
        return f"{ratio:.2f}"
    return f"{ratio:.2f} {'PASS' if ratio <= target else 'MISS'}"


def count_text(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- sections


def overhead_candidates(w: Workload) -> dict[str, Callable[[], object]]:
    return {
        "plain": lambda: plain_passes(w),
        "probe": lambda: probe(w),
        "scan": lambda: probe(w, scan=True),
        # the probe on a model that holds a training step's .grad, as a check_model call between two steps
        # meets it (see overhead_before)
        "held": lambda: probe(w),
        "norm": lambda: plain_passes(w, after=norm_item_loop),
        "histc": lambda: plain_passes(w, after=histc_loop),
        # plain passes again, last in each round (after other work, as the probe runs after plain passes): its
        # ratio to plain would be 1 on a quiet machine, so how far it strays is this run's noise
        "again": lambda: plain_passes(w),
    }


def overhead_before(w: Workload) -> dict[str, Callable[[], object]]:
    """The overhead candidates' untimed set-up: each starts from a model as loaded (no .grad), but "held",
    from one that a plain pass has just left its .grad on."""
    kinds = [kind for kind in overhead_candidates(w) if kind != "held"]
    return {**as_loaded(w, kinds), "held": lambda: plain_passes(w, passes=1)}


def overhead_section(repeats: int) -> str:
    rows = []
    for name in ("mlp", "narrow-mlp", "resnet", "transformer", "lstm"):
        w = build_workload(name)
        note(f"overhead: {w.label}")
        timings = overhead_in_child(name, repeats, list(overhead_candidates(w)))
        warm = overhead_in_child(name, repeats, ["plain", "probe"], WARM_HEAP)
        ratios, faults = timings.ratios, timings.faults
        target = f"<= {w.target:.2f}" if w.target else "-"
        rows.append(
            [w.label, count_text(w.params), seconds_text(timings.seconds["plain"]), judged(ratios["probe"], w.target),
             middle_half(timings.quartiles["probe"]), judged(ratios["scan"], w.target), f"{ratios['norm']:.2f}",
             f"{ratios['histc']:.2f}", f"{ratios['again']:.2f} ({middle_half(timings.quartiles['again'])})", target,
             f"{faults['plain']:.0f} / {faults['probe']:.0f}", f"{ratios['held']:.2f} ({faults['held']:.0f})",
             f"{warm.ratios['probe']:.2f}"]
        )  # fmt: skip
    header = ["model", "params", "plain, 3 passes", "probe / plain", "its middle half of rounds",
              "probe (scan) / plain", "norm .item() loop / plain", "histc loop / plain",
              "plain again / plain: the noise", "target", "page faults per run, plain / probe",
              "probe / plain, last step's .grad held (its page faults)",
              "probe / plain, allocator keeps its pages"]  # fmt: skip
    return (
        f"## Overhead\n\n{PASSES} passes per run; plain: median seconds; ratios: median over {repeats} "
        "interleaved repetitions of the ratio within each, each model in a fresh process; the middle half: "
        "the first to the third quartile of the rounds' ratios. Plain again: the same plain passes once more, "
        "last in each round: on a quiet machine its ratio is 1, so how far it and its middle half stray says "
        "how far this run's ratios can be trusted. "
        "probe: `probe_model(..., structure=describe_structure(model))`; probe (scan): `structure=None`, "
        "skips read off the autograd graph. Every candidate starts from a model with no `.grad` (set to None "
        "before each run, untimed), as `gradcheck scan` has one it just loaded. Page faults: median per run "
        "(3 passes or a probe). The last two columns are information, not judged: the probe on a model that "
        "holds a training step's `.grad` (as a `check_model` call between two steps meets it: the probe keeps "
        "those while it computes its own), and plain and probe again in another process whose allocator keeps "
        f"the memory it takes (`{' '.join(f'{k}={v}' for k, v in WARM_HEAP.items())}`).\n\n" + table(header, rows)
    )


def startup_section(repeats: int) -> str:
    commands = {
        "python -c pass": [str(BIN / "python"), "-c", "pass"],
        'python -c "import torch"': [str(BIN / "python"), "-c", "import torch"],
        "gradcheck --help": [str(BIN / "gradcheck"), "--help"],
        "gradcheck --version": [str(BIN / "gradcheck"), "--version"],
        "gradcheck demo --depth 50": [str(BIN / "gradcheck"), "demo", "--depth", "50"],
    }

    def run(argv: list[str]) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):  # the demo's default preset vanishes on purpose: exit code 1
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")

    note("startup")
    timings = interleaved_medians({label: (lambda argv=argv: run(argv)) for label, argv in commands.items()}, repeats)
    targets = {"gradcheck --help": 0.25, "gradcheck --version": 0.25}
    rows = []
    for label, value in timings.seconds.items():
        target = targets.get(label)
        verdict = ("PASS" if value <= target else "MISS") if target else ""
        rows.append(
            [
                label,
                f"{value:.3f} s {verdict}".rstrip(),
                f"{timings.ratios[label]:.1f}",
                f"<= {target} s" if target else "-",
            ]
        )
    demo_cost = timings.seconds["gradcheck demo --depth 50"] - timings.seconds['python -c "import torch"']
    rows.append(
        ["demo minus import torch", f"{demo_cost:.3f} s {'PASS' if demo_cost <= 1.0 else 'MISS'}", "", "<= 1.0 s"]
    )
    return (
        f"## Start-up\n\nWall time of each command as a subprocess, median of {repeats} interleaved runs; "
        "`python -c pass` is the interpreter's floor (ratios to it taken within each round).\n\n"
        + table(["command", "median", "x python -c pass", "target"], rows)
    )


def scale_section(repeats: int, memory_repeats: int, quick: bool) -> str:
    depths = (10, 100, 1000)
    measured = {}
    for depth in depths:
        w = build_workload(f"mlp-depth-{depth}")
        note(f"scale: {w.label}")
        candidates = overhead_candidates(w)
        timings = interleaved_medians(
            {kind: candidates[kind] for kind in ("plain", "probe")}, repeats, before=as_loaded(w, ["plain", "probe"])
        )
        memory = memory_medians(f"mlp-depth-{depth}", memory_repeats)
        measured[depth] = (w, timings, memory, passes_run(w))
    rows = []
    per_layer_time, per_layer_memory = {}, {}
    for depth, (w, timings, memory, runs) in measured.items():
        per_layer_time[depth] = timings.seconds["probe"] / (depth * runs)
        per_layer_memory[depth] = memory["probe"].rise_kb / depth
        rows.append(
            [str(depth), count_text(w.params), seconds_text(timings.seconds["plain"]),
             seconds_text(timings.seconds["probe"]), str(runs), f"{timings.ratios['probe']:.2f}",
             f"{per_layer_time[depth] * 1e6:.0f} us", megabytes(memory["plain"].rise_kb),
             megabytes(memory["probe"].rise_kb), f"{per_layer_memory[depth]:.1f} KiB"]
        )  # fmt: skip
    header = ["depth", "params", "plain", "probe", "probe passes run", "probe / plain", "probe per layer and pass",
              "plain RSS rise", "probe RSS rise", "probe RSS rise per layer"]  # fmt: skip
    lo, mid, hi = depths
    probe_time = {depth: timings.seconds["probe"] / runs for depth, (_, timings, _, runs) in measured.items()}
    plain_time = {depth: timings.seconds["plain"] for depth, (_, timings, _, _) in measured.items()}
    plain_layer = {depth: seconds / depth for depth, seconds in plain_time.items()}
    probe_rise = {depth: memory["probe"].rise_kb for depth, (_, _, memory, _) in measured.items()}

    def marginal(series: dict[int, float]) -> str:
        """Cost per added layer from depth 100 to 1000 over that from 10 to 100: fixed costs cancel."""
        return _ratio((series[hi] - series[mid]) / (hi - mid), (series[mid] - series[lo]) / (mid - lo))

    ratios = table(
        ["per layer", f"depth {hi} / depth {lo}", f"depth {hi} / depth {mid}", f"marginal: {mid}-{hi} / {lo}-{mid}"],
        [
            ["probe time (per pass run)", _ratio(per_layer_time[hi], per_layer_time[lo]), _ratio(per_layer_time[hi], per_layer_time[mid]), marginal(probe_time)],
            ["plain time, for comparison", _ratio(plain_layer[hi], plain_layer[lo]), _ratio(plain_layer[hi], plain_layer[mid]), marginal(plain_time)],
            ["probe RSS rise", _ratio(per_layer_memory[hi], per_layer_memory[lo]), _ratio(per_layer_memory[hi], per_layer_memory[mid]), marginal(probe_rise)],
        ],
    )  # fmt: skip
    text = (
        f"## Scale\n\nMLP of width 64, ReLU, batch 32, {PASSES} passes; time: median of {repeats} interleaved "
        "repetitions; RSS rise: peak RSS minus the RSS after set-up of a probe (scan path) in a fresh process, "
        "median over processes. A model whose signal leaves float32's exact range (the 1000-layer one vanishes) "
        "has its first pass measured again, without parameter gradients: probe passes run counts it, and the "
        "probe's per-layer time is per pass run. Plain passes grow a little faster than linearly too (a deeper "
        "model's activations leave the caches): the plain row shows by how much. "
        "Per-layer figures should stay roughly flat with depth (a ratio near 1); fixed costs (set-up, thread "
        "pools, the allocator's first pages) weigh on the shallow models, which the marginal column cancels.\n\n"
        + table(header, rows)
        + "\n\n"
        + ratios
    )
    if not quick:
        text += "\n\n" + _gpt2_table(max(3, repeats // 2))
    return text


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a (no rise)"


def _gpt2_table(repeats: int) -> str:
    w = build_workload("gpt2-small", passes=1)
    note(f"scale: {w.label} ({count_text(w.params)} parameters)")
    timings = interleaved_medians(
        {
            "plain": lambda: plain_passes(w, passes=1),
            "probe": lambda: probe(w, passes=1),
            "scan": lambda: probe(w, passes=1, scan=True),
        },
        repeats,
        before=as_loaded(w, ("plain", "probe", "scan")),
    )
    ratios = timings.ratios
    row = [w.label, count_text(w.params), seconds_text(timings.seconds["plain"]), f"{ratios['probe']:.2f}",
           f"{ratios['scan']:.2f}"]  # fmt: skip
    return (
        f"GPT-2-small-shaped model (12 layers, d_model 768, 12 heads, vocabulary 50257, tied embedding and head, "
        f"causal mask), sequence 128, batch 2, 1 pass, median of {repeats} interleaved repetitions:\n\n"
        + table(["model", "params", "plain, 1 pass", "probe / plain", "probe (scan) / plain"], [row])
    )


def memory_section(repeats: int) -> str:
    rows = []
    for name in ("mlp", "resnet", "transformer"):
        label = build_workload(name).label
        note(f"memory: {label}")
        figures = memory_medians(name, repeats)
        plain, probed = figures["plain"], figures["probe"]
        low, high = probed.rise_range_kb
        rows.append(
            [label, megabytes(plain.setup_kb), megabytes(plain.peak_kb), megabytes(probed.peak_kb),
             judged(probed.peak_kb / plain.peak_kb, 1.10), megabytes(plain.rise_kb),
             f"{megabytes(probed.rise_kb)} ({low / 1024:.0f}-{high / 1024:.0f})", _ratio(probed.rise_kb, plain.rise_kb)]
        )  # fmt: skip
    header = ["model", "after set-up", "plain peak", "probe peak", "probe / plain peak", "plain rise",
              "probe rise (range)", "probe / plain rise"]  # fmt: skip
    return (
        f"## Memory\n\nPeak RSS of {PASSES} plain passes against a probe (scan path, as `check_model` and "
        "`gradcheck scan` run it), each in a fresh process that first builds the model and batches and then "
        f"resets its peak; rise = peak minus the RSS after set-up. Medians of {repeats} processes each "
        "(one process each with --quick). "
        "Target: probe / plain peak <= 1.10.\n\n" + table(header, rows)
    )


# ------------------------------------------------------------------------------------------------- main


def monitor_section(quick: bool) -> str:
    """The training monitor (issue 8): a training step with Monitor(model, every=100) against the plain
    step; benchmarks/monitor_overhead.py says how the rounds are timed."""
    sys.path.insert(0, str(Path(__file__).parent))
    from monitor_overhead import markdown, run

    return "## Monitor\n\n" + markdown(run(quick=quick))


def depth_section(quick: bool) -> str:
    """How deep a scan goes (issue 21): benchmarks/depth.py, each depth in a fresh process."""
    sys.path.insert(0, str(Path(__file__).parent))
    from depth import markdown, run

    return markdown(run(quick=quick))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{platform.platform()}; {cpu}; {os.cpu_count()} CPUs; Python {platform.python_version()}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"CPUs {busy_fraction():.0%} busy just before the run (other work on the machine skews the ratios)"
    )


def busy_fraction(seconds: float = 1.0) -> float:
    """Share of CPU time spent on work over ``seconds`` (from /proc/stat; the load average lags by a minute)."""

    def sample() -> list[int]:
        with open("/proc/stat") as stat:
            return [int(v) for v in stat.readline().split()[1:]]

    try:
        before = sample()
        time.sleep(seconds)
        after = sample()
    except OSError:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    spent = [b - a for a, b in zip(before, after)]
    idle = spent[3] + spent[4]  # idle and iowait
    return 1 - idle / max(1, sum(spent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no GPT-2-sized model")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--write-results", action="store_true", help=f"also write the tables to {RESULTS.name}")
    parser.add_argument("--measure-memory", nargs=2, metavar=("KIND", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--measure-overhead", nargs=3, metavar=("MODEL", "REPEATS", "KINDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_memory:
        measure_memory(*args.measure_memory)
        return 0
    if args.measure_overhead:
        measure_overhead(*args.measure_overhead)
        return 0
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {','.join(SECTIONS)}")
    repeats = 3 if args.quick else 7
    memory_repeats = 1 if args.quick else 3
    started = time.perf_counter()
    host = machine()  # before the run: how busy the CPUs are is other work's doing
    parts = []
    runs = {
        # more rounds than the other sections: the targets are judged on these medians
        "overhead": lambda: overhead_section(5 if args.quick else 11),
        "startup": lambda: startup_section(3 if args.quick else 5),
        "scale": lambda: scale_section(repeats, memory_repeats, args.quick),
        "memory": lambda: memory_section(memory_repeats),
        "monitor": lambda: monitor_section(args.quick),
        "depth": lambda: depth_section(args.quick),
    }
    for section in SECTIONS:
        if section in sections:
            section_started = time.perf_counter()
            parts.append(runs[section]())
            note(f"{section}: {time.perf_counter() - section_started:.0f} s")
    command = " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    header = (
        f"# gradcheck benchmarks\n\n{datetime.date.today().isoformat()} · {host}\n\n"
        f"`{command}` · {time.perf_counter() - started:.0f} s"
    )
    report = "\n\n".join([header, *parts]) + "\n"
    print(report)
    if args.write_results:
        RESULTS.write_text(report)
        note(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
