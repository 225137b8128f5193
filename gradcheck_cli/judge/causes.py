"""Root causes: what the measurements say a finding comes from, with numbers. Pure, no torch.

A depth trend is a product of per-layer factors. In a plain stack the mean-field gain per layer is
sqrt(chi), chi = fan_in * Var(W) * E[phi'(h)^2] (Schoenholz et al. 2017): a weight-scale term
std(W) * sqrt(fan_in) times an activation term sqrt(E[phi'(h)^2]), both measured by the probe. Each term
is compared with the value that gives unit gain (He et al. 2015 for the ReLU family: sqrt(2) and
sqrt(1/2); Glorot & Bengio 2010 / LeCun otherwise: 1 and 1), and the decades it explains over the
layers it acts on rank the causes. Structural causes (no normalization, no skips) are what the measured
terms leave unexplained. The fixes of a finding are then ordered by the causes that call for them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from gradcheck_cli.common.choices import CauseId, FindingKind, FixId
from gradcheck_cli.common.stats import ActivationStats
from gradcheck_cli.judge.fixes import (
    INIT_SCALE_TOLERANCE,
    PRACTICAL_LR_FLOOR,
    RESIDUAL_MIN_DEPTH,
    SATURATING,
    Fix,
    FixContext,
    domain_op,
    recurrent_trend,
)

# A unit that never activates over the probe's batches passes no gradient. Deep He-initialized ReLU
# nets already have many units silent over a batch (the demo measures up to 41% at depth 50 and is
# healthy), so only a layer with most of its units dead is named, and only where its measured
# activation term falls short (see _dead_relu).
DEAD_FRACTION_WARNING = 0.5
STRUCTURAL_MIN_DECADES = 1.0
# An activation term below this share of its unit-gain value is a cause of vanishing.
ACTIVATION_TERM_TOLERANCE = 0.9
_VANISHING = (FindingKind.VANISHING_GRADIENT, FindingKind.VANISHING_ACTIVATION, FindingKind.ZERO_GRADIENT)
_EXPLODING = (FindingKind.EXPLODING_GRADIENT, FindingKind.EXPLODING_ACTIVATION)


@dataclass
class Cause:
    id: CauseId
    summary: str  # one sentence, with this model's numbers
    decades: float  # how much of the trend it accounts for, in decades (>= 0); ranks causes and fixes
    fixes: tuple[str, ...]  # ids of the fixes that address it
    evidence: dict[str, Any] = field(default_factory=dict)


def causes_for(kind: FindingKind, evidence: dict[str, Any], context: FixContext) -> list[Cause]:
    """The causes the measurements support for one finding, most supported first."""
    if kind is FindingKind.NONFINITE and (domain := _domain_error(context)) is not None:
        return [domain]  # made by the values an op was given: no setting of the training step made it (issue 22)
    if kind in _VANISHING or kind in _EXPLODING:
        causes = _depth_causes(kind in _EXPLODING, evidence, context)
    elif kind in (FindingKind.VANISHING_THROUGH_TIME, FindingKind.EXPLODING_THROUGH_TIME):
        causes = _time_causes(kind is FindingKind.EXPLODING_THROUGH_TIME, evidence, context)
    else:
        causes = []
    if kind in (*_EXPLODING, FindingKind.LARGE_RELATIVE_GRADIENT, FindingKind.NONFINITE):
        causes += _learning_rate(context)
    causes.sort(key=lambda c: -c.decades)
    return causes


def zero_init_cause(
    finding: Any, zero_init: list[str], order: list[str], gains: list[str] | None = None
) -> Cause | None:
    """Exact-zero gradients upstream of a layer whose weight is exactly zero are what zero-initialization
    (Fixup, SkipInit, zero_init_residual) does on purpose: W = 0 sends dL/dx = W^T dL/dy = 0 back. ``gains``:
    the zero parameters by their full names where some are no weight (ReZero's alpha, NF nets' gains), which
    block the same way: y = x + 0 * f(x) sends nothing back into f."""
    if not zero_init or not finding.evidence.get("zero_layers"):
        return None
    if finding.kind not in (FindingKind.ZERO_GRADIENT, FindingKind.VANISHING_GRADIENT):
        return None
    last_zero = max(order.index(name) for name in zero_init)
    if not any(name in order and order.index(name) < last_zero for name in finding.layers):
        return None
    named = gains or zero_init
    shown = ", ".join(named[:3]) + (", ..." if len(named) > 3 else "")
    if gains:
        summary = (
            f"{len(gains)} parameter(s) start at exactly zero ({shown}): a zero weight or gain sends no gradient "
            "back to the layers behind it. If that is zero-initialization on purpose, optimizer steps make it "
            "flow, one for each zero of a chain."
        )
    else:
        summary = (
            f"{len(zero_init)} layer(s) have a weight of exactly zero ({shown}): a zero weight sends no gradient "
            "back to the layers before it. If that is zero-initialization on purpose, one optimizer step makes it flow."
        )
    evidence: dict[str, Any] = {"zero_init_layers": zero_init[:10]}
    if gains:
        evidence["zero_parameters"] = gains[:10]
        evidence["zero_parameter_count"] = len(gains)
    return Cause(CauseId.ZERO_INIT, summary, abs(finding.evidence.get("decades") or 0.0), (), evidence)


def order_fixes(fixes: list[Fix], causes: list[Cause]) -> list[Fix]:
    """Fixes called for by a better-supported cause come first; the rest keep the catalog's order. A
    cause's first fix is its direct remedy; the others it lists help less (half the support)."""
    support: dict[str, float] = {}
    for cause in causes:
        for rank, fix_id in enumerate(cause.fixes):
            support[fix_id] = max(support.get(fix_id, 0.0), cause.decades * (1.0 if rank == 0 else 0.5))
    return sorted(fixes, key=lambda fix: -support.get(fix.id, -1.0))


