"""The depth trend: how the backward signal changes from the output end to the input end, read along the
network's own path and like with like, from measurements only (never module names or nesting; issue 22).
Pure, no torch: ``depth_profile`` turns per-layer figures into a ``DepthProfile`` that diagnosis.py judges.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gradcheck_cli.common.stats import LayerStats

# Fewer layers than this carry no depth trend worth fitting.
MIN_TREND_LAYERS = 4
# The ends are the median of this fraction of the layers (at most END_LAYERS_MAX): one odd layer at
# an end (an attention projection, a zero-initialized layer) must not decide the verdict.
END_FRACTION = 0.1
END_LAYERS_MAX = 3


@dataclass
class DepthProfile:
    """The depth trend of the backward and forward signals, over the layers that carry it."""

    layers: list[str]  # trend layers, input end first
    layer_type: str | None  # the one layer type the trend is read over
    decades: float | None  # D: log10(b_input_end / b_output_end); <0 vanishing, >0 exploding
    gain_per_layer: float | None  # backward multiplier per trend layer, output to input (paired Theil-Sen fit)
    forward_decades: float | None  # F
    zero_layers: list[str]  # trend layers whose backward signal is exactly zero (underflow or blocked)
    reference: float | None  # b at the output end
    # The output end of each kind of layer (like_key) and of each layer type: each layer is compared like with like.
    references: dict[Any, float] = field(default_factory=dict)
    head: str | None = None  # the layer nearest the loss, left out: its output gradient is dL/dlogits
    hooked: bool = True  # False: read from weight-gradient norms (the model takes no hooks)
    blocks: int | None = None  # skip merges in the model's autograd graph, each one block; None: not read
    kinds: dict[str, Any] = field(default_factory=dict)  # layer name -> like_key, for every candidate layer

    @property
    def depth_scale(self) -> float | None:
        """Layers over which the backward signal changes by a factor e (Schoenholz et al. 2017)."""
        if not self.gain_per_layer or self.gain_per_layer == 1.0:
            return None
        return 1.0 / abs(math.log(self.gain_per_layer))

    @property
    def gain_per_block(self) -> float | None:
        """Backward multiplier per skip-connected block, output to input: 10^(D / blocks)."""
        if self.decades is None or not self.blocks:
            return None
        return 10 ** (self.decades / self.blocks)


def theil_sen_slope(xs: list[float], ys: list[float]) -> float:
    """Median of pairwise slopes: robust to a few odd layers (Sen 1968); 0.0 without a pair. paired_slope with
    every point alike."""
    slope = paired_slope([(x, y, None) for x, y in zip(xs, ys, strict=True)])
    return 0.0 if slope is None else slope


def signal_of(layer: LayerStats, hooked: bool = True) -> float | None:
    """The figure the depth trend is read from: the backward signal, or, for models that take no hooks
    (TorchScript), the weight-gradient norm, which can miss explosions (Glorot & Bengio 2010)."""
    return layer.backward if hooked else layer.weight_grad_norm


def like_keys(layers: list[LayerStats]) -> dict[str, tuple]:
    """What each layer does, read off its measurements, never its name or nesting: its type, its shape (output
    over input width, in powers of two: a transformer's fc1 widens, fc2 narrows, a 3x3 conv keeps its width),
    its place in a repeated run of layers of its type (an attention block's q, k, v and output projections
    run one after another with the same shape; their gradients differ by orders of magnitude at
    initialization by design), and whether it reads the model's inputs (a stem's output gradient is the
    residual stream's, not a branch's). Layers with the same key are like with like, across stages and blocks."""
    runs: list[list[LayerStats]] = []
    for layer in layers:
        if runs and runs[-1][0].type == layer.type:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    lengths = Counter((run[0].type, len(run)) for run in runs)
    keys = {}
    for run in runs:
        # A run that recurs (q, k, v, o in every block) gives each member its place; a single long run is a
        # plain stack (an MLP, a VGG stage), whose layers are all alike.
        repeated = len(run) > 1 and lengths[(run[0].type, len(run))] >= 2
        for place, layer in enumerate(run):
            # (the run's length keeps a one-off layer, a pooler after the blocks, apart from a run's first member)
            place_in_run = (place, len(run)) if repeated else None
            keys[layer.name] = (layer.type, _width_ratio(layer), place_in_run, layer.starts_path)
    return keys


def _width_ratio(layer: LayerStats) -> int:
    """log2 of output over input width, rounded: out = parameters / fan_in (the bias adds under 1 to it)."""
    if not layer.fan_in or not layer.param_count:
        return 0
    out = max(1, layer.param_count // layer.fan_in)
    return round(math.log2(out / layer.fan_in))


def _path_segments(layers: list[LayerStats]) -> dict[str, int]:
    """Which path from the model's inputs each layer is on: a layer whose input carried no gradient history,
    after others ran, begins another (an encoder-decoder's decoder). Pairs of layers on different paths are not
    in series, so the trend is never read across them."""
    segment, seen_any, segments = 0, False, {}
    for layer in layers:
        if layer.starts_path and seen_any:
            segment += 1
        seen_any = True
        segments[layer.name] = segment
    return segments


def _transforms(layer: LayerStats) -> bool:
    """A layer that multiplies its input by a weight matrix (Linear, convolutions): the trend's candidates.
    Embeddings look up rows, and norms scale: their output gradients are other quantities."""
    return layer.fan_in is not None and "Embedding" not in layer.type


def paired_slope(points: list[tuple[float, float, Any]]) -> float | None:
    """Theil-Sen slope (Sen 1968) over pairs of like points only (the same key): the median of
    (y_j - y_i) / (x_j - x_i). A constant factor between kinds of layer (an attention block's q and v
    projections) cancels in every pair. Without like pairs, all pairs. Subsampled past 200 points."""
    step = max(1, len(points) // 200)
    points = points[::step]
    like, every = [], []
    for i, (x_i, y_i, key_i) in enumerate(points):
        for x_j, y_j, key_j in points[i + 1 :]:
            if x_j == x_i:
                continue
            slope = (y_j - y_i) / (x_j - x_i)
            every.append(slope)
            if key_i == key_j:
                like.append(slope)
    slopes = like or every
    return statistics.median(slopes) if slopes else None


def depth_profile(
    layers: list[LayerStats], min_trend_layers: int = MIN_TREND_LAYERS, hooked: bool = True, blocks: int | None = None
) -> DepthProfile:
    """The depth trend, read along the network's own path: the layers in the order the forward pass ran them,
    like with like by what each does (like_keys), never by module names or nesting (issue 22).

    The trend layers are the most frequent type of weight-matrix layer (ties: more parameters), the head
    (the last candidate, whose output gradient is dL/dlogits) left out. The per-layer slope of log b is the
    median over pairs of like layers on the same path from the inputs (paired_slope): a BatchNorm's gradient
    differs from its conv's by a constant factor, and attention's query/key projections get a tiny gradient
    at initialization by design, so comparing unlike layers would read those factors as depth. D is that
    slope over the trend's length, so one odd layer at an end does not decide the verdict."""
    signal = {layer.name: signal_of(layer, hooked) for layer in layers}
    candidates = [
        layer for layer in layers if layer.trainable and signal[layer.name] is not None and not layer.shared_with
    ]
    head = None
    if len(candidates) > 2:
        head = candidates.pop().name
    kinds = like_keys(candidates)
    segments = _path_segments(candidates)
    transforms = [layer for layer in candidates if _transforms(layer)]
    pool = transforms if len(transforms) >= min_trend_layers else candidates
    layer_type = _dominant(pool, lambda layer: layer.type)
    trend = [layer for layer in pool if layer.type == layer_type]
    references = _references(candidates, signal, kinds)
    names = [layer.name for layer in trend]
    if len(trend) < min_trend_layers:
        return DepthProfile(names, layer_type, None, None, None, [], None, references, head, hooked, blocks, kinds)
    backward = [signal[name] for name in names]
    zero = [name for name in names if signal[name] == 0.0]
    k = _end_count(len(trend))
    reference = _median_positive(backward[-k:])
    span = len(trend) - 1
    slope = _trend_slope(trend, backward, kinds, segments)
    decades = gain = None
    if slope is not None and reference:
        decades = -slope * span / math.log(10) + 0.0  # (+ 0.0: a flat trend reads 10^+0.0, not 10^-0.0)
        gain = math.exp(-slope)
    forward_decades = None
    forward = [layer.forward_rms for layer in trend]
    if all(f is not None and math.isfinite(f) for f in forward):
        forward_slope = _trend_slope(trend, forward, kinds, segments)
        if forward_slope is not None:
            forward_decades = forward_slope * span / math.log(10) + 0.0
    return DepthProfile(
        names, layer_type, decades, gain, forward_decades, zero, reference, references, head, hooked, blocks, kinds
    )


def _trend_slope(
    trend: list[LayerStats], values: list[float], kinds: dict[str, tuple], segments: dict[str, int]
) -> float | None:
    """The paired slope of log(value) per trend layer, over the layers with a positive finite value."""
    points = [
        (float(i), math.log(value), (kinds[layer.name], segments[layer.name]))
        for i, (layer, value) in enumerate(zip(trend, values, strict=True))
        if value > 0 and math.isfinite(value)
    ]
    return paired_slope(points)


def _references(candidates: list[LayerStats], signal: dict[str, float | None], kinds: dict[str, tuple]) -> dict:
    """The output end (median of the last few) of each kind of layer seen twice or more, and of each type."""
    by_key: dict[Any, list[float]] = {}
    for layer in candidates:
        by_key.setdefault(kinds[layer.name], []).append(signal[layer.name])
    for layer in candidates:
        by_key.setdefault(layer.type, []).append(signal[layer.name])
    references = {}
    for key, members in by_key.items():
        if isinstance(key, tuple) and len(members) < 2:
            continue  # a kind seen once has no output end of its own: its type's is used
        reference_of_key = _median_positive(members[-_end_count(len(members)) :])
        if reference_of_key:
            references[key] = reference_of_key
    return references


def _end_count(count: int) -> int:
    return max(1, min(END_LAYERS_MAX, int(count * END_FRACTION)))


def _dominant(layers: list[LayerStats], key: Callable[[LayerStats], Any]) -> Any:
    """The most frequent key among the layers; ties go to the one holding more parameters."""
    counts: dict[Any, tuple[int, int]] = {}
    for layer in layers:
        count, params = counts.get(key(layer), (0, 0))
        counts[key(layer)] = (count + 1, params + layer.param_count)
    return max(counts, key=counts.__getitem__) if counts else None


def _median_positive(values: list[float]) -> float | None:
    kept = [v for v in values if v > 0 and math.isfinite(v)]
    return statistics.median(kept) if kept else None


def like_ratios(layers: list[LayerStats], profile: DepthProfile) -> dict[str, float]:
    """Each layer's backward signal over the output end's, like with like: against the last layers of its
    own kind (like_keys), else of its own type (a BatchNorm against BatchNorms), else the trend's end."""
    if not profile.reference:
        return {}
    ratios = {}
    for layer in layers:
        value = signal_of(layer, profile.hooked)
        if value is not None and math.isfinite(value):
            kind = profile.kinds.get(layer.name)
            reference = (kind and profile.references.get(kind)) or profile.references.get(layer.type)
            ratios[layer.name] = value / (reference or profile.reference)
    return ratios
