"""The judgement layer: pure functions from measurements (``ProbeResult``) to findings. No torch, no printing.

The verdict rests on the backward signal b_l (per-sample RMS of dL/d(output of layer l)), not on
weight-gradient norms: in a homogeneous stack ||dL/dW_l|| ~ ||b_l|| * ||a_(l-1)||, and the forward and
backward trends cancel, so weight-gradient norms stay flat while the network explodes or vanishes
(Glorot & Bengio 2010, section 4.2.1 and Fig. 8; see ../shared/GRADIENTS.md for the measurements).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field, replace
from typing import Any

from gradcheck_cli.common.choices import CauseId, FindingKind, FixId, LayerStatus, Severity, Verdict
from gradcheck_cli.common.stats import LayerStats, ModelStructure, NonfiniteOrigin, ProbeResult, RecurrentStats
from gradcheck_cli.judge.causes import Cause, causes_for, order_fixes, zero_init_cause
from gradcheck_cli.judge.depth_trend import MIN_TREND_LAYERS, DepthProfile, depth_profile, like_ratios, theil_sen_slope
from gradcheck_cli.judge.fixes import PRACTICAL_LR_FLOOR, Fix, FixContext
from gradcheck_cli.judge.fixes_catalog import fixes_for

# |D| in decades, D = log10(b at the input end / b at the output end). Every pathology measured for
# GRADIENTS.md had |D| >= 3.1 and every healthy design |D| <= 0.5 (SELU at depth 64: 0.95), so one
# decade is worth a warning and two are an error.
DECADES_WARNING = 1.0
DECADES_ERROR = 2.0
# Forward signal F = log10(RMS at the output end / RMS at the input end): two decades of growth or
# collapse of the activations (signal-propagation plots, Brock et al. 2021).
FORWARD_DECADES_ERROR = 2.0
# ||dL/dW|| / ||W||: one SGD step changes a layer by lr times this. At 1e4, even lr = 1e-4 rewrites the
# weights in one step; at 1e2, lr = 1e-2 does. Healthy nets measure 1e-3 to 1 at initialization.
RELATIVE_GRAD_WARNING = 1e2
RELATIVE_GRAD_ERROR = 1e4
# The learning rate a user trains with (--lr) and the largest share of a layer's norm one SGD step may
# change before it is a risk: a relative gradient warns where lr * ||g||/||w|| >= 10%, judged against that
# lr only (with the default lr 1e-3 the line is at 1e2, RELATIVE_GRAD_WARNING; issue 22).
DEFAULT_LR = 1e-3
LR_STEP_FRACTION = 0.1
# Growth toward the input that normalization explains. A BatchNorm layer's backward gain is 1/std of its
# input, and a deep BN net's gradient grows about x1.21 per layer at initialization, sqrt(pi / (pi - 1)) for
# ReLU (Yang et al. 2019); vgg16_bn measures x1.24 per conv. With skip connections the unit is the block
# (one merge of paths read off the autograd graph): a branch of two to four normalized layers compounds
# x1.21 per layer, and the zoo measures x1.05 (DenseNet) to x1.75 (Inception v3) per block, x1.36 for
# ResNet-50 (tests/zoo/BASELINE.md). Up to these gains, with the forward signal kept flat, growth is the
# normalization at work, and these nets train at lr 0.1: a note, or a warning past DECADES_ERROR, never
# "exploding". Without skips the growth compounds over every layer, so there it is a note only below
# DECADES_ERROR (a 40-layer BN MLP grows 10^3.3 and does not train; vgg16_bn grows 10^1.1 and does).
NORMALIZED_GROWTH_PER_LAYER = 1.5
SKIP_GROWTH_PER_BLOCK = 2.0

UNHOOKED_NOTE = (
    " (Read from weight-gradient norms: this model takes no hooks, e.g. TorchScript, so the gradient at"
    " each layer's output could not be measured; weight-gradient ratios can miss explosions.)"
)


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the diagnosis; the defaults are the named constants above."""

    decades_warning: float = DECADES_WARNING
    decades_error: float = DECADES_ERROR
    forward_decades_error: float = FORWARD_DECADES_ERROR
    relative_grad_warning: float = RELATIVE_GRAD_WARNING
    relative_grad_error: float = RELATIVE_GRAD_ERROR
    min_trend_layers: int = MIN_TREND_LAYERS
    lr: float = DEFAULT_LR
    lr_step_fraction: float = LR_STEP_FRACTION

    def __post_init__(self) -> None:
        if not 0 < self.decades_warning <= self.decades_error:
            raise ValueError("thresholds need 0 < decades_warning <= decades_error")
        # relative_grad_warning decides nothing since the warning is judged against the lr (relative_grad_risk);
        # it stays a field for old configs and the JSON schema, so only its sign is checked.
        if self.relative_grad_warning <= 0 or self.relative_grad_error <= 0:
            raise ValueError("relative_grad_warning and relative_grad_error must be positive")
        if self.forward_decades_error <= 0 or self.min_trend_layers < 2:
            raise ValueError("forward_decades_error must be positive and min_trend_layers at least 2")
        if self.lr <= 0 or self.lr_step_fraction <= 0:
            raise ValueError("lr and lr_step_fraction must be positive")

    @property
    def relative_grad_risk(self) -> float:
        """The relative gradient that warns: where one SGD step at ``lr`` changes a layer by ``lr_step_fraction``
        of its norm. Judged against the lr only: a fixed line would warn at --lr 1e-5 of a step of 0.1%."""
        return self.lr_step_fraction / self.lr