def mean_field_terms(context: FixContext) -> tuple[tuple[float, int] | None, tuple[float, int] | None]:
    """(weight term over its unit-gain value, weight layers), (activation term likewise, activation sites)."""
    scale = context.weight_scale()
    target, _ = context.target_scale()
    weight = (scale[0] / target, scale[1]) if scale else None
    sites = [a for a in context.result.activations if a.derivative_rms is not None]
    activation = None
    if sites:
        unit_gain = 1.0 / target  # the activation term that unit gain needs with the target init
        activation = (statistics.median(a.derivative_rms for a in sites) / unit_gain, len(sites))
    return weight, activation


def _depth_causes(exploding: bool, evidence: dict[str, Any], context: FixContext) -> list[Cause]:
    structure = context.result.structure
    total = abs(evidence.get("decades") or 0.0)
    causes: list[Cause] = []
    weight, activation = mean_field_terms(context)
    # (a norm after each layer cancels the weight scale; beside a recurrent stack, Linear weights are not its layers)
    if weight and not structure.normalized and not recurrent_trend(context):
        ratio, count = weight
        off = ratio > INIT_SCALE_TOLERANCE if exploding else ratio * INIT_SCALE_TOLERANCE < 1
        if off:
            causes.append(_init_scale(context, ratio, count))
    if activation and not exploding:
        ratio, count = activation
        saturating = [a for a in context.result.activations if a.type in SATURATING]
        if saturating and ratio < ACTIVATION_TERM_TOLERANCE:
            causes.append(_saturation(saturating, ratio, count, total))
        dead = _dead_relu(context.result.activations)
        if dead:
            causes.append(dead)
    explained = sum(c.decades for c in causes)
    unexplained = max(total - explained, 0.0)
    # Structural causes account for what the measured terms leave; under a decade left, they explain nothing.
    structural = unexplained >= STRUCTURAL_MIN_DECADES
    depth = context.depth
    if exploding and structure.residual is True:
        per_block = evidence.get("gain_per_block") or evidence.get("gain_per_layer") or float("nan")
        if structure.additive_skips:
            how = (
                "each x + f(x) adds its branch's variance to the residual stream, so the stream grows with depth "
                f"and the gradient toward the input with it, x{per_block:.3g} per block here; branches that start "
                "at zero begin as the identity."
            )
        else:  # concatenation only (DenseNet, Inception): each block passes its input on beside its branches
            how = (
                "its blocks concatenate their branches with their input (DenseNet, Inception), so each block's "
                f"gradient adds its branches' to the skip's, x{per_block:.3g} per block here."
            )
        causes.append(
            Cause(
                CauseId.RESIDUAL_GROWTH,
                "The model has skip connections: " + how,
                unexplained,
                (FixId.INIT.value,) if structure.additive_skips else (),
                {"gain_per_layer": evidence.get("gain_per_layer"), "gain_per_block": evidence.get("gain_per_block")},
            )
        )
    elif structure.normalized and exploding and structure.residual is not True and not structure.recurrent:
        causes.append(
            Cause(
                CauseId.NORMALIZATION_WITHOUT_SKIPS,
                f"{sum(structure.norms.values())} normalization layers and no skip connection: at initialization "
                "BatchNorm itself makes the gradient grow geometrically toward the input (Yang et al. 2019), "
                f"x{evidence.get('gain_per_layer') or float('nan'):.3g} per layer here.",
                total,
                (FixId.RESIDUAL.value,),
                {"norm_layers": sum(structure.norms.values()), "residual": structure.residual},
            )
        )
    elif structural and not structure.normalized and not structure.recurrent and depth >= RESIDUAL_MIN_DEPTH:
        causes.append(
            Cause(
                CauseId.NO_NORMALIZATION,
                f"No normalization layer in {depth} layers: nothing pulls the pre-activations back to unit scale, "
                "so any per-layer mismatch compounds with depth.",
                unexplained / 2,
                (FixId.BATCHNORM.value,),
                {"trend_layers": depth},
            )
        )
    if structural and structure.residual is False and not structure.recurrent and depth >= RESIDUAL_MIN_DEPTH:
        causes.append(
            Cause(
                CauseId.DEPTH_WITHOUT_SKIPS,
                f"{depth} layers in series and no skip connection: every layer's "
                "factor multiplies into the gradient; a residual path would carry it around each block.",
                unexplained / 2,
                (FixId.RESIDUAL.value,),
                {"trend_layers": depth},
            )
        )
    return causes


