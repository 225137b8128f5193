"""What a fix is and what its builders read: the ``Fix`` type, the measured model as the builders see it
(``FixContext``), and the thresholds and readings of the model that the causes and the trials share with them.

The builders live by family in ``fixes_depth``, ``fixes_training``, ``fixes_recurrent`` and ``fixes_safe_op``;
``fixes_catalog.fixes_for`` picks the ones that fit a finding.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


# Recurrent layer types whose stacks the depth trend can run through (a stacked module is measured per layer).
RECURRENT_TYPES = ("LSTM", "GRU", "RNN")


def recurrent_trend(context: FixContext) -> str | None:
    """The recurrent type ("LSTM") when the depth trend runs through recurrent layers only: the layers of a stacked
    nn.LSTM/GRU/RNN (measured one by one) or single-layer modules in series. Read off the layers' types."""
    trend = set(context.profile.layers)
    types = {layer.type for layer in context.result.layers if layer.name in trend}
    return types.pop() if len(trend) >= 2 and len(types) == 1 and types <= set(RECURRENT_TYPES) else None


def domain_op(result: ProbeResult) -> NonfiniteOp | None:
    """The op outside its domain that made the first NaN/Inf, when the watched pass found one."""
    origin = result.nonfinite_origin
    op = origin.op if origin is not None else None
    return op if op is not None and op.domain is not None else None