@dataclass
class TimeProfile:
    """How the gradient reaching each time step's input decays, for one recurrent module. The layers of a stacked
    module (nn.LSTM(num_layers > 1)) are judged one by one, each on its own signal (RecurrentStats.stack): the
    stack's profile is its steepest layer's, named for that layer, with every layer's decades in ``layer_decades``
    (two profiles where some layers vanish and others explode: the steepest of each)."""

    name: str
    type: str
    steps: int
    decades: float  # log10(b at the first step / b at the last step)
    gain_per_step: float  # multiplier per step, last to first (Theil-Sen fit)
    zero_steps: int
    ratio_to_last: list[float] = field(default_factory=list)  # each step's gradient over the last step's
    stack: str | None = None  # the stacked module this is the steepest layer of; None for a single-layer module
    layer_decades: dict[str, float] = field(default_factory=dict)  # a stack's layers (this direction's): decades


@dataclass
class Finding:
    kind: FindingKind
    severity: Severity
    layers: list[str]
    message: str
    evidence: dict[str, Any]
    fixes: list[Fix] = field(default_factory=list)
    causes: list[Cause] = field(default_factory=list)  # most supported first


@dataclass
class Diagnosis:
    verdict: Verdict
    findings: list[Finding]
    statuses: dict[str, LayerStatus]  # layer name -> status
    ratios: dict[str, float]  # layer name -> b / b at the output end
    profile: DepthProfile
    time_profiles: list[TimeProfile]
    thresholds: Thresholds
    zero_init_layers: list[str] = field(default_factory=list)  # trainable layers whose weight is exactly zero

    @property
    def needs_step_check(self) -> bool:
        """Exact zeros that zero-initialized layers may explain: one optimizer step on a copy tells."""
        return any(c.id is CauseId.ZERO_INIT for f in self.findings for c in f.causes)


def diagnose(result: ProbeResult, thresholds: Thresholds | None = None, ignore: tuple[str, ...] = ()) -> Diagnosis:
    """Findings, statuses and profiles from the measurements. Layers whose names match a glob in
    ``ignore`` (e.g. ``encoder.*.attention.*``) are left out of every judgement and marked ``ignored``."""
    thresholds = thresholds or Thresholds()
    ignored = [layer.name for layer in result.layers if any(fnmatch.fnmatchcase(layer.name, p) for p in ignore)]
    if ignored:
        kept = replace(
            result,
            layers=[layer for layer in result.layers if layer.name not in ignored],
            recurrent=[series for series in result.recurrent if series.name not in ignored],
            activations=[
                site for site in result.activations if not any(fnmatch.fnmatchcase(site.name, p) for p in ignore)
            ],
        )
        diagnosis = diagnose(kept, thresholds)
        diagnosis.statuses = {
            layer.name: LayerStatus.IGNORED if layer.name in ignored else diagnosis.statuses[layer.name]
            for layer in result.layers
        }
        return diagnosis
    profile = depth_profile(result.layers, thresholds.min_trend_layers, result.hooked, result.structure.skip_merges)
    ratios = like_ratios(result.layers, profile)
    time_profiles = time_profiles_of(result.recurrent)
    findings: list[Finding] = []
    findings += _nonfinite_findings(result)
    findings += _depth_findings(profile, ratios, thresholds, [layer.name for layer in result.layers], result.structure)
    findings += _relative_grad_findings(result.layers, thresholds)
    findings += _time_findings(time_profiles, thresholds)
    findings += _zero_gradient_findings(result.layers, profile)
    findings += _fp16_findings(result)
    context = FixContext(result, profile, thresholds.lr, thresholds.lr_step_fraction)
    zero_init = [layer.name for layer in result.layers if layer.trainable and layer.weight_norm == 0.0]
    for finding in findings:
        finding.causes = causes_for(finding.kind, finding.evidence, context)
        blocked = zero_init_cause(finding, zero_init, [layer.name for layer in result.layers])
        if blocked:
            finding.causes.insert(0, blocked)
        finding.fixes = order_fixes(fixes_for(finding.kind, finding.evidence, context), finding.causes)
    statuses = _statuses(result.layers, findings, ratios, thresholds, result.hooked)
    return Diagnosis(
        _verdict(findings), _ranked(findings), statuses, ratios, profile, time_profiles, thresholds, zero_init
    )


