"""The report: measurements, diagnosis and (for the demo) a fix tried on a copy. Renderers read it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gradcheck_cli.common.choices import FailOn, Severity, TrialOutcome, Verdict
from gradcheck_cli.common.stats import ProbeResult
from gradcheck_cli.judge.diagnosis import Diagnosis


@dataclass
class FixTrial:
    """A suggested fix applied to a copy of the model and measured again, or why it could not be."""

    fix_id: str
    description: str  # what changed, e.g. "activation: sigmoid -> relu", or why it was not applied
    report: Report | None  # None: the fix cannot be applied mechanically; its code shows the change
    title: str = ""  # the fix's title
    outcome: TrialOutcome | None = None  # against the model as measured (verify.judge_trials); None: not applied

    @property
    def applied(self) -> bool:
        return self.report is not None


@dataclass
class TrainingStep:
    """The model after ``step`` optimizer steps on a copy, measured again (``--steps``)."""

    step: int  # 0: the model as measured at initialization
    loss: float | None  # the training loss of that step (None for step 0)
    report: Report


@dataclass
class Report:
    title: str  # what was measured, e.g. "MLP depth 50 x 256, sigmoid, default init"
    result: ProbeResult
    diagnosis: Diagnosis
    fix_trials: list[FixTrial] = field(default_factory=list)
    # The demo without --verify: the fixes were tried in order until one cured (the cure last), not ranked
    fix_trials_until_cured: bool = False
    # How it was measured, as (what, how) rows: which model, inputs, output and loss were used.
    context: list[tuple[str, str]] = field(default_factory=list)
    training: list[TrainingStep] = field(default_factory=list)
    training_setup: str = ""  # e.g. "5 SGD steps, lr 0.001, on a copy"
    target: str | None = None  # what was scanned, as given on the command line (None for the demo)
    # Where the model is defined (a scan of a Python file): annotations in CI formats point here.
    source_path: str | None = None
    source_line: int | None = None
    baseline: Any = None  # the BaselineComparison with --baseline (baseline.py), else None

    @property
    def verdict(self) -> Verdict:
        return self.diagnosis.verdict

    def fails(self, fail_on: FailOn = FailOn.ERROR) -> bool:
        """True when a finding is at or above the failing severity (exit code 1 in the CLI)."""
        if fail_on is FailOn.NEVER:
            return False
        threshold = Severity(fail_on.value)
        return any(f.severity.rank >= threshold.rank for f in self.diagnosis.findings)


def summarize(report: Report) -> dict[str, Any]:
    """A report in a few figures (the verdict, the depth trend, the largest step risks): one row of a
    training run or of a fix comparison."""
    diagnosis, result = report.diagnosis, report.result
    # maxima over finite figures only: a NaN would make max() depend on the order
    relative = [v for v in (layer.relative_grad for layer in result.layers) if v is not None and math.isfinite(v)]
    dead = [site.dead_fraction for site in result.activations if site.dead_fraction is not None]
    norms = [n for n in result.total_grad_norms if math.isfinite(n)]
    return {
        "verdict": diagnosis.verdict.value,
        "decades": diagnosis.profile.decades,
        "gain_per_layer": diagnosis.profile.gain_per_layer,
        # the largest over the passes: what clipping bounds
        "max_total_grad_norm": max(norms) if norms else None,
        "max_relative_grad": max(relative, default=None),
        "max_dead_fraction": max(dead, default=None),
        "findings": [f"{finding.severity.value}:{finding.kind.value}" for finding in diagnosis.findings],
    }
