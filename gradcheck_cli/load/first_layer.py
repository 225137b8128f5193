"""Inputs read off the first layer that consumes them (definition order): its kind (a convolution, an
embedding, a recurrent or linear layer...) and sizes, from its attributes or, for a traced module, its
weights' shapes."""

from __future__ import annotations

import torch
from torch import nn

from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.options import InputOptions
from gradcheck_cli.load.image_sizes import guessed_images, image_retry, pretrained_cfg_size, stated_image_size
from gradcheck_cli.load.input_plan import EXAMPLE_INPUTS_HINT, InputPlan
from gradcheck_cli.load.input_specs import (
    DEFAULT_SEQ_LEN,
    SPATIAL_SIZE,
    InputKind,
    InputSpec,
    from_specs,
    inferred_batch_size,
    inferred_hint,
)
from gradcheck_cli.measure.layer_figures import owns_parameters

INPUT_OPTIONS_HINT = (
    "pass --input-shape with the shape of one batch (e.g. 8,3,224,224 for images, 8,16,512 for sequences of "
    "512 features; repeatable for several inputs), --vocab-size and --seq-len for token models, or "
    + EXAMPLE_INPUTS_HINT
)


def from_first_layer(
    model: nn.Module, options: InputOptions, device: torch.device, float_dtype: torch.dtype
) -> InputPlan:
    seq_len = options.seq_len or DEFAULT_SEQ_LEN
    configured, stated = pretrained_cfg_size(model), None
    for name, module in model.named_modules():
        label = f"{name or '(model)'} ({_type_name(module)})"
        # Modules before the first layer in definition order are the ones that hold it, where a ViT states
        # the size its position embeddings fix (torchvision: image_size; timm's PatchEmbed: img_size). That
        # is the size the model was built with, which a pretrained_cfg does not follow.
        stated = stated or stated_image_size(module)
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
            return guessed_images(spec, label, options, device)
        batch = inferred_batch_size(options, [spec], stated=(stated or configured) is not None)
        description = f"assumed from the first layer {label}: {spec.detail}, {spec.describe(batch)}"
        return from_specs([spec], batch, device, description, hint=inferred_hint(kind, spec))
    raise GradcheckError(f"cannot infer the model's input: it has no layer with weights to read; {INPUT_OPTIONS_HINT}.")


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
        retry = image_retry(channels, max(height, width))
        return InputKind.IMAGES, InputSpec((channels, height, width), float_dtype, f"{detail}, {source}", retry)
    size = SPATIAL_SIZE.get(dims, 8)
    shape = (channels, *([size] * dims))
    if dims == 2:
        return InputKind.IMAGES, InputSpec(shape, float_dtype, detail, image_retry(channels, size))
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
