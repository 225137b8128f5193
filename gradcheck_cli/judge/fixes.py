"""The fixes catalog: for a finding on a measured model, the fixes that fit it, most supported first.

Each fix says why it applies to *this* model, with its numbers, and shows the PyTorch code. A fix that
does not fit the model (an LSTM for a CNN, BatchNorm for a net that is already normalized) is not offered.
"""

from __future__ import annotations

import ast
import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradcheck_cli.common.choices import FindingKind, FixId
from gradcheck_cli.common.stats import LayerStats, NonfiniteOp, ProbeResult

if TYPE_CHECKING:
    from gradcheck_cli.judge.depth_trend import DepthProfile

SATURATING = ("Sigmoid", "Tanh", "Hardtanh", "Hardsigmoid", "LogSigmoid", "Softsign")
RELU_FAMILY = ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "CELU", "GELU", "SiLU", "Mish", "Softplus")
# Weight scale std * sqrt(fan_in) that keeps the signal at unit gain: He et al. 2015 (sqrt 2) for the
# ReLU family, Glorot & Bengio 2010 / LeCun (1) for tanh, sigmoid, SELU and linear layers.
HE_SCALE = math.sqrt(2.0)
UNIT_SCALE = 1.0
# A measured scale off its target by more than this factor is worth re-initializing.
INIT_SCALE_TOLERANCE = 1.25
# Below this many layers on the gradient's path, skip connections are not worth suggesting.
RESIDUAL_MIN_DEPTH = 10
# The smallest learning rate worth suggesting. Below it a layer with a typical ||g||/||w|| of 1 moves by
# under 1e-6 of its norm per step: a million steps to change once, more than a whole training run takes
# (ResNet-50 on ImageNet: 90 epochs at batch 256, about 450k steps; He et al. 2016). A model that needs
# less needs a structural fix, not a smaller lr (issue 22).
PRACTICAL_LR_FLOOR = 1e-6
# Clipping at the median of the measured total norms bounds the steps above it. It is suggested only where
# the largest measured norm exceeds that threshold by at least this share: below it the clipped step is
# nearly the step itself, and with norms that agree clipping rescales every step alike, which is a
# learning-rate change, not a guard against spikes (Pascanu et al. 2013, section 3.2; issue 22).
CLIP_MIN_CUT = 0.1


RESIDUAL_BLOCK_CODE = (
    "class Block(nn.Module):\n"
    "    def __init__(self, width):\n"
    "        super().__init__()\n"
    "        self.norm, self.fc = nn.BatchNorm1d(width), nn.Linear(width, width)\n"
    "    def forward(self, x):\n"
    "        return x + self.fc(torch.relu(self.norm(x)))"
)


def chrono_forget_bias(seq_len: int) -> float:
    """ln(T - 1): the upper end of chrono initialization (Tallec & Ollivier 2018). sigmoid of it is
    1 - 1/T, so the cell gradient keeps about e^-1 of itself over T steps instead of 0.5^T."""
    return math.log(max(seq_len - 1, 2))


@dataclass(frozen=True)
class Fix:
    id: str
    title: str
    detail: str  # why it applies to this model, with its numbers
    code: str
    params: dict[str, Any] | None = None  # e.g. {"max_norm": 1.3} for clipping


@dataclass
class FixContext:
    result: ProbeResult
    profile: DepthProfile
    lr: float = 1e-3  # the learning rate the user trains with (--lr)
    step_fraction: float = 0.1  # the largest share of a layer's norm one step should change

    @property
    def activation_summary(self) -> tuple[int, int, str]:
        """(saturating activations, all activations, the most common saturating type)."""
        acts = self.result.structure.activations
        saturating = {k: v for k, v in acts.items() if k in SATURATING}
        most = max(saturating, key=saturating.get) if saturating else ""
        return sum(saturating.values()), sum(acts.values()), most

    @property
    def relu_like(self) -> bool:
        acts = self.result.structure.activations
        return sum(v for k, v in acts.items() if k in RELU_FAMILY) > sum(acts.values()) / 2

    def weight_scale(self) -> tuple[float, int] | None:
        """Median std * sqrt(fan_in) over the layers with weight matrices, and how many there are. A weight at
        exactly zero is a zero-initialized design's (Fixup's last conv, a zero head), not a scale: left out."""
        scales = [
            layer.weight_std * math.sqrt(layer.fan_in)
            for layer in self.result.layers
            if layer.weight_std and layer.fan_in and layer.type in ("Linear", "Conv1d", "Conv2d", "Conv3d")
        ]
        return (statistics.median(scales), len(scales)) if scales else None

    def target_scale(self) -> tuple[float, str]:
        return (HE_SCALE, "He") if self.relu_like else (UNIT_SCALE, "Xavier/LeCun")

    def step_risk(self) -> tuple[LayerStats, float, float] | None:
        """(the layer with the largest finite ||g||/||w||, the share of its norm one SGD step at ``lr``
        changes, the lr that keeps that share at ``step_fraction``), when the step is too big; else None."""
        # (a weight whose output feeds a norm layer is scale-invariant: its ||g||/||w|| is not a step's effect)
        layers = [
            layer
            for layer in self.result.layers
            if layer.relative_grad is not None and math.isfinite(layer.relative_grad) and layer.normalized_by is None
        ]
        if not layers:
            return None
        worst = max(layers, key=lambda layer: layer.relative_grad)
        change = self.lr * worst.relative_grad
        if change < self.step_fraction:
            return None
        return worst, change, self.step_fraction / worst.relative_grad

    @property
    def depth(self) -> int:
        return len(self.profile.layers)


