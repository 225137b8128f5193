"""How precisely a pass is measured, and when it is run again: norms in float32 where that is exact and in
float64 where it would not be, and the fp16 loss scale halved while scaled gradients overflow.

A pass where a float32 norm falls outside EXACT_FLOAT32_NORM (a vanishing model's first pass) is measured again
with those norms in float64 and without its parameter gradients (read exactly the first time), and the next
passes take in float64 the norms whose last value lay outside SAFE_FLOAT32_NORM: a healthy model pays no float64
at all, a sick one a pass without parameter gradients. Under ``--amp fp16`` a pass whose scaled gradients
overflowed (a finite loss, non-finite figures) is run again at half the loss scale, as GradScaler would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradcheck_cli.measure.layer_figures import SIGNAL_BACKWARD, SIGNAL_FORWARD
from gradcheck_cli.measure.pass_figures import PassFigures

# A slot whose previous pass lay inside this range, a thousandfold inside the exact one, is taken in
# float32: the scale of a layer's signal does not move that far between two batches.
SAFE_FLOAT32_NORM = (1e-7, 1e12)


def float64_slots(figures: PassFigures, loss_scale: float) -> set[tuple[int, int]]:
    """The slots the next pass must take in float64: those whose value here left SAFE_FLOAT32_NORM."""
    wide = set()
    low, high = SAFE_FLOAT32_NORM
    raw = loss_scale**2  # the hooks see the scaled gradients
    for slot, sums, factor in ((SIGNAL_FORWARD, figures.forward_sq, 1.0), (SIGNAL_BACKWARD, figures.backward_sq, raw)):
        for index, sq in enumerate(sums):
            if not low * low <= sq * factor <= high * high:
                wide.add((slot, index))
    return wide


@dataclass
class PassPlan:
    """How the pass about to run is measured: the loss scale (kept from pass to pass), and the figures of this
    batch from a pass that was not exact (``remeasure``: this run takes its float64 norms and keeps its
    parameter-gradient figures)."""

    loss_scale: float = 1.0
    remeasure: PassFigures | None = None

    def new_batch(self) -> None:
        self.remeasure = None

    def settled(self, figures: PassFigures) -> bool:
        """Whether the pass's figures stand; if not, the plan for running the same batch again."""
        if self.loss_scale > 1.0 and not figures.finite and math.isfinite(figures.loss):
            # The scaled gradients overflowed fp16, as GradScaler would see: halve the scale and run again.
            self.loss_scale /= 2
            self.remeasure = None
            return False
        if figures.exact or self.remeasure is not None:
            return True
        # A float32 norm left its exact range, or a kept output changed before it was reduced: the same batch
        # again, those norms in float64, its parameter gradients kept from this pass.
        self.remeasure = figures
        return False
