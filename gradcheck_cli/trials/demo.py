"""``gradcheck demo``: a preset deep model, its report, and what the suggested fixes do to it."""

from __future__ import annotations

from dataclasses import fields

from gradcheck_cli.common.batches import ProgressFn
from gradcheck_cli.common.choices import FixId, Optimizer, TrialOutcome
from gradcheck_cli.examine.check_model import check_model
from gradcheck_cli.judge.diagnosis import Thresholds
from gradcheck_cli.judge.fixes import Fix
from gradcheck_cli.measure.placement import AS_PLACED, Placement
from gradcheck_cli.report.report import FixTrial, Report
from gradcheck_cli.trials.presets import DemoSpec, apply_fix, build_preset
from gradcheck_cli.trials.steps import track_training
from gradcheck_cli.trials.verify import judge_trial, suggested_fixes, try_on_copy, verify_fixes


def run_demo(
    spec: DemoSpec,
    *,
    seed: int = 0,
    passes: int = 3,
    thresholds: Thresholds | None = None,
    try_fix: bool = True,
    verify: bool = False,
    steps: int = 0,
    optimizer: Optimizer = Optimizer.SGD,
    ignore: tuple[str, ...] = (),
    progress: ProgressFn | None = None,
    placement: Placement = AS_PLACED,
) -> Report:
    """Report on the preset. With ``verify``, every suggested fix is measured on a copy; otherwise, when
    there is an error finding, the fixes that the preset can take are tried in the report's order until one
    cures (_until_cured). ``steps`` trains a copy. Every preset is built on ``placement.device`` and measured
    under ``placement.amp``."""
    spec = spec.resolved()
    report = _measure(spec, seed, passes, thresholds, progress, placement, ignore)
    if steps:
        preset = build_preset(spec, seed=seed, placement=placement)
        lr = (thresholds or Thresholds()).lr
        track_training(
            preset.model, preset.make_batch, preset.loss, report, steps=steps, optimizer=optimizer, lr=lr,
            passes=passes, seed=seed, thresholds=thresholds, structure=preset.structure, placement=placement,
        )  # fmt: skip
    if verify:
        report.fix_trials = verify_fixes(
            report, lambda fix: _trial(spec, fix, seed, passes, thresholds, progress, placement)
        )
    elif try_fix and report.fails():
        report.fix_trials = _until_cured(spec, report, seed, passes, thresholds, progress, placement)
        report.fix_trials_until_cured = True
    return report


def _until_cured(spec, report, seed, passes, thresholds, progress, placement) -> list[FixTrial]:
    """The suggested fixes that are preset variants, each measured and judged (verify.judge_trial) in the report's
    order until one cures: the trials in that order, the cure last, or all of them when none cured. A fix that
    gives a variant already tried is not tried again (issue 22)."""
    trials: list[FixTrial] = []
    tried: set[DemoSpec] = set()
    for fix in suggested_fixes(report):
        fixed = apply_fix(spec, FixId(fix.id), fix.params)
        if fixed is None or fixed in tried:
            continue
        tried.add(fixed)
        after = _measure(fixed, seed, passes, thresholds, progress, placement)
        trial = judge_trial(report, FixTrial(fix.id, describe_change(spec, fixed), after, fix.title))
        trials.append(trial)
        if trial.outcome is TrialOutcome.CURED:
            break
    return trials


def _trial(spec: DemoSpec, fix: Fix, seed, passes, thresholds, progress, placement) -> FixTrial:
    """The preset variant with the fix where there is one (so He init comes with ReLU, as in the fix's
    code); else the fix applied to a copy of the built preset, as for a user's model."""
    fixed = apply_fix(spec, FixId(fix.id), fix.params)
    if fixed is not None:
        return FixTrial(
            fix.id,
            describe_change(spec, fixed),
            _measure(fixed, seed, passes, thresholds, progress, placement),
            fix.title,
        )
    preset = build_preset(spec, seed=seed, placement=placement)
    return try_on_copy(
        preset.model, preset.make_batch, preset.loss, fix, passes=passes, seed=seed, thresholds=thresholds,
        title=spec.describe(), placement=placement,
    )  # fmt: skip


def _measure(
    spec: DemoSpec,
    seed: int,
    passes: int,
    thresholds: Thresholds | None,
    progress: ProgressFn | None,
    placement: Placement,
    ignore: tuple[str, ...] = (),
) -> Report:
    preset = build_preset(spec, seed=seed, placement=placement)
    return check_model(
        preset.model, preset.make_batch, preset.loss, passes=passes, seed=seed, thresholds=thresholds,
        title=spec.describe(), structure=preset.structure, progress=progress, ignore=ignore, placement=placement,
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