def _init_scale(context: FixContext, ratio: float, count: int) -> Cause:
    scale, _ = context.weight_scale()
    target, name = context.target_scale()
    default = " (PyTorch's default U(+-1/sqrt(fan_in)) gives 0.577)" if abs(scale - 0.577) < 0.03 else ""
    if context.result.structure.residual is True:
        # x + f(x): the layers of different branches sit on parallel paths, and the skips carry the gradient
        # around each branch (Veit et al. 2016), so the term scales each branch's share and does not compound
        # over the depth as in a series: one layer's worth is what it accounts for (issue 22: Fixup read
        # 10^-60.2 "over 66 layers").
        compounded = math.log10(ratio)
        effect = (
            f"so each layer multiplies its branch's signal by {ratio:.3g} of unit gain; the skip connections carry "
            f"the gradient around the branches, so it does not compound over the {count} layers."
        )
    else:
        compounded = count * math.log10(ratio)
        effect = f"so each layer multiplies the signal by {ratio:.3g} of unit gain: {_decades(compounded)} over {count} layers."
    decades = abs(compounded)
    return Cause(
        CauseId.INIT_SCALE,
        f"Weight scale std*sqrt(fan_in) is {scale:.3g} (median of {count} weight layers){default}; {name} "
        f"init needs {target:.3g}, {effect}",
        decades,
        (FixId.INIT.value, FixId.RELU.value) if ratio < 1 else (FixId.INIT.value,),
        {
            "weight_scale": _round(scale),
            "target_scale": _round(target),
            "term_per_layer": _round(ratio),
            "layers": count,
        },
    )


