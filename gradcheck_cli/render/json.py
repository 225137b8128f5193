"""``--format json``: one JSON document (schema in docs/json-schema.md). Its keys are public API."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

from gradcheck_cli import __version__
from gradcheck_cli.common.choices import Verdict
from gradcheck_cli.render.interface import RenderOptions
from gradcheck_cli.report.report import FixTrial, Report, summarize

if TYPE_CHECKING:
    from gradcheck_cli.common.stats import LayerStats, ProbeResult
    from gradcheck_cli.judge.depth_trend import DepthProfile
    from gradcheck_cli.judge.diagnosis import Diagnosis, Finding

# Bump on any change to an existing key's meaning or removal (new keys are a minor change). See CHANGELOG.
SCHEMA_VERSION = "2.0"


class JsonRenderer:
    def render(self, report: Report, stream: TextIO, options: RenderOptions) -> None:
        _write({**_header(), **report_to_dict(report)}, stream)

    def render_many(self, reports: list[Report], stream: TextIO, options: RenderOptions) -> None:
        """One document whose `reports` holds each report and whose `verdict` is the worst of theirs."""
        worst = max((report.verdict for report in reports), key=lambda verdict: verdict.rank, default=Verdict.HEALTHY)
        _write({**_header(), "verdict": worst.value, "reports": [report_to_dict(r) for r in reports]}, stream)


def _header() -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "tool": {"name": "gradcheck", "version": __version__}}


def _write(document: dict[str, Any], stream: TextIO) -> None:
    stream.write(json.dumps(json_safe(document), indent=2, allow_nan=False))
    stream.write("\n")


def report_to_dict(report: Report) -> dict[str, Any]:
    """The report as the JSON document's body (docs/json-schema.md); the keys in this order."""
    result, diagnosis = report.result, report.diagnosis
    return {
        "title": report.title,
        "verdict": diagnosis.verdict.value,
        "context": dict(report.context),
        "model": _model(result),
        "profile": _profile(diagnosis.profile),
        "time_profiles": [asdict(series) for series in diagnosis.time_profiles],
        "total_grad_norms": result.total_grad_norms,
        "losses": result.losses,
        "layers": [_layer(layer, diagnosis) for layer in result.layers],
        "recurrent": [asdict(series) for series in result.recurrent],
        "activations": [asdict(site) for site in result.activations],
        "nonfinite_origin": asdict(result.nonfinite_origin) if result.nonfinite_origin else None,
        "findings": [_finding(finding) for finding in diagnosis.findings],
        "thresholds": asdict(diagnosis.thresholds),
        "fix_trials": [_fix_trial(trial) for trial in report.fix_trials],
        "baseline": _baseline(report.baseline),
        "training": {
            "setup": report.training_setup or None,
            "steps": [{"step": step.step, "loss": step.loss, **summarize(step.report)} for step in report.training],
        },
    }


def _model(result: ProbeResult) -> dict[str, Any]:
    """What was measured: the model's size and structure, and how (batch, passes, seed, dtype, device)."""
    return {
        "name": result.model_name,
        "parameters": result.param_count,
        "trainable_parameters": result.trainable_param_count,
        "layers": len(result.layers),
        "batch_size": result.batch_size,
        "passes": result.passes,
        "seed": result.seed,
        "seconds": round(result.seconds, 4),
        "dtype": result.dtype,
        "device": result.device,
        "amp": result.amp,
        "loss_scale": result.loss_scale,
        "structure": asdict(result.structure),
    }


def _profile(profile: DepthProfile) -> dict[str, Any]:
    """The depth trend: the backward signal from the output end to the input end, and the forward one."""
    return {
        "decades": profile.decades,
        "gain_per_layer": profile.gain_per_layer,
        "depth_scale_layers": profile.depth_scale,
        "forward_decades": profile.forward_decades,
        "trend_layers": len(profile.layers),
        "trend_layer_type": profile.layer_type,
        "blocks": profile.blocks,
        "gain_per_block": profile.gain_per_block,
        "zero_layers": len(profile.zero_layers),
    }


def _layer(layer: LayerStats, diagnosis: Diagnosis) -> dict[str, Any]:
    return {
        **layer_figures(layer, diagnosis),
        "weight_std": layer.weight_std,
        "fan_in": layer.fan_in,
        "calls": layer.calls,
        "parameters": layer.param_count,
        "trainable": layer.trainable,
        "shared_with": layer.shared_with,
        "nonfinite": layer.nonfinite,
        "fp16_underflow": layer.fp16_underflow,
        "fp16_overflow": layer.fp16_overflow,
        "spread": {key: list(value) for key, value in layer.spread.items()},
    }


def _finding(finding: Finding) -> dict[str, Any]:
    return {
        "kind": finding.kind.value,
        "verdict": finding.kind.verdict.value,
        "severity": finding.severity.value,
        "layers": finding.layers,
        "message": finding.message,
        "evidence": finding.evidence,
        "causes": [
            {
                "id": cause.id.value,
                "summary": cause.summary,
                "decades": round(cause.decades, 3),
                "fixes": list(cause.fixes),
                "evidence": cause.evidence,
            }
            for cause in finding.causes
        ],
        "fixes": [
            {"id": fix.id, "title": fix.title, "detail": fix.detail, "code": fix.code, "params": fix.params or {}}
            for fix in finding.fixes
        ],
    }


def _fix_trial(trial: FixTrial) -> dict[str, Any]:
    """A fix tried on a copy, with the copy's whole report when the fix could be applied."""
    return {
        "fix_id": trial.fix_id,
        "title": trial.title,
        "applied": trial.applied,
        "outcome": trial.outcome.value if trial.outcome is not None else None,
        "change": trial.description,
        "report": report_to_dict(trial.report) if trial.report is not None else None,
    }


def _baseline(comparison: Any) -> dict[str, Any] | None:
    """The --baseline comparison: what moved, layer by layer, and what counts as a regression."""
    if comparison is None:
        return None
    return {
        "tolerance": comparison.tolerance,
        "regressed": comparison.regressed,
        "regressions": comparison.regressions,
        "changes": [asdict(change) for change in comparison.changes],
    }


def layer_figures(layer: LayerStats, diagnosis: Diagnosis) -> dict[str, Any]:
    """The figures every JSON document lists for a layer (scan report, monitor history), in this order."""
    return {
        "name": layer.name,
        "type": layer.type,
        "status": diagnosis.statuses[layer.name].value,
        "grad_norm": layer.grad_norm,
        "weight_grad_norm": layer.weight_grad_norm,
        "other_grad_norm": layer.other_grad_norm,
        "weight_norm": layer.weight_norm,
        "relative_grad": layer.relative_grad,
        "backward": layer.backward,
        "ratio_to_output": diagnosis.ratios.get(layer.name),
        "forward_rms": layer.forward_rms,
    }


def json_safe(value: Any) -> Any:
    """JSON has no NaN or Infinity: non-finite numbers become null (the layer's `nonfinite` says why).
    Every JSON-based format (this one, SARIF) writes through it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
