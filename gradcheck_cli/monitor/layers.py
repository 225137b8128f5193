"""The monitor's layers as the scan lists them (layer_figures): their order, the parameters each tracks, the
watch (the small parameters read between full norms), and each layer's gradient norm from a row of norms."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gradcheck_cli.measure.layer_figures import held_parameters, layer_type, owned_parameters, ranked, shown_name
from gradcheck_cli.monitor.history import LayerInfo

if TYPE_CHECKING:
    from torch import nn

    from gradcheck_cli.measure.layer_figures import Owned


class LayerPlan:
    """The layers in ``order`` (definition indices, in the order the forward pass first ran them), then the
    others; every trainable parameter tracked once, by the first layer listed that holds it (tied weights).

    The watch: each layer's small parameters (biases, norm scales: at most one dimension), whose gradients
    are normed on the steps whose full norms are skipped (``norms_every`` above 1). They are kilobytes where
    the weights are megabytes, and a bias's gradient is the layer's output gradient summed over the batch,
    so a spike shows in it at its own step. Their columns come first in a row: the watch is a slice of it.
    """

    def __init__(self, defined: list[tuple[str, nn.Module]], fan_in: list[int | None], order: list[int]):
        self.defined, self._fan_in = defined, fan_in
        self.ranking = ranked(order, len(defined))
        self.layers = [(shown_name(defined[i][0]), defined[i][1]) for i in self.ranking]
        positions = list(range(len(self.layers)))
        self.tracked: list[Owned] = sorted(
            owned_parameters(self.layers, positions), key=lambda owned: owned[2].dim() > 1
        )
        self.watched = watched_layers(self.layers, self.tracked)  # (layer, what) for the judge's series
        self.watch_width = sum(1 for _, _, p in self.tracked if p.dim() <= 1) if self.watched else 0
        self.watched_indices = [index for index, _ in self.watched]
        self.params = [param for _, _, param in self.tracked]
        self.owner = [owner for owner, _, _ in self.tracked]
        held = held_parameters(self.layers, positions)
        self.infos = [
            LayerInfo(name, layer_type(module), count, trainable, fan_in[index], shared)
            for (name, module), (count, trainable, shared), index in zip(self.layers, held, self.ranking)
        ]

    def in_order_run(self, ran: list[nn.Module]) -> LayerPlan | None:
        """The plan with the layers in the order ``ran`` them (the modules, as the forward pass first ran them),
        so that a tied parameter belongs to the layer that runs first, as in a scan (issue 24); None where that is
        this plan's order."""
        definition = {id(module): index for index, (_, module) in enumerate(self.defined)}
        order = [definition[id(module)] for module in ran]
        if ranked(order, len(self.defined)) == self.ranking:
            return None
        return LayerPlan(self.defined, self._fan_in, order)

    def positions(self, layers: list[tuple[str, nn.Module]]) -> list[int]:
        """Where each of ``layers`` (a SignalHooks', armed before the order settled in definition order) is
        listed here."""
        if layers is self.layers:
            return list(range(len(self.layers)))
        position = {id(module): k for k, (_, module) in enumerate(self.layers)}
        return [position[id(module)] for _, module in layers]

    def series(self, rows: list[list[float | None]], full: list[bool]) -> list[list[float | None]]:
        """The judge's rows: each layer's norm, then each watched layer's small-parameter norm. A row holds
        the first where every norm was taken and the second where the watch's only were."""
        unread_layers, unread_watch = [None] * len(self.layers), [None] * len(self.watched_indices)
        series = []
        for row, whole in zip(rows, full):
            norms = self.layer_norms(row)
            series.append(norms + unread_watch if whole else unread_layers + [norms[i] for i in self.watched_indices])
        return series

    def layer_norms(self, row: list[float | None]) -> list[float | None]:
        """Per layer: the norm over its own tracked parameters' gradients in the row (None when none had one;
        a watch row holds only the first columns)."""
        squares: list[float | None] = [None] * len(self.layers)
        for owner, value in zip(self.owner, row):
            if value is not None:
                squares[owner] = (squares[owner] or 0.0) + value * value
        return [None if sq is None else math.sqrt(sq) for sq in squares]


def watched_layers(layers: list[tuple[str, nn.Module]], tracked: list[Owned]) -> list[tuple[int, str]]:
    """(layer index, its watched parameters' names) for the layers that own a tracked parameter of at most
    one dimension, unless every tracked parameter is one (then the full norms cost as little)."""
    owner_of = {id(param): owner for owner, _, param in tracked}
    if all(param.dim() <= 1 for _, _, param in tracked):
        return []
    watched = []
    for index, (_, module) in enumerate(layers):
        names = [n for n, p in module.named_parameters(recurse=False) if p.dim() <= 1 and owner_of.get(id(p)) == index]
        if names:
            watched.append((index, " and ".join(names)))
    return watched
