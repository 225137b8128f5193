"""Example inputs for a user's model: from the file, from options, or inferred from what the model describes
(its config, a stated input size) and from the first layer that consumes the input.

Every plan says where its inputs came from, so the report can tell the user what was assumed.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common import stages
from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.errors import GradcheckError, describe_exception
from gradcheck_cli.common.options import InputOptions
from gradcheck_cli.measure.layer_figures import owns_parameters

EXAMPLE_INPUT_NAMES = ("example_inputs", "sample_input", "get_inputs")
DEFAULT_BATCH_SIZE = 8  # more than one sample: BatchNorm in training mode needs it
DEFAULT_SEQ_LEN = 16
# Small spatial sizes that still survive a ResNet-style stem (stride 2 conv + pool) and a few stages.
SPATIAL_SIZE = {1: 32, 2: 32, 3: 8}
IMAGENET_SIZE = 224
# A guessed image size the model finds too small gives way to the next of these, in turn (issue 22): the sizes
# image models are built for. 64 leaves 2 px after the five stride-2 stages of an ImageNet classifier, which
# ResNets, VGGs, MobileNets, DenseNets and ConvNeXts take (the zoo runs them at 64) at a quarter of the cost of
# the next size; 224 is ImageNet's, the size nearly every other image model is built for; 299 that of
# Inception v3 and v4, Inception-ResNet and Xception, whose 5x5 and 3x3 kernels on the 17 px and 8 px maps of
# their later stages (the auxiliary head's too) need it. No architecture is built for the sizes in between.
STANDARD_IMAGE_SIZES = {
    64: "a small size most image classifiers take",
    224: "ImageNet's size",
    299: "the size of Inception v3 and Xception",
}
# What torch says when an input is too small for a layer: a kernel, pooling window or reflection pad larger than
# what is left of it, or a single element left to normalize over.
TOO_SMALL_MESSAGES = (
    "Kernel size can't be greater than actual input size",  # convolutions
    "Output size is too small",  # max, average and LP pooling
    "smaller than kernel size",  # 3-D average pooling
    "Invalid computed output size",  # 1-D max pooling
    "too large relative to input",  # fractional max pooling
    "Padding size should be less than the corresponding input dimension",  # reflection padding
    "but its components must be at least one",  # unfold
    "Expected more than 1 spatial element when training",  # instance norm of a 1x1 map
)
# A size the model fixes (224-pixel images, Whisper's 3000 mel frames) would make a batch of 8 cost gigabytes
# in a large model: such samples come two to a batch, still more than one for BatchNorm. The probe measures
# ratios through depth, which a smaller batch leaves as they are.
LARGE_SAMPLE_ELEMENTS = 3 * 64 * 64
LARGE_SAMPLE_BATCH_SIZE = 2
EXAMPLE_INPUTS_HINT = "define example_inputs() in the model file (a dict for keyword inputs)"
INPUT_OPTIONS_HINT = (
    "pass --input-shape with the shape of one batch (e.g. 8,3,224,224 for images, 8,16,512 for sequences of "
    "512 features; repeatable for several inputs), --vocab-size and --seq-len for token models, or "
    + EXAMPLE_INPUTS_HINT
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
    hint: str = "check the inputs, or pass --input-shape"  # the way out when the forward pass fails on them
    # Guessed images: the plan at the next standard size (STANDARD_IMAGE_SIZES), if there is one
    larger: Callable[[], InputPlan | None] | None = None

    def after(self, error: BaseException) -> InputPlan | None:
        """The inputs to try next after the model's forward pass failed on these with ``error``: guessed images
        at the next standard size where the error says they were too small for the model, else None."""
        if self.larger is None:
            return None
        text = str(error.__cause__ or error)  # the exception torch raised, not gradcheck's sentence about it
        return self.larger() if any(message in text for message in TOO_SMALL_MESSAGES) else None


def plan_inputs(
    model: nn.Module,
    namespace: dict[str, Any],
    options: InputOptions,
    saved_inputs: tuple[tuple, dict] | None = None,
    given: Callable[[], Any] | None = None,
) -> InputPlan:
    """Inputs by precedence: inputs given to the Python API, the file's example_inputs(), then options,
    then the example inputs saved with a torch.export program, then inference (_infer)."""
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


def _like_saved(
    saved: tuple[tuple, dict],
    device: torch.device,
    label: str = "shaped like the example inputs saved with the program",
    assumed: bool = False,
) -> InputPlan:
    """Fresh random draws shaped like saved example inputs (a torch.export program's, a model's
    dummy_inputs); integer inputs (token ids, indices) are reused as saved, since their valid range is not
    recorded."""
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

    hint = f"pass --input-shape, or {EXAMPLE_INPUTS_HINT}" if assumed else InputPlan.hint
    return InputPlan(f"{label}: {shapes}", shapes, make_batch, assumed=assumed, hint=hint)


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
    shapes: tuple[tuple[int, ...], ...], dtype: torch.dtype, vocab_size: int | None, device: torch.device, source: str
) -> InputPlan:
    """Random inputs of the shapes an option gives, batch size first."""
    integer = not dtype.is_floating_point
    if integer and dtype is not torch.bool and vocab_size is None:
        raise GradcheckError("integer inputs need a range: pass --vocab-size N (tokens are drawn from 0 to N-1).")
    if integer and vocab_size is not None and vocab_size < 1:
        raise GradcheckError("--vocab-size must be a positive integer.")
    below = vocab_size if integer and dtype is not torch.bool else None
    specs = [InputSpec(shape[1:], dtype, "", below=below) for shape in shapes]
    text = ", ".join(f"{shape} {str(dtype).replace('torch.', '')}" for shape in shapes)
    range_note = f" (tokens below {vocab_size})" if below else ""
    return _from_specs(specs, shapes[0][0], device, f"{source}: {text}{range_note}", assumed=False)


@dataclass(frozen=True)
class InputSpec:
    """One inferred input: its shape without the batch dimension, and how it is drawn."""

    sample_shape: tuple[int, ...]
    dtype: torch.dtype
    detail: str  # what was read off the model, e.g. "in_channels=3"
    retry: str = ""  # the way out when the model fails on it, e.g. "pass --input-shape 2,3,224,224"
    name: str | None = None  # the keyword it is passed as; None: positional
    below: int | None = None  # integer inputs: ids drawn from 0 to below - 1
    first: int | None = None  # token inputs: the id every sequence starts with (a decoder's start token)
    batch_dim: int = 0  # 1 for a time-major sequence

    def shape(self, batch: int) -> tuple[int, ...]:
        return (*self.sample_shape[: self.batch_dim], batch, *self.sample_shape[self.batch_dim :])

    def draw(self, batch: int, device: torch.device) -> torch.Tensor:
        # Integer inputs never get requires_grad: they are indices, not a signal.
        shape = self.shape(batch)
        if self.dtype is torch.bool:
            return torch.rand(shape, device=device) < 0.5
        if self.dtype.is_floating_point:
            return torch.randn(shape, device=device, dtype=self.dtype)
        ids = torch.randint(0, self.below, shape, device=device, dtype=self.dtype)
        if self.first is not None:
            ids[:, 0] = self.first
        return ids

    def describe(self, batch: int) -> str:
        """What the report shows: ``randn(8, 3, 32, 32)`` or ``tokens (8, 16) below 100``."""
        shape = self.shape(batch)
        if self.dtype.is_floating_point:
            return f"randn{shape}"
        start = f" starting with {self.first}" if self.first is not None else ""
        return f"tokens {shape} below {self.below}{start}"


def _from_specs(
    specs: list[InputSpec],
    batch: int,
    device: torch.device,
    description: str,
    assumed: bool = True,
    hint: str = InputPlan.hint,
) -> InputPlan:
    shapes = ", ".join(
        f"{spec.name + '=' if spec.name else ''}{spec.shape(batch)} {str(spec.dtype).replace('torch.', '')}"
        for spec in specs
    )

    def make_batch(index: int) -> Batch:
        tensors = [spec.draw(batch, device) for spec in specs]
        args = tuple(t for spec, t in zip(specs, tensors) if spec.name is None)
        kwargs = {spec.name: t for spec, t in zip(specs, tensors) if spec.name is not None}
        raw = kwargs if kwargs else args[0] if len(args) == 1 else args
        return Batch(args=args, kwargs=kwargs, target=raw, size=batch)

    return InputPlan(description, shapes, make_batch, assumed=assumed, hint=hint)


# ---------------------------------------------------------------------------------------------------------
# Inference: what the model says it takes, else what its first layer consumes


class InputKind(Enum):
    """What an inferred input is, which says what other shape to try when the model fails on it."""

    TOKENS = "token ids"
    IMAGES = "images"
    VOLUMES = "video clips or volumes"
    AUDIO = "raw audio"
    SPECTROGRAM = "spectrogram frames"
    SEQUENCE = "sequences"
    SIGNAL = "1-D signals"
    FEATURES = "feature vectors"


def _infer(model: nn.Module, options: InputOptions, device: torch.device, float_dtype: torch.dtype) -> InputPlan:
    """Inputs the model describes (a transformers-style config), else read off the first layer that consumes
    them (definition order), sized as the model states where it does (timm's pretrained_cfg, an image_size
    attribute)."""
    return _from_config(model, options, device, float_dtype) or _from_first_layer(model, options, device, float_dtype)


def _batch_size(options: InputOptions, specs: list[InputSpec], stated: bool) -> int:
    if options.batch_size:
        return options.batch_size
    elements = sum(math.prod(spec.sample_shape) for spec in specs if spec.dtype.is_floating_point)
    return LARGE_SAMPLE_BATCH_SIZE if stated and elements > LARGE_SAMPLE_ELEMENTS else DEFAULT_BATCH_SIZE


def _hint(kind: InputKind, spec: InputSpec) -> str:
    return f"taken for a model of {kind.value}: {spec.retry}, or {EXAMPLE_INPUTS_HINT}"


# --- transformers' convention, read duck-typed: gradcheck imports no transformers


def _from_config(
    model: nn.Module, options: InputOptions, device: torch.device, float_dtype: torch.dtype
) -> InputPlan | None:
    """A transformers-style model names its main input (``main_input_name``) and states its sizes in its
    ``config``; an encoder-decoder (``config.is_encoder_decoder``) also takes ``decoder_input_ids``, and a
    dual encoder (``get_text_features`` and ``get_image_features``: CLIP, SigLIP, ALIGN) token ids and images
    together. A main input whose sizes the config does not give is drawn like the model's ``dummy_inputs``."""
    config, main = getattr(model, "config", None), getattr(model, "main_input_name", None)
    if config is None or not isinstance(main, str):
        return None
    read = CONFIG_INPUTS.get(main)
    spec = read[1](model, config, options, float_dtype) if read is not None else None
    if spec is None:
        return _from_dummy_inputs(model, main, device)
    kind, specs = read[0], [spec]
    accepts = _accepted_keywords(model)
    dual = all(callable(getattr(model, name, None)) for name in ("get_text_features", "get_image_features"))
    if main == "input_ids" and dual and accepts("pixel_values"):
        specs.append(_pixel_values(model, config, options, float_dtype))
    if getattr(config, "is_encoder_decoder", None) is True and accepts("decoder_input_ids"):
        decoder = _decoder_input_ids(config, options)
        specs += [decoder] if decoder is not None else []
    batch = _batch_size(options, specs, stated=True)
    parts = "; ".join(f"{s.name}: {s.detail}, {s.describe(batch)}" for s in specs)
    description = f"read from the model's config ({type(config).__name__}): {parts}"
    return _from_specs(specs, batch, device, description, hint=_hint(kind, spec))


