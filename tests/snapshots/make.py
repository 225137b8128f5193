"""Snapshots of the JSON report (`--format json`) of every calibration model, every example file and the
demo presets, so that a refactoring can show it changed no figure (issue 24: "JSON reports are identical
before and after"). tests/test_report_snapshots.py regenerates them and compares.

    .venv/bin/python -m tests.snapshots.make            # rewrite tests/snapshots/reports/ from this tree
    .venv/bin/python -m tests.snapshots.make NAME ...   # only these cases

The cases, each run as its own test or command runs it (nothing here changes their settings):
- calibration-*: the models of tests/test_calibration.py, built by its builders and measured by its
  `check` (check_model, 2 passes, seed 0);
- example-*, docs-example-*: each file of examples/ and docs/examples/ given to scan_target with the default
  ScanOptions, as `gradcheck scan FILE` with no flags does, plus the flagless `FILE:NAME` target a docstring
  gives; the files that need flags (SKIPPED) are left out, and those that need a package that is not
  installed (NEEDS) are skipped;
- demo-*: run_demo with the CLI's defaults (3 passes, seed 0, --fix) on the README's verdict-table presets
  and four more.

Each report is rendered by the JSON renderer, and its floats are written as Python's repr (exact). Dropped:
every `model.seconds` (wall-clock time of the passes, also in each fix trial's report: the only field that
differed between two runs in two processes) and `tool.version` (the package version, which a release bumps
without changing a figure). The demo-* reports are written without each layer's per-pass figures
(`layers[].spread`, in their fix trials' reports too), which would take the snapshots from 1.9 MB to 2.2 MB;
their means, and every figure of the calibration and example reports, are kept. No absolute path reaches a
report: the example targets are given relative to the repository root, the cwd while they run.

The floats are exact only on like machines: the same torch, the same CPU (its vector instructions choose the
kernels: ATEN_CPU_CAPABILITY=avx2 instead of AVX512 changed figures of 29 of the 43 cases; MKL and oneDNN
capped at AVX2, of 8) and one intra-op thread (two threads changed 22). So every case runs on one thread, as
tests/conftest.py sets for the tests, and environment.json records what else they depend on (`environment()`).
"""

from __future__ import annotations

import io
import json
import os
import platform
import sys
from collections.abc import Callable
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.choices import Activation, Arch, Init, Norm, OutputFormat
from gradcheck_cli.common.options import ScanOptions
from gradcheck_cli.render.interface import RenderOptions, get_renderer
from gradcheck_cli.report.report import Report
from gradcheck_cli.scan.scan import scan_target
from gradcheck_cli.trials.demo import run_demo
from gradcheck_cli.trials.presets import DemoSpec
from tests import test_calibration as calibration

ROOT = Path(__file__).resolve().parents[2]
REPORTS = Path(__file__).resolve().parent / "reports"
ENVIRONMENT = Path(__file__).resolve().parent / "environment.json"
EXAMPLE_FOLDERS = ("examples", "docs/examples")
# Example files that `gradcheck scan FILE` cannot scan without flags (it exits 2 and says which flag).
SKIPPED = {
    "docs/examples/cnn_64px.py": "needs --input-shape 8,3,64,64 (its classifier expects 64x64 images)",
    "docs/examples/token_table.py": "needs --vocab-size (its first layer does not say what it takes)",
}
# Example files that build their model from a package gradcheck does not depend on.
NEEDS = {"docs/examples/hf_bert.py": "transformers", "docs/examples/hf_gpt2.py": "transformers"}
# Flagless targets a docstring gives besides the file itself.
EXTRA_TARGETS = ("docs/examples/lstm_classifier.py:build_chrono",)


def _parametrized(test: Callable, name: str) -> Any:
    """The value of test_calibration's parametrize case `name` (the builders live in its decorators)."""
    (mark,) = [mark for mark in test.pytestmark if mark.name == "parametrize"]
    (values,) = [param.values for param in mark.args[1] if param.id == name]
    return values[0]


def _encoder(norm_first: bool) -> Report:
    torch.manual_seed(calibration.SEED)
    return calibration.check(calibration.Encoder(norm_first), calibration.token_batches)


