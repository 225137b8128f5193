"""Image sizes: the size a model states (timm's pretrained_cfg, an ``image_size`` attribute), the guess where
it states none, the next standard size when the model finds a guess too small (issue 22), and the retry
advice that names them."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.options import InputOptions
from gradcheck_cli.load.input_plan import InputPlan
from gradcheck_cli.load.input_specs import (
    InputKind,
    InputSpec,
    from_specs,
    inferred_batch_size,
    inferred_hint,
    positive,
)

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


def size_pair(value: Any) -> tuple[int, int] | None:
    """An image size stated as 224 or (224, 224)."""
    if positive(value):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(positive(v) for v in value):
        return int(value[0]), int(value[1])
    return None


def pretrained_cfg_size(model: nn.Module) -> tuple[tuple[int, int], str] | None:
    """timm's models state their input size in pretrained_cfg (default_cfg before timm 0.9), even when built
    without pretrained weights: (3, 224, 224) for a Mixer, whose token-mixing layers fix it, (3, 299, 299)
    for Inception v3, which fails at 32 pixels."""
    for attribute in ("pretrained_cfg", "default_cfg"):
        config = getattr(model, attribute, None)
        size = config.get("input_size") if isinstance(config, dict) else None
        if isinstance(size, (tuple, list)) and len(size) == 3 and size_pair(tuple(size[1:])):
            return size_pair(tuple(size[1:])), f"{attribute} input_size={tuple(size)}"
    return None


def stated_image_size(module: nn.Module) -> tuple[tuple[int, int], str] | None:
    for attribute in ("image_size", "img_size"):
        value = getattr(module, attribute, None)
        if size_pair(value):
            return size_pair(value), f"{attribute}={value}"
    return None


def guessed_images(
    spec: InputSpec, label: str, options: InputOptions, device: torch.device, tried: tuple[tuple[int, str], ...] = ()
) -> InputPlan:
    """Images of a size the model does not state: the first guess (SPATIAL_SIZE), then, each time the model finds
    the last too small (InputPlan.after), the next of STANDARD_IMAGE_SIZES. ``tried``: (size, shapes) of the
    sizes that were too small. Sizes the model needs come two to a batch (inferred_batch_size), as stated ones
    do."""
    channels, size = spec.sample_shape[0], spec.sample_shape[-1]
    batch = inferred_batch_size(options, [spec], stated=bool(tried))
    description = f"assumed from the first layer {label}: {spec.detail}, {spec.describe(batch)}"
    if tried:
        smaller = [str(previous) for previous, _ in tried]
        listed = smaller[0] if len(smaller) == 1 else f"{', '.join(smaller[:-1])} and {smaller[-1]}"
        verb = "was" if len(smaller) == 1 else "were"
        description += f": {size} px, {STANDARD_IMAGE_SIZES[size]}, taken as {listed} px {verb} too small for the model"
    plan = from_specs([spec], batch, device, description, hint=inferred_hint(InputKind.IMAGES, spec))
    tried = (*tried, (size, plan.shapes))
    plan.shapes = " then ".join(shapes for _, shapes in tried)
    larger = next((standard for standard in STANDARD_IMAGE_SIZES if standard > size), None)
    if larger is not None:
        bigger = dataclasses.replace(spec, sample_shape=(channels, larger, larger), retry=image_retry(channels, larger))
        plan.larger = lambda: guessed_images(bigger, label, options, device, tried)
    return plan


def image_retry(channels: int, size: int) -> str:
    if size < IMAGENET_SIZE:
        example = f"--input-shape 2,{channels},224,224: ImageNet's size, 299 for Inception v3"
        return f"if it takes larger images, pass their shape (e.g. {example})"
    return f"pass --input-shape 2,{channels},H,W with the image size it takes"
