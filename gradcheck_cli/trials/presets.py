"""Preset deep models for ``gradcheck demo``: small, seeded, and built to show one phenomenon each."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import Activation, Arch, FixId, Init, Norm
from gradcheck_cli.common.errors import InvalidOptionError
from gradcheck_cli.common.stats import ModelStructure
from gradcheck_cli.judge.fixes import chrono_forget_bias
from gradcheck_cli.measure.graph import describe_structure
from gradcheck_cli.measure.placement import AS_PLACED, Placement, move_to_placement
from gradcheck_cli.trials.transforms import set_memory_gate_bias

CLASSES = 10  # a 10-way classification head, cross-entropy against random labels
CNN_IMAGE_SIZE = 8
RNN_INPUT_FEATURES = 32


@dataclass(frozen=True)
class DemoSpec:
    """Everything that defines a preset. ``None`` fields take the architecture's default."""

    arch: Arch = Arch.MLP
    depth: int | None = None  # hidden layers (mlp/cnn) or stacked recurrent layers (rnn/lstm)
    width: int | None = None
    activation: Activation | None = None
    init: Init = Init.DEFAULT
    gain: float | None = None
    norm: Norm = Norm.NONE
    residual: bool = False  # residual blocks (mlp/cnn), or residual connections between stacked layers (rnn/lstm)
    seq_len: int = 50
    batch_size: int | None = None
    forget_bias: float | None = None  # LSTM only; None leaves PyTorch's default (about 0)

    def resolved(self) -> DemoSpec:
        """Fill the architecture defaults and reject combinations that cannot be built."""
        recurrent = self.arch.recurrent
        activation = self.activation or (Activation.TANH if recurrent else Activation.SIGMOID)
        spec = replace(
            self,
            depth=self.depth if self.depth is not None else (1 if recurrent else 50),
            width=self.width or (128 if self.arch is Arch.CNN or recurrent else 256),
            activation=activation,
            batch_size=self.batch_size or (16 if self.arch is Arch.CNN else 32 if recurrent else 64),
        )
        _validate(spec)
        return spec

    def describe(self) -> str:
        spec = self.resolved()
        if spec.arch is Arch.LSTM:
            bias = f", forget bias {spec.forget_bias:.3g}" if spec.forget_bias is not None else ""
            residual = ", residual" if spec.residual else ""
            return f"LSTM, {spec.depth} layer(s) x {spec.width}, {spec.seq_len} steps{bias}{residual}"
        if spec.arch is Arch.RNN:
            init = f", {spec.init.value} init" if spec.init is not Init.DEFAULT else ""
            residual = ", residual" if spec.residual else ""
            return f"RNN ({spec.activation.value}), {spec.depth} layer(s) x {spec.width}, {spec.seq_len} steps{init}{residual}"
        parts = [f"{spec.arch.value.upper()} depth {spec.depth} x {spec.width}", spec.activation.value]
        parts.append(f"{spec.init.value} init" + (f" (gain {spec.gain:g})" if spec.gain is not None else ""))
        if spec.norm is not Norm.NONE:
            parts.append(f"{spec.norm.value} norm")
        if spec.residual:
            parts.append("residual")
        return ", ".join(parts)


def _validate(spec: DemoSpec) -> None:
    if spec.depth < 1 or spec.width < 1 or spec.seq_len < 1 or spec.batch_size < 1:
        raise InvalidOptionError("--depth, --width, --seq-len and the batch size must be positive integers.")
    if spec.batch_size < 2 and spec.norm is Norm.BATCH:
        raise InvalidOptionError("BatchNorm in training mode needs a batch of more than one sample.")
    if spec.gain is not None and spec.init in (Init.DEFAULT, Init.KAIMING):
        raise InvalidOptionError(
            f"--gain applies to --init normal, xavier or orthogonal, not {spec.init.value}; drop --gain "
            "or pick one of those."
        )
    if spec.arch is Arch.RNN and spec.activation not in (Activation.TANH, Activation.RELU):
        raise InvalidOptionError(
            f"nn.RNN supports --activation tanh or relu, not {spec.activation.value}; use --arch mlp for others."
        )
    if spec.arch is Arch.LSTM and spec.activation is not Activation.TANH:
        raise InvalidOptionError("An LSTM's activations are fixed (sigmoid gates, tanh cell); drop --activation.")
    if spec.arch.recurrent and spec.norm is not Norm.NONE:
        raise InvalidOptionError("--norm applies to --arch mlp or cnn, not to recurrent presets.")
    if spec.arch.recurrent and spec.residual and spec.depth < 2:
        raise InvalidOptionError(
            "--residual connects stacked recurrent layers: it needs --depth 2 or more with --arch rnn or lstm."
        )
    if spec.forget_bias is not None and spec.arch is not Arch.LSTM:
        raise InvalidOptionError("A forget-gate bias applies to --arch lstm only.")


