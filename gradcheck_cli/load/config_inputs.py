"""Inputs a model describes the transformers way, read duck-typed (gradcheck imports no transformers): the
main input it names, sized by its config, or drawn like its ``dummy_inputs``."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.options import InputOptions
from gradcheck_cli.load.given_inputs import like_saved
from gradcheck_cli.load.image_sizes import image_retry, size_pair
from gradcheck_cli.load.input_plan import InputPlan
from gradcheck_cli.load.input_specs import (
    DEFAULT_SEQ_LEN,
    SPATIAL_SIZE,
    InputKind,
    InputSpec,
    from_specs,
    inferred_batch_size,
    inferred_hint,
    positive,
)
from gradcheck_cli.measure.layer_figures import owns_parameters


def from_config(
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
    batch = inferred_batch_size(options, specs, stated=True)
    parts = "; ".join(f"{s.name}: {s.detail}, {s.describe(batch)}" for s in specs)
    description = f"read from the model's config ({type(config).__name__}): {parts}"
    return from_specs(specs, batch, device, description, hint=inferred_hint(kind, spec))


def _setting(config: Any, name: str, sections: tuple[str, ...] = ()) -> Any:
    """``config.<section>.<name>`` from the first section that has it (CLIP's text_config and vision_config,
    an EncoderDecoderConfig's encoder and decoder), else ``config.<name>``."""
    for section in sections:
        value = getattr(getattr(config, section, None), name, None)
        if value is not None:
            return value
    return getattr(config, name, None)


def _token_ids(config: Any, options: InputOptions, sections: tuple[str, ...], name: str) -> InputSpec | None:
    vocab = positive(_setting(config, "vocab_size", sections))
    if vocab is None:
        return None
    # A probe needs no long sequence: 16 tokens, fewer where the model has fewer positions.
    limit = positive(_setting(config, "max_position_embeddings", sections))
    length = options.seq_len or min(DEFAULT_SEQ_LEN, limit or DEFAULT_SEQ_LEN)
    retry = f"pass --vocab-size and --seq-len for other ids (e.g. --vocab-size {vocab} --seq-len 128)"
    return InputSpec((length,), torch.int64, f"vocab_size={vocab}", retry, name, below=vocab)


def _input_ids(model: nn.Module, config: Any, options: InputOptions, float_dtype: torch.dtype) -> InputSpec | None:
    return _token_ids(config, options, ("text_config", "encoder"), "input_ids")


def _decoder_input_ids(config: Any, options: InputOptions) -> InputSpec | None:
    spec = _token_ids(config, options, ("decoder",), "decoder_input_ids")
    if spec is None:
        return None
    limit = positive(_setting(config, "max_target_positions", ("decoder",)))
    length = min(spec.sample_shape[0], limit) if limit and not options.seq_len else spec.sample_shape[0]
    start = _setting(config, "decoder_start_token_id", ("decoder",))
    if not (isinstance(start, int) and not isinstance(start, bool) and 0 <= start < spec.below):
        start = None
    detail = "is_encoder_decoder" + (f", decoder_start_token_id={start}" if start is not None else "")
    return dataclasses.replace(spec, sample_shape=(length,), detail=f"{detail}, {spec.detail}", first=start)


def _pixel_values(model: nn.Module, config: Any, options: InputOptions, float_dtype: torch.dtype) -> InputSpec:
    sections = ("vision_config", "encoder")
    channels = positive(_setting(config, "num_channels", sections)) or 3
    stated = _setting(config, "image_size", sections)
    size = size_pair(stated)
    detail = f"num_channels={channels}, " + (f"image_size={stated}" if size else "no image_size")
    height, width = size or (SPATIAL_SIZE[2], SPATIAL_SIZE[2])
    frames = positive(_setting(config, "num_frames", sections))
    if frames:  # a video model (VideoMAE, TimeSformer): (batch, frames, channels, height, width)
        retry = f"pass --input-shape 2,16,{channels},224,224 or the clip size it takes"
        shape, detail = (frames, channels, height, width), f"num_frames={frames}, {detail}"
    else:
        retry = image_retry(channels, max(height, width))
        shape = (channels, height, width)
    return InputSpec(shape, float_dtype, detail, retry, "pixel_values")


def _mel_frames(model: nn.Module, config: Any, options: InputOptions, float_dtype: torch.dtype) -> InputSpec | None:
    """Whisper's log-mel features: the encoder takes exactly max_source_positions positions after its strided
    convolutions (3000 frames for its 1500 positions), and refuses any other length."""
    mels = positive(getattr(config, "num_mel_bins", None))
    positions = positive(getattr(config, "max_source_positions", None))
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
    if not all(positive(v) for v in (*kernels, *strides)):
        return None
    frames = max(options.seq_len or DEFAULT_SEQ_LEN, positive(getattr(config, "mask_time_length", None)) or 1)
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
    return like_saved(((), dict(dummy)), device, "shaped like the model's dummy_inputs", assumed=True)
