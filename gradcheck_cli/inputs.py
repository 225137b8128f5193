"""Example inputs for a user's model: from the file, from options, or inferred from its first layer.

Every plan says where its inputs came from, so the report can tell the user what was assumed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradcheck_cli import stages
from gradcheck_cli.errors import GradcheckError, describe_exception
from gradcheck_cli.options import InputOptions
from gradcheck_cli.probe import Batch, owns_parameters

EXAMPLE_INPUT_NAMES = ("example_inputs", "sample_input", "get_inputs")
DEFAULT_BATCH_SIZE = 8  # more than one sample: BatchNorm in training mode needs it
DEFAULT_SEQ_LEN = 16
# Small spatial sizes that still survive a ResNet-style stem (stride 2 conv + pool) and a few stages.
SPATIAL_SIZE = {1: 32, 2: 32, 3: 8}
INPUT_OPTIONS_HINT = (
    "pass --input-shape (e.g. --input-shape 8,3,32,32, repeatable for several inputs), --vocab-size and "
    "--seq-len for token models, or define example_inputs() in the model file"
)
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}


@dataclass
class InputPlan:
    description: str  # where the inputs come from, shown in the report
    shapes: str  # the shapes tried, for error messages, e.g. "(8, 3, 32, 32)"
    make_batch: Callable[[int], Batch]
    assumed: bool = False  # True when inferred: a failing forward pass then points to the options


def plan_inputs(
    model: nn.Module,
    namespace: dict[str, Any],
    options: InputOptions,
    saved_inputs: tuple[tuple, dict] | None = None,
    given: Callable[[], Any] | None = None,
) -> InputPlan:
    """Inputs by precedence: inputs given to the Python API, the file's example_inputs(), then options,
    then the example inputs saved with a torch.export program, then inference from the first layer."""
    device, float_dtype = _device_and_dtype(model)
    if given is not None:
        return _from_function("inputs", given, device, "the inputs given to check()")
    for name in EXAMPLE_INPUT_NAMES:
        if callable(namespace.get(name)):
            return _from_function(name, namespace[name], device)
    if options.dtype is not None and options.dtype not in DTYPES:
        raise GradcheckError(f"--input-dtype {options.dtype!r} is not one of {', '.join(DTYPES)}.")
    if options.shapes:
        dtype = DTYPES[options.dtype] if options.dtype else float_dtype
        return _from_shapes(options.shapes, dtype, options.vocab_size, device, "--input-shape")
    if options.vocab_size is not None:
        batch = options.batch_size or DEFAULT_BATCH_SIZE
        shape = (batch, options.seq_len or DEFAULT_SEQ_LEN)
        return _from_shapes((shape,), torch.int64, options.vocab_size, device, "--vocab-size")
    if saved_inputs is not None:
        return _like_saved(saved_inputs, device)
    return _infer(model, options, device, float_dtype)


def _like_saved(saved: tuple[tuple, dict], device: torch.device) -> InputPlan:
    """Fresh random draws shaped like the saved example inputs; integer inputs (token ids, indices)
    are reused as saved, since their valid range is not recorded."""
    args, kwargs = saved
    shapes = _describe_shapes(tuple(args), dict(kwargs))

    def fresh(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return torch.randn(value.shape, dtype=value.dtype, device=device)
        return _to(value, device)

    def make_batch(index: int) -> Batch:
        batch_args = tuple(fresh(v) for v in args)
        batch_kwargs = {k: fresh(v) for k, v in kwargs.items()}
        return Batch(args=batch_args, kwargs=batch_kwargs, size=_leading_size(batch_args, batch_kwargs))

    return InputPlan(f"shaped like the example inputs saved with the program: {shapes}", shapes, make_batch)


def _device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    params = list(model.parameters())
    if not params:
        return torch.device("cpu"), torch.float32
    device = params[0].device
    if device.type == "meta":
        raise GradcheckError("the model's parameters are on the meta device and hold no data; build it on the CPU.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GradcheckError("the model is on a CUDA device, which this machine does not have; build it on the CPU.")
    floating = [p.dtype for p in params if p.is_floating_point()]
    return device, floating[0] if floating else torch.float32


def _from_function(name: str, function: Callable, device: torch.device, label: str | None = None) -> InputPlan:
    def call() -> Any:
        with stages.user_code(stages.INPUTS):
            try:
                return function()
            except Exception as error:
                raise GradcheckError(f"{name}() raised {describe_exception(error)}") from error

    with torch.random.fork_rng(devices=[]):
        sample = call()
    args, kwargs = _split_inputs(sample, name)
    shapes = _describe_shapes(args, kwargs)

    def make_batch(index: int) -> Batch:
        raw = call()
        args, kwargs = _split_inputs(raw, name)
        return Batch(args=_to(args, device), kwargs=_to(kwargs, device), target=raw, size=_leading_size(args, kwargs))

    return InputPlan(f"{label or f'{name}() in the model file'}: {shapes}", shapes, make_batch)


def _split_inputs(value: Any, name: str) -> tuple[tuple, dict]:
    if isinstance(value, torch.Tensor):
        return (value,), {}
    if isinstance(value, (tuple, list)):
        return tuple(value), {}
    if isinstance(value, dict):
        return (), dict(value)
    raise GradcheckError(
        f"{name}() returned {type(value).__name__!r}; return a tensor, a tuple of inputs or a dict of keyword arguments."
    )


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def _leading_size(args: tuple, kwargs: dict) -> int | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return None


def _describe_shapes(args: tuple, kwargs: dict) -> str:
    def one(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return f"{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
        return type(value).__name__

    parts = [one(v) for v in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts) if parts else "no inputs"


def _from_shapes(
    shapes: tuple[tuple[int, ...], ...],
    dtype: torch.dtype,
    vocab_size: int | None,
    device: torch.device,
    source: str,
    description: str | None = None,
    batch_size: int | None = None,
) -> InputPlan:
    """Random inputs of the given shapes; the batch size is the first dimension unless given (a
    time-major sequence has it second)."""
    integer = not dtype.is_floating_point
    if integer and dtype is not torch.bool and vocab_size is None:
        raise GradcheckError("integer inputs need a range: pass --vocab-size N (tokens are drawn from 0 to N-1).")
    if integer and vocab_size is not None and vocab_size < 1:
        raise GradcheckError("--vocab-size must be a positive integer.")
    text = ", ".join(f"{shape} {str(dtype).replace('torch.', '')}" for shape in shapes)

    def make_batch(index: int) -> Batch:
        # Integer inputs never get requires_grad: they are indices, not a signal.
        if dtype is torch.bool:
            tensors = tuple(torch.rand(shape, device=device) < 0.5 for shape in shapes)
        elif integer:
            tensors = tuple(torch.randint(0, vocab_size, shape, device=device, dtype=dtype) for shape in shapes)
        else:
            tensors = tuple(torch.randn(shape, device=device, dtype=dtype) for shape in shapes)
        raw = tensors[0] if len(tensors) == 1 else tensors
        return Batch(args=tensors, target=raw, size=batch_size or shapes[0][0])

    range_note = f" (tokens below {vocab_size})" if integer and vocab_size else ""
    return InputPlan(description or f"{source}: {text}{range_note}", text, make_batch, assumed=description is not None)


def _infer(model: nn.Module, options: InputOptions, device: torch.device, float_dtype: torch.dtype) -> InputPlan:
    """Inputs read off the first layer that consumes them (definition order)."""
    batch = options.batch_size or DEFAULT_BATCH_SIZE
    seq_len = options.seq_len or DEFAULT_SEQ_LEN
    for name, module in model.named_modules():
        label = f"{name or '(model)'} ({_type_name(module)})"
        inferred = _input_for(module, batch, seq_len)
        if inferred is None:
            if owns_parameters(module):
                # The first layer with weights is one we cannot read: guessing from a later one would
                # describe the wrong layer, so say which one stopped the inference.
                raise GradcheckError(
                    f"cannot infer the model's input: its first layer {label} does not say what it expects; "
                    f"{INPUT_OPTIONS_HINT}."
                )
            continue
        shape, num_embeddings, detail = inferred
        if num_embeddings is not None:
            vocab = options.vocab_size or num_embeddings
            description = f"assumed from the first layer {label}: {detail}, tokens {shape} below {vocab}"
            return _from_shapes((shape,), torch.int64, vocab, device, "inferred", description, batch)
        description = f"assumed from the first layer {label}: {detail}, randn{shape}"
        return _from_shapes((shape,), float_dtype, None, device, "inferred", description, batch)
    raise GradcheckError(f"cannot infer the model's input: it has no layer with weights to read; {INPUT_OPTIONS_HINT}.")


def _type_name(module: nn.Module) -> str:
    # TorchScript modules keep their Python class name in original_name.
    return getattr(module, "original_name", None) or type(module).__name__


def _input_for(module: nn.Module, batch: int, seq_len: int) -> tuple[tuple[int, ...], int | None, str] | None:
    """(shape, number of token ids for an integer input else None, what was read) for the layers whose
    input size is known, else None. A TorchScript module made by torch.jit.trace keeps its parameters but
    none of its Python attributes (in_features, kernel_size...): those are read off the weights' shapes."""
    kind = _type_name(module)
    if isinstance(module, nn.RNNBase) or kind in ("RNN", "LSTM", "GRU"):
        features = _size(module, "input_size", "weight_ih_l0", 1)
        if features is None:
            return None
        # A traced RNN does not keep batch_first: PyTorch's default, time-major, is assumed.
        batch_first = getattr(module, "batch_first", False)
        shape = (batch, seq_len, features) if batch_first else (seq_len, batch, features)
        order = "batch-first" if batch_first else "time-major"
        return shape, None, f"input_size={features}, {seq_len} steps, {order}"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or kind in ("Embedding", "EmbeddingBag"):
        count = _size(module, "num_embeddings", "weight", 0)
        return None if count is None else ((batch, seq_len), count, f"num_embeddings={count}")
    if isinstance(module, nn.modules.conv._ConvNd) or kind in ("Conv1d", "Conv2d", "Conv3d"):
        weight = _tensor(module, "weight")
        kernel_size = getattr(module, "kernel_size", None)
        if kernel_size is not None:
            dims = len(kernel_size)
        elif weight is not None and weight.dim() >= 3:
            dims = weight.dim() - 2
        else:
            return None
        channels = getattr(module, "in_channels", None)
        if not isinstance(channels, int):
            if weight is None or weight.dim() < 3:
                return None
            # weight: (out_channels, in_channels / groups, *kernel); a traced conv keeps no groups: 1 is assumed.
            channels = int(weight.shape[1]) * getattr(module, "groups", 1)
        size = SPATIAL_SIZE.get(dims, 8)
        return (batch, channels, *([size] * dims)), None, f"in_channels={channels}"
    if isinstance(module, nn.Linear) or kind == "Linear":
        features = _size(module, "in_features", "weight", 1)
        return None if features is None else ((batch, features), None, f"in_features={features}")
    if isinstance(module, nn.MultiheadAttention) or kind == "MultiheadAttention":
        embed_dim = _size(module, "embed_dim", "in_proj_weight", 1) or _size(module, "embed_dim", "q_proj_weight", 1)
        if embed_dim is None:
            return None
        batch_first = getattr(module, "batch_first", False)
        shape = (batch, seq_len, embed_dim) if batch_first else (seq_len, batch, embed_dim)
        return shape, None, f"embed_dim={embed_dim}, {seq_len} positions"
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)) or kind in (
        "TransformerEncoderLayer",
        "TransformerDecoderLayer",
    ):
        attention = getattr(module, "self_attn", None)
        return None if attention is None else _input_for(attention, batch, seq_len)
    if isinstance(module, nn.LayerNorm) or kind == "LayerNorm":
        normalized = getattr(module, "normalized_shape", None)
        if normalized is None:
            weight = _tensor(module, "weight")
            normalized = None if weight is None else tuple(weight.shape)
        if normalized is None:
            return None
        return (batch, *normalized), None, f"normalized_shape={tuple(normalized)}"
    if isinstance(module, nn.modules.batchnorm._BatchNorm) or kind in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"):
        features = _size(module, "num_features", "weight", 0) or _size(module, "num_features", "running_mean", 0)
        if features is None:
            return None
        dims = {"BatchNorm1d": 0, "BatchNorm2d": 2, "BatchNorm3d": 3}.get(kind, 0)
        return (batch, features, *([SPATIAL_SIZE.get(dims, 8)] * dims)), None, f"num_features={features}"
    return None


def _tensor(module: nn.Module, name: str) -> torch.Tensor | None:
    value = getattr(module, name, None)
    return value if isinstance(value, torch.Tensor) else None


def _size(module: nn.Module, attribute: str, tensor: str, dim: int) -> int | None:
    """The module's ``attribute`` (an int), else dimension ``dim`` of its parameter or buffer ``tensor``."""
    value = getattr(module, attribute, None)
    if isinstance(value, int):
        return value
    weight = _tensor(module, tensor)
    return int(weight.shape[dim]) if weight is not None and weight.dim() > dim else None