def fixes_for(kind: FindingKind, evidence: dict[str, Any], context: FixContext) -> list[Fix]:
    """The fixes for one finding, in order of how much the measurements support them."""
    if kind in (FindingKind.VANISHING_GRADIENT, FindingKind.VANISHING_ACTIVATION):
        candidates = [_relu, _init_vanishing, _batchnorm, _residual, _recurrent_residual]
    elif kind in (FindingKind.EXPLODING_GRADIENT, FindingKind.EXPLODING_ACTIVATION):
        candidates = [_residual_for_normalized, _zero_init_branches, _init_exploding, _clipping, _learning_rate]
    elif kind is FindingKind.NORMALIZED_GROWTH:
        candidates = [_zero_init_branches]  # growth normalization explains: branches that start as the identity
    elif kind is FindingKind.LARGE_RELATIVE_GRADIENT:
        candidates = [_init_exploding, _learning_rate, _clipping]
    elif kind is FindingKind.NONFINITE:
        # An op outside its domain (a log of negatives, a division by 0) is cured where it is made: clipping bounds
        # the gradient's norm, and the init does not move a domain (issue 22).
        candidates = [_safe_op] if domain_op(context.result) else [_clipping, _init_exploding]
    elif kind is FindingKind.VANISHING_THROUGH_TIME:
        candidates = [_lstm, _forget_bias]
    elif kind is FindingKind.EXPLODING_THROUGH_TIME:
        candidates = [_clipping, _recurrent_orthogonal]
    elif kind is FindingKind.FP16_RANGE:
        candidates = [_loss_scaling]
    else:
        candidates = []
    fixes = [fix for build in candidates if (fix := build(context, evidence)) is not None]
    return fixes


