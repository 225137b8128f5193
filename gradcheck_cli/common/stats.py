"""What the probe measured: plain data, no torch, so diagnosis and rendering can be tested without it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LayerStats:
    """One layer (a module that owns parameters directly), in the order the forward pass first ran it.

    The output and output-gradient figures are medians over the probe's passes, the parameter-gradient
    figures are the first pass's (see probe_model); ``spread`` holds (min, max) per figure. A layer whose
    gradient is exactly zero on the first pass has it read again on the later ones (``grad_nonzero_in_a_pass``).
    ``None`` means "not measured": no weight, no gradient arrived, or the output was not a float tensor.
    """

    name: str
    type: str
    calls: int = 0  # calls per pass: a module reused in one forward pass is measured over all its calls
    param_count: int = 0
    trainable: bool = True
    shared_with: str | None = None  # its parameters are owned by this earlier layer (tied weights)
    # The norm layer (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm) that takes this layer's output as
    # its input: the weight is scale-invariant then (BN(cWx) = BN(Wx)), and ||g||/||w|| not a step's effect.
    normalized_by: str | None = None
    # Its input carried no gradient history on its first call: it begins a path from the model's inputs (a
    # stem, an embedding; an encoder-decoder's decoder begins a second one). Read off tensors, not names.
    starts_path: bool = False
    fan_in: int | None = None
    weight_std: float | None = None
    weight_norm: float | None = None
    # Its trainable parameters at exactly zero that can gate a path: weights, and parameters of one element or
    # of 2+ dimensions (ReZero's alpha, NF nets' gains; a 1-D non-weight vector is a bias). Zero-initialized
    # designs start so on purpose (gradcheck_cli/examine/zero_init.py, issue 22).
    zero_parameters: list[str] = field(default_factory=list)
    weight_grad_norm: float | None = None
    other_grad_norm: float | None = None  # biases and other non-weight parameters
    grad_norm: float | None = None  # all of the layer's own parameters
    # Some pass gave its parameters a finite, nonzero gradient: a loss that reaches the layer in some batches only
    # (hard-negative mining, masked tokens) leaves it exactly zero in others, which is no sign it cannot learn.
    grad_nonzero_in_a_pass: bool = False
    relative_grad: float | None = None  # weight_grad_norm / weight_norm
    backward: float | None = None  # per-sample RMS of ||dL/d(output)||: the backward signal
    forward_rms: float | None = None  # RMS of the output: the forward signal
    forward_nonfinite: bool = False
    backward_nonfinite: bool = False
    grad_nonfinite: bool = False
    # --amp: share of the output gradient's elements (unscaled, all passes) below fp16's smallest normal
    # number, 6.1e-5 (lost in fp16 without loss scaling; exact zeros excluded), and above its largest, 65504
    fp16_underflow: float | None = None
    fp16_overflow: float | None = None
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def nonfinite(self) -> bool:
        return self.forward_nonfinite or self.backward_nonfinite or self.grad_nonfinite


@dataclass
class ActivationStats:
    """One call site of an activation module (nn.Sigmoid, nn.Tanh, nn.ReLU, ...), measured on its input h.
    A module called several times per pass (one shared nn.ReLU) gives one site per call: `act[2]`.

    ``None`` means "not defined for this type" (no flat region for ReLU, no dead units for tanh).
    """

    name: str
    type: str
    after: str | None  # the layer with weights that ran just before it (whose output it usually reads)
    units: int = 0  # features (last dim) or channels (dim 1 of a 3-D or larger conv map)
    # Share of outputs in the activation's flat region, where its derivative is below 5% of its peak
    # (sigmoid: |h| > 4.4, tanh: |h| > 2.2): gradient hardly passes there.
    saturated_fraction: float | None = None
    # Share of units whose output was never positive over the first pass's batch (ReLU family).
    dead_fraction: float | None = None
    # sqrt(E[phi'(h)^2]): the activation's factor in the mean-field gain per layer (Schoenholz et al. 2017).
    derivative_rms: float | None = None


@dataclass
class RecurrentStats:
    """Gradient reaching each time step's input of one recurrent module or layer (index 0 = first step)."""

    name: str
    type: str
    time_steps: list[float]  # per-sample RMS of ||dL/dx_t||, median over passes
    # Largest singular value of the first layer's recurrent weight (weight_hh_l0): above 1 the gradient
    # through time can explode, below 1 (with tanh' <= 1) it must vanish (Pascanu et al. 2013).
    spectral_norm: float | None = None
    nonlinearity: str | None = None  # "tanh" or "relu" for nn.RNN; None for gated cells
    # Mean bias (bias_ih + bias_hh) of the gate that keeps the state: an LSTM's forget gate, a GRU's
    # update gate. Near 0 the gate is about 0.5 and the state's gradient halves every step.
    memory_gate_bias: float | None = None
    # The stacked module (nn.LSTM(num_layers > 1), ...) this series is one layer of, measured on its own: then
    # ``time_steps`` is the gradient the stack's output gets from the loss, followed back through this layer alone
    # to each step's input (recurrent.py), and ``name`` the layer's row, e.g. "rnn.l0". None: a whole module.
    stack: str | None = None


