"""Counting the NaN and Inf values in the tensors a watched pass sees, and the range of the finite ones."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from gradcheck_cli.measure.tensors import tensors_in


@dataclass
class Tally:
    nan: int = 0
    pos_inf: int = 0
    neg_inf: int = 0
    values: int = 0

    @property
    def finite(self) -> bool:
        return self.nan == 0 and self.pos_inf == 0 and self.neg_inf == 0

    @property
    def mask_like(self) -> bool:
        # An additive attention mask holds -inf on purpose (softmax turns it into 0), and nothing else.
        return self.nan == 0 and self.pos_inf == 0 and self.neg_inf > 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.nan + other.nan, self.pos_inf + other.pos_inf, self.neg_inf + other.neg_inf, self.values + other.values
        )

    def __str__(self) -> str:
        return f"{self.nan} NaN, {self.pos_inf + self.neg_inf} Inf of {self.values} values"


def float_tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every floating-point tensor inside nested tuples, lists and dicts (outputs are often tuples)."""
    return (tensor for tensor in tensors_in(value) if tensor.is_floating_point())


def tally_of(tensors: Iterable[torch.Tensor]) -> Tally:
    tally = Tally()
    for tensor in tensors:
        tensor = tensor.detach()
        tally.nan += int(torch.isnan(tensor).sum())
        tally.pos_inf += int(torch.isposinf(tensor).sum())
        tally.neg_inf += int(torch.isneginf(tensor).sum())
        tally.values += tensor.numel()
    return tally


def finite_ranges(tensors: Iterable[torch.Tensor]) -> list[tuple[float, float]]:
    """(min, max) over the finite values of each tensor; tensors with none are left out."""
    ranges = []
    for tensor in tensors:
        values = tensor.detach()[torch.isfinite(tensor.detach())]
        if values.numel():
            ranges.append((float(values.min()), float(values.max())))
    return ranges


def loss_value(loss: torch.Tensor) -> str:
    return f"{float(loss.detach()):.3g}" if loss.numel() == 1 else str(tally_of([loss]))
