"""The fixes catalog: for a finding on a measured model, the fixes that fit it, most supported first.

Each fix says why it applies to *this* model, with its numbers, and shows the PyTorch code. A fix that
does not fit the model (an LSTM for a CNN, BatchNorm for a net that is already normalized) is not offered.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradcheck_cli.choices import FindingKind, FixId
from gradcheck_cli.stats import LayerStats, ProbeResult

if TYPE_CHECKING:
    from gradcheck_cli.diagnosis import DepthProfile

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
        """Median std * sqrt(fan_in) over the layers with weight matrices, and how many there are."""
        scales = [
            layer.weight_std * math.sqrt(layer.fan_in)
            for layer in self.result.layers
            if layer.weight_std is not None and layer.fan_in and layer.type in ("Linear", "Conv1d", "Conv2d", "Conv3d")
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
        candidates = [_relu, _init_vanishing, _batchnorm, _residual]
    elif kind in (FindingKind.EXPLODING_GRADIENT, FindingKind.EXPLODING_ACTIVATION):
        candidates = [_residual_for_normalized, _zero_init_branches, _init_exploding, _clipping, _learning_rate]
    elif kind is FindingKind.LARGE_RELATIVE_GRADIENT:
        candidates = [_init_exploding, _learning_rate, _clipping]
    elif kind is FindingKind.NONFINITE:
        candidates = [_clipping, _init_exploding]
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
    if context.result.structure.residual is not True:
        return None
    gain = evidence.get("gain_per_layer")
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
