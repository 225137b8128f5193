"""Fixes in the training loop rather than the model: gradient clipping, a lower learning rate, and loss scaling
(or bfloat16) for gradients outside fp16's range."""

from __future__ import annotations

import math
import statistics
from typing import Any

from gradcheck_cli.common.choices import FixId
from gradcheck_cli.judge.fixes import PRACTICAL_LR_FLOOR, Fix, FixContext

# Clipping at the median of the measured total norms bounds the steps above it. It is suggested only where
# the largest measured norm exceeds that threshold by at least this share: below it the clipped step is
# nearly the step itself, and with norms that agree clipping rescales every step alike, which is a
# learning-rate change, not a guard against spikes (Pascanu et al. 2013, section 3.2; issue 22).
CLIP_MIN_CUT = 0.1


def learning_rate(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
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


def clipping(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
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


def loss_scaling(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
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