@dataclass
class Preset:
    spec: DemoSpec
    model: nn.Module
    structure: ModelStructure

    def make_batch(self, index: int) -> Batch:
        spec = self.spec
        dtype = next(self.model.parameters()).dtype
        if spec.arch is Arch.MLP:
            x = torch.randn(spec.batch_size, spec.width, dtype=dtype)
        elif spec.arch is Arch.CNN:
            x = torch.randn(spec.batch_size, 3, CNN_IMAGE_SIZE, CNN_IMAGE_SIZE, dtype=dtype)
        else:
            x = torch.randn(spec.batch_size, spec.seq_len, RNN_INPUT_FEATURES, dtype=dtype)
        labels = torch.randint(0, CLASSES, (spec.batch_size,))
        return Batch(args=(x,), target=labels, size=spec.batch_size)

    @staticmethod
    def loss(output: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(output, batch.target)


def build_preset(spec: DemoSpec, seed: int = 0, placement: Placement = AS_PLACED) -> Preset:
    """Build the preset with its weights drawn from ``seed`` (the global RNG state is left as found), on
    ``placement.device``."""
    spec = spec.resolved()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.arch.recurrent:
            model: nn.Module = RecurrentClassifier(spec)
        else:
            model = DeepNet(spec)
    move_to_placement(model, placement)  # the preset is gradcheck's own: built on the CPU, moved where the passes run
    return Preset(spec, model, describe_structure(model, residual=spec.residual))


def activation_module(activation: Activation) -> nn.Module:
    return {
        Activation.SIGMOID: nn.Sigmoid,
        Activation.TANH: nn.Tanh,
        Activation.RELU: nn.ReLU,
        Activation.LEAKY_RELU: nn.LeakyReLU,
        Activation.ELU: nn.ELU,
        Activation.SELU: nn.SELU,
        Activation.GELU: nn.GELU,
        Activation.IDENTITY: nn.Identity,
    }[activation]()


def _norm_module(norm: Norm, arch: Arch, width: int) -> nn.Module:
    if norm is Norm.BATCH:
        return nn.BatchNorm2d(width) if arch is Arch.CNN else nn.BatchNorm1d(width)
    # GroupNorm with one group normalizes over channels and positions: LayerNorm for feature maps.
    return nn.GroupNorm(1, width) if arch is Arch.CNN else nn.LayerNorm(width)


class Block(nn.Module):
    """One hidden layer: weight layer, optional norm, activation. With ``residual`` it is a
    pre-activation residual block (He et al. 2016b): x + W(act(norm(x)))."""

    def __init__(self, spec: DemoSpec, in_width: int):
        super().__init__()
        self.residual = spec.residual and in_width == spec.width
        # One attribute name for both, so layer names read "blocks.3.layer" whatever the architecture.
        if spec.arch is Arch.CNN:
            self.layer: nn.Module = nn.Conv2d(in_width, spec.width, 3, padding=1)
        else:
            self.layer = nn.Linear(in_width, spec.width)
        norm_width = in_width if self.residual else spec.width
        self.norm = _norm_module(spec.norm, spec.arch, norm_width) if spec.norm is not Norm.NONE else None
        self.act = activation_module(spec.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            h = self.norm(x) if self.norm is not None else x
            return x + self.layer(self.act(h))
        h = self.layer(x)
        if self.norm is not None:
            h = self.norm(h)
        return self.act(h)


class DeepNet(nn.Module):
    """``depth`` hidden blocks, then a 10-way linear head (global average pooling first for the CNN)."""

    def __init__(self, spec: DemoSpec):
        super().__init__()
        self.arch = spec.arch
        in_width = 3 if spec.arch is Arch.CNN else spec.width
        blocks = []
        for _ in range(spec.depth):
            blocks.append(Block(spec, in_width))
            in_width = spec.width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(spec.width, CLASSES)
        for block in self.blocks:
            initialize(block.layer, spec.init, spec.activation, spec.gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(x)
        if self.arch is Arch.CNN:
            h = h.mean(dim=(2, 3))
        return self.head(h)


class RecurrentClassifier(nn.Module):
    """``depth`` stacked recurrent layers over a sequence, loss on the last step through a linear head: one
    nn.LSTM/nn.RNN(num_layers=depth), or with ``residual`` single layers with a residual connection around each
    after the first (Wu et al. 2016, GNMT section 3.1). Float64: the gradient reaching early steps of a tanh RNN
    falls below float32's range (GRADIENTS.md)."""

    def __init__(self, spec: DemoSpec):
        super().__init__()
        cls = nn.LSTM if spec.arch is Arch.LSTM else nn.RNN
        kwargs = {} if spec.arch is Arch.LSTM else {"nonlinearity": spec.activation.value}
        self.residual = spec.residual
        if (
            spec.residual
        ):  # nn.LSTM(num_layers=L) has no connection around its layers: the stack is built of single ones
            widths = [RNN_INPUT_FEATURES] + [spec.width] * (spec.depth - 1)
            self.rnn: nn.Module = nn.ModuleList(cls(w, spec.width, batch_first=True, **kwargs) for w in widths)
        else:
            self.rnn = cls(RNN_INPUT_FEATURES, spec.width, num_layers=spec.depth, batch_first=True, **kwargs)
        self.head = nn.Linear(spec.width, CLASSES)
        if spec.init is not Init.DEFAULT:
            initialize(self.rnn, spec.init, spec.activation, spec.gain)
        if spec.forget_bias is not None:
            for layer in self.rnn if spec.residual else [self.rnn]:
                set_memory_gate_bias(layer, spec.forget_bias)
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            out, _ = self.rnn(x)
            return self.head(out[:, -1])
        h = x
        for index, layer in enumerate(self.rnn):
            out, _ = layer(h)
            h = out if index == 0 else h + out
        return self.head(h[:, -1])


def initialize(module: nn.Module, init: Init, activation: Activation, gain: float | None) -> None:
    """Re-initialize every weight matrix of ``module`` (biases to zero); ``default`` leaves PyTorch's."""
    if init is Init.DEFAULT:
        return
    for name, param in module.named_parameters():
        with torch.no_grad():
            if "bias" in name:
                param.zero_()
                continue
            if init is Init.KAIMING:
                # He et al. 2015 for the ReLU family; LeCun (gain 1) for SELU, as Klambauer et al. 2017 require.
                nonlinearity = "leaky_relu" if activation.relu_family else "linear"
                if activation is Activation.RELU:
                    nonlinearity = "relu"
                nn.init.kaiming_normal_(param, nonlinearity=nonlinearity, a=0.01 if nonlinearity == "leaky_relu" else 0)
            elif init is Init.XAVIER:
                nn.init.xavier_normal_(param, gain=gain if gain is not None else 1.0)
            elif init is Init.ORTHOGONAL:
                default_gain = math.sqrt(2.0) if activation.relu_family else 1.0
                nn.init.orthogonal_(param, gain=gain if gain is not None else default_gain)
            elif init is Init.NORMAL:
                fan_in = param[0].numel()
                nn.init.normal_(param, std=(gain if gain is not None else 1.0) / math.sqrt(fan_in))


def apply_fix(spec: DemoSpec, fix: FixId, params: dict | None = None) -> DemoSpec | None:
    """The preset with one fix applied, or None where no preset variant is that fix (clipping and the
    learning rate bound the update, not the gradient profile; zero-initialized residual branches are not
    a preset option, nor a re-scaled init of a recurrent preset's Linear head). A fix that changes nothing
    (residual connections where there are already) is None too."""
    spec = spec.resolved()
    scheme = (params or {}).get("scheme")
    if scheme == "zero_residual":
        return None
    if fix is FixId.RELU:
        return replace(spec, activation=Activation.RELU, init=Init.KAIMING, gain=None)
    if fix is FixId.INIT:
        if spec.arch.recurrent and scheme == "scale":
            return None
        if spec.arch is Arch.LSTM:
            return replace(spec, forget_bias=chrono_forget_bias(spec.seq_len))
        if spec.arch is Arch.RNN:
            return replace(spec, init=Init.ORTHOGONAL, gain=None)
        if spec.activation.relu_family or spec.activation is Activation.SELU:
            return replace(spec, init=Init.KAIMING, gain=None)
        return replace(spec, init=Init.XAVIER, gain=None)
    if fix is FixId.RESIDUAL and not spec.residual and (spec.depth > 1 or not spec.arch.recurrent):
        return replace(spec, residual=True)  # for rnn/lstm: between the stacked layers (Wu et al. 2016)
    if fix is FixId.BATCHNORM and not spec.arch.recurrent:
        return replace(spec, norm=Norm.BATCH)
    if fix is FixId.LSTM and spec.arch is Arch.RNN:
        return replace(
            spec, arch=Arch.LSTM, activation=Activation.TANH, init=Init.DEFAULT, gain=None,
            forget_bias=chrono_forget_bias(spec.seq_len),
        )  # fmt: skip
    return None
