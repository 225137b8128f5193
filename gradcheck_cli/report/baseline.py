"""Baselines: a small record of a model's gradient health, saved once and compared against on later runs.

A baseline pins behaviour, not health: a layer whose gradient ratio moves by more than the tolerance is a
regression in either direction, since an unexplained jump means the model or the probe changed. After an
intended change the user re-creates the baseline. No torch, no printing: the CLI reads and writes files
through these functions and turns a regression into a finding and an exit code.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradcheck_cli import __version__
from gradcheck_cli.common.choices import FindingKind, Severity, Verdict
from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError
from gradcheck_cli.common.files import NotARegularFileError, read_regular_file, write_whole
from gradcheck_cli.judge.diagnosis import Finding, add_findings
from gradcheck_cli.report.report import Report

# Bump the major part when an existing key changes meaning or goes away; a reader accepts any minor.
BASELINE_SCHEMA_VERSION = "2.0"  # 2.0: D read along the whole trend, by name-free kinds (issue 22)
DEFAULT_TOLERANCE = 10.0
# A layer whose gradient moved by less than this factor is not listed as a change: the median over a few
# passes still moves by tens of percent between devices and batches. (A tolerance below it lists less.)
CHANGE_FACTOR = 2.0
# Stored figures keep this many significant digits: enough for factors of 1.01, short enough to diff.
DIGITS = 4
MAX_MESSAGE_ITEMS = 5
_HOW_TO_CREATE = "create it with --save-baseline"


@dataclass
class LayerChange:
    """One layer whose gradient moved, or that exists on one side only."""

    layer: str
    # The figure that moved ("ratio" to the output end, else "backward"), or what happened: "became zero",
    # "was zero", "no longer measured", "newly measured", "new layer", "layer removed".
    what: str
    before: float | None  # that figure in the baseline (None: not measured, or the layer was not there)
    after: float | None  # the same figure now
    factor: float | None  # max(after/before, before/after); inf when one side is zero; None for a new/removed layer
    regression: bool = False


@dataclass
class BaselineComparison:
    target: str
    tolerance: float
    changes: list[LayerChange] = field(default_factory=list)  # largest factor first
    regressions: list[str] = field(default_factory=list)  # one clause each, most telling first

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    @property
    def regressed_layers(self) -> list[str]:
        return [change.layer for change in self.changes if change.regression]


def baseline_key(report: Report, relative_to: Path | None = None) -> str:
    """The name a report is stored under: what was scanned, else its title. A file path is written
    relative to ``relative_to`` (the baseline file's folder), so the same file has the same key whatever
    folder gradcheck runs from, and ``./m.py`` and ``m.py`` are one target; ``package.module:attr`` is
    kept as is."""
    if not report.target:
        return report.title
    location, colon, name = report.target.partition(":")
    if "/" in location or location.endswith(".py") or "\\" in location:
        anchor = Path(relative_to).resolve() if relative_to is not None else Path.cwd()
        relative = os.path.relpath(Path(location).resolve(), anchor)
        return Path(relative).as_posix() + colon + name
    return report.target


def baseline_entry(report: Report, relative_to: Path | None = None) -> dict[str, Any]:
    """What a baseline records for one report; non-finite figures are None, the rest rounded to DIGITS."""
    diagnosis, profile = report.diagnosis, report.diagnosis.profile
    return {
        "target": baseline_key(report, relative_to),
        "verdict": diagnosis.verdict.value,
        "profile": {
            "decades": _rounded(profile.decades),
            "gain_per_layer": _rounded(profile.gain_per_layer),
            "forward_decades": _rounded(profile.forward_decades),
        },
        "layers": [
            {
                "name": layer.name,
                "type": layer.type,
                "status": diagnosis.statuses[layer.name].value,
                "backward": _rounded(layer.backward),
                "ratio": _rounded(diagnosis.ratios.get(layer.name)),
                "weight_grad_norm": _rounded(layer.weight_grad_norm),
                "relative_grad": _rounded(layer.relative_grad),
            }
            for layer in report.result.layers
        ],
        "time_profiles": [{"name": p.name, "decades": _rounded(p.decades)} for p in diagnosis.time_profiles],
        "findings": [
            {"kind": f.kind.value, "severity": f.severity.value}
            for f in diagnosis.findings
            if f.kind is not FindingKind.BASELINE_REGRESSION  # a comparison is not a measurement
        ],
    }


def save_baseline(reports: list[Report], path: Path) -> None:
    """Write one baseline for all the reports, replacing ``path`` atomically: a reader sees the old file or
    the new one, and a failed write leaves the old one (or none) and no temporary file."""
    path = Path(path)
    targets: dict[str, dict[str, Any]] = {}
    for report in reports:
        entry = baseline_entry(report, path.parent)
        if entry["target"] in targets:
            raise GradcheckError(
                f"Two reports share the target {entry['target']!r}; a baseline holds one per target, so save them to separate files."
            )
        targets[entry["target"]] = entry
    document = {
        "schema_version": BASELINE_SCHEMA_VERSION,
        "tool": {"name": "gradcheck", "version": __version__},
        "targets": targets,
    }
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    if path.is_dir():
        raise GradcheckError(f"Cannot write the baseline to {path}: it is a directory; give a file path.")
    try:
        write_whole(path, text)
    except OSError as error:
        raise GradcheckError(f"Cannot write the baseline to {path}: {error.strerror or error}.") from error


def load_baseline(path: Path) -> dict[str, dict[str, Any]]:
    """The entries of a baseline file by target; a GradcheckError that says what to do if it cannot be used."""
    path = Path(path)
    try:
        raw = read_regular_file(path)
    except FileNotFoundError:
        raise GradcheckError(f"No baseline at {path}: {_HOW_TO_CREATE}.") from None
    except IsADirectoryError:
        raise GradcheckError(
            f"The baseline {path} is a directory, not a file: give the file's path, or {_HOW_TO_CREATE}."
        ) from None
    except NotARegularFileError:  # /dev/zero never ends, a FIFO blocks
        raise GradcheckError(
            f"The baseline {path} is not a regular file (a device, FIFO or socket): give the file's path, or "
            f"{_HOW_TO_CREATE}."
        ) from None
    except OSError as error:
        raise GradcheckError(f"Cannot read the baseline {path}: {error.strerror or error}.") from error
    try:
        document = json.loads(raw)
    except ValueError as error:  # JSONDecodeError, or bytes that are not text
        where = (
            f" (line {error.lineno}, column {error.colno}: {error.msg})"
            if isinstance(error, json.JSONDecodeError)
            else ""
        )
        raise GradcheckError(f"The baseline {path} is not JSON{where}: {_HOW_TO_CREATE} again.") from None
    except RecursionError:  # the json module recurses per level of nesting; no baseline nests past five
        raise GradcheckError(
            f"The baseline {path} nests arrays or objects too deeply to be a gradcheck baseline: {_HOW_TO_CREATE} "
            "again."
        ) from None
    if (
        not isinstance(document, dict)
        or not isinstance(document.get("tool"), dict)
        or document["tool"].get("name") != "gradcheck"
    ):
        raise GradcheckError(f"{path} is not a gradcheck baseline: {_HOW_TO_CREATE}.")
    if "targets" not in document and ("reports" in document or "layers" in document):
        raise GradcheckError(f"{path} is a gradcheck report (--format json), not a baseline: {_HOW_TO_CREATE}.")
    version = document.get("schema_version")
    if not isinstance(version, str) or version.split(".")[0] != BASELINE_SCHEMA_VERSION.split(".")[0]:
        raise GradcheckError(
            f"The baseline {path} has schema version {version!r}, which gradcheck {__version__} does not read "
            f"(it reads {BASELINE_SCHEMA_VERSION}): use the gradcheck that wrote it, or {_HOW_TO_CREATE} again."
        )
    targets = document.get("targets")
    if not isinstance(targets, dict):
        raise GradcheckError(f"{path} is not a gradcheck baseline (it has no targets): {_HOW_TO_CREATE} again.")
    for target, entry in targets.items():
        problem = _entry_problem(entry)
        if problem:
            raise GradcheckError(
                f"{path} is not a usable gradcheck baseline: target {target!r} {problem}; {_HOW_TO_CREATE} again."
            )
    return targets


def _entry_problem(entry: Any) -> str | None:
    """What is wrong with one stored entry, so that ``compare`` can trust its shape; None if nothing."""
    if not isinstance(entry, dict):
        return "is not an object"
    if entry.get("verdict") not in {v.value for v in Verdict}:
        return f"has an unknown verdict {entry.get('verdict')!r}"
    if not isinstance(entry.get("profile"), dict):
        return "has no profile"
    layers = entry.get("layers")
    if not isinstance(layers, list) or not all(isinstance(x, dict) and isinstance(x.get("name"), str) for x in layers):
        return "has no list of named layers"
    for layer in layers:
        for key in _LAYER_FIGURES:
            problem = _figure_problem(layer.get(key), at_least_zero=True)
            if problem:
                return f"has a layer {layer['name']!r} whose {key} {problem}"
    findings = entry.get("findings")
    severities = {s.value for s in Severity}
    if not isinstance(findings, list) or not all(
        isinstance(f, dict) and isinstance(f.get("kind"), str) and f.get("severity") in severities for f in findings
    ):
        return "has no list of findings with a kind and a known severity"
    for key in _PROFILE_FIGURES:
        problem = _figure_problem(entry["profile"].get(key), at_least_zero=key == "gain_per_layer")
        if problem:
            return f"has a profile whose {key} {problem}"
    time_profiles = entry.get("time_profiles", [])
    if not isinstance(time_profiles, list) or not all(
        isinstance(p, dict) and isinstance(p.get("name"), str) for p in time_profiles
    ):
        return "has time profiles without a name and decades"
    for series in time_profiles:
        problem = _figure_problem(series.get("decades"), at_least_zero=False)
        if problem:
            return f"has a time profile {series['name']!r} whose decades {problem}"
    return None


# The figures baseline_entry writes: finite numbers, or null where there was none to measure (a NaN or a
# negative norm would make every comparison false, and a layer compared so never regresses).
_LAYER_FIGURES = ("backward", "ratio", "weight_grad_norm", "relative_grad")  # norms and their ratios: >= 0
_PROFILE_FIGURES = ("decades", "gain_per_layer", "forward_decades")


def _figure_problem(value: Any, at_least_zero: bool) -> str | None:
    """What is wrong with a stored figure ("is NaN, not a finite number"), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = {list: "a list", dict: "an object"}.get(type(value)) or repr(value)[:40]
        return f"is {shown}, not a number"
    if not math.isfinite(value):
        return f"is {json.dumps(value)}, not a finite number"
    if at_least_zero and value < 0:
        return f"is {value:g}, below zero"
    return None


def compare(report: Report, entry: dict[str, Any], tolerance: float = DEFAULT_TOLERANCE) -> BaselineComparison:
    """Compare a report with its baseline entry. A regression: a layer's gradient ratio moved by more than
    ``tolerance`` times either way (or became zero, or was zero), a warning or error finding the baseline
    did not have at that severity, a worse verdict, or a depth (or time) trend longer by more than
    log10(tolerance) decades. Layers on one side only are changes, not regressions."""
    if not (isinstance(tolerance, (int, float)) and tolerance > 1 and math.isfinite(tolerance)):
        raise InvalidOptionError(f"The baseline tolerance is a factor greater than 1 (e.g. 10), not {tolerance!r}.")
    current = baseline_entry(report)
    comparison = BaselineComparison(target=current["target"], tolerance=float(tolerance))
    regressions = comparison.regressions
    regressions += _verdict_regressions(entry["verdict"], current["verdict"])
    regressions += _finding_regressions(entry["findings"], current["findings"])
    allowed = math.log10(tolerance)
    regressions += _trend_regressions(
        "the depth trend", entry["profile"].get("decades"), current["profile"]["decades"], allowed
    )
    before_time = {p["name"]: p["decades"] for p in entry.get("time_profiles", [])}
    for series in current["time_profiles"]:
        if series["name"] in before_time:
            what = f"the gradient through time in {series['name']}"
            regressions += _trend_regressions(what, before_time[series["name"]], series["decades"], allowed)
    comparison.changes = _layer_changes(entry["layers"], current["layers"], tolerance)
    regressions += [_change_text(change) for change in comparison.changes if change.regression]
    return comparison


def _verdict_regressions(before: str, after: str) -> list[str]:
    if Verdict(after).rank > Verdict(before).rank:
        return [f"verdict {before} -> {after}"]
    return []


def _finding_regressions(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    """A finding kind at warning or error that the baseline had at a lower severity, or not at all."""
    worst_before = _worst_by_kind(before)
    regressions = []
    for kind, severity in _worst_by_kind(after).items():
        if severity.rank < Severity.WARNING.rank:
            continue
        previous = worst_before.get(kind)
        if previous is None or previous is Severity.INFO:
            regressions.append(f"new {severity.value} finding {kind}")
        elif previous.rank < severity.rank:
            regressions.append(f"finding {kind} {previous.value} -> {severity.value}")
    return regressions


def _worst_by_kind(findings: list[dict[str, Any]]) -> dict[str, Severity]:
    worst: dict[str, Severity] = {}
    for finding in findings:
        severity = Severity(finding["severity"])
        if finding["kind"] not in worst or severity.rank > worst[finding["kind"]].rank:
            worst[finding["kind"]] = severity
    return worst


def _trend_regressions(what: str, before: float | None, after: float | None, allowed: float) -> list[str]:
    """|D| grew by more than ``allowed`` decades; a trend the baseline could not fit counts as 0."""
    if after is None:
        return []
    grown = abs(after) - abs(before or 0.0)
    if grown > allowed:
        start = "none" if before is None else f"10^{before:+.1f}"
        return [f"{what} {start} -> 10^{after:+.1f} ({grown:.1f} decades steeper)"]
    return []


def _layer_changes(before: list[dict[str, Any]], after: list[dict[str, Any]], tolerance: float) -> list[LayerChange]:
    old = {layer["name"]: layer for layer in before}
    new = {layer["name"]: layer for layer in after}
    changes = []
    for name, layer in new.items():
        if name not in old:
            changes.append(LayerChange(name, "new layer", None, _signal(layer), None))
            continue
        change = _layer_change(name, old[name], layer, tolerance)
        if change is not None:
            changes.append(change)
    changes += [
        LayerChange(name, "layer removed", _signal(layer), None, None) for name, layer in old.items() if name not in new
    ]
    # Largest factor first (inf: a gradient that became or was zero); new and removed layers last.
    return sorted(changes, key=lambda c: -c.factor if c.factor is not None else math.inf)


def _signal(layer: dict[str, Any]) -> float | None:
    return layer["ratio"] if layer.get("ratio") is not None else layer.get("backward")


def _layer_change(name: str, old: dict[str, Any], new: dict[str, Any], tolerance: float) -> LayerChange | None:
    # The ratio to the output end is compared when both sides have one; else the raw backward signal (a
    # model whose output end has no gradient has no ratios at all), never one against the other.
    measure = "ratio" if old.get("ratio") is not None and new.get("ratio") is not None else "backward"
    before, after = old.get(measure), new.get(measure)
    before_zero, after_zero = not before, not after  # None or 0.0: no gradient to compare with
    if before_zero and after_zero:
        return None
    if before_zero or after_zero:
        if after_zero:
            what = "became zero" if after == 0 else "no longer measured"
        else:
            what = "was zero" if before == 0 else "newly measured"
        return LayerChange(name, what, before, after, math.inf, regression=True)
    factor = max(after / before, before / after)
    if factor <= min(CHANGE_FACTOR, tolerance):
        return None
    return LayerChange(name, measure, before, after, factor, regression=factor > tolerance)


def _change_text(change: LayerChange) -> str:
    before = _figure(change.before)
    after = _figure(change.after)
    if change.factor is not None and math.isinf(change.factor):
        return f"{change.layer} gradient {before} -> {after} ({change.what})"
    factor = f" (x{change.factor:.1e})" if change.factor is not None else ""
    return f"{change.layer} {change.what} {before} -> {after}{factor}"


def _figure(value: float | None) -> str:
    if value is None:
        return "none"
    return "0" if value == 0 else f"{value:.1e}"


def regression_message(comparison: BaselineComparison) -> str:
    """One paragraph: what regressed (at most MAX_MESSAGE_ITEMS items, then how many more) and what to do.
    Empty when nothing regressed."""
    if not comparison.regressed:
        return ""
    items = comparison.regressions[:MAX_MESSAGE_ITEMS]
    more = len(comparison.regressions) - len(items)
    listed = "; ".join(items) + (f"; and {more} more" if more else "")
    return (
        f"Gradient health regressed against the baseline (tolerance x{comparison.tolerance:g}): {listed}. "
        "Fix the model, or if the change is intended re-create the baseline with --save-baseline."
    )


def _rounded(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{DIGITS}g}")


def apply_baseline(report: Report, comparison: BaselineComparison) -> None:
    """Attach the comparison to the report and, if it regressed, add an error finding that fails the run."""
    report.baseline = comparison
    if not comparison.regressed:
        return
    evidence = {
        "tolerance": comparison.tolerance,
        "regressions": len(comparison.regressions),
        "changed_layers": sum(1 for change in comparison.changes if change.regression),
    }
    finding = Finding(
        FindingKind.BASELINE_REGRESSION, Severity.ERROR, comparison.regressed_layers,
        regression_message(comparison), evidence,
    )  # fmt: skip
    report.diagnosis = add_findings(report.diagnosis, [finding])