def _setting(config: Any, name: str, sections: tuple[str, ...] = ()) -> Any:
    """``config.<section>.<name>`` from the first section that has it (CLIP's text_config and vision_config,
    an EncoderDecoderConfig's encoder and decoder), else ``config.<name>``."""
    for section in sections:
        value = getattr(getattr(config, section, None), name, None)
        if value is not None:
            return value
    return getattr(config, name, None)


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _pair(value: Any) -> tuple[int, int] | None:
    """An image size stated as 224 or (224, 224)."""
    if _positive(value):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_positive(v) for v in value):
        return int(value[0]), int(value[1])
    return None


def _token_ids(config: Any, options: InputOptions, sections: tuple[str, ...], name: str) -> InputSpec | None:
    vocab = _positive(_setting(config, "vocab_size", sections))
    if vocab is None:
        return None
    # A probe needs no long sequence: 16 tokens, fewer where the model has fewer positions.
    limit = _positive(_setting(config, "max_position_embeddings", sections))
    length = options.seq_len or min(DEFAULT_SEQ_LEN, limit or DEFAULT_SEQ_LEN)
    retry = f"pass --vocab-size and --seq-len for other ids (e.g. --vocab-size {vocab} --seq-len 128)"
    return InputSpec((length,), torch.int64, f"vocab_size={vocab}", retry, name, below=vocab)