def _resnet() -> Report:
    torch.manual_seed(calibration.SEED)
    return calibration.check(calibration.ResNet(), calibration.random_batches(calibration.BATCH // 2, 3, 16, 16))


def calibration_cases() -> dict[str, Callable[[], Report]]:
    c = calibration
    residual = c.test_relu_batchnorm_mlp_with_residual_blocks_is_healthy
    encoder = c.test_transformer_encoder_is_healthy_at_initialization
    cases: dict[str, Callable[[], Report]] = {
        "sigmoid-mlp-default-init": lambda: c.check_mlp(c.mlp(nn.Sigmoid)),
        "tanh-mlp-default-init": lambda: c.check_mlp(c.mlp(nn.Tanh)),
        "tanh-mlp-xavier-normal": lambda: c.check_mlp(c.mlp(nn.Tanh, nn.init.xavier_normal_)),
        "relu-mlp-he-init": lambda: c.check_mlp(c.mlp(nn.ReLU, c.he_normal)),
        "relu-mlp-default-init": lambda: c.check_mlp(c.mlp(nn.ReLU)),
        "linear-gain-1.5": lambda: c.check_mlp(c.mlp(None, c.scaled_normal(1.5))),
        "linear-gain-0.7": lambda: c.check_mlp(c.mlp(None, c.scaled_normal(0.7))),
        "linear-orthogonal": lambda: c.check_mlp(c.mlp(None, nn.init.orthogonal_)),
        "relu-batchnorm-mlp": lambda: c.check_mlp(c.mlp(nn.ReLU, depth=40, batchnorm=True)),
        "relu-batchnorm-post-activation": lambda: c.check_mlp(_parametrized(residual, "post-activation")()),
        "relu-batchnorm-pre-activation": lambda: c.check_mlp(_parametrized(residual, "pre-activation")()),
        "tanh-rnn": lambda: c.check_sequence(c.tanh_rnn()),
        "chrono-lstm": lambda: c.check_sequence(c.chrono_lstm()),
        "transformer-pre-ln": lambda: _encoder(_parametrized(encoder, "pre-ln")),
        "transformer-post-ln": lambda: _encoder(_parametrized(encoder, "post-ln")),
        "resnet": _resnet,
        "selu-mlp-lecun-normal": lambda: c.check_mlp(c.mlp(nn.SELU, c.lecun_normal, depth=40)),
    }
    return {f"calibration-{name}": case for name, case in cases.items()}


def example_targets() -> list[str]:
    """Every example file (relative to the repository root) but SKIPPED, and EXTRA_TARGETS."""
    files = [path.relative_to(ROOT).as_posix() for folder in EXAMPLE_FOLDERS for path in (ROOT / folder).rglob("*.py")]
    return sorted([file for file in files if file not in SKIPPED] + list(EXTRA_TARGETS))


def example_name(target: str) -> str:
    """examples/vanishing_mlp.py -> example-vanishing_mlp; docs/examples/x.py:build -> docs-example-x-build."""
    file, _, entry = target.partition(":")
    prefix, folder = ("docs-example", "docs/examples") if file.startswith("docs/") else ("example", "examples")
    stem = Path(file).relative_to(folder).with_suffix("").as_posix().replace("/", "-")
    return f"{prefix}-{stem}" + (f"-{entry}" if entry else "")


def missing_package(target: str) -> str | None:
    package = NEEDS.get(target.partition(":")[0])
    return package if package is not None and find_spec(package) is None else None


@contextmanager
def _in_root():
    """The example targets are relative to the repository root, as the docstrings' commands run them."""
    before = Path.cwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(before)


def scan_example(target: str) -> Report:
    with _in_root():
        return scan_target(target, ScanOptions())


def example_cases() -> dict[str, Callable[[], Report]]:
    return {example_name(target): (lambda target=target: scan_example(target)) for target in example_targets()}


# `gradcheck demo` command lines and the DemoSpec the CLI builds from each (cli.demo).
DEMOS: dict[str, DemoSpec] = {
    # the README's verdict table
    "--depth 50": DemoSpec(depth=50),
    "--depth 50 --activation identity --init normal --gain 1.5": DemoSpec(
        depth=50, activation=Activation.IDENTITY, init=Init.NORMAL, gain=1.5
    ),
    "--depth 50 --activation relu --norm batch": DemoSpec(depth=50, activation=Activation.RELU, norm=Norm.BATCH),
    "--arch rnn": DemoSpec(arch=Arch.RNN),
    # recurrent stacks, a LayerNorm MLP and residual blocks
    "--arch lstm --depth 4": DemoSpec(arch=Arch.LSTM, depth=4),
    "--arch rnn --depth 8": DemoSpec(arch=Arch.RNN, depth=8),
    "--norm layer": DemoSpec(norm=Norm.LAYER),
    "--residual": DemoSpec(residual=True),
}


def demo_name(args: str) -> str:
    return "demo-" + args.removeprefix("--").replace(" --", "-").replace(" ", "-")


def demo_cases() -> dict[str, Callable[[], Report]]:
    # run_demo's defaults are the CLI's: seed 0, 3 passes, --fix, lr 1e-3 (Thresholds' default)
    return {demo_name(args): (lambda spec=spec: run_demo(spec)) for args, spec in DEMOS.items()}


def cases() -> dict[str, Callable[[], Report]]:
    return {**calibration_cases(), **example_cases(), **demo_cases()}


def skipped_cases() -> dict[str, str]:
    """Case name -> why it is not run here (a package that is not installed)."""
    return {
        example_name(target): f"{package} is not installed"
        for target in example_targets()
        if (package := missing_package(target))
    }


def document(report: Report, *, per_pass: bool = True) -> dict[str, Any]:
    """The report as `--format json` writes it, less the volatile fields, and less each layer's per-pass
    figures (`spread`) unless ``per_pass`` (the module docstring)."""
    stream = io.StringIO()
    get_renderer(OutputFormat.JSON).render(report, stream, RenderOptions())
    document = json.loads(stream.getvalue())
    del document["tool"]["version"]
    _drop(document, per_pass)
    return document


def _drop(document: dict[str, Any], per_pass: bool) -> None:
    del document["model"]["seconds"]
    if not per_pass:
        for layer in document["layers"]:
            del layer["spread"]
    for trial in document["fix_trials"]:
        if trial["report"] is not None:
            _drop(trial["report"], per_pass)


def dumps(value: Any, indent: str = "") -> str:
    """Indented JSON with each list of plain values on one line (a layer's figures per pass), which keeps the
    snapshots small and their diffs readable. json writes a float as its repr: it reads back as the same float."""
    inner = indent + " "
    if isinstance(value, dict) and value:
        items = ",\n".join(f"{inner}{json.dumps(key)}: {dumps(item, inner)}" for key, item in value.items())
        return "{\n" + items + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        items = ",\n".join(inner + dumps(item, inner) for item in value)
        return "[\n" + items + "\n" + indent + "]"
    return json.dumps(value)


def snapshot(name: str) -> str:
    """Run one case on one intra-op thread (as the tests run) and return its snapshot's text."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return dumps(document(cases()[name](), per_pass=not name.startswith("demo-"))) + "\n"
    finally:
        torch.set_num_threads(threads)


def environment() -> dict[str, str]:
    """What the snapshots' floats depend on besides the code (the module docstring)."""
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        models = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = models[0].partition(":")[2].strip() if models else cpu
    try:
        transformers = version("transformers")
    except PackageNotFoundError:
        transformers = "not installed"
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "transformers": transformers,  # the models of docs/examples/hf_*.py
    }


def write_environment() -> None:
    ENVIRONMENT.write_text(json.dumps(environment(), indent=1) + "\n")


def main(argv: list[str]) -> int:
    names = argv or sorted(cases())
    unknown = [name for name in names if name not in cases()]
    if unknown:
        print(f"no such case: {', '.join(unknown)}; the cases are {', '.join(sorted(cases()))}", file=sys.stderr)
        return 2
    skipped = skipped_cases()
    REPORTS.mkdir(exist_ok=True)
    for name in names:
        if name in skipped:
            print(f"skipped {name}: {skipped[name]}", file=sys.stderr)
            continue
        (REPORTS / f"{name}.json").write_text(snapshot(name))
        print(f"wrote {name}", file=sys.stderr)
    write_environment()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