def _verdict(findings: list[Finding]) -> Verdict:
    errors = [f.kind.verdict for f in findings if f.severity is Severity.ERROR]
    return max(errors, key=lambda v: v.rank, default=Verdict.HEALTHY)


def _ranked(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (-f.severity.rank, -f.kind.verdict.rank))


def with_later_findings(diagnosis: Diagnosis, later: Diagnosis, when: str) -> Diagnosis:
    """Add the findings of a later measurement (after training steps) that the first did not have at
    that severity: a problem that appears, or worsens, once training starts is a problem of the model."""
    present: dict[FindingKind, int] = {}
    for f in diagnosis.findings:
        present[f.kind] = max(present.get(f.kind, -1), f.severity.rank)
    # Its causes describe the trained copy; of its fixes, only those that act on the training steps apply, and
    # safe_op: an op the steps drove out of its domain is kept in it by the same change of code.
    new = [
        replace(
            f,
            message=f"{when[0].upper()}{when[1:]}: {f.message}",
            evidence={**f.evidence, "measured": when},
            fixes=[
                fix
                for fix in f.fixes
                if fix.id in (FixId.LEARNING_RATE.value, FixId.CLIPPING.value, FixId.SAFE_OP.value)
            ],
        )
        for f in later.findings
        if f.severity is not Severity.INFO and f.severity.rank > present.get(f.kind, -1)
    ]
    return add_findings(diagnosis, new)


def add_findings(diagnosis: Diagnosis, findings: list[Finding]) -> Diagnosis:
    """The diagnosis with more findings, ranked in and counted in the verdict."""
    if not findings:
        return diagnosis
    merged = diagnosis.findings + findings
    return replace(diagnosis, findings=_ranked(merged), verdict=_verdict(merged))


# --amp: a layer where more than this share of the output gradient's elements falls below fp16's smallest
# normal number before loss scaling needs a loss scale in fp16 (Micikevicius et al. 2018, figure 3).
FP16_UNDERFLOW_SHARE = 0.01


def _fp16_findings(result: ProbeResult) -> list[Finding]:
    """Under --amp: gradients fp16 cannot hold. A warning for fp16 passes (they need a loss scale, or
    bf16), a note for bf16 passes (whose range is float32's: what fp16 would lose)."""
    measured = [layer for layer in result.layers if layer.fp16_underflow is not None]
    if result.amp is None or not measured:
        return []
    under = [layer for layer in measured if layer.fp16_underflow > FP16_UNDERFLOW_SHARE]
    over = [layer for layer in measured if layer.fp16_overflow]
    if not under and not over:
        return []
    fp16 = result.amp == "float16"
    severity = Severity.WARNING if fp16 else Severity.INFO
    evidence: dict[str, Any] = {"amp": result.amp, "loss_scale": result.loss_scale, "layers_over": len(under)}
    parts = []
    if under:
        worst = max(under, key=lambda layer: layer.fp16_underflow)
        evidence.update(layer=worst.name, underflow_share=_round(worst.fp16_underflow))
        parts.append(
            f"{len(under)} layer(s) have more than {FP16_UNDERFLOW_SHARE:.0%} of their output-gradient elements "
            f"below fp16's smallest normal number before loss scaling (worst: {worst.name}, "
            f"{worst.fp16_underflow:.1%})"
        )
    if over:
        worst_over = max(over, key=lambda layer: layer.fp16_overflow)
        evidence.update(overflow_layer=worst_over.name, overflow_share=_round(worst_over.fp16_overflow))
        parts.append(f"{len(over)} layer(s) have gradient elements above fp16's largest value, 65504")
    where = "fp16 needs a loss scale" if fp16 else "bf16 holds them; fp16 would not without a loss scale"
    message = f"Mixed precision: {'; '.join(parts)}: {where}."
    layers = [layer.name for layer in under] or [layer.name for layer in over]
    return [Finding(FindingKind.FP16_RANGE, severity, layers, message, evidence)]