def _relu(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    saturating, total, most = context.activation_summary
    if not saturating or saturating < total / 2:
        return None
    bound = "0.25" if most == "Sigmoid" else "1, and far less once |x| > 2"
    gain = evidence.get("gain_per_layer")
    measured = f"; measured gain x{gain:.3g} per layer" if gain else ""
    return Fix(
        FixId.RELU.value,
        "Use non-saturating activations (ReLU, LeakyReLU, ELU; or SELU with LeCun init)",
        f"{saturating} of {total} activations are {most}, whose derivative is at most {bound}, so every layer "
        f"shrinks the backward signal{measured}. ReLU passes the gradient unchanged where it is active; He "
        "init (std sqrt(2/fan_in)) keeps its scale (He et al. 2015). SELU needs LeCun init, std "
        "sqrt(1/fan_in) (Klambauer et al. 2017).",
        "act = nn.ReLU()  # instead of nn.Sigmoid() / nn.Tanh()\n"
        "for m in model.modules():\n"
        "    if isinstance(m, (nn.Linear, nn.Conv2d)):\n"
        '        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")\n'
        "        if m.bias is not None:\n"
        "            nn.init.zeros_(m.bias)",
    )


def _init_vanishing(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    if recurrent_trend(context):
        return None  # the scale of Linear and Conv weights beside a recurrent stack is not what its trend crosses
    measured = context.weight_scale()
    if measured is None:
        return None
    scale, count = measured
    target, name = context.target_scale()
    if scale * INIT_SCALE_TOLERANCE >= target:
        return None
    return _init_fix(context, scale, count, target, name, "too small")


def _init_exploding(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    measured = context.weight_scale()
    if measured is None:
        return None
    scale, count = measured
    target, name = context.target_scale()
    if scale <= target * INIT_SCALE_TOLERANCE:
        return None
    return _init_fix(context, scale, count, target, name, "too large")


def _init_fix(context: FixContext, scale: float, count: int, target: float, name: str, verdict: str) -> Fix:
    per_layer = scale / target
    default_note = " (PyTorch's default U(+-1/sqrt(fan_in)) gives 0.577)" if abs(scale - 0.577) < 0.03 else ""
    if context.relu_like:
        code = (
            "for m in model.modules():\n"
            "    if isinstance(m, (nn.Linear, nn.Conv2d)):\n"
            '        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # He et al. 2015\n'
            "        if m.bias is not None:\n"
            "            nn.init.zeros_(m.bias)"
        )
    else:
        code = (
            "for m in model.modules():\n"
            "    if isinstance(m, (nn.Linear, nn.Conv2d)):\n"
            "        nn.init.xavier_normal_(m.weight)  # or nn.init.orthogonal_(m.weight)\n"
            "        if m.bias is not None:\n"
            "            nn.init.zeros_(m.bias)"
        )
    return Fix(
        FixId.INIT.value,
        f"Initialize weights for unit gain ({name})",
        f"The median weight scale std*sqrt(fan_in) over {count} weight layers is {scale:.3g}{default_note}; "
        f"{name} init for these activations is {target:.3g}. The scale is {verdict}: each layer multiplies "
        f"the signal by about {per_layer:.2f} of what unit gain needs.",
        code,
        {"scheme": "scale", "target": round(target, 4), "measured_scale": round(scale, 4)},
    )


def _batchnorm(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    structure = context.result.structure
    if structure.normalized or structure.recurrent or context.depth < RESIDUAL_MIN_DEPTH:
        return None
    if structure.convolutional:
        code = "nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())"
    else:
        code = "nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU())  # LayerNorm for sequences"
    return Fix(
        FixId.BATCHNORM.value,
        "Normalize each layer's pre-activations (BatchNorm / LayerNorm)",
        f"No normalization layer in {context.depth} layers: nothing pulls the pre-activations back to unit "
        "scale, so they drift into the regions where the activation's derivative is small (Ioffe & Szegedy "
        "2015). Pair it with residual connections at this depth: deep normalized nets without skips explode "
        "at initialization (Yang et al. 2019).",
        code,
    )


def _residual(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    structure = context.result.structure
    if structure.residual or structure.recurrent or context.depth < RESIDUAL_MIN_DEPTH:
        return None
    known = "has no skip connections" if structure.residual is False else "shows no sign of skip connections"
    return Fix(
        FixId.RESIDUAL.value,
        "Add residual connections",
        f"The gradient crosses {context.depth} layers in series and the model {known}: a block computing "
        "x + f(x) gives the gradient an identity path around every layer (He et al. 2016); zero-initialize the "
        "last layer (or norm) of each branch so the net starts close to identity.",
        RESIDUAL_BLOCK_CODE,
    )


def _residual_for_normalized(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    structure = context.result.structure
    if not structure.normalized or structure.residual or structure.recurrent:
        return None
    norms = sum(structure.norms.values())
    gain = evidence.get("gain_per_layer")
    measured = f" (measured x{gain:.3g} per layer)" if gain else ""
    return Fix(
        FixId.RESIDUAL.value,
        "Add residual connections (the net is normalized but has no skips)",
        f"The model has {norms} normalization layers and no skip connections: at this depth BatchNorm itself "
        f"makes the gradient grow geometrically toward the input at initialization{measured} (Yang et al. 2019). "
        "More normalization does not help; an identity path around each block does. One large SGD step "
        "also reverses it, but the first steps are then wasted.",
        RESIDUAL_BLOCK_CODE,
    )


def _zero_init_branches(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    if not context.result.structure.additive_skips:
        return None  # no x + f(x) to start at the identity (none, or concatenations only)
    gain = evidence.get("gain_per_block")
    measured = f" (x{gain:.3g} per block here)" if gain else ""
    return Fix(
        FixId.INIT.value,
        "Zero-initialize the last layer (or norm) of each residual branch",
        f"The model has skip connections, yet the gradient grows toward the input{measured}: each x + f(x) adds "
        "its branch's variance to the residual stream. With the branch's last BatchNorm weight (or last layer) "
        "at zero, every block starts as the identity (Goyal et al. 2017; Fixup, Zhang et al. 2019); "
        "torchvision's ResNets do it with zero_init_residual=True.",
        "for block in model.modules():\n"
        "    if isinstance(block, BasicBlock):  # your residual block class\n"
        "        nn.init.zeros_(block.bn2.weight)  # the branch's last norm (or its last layer's weight)",
        {"scheme": "zero_residual"},
    )


def _learning_rate(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    risk = context.step_risk()
    if risk is None:
        return None
    worst, change, safe = risk
    if safe < PRACTICAL_LR_FLOOR:
        return None  # no practical lr keeps the step small: the structural fixes beside it are the cure
    safe = float(f"{safe:.2g}")
    return Fix(
        FixId.LEARNING_RATE.value,
        f"Lower the learning rate to {safe:g} or less",
        f"One SGD step changes a layer by lr x ||g||/||w||; {worst.name} measures {worst.relative_grad:.3g}, so lr "
        f"{context.lr:g} changes it by {change:.3g}x its norm. lr <= {safe:g} keeps a step within "
        f"{context.step_fraction:.0%}; with Adam, whose steps are about lr per weight, warm the lr up instead.",
        f"optimizer = torch.optim.SGD(model.parameters(), lr={safe:g})",
        {"lr": safe, "current_lr": context.lr},
    )


def _clipping(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    norms = [n for n in context.result.total_grad_norms if math.isfinite(n) and n > 0]
    if not norms:
        return Fix(
            FixId.CLIPPING.value,
            "Clip the gradient norm",
            "Every measured total gradient norm was NaN/Inf or zero, so no threshold can be derived from this "
            "model yet: fix the non-finite source first, then clip at the median norm of healthy steps.",
            "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)",
        )
    median, largest = statistics.median(norms), max(norms)
    max_norm = _rounded_down(median)
    if largest < max_norm * (1 + CLIP_MIN_CUT):
        return None  # one measured norm, or norms that agree: no threshold below the largest bounds a spike
    return Fix(
        FixId.CLIPPING.value,
        f"Clip the gradient norm at max_norm={max_norm:g}",
        f"The total gradient norm measured over {len(norms)} passes has median {median:.3g} (range "
        f"{min(norms):.3g} to {largest:.3g}); clipping at the median (Pascanu et al. 2013, section 3.2) cuts the "
        f"largest step by {1 - max_norm / largest:.0%}. It guards the step; it does not make the gradient flow healthy.",
        f"torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={max_norm:g})  # after loss.backward()",
        {"max_norm": max_norm, "median_total_norm": float(f"{median:.4g}")},
    )


def _rounded_down(value: float) -> float:
    """``value`` to 2 significant digits, never above it: a threshold rounded up could reach the norm it bounds."""
    rounded = float(f"{value:.2g}")
    if rounded > value:
        unit = 10.0 ** (math.floor(math.log10(value)) - 1)
        rounded = float(f"{rounded - unit:.2g}")
    return rounded


def _lstm(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    if not evidence.get("type", "").startswith("RNN"):
        return None
    steps = evidence["time_steps"]
    bias = chrono_forget_bias(steps)
    return Fix(
        FixId.LSTM.value,
        "Use a gated recurrent cell (LSTM or GRU)",
        f"{evidence['module']} is a vanilla RNN; its gradient shrinks x{evidence['gain_per_step']:.3g} per step, "
        f"{evidence['decades']:+.1f} decades over {steps} steps (Bengio, Simard & Frasconi 1994). An LSTM's cell "
        f"state carries the gradient additively (Hochreiter & Schmidhuber 1997), but only with a forget-gate bias "
        f"well above 0: set it to ln(T-1) = {bias:.2f} for T = {steps} (chrono init, Tallec & Ollivier 2018).",
        "rnn = nn.LSTM(input_size, hidden_size, batch_first=True)\n" + _forget_bias_code("rnn", bias),
        {"forget_bias": round(bias, 3)},
    )


# The gate whose bias sets how much of the state survives a step, at rows [h:2h] in PyTorch's layout:
# LSTM gates are (input, forget, cell, output), GRU gates (reset, update, new); a GRU keeps its state
# where the update gate is near 1 (h_t = (1 - z) * n + z * h_(t-1)).
_MEMORY_GATE = {"LSTM": "forget", "GRU": "update"}


def _forget_bias(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    gate = _MEMORY_GATE.get(evidence.get("type", ""))
    if gate is None:
        return None
    steps = evidence["time_steps"]
    bias = chrono_forget_bias(steps)
    kind = evidence["type"]
    return Fix(
        FixId.INIT.value,
        f"Set the {kind} {gate}-gate bias to {bias:.2f}",
        f"With its default bias near 0 the {gate} gate is about 0.5, so the state's gradient halves every step: "
        f"measured x{evidence['gain_per_step']:.3g} per step over {steps} steps (Jozefowicz et al. 2015). A bias "
        f"of ln(T-1) = {bias:.2f} makes the gate 1 - 1/T (chrono init, Tallec & Ollivier 2018).",
        _forget_bias_code(kind.lower(), bias, gate),
        {"scheme": "gate_bias", "gate": gate, "forget_bias": round(bias, 3)},
    )


def _forget_bias_code(name: str, bias: float, gate: str = "forget") -> str:
    """The two bias vectors add, so one carries the whole value and the other is zeroed."""
    return (
        f"h = {name}.hidden_size\n"
        f"for param_name, p in {name}.named_parameters():\n"
        f"    if param_name.startswith('bias_ih'):\n"
        f"        p.data[h:2 * h] = {bias:.2f}  # {gate} gate\n"
        f"    elif param_name.startswith('bias_hh'):\n"
        f"        p.data[h:2 * h] = 0.0"
    )


def _recurrent_orthogonal(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    return Fix(
        FixId.INIT.value,
        "Initialize the recurrent weights orthogonally",
        f"The gradient grows x{evidence['gain_per_step']:.3g} per step in {evidence['module']}: the recurrent "
        "matrix has singular values above 1. An orthogonal matrix has all of them at 1 (Saxe et al. 2014).",
        "for name, p in rnn.named_parameters():\n    if name.startswith('weight_hh'):\n        nn.init.orthogonal_(p)",
        {"scheme": "orthogonal"},
    )


# Recurrent layer types whose stacks the depth trend can run through (a stacked module is measured per layer).
RECURRENT_TYPES = ("LSTM", "GRU", "RNN")


def recurrent_trend(context: FixContext) -> str | None:
    """The recurrent type ("LSTM") when the depth trend runs through recurrent layers only: the layers of a stacked
    nn.LSTM/GRU/RNN (measured one by one) or single-layer modules in series. Read off the layers' types."""
    trend = set(context.profile.layers)
    types = {layer.type for layer in context.result.layers if layer.name in trend}
    return types.pop() if len(trend) >= 2 and len(types) == 1 and types <= set(RECURRENT_TYPES) else None


def _recurrent_residual(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    kind = recurrent_trend(context)
    if kind is None or context.result.structure.residual:
        return None
    decades = evidence.get("decades")
    gain = evidence.get("gain_per_layer")
    measured = f" reaches the first at 10^{decades:+.1f} of the last" if decades is not None else " weakens"
    per_layer = f" (x{gain:.3g} per layer)" if gain else ""
    return Fix(
        FixId.RESIDUAL.value,
        "Add residual connections between the stacked recurrent layers",
        f"The gradient crosses {context.depth} {kind} layers in series and{measured}{per_layer}: each layer passes "
        "on only part of it to the layer below, through its gates and at every step. A residual connection around "
        "each layer after the first (x + layer(x)) gives it a path around every layer; GNMT's stacks train well "
        "with them where plain stacks train well to about 4 layers and poorly beyond 8 (Wu et al. 2016, "
        "section 3.1). nn.LSTM(num_layers=L) has none: build the stack from single layers.",
        "class ResidualStack(nn.Module):\n"
        "    def __init__(self, input_size, hidden_size, num_layers):\n"
        "        super().__init__()\n"
        "        self.layers = nn.ModuleList(\n"
        f"            nn.{kind}(input_size if i == 0 else hidden_size, hidden_size, batch_first=True)\n"
        "            for i in range(num_layers)\n"
        "        )\n"
        "    def forward(self, x):\n"
        "        for i, layer in enumerate(self.layers):\n"
        "            out, _ = layer(x)\n"
        "            x = out if i == 0 else x + out  # from the second layer on (Wu et al. 2016)\n"
        "        return x",
        {"scheme": "between_recurrent_layers"},
    )


def _loss_scaling(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    fp16 = context.result.amp == "float16"
    # fp16 passes found a scale that kept every gradient finite: GradScaler can start there. Otherwise
    # (bf16 passes) its default start, 2^16, halved on overflow as it goes.
    exponent = max(0, round(math.log2(evidence.get("loss_scale") or 1.0))) if fp16 else 16
    if evidence.get("overflow_share"):
        detail = (
            f"{_percent(evidence['overflow_share'])} of the gradient elements at {evidence['overflow_layer']} exceed "
            "fp16's largest value, 65504: no loss scale helps there; bfloat16 has float32's range."
        )
    else:
        ran = (
            f"these fp16 passes ran with a loss scale of 2^{exponent} and no overflow"
            if fp16
            else "bfloat16, as measured here, keeps them; in fp16 they need a loss scale"
        )
        detail = (
            f"{_percent(evidence['underflow_share'])} of the gradient elements at {evidence['layer']} are below "
            f"fp16's smallest normal number (6.1e-5) before scaling; {ran}. GradScaler scales the loss up and the "
            "gradients back down, adjusting the scale as training goes; bfloat16 needs no scaling."
        )
    code = (
        f"scaler = torch.amp.GradScaler(init_scale=2.0**{exponent})\n"
        "with torch.autocast(device_type='cuda', dtype=torch.float16):\n"
        "    loss = loss_fn(model(x), y)\n"
        "scaler.scale(loss).backward()\n"
        "scaler.step(optimizer)\n"
        "scaler.update()\n"
        "# or, on hardware with bfloat16 (Ampere and later), no scaler at all:\n"
        "# with torch.autocast(device_type='cuda', dtype=torch.bfloat16): ..."
    )
    return Fix(FixId.LOSS_SCALING.value, "Loss scaling (torch.amp.GradScaler), or bfloat16 autocast", detail, code)


def _percent(share: float) -> str:
    return f"{100 * share:.3g}%"


# --- safe_op: an op kept inside its domain (issue 22)

# The eps of a safe op, by dtype: 1/eps must stay finite (float16 holds up to 65504), and 1 - eps must differ
# from 1 for acos and asin (float16 keeps 11 bits, so 1 - 1e-3 holds; bfloat16 keeps 8, so 1 - 1e-2).
SAFE_OP_EPS = {"float16": 1e-3, "bfloat16": 1e-2}
SAFE_OP_DEFAULT_EPS = 1e-6
# exp clamped below the largest x whose exp is finite (88.7 in float32 and bfloat16, 709.8 in float64, 11.1
# in float16), with room left for a sum of such values.
EXP_CLAMP = {"float16": 10.0, "float64": 700.0}
EXP_CLAMP_DEFAULT = 80.0

# Why each domain gives NaN/Inf.
_DOMAIN_WHY = {
    "log": "The logarithm is defined for x > 0: a negative x gives NaN and 0 gives -Inf",
    "log1p": "log1p(x), the logarithm of 1 + x, is defined for x > -1: below it gives NaN, and -1 gives -Inf",
    "sqrt": "The square root is defined for x >= 0, and its slope 1/(2 sqrt(x)) is infinite at 0",
    "rsqrt": "The reciprocal square root is defined for x > 0: 0 gives Inf and a negative x NaN",
    "division": "A division by 0 gives Inf (0/0 gives NaN), and one by a tiny divisor overflows",
    "pow": "A fractional power of a negative number is NaN, 0 to a negative power is Inf, and a power below 1 "
    "has an infinite slope at 0",
    "acos": "The arccosine is defined on [-1, 1], and its slope is infinite at -1 and 1",
    "asin": "The arcsine is defined on [-1, 1], and its slope is infinite at -1 and 1",
    "atanh": "The inverse hyperbolic tangent is defined on (-1, 1): -1 and 1 give Inf",
    "exp": "The exponential overflows to Inf above the log of the largest number the dtype holds",
}
# The names a call of each domain's ops can have in the code (torch.log(x), x.log(), x.log_()).
_DOMAIN_CALLS = {
    "log": {"log", "log2", "log10"},
    "log1p": {"log1p"},
    "sqrt": {"sqrt"},
    "rsqrt": {"rsqrt"},
    "division": {"div", "divide", "true_divide", "floor_divide", "reciprocal"},
    "pow": {"pow", "float_power"},
    "acos": {"acos", "arccos"},
    "asin": {"asin", "arcsin"},
    "atanh": {"atanh", "arctanh"},
    "exp": {"exp", "expm1"},
}


def domain_op(result: ProbeResult) -> NonfiniteOp | None:
    """The op outside its domain that made the first NaN/Inf, when the watched pass found one."""
    origin = result.nonfinite_origin
    op = origin.op if origin is not None else None
    return op if op is not None and op.domain is not None else None


def _safe_op(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    op = domain_op(context.result)
    if op is None:
        return None
    eps = SAFE_OP_EPS.get(op.dtype, SAFE_OP_DEFAULT_EPS)
    limit = EXP_CLAMP.get(op.dtype, EXP_CLAMP_DEFAULT)
    bound = _number(limit) if op.domain == "exp" else _number(eps)
    rewritten = _rewrite(op, bound)
    original, operand, safe = rewritten or _placeholder(op, bound)
    at = op.location or "in the loss"
    if rewritten is not None:
        lines = [f"# {at} ({op.detail}):", safe]
    else:
        called = f", in {' '.join(op.source.split())}" if op.source else ""  # a call spread over lines, on one
        role = {"division": "the divisor", "pow": "the base"}.get(op.domain, f"the input of {op.name}")
        lines = [f"# {at}{called}: {op.detail}; {operand} stands for {role}:", f"{safe}  # instead of {original}"]
    lines += [f"# {line}" for line in _alternatives(op, operand, bound)]
    lead = f"At {op.location}, " if op.location else "In the loss, "
    stage = ", in the backward pass" if op.singular else ""
    detail = (
        f"{lead}{op.detail} made the first NaN/Inf{stage}. {_DOMAIN_WHY[op.domain]}. {_remedy(op, eps, limit)}. "
        "The NaN comes from the values this op was given, not from the size of a step: clipping the gradient, "
        "the init or a lower learning rate does not remove it."
    )
    params: dict[str, Any] = {"op": op.name, "domain": op.domain}
    params.update({"max": limit} if op.domain == "exp" else {"eps": eps})
    if rewritten is not None:
        params["replaces"] = original  # the call as written at op.location, which the code's line replaces
    return Fix(FixId.SAFE_OP.value, _safe_title(op, bound), detail, "\n".join(lines), params)


def _safe_title(op: NonfiniteOp, bound: str) -> str:
    if op.domain in ("log", "sqrt", "rsqrt"):
        return f"Keep the input of {op.name} positive (clamp it at {bound})"
    if op.domain == "log1p":
        return f"Keep the input of {op.name} above -1 (clamp it at -1 + {bound})"
    if op.domain == "division":
        return f"Keep the divisor away from 0 (clamp it at {bound}, or -{bound} for a negative one)"
    if op.domain == "pow":
        return f"Keep the base of {op.name} positive (clamp it at {bound})"
    if op.domain == "exp":
        return f"Keep {op.name} from overflowing (clamp its input at {bound}, or use logsumexp / softmax)"
    return f"Keep the input of {op.name} inside (-1, 1) (clamp it to +-(1 - {bound}))"


def _remedy(op: NonfiniteOp, eps: float, limit: float) -> str:
    shown = _number(eps)
    if op.domain in ("log", "log1p"):
        return f"Clamped at eps = {shown}, the output stays finite and its slope below {1 / eps:.3g}"
    if op.domain in ("sqrt", "rsqrt"):
        slope = 0.5 / eps**0.5 if op.domain == "sqrt" else 0.5 / eps**1.5  # |d/dx| of x^(1/2), x^(-1/2) at eps
        return f"Clamped at eps = {shown}, the output and its slope stay finite (the slope below {slope:.3g})"
    if op.domain == "division":
        return f"A divisor kept at least eps = {shown} away from 0 bounds the quotient by |numerator| / {shown}"
    if op.domain == "pow":
        return f"Clamped at eps = {shown}, the base is positive: the power and its slope are finite"
    if op.domain == "exp":
        return f"Clamped at {_number(limit)}, the exponential stays below {math.exp(limit):.3g}"
    slope = 1 / math.sqrt(1 - (1 - eps) ** 2)
    return f"Clamped to +-(1 - {shown}), the output stays finite and its slope below {slope:.3g}"


def _rewrite(op: NonfiniteOp, bound: str) -> tuple[str, str, str] | None:
    """(the op's call as written, its operand, the call with the operand kept in the domain), when the
    code that called it parses and holds a call of that op."""
    if not op.source or op.domain not in _DOMAIN_CALLS:
        return None
    tree = None
    for mode in ("eval", "exec"):  # the call itself (Python 3.11+), else the whole line
        try:
            tree = ast.parse(op.source, mode=mode)
            break
        except SyntaxError:
            continue
    if tree is None:
        return None
    for node in ast.walk(tree):  # outermost first
        operand = _domain_operand(node, op.domain)
        if operand is None or _is_number(operand):
            continue  # a number cannot be clamped: the code below says what to change
        start, end = _span(op.source, node), _span(op.source, operand)
        if start is None or end is None:
            return None
        text = op.source[end[0] : end[1]]
        receiver = _receiver(text, operand)
        arguments = [*node.args, *(k.value for k in node.keywords)] if isinstance(node, ast.Call) else []
        if operand not in arguments and op.source[end[0] - 1 : end[0]] == "(" and op.source[end[1] : end[1] + 1] == ")":
            end = (end[0] - 1, end[1] + 1)  # its own parentheses, as in (x - y) ** 0.5: replaced with it
            text = receiver = op.source[end[0] : end[1]]
        safe = _safe_operand(op, text, receiver, bound)
        return op.source[start[0] : start[1]], text, op.source[start[0] : end[0]] + safe + op.source[end[1] : start[1]]
    return None


def _domain_operand(node: ast.AST, domain: str) -> ast.expr | None:
    """In a call of an op of ``domain``, the operand that can leave it (a division's divisor, a power's base)."""
    if isinstance(node, ast.BinOp):
        if domain == "division" and isinstance(node.op, (ast.Div, ast.FloorDiv)):
            return node.right
        if domain == "pow" and isinstance(node.op, ast.Pow):
            return node.left
        return None
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    called = called.removesuffix("_")  # in place: x.log_()
    if called not in _DOMAIN_CALLS[domain]:
        return None
    method_of = func.value if isinstance(func, ast.Attribute) else None
    binary = domain in ("division", "pow") and called != "reciprocal"
    # torch.div(a, b) has both operands as arguments; a.div(b) has its first as the receiver.
    if len(node.args) >= (2 if binary else 1):
        return node.args[1] if domain == "division" and binary else node.args[0]
    if method_of is None:
        return None
    if domain == "division" and binary:
        return node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "other"), None)
    return method_of


def _is_number(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float))


def _span(source: str, node: ast.AST) -> tuple[int, int] | None:
    """A node's (start, end) in ``source`` as character offsets (ast counts UTF-8 bytes within a line)."""
    if getattr(node, "end_lineno", None) is None or getattr(node, "end_col_offset", None) is None:
        return None
    lines = source.splitlines(keepends=True)

    def offset(lineno: int, column: int) -> int:
        return sum(len(line) for line in lines[: lineno - 1]) + len(
            lines[lineno - 1].encode()[:column].decode(errors="ignore")
        )

    return offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset)


def _receiver(text: str, node: ast.expr | None) -> str:
    """``text`` as it can be written before ``.clamp_min(...)``: parenthesized unless it binds tighter."""
    if node is None or isinstance(node, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
        return text
    return f"({text})"


def _safe_operand(op: NonfiniteOp, text: str, receiver: str, bound: str) -> str:
    if op.domain == "log1p":
        return f"{receiver}.clamp_min(-1 + {bound})"
    if op.domain == "division":
        low, high = op.operand_range or (0.0, 0.0)
        if low >= 0:
            return f"{receiver}.clamp_min({bound})"
        if high <= 0:
            return f"{receiver}.clamp_max(-{bound})"
        return f"torch.where({receiver} >= 0, {receiver}.clamp_min({bound}), {receiver}.clamp_max(-{bound}))"
    if op.domain in ("acos", "asin", "atanh"):
        return f"{receiver}.clamp(-1 + {bound}, 1 - {bound})"
    if op.domain == "exp":
        return f"{receiver}.clamp_max({bound})"
    return f"{receiver}.clamp_min({bound})"  # log, sqrt, rsqrt, the base of pow


def _placeholder(op: NonfiniteOp, bound: str) -> tuple[str, str, str]:
    """(call, operand, safe call) with placeholder names, where the calling code is not at hand (or not Python
    that parses on its own line: a call spread over lines, an op inside a built-in module)."""
    if op.domain == "division":
        return "a / b", "b", f"a / {_safe_operand(op, 'b', 'b', bound)}"
    if op.domain == "pow":
        power = f"{op.exponent:g}" if op.exponent is not None else "p"
        return f"x ** {power}", "x", f"{_safe_operand(op, 'x', 'x', bound)} ** {power}"
    return f"{op.name}(x)", "x", f"{op.name}({_safe_operand(op, 'x', 'x', bound)})"


def _alternatives(op: NonfiniteOp, operand: str, bound: str) -> list[str]:
    """Other safe forms, as comment lines: for a quantity positive by construction, a smooth one."""
    receiver = operand if operand.isidentifier() or operand.endswith(")") else f"({operand})"
    if op.domain == "log":
        return [
            "a learned scale or variance? positive by construction:",
            f"{op.name}(torch.nn.functional.softplus({operand}) + {bound})",
        ]
    if op.domain == "sqrt":
        return [f"{operand} >= 0 by construction (a squared norm)? {op.name}({operand} + {bound}) is smooth"]
    if op.domain == "division":
        return [f"a divisor >= 0 by construction (a count, a norm)? ({operand} + {bound}) works too"]
    if op.domain == "pow":
        power = f"{op.exponent:g}" if op.exponent is not None else "p"
        return [f"to keep the sign: torch.sign({operand}) * {receiver}.abs().clamp_min({bound}) ** {power}"]
    if op.domain == "exp":
        return ["log(exp(x).sum(dim)) -> torch.logsumexp(x, dim)", "exp(x) / exp(x).sum(dim) -> torch.softmax(x, dim)"]
    return []


def _number(value: float) -> str:
    """1e-06 as 1e-6, 80.0 as 80: a literal as one writes it."""
    text = f"{value:g}"
    return text.replace("e-0", "e-").replace("e+0", "e+")
