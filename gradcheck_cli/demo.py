"""``gradcheck demo``: a preset deep model, its report, and what the first applicable fix does to it."""

from __future__ import annotations

from dataclasses import fields

from gradcheck_cli.api import check_model
from gradcheck_cli.choices import FixId
from gradcheck_cli.diagnosis import Thresholds
from gradcheck_cli.presets import DemoSpec, apply_fix, build_preset
from gradcheck_cli.probe import ProgressFn
from gradcheck_cli.report import FixTrial, Report


def run_demo(
    spec: DemoSpec,
    *,
    seed: int = 0,
    passes: int = 3,
    thresholds: Thresholds | None = None,
    try_fix: bool = True,
    progress: ProgressFn | None = None,
) -> Report:
    """Report on the preset; when it has an error finding whose fix can be applied to the preset,
    build the fixed preset with the same seed, measure it, and attach it as the report's fix trial."""
    spec = spec.resolved()
    report = _measure(spec, seed, passes, thresholds, progress)
    if not try_fix or not report.fails():
        return report
    for finding in report.diagnosis.findings:
        for fix in finding.fixes:
            fixed = apply_fix(spec, FixId(fix.id))
            if fixed is None:
                continue
            after = _measure(fixed, seed, passes, thresholds, progress)
            report.fix_trial = FixTrial(fix.id, describe_change(spec, fixed), after)
            return report
    return report


def _measure(spec: DemoSpec, seed: int, passes: int, thresholds: Thresholds | None, progress) -> Report:
    preset = build_preset(spec, seed=seed)
    return check_model(
        preset.model, preset.make_batch, preset.loss, passes=passes, seed=seed, thresholds=thresholds,
        title=spec.describe(), structure=preset.structure, progress=progress,
    )  # fmt: skip


def describe_change(before: DemoSpec, after: DemoSpec) -> str:
    """The fields a fix changed, e.g. "activation: sigmoid -> relu, init: default -> kaiming"."""
    changes = []
    for field in fields(DemoSpec):
        old, new = getattr(before, field.name), getattr(after, field.name)
        if old != new:
            changes.append(f"{field.name.replace('_', ' ')}: {_show(old)} -> {_show(new)}")
    return ", ".join(changes)


def _show(value) -> str:
    if value is None:
        return "default"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(getattr(value, "value", value))