def _input_ids(model: nn.Module, config: Any, options: InputOptions, float_dtype: torch.dtype) -> InputSpec | None:
    return _token_ids(config, options, ("text_config", "encoder"), "input_ids")


def _decoder_input_ids(config: Any, options: InputOptions) -> InputSpec | None:
    spec = _token_ids(config, options, ("decoder",), "decoder_input_ids")
    if spec is None:
        return None
    limit = _positive(_setting(config, "max_target_positions", ("decoder",)))
    length = min(spec.sample_shape[0], limit) if limit and not options.seq_len else spec.sample_shape[0]
    start = _setting(config, "decoder_start_token_id", ("decoder",))
    if not (isinstance(start, int) and not isinstance(start, bool) and 0 <= start < spec.below):
        start = None
    detail = "is_encoder_decoder" + (f", decoder_start_token_id={start}" if start is not None else "")
    return dataclasses.replace(spec, sample_shape=(length,), detail=f"{detail}, {spec.detail}", first=start)


def _pixel_values(model: nn.Module, config: Any, options: InputOptions, float_dtype: torch.dtype) -> InputSpec:
    sections = ("vision_config", "encoder")
    channels = _positive(_setting(config, "num_channels", sections)) or 3
    stated = _setting(config, "image_size", sections)
    size = _pair(stated)
    detail = f"num_channels={channels}, " + (f"image_size={stated}" if size else "no image_size")
    height, width = size or (SPATIAL_SIZE[2], SPATIAL_SIZE[2])
    frames = _positive(_setting(config, "num_frames", sections))
    if frames:  # a video model (VideoMAE, TimeSformer): (batch, frames, channels, height, width)
        retry = f"pass --input-shape 2,16,{channels},224,224 or the clip size it takes"
        shape, detail = (frames, channels, height, width), f"num_frames={frames}, {detail}"
    else:
        retry = _image_retry(channels, max(height, width))
        shape = (channels, height, width)
    return InputSpec(shape, float_dtype, detail, retry, "pixel_values")


