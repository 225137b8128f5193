"""What a plan of inputs is: how it draws each batch, the shapes it tries, and the line of the report that
says where the inputs came from, so the report can tell the user what was assumed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gradcheck_cli.common.batches import Batch

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
EXAMPLE_INPUTS_HINT = "define example_inputs() in the model file (a dict for keyword inputs)"


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


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def leading_size(args: tuple, kwargs: dict) -> int | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return None


def describe_shapes(args: tuple, kwargs: dict) -> str:
    def one(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return f"{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
        return type(value).__name__

    parts = [one(v) for v in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts) if parts else "no inputs"
