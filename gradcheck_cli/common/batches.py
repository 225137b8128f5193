"""What the probe feeds a model and how it scores the output: one batch, the function that makes the batch of
each pass, the loss function, and the progress callback. Plain types, shared by every module that runs passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class Batch:
    """One batch for one pass: positional and keyword inputs of the model, and what the loss needs."""

    args: tuple
    kwargs: dict = field(default_factory=dict)
    target: Any = None
    size: int | None = None  # batch size; read off the first tensor input when None


LossFn = Callable[[Any, Batch], "torch.Tensor"]
BatchFn = Callable[[int], Batch]
ProgressFn = Callable[[int, int], None]
