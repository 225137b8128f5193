"""A read-out's record: each layer's figures at the step read, computed by layer_figures as the scan computes
them, and the run-level norms over the steps read."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from gradcheck_cli.common.stats import LayerStats
from gradcheck_cli.measure.layer_figures import (
    exact_norms,
    gradient_figures,
    gradient_squares,
    output_gradient_rms,
    output_rms,
    signal_squares,
)
from gradcheck_cli.monitor.history import LayerInfo, StepRecord

if TYPE_CHECKING:
    from torch import nn

    from gradcheck_cli.measure.layer_figures import Owned
    from gradcheck_cli.monitor.signals import SignalHooks


def step_record(
    step: int,
    infos: list[LayerInfo],
    tracked: list[Owned],
    rows: list[list[float | None]],
    losses: list[float | None],
    weights: list[dict[str, Any]],
    signals: list[float],
    hooks: SignalHooks | None,
    positions: list[int],
) -> StepRecord:
    """The record of a read-out: the last of ``rows`` (per-parameter gradient norms of ``tracked``) gives the
    gradient figures, ``weights`` each layer's weight figures, and ``signals`` (the values of ``hooks``, whose
    layers are listed at ``positions``) the output and output-gradient figures."""
    row, count = rows[-1], len(infos)
    present = [k for k, value in enumerate(row) if value is not None]
    weight_sq, other_sq, nonfinite, _ = gradient_squares(
        [tracked[k] for k in present], [row[k] for k in present], count
    )
    forward_sq, backward_sq, backward_seen = [0.0] * count, [0.0] * count, [False] * count
    calls, numel = [0] * count, [0] * count
    batch = None
    if hooks is not None:
        slots = [(kind, positions[index]) for kind, index, _ in hooks.values]
        forward_sq, backward_sq, backward_seen = signal_squares(slots, signals, count)
        for index, position in enumerate(positions):
            calls[position], numel[position] = hooks.calls[index], hooks.numel[index]
        batch = hooks.batch_size()
    layers = []
    for i, info in enumerate(infos):
        stats = LayerStats(
            name=info.name, type=info.type, param_count=info.param_count, trainable=info.trainable,
            shared_with=info.shared_with, calls=calls[i], grad_nonfinite=nonfinite[i], **weights[i],
        )  # fmt: skip
        if weight_sq[i] is not None or other_sq[i] is not None:
            figures = gradient_figures(weight_sq[i], other_sq[i], stats.weight_norm)
            stats.weight_grad_norm, stats.other_grad_norm, stats.grad_norm, stats.relative_grad = figures
        if numel[i]:
            stats.forward_rms = output_rms(forward_sq[i], numel[i])
            stats.forward_nonfinite = not math.isfinite(stats.forward_rms)
        if backward_seen[i]:
            stats.backward = output_gradient_rms(backward_sq[i], batch or 1)
            stats.backward_nonfinite = not math.isfinite(stats.backward)
        layers.append(stats)
    totals = [total_norm(r) for r in rows]
    return StepRecord(
        step=step,
        steps=len(rows),
        loss=losses[-1],
        total_grad_norm=totals[-1],
        max_total_grad_norm=largest(totals),
        batch_size=batch,
        signals=hooks is not None,
        layers=layers,
    )


def exact_row(row: list[float | None], params: list[nn.Parameter]) -> list[float | None]:
    """A sampled step's norms of ``params``' gradients, taken again in float64 where float32 may have under- or
    overflowed, as the scan takes them (layer_figures.exact_norms)."""
    present = [i for i, value in enumerate(row) if value is not None and params[i].grad is not None]
    if not present:
        return row
    values = exact_norms([params[i].grad for i in present], [row[i] for i in present])
    row = list(row)
    for i, value in zip(present, values):
        row[i] = value
    return row


def total_norm(row: list[float | None]) -> float | None:
    """The global norm of a row's gradient norms; None where it holds none."""
    present = [value for value in row if value is not None]
    return math.sqrt(math.fsum(value * value for value in present)) if present else None


def largest(values: list[float | None]) -> float | None:
    """The largest of the values given; NaN counts as the largest (it is the news), then infinity."""
    present = [value for value in values if value is not None]
    if any(value != value for value in present):
        return math.nan
    return max(present, default=None)