def _nonfinite_findings(result: ProbeResult) -> list[Finding]:
    bad = [layer for layer in result.layers if layer.nonfinite]
    if not bad and not result.loss_nonfinite:
        return []
    forward_origin = next((layer.name for layer in result.layers if layer.forward_nonfinite), None)
    evidence: dict[str, Any] = {
        "first_nonfinite_forward": forward_origin,
        "nonfinite_forward_layers": sum(layer.forward_nonfinite for layer in result.layers),
        "nonfinite_gradient_layers": sum(layer.grad_nonfinite or layer.backward_nonfinite for layer in result.layers),
        "loss_nonfinite": result.loss_nonfinite,
    }
    origin = result.nonfinite_origin
    if origin is not None:
        where = _origin_text(origin)
        evidence.update(
            origin_stage=origin.stage,
            origin_module=origin.module,
            origin_type=origin.type,
            origin_input_min=_round(min((low for low, _ in origin.input_ranges), default=None)),
            origin_input_max=_round(max((high for _, high in origin.input_ranges), default=None)),
            passed_on=len(origin.passed_on),
            origin_op=origin.op.name if origin.op else None,
            origin_domain=origin.op.domain if origin.op else None,
        )
    elif forward_origin:
        where = f"the forward pass first produced NaN/Inf at {forward_origin}"
    elif result.loss_nonfinite:
        where = "the loss is NaN/Inf although every layer's output was finite"
    else:
        where = "the backward pass produced NaN/Inf gradients from finite activations"
    message = f"Non-finite values: {where}; {len(bad)} layer(s) affected."
    return [Finding(FindingKind.NONFINITE, Severity.ERROR, [layer.name for layer in bad], message, evidence)]


def _origin_text(origin: NonfiniteOrigin) -> str:
    """Where it came from, what became non-finite, and the inputs' range there."""
    ranges = ", ".join(f"[{low:.3g}, {high:.3g}]" for low, high in origin.input_ranges[:3])
    inputs = f"; its inputs ranged {ranges}" if ranges else ""
    passed = ""
    if origin.passed_on:
        shown = ", ".join(origin.passed_on[:3]) + (", ..." if len(origin.passed_on) > 3 else "")
        passed = f"; {len(origin.passed_on)} module(s) only passed it on ({shown})"
    made = ""
    # The op inside that module's code (measure/nonfinite/), where it says more than the module: one with a domain, or
    # one the user's code called (not the F.linear inside an nn.Linear of gradcheck's demo).
    if origin.op is not None and (origin.op.domain is not None or origin.op.location is not None):
        made = f"; made by {origin.op.detail}" + (f" at {origin.op.location}" if origin.op.location else "")
    if origin.module is None:
        return f"it first appears in the loss ({origin.detail}){made}{inputs}{passed}"
    stage = (
        "forward pass"
        if origin.stage == "forward"
        else f"{origin.stage} pass"
        if origin.stage == "backward"
        else origin.stage
    )
    return f"it first appears in the {stage} at {origin.module} ({origin.type}): {origin.detail}{made}{inputs}{passed}"


def _severity(magnitude: float, thresholds: Thresholds) -> Severity | None:
    if magnitude >= thresholds.decades_error:
        return Severity.ERROR
    if magnitude >= thresholds.decades_warning:
        return Severity.WARNING
    return None


