"""``--verify``: each suggested fix applied to a copy of the model and measured again.

The fix is applied mechanically where that is possible (``transforms``: swap activation modules,
re-initialize weights, zero the weight that ends each residual branch, insert normalization into an
``nn.Sequential``, ...), clipping is measured by clipping the copy's gradients, and a fix that needs a change
of the forward code is reported as not applied, with its code. The user's model is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from gradcheck_cli.common.batches import BatchFn, LossFn
from gradcheck_cli.common.choices import FindingKind, FixId, TrialOutcome, Verdict
from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.examine.check_model import check_model
from gradcheck_cli.judge.diagnosis import Diagnosis, Thresholds
from gradcheck_cli.judge.fixes import Fix
from gradcheck_cli.measure.placement import AS_PLACED, Placement
from gradcheck_cli.measure.tensors import batch_on_device
from gradcheck_cli.report.report import FixTrial, Report
from gradcheck_cli.trials.transforms import FixNotApplicable, apply_fix_to_copy

LOSS_SCALING_NOTE = (
    "it changes the training step (a GradScaler around backward and optimizer.step, or bf16 autocast), "
    "not the model: nothing to measure on a copy"
)
LEARNING_RATE_NOTE = (
    "the learning rate changes the optimizer's steps, not the gradients at initialization; "
    "see it with --steps N --lr {lr}"
)


def suggested_fixes(report: Report) -> list[Fix]:
    """Every fix of every finding measured at initialization once, in the report's order (errors first,
    best supported first). Findings that appeared during --steps are about training, not initialization."""
    seen: set[tuple[str, str]] = set()
    fixes = []
    for finding in report.diagnosis.findings:
        if "measured" in finding.evidence:
            continue
        for fix in finding.fixes:
            if (fix.id, fix.title) not in seen:
                seen.add((fix.id, fix.title))
                fixes.append(fix)
    return fixes


# A fix "helped" or made things "worse" when it moved the depth trend by at least one decade: a tenfold change
# of the gradient reaching the input end, the step at which diagnosis.DECADES_WARNING starts to speak. Every
# healthy design measured for GRADIENTS.md sat within 0.5 decades of flat, so a smaller move is no change.
OUTCOME_DECADES = 1.0


def verify_fixes(report: Report, try_fix: Callable[[Fix], FixTrial]) -> list[FixTrial]:
    return judge_trials(report, [try_fix(fix) for fix in suggested_fixes(report)])


def judge_trials(report: Report, trials: list[FixTrial]) -> list[FixTrial]:
    """Each trial's outcome against ``report``, ranked: cured first, then helped, no change, worse, then the
    fixes that could not be applied; equals keep their order (the report's)."""
    for trial in trials:
        judge_trial(report, trial)
    return sorted(trials, key=lambda trial: len(TrialOutcome) if trial.outcome is None else trial.outcome.rank)


def judge_trial(report: Report, trial: FixTrial) -> FixTrial:
    """Set the trial's outcome against ``report`` (where the fix was applied and measured)."""
    if trial.report is not None:
        depth_before, time_before = trends(report.diagnosis)
        depth_after, time_after = trends(trial.report.diagnosis)
        trial.outcome = trial_outcome(
            report.verdict, depth_before, trial.report.verdict, depth_after, time_before, time_after
        )
    return trial


def trends(diagnosis: Diagnosis) -> tuple[float | None, float | None]:
    """The trends the verdict reads: (across the layers, along the steepest recurrent module's time steps),
    each signed (< 0 vanishing, > 0 exploding); None where none was measured.

    Where zero-initialized layers block the gradient to others (a zero_init finding: Fixup, zero_init_residual,
    or the zero_residual fix just applied), the depth trend is that of the copy the zero-init check stepped until
    every layer got a gradient, as the verdict is (zero_init.settle_zero_init): at initialization the blocked
    layers have none to read a trend from."""
    depth = diagnosis.profile.decades
    for finding in diagnosis.findings:
        if finding.kind is FindingKind.ZERO_INIT and finding.evidence.get("decades_after_step") is not None:
            depth = finding.evidence["decades_after_step"]
    return _steepest([depth]), _steepest([series.decades for series in diagnosis.time_profiles])


def _steepest(trends: Sequence[float | None]) -> float | None:
    return max((d for d in trends if d is not None and math.isfinite(d)), key=abs, default=None)


def trial_outcome(
    before: Verdict,
    before_decades: float | None,
    after: Verdict,
    after_decades: float | None,
    before_time: float | None = None,
    after_time: float | None = None,
) -> TrialOutcome:
    """What a fix did: cured (now healthy), helped (a trend shrank by OUTCOME_DECADES, same direction),
    no change, or worse (a trend grew by OUTCOME_DECADES, or the verdict turned: healthy -> unhealthy,
    vanishing <-> exploding, finite -> nonfinite).

    ``*_decades`` is the depth trend, ``*_time`` the steepest trend through time (recurrent models): each measured
    before and after is judged on its own, so that a fix that removes a stacked LSTM's loss through depth helped
    even while its loss through time stays (issue 22). Where one shrank and the other grew, the steeper of the two
    before and after decides."""
    if after is Verdict.HEALTHY and before is not Verdict.HEALTHY:
        return TrialOutcome.CURED
    if after is not before:
        # nonfinite -> vanishing or exploding: the gradients are numbers again, whatever their trend
        return TrialOutcome.HELPED if before is Verdict.NONFINITE else TrialOutcome.WORSE
    pairs = [
        (b, a)
        for b, a in ((before_decades, after_decades), (before_time, after_time))
        if b is not None and a is not None
    ]
    shrinks = [abs(b) - abs(a) for b, a in pairs]
    helped = any(shrink >= OUTCOME_DECADES for shrink in shrinks)
    worse = any(shrink <= -OUTCOME_DECADES for shrink in shrinks)
    if helped and worse:
        shrink = abs(_steepest([b for b, _ in pairs])) - abs(_steepest([a for _, a in pairs]))
        helped, worse = shrink >= OUTCOME_DECADES, shrink <= -OUTCOME_DECADES
    if helped:
        return TrialOutcome.HELPED
    if worse:
        return TrialOutcome.WORSE
    return TrialOutcome.NO_CHANGE


def try_on_copy(
    model: nn.Module,
    make_batch: BatchFn,
    loss_fn: LossFn,
    fix: Fix,
    *,
    passes: int,
    seed: int,
    thresholds: Thresholds | None,
    title: str,
    placement: Placement = AS_PLACED,
) -> FixTrial:
    """One fix on a copy of a user's model (scan), measured with the same batches and loss, under the same
    ``placement``."""
    if fix.id == FixId.CLIPPING.value:
        max_norm = (fix.params or {}).get("max_norm")
        if max_norm is None:
            return FixTrial(fix.id, "no clipping threshold could be derived from the measured norms", None, fix.title)
        report = check_model(
            model, make_batch, loss_fn, passes=passes, seed=seed, thresholds=thresholds, title=title,
            clip_grad_norm=max_norm, placement=placement,
        )  # fmt: skip
        return FixTrial(fix.id, f"gradients clipped to a total norm of {max_norm:g}", report, fix.title)
    if fix.id == FixId.LEARNING_RATE.value:
        lr = (fix.params or {}).get("lr")
        return FixTrial(fix.id, LEARNING_RATE_NOTE.format(lr=f"{lr:g}"), None, fix.title)
    if fix.id == FixId.LOSS_SCALING.value:
        return FixTrial(fix.id, LOSS_SCALING_NOTE, None, fix.title)
    # BatchNorm1d after a Linear fails on (batch, sequence, features) inputs, where LayerNorm fits.
    variants = (
        [fix.params, {**(fix.params or {}), "norm": "layer"}] if fix.id == FixId.BATCHNORM.value else [fix.params]
    )
    for params in variants:
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # the re-drawn weights are the same for the same seed
                changed, description = apply_fix_to_copy(model, fix.id, params, _forward_loss(make_batch, loss_fn))
        except FixNotApplicable as error:
            return FixTrial(fix.id, str(error), None, fix.title)
        except ValueError:
            return FixTrial(fix.id, "it needs a change of the forward code (see the fix's code)", None, fix.title)
        try:
            report = check_model(
                changed, make_batch, loss_fn, passes=passes, seed=seed, thresholds=thresholds, title=title,
                placement=placement,
            )  # fmt: skip
        except GradcheckError as error:
            failure = error
            continue
        return FixTrial(fix.id, description, report, fix.title)
    return FixTrial(fix.id, f"the changed copy failed to run ({failure})", None, fix.title)


def _forward_loss(make_batch: BatchFn, loss_fn: LossFn) -> Callable[[nn.Module], torch.Tensor]:
    """One forward pass of a copy on the first pass's batch, and its loss: where a transform reads the graph."""

    def forward_loss(copy: nn.Module) -> torch.Tensor:
        batch = batch_on_device(make_batch(0), list(copy.parameters()))
        return loss_fn(copy(*batch.args, **batch.kwargs), batch)

    return forward_loss
