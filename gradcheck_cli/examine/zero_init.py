"""Zero-initialized designs: exact zeros on purpose, and the optimizer steps that unlock them (issue 22).

ReZero (alpha = 0; Bachlechner et al. 2020), SkipInit (De & Smith 2020), NF nets (zero gains; Brock et al.
2021), Fixup (zero last conv per branch and a zero head; Zhang, Dauphin & Ma 2019), torchvision's
``zero_init_residual`` and zero heads start with parameters at exactly zero that scale a path: y = x + 0 * f(x)
or y = 0 * h sends nothing back into f or h, so every layer behind such a zero gets a gradient of exactly zero.
A step moves each zero that gets a gradient, and the layers behind it get theirs from then on; zeros behind
zeros unlock one per step (Fixup: its head, then the branches behind it). A copy is stepped as many times as
the chain needs, at most ZERO_INIT_MAX_STEPS, and judged then (../shared/GRADIENTS.md, "Zero-initialized
designs come in chains"). The zeros are read from the parameters' values (``LayerStats.zero_parameters``),
never from their names.

Measuring is the probe's and judging the diagnosis's: this module decides which zeros may explain a finding,
runs the steps, and turns what they show into one info finding. No torch at import.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from gradcheck_cli.common.choices import CauseId, FindingKind, Severity, Verdict
from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.stats import LayerStats, ModelStructure, ProbeResult
from gradcheck_cli.judge.causes import zero_init_cause
from gradcheck_cli.judge.diagnosis import Diagnosis, Finding, Thresholds, add_findings, diagnose

if TYPE_CHECKING:
    from torch import nn

    from gradcheck_cli.common.batches import BatchFn, LossFn
    from gradcheck_cli.measure.layer_figures import Reducer
    from gradcheck_cli.measure.placement import Placement

# Plain SGD steps, small enough not to disturb a healthy model: each makes a zero that gets a gradient
# non-zero (w = -lr * g). Each step unlocks at least one zero of a chain; designs use chains of one (ReZero,
# SkipInit, NF nets, zero_init_residual, a zero head) or two (Fixup: the head, then the branches' last convs).
ZERO_INIT_CHECK_LR = 1e-2
ZERO_INIT_MAX_STEPS = 4
# Where the zeros are weights only (the original case), the citation of the designs that zero a weight.
WEIGHT_DESIGNS = "Fixup, SkipInit, zero_init_residual; Zhang, Dauphin & Ma 2019"
GAIN_DESIGNS = "ReZero, SkipInit, NF nets, Fixup; Bachlechner et al. 2020, Brock et al. 2021"


def zero_init_layers(result: ProbeResult) -> list[LayerStats]:
    """The trainable layers holding a parameter at exactly zero that can gate a path, in execution order."""
    return [layer for layer in result.layers if layer.trainable and layer.zero_parameters]


def recognize(result: ProbeResult, diagnosis: Diagnosis) -> Diagnosis:
    """The diagnosis with a ``zero_init`` cause, first, on each finding of exact zeros that a zero weight or
    gain downstream may explain (causes.zero_init_cause), and its ``zero_init_layers`` set to those layers."""
    layers = zero_init_layers(result)
    if not layers:
        return diagnosis
    names = [layer.name for layer in layers]
    order = [layer.name for layer in result.layers]
    gains = None  # where every zero is a layer's weight the cause names layers, as for Fixup's convs
    if any(layer.weight_norm != 0.0 for layer in layers):
        # the weights first: a zero weight surely gates its path, a scalar may be a bias (Fixup's)
        weights = [_qualified(layer, p) for layer in layers if layer.weight_norm == 0.0 for p in layer.zero_parameters]
        others = [_qualified(layer, p) for layer in layers if layer.weight_norm != 0.0 for p in layer.zero_parameters]
        gains = weights + others
    for finding in diagnosis.findings:
        kept = [cause for cause in finding.causes if cause.id is not CauseId.ZERO_INIT]
        blocked = zero_init_cause(finding, names, order, gains)
        finding.causes = [blocked, *kept] if blocked else kept
    return replace(diagnosis, zero_init_layers=names)


def settle_chain(
    model: nn.Module,
    make_batch: BatchFn,
    loss_fn: LossFn,
    result: ProbeResult,
    diagnosis: Diagnosis,
    *,
    passes: int,
    seed: int,
    thresholds: Thresholds | None,
    placement: Placement,
    structure: ModelStructure | None = None,
    ignore: tuple[str, ...] = (),
    reducer: Reducer | None = None,
) -> Diagnosis:
    """Recognize the zeros that may explain exact-zero gradients; where some do, step a copy of ``model`` until
    every layer gets a gradient (at most ZERO_INIT_MAX_STEPS steps) and settle the findings with what it shows
    (``settle_zero_init``). ``model`` is left as found. A model that cannot be copied or stepped keeps its
    findings as measured. The stepped copies are measured under ``placement``, as the model was."""
    diagnosis = recognize(result, diagnosis)
    if not diagnosis.needs_step_check:
        return diagnosis
    # (imported here: stepping and probing need torch, and this module is judged without it)
    from gradcheck_cli.examine.copies import train_copy
    from gradcheck_cli.measure.probe import probe_model

    blocked = _blocked(diagnosis)
    try:
        for step, stepped, _ in train_copy(
            model, make_batch, loss_fn, steps=ZERO_INIT_MAX_STEPS, lr=ZERO_INIT_CHECK_LR, seed=seed,
            purpose="the zero-init check",
        ):  # fmt: skip
            measured = probe_model(
                stepped, make_batch, loss_fn, passes=passes, seed=seed, structure=structure, reducer=reducer,
                placement=placement,
            )  # fmt: skip
            steps, after = step, diagnose(measured, thresholds, ignore)
            still = _blocked(after)
            # Every layer gets a gradient: the chain is through. A step that unblocked no layer moved no zero
            # that gates one (a zero with no gradient stays zero under SGD), so no later step can.
            if not still or not blocked - still:
                break
            blocked = still
    except GradcheckError:
        return diagnosis
    return settle_zero_init(diagnosis, after, steps)


def settle_zero_init(diagnosis: Diagnosis, after: Diagnosis, steps: int) -> Diagnosis:
    """Replace the findings that zero-initialized layers explain with one info finding that says how many steps
    the chain needed, if ``after`` (the same model measured after ``steps`` SGD steps on a copy) shows every layer
    getting a gradient; the copy's errors then decide the verdict. Else say that the gradient does not flow."""
    blocked = [f for f in diagnosis.findings if any(c.id is CauseId.ZERO_INIT for c in f.causes)]
    if not blocked:
        return diagnosis
    step = _steps_text(steps)
    after_text = _after_text(after)
    if _blocked(after):
        # (the loop stops before its bound only where a step unblocked nothing: see settle_chain)
        stalled = "; the last step unblocked no layer, so more would not" if steps < ZERO_INIT_MAX_STEPS else ""
        for finding in blocked:
            finding.message += (
                f" After {step} on a copy the gradient still does not flow ({after_text}{stalled}): not only the "
                "zero-initialization."
            )
        return diagnosis
    cause = next(c for f in blocked for c in f.causes if c.id is CauseId.ZERO_INIT)
    gains = cause.evidence.get("zero_parameters")
    zero_init = diagnosis.zero_init_layers
    named = gains or zero_init
    count = cause.evidence.get("zero_parameter_count", len(named))
    shown = ", ".join(named[:3]) + (", ..." if count > 3 else "")
    what = f"{count} zero-initialized parameter(s)" if gains else f"{len(zero_init)} zero-initialized layer(s)"
    layers = sorted({name for f in blocked for name in f.layers}, key=list(diagnosis.statuses).index)
    chain = ", one for each zero of the chain," if steps > 1 else ""
    healthy = after.verdict is Verdict.HEALTHY
    message = (
        f"{what} ({shown}) block the gradient to {len(layers)} layer(s) at initialization, by design "
        f"({GAIN_DESIGNS if gains else WEIGHT_DESIGNS}). After {step} on a copy{chain} every layer gets a "
        f"gradient: {after_text}." + (" Not vanishing." if healthy else "")
    )
    evidence = {
        "zero_init_layers": len(zero_init),
        "blocked_layers": len(layers),
        "step": step,
        "steps": steps,
        "decades_after_step": _round(after.profile.decades),
        "verdict_after_step": after.verdict.value,
    }
    info = Finding(FindingKind.ZERO_INIT, Severity.INFO, layers, message, evidence, [], [cause])
    kept = replace(diagnosis, findings=[f for f in diagnosis.findings if f not in blocked])
    return add_findings(kept, [info, *_copy_findings(kept, after, step)])


