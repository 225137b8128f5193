"""The fixes catalog: for a finding on a measured model, the fixes that fit it, most supported first.

Each fix says why it applies to *this* model, with its numbers, and shows the PyTorch code. A fix that
does not fit the model (an LSTM for a CNN, BatchNorm for a net that is already normalized) is not offered.
"""

from __future__ import annotations

from typing import Any

from gradcheck_cli.common.choices import FindingKind
from gradcheck_cli.judge.fixes import Fix, FixContext, domain_op
from gradcheck_cli.judge.fixes_depth import (
    batchnorm,
    init_exploding,
    init_vanishing,
    relu,
    residual,
    residual_for_normalized,
    zero_init_branches,
)
from gradcheck_cli.judge.fixes_recurrent import forget_bias, lstm, recurrent_orthogonal, recurrent_residual
from gradcheck_cli.judge.fixes_safe_op import safe_op
from gradcheck_cli.judge.fixes_training import clipping, learning_rate, loss_scaling


def fixes_for(kind: FindingKind, evidence: dict[str, Any], context: FixContext) -> list[Fix]:
    """The fixes for one finding, in order of how much the measurements support them."""
    if kind in (FindingKind.VANISHING_GRADIENT, FindingKind.VANISHING_ACTIVATION):
        candidates = [relu, init_vanishing, batchnorm, residual, recurrent_residual]
    elif kind in (FindingKind.EXPLODING_GRADIENT, FindingKind.EXPLODING_ACTIVATION):
        candidates = [residual_for_normalized, zero_init_branches, init_exploding, clipping, learning_rate]
    elif kind is FindingKind.NORMALIZED_GROWTH:
        candidates = [zero_init_branches]  # growth normalization explains: branches that start as the identity
    elif kind is FindingKind.LARGE_RELATIVE_GRADIENT:
        candidates = [init_exploding, learning_rate, clipping]
    elif kind is FindingKind.NONFINITE:
        # An op outside its domain (a log of negatives, a division by 0) is cured where it is made: clipping bounds
        # the gradient's norm, and the init does not move a domain (issue 22).
        candidates = [safe_op] if domain_op(context.result) else [clipping, init_exploding]
    elif kind is FindingKind.VANISHING_THROUGH_TIME:
        candidates = [lstm, forget_bias]
    elif kind is FindingKind.EXPLODING_THROUGH_TIME:
        candidates = [clipping, recurrent_orthogonal]
    elif kind is FindingKind.FP16_RANGE:
        candidates = [loss_scaling]
    else:
        candidates = []
    fixes = [fix for build in candidates if (fix := build(context, evidence)) is not None]
    return fixes