def _mel_frames(model: nn.Module, config: Any, options: InputOptions, float_dtype: torch.dtype) -> InputSpec | None:
    """Whisper's log-mel features: the encoder takes exactly max_source_positions positions after its strided
    convolutions (3000 frames for its 1500 positions), and refuses any other length."""
    mels = _positive(getattr(config, "num_mel_bins", None))
    positions = _positive(getattr(config, "max_source_positions", None))
    if mels is None or positions is None:
        return None
    stride = _conv1d_stride(model)
    detail = f"num_mel_bins={mels}, max_source_positions={positions} x conv stride {stride}"
    retry = f"pass --input-shape 2,{mels},N with the number of frames it takes"
    return InputSpec((mels, positions * stride), float_dtype, detail, retry, "input_features")


def _conv1d_stride(model: nn.Module) -> int:
    """The stride of the convolutions the input meets first (Whisper's encoder: 1, then 2)."""
    stride = 1
    for module in model.modules():
        if isinstance(module, nn.Conv1d):
            stride *= module.stride[0]
        elif owns_parameters(module):
            break
    return stride


def _raw_audio(model: nn.Module, config: Any, options: InputOptions, float_dtype: torch.dtype) -> InputSpec | None:
    """wav2vec2, HuBERT, WavLM: raw samples, as many as the feature extractor's convolutions (config.conv_kernel,
    conv_stride) turn into 16 frames (``--seq-len``). Training-mode SpecAugment masks spans of
    mask_time_length frames and needs at least that many."""
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if not (isinstance(kernels, (tuple, list)) and isinstance(strides, (tuple, list)) and len(kernels) == len(strides)):
        return None
    if not all(_positive(v) for v in (*kernels, *strides)):
        return None
    frames = max(options.seq_len or DEFAULT_SEQ_LEN, _positive(getattr(config, "mask_time_length", None)) or 1)
    samples = frames
    for kernel, stride in reversed(list(zip(kernels, strides))):
        samples = (samples - 1) * stride + kernel
    detail = f"conv_kernel and conv_stride give {frames} frames"
    return InputSpec((samples,), float_dtype, detail, "pass --input-shape 2,16000 (a second at 16 kHz)", "input_values")


