"""fp16's range (``--amp fp16``): how many of each output gradient's elements fall below fp16's smallest normal
number or above its largest, counted on the device and read with the pass's other figures."""

from __future__ import annotations

import math

import torch

# fp16's range (IEEE half): gradients below its smallest normal number flush towards zero, above its largest
# they become inf. Mixed-precision training scales the loss to keep them in between (Micikevicius et al.
# 2018); bf16 has float32's exponent range and needs no scaling.
FP16_SMALLEST_NORMAL = 6.103515625e-05
FP16_LARGEST = 65504.0
# The loss scale fp16 passes start from, halved while gradients overflow: torch.amp.GradScaler's default.
FP16_INITIAL_LOSS_SCALE = 2.0**16


class Fp16Ranges:
    """One pass's counts of output-gradient elements in fp16's ranges, per layer (under ``--amp`` only)."""

    def __init__(self) -> None:
        self.amp: torch.dtype | None = None
        self.loss_scale = 1.0
        self.counts: list[tuple[int, torch.Tensor]] = []  # (layer, see count)
        self._bounds: tuple[torch.Tensor, ...] | None = None

    def start_pass(self, amp: torch.dtype | None, loss_scale: float) -> None:
        """``amp``: the passes run under autocast (counted then); ``loss_scale``: what the loss was multiplied by."""
        self.amp, self.loss_scale, self.counts, self._bounds = amp, loss_scale, [], None

    def count(self, index: int, grad: torch.Tensor) -> None:
        """Count the gradient's elements above each of: -inf (all but NaN), zero, fp16's smallest normal
        (scaled: at or below it, lost without loss scaling) and its largest (inf in fp16); unpack tells the
        ranges apart. Exact integer counts, left on the device: torch.bincount would read the largest bucket
        back to the host first on CUDA, a sync per layer (and a count per bound is faster on the CPU too)."""
        if self._bounds is None or self._bounds[0].device != grad.device:
            bounds = [-math.inf, 0.0, FP16_SMALLEST_NORMAL * self.loss_scale, FP16_LARGEST * self.loss_scale]
            self._bounds = torch.tensor(bounds, device=grad.device).unbind()
        magnitudes = grad.detach().abs().float()  # in float32: 65504 times the loss scale is inf in float16
        counts = torch.stack([torch.count_nonzero(magnitudes > bound) for bound in self._bounds])
        self.counts.append((index, counts))

    def unpack(self, host: list[float], offset: int) -> dict[int, tuple[float, float, float]]:
        """Per layer, (elements below fp16's normal range, above its largest, all of them), read off ``host``
        from ``offset``, where the counts were laid out in order, four each."""
        fp16_counts: dict[int, tuple[float, float, float]] = {}
        for k, (index, _) in enumerate(self.counts):
            # elements that are not NaN, above zero, above fp16's smallest normal, above its largest
            counted, positive, normal, beyond = host[offset + 4 * k : offset + 4 * k + 4]
            under, over, total = fp16_counts.get(index, (0.0, 0.0, 0.0))
            fp16_counts[index] = (under + positive - normal, over + beyond, total + counted)
        return fp16_counts
