"""Fixes for a signal that vanishes or explodes with depth, in the model itself: non-saturating activations,
unit-gain initialization, normalization, and residual connections (zero-initialized branches among them)."""

from __future__ import annotations

from typing import Any

from gradcheck_cli.common.choices import FixId
from gradcheck_cli.judge.fixes import INIT_SCALE_TOLERANCE, RESIDUAL_MIN_DEPTH, Fix, FixContext, recurrent_trend

RESIDUAL_BLOCK_CODE = (
    "class Block(nn.Module):\n"
    "    def __init__(self, width):\n"
    "        super().__init__()\n"
    "        self.norm, self.fc = nn.BatchNorm1d(width), nn.Linear(width, width)\n"
    "    def forward(self, x):\n"
    "        return x + self.fc(torch.relu(self.norm(x)))"
)


def relu(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
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


def init_vanishing(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
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


def init_exploding(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
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


def batchnorm(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
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


def residual(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
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


def residual_for_normalized(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
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


def zero_init_branches(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
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