def _depth_findings(
    profile: DepthProfile,
    ratios: dict[str, float],
    thresholds: Thresholds,
    order: list[str],
    structure: ModelStructure,
) -> list[Finding]:
    if profile.decades is None:
        return []
    decades = profile.decades
    evidence: dict[str, Any] = {
        "decades": round(decades, 3),
        "gain_per_layer": _round(profile.gain_per_layer),
        "gain_per_block": _round(profile.gain_per_block),
        "blocks": profile.blocks,
        "depth_scale_layers": _round(profile.depth_scale),
        "forward_decades": _round(profile.forward_decades),
        "trend_layers": len(profile.layers),
        "trend_layer_type": profile.layer_type,
        "signal": "backward" if profile.hooked else "weight_grad_norm",
        "zero_layers": len(profile.zero_layers),
        "first_layer": profile.layers[0],
        "last_layer": profile.layers[-1],
    }
    # Layers of every type are listed by their own-kind ratio; the head stays out, as from the trend.
    listed = [n for n in order if n in ratios and n != profile.head]
    unhooked = "" if profile.hooked else UNHOOKED_NOTE
    # Exactly-zero gradients at the input end below a decaying trend are the limit of vanishing
    # (float underflow), not a separate problem: they make it an error however short the trend.
    vanishing_severity = _severity(-decades, thresholds) if decades < 0 else None
    if profile.zero_layers and decades <= 0:
        vanishing_severity = Severity.ERROR
    findings = []
    forward = profile.forward_decades
    forward_counted = False
    if vanishing_severity:
        layers = [n for n in listed if ratios[n] <= 10**-thresholds.decades_warning]
        zero = f" (exactly zero, underflowed, at {len(profile.zero_layers)} layer(s))" if profile.zero_layers else ""
        lead = (
            "Vanishing gradients" if vanishing_severity is Severity.ERROR else "The gradient weakens toward the input"
        )
        message = (
            f"{lead}: the backward signal at the input end is {_decades_text(decades)} of that "
            f"near the loss{zero}; each layer passes on x{_fmt(profile.gain_per_layer)} of it."
        )
        if forward is not None and forward <= -thresholds.forward_decades_error:
            message += f" The forward signal also collapses ({_decades_text(forward)} from input to output)."
            forward_counted = True
        findings.append(
            Finding(FindingKind.VANISHING_GRADIENT, vanishing_severity, layers, message + unhooked, dict(evidence))
        )
    growth = _normalized_growth(profile, thresholds, structure, evidence) if decades > 0 else None
    exploding_severity = _severity(decades, thresholds) if decades > 0 and growth is None else None
    if growth is not None:
        findings.append(growth)
    if exploding_severity:
        layers = [n for n in listed if ratios[n] >= 10**thresholds.decades_warning]
        lead = "Exploding gradients" if exploding_severity is Severity.ERROR else "The gradient grows toward the input"
        message = (
            f"{lead}: the backward signal at the input end is {_decades_text(decades)} of that "
            f"near the loss; each layer multiplies it by x{_fmt(profile.gain_per_layer)}."
        )
        if forward is not None and forward >= thresholds.forward_decades_error:
            message += f" The forward activations grow too ({_decades_text(forward)} from input to output)."
            forward_counted = True
        findings.append(
            Finding(FindingKind.EXPLODING_GRADIENT, exploding_severity, layers, message + unhooked, dict(evidence))
        )
    if forward is not None and abs(forward) >= thresholds.forward_decades_error and not forward_counted:
        kind = FindingKind.EXPLODING_ACTIVATION if forward > 0 else FindingKind.VANISHING_ACTIVATION
        verb = "grow" if forward > 0 else "collapse"
        message = f"The forward activations {verb} with depth: RMS at the output end is {_decades_text(forward)} of the input end."
        findings.append(Finding(kind, Severity.ERROR, [profile.layers[-1]], message, dict(evidence)))
    return findings


