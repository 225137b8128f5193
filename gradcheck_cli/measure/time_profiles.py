"""Recurrent time profiles: the gradient dL/dx_t reaching each step's input of a recurrent module (or of each
layer of a stacked one, recurrent.py), taken through a zero probe added to the sequence, and its median over
the passes with the module's recurrent weights' figures."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import torch
from torch import nn

from gradcheck_cli.common.stats import RecurrentStats
from gradcheck_cli.measure.layer_figures import NORM_DTYPE
from gradcheck_cli.measure.recurrent import StackedLayers


class TimeProfiles:
    """One probe's per-step probes: (module or layer name, the probe tensor, its time dimension) per pass."""

    def __init__(self, stacks: StackedLayers) -> None:
        self.stacks = stacks  # the stacked recurrent modules measured layer by layer (probe_model)
        self.probes: list[tuple[str, torch.Tensor, int]] = []
        self.recurrent_types: dict[str, str] = {}

    def start_pass(self) -> None:
        self.probes = []

    def pre_hook(self, name: str, module: nn.RNNBase) -> Callable:
        """Add a zero tensor that requires grad to the sequence input: its gradient is dL/dx_t for
        every step t, measured without cutting the graph to the layers below."""
        self.recurrent_types[name] = type(module).__name__

        def hook(mod: nn.Module, args: tuple) -> tuple | None:
            if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
                return None  # PackedSequence and friends: no per-step probe
            sequence = args[0]
            probe = torch.zeros_like(sequence, requires_grad=True)
            time_dim = 1 if (mod.batch_first and sequence.dim() == 3) else 0
            self.probes.append((name, probe, time_dim))
            return (sequence + probe, *args[1:])

        return hook

    def add_layer_probe(self, name: str, probe: torch.Tensor, time_dim: int) -> None:
        """A layer of a stacked recurrent module: ``probe``'s gradient is its gradient through time (recurrent.py)."""
        self.recurrent_types.setdefault(name, type(self.stacks.layer(name)[0]).__name__)
        self.probes.append((name, probe, time_dim))

    def step_sums(self) -> list[torch.Tensor]:
        """Per probe with a gradient, the sum of squares of that gradient at each step."""
        return [
            probe.grad.to(NORM_DTYPE).pow(2).sum(dim=[d for d in range(probe.dim()) if d != time_dim])
            for _, probe, time_dim in self.probes
            if probe.grad is not None
        ]

    def unpack(self, host: list[float], offset: int) -> tuple[dict[str, list[float]], int]:
        """The per-step sums of squares by name (the layers' of one module added), read off ``host`` from
        ``offset`` where step_sums laid them out, and the offset after them."""
        time_steps: dict[str, list[float]] = {}
        for name, probe, time_dim in self.probes:
            if probe.grad is None:
                continue
            length = int(probe.shape[time_dim])
            previous = time_steps.setdefault(name, [0.0] * length)
            for t in range(length):
                previous[t] += host[offset + t]
            offset += length
        return time_steps, offset

    def stats(
        self, model: nn.Module, per_pass: list[dict[str, list[float]]], batch_sizes: list[int]
    ) -> list[RecurrentStats]:
        """The RecurrentStats of each module or layer measured, from the passes' per-step sums of squares."""
        time_series = median_series(per_pass, batch_sizes)
        return [
            recurrent_stats(model, name, self.recurrent_types.get(name, "RNN"), steps, self.stacks.layer(name))
            for name, steps in time_series.items()
        ]


def recurrent_stats(
    model: nn.Module, name: str, kind: str, steps: list[float], layer: tuple[nn.RNNBase, str] | None = None
) -> RecurrentStats:
    """``layer``: (the single-layer module, the stacked module's name) when ``name`` is a layer of a stack."""
    module, stack = layer or (model.get_submodule(name) if name else model, None)
    spectral, nonlinearity, gate_bias = None, None, None
    with torch.no_grad():
        if isinstance(module, nn.RNN):
            nonlinearity = module.nonlinearity
            spectral = float(torch.linalg.matrix_norm(module.weight_hh_l0.detach().to(NORM_DTYPE), ord=2))
        elif isinstance(module, (nn.LSTM, nn.GRU)) and module.bias:
            # rows [h:2h] hold the forget gate (LSTM: input, forget, cell, output) or the update gate
            # (GRU: reset, update, new); the two bias vectors add
            h = module.hidden_size
            total = module.bias_ih_l0.detach()[h : 2 * h] + module.bias_hh_l0.detach()[h : 2 * h]
            gate_bias = float(total.to(NORM_DTYPE).mean())
    return RecurrentStats(name, kind, steps, spectral, nonlinearity, gate_bias, stack)


def median_series(per_pass: list[dict[str, list[float]]], batch_sizes: list[int]) -> dict[str, list[float]]:
    names = dict.fromkeys(name for figures in per_pass for name in figures)  # in the order first measured
    out: dict[str, list[float]] = {}
    for name in names:
        runs = [
            [math.sqrt(b * v) for v in figures[name]] for figures, b in zip(per_pass, batch_sizes) if name in figures
        ]
        out[name] = [statistics.median([run[t] for run in runs]) for t in range(min(len(r) for r in runs))]
    return out
