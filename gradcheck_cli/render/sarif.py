"""``--format sarif``: a SARIF 2.1.0 log for code-scanning uploads (e.g. github/codeql-action/upload-sarif).

One run holds every target's results; one result per finding, placed at the line that defines the model
(``report.source_path``/``source_line``) or, for a model with no source file (the demo), at a logical
location named after the report.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from gradcheck_cli import __version__
from gradcheck_cli.common.choices import FindingKind, Severity
from gradcheck_cli.judge.diagnosis import Finding
from gradcheck_cli.render.interface import RenderOptions
from gradcheck_cli.render.json import json_safe
from gradcheck_cli.report.report import Report

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/gradcheck/gradcheck"
SRCROOT = "%SRCROOT%"
FINGERPRINT = "gradcheckTargetKind/v1"
LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}

# kind -> (short description, full description, default level). A result's own level follows its finding's
# severity; the default is what the kind usually is.
RULES: dict[FindingKind, tuple[str, str, str]] = {
    FindingKind.VANISHING_GRADIENT: (
        "Vanishing gradients through depth",
        "The backward signal shrinks layer by layer from the loss toward the input, so the layers near the "
        "input barely learn.",
        "error",
    ),
    FindingKind.EXPLODING_GRADIENT: (
        "Exploding gradients through depth",
        "The backward signal grows layer by layer from the loss toward the input, so steps on the layers near "
        "the input are too large and training diverges.",
        "error",
    ),
    FindingKind.VANISHING_ACTIVATION: (
        "Activations collapse through depth",
        "The forward activations shrink by orders of magnitude from the input end to the output end.",
        "error",
    ),
    FindingKind.EXPLODING_ACTIVATION: (
        "Activations blow up through depth",
        "The forward activations grow by orders of magnitude from the input end to the output end.",
        "error",
    ),
    FindingKind.LARGE_RELATIVE_GRADIENT: (
        "Gradient large relative to the weights",
        "A layer's gradient norm is large relative to its weight norm: one optimizer step at the given "
        "learning rate rewrites a large share of the layer.",
        "warning",
    ),
    FindingKind.ZERO_GRADIENT: (
        "Trainable layers get no gradient",
        "Trainable layers receive an exactly-zero gradient or none at all: they are off the loss's path, "
        "never run, or the gradient underflows before reaching them.",
        "error",
    ),
    FindingKind.NONFINITE: (
        "NaN or infinite values",
        "The loss, the activations or the gradients contain NaN or infinite values.",
        "error",
    ),
    FindingKind.VANISHING_THROUGH_TIME: (
        "Vanishing gradients through time",
        "In a recurrent module the gradient reaching early time steps is orders of magnitude smaller than at "
        "the last step, so long-range dependencies are not learned.",
        "error",
    ),
    FindingKind.EXPLODING_THROUGH_TIME: (
        "Exploding gradients through time",
        "In a recurrent module the gradient grows from the last time step toward the first.",
        "error",
    ),
    FindingKind.NORMALIZED_GROWTH: (
        "Gradient growth that normalization explains",
        "The backward signal grows toward the input no faster per block (per layer without skips) than "
        "normalized layers make it, with the forward signal flat: usual for BatchNorm nets, which train from it. "
        "A warning past two decades: watch the first steps.",
        "note",
    ),
    FindingKind.ZERO_INIT: (
        "Zero-initialized layers block the gradient by design",
        "Zero-initialized layers (Fixup, SkipInit, zero_init_residual) block the gradient at initialization "
        "and let it through after a training step: not a vanishing gradient.",
        "note",
    ),
    FindingKind.FP16_RANGE: (
        "Gradients outside fp16's range",
        "Under mixed precision (--amp), many gradient elements fall below fp16's smallest normal number "
        "(6.1e-5) before loss scaling, or above its largest (65504): fp16 training needs a loss scale, or bf16.",
        "warning",
    ),
    FindingKind.BASELINE_REGRESSION: (
        "Worse than the saved baseline",
        "The gradient health is worse than in the baseline saved earlier (--baseline): a change to the model "
        "made the gradient flow worse by more than the tolerance.",
        "error",
    ),
}
# A kind added to FindingKind and not described above still gets a rule (the test asks for a description).
_UNDESCRIBED = ("gradcheck finding", "A gradient-health finding of gradcheck.", "warning")


class SarifRenderer:
    def render(self, report: Report, stream: TextIO, options: RenderOptions) -> None:
        self.render_many([report], stream, options)

    def render_many(self, reports: list[Report], stream: TextIO, options: RenderOptions) -> None:
        kinds = list(FindingKind)
        results = [
            _result(report, finding, kinds.index(finding.kind))
            for report in reports
            for finding in report.diagnosis.findings
        ]
        log = {
            "$schema": SCHEMA,
            "version": "2.1.0",
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": "gradcheck",
                            "version": __version__,
                            "semanticVersion": __version__,
                            "informationUri": INFORMATION_URI,
                            "rules": [_rule(kind) for kind in kinds],
                        }
                    },
                    "columnKind": "unicodeCodePoints",
                    "results": results,
                }
            ],
        }
        stream.write(json.dumps(json_safe(log), indent=2, allow_nan=False, default=str))
        stream.write("\n")


def _rule(kind: FindingKind) -> dict[str, Any]:
    short, full, level = RULES.get(kind, _UNDESCRIBED)
    return {
        "id": kind.value,
        "name": "".join(word.capitalize() for word in kind.value.split("_")),
        "shortDescription": {"text": short},
        "fullDescription": {"text": full},
        "defaultConfiguration": {"level": level},
        "properties": {"verdict": kind.verdict.value, "tags": ["gradients", kind.verdict.value]},
    }


def _result(report: Report, finding: Finding, rule_index: int) -> dict[str, Any]:
    target = report.target or report.title
    text = [finding.message]
    if finding.causes:
        text.append(f"Cause: {finding.causes[0].summary}")
    if finding.fixes:
        text.append(f"Fix: [{finding.fixes[0].id}] {finding.fixes[0].title}")
    fingerprint = hashlib.sha256(f"{target}\0{finding.kind.value}".encode()).hexdigest()[:32]
    return {
        "ruleId": finding.kind.value,
        "ruleIndex": rule_index,
        "level": LEVEL[finding.severity],
        "message": {"text": " ".join(text)},
        "locations": [_location(report)],
        "partialFingerprints": {FINGERPRINT: fingerprint},
        "properties": {
            "target": target,
            "severity": finding.severity.value,
            "layers": list(finding.layers),
            "evidence": dict(finding.evidence),
            "causes": [cause.id.value for cause in finding.causes],
            "fixes": [fix.id for fix in finding.fixes],
        },
    }


def _location(report: Report) -> dict[str, Any]:
    if report.source_path is None:
        return {"logicalLocations": [{"name": report.title, "fullyQualifiedName": report.title, "kind": "module"}]}
    path = source_path(report.source_path)
    if Path(path).is_absolute():
        # Outside the working directory: no %SRCROOT%-relative form exists, so an absolute file URI.
        artifact = {"uri": Path(path).as_uri()}
    else:
        artifact = {"uri": quote(path, safe="/"), "uriBaseId": SRCROOT}
    physical: dict[str, Any] = {"artifactLocation": artifact}
    if report.source_line is not None:
        physical["region"] = {"startLine": report.source_line}
    return {"physicalLocation": physical}


def source_path(path: str) -> str:
    """The path as code scanning and annotations want it: relative to the working directory (the
    repository root in CI) with forward slashes, or absolute when it lies outside."""
    absolute = os.path.abspath(path)
    try:
        relative = os.path.relpath(absolute)
    except ValueError:  # another drive (Windows)
        return Path(absolute).as_posix()
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return Path(absolute).as_posix()
    return Path(relative).as_posix()