# main_input_name -> the kind of input and how the config sizes it
CONFIG_INPUTS: dict[str, tuple[InputKind, Callable[..., InputSpec | None]]] = {
    "input_ids": (InputKind.TOKENS, _input_ids),
    "pixel_values": (InputKind.IMAGES, _pixel_values),
    "input_features": (InputKind.SPECTROGRAM, _mel_frames),
    "input_values": (InputKind.AUDIO, _raw_audio),
}


def _accepted_keywords(model: nn.Module) -> Callable[[str], bool]:
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # a builtin or C-implemented forward: no signature to read
        return lambda name: True
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return lambda name: True
    return lambda name: name in parameters


def _from_dummy_inputs(model: nn.Module, main: str, device: torch.device) -> InputPlan | None:
    try:
        dummy = model.dummy_inputs
    except Exception:  # a property of the user's model: any error means there is nothing to read
        return None
    if not isinstance(dummy, dict) or main not in dummy:
        return None
    if not all(isinstance(value, torch.Tensor) for value in dummy.values()):
        return None
    return _like_saved(((), dict(dummy)), device, "shaped like the model's dummy_inputs", assumed=True)


# --- the first layer that consumes the input


def _from_first_layer(
    model: nn.Module, options: InputOptions, device: torch.device, float_dtype: torch.dtype
) -> InputPlan:
    seq_len = options.seq_len or DEFAULT_SEQ_LEN
    configured, stated = _pretrained_cfg_size(model), None
    for name, module in model.named_modules():
        label = f"{name or '(model)'} ({_type_name(module)})"
        # Modules before the first layer in definition order are the ones that hold it, where a ViT states
        # the size its position embeddings fix (torchvision: image_size; timm's PatchEmbed: img_size). That
        # is the size the model was built with, which a pretrained_cfg does not follow.
        stated = stated or _stated_image_size(module)
        inferred = _input_for(module, seq_len, float_dtype, stated or configured)
        if inferred is None:
            if owns_parameters(module) and not _holds_the_input_layer(module):
                # The first layer with weights is one we cannot read: guessing from a later one would
                # describe the wrong layer, so say which one stopped the inference.
                raise GradcheckError(
                    f"cannot infer the model's input: its first layer {label} does not say what it expects; "
                    f"{INPUT_OPTIONS_HINT}."
                )
            continue
        kind, spec = inferred
        if kind is InputKind.IMAGES and (stated or configured) is None:
            return _guessed_images(spec, label, options, device)
        batch = _batch_size(options, [spec], stated=(stated or configured) is not None)
        description = f"assumed from the first layer {label}: {spec.detail}, {spec.describe(batch)}"
        return _from_specs([spec], batch, device, description, hint=_hint(kind, spec))
    raise GradcheckError(f"cannot infer the model's input: it has no layer with weights to read; {INPUT_OPTIONS_HINT}.")


def _guessed_images(
    spec: InputSpec, label: str, options: InputOptions, device: torch.device, tried: tuple[tuple[int, str], ...] = ()
) -> InputPlan:
    """Images of a size the model does not state: the first guess (SPATIAL_SIZE), then, each time the model finds
    the last too small (InputPlan.after), the next of STANDARD_IMAGE_SIZES. ``tried``: (size, shapes) of the
    sizes that were too small. Sizes the model needs come two to a batch (_batch_size), as stated ones do."""
    channels, size = spec.sample_shape[0], spec.sample_shape[-1]
    batch = _batch_size(options, [spec], stated=bool(tried))
    description = f"assumed from the first layer {label}: {spec.detail}, {spec.describe(batch)}"
    if tried:
        smaller = [str(previous) for previous, _ in tried]
        listed = smaller[0] if len(smaller) == 1 else f"{', '.join(smaller[:-1])} and {smaller[-1]}"
        verb = "was" if len(smaller) == 1 else "were"
        description += f": {size} px, {STANDARD_IMAGE_SIZES[size]}, taken as {listed} px {verb} too small for the model"
    plan = _from_specs([spec], batch, device, description, hint=_hint(InputKind.IMAGES, spec))
    tried = (*tried, (size, plan.shapes))
    plan.shapes = " then ".join(shapes for _, shapes in tried)
    larger = next((standard for standard in STANDARD_IMAGE_SIZES if standard > size), None)
    if larger is not None:
        bigger = dataclasses.replace(
            spec, sample_shape=(channels, larger, larger), retry=_image_retry(channels, larger)
        )
        plan.larger = lambda: _guessed_images(bigger, label, options, device, tried)
    return plan


