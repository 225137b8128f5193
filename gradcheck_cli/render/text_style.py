"""How the Rich reports (the scan's and the history's) write a verdict, a layer status, a finding's severity,
a fix's outcome and a number. Colour is decoration only: every status is also a word."""

from __future__ import annotations

from rich.text import Text

from gradcheck_cli.common.choices import LayerStatus, Severity, TrialOutcome, Verdict

OUTCOME_STYLE = {
    TrialOutcome.CURED: "bold green",
    TrialOutcome.HELPED: "green",
    TrialOutcome.NO_CHANGE: "yellow",
    TrialOutcome.WORSE: "bold red",
}
VERDICT_STYLE = {
    Verdict.HEALTHY: "bold green",
    Verdict.VANISHING: "bold yellow",
    Verdict.EXPLODING: "bold red",
    Verdict.NONFINITE: "bold magenta",
}
STATUS_STYLE = {
    LayerStatus.OK: "green",
    LayerStatus.WEAK: "yellow",
    LayerStatus.HIGH: "red",
    LayerStatus.VANISHING: "bold yellow",
    LayerStatus.EXPLODING: "bold red",
    LayerStatus.ZERO: "bold yellow",
    LayerStatus.NONFINITE: "bold magenta",
    LayerStatus.NO_GRAD: "yellow",
    LayerStatus.FROZEN: "dim",
    LayerStatus.NOT_RUN: "dim",
    LayerStatus.IGNORED: "dim",
}
SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "bold yellow", Severity.INFO: "bold blue"}


def verdict_text(verdict: Verdict) -> Text:
    return Text(verdict.value.upper(), style=VERDICT_STYLE[verdict])


def number_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    return f"{value:.2e}" if (abs(value) < 1e-2 or abs(value) >= 1e4) else f"{value:.3g}"


def decades_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"
