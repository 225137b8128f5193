"""Inferred inputs: one random input per spec (its shape, dtype and draw), the kind of input it is, and the
batch size and hint that go with it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.options import InputOptions
from gradcheck_cli.load.input_plan import EXAMPLE_INPUTS_HINT, InputPlan

DEFAULT_BATCH_SIZE = 8  # more than one sample: BatchNorm in training mode needs it
DEFAULT_SEQ_LEN = 16
# Small spatial sizes that still survive a ResNet-style stem (stride 2 conv + pool) and a few stages.
SPATIAL_SIZE = {1: 32, 2: 32, 3: 8}
# A size the model fixes (224-pixel images, Whisper's 3000 mel frames) would make a batch of 8 cost gigabytes
# in a large model: such samples come two to a batch, still more than one for BatchNorm. The probe measures
# ratios through depth, which a smaller batch leaves as they are.
LARGE_SAMPLE_ELEMENTS = 3 * 64 * 64
LARGE_SAMPLE_BATCH_SIZE = 2


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


def from_specs(
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


def inferred_batch_size(options: InputOptions, specs: list[InputSpec], stated: bool) -> int:
    if options.batch_size:
        return options.batch_size
    elements = sum(math.prod(spec.sample_shape) for spec in specs if spec.dtype.is_floating_point)
    return LARGE_SAMPLE_BATCH_SIZE if stated and elements > LARGE_SAMPLE_ELEMENTS else DEFAULT_BATCH_SIZE


def inferred_hint(kind: InputKind, spec: InputSpec) -> str:
    return f"taken for a model of {kind.value}: {spec.retry}, or {EXAMPLE_INPUTS_HINT}"


def positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