def _normalized_growth(
    profile: DepthProfile, thresholds: Thresholds, structure: ModelStructure, evidence: dict[str, Any]
) -> Finding | None:
    """Growth toward the input that normalization explains (NORMALIZED_GROWTH_PER_LAYER, SKIP_GROWTH_PER_BLOCK):
    the model normalizes, its forward signal stays flat, and the gradient grows no faster per block (per layer
    without skips) than normalized layers make it. A note; a warning from DECADES_ERROR on."""
    decades = profile.decades
    if decades is None or decades < thresholds.decades_warning or not structure.normalized:
        return None
    forward = profile.forward_decades
    if forward is not None and abs(forward) >= thresholds.forward_decades_error / 2:
        return None  # normalization keeps the forward signal flat; a drifting one is not its doing
    if profile.gain_per_block is not None:
        rate, unit, tolerance = profile.gain_per_block, "block", SKIP_GROWTH_PER_BLOCK
        usual = "usual for normalized nets with skips (BatchNorm ResNets: about x1.3 per block; Inception: x1.75)"
    elif structure.residual is not True and profile.gain_per_layer is not None and decades < thresholds.decades_error:
        # Without skips the growth compounds over every layer: past DECADES_ERROR a deep BN net without skips
        # is untrainable (Yang et al. 2019), whatever its rate per layer.
        rate, unit, tolerance = profile.gain_per_layer, "layer", NORMALIZED_GROWTH_PER_LAYER
        usual = "usual for BatchNorm nets, about x1.21 per layer (Yang et al. 2019)"
    else:
        return None
    if rate > tolerance:
        return None
    severity = Severity.WARNING if decades >= thresholds.decades_error else Severity.INFO
    count = profile.blocks if unit == "block" else len(profile.layers)
    message = (
        f"The gradient grows x{rate:.3g} per {unit} toward the input ({_decades_text(decades)} over {count} "
        f"{unit}s), with the forward signal kept flat by normalization: {usual}."
    )
    if severity is Severity.WARNING:
        message += " The layers near the input take larger steps at first: watch the first steps (a short lr warm-up)."
    return Finding(
        FindingKind.NORMALIZED_GROWTH, severity, [], message, {**evidence, "tolerance_per_" + unit: tolerance}
    )


def _relative_grad_findings(layers: list[LayerStats], thresholds: Thresholds) -> list[Finding]:
    # A weight whose output goes straight into a norm layer is scale-invariant: a step that looks large
    # against ||w|| grows ||w|| and shrinks the next gradient, so ||g||/||w|| is no risk there (issue 22).
    large = [
        layer
        for layer in layers
        if layer.relative_grad is not None
        and layer.relative_grad >= thresholds.relative_grad_risk
        and layer.normalized_by is None
    ]
    if not large:
        return []
    worst = max(large, key=lambda layer: layer.relative_grad)
    severity = Severity.ERROR if worst.relative_grad >= thresholds.relative_grad_error else Severity.WARNING
    safe_lr = 0.01 / worst.relative_grad  # a step that changes the worst layer by at most 1%
    message = (
        f"Relative gradients are huge: ||g||/||w|| reaches {worst.relative_grad:.3g} at {worst.name}, so one SGD "
        f"step with lr {thresholds.lr:g} would change it by {worst.relative_grad * thresholds.lr:.3g}x its own size."
    )
    if thresholds.lr == DEFAULT_LR:  # judged against a learning rate the user may not train with: say so
        message += f" lr {DEFAULT_LR:g} is the default of --lr: pass the one you train with."
    safe_step = thresholds.lr_step_fraction / worst.relative_grad
    if safe_step < PRACTICAL_LR_FLOOR:
        message += (
            f" Keeping a step within {thresholds.lr_step_fraction:.0%} would take lr <= {safe_step:.2g}, below any "
            "practical learning rate: the layer needs a structural fix (its initialization or the architecture)."
        )
    evidence = {
        "max_relative_grad": _round(worst.relative_grad),
        "worst_layer": worst.name,
        "layers_over_warning": len(large),
        "lr": thresholds.lr,
        "lr_for_1_percent_change": _round(safe_lr),
    }
    return [Finding(FindingKind.LARGE_RELATIVE_GRADIENT, severity, [layer.name for layer in large], message, evidence)]


def time_profile(series: RecurrentStats) -> TimeProfile | None:
    """The decay of dL/dx_t from the last step (nearest the loss) to the first."""
    steps = series.time_steps
    positive = [(t, b) for t, b in enumerate(steps) if b > 0 and math.isfinite(b)]
    if len(steps) < 2 or not positive or not steps[-1] > 0:
        return None
    slope = theil_sen_slope([float(t) for t, _ in positive], [math.log(b) for _, b in positive])
    return TimeProfile(
        name=series.name,
        type=series.type,
        steps=len(steps),
        decades=math.log10(positive[0][1] / steps[-1]),
        gain_per_step=math.exp(-slope),
        zero_steps=sum(1 for b in steps if b == 0.0),
        ratio_to_last=[b / steps[-1] for b in steps],
        stack=series.stack,
    )


