"""Scan a zoo architecture the way a user scans a model file with no flags: a file that builds the model and
says what input it takes (``example_inputs()``), given to ``scan_target`` with the default options."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gradcheck_cli.common.choices import FindingKind, Severity
from gradcheck_cli.common.options import ScanOptions
from gradcheck_cli.report.report import Report
from gradcheck_cli.scan.scan import scan_target

MODEL_FILE = """\
from tests.zoo.catalogue import ARCHITECTURES
from tests.zoo.variants import INVARIANCE

architecture = ARCHITECTURES[{name!r}]
model = architecture.build()
"""
VARIANT = "model = INVARIANCE[{name!r}][{variant!r}](model)\n"
EXAMPLE_INPUTS = """
def example_inputs():
    return architecture.example_inputs()
"""

# The findings that say the gradient vanishes or explodes through depth or time: none belongs on a model
# whose verdict is HEALTHY, at any severity (issue 22: never "Exploding gradients" on a HEALTHY verdict).
# A zero_gradient warning is not one: it names layers off the loss's path (GoogLeNet's auxiliary heads).
DEPTH_ALARMS = {
    FindingKind.VANISHING_GRADIENT,
    FindingKind.EXPLODING_GRADIENT,
    FindingKind.VANISHING_THROUGH_TIME,
    FindingKind.EXPLODING_THROUGH_TIME,
}


def write_model_file(folder: Path, name: str, *, variant: str | None = None, example_inputs: bool = True) -> Path:
    source = MODEL_FILE.format(name=name)
    if variant:
        source += VARIANT.format(name=name, variant=variant)
    if example_inputs:
        source += EXAMPLE_INPUTS
    path = folder / f"{name}{'_' + variant if variant else ''}{'' if example_inputs else '_inferred'}.py"
    path.write_text(source)
    return path


@dataclass
class Scan:
    report: Report
    seconds: float


def scan_architecture(folder: Path, name: str, *, variant: str | None = None, example_inputs: bool = True) -> Scan:
    """Scan with the defaults (``gradcheck scan FILE``); a GradcheckError (the CLI's exit 2) propagates."""
    path = write_model_file(folder, name, variant=variant, example_inputs=example_inputs)
    start = time.perf_counter()
    report = scan_target(str(path), ScanOptions())
    return Scan(report, time.perf_counter() - start)


def errors(report: Report) -> list[str]:
    return [f"{f.severity.value} {f.kind.value}" for f in report.diagnosis.findings if f.severity is Severity.ERROR]


def depth_alarms(report: Report) -> list[str]:
    return [f"{f.severity.value} {f.kind.value}" for f in report.diagnosis.findings if f.kind in DEPTH_ALARMS]


def alarms(report: Report) -> list[str]:
    """Findings above info, and depth or time alarms of any severity."""
    return [
        f"{f.severity.value} {f.kind.value}"
        for f in report.diagnosis.findings
        if f.severity is not Severity.INFO or f.kind in DEPTH_ALARMS
    ]


def top_finding(report: Report) -> str:
    findings = sorted(report.diagnosis.findings, key=lambda f: -f.severity.rank)
    if not findings:
        return "-"
    top = findings[0]
    decades = top.evidence.get("decades")
    shown = f" 10^{decades:+.1f}" if isinstance(decades, (int, float)) else ""
    return f"{top.severity.value.upper()} {top.kind.value}{shown}"