def _pretrained_cfg_size(model: nn.Module) -> tuple[tuple[int, int], str] | None:
    """timm's models state their input size in pretrained_cfg (default_cfg before timm 0.9), even when built
    without pretrained weights: (3, 224, 224) for a Mixer, whose token-mixing layers fix it, (3, 299, 299)
    for Inception v3, which fails at 32 pixels."""
    for attribute in ("pretrained_cfg", "default_cfg"):
        config = getattr(model, attribute, None)
        size = config.get("input_size") if isinstance(config, dict) else None
        if isinstance(size, (tuple, list)) and len(size) == 3 and _pair(tuple(size[1:])):
            return _pair(tuple(size[1:])), f"{attribute} input_size={tuple(size)}"
    return None


def _stated_image_size(module: nn.Module) -> tuple[tuple[int, int], str] | None:
    for attribute in ("image_size", "img_size"):
        value = getattr(module, attribute, None)
        if _pair(value):
            return _pair(value), f"{attribute}={value}"
    return None


def _holds_the_input_layer(module: nn.Module) -> bool:
    """A module that owns tokens or scales beside layers of its own (a ViT's class token and position
    embedding, CLIP's logit scale, wav2vec2's mask embedding) is not the layer that consumes the input: they
    are concatenated to, added to or multiplied with what its first layer makes of the input. They are
    scalars, vectors or tensors broadcast over the batch (a leading 1). A matrix of its own (a lookup table,
    a projection) may well take the input, so inference stops there."""
    if not any(next(child.parameters(), None) is not None for child in module.children()):
        return False
    return all(p.dim() <= 1 or p.shape[0] == 1 for p in module.parameters(recurse=False))


def _type_name(module: nn.Module) -> str:
    # TorchScript modules keep their Python class name in original_name.
    return getattr(module, "original_name", None) or type(module).__name__


def _image_retry(channels: int, size: int) -> str:
    if size < IMAGENET_SIZE:
        example = f"--input-shape 2,{channels},224,224: ImageNet's size, 299 for Inception v3"
        return f"if it takes larger images, pass their shape (e.g. {example})"
    return f"pass --input-shape 2,{channels},H,W with the image size it takes"


def _sequence_retry(batch_first: bool, features: int) -> str:
    layout = f"8,128,{features}" if batch_first else f"128,8,{features}"
    return f"pass --seq-len for another length, or --input-shape {layout} for another layout"