def time_profiles_of(series: list[RecurrentStats]) -> list[TimeProfile]:
    """Each recurrent module's profile, in the order measured. A stacked module's layers are each judged on their
    own (issue 22): its profile is its steepest layer's (exact zeros first, then the largest |decades|), one for the
    layers whose gradient shrinks toward the first step and one for those where it grows, if both occur."""
    groups: dict[tuple[str, bool], list[TimeProfile]] = {}
    for profile in filter(None, map(time_profile, series)):
        key = (profile.stack, _shrinks(profile)) if profile.stack is not None else (profile.name, False)
        groups.setdefault(key, []).append(profile)
    profiles = []
    for members in groups.values():
        steepest = max(members, key=lambda p: (p.zero_steps > 0, abs(p.decades)))
        if steepest.stack is not None:
            steepest = replace(steepest, layer_decades={p.name: p.decades for p in members})
        profiles.append(steepest)
    return profiles


def _shrinks(profile: TimeProfile) -> bool:
    return profile.decades < 0 or profile.zero_steps > 0


def _time_findings(profiles: list[TimeProfile], thresholds: Thresholds) -> list[Finding]:
    findings = []
    stack_sizes: dict[str, int] = {}
    for profile in profiles:
        if profile.stack is not None:
            stack_sizes[profile.stack] = stack_sizes.get(profile.stack, 0) + len(profile.layer_decades)
    for profile in profiles:
        evidence = {
            "module": profile.name,
            "type": profile.type,
            "time_steps": profile.steps,
            "decades": round(profile.decades, 3),
            "gain_per_step": _round(profile.gain_per_step),
            "zero_steps": profile.zero_steps,
        }
        if _shrinks(profile):
            severity = Severity.ERROR if profile.zero_steps else _severity(-profile.decades, thresholds)
            kind, what = FindingKind.VANISHING_THROUGH_TIME, "vanishes"
        else:
            severity = _severity(profile.decades, thresholds)
            kind, what = FindingKind.EXPLODING_THROUGH_TIME, "explodes"
        if severity is None:
            continue
        if profile.stack is None:
            message = (
                f"The gradient through time {what} in {profile.name} ({profile.type}): the gradient reaching the first "
                f"of {profile.steps} steps is {_decades_text(profile.decades)} of that at the last step "
                f"(x{_fmt(profile.gain_per_step)} per step)."
            )
            findings.append(Finding(kind, severity, [profile.name], message, evidence))
            continue
        # A stack's layers past the warning line, each judged alone under its stack's output gradient (recurrent.py).
        layers = [name for name, d in profile.layer_decades.items() if abs(d) >= thresholds.decades_warning]
        layers = layers or [profile.name]  # (exact zeros at the first steps make the steepest layer one)
        shown = [profile.layer_decades[name] for name in layers]
        spread = _decades_text(max(shown, key=abs))
        if len(shown) > 1:
            spread = f"{_decades_text(min(shown, key=abs))} to {spread}"
        message = (
            f"The gradient through time {what} in {len(layers)} of the {stack_sizes[profile.stack]} layers of "
            f"{profile.stack} ({profile.type}), each followed alone from the stack's output: the gradient reaching the "
            f"first of {profile.steps} steps is {spread} of that at the last (steepest {profile.name}, "
            f"x{_fmt(profile.gain_per_step)} per step)."
        )
        evidence.update(stack=profile.stack, stack_layers=stack_sizes[profile.stack], layers_over=len(layers))
        findings.append(Finding(kind, severity, layers, message, evidence))
    return findings


