"""What the probe measured: plain data, no torch, so diagnosis and rendering can be tested without it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LayerStats:
    """One layer (a module that owns parameters directly), in the order the forward pass first ran it.

    Every figure is the median over the probe's passes; ``spread`` holds (min, max) per figure.
    ``None`` means "not measured": no weight, no gradient arrived, or the output was not a float tensor.
    """

    name: str
    type: str
    calls: int = 0  # calls per pass: a module reused in one forward pass is measured over all its calls
    param_count: int = 0
    trainable: bool = True
    shared_with: str | None = None  # its parameters are owned by this earlier layer (tied weights)
    fan_in: int | None = None
    weight_std: float | None = None
    weight_norm: float | None = None
    weight_grad_norm: float | None = None
    other_grad_norm: float | None = None  # biases and other non-weight parameters
    grad_norm: float | None = None  # all of the layer's own parameters
    relative_grad: float | None = None  # weight_grad_norm / weight_norm
    backward: float | None = None  # per-sample RMS of ||dL/d(output)||: the backward signal
    forward_rms: float | None = None  # RMS of the output: the forward signal
    forward_nonfinite: bool = False
    backward_nonfinite: bool = False
    grad_nonfinite: bool = False
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def nonfinite(self) -> bool:
        return self.forward_nonfinite or self.backward_nonfinite or self.grad_nonfinite


@dataclass
class RecurrentStats:
    """Gradient reaching each time step's input of one recurrent module (index 0 = first step)."""

    name: str
    type: str
    time_steps: list[float]  # per-sample RMS of ||dL/dx_t||, median over passes


@dataclass
class ModelStructure:
    """What the model is built from, read off its modules; the diagnosis uses it to pick fixes that fit."""

    activations: dict[str, int] = field(default_factory=dict)  # module type name -> count
    norms: dict[str, int] = field(default_factory=dict)
    recurrent: dict[str, int] = field(default_factory=dict)
    convolutional: bool = False
    residual: bool | None = None  # None: unknown (it cannot be read off arbitrary forward code)

    @property
    def normalized(self) -> bool:
        return bool(self.norms)


@dataclass
class ProbeResult:
    model_name: str
    param_count: int
    trainable_param_count: int
    batch_size: int
    passes: int
    seed: int
    seconds: float
    dtype: str
    device: str
    layers: list[LayerStats]
    recurrent: list[RecurrentStats] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    total_grad_norms: list[float] = field(default_factory=list)  # global norm of all gradients, per pass
    structure: ModelStructure = field(default_factory=ModelStructure)
    hooked: bool = True  # False when the model takes no hooks (TorchScript): no per-layer output figures

    @property
    def loss_nonfinite(self) -> bool:
        return any(not _finite(v) for v in self.losses)

    def layer(self, name: str) -> LayerStats:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))
