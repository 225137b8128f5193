"""The report: measurements, diagnosis and (for the demo) a fix tried on a copy. Renderers read it."""

from __future__ import annotations

from dataclasses import dataclass, field

from gradcheck_cli.choices import FailOn, Severity, Verdict
from gradcheck_cli.diagnosis import Diagnosis
from gradcheck_cli.stats import ProbeResult


@dataclass
class FixTrial:
    """A suggested fix applied to a copy of the model and measured again."""

    fix_id: str
    description: str  # what changed, e.g. "activation sigmoid -> relu, init default -> kaiming"
    report: Report


@dataclass
class Report:
    title: str  # what was measured, e.g. "MLP depth 50 x 256, sigmoid, default init"
    result: ProbeResult
    diagnosis: Diagnosis
    fix_trial: FixTrial | None = None
    # How it was measured, as (what, how) rows: which model, inputs, output and loss were used.
    context: list[tuple[str, str]] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return self.diagnosis.verdict

    def fails(self, fail_on: FailOn = FailOn.ERROR) -> bool:
        """True when a finding is at or above the failing severity (exit code 1 in the CLI)."""
        if fail_on is FailOn.NEVER:
            return False
        threshold = Severity(fail_on.value)
        return any(f.severity.rank >= threshold.rank for f in self.diagnosis.findings)
