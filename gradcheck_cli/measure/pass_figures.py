"""One pass's figures per layer (PassFigures), and a layer's LayerStats figures from all passes: the median of
each, its spread, and whether any was non-finite."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gradcheck_cli.measure.layer_figures import gradient_figures, median_of_sorted, output_gradient_rms, output_rms


@dataclass
class PassFigures:
    forward_sq: list[float]  # per layer: sum of squares of its outputs over all calls
    forward_numel: list[int]
    backward_sq: list[float]
    backward_seen: list[bool]
    weight_grad_sq: list[float | None]
    other_grad_sq: list[float | None]
    grad_nonfinite: list[bool]
    time_steps: dict[str, list[float]]
    loss: float
    total_grad_norm: float | None  # None on a signal pass (no parameter gradients)
    batch_size: int
    # False when a norm taken in float32 left the range where float32 is exact: the pass is measured again
    exact: bool = True
    # --amp: per layer, (output-gradient elements below fp16's normal range, above its largest, all of them)
    fp16_counts: dict[int, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def finite(self) -> bool:
        total = () if self.total_grad_norm is None else (self.total_grad_norm,)
        sums = (self.loss, *total, *self.forward_sq, *self.backward_sq)
        return all(math.isfinite(value) for value in sums)


def layer_pass_figures(index: int, per_pass: list[PassFigures], weight_norm: float | None) -> dict[str, Any]:
    """A layer's LayerStats figures from the passes: the median of each (its min and max in ``spread``),
    and whether any was non-finite. Called once per layer: a deep model has thousands."""
    forward, backward, weight, other, relative, total = [], [], [], [], [], []
    grad_nonfinite = False
    fp16 = []
    for figures in per_pass:
        numel = figures.forward_numel[index]
        if numel:
            forward.append(output_rms(figures.forward_sq[index], numel))
        if figures.backward_seen[index]:
            backward.append(output_gradient_rms(figures.backward_sq[index], figures.batch_size))
        if figures.grad_nonfinite[index]:
            grad_nonfinite = True
        weight_sq, other_sq = figures.weight_grad_sq[index], figures.other_grad_sq[index]
        if weight_sq is not None or other_sq is not None:
            weight_grad, other_grad, grad, relative_grad = gradient_figures(weight_sq, other_sq, weight_norm)
            if weight_grad is not None:
                weight.append(weight_grad)
            if relative_grad is not None:
                relative.append(relative_grad)
            if other_grad is not None:
                other.append(other_grad)
            total.append(grad)
        if figures.fp16_counts and index in figures.fp16_counts:
            fp16.append(figures.fp16_counts[index])
    forward_nonfinite = not all(map(math.isfinite, forward))
    backward_nonfinite = not all(map(math.isfinite, backward))
    out: dict[str, Any] = {
        "grad_nonfinite": grad_nonfinite,
        "forward_nonfinite": forward_nonfinite,
        "backward_nonfinite": backward_nonfinite,
    }
    spread: dict[str, tuple[float, float]] = {}
    named = (
        ("forward_rms", forward), ("backward", backward), ("weight_grad_norm", weight), ("relative_grad", relative),
        ("other_grad_norm", other), ("grad_norm", total),
    )  # fmt: skip
    # Without a NaN among the values (which only these flags and a weight norm that is not finite can bring),
    # one sort gives the median and the spread; with one, sorted() and min()/max() may disagree: min()/max().
    nonfinite_weight = weight_norm is not None and not math.isfinite(weight_norm)
    ordered_is_exact = not (grad_nonfinite or forward_nonfinite or backward_nonfinite or nonfinite_weight)
    for key, values in named:
        if not values:
            continue
        ordered = sorted(values)
        out[key] = median_of_sorted(ordered)
        spread[key] = (ordered[0], ordered[-1]) if ordered_is_exact else (min(values), max(values))
    out["spread"] = spread
    seen = sum(c[2] for c in fp16)
    if seen:
        out["fp16_underflow"] = sum(c[0] for c in fp16) / seen
        out["fp16_overflow"] = sum(c[1] for c in fp16) / seen
    return out