def _saturation(saturating: list[ActivationStats], ratio: float, count: int, measured: float) -> Cause:
    """``measured``: the decades the trend lost, which stand in for the compounded term where that term is 0
    (every activation's derivative underflowed: the gradient does not get through at all)."""
    kinds: dict[str, int] = {}
    for site in saturating:
        kinds[site.type] = kinds.get(site.type, 0) + 1
    kind = max(kinds, key=kinds.__getitem__)
    fractions = [a.saturated_fraction for a in saturating if a.saturated_fraction is not None]
    worst = max(saturating, key=lambda a: a.saturated_fraction or 0.0)
    flat = statistics.median(fractions) if fractions else 0.0
    bound = " (at most 0.25)" if kind == "Sigmoid" else ""
    # The flat-region share only where it says something: "0% ..., up to 0% at x" states nothing (issue 23).
    worst_flat = worst.saturated_fraction or 0.0
    flat_region = ""
    if f"{flat:.0%}" != "0%":
        flat_region = f"; {flat:.0%} of their outputs sit in the flat region, up to {worst_flat:.0%} at {worst.name}"
    elif f"{worst_flat:.0%}" != "0%":
        flat_region = f"; up to {worst_flat:.0%} of the outputs of {worst.name} sit in the flat region"
    derivative = statistics.median(a.derivative_rms for a in saturating if a.derivative_rms is not None)
    compounded = count * math.log10(ratio) if ratio > 0 else -measured
    decades = abs(compounded)
    return Cause(
        CauseId.SATURATING_ACTIVATION,
        f"{kind} passes on sqrt(E[phi'(h)^2]) = {derivative:.3g} of the gradient per layer{bound}, median over "
        f"{len(saturating)} activations{flat_region}: "
        f"{_decades(compounded)} over {count} layers.",
        decades,
        (FixId.RELU.value,),
        {
            "activation": kind,
            "derivative_rms": _round(derivative),
            "saturated_fraction": _round(flat),
            "max_saturated_fraction": _round(worst.saturated_fraction),
            "worst_activation": worst.name,
            "activations": len(saturating),
        },
    )


def _dead_relu(activations: list[ActivationStats]) -> Cause | None:
    dying = [a for a in activations if a.dead_fraction is not None]
    dead = [a for a in dying if a.dead_fraction >= DEAD_FRACTION_WARNING]
    if not dead:
        return None
    # What dead units cost is already in each layer's measured activation term sqrt(E[phi'^2]) (a dead unit's
    # derivative is 0): count the shortfall below the ReLU's unit-gain value 1/sqrt(2), not the dead share
    # itself, so a net whose ReLUs pass their usual half (deep He-init nets have up to ~40% of units
    # silent over a batch) is not blamed twice.
    unit_gain = 1.0 / math.sqrt(2.0)
    shortfalls = [
        -math.log10(max(a.derivative_rms / unit_gain, 1e-12))
        for a in dying
        if a.derivative_rms is not None and a.derivative_rms < ACTIVATION_TERM_TOLERANCE * unit_gain
    ]
    decades = sum(shortfalls)
    if not decades:
        return None
    worst = max(dead, key=lambda a: a.dead_fraction)
    fully = sum(1 for a in dead if a.dead_fraction >= 1.0)
    fully_text = f"; {fully} layer(s) entirely dead" if fully else ""
    return Cause(
        CauseId.DEAD_RELU,
        f"{len(dead)} of {len(dying)} ReLU layers have most units dead (never active over the probe's batches), "
        f"up to {worst.dead_fraction:.0%} of {worst.units} at {worst.name}{fully_text}: no gradient passes a dead unit.",
        decades,
        (FixId.INIT.value, FixId.BATCHNORM.value),
        {
            "dead_layers": len(dead),
            "fully_dead_layers": fully,
            "max_dead_fraction": _round(worst.dead_fraction),
            "worst_activation": worst.name,
        },
    )