def _copy_findings(diagnosis: Diagnosis, after: Diagnosis, step: str) -> list[Finding]:
    """The stepped copy's errors that the model's own measurement, its zeros aside, lacks: the zeros hid them, and
    the copy is the model a few small steps on, so they decide the verdict. Not its relative gradients: a zero
    just stepped has ||w|| = lr * ||g||, so its ||g||/||w|| is about 1/lr and says nothing of the model."""
    present = {finding.kind for finding in diagnosis.findings if finding.severity is Severity.ERROR}
    return [
        replace(
            finding,
            message=f"After {step} on a copy: {finding.message}",
            evidence={**finding.evidence, "measured": f"after {step}"},
        )
        for finding in after.findings
        if finding.severity is Severity.ERROR
        and finding.kind not in present
        and finding.kind is not FindingKind.LARGE_RELATIVE_GRADIENT
    ]


def _blocked(diagnosis: Diagnosis) -> set[str]:
    """The layers whose gradient is exactly zero: those a zero_gradient error lists, and the trend's zero layers."""
    zero = {
        name
        for finding in diagnosis.findings
        if finding.kind is FindingKind.ZERO_GRADIENT and finding.severity is Severity.ERROR
        for name in finding.layers
    }
    return zero | set(diagnosis.profile.zero_layers)


def _qualified(layer: LayerStats, parameter: str) -> str:
    return parameter if layer.name == "(model)" else f"{layer.name}.{parameter}"


def _steps_text(steps: int) -> str:
    return f"{'one SGD step' if steps == 1 else f'{steps} SGD steps'} (lr {ZERO_INIT_CHECK_LR:g})"


def _after_text(after: Diagnosis) -> str:
    decades = after.profile.decades
    trend = f"input/output 10^{decades:+.1f}, " if decades is not None else ""
    return f"{trend}verdict {after.verdict.value}"


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(f"{value:.4g}")