@dataclass
class NonfiniteOp:
    """The torch operation that made the first NaN/Inf, seen by a TorchFunctionMode during the watched pass."""

    name: str  # as torch names it: "torch.log", "torch.div" (also a / b), "torch.pow" (also a ** b)
    # The domain it left, the key of its safe form: "log", "log1p", "sqrt", "rsqrt", "division", "pow", "acos",
    # "asin", "atanh", "exp" (overflow); None for an op with no domain to keep to (an overflow in a matmul).
    domain: str | None
    detail: str  # e.g. "torch.log of values down to -2.3", "division by 0 (divisor in [0, 3.1])"
    # (min, max) over the finite values of the operand out of its domain (log's input, the divisor, pow's base)
    operand_range: tuple[float, float] | None
    dtype: str  # of that operand, e.g. "float32": the safe form's eps depends on it
    # True: its output was finite but its slope is infinite there (sqrt at 0), so the backward pass made it.
    singular: bool = False
    exponent: float | None = None  # torch.pow: the exponent, when it is a number
    location: str | None = None  # "model.py:14": the line of the code that called it (None: gradcheck's own loss)
    source: str | None = None  # that call as written, e.g. "torch.log(x)" (Python 3.10: the whole line)


@dataclass
class NonfiniteOrigin:
    """Where the first NaN/Inf came from, found by re-running one pass with every module watched."""

    stage: str  # "forward" (a module's output), "loss", or "backward" (a module's input or weight gradient)
    module: str | None  # the module's name ("(model)" for the root); None when the loss itself
    type: str | None
    detail: str  # what became non-finite, e.g. "output: 12 NaN, 0 Inf of 512 values"
    # (min, max) over the finite values of each floating-point input of that module's forward call
    input_ranges: list[tuple[float, float]] = field(default_factory=list)
    passed_on: list[str] = field(default_factory=list)  # modules that only passed a non-finite value on
    op: NonfiniteOp | None = None  # the op in that module's own code (or the loss) that made it, where one was seen


@dataclass
class ModelStructure:
    """What the model is built from, read off its modules; the diagnosis uses it to pick fixes that fit."""

    activations: dict[str, int] = field(default_factory=dict)  # module type name -> count
    norms: dict[str, int] = field(default_factory=dict)
    recurrent: dict[str, int] = field(default_factory=dict)
    convolutional: bool = False
    # Skip connections, read off the autograd graph when not given: an addition or concatenation of two
    # tensors that crossed different numbers of weighted operations (x + f(x), torch.cat([x, f(x)]); a skip
    # from the raw input alone is not seen). None: unknown.
    residual: bool | None = None
    # How many such merges the graph has: each is one block the depth trend crosses. None: not read.
    skip_merges: int | None = None
    concatenations: int = 0  # of those, concatenations (DenseNet, Inception, U-Net); the others are additions

    @property
    def normalized(self) -> bool:
        return bool(self.norms)

    @property
    def additive_skips(self) -> bool:
        """Skips that add (x + f(x)), as far as known: a model whose merges are all concatenations has none."""
        return self.residual is True and (self.skip_merges is None or self.skip_merges > self.concatenations)


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
    activations: list[ActivationStats] = field(default_factory=list)
    nonfinite_origin: NonfiniteOrigin | None = None
    losses: list[float] = field(default_factory=list)
    total_grad_norms: list[float] = field(
        default_factory=list
    )  # global norm of all gradients, per pass that read them (the first)
    structure: ModelStructure = field(default_factory=ModelStructure)
    hooked: bool = True  # False when the model takes no hooks (TorchScript): no per-layer output figures
    amp: str | None = None  # --amp: the autocast dtype of the passes ("bfloat16", "float16")
    loss_scale: float | None = None  # --amp: the loss scale the fp16 passes ended with (1 for bf16)

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