def _time_causes(exploding: bool, evidence: dict[str, Any], context: FixContext) -> list[Cause]:
    series = next((r for r in context.result.recurrent if r.name == evidence.get("module")), None)
    if series is None:
        return []
    total = abs(evidence.get("decades") or 0.0)
    steps = evidence.get("time_steps") or len(series.time_steps)
    causes = []
    if series.spectral_norm is not None:
        sigma = series.spectral_norm
        # Pascanu et al. 2013: with |tanh'| <= 1, sigma_max < 1 is enough for the gradient to vanish,
        # and sigma_max > 1 is needed for it to explode.
        bound = (sigma > 1) if exploding else (sigma < 1)
        if bound:
            causes.append(
                Cause(
                    CauseId.RECURRENT_SPECTRAL_NORM,
                    f"The largest singular value of {series.name}'s recurrent weight is {sigma:.3g}: "
                    + (
                        "above 1, so the gradient can grow at every step"
                        if exploding
                        else "below 1, so with tanh' <= 1 the gradient must shrink at every step"
                    )
                    + " (Pascanu et al. 2013).",
                    abs(steps * math.log10(sigma)),
                    (FixId.INIT.value,) if exploding else (FixId.LSTM.value, FixId.INIT.value),
                    {"spectral_norm": _round(sigma), "time_steps": steps},
                )
            )
        if not exploding:
            causes.append(
                Cause(
                    CauseId.UNGATED_RECURRENCE,
                    f"{series.name} is a vanilla RNN ({series.nonlinearity}): the gradient through time is a product "
                    f"of {steps} Jacobians, recurrent weight times the activation's derivative, with no additive "
                    f"path; measured x{evidence.get('gain_per_step', float('nan')):.3g} per step (Bengio, Simard & Frasconi 1994).",
                    total,
                    (FixId.LSTM.value,),
                    {"spectral_norm": _round(sigma), "nonlinearity": series.nonlinearity},
                )
            )
    if series.memory_gate_bias is not None and not exploding:
        gate = "forget" if series.type == "LSTM" else "update"
        opening = 1.0 / (1.0 + math.exp(-series.memory_gate_bias))
        causes.append(
            Cause(
                CauseId.MEMORY_GATE_BIAS,
                f"{series.name}'s {gate}-gate bias is {series.memory_gate_bias:.3g}, so the gate starts near "
                f"{opening:.2f} and the state keeps about that share of its gradient per step "
                f"(measured x{evidence.get('gain_per_step', float('nan')):.3g}; Jozefowicz et al. 2015).",
                total,
                (FixId.INIT.value,),
                {"gate_bias": _round(series.memory_gate_bias), "gate_opening": _round(opening)},
            )
        )
    return causes


def _domain_error(context: FixContext) -> Cause | None:
    op = domain_op(context.result)
    if op is None:
        return None
    where = f" at {op.location}" if op.location else " in the loss"
    made = "an infinite slope, which the backward pass divides by" if op.singular else "values outside its domain"
    low, high = op.operand_range or (None, None)
    return Cause(
        CauseId.DOMAIN_ERROR,
        f"The NaN/Inf comes from {op.detail}{where}: {made}, not the size of a step.",
        0.0,  # a NaN has no trend to account for: it is the finding's one cause
        (FixId.SAFE_OP.value,),
        {
            "op": op.name,
            "domain": op.domain,
            "location": op.location,
            "operand_min": _round(low),
            "operand_max": _round(high),
        },
    )


def _learning_rate(context: FixContext) -> list[Cause]:
    risk = context.step_risk()
    if risk is None:
        return []
    worst, change, safe = risk
    lr, step_fraction = context.lr, context.step_fraction
    summary = (
        f"With lr {lr:g}, one SGD step changes {worst.name} by {change:.3g}x its own norm "
        f"(||g||/||w|| = {worst.relative_grad:.3g}); a step of at most {step_fraction:.0%} needs lr <= {safe:.2g}"
    )
    if safe < PRACTICAL_LR_FLOOR:  # no lr worth training with gets there: the gradient's scale is the problem
        summary += ", below any practical learning rate: the model needs a structural fix, not a smaller lr"
    return [
        Cause(
            CauseId.LEARNING_RATE,
            summary + ".",
            math.log10(change / step_fraction),
            (FixId.LEARNING_RATE.value, FixId.CLIPPING.value),
            {"lr": lr, "step_change": _round(change), "worst_layer": worst.name, "safe_lr": _round(safe)},
        )
    ]


def _decades(value: float) -> str:
    return f"10^{value:+.1f}"


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.4g}")