def _input_for(
    module: nn.Module, seq_len: int, float_dtype: torch.dtype, stated: tuple[tuple[int, int], str] | None
) -> tuple[InputKind, InputSpec] | None:
    """The kind and shape of input of the layers whose input size is known, else None. A TorchScript module
    made by torch.jit.trace keeps its parameters but none of its Python attributes (in_features,
    kernel_size...): those are read off the weights' shapes."""
    kind = _type_name(module)
    if isinstance(module, nn.RNNBase) or kind in ("RNN", "LSTM", "GRU"):
        features = _size(module, "input_size", "weight_ih_l0", 1)
        if features is None:
            return None
        # A traced RNN does not keep batch_first: PyTorch's default, time-major, is assumed.
        batch_first = getattr(module, "batch_first", False)
        order = "batch-first" if batch_first else "time-major"
        detail = f"input_size={features}, {seq_len} steps, {order}"
        retry = _sequence_retry(batch_first, features)
        spec = InputSpec((seq_len, features), float_dtype, detail, retry, batch_dim=0 if batch_first else 1)
        return InputKind.SEQUENCE, spec
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or kind in ("Embedding", "EmbeddingBag"):
        count = _size(module, "num_embeddings", "weight", 0)
        if count is None:
            return None
        retry = f"pass --vocab-size and --seq-len for other ids (e.g. --vocab-size {count} --seq-len 128)"
        return InputKind.TOKENS, InputSpec((seq_len,), torch.int64, f"num_embeddings={count}", retry, below=count)
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
        return _spatial(dims, channels, f"in_channels={channels}", float_dtype, stated)
    if isinstance(module, nn.Linear) or kind == "Linear":
        features = _size(module, "in_features", "weight", 1)
        if features is None:
            return None
        retry = f"if it takes sequences or images, pass their shape (e.g. --input-shape 8,16,{features})"
        return InputKind.FEATURES, InputSpec((features,), float_dtype, f"in_features={features}", retry)
    if isinstance(module, nn.MultiheadAttention) or kind == "MultiheadAttention":
        embed_dim = _size(module, "embed_dim", "in_proj_weight", 1) or _size(module, "embed_dim", "q_proj_weight", 1)
        if embed_dim is None:
            return None
        batch_first = getattr(module, "batch_first", False)
        detail = f"embed_dim={embed_dim}, {seq_len} positions"
        retry = _sequence_retry(batch_first, embed_dim)
        spec = InputSpec((seq_len, embed_dim), float_dtype, detail, retry, batch_dim=0 if batch_first else 1)
        return InputKind.SEQUENCE, spec
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)) or kind in (
        "TransformerEncoderLayer",
        "TransformerDecoderLayer",
    ):
        attention = getattr(module, "self_attn", None)
        return None if attention is None else _input_for(attention, seq_len, float_dtype, stated)
    if isinstance(module, nn.LayerNorm) or kind == "LayerNorm":
        normalized = getattr(module, "normalized_shape", None)
        if normalized is None:
            weight = _tensor(module, "weight")
            normalized = None if weight is None else tuple(weight.shape)
        if normalized is None:
            return None
        retry = f"if it takes sequences, pass their shape (e.g. --input-shape 8,16,{','.join(map(str, normalized))})"
        detail = f"normalized_shape={tuple(normalized)}"
        return InputKind.FEATURES, InputSpec(tuple(normalized), float_dtype, detail, retry)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) or kind in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"):
        features = _size(module, "num_features", "weight", 0) or _size(module, "num_features", "running_mean", 0)
        if features is None:
            return None
        dims = {"BatchNorm1d": 0, "BatchNorm2d": 2, "BatchNorm3d": 3}.get(kind, 0)
        if dims:
            return _spatial(dims, features, f"num_features={features}", float_dtype, stated)
        retry = f"if it takes steps of them, pass --input-shape 8,{features},16"
        return InputKind.FEATURES, InputSpec((features,), float_dtype, f"num_features={features}", retry)
    return None


def _spatial(
    dims: int, channels: int, detail: str, float_dtype: torch.dtype, stated: tuple[tuple[int, int], str] | None
) -> tuple[InputKind, InputSpec]:
    """(channels, *size) for a convolution or a norm over 1 to 3 spatial dimensions; images take the size the
    model states, if it does."""
    if dims == 2 and stated is not None:
        (height, width), source = stated
        retry = _image_retry(channels, max(height, width))
        return InputKind.IMAGES, InputSpec((channels, height, width), float_dtype, f"{detail}, {source}", retry)
    size = SPATIAL_SIZE.get(dims, 8)
    shape = (channels, *([size] * dims))
    if dims == 2:
        return InputKind.IMAGES, InputSpec(shape, float_dtype, detail, _image_retry(channels, size))
    if dims == 3:
        retry = f"pass --input-shape 2,{channels},16,112,112 (16 frames of 112 px) or the size it takes"
        return InputKind.VOLUMES, InputSpec(shape, float_dtype, detail, retry)
    retry = f"pass --input-shape 8,{channels},N with the length it takes (e.g. 8,{channels},16000 for 16 kHz audio)"
    return InputKind.SIGNAL, InputSpec(shape, float_dtype, detail, retry)


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