def _zero_gradient_findings(layers: list[LayerStats], profile: DepthProfile) -> list[Finding]:
    """Layers that cannot learn: exactly zero gradient not explained by a vanishing trend, or none at all, in
    every pass. A layer that got a gradient in another pass than the first is not one: its loss depends on the
    batch (an SSD's hard-negative mining leaves the anchors of its coarsest map without a loss in some batches)."""
    explained = set(profile.zero_layers) if profile.decades is not None and profile.decades <= 0 else set()
    never = [
        layer for layer in layers if layer.trainable and not layer.shared_with and not layer.grad_nonzero_in_a_pass
    ]
    zero = [layer.name for layer in never if layer.grad_norm == 0.0 and layer.name not in explained]
    missing = [layer for layer in never if layer.grad_norm is None]
    findings = []
    if zero:
        message = f"{len(zero)} layer(s) get a gradient of exactly zero, so they cannot learn: {', '.join(zero[:5])}."
        findings.append(Finding(FindingKind.ZERO_GRADIENT, Severity.ERROR, zero, message, {"zero_layers": len(zero)}))
    if missing:
        off_path = [layer.name for layer in missing if layer.calls]
        never_run = [layer.name for layer in missing if not layer.calls]
        reasons = []
        if off_path:
            reasons.append(f"ran but are not on the loss's path: {', '.join(off_path[:5])}")
        if never_run:
            reasons.append(f"never ran in the forward pass: {', '.join(never_run[:5])}")
        message = f"{len(missing)} trainable layer(s) got no gradient at all; " + "; ".join(reasons) + "."
        evidence = {"no_grad_layers": len(off_path), "not_run_layers": len(never_run)}
        names = [layer.name for layer in missing]
        findings.append(Finding(FindingKind.ZERO_GRADIENT, Severity.WARNING, names, message, evidence))
    return findings


# Which status wins when a layer is in several findings: the worse one.
_STATUS_RANK = [LayerStatus.OK, LayerStatus.WEAK, LayerStatus.HIGH, LayerStatus.VANISHING, LayerStatus.EXPLODING]


def _statuses(
    layers: list[LayerStats],
    findings: list[Finding],
    ratios: dict[str, float],
    thresholds: Thresholds,
    hooked: bool = True,
) -> dict[str, LayerStatus]:
    """A layer is flagged only as part of a model-level finding: one odd layer in a healthy profile
    (attention query/key projections at initialization) is not vanishing."""
    by_name = {layer.name: layer for layer in layers}
    from_findings: dict[str, LayerStatus] = {}
    for finding in findings:
        for name in finding.layers:
            status = _finding_status(finding, by_name.get(name), ratios.get(name), thresholds)
            previous = from_findings.get(name, LayerStatus.OK)
            from_findings[name] = max(previous, status, key=_STATUS_RANK.index)
    statuses = {}
    for layer in layers:
        if not layer.trainable:
            status = LayerStatus.FROZEN
        elif layer.calls == 0 and hooked and layer.grad_norm is None:
            # (a module whose parameters are used functionally, like MultiheadAttention's out_proj,
            # never runs its own forward but does get a gradient)
            status = LayerStatus.NOT_RUN
        elif layer.nonfinite:
            status = LayerStatus.NONFINITE
        elif layer.grad_norm is None and not layer.shared_with:
            status = LayerStatus.NO_GRAD
        elif (layer.grad_norm == 0.0 or layer.backward == 0.0) and not layer.grad_nonzero_in_a_pass:
            status = LayerStatus.ZERO  # (zero in the first pass only is the batch's doing: see _zero_gradient_findings)
        else:
            status = from_findings.get(layer.name, LayerStatus.OK)
        statuses[layer.name] = status
    return statuses


def _finding_status(
    finding: Finding, layer: LayerStats | None, ratio: float | None, thresholds: Thresholds
) -> LayerStatus:
    """How badly one finding touches one of its layers: past the error line, or only the warning line."""
    kind = finding.kind
    # A status word is never stronger than its finding: "exploding" rows only under an error (issue 22).
    error = finding.severity is Severity.ERROR
    if kind is FindingKind.VANISHING_GRADIENT and ratio is not None:
        return LayerStatus.VANISHING if error and ratio <= 10**-thresholds.decades_error else LayerStatus.WEAK
    if kind is FindingKind.EXPLODING_GRADIENT and ratio is not None:
        return LayerStatus.EXPLODING if error and ratio >= 10**thresholds.decades_error else LayerStatus.HIGH
    if kind is FindingKind.LARGE_RELATIVE_GRADIENT and layer is not None and layer.relative_grad is not None:
        return (
            LayerStatus.EXPLODING
            if error and layer.relative_grad >= thresholds.relative_grad_error
            else LayerStatus.HIGH
        )
    if kind is FindingKind.VANISHING_THROUGH_TIME:
        return LayerStatus.VANISHING if error else LayerStatus.WEAK
    if kind is FindingKind.EXPLODING_THROUGH_TIME:
        return LayerStatus.EXPLODING if error else LayerStatus.HIGH
    return LayerStatus.OK


def _decades_text(decades: float) -> str:
    return f"10^{decades:+.1f}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")
