"""``--verify``: each suggested fix applied to a copy of the model and measured again.

The fix is applied mechanically where that is possible (``transforms``: swap activation modules,
re-initialize weights, insert normalization into an ``nn.Sequential``, ...), clipping is measured by
clipping the copy's gradients, and a fix that needs a change of the forward code is reported as not
applied, with its code. The user's model is never touched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gradcheck_cli.api import check_model
from gradcheck_cli.choices import FixId
from gradcheck_cli.diagnosis import Thresholds
from gradcheck_cli.errors import GradcheckError
from gradcheck_cli.fixes import Fix
from gradcheck_cli.probe import BatchFn, LossFn
from gradcheck_cli.report import FixTrial, Report
from gradcheck_cli.transforms import FixNotApplicable, apply_fix_to_copy

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


def verify_fixes(report: Report, try_fix: Callable[[Fix], FixTrial]) -> list[FixTrial]:
    return [try_fix(fix) for fix in suggested_fixes(report)]


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
) -> FixTrial:
    """One fix on a copy of a user's model (scan), measured with the same batches and loss."""
    if fix.id == FixId.CLIPPING.value:
        max_norm = (fix.params or {}).get("max_norm")
        if max_norm is None:
            return FixTrial(fix.id, "no clipping threshold could be derived from the measured norms", None, fix.title)
        report = check_model(
            model, make_batch, loss_fn, passes=passes, seed=seed, thresholds=thresholds, title=title,
            clip_grad_norm=max_norm,
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
                changed, description = apply_fix_to_copy(model, fix.id, params)
        except FixNotApplicable as error:
            return FixTrial(fix.id, str(error), None, fix.title)
        except ValueError:
            return FixTrial(fix.id, "it needs a change of the forward code (see the fix's code)", None, fix.title)
        try:
            report = check_model(
                changed, make_batch, loss_fn, passes=passes, seed=seed, thresholds=thresholds, title=title
            )
        except GradcheckError as error:
            failure = error
            continue
        return FixTrial(fix.id, description, report, fix.title)
    return FixTrial(fix.id, f"the changed copy failed to run ({failure})", None, fix.title)
