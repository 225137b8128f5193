"""The layer types the probe tells apart, and what each type says about the gradient that crosses it."""

from __future__ import annotations

from torch import nn

ACTIVATION_TYPES = (
    nn.Sigmoid, nn.Tanh, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.LogSigmoid, nn.Softsign,
    nn.Tanhshrink,
)  # fmt: skip
NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)  # fmt: skip
RMS_NORM = getattr(nn, "RMSNorm", None)
ALL_NORM_TYPES = NORM_TYPES + ((RMS_NORM,) if RMS_NORM else ())  # nn.RMSNorm: torch 2.4 on
# Norms whose output is unchanged when their input is scaled: a layer whose output goes straight into one has a
# scale-invariant weight, so its ||g||/||w|| does not say what a step does (issue 22). LocalResponseNorm is not.
SCALE_INVARIANT_NORMS = (
    nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
) + ((RMS_NORM,) if RMS_NORM else ())  # fmt: skip
# The largest derivative of each saturating activation: an output counts as saturated where the
# derivative is below SATURATED_DERIVATIVE of it (sigmoid |h| > 4.4, tanh |h| > 2.2): hardly any
# gradient passes there (Glorot & Bengio 2010, section 3).
PEAK_DERIVATIVE = {"Sigmoid": 0.25, "Tanh": 1.0, "Hardtanh": 1.0, "Hardsigmoid": 1.0 / 6.0, "Softsign": 1.0}
SATURATED_DERIVATIVE = 0.05
# Activations whose units can die: zero output and zero derivative for every input of the batch.
DYING = (nn.ReLU, nn.ReLU6)
